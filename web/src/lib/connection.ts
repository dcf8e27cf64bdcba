// One real-time connection to chat-server over the chat.v1.json WebSocket subprotocol,
// kept alive across network failures: handshake with resume cursors, request/answer
// matching, per-conversation ordering and de-duplication (PROTOCOL.md §9.1), gap
// filling with `sync`, heartbeats, reconnects with jittered backoff, `go_away`, and
// token refresh after `invalid_token`. No UI code here: the app store subscribes
// through `ConnectionHandlers`.

import {
  type Ack,
  type Body,
  type ClientFrame,
  type Cursor,
  type Entry,
  type EntryPage,
  type ErrorFrame,
  type GoAway,
  type Limits,
  type Membership,
  type Relation,
  type Presence,
  type Receipt,
  type ServerFrame,
  type Typing,
  type Welcome,
  DEFAULT_LIMITS,
  FATAL_CODES,
  FrameError,
  HANDSHAKE_TIMEOUT_MS,
  SUBPROTOCOL,
  CLIENT_VERSION,
  decode,
  encode,
  entryOf,
  entryPageOf,
} from './protocol';

/** The part of the browser's WebSocket this module uses; tests supply a fake. */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = (url: string, protocol: string) => SocketLike;

/** Where the connection stands. */
export type ConnectionState =
  /** Opening the transport or waiting for `welcome`. */
  | { kind: 'connecting'; attempt: number }
  /** Welcomed; the server is replaying what was missed. */
  | { kind: 'replaying' }
  /** Everything missed has been replayed; live delivery. */
  | { kind: 'live' }
  /** The connection failed; the next attempt is at `retryAt` (epoch ms). */
  | { kind: 'reconnecting'; retryAt: number; reason: string }
  /** Closed for good (`close()` was called, or the session ended). */
  | { kind: 'stopped'; reason: string };

/** What a request was refused with: a protocol error code and its explanation. */
export class RequestError extends Error {
  override name = 'RequestError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Thrown by `getToken` when the session cannot continue (refresh refused). */
export class SessionEndedError extends Error {
  override name = 'SessionEndedError';
}

export interface ConnectionHandlers {
  onState?(state: ConnectionState): void;
  onWelcome?(welcome: Welcome): void;
  /**
   * Every entry exactly once, in seq order per conversation: messages, and relations
   * (replies, edits, deletions, reactions) from a 1.3 server.
   */
  onEntry?(entry: Entry): void;
  onTyping?(typing: Typing): void;
  onPresence?(presence: Presence): void;
  onReceipt?(receipt: Receipt): void;
  onMembership?(membership: Membership): void;
  /** The session is over (its tokens were revoked); the app should log out. */
  onSessionEnded?(reason: string): void;
}

export interface ConnectionOptions {
  /** `ws://host/ws` or `wss://host/ws`. */
  url: string;
  /** An access token; `refresh` asks for a new one because the last was refused. */
  getToken(refresh: boolean): Promise<string>;
  handlers?: ConnectionHandlers;
  /** Per conversation, the last seq the app already has; replayed from there. */
  resume?: Cursor[];
  clientName?: string;
  createSocket?: SocketFactory;
  /** First and longest reconnect delay. */
  backoff?: { initialMs: number; maxMs: number };
  /** Random numbers in [0, 1) for jitter; tests make it deterministic. */
  random?: () => number;
}

interface Track {
  /** The last seq handed to the app. */
  last: number;
  /** Entries past a gap, by seq, until the gap is filled. */
  held: Map<number, Entry>;
  /** The newest seq known to exist (from `welcome` or a message). */
  head: number;
  syncing: boolean;
  /** False once the user left: no resume cursor, but the position is kept. */
  member: boolean;
}

interface Pending {
  build(requestId: number): ClientFrame;
  resolve(value: unknown): void;
  reject(error: Error): void;
  sent: boolean;
  /** Not before this time (epoch ms), after `rate_limited` or `unavailable`. */
  notBefore: number;
}

/** A conversation tracked from `last`, with `head` the newest seq known to exist. */
function newTrack(last: number, head: number): Track {
  return { last, head, held: new Map(), syncing: false, member: true };
}

const OPEN = 1;
const MAX_REQUEST_ID = 0xffffffff;

export class Connection {
  private readonly opts: ConnectionOptions;
  private readonly handlers: ConnectionHandlers;
  private readonly createSocket: SocketFactory;
  private readonly random: () => number;
  private socket: SocketLike | null = null;
  private stateValue: ConnectionState = { kind: 'connecting', attempt: 0 };
  private tracks = new Map<number, Track>();
  private pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private limits: Limits = DEFAULT_LIMITS;
  private welcomed = false;
  /** The version the server chose in its last `welcome`. */
  private version: { major: number; minor: number } | null = null;
  private replayDone = false;
  private heads = new Map<number, number>();
  private attempt = 0;
  private refreshToken = false;
  private goAwayDelay: number | null = null;
  private lastHeard = 0;
  private pingNonce = 0;
  private pingOutstanding = false;
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private heartbeat: ReturnType<typeof setInterval> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private draining = false;
  private currentUser = 0;

