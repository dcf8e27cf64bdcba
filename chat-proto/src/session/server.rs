//! The protocol's half of a server connection: allowed frames per state, request
//! validation against the announced limits (PROTOCOL.md §9.2), and the connection's
//! timers (handshake deadline, heartbeat pings, idle timeout, typing relay interval),
//! driven by the times the IO shell passes in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::body::{Body, is_media_type};
use crate::entry::{Reaction, Relation};
use crate::error::ErrorCode;
use crate::frame::{ClientFrame, Error, Hello, Ping, Pong, ServerFrame, SetTyping};
use crate::ids::{ConversationId, RequestId, UserId};
use crate::limits::{
    MAX_CLIENT_NAME, MAX_FILE_NAME, MAX_FILES, MAX_MEDIA_TYPE, MAX_REACTION, MAX_RESUME_CURSORS,
    MAX_THUMBNAIL, MAX_TOKEN, ServerLimits,
};
use crate::version::ProtocolVersion;

/// Where a server connection stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ServerState {
    /// Waiting for `hello`.
    AwaitingHello,
    /// `hello` received; the server is checking the token.
    Authenticating {
        /// The version both sides will speak.
        version: ProtocolVersion,
    },
    /// `welcome` sent; requests are served.
    Established {
        /// The authenticated user.
        user: UserId,
        /// The negotiated version.
        version: ProtocolVersion,
    },
    /// A fatal error was sent; nothing more is read.
    Closed,
}

/// A client frame the server should act on, already validated.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Inbound {
    /// Check `hello.token`, then call [`ServerSession::established`] and send `welcome`.
    Hello {
        /// The client's handshake.
        hello: Hello,
        /// The version the server will answer with.
        version: ProtocolVersion,
    },
    /// A request (`send`, `history`, `sync`, `mark_read`) to answer; call
    /// [`ServerSession::finished`] once its answer is queued.
    Request(ClientFrame),
    /// A typing update to fan out.
    Typing(SetTyping),
    /// Answer with `pong`.
    Ping(Ping),
    /// The peer is alive.
    Pong(Pong),
}

/// A client frame the server refuses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rejection {
    /// The request refused, if the frame was one.
    pub request_id: Option<RequestId>,
    /// Why.
    pub code: ErrorCode,
    /// Explanation for the client's logs.
    pub message: String,
    /// Whether the server must close the connection after sending the error.
    pub fatal: bool,
}

impl Rejection {
    fn new(request_id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            code,
            message: message.into(),
            fatal: code.is_fatal(),
        }
    }

    /// The `error` frame to send.
    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::Error(Error {
            request_id: self.request_id,
            code: self.code,
            message: self.message.clone(),
            retry_after_ms: None,
        })
    }
}

/// What a timer that fired asks the server to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Timeout {
    /// The peer has been quiet for a heartbeat interval: send this `ping`.
    Ping(Ping),
    /// The handshake deadline or the idle timeout passed: send this fatal error and
    /// close (the session is now [`ServerState::Closed`]).
    Close(Rejection),
}

/// Minimum interval between typing starts relayed per conversation (§6.1.5).
pub const TYPING_INTERVAL: Duration = Duration::from_millis(300);

/// Validates the frames of one server connection.
#[derive(Debug)]
pub struct ServerSession {
    state: ServerState,
    limits: ServerLimits,
    server_version: ProtocolVersion,
    in_flight: u32,
    /// When `hello` must have been answered by; `None` until [`ServerSession::opened`].
    handshake_deadline: Option<Instant>,
    last_heard: Option<Instant>,
    ping_outstanding: bool,
    next_nonce: u32,
    /// Per conversation, the last typing update relayed: when, and whether a start.
    typing: HashMap<ConversationId, (Instant, bool)>,
}

impl ServerSession {
    /// A connection that has just opened, enforcing `limits`.
    pub fn new(limits: ServerLimits) -> Self {
        Self {
            state: ServerState::AwaitingHello,
            limits,
            server_version: ProtocolVersion::CURRENT,
            in_flight: 0,
            handshake_deadline: None,
            last_heard: None,
            ping_outstanding: false,
            next_nonce: 1,
            typing: HashMap::new(),
        }
    }

