//! TypeScript for the browser client, generated from these types (feature `ts`).
//!
//! [`typescript`] renders every body and shared type as one module that imports the
//! wire types from the protocol module (`chat_proto::ts::typescript`). The web client
//! commits both as `web/src/lib/generated/`; `tests/typescript.rs` fails when they are
//! stale and rewrites them with `CHAT_UPDATE_TS=1`.

use chat_proto::ts::{config, export, header};

/// The whole generated API module.
pub fn typescript() -> String {
    use crate::accounts::*;
    use crate::conversations::*;
    use crate::devices::*;
    use crate::model::*;
    use crate::search::*;
    use crate::users::*;
    let cfg = config();
    let mut out = header("chat-api");
    out.push_str("import type { Entry, Message } from './protocol';\n\n");
    for decl in [
        export::<crate::ErrorResponse>(&cfg),
        export::<crate::ErrorBody>(&cfg),
        export::<User>(&cfg),
        export::<ConversationKind>(&cfg),
        export::<Role>(&cfg),
        export::<Member>(&cfg),
        export::<Conversation>(&cfg),
        export::<ConversationSummary>(&cfg),
        export::<Device>(&cfg),
        export::<RegisterRequest>(&cfg),
        export::<LoginRequest>(&cfg),
        export::<RefreshRequest>(&cfg),
        export::<LogoutRequest>(&cfg),
        export::<ChangePasswordRequest>(&cfg),
        export::<DeleteAccountRequest>(&cfg),
        export::<Session>(&cfg),
        export::<ProfileUpdate>(&cfg),
        export::<UserPage>(&cfg),
        export::<CreateConversationRequest>(&cfg),
        export::<AddMemberRequest>(&cfg),
        export::<ConversationList>(&cfg),
        export::<MessagePage>(&cfg),
        export::<EntryList>(&cfg),
        export::<RegisterDeviceRequest>(&cfg),
        export::<SearchPage>(&cfg),
        export::<SearchResult>(&cfg),
        export::<SnippetPart>(&cfg),
    ] {
        out.push_str(&decl);
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}
