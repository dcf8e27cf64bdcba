//! The membership cache: who belongs to a conversation, read from the store once and
//! kept until a change invalidates it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chat_proto::frame::ServerFrame;
use chat_proto::ids::{ConversationId, UserId};

use crate::store::{ConversationMeta, StoreError};

use super::{Hub, SharedFrame};

/// Cached membership; refreshed from the store when missing or invalidated.
#[derive(Clone, Debug)]
pub struct CachedConversation {
    /// Whether bodies must be encrypted.
    pub encrypted: bool,
    /// Member ids, ascending.
    pub members: Arc<[UserId]>,
}

impl CachedConversation {
    /// Whether `user` is a member.
    pub fn has(&self, user: UserId) -> bool {
        self.members.binary_search(&user).is_ok()
    }
}

const MEMBERSHIP_CACHE: usize = 100_000;
impl Hub {
    /// A conversation's membership, from the cache or the store; `None` if it does not
    /// exist.
    pub async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<CachedConversation>, StoreError> {
        if let Some(c) = self
            .conversations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(Some(c.clone()));
        }
        // An invalidation while the store is read may concern what was read: then the
        // answer is used but not cached (it could be older than the invalidation).
        let epoch = self.invalidations.load(Ordering::Acquire);
        let Some(ConversationMeta { encrypted, members }) =
            self.store.conversation_meta(id).await?
        else {
            return Ok(None);
        };
        let cached = CachedConversation {
            encrypted,
            members: members.into(),
        };
        let mut map = self
            .conversations
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if self.invalidations.load(Ordering::Acquire) == epoch {
            if map.len() >= MEMBERSHIP_CACHE {
                map.clear();
            }
            map.insert(id, cached.clone());
        }
        Ok(Some(cached))
    }

    /// Forgets cached membership of a conversation (after it changed).
    pub fn invalidate(&self, id: ConversationId) {
        let mut map = self
            .conversations
            .write()
            .unwrap_or_else(|p| p.into_inner());
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        map.remove(&id);
    }

    /// A conversation's membership changed: forget the cached members and tell
    /// `recipients` (every session of each).
    pub fn membership_changed(
        &self,
        conversation: ConversationId,
        subject: UserId,
        change: chat_proto::frame::MembershipChange,
        by: UserId,
        recipients: &[UserId],
    ) {
        self.invalidate(conversation);
        if let Some(peers) = self.peers() {
            peers.invalidate(conversation);
        }
        let frame = SharedFrame::new(ServerFrame::Membership(chat_proto::frame::Membership {
            conversation,
            user: subject,
            change,
            by,
        }));
        self.broadcast(recipients, &frame);
    }
}
