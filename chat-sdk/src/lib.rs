//! Async client library for the chat system, for applications and bots.
//!
//! A [`Client`] signs in over the HTTP API, keeps one real-time connection (QUIC or
//! WebSocket) open, repairs it when it breaks (jittered exponential backoff, resume from
//! the last message seen in every conversation, token refresh) and hands the
//! application typed [`Event`]s: each conversation's messages in order, each exactly
//! once. Requests made while disconnected wait and go out on the next connection.
//! The protocol itself lives in [`chat_proto`]'s sans-IO session; this crate is its IO
//! shell.
//!
//! # Quick start
//!
//! Two people over WebSocket (the hidden lines start a server in-process, so this
//! example runs as a test):
//!
//! ```
//! use chat_sdk::{ClientBuilder, Event};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let config = chat_server::config::Config::for_tests(dir.path());
//! # let server = chat_server::Server::bind(config).await?.spawn();
//! # let url = format!("ws://{}", server.http_addr);
//! let alice = ClientBuilder::new(&url)
//!     .register("alice", "correct horse battery", None)
//!     .connect()
//!     .await?;
//! let bob = ClientBuilder::new(&url)
//!     .register("bob", "correct horse battery", None)
//!     .connect()
//!     .await?;
//! let mut events = bob.events();
//!
//! let dm = alice.create_direct(bob.user_id()).await?;
//! let ack = alice.send_text(dm.id, "hello bob").await?; // stored: id, seq, time
//! while let Some(event) = events.recv().await {
//!     if let Event::Entry(entry) = event {
//!         assert_eq!((entry.id, entry.sender), (ack.id, alice.user_id()));
//!         assert_eq!(entry.text(), Some("hello bob"));
//!         bob.react(dm.id, entry.seq, "👀").await?; // relations: reply, edit, delete, react
//!         bob.mark_read(dm.id, entry.seq).await?;
//!         break;
//!     }
//! }
//! # server.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A bot is the same loop: answer every message ([`Event::Entry`] with
//! [`Entry::text`](chat_proto::entry::Entry::text)) whose sender is not the bot
//! (`examples/src/bin/echo_bot.rs`). Edits, deletions and reactions arrive as entries
//! too; [`Timeline`](chat_proto::timeline::Timeline) folds them into per-message views
//! (latest text, edited, deleted, reactions with who gave them). For cheap work on every event (counting,
//! recording, forwarding to a channel of your own), [`ClientBuilder::on_event`] calls
//! a handler on the connection's own task instead, with no stream in between.
//!
//! Over QUIC, name the HTTP API too and pin the server's certificate:
//!
//! ```no_run
//! # async fn run() -> Result<(), chat_sdk::Error> {
//! use chat_sdk::{ClientBuilder, Trust};
//!
//! let client = ClientBuilder::new("quic://127.0.0.1:4433")
//!     .api_url("http://127.0.0.1:8080")
//!     .trust(Trust::certificate_file("quic-cert.pem")?)
//!     .login("alice", "correct horse battery")
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # End-to-end encryption
//!
//! Give the client a device key file and it takes part in encrypted conversations:
//! texts are sealed for every member's every device before they leave, and arrive
//! opened ([`Event::Undecryptable`] says why one could not be). The server only ever
//! sees ciphertext (SECURITY.md in the repository describes the design).
//!
//! ```no_run
//! # async fn run(bob: chat_sdk::chat_proto::ids::UserId) -> Result<(), chat_sdk::Error> {
//! let client = chat_sdk::ClientBuilder::new("ws://127.0.0.1:8080")
//!     .login("alice", "correct horse battery")
//!     .device_key("alice.key") // created owner-only on first use, registered on connect
//!     .connect()
//!     .await?;
//! println!("this device: {}", client.device_key().expect("a key").fingerprint());
//! let chat = client.create_encrypted_direct(bob).await?;
//! client.send_text(chat.id, "only bob's devices and mine can read this").await?;
//! # Ok(()) }
//! ```
//!
//! The handle is cheap to clone and `Send + Sync`; dropping the last clone shuts the
//! connection down. Every method is cancellation-safe: a dropped future never leaves
//! the client in a broken state (a send whose future is dropped may still be
//! delivered; retry it with the same [`ClientMsgId`] through [`Client::send`] to be
//! sure, and it is stored at most once).
#![deny(missing_docs)]