  constructor(opts: ConnectionOptions) {
    this.opts = opts;
    this.handlers = opts.handlers ?? {};
    this.createSocket =
      opts.createSocket ?? ((url, protocol) => new WebSocket(url, protocol) as SocketLike);
    this.random = opts.random ?? Math.random;
    for (const c of opts.resume ?? []) {
      this.tracks.set(c.conversation, newTrack(c.seq, c.seq));
    }
  }

  /** Opens the connection; it then stays up until `close()`. */
  start(): void {
    if (this.socket === null && this.retryTimer === null && !this.stopped) {
      void this.connect();
    }
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The limits the server announced (or the protocol defaults before `welcome`). */
  get serverLimits(): Limits {
    return this.limits;
  }

  /** Per conversation, the last seq handed to the app. */
  cursors(): Cursor[] {
    return [...this.tracks]
      .filter(([, t]) => t.member)
      .map(([conversation, t]) => ({ conversation, seq: t.last }));
  }

  /** Makes the app aware of a conversation it has shown up to `seq`. */
  track(conversation: number, seq: number): void {
    const t = this.tracks.get(conversation);
    if (!t) {
      this.tracks.set(conversation, newTrack(seq, seq));
    }
  }

  /** Sends a message; resolves with the server's `ack` once it is stored. Queued while offline. */
  send(conversation: number, clientMsgId: string, body: Body): Promise<Ack> {
    return this.request((request_id) => ({
      send: { request_id, conversation, client_msg_id: clientMsgId, body },
    }));
  }

  /**
   * Adds a relation (a reply, an edit, a deletion, a reaction; protocol 1.3); resolves
   * with its `ack`. Queued while offline and retried like a send, under its key.
   */
  relate(conversation: number, clientMsgId: string, relation: Relation): Promise<Ack> {
    if (this.version !== null && this.version.minor < 3) {
      return Promise.reject(new RequestError('unsupported_frame', 'the server does not support replies, edits or reactions'));
    }
    return this.request((request_id) => ({
      relate: { request_id, conversation, client_msg_id: clientMsgId, relation },
    }));
  }

  /** Older entries, newest first. */
  history(conversation: number, before: number | null, limit: number): Promise<EntryPage> {
    return this.request((request_id) => ({
      history: { request_id, conversation, before, limit: Math.min(limit, this.limits.max_page) },
    }));
  }

  /** Stores the user's read position. */
  markRead(conversation: number, seq: number): Promise<void> {
    return this.request((request_id) => ({ mark_read: { request_id, conversation, seq } }));
  }

  /** Starts or stops the typing indicator; dropped when not connected (it is ephemeral). */
  typing(conversation: number, active: boolean): void {
    if (this.welcomed) {
      this.write({ typing: { conversation, active } });
    }
  }

  /** Tries to reconnect now instead of waiting out the backoff (the network came back). */
  reconnectNow(): void {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      void this.connect();
    }
  }

  /** Closes for good; unanswered requests fail. */
  close(reason = 'closed'): void {
    if (this.stopped) return;
    this.stopped = true;
    this.teardown(1000, 'client closing');
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.pumpTimer !== null) clearTimeout(this.pumpTimer);
    this.retryTimer = null;
    for (const p of this.pending.values()) {
      p.reject(new RequestError('closed', 'the connection was closed'));
    }
    this.pending.clear();
    this.setState({ kind: 'stopped', reason });
  }

