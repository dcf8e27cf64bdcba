//! Arbitrary bytes as one postcard frame, both directions, in a message or a QUIC
//! datagram: decoding never panics, whatever decodes re-encodes to a frame that
//! decodes equal, and a datagram decodes exactly when it is small enough and the same
//! bytes decode as a message.
#![no_main]

use chat_proto::codec;
use chat_proto::frame::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fn check<F: chat_proto::frame::Frame + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(frame) = codec::decode_postcard::<F>(data) {
        let again = codec::encode_postcard(&frame).expect("a decoded frame re-encodes");
        let back = codec::decode_postcard::<F>(&again.payload()).expect("and decodes");
        assert_eq!(back, frame);
    }
    let datagram = codec::decode_datagram::<F>(data);
    if data.len() <= chat_proto::limits::MAX_DATAGRAM {
        assert_eq!(datagram, codec::decode_postcard::<F>(data));
    } else {
        assert!(datagram.is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ClientFrame>(data);
    check::<ServerFrame>(data);
});
