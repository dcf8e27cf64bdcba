import { describe, expect, it } from 'vitest';
import {
  DeviceKey,
  OpenError,
  describeKey,
  deviceKeyFor,
  type KeyStore,
  messageAad,
  parseHeader,
} from '../src/lib/e2e';
// Sealed by chat-crypto (Rust); its own test checks the same file.
import fixture from '../../chat-crypto/tests/data/envelope-interop.json';
import { unhex } from './hex';

const PKCS8_X25519 = unhex('302e020100300506032b656e04220420');

async function importPair(secretHex: string, publicHex: string): Promise<CryptoKeyPair> {
  const pkcs8 = new Uint8Array([...PKCS8_X25519, ...unhex(secretHex)]);
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'X25519' }, false, ['deriveBits']);
  const publicKey = await crypto.subtle.importKey('raw', unhex(publicHex), { name: 'X25519' }, true, []);
  return { privateKey, publicKey };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);
const AAD = messageAad(42, 7, '0b7e1a52-3c44-4d1e-8f60-1d2c3b4a5f67');

async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof OpenError) return e.reason;
    throw e;
  }
  return 'opened';
}

describe('end-to-end envelopes', () => {
  it('open what chat-crypto sealed, with the same ids and fingerprints', async () => {
    const device = await DeviceKey.from(await importPair(fixture.recipient_secret, fixture.recipient_public));
    expect(device.device.idHex).toBe(fixture.recipient_id);
    expect(device.device.fingerprint).toBe(fixture.recipient_fingerprint);
    expect((await describeKey(unhex(fixture.sender_public))).idHex).toBe(fixture.sender_id);

    const aad = messageAad(fixture.conversation, fixture.sender, fixture.client_msg_id);
    const opened = await device.open(unhex(fixture.envelope), aad);
    expect(text(opened.body)).toBe(fixture.body);
    expect(opened.senderDevice).toBe(fixture.sender_id);
    // The same envelope under another message's associated data does not open.
    const other = messageAad(fixture.conversation, fixture.sender + 1, fixture.client_msg_id);
    expect(await reason(device.open(unhex(fixture.envelope), other))).toBe('rejected');
  });

  it('seal for every device and open on each; others cannot', async () => {
    const [alice, bob, eve] = await Promise.all([DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()]);
    const envelope = await alice.seal(bytes('hi bob'), [bob.device.key, alice.device.key, bob.device.key], AAD);
    const header = parseHeader(envelope);
    expect(header.senderDevice).toBe(alice.device.idHex);
    expect(header.recipients.sort()).toEqual([alice.device.idHex, bob.device.idHex].sort());
    expect(text((await bob.open(envelope, AAD)).body)).toBe('hi bob');
    expect(text((await alice.open(envelope, AAD)).body)).toBe('hi bob');
    expect(await reason(eve.open(envelope, AAD))).toBe('not_a_recipient');
    expect(await reason(bob.open(envelope, messageAad(43, 7, '0b7e1a52-3c44-4d1e-8f60-1d2c3b4a5f67')))).toBe(
      'rejected',
    );
  });

  it('reject a flipped bit anywhere', async () => {
    const [alice, bob] = await Promise.all([DeviceKey.generate(), DeviceKey.generate()]);
    const envelope = await alice.seal(bytes('attack at dawn'), [bob.device.key], AAD);
    for (let i = 0; i < envelope.length; i++) {
      const tampered = envelope.slice();
      tampered[i] ^= 1 << i % 8;
      expect(['rejected', 'malformed', 'not_a_recipient']).toContain(await reason(bob.open(tampered, AAD)));
    }
    expect(await reason(bob.open(envelope.subarray(0, 40), AAD))).toBe('malformed');
  });

  it('keep one non-extractable key per account', async () => {
    const saved = new Map<number, CryptoKeyPair>();
    const store: KeyStore = {
      load: async (u) => saved.get(u) ?? null,
      save: async (u, pair) => void saved.set(u, pair),
    };
    const first = await deviceKeyFor(1, store);
    const again = await deviceKeyFor(1, store);
    const other = await deviceKeyFor(2, store);
    expect(again.device.idHex).toBe(first.device.idHex);
    expect(other.device.idHex).not.toBe(first.device.idHex);
    expect(first.pair.privateKey.extractable).toBe(false);
    await expect(crypto.subtle.exportKey('pkcs8', first.pair.privateKey)).rejects.toThrow();
  });

  it('build the associated data chat-crypto builds', () => {
    const aad = messageAad(0x0102, 0x0304, 'aaaaaaaa-aaaa-4aaa-aaaa-aaaaaaaaaaaa');
    expect(text(aad.subarray(0, 15))).toBe('chat/1 message\0');
    expect([...aad.subarray(15, 23)]).toEqual([0, 0, 0, 0, 0, 0, 1, 2]);
    expect([...aad.subarray(23, 31)]).toEqual([0, 0, 0, 0, 0, 0, 3, 4]);
    expect(aad.length).toBe(47);
  });
});
