//! `mark_read`: read positions and receipts.

use chat_proto::error::ErrorCode;
use chat_proto::frame::{Done, Receipt, ServerFrame};

use crate::hub::SharedFrame;

use super::Driver;

impl Driver {
    /// Answers `mark_read`: moves the read position and tells every member's sessions.
    pub(super) async fn on_mark_read(&mut self, m: chat_proto::frame::MarkRead) {
        let request_id = Some(m.request_id);
        let c = match self.membership(m.conversation).await {
            Ok(c) => c,
            Err((code, message)) => return self.fail(request_id, code, message),
        };
        let Some(user) = self.user else { return };
        match self
            .app
            .store()
            .mark_read(m.conversation, user, m.seq)
            .await
        {
            Ok(moved) => {
                self.push(ServerFrame::Done(Done {
                    request_id: m.request_id,
                }));
                self.proto.finished();
                if let Some(seq) = moved {
                    let frame = SharedFrame::new(ServerFrame::Receipt(Receipt {
                        conversation: m.conversation,
                        user,
                        seq,
                    }));
                    self.app.hub().broadcast(&c.members, &frame);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "mark_read failed");
                self.fail(request_id, ErrorCode::Unavailable, "storage is unavailable");
            }
        }
    }
}
