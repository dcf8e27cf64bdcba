//! `send` and `relate`: from the checks to the ack after the commit.

use std::time::Instant;

use chat_proto::entry::Content;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{Ack, Error, Relate, ServerFrame};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId, Timestamp, UserId};

use crate::store::append::AppendResult;
use crate::store::{Appended, NewEntry, Refusal};

use super::Driver;
use crate::services::{Denied, conversations};

impl Driver {
    /// Answers `send` as a new entry ([`Driver::write`]).
    pub(super) async fn on_send(&mut self, send: chat_proto::frame::Send) {
        let content = Content::message(send.body);
        self.write(
            send.request_id,
            send.conversation,
            send.client_msg_id,
            content,
        )
        .await;
    }

    /// Answers `relate` (PROTOCOL.md §5.2) as a new entry ([`Driver::write`]); the
    /// store checks the relation against the log when it commits it.
    pub(super) async fn on_relate(&mut self, relate: Relate) {
        let content = relate.relation.into_content();
        self.write(
            relate.request_id,
            relate.conversation,
            relate.client_msg_id,
            content,
        )
        .await;
    }

    /// Writes a message or relation: membership, encryption policy, the shared send
    /// rate limit and (sealed content) the recipients are checked, then the entry is
    /// queued on the group-commit appender; the ack follows the commit
    /// ([`Driver::answer_send`]).
    async fn write(
        &mut self,
        request: RequestId,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        content: Content,
    ) {
        let request_id = Some(request);
        let c = match self.membership(conversation).await {
            Ok(c) => c,
            Err((code, message)) => return self.fail(request_id, code, message),
        };
        if let Err(denied) = conversations::may_write(&c, &content) {
            let (code, message) = super::refusal(&denied);
            return self.fail(request_id, code, message);
        }
        let Some(user) = self.user else { return };
        if !self.take_send(user, request_id) {
            return;
        }
        // After the rate limit: this check reads the database.
        if c.encrypted
            && let Some(envelope) = content.envelope()
            && let Err((code, message)) = self.check_recipients(user, conversation, envelope).await
        {
            return self.fail(request_id, code, message);
        }
        // Only a deletion can use the moderator's right; only then is it looked up.
        let moderator = match content {
            Content::Delete { .. } => {
                match conversations::moderates(&self.app, user, conversation).await {
                    Ok(m) => m,
                    Err(denied) => {
                        let (code, message) = super::refusal(&denied);
                        return self.fail(request_id, code, message);
                    }
                }
            }
            _ => false,
        };
        let entry = NewEntry {
            conversation,
            sender: user,
            client_msg_id,
            content,
            sent_at: Timestamp::now(),
            moderator,
        };
        self.append(request, entry).await;
    }

