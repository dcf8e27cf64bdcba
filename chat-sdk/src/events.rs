//! What a [`Client`](crate::Client) reports: [`Event`]s, in order, and the
//! [`Events`] stream that carries them.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chat_proto::entry::Entry;
use chat_proto::frame::{Membership, Presence, Receipt, Typing};
use chat_proto::ids::UserId;
use tokio::sync::mpsc;

use crate::e2e::DecryptError;
use crate::error::Error;

/// What happens on the connection, in order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// An entry of a conversation's log: a message (a reply too), or a relation to
    /// one (an edit, a deletion, a reaction; PROTOCOL.md §5.2). Per conversation in
    /// seq order, each exactly once, including the user's own (from this and other
    /// devices). In an end-to-end encrypted conversation bodies and reactions arrive
    /// opened, as text: sealed for this device and authenticated for this
    /// conversation, sender and client message id. [`Entry::text`] is a message's
    /// text; [`Timeline`](chat_proto::timeline::Timeline) folds relations into the
    /// messages they change.
    Entry(Entry),
    /// An end-to-end encrypted entry this device cannot read, in its place in the
    /// conversation's order; its content still holds the envelope.
    Undecryptable {
        /// The entry as it arrived.
        entry: Entry,
        /// Why it could not be opened.
        reason: DecryptError,
    },
    /// Someone started or stopped typing.
    Typing(Typing),
    /// A contact came online or went offline.
    Presence(Presence),
    /// A member's read position advanced.
    Receipt(Receipt),
    /// Someone joined or left a conversation (the user included).
    Membership(Membership),
    /// A handshake completed; missed messages follow, then [`Event::Live`].
    Connected {
        /// The signed-in user.
        user: UserId,
    },
    /// Caught up: what follows is live.
    Live,
    /// The connection was lost; the client reconnects by itself after `retry_in`.
    Disconnected {
        /// Why, for people.
        reason: String,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// A non-fatal error from the server not tied to a request.
    Notice(Error),
    /// The client stopped for good (for example the login was revoked); the stream
    /// ends after this.
    Stopped(Error),
}

/// The stream of [`Event`]s from [`Client::events`](crate::Client::events). Implements
/// [`futures_core::Stream`].
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the client has shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
