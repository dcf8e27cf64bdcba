import { describe, expect, it } from 'vitest';
import { FrameError, decode, encode } from '../src/lib/protocol';

describe('JSON frames', () => {
  it('encodes client frames as PROTOCOL.md shows them', () => {
    expect(encode({ typing: { conversation: 7, active: true } })).toBe('{"typing":{"conversation":7,"active":true}}');
    expect(encode({ history: { request_id: 5, conversation: 7, before: 12, limit: 50 } })).toBe(
      '{"history":{"request_id":5,"conversation":7,"before":12,"limit":50}}',
    );
  });

  it('decodes the spec examples', () => {
    expect(
      decode(
        '{"message":{"conversation":7,"seq":15,"id":1001,"sender":42,"client_msg_id":"6F2C5A10-8E41-4C7B-9D03-521EA4F08801","sent_at":1795795200123,"body":{"text":"Hello, Bob!"}}}',
      ),
    ).toEqual({
      message: {
        conversation: 7,
        seq: 15,
        id: 1001,
        sender: 42,
        client_msg_id: '6f2c5a10-8e41-4c7b-9d03-521ea4f08801',
        sent_at: 1795795200123,
        body: { text: 'Hello, Bob!' },
      },
    });
    // Optional fields may be missing; unknown members are ignored.
    expect(decode('{"error":{"code":"rate_limited","message":"slow down","extra":1}}')).toEqual({
      error: { code: 'rate_limited', message: 'slow down', extra: 1, request_id: null, retry_after_ms: null },
    });
  });

  it('ignores unknown frame kinds and refuses what is not a frame', () => {
    expect(decode('{"reaction":{"emoji":"x"}}')).toBeNull();
    for (const bad of ['', '[]', '42', '{}', '{"a":{},"b":{}}', '{"ack":5}', '{"message":{"conversation":0}}', '{"welcome":{"user":1}}']) {
      expect(() => decode(bad), bad).toThrow(FrameError);
    }
    expect(() =>
      decode('{"message":{"conversation":9007199254740992,"seq":1,"id":1,"sender":1,"client_msg_id":"x","sent_at":0,"body":{"text":"a"}}}'),
    ).toThrow(FrameError);
  });
});
