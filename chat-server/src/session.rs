//! One session per connection, written once for every transport.
//!
//! A transport supplies a [`FrameReader`] (complete frame payloads in) and a
//! [`FrameWriter`] (queued frames out); everything else is here: the handshake within
//! its deadline, request validation (chat-proto's `ServerSession`), sends through the
//! group-commit appender with acks in request order, history and sync pages cut to the
//! frame limit, receipts, typing, presence, heartbeats, slow-consumer handling and
//! draining on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proto::body::Body;
use chat_proto::codec;
use chat_proto::error::{DecodeError, ErrorCode};
use chat_proto::frame::{
    Ack, ClientFrame, Cursor, Done, Error, GoAway, GoAwayReason, Hello, Page, Ping, Pong, Presence,
    PresenceStatus, Receipt, ReplayDone, ServerFrame, Typing, Welcome,
};
use chat_proto::ids::{ConversationId, RequestId, Seq, Timestamp, UserId};
use chat_proto::limits::MAX_REPLAY;
use chat_proto::session::{Inbound, Rejection, ServerSession, Timeout};
use chat_proto::version::ProtocolVersion;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;

use crate::app::App;
use crate::auth::AuthError;
use crate::hub::{SessionHandle, SharedFrame};
use crate::outbox::{Outbox, SlowFlag, Taken};
use crate::store::append::AppendResult;
use crate::store::{Appended, NewMessage};
use crate::wire::{
    CloseReason, Datagrams, FrameReader, FrameWriter, Outbound, ReadError, ReadEvent, Wire,
};

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// One read that owns its reader, so the session can keep it in flight across its
/// `select!` rounds and start the next one from what it returns.
async fn read<R: FrameReader>(mut reader: R) -> (R, Result<ReadEvent, ReadError>) {
    let event = reader.next().await;
    (reader, event)
}

type PendingAck = Pin<Box<dyn Future<Output = (RequestId, Option<AppendResult>)> + Send + Sync>>;

/// Most frames the writer takes from the queue per write.
const WRITE_BATCH: usize = 256;

/// Drains a session's outbox into the transport, one write per batch, and closes the
/// transport once the session asked to and everything queued before was written.
pub async fn write_loop<W: FrameWriter>(mut writer: W, outbox: Arc<Outbox>) {
    loop {
        match outbox.take(WRITE_BATCH).await {
            Taken::Frames(batch) => {
                let result = writer.write_batch(&batch).await;
                outbox.written(&batch);
                if result.is_err() {
                    outbox.writer_gone();
                    return;
                }
            }
            Taken::Close(reason) => {
                writer.close(reason).await;
                return;
            }
        }
    }
}

/// Runs one connection's session to its end.
pub async fn run<R: FrameReader, W: FrameWriter>(
    app: App,
    wire: Wire,
    reader: R,
    writer: W,
    peer: String,
) {
    let mut reading = std::pin::pin!(read(reader));
    let user_placeholder = UserId::new(1).unwrap_or_else(|_| unreachable!("1 is a valid id"));
    // The handle exists before authentication so errors can be queued; it is only
    // registered with the hub once the user is known.
    let (handle, outbox) = app.hub().new_session(user_placeholder, wire);
    if let Some(direct) = writer.direct() {
        outbox.write_directly(direct);
    }
    let writer_datagrams = writer.datagrams();
    let mut writer_task = tokio::spawn(write_loop(writer, outbox.clone()));
    let transport = match wire {
        Wire::WsJson => "websocket_json",
        Wire::WsPostcard => "websocket_postcard",
        Wire::Stream => "quic",
    };
    let connections = metrics::gauge!(crate::metrics::CONNECTIONS, "transport" => transport);
    connections.increment(1.0);
    let span = tracing::info_span!("session", id = handle.id, %peer, wire = ?wire, user = tracing::field::Empty);
    let mut driver = Driver::new(app.clone(), wire, handle);
    driver.datagrams = writer_datagrams;
    let reason = tracing::Instrument::instrument(
        async {
            let reason = driver.run(reading.as_mut(), read::<R>, outbox.slow()).await;
            driver.finish().await;
            reason
        },
        span,
    )
    .await;
    connections.decrement(1.0);
    outbox.close(reason);
    // Read (and discard) until the peer answers the close or a second passes, so the
    // connection is not reset under a close frame the peer has not read yet.
    if !driver.read_ended {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                let (reader, event) = reading.as_mut().await;
                if !matches!(
                    event,
                    Ok(ReadEvent::Frame(_) | ReadEvent::Datagram(_) | ReadEvent::Ping(_))
                ) {
                    return;
                }
                reading.set(read(reader));
            }
        })
        .await;
    }
    // A writer stuck on a peer that stopped reading is abandoned after a grace period.
    if tokio::time::timeout(Duration::from_secs(2), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
}

