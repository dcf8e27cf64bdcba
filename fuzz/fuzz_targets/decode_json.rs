//! Arbitrary bytes as one JSON frame (the browser subprotocol), both directions.
#![no_main]

use chat_proto::codec;
use chat_proto::frame::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fn check<F: chat_proto::frame::Frame + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(frame) = codec::decode_json::<F>(data) {
        let again = codec::encode_json(&frame).expect("a decoded frame re-encodes");
        let back = codec::decode_json_str::<F>(&again).expect("and decodes");
        assert_eq!(back, frame);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ClientFrame>(data);
    check::<ServerFrame>(data);
});
