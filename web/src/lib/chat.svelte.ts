// The app's state: who is signed in, their conversations with messages, people,
// presence, typing and receipts, fed by the HTTP API and the real-time connection.
// Components read it and call its methods; they never talk to the network themselves.

import {
  Api,
  ApiError,
  type Conversation,
  type Device,
  type Member,
  SignedOutError,
  type SnippetPart,
  type User,
} from './api';
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
import {
  type ShownFile,
  type UploadState,
  type Uploading,
  describeImage,
  fileName,
  formatSize,
  mediaType,
  shownFromRef,
  startUpload,
} from './attachments';
import { newFileKey, openFile, sealFile } from './files';
import { MAX_QUERY, MAX_TERMS, Query, snippet } from './search';
import {
  type Ack,
  type Body,
  type Entry,
  FILE_LIMITS,
  type FileRef,
  type Message,
  type Relation,
  type SealedAttachments,
  TYPING_TTL_MS,
  newClientMsgId,
} from './protocol';
import {
  type Opened,
  type ReactionGroup,
  type Relations,
  applyRelation,
  emptyRelations,
  fold,
} from './timeline';

/** A message as the UI shows it: stored ones have a seq, the user's unsent ones do not. */
export interface ChatMessage {
  /** The `client_msg_id`: stable from the moment the user presses send. */
  key: string;
  conversation: number;
  seq: number | null;
  sender: number;
  sentAt: number;
  /** The text shown: the latest edit's, or the message's own. */
  text: string;
  /** An end-to-end encrypted body this device cannot open; `text` says why. */
  encrypted: boolean;
  status: 'sending' | 'sent' | 'failed';
  error: string | null;
  /** The seq of the message it answers. */
  replyTo: number | null;
  edited: boolean;
  editedAt: number | null;
  /** Deleted: a tombstone with who and when only. */
  deleted: boolean;
  reactions: ReactionGroup[];
  /** Its files (none once deleted). */
  files: ShownFile[];
  /** While its files are being uploaded (the user's unsent message): how far each is. */
  uploads: UploadState[] | null;
  /** Its own text before any edit, its files, and whether the server purged it. */
  own: Own;
}

