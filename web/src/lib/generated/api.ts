// Generated from chat-api by `cargo test -p chat-api --features ts --test typescript`
// with CHAT_UPDATE_TS=1. Do not edit: change the Rust types and regenerate.

import type { Entry, Message } from './protocol';

/**
 * Every error answer: `{"error": {"code": "...", "message": "..."}}`.
 */
export type ErrorResponse = { 
/**
 * What went wrong.
 */
error: ErrorBody, };

/**
 * The body of an [`ErrorResponse`].
 */
export type ErrorBody = { 
/**
 * A stable, machine-readable code (`invalid_credentials`, `not_found`, …).
 */
code: string, 
/**
 * A sentence for people.
 */
message: string, };

/**
 * A user's public profile.
 */
export type User = { 
/**
 * Stable id.
 */
id: number, 
/**
 * Unique login name, lower case.
 */
username: string, 
/**
 * Name shown to others.
 */
display_name: string, 
/**
 * Free text about the user.
 */
bio: string, 
/**
 * When the account was created.
 */
created_at: number, 
/**
 * When a connection of theirs last closed; `None` if never.
 */
last_seen: number | null, };

/**
 * Direct chat between two people, or a titled group.
 */
export type ConversationKind = "direct" | "group";

/**
 * A member's role in a conversation.
 */
export type Role = "owner" | "member";

/**
 * One member of a conversation.
 */
export type Member = { 
/**
 * Their profile.
 */
user: User, 
/**
 * Owner or member.
 */
role: Role, 
/**
 * The last message they marked read.
 */
last_read_seq: number, 
/**
 * When they joined.
 */
joined_at: number, };

/**
 * A conversation and its members.
 */
export type Conversation = { 
/**
 * Stable id.
 */
id: number, 
/**
 * Direct or group.
 */
kind: ConversationKind, 
/**
 * Group title (empty for direct conversations).
 */
title: string, 
/**
 * Whether bodies must be end-to-end encrypted.
 */
encrypted: boolean, 
/**
 * Creator.
 */
created_by: number, 
/**
 * Creation time.
 */
created_at: number, 
/**
 * Seq of the newest message (zero when empty).
 */
last_seq: number, 
/**
 * Time of the newest message, or creation.
 */
last_activity: number, 
/**
 * Members, oldest first.
 */
members: Array<Member>, };

/**
 * A conversation as listed for one user: with its newest message and their unread
 * count.
 */
export type ConversationSummary = { 
/**
 * Its newest message (replies included; relations are not messages), as it reads
 * now: with the body of its latest edit, or reading "🗑 message deleted".
 */
last_message: Message | null, 
/**
 * Whether that message was edited.
 */
last_message_edited?: boolean, 
/**
 * Whether that message was deleted.
 */
last_message_deleted?: boolean, 
/**
 * Messages after the user's read position.
 */
unread: number, 
/**
 * Stable id.
 */
id: number, 
/**
 * Direct or group.
 */
kind: ConversationKind, 
/**
 * Group title (empty for direct conversations).
 */
title: string, 
/**
 * Whether bodies must be end-to-end encrypted.
 */
encrypted: boolean, 
/**
 * Creator.
 */
created_by: number, 
/**
 * Creation time.
 */
created_at: number, 
/**
 * Seq of the newest message (zero when empty).
 */
last_seq: number, 
/**
 * Time of the newest message, or creation.
 */
last_activity: number, 
/**
 * Members, oldest first.
 */
members: Array<Member>, };

/**
 * A registered device and its end-to-end encryption key.
 */
export type Device = { 
/**
 * The device id (32 hex digits), derived from the key.
 */
id: string, 
/**
 * Its owner.
 */
user_id: number, 
/**
 * The X25519 public key, standard base64 of 32 bytes.
 */
public_key: string, 
/**
 * The name its owner gave it ("laptop"), for their device list.
 */
name: string, 
/**
 * When it was registered.
 */
created_at: number, };

/**
 * The body of [`Register`].
 */
export type RegisterRequest = { 
/**
 * 3–32 of `a-z 0-9 _ . -`, case-insensitive.
 */
username: string, 
/**
 * At least 8 characters.
 */
password: string, 
/**
 * Name shown to others; the username when absent.
 */
display_name?: string, 
/**
 * Put the refresh token in an HttpOnly cookie instead of the body (browsers).
 */
cookie?: boolean, };

/**
 * The body of [`Login`].
 */
export type LoginRequest = { 
/**
 * The username (any case).
 */
username: string, 
/**
 * The password.
 */
password: string, 
/**
 * Put the refresh token in an HttpOnly cookie instead of the body (browsers).
 */
cookie?: boolean, };

