import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Connection, type ConnectionState, RequestError, SessionEndedError } from '../src/lib/connection';
import { CLIENT_VERSION, type Entry } from '../src/lib/protocol';
import { type FakeSocket, message, sockets, welcome } from './fake';

const flush = () => vi.advanceTimersByTimeAsync(0);

function setup(opts: { resume?: { conversation: number; seq: number }[]; tokens?: (refresh: boolean) => Promise<string> } = {}) {
  const s = sockets();
  const delivered: Entry[] = [];
  const states: ConnectionState[] = [];
  const tokenCalls: boolean[] = [];
  const ended: string[] = [];
  const conn = new Connection({
    url: 'ws://chat.test/ws',
    resume: opts.resume,
    createSocket: s.create,
    random: () => 0.5,
    getToken: async (refresh) => {
      tokenCalls.push(refresh);
      return opts.tokens ? opts.tokens(refresh) : refresh ? 'fresh-token' : 'token';
    },
    handlers: {
      onEntry: (e) => delivered.push(e),
      onState: (st) => states.push(st),
      onSessionEnded: (r) => ended.push(r),
    },
  });
  return { s, conn, delivered, states, tokenCalls, ended };
}

/** Connects: opens the latest socket and welcomes it. */
async function connect(s: ReturnType<typeof sockets>, heads: [number, number][] = [], user = 1): Promise<FakeSocket> {
  await flush();
  const socket = s.made[s.made.length - 1];
  socket.open();
  socket.receive(welcome(user, heads));
  return socket;
}

const seqs = (ms: Entry[]) => ms.map((m) => `${m.conversation}:${m.seq}`);

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('handshake and requests', () => {
  it('says hello with the token and resume cursors, and sends requests only after welcome', async () => {
    const { s, conn } = setup({ resume: [{ conversation: 7, seq: 14 }] });
    conn.start();
    const sent = conn.send(7, 'aaaaaaaa-0000-4000-8000-000000000001', { text: 'hi' });
    await flush();
    const socket = s.made[0];
    expect(socket.url).toBe('ws://chat.test/ws');
    expect(socket.protocol).toBe('chat.v1.json');
    socket.open();
    expect(socket.sent).toEqual([
      {
        hello: {
          version: CLIENT_VERSION,
          token: 'token',
          client: 'chat-web/0.1',
          resume: [{ conversation: 7, seq: 14 }],
        },
      },
    ]);
    socket.receive(welcome(1, [[7, 14]]));
    expect(socket.sentOf('send')).toEqual([
      {
        request_id: 1,
        conversation: 7,
        client_msg_id: 'aaaaaaaa-0000-4000-8000-000000000001',
        body: { text: 'hi' },
      },
    ]);
    socket.receive({ ack: { request_id: 1, conversation: 7, id: 99, seq: 15, sent_at: 5 } });
    await expect(sent).resolves.toMatchObject({ id: 99, seq: 15 });
  });

  it('matches answers to requests by id, in any order, and rejects refused ones with their code', async () => {
    const { s, conn } = setup();
    conn.start();
    const socket = await connect(s, [[7, 0]]);
    const history = conn.history(7, null, 50);
    const read = conn.markRead(7, 3);
    const bad = conn.send(8, 'aaaaaaaa-0000-4000-8000-000000000002', { text: 'x' });
    const [h, r, b] = [...socket.sentOf('history'), ...socket.sentOf('mark_read'), ...socket.sentOf('send')];
    socket.receive({ error: { request_id: b.request_id, code: 'not_found', message: 'no such conversation', retry_after_ms: null } });
    socket.receive({ done: { request_id: r.request_id } });
    socket.receive({ history_page: { request_id: h.request_id, conversation: 7, messages: [message(7, 1)], has_more: false } });
    await expect(read).resolves.toBeUndefined();
    await expect(history).resolves.toMatchObject({ has_more: false, messages: [{ seq: 1 }] });
    await expect(bad).rejects.toEqual(new RequestError('not_found', 'no such conversation'));
  });

  it('keeps at most max_in_flight requests unanswered', async () => {
    const { s, conn } = setup();
    conn.start();
    await flush();
    const socket = s.made[0];
    socket.open();
    socket.receive({ ...welcome(1, [[7, 0]], { max_in_flight: 2 }) });
    for (let i = 0; i < 5; i++) void conn.markRead(7, i + 1);
    expect(socket.sentOf('mark_read').map((f) => f.seq)).toEqual([1, 2]);
    socket.receive({ done: { request_id: socket.sentOf('mark_read')[0].request_id } });
    expect(socket.sentOf('mark_read').map((f) => f.seq)).toEqual([1, 2, 3]);
  });

  it('retries a rate-limited send after the delay the server asks for, with the same key', async () => {
    const { s, conn } = setup();
    conn.start();
    const socket = await connect(s, [[7, 0]]);
    const sent = conn.send(7, 'aaaaaaaa-0000-4000-8000-000000000003', { text: 'flood' });
    const first = socket.sentOf('send')[0];
    socket.receive({ error: { request_id: first.request_id, code: 'rate_limited', message: 'slow down', retry_after_ms: 250 } });
    await vi.advanceTimersByTimeAsync(200);
    expect(socket.sentOf('send')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(socket.sentOf('send')).toEqual([first, first]);
    socket.receive({ ack: { request_id: first.request_id, conversation: 7, id: 5, seq: 1, sent_at: 1 } });
    await expect(sent).resolves.toMatchObject({ seq: 1 });
  });

  it('answers pings, ignores frames it does not know and survives malformed ones', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const { s, conn, delivered } = setup();
    conn.start();
    const socket = await connect(s, [[7, 0]]);
    socket.receive({ ping: { nonce: 42 } });
    expect(socket.sentOf('pong')).toEqual([{ nonce: 42 }]);
    socket.receive({ reaction: { conversation: 7 } });
    socket.onmessage?.({ data: '{"message":{"conversation":7}}' });
    socket.onmessage?.({ data: 'not json' });
    socket.receive({ message: message(7, 1) });
    expect(seqs(delivered)).toEqual(['7:1']);
    expect(warn).toHaveBeenCalledTimes(2);
    expect(socket.closed).toBeNull();
    warn.mockRestore();
  });
});