/** What a message itself carried, before relations. */
interface Own {
  text: string;
  unreadable: boolean;
  purged: boolean;
  files: ShownFile[];
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

/** A message a search found. */
export interface FoundMessage {
  conversation: number;
  seq: number;
  sender: number;
  sentAt: number;
  snippet: SnippetPart[];
  /** Found by this browser among decrypted messages (encrypted conversations). */
  local: boolean;
}

export interface SearchOutcome {
  results: FoundMessage[];
  /** The cursor of the server's next page, if any. */
  next: string | null;
}

/** A file of a message being sent, once uploaded. */
interface SentFile {
  ref: FileRef;
  sealed: { key: Uint8Array<ArrayBuffer>; digest: Uint8Array<ArrayBuffer> } | null;
}

/** A message with files being sent. */
interface FileJob {
  /** Each file with the name and media type the protocol accepts, made once. */
  files: { file: File; name: string; type: string }[];
  /** The files uploaded so far, in order. */
  sent: SentFile[];
  uploads: Uploading[];
  cancelled: boolean;
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

/** A chat message as a message of the log shows it before relations are folded in. */
function chatMessage(
  e: { conversation: number; seq: number | null; sender: number; sent_at: number; client_msg_id: string },
  own: Own,
  replyTo: number | null,
): ChatMessage {
  return {
    key: e.client_msg_id,
    conversation: e.conversation,
    seq: e.seq,
    sender: e.sender,
    sentAt: e.sent_at,
    text: own.text,
    encrypted: own.unreadable,
    status: 'sent',
    error: null,
    replyTo,
    edited: false,
    editedAt: null,
    deleted: own.purged,
    reactions: [],
    files: own.purged ? [] : own.files,
    uploads: null,
    own,
  };
}

/** A message of the 1.2 view (a conversation preview) as the UI shows it. */
function toChat(m: Message, edited = false, deleted = false): ChatMessage {
  const b = m.body;
  const text = 'text' in b ? b.text : 'attachments' in b ? b.attachments.text : '';
  const files = 'attachments' in b ? b.attachments.files.map(shownFromRef) : [];
  const sealed = 'encrypted' in b || 'sealed_attachments' in b;
  const msg = chatMessage(m, { text, unreadable: sealed, purged: deleted, files }, null);
  msg.edited = edited;
  return msg;
}

/** Recomputes what `relations` change about `m`. */
function refold(relations: Relations, m: ChatMessage, me: number | null): void {
  if (m.seq === null) return;
  const f = fold(relations, m.seq, m.own, me);
  m.text = f.deleted ? '' : f.text;
  m.encrypted = f.unreadable;
  m.edited = f.edited;
  m.editedAt = f.editedAt;
  m.deleted = f.deleted;
  m.reactions = f.reactions;
  m.files = f.deleted ? [] : m.own.files;
}

/** The body an entry carries: a message's or an edit's body, a reaction's emoji as text. */
function carried(e: Entry): Body | null {
  const c = e.content;
  if ('message' in c) return c.message.body;
  if ('edit' in c) return c.edit.body;
  if ('reaction' in c && c.reaction.reaction !== null) {
    const r = c.reaction.reaction;
    return 'emoji' in r ? { text: r.emoji } : { encrypted: r.encrypted };
  }
  return null;
}

/** What an entry carries when nothing in it is sealed; `null` when it must be opened. */
function plainContent(e: Entry): Opened | null {
  const body = carried(e);
  if (body === null) return { text: null, unreadable: null };
  if ('attachments' in body) {
    return { text: body.attachments.text, unreadable: null, files: body.attachments.files.map(shownFromRef) };
  }
  return 'text' in body ? { text: body.text, unreadable: null } : null;
}

/**
 * The files of an opened `sealed_attachments` document, checked against the ids the
 * body names in the clear (which the server grants access by); `null` if malformed.
 */
function sealedFiles(doc: unknown, ids: string[]): { text: string; files: ShownFile[] } | null {
  const d = doc as Partial<SealedAttachments> | null;
  if (!d || typeof d.text !== 'string' || !Array.isArray(d.files) || d.files.length !== ids.length) return null;
  const files: ShownFile[] = [];
  for (const [i, f] of d.files.entries()) {
    if (
      typeof f !== 'object' || f === null || f.id !== ids[i] || typeof f.name !== 'string' ||
      typeof f.size !== 'number' || typeof f.media_type !== 'string' ||
      typeof f.key !== 'string' || typeof f.digest !== 'string'
    ) {
      return null;
    }
    const image = f.image && typeof f.image.width === 'number' && typeof f.image.height === 'number' ? f.image : null;
    files.push({
      ...shownFromRef({ ...f, image }),
      sealed: { key: fromBase64(f.key), digest: fromBase64(f.digest) },
    });
  }
  return { text: d.text, files };
}

/** The stored message at `seq` in `list` (ascending), if loaded. */
export function findBySeq(list: ChatMessage[], seq: number): ChatMessage | undefined {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((list[mid].seq ?? 0) < seq) lo = mid + 1;
    else hi = mid;
  }
  return list[lo]?.seq === seq ? list[lo] : undefined;
}

/** The most recently used reactions first, then common ones: what the picker offers. */
export const COMMON_REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];

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

/**
 * Moves the user's message `key` from the outbox to the stored messages once its ack
 * came (unless its echo came first and did), after `finish` completes it.
 */
function settle(view: ConversationView, key: string, ack: Ack, finish?: (m: ChatMessage) => void): void {
  const i = view.outbox.findIndex((m) => m.key === key);
  if (i < 0) return;
  const [sent] = view.outbox.splice(i, 1);
  sent.seq = ack.seq;
  sent.sentAt = ack.sent_at;
  sent.status = 'sent';
  finish?.(sent);
  insertBySeq(view.messages, sent);
  newest(view, sent);
}

