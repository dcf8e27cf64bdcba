//! One session per connection, written once for every transport.
//!
//! A transport supplies a [`FrameReader`] (complete frame payloads in) and a
//! [`FrameWriter`] (queued frames out); everything else is here: the handshake within
//! its deadline, request validation (chat-proto's `ServerSession`), sends through the
//! group-commit appender with acks in request order, history and sync pages cut to the
//! frame limit, receipts, typing, presence, heartbeats, slow-consumer handling and
//! draining on shutdown.

mod hello;
mod pages;
mod receipts;
mod send;
mod typing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proto::codec;
use chat_proto::error::{DecodeError, ErrorCode};
use chat_proto::frame::{ClientFrame, Error, GoAway, GoAwayReason, Ping, Pong, ServerFrame};
use chat_proto::ids::{ConversationId, RequestId, Seq, Timestamp, UserId};
use chat_proto::session::{Inbound, Rejection, ServerSession, Timeout};
use chat_proto::version::ProtocolVersion;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;

use crate::app::App;
use crate::hub::{SessionHandle, SharedFrame};
use crate::outbox::{Outbox, SlowFlag, Taken};
use crate::services::Denied;
use crate::store::append::AppendResult;
use crate::wire::{
    CloseReason, Datagrams, FrameReader, FrameWriter, Outbound, ReadError, ReadEvent, Wire,
};

/// The error code and message a session answers a refusal of the service layer with.
fn refusal(denied: &Denied) -> (ErrorCode, &'static str) {
    match denied {
        Denied::NotFound => (ErrorCode::NotFound, "no such conversation"),
        Denied::EncryptionRequired => (
            ErrorCode::EncryptionRequired,
            "this conversation is end-to-end encrypted",
        ),
        Denied::RateLimited(_) => (ErrorCode::RateLimited, "sending too fast"),
        Denied::DirectMembers | Denied::DirectLeave | Denied::NotOwner | Denied::GroupFull(_) => (
            ErrorCode::InvalidRequest,
            "not allowed in this conversation",
        ),
        Denied::Store(e) => {
            tracing::error!(error = %e, "storage failed while checking a request");
            (ErrorCode::Unavailable, "storage is unavailable")
        }
    }
}

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
pub(super) enum PageKind {
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

    /// The conversation if this session's user is a member.
    async fn membership(
        &self,
        conversation: ConversationId,
    ) -> Result<crate::hub::CachedConversation, (ErrorCode, &'static str)> {
        let user = self
            .user
            .ok_or((ErrorCode::HandshakeRequired, "no session"))?;
        crate::services::conversations::member(&self.app, user, conversation)
            .await
            .map_err(|denied| refusal(&denied))
    }

    async fn on_request(&mut self, request: ClientFrame) {
        let _request_id = request.request_id();
        match request {
            ClientFrame::Send(send) => self.on_send(send).await,
            ClientFrame::Relate(relate) => self.on_relate(relate).await,
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
            ClientFrame::MarkRead(m) => self.on_mark_read(m).await,
            ClientFrame::Hello(_)
            | ClientFrame::Typing(_)
            | ClientFrame::Ping(_)
            | ClientFrame::Pong(_) => {}
        }
    }

    fn fail(&mut self, request_id: Option<RequestId>, code: ErrorCode, message: &str) {
        self.proto.finished();
        self.error(request_id, code, message);
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
