// The app's state: who is signed in, their conversations with messages, people,
// presence, typing and receipts, fed by the HTTP API and the real-time connection.
// Components read it and call its methods; they never talk to the network themselves.

import { Api, ApiError, type Conversation, type Device, type Member, SignedOutError, type User } from './api';
import { Connection, type ConnectionState, RequestError, SessionEndedError, type SocketFactory } from './connection';
import {
  DeviceKey,
  IndexedDbKeyStore,
  type KeyStore,
  OpenError,
  type PublicDevice,
  describeKey,
  deviceKeyFor,
  fromBase64,
  messageAad,
  toBase64,
  unreadableText,
} from './e2e';
import { type Body, type Message, TYPING_TTL_MS, newClientMsgId } from './protocol';

/** A message as the UI shows it: stored ones have a seq, the user's unsent ones do not. */
export interface ChatMessage {
  /** The `client_msg_id`: stable from the moment the user presses send. */
  key: string;
  conversation: number;
  seq: number | null;
  sender: number;
  sentAt: number;
  text: string;
  /** An end-to-end encrypted body this device cannot open; `text` says why. */
  encrypted: boolean;
  status: 'sending' | 'sent' | 'failed';
  error: string | null;
}

export interface ConversationView {
  id: number;
  kind: 'direct' | 'group';
  title: string;
  encrypted: boolean;
  lastSeq: number;
  lastActivity: number;
  members: Member[];
  unread: number;
  lastMessage: ChatMessage | null;
  /** Stored messages, ascending seq, without duplicates. */
  messages: ChatMessage[];
  /** The user's own messages not yet stored (sending or failed), oldest first. */
  outbox: ChatMessage[];
  historyLoaded: boolean;
  hasMore: boolean;
  loadingHistory: boolean;
  /** Why the last history page could not be loaded. */
  historyError: string | null;
  /** Who is typing, until when (epoch ms). */
  typing: Record<number, number>;
}

export interface ChatOptions {
  api?: Api;
  /** The WebSocket URL; by default `/ws` on the page's own origin. */
  wsUrl?: string;
  createSocket?: SocketFactory;
  /** Repeat of the typing indicator while the user keeps typing. */
  typingRepeatMs?: number;
  /** Where this browser's device keys live (IndexedDB by default). */
  keyStore?: KeyStore;
}

/** A device as the UI shows it: the fingerprint is computed here, from the key. */
export interface DeviceView extends PublicDevice {
  name: string;
  createdAt: number;
  /** This browser's own device. */
  current: boolean;
}

/** How long a conversation's device list is trusted before a send fetches it again. */
const DEVICES_TTL_MS = 10_000;

const PAGE = 50;

function toChat(m: Message): ChatMessage {
  const text = 'text' in m.body ? m.body.text : '';
  return {
    key: m.client_msg_id,
    conversation: m.conversation,
    seq: m.seq,
    sender: m.sender,
    sentAt: m.sent_at,
    text,
    encrypted: 'encrypted' in m.body,
    status: 'sent',
    error: null,
  };
}

/** Inserts `m` into `list` (ascending seq) unless a message with its seq is there. */
export function insertBySeq(list: ChatMessage[], m: ChatMessage): boolean {
  const seq = m.seq ?? 0;
  let lo = 0;
  let hi = list.length;
  // Live messages arrive in order: check the end first.
  if (hi === 0 || (list[hi - 1].seq ?? 0) < seq) {
    list.push(m);
    return true;
  }
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((list[mid].seq ?? 0) < seq) lo = mid + 1;
    else hi = mid;
  }
  if (lo < list.length && list[lo].seq === seq) return false;
  list.splice(lo, 0, m);
  return true;
}

/** Makes a stored message the conversation's latest if it is; says whether it was. */
function newest(view: ConversationView, m: ChatMessage): boolean {
  const seq = m.seq ?? 0;
  if (seq < view.lastSeq) return false;
  view.lastSeq = seq;
  view.lastActivity = Math.max(view.lastActivity, m.sentAt);
  view.lastMessage = m;
  return true;
}