mod api;
mod config;
mod driver;
mod e2e;
mod error;
mod events;
pub mod files;
mod tls;
mod transport;

use std::sync::Arc;

pub use chat_api;
use chat_api::conversations::{
    AddMember, AddMemberRequest, CreateConversation, CreateConversationRequest, GetConversation,
    Leave, RemoveMember,
};
use chat_api::devices::{ListDevices, RemoveDevice, UserDevices};
use chat_api::users::{GetUser, Me, ProfileUpdate, SearchUsers, UpdateMe};
pub use chat_proto;
use chat_proto::body::{Body, Envelope};
use chat_proto::entry::{Reaction, Relation};
use chat_proto::error::ErrorCode;
use chat_proto::frame::{Ack, Cursor, EntryPage};
use chat_proto::ids::{ClientMsgId, ConversationId, Seq, UserId};
use chat_proto::session::{ClientConfig, ClientSession, ConnectionState};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument as _;

use crate::api::Auth;
pub use crate::api::{
    Conversation, ConversationKind, ConversationSummary, Member, Role, TokenPair, User, UserPage,
};
pub use crate::config::ClientBuilder;
use crate::driver::{Command, Driver, Outgoing};
pub use crate::e2e::{DecryptError, Device, DeviceExt};
pub use crate::error::{Error, Result};
pub use crate::events::{Event, Events};
pub use crate::files::{FileToSend, FileUpload};
pub use crate::tls::Trust;
pub use chat_crypto::e2e::{DeviceId, DevicePublicKey, Fingerprint};

#[derive(Debug)]
struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    auth: Arc<Auth>,
    crypto: Arc<e2e::Crypto>,
    status: watch::Receiver<ConnectionState>,
}

/// A signed-in, connected chat client. See the [crate documentation](crate).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A fresh random idempotency key for [`Client::send`].
pub fn new_client_msg_id() -> ClientMsgId {
    ClientMsgId::new_v4(rand::random())
}

impl ClientBuilder {
    /// Signs in over HTTP, opens the real-time connection and completes the handshake.
    /// Later connection losses are repaired in the background.
    pub async fn connect(self) -> Result<Client> {
        let parsed = config::parse(&self.url, self.api_url.as_deref(), &self.trust)?;
        let credentials = self.credentials.clone().ok_or_else(|| {
            Error::Config("no credentials: call login, register or tokens".into())
        })?;
        let quic = match &parsed.target {
            transport::Target::Quic { host, port, .. } => {
                Some(transport::quic_endpoint(host, *port).await?)
            }
            transport::Target::WebSocket { .. } => None,
        };
        let device = self
            .device_key
            .as_deref()
            .map(crate::e2e::load_or_create_key)
            .transpose()?;
        let http = crate::api::Http::new(&parsed.api, parsed.http_tls);
        let auth = crate::api::Auth::sign_in(http, credentials).await?;
        let crypto = crate::e2e::Crypto::new(device);
        crypto.register(&auth, &self.client_name).await?;
        Client::start(self, parsed.target, quic, auth, crypto).await
    }
}