describe('ordering and gaps', () => {
  it('delivers each message once and in order, holding those past a gap until sync fills it', async () => {
    const { s, conn, delivered } = setup({ resume: [{ conversation: 7, seq: 2 }] });
    conn.start();
    const socket = await connect(s, [[7, 5]]);
    // Replay of 3..5, with a duplicate and one out of order.
    socket.receive({ message: message(7, 3) });
    socket.receive({ message: message(7, 3) });
    socket.receive({ message: message(7, 5) });
    expect(seqs(delivered)).toEqual(['7:3']);
    socket.receive({ message: message(7, 4) });
    expect(seqs(delivered)).toEqual(['7:3', '7:4', '7:5']);
    socket.receive({ replay_done: { truncated: [] } });
    expect(socket.sentOf('sync')).toEqual([]);
    expect(conn.state.kind).toBe('live');

    // A live message past a gap: held back, and sync asks for what is missing.
    socket.receive({ message: message(7, 8) });
    expect(seqs(delivered)).toHaveLength(3);
    const sync = socket.sentOf('sync')[0];
    expect(sync).toMatchObject({ conversation: 7, after: 5 });
    socket.receive({
      sync_page: { request_id: sync.request_id, conversation: 7, messages: [message(7, 6), message(7, 7), message(7, 8)], has_more: false },
    });
    await flush();
    expect(seqs(delivered)).toEqual(['7:3', '7:4', '7:5', '7:6', '7:7', '7:8']);
    expect(conn.cursors()).toEqual([{ conversation: 7, seq: 8 }]);
  });

  it('fills truncated replays and heads beyond the cursor page by page, then releases what no longer exists', async () => {
    const { s, conn, delivered } = setup({ resume: [{ conversation: 7, seq: 0 }, { conversation: 9, seq: 1 }] });
    conn.start();
    const socket = await connect(s, [[7, 900], [9, 3]]);
    socket.receive({ replay_done: { truncated: [7] } });
    const syncs = socket.sentOf('sync');
    expect(syncs.map((f) => [f.conversation, f.after])).toEqual([[7, 0], [9, 1]]);
    socket.receive({
      sync_page: { request_id: syncs[0].request_id, conversation: 7, messages: [message(7, 1), message(7, 2)], has_more: true },
    });
    await flush();
    expect(socket.sentOf('sync').at(-1)).toMatchObject({ conversation: 7, after: 2 });
    // Conversation 9: message 2 is gone (the account was deleted); 3 arrives live.
    socket.receive({ message: message(9, 3) });
    socket.receive({ sync_page: { request_id: syncs[1].request_id, conversation: 9, messages: [], has_more: false } });
    await flush();
    expect(seqs(delivered)).toEqual(['7:1', '7:2', '9:3']);
  });

  it('does not release held messages over a gap that opened after the sync was sent', async () => {
    const { s, conn, delivered } = setup({ resume: [{ conversation: 7, seq: 10 }] });
    conn.start();
    const socket = await connect(s, [[7, 10]]);
    socket.receive({ replay_done: { truncated: [] } });
    // 12 before 11 (another node was faster): sync after 10.
    socket.receive({ message: message(7, 12) });
    const first = socket.sentOf('sync')[0];
    expect(first).toMatchObject({ after: 10 });
    // 11 arrives live, then 14 before 13, while the first sync is out.
    socket.receive({ message: message(7, 11) });
    socket.receive({ message: message(7, 14) });
    // The page was read before 13 existed.
    socket.receive({ sync_page: { request_id: first.request_id, conversation: 7, messages: [message(7, 11), message(7, 12)], has_more: false } });
    await flush();
    expect(seqs(delivered)).toEqual(['7:11', '7:12']);
    const second = socket.sentOf('sync')[1];
    expect(second).toMatchObject({ after: 12 });
    socket.receive({ sync_page: { request_id: second.request_id, conversation: 7, messages: [message(7, 13), message(7, 14)], has_more: false } });
    await flush();
    expect(seqs(delivered)).toEqual(['7:11', '7:12', '7:13', '7:14']);
  });

  it('starts a conversation new to the client at its head, and one the user joins while connected at 0', async () => {
    const { s, conn, delivered } = setup();
    conn.start();
    const socket = await connect(s, [[7, 40]], 1);
    socket.receive({ replay_done: { truncated: [] } });
    socket.receive({ message: message(7, 41) });
    socket.receive({ membership: { conversation: 12, user: 1, change: 'added', by: 2 } });
    socket.receive({ message: message(12, 2) });
    expect(seqs(delivered)).toEqual(['7:41']);
    const sync = socket.sentOf('sync')[0];
    expect(sync).toMatchObject({ conversation: 12, after: 0 });
    socket.receive({ sync_page: { request_id: sync.request_id, conversation: 12, messages: [message(12, 1), message(12, 2)], has_more: false } });
    await flush();
    expect(seqs(delivered)).toEqual(['7:41', '12:1', '12:2']);
  });
});

