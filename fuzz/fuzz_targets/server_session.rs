//! Arbitrary client frames against the server's protocol state machine: it never
//! panics, never accepts anything but hello first, closes for good after a fatal
//! rejection, and never lets more requests in flight than the limit.
#![no_main]

use arbitrary::Arbitrary;
use chat_proto::frame::ClientFrame;
use chat_proto::ids::UserId;
use chat_proto::limits::ServerLimits;
use chat_proto::session::{Inbound, ServerSession, ServerState};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    Frame(ClientFrame),
    Accept(UserId),
    Finish,
}

fuzz_target!(|steps: Vec<Step>| {
    let limits = ServerLimits {
        max_in_flight: 4,
        ..ServerLimits::default()
    };
    let mut session = ServerSession::new(limits);
    let mut closed = false;
    for step in steps {
        match step {
            Step::Frame(frame) => {
                let before = session.state();
                let is_hello = matches!(frame, ClientFrame::Hello(_));
                match session.receive(frame) {
                    Ok(inbound) => {
                        assert!(!closed, "a closed session accepted a frame");
                        if before == ServerState::AwaitingHello {
                            assert!(is_hello && matches!(inbound, Inbound::Hello { .. }));
                        }
                    }
                    Err(rejection) => {
                        if rejection.fatal {
                            closed = true;
                        }
                    }
                }
            }
            Step::Accept(user) => {
                let _ = session.established(user);
            }
            Step::Finish => session.finished(),
        }
        if closed {
            assert_eq!(session.state(), ServerState::Closed);
        }
        assert!(session.in_flight() <= limits.max_in_flight);
    }
});
