//! The background task behind a [`Client`](crate::Client): owns the sans-IO session,
//! the current link, reconnects and token refreshes. Handles talk to it by commands.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chat_proto::body::Body;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{Ack, Cursor, Page};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId, Seq};
use chat_proto::session::{
    self as proto, ClientSession, ConnectionState, DisconnectReason, PendingKind, RequestError,
    StateError,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::Event;
use crate::api::Auth;
use crate::config::{Backoff, Target};
use crate::error::{Error, Result};
use crate::transport::{self, Incoming, Link};

/// Events kept for the first subscriber when none has subscribed yet.
const MAX_BACKLOG: usize = 65_536;
/// A rate-limited send without a hint is retried after this long.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);

pub(crate) enum Command {
    Send {
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        body: Body,
        reply: oneshot::Sender<Result<Ack>>,
    },
    History {
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u16,
        reply: oneshot::Sender<Result<Page>>,
    },
    MarkRead {
        conversation: ConversationId,
        seq: Seq,
        reply: oneshot::Sender<Result<()>>,
    },
    Typing {
        conversation: ConversationId,
        active: bool,
    },
    Subscribe(mpsc::UnboundedSender<Event>),
    Cursors(oneshot::Sender<Vec<Cursor>>),
    Close(oneshot::Sender<()>),
}

pub(crate) enum Waiter {
    Send(oneshot::Sender<Result<Ack>>),
    History(oneshot::Sender<Result<Page>>),
    Done(oneshot::Sender<Result<()>>),
}

impl Waiter {
    fn fail(self, error: Error) {
        match self {
            Waiter::Send(tx) => drop(tx.send(Err(error))),
            Waiter::History(tx) => drop(tx.send(Err(error))),
            Waiter::Done(tx) => drop(tx.send(Err(error))),
        }
    }
}

pub(crate) struct Retry {
    at: Instant,
    conversation: ConversationId,
    client_msg_id: ClientMsgId,
    body: Body,
    reply: oneshot::Sender<Result<Ack>>,
}

/// How one connection ended.
enum Outcome {
    /// The application closed the client.
    Shutdown(Option<oneshot::Sender<()>>),
    /// The login is gone for good.
    Fatal(Error),
    /// Reconnect.
    Lost {
        error: Error,
        reached_live: bool,
        retry_after: Option<Duration>,
    },
}

pub(crate) struct Driver {
    pub(crate) session: ClientSession,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) target: Target,
    pub(crate) quic: Option<quinn::Endpoint>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) crypto: Arc<crate::e2e::Crypto>,
    pub(crate) status: watch::Sender<ConnectionState>,
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    /// Answers `connect()` once the first handshake completes or fails.
    pub(crate) first: Option<oneshot::Sender<Result<()>>>,
    pub(crate) subscribers: Vec<mpsc::UnboundedSender<Event>>,
    pub(crate) backlog: VecDeque<Event>,
    pub(crate) subscribed: bool,
    pub(crate) waiters: HashMap<RequestId, Waiter>,
    pub(crate) retries: Vec<Retry>,
}

