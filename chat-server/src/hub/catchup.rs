//! Catching up on what a lost node committed but never published.
//!
//! A node that dies between committing entries and publishing them on the bus leaves
//! the other nodes' sessions unaware of them until a later entry of the same
//! conversation reveals the gap. So each node remembers, per conversation, the newest
//! seq its sessions were sent or told of (by a local commit, a peer's fan-out, or the
//! heads of a `welcome`); when a peer is declared gone, it reads the newest seq of each
//! of those conversations from the store and sends its own sessions whatever they
//! lack, in order, without publishing it again (every survivor does the same).

use std::collections::HashMap;

use chat_proto::frame::ServerFrame;
use chat_proto::ids::{ConversationId, Seq};
use chat_proto::limits::MAX_REPLAY;

use super::{Hub, SharedFrame};

/// The newest seq this node's sessions have had, per conversation.
#[derive(Debug, Default)]
pub(super) struct Seen(HashMap<ConversationId, Seq>);

impl Hub {
    /// Notes that this node's sessions have had `conversation` up to `seq`.
    pub fn note_seen(&self, conversation: ConversationId, seq: Seq) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let at = seen.0.entry(conversation).or_insert(seq);
        if *at < seq {
            *at = seq;
        }
    }

    /// The newest seq noted for `conversation`.
    pub fn seen(&self, conversation: ConversationId) -> Option<Seq> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.0.get(&conversation).copied()
    }

    /// Sends this node's sessions the entries committed beyond what they have had, in
    /// every conversation noted so far; returns how many entries went out. Called when
    /// a peer node is declared gone.
    pub async fn catch_up(&self) -> usize {
        let noted: Vec<ConversationId> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.0.keys().copied().collect()
        };
        let heads = match self.store.last_seqs(noted).await {
            Ok(heads) => heads,
            Err(e) => {
                tracing::warn!(error = %e, "catch-up after a lost node failed; clients fill gaps by sync");
                return 0;
            }
        };
        let mut sent = 0;
        for head in heads {
            let Some(had) = self.seen(head.conversation) else {
                continue;
            };
            if head.seq <= had {
                continue;
            }
            let (entries, _) = match self
                .store
                .messages_after(head.conversation, had, u32::from(MAX_REPLAY))
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up after a lost node failed; clients fill gaps by sync");
                    continue;
                }
            };
            let members = match self.conversation(head.conversation).await {
                Ok(Some(c)) => c.members,
                _ => continue,
            };
            for entry in entries {
                // Delivered meanwhile by its own fan-out: nothing to add.
                if self.seen(head.conversation).is_some_and(|s| s >= entry.seq) {
                    continue;
                }
                self.note_seen(entry.conversation, entry.seq);
                self.send_to_users(&members, &SharedFrame::new(ServerFrame::Entry(entry)), None);
                sent += 1;
            }
        }
        if sent > 0 {
            tracing::info!(entries = sent, "caught up on entries a lost node committed");
        }
        sent
    }
}
