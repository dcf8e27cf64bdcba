//! `history` and `sync`: pages of stored messages, cut to the frame limit.

use chat_proto::error::ErrorCode;
use chat_proto::frame::{Page, ServerFrame};
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
            Ok((messages, more)) => {
                let frame = self.fit_page(kind, request_id, conversation, messages, more);
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
        mut messages: Vec<chat_proto::frame::Message>,
        mut has_more: bool,
    ) -> SharedFrame {
        loop {
            let page = Page {
                request_id,
                conversation,
                messages,
                has_more,
            };
            let frame = SharedFrame::new(match kind {
                PageKind::History(_) => ServerFrame::HistoryPage(page),
                PageKind::Sync(_) => ServerFrame::SyncPage(page),
            });
            // The encoders refuse frames past the receiver's limit.
            let count = match frame.frame() {
                ServerFrame::HistoryPage(p) | ServerFrame::SyncPage(p) => p.messages.len(),
                _ => 0,
            };
            if frame.bytes(self.wire).is_some() || count <= 1 {
                return frame;
            }
            let (ServerFrame::HistoryPage(page) | ServerFrame::SyncPage(page)) = frame.into_frame()
            else {
                unreachable!("built as a page above")
            };
            messages = page.messages;
            messages.truncate(count / 2);
            has_more = true;
        }
    }
}