  private setState(state: ConnectionState): void {
    this.stateValue = state;
    this.handlers.onState?.(state);
  }

  private async connect(): Promise<void> {
    this.retryTimer = null;
    this.attempt += 1;
    this.setState({ kind: 'connecting', attempt: this.attempt });
    let token: string;
    try {
      token = await this.opts.getToken(this.refreshToken);
    } catch (e) {
      if (e instanceof SessionEndedError) {
        this.close('session ended');
        this.handlers.onSessionEnded?.(e.message);
      } else if (!this.stopped) {
        this.scheduleReconnect(`cannot get a token: ${(e as Error).message}`);
      }
      return;
    }
    if (this.stopped) return;
    this.refreshToken = false;
    let socket: SocketLike;
    try {
      socket = this.createSocket(this.opts.url, SUBPROTOCOL);
    } catch (e) {
      this.scheduleReconnect(`cannot open a WebSocket: ${(e as Error).message}`);
      return;
    }
    this.socket = socket;
    this.welcomed = false;
    this.replayDone = false;
    const handshake = setTimeout(() => {
      if (this.socket === socket && !this.welcomed) {
        this.drop(socket, 'no welcome from the server in time');
      }
    }, HANDSHAKE_TIMEOUT_MS);
    this.timers.add(handshake);
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.lastHeard = Date.now();
      this.write({
        hello: {
          version: { ...CLIENT_VERSION },
          token,
          client: this.opts.clientName ?? 'chat-web/0.1',
          resume: this.cursors(),
        },
      });
    };
    socket.onmessage = (ev) => {
      if (this.socket !== socket) return;
      if (typeof ev.data !== 'string') {
        this.drop(socket, 'binary message on the JSON subprotocol');
        return;
      }
      this.lastHeard = Date.now();
      this.pingOutstanding = false;
      let frame: ServerFrame | null;
      try {
        frame = decode(ev.data);
      } catch (e) {
        if (e instanceof FrameError) {
          console.warn('chat: ignoring a malformed frame:', e.message);
          return;
        }
        throw e;
      }
      if (frame) this.onFrame(frame);
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.afterClose(`connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`);
    };
    socket.onerror = () => {
      // A close event always follows; nothing to do here.
    };
  }

  /** Closes `socket` on our side and schedules the reconnect. */
  private drop(socket: SocketLike, reason: string): void {
    if (this.socket !== socket) return;
    this.teardown(4000, reason);
    this.afterClose(reason);
  }

  private teardown(code: number, reason: string): void {
    const socket = this.socket;
    this.socket = null;
    this.welcomed = false;
    this.draining = false;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 4000, reason.slice(0, 100));
      } catch {
        // Already closed.
      }
    }
  }

  private afterClose(reason: string): void {
    this.teardown(1000, reason);
    for (const p of this.pending.values()) p.sent = false;
    for (const t of this.tracks.values()) t.syncing = false;
    if (!this.stopped) this.scheduleReconnect(reason);
  }

  private scheduleReconnect(reason: string): void {
    const backoff = this.opts.backoff ?? { initialMs: 500, maxMs: 30000 };
    let delay: number;
    if (this.goAwayDelay !== null) {
      delay = this.goAwayDelay + this.random() * Math.max(500, this.goAwayDelay);
      this.goAwayDelay = null;
    } else {
      const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(Math.max(this.attempt - 1, 0), 16));
      delay = ceiling / 2 + (this.random() * ceiling) / 2;
    }
    this.setState({ kind: 'reconnecting', retryAt: Date.now() + delay, reason });
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  private write(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return false;
    try {
      socket.send(encode(frame));
      return true;
    } catch {
      return false;
    }
  }

  private request<T>(build: (requestId: number) => ClientFrame): Promise<T> {
    if (this.stopped) {
      return Promise.reject(new RequestError('closed', 'the connection was closed'));
    }
    return new Promise<T>((resolve, reject) => {
      let id = this.nextRequestId;
      while (this.pending.has(id)) id = (id % MAX_REQUEST_ID) + 1;
      this.nextRequestId = (id % MAX_REQUEST_ID) + 1;
      this.pending.set(id, {
        build,
        resolve: resolve as (v: unknown) => void,
        reject,
        sent: false,
        notBefore: 0,
      });
      this.pump();
    });
  }

  /** Sends queued requests in their original order, at most `max_in_flight` unanswered. */
  private pump(): void {
    if (!this.welcomed || this.draining) return;
    let inFlight = 0;
    for (const p of this.pending.values()) if (p.sent) inFlight += 1;
    const now = Date.now();
    let wake = Infinity;
    for (const [id, p] of this.pending) {
      if (inFlight >= this.limits.max_in_flight) break;
      if (p.sent) continue;
      if (p.notBefore > now) {
        wake = Math.min(wake, p.notBefore);
        continue;
      }
      if (!this.write(p.build(id))) return;
      p.sent = true;
      inFlight += 1;
    }
    if (wake !== Infinity && this.pumpTimer === null) {
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = null;
        this.pump();
      }, wake - now);
    }
  }

  private settle(requestId: number, value: unknown): void {
    const p = this.pending.get(requestId);
    if (!p) return;
    this.pending.delete(requestId);
    p.resolve(value);
    this.pump();
  }

  private onFrame(frame: ServerFrame): void {
    if ('welcome' in frame) this.onWelcome(frame.welcome);
    else if ('message' in frame) this.accept(entryOf(frame.message));
    else if ('entry' in frame) this.accept(frame.entry);
    else if ('entries' in frame) this.settle(frame.entries.request_id, frame.entries);
    else if ('ack' in frame) this.settle(frame.ack.request_id, frame.ack);
    else if ('history_page' in frame) this.settle(frame.history_page.request_id, entryPageOf(frame.history_page));
    else if ('sync_page' in frame) this.settle(frame.sync_page.request_id, entryPageOf(frame.sync_page));
    else if ('done' in frame) this.settle(frame.done.request_id, undefined);
    else if ('replay_done' in frame) this.onReplayDone(frame.replay_done.truncated);
    else if ('typing' in frame) this.handlers.onTyping?.(frame.typing);
    else if ('presence' in frame) this.handlers.onPresence?.(frame.presence);
    else if ('receipt' in frame) this.handlers.onReceipt?.(frame.receipt);
    else if ('membership' in frame) this.onMembership(frame.membership);
    else if ('error' in frame) this.onError(frame.error);
    else if ('ping' in frame) this.write({ pong: { nonce: frame.ping.nonce } });
    else if ('go_away' in frame) this.onGoAway(frame.go_away);
  }

  private onWelcome(welcome: Welcome): void {
    this.welcomed = true;
    this.draining = false;
    this.currentUser = welcome.user;
    this.version = welcome.version;
    this.attempt = 0;
    this.limits = welcome.limits;
    this.heads = new Map(welcome.heads.map((h) => [h.conversation, h.seq]));
    for (const [conversation, t] of this.tracks) {
      if (!this.heads.has(conversation)) {
        t.member = false;
        t.held.clear();
      }
    }
    for (const [conversation, seq] of this.heads) {
      const t = this.tracks.get(conversation);
      if (t) {
        t.member = true;
        t.head = Math.max(t.head, seq);
      }
      else this.tracks.set(conversation, newTrack(seq, seq));
    }
    this.setState({ kind: 'replaying' });
    this.handlers.onWelcome?.(welcome);
    const interval = Math.max(250, Math.min(welcome.limits.heartbeat_ms, welcome.limits.idle_timeout_ms) / 4);
    this.heartbeat = setInterval(() => this.checkLiveness(), interval);
    this.pump();
  }

  private onReplayDone(truncated: number[]): void {
    this.replayDone = true;
    const behind = new Set(truncated);
    for (const [conversation, head] of this.heads) {
      const t = this.tracks.get(conversation);
      if (t && (head > t.last || t.held.size > 0)) behind.add(conversation);
    }
    this.heads.clear();
    for (const conversation of behind) this.fill(conversation);
    this.setState({ kind: 'live' });
  }

  private checkLiveness(): void {
    const socket = this.socket;
    if (!socket) return;
    const silent = Date.now() - this.lastHeard;
    if (silent >= this.limits.idle_timeout_ms) {
      this.drop(socket, 'the server went silent');
    } else if (silent >= this.limits.heartbeat_ms && !this.pingOutstanding) {
      this.pingOutstanding = true;
      this.pingNonce = (this.pingNonce + 1) % MAX_REQUEST_ID;
      this.write({ ping: { nonce: this.pingNonce } });
    }
  }

  /** Hands `m` to the app if it is the next of its conversation; holds it if past a gap. */
  private accept(m: Entry): void {
    let t = this.tracks.get(m.conversation);
    if (!t) {
      t = newTrack(m.seq - 1, m.seq);
      this.tracks.set(m.conversation, t);
    }
    if (m.seq <= t.last) return;
    t.head = Math.max(t.head, m.seq);
    if (m.seq !== t.last + 1) {
      t.held.set(m.seq, m);
      if (this.replayDone) this.fill(m.conversation);
      return;
    }
    this.deliver(t, m);
    this.drain(t);
  }

  private deliver(t: Track, m: Entry): void {
    t.last = m.seq;
    this.handlers.onEntry?.(m);
  }

  private drain(t: Track): void {
    for (let next = t.held.get(t.last + 1); next; next = t.held.get(t.last + 1)) {
      t.held.delete(next.seq);
      this.deliver(t, next);
    }
    for (const seq of t.held.keys()) if (seq <= t.last) t.held.delete(seq);
  }

  /** Fetches what is missing after the conversation's last seq, page by page. */
  private fill(conversation: number): void {
    const t = this.tracks.get(conversation);
    if (!t || t.syncing || !t.member) return;
    t.syncing = true;
    const after = t.last;
    // Everything up to here existed before the page is read: what it lacks is gone.
    const known = t.head;
    this.request<EntryPage>((request_id) => ({
      sync: { request_id, conversation, after, limit: this.limits.max_page },
    })).then(
      (page) => {
        t.syncing = false;
        for (const m of page.entries) this.accept(m);
        if (!page.has_more) {
          // Held messages up to `known` wait for nothing that still exists; later
          // ones may be newer than the page and wait for the next sync.
          for (const seq of [...t.held.keys()].sort((a, b) => a - b)) {
            if (seq > known) break;
            if (seq > t.last) {
              t.last = seq - 1;
              this.drain(t);
            }
          }
        }
        if (page.has_more || t.held.size > 0) this.fill(conversation);
      },
      (e: Error) => {
        t.syncing = false;
        if (e instanceof RequestError && e.code === 'not_found') {
          t.member = false;
          t.held.clear();
        }
      },
    );
  }

  private onMembership(m: Membership): void {
    if (m.user === this.currentUser) {
      const t = this.tracks.get(m.conversation);
      if (m.change === 'added') {
        if (t) t.member = true;
        else this.tracks.set(m.conversation, newTrack(0, 0));
      } else if (t) {
        t.member = false;
        t.held.clear();
      }
    }
    this.handlers.onMembership?.(m);
  }

  private onError(e: ErrorFrame): void {
    if (e.request_id !== null && !FATAL_CODES.has(e.code)) {
      const p = this.pending.get(e.request_id);
      if (!p) return;
      if (e.code === 'rate_limited' || e.code === 'unavailable' || e.code === 'too_many_requests') {
        p.sent = false;
        p.notBefore = Date.now() + (e.retry_after_ms ?? 1000);
        this.pump();
        return;
      }
      this.pending.delete(e.request_id);
      p.reject(new RequestError(e.code, e.message));
      this.pump();
      return;
    }
    if (!FATAL_CODES.has(e.code)) {
      console.warn(`chat: server error ${e.code}: ${e.message}`);
      return;
    }
    if (e.code === 'invalid_token') this.refreshToken = true;
    if (e.code === 'unsupported_version') {
      this.close(`the server does not speak this client's protocol: ${e.message}`);
      return;
    }
    const socket = this.socket;
    if (socket) this.drop(socket, `${e.code}: ${e.message}`);
  }

  private onGoAway(g: GoAway): void {
    // Requests already sent are still answered; new ones wait for the next connection.
    this.goAwayDelay = g.reconnect_after_ms;
    this.draining = true;
  }
}