/**
 * The body of [`Refresh`] (optional where the cookie is sent).
 */
export type RefreshRequest = { 
/**
 * The refresh token; the cookie's when absent.
 */
refresh_token?: string, 
/**
 * Answer with the next refresh token in the cookie instead of the body.
 */
cookie?: boolean, };

/**
 * The body of [`Logout`] (optional: the bearer token's session is revoked without
 * one, and the cookie's refresh token is used when the body names none).
 */
export type LogoutRequest = { 
/**
 * The refresh token whose session ends too.
 */
refresh_token?: string, };

/**
 * The body of [`ChangePassword`].
 */
export type ChangePasswordRequest = { 
/**
 * The current password.
 */
old_password: string, 
/**
 * The new one (at least 8 characters).
 */
new_password: string, };

/**
 * The body of [`DeleteMe`].
 */
export type DeleteAccountRequest = { 
/**
 * The current password, to confirm.
 */
password: string, };

/**
 * A session's tokens: the answer to [`Register`], [`Login`] and [`Refresh`].
 */
export type Session = { 
/**
 * Whose session.
 */
user: User, 
/**
 * Short-lived JWT for HTTP calls and the real-time handshake.
 */
access_token: string, 
/**
 * Always `Bearer`.
 */
token_type: string, 
/**
 * Seconds until the access token expires.
 */
expires_in: number, 
/**
 * The single-use token that obtains the next pair; absent when it was put in the
 * cookie.
 */
refresh_token?: string, };

/**
 * The body of [`UpdateMe`]: the fields to change.
 */
export type ProfileUpdate = { 
/**
 * A new display name (1–64 characters).
 */
display_name?: string, 
/**
 * A new bio (at most 500 characters).
 */
bio?: string, };

/**
 * A page of users: the answer to [`SearchUsers`].
 */
export type UserPage = { 
/**
 * Users in username order.
 */
users: Array<User>, 
/**
 * Pass as `after` to get the next page; `None` on the last one.
 */
next: string | null, };

/**
 * The body of [`CreateConversation`].
 */
export type CreateConversationRequest = { "kind": "direct", 
/**
 * The other user (the caller may be listed too).
 */
members: Array<number>, 
/**
 * Whether bodies must be end-to-end encrypted.
 */
encrypted?: boolean, } | { "kind": "group", 
/**
 * 1–64 characters.
 */
title: string, 
/**
 * The first members besides the caller.
 */
members?: Array<number>, 
/**
 * Whether bodies must be end-to-end encrypted.
 */
encrypted?: boolean, };

/**
 * The body of [`AddMember`].
 */
export type AddMemberRequest = { 
/**
 * Who joins.
 */
user_id: number, };

/**
 * The answer to [`ListConversations`].
 */
export type ConversationList = { 
/**
 * Most recent activity first.
 */
conversations: Array<ConversationSummary>, };

/**
 * A page of messages: the answer to [`History`].
 */
export type MessagePage = { 
/**
 * Newest first.
 */
messages: Array<Message>, 
/**
 * Whether older messages exist.
 */
has_more: boolean, };

/**
 * A page of log entries: the answer to [`Entries`].
 */
export type EntryList = { 
/**
 * Newest first.
 */
entries: Array<Entry>, 
/**
 * Whether older entries exist.
 */
has_more: boolean, };

/**
 * The body of [`RegisterDevice`].
 */
export type RegisterDeviceRequest = { 
/**
 * The X25519 public key, standard base64 of 32 bytes.
 */
public_key: string, 
/**
 * A name for the owner's device list ("laptop").
 */
name?: string, };

/**
 * A page of results: the answer to [`Search`].
 */
export type SearchPage = { 
/**
 * The matching messages, newest first.
 */
results: Array<SearchResult>, 
/**
 * Pass as `before` to get the next (older) page; `None` on the last one.
 */
next: string | null, };

/**
 * One matching message, with what is needed to show it and open it in place.
 */
export type SearchResult = { 
/**
 * Its conversation.
 */
conversation: number, 
/**
 * Its position there: open the conversation at this seq.
 */
seq: number, 
/**
 * Who sent it.
 */
sender: number, 
/**
 * When it was sent.
 */
sent_at: number, 
/**
 * Its text as it reads now (the latest edit's).
 */
text: string, 
/**
 * The part of the text around the first match, in pieces; the matching words
 * are marked. Text only: show it as text, never as markup.
 */
snippet: Array<SnippetPart>, };

/**
 * A piece of a snippet.
 */
export type SnippetPart = { 
/**
 * The text of the piece.
 */
text: string, 
/**
 * Whether it is a match, to be highlighted.
 */
matched: boolean, };