/// Which page a request asks for.
#[derive(Clone, Copy, Debug)]
enum PageKind {
    /// Older than a seq (or the newest), newest first.
    History(Option<Seq>),
    /// Newer than a seq, oldest first.
    Sync(Seq),
}

struct Driver {
    app: App,
    wire: Wire,
    proto: ServerSession,
    handle: SessionHandle,
    user: Option<UserId>,
    /// The negotiated protocol version (the newest until the handshake).
    version: ProtocolVersion,
    registered: bool,
    pending: FuturesOrdered<PendingAck>,
    draining: bool,
    /// The reader returned its last event (a close or an error).
    read_ended: bool,
    /// The transport's datagrams, handed to the hub's handle if the negotiated
    /// version allows them.
    datagrams: Option<Arc<dyn Datagrams>>,
}

impl Driver {
    fn new(app: App, wire: Wire, handle: SessionHandle) -> Self {
        let mut proto = ServerSession::new(app.limits());
        proto.opened(
            Instant::now(),
            Duration::from_millis(app.config().handshake_timeout_ms),
        );
        Self {
            app,
            wire,
            proto,
            handle,
            user: None,
            version: ProtocolVersion::CURRENT,
            registered: false,
            pending: FuturesOrdered::new(),
            draining: false,
            read_ended: false,
            datagrams: None,
        }
    }

    fn push(&self, frame: ServerFrame) {
        self.handle.push_shared(&SharedFrame::new(frame));
    }

    fn reject(&self, rejection: &Rejection) {
        tracing::debug!(code = %rejection.code, message = %rejection.message, "frame rejected");
        self.push(rejection.to_frame());
    }

    fn error(&self, request_id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) {
        let code = code.for_version(self.version);
        self.push(ServerFrame::error(request_id, code, message));
    }

    fn decode(&self, payload: &[u8]) -> Result<ClientFrame, DecodeError> {
        match self.wire {
            Wire::WsJson => codec::decode_json(payload),
            Wire::WsPostcard | Wire::Stream => codec::decode_postcard(payload),
        }
    }

    /// Runs the session until it ends. `reading` is the read in flight; `restart`
    /// starts the next one from the reader the last one returned.
    async fn run<R, F>(
        &mut self,
        mut reading: Pin<&mut F>,
        restart: fn(R) -> F,
        slow: &SlowFlag,
    ) -> CloseReason
    where
        F: Future<Output = (R, Result<ReadEvent, ReadError>)>,
    {
        let mut shutdown = self.app.shutdown_signal();
        let mut resync = self.app.hub().resync_signal();
        loop {
            // The timers live in the sans-IO session; this loop only sleeps until the
            // next one is due.
            let deadline = self.proto.poll_timeout();
            tokio::select! {
                biased;
                () = slow.wait() => {
                    tracing::info!("slow consumer: closing");
                    metrics::counter!(crate::metrics::SLOW_CONSUMERS).increment(1);
                    // Best effort: the queue may have no room for it.
                    self.error(None, ErrorCode::SlowConsumer, "the connection fell too far behind; reconnect and resume");
                    return CloseReason::Policy;
                }
                () = async { let _ = shutdown.wait_for(|s| *s).await; }, if !self.draining => {
                    if let Some(reason) = self.go_away(GoAwayReason::Shutdown, "server shutting down") {
                        return reason;
                    }
                }
                Ok(()) = resync.changed(), if !self.draining => {
                    // This node may have missed frames other nodes published: the client
                    // fills the gap from storage by resuming.
                    if let Some(reason) = self.go_away(
                        GoAwayReason::Overloaded,
                        "the cluster link was interrupted; reconnect to resume",
                    ) {
                        return reason;
                    }
                }
                Some((request_id, result)) = self.pending.next(), if !self.pending.is_empty() => {
                    self.answer_send(request_id, result);
                    if self.draining && self.pending.is_empty() {
                        return CloseReason::GoingAway;
                    }
                }
                () = sleep_until(deadline) => match self.proto.handle_timeout(Instant::now()) {
                    Some(Timeout::Ping(ping)) => self.push(ServerFrame::Ping(ping)),
                    Some(Timeout::Close(rejection)) => {
                        self.reject(&rejection);
                        return CloseReason::Policy;
                    }
                    None => {}
                },
                (reader, event) = reading.as_mut(), if !self.read_ended => {
                    if matches!(event, Ok(ReadEvent::Frame(_) | ReadEvent::Datagram(_) | ReadEvent::Ping(_))) {
                        reading.set(restart(reader));
                    } else {
                        // The connection's reading side is over; nothing to poll again.
                        self.read_ended = true;
                    }
                    self.proto.heard(Instant::now());
                    match event {
                        Ok(ReadEvent::Frame(payload)) => {
                            if let Some(reason) = self.on_payload(&payload).await {
                                return reason;
                            }
                        }
                        Ok(ReadEvent::Datagram(payload)) => self.on_datagram(&payload).await,
                        Ok(ReadEvent::Ping(data)) => {
                            self.handle.push(Outbound::Pong(data));
                        }
                        Ok(ReadEvent::Closed) => return CloseReason::Normal,
                        Err(ReadError::TooLarge) => {
                            let r = self.proto.undecodable(&DecodeError::TooLarge { len: 0, max: 0 });
                            self.error(None, r.code, "frame exceeds the size limit");
                            return CloseReason::TooLarge;
                        }
                        Err(ReadError::InvalidUtf8) => {
                            self.error(None, ErrorCode::BadFrame, "text message is not valid UTF-8");
                            return CloseReason::InvalidData;
                        }
                        Err(ReadError::Protocol(what)) => {
                            self.error(None, ErrorCode::BadFrame, what);
                            return CloseReason::Protocol;
                        }
                        Err(ReadError::Io(e)) => {
                            tracing::debug!(error = %e, "connection lost");
                            return CloseReason::Normal;
                        }
                    }
                }
            }
        }
    }

