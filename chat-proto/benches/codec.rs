//! Encode and decode costs of a typical message frame and of a 64-frame batch, in
//! postcard and JSON. Numbers and how to reproduce them: BENCHMARKS.md.

use std::hint::black_box;

use bytes::BytesMut;
use chat_proto::codec::{self, StreamDecoder};
use chat_proto::prelude::*;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A delivered text message whose postcard encoding is about 200 bytes.
fn message(n: u64) -> ServerFrame {
    ServerFrame::Message(Message {
        conversation: ConversationId::new(7_000 + n % 13).expect("id"),
        seq: Seq::new(1_000_000 + n).expect("seq"),
        id: MessageId::new(90_000_000 + n).expect("id"),
        sender: UserId::new(42_000 + n % 100).expect("id"),
        client_msg_id: ClientMsgId::new_v4([n as u8; 16]),
        sent_at: Timestamp(1_795_795_200_000 + n as i64),
        body: Body::Text(
            "Are we still on for the design review at three? I pushed the new \
             protocol draft, the resume section changed quite a bit, and I would \
             love a second pair of eyes on it. 🙂"
                .to_owned(),
        ),
    })
}

fn single(c: &mut Criterion) {
    let frame = message(1);
    let postcard = codec::encode_postcard(&frame).expect("encodes");
    let json = codec::encode_json(&frame).expect("encodes");
    let mut g = c.benchmark_group("message_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        format!("postcard_encode_{}B", postcard.payload_len()),
        |b| b.iter(|| codec::encode_postcard(black_box(&frame)).expect("encodes")),
    );
    g.bench_function(
        format!("postcard_decode_{}B", postcard.payload_len()),
        |b| {
            let payload = postcard.payload();
            b.iter(|| codec::decode_postcard::<ServerFrame>(black_box(&payload)).expect("decodes"))
        },
    );
    g.bench_function(format!("json_encode_{}B", json.len()), |b| {
        b.iter(|| codec::encode_json(black_box(&frame)).expect("encodes"))
    });
    g.bench_function(format!("json_decode_{}B", json.len()), |b| {
        b.iter(|| codec::decode_json::<ServerFrame>(black_box(json.as_bytes())).expect("decodes"))
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let frames: Vec<ServerFrame> = (0..64).map(message).collect();
    let mut wire = BytesMut::new();
    for f in &frames {
        wire.extend_from_slice(
            &codec::encode_postcard(f)
                .expect("encodes")
                .length_delimited(),
        );
    }
    let json: Vec<String> = frames
        .iter()
        .map(|f| codec::encode_json(f).expect("encodes"))
        .collect();
    let mut g = c.benchmark_group("batch_64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("postcard_encode_stream", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(wire.len());
            for f in &frames {
                out.extend_from_slice(
                    &codec::encode_postcard(black_box(f))
                        .expect("encodes")
                        .length_delimited(),
                );
            }
            out
        })
    });
    g.bench_function("postcard_decode_stream", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let mut decoder = StreamDecoder::<ServerFrame>::new();
                let mut n = 0;
                while let Some(frame) = decoder.decode(&mut buf).expect("in sync") {
                    black_box(frame.expect("valid"));
                    n += 1;
                }
                assert_eq!(n, 64);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("json_encode", |b| {
        b.iter(|| {
            frames
                .iter()
                .map(|f| codec::encode_json(black_box(f)).expect("encodes"))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("json_decode", |b| {
        b.iter(|| {
            for text in &json {
                black_box(codec::decode_json_str::<ServerFrame>(text).expect("decodes"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, single, batch);
criterion_main!(benches);
