// Generated from chat-proto by `cargo test -p chat-api --features ts --test typescript`
// with CHAT_UPDATE_TS=1. Do not edit: change the Rust types and regenerate.

/** The WebSocket subprotocol of JSON frames. */
export const SUBPROTOCOL = 'chat.v1.json';

/** The newest protocol version (the reference implementation's). */
export const VERSION = { major: 1, minor: 4 } as const;

/** Defaults of PROTOCOL.md §8, used until `welcome` announces the server's values. */
export const DEFAULT_LIMITS: ServerLimits = {
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

/** Limits of files in messages (PROTOCOL.md §5.3, §8). */
export const FILE_LIMITS = {
  max_files: 10,
  max_file_name: 255,
  max_media_type: 127,
  max_thumbnail: 4096,
} as const;

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

/**
 * A protocol version, `major.minor`.
 */
export type ProtocolVersion = { 
/**
 * Incompatible revisions; fixed by the transport protocol name.
 */
major: number, 
/**
 * Compatible additions within a major version.
 */
minor: number, };

/**
 * The limits a server announces in `welcome`. Clients must stay within them.
 */
export type ServerLimits = { 
/**
 * Largest client frame the server accepts, postcard bytes.
 */
max_frame: number, 
/**
 * Largest text body, bytes of UTF-8.
 */
max_text_body: number, 
/**
 * Largest encrypted envelope, bytes.
 */
max_envelope: number, 
/**
 * Most messages per history or sync page.
 */
max_page: number, 
/**
 * Requests answered concurrently per connection.
 */
max_in_flight: number, 
/**
 * Sends allowed per user per second, sustained.
 */
send_rate: number, 
/**
 * Sends allowed in a burst above the sustained rate.
 */
send_burst: number, 
/**
 * The server pings after this many milliseconds of silence.
 */
heartbeat_ms: number, 
/**
 * The server drops a connection silent for this many milliseconds.
 */
idle_timeout_ms: number, };

/**
 * Stable error codes carried by `error` frames.
 *
 * On the wire a code is its snake_case name in JSON and its index in this list in
 * postcard; both are stable within major version 1. New codes are only ever appended,
 * and only sent to peers that negotiated a minor version defining them.
 */
export type ErrorCode = "bad_frame" | "unsupported_frame" | "unsupported_version" | "frame_too_large" | "handshake_required" | "handshake_timeout" | "protocol_violation" | "invalid_token" | "not_found" | "invalid_request" | "body_too_large" | "encryption_required" | "rate_limited" | "too_many_requests" | "idempotency_conflict" | "slow_consumer" | "idle_timeout" | "unavailable" | "internal" | "devices_changed" | "forbidden" | "deleted" | "reaction_limit";

/**
 * What a message carries: plain text, or an end-to-end encrypted envelope that the
 * server stores and forwards without being able to read it; since 1.4 either of them
 * with files (§5.3).
 */
export type Body = { "text": string } | { "encrypted": string } | { "attachments": Attachments } | { "sealed_attachments": SealedAttachmentIds };

/**
 * Text with files, in a conversation that is not end-to-end encrypted (§5.3).
 */
export type Attachments = { 
/**
 * The caption, at most [`MAX_TEXT_BODY`](crate::limits::MAX_TEXT_BODY) bytes; may
 * be empty.
 */
text: string, 
/**
 * The files, 1 to [`MAX_FILES`](crate::limits::MAX_FILES).
 */
files: Array<FileRef>, };

/**
 * A sealed message with files: the envelope (§5.1) whose plaintext is the JSON of a
 * [`SealedAttachments`], and the ids of its files in the clear, so that the server can
 * let the conversation's members download them and purge them with the message.
 */
export type SealedAttachmentIds = { 
/**
 * The sealed caption and file descriptions.
 */
envelope: string, 
/**
 * The files' ids, 1 to [`MAX_FILES`](crate::limits::MAX_FILES), distinct.
 */
files: Array<string>, };

/**
 * A file in a message: what a client needs to show it without fetching it.
 */
export type FileRef = { 
/**
 * The upload holding its bytes (`GET /api/files/{id}`).
 */
id: string, 
/**
 * Its name for display and saving, 1 to [`MAX_FILE_NAME`](crate::limits::MAX_FILE_NAME)
 * bytes without control characters; never a path.
 */
name: string, 
/**
 * Its size in bytes (of the plaintext, for a sealed file).
 */
size: number, 
/**
 * Its media type (`type/subtype`), at most
 * [`MAX_MEDIA_TYPE`](crate::limits::MAX_MEDIA_TYPE) bytes.
 */
media_type: string, 
/**
 * For an image: its size in pixels and a small preview.
 */
image: ImageInfo | null, };

/**
 * What a client shows of an image before fetching it. The server never decodes images;
 * the sender's client measures it and makes the thumbnail.
 */
export type ImageInfo = { 
/**
 * Width in pixels, at least 1.
 */
width: number, 
/**
 * Height in pixels, at least 1.
 */
height: number, 
/**
 * A small JPEG, PNG or WebP preview, at most
 * [`MAX_THUMBNAIL`](crate::limits::MAX_THUMBNAIL) bytes.
 */
thumbnail: string | null, };

/**
 * The plaintext of a [`Body::SealedAttachments`] envelope, as JSON (§5.3): the caption
 * and, for each file, its description and the key that opens its bytes.
 */
export type SealedAttachments = { 
/**
 * The caption; may be empty.
 */
text: string, 
/**
 * The files, in the order of the body's ids.
 */
files: Array<SealedFile>, };

/**
 * One file of a sealed message: its description and how to open its bytes.
 */
export type SealedFile = { 
/**
 * The 32-byte key its chunks are sealed with (§5.3.1), base64.
 */
key: string, 
/**
 * SHA-256 of the stored (encrypted) bytes, base64.
 */
digest: string, 
/**
 * The upload holding its bytes (`GET /api/files/{id}`).
 */
id: string, 
/**
 * Its name for display and saving, 1 to [`MAX_FILE_NAME`](crate::limits::MAX_FILE_NAME)
 * bytes without control characters; never a path.
 */
name: string, 
/**
 * Its size in bytes (of the plaintext, for a sealed file).
 */
size: number, 
/**
 * Its media type (`type/subtype`), at most
 * [`MAX_MEDIA_TYPE`](crate::limits::MAX_MEDIA_TYPE) bytes.
 */
media_type: string, 
/**
 * For an image: its size in pixels and a small preview.
 */
image: ImageInfo | null, };

/**
 * Conversation position: "the last message I have seen here is `seq`" (in `hello`), or
 * "the newest message here is `seq`" (in `welcome`).
 */
export type Cursor = { 
/**
 * The conversation.
 */
conversation: number, 
/**
 * A position in it.
 */
seq: number, };

/**
 * A stored message as delivered to clients (§6.2.3).
 */
export type Message = { 
/**
 * The conversation it belongs to.
 */
conversation: number, 
/**
 * Its position in the conversation, assigned by the server.
 */
seq: number, 
/**
 * Its deployment-wide id.
 */
id: number, 
/**
 * Who sent it.
 */
sender: number, 
/**
 * The sender's idempotency key.
 */
client_msg_id: string, 
/**
 * When the server committed it.
 */
sent_at: number, 
/**
 * Its content.
 */
body: Body, };

/**
 * A reaction: one emoji, or one sealed for the conversation's devices.
 */
export type Reaction = { "emoji": string } | { "encrypted": string };

/**
 * What an entry is. A `None` body or reaction means its content was purged by a
 * deletion: the server keeps only who, when and where.
 */
export type Content = { "message": { 
/**
 * Its body; `None` once deleted.
 */
body: Body | null, 
/**
 * The seq of the message it replies to.
 */
reply_to: number | null, } } | { "edit": { 
/**
 * The message edited.
 */
target: number, 
/**
 * The new body; `None` once the message was deleted.
 */
body: Body | null, } } | { "delete": { 
/**
 * The entry deleted.
 */
target: number, } } | { "reaction": { 
/**
 * The message reacted to.
 */
target: number, 
/**
 * The reaction; `None` once taken back or the message deleted.
 */
reaction: Reaction | null, } };

/**
 * One entry of a conversation's log, at its own seq (§6.2.14).
 */
export type Entry = { 
/**
 * The conversation it belongs to.
 */
conversation: number, 
/**
 * Its position in the conversation, assigned by the server.
 */
seq: number, 
/**
 * Its deployment-wide id.
 */
id: number, 
/**
 * Who wrote it.
 */
sender: number, 
/**
 * The sender's idempotency key.
 */
client_msg_id: string, 
/**
 * When the server committed it.
 */
sent_at: number, 
/**
 * What it is.
 */
content: Content, };

/**
 * What a client asks to add to a conversation's log with `relate` (§6.1.7).
 */
export type Relation = { "reply": { 
/**
 * The message answered.
 */
target: number, 
/**
 * The reply's body.
 */
body: Body, } } | { "edit": { 
/**
 * The message edited.
 */
target: number, 
/**
 * The new body.
 */
body: Body, } } | { "delete": { 
/**
 * The entry deleted.
 */
target: number, } } | { "react": { 
/**
 * The message reacted to.
 */
target: number, 
/**
 * The reaction.
 */
reaction: Reaction, } };

/**
 * The first frame on every connection: authenticates and asks for the missed messages
 * (§6.1.1).
 */
export type Hello = { 
/**
 * The highest protocol version the client speaks.
 */
version: ProtocolVersion, 
/**
 * An access token from the HTTP API.
 */
token: string, 
/**
 * A short description of the client software, for logs (may be empty).
 */
client: string, 
/**
 * The last seq the client has seen, per conversation it tracks.
 */
resume: Array<Cursor>, };

/**
 * Send a message (§6.1.2).
 */
export type SendRequest = { 
/**
 * Request id for the `ack`.
 */
request_id: number, 
/**
 * Target conversation.
 */
conversation: number, 
/**
 * Idempotency key: resending the same key returns the original `ack`.
 */
client_msg_id: string, 
/**
 * The content.
 */
body: Body, };

/**
 * Ask for older messages, newest first (§6.1.3).
 */
export type HistoryRequest = { 
/**
 * Request id for the `history_page`.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * Only messages with a smaller seq; `None` starts at the newest.
 */
before: number | null, 
/**
 * At most this many messages, `1..=max_page`.
 */
limit: number, };

/**
 * Ask for the messages after a position, oldest first, to fill a gap (§6.1.4).
 */
export type SyncRequest = { 
/**
 * Request id for the `sync_page`.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * Only messages with a greater seq.
 */
after: number, 
/**
 * At most this many messages, `1..=max_page`.
 */
limit: number, };

/**
 * Start or stop a typing indicator (§6.1.5). Never stored, never answered.
 */
export type SetTyping = { 
/**
 * The conversation.
 */
conversation: number, 
/**
 * `true` while composing; expires after `TYPING_TTL` unless refreshed.
 */
active: boolean, };

/**
 * Record that the user has read up to a position (§6.1.6).
 */
export type MarkRead = { 
/**
 * Request id for the `done`.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * Last read position; a position lower than the stored one is ignored.
 */
seq: number, };

/**
 * Liveness probe; the peer answers `pong` with the same nonce (§6.3).
 */
export type Ping = { 
/**
 * Echoed in the `pong`.
 */
nonce: number, };

/**
 * Answer to a `ping` (§6.3).
 */
export type Pong = { 
/**
 * The nonce of the `ping` answered.
 */
nonce: number, };

/**
 * Add a relation to a conversation's log: a reply, an edit, a deletion or a reaction
 * (§6.1.7, since 1.3). Answered like `send`: `ack` after the commit, or `error`.
 */
export type RelateRequest = { 
/**
 * Request id for the `ack`.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * Idempotency key, shared with sends: one key, one entry.
 */
client_msg_id: string, 
/**
 * What to add.
 */
relation: Relation, };

/**
 * A frame sent by a client.
 */
export type ClientFrame = { "hello": Hello } | { "send": SendRequest } | { "history": HistoryRequest } | { "sync": SyncRequest } | { "typing": SetTyping } | { "mark_read": MarkRead } | { "ping": Ping } | { "pong": Pong } | { "relate": RelateRequest };

/**
 * The handshake succeeded (§6.2.1).
 */
export type Welcome = { 
/**
 * The negotiated version; both sides speak exactly this from now on.
 */
version: ProtocolVersion, 
/**
 * The authenticated user.
 */
user: number, 
/**
 * The server's clock, for display-time skew correction.
 */
server_time: number, 
/**
 * The limits the client must respect.
 */
limits: ServerLimits, 
/**
 * The newest seq of every conversation the user belongs to.
 */
heads: Array<Cursor>, };

/**
 * A send was committed (§6.2.2). Sent only after the message is durable.
 */
export type Ack = { 
/**
 * The `send` answered.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * The stored message's id.
 */
id: number, 
/**
 * Its position in the conversation.
 */
seq: number, 
/**
 * When it was committed.
 */
sent_at: number, };

/**
 * A page of messages answering `history` (newest first) or `sync` (oldest first)
 * (§6.2.4, §6.2.5).
 */
export type Page = { 
/**
 * The request answered.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * The messages, in the order the request defines.
 */
messages: Array<Message>, 
/**
 * Whether more messages lie beyond this page in the requested direction.
 */
has_more: boolean, };

/**
 * A page of log entries answering `history` (newest first) or `sync` (oldest first)
 * for a peer of version 1.3 or later (§6.2.15).
 */
export type EntryPage = { 
/**
 * The request answered.
 */
request_id: number, 
/**
 * The conversation.
 */
conversation: number, 
/**
 * The entries, in the order the request defines.
 */
entries: Array<Entry>, 
/**
 * Whether more entries lie beyond this page in the requested direction.
 */
has_more: boolean, };

/**
 * The handshake replay is complete; what follows is live (§6.2.6).
 */
export type ReplayDone = { 
/**
 * Conversations whose gap was larger than the replay limit; the client fills them
 * with `sync`.
 */
truncated: Array<number>, };

/**
 * Someone started or stopped typing (§6.2.7).
 */
export type Typing = { 
/**
 * The conversation.
 */
conversation: number, 
/**
 * Who is typing.
 */
user: number, 
/**
 * Whether they are typing now.
 */
active: boolean, };

/**
 * Online state of a user.
 */
export type PresenceStatus = "online" | "offline";

/**
 * A user who shares a conversation with the receiver came online or went offline
 * (§6.2.8).
 */
export type Presence = { 
/**
 * The user.
 */
user: number, 
/**
 * Their state.
 */
status: PresenceStatus, 
/**
 * When they were last connected (absent while online or if never seen).
 */
last_seen: number | null, };

/**
 * A member's read position advanced (§6.2.9).
 */
export type Receipt = { 
/**
 * The conversation.
 */
conversation: number, 
/**
 * The reader.
 */
user: number, 
/**
 * Their last read position.
 */
seq: number, };

/**
 * How a conversation's membership changed.
 */
export type MembershipChange = "added" | "removed";

/**
 * A conversation's membership changed (§6.2.10). Sent to every member, including the
 * affected user, so clients learn about new conversations live.
 */
export type Membership = { 
/**
 * The conversation.
 */
conversation: number, 
/**
 * The member added or removed.
 */
user: number, 
/**
 * What happened.
 */
change: MembershipChange, 
/**
 * Who did it (the member themself when leaving).
 */
by: number, };

/**
 * A request without a payload answer succeeded (§6.2.11).
 */
export type Done = { 
/**
 * The request answered.
 */
request_id: number, };

/**
 * A request failed, or the connection is being closed (§6.2.12, §7).
 */
export type ErrorFrame = { 
/**
 * The request this answers, if the error concerns one.
 */
request_id: number | null, 
/**
 * Stable machine-readable code.
 */
code: ErrorCode, 
/**
 * Human-readable explanation (English, for logs; never parse it).
 */
message: string, 
/**
 * When to retry, for `rate_limited` and `unavailable`.
 */
retry_after_ms: number | null, };

/**
 * Why the server asks clients to go away.
 */
export type GoAwayReason = "shutdown" | "overloaded";

/**
 * The server is about to close this connection; the client should reconnect after
 * the given delay and resume (§6.2.13).
 */
export type GoAway = { 
/**
 * Why.
 */
reason: GoAwayReason, 
/**
 * Suggested delay before reconnecting; clients add jitter.
 */
reconnect_after_ms: number, 
/**
 * Human-readable explanation.
 */
message: string, };

/**
 * A frame sent by the server.
 */
export type ServerFrame = { "welcome": Welcome } | { "ack": Ack } | { "message": Message } | { "history_page": Page } | { "sync_page": Page } | { "replay_done": ReplayDone } | { "typing": Typing } | { "presence": Presence } | { "receipt": Receipt } | { "membership": Membership } | { "done": Done } | { "error": ErrorFrame } | { "ping": Ping } | { "pong": Pong } | { "go_away": GoAway } | { "entry": Entry } | { "entries": EntryPage };
