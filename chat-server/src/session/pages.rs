//! `history` and `sync`: pages of stored entries, cut to the frame limit, as
//! `entries` for sessions of 1.3 and later and as pages of messages for older ones.

use chat_proto::entry::Entry;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{EntryPage, Page, ServerFrame};
use chat_proto::ids::{ConversationId, RequestId};

use crate::hub::SharedFrame;

use super::{Driver, PageKind};

impl Driver {
    /// Answers `history` (newest first, before a seq) or `sync` (oldest first, after a
    /// seq) for members.
    pub(super) async fn serve_page(
        &mut self,
        request_id: RequestId,
        conversation: ConversationId,
        kind: PageKind,
        limit: u16,
    ) {
        if let Err((code, message)) = self.membership(conversation).await {
            return self.fail(Some(request_id), code, message);
        }
        let store = self.app.store();
        let limit = u32::from(limit);
        let result = match kind {
            PageKind::History(before) => store.history(conversation, before, limit).await,
            PageKind::Sync(after) => store.messages_after(conversation, after, limit).await,
        };
        match result {
            Ok((entries, more)) => {
                let frame = self.fit_page(kind, request_id, conversation, entries, more);
                self.handle.push_shared(&frame);
                self.proto.finished();
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a page failed");
                self.fail(
                    Some(request_id),
                    ErrorCode::Unavailable,
                    "storage is unavailable",
                );
            }
        }
    }

    /// The page as a frame whose encoding fits the client's frame limit, cut in half
    /// until it does; the encoding made to measure it is the one that is sent.
    pub(super) fn fit_page(
        &self,
        kind: PageKind,
        request_id: RequestId,
        conversation: ConversationId,
        mut entries: Vec<Entry>,
        mut has_more: bool,
    ) -> SharedFrame {
        let relations = self.version.has_relations();
        loop {
            let count = entries.len();
            let frame = if relations {
                ServerFrame::Entries(EntryPage {
                    request_id,
                    conversation,
                    entries: if self.version.has_files() {
                        entries.clone()
                    } else {
                        // A 1.3 session reads bodies with files as text (§2.2).
                        entries
                            .iter()
                            .map(|e| e.without_files().unwrap_or_else(|| e.clone()))
                            .collect()
                    },
                    has_more,
                })
            } else {
                let page = Page {
                    request_id,
                    conversation,
                    messages: entries.iter().map(Entry::to_message).collect(),
                    has_more,
                };
                match kind {
                    PageKind::History(_) => ServerFrame::HistoryPage(page),
                    PageKind::Sync(_) => ServerFrame::SyncPage(page),
                }
            };
            let frame = SharedFrame::new(frame);
            // The encoders refuse frames past the receiver's limit.
            if frame.bytes(self.wire).is_some() || count <= 1 {
                return frame;
            }
            entries.truncate(count / 2);
            has_more = true;
        }
    }
}