/** The listed devices whose id is their key's own, each with its key described here. */
async function verified(devices: Device[]): Promise<[Device, PublicDevice][]> {
  const out: [Device, PublicDevice][] = [];
  for (const d of devices) {
    const described = await describeKey(fromBase64(d.public_key));
    if (described.idHex === d.id) out.push([d, described]);
  }
  return out;
}

/** A name for this browser in the user's device list. */
function deviceName(): string {
  const ua = typeof navigator === 'undefined' ? '' : navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chromium' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  return `${browser} (web)`;
}

function describe(e: unknown): string {
  if (e instanceof ApiError || e instanceof RequestError || e instanceof Error) return e.message;
  return String(e);
}

export class Chat {
  readonly api: Api;
  me = $state<User | null>(null);
  users = $state<Record<number, User>>({});
  online = $state<Record<number, boolean>>({});
  conversations = $state<Record<number, ConversationView>>({});
  connection = $state<ConnectionState>({ kind: 'connecting', attempt: 0 });
  /** True once the connection was live at least once since sign-in. */
  everLive = $state(false);
  activeId = $state<number | null>(null);
  /** Why the user was signed out, shown on the sign-in page. */
  notice = $state<string | null>(null);
  /** The document is visible and focused: arriving messages count as read. */
  attentive = $state(true);
  /** This browser's end-to-end encryption device, once set up; null where WebCrypto lacks X25519. */
  device = $state<PublicDevice | null>(null);

  sorted = $derived(
    Object.values(this.conversations).sort((a, b) => b.lastActivity - a.lastActivity || b.id - a.id),
  );

  private conn: Connection | null = null;
  private readonly opts: ChatOptions;
  private typingSentAt = new Map<number, number>();
  private typingStop = new Map<number, ReturnType<typeof setTimeout>>();
  private sweeper: ReturnType<typeof setInterval> | null = null;
  private fetchingConversation = new Map<number, Promise<void>>();
  private readSent = new Map<number, number>();
  private deviceKey: DeviceKey | null = null;
  private recipients = new Map<number, { keys: Uint8Array[]; at: number }>();

  constructor(opts: ChatOptions = {}) {
    this.opts = opts;
    this.api = opts.api ?? new Api();
    this.api.onSignedOut = () => this.end('Your session has ended. Please sign in again.');
  }

  // ---- session ---------------------------------------------------------------------

  /** Resumes the session of an earlier visit through the refresh cookie; false if none. */
  async resume(): Promise<boolean> {
    try {
      const session = await this.api.refresh();
      await this.begin(session.user);
      return true;
    } catch (e) {
      if (e instanceof SignedOutError) return false;
      throw e;
    }
  }

  async login(username: string, password: string): Promise<void> {
    const session = await this.api.login(username, password);
    await this.begin(session.user);
  }

  async register(username: string, password: string, displayName?: string): Promise<void> {
    const session = await this.api.register(username, password, displayName);
    await this.begin(session.user);
  }

  async logout(): Promise<void> {
    this.stop();
    await this.api.logout();
    this.clear();
  }

  private async begin(user: User): Promise<void> {
    this.notice = null;
    // The device key first: what the UI shows once `me` is set may need opening.
    await this.setUpDevice(user.id);
    this.me = user;
    this.users[user.id] = user;
    const list = await this.api.conversations();
    for (const summary of list) {
      const view = this.view(summary);
      view.unread = summary.unread;
      const last = summary.last_message;
      if (last) {
        view.lastMessage = toChat(last);
        if ('encrypted' in last.body) void this.decode(last).then((m) => (view.lastMessage = m));
      }
    }
    this.connect(list.map((c) => ({ conversation: c.id, seq: c.last_seq })));
    this.sweeper = setInterval(() => this.sweepTyping(), 1000);
  }

