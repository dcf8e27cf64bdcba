//! TypeScript for the browser client, generated from the wire types (feature `ts`).
//!
//! [`typescript`] renders one module: every frame and the types inside them, and the
//! constants a client needs (subprotocol, version, default limits, error codes and
//! which of them are fatal). The web client commits the result as
//! `web/src/lib/generated/protocol.ts`; a test in `chat-api` fails when it is stale.

use std::fmt::Write as _;

use ts_rs::{Config, TS};

use crate::error::ErrorCode;
use crate::limits::ServerLimits;
use crate::version::{ProtocolVersion, WS_SUBPROTOCOL_JSON};

/// `TS` for a type whose JSON form is a plain TypeScript type (a number or a string),
/// written inline where it is used.
macro_rules! alias {
    ($name:ty => $ts:literal) => {
        impl ts_rs::TS for $name {
            type WithoutGenerics = Self;
            type OptionInnerType = Self;
            fn name(_: &ts_rs::Config) -> String {
                $ts.to_owned()
            }
            fn inline(_: &ts_rs::Config) -> String {
                $ts.to_owned()
            }
        }
    };
}
pub(crate) use alias;

/// The configuration every generated file uses: 64-bit integers are JavaScript
/// numbers (ids stay below 2^53, times are milliseconds).
pub fn config() -> Config {
    Config::new().with_large_int("number")
}

/// `export type NAME = …;` for `T`, with its doc comment.
pub fn export<T: TS + ?Sized>(cfg: &Config) -> String {
    let mut out = String::new();
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    let _ = writeln!(out, "export {}\n", T::decl(cfg).trim_end());
    out
}

/// The header of every generated file.
pub fn header(source: &str) -> String {
    format!(
        "// Generated from {source} by `cargo test -p chat-api --features ts --test typescript`\n\
         // with CHAT_UPDATE_TS=1. Do not edit: change the Rust types and regenerate.\n\n"
    )
}

/// The whole generated protocol module.
pub fn typescript() -> String {
    use crate::body::{
        Attachments, Body, FileRef, ImageInfo, SealedAttachmentIds, SealedAttachments, SealedFile,
    };
    use crate::entry::{Content, Entry, Reaction, Relation};
    use crate::frame::*;
    let cfg = config();
    let mut out = header("chat-proto");
    let limits = ServerLimits::default();
    let version = ProtocolVersion::CURRENT;
    let _ = writeln!(
        out,
        "/** The WebSocket subprotocol of JSON frames. */\n\
         export const SUBPROTOCOL = '{WS_SUBPROTOCOL_JSON}';\n\n\
         /** The newest protocol version (the reference implementation's). */\n\
         export const VERSION = {{ major: {}, minor: {} }} as const;\n",
        version.major, version.minor
    );
    let _ = writeln!(
        out,
        "/** Defaults of PROTOCOL.md §8, used until `welcome` announces the server's values. */\n\
         export const DEFAULT_LIMITS: ServerLimits = {{\n  \
         max_frame: {},\n  max_text_body: {},\n  max_envelope: {},\n  max_page: {},\n  \
         max_in_flight: {},\n  send_rate: {},\n  send_burst: {},\n  heartbeat_ms: {},\n  \
         idle_timeout_ms: {},\n}};\n",
        limits.max_frame,
        limits.max_text_body,
        limits.max_envelope,
        limits.max_page,
        limits.max_in_flight,
        limits.send_rate,
        limits.send_burst,
        limits.heartbeat_ms,
        limits.idle_timeout_ms,
    );
    let _ = writeln!(
        out,
        "/** Limits of files in messages (PROTOCOL.md §5.3, §8). */\n\
         export const FILE_LIMITS = {{\n  max_files: {},\n  max_file_name: {},\n  \
         max_media_type: {},\n  max_thumbnail: {},\n}} as const;\n",
        crate::limits::MAX_FILES,
        crate::limits::MAX_FILE_NAME,
        crate::limits::MAX_MEDIA_TYPE,
        crate::limits::MAX_THUMBNAIL,
    );
    let fatal: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|c| c.is_fatal())
        .map(|c| format!("  '{}',", c.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "/** Error codes after which the server closes the connection (PROTOCOL.md §7). */\n\
         export const FATAL_CODES: ReadonlySet<string> = new Set([\n{}\n]);\n",
        fatal.join("\n")
    );
    for decl in [
        export::<ProtocolVersion>(&cfg),
        export::<ServerLimits>(&cfg),
        export::<ErrorCode>(&cfg),
        export::<Body>(&cfg),
        export::<Attachments>(&cfg),
        export::<SealedAttachmentIds>(&cfg),
        export::<FileRef>(&cfg),
        export::<ImageInfo>(&cfg),
        export::<SealedAttachments>(&cfg),
        export::<SealedFile>(&cfg),
        export::<Cursor>(&cfg),
        export::<Message>(&cfg),
        export::<Reaction>(&cfg),
        export::<Content>(&cfg),
        export::<Entry>(&cfg),
        export::<Relation>(&cfg),
        export::<Hello>(&cfg),
        export::<Send>(&cfg),
        export::<History>(&cfg),
        export::<Sync>(&cfg),
        export::<SetTyping>(&cfg),
        export::<MarkRead>(&cfg),
        export::<Ping>(&cfg),
        export::<Pong>(&cfg),
        export::<Relate>(&cfg),
        export::<ClientFrame>(&cfg),
        export::<Welcome>(&cfg),
        export::<Ack>(&cfg),
        export::<Page>(&cfg),
        export::<EntryPage>(&cfg),
        export::<ReplayDone>(&cfg),
        export::<Typing>(&cfg),
        export::<PresenceStatus>(&cfg),
        export::<Presence>(&cfg),
        export::<Receipt>(&cfg),
        export::<MembershipChange>(&cfg),
        export::<Membership>(&cfg),
        export::<Done>(&cfg),
        export::<Error>(&cfg),
        export::<GoAwayReason>(&cfg),
        export::<GoAway>(&cfg),
        export::<ServerFrame>(&cfg),
    ] {
        out.push_str(&decl);
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}
