// The chat.v1.json WebSocket subprotocol (PROTOCOL.md): frame types and their encoding.
// A JSON frame is an object with one member named after the frame kind.

/** The WebSocket subprotocol this client speaks. */
export const SUBPROTOCOL = 'chat.v1.json';

/** The protocol version this client speaks. */
export const VERSION = { major: 1, minor: 1 } as const;

/** Defaults of PROTOCOL.md §8, used until `welcome` announces the server's values. */
export const DEFAULT_LIMITS: Limits = {
  max_frame: 65536,
  max_text_body: 16384,
  max_envelope: 61440,
  max_page: 200,
  max_in_flight: 256,
  send_rate: 20,
  send_burst: 100,
  heartbeat_ms: 20000,
  idle_timeout_ms: 60000,
};

/** Milliseconds from opening the transport to `welcome`. */
export const HANDSHAKE_TIMEOUT_MS = 10000;

/** Lifetime of a typing indicator that is not repeated. */
export const TYPING_TTL_MS = 6000;

/** Largest JSON server frame accepted, in UTF-16 code units (a safe upper bound of bytes/1). */
export const MAX_SERVER_FRAME_JSON = 4194304;

export type Body = { text: string } | { encrypted: string };

export interface Cursor {
  conversation: number;
  seq: number;
}

export interface Limits {
  max_frame: number;
  max_text_body: number;
  max_envelope: number;
  max_page: number;
  max_in_flight: number;
  send_rate: number;
  send_burst: number;
  heartbeat_ms: number;
  idle_timeout_ms: number;
}

export interface Message {
  conversation: number;
  seq: number;
  id: number;
  sender: number;
  client_msg_id: string;
  sent_at: number;
  body: Body;
}

export interface Welcome {
  version: { major: number; minor: number };
  user: number;
  server_time: number;
  limits: Limits;
  heads: Cursor[];
}

export interface Ack {
  request_id: number;
  conversation: number;
  id: number;
  seq: number;
  sent_at: number;
}

export interface Page {
  request_id: number;
  conversation: number;
  messages: Message[];
  has_more: boolean;
}

export interface Typing {
  conversation: number;
  user: number;
  active: boolean;
}

export interface Presence {
  user: number;
  status: 'online' | 'offline';
  last_seen: number | null;
}

export interface Receipt {
  conversation: number;
  user: number;
  seq: number;
}

export interface Membership {
  conversation: number;
  user: number;
  change: 'added' | 'removed';
  by: number;
}

export type ErrorCode =
  | 'bad_frame'
  | 'unsupported_frame'
  | 'unsupported_version'
  | 'frame_too_large'
  | 'handshake_required'
  | 'handshake_timeout'
  | 'protocol_violation'
  | 'invalid_token'
  | 'not_found'
  | 'invalid_request'
  | 'body_too_large'
  | 'encryption_required'
  | 'rate_limited'
  | 'too_many_requests'
  | 'idempotency_conflict'
  | 'slow_consumer'
  | 'idle_timeout'
  | 'unavailable'
  | 'internal'
  | 'devices_changed';

/** Error codes after which the server closes the connection (PROTOCOL.md §7). */
export const FATAL_CODES: ReadonlySet<string> = new Set([
  'unsupported_version',
  'frame_too_large',
  'handshake_required',
  'handshake_timeout',
  'protocol_violation',
  'invalid_token',
  'slow_consumer',
  'idle_timeout',
]);

export interface ErrorFrame {
  request_id: number | null;
  code: ErrorCode;
  message: string;
  retry_after_ms: number | null;
}

export interface GoAway {
  reason: 'shutdown' | 'overloaded';
  reconnect_after_ms: number;
  message: string;
}

export type ClientFrame =
  | {
      hello: {
        version: { major: number; minor: number };
        token: string;
        client: string;
        resume: Cursor[];
      };
    }
  | { send: { request_id: number; conversation: number; client_msg_id: string; body: Body } }
  | { history: { request_id: number; conversation: number; before: number | null; limit: number } }
  | { sync: { request_id: number; conversation: number; after: number; limit: number } }
  | { typing: { conversation: number; active: boolean } }
  | { mark_read: { request_id: number; conversation: number; seq: number } }
  | { ping: { nonce: number } }
  | { pong: { nonce: number } };

export type ServerFrame =
  | { welcome: Welcome }
  | { ack: Ack }
  | { message: Message }
  | { history_page: Page }
  | { sync_page: Page }
  | { replay_done: { truncated: number[] } }
  | { typing: Typing }
  | { presence: Presence }
  | { receipt: Receipt }
  | { membership: Membership }
  | { done: { request_id: number } }
  | { error: ErrorFrame }
  | { ping: { nonce: number } }
  | { pong: { nonce: number } }
  | { go_away: GoAway };

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
