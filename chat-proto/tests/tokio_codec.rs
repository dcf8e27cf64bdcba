//! The tokio-util codec over an in-memory duplex pipe.
#![cfg(feature = "codec")]

use chat_proto::codec::{CodecError, PostcardCodec};
use chat_proto::error::DecodeError;
use chat_proto::prelude::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, FramedWrite};

#[tokio::test]
async fn frames_cross_a_pipe_and_bad_frames_do_not_end_the_stream() {
    let (client_io, server_io) = tokio::io::duplex(64);
    let (server_read, _server_write) = tokio::io::split(server_io);
    let mut reader = FramedRead::new(
        server_read,
        PostcardCodec::<ClientFrame, ServerFrame>::new(),
    );
    let (_client_read, mut client_write) = tokio::io::split(client_io);

    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(
            &mut client_write,
            PostcardCodec::<ServerFrame, ClientFrame>::new(),
        );
        for nonce in 0..100 {
            sink.send(&ClientFrame::Ping(Ping { nonce }))
                .await
                .expect("sent");
        }
        drop(sink);
        // An unknown kind, then one more valid frame, then a truncated frame.
        client_write
            .write_all(&[0, 0, 0, 1, 99])
            .await
            .expect("written");
        let mut sink = FramedWrite::new(
            &mut client_write,
            PostcardCodec::<ServerFrame, ClientFrame>::new(),
        );
        sink.send(&ClientFrame::Pong(Pong { nonce: 5 }))
            .await
            .expect("sent");
        drop(sink);
        client_write
            .write_all(&[0, 0, 0, 9, 1])
            .await
            .expect("written");
        client_write.shutdown().await.expect("shut down");
    });

    for nonce in 0..100 {
        let frame = reader
            .next()
            .await
            .expect("item")
            .expect("in sync")
            .expect("valid");
        assert_eq!(frame, ClientFrame::Ping(Ping { nonce }));
    }
    assert!(matches!(
        reader.next().await,
        Some(Ok(Err(DecodeError::UnknownKind(_))))
    ));
    assert_eq!(
        reader.next().await.expect("item").expect("in sync"),
        Ok(ClientFrame::Pong(Pong { nonce: 5 }))
    );
    assert!(matches!(
        reader.next().await,
        Some(Err(CodecError::Decode(DecodeError::Truncated)))
    ));
    writer.await.expect("writer finished");
}

#[tokio::test]
async fn oversized_prefix_ends_the_stream() {
    let (mut a, b) = tokio::io::duplex(64);
    let mut reader = FramedRead::new(b, PostcardCodec::<ClientFrame, ServerFrame>::new());
    a.write_all(&[0x40, 0, 0, 0]).await.expect("written");
    assert!(matches!(
        reader.next().await,
        Some(Err(CodecError::Decode(DecodeError::TooLarge { .. })))
    ));
}
