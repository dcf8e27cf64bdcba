// The chat.v1.json WebSocket subprotocol (PROTOCOL.md): frame types and their encoding.
// A JSON frame is an object with one member named after the frame kind.

import type { ClientFrame, Entry, EntryPage, Message, Page, ServerFrame, ServerLimits } from './generated/protocol';
import { DEFAULT_LIMITS, FILE_LIMITS, VERSION } from './generated/protocol';

// The wire types and constants come from the Rust definitions (chat-proto), generated
// into ./generated/protocol.ts; this module adds what only a browser client needs.
export * from './generated/protocol';

/**
 * The version this client announces: 1.4, with relations (1.3) and files in messages.
 * A server of 1.3 answers with its own version and never sends files; one of 1.2 sends
 * messages only (`entryOf` makes them entries).
 */
export const CLIENT_VERSION = { major: VERSION.major, minor: 4 } as const;

/** The `protocol` the HTTP history is asked for: the form of `CLIENT_VERSION`. */
export const HISTORY_PROTOCOL = `${CLIENT_VERSION.major}.${CLIENT_VERSION.minor}`;

/** A message of a 1.2 server (or of `/messages`) as the entry it is. */
export function entryOf(m: Message): Entry {
  const { body, ...rest } = m;
  return { ...rest, content: { message: { body, reply_to: null } } };
}

/** A page of messages as a page of entries. */
export function entryPageOf(p: Page): EntryPage {
  return { ...p, entries: p.messages.map(entryOf) };
}

/** The limits a server announces (the Rust type is `ServerLimits`). */
export type Limits = ServerLimits;

/** Milliseconds from opening the transport to `welcome`. */
export const HANDSHAKE_TIMEOUT_MS = 10000;

/** Lifetime of a typing indicator that is not repeated. */
export const TYPING_TTL_MS = 6000;

/** Largest JSON server frame accepted, in UTF-16 code units (a safe upper bound of bytes/1). */
export const MAX_SERVER_FRAME_JSON = 4194304;

const SERVER_KINDS = new Set([
  'welcome',
  'ack',
  'message',
  'history_page',
  'sync_page',
  'replay_done',
  'typing',
  'presence',
  'receipt',
  'membership',
  'done',
  'error',
  'ping',
  'pong',
  'go_away',
  'entry',
  'entries',
]);

/** Why a server frame was not accepted. */
export class FrameError extends Error {
  override name = 'FrameError';
}

