//! Property tests over every frame kind, generated structurally with `arbitrary`.

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use proptest::prelude::*;

use crate::codec::{self, StreamDecoder};
use crate::error::{DecodeError, EncodeError};
use crate::frame::{ClientFrame, Frame, ServerFrame};

fn build<'a, F: Arbitrary<'a>>(data: &'a [u8]) -> Option<F> {
    F::arbitrary(&mut Unstructured::new(data)).ok()
}

fn postcard_round_trip<F: Frame + PartialEq + std::fmt::Debug>(frame: &F) {
    match codec::encode_postcard(frame) {
        Ok(encoded) => {
            let decoded: F = codec::decode_postcard(&encoded.payload()).expect("decodes");
            assert_eq!(&decoded, frame);
            // Every strict prefix fails with a typed error (never a panic, never a frame
            // that differs silently).
            let payload = encoded.payload();
            for cut in 0..payload.len() {
                if let Ok(other) = codec::decode_postcard::<F>(&payload[..cut]) {
                    panic!("prefix of {cut} bytes decoded to {other:?}");
                }
            }
        }
        Err(EncodeError::TooLarge { len, max }) => assert!(len > max),
        Err(e) => panic!("encode failed: {e}"),
    }
}

fn json_round_trip<F: Frame + PartialEq + std::fmt::Debug>(frame: &F) {
    match codec::encode_json(frame) {
        Ok(text) => {
            let decoded: F = codec::decode_json(text.as_bytes()).expect("decodes");
            assert_eq!(&decoded, frame);
            let cut = text.len() / 2;
            if text.is_char_boundary(cut) {
                assert!(codec::decode_json_str::<F>(&text[..cut]).is_err());
            }
        }
        Err(EncodeError::TooLarge { len, max }) => assert!(len > max),
        Err(e) => panic!("encode failed: {e}"),
    }
}

/// Encodes frames back to back, feeds the stream in the given chunk sizes, and
/// checks that exactly the same frames come out.
fn stream_round_trip<F: Frame + PartialEq + std::fmt::Debug>(frames: &[F], chunks: &[usize]) {
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for f in frames {
        if let Ok(encoded) = codec::encode_postcard(f) {
            wire.extend_from_slice(&encoded.length_delimited());
            sent.push(f);
        }
    }
    let mut decoder = StreamDecoder::<F>::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().cycle();
    while pos < wire.len() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        while let Some(frame) = decoder.decode(&mut buf).expect("in sync") {
            got.push(frame.expect("valid frame"));
        }
    }
    decoder.finish(&buf).expect("no leftover");
    assert_eq!(got.len(), sent.len());
    for (a, b) in got.iter().zip(sent) {
        assert_eq!(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn client_frames_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Some(frame) = build::<ClientFrame>(&data) {
            postcard_round_trip(&frame);
            json_round_trip(&frame);
        }
    }

    #[test]
    fn server_frames_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Some(frame) = build::<ServerFrame>(&data) {
            postcard_round_trip(&frame);
            json_round_trip(&frame);
        }
    }

    #[test]
    fn streams_survive_any_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        if let Some(frames) = build::<Vec<ServerFrame>>(&data) {
            stream_round_trip(&frames, &chunks);
        }
        if let Some(frames) = build::<Vec<ClientFrame>>(&data) {
            stream_round_trip(&frames, &chunks);
        }
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode_postcard::<ClientFrame>(&data);
        let _ = codec::decode_postcard::<ServerFrame>(&data);
        let _ = codec::decode_json::<ClientFrame>(&data);
        let _ = codec::decode_json::<ServerFrame>(&data);
        let mut buf = BytesMut::from(&data[..]);
        let mut decoder = StreamDecoder::<ClientFrame>::new();
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }

    #[test]
    fn arbitrary_json_text_never_panics(text in ".{0,256}") {
        let _ = codec::decode_json_str::<ClientFrame>(&text);
        let _ = codec::decode_json_str::<ServerFrame>(&text);
    }

    #[test]
    fn decoded_garbage_re_encodes_to_the_same_frame(data in proptest::collection::vec(any::<u8>(), 1..256)) {
        // Whatever decodes must encode again and decode to an equal frame.
        if let Ok(frame) = codec::decode_postcard::<ClientFrame>(&data) {
            let again = codec::encode_postcard(&frame).expect("re-encodes");
            prop_assert_eq!(codec::decode_postcard::<ClientFrame>(&again.payload()), Ok(frame));
        }
    }
}

#[test]
fn decode_error_codes_are_stable() {
    use crate::error::ErrorCode;
    assert_eq!(DecodeError::Truncated.code(), ErrorCode::BadFrame);
    assert_eq!(
        DecodeError::TooLarge { len: 1, max: 0 }.code(),
        ErrorCode::FrameTooLarge
    );
}