    /// Takes a token of the user's send rate; answers `rate_limited` and returns
    /// `false` when there is none.
    fn take_send(&mut self, user: UserId, request_id: Option<RequestId>) -> bool {
        let Err(denied) = conversations::take_send(&self.app, user, Instant::now()) else {
            return true;
        };
        self.proto.finished();
        metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "send").increment(1);
        let (code, message) = super::refusal(&denied);
        let retry_after_ms = match denied {
            Denied::RateLimited(wait) => {
                Some(u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1))
            }
            _ => None,
        };
        self.push(ServerFrame::Error(Error {
            request_id,
            code,
            message: message.into(),
            retry_after_ms,
        }));
        false
    }

    /// Queues an entry on the group-commit appender; its ack follows the commit
    /// ([`Driver::answer_send`]).
    async fn append(&mut self, request_id: RequestId, entry: NewEntry) {
        match self.app.appender().enqueue(entry).await {
            Ok(answer) => self
                .pending
                .push_back(Box::pin(async move { (request_id, answer.await.ok()) })),
            Err(_) => self.fail(
                Some(request_id),
                ErrorCode::Unavailable,
                "storage is unavailable",
            ),
        }
    }

    /// An encrypted conversation's envelope must come from one of the sender's devices
    /// and be sealed for exactly the members' devices (PROTOCOL.md §5.1).
    pub(super) async fn check_recipients(
        &self,
        user: UserId,
        conversation: ConversationId,
        envelope: &chat_proto::body::Envelope,
    ) -> Result<(), (ErrorCode, &'static str)> {
        use std::collections::BTreeSet;
        let header = chat_crypto::e2e::EnvelopeHeader::parse(&envelope.0).map_err(|_| {
            (
                ErrorCode::InvalidRequest,
                "not an end-to-end envelope (PROTOCOL.md §5.1)",
            )
        })?;
        let devices = match self.app.store().conversation_devices(conversation).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "device lookup failed");
                return Err((ErrorCode::Unavailable, "storage is unavailable"));
            }
        };
        let sender_device = devices
            .iter()
            .any(|d| d.user_id == user && d.public_key.id() == header.sender_device);
        if !sender_device {
            return Err((
                ErrorCode::InvalidRequest,
                "the sealing device is not registered to this account",
            ));
        }
        let sealed_for: BTreeSet<_> = header.recipients.iter().copied().collect();
        if sealed_for.len() != header.recipients.len() {
            return Err((
                ErrorCode::InvalidRequest,
                "the envelope names a device twice",
            ));
        }
        let expected: BTreeSet<_> = devices.iter().map(|d| d.public_key.id()).collect();
        if sealed_for != expected {
            return Err((
                ErrorCode::DevicesChanged,
                "the conversation's devices changed: fetch them again and seal again",
            ));
        }
        Ok(())
    }

    pub(super) fn answer_send(&mut self, request_id: RequestId, result: Option<AppendResult>) {
        self.proto.finished();
        let rid = Some(request_id);
        match result {
            Some(Ok(Appended::New(m) | Appended::Duplicate(m))) => {
                self.push(ServerFrame::Ack(Ack {
                    request_id,
                    conversation: m.conversation,
                    id: m.id,
                    seq: m.seq,
                    sent_at: m.sent_at,
                }))
            }
            Some(Ok(Appended::Conflict)) => self.error(
                rid,
                ErrorCode::IdempotencyConflict,
                "client_msg_id was used for a different message",
            ),
            Some(Ok(Appended::NoConversation)) => {
                self.error(rid, ErrorCode::NotFound, "no such conversation")
            }
            Some(Ok(Appended::Refused(refusal))) => {
                let (code, message) = match refusal {
                    Refusal::NoTarget => {
                        (ErrorCode::NotFound, "no such entry in this conversation")
                    }
                    Refusal::WrongTarget => (
                        ErrorCode::InvalidRequest,
                        "that entry cannot be the target of this relation",
                    ),
                    Refusal::Forbidden => (
                        ErrorCode::Forbidden,
                        "only the author (or a group's owner, to delete) may do that",
                    ),
                    Refusal::Deleted => (ErrorCode::Deleted, "that message was deleted"),
                    Refusal::ReactionLimit => (
                        ErrorCode::ReactionLimit,
                        "that message has as many reactions as allowed",
                    ),
                    Refusal::NoFile => (ErrorCode::NotFound, "no such file of yours"),
                    Refusal::FileUnfinished => (
                        ErrorCode::InvalidRequest,
                        "a file is not completely uploaded yet",
                    ),
                    Refusal::FileInUse => (
                        ErrorCode::InvalidRequest,
                        "a file is in another message already; upload it again",
                    ),
                    Refusal::FileSize => (
                        ErrorCode::InvalidRequest,
                        "a file's size is not that of its upload",
                    ),
                };
                self.error(rid, code, message)
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "send failed to commit");
                self.push(ServerFrame::Error(Error {
                    request_id: rid,
                    code: ErrorCode::Unavailable,
                    message: "storage is unavailable".into(),
                    retry_after_ms: Some(1000),
                }));
            }
            None => self.error(rid, ErrorCode::Unavailable, "server shutting down"),
        }
    }
}