/** Makes a stored message the conversation's latest if it is; says whether it was. */
function newest(view: ConversationView, m: ChatMessage): boolean {
  const seq = m.seq ?? 0;
  if (seq < (view.lastMessage?.seq ?? 0)) return false;
  view.lastSeq = Math.max(view.lastSeq, seq);
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
  /**
   * Per conversation, the edits, deletions and reactions seen so far (folded into its
   * messages). Plain data outside the reactive state: only the messages are shown.
   */
  private relations = new Map<number, Relations>();
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
        const edited = summary.last_message_edited ?? false;
        const deleted = summary.last_message_deleted ?? false;
        view.lastMessage = toChat(last, edited, deleted);
        const b = last.body;
        if (('encrypted' in b || 'sealed_attachments' in b) && !deleted) {
          const [envelope, files] =
            'encrypted' in b ? [b.encrypted, undefined] : [b.sealed_attachments.envelope, b.sealed_attachments.files];
          void this.openSealed(last.conversation, last.sender, last.client_msg_id, envelope, files).then((opened) => {
            const m = toChat(last, edited, deleted);
            m.text = opened.text ?? opened.unreadable ?? '';
            m.encrypted = opened.text === null;
            m.files = opened.files ?? [];
            view.lastMessage = m;
          });
        }
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
        onEntry: (e) => this.onEntry(e),
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

  /**
   * Opens a sealed text (a body or an emoji) with this device's key; with `files`, the
   * ids of a `sealed_attachments` body, a document of a caption and files instead.
   */
  private async openSealed(
    conversation: number,
    sender: number,
    clientMsgId: string,
    sealed: string,
    files?: string[],
  ): Promise<Opened> {
    try {
      if (!this.deviceKey) throw new OpenError('no_device_key');
      const opened = await this.deviceKey.open(fromBase64(sealed), messageAad(conversation, sender, clientMsgId));
      const text = new TextDecoder('utf-8', { fatal: true }).decode(opened.body);
      if (!files) return { text, unreadable: null };
      let doc: unknown = null;
      try {
        doc = JSON.parse(text);
      } catch {
        // Handled as malformed below.
      }
      const described = sealedFiles(doc, files);
      if (!described) return { text: null, unreadable: 'This message’s files are described wrongly and cannot be shown.' };
      return { text: described.text, unreadable: null, files: described.files };
    } catch (e) {
      return { text: null, unreadable: unreadableText(e instanceof OpenError ? e.reason : 'rejected') };
    }
  }

  /** The text an entry carries (a body, an edit's body, an emoji), opened if sealed. */
  private async openEntry(e: Entry): Promise<Opened> {
    const body = carried(e);
    if (body === null) return { text: null, unreadable: null };
    if ('text' in body || 'attachments' in body) return plainContent(e)!;
    if ('sealed_attachments' in body) {
      const { envelope, files } = body.sealed_attachments;
      return this.openSealed(e.conversation, e.sender, e.client_msg_id, envelope, files);
    }
    return this.openSealed(e.conversation, e.sender, e.client_msg_id, body.encrypted);
  }

  /**
   * Folds one entry, opened, into its conversation: a message is placed by seq, a
   * relation changes the message it names. Returns the message placed, if any.
   */
  private place(view: ConversationView, e: Entry, opened: Opened): ChatMessage | null {
    const me = this.me?.id ?? null;
    const c = e.content;
    let relations = this.relations.get(view.id);
    if (!relations) {
      relations = emptyRelations();
      this.relations.set(view.id, relations);
    }
    if ('message' in c) {
      const own = {
        text: opened.text ?? opened.unreadable ?? '',
        unreadable: opened.text === null && opened.unreadable !== null,
        purged: c.message.body === null,
        files: opened.files ?? [],
      };
      const msg = chatMessage(e, own, c.message.reply_to);
      refold(relations, msg, me);
      const existing = findBySeq(view.messages, e.seq);
      if (existing) {
        // A purged copy (from history after a deletion) replaces what was shown.
        if (own.purged && !existing.own.purged) {
          existing.own = own;
          existing.replyTo = null;
          refold(relations, existing, me);
        }
        return null;
      }
      insertBySeq(view.messages, msg);
      // The list's own (reactive) copy, so later changes reach what is shown.
      return findBySeq(view.messages, e.seq) ?? null;
    }
    let target: number | null = null;
    if ('edit' in c) {
      target = applyRelation(relations, {
        kind: 'edit',
        seq: e.seq,
        target: c.edit.target,
        content: opened,
        at: e.sent_at,
      });
    } else if ('delete' in c) {
      target = applyRelation(relations, { kind: 'delete', seq: e.seq, target: c.delete.target });
    } else if ('reaction' in c) {
      target = applyRelation(relations, {
        kind: 'reaction',
        seq: e.seq,
        target: c.reaction.target,
        user: e.sender,
        emoji: opened.text,
      });
    }
    if (target !== null) {
      const m = findBySeq(view.messages, target);
      if (m) refold(relations, m, me);
      if (view.lastMessage && view.lastMessage.seq === target) refold(relations, view.lastMessage, me);
    }
    return null;
  }

  /** The body to send: sealed for every member's every device in an encrypted conversation. */
  private async body(view: ConversationView, msg: { text: string; key: string }): Promise<Body> {
    if (!view.encrypted) return { text: msg.text };
    return { encrypted: await this.seal(view, new TextEncoder().encode(msg.text), msg.key) };
  }

  /** `plaintext` sealed for every member's every device (and this one), base64. */
  private async seal(view: ConversationView, plaintext: Uint8Array, clientMsgId: string): Promise<string> {
    const key = this.deviceKey;
    if (!key || !this.me) throw new Error('This browser cannot encrypt messages (no X25519 in WebCrypto).');
    let cached = this.recipients.get(view.id);
    if (!cached || Date.now() - cached.at > DEVICES_TTL_MS) {
      const devices = await verified(await this.api.conversationDevices(view.id));
      cached = { keys: devices.map(([, d]) => d.key), at: Date.now() };
      this.recipients.set(view.id, cached);
    }
    const sealed = await key.seal(plaintext, [...cached.keys, key.device.key], messageAad(view.id, this.me.id, clientMsgId));
    return toBase64(sealed);
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
    this.relations.clear();
    for (const job of this.fileJobs.values()) {
      job.cancelled = true;
      for (const u of job.uploads) void u.cancel();
    }
    this.fileJobs.clear();
    this.fileUrls.clear();
    for (const url of this.madeUrls) URL.revokeObjectURL(url);
    this.madeUrls = [];
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
      const opened = await Promise.all(page.entries.map((e) => this.openEntry(e)));
      // Relations first: the messages they change may be on this page.
      page.entries.forEach((e, i) => {
        if (!('message' in e.content)) this.place(view, e, opened[i]);
      });
      page.entries.forEach((e, i) => {
        if ('message' in e.content) this.place(view, e, opened[i]);
      });
      view.hasMore = page.has_more;
      view.historyLoaded = true;
      const newestEntry = page.entries[0];
      if (newestEntry && newestEntry.seq > view.lastSeq) view.lastSeq = newestEntry.seq;
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

  private onEntry(e: Entry): void {
    // Sealed entries are opened asynchronously; entries are placed in the order they
    // arrived, so a plain one waits only while a sealed one before it is being opened.
    const plain = plainContent(e);
    if (plain && this.opening === 0) {
      this.deliver(e, plain);
      return;
    }
    this.opening += 1;
    const opened = plain ? Promise.resolve(plain) : this.openEntry(e);
    this.delivering = this.delivering
      .then(async () => this.deliver(e, await opened))
      .catch((err: unknown) => console.warn('chat: an entry could not be shown:', describe(err)))
      .finally(() => (this.opening -= 1));
  }

  /** Entries waiting for a sealed one before them to be opened. */
  private opening = 0;
  private delivering: Promise<void> = Promise.resolve();

  private deliver(e: Entry, opened: Opened): void {
    const view = this.conversations[e.conversation];
    if (!view) {
      // A conversation we do not know yet (created by someone else): fetch it, then
      // deliver; its history fills in when it is opened.
      void this.refreshConversation(e.conversation).then(() => {
        if (this.conversations[e.conversation]) this.deliver(e, opened);
      });
      return;
    }
    if (e.seq > view.lastSeq) view.lastSeq = e.seq;
    if (!('message' in e.content)) {
      this.place(view, e, opened);
      return;
    }
    const pending = view.outbox.findIndex((p) => p.key === e.client_msg_id && e.sender === this.me?.id);
    if (pending >= 0) view.outbox.splice(pending, 1);
    const msg = this.place(view, e, opened) ?? findBySeq(view.messages, e.seq);
    delete view.typing[e.sender];
    if (msg && newest(view, msg)) {
      if (e.sender !== this.me?.id && !msg.deleted) {
        if (this.activeId === e.conversation && this.attentive) this.markRead(e.conversation);
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

  /**
   * Sends a text, as a reply to the message at `replyTo` if given; it shows at once as
   * "sending" and becomes "sent" when stored.
   */
  send(id: number, text: string, replyTo: number | null = null): void {
    const view = this.conversations[id];
    const me = this.me;
    if (!view || !me || text.trim() === '') return;
    const msg = chatMessage(
      { conversation: id, seq: null, sender: me.id, sent_at: Date.now(), client_msg_id: newClientMsgId() },
      { text, unreadable: false, purged: false, files: [] },
      replyTo,
    );
    msg.status = 'sending';
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
    if (this.fileJobs.has(key)) void this.transmitFiles(view, key);
    else this.transmit(view, key);
  }

  /** Removes a failed message the user gave up on. */
  discard(id: number, key: string): void {
    const view = this.conversations[id];
    if (!view) return;
    view.outbox = view.outbox.filter((m) => m.key !== key || m.status !== 'failed');
    this.fileJobs.delete(key);
  }

  // ---- files -------------------------------------------------------------------------

  /** Messages with files being sent, by key: the files and how far their uploads are. */
  private fileJobs = new Map<string, FileJob>();
  /** Object URLs of files fetched (and opened) in this page, by file id. */
  private fileUrls = new Map<string, Promise<string>>();
  private madeUrls: string[] = [];

  /**
   * Sends files with a caption (which may be empty) in one message: each file is
   * uploaded resumably (sealed first, with a key of its own, in an end-to-end encrypted
   * conversation), then the message naming them is sent. It shows at once with the
   * uploads' progress; `cancelFiles` stops it.
   */
  sendFiles(id: number, caption: string, files: File[]): void {
    const view = this.conversations[id];
    const me = this.me;
    if (!view || !me || files.length === 0) return;
    if (files.length > FILE_LIMITS.max_files) throw new Error(`A message carries at most ${FILE_LIMITS.max_files} files.`);
    const msg = chatMessage(
      { conversation: id, seq: null, sender: me.id, sent_at: Date.now(), client_msg_id: newClientMsgId() },
      { text: caption, unreadable: false, purged: false, files: [] },
      null,
    );
    const described = files.map((file) => ({ file, name: fileName(file.name), type: mediaType(file.type) }));
    msg.files = described.map((f) => ({
      id: '',
      name: f.name,
      size: f.file.size,
      mediaType: f.type,
      image: null,
      sealed: null,
    }));
    msg.uploads = described.map((f) => ({ name: f.name, sent: 0, total: f.file.size }));
    msg.status = 'sending';
    view.outbox.push(msg);
    this.fileJobs.set(msg.key, { files: described, sent: [], uploads: [], cancelled: false });
    this.stopTyping(id);
    void this.transmitFiles(view, msg.key);
  }

  /** Stops sending a message with files: its uploads end, on the server too. */
  async cancelFiles(id: number, key: string): Promise<void> {
    const view = this.conversations[id];
    const job = this.fileJobs.get(key);
    if (view) view.outbox = view.outbox.filter((m) => m.key !== key);
    if (!job) return;
    job.cancelled = true;
    this.fileJobs.delete(key);
    await Promise.all(job.uploads.map((u) => u.cancel()));
  }

  private async transmitFiles(view: ConversationView, key: string, resealed = 0): Promise<void> {
    const job = this.fileJobs.get(key);
    const outboxed = () => view.outbox.find((m) => m.key === key);
    if (!job || !outboxed()) return;
    try {
      for (let i = job.sent.length; i < job.files.length; i++) {
        const { file, name, type } = job.files[i];
        const image = await describeImage(file);
        let data: Blob = file;
        let sealed: SentFile['sealed'] = null;
        if (view.encrypted) {
          if (!this.deviceKey) throw new Error('This browser cannot encrypt files (no X25519 in WebCrypto).');
          const fileKey = newFileKey();
          const out = await sealFile(fileKey, new Uint8Array(await file.arrayBuffer()));
          data = new Blob([out.sealed]);
          sealed = { key: fileKey, digest: out.digest };
        }
        const upload = startUpload(data, {
          endpoint: '/api/uploads',
          token: () => this.api.token(),
          // A sealed file's upload carries no name or type: they travel sealed.
          metadata: sealed ? {} : { filename: name, filetype: type },
          remember: !sealed,
          onProgress: (sent, total) => {
            const m = outboxed();
            if (m?.uploads) m.uploads[i] = { name, sent, total };
          },
        });
        job.uploads[i] = upload;
        const id = await upload.done;
        if (job.cancelled) return;
        // The sender sees its own file without fetching it back.
        const url = URL.createObjectURL(file);
        this.madeUrls.push(url);
        this.fileUrls.set(id, Promise.resolve(url));
        job.sent.push({ ref: { id, name, size: file.size, media_type: type, image }, sealed });
      }
      const conn = this.conn;
      if (!conn) throw new Error('Not connected.');
      const caption = outboxed()?.text ?? '';
      let body: Body;
      if (view.encrypted) {
        const doc: SealedAttachments = {
          text: caption,
          files: job.sent.map((f) => ({
            ...f.ref,
            key: toBase64(f.sealed!.key),
            digest: toBase64(f.sealed!.digest),
          })),
        };
        const envelope = await this.seal(view, new TextEncoder().encode(JSON.stringify(doc)), key);
        body = { sealed_attachments: { envelope, files: job.sent.map((f) => f.ref.id) } };
      } else {
        body = { attachments: { text: caption, files: job.sent.map((f) => f.ref) } };
      }
      const ack = await conn.send(view.id, key, body);
      this.fileJobs.delete(key);
      settle(view, key, ack, (sent) => {
        sent.uploads = null;
        sent.own.files = job.sent.map((f) => ({ ...shownFromRef(f.ref), sealed: f.sealed }));
        sent.files = sent.own.files;
      });
    } catch (e) {
      if (job.cancelled) return;
      if (e instanceof RequestError && e.code === 'devices_changed' && resealed < 3) {
        this.recipients.delete(view.id);
        return this.transmitFiles(view, key, resealed + 1);
      }
      const m = outboxed();
      if (!m) return;
      m.status = 'failed';
      m.error = describe(e);
    }
  }

  /** A URL of a file's bytes for an `<img>` or a download, opened if it is sealed. */
  fileUrl(f: ShownFile): Promise<string> {
    let url = this.fileUrls.get(f.id);
    if (!url) {
      url = this.api.file(f.id).then(async (blob) => {
        let shown = blob;
        if (f.sealed) {
          const plain = await openFile(f.sealed.key, new Uint8Array(await blob.arrayBuffer()), f.sealed.digest);
          shown = new Blob([plain], { type: f.mediaType });
        }
        const made = URL.createObjectURL(shown);
        this.madeUrls.push(made);
        return made;
      });
      url.catch(() => this.fileUrls.delete(f.id));
      this.fileUrls.set(f.id, url);
    }
    return url;
  }

  /** Saves a file under its name (the browser's download). */
  async saveFile(f: ShownFile): Promise<void> {
    const a = document.createElement('a');
    a.href = await this.fileUrl(f);
    a.download = f.name;
    a.rel = 'noopener';
    a.click();
  }

  // ---- search ------------------------------------------------------------------------

  /**
   * Messages that match `q`, newest first: the server's results for the conversations
   * it can read, and (on the first page) this browser's own matches among the messages
   * of encrypted conversations it has decrypted, marked `local`.
   */
  async searchMessages(q: string, before: string | null = null): Promise<SearchOutcome> {
    const query = Query.parse(q);
    if (query === 'empty') throw new Error('Type a word to look for.');
    if (query === 'too_long') throw new Error(`A search is at most ${MAX_QUERY} bytes and ${MAX_TERMS} words.`);
    const page = await this.api.searchMessages(q, before);
    const results: FoundMessage[] = page.results.map((r) => ({
      conversation: r.conversation,
      seq: r.seq,
      sender: r.sender,
      sentAt: r.sent_at,
      snippet: r.snippet,
      local: false,
    }));
    if (before === null) {
      for (const view of Object.values(this.conversations)) {
        if (!view.encrypted) continue;
        for (const m of view.messages) {
          if (m.seq === null || m.deleted || m.encrypted || !query.matches(m.text)) continue;
          results.push({
            conversation: view.id,
            seq: m.seq,
            sender: m.sender,
            sentAt: m.sentAt,
            snippet: snippet(m.text, query, 120),
            local: true,
          });
        }
      }
      results.sort((a, b) => b.sentAt - a.sentAt);
    }
    return { results, next: page.next };
  }

  /** Whether encrypted conversations have older history this browser has not read yet. */
  get moreToDecrypt(): boolean {
    return this.undecrypted().length > 0;
  }

  /** Fetches and decrypts a page of older history of every encrypted conversation, to search it. */
  async decryptMore(): Promise<void> {
    await Promise.all(this.undecrypted().map((v) => this.loadOlder(v.id)));
  }

  /** The encrypted conversations with history this browser has not fetched yet. */
  private undecrypted(): ConversationView[] {
    return Object.values(this.conversations).filter((v) => v.encrypted && (!v.historyLoaded || v.hasMore));
  }

  /** "name (size)" for a file of a message. */
  static describeFile(f: ShownFile): string {
    return `${f.name} (${formatSize(f.size)})`;
  }

  private transmit(view: ConversationView, key: string, resealed = 0): void {
    const msg = view.outbox.find((m) => m.key === key);
    const conn = this.conn;
    if (!msg || !conn) return;
    this.body(view, msg)
      .then((body) =>
        msg.replyTo === null
          ? conn.send(view.id, key, body)
          : conn.relate(view.id, key, { reply: { target: msg.replyTo, body } }),
      )
      .then(
      (ack) => settle(view, key, ack),
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

  // ---- relations: edits, deletions, reactions -------------------------------------

  /** Adds a relation, sealing its text in an encrypted conversation; resolves when stored. */
  private async relate(
    id: number,
    make: (content: Body | null) => Relation,
    text: string | null,
    resealed = 0,
  ): Promise<void> {
    const view = this.conversations[id];
    const conn = this.conn;
    if (!view || !conn) throw new Error('Not connected.');
    const key = newClientMsgId();
    const body = text === null ? null : await this.body(view, { text, key });
    try {
      await conn.relate(id, key, make(body));
    } catch (e) {
      if (e instanceof RequestError && e.code === 'devices_changed' && resealed < 3) {
        this.recipients.delete(id);
        return this.relate(id, make, text, resealed + 1);
      }
      throw e;
    }
  }

  /** Replaces the text of the user's own message at `seq`. */
  edit(id: number, seq: number, text: string): Promise<void> {
    return this.relate(id, (body) => ({ edit: { target: seq, body: body ?? { text } } }), text);
  }

  /** Deletes the message at `seq` (the user's own, or any in a group they own). */
  remove(id: number, seq: number): Promise<void> {
    return this.relate(id, () => ({ delete: { target: seq } }), null);
  }

  /** Adds the user's `emoji` to the message at `seq`, or takes it back if given. */
  async toggleReaction(id: number, seq: number, emoji: string): Promise<void> {
    const view = this.conversations[id];
    const m = view && findBySeq(view.messages, seq);
    const mine = m?.reactions.find((g) => g.emoji === emoji)?.mine ?? null;
    if (mine !== null) {
      await this.relate(id, () => ({ delete: { target: mine } }), null);
      return;
    }
    rememberReaction(emoji);
    await this.relate(
      id,
      (body) => ({
        react: {
          target: seq,
          reaction: body && 'encrypted' in body ? { encrypted: body.encrypted } : { emoji },
        },
      }),
      emoji,
    );
  }

  /** Whether the user may delete `m`: their own, or any message of a group they own. */
  mayDelete(view: ConversationView, m: ChatMessage): boolean {
    if (m.seq === null || m.deleted) return false;
    if (m.sender === this.me?.id) return true;
    return view.kind === 'group' && view.members.some((x) => x.user.id === this.me?.id && x.role === 'owner');
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

const RECENT_KEY = 'chat.recent-reactions';

/** The reactions the user chose lately, most recent first (kept in this browser). */
export function recentReactions(): string[] {
  try {
    const raw = typeof localStorage === 'undefined' ? null : localStorage.getItem(RECENT_KEY);
    const list: unknown = raw ? JSON.parse(raw) : [];
    return Array.isArray(list) ? list.filter((e): e is string => typeof e === 'string').slice(0, 8) : [];
  } catch {
    return [];
  }
}

function rememberReaction(emoji: string): void {
  try {
    const list = [emoji, ...recentReactions().filter((e) => e !== emoji)].slice(0, 8);
    localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  } catch {
    // Storage refused (private mode): the picker shows the common ones.
  }
}
