//! Arbitrary server behaviour against the client state machine: whatever frames,
//! timers, disconnects and application requests arrive, the application sees each
//! conversation's entries (messages and relations) in strictly increasing seq order,
//! never twice.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use chat_proto::body::Body;
use chat_proto::entry::Relation;
use chat_proto::frame::ServerFrame;
use chat_proto::ids::{ClientMsgId, ConversationId, Seq};
use chat_proto::session::{ClientConfig, ClientSession, Event};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    Frame(ServerFrame),
    Connect,
    TransportClosed,
    Advance(u16),
    Send(ConversationId, ClientMsgId),
    Relate(ConversationId, ClientMsgId, Relation),
    History(ConversationId, u8),
    Track(ConversationId, Seq),
}

fuzz_target!(|steps: Vec<Step>| {
    let mut session = ClientSession::new(ClientConfig {
        max_buffered: 64,
        sync_page: 8,
        ..ClientConfig::default()
    });
    let start = Instant::now();
    let mut now = start;
    let mut last: HashMap<ConversationId, Seq> = HashMap::new();
    for step in steps {
        match step {
            Step::Frame(frame) => session.handle(frame, now),
            Step::Connect => {
                let _ = session.connect("t".into(), now);
            }
            Step::TransportClosed => session.transport_closed(),
            Step::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                session.handle_timeout(now);
            }
            Step::Send(c, k) => {
                let _ = session.send(c, k, Body::Text("x".into()));
            }
            Step::Relate(c, k, relation) => {
                let _ = session.relate(c, k, relation);
            }
            Step::History(c, n) => {
                let _ = session.history(c, None, u16::from(n).max(1));
            }
            Step::Track(c, s) => session.track(c, s),
        }
        while session.poll_transmit().is_some() {}
        while let Some(event) = session.poll_event() {
            if let Event::Entry(m) = event {
                if let Some(prev) = last.get(&m.conversation) {
                    assert!(m.seq > *prev, "seq went backwards or repeated");
                }
                last.insert(m.conversation, m.seq);
            }
        }
        assert!(session.poll_timeout().is_none_or(|t| t >= start));
    }
});