fn tokio_instant(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut delay = Duration::ZERO;
        let closer = loop {
            if !delay.is_zero() {
                match self.wait(delay).await {
                    Ok(()) => {}
                    Err(closer) => break closer,
                }
            }
            match self.connect_once().await {
                Outcome::Shutdown(closer) => break closer,
                Outcome::Fatal(error) => {
                    self.stop(error);
                    return;
                }
                Outcome::Lost {
                    error,
                    reached_live,
                    retry_after,
                } => {
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Err(error));
                        self.stop(Error::Closed);
                        return;
                    }
                    if reached_live {
                        attempt = 0;
                    }
                    delay = retry_after.unwrap_or_else(|| self.backoff.delay(attempt));
                    attempt = attempt.saturating_add(1);
                    tracing::info!(%error, ?delay, attempt, "connection lost; reconnecting");
                    self.emit(Event::Disconnected {
                        reason: error.to_string(),
                        retry_in: delay,
                    });
                }
            }
        };
        self.stop(Error::Closed);
        if let Some(closer) = closer {
            let _ = closer.send(());
        }
    }

    /// Sleeps for `delay` while still taking requests (they queue in the session).
    async fn wait(&mut self, delay: Duration) -> Result<(), Option<oneshot::Sender<()>>> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return Err(None),
                    Some(Command::Close(tx)) => return Err(Some(tx)),
                    Some(c) => self.command(c),
                },
                () = tokio::time::sleep_until(until) => return Ok(()),
            }
        }
    }

    async fn connect_once(&mut self) -> Outcome {
        let token = match self.auth.access_token().await {
            Ok(t) => t,
            Err(Error::Unauthorized) => return Outcome::Fatal(Error::Unauthorized),
            Err(error) => {
                return Outcome::Lost {
                    error,
                    reached_live: false,
                    retry_after: None,
                };
            }
        };
        let _ = self.status.send(ConnectionState::Handshaking);
        let link = match tokio::time::timeout(
            self.connect_timeout,
            transport::connect(&self.target, self.quic.as_ref()),
        )
        .await
        {
            Ok(Ok(link)) => link,
            Ok(Err(error)) => {
                return Outcome::Lost {
                    error,
                    reached_live: false,
                    retry_after: None,
                };
            }
            Err(_) => {
                return Outcome::Lost {
                    error: Error::Timeout,
                    reached_live: false,
                    retry_after: None,
                };
            }
        };
        tracing::debug!(target = ?self.target, "transport up; handshaking");
        if self
            .session
            .connect(token.clone(), std::time::Instant::now())
            .is_err()
        {
            return Outcome::Shutdown(None);
        }
        self.drive(link, &token).await
    }

    /// Runs one connection until it ends.
    async fn drive(&mut self, mut link: Link, token: &str) -> Outcome {
        let mut reached_live = false;
        let mut retry_after = None;
        let mut transport_reason: Option<String> = None;
        let mut refresh_at = tokio_instant(self.auth.refresh_due());
        // Reading happens here, one read in flight across every round of the select
        // below: no task or channel between the socket and the session.
        let mut read_ended = false;
        let mut reading = std::pin::pin!(transport::read(
            link.reader.take().unwrap_or_else(transport::Reader::ended)
        ));
        loop {
            while let Some(frame) = self.session.poll_transmit() {
                link.send(frame);
            }
            while let Some(event) = self.session.poll_event() {
                match event {
                    proto::Event::Connected(welcome) => {
                        let _ = self.status.send(ConnectionState::Replaying);
                        tracing::info!(user = %welcome.user.get(), "connected");
                        if let Some(first) = self.first.take() {
                            let _ = first.send(Ok(()));
                        }
                        self.emit(Event::Connected { user: welcome.user });
                    }
                    proto::Event::Live => {
                        reached_live = true;
                        let _ = self.status.send(ConnectionState::Live);
                        self.emit(Event::Live);
                    }
                    proto::Event::GoAway(go_away) => {
                        let ms = u64::from(go_away.reconnect_after_ms);
                        // Spread reconnections over the suggested delay.
                        let jittered = rand::random_range(ms / 2..=ms.max(1));
                        retry_after = Some(Duration::from_millis(jittered));
                        tracing::info!(reason = ?go_away.reason, "server going away");
                    }
                    proto::Event::Disconnected(reason) => {
                        let error = match reason {
                            DisconnectReason::Server(e) if e.code == ErrorCode::InvalidToken => {
                                match self.auth.refresh(token).await {
                                    Ok(_) => retry_after = retry_after.or(Some(Duration::ZERO)),
                                    Err(Error::Unauthorized) => {
                                        return Outcome::Fatal(Error::Unauthorized);
                                    }
                                    Err(e) => tracing::warn!(error = %e, "token refresh failed"),
                                }
                                Error::server(e)
                            }
                            DisconnectReason::Server(e) => Error::server(e),
                            DisconnectReason::Transport => Error::Unreachable(
                                transport_reason
                                    .take()
                                    .unwrap_or_else(|| "connection closed".into()),
                            ),
                            DisconnectReason::HandshakeTimeout | DisconnectReason::IdleTimeout => {
                                Error::Timeout
                            }
                            DisconnectReason::ProtocolViolation(what) => Error::Protocol(what),
                            DisconnectReason::Closed => Error::Closed,
                        };
                        let _ = self.status.send(ConnectionState::Disconnected);
                        drop(link);
                        return Outcome::Lost {
                            error,
                            reached_live,
                            retry_after,
                        };
                    }
                    other => self.on_event(other),
                }
            }
            let timer = self.session.poll_timeout().map(Instant::from_std);
            let retry_at = self.retries.iter().map(|r| r.at).min();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None => return self.close(link, None).await,
                    Some(Command::Close(tx)) => return self.close(link, Some(tx)).await,
                    Some(c) => self.command(c),
                },
                (reader, incoming) = reading.as_mut(), if !read_ended => match incoming {
                    Incoming::Frame(frame) => {
                        reading.set(transport::read(reader));
                        self.session.handle(frame, std::time::Instant::now());
                    }
                    Incoming::Closed(reason) => {
                        // Nothing more to read: the finished read is not polled again.
                        read_ended = true;
                        transport_reason = Some(reason);
                        self.session.transport_closed();
                    }
                },
                () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                    self.session.handle_timeout(std::time::Instant::now());
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.resubmit_due();
                }
                () = tokio::time::sleep_until(refresh_at) => {
                    // Renew in the background; the next check is after the new expiry
                    // (or in a minute if this refresh fails).
                    let auth = self.auth.clone();
                    tokio::spawn(async move {
                        if let Err(e) = auth.access_token().await {
                            tracing::warn!(error = %e, "token refresh failed");
                        }
                    });
                    refresh_at = Instant::now() + crate::api::REFRESH_MARGIN;
                }
            }
            if refresh_at <= Instant::now() + crate::api::REFRESH_MARGIN {
                let due = tokio_instant(self.auth.refresh_due());
                if due > refresh_at {
                    refresh_at = due;
                }
            }
        }
    }

    async fn close(&mut self, link: Link, closer: Option<oneshot::Sender<()>>) -> Outcome {
        self.session.close();
        while let Some(frame) = self.session.poll_transmit() {
            link.send(frame);
        }
        link.close().await;
        Outcome::Shutdown(closer)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Send {
                conversation,
                client_msg_id,
                body,
                reply,
            } => {
                let queued = self.session.send(conversation, client_msg_id, body);
                self.wait_for(queued, Waiter::Send(reply));
            }
            Command::History {
                conversation,
                before,
                limit,
                reply,
            } => {
                let queued = self.session.history(conversation, before, limit);
                self.wait_for(queued, Waiter::History(reply));
            }
            Command::MarkRead {
                conversation,
                seq,
                reply,
            } => {
                let queued = self.session.mark_read(conversation, seq);
                self.wait_for(queued, Waiter::Done(reply));
            }
            Command::Typing {
                conversation,
                active,
            } => {
                self.session.set_typing(conversation, active);
            }
            Command::Subscribe(tx) => {
                if !self.subscribed {
                    self.subscribed = true;
                    for event in self.backlog.drain(..) {
                        let _ = tx.send(event);
                    }
                }
                self.subscribers.push(tx);
            }
            Command::Cursors(tx) => drop(tx.send(self.session.cursors())),
            Command::Close(_) => unreachable!("handled by the loops"),
        }
    }

    /// Keeps `waiter` for the answer to a queued request, or fails it at once.
    fn wait_for(&mut self, queued: Result<RequestId, StateError>, waiter: Waiter) {
        match queued {
            Ok(id) => {
                self.waiters.insert(id, waiter);
            }
            Err(_) => waiter.fail(Error::Closed),
        }
    }

    fn on_event(&mut self, event: proto::Event) {
        match event {
            proto::Event::Message(mut message) => match self.crypto.open(&mut message) {
                Ok(()) => self.emit(Event::Message(message)),
                Err(reason) => self.emit(Event::Undecryptable { message, reason }),
            },
            proto::Event::Typing(t) => self.emit(Event::Typing(t)),
            proto::Event::Presence(p) => self.emit(Event::Presence(p)),
            proto::Event::Receipt(r) => self.emit(Event::Receipt(r)),
            proto::Event::Membership(m) => {
                self.crypto.members_changed(m.conversation);
                self.emit(Event::Membership(m))
            }
            proto::Event::Notice(e) => self.emit(Event::Notice(Error::server(e))),
            proto::Event::Acked(ack) => {
                if let Some(Waiter::Send(tx)) = self.waiters.remove(&ack.request_id) {
                    let _ = tx.send(Ok(ack));
                }
            }
            proto::Event::HistoryPage(mut page) => {
                for message in &mut page.messages {
                    // What cannot be opened keeps its envelope.
                    let _ = self.crypto.open(message);
                }
                if let Some(Waiter::History(tx)) = self.waiters.remove(&page.request_id) {
                    let _ = tx.send(Ok(page));
                }
            }
            proto::Event::Done(id) => {
                if let Some(Waiter::Done(tx)) = self.waiters.remove(&id) {
                    let _ = tx.send(Ok(()));
                }
            }
            proto::Event::RequestFailed {
                request_id,
                kind,
                error,
            } => {
                let Some(waiter) = self.waiters.remove(&request_id) else {
                    return;
                };
                match (error, kind, waiter) {
                    (
                        RequestError::Server(e),
                        PendingKind::Send {
                            conversation,
                            client_msg_id,
                            body,
                        },
                        Waiter::Send(reply),
                    ) if e.code == ErrorCode::RateLimited => {
                        // Over the send rate: try again when the server says, with the
                        // same idempotency key.
                        let wait = e
                            .retry_after_ms
                            .map_or(DEFAULT_RETRY, |ms| Duration::from_millis(ms.into()));
                        self.retries.push(Retry {
                            at: Instant::now() + wait,
                            conversation,
                            client_msg_id,
                            body,
                            reply,
                        });
                    }
                    (RequestError::Server(e), _, waiter) => waiter.fail(Error::server(e)),
                    (RequestError::Closed, _, waiter) => waiter.fail(Error::Closed),
                }
            }
            proto::Event::Connected(_)
            | proto::Event::Live
            | proto::Event::GoAway(_)
            | proto::Event::Disconnected(_) => {}
        }
    }

    fn resubmit_due(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.retries = later;
        for r in due {
            self.command(Command::Send {
                conversation: r.conversation,
                client_msg_id: r.client_msg_id,
                body: r.body,
                reply: r.reply,
            });
        }
    }

    fn emit(&mut self, event: Event) {
        if !self.subscribed {
            if self.backlog.len() == MAX_BACKLOG {
                self.backlog.pop_front();
            }
            self.backlog.push_back(event);
            return;
        }
        self.subscribers.retain(|s| !s.is_closed());
        // Clones for all but the last subscriber, which gets the event itself.
        if let Some((last, others)) = self.subscribers.split_last() {
            for s in others {
                let _ = s.send(event.clone());
            }
            let _ = last.send(event);
        }
    }

    /// Ends the client: everything pending fails with `error`.
    fn stop(&mut self, error: Error) {
        if !matches!(error, Error::Closed) {
            tracing::warn!(%error, "client stopped");
            self.emit(Event::Stopped(error.clone()));
        }
        self.session.close();
        while self.session.poll_event().is_some() {}
        for (_, waiter) in self.waiters.drain() {
            waiter.fail(error.clone());
        }
        for r in self.retries.drain(..) {
            let _ = r.reply.send(Err(error.clone()));
        }
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(error));
        }
        let _ = self.status.send(ConnectionState::Closed);
        self.subscribers.clear();
        if let Some(endpoint) = &self.quic {
            endpoint.close(0u32.into(), b"");
        }
    }
}