describe('reconnecting', () => {
  it('reconnects with backoff, resumes from the last message, and re-sends unanswered requests once', async () => {
    const { s, conn, delivered, states } = setup({ resume: [{ conversation: 7, seq: 0 }] });
    conn.start();
    const first = await connect(s, [[7, 0]]);
    first.receive({ replay_done: { truncated: [] } });
    first.receive({ message: message(7, 1) });
    const sent = conn.send(7, 'aaaaaaaa-0000-4000-8000-000000000004', { text: 'across' });
    const original = first.sentOf('send')[0];
    first.drop();
    expect(states.at(-1)).toMatchObject({ kind: 'reconnecting' });
    // First retry after half to all of 500 ms (jitter fixed at the middle here).
    await vi.advanceTimersByTimeAsync(374);
    expect(s.made).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    const second = s.made[1];
    second.open();
    expect(second.sentOf('hello')[0].resume).toEqual([{ conversation: 7, seq: 1 }]);
    second.receive(welcome(1, [[7, 2]]));
    expect(second.sentOf('send')).toEqual([original]);
    // The replay holds the message sent across the drop; the ack follows.
    second.receive({ message: message(7, 2, 1, 'across', 'aaaaaaaa-0000-4000-8000-000000000004') });
    second.receive({ ack: { request_id: original.request_id, conversation: 7, id: 3, seq: 2, sent_at: 9 } });
    second.receive({ replay_done: { truncated: [] } });
    await expect(sent).resolves.toMatchObject({ seq: 2 });
    expect(seqs(delivered)).toEqual(['7:1', '7:2']);
    expect(states.at(-1)).toEqual({ kind: 'live' });
  });

  it('backs off exponentially while the server stays away', async () => {
    const { s, conn } = setup();
    conn.start();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      await flush();
      const socket = s.made[s.made.length - 1];
      const before = Date.now();
      socket.drop();
      while (s.made.length === i + 1) await vi.advanceTimersByTimeAsync(5);
      delays.push(Date.now() - before);
    }
    expect(delays.map((d) => Math.round(d / 5) * 5)).toEqual([375, 750, 1500, 3000, 6000]);
  });

  it('waits as long as go_away asks and sends nothing new meanwhile', async () => {
    const { s, conn } = setup();
    conn.start();
    const socket = await connect(s, [[7, 0]]);
    socket.receive({ go_away: { reason: 'shutdown', reconnect_after_ms: 1000, message: 'restarting' } });
    void conn.markRead(7, 1);
    expect(socket.sentOf('mark_read')).toEqual([]);
    socket.drop(1001);
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.made).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(600);
    expect(s.made).toHaveLength(2);
    const next = await connect(s, [[7, 0]]);
    expect(next.sentOf('mark_read')).toHaveLength(1);
  });

  it('refreshes the token after invalid_token, and ends the session when refreshing is refused', async () => {
    let refusals = 0;
    const { s, conn, tokenCalls, ended, states } = setup({
      tokens: async (refresh) => {
        if (refresh && refusals++ > 0) throw new SessionEndedError('revoked');
        return refresh ? 'fresh' : 'stale';
      },
    });
    conn.start();
    await flush();
    s.made[0].open();
    s.made[0].receive({ error: { request_id: null, code: 'invalid_token', message: 'token expired', retry_after_ms: null } });
    await vi.advanceTimersByTimeAsync(1000);
    expect(tokenCalls).toEqual([false, true]);
    s.made[1].open();
    expect(s.made[1].sentOf('hello')[0].token).toBe('fresh');
    s.made[1].receive({ error: { request_id: null, code: 'invalid_token', message: 'revoked', retry_after_ms: null } });
    await vi.advanceTimersByTimeAsync(1000);
    expect(ended).toEqual(['revoked']);
    expect(states.at(-1)).toEqual({ kind: 'stopped', reason: 'session ended' });
    expect(s.made).toHaveLength(2);
  });

  it('pings a silent server and reconnects when it stays silent', async () => {
    const { s, conn } = setup();
    conn.start();
    const socket = await connect(s, [], 1);
    await vi.advanceTimersByTimeAsync(20000);
    expect(socket.sentOf('ping')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(40000);
    expect(socket.closed).not.toBeNull();
    expect(conn.state.kind).toBe('reconnecting');
  });

  it('gives up on a handshake without welcome', async () => {
    const { s, conn } = setup();
    conn.start();
    await flush();
    s.made[0].open();
    await vi.advanceTimersByTimeAsync(10000);
    expect(s.made[0].closed).not.toBeNull();
    expect(conn.state.kind).toBe('reconnecting');
  });

  it('close() fails what is unanswered and stops for good', async () => {
    const { s, conn } = setup();
    conn.start();
    const socket = await connect(s, [[7, 0]]);
    const read = conn.markRead(7, 1);
    conn.close();
    await expect(read).rejects.toBeInstanceOf(RequestError);
    expect(socket.closed?.code).toBe(1000);
    await vi.advanceTimersByTimeAsync(60000);
    expect(s.made).toHaveLength(1);
  });
});

