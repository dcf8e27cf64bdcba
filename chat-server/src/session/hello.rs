//! The handshake: `hello` checked, `welcome` sent, missed messages replayed, presence
//! announced.

use std::collections::HashMap;

use chat_proto::error::ErrorCode;
use chat_proto::frame::{
    Cursor, Hello, Presence, PresenceStatus, ReplayDone, ServerFrame, Welcome,
};
use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};
use chat_proto::limits::MAX_REPLAY;
use chat_proto::version::ProtocolVersion;

use crate::auth::AuthError;
use crate::hub::SharedFrame;
use crate::wire::CloseReason;

use super::Driver;

impl Driver {
    pub(super) async fn on_hello(
        &mut self,
        hello: Hello,
        version: ProtocolVersion,
    ) -> Option<CloseReason> {
        let caller = match self.app.authenticate_token(&hello.token).await {
            Ok(caller) => caller,
            Err(e) => {
                let (code, message) = match e {
                    AuthError::InvalidToken => (ErrorCode::InvalidToken, e.to_string()),
                    AuthError::Store(e) => {
                        tracing::warn!(error = %e, "checking a token failed");
                        (ErrorCode::Unavailable, "storage is unavailable".to_owned())
                    }
                };
                metrics::counter!(crate::metrics::HANDSHAKES, "result" => "refused").increment(1);
                let r = self.proto.refused(code, message);
                self.reject(&r);
                return Some(CloseReason::Policy);
            }
        };
        let user = caller.user.id;
        self.version = version;
        tracing::Span::current().record("user", tracing::field::display(user));
        if self.proto.established(user).is_err() {
            return Some(CloseReason::Policy);
        }
        // `welcome` must be the first frame this session sends, so it is queued before
        // the session becomes reachable through the hub. Anything committed between
        // reading the heads and registering is replayed below.
        let heads = match self.app.store().heads(user).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "loading heads failed");
                self.error(None, ErrorCode::Unavailable, "storage is unavailable");
                return Some(CloseReason::Policy);
            }
        };
        self.push(ServerFrame::Welcome(Welcome {
            version,
            user,
            server_time: Timestamp::now(),
            limits: self.app.limits(),
            heads: heads.clone(),
        }));
        self.handle.user = user;
        self.handle.view = crate::hub::View::of(version);
        if version >= ProtocolVersion::DATAGRAMS {
            self.handle.datagrams = self.datagrams.clone();
        }
        let first = self.app.hub().register(self.handle.clone());
        self.registered = true;
        self.user = Some(user);
        let now_heads = self
            .app
            .store()
            .heads(user)
            .await
            .unwrap_or_else(|_| heads.clone());
        self.replay(&hello.resume, &heads, &now_heads).await;
        // This session has had its conversations up to these heads: what a lost peer
        // commits beyond them is caught up on (see `Hub::catch_up`).
        for head in &now_heads {
            self.app.hub().note_seen(head.conversation, head.seq);
        }
        self.presence_on_connect(user, first, &heads).await;
        metrics::counter!(crate::metrics::HANDSHAKES, "result" => "ok").increment(1);
        tracing::info!(client = %hello.client, "session established");
        None
    }

    /// Replays what each resume cursor missed, and what was committed while the
    /// session was being registered, then sends `replay_done`.
    pub(super) async fn replay(
        &mut self,
        resume: &[Cursor],
        welcome_heads: &[Cursor],
        now_heads: &[Cursor],
    ) {
        let at_welcome: HashMap<ConversationId, Seq> = welcome_heads
            .iter()
            .map(|c| (c.conversation, c.seq))
            .collect();
        let mut from: Vec<(ConversationId, Seq)> = Vec::new();
        for head in now_heads {
            let cursor = resume
                .iter()
                .find(|c| c.conversation == head.conversation)
                .map(|c| c.seq);
            // Tracked: from the client's cursor. Untracked: from the head the client was
            // told (or from the start, for a conversation it has not heard of yet).
            let start = cursor.unwrap_or_else(|| {
                at_welcome
                    .get(&head.conversation)
                    .copied()
                    .unwrap_or(Seq::ZERO)
            });
            if start < head.seq {
                from.push((head.conversation, start));
            }
        }
        let mut truncated = Vec::new();
        for (conversation, start) in from {
            match self
                .app
                .store()
                .messages_after(conversation, start, u32::from(MAX_REPLAY))
                .await
            {
                Ok((entries, more)) => {
                    if more {
                        truncated.push(conversation);
                    }
                    // Older sessions get each entry as a message (`SharedFrame`).
                    for entry in entries {
                        self.push(ServerFrame::Entry(entry));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replay failed; the client will sync");
                    truncated.push(conversation);
                }
            }
        }
        self.push(ServerFrame::ReplayDone(ReplayDone { truncated }));
    }

    /// Tells contacts that `user` came online (first session), and tells this session
    /// which contacts are online now.
    pub(super) async fn presence_on_connect(&self, user: UserId, first: bool, heads: &[Cursor]) {
        let contacts = self.app.hub().contacts(heads).await;
        if first {
            let frame = SharedFrame::new(ServerFrame::Presence(Presence {
                user,
                status: PresenceStatus::Online,
                last_seen: None,
            }));
            let others: Vec<UserId> = contacts.iter().copied().filter(|&c| c != user).collect();
            self.app.hub().broadcast(&others, &frame);
        }
        for contact in contacts {
            if contact != user && self.app.hub().is_online(contact) {
                self.push(ServerFrame::Presence(Presence {
                    user: contact,
                    status: PresenceStatus::Online,
                    last_seen: None,
                }));
            }
        }
    }
}
