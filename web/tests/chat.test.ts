import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Api } from '../src/lib/api';
import { Chat, insertBySeq, type ChatMessage } from '../src/lib/chat.svelte';
import { entryOf } from '../src/lib/protocol';
import { DeviceKey, type KeyStore, fromBase64, messageAad, parseHeader, toBase64 } from '../src/lib/e2e';
import { entry, message, sockets, welcome } from './fake';

const ALICE = { id: 1, username: 'alice', display_name: 'Alice', bio: '', created_at: 0, last_seen: null };
const BOB = { id: 2, username: 'bob', display_name: 'Bob', bio: '', created_at: 0, last_seen: 1795795000000 };

function conversation(id: number, lastSeq: number, unread = 0) {
  return {
    id,
    kind: 'direct',
    title: '',
    encrypted: false,
    created_by: 1,
    created_at: 0,
    last_seq: lastSeq,
    last_activity: 1795795200000 + lastSeq,
    members: [
      { user: ALICE, role: 'member', last_read_seq: lastSeq - unread, joined_at: 0 },
      { user: BOB, role: 'member', last_read_seq: 0, joined_at: 0 },
    ],
    last_message: lastSeq > 0 ? message(id, lastSeq) : null,
    unread,
  };
}

/** A scripted HTTP API: each route answers from `routes`; calls are recorded. */
function fakeServer(routes: Record<string, (body: unknown) => [number, unknown]>) {
  const calls: string[] = [];
  const fetch = async (input: string, init?: RequestInit) => {
    const key = `${init?.method ?? 'GET'} ${input}`;
    calls.push(key);
    // The longest route that prefixes the request answers it.
    const route = Object.keys(routes)
      .filter((r) => key.startsWith(r))
      .sort((a, b) => b.length - a.length)[0];
    if (!route) return new Response(JSON.stringify({ error: { code: 'not_found', message: key } }), { status: 404 });
    const [status, body] = routes[route](init?.body ? JSON.parse(String(init.body)) : undefined);
    return new Response(status === 204 ? null : JSON.stringify(body), { status });
  };
  return { calls, api: new Api('', fetch) };
}

const session = { user: ALICE, access_token: 'a.b.c', token_type: 'Bearer', expires_in: 900 };

