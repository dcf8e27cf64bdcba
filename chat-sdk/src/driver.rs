//! The background task behind a [`Client`](crate::Client): owns the sans-IO session,
//! the current link, reconnects and token refreshes. Handles talk to it by commands.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chat_proto::body::Body;
use chat_proto::entry::Relation;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{Ack, Cursor, EntryPage};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId, Seq};
use chat_proto::session::{
    self as proto, ClientSession, ConnectionState, DisconnectReason, PendingKind, RequestError,
    StateError,
};
use chat_proto::version::ProtocolVersion;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::Auth;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::transport::Target;
use crate::transport::{self, Incoming, Link};

/// Reconnect delays: exponential from `initial` up to `max`, each randomized to
/// between half and all of its value so that clients do not return in lockstep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        exp.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// Events kept for the first subscriber when none has subscribed yet.
const MAX_BACKLOG: usize = 65_536;
/// Most frames handled from one wake-up of the reader before the driver looks at its
/// commands and timers again.
const READ_AHEAD: usize = 64;
/// A rate-limited send without a hint is retried after this long.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);

pub(crate) enum Command {
    Send {
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        what: Outgoing,
        reply: oneshot::Sender<Result<Ack>>,
    },
    History {
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u16,
        reply: oneshot::Sender<Result<EntryPage>>,
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

/// What a send writes to a conversation's log.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message.
    Body(Body),
    /// A relation (protocol 1.3).
    Relation(Relation),
}

pub(crate) enum Waiter {
    Send(oneshot::Sender<Result<Ack>>),
    History(oneshot::Sender<Result<EntryPage>>),
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

/// The application's inline event handler ([`crate::ClientBuilder::on_event`]).
pub(crate) struct Handler(pub(crate) Box<dyn FnMut(&Event) + Send>);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

pub(crate) struct Retry {
    at: Instant,
    conversation: ConversationId,
    client_msg_id: ClientMsgId,
    what: Outgoing,
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
    pub(crate) handler: Option<Handler>,
    pub(crate) subscribers: Vec<mpsc::UnboundedSender<Event>>,
    pub(crate) backlog: VecDeque<Event>,
    pub(crate) subscribed: bool,
    pub(crate) waiters: HashMap<RequestId, Waiter>,
    pub(crate) retries: Vec<Retry>,
}

/// A deadline the driver's select waits on, moved on the timer wheel only when it must
/// fire sooner. A later deadline is left to fire early and be re-armed (every handler
/// checks what is actually due), so a deadline that moves with every frame, like the
/// idle timer, costs no timer update per frame.
struct Alarm {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Alarm {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }

    /// Makes the alarm go off no later than `deadline` (`None`: not at all).
    fn arm(&mut self, deadline: Option<Instant>) {
        match (deadline, self.armed) {
            (None, _) => self.armed = None,
            (Some(at), Some(armed)) if armed <= at => {}
            (Some(at), _) => {
                self.sleep.as_mut().reset(at);
                self.armed = Some(at);
            }
        }
    }