    /// Starts draining: tells the client to reconnect (after a jittered delay) and ends
    /// the session once nothing is in flight; `Some` when that is already the case.
    fn go_away(&mut self, reason: GoAwayReason, message: &str) -> Option<CloseReason> {
        self.draining = true;
        let jitter = rand::random::<u32>() % 2000;
        self.push(ServerFrame::GoAway(GoAway {
            reason,
            reconnect_after_ms: 500 + jitter,
            message: message.into(),
        }));
        self.pending.is_empty().then_some(CloseReason::GoingAway)
    }

    /// Handles one datagram: a `typing` frame from a session that negotiated them, or
    /// discarded without an answer (PROTOCOL.md §1.1).
    async fn on_datagram(&mut self, payload: &[u8]) {
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

    /// Handles one frame; `Some` ends the session.
    async fn on_payload(&mut self, payload: &[u8]) -> Option<CloseReason> {
        let frame = match self.decode(payload) {
            Ok(frame) => frame,
            Err(e) => {
                let rejection = self.proto.undecodable(&e);
                self.reject(&rejection);
                return rejection.fatal.then_some(CloseReason::Policy);
            }
        };
        let inbound = match self.proto.receive(frame) {
            Ok(inbound) => inbound,
            Err(rejection) => {
                self.reject(&rejection);
                return rejection.fatal.then_some(CloseReason::Policy);
            }
        };
        match inbound {
            Inbound::Hello { hello, version } => return self.on_hello(hello, version).await,
            Inbound::Ping(Ping { nonce }) => self.push(ServerFrame::Pong(Pong { nonce })),
            Inbound::Pong(_) => {}
            Inbound::Typing(t) => self.on_typing(t.conversation, t.active).await,
            Inbound::Request(request) => {
                if self.draining {
                    let id = request.request_id();
                    self.push(ServerFrame::Error(Error {
                        request_id: id,
                        code: ErrorCode::Unavailable,
                        message: "server shutting down; retry on a new connection".into(),
                        retry_after_ms: Some(1000),
                    }));
                    self.proto.finished();
                } else {
                    self.on_request(request).await;
                }
            }
        }
        None
    }

    async fn on_hello(&mut self, hello: Hello, version: ProtocolVersion) -> Option<CloseReason> {
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
        self.presence_on_connect(user, first, &heads).await;
        metrics::counter!(crate::metrics::HANDSHAKES, "result" => "ok").increment(1);
        tracing::info!(client = %hello.client, "session established");
        None
    }

    /// Replays what each resume cursor missed, and what was committed while the
    /// session was being registered, then sends `replay_done`.
    async fn replay(&mut self, resume: &[Cursor], welcome_heads: &[Cursor], now_heads: &[Cursor]) {
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
                Ok((messages, more)) => {
                    if more {
                        truncated.push(conversation);
                    }
                    for m in messages {
                        self.push(ServerFrame::Message(m));
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
    async fn presence_on_connect(&self, user: UserId, first: bool, heads: &[Cursor]) {
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

    /// The conversation if this session's user is a member.
    async fn membership(
        &self,
        conversation: ConversationId,
    ) -> Result<crate::hub::CachedConversation, (ErrorCode, &'static str)> {
        let user = self
            .user
            .ok_or((ErrorCode::HandshakeRequired, "no session"))?;
        match self.app.hub().conversation(conversation).await {
            Ok(Some(c)) if c.has(user) => Ok(c),
            Ok(_) => Err((ErrorCode::NotFound, "no such conversation")),
            Err(e) => {
                tracing::error!(error = %e, "membership lookup failed");
                Err((ErrorCode::Unavailable, "storage is unavailable"))
            }
        }
    }

    async fn on_typing(&mut self, conversation: ConversationId, active: bool) {
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

    async fn on_request(&mut self, request: ClientFrame) {
        let request_id = request.request_id();
        match request {
            ClientFrame::Send(send) => {
                let c = match self.membership(send.conversation).await {
                    Ok(c) => c,
                    Err((code, message)) => return self.fail(request_id, code, message),
                };
                if c.encrypted && matches!(send.body, Body::Text(_)) {
                    return self.fail(
                        request_id,
                        ErrorCode::EncryptionRequired,
                        "this conversation is end-to-end encrypted",
                    );
                }
                let Some(user) = self.user else { return };
                let limits = self.app.limits();
                if let Err(wait) = self.app.hub().take_send_token(
                    user,
                    limits.send_rate,
                    limits.send_burst,
                    Instant::now(),
                ) {
                    self.proto.finished();
                    metrics::counter!(crate::metrics::RATE_LIMITED, "kind" => "send").increment(1);
                    self.push(ServerFrame::Error(Error {
                        request_id,
                        code: ErrorCode::RateLimited,
                        message: "sending too fast".into(),
                        retry_after_ms: Some(
                            u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1),
                        ),
                    }));
                    return;
                }
                // After the rate limit: this check reads the database.
                if let (true, Body::Encrypted(envelope)) = (c.encrypted, &send.body)
                    && let Err((code, message)) = self
                        .check_recipients(user, send.conversation, envelope)
                        .await
                {
                    return self.fail(request_id, code, message);
                }
                let message = NewMessage {
                    conversation: send.conversation,
                    sender: user,
                    client_msg_id: send.client_msg_id,
                    body: send.body,
                    sent_at: Timestamp::now(),
                };
                let rid = send.request_id;
                match self.app.appender().enqueue(message).await {
                    Ok(answer) => self
                        .pending
                        .push_back(Box::pin(async move { (rid, answer.await.ok()) })),
                    Err(_) => {
                        self.fail(request_id, ErrorCode::Unavailable, "storage is unavailable")
                    }
                }
            }
            ClientFrame::History(h) => {
                let kind = PageKind::History(h.before);
                self.serve_page(h.request_id, h.conversation, kind, h.limit)
                    .await;
            }
            ClientFrame::Sync(s) => {
                let kind = PageKind::Sync(s.after);
                self.serve_page(s.request_id, s.conversation, kind, s.limit)
                    .await;
            }
            ClientFrame::MarkRead(m) => {
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
            ClientFrame::Hello(_)
            | ClientFrame::Typing(_)
            | ClientFrame::Ping(_)
            | ClientFrame::Pong(_) => {}
        }
    }

    /// Answers `history` (newest first, before a seq) or `sync` (oldest first, after a
    /// seq) for members.
    async fn serve_page(
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

    /// An encrypted conversation's envelope must come from one of the sender's devices
    /// and be sealed for exactly the members' devices (PROTOCOL.md §5.1).
    async fn check_recipients(
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

    fn fail(&mut self, request_id: Option<RequestId>, code: ErrorCode, message: &str) {
        self.proto.finished();
        self.error(request_id, code, message);
    }

    /// The page as a frame whose encoding fits the client's frame limit, cut in half
    /// until it does; the encoding made to measure it is the one that is sent.
    fn fit_page(
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

    fn answer_send(&mut self, request_id: RequestId, result: Option<AppendResult>) {
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

    /// Unregisters and announces offline when the last session of the user ends.
    async fn finish(&mut self) {
        let Some(user) = self.user else { return };
        if !self.registered {
            return;
        }
        self.registered = false;
        let last = self.app.hub().unregister(user, self.handle.id);
        if last {
            let now = Timestamp::now();
            if let Err(e) = self.app.store().set_last_seen(user, now).await {
                tracing::warn!(error = %e, "recording last seen failed");
            }
            self.app.hub().announce_offline(user, now, true).await;
        }
    }
}