async function signedIn(extra: Record<string, (body: unknown) => [number, unknown]> = {}) {
  const server = fakeServer({
    'POST /api/login': () => [200, session],
    'GET /api/conversations': () => [200, { conversations: [conversation(7, 3, 1)] }],
    ...extra,
  });
  const s = sockets();
  const chat = new Chat({ api: server.api, wsUrl: 'ws://chat.test/ws', createSocket: s.create });
  await chat.login('alice', 'secret password');
  await vi.advanceTimersByTimeAsync(0);
  const socket = s.made[0];
  socket.open();
  socket.receive(welcome(1, [[7, 3]]));
  socket.receive({ replay_done: { truncated: [] } });
  return { chat, socket, server, s };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('session', () => {
  it('without a refresh cookie there is nothing to resume', async () => {
    const { api } = fakeServer({
      'POST /api/refresh': () => [401, { error: { code: 'invalid_token', message: 'no session' } }],
    });
    const chat = new Chat({ api, wsUrl: 'ws://x/ws' });
    await expect(chat.resume()).resolves.toBe(false);
    expect(chat.me).toBeNull();
  });

  it('signing in loads the conversations and resumes each from its last message', async () => {
    const { chat, socket } = await signedIn();
    expect(chat.me?.username).toBe('alice');
    expect(chat.sorted.map((c) => [c.id, chat.title(c), c.unread])).toEqual([[7, 'Bob', 1]]);
    expect(socket.sentOf('hello')[0]).toMatchObject({ token: 'a.b.c', resume: [{ conversation: 7, seq: 3 }] });
    expect(chat.connection.kind).toBe('live');
  });

  it('a session revoked elsewhere signs the user out with a notice', async () => {
    const { chat, socket, s } = await signedIn({
      'POST /api/refresh': () => [401, { error: { code: 'invalid_token', message: 'revoked' } }],
    });
    socket.receive({ error: { request_id: null, code: 'invalid_token', message: 'revoked', retry_after_ms: null } });
    await vi.advanceTimersByTimeAsync(1000);
    expect(chat.me).toBeNull();
    expect(chat.notice).toMatch(/session has ended/);
    expect(s.made).toHaveLength(1);
  });
});

describe('messages', () => {
  it('an own message shows as sending, then sent once, whether the ack or the echo comes first', async () => {
    const { chat, socket } = await signedIn();
    for (const ackFirst of [true, false]) {
      chat.send(7, 'hello');
      await vi.advanceTimersByTimeAsync(0);
      const view = chat.conversations[7];
      expect(view.outbox.map((m) => [m.text, m.status])).toEqual([['hello', 'sending']]);
      const sent = socket.sentOf('send').at(-1)!;
      const seq = view.lastSeq + 1;
      const ack = { ack: { request_id: sent.request_id, conversation: 7, id: 50 + seq, seq, sent_at: 5 } };
      const echo = { message: message(7, seq, 1, 'hello', sent.client_msg_id as string) };
      socket.receive(ackFirst ? ack : echo);
      socket.receive(ackFirst ? echo : ack);
      await vi.advanceTimersByTimeAsync(0);
      expect(view.outbox).toEqual([]);
      expect(view.messages.filter((m) => m.seq === seq).map((m) => [m.text, m.status])).toEqual([['hello', 'sent']]);
      expect(view.lastMessage?.text).toBe('hello');
    }
  });

  it('a refused message is marked failed and can be retried with the same key', async () => {
    const { chat, socket } = await signedIn();
    chat.send(7, 'will fail');
    await vi.advanceTimersByTimeAsync(0);
    const first = socket.sentOf('send')[0];
    socket.receive({ error: { request_id: first.request_id, code: 'internal', message: 'database hiccup', retry_after_ms: null } });
    await vi.advanceTimersByTimeAsync(0);
    const view = chat.conversations[7];
    expect(view.outbox.map((m) => [m.status, m.error])).toEqual([['failed', 'database hiccup']]);
    chat.retry(7, view.outbox[0].key);
    expect(view.outbox[0].status).toBe('sending');
    await vi.advanceTimersByTimeAsync(0);
    expect(socket.sentOf('send')[1].client_msg_id).toBe(first.client_msg_id);
  });

  it('counts unread messages until the conversation is open, then marks it read', async () => {
    const { chat, socket } = await signedIn({
      'GET /api/conversations/7/entries': () => [200, { entries: [message(7, 5), message(7, 4), message(7, 3)].map(entryOf), has_more: true }],
    });
    socket.receive({ message: message(7, 4) });
    socket.receive({ message: message(7, 5) });
    const view = chat.conversations[7];
    expect(view.unread).toBe(3);
    await chat.open(7);
    // History and live messages merge without duplicates.
    expect(view.messages.map((m) => m.seq)).toEqual([3, 4, 5]);
    expect(view.unread).toBe(0);
    expect(socket.sentOf('mark_read')).toMatchObject([{ conversation: 7, seq: 5 }]);
    // While the conversation is open, a new message is read at once.
    socket.receive({ message: message(7, 6) });
    expect(view.unread).toBe(0);
    expect(socket.sentOf('mark_read').map((f) => f.seq)).toEqual([5, 6]);
    // Not while the window is hidden.
    chat.setAttentive(false);
    socket.receive({ message: message(7, 7) });
    expect(view.unread).toBe(1);
    chat.setAttentive(true);
    expect(view.unread).toBe(0);
    expect(socket.sentOf('mark_read').map((f) => f.seq)).toEqual([5, 6, 7]);
  });

  it('shows who is typing until they stop, send, or the indicator expires', async () => {
    const { chat, socket } = await signedIn();
    const view = chat.conversations[7];
    socket.receive({ typing: { conversation: 7, user: 2, active: true } });
    expect(chat.typingNames(view)).toEqual(['Bob']);
    socket.receive({ message: message(7, 4) });
    expect(chat.typingNames(view)).toEqual([]);
    socket.receive({ typing: { conversation: 7, user: 2, active: true } });
    await vi.advanceTimersByTimeAsync(6500);
    expect(chat.typingNames(view)).toEqual([]);
  });

  it('tells others the user is typing at most every few seconds, and when they stop', async () => {
    const { chat, socket } = await signedIn();
    chat.typing(7);
    chat.typing(7);
    await vi.advanceTimersByTimeAsync(1000);
    chat.typing(7);
    expect(socket.sentOf('typing')).toEqual([{ conversation: 7, active: true }]);
    await vi.advanceTimersByTimeAsync(5000);
    expect(socket.sentOf('typing')).toEqual([
      { conversation: 7, active: true },
      { conversation: 7, active: false },
    ]);
  });

  it('read receipts and presence update the members', async () => {
    const { chat, socket } = await signedIn();
    const view = chat.conversations[7];
    socket.receive({ receipt: { conversation: 7, user: 2, seq: 3 } });
    expect(chat.readBy(view, 3)).toBe(1);
    expect(chat.readBy(view, 4)).toBe(0);
    socket.receive({ presence: { user: 2, status: 'online', last_seen: null } });
    expect(chat.online[2]).toBe(true);
    socket.receive({ presence: { user: 2, status: 'offline', last_seen: 1795795300000 } });
    expect([chat.online[2], chat.users[2].last_seen]).toEqual([false, 1795795300000]);
  });

  it('says when history cannot be loaded, and loads it on retry', async () => {
    let up = false;
    const { chat } = await signedIn({
      'GET /api/conversations/7/entries': () =>
        up ? [200, { entries: [entryOf(message(7, 3))], has_more: false }] : [503, { error: { code: 'unavailable', message: 'the database is unreachable' } }],
    });
    await chat.open(7);
    const view = chat.conversations[7];
    expect([view.historyLoaded, view.historyError]).toEqual([false, 'the database is unreachable']);
    up = true;
    await chat.loadOlder(7);
    expect([view.historyLoaded, view.historyError, view.hasMore]).toEqual([true, null, false]);
    expect(view.messages.map((m) => m.seq)).toEqual([3]);
  });

  it('leaves a conversation the user was removed from', async () => {
    const { chat, socket } = await signedIn({
      'GET /api/conversations/7/entries': () => [200, { entries: [], has_more: false }],
    });
    await chat.open(7);
    socket.receive({ membership: { conversation: 7, user: 1, change: 'removed', by: 2 } });
    expect(chat.conversations[7]).toBeUndefined();
    expect(chat.activeId).toBeNull();
  });
});

describe('relations', () => {
  it('folds edits, reactions, replies and deletions into the messages they name', async () => {
    const { chat, socket } = await signedIn({
      'GET /api/conversations/7/entries': () => [200, { entries: [], has_more: false }],
    });
    await chat.open(7);
    const view = chat.conversations[7];
    socket.receive({ entry: entry(7, 4, { message: { body: { text: 'first' }, reply_to: null } }) });
    socket.receive({ entry: entry(7, 5, { edit: { target: 4, body: { text: 'first, fixed' } } }) });
    socket.receive({ entry: entry(7, 6, { reaction: { target: 4, reaction: { emoji: '👍' } } }, 1) });
    socket.receive({ entry: entry(7, 7, { message: { body: { text: 'an answer' }, reply_to: 4 } }, 1) });
    expect(view.messages.map((m) => [m.seq, m.text, m.edited, m.replyTo])).toEqual([
      [4, 'first, fixed', true, null],
      [7, 'an answer', false, 4],
    ]);
    expect(view.messages[0].reactions).toEqual([{ emoji: '👍', users: [1], mine: 6 }]);
    // Relations are not unread; the two messages were read as they came (open chat).
    expect(view.unread).toBe(0);

    // Clicking one's own reaction takes it back: a deletion of the reaction entry.
    void chat.toggleReaction(7, 4, '👍');
    await vi.advanceTimersByTimeAsync(0);
    expect(socket.sentOf('relate').at(-1)).toMatchObject({ conversation: 7, relation: { delete: { target: 6 } } });
    void chat.toggleReaction(7, 4, '🎉');
    await vi.advanceTimersByTimeAsync(0);
    expect(socket.sentOf('relate').at(-1)).toMatchObject({ relation: { react: { target: 4, reaction: { emoji: '🎉' } } } });
    // A reply goes out as a relation and shows as one while sending.
    chat.send(7, 'me too', 4);
    await vi.advanceTimersByTimeAsync(0);
    expect(socket.sentOf('relate').at(-1)).toMatchObject({ relation: { reply: { target: 4, body: { text: 'me too' } } } });
    expect(view.outbox[0].replyTo).toBe(4);

    socket.receive({ entry: entry(7, 8, { delete: { target: 4 } }) });
    expect(view.messages[0]).toMatchObject({ deleted: true, text: '', reactions: [] });
  });

  it('applies relations whose message loads later with older history', async () => {
    const { chat, socket } = await signedIn({
      'GET /api/conversations/7/entries': () => [
        200,
        {
          entries: [
            entry(7, 3, { reaction: { target: 2, reaction: { emoji: '🎉' } } }),
            entry(7, 2, { message: { body: { text: 'old' }, reply_to: null } }, 1),
          ],
          has_more: false,
        },
      ],
    });
    // An edit of a message not loaded yet arrives live first.
    socket.receive({ entry: entry(7, 4, { edit: { target: 2, body: { text: 'old, edited' } } }, 1) });
    await chat.open(7);
    const [m] = chat.conversations[7].messages;
    expect([m.seq, m.text, m.edited, m.reactions.map((r) => r.emoji)]).toEqual([2, 'old, edited', true, ['🎉']]);
  });
});

describe('insertBySeq', () => {
  const m = (seq: number): ChatMessage => ({
    key: String(seq),
    conversation: 1,
    seq,
    sender: 1,
    sentAt: 0,
    text: '',
    encrypted: false,
    status: 'sent',
    error: null,
    replyTo: null,
    edited: false,
    editedAt: null,
    deleted: false,
    reactions: [],
    files: [],
    uploads: null,
    own: { text: '', unreadable: false, purged: false, files: [] },
  });
  it('keeps ascending order without duplicates', () => {
    const list: ChatMessage[] = [];
    for (const seq of [5, 6, 2, 9, 6, 1, 5, 7]) insertBySeq(list, m(seq));
    expect(list.map((x) => x.seq)).toEqual([1, 2, 5, 6, 7, 9]);
  });
});

/** Alice signed in with a device key, in encrypted conversation 8 with Bob's device. */
async function encryptedChat() {
  const alice = await DeviceKey.generate();
  const bob = await DeviceKey.generate();
  const keys = new Map<number, CryptoKeyPair>([[1, alice.pair]]);
  const keyStore: KeyStore = { load: async (u) => keys.get(u) ?? null, save: async (u, p) => void keys.set(u, p) };
  const device = (k: DeviceKey, user: number) => ({
    id: k.device.idHex,
    user_id: user,
    public_key: toBase64(k.device.key),
    name: '',
    created_at: 0,
  });
  const seen = { registered: null as unknown, deviceLists: 0 };
  const server = fakeServer({
    'POST /api/login': () => [200, session],
    'GET /api/conversations': () => [200, { conversations: [{ ...conversation(8, 0), encrypted: true }] }],
    'POST /api/devices': (body) => ((seen.registered = body), [201, device(alice, 1)]),
    'GET /api/conversations/8/devices': () => (seen.deviceLists++, [200, [device(alice, 1), device(bob, 2)]]),
  });
  const s = sockets();
  const chat = new Chat({ api: server.api, wsUrl: 'ws://chat.test/ws', createSocket: s.create, keyStore });
  await chat.login('alice', 'secret password');
  await vi.advanceTimersByTimeAsync(0);
  const socket = s.made[0];
  socket.open();
  socket.receive(welcome(1, [[8, 0]]));
  socket.receive({ replay_done: { truncated: [] } });
  return { chat, socket, alice, bob, seen };
}

describe('end-to-end encryption', () => {
  it('seals sends for every device, opens what arrives and says what cannot be opened', async () => {
    const { chat, socket, alice, bob, seen } = await encryptedChat();
    expect(seen.registered).toEqual({ public_key: toBase64(alice.device.key), name: expect.stringContaining('(web)') });
    expect(chat.device?.fingerprint).toBe(alice.device.fingerprint);

    // A send goes out sealed for Bob's device and Alice's own.
    chat.send(8, 'the vault code');
    await vi.waitFor(() => expect(socket.sentOf('send')).toHaveLength(1));
    const sent = socket.sentOf('send')[0] as { body: { encrypted?: string; text?: string }; client_msg_id: string };
    expect(sent.body.text).toBeUndefined();
    const envelope = fromBase64(sent.body.encrypted!);
    expect(parseHeader(envelope).recipients.sort()).toEqual([alice.device.idHex, bob.device.idHex].sort());
    const opened = await bob.open(envelope, messageAad(8, 1, sent.client_msg_id));
    expect(new TextDecoder().decode(opened.body)).toBe('the vault code');

    // What Bob seals for Alice arrives readable; what he sealed for himself only does not.
    const incoming = async (seq: number, recipients: DeviceKey[], text: string) => {
      const m = message(8, seq, 2, '');
      const sealed = await bob.seal(new TextEncoder().encode(text), recipients.map((k) => k.device.key), messageAad(8, 2, m.client_msg_id));
      socket.receive({ message: { ...m, body: { encrypted: toBase64(sealed) } } });
    };
    await incoming(1, [alice, bob], 'hi alice');
    await incoming(2, [bob], 'not for alice');
    const view = chat.conversations[8];
    await vi.waitFor(() => expect(view.messages).toHaveLength(2));
    expect(view.messages.map((m) => [m.text, m.encrypted])).toEqual([
      ['hi alice', false],
      ['Encrypted before this device was added', true],
    ]);

    // A membership change makes the next send fetch the device list again.
    chat.send(8, 'second');
    await vi.waitFor(() => expect(socket.sentOf('send')).toHaveLength(2));
    expect(seen.deviceLists).toBe(1);
    socket.receive({ membership: { conversation: 8, user: 3, change: 'added', by: 1 } });
    chat.send(8, 'third');
    await vi.waitFor(() => expect(socket.sentOf('send')).toHaveLength(3));
    expect(seen.deviceLists).toBe(2);

    // The server refuses a send sealed for an outdated device list: the app fetches the
    // list again and resends, sealed anew, under the same idempotency key.
    const third = socket.sentOf('send')[2] as { request_id: number; client_msg_id: string; body: { encrypted: string } };
    socket.receive({
      error: { request_id: third.request_id, code: 'devices_changed', message: 'devices changed', retry_after_ms: null },
    });
    await vi.waitFor(() => expect(socket.sentOf('send')).toHaveLength(4));
    const resent = socket.sentOf('send')[3] as typeof third;
    expect(seen.deviceLists).toBe(3);
    expect(resent.client_msg_id).toBe(third.client_msg_id);
    expect(resent.body.encrypted).not.toBe(third.body.encrypted);
    expect(chat.conversations[8].outbox.map((m) => m.status)).toEqual(['sending', 'sending', 'sending']);
  });
});

describe('files', () => {
  const photo = {
    id: '0123456789abcdef0123456789abcdef',
    name: 'view.jpg',
    size: 4821,
    media_type: 'image/jpeg',
    image: { width: 640, height: 480, thumbnail: '/9j/4AAQ' },
  };

  it('shows the files of a message under its caption, and keeps them through an edit', async () => {
    const { chat, socket } = await signedIn();
    socket.receive({ entry: entry(7, 4, { message: { body: { attachments: { text: 'our view', files: [photo] } }, reply_to: null } }) });
    const view = chat.conversations[7];
    expect(view.messages.map((m) => [m.text, m.files.map((f) => [f.id, f.name, f.mediaType, f.image?.width])])).toEqual([
      ['our view', [[photo.id, 'view.jpg', 'image/jpeg', 640]]],
    ]);
    socket.receive({ entry: entry(7, 5, { edit: { target: 4, body: { text: 'our view at dusk' } } }) });
    expect(view.messages[0].text).toBe('our view at dusk');
    expect(view.messages[0].files).toHaveLength(1);
    socket.receive({ entry: entry(7, 6, { delete: { target: 4 } }) });
    expect([view.messages[0].deleted, view.messages[0].files]).toEqual([true, []]);
  });

  it('opens sealed file descriptions with their keys, and refuses ones that do not match the clear ids', async () => {
    const { chat, socket, alice, bob } = await encryptedChat();
    const key = new Uint8Array(32).fill(7);
    const digest = new Uint8Array(32).fill(9);
    const incoming = async (seq: number, listed: string[], clear: string[]) => {
      const m = message(8, seq, 2, '');
      const doc = {
        text: 'the contract',
        files: listed.map((id) => ({ ...photo, id, image: null, media_type: 'application/pdf', name: 'contract.pdf', key: toBase64(key), digest: toBase64(digest) })),
      };
      const sealed = await bob.seal(new TextEncoder().encode(JSON.stringify(doc)), [alice.device.key], messageAad(8, 2, m.client_msg_id));
      socket.receive({
        entry: entry(8, seq, { message: { body: { sealed_attachments: { envelope: toBase64(sealed), files: clear } }, reply_to: null } }),
      });
    };
    await incoming(1, [photo.id], [photo.id]);
    await incoming(2, [photo.id], ['ffffffffffffffffffffffffffffffff']);
    const view = chat.conversations[8];
    await vi.waitFor(() => expect(view.messages).toHaveLength(2));
    const [good, bad] = view.messages;
    expect([good.text, good.encrypted, good.files.map((f) => [f.name, f.mediaType, f.sealed?.key, f.sealed?.digest])]).toEqual([
      'the contract',
      false,
      [['contract.pdf', 'application/pdf', key, digest]],
    ]);
    expect([bad.encrypted, bad.files]).toEqual([true, []]);
    expect(bad.text).toMatch(/described wrongly/);
  });
});
