//! The length-delimited stream decoder fed arbitrary bytes in arbitrary chunkings: the
//! frames that come out do not depend on how the bytes were cut, and nothing panics.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use chat_proto::codec::StreamDecoder;
use chat_proto::frame::ClientFrame;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    bytes: Vec<u8>,
    cuts: Vec<u8>,
}

type Outcome = Vec<Result<ClientFrame, String>>;

fn run(bytes: &[u8], cuts: &[u8]) -> (Outcome, bool) {
    let mut decoder = StreamDecoder::<ClientFrame>::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = cuts
        .iter()
        .map(|&c| usize::from(c).max(1))
        .chain(std::iter::repeat(usize::MAX));
    while pos < bytes.len() {
        let n = sizes.next().unwrap_or(usize::MAX).min(bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => out.push(frame.map_err(|e| e.to_string())),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|input: Input| {
    let whole = run(&input.bytes, &[]);
    let chunked = run(&input.bytes, &input.cuts);
    assert_eq!(whole, chunked, "chunking changed the decoded frames");
});