impl Client {
    /// Shorthand for [`ClientBuilder::new`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    async fn start(
        mut builder: ClientBuilder,
        target: transport::Target,
        quic: Option<quinn::Endpoint>,
        auth: Auth,
        crypto: e2e::Crypto,
    ) -> Result<Self> {
        let auth = Arc::new(auth);
        let crypto = Arc::new(crypto);
        let mut session = ClientSession::new(ClientConfig {
            client_name: builder.client_name.clone(),
            ..ClientConfig::default()
        });
        for cursor in &builder.resume {
            session.track(cursor.conversation, cursor.seq);
        }
        let (commands, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(ConnectionState::Disconnected);
        let (first_tx, first_rx) = oneshot::channel();
        let span = tracing::info_span!("chat_client", user = auth.user().get(), target = ?target);
        let driver = Driver {
            session,
            commands: rx,
            target,
            quic,
            auth: auth.clone(),
            crypto: crypto.clone(),
            status: status_tx,
            backoff: builder.backoff,
            connect_timeout: builder.connect_timeout,
            first: Some(first_tx),
            // With a handler, later subscribers start from when they subscribe.
            subscribed: builder.handler.is_some(),
            handler: builder.handler.take(),
            subscribers: Vec::new(),
            backlog: Default::default(),
            waiters: Default::default(),
            retries: Vec::new(),
        };
        tokio::spawn(driver.run().instrument(span));
        first_rx.await.map_err(|_| Error::Closed)??;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                auth,
                crypto,
                status,
            }),
        })
    }

    fn command(&self, command: Command) -> Result<()> {
        self.inner.commands.send(command).map_err(|_| Error::Closed)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.command(make(tx))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The signed-in user.
    pub fn user_id(&self) -> UserId {
        self.inner.auth.user()
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        *self.inner.status.borrow()
    }

    /// Waits until the connection is in `state` (for example
    /// [`ConnectionState::Live`]); fails if the client stops first.
    pub async fn wait_for(&self, state: ConnectionState) -> Result<()> {
        let mut status = self.inner.status.clone();
        let reached = status
            .wait_for(|s| *s == state || *s == ConnectionState::Closed)
            .await
            .map_err(|_| Error::Closed)?;
        if *reached == state {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// A new stream of events. Events that happened before the first call are kept
    /// for it (up to 65,536), so nothing between `connect` and `events` is lost; later
    /// subscribers see events from the moment they subscribe (all of them do when the
    /// client has a [`ClientBuilder::on_event`] handler). Each stream must be read:
    /// events wait in memory until it is.
    pub fn events(&self) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.command(Command::Subscribe(tx));
        Events { rx }
    }

    /// Sends a text message; resolves to the server's acknowledgement (message id, seq,
    /// time) once it is stored. A rate-limited send waits and retries by itself. In an
    /// end-to-end encrypted conversation the text is sealed first (this needs
    /// [`ClientBuilder::device_key`]; without one the server refuses the plain text
    /// with `encryption_required`).
    pub async fn send_text(
        &self,
        conversation: ConversationId,
        text: impl Into<String>,
    ) -> Result<Ack> {
        self.send(conversation, new_client_msg_id(), Body::Text(text.into()))
            .await
    }

    /// Sends a body under an idempotency key of the caller's choice: retrying with the
    /// same key (after a timeout, a crash, a dropped future) returns the same
    /// acknowledgement and never stores a second message.
    ///
    /// ```no_run
    /// # async fn run(
    /// #     client: chat_sdk::Client,
    /// #     conversation: chat_sdk::chat_proto::ids::ConversationId,
    /// # ) -> Result<(), chat_sdk::Error> {
    /// use chat_sdk::chat_proto::body::Body;
    ///
    /// let key = chat_sdk::new_client_msg_id(); // keep it with the draft
    /// let ack = loop {
    ///     match client.send(conversation, key, Body::Text("hi".into())).await {
    ///         Ok(ack) => break ack,
    ///         // Same key: however often this runs, one message is stored.
    ///         Err(e) if e.is_transient() => continue,
    ///         Err(e) => return Err(e),
    ///     }
    /// };
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        body: Body,
    ) -> Result<Ack> {
        self.write(conversation, client_msg_id, Some(body), |body| {
            Outgoing::Body(body.unwrap_or_else(|| unreachable!("a send has a body")))
        })
        .await
    }

    /// Replies to the message at `target` with text (sealed in an encrypted
    /// conversation); resolves to the reply's acknowledgement.
    pub async fn reply(
        &self,
        conversation: ConversationId,
        target: Seq,
        text: impl Into<String>,
    ) -> Result<Ack> {
        let body = Body::Text(text.into());
        self.relate(
            conversation,
            new_client_msg_id(),
            Relation::Reply { target, body },
        )
        .await
    }

    /// Replaces the text of the user's own message at `target` (sealed in an
    /// encrypted conversation). The server refuses others' messages (`forbidden`) and
    /// deleted ones (`deleted`).
    pub async fn edit(
        &self,
        conversation: ConversationId,
        target: Seq,
        text: impl Into<String>,
    ) -> Result<Ack> {
        let body = Body::Text(text.into());
        self.relate(
            conversation,
            new_client_msg_id(),
            Relation::Edit { target, body },
        )
        .await
    }

    /// Deletes the message or reaction at `target`: the user's own, or any message of
    /// a group the user owns. The server purges its content; deleting it again is
    /// answered with the first deletion's acknowledgement.
    pub async fn delete(&self, conversation: ConversationId, target: Seq) -> Result<Ack> {
        self.relate(
            conversation,
            new_client_msg_id(),
            Relation::Delete { target },
        )
        .await
    }

    /// Reacts to the message at `target` with one emoji (sealed in an encrypted
    /// conversation). Reacting again with the same emoji is answered with the first
    /// reaction's acknowledgement; its `seq` is what [`Client::unreact`] takes.
    pub async fn react(
        &self,
        conversation: ConversationId,
        target: Seq,
        emoji: impl Into<String>,
    ) -> Result<Ack> {
        let reaction = Reaction::Emoji(emoji.into());
        self.relate(
            conversation,
            new_client_msg_id(),
            Relation::React { target, reaction },
        )
        .await
    }

    /// Takes back a reaction: deletes the reaction entry at `reaction` (the `seq` of
    /// [`Client::react`]'s acknowledgement, or
    /// [`ReactionView::of`](chat_proto::timeline::ReactionView::of)).
    pub async fn unreact(&self, conversation: ConversationId, reaction: Seq) -> Result<Ack> {
        self.delete(conversation, reaction).await
    }

    /// Adds any relation under an idempotency key of the caller's choice (see
    /// [`Client::send`] for retrying with it). Text bodies and emoji are sealed first
    /// in an end-to-end encrypted conversation. Needs a server of protocol 1.3; an
    /// older one refuses it with `unsupported_frame`.
    pub async fn relate(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        relation: Relation,
    ) -> Result<Ack> {
        let text = relation.plain_text().map(|t| Body::Text(t.to_owned()));
        self.write(conversation, client_msg_id, text, move |body| {
            Outgoing::Relation(match body {
                Some(Body::Encrypted(sealed)) => relation.clone().sealed(sealed),
                _ => relation.clone(),
            })
        })
        .await
    }

    /// Writes an entry, sealing its text first where the conversation is encrypted:
    /// `build` makes the entry from the body as it goes on the wire.
    async fn write(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        body: Option<Body>,
        build: impl Fn(Option<Body>) -> Outgoing,
    ) -> Result<Ack> {
        let crypto = &self.inner.crypto;
        let auth = &self.inner.auth;
        let text = match body {
            Some(Body::Text(text)) if crypto.seals_text(auth, conversation).await? => text,
            body => {
                return self
                    .send_as_is(conversation, client_msg_id, build(body))
                    .await;
            }
        };
        self.write_sealed(conversation, client_msg_id, text.as_bytes(), |envelope| {
            build(Some(Body::Encrypted(envelope)))
        })
        .await
    }

    /// Seals `plaintext` for the conversation's devices and sends what `build` makes of
    /// the envelope. If the devices changed since the list was fetched, the server
    /// says so and it is sealed again for the new list.
    async fn write_sealed(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        plaintext: &[u8],
        build: impl Fn(Envelope) -> Outgoing,
    ) -> Result<Ack> {
        let crypto = &self.inner.crypto;
        let auth = &self.inner.auth;
        let mut attempts = 0;
        loop {
            let sealed = crypto
                .seal(auth, conversation, client_msg_id, plaintext)
                .await?;
            match self
                .send_as_is(conversation, client_msg_id, build(sealed))
                .await
            {
                Err(Error::Server {
                    code: ErrorCode::DevicesChanged,
                    ..
                }) if attempts < 3 => {
                    attempts += 1;
                    crypto.members_changed(conversation);
                }
                result => return result,
            }
        }
    }

    async fn send_as_is(
        &self,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        what: Outgoing,
    ) -> Result<Ack> {
        self.ask(|reply| Command::Send {
            conversation,
            client_msg_id,
            what,
            reply,
        })
        .await
    }

    /// A page of history, newest first: up to `limit` entries before `before` (or the
    /// newest ones), messages and relations alike (fold them with
    /// [`Timeline`](chat_proto::timeline::Timeline)). Page further back with the
    /// smallest seq received. Encrypted entries come opened where this device can
    /// open them; the others keep their envelope ([`Body::Encrypted`]).
    pub async fn history(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: u16,
    ) -> Result<EntryPage> {
        self.ask(|reply| Command::History {
            conversation,
            before,
            limit: limit.max(1),
            reply,
        })
        .await
    }

    /// Marks everything up to `seq` read; other members get a receipt.
    pub async fn mark_read(&self, conversation: ConversationId, seq: Seq) -> Result<()> {
        self.ask(|reply| Command::MarkRead {
            conversation,
            seq,
            reply,
        })
        .await
    }

    /// Tells the conversation the user is (or stopped) typing. Ephemeral: dropped while
    /// disconnected. Over QUIC it travels as a datagram where the server takes them
    /// (protocol 1.2), so a lost packet delays neither it nor the messages.
    pub fn set_typing(&self, conversation: ConversationId, active: bool) -> Result<()> {
        self.command(Command::Typing {
            conversation,
            active,
        })
    }

    /// The last seq handed out per conversation: save them and pass them to
    /// [`ClientBuilder::resume_from`] to pick up where this client left off.
    pub async fn cursors(&self) -> Result<Vec<Cursor>> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Cursors(tx))?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// The current token pair, to save for [`ClientBuilder::tokens`]. Refresh tokens
    /// are single-use: save the latest.
    pub async fn tokens(&self) -> TokenPair {
        self.inner.auth.tokens().await
    }

    /// Closes the connection politely and waits until it is closed. Other clones of
    /// the handle fail with [`Error::Closed`] afterwards.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.command(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Revokes this login on the server, then closes.
    pub async fn logout(&self) -> Result<()> {
        let result = self.inner.auth.logout().await;
        self.close().await;
        result
    }

    // HTTP API

    /// The signed-in user's profile.
    pub async fn me(&self) -> Result<User> {
        self.inner.auth.call::<Me>(&[], None, None).await
    }

    /// Changes the display name and/or bio; `None` leaves a field as it is.
    pub async fn update_profile(
        &self,
        display_name: Option<&str>,
        bio: Option<&str>,
    ) -> Result<User> {
        let update = ProfileUpdate {
            display_name: display_name.map(str::to_owned),
            bio: bio.map(str::to_owned),
        };
        self.inner
            .auth
            .call::<UpdateMe>(&[], None, Some(&update))
            .await
    }

    /// Someone's profile.
    pub async fn user(&self, id: UserId) -> Result<User> {
        self.inner
            .auth
            .call::<GetUser>(&[&id.to_string()], None, None)
            .await
    }

    /// Users whose username starts with `prefix` (case-insensitive), in username
    /// order; pass the previous page's `next` as `after` for more.
    pub async fn search_users(
        &self,
        prefix: &str,
        limit: u8,
        after: Option<&str>,
    ) -> Result<UserPage> {
        let mut query = form_query(&[("q", prefix), ("limit", &limit.max(1).to_string())]);
        if let Some(after) = after {
            query.push('&');
            query.push_str(&form_query(&[("after", after)]));
        }
        self.inner
            .auth
            .call::<SearchUsers>(&[], Some(&query), None)
            .await
    }

    /// Messages of the user's conversations that match `query` (the rules are
    /// `chat_api::search`'s: words as prefixes, `"phrases"`, `-exclusions`), newest
    /// first, only `conversation`'s if given; pass the previous page's `next` as
    /// `before` for more. End-to-end encrypted conversations are not searched by the
    /// server: match what this client decrypted with `chat_api::search::Query`.
    pub async fn search(
        &self,
        query: &str,
        conversation: Option<ConversationId>,
        before: Option<&str>,
        limit: u8,
    ) -> Result<chat_api::search::SearchPage> {
        let limit = limit.clamp(1, 50).to_string();
        let conversation = conversation.map(|c| c.to_string());
        let mut pairs = vec![("q", query), ("limit", limit.as_str())];
        if let Some(c) = &conversation {
            pairs.push(("conversation", c));
        }
        if let Some(b) = before {
            pairs.push(("before", b));
        }
        let query = form_query(&pairs);
        self.inner
            .auth
            .call::<chat_api::search::Search>(&[], Some(&query), None)
            .await
    }

    /// The user's conversations, most recently active first, with unread counts.
    pub async fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        self.inner.auth.conversations().await
    }

    /// One conversation the user belongs to.
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        self.inner
            .auth
            .call::<GetConversation>(&[&id.to_string()], None, None)
            .await
    }

    /// This device's end-to-end encryption key, if the client has one
    /// ([`ClientBuilder::device_key`]); show its [`DevicePublicKey::fingerprint`] to
    /// the user.
    pub fn device_key(&self) -> Option<DevicePublicKey> {
        self.inner.crypto.device().map(|d| d.public_key().clone())
    }

    /// The signed-in user's registered devices.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        self.inner.auth.call::<ListDevices>(&[], None, None).await
    }

    /// A contact's devices (someone who shares a conversation with the user), to
    /// compare fingerprints.
    pub async fn user_devices(&self, user: UserId) -> Result<Vec<Device>> {
        self.inner
            .auth
            .call::<UserDevices>(&[&user.to_string()], None, None)
            .await
    }

    /// Removes one of the user's devices (a lost phone): messages sealed afterwards
    /// carry no key for it.
    pub async fn remove_device(&self, id: DeviceId) -> Result<()> {
        self.inner
            .auth
            .call::<RemoveDevice>(&[&id.to_string()], None, None)
            .await
    }

    /// The end-to-end encrypted direct conversation with `user` (a pair has one, apart
    /// from their plain one), created if needed.
    pub async fn create_encrypted_direct(&self, user: UserId) -> Result<Conversation> {
        self.create_conversation(CreateConversationRequest::Direct {
            members: vec![user],
            encrypted: true,
        })
        .await
    }

    /// A new end-to-end encrypted group owned by the user (at most 40 members).
    pub async fn create_encrypted_group(
        &self,
        title: &str,
        members: &[UserId],
    ) -> Result<Conversation> {
        self.create_conversation(CreateConversationRequest::Group {
            title: title.to_owned(),
            members: members.to_vec(),
            encrypted: true,
        })
        .await
    }

    /// The direct conversation with `user`, created if needed.
    pub async fn create_direct(&self, user: UserId) -> Result<Conversation> {
        self.create_conversation(CreateConversationRequest::Direct {
            members: vec![user],
            encrypted: false,
        })
        .await
    }

    /// A new group owned by the user, with `members` in it.
    pub async fn create_group(&self, title: &str, members: &[UserId]) -> Result<Conversation> {
        self.create_conversation(CreateConversationRequest::Group {
            title: title.to_owned(),
            members: members.to_vec(),
            encrypted: false,
        })
        .await
    }

    /// `POST /api/conversations` with `request`.
    async fn create_conversation(
        &self,
        request: CreateConversationRequest,
    ) -> Result<Conversation> {
        self.inner
            .auth
            .call::<CreateConversation>(&[], None, Some(&request))
            .await
    }

    /// Adds someone to a group (owner only).
    pub async fn add_member(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Conversation> {
        let updated = self
            .inner
            .auth
            .call::<AddMember>(
                &[&conversation.to_string()],
                None,
                Some(&AddMemberRequest { user_id: user }),
            )
            .await;
        // The next sealed message must see the new member list.
        self.inner.crypto.members_changed(conversation);
        updated
    }

    /// Removes someone from a group (the owner, or members themselves).
    pub async fn remove_member(&self, conversation: ConversationId, user: UserId) -> Result<()> {
        self.inner
            .auth
            .call::<RemoveMember>(&[&conversation.to_string(), &user.to_string()], None, None)
            .await?;
        self.inner.crypto.members_changed(conversation);
        Ok(())
    }

    /// Leaves a group.
    pub async fn leave(&self, conversation: ConversationId) -> Result<()> {
        self.inner
            .auth
            .call::<Leave>(&[&conversation.to_string()], None, None)
            .await
    }
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_sync_and_queries_are_encoded() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Client>();
        assert_eq!(
            form_query(&[("q", "a b&c"), ("limit", "5")]),
            "q=a%20b%26c&limit=5"
        );
    }
}
