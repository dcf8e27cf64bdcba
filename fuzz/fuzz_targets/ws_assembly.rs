//! Arbitrary WebSocket frames (any opcode, fin bit and payload) into the message
//! assembler both ends use: never a panic; every message is within the limit, valid
//! UTF-8 on a text connection, and exactly the payloads of the data frames that made
//! it, in order.
#![no_main]

use arbitrary::Arbitrary;
use chat_proto::codec::ws::{Assembled, Assembler, Opcode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    text: bool,
    max: u8,
    frames: Vec<(u8, bool, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max);
    let mut assembler = Assembler::new(input.text, max);
    // The data frames' payloads since the last whole message.
    let mut pending: Vec<u8> = Vec::new();
    for (code, fin, payload) in input.frames {
        let Some(opcode) = Opcode::from_wire(code) else {
            continue;
        };
        if matches!(opcode, Opcode::Text | Opcode::Binary | Opcode::Continuation) {
            pending.extend_from_slice(&payload);
        }
        match assembler.add(opcode, fin, &payload) {
            Ok(Some(Assembled::Message(message))) => {
                assert!(message.len() <= max, "over the limit");
                if input.text {
                    assert!(std::str::from_utf8(&message).is_ok(), "text not UTF-8");
                }
                assert_eq!(&message[..], &pending[..], "not the frames' payloads");
                pending.clear();
            }
            Ok(Some(Assembled::Ping(echo))) => assert_eq!(&echo[..], &payload[..]),
            Ok(_) => {}
            // Every error ends the connection.
            Err(_) => return,
        }
    }
});