describe('relations (protocol 1.3)', () => {
  it('sends relate and takes entries and pages of entries; a 1.2 server is not asked', async () => {
    const { s, conn, delivered } = setup();
    conn.start();
    const socket = await connect(s, [[7, 0]]);
    socket.receive({ replay_done: { truncated: [] } });
    const reacted = conn.relate(7, 'aaaaaaaa-0000-4000-8000-000000000003', { react: { target: 1, reaction: { emoji: '👍' } } });
    const [r] = socket.sentOf('relate');
    expect(r.relation).toEqual({ react: { target: 1, reaction: { emoji: '👍' } } });
    socket.receive({ ack: { request_id: r.request_id, conversation: 7, id: 5, seq: 2, sent_at: 1 } });
    await expect(reacted).resolves.toMatchObject({ seq: 2 });
    const content = { message: { body: { text: 'hi' }, reply_to: null } };
    socket.receive({ entry: { conversation: 7, seq: 1, id: 4, sender: 2, client_msg_id: 'aaaaaaaa-0000-4000-8000-000000000004', sent_at: 1, content } });
    expect(seqs(delivered)).toEqual(['7:1']);
    const history = conn.history(7, null, 10);
    const [h] = socket.sentOf('history');
    socket.receive({ entries: { request_id: h.request_id, conversation: 7, entries: [], has_more: false } });
    await expect(history).resolves.toMatchObject({ entries: [], has_more: false });

    const old = setup();
    old.conn.start();
    await flush();
    const oldSocket = old.s.made[old.s.made.length - 1];
    oldSocket.open();
    oldSocket.receive(welcome(1, [[7, 0]], {}, 2));
    await expect(old.conn.relate(7, 'aaaaaaaa-0000-4000-8000-000000000005', { delete: { target: 1 } })).rejects.toMatchObject({
      code: 'unsupported_frame',
    });
    expect(oldSocket.sentOf('relate')).toEqual([]);
  });
});
