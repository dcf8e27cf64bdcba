// The chat.v1.json WebSocket subprotocol (PROTOCOL.md): frame types and their encoding.
// A JSON frame is an object with one member named after the frame kind.

import type { ClientFrame, Message, ServerFrame, ServerLimits } from './generated/protocol';
import { DEFAULT_LIMITS, VERSION } from './generated/protocol';

// The wire types and constants come from the Rust definitions (chat-proto), generated
// into ./generated/protocol.ts; this module adds what only a browser client needs.
export * from './generated/protocol';

/**
 * The version this client announces. It shows messages only, not yet the relations of
 * 1.3 (edits, deletions, reactions, replies), so it speaks 1.2: a 1.3 server then
 * sends it every log entry as a message at its seq (PROTOCOL.md §2.1).
 */
export const CLIENT_VERSION = { major: VERSION.major, minor: 2 } as const;

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