    /// The transport opened at `now`; `hello` must arrive within `handshake_timeout`.
    pub fn opened(&mut self, now: Instant, handshake_timeout: Duration) {
        self.handshake_deadline = Some(now + handshake_timeout);
        self.last_heard = Some(now);
    }

    /// Something arrived from the peer at `now` (any frame, datagram or transport
    /// ping): it is alive, and an outstanding ping is answered.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        self.ping_outstanding = false;
    }

    /// When [`ServerSession::handle_timeout`] must be called next; `None` when no
    /// timer runs (before [`ServerSession::opened`], or once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::AwaitingHello | ServerState::Authenticating { .. } => {
                self.handshake_deadline
            }
            ServerState::Established { .. } => {
                let last = self.last_heard?;
                Some(if self.ping_outstanding {
                    last + self.idle_timeout()
                } else {
                    last + self.heartbeat()
                })
            }
            ServerState::Closed => None,
        }
    }

    /// Advances the timers to `now`: the handshake deadline, a heartbeat `ping` after
    /// a quiet interval, and the idle timeout (counted from the last frame heard) once
    /// that ping went unanswered.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Timeout> {
        match self.state {
            ServerState::AwaitingHello | ServerState::Authenticating { .. } => {
                if self.handshake_deadline.is_some_and(|d| now >= d) {
                    return Some(self.close(
                        ErrorCode::HandshakeTimeout,
                        "no hello within the handshake deadline",
                    ));
                }
                None
            }
            ServerState::Established { .. } => {
                let last = self.last_heard?;
                if self.ping_outstanding && now >= last + self.idle_timeout() {
                    return Some(
                        self.close(ErrorCode::IdleTimeout, "no frame within the idle timeout"),
                    );
                }
                if !self.ping_outstanding && now >= last + self.heartbeat() {
                    self.ping_outstanding = true;
                    let nonce = self.next_nonce;
                    self.next_nonce = self.next_nonce.wrapping_add(1);
                    return Some(Timeout::Ping(Ping { nonce }));
                }
                None
            }
            ServerState::Closed => None,
        }
    }

    /// Whether a typing update of the user in `conversation` should be relayed to the
    /// other members: a start at most once per [`TYPING_INTERVAL`] after the last
    /// update relayed, and a stop only when it ends a start (repeated stops would reach
    /// every member for nothing). Remembers what was relayed.
    pub fn relay_typing(
        &mut self,
        conversation: ConversationId,
        active: bool,
        now: Instant,
    ) -> bool {
        let last = self.typing.get(&conversation).copied();
        let relay = match (active, last) {
            (true, Some((at, _))) => now.duration_since(at) >= TYPING_INTERVAL,
            (true, None) => true,
            (false, last) => last.is_some_and(|(_, started)| started),
        };
        if relay {
            self.typing.insert(conversation, (now, active));
        }
        relay
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.limits.heartbeat_ms))
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.limits.idle_timeout_ms))
    }

    fn close(&mut self, code: ErrorCode, message: &str) -> Timeout {
        self.state = ServerState::Closed;
        let mut rejection = Rejection::new(None, code, message);
        rejection.fatal = true;
        Timeout::Close(rejection)
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The limits enforced (and announced in `welcome`).
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Requests accepted and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Checks one decoded client frame against the state and limits.
    ///
    /// A fatal rejection moves the session to [`ServerState::Closed`]: the server sends
    /// the error and closes.
    pub fn receive(&mut self, frame: ClientFrame) -> Result<Inbound, Rejection> {
        let established = matches!(self.state, ServerState::Established { .. });
        self.check(frame).map_err(|mut rejection| {
            // Before the handshake completes every error ends the connection.
            if !established {
                rejection.fatal = true;
            }
            if rejection.fatal {
                self.state = ServerState::Closed;
            }
            rejection
        })
    }

    /// Reports an undecodable frame; returns the rejection to send (fatal before the
    /// handshake and for oversized frames).
    pub fn undecodable(&mut self, error: &crate::error::DecodeError) -> Rejection {
        let mut rejection = Rejection::new(None, error.code(), error.to_string());
        if !matches!(self.state, ServerState::Established { .. }) {
            rejection.fatal = true;
        }
        if rejection.fatal {
            self.state = ServerState::Closed;
        }
        rejection
    }

    /// The token in `hello` was valid: the session is established for `user`.
    pub fn established(&mut self, user: UserId) -> Result<ProtocolVersion, Rejection> {
        match self.state {
            ServerState::Authenticating { version } => {
                self.state = ServerState::Established { user, version };
                Ok(version)
            }
            _ => Err(Rejection::new(
                None,
                ErrorCode::ProtocolViolation,
                "no handshake in progress",
            )),
        }
    }

    /// The token in `hello` was refused: returns the fatal rejection to send.
    pub fn refused(&mut self, code: ErrorCode, message: impl Into<String>) -> Rejection {
        self.state = ServerState::Closed;
        let mut rejection = Rejection::new(None, code, message);
        rejection.fatal = true;
        rejection
    }

    /// A request accepted by [`ServerSession::receive`] has been answered.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn check(&mut self, frame: ClientFrame) -> Result<Inbound, Rejection> {
        match self.state {
            ServerState::AwaitingHello => match frame {
                ClientFrame::Hello(hello) => self.check_hello(hello),
                other => Err(Rejection::new(
                    other.request_id(),
                    ErrorCode::HandshakeRequired,
                    format!("expected hello, got {}", other.kind()),
                )),
            },
            ServerState::Authenticating { .. } => Err(Rejection::new(
                frame.request_id(),
                ErrorCode::ProtocolViolation,
                format!("{} sent before welcome", frame.kind()),
            )),
            ServerState::Closed => Err(Rejection::new(
                frame.request_id(),
                ErrorCode::ProtocolViolation,
                "connection is closing",
            )),
            ServerState::Established { .. } => self.check_established(frame),
        }
    }

    fn check_hello(&mut self, hello: Hello) -> Result<Inbound, Rejection> {
        let Some(version) = self.server_version.negotiate(hello.version) else {
            return Err(Rejection::new(
                None,
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol {} is not served here; this server speaks {}",
                    hello.version, self.server_version
                ),
            ));
        };
        if hello.token.is_empty() || hello.token.len() > MAX_TOKEN {
            return Err(Rejection::new(
                None,
                ErrorCode::InvalidToken,
                "missing or oversized access token",
            ));
        }
        if hello.client.len() > MAX_CLIENT_NAME {
            return Err(Rejection::new(
                None,
                ErrorCode::InvalidRequest,
                format!("client name longer than {MAX_CLIENT_NAME} bytes"),
            ));
        }
        if hello.resume.len() > MAX_RESUME_CURSORS {
            return Err(Rejection::new(
                None,
                ErrorCode::InvalidRequest,
                format!("more than {MAX_RESUME_CURSORS} resume cursors"),
            ));
        }
        self.state = ServerState::Authenticating { version };
        Ok(Inbound::Hello { hello, version })
    }

    fn check_established(&mut self, frame: ClientFrame) -> Result<Inbound, Rejection> {
        let request_id = frame.request_id();
        if let ServerState::Established { version, .. } = self.state
            && frame.since() > version
        {
            // A kind the negotiated version does not define is unknown (§2).
            return Err(Rejection::new(
                None,
                ErrorCode::UnsupportedFrame,
                format!("{} needs protocol {}", frame.kind(), frame.since()),
            ));
        }
        match &frame {
            ClientFrame::Hello(_) => {
                return Err(Rejection::new(
                    None,
                    ErrorCode::ProtocolViolation,
                    "hello sent twice",
                ));
            }
            ClientFrame::Typing(t) => return Ok(Inbound::Typing(*t)),
            ClientFrame::Ping(p) => return Ok(Inbound::Ping(*p)),
            ClientFrame::Pong(p) => return Ok(Inbound::Pong(*p)),
            ClientFrame::Send(send) => self.check_body(request_id, &send.body)?,
            ClientFrame::Relate(relate) => self.check_relation(request_id, &relate.relation)?,
            ClientFrame::History(h) => self.check_page_limit(request_id, h.limit)?,
            ClientFrame::Sync(s) => self.check_page_limit(request_id, s.limit)?,
            ClientFrame::MarkRead(_) => {}
        }
        if self.in_flight >= self.limits.max_in_flight {
            return Err(Rejection::new(
                request_id,
                ErrorCode::TooManyRequests,
                format!("more than {} requests in flight", self.limits.max_in_flight),
            ));
        }
        self.in_flight += 1;
        Ok(Inbound::Request(frame))
    }

    fn check_body(&self, request_id: Option<RequestId>, body: &Body) -> Result<(), Rejection> {
        let invalid = |message: String| {
            Err(Rejection::new(
                request_id,
                ErrorCode::InvalidRequest,
                message,
            ))
        };
        if body.has_files()
            && let ServerState::Established { version, .. } = self.state
            && !version.has_files()
        {
            // An enumeration value the negotiated version does not define (§2).
            return Err(Rejection::new(
                request_id,
                ErrorCode::BadFrame,
                format!("bodies with files need protocol {}", ProtocolVersion::FILES),
            ));
        }
        let (len, max, what) = match body {
            Body::Text(t) => (t.len(), self.limits.max_text_body, "text body"),
            Body::Encrypted(e) => (e.0.len(), self.limits.max_envelope, "encrypted envelope"),
            Body::Attachments(a) => (a.text.len(), self.limits.max_text_body, "caption"),
            Body::SealedAttachments(s) => (
                s.envelope.0.len(),
                self.limits.max_envelope,
                "encrypted envelope",
            ),
        };
        if len == 0 && !matches!(body, Body::Attachments(_)) {
            return invalid(format!("empty {what}"));
        }
        if len > max as usize {
            return Err(Rejection::new(
                request_id,
                ErrorCode::BodyTooLarge,
                format!("{what} of {len} bytes exceeds {max}"),
            ));
        }
        if body.has_files()
            && let Err(problem) = check_files(body)
        {
            return invalid(problem);
        }
        Ok(())
    }

    fn check_relation(
        &self,
        request_id: Option<RequestId>,
        relation: &Relation,
    ) -> Result<(), Rejection> {
        match relation {
            Relation::Reply { body, .. } => self.check_body(request_id, body),
            Relation::Edit { body, .. } => {
                self.check_body(request_id, body)?;
                if body.has_files() {
                    return Err(Rejection::new(
                        request_id,
                        ErrorCode::InvalidRequest,
                        "an edit replaces the text; a message's files cannot be edited",
                    ));
                }
                Ok(())
            }
            Relation::Delete { .. } => Ok(()),
            Relation::React { reaction, .. } => {
                if let Reaction::Encrypted(e) = reaction {
                    return self.check_body(request_id, &Body::Encrypted(e.clone()));
                }
                if reaction.is_valid() {
                    Ok(())
                } else {
                    Err(Rejection::new(
                        request_id,
                        ErrorCode::InvalidRequest,
                        format!("a reaction is one emoji of at most {MAX_REACTION} bytes"),
                    ))
                }
            }
        }
    }

    fn check_page_limit(&self, request_id: Option<RequestId>, limit: u16) -> Result<(), Rejection> {
        if limit == 0 || limit > self.limits.max_page {
            return Err(Rejection::new(
                request_id,
                ErrorCode::InvalidRequest,
                format!("limit must be within 1..={}", self.limits.max_page),
            ));
        }
        Ok(())
    }
}