    /// Waits for the armed deadline; pending forever when disarmed.
    async fn ring(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
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
        let (mut timer, mut retry, mut refresh) = (Alarm::new(), Alarm::new(), Alarm::new());
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
                        if welcome.version >= ProtocolVersion::DATAGRAMS {
                            link.use_datagrams();
                        }
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
            timer.arm(self.session.poll_timeout().map(Instant::from_std));
            retry.arm(self.retries.iter().map(|r| r.at).min());
            refresh.arm(Some(refresh_at));
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None => return self.close(link, None).await,
                    Some(Command::Close(tx)) => return self.close(link, Some(tx)).await,
                    Some(c) => self.command(c),
                },
                (reader, incoming) = reading.as_mut(), if !read_ended => {
                    // The frames a server batch brought in with this one are already
                    // buffered: handle them now rather than one round of the select
                    // each. The next read is always left in flight.
                    let now = std::time::Instant::now();
                    let mut read = (reader, incoming);
                    let mut handled = 0;
                    loop {
                        let (reader, incoming) = read;
                        match incoming {
                            Incoming::Frame(frame) => {
                                reading.set(transport::read(reader));
                                self.session.handle(frame, now);
                            }
                            Incoming::Closed(reason) => {
                                // Nothing more to read: the finished read is not
                                // polled again.
                                read_ended = true;
                                transport_reason = Some(reason);
                                self.session.transport_closed();
                                break;
                            }
                        }
                        handled += 1;
                        if handled == READ_AHEAD {
                            break;
                        }
                        // Polled without a waker: if nothing is buffered, the select
                        // polls it again with the real one.
                        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                        match reading.as_mut().poll(&mut cx) {
                            std::task::Poll::Ready(next) => read = next,
                            std::task::Poll::Pending => break,
                        }
                    }
                }
                () = timer.ring() => {
                    self.session.handle_timeout(std::time::Instant::now());
                }
                () = retry.ring() => {
                    self.resubmit_due();
                }
                () = refresh.ring() => {
                    let now = Instant::now();
                    let due = tokio_instant(self.auth.refresh_due());
                    if due > now {
                        // Renewed meanwhile (by an earlier refresh or an API call).
                        refresh_at = due;
                    } else if refresh_at <= now {
                        // Renew in the background; the next check is in a minute, when
                        // the new expiry (or a failed refresh) is known.
                        let auth = self.auth.clone();
                        tokio::spawn(async move {
                            if let Err(e) = auth.access_token().await {
                                tracing::warn!(error = %e, "token refresh failed");
                            }
                        });
                        refresh_at = now + crate::api::REFRESH_MARGIN;
                    }
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
                what,
                reply,
            } => {
                let queued = match what {
                    Outgoing::Body(body) => self.session.send(conversation, client_msg_id, body),
                    Outgoing::Relation(relation) => {
                        self.session.relate(conversation, client_msg_id, relation)
                    }
                };
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
            proto::Event::Entry(mut entry) => match self.crypto.open(&mut entry) {
                Ok(()) => self.emit(Event::Entry(entry)),
                Err(reason) => self.emit(Event::Undecryptable { entry, reason }),
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
                for entry in &mut page.entries {
                    // What cannot be opened keeps its envelope.
                    let _ = self.crypto.open(entry);
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
                let outgoing = match kind {
                    PendingKind::Send {
                        conversation,
                        client_msg_id,
                        body,
                    } => Some((conversation, client_msg_id, Outgoing::Body(body))),
                    PendingKind::Relate {
                        conversation,
                        client_msg_id,
                        relation,
                    } => Some((conversation, client_msg_id, Outgoing::Relation(relation))),
                    _ => None,
                };
                match (error, outgoing, waiter) {
                    (
                        RequestError::Server(e),
                        Some((conversation, client_msg_id, what)),
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
                            what,
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
                what: r.what,
                reply: r.reply,
            });
        }
    }

    fn emit(&mut self, event: Event) {
        if let Some(Handler(handler)) = &mut self.handler {
            // The client then counts as subscribed: nothing is kept for later streams.
            handler(&event);
        }
        if !self.subscribed {
            if self.backlog.len() == MAX_BACKLOG {
                self.backlog.pop_front();
            }
            self.backlog.push_back(event);
            return;
        }
        // Clones for all but the last subscriber, which gets the event itself; a
        // subscriber whose receiver is gone is dropped when a send to it fails.
        let last = self.subscribers.len().saturating_sub(1);
        let mut event = Some(event);
        let mut index = 0;
        self.subscribers.retain(|s| {
            let e = if index == last {
                event.take()
            } else {
                event.clone()
            };
            index += 1;
            e.is_some_and(|e| s.send(e).is_ok())
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the alarm rings within `within` of (paused) time.
    async fn rings_within(alarm: &mut Alarm, within: Duration) -> bool {
        tokio::time::timeout(within, alarm.ring()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_rings_at_its_earliest_deadline_and_is_rearmed_after() {
        let start = Instant::now();
        let mut alarm = Alarm::new();
        assert!(
            !rings_within(&mut alarm, Duration::from_secs(3600)).await,
            "disarmed: never"
        );

        let start = start + Duration::from_secs(3600);
        alarm.arm(Some(start + Duration::from_secs(10)));
        // A later deadline (the idle timer moving with every frame) leaves the
        // armed one: the alarm goes off early and the caller finds nothing due.
        alarm.arm(Some(start + Duration::from_secs(30)));
        assert!(rings_within(&mut alarm, Duration::from_secs(11)).await);
        assert_eq!(Instant::now(), start + Duration::from_secs(10));
        assert_eq!(alarm.armed, None, "spent once it rang");

        // Re-armed at the current deadline it rings then, not again at once.
        alarm.arm(Some(start + Duration::from_secs(30)));
        assert!(!rings_within(&mut alarm, Duration::from_secs(19)).await);
        assert!(rings_within(&mut alarm, Duration::from_secs(2)).await);
        assert_eq!(Instant::now(), start + Duration::from_secs(30));

        // An earlier deadline moves it forward.
        alarm.arm(Some(start + Duration::from_secs(100)));
        alarm.arm(Some(start + Duration::from_secs(40)));
        assert!(rings_within(&mut alarm, Duration::from_secs(11)).await);
        assert_eq!(Instant::now(), start + Duration::from_secs(40));

        // Disarming silences it even with a deadline set before.
        alarm.arm(Some(start + Duration::from_secs(50)));
        alarm.arm(None);
        assert!(!rings_within(&mut alarm, Duration::from_secs(60)).await);
    }
}