/** Encodes a client frame as a JSON text message. */
export function encode(frame: ClientFrame): string {
  return JSON.stringify(frame);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isId = (v: unknown): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
const isSeq = (v: unknown): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function checkMessage(m: unknown): asserts m is Message {
  if (
    !isObject(m) ||
    !isId(m.conversation) ||
    !isSeq(m.seq) ||
    !isId(m.id) ||
    !isId(m.sender) ||
    typeof m.client_msg_id !== 'string' ||
    typeof m.sent_at !== 'number' ||
    !isObject(m.body) ||
    !(typeof m.body.text === 'string' || typeof m.body.encrypted === 'string')
  ) {
    throw new FrameError('malformed message record');
  }
  m.client_msg_id = m.client_msg_id.toLowerCase();
}

/** A text or sealed text body: what edits carry. */
const isTextBody = (b: unknown): boolean =>
  isObject(b) && (typeof b.text === 'string' || typeof b.encrypted === 'string');

const isFileId = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{32}$/.test(v);

/** A file description of an `attachments` body (PROTOCOL.md §5.3). */
export const isFileRef = (f: unknown): boolean =>
  isObject(f) &&
  isFileId(f.id) &&
  typeof f.name === 'string' &&
  isSeq(f.size) &&
  typeof f.media_type === 'string' &&
  (f.image === null ||
    f.image === undefined ||
    (isObject(f.image) &&
      isSeq(f.image.width) &&
      isSeq(f.image.height) &&
      (f.image.thumbnail === null || f.image.thumbnail === undefined || typeof f.image.thumbnail === 'string')));

const isFileList = (v: unknown, each: (f: unknown) => boolean): boolean =>
  Array.isArray(v) && v.length >= 1 && v.length <= FILE_LIMITS.max_files && v.every(each);

/** A message body: text, sealed, or (1.4) either with files. */
const isBody = (b: unknown): boolean =>
  isTextBody(b) ||
  (isObject(b) &&
    ((isObject(b.attachments) && typeof b.attachments.text === 'string' && isFileList(b.attachments.files, isFileRef)) ||
      (isObject(b.sealed_attachments) &&
        typeof b.sealed_attachments.envelope === 'string' &&
        isFileList(b.sealed_attachments.files, isFileId))));

/** Checks an entry record (PROTOCOL.md §5.2); `null` content members become explicit. */
function checkEntry(e: unknown): asserts e is Entry {
  if (
    !isObject(e) ||
    !isId(e.conversation) ||
    !isSeq(e.seq) ||
    !isId(e.id) ||
    !isId(e.sender) ||
    typeof e.client_msg_id !== 'string' ||
    typeof e.sent_at !== 'number' ||
    !isObject(e.content)
  ) {
    throw new FrameError('malformed entry record');
  }
  e.client_msg_id = e.client_msg_id.toLowerCase();
  const kinds = Object.keys(e.content);
  const c = e.content[kinds[0]];
  if (kinds.length !== 1 || !isObject(c)) throw new FrameError('malformed entry content');
  const optionalBody = (v: unknown) => v === null || v === undefined || isBody(v);
  let ok: boolean;
  switch (kinds[0]) {
    case 'message':
      c.body ??= null;
      c.reply_to ??= null;
      ok = optionalBody(c.body) && (c.reply_to === null || isSeq(c.reply_to));
      break;
    case 'edit':
      c.body ??= null;
      ok = isSeq(c.target) && (c.body === null || isTextBody(c.body));
      break;
    case 'delete':
      ok = isSeq(c.target);
      break;
    case 'reaction':
      c.reaction ??= null;
      ok =
        isSeq(c.target) &&
        (c.reaction === null ||
          (isObject(c.reaction) &&
            (typeof c.reaction.emoji === 'string' || typeof c.reaction.encrypted === 'string')));
      break;
    default:
      ok = false;
  }
  if (!ok) throw new FrameError(`malformed ${kinds[0]} entry`);
}

/**
 * Decodes one server text message. Returns `null` for a frame kind this client does not
 * know (a newer minor version may add kinds; PROTOCOL.md §2 says to ignore them), and
 * throws `FrameError` for text that is not a frame at all or a known frame whose
 * required fields are missing or of the wrong type.
 */
export function decode(text: string): ServerFrame | null {
  if (text.length > MAX_SERVER_FRAME_JSON) {
    throw new FrameError('frame too large');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError('not JSON');
  }
  if (!isObject(value)) {
    throw new FrameError('a frame is a JSON object');
  }
  const keys = Object.keys(value);
  if (keys.length !== 1) {
    throw new FrameError('a frame has exactly one member');
  }
  const kind = keys[0];
  const body = value[kind];
  if (!SERVER_KINDS.has(kind)) {
    return null;
  }
  if (!isObject(body)) {
    throw new FrameError(`${kind}: fields must be an object`);
  }
  switch (kind) {
    case 'message':
      checkMessage(body);
      break;
    case 'entry':
      checkEntry(body);
      break;
    case 'entries':
      if (!isSeq(body.request_id) || !Array.isArray(body.entries)) {
        throw new FrameError('entries: malformed');
      }
      body.entries.forEach(checkEntry);
      body.has_more = body.has_more === true;
      break;
    case 'history_page':
    case 'sync_page':
      if (!isSeq(body.request_id) || !Array.isArray(body.messages)) {
        throw new FrameError(`${kind}: malformed`);
      }
      body.messages.forEach(checkMessage);
      body.has_more = body.has_more === true;
      break;
    case 'welcome':
      if (!isId(body.user) || !Array.isArray(body.heads) || !isObject(body.limits)) {
        throw new FrameError('welcome: malformed');
      }
      body.limits = { ...DEFAULT_LIMITS, ...body.limits };
      break;
    case 'ack':
      if (!isSeq(body.request_id) || !isSeq(body.seq) || !isId(body.id)) {
        throw new FrameError('ack: malformed');
      }
      break;
    case 'error':
      if (typeof body.code !== 'string') {
        throw new FrameError('error: malformed');
      }
      body.request_id ??= null;
      body.retry_after_ms ??= null;
      body.message ??= '';
      break;
    case 'replay_done':
      if (!Array.isArray(body.truncated)) {
        throw new FrameError('replay_done: malformed');
      }
      break;
    case 'typing':
    case 'receipt':
    case 'membership':
      if (!isId(body.conversation) || !isId(body.user)) {
        throw new FrameError(`${kind}: malformed`);
      }
      break;
    case 'presence':
      if (!isId(body.user)) {
        throw new FrameError('presence: malformed');
      }
      body.last_seen ??= null;
      break;
  }
  return { [kind]: body } as ServerFrame;
}

/** A random version 4 UUID, lowercase, for `client_msg_id`. */
export function newClientMsgId(): string {
  return crypto.randomUUID();
}