/// The rules of §5.3 for the files of a body: 1 to `MAX_FILES` distinct well-formed
/// ids, and for plain files a name, media type and image description within limits.
fn check_files(body: &Body) -> Result<(), String> {
    let ids = body.file_ids();
    if ids.is_empty() || ids.len() > MAX_FILES {
        return Err(format!("a message carries 1 to {MAX_FILES} files"));
    }
    for (i, id) in ids.iter().enumerate() {
        if !id.is_valid() {
            return Err("a file id is 32 lowercase hex digits".into());
        }
        if ids[..i].contains(id) {
            return Err(format!("file {id} is named twice"));
        }
    }
    let Body::Attachments(a) = body else {
        return Ok(());
    };
    for file in &a.files {
        if file.name.is_empty()
            || file.name.len() > MAX_FILE_NAME
            || file.name.chars().any(char::is_control)
        {
            return Err(format!(
                "a file name is 1 to {MAX_FILE_NAME} bytes without control characters"
            ));
        }
        if !is_media_type(&file.media_type) {
            return Err(format!(
                "a media type is type/subtype in at most {MAX_MEDIA_TYPE} bytes"
            ));
        }
        if let Some(image) = &file.image {
            if image.width == 0 || image.height == 0 {
                return Err("an image is at least 1 by 1 pixel".into());
            }
            if image
                .thumbnail
                .as_ref()
                .is_some_and(|t| t.0.is_empty() || t.0.len() > MAX_THUMBNAIL)
            {
                return Err(format!("a thumbnail is 1 to {MAX_THUMBNAIL} bytes"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Envelope;
    use crate::frame::{History, MarkRead, Send, Sync};
    use crate::ids::{ClientMsgId, ConversationId, Seq};

    fn hello(token: &str) -> ClientFrame {
        ClientFrame::Hello(Hello {
            version: ProtocolVersion::CURRENT,
            token: token.into(),
            client: "test".into(),
            resume: vec![],
        })
    }

    fn send(id: u32, body: Body) -> ClientFrame {
        ClientFrame::Send(Send {
            request_id: RequestId(id),
            conversation: ConversationId::new(1).unwrap_or_else(|_| unreachable!()),
            client_msg_id: ClientMsgId::from_bytes([1; 16]),
            body,
        })
    }

    fn established() -> ServerSession {
        let mut s = ServerSession::new(ServerLimits {
            max_in_flight: 2,
            ..ServerLimits::default()
        });
        assert!(matches!(s.receive(hello("t")), Ok(Inbound::Hello { .. })));
        let user = UserId::new(1).unwrap_or_else(|_| unreachable!());
        assert_eq!(s.established(user), Ok(ProtocolVersion::CURRENT));
        s
    }

    #[test]
    fn files_in_a_body_are_checked_and_need_version_1_4() {
        use crate::body::{Attachments, Binary, FileId, FileRef, ImageInfo};
        let file = |id: &str| FileRef {
            id: FileId(id.into()),
            name: "photo.png".into(),
            size: 1,
            media_type: "image/png".into(),
            image: Some(ImageInfo {
                width: 1,
                height: 1,
                thumbnail: Some(Binary::from(vec![1; MAX_THUMBNAIL])),
            }),
        };
        let good = "0123456789abcdef0123456789abcdef";
        let body = |files| {
            Body::Attachments(Attachments {
                text: String::new(),
                files,
            })
        };
        let mut s = ServerSession::new(ServerLimits::default());
        assert!(matches!(s.receive(hello("t")), Ok(Inbound::Hello { .. })));
        assert!(s.established(UserId::new(1).expect("id")).is_ok());
        assert!(s.receive(send(1, body(vec![file(good)]))).is_ok());
        let mut many: Vec<FileRef> = (0..MAX_FILES).map(|i| file(&format!("{i:032x}"))).collect();
        assert!(s.receive(send(2, body(many.clone()))).is_ok());
        many.push(file(&format!("{:032x}", MAX_FILES)));
        assert_eq!(
            s.receive(send(3, body(many))).map_err(|r| r.code).err(),
            Some(ErrorCode::InvalidRequest)
        );
        // An edit changes the caption only.
        let edit = relate(
            4,
            Relation::Edit {
                target: Seq::new(1).expect("seq"),
                body: body(vec![file(good)]),
            },
        );
        assert_eq!(
            s.receive(edit).map_err(|r| r.code).err(),
            Some(ErrorCode::InvalidRequest)
        );

        // A 1.3 session does not know the body kind.
        let mut old = ServerSession::new(ServerLimits::default());
        let hello13 = ClientFrame::Hello(Hello {
            version: ProtocolVersion { major: 1, minor: 3 },
            token: "t".into(),
            client: String::new(),
            resume: vec![],
        });
        assert!(matches!(old.receive(hello13), Ok(Inbound::Hello { .. })));
        assert!(old.established(UserId::new(1).expect("id")).is_ok());
        let refused = old
            .receive(send(5, body(vec![file(good)])))
            .expect_err("refused");
        assert_eq!((refused.code, refused.fatal), (ErrorCode::BadFrame, false));
        assert!(old.receive(send(6, Body::Text("hi".into()))).is_ok());
    }

    fn relate(id: u32, relation: Relation) -> ClientFrame {
        ClientFrame::Relate(crate::frame::Relate {
            request_id: RequestId(id),
            conversation: ConversationId::new(1).unwrap_or_else(|_| unreachable!()),
            client_msg_id: ClientMsgId::from_bytes([2; 16]),
            relation,
        })
    }

    #[test]
    fn relations_are_checked_and_exist_only_from_1_3() {
        let target = Seq::new(1).unwrap_or_else(|_| unreachable!());
        let react = |e: &str| Relation::React {
            target,
            reaction: Reaction::Emoji(e.into()),
        };
        let mut s = established();
        assert!(matches!(
            s.receive(relate(1, react("👍"))),
            Ok(Inbound::Request(_))
        ));
        let r = s.receive(relate(2, react("👍👍"))).expect_err("refused");
        assert_eq!(
            (r.code, r.request_id),
            (ErrorCode::InvalidRequest, Some(RequestId(2)))
        );
        let long = "x".repeat(ServerLimits::default().max_text_body as usize + 1);
        let r = s
            .receive(relate(
                3,
                Relation::Edit {
                    target,
                    body: Body::Text(long),
                },
            ))
            .expect_err("refused");
        assert_eq!(r.code, ErrorCode::BodyTooLarge);
        let r = s
            .receive(relate(
                4,
                Relation::Reply {
                    target,
                    body: Body::Text(String::new()),
                },
            ))
            .expect_err("refused");
        assert_eq!(r.code, ErrorCode::InvalidRequest);

        // A session of 1.2 does not know the kind: unsupported, not fatal, no id.
        let mut old = ServerSession::new(ServerLimits::default());
        let v1_2 = ProtocolVersion { major: 1, minor: 2 };
        assert!(matches!(
            old.receive(ClientFrame::Hello(Hello {
                version: v1_2,
                token: "t".into(),
                client: String::new(),
                resume: vec![],
            })),
            Ok(Inbound::Hello { .. })
        ));
        assert_eq!(
            old.established(UserId::new(1).unwrap_or_else(|_| unreachable!())),
            Ok(v1_2)
        );
        let r = old.receive(relate(5, react("👍"))).expect_err("unknown");
        assert_eq!(
            (r.code, r.fatal, r.request_id),
            (ErrorCode::UnsupportedFrame, false, None)
        );
        assert_eq!(old.in_flight(), 0);
    }

    #[test]
    fn hello_must_come_first_and_only_once() {
        let mut s = ServerSession::new(ServerLimits::default());
        let r = s
            .receive(send(1, Body::Text("x".into())))
            .expect_err("refused");
        assert_eq!(
            (r.code, r.fatal, r.request_id),
            (ErrorCode::HandshakeRequired, true, Some(RequestId(1)))
        );
        assert_eq!(s.state(), ServerState::Closed);

        let mut s = established();
        let r = s.receive(hello("t")).expect_err("refused");
        assert_eq!((r.code, r.fatal), (ErrorCode::ProtocolViolation, true));
        assert_eq!(s.state(), ServerState::Closed);
    }

    #[test]
    fn frames_between_hello_and_welcome_are_violations() {
        let mut s = ServerSession::new(ServerLimits::default());
        assert!(s.receive(hello("t")).is_ok());
        let r = s
            .receive(ClientFrame::Ping(Ping { nonce: 1 }))
            .expect_err("refused");
        assert_eq!((r.code, r.fatal), (ErrorCode::ProtocolViolation, true));
    }

    #[test]
    fn hello_fields_are_bounded() {
        let mut s = ServerSession::new(ServerLimits::default());
        let r = s.receive(hello("")).expect_err("refused");
        assert_eq!((r.code, r.fatal), (ErrorCode::InvalidToken, true));

        let mut s = ServerSession::new(ServerLimits::default());
        let r = s
            .receive(hello(&"t".repeat(MAX_TOKEN + 1)))
            .expect_err("refused");
        assert_eq!(r.code, ErrorCode::InvalidToken);

        let mut s = ServerSession::new(ServerLimits::default());
        let frame = ClientFrame::Hello(Hello {
            version: ProtocolVersion::CURRENT,
            token: "t".into(),
            client: "c".repeat(MAX_CLIENT_NAME + 1),
            resume: vec![],
        });
        let r = s.receive(frame).expect_err("refused");
        assert_eq!((r.code, r.fatal), (ErrorCode::InvalidRequest, true));

        let mut s = ServerSession::new(ServerLimits::default());
        let cursor = crate::frame::Cursor {
            conversation: ConversationId::new(1).unwrap_or_else(|_| unreachable!()),
            seq: Seq::ZERO,
        };
        let frame = ClientFrame::Hello(Hello {
            version: ProtocolVersion::CURRENT,
            token: "t".into(),
            client: String::new(),
            resume: vec![cursor; MAX_RESUME_CURSORS + 1],
        });
        assert_eq!(
            s.receive(frame).map_err(|r| r.code),
            Err(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn refused_token_closes() {
        let mut s = ServerSession::new(ServerLimits::default());
        assert!(s.receive(hello("t")).is_ok());
        let r = s.refused(ErrorCode::InvalidToken, "expired");
        assert!(r.fatal);
        assert_eq!(s.state(), ServerState::Closed);
        assert!(
            s.established(UserId::new(1).unwrap_or_else(|_| unreachable!()))
                .is_err()
        );
    }

    #[test]
    fn bodies_and_pages_are_checked_against_limits() {
        let mut s = established();
        let r = s
            .receive(send(1, Body::Text(String::new())))
            .expect_err("empty");
        assert_eq!(
            (r.code, r.fatal, r.request_id),
            (ErrorCode::InvalidRequest, false, Some(RequestId(1)))
        );
        let big = "x".repeat(crate::limits::MAX_TEXT_BODY + 1);
        assert_eq!(
            s.receive(send(2, Body::Text(big))).map_err(|r| r.code),
            Err(ErrorCode::BodyTooLarge)
        );
        let big = Envelope::from(vec![0u8; crate::limits::MAX_ENVELOPE + 1]);
        assert_eq!(
            s.receive(send(3, Body::Encrypted(big))).map_err(|r| r.code),
            Err(ErrorCode::BodyTooLarge)
        );
        let conversation = ConversationId::new(1).unwrap_or_else(|_| unreachable!());
        for limit in [0, crate::limits::MAX_PAGE + 1] {
            let h = ClientFrame::History(History {
                request_id: RequestId(4),
                conversation,
                before: None,
                limit,
            });
            assert_eq!(
                s.receive(h).map_err(|r| r.code),
                Err(ErrorCode::InvalidRequest)
            );
            let y = ClientFrame::Sync(Sync {
                request_id: RequestId(5),
                conversation,
                after: Seq::ZERO,
                limit,
            });
            assert_eq!(
                s.receive(y).map_err(|r| r.code),
                Err(ErrorCode::InvalidRequest)
            );
        }
        // Non-fatal errors leave the session usable.
        assert!(matches!(s.state(), ServerState::Established { .. }));
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn in_flight_requests_are_capped() {
        let mut s = established();
        assert!(s.receive(send(1, Body::Text("a".into()))).is_ok());
        let conversation = ConversationId::new(1).unwrap_or_else(|_| unreachable!());
        let read = ClientFrame::MarkRead(MarkRead {
            request_id: RequestId(2),
            conversation,
            seq: Seq::ZERO,
        });
        assert!(s.receive(read).is_ok());
        let r = s
            .receive(send(3, Body::Text("c".into())))
            .expect_err("over the window");
        assert_eq!((r.code, r.fatal), (ErrorCode::TooManyRequests, false));
        // Typing and pings are not requests.
        let typing = ClientFrame::Typing(SetTyping {
            conversation,
            active: true,
        });
        assert!(matches!(s.receive(typing), Ok(Inbound::Typing(_))));
        s.finished();
        assert!(s.receive(send(4, Body::Text("d".into()))).is_ok());
        assert_eq!(s.in_flight(), 2);
    }

    #[test]
    fn undecodable_frames_are_fatal_only_before_welcome_or_when_oversized() {
        use crate::error::DecodeError;
        let mut s = ServerSession::new(ServerLimits::default());
        assert!(s.undecodable(&DecodeError::Truncated).fatal);
        let mut s = established();
        let r = s.undecodable(&DecodeError::Malformed("x".into()));
        assert_eq!((r.code, r.fatal), (ErrorCode::BadFrame, false));
        assert_eq!(r.to_frame().kind(), "error");
        let r = s.undecodable(&DecodeError::TooLarge {
            len: 1 << 20,
            max: 1,
        });
        assert_eq!((r.code, r.fatal), (ErrorCode::FrameTooLarge, true));
        assert_eq!(s.state(), ServerState::Closed);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn conversation(n: u64) -> ConversationId {
        ConversationId::new(n).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn the_handshake_has_a_deadline() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(ServerLimits::default());
        assert_eq!(
            s.poll_timeout(),
            None,
            "no timer before the transport opened"
        );
        s.opened(t0, ms(10_000));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(10_000)));
        assert_eq!(s.handle_timeout(t0 + ms(9_999)), None);
        // Frames before hello do not move the deadline.
        s.heard(t0 + ms(5_000));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(10_000)));
        match s.handle_timeout(t0 + ms(10_000)) {
            Some(Timeout::Close(r)) => {
                assert_eq!((r.code, r.fatal), (ErrorCode::HandshakeTimeout, true));
            }
            other => panic!("expected a close, got {other:?}"),
        }
        assert_eq!(s.state(), ServerState::Closed);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_hello_still_being_checked_at_the_deadline_times_out_too() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(ServerLimits::default());
        s.opened(t0, ms(100));
        assert!(s.receive(hello("t")).is_ok());
        assert!(matches!(
            s.handle_timeout(t0 + ms(100)),
            Some(Timeout::Close(r)) if r.code == ErrorCode::HandshakeTimeout
        ));
    }

    #[test]
    fn a_quiet_peer_is_pinged_then_dropped_at_the_idle_timeout() {
        let t0 = Instant::now();
        let limits = ServerLimits {
            heartbeat_ms: 20_000,
            idle_timeout_ms: 60_000,
            ..ServerLimits::default()
        };
        let mut s = ServerSession::new(limits);
        s.opened(t0, ms(10_000));
        assert!(s.receive(hello("t")).is_ok());
        let user = UserId::new(1).unwrap_or_else(|_| unreachable!());
        assert!(s.established(user).is_ok());
        // Heard at +1 s: the first ping is due 20 s later.
        s.heard(t0 + ms(1_000));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(21_000)));
        assert_eq!(s.handle_timeout(t0 + ms(20_999)), None);
        let Some(Timeout::Ping(first)) = s.handle_timeout(t0 + ms(21_000)) else {
            panic!("expected a ping")
        };
        // One ping per quiet spell; the idle timeout counts from the last frame heard.
        assert_eq!(s.poll_timeout(), Some(t0 + ms(61_000)));
        assert_eq!(s.handle_timeout(t0 + ms(40_000)), None);
        // An answer (any frame) starts the next interval, and the next ping is new.
        s.heard(t0 + ms(30_000));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(50_000)));
        let Some(Timeout::Ping(second)) = s.handle_timeout(t0 + ms(50_000)) else {
            panic!("expected a ping")
        };
        assert_ne!(first.nonce, second.nonce);
        assert_eq!(s.handle_timeout(t0 + ms(89_999)), None);
        match s.handle_timeout(t0 + ms(90_000)) {
            Some(Timeout::Close(r)) => {
                assert_eq!((r.code, r.fatal), (ErrorCode::IdleTimeout, true))
            }
            other => panic!("expected a close, got {other:?}"),
        }
        assert_eq!(s.state(), ServerState::Closed);
    }

    #[test]
    fn typing_starts_are_relayed_at_most_once_per_interval_and_stops_only_after_a_start() {
        let t0 = Instant::now();
        let mut s = established();
        let (a, b) = (conversation(1), conversation(2));
        assert!(!s.relay_typing(a, false, t0), "a stop with no start before");
        assert!(s.relay_typing(a, true, t0));
        assert!(!s.relay_typing(a, true, t0 + TYPING_INTERVAL - ms(1)));
        assert!(
            s.relay_typing(b, true, t0 + ms(1)),
            "conversations are apart"
        );
        assert!(s.relay_typing(a, true, t0 + TYPING_INTERVAL));
        assert!(s.relay_typing(a, false, t0 + TYPING_INTERVAL + ms(1)));
        assert!(
            !s.relay_typing(a, false, t0 + TYPING_INTERVAL + ms(2)),
            "one stop per start"
        );
        // A start right after a stop waits for the interval, as after any update.
        assert!(!s.relay_typing(a, true, t0 + TYPING_INTERVAL + ms(3)));
    }
}