  private connect(resume: { conversation: number; seq: number }[]): void {
    const url =
      this.opts.wsUrl ??
      `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
    this.conn = new Connection({
      url,
      resume,
      createSocket: this.opts.createSocket,
      clientName: 'chat-web/0.1',
      getToken: async (refresh) => {
        try {
          return await this.api.token(refresh);
        } catch (e) {
          if (e instanceof SignedOutError) throw new SessionEndedError(e.message);
          throw e;
        }
      },
      handlers: {
        onState: (s) => {
          this.connection = s;
          if (s.kind === 'live') {
            this.everLive = true;
            if (this.activeId !== null) this.markRead(this.activeId);
          }
        },
        onMessage: (m) => this.onMessage(m),
        onTyping: (t) => {
          const view = this.conversations[t.conversation];
          if (!view || t.user === this.me?.id) return;
          if (t.active) view.typing[t.user] = Date.now() + TYPING_TTL_MS;
          else delete view.typing[t.user];
        },
        onPresence: (p) => {
          this.online[p.user] = p.status === 'online';
          const u = this.users[p.user];
          if (u && p.status === 'offline') u.last_seen = p.last_seen ?? Date.now();
        },
        onReceipt: (r) => {
          const view = this.conversations[r.conversation];
          if (!view) return;
          const member = view.members.find((m) => m.user.id === r.user);
          if (member && r.seq > member.last_read_seq) member.last_read_seq = r.seq;
          if (r.user === this.me?.id && r.seq >= view.lastSeq) view.unread = 0;
        },
        onMembership: (m) => {
          this.recipients.delete(m.conversation);
          if (m.user === this.me?.id && m.change === 'removed') {
            delete this.conversations[m.conversation];
            if (this.activeId === m.conversation) this.activeId = null;
          } else {
            void this.refreshConversation(m.conversation);
          }
        },
        onSessionEnded: (reason) => this.end(reason),
      },
    });
    this.conn.start();
  }

  /** Loads or creates this browser's device key for the account and registers it. */
  private async setUpDevice(user: number): Promise<void> {
    this.deviceKey = null;
    this.device = null;
    try {
      const key = await deviceKeyFor(user, this.opts.keyStore ?? new IndexedDbKeyStore());
      await this.api.registerDevice(toBase64(key.device.key), deviceName());
      this.deviceKey = key;
      this.device = key.device;
    } catch (e) {
      // Encrypted conversations then show why they cannot be read or written.
      console.warn('end-to-end encryption is unavailable in this browser:', describe(e));
    }
  }

  /** A message for the UI: encrypted bodies are opened with this device's key. */
  private async decode(m: Message): Promise<ChatMessage> {
    const msg = toChat(m);
    if (!('encrypted' in m.body)) return msg;
    try {
      if (!this.deviceKey) throw new OpenError('no_device_key');
      const opened = await this.deviceKey.open(
        fromBase64(m.body.encrypted),
        messageAad(m.conversation, m.sender, m.client_msg_id),
      );
      msg.text = new TextDecoder('utf-8', { fatal: true }).decode(opened.body);
      msg.encrypted = false;
    } catch (e) {
      msg.text = unreadableText(e instanceof OpenError ? e.reason : 'rejected');
    }
    return msg;
  }

  /** The body to send: sealed for every member's every device in an encrypted conversation. */
  private async body(view: ConversationView, msg: ChatMessage): Promise<Body> {
    if (!view.encrypted) return { text: msg.text };
    const key = this.deviceKey;
    if (!key || !this.me) throw new Error('This browser cannot encrypt messages (no X25519 in WebCrypto).');
    let cached = this.recipients.get(view.id);
    if (!cached || Date.now() - cached.at > DEVICES_TTL_MS) {
      const devices = await verified(await this.api.conversationDevices(view.id));
      cached = { keys: devices.map(([, d]) => d.key), at: Date.now() };
      this.recipients.set(view.id, cached);
    }
    const sealed = await key.seal(
      new TextEncoder().encode(msg.text),
      [...cached.keys, key.device.key],
      messageAad(view.id, this.me.id, msg.key),
    );
    return { encrypted: toBase64(sealed) };
  }

  /** The devices of a user, with fingerprints computed here. */
  async devicesOf(userId: number): Promise<DeviceView[]> {
    const list = userId === this.me?.id ? await this.api.myDevices() : await this.api.userDevices(userId);
    return (await verified(list)).map(([d, described]) => ({
      ...described,
      name: d.name,
      createdAt: d.created_at,
      current: d.id === this.device?.idHex,
    }));
  }

  private stop(): void {
    this.conn?.close('signed out');
    this.conn = null;
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const t of this.typingStop.values()) clearTimeout(t);
    this.typingStop.clear();
  }

  private clear(): void {
    this.me = null;
    this.users = {};
    this.online = {};
    this.conversations = {};
    this.activeId = null;
    this.everLive = false;
    this.readSent.clear();
    this.recipients.clear();
    this.deviceKey = null;
    this.device = null;
    this.connection = { kind: 'connecting', attempt: 0 };
  }

  /** The session ended on its own (revoked, expired): back to the sign-in page. */
  private end(reason: string): void {
    if (!this.me) return;
    this.stop();
    this.clear();
    this.notice = reason;
  }

  /** The network came back: reconnect now rather than at the end of the backoff. */
  networkOnline(): void {
    this.conn?.reconnectNow();
  }

  // ---- conversations ---------------------------------------------------------------

  private view(c: Conversation): ConversationView {
    for (const m of c.members) this.users[m.user.id] = m.user;
    const existing = this.conversations[c.id];
    if (existing) {
      existing.title = c.title;
      existing.members = c.members;
      existing.lastSeq = Math.max(existing.lastSeq, c.last_seq);
      existing.lastActivity = Math.max(existing.lastActivity, c.last_activity);
      return existing;
    }
    this.conversations[c.id] = {
      id: c.id,
      kind: c.kind,
      title: c.title,
      encrypted: c.encrypted,
      lastSeq: c.last_seq,
      lastActivity: c.last_activity,
      members: c.members,
      unread: 0,
      lastMessage: null,
      messages: [],
      outbox: [],
      historyLoaded: false,
      hasMore: true,
      loadingHistory: false,
      historyError: null,
      typing: {},
    };
    return this.conversations[c.id];
  }

  /** Fetches a conversation's details (new to us, or its members changed). */
  private refreshConversation(id: number): Promise<void> {
    let p = this.fetchingConversation.get(id);
    if (!p) {
      p = this.api
        .conversation(id)
        .then((c) => {
          this.view(c);
        })
        .catch((e: unknown) => {
          if (e instanceof ApiError && e.status === 404) delete this.conversations[id];
        })
        .finally(() => this.fetchingConversation.delete(id));
      this.fetchingConversation.set(id, p);
    }
    return p;
  }

  /** The name to show for a conversation: the group title, or the other person's name. */
  title(view: ConversationView): string {
    if (view.kind === 'group') return view.title;
    const other = this.peer(view);
    return other ? other.display_name : 'Direct message';
  }

  /** In a direct conversation, the other person. */
  peer(view: ConversationView): User | null {
    if (view.kind !== 'direct') return null;
    const other = view.members.find((m) => m.user.id !== this.me?.id) ?? view.members[0];
    return other ? (this.users[other.user.id] ?? other.user) : null;
  }

  name(userId: number): string {
    return this.users[userId]?.display_name ?? `user ${userId}`;
  }

  /** Opens a conversation: loads its newest history and marks it read. */
  async open(id: number | null): Promise<void> {
    this.activeId = id;
    if (id === null) return;
    if (!this.conversations[id]) await this.refreshConversation(id);
    const view = this.conversations[id];
    if (!view) return;
    if (!view.historyLoaded) await this.loadOlder(id);
    this.markRead(id);
  }

  /** Loads the page of history before the oldest message shown; failures show on the view. */
  async loadOlder(id: number): Promise<void> {
    const view = this.conversations[id];
    if (!view || view.loadingHistory || (view.historyLoaded && !view.hasMore)) return;
    view.loadingHistory = true;
    view.historyError = null;
    try {
      const before = view.historyLoaded ? (view.messages[0]?.seq ?? null) : null;
      const page = await this.api.history(id, before, PAGE);
      for (const m of await Promise.all(page.messages.map((m) => this.decode(m)))) insertBySeq(view.messages, m);
      view.hasMore = page.has_more;
      view.historyLoaded = true;
      const newest = page.messages[0];
      if (newest && newest.seq > view.lastSeq) view.lastSeq = newest.seq;
    } catch (e) {
      view.historyError = describe(e);
    } finally {
      view.loadingHistory = false;
    }
  }

  /** Tells the server (and the user's other devices) that everything shown is read. */
  markRead(id: number): void {
    const view = this.conversations[id];
    if (!view || !this.conn || !this.attentive || this.activeId !== id) return;
    view.unread = 0;
    const seq = view.lastSeq;
    const mine = view.members.find((m) => m.user.id === this.me?.id);
    if (seq === 0 || (mine && mine.last_read_seq >= seq) || (this.readSent.get(id) ?? 0) >= seq) return;
    this.readSent.set(id, seq);
    if (mine) mine.last_read_seq = seq;
    this.conn.markRead(id, seq).catch(() => this.readSent.delete(id));
  }

  /** The window gained or lost the user's attention. */
  setAttentive(attentive: boolean): void {
    this.attentive = attentive;
    if (attentive && this.activeId !== null) this.markRead(this.activeId);
  }

  private onMessage(m: Message): void {
    if ('encrypted' in m.body) void this.decode(m).then((msg) => this.deliver(m, msg));
    else this.deliver(m, toChat(m));
  }

  private deliver(m: Message, msg: ChatMessage): void {
    const view = this.conversations[m.conversation];
    if (!view) {
      // A conversation we do not know yet (created by someone else): fetch it, then
      // deliver; its history fills in when it is opened.
      void this.refreshConversation(m.conversation).then(() => {
        if (this.conversations[m.conversation]) this.deliver(m, msg);
      });
      return;
    }
    const pending = view.outbox.findIndex((p) => p.key === msg.key && m.sender === this.me?.id);
    if (pending >= 0) view.outbox.splice(pending, 1);
    insertBySeq(view.messages, msg);
    delete view.typing[m.sender];
    if (newest(view, msg)) {
      if (m.sender !== this.me?.id) {
        if (this.activeId === m.conversation && this.attentive) this.markRead(m.conversation);
        else view.unread += 1;
      }
    }
  }

  // ---- sending ---------------------------------------------------------------------

  /** Byte length of `text` in UTF-8, which the server's body limit counts. */
  static bytes(text: string): number {
    return new TextEncoder().encode(text).length;
  }

  /** The largest text body the server accepts. */
  get maxText(): number {
    return this.conn?.serverLimits.max_text_body ?? 16384;
  }

  /** Sends a text; it shows at once as "sending" and becomes "sent" when stored. */
  send(id: number, text: string): void {
    const view = this.conversations[id];
    const me = this.me;
    if (!view || !me || text.trim() === '') return;
    const msg: ChatMessage = {
      key: newClientMsgId(),
      conversation: id,
      seq: null,
      sender: me.id,
      sentAt: Date.now(),
      text,
      encrypted: false,
      status: 'sending',
      error: null,
    };
    view.outbox.push(msg);
    this.stopTyping(id);
    this.transmit(view, msg.key);
  }

  /** Sends a failed message again, with the same idempotency key. */
  retry(id: number, key: string): void {
    const view = this.conversations[id];
    const msg = view?.outbox.find((m) => m.key === key);
    if (!view || !msg || msg.status !== 'failed') return;
    msg.status = 'sending';
    msg.error = null;
    this.transmit(view, key);
  }

  /** Removes a failed message the user gave up on. */
  discard(id: number, key: string): void {
    const view = this.conversations[id];
    if (!view) return;
    view.outbox = view.outbox.filter((m) => m.key !== key || m.status !== 'failed');
  }

  private transmit(view: ConversationView, key: string, resealed = 0): void {
    const msg = view.outbox.find((m) => m.key === key);
    const conn = this.conn;
    if (!msg || !conn) return;
    this.body(view, msg)
      .then((body) => conn.send(view.id, key, body))
      .then(
      (ack) => {
        const i = view.outbox.findIndex((m) => m.key === key);
        if (i < 0) return;
        const [sent] = view.outbox.splice(i, 1);
        sent.seq = ack.seq;
        sent.sentAt = ack.sent_at;
        sent.status = 'sent';
        insertBySeq(view.messages, sent);
        newest(view, sent);
      },
      (e: unknown) => {
        if (e instanceof RequestError && e.code === 'devices_changed' && resealed < 3) {
          // A member's device came or went since the list was fetched: seal again for
          // the current list, under the same idempotency key.
          this.recipients.delete(view.id);
          this.transmit(view, key, resealed + 1);
          return;
        }
        const m = view.outbox.find((x) => x.key === key);
        if (!m) return;
        m.status = 'failed';
        m.error = describe(e);
      },
    );
  }

  /** The user typed in the composer: tell the others, repeated while typing continues. */
  typing(id: number): void {
    if (!this.conn) return;
    const now = Date.now();
    const repeat = this.opts.typingRepeatMs ?? 3000;
    if (now - (this.typingSentAt.get(id) ?? 0) >= repeat) {
      this.typingSentAt.set(id, now);
      this.conn.typing(id, true);
    }
    const pending = this.typingStop.get(id);
    if (pending) clearTimeout(pending);
    this.typingStop.set(
      id,
      setTimeout(() => this.stopTyping(id), repeat + 1000),
    );
  }

  private stopTyping(id: number): void {
    const pending = this.typingStop.get(id);
    if (pending) clearTimeout(pending);
    this.typingStop.delete(id);
    if (this.typingSentAt.delete(id)) this.conn?.typing(id, false);
  }

  private sweepTyping(): void {
    const now = Date.now();
    for (const view of Object.values(this.conversations)) {
      for (const [user, until] of Object.entries(view.typing)) {
        if (until <= now) delete view.typing[Number(user)];
      }
    }
  }

  // ---- people and groups -------------------------------------------------------------

  async searchUsers(prefix: string): Promise<User[]> {
    const users = await this.api.searchUsers(prefix);
    for (const u of users) this.users[u.id] = u;
    return users;
  }

  async user(id: number): Promise<User> {
    const u = await this.api.user(id);
    this.users[id] = u;
    return u;
  }

  async updateProfile(changes: { display_name?: string; bio?: string }): Promise<void> {
    const u = await this.api.updateMe(changes);
    this.me = u;
    this.users[u.id] = u;
  }

  /** The direct conversation with `userId`, created on first use. */
  async startDirect(userId: number, encrypted = false): Promise<number> {
    const c = await this.api.createDirect(userId, encrypted);
    this.view(c);
    this.conn?.track(c.id, c.last_seq);
    return c.id;
  }

  async createGroup(title: string, members: number[], encrypted = false): Promise<number> {
    const c = await this.api.createGroup(title, members, encrypted);
    this.view(c);
    this.conn?.track(c.id, c.last_seq);
    return c.id;
  }

  async addMember(id: number, userId: number): Promise<void> {
    this.view(await this.api.addMember(id, userId));
    this.recipients.delete(id);
  }

  async removeMember(id: number, userId: number): Promise<void> {
    await this.api.removeMember(id, userId);
    // The next sealed message must not carry a key for the removed member's devices.
    this.recipients.delete(id);
    await this.refreshConversation(id);
  }

  async leave(id: number): Promise<void> {
    await this.api.leave(id);
    delete this.conversations[id];
    if (this.activeId === id) this.activeId = null;
  }

  /** Who is typing in a conversation now, by name. */
  typingNames(view: ConversationView): string[] {
    const now = Date.now();
    return Object.entries(view.typing)
      .filter(([, until]) => until > now)
      .map(([user]) => this.name(Number(user)));
  }

  /** For the user's own stored message at `seq`: how many of the others have read it. */
  readBy(view: ConversationView, seq: number): number {
    return view.members.filter((m) => m.user.id !== this.me?.id && m.last_read_seq >= seq).length;
  }
}
