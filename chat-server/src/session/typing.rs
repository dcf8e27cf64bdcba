//! Typing updates, from the stream or from QUIC datagrams.

use std::time::Instant;

use chat_proto::codec;
use chat_proto::frame::{ClientFrame, ServerFrame, Typing};
use chat_proto::ids::{ConversationId, UserId};
use chat_proto::version::ProtocolVersion;

use crate::hub::SharedFrame;

use super::Driver;

impl Driver {
    /// Handles one datagram: a `typing` frame from a session that negotiated them, or
    /// discarded without an answer (PROTOCOL.md §1.1).
    pub(super) async fn on_datagram(&mut self, payload: &[u8]) {
        let discarded = || {
            metrics::counter!(crate::metrics::DATAGRAMS_RECEIVED, "outcome" => "discarded")
                .increment(1);
        };
        if self.user.is_none() || self.version < ProtocolVersion::DATAGRAMS {
            tracing::debug!("datagram before the handshake or below version 1.2: discarded");
            return discarded();
        }
        match codec::decode_datagram::<ClientFrame>(payload) {
            Ok(ClientFrame::Typing(t)) => {
                metrics::counter!(crate::metrics::DATAGRAMS_RECEIVED, "outcome" => "typing")
                    .increment(1);
                self.on_typing(t.conversation, t.active).await;
            }
            Ok(other) => {
                tracing::debug!(
                    kind = other.kind(),
                    "datagram of a kind that must take the stream: discarded"
                );
                discarded();
            }
            Err(e) => {
                tracing::debug!(error = %e, "undecodable datagram: discarded");
                discarded();
            }
        }
    }

    pub(super) async fn on_typing(&mut self, conversation: ConversationId, active: bool) {
        let Some(user) = self.user else { return };
        let Ok(c) = self.membership(conversation).await else {
            return;
        };
        if !self
            .proto
            .relay_typing(conversation, active, Instant::now())
        {
            return;
        }
        let others: Vec<UserId> = c.members.iter().copied().filter(|&m| m != user).collect();
        let frame = SharedFrame::new(ServerFrame::Typing(Typing {
            conversation,
            user,
            active,
        }));
        self.app.hub().broadcast(&others, &frame);
    }
}
