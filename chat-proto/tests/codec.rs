//! Golden vectors and every way an input can be wrong, per codec.

use bytes::BytesMut;
use chat_proto::codec::{self, StreamDecoder};
use chat_proto::error::{DecodeError, EncodeError, UnknownKind};
use chat_proto::limits::{MAX_CLIENT_FRAME, MAX_CLIENT_FRAME_JSON, MAX_DATAGRAM, MAX_SERVER_FRAME};
use chat_proto::prelude::*;

fn conv(n: u64) -> ConversationId {
    ConversationId::new(n).expect("valid id")
}

fn text_send(text: &str) -> ClientFrame {
    ClientFrame::Send(Send {
        request_id: RequestId(1),
        conversation: conv(7),
        client_msg_id: ClientMsgId::from_bytes([0xab; 16]),
        body: Body::Text(text.to_owned()),
    })
}

#[test]
fn golden_postcard_send() {
    let frame = text_send("hi");
    let payload = codec::encode_postcard(&frame).expect("encodes").payload();
    let mut expected = vec![0x01, 0x01, 0x07];
    expected.extend_from_slice(&[0xab; 16]);
    expected.extend_from_slice(&[0x00, 0x02, b'h', b'i']);
    assert_eq!(&payload[..], &expected[..]);
}

#[test]
fn golden_json_send() {
    let json = codec::encode_json(&text_send("hi")).expect("encodes");
    assert_eq!(
        json,
        r#"{"send":{"request_id":1,"conversation":7,"client_msg_id":"abababab-abab-abab-abab-abababababab","body":{"text":"hi"}}}"#
    );
}

#[test]
fn truncated_inputs_are_typed_errors() {
    assert_eq!(
        codec::decode_postcard::<ClientFrame>(&[]),
        Err(DecodeError::Truncated)
    );
    let payload = codec::encode_postcard(&text_send("hello"))
        .expect("encodes")
        .payload();
    assert_eq!(
        codec::decode_postcard::<ClientFrame>(&payload[..payload.len() - 1]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        codec::decode_json_str::<ClientFrame>(r#"{"send":{"request_id":1"#),
        Err(DecodeError::Truncated)
    );
    // A stream that ends inside a frame.
    let mut buf = BytesMut::from(
        &codec::encode_postcard(&text_send("x"))
            .expect("encodes")
            .length_delimited()[..5],
    );
    let mut decoder = StreamDecoder::<ClientFrame>::new();
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.finish(&buf), Err(DecodeError::Truncated));
}

#[test]
fn oversized_inputs_are_refused_before_allocation() {
    // A 4 GiB length prefix: refused from the 4 header bytes alone, nothing reserved.
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x00][..]);
    let capacity = buf.capacity();
    let mut decoder = StreamDecoder::<ClientFrame>::new();
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::TooLarge {
            len: u64::from(u32::MAX),
            max: MAX_CLIENT_FRAME
        })
    );
    assert_eq!(buf.capacity(), capacity);
    // One byte over the client limit; the server limit is larger.
    let over = (MAX_CLIENT_FRAME as u32 + 1).to_be_bytes();
    assert!(matches!(
        StreamDecoder::<ClientFrame>::new().decode(&mut BytesMut::from(&over[..])),
        Err(DecodeError::TooLarge { .. })
    ));
    assert_eq!(
        StreamDecoder::<ServerFrame>::new().decode(&mut BytesMut::from(&over[..])),
        Ok(None)
    );
    let too_big = vec![0u8; MAX_CLIENT_FRAME + 1];
    assert!(matches!(
        codec::decode_postcard::<ClientFrame>(&too_big),
        Err(DecodeError::TooLarge { .. })
    ));
    let too_big_json = " ".repeat(MAX_CLIENT_FRAME_JSON + 1);
    assert!(matches!(
        codec::decode_json::<ClientFrame>(too_big_json.as_bytes()),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        codec::decode_postcard::<ServerFrame>(&vec![0u8; MAX_SERVER_FRAME + 1]),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn encoders_refuse_frames_the_peer_would_refuse() {
    let huge = "x".repeat(MAX_CLIENT_FRAME);
    assert!(matches!(
        codec::encode_postcard(&text_send(&huge)),
        Err(EncodeError::TooLarge { .. })
    ));
    // JSON escapes control characters as \u00XX: six bytes each.
    let escaped = "\u{1}".repeat(MAX_CLIENT_FRAME_JSON / 6 + 1);
    assert!(matches!(
        codec::encode_json(&text_send(&escaped)),
        Err(EncodeError::TooLarge { .. })
    ));
}

#[test]
fn garbage_is_malformed() {
    // Kind 1 (send) with a zero conversation id: ids start at 1.
    assert!(matches!(
        codec::decode_postcard::<ClientFrame>(&[0x01, 0x01, 0x00]),
        Err(DecodeError::Malformed(_))
    ));
    // A bool that is neither 0 nor 1.
    assert!(matches!(
        codec::decode_postcard::<ClientFrame>(&[0x04, 0x07, 0x02]),
        Err(DecodeError::Malformed(_))
    ));
    // Over-long varint for the kind.
    assert!(matches!(
        codec::decode_postcard::<ClientFrame>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(DecodeError::Malformed(_))
    ));
    for text in [
        "",
        "null",
        "[]",
        "{}",
        r#"{"ping":{"nonce":7},"pong":{"nonce":7}}"#,
        r#"{"ping":{"nonce":"seven"}}"#,
        r#"{"ping":{"nonce":-1}}"#,
        r#"{"send":{"request_id":1,"conversation":9007199254740992,"client_msg_id":"abababab-abab-abab-abab-abababababab","body":{"text":"x"}}}"#,
        r#"{"send":{"request_id":1,"conversation":7,"client_msg_id":"not-a-uuid","body":{"text":"x"}}}"#,
        r#"{"send":{"request_id":1,"conversation":7,"client_msg_id":"abababab-abab-abab-abab-abababababab","body":{"encrypted":"%%%"}}}"#,
        r#"{"ping":{"nonce":7}} trailing"#,
    ] {
        let result = codec::decode_json_str::<ClientFrame>(text);
        assert!(
            matches!(
                result,
                Err(DecodeError::Malformed(_) | DecodeError::Truncated)
            ),
            "{text:?} gave {result:?}"
        );
    }
}

#[test]
fn invalid_utf8_is_its_own_error() {
    assert_eq!(
        codec::decode_json::<ClientFrame>(b"{\"ping\":{\"nonce\":7}}\xff"),
        Err(DecodeError::InvalidUtf8)
    );
    // In postcard, a string with invalid UTF-8 is a malformed frame.
    let mut frame = codec::encode_postcard(&text_send("ok"))
        .expect("encodes")
        .payload()
        .to_vec();
    let last = frame.len() - 1;
    frame[last] = 0xff;
    assert!(matches!(
        codec::decode_postcard::<ClientFrame>(&frame),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn unknown_kinds_are_recognised_and_keep_the_stream_in_sync() {
    let n = ClientFrame::KINDS.len() as u32;
    assert_eq!(
        codec::decode_postcard::<ClientFrame>(&[n as u8, 1, 2, 3]),
        Err(DecodeError::UnknownKind(UnknownKind::Index(n)))
    );
    assert_eq!(
        codec::decode_json_str::<ClientFrame>(r#"{"reaction":{"emoji":"+1"}}"#),
        Err(DecodeError::UnknownKind(UnknownKind::Name(
            "reaction".into()
        )))
    );
    assert_eq!(
        DecodeError::UnknownKind(UnknownKind::Index(9)).code(),
        ErrorCode::UnsupportedFrame
    );
    // On a stream: unknown frame, then a valid one; both come out, in order.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0, 0, 0, 3, n as u8, 0xaa, 0xbb]);
    buf.extend_from_slice(
        &codec::encode_postcard(&ClientFrame::Ping(Ping { nonce: 1 }))
            .expect("encodes")
            .length_delimited(),
    );
    let mut decoder = StreamDecoder::<ClientFrame>::new();
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Err(DecodeError::UnknownKind(_))))
    ));
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Ok(ClientFrame::Ping(Ping { nonce: 1 }))))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(None));
}

#[test]
fn newer_minor_versions_may_append_fields() {
    // A newer peer appends a field to `ping`: postcard ignores the trailing bytes...
    assert_eq!(
        codec::decode_postcard::<ClientFrame>(&[0x06, 0x07, 0x2a, 0x01]),
        Ok(ClientFrame::Ping(Ping { nonce: 7 }))
    );
    // ...and JSON ignores the unknown member.
    assert_eq!(
        codec::decode_json_str::<ClientFrame>(r#"{"ping":{"nonce":7,"sent_at":1}}"#),
        Ok(ClientFrame::Ping(Ping { nonce: 7 }))
    );
    // Optional fields may be null or missing in JSON.
    let with_null = r#"{"history":{"request_id":1,"conversation":7,"before":null,"limit":5}}"#;
    let missing = r#"{"history":{"request_id":1,"conversation":7,"limit":5}}"#;
    assert_eq!(
        codec::decode_json_str::<ClientFrame>(with_null),
        codec::decode_json_str::<ClientFrame>(missing)
    );
    assert!(codec::decode_json_str::<ClientFrame>(missing).is_ok());
}

#[test]
fn wrong_major_version_is_refused_by_the_server_session() {
    use chat_proto::session::ServerSession;
    let mut session = ServerSession::new(ServerLimits::default());
    let rejection = session
        .receive(ClientFrame::Hello(Hello {
            version: ProtocolVersion { major: 2, minor: 0 },
            token: "t".into(),
            client: String::new(),
            resume: vec![],
        }))
        .expect_err("refused");
    assert_eq!(rejection.code, ErrorCode::UnsupportedVersion);
    assert!(rejection.fatal);
}

#[test]
fn one_encoding_serves_stream_and_message_transports() {
    let frame = ServerFrame::Typing(Typing {
        conversation: conv(7),
        user: UserId::new(43).expect("id"),
        active: true,
    });
    let encoded = codec::encode_postcard(&frame).expect("encodes");
    let stream = encoded.length_delimited();
    let message = encoded.payload();
    assert_eq!(&stream[4..], &message[..]);
    // The payload is a view into the same allocation, not a copy.
    assert_eq!(stream[4..].as_ptr(), message.as_ptr());
    assert_eq!(encoded.payload_len(), 4);
}

#[test]
fn datagrams_carry_one_small_typing_frame() {
    let typing = ClientFrame::Typing(SetTyping {
        conversation: conv(7),
        active: true,
    });
    let payload = codec::encode_postcard(&typing).expect("encodes").payload();
    assert_eq!(&payload[..], &[0x04, 0x07, 0x01]);
    let back: ClientFrame = codec::decode_datagram(&payload).expect("decodes");
    assert!(back.datagram_allowed());
    assert_eq!(back, typing);
    let relayed = ServerFrame::Typing(Typing {
        conversation: conv(7),
        user: UserId::new(u64::from(u32::MAX)).expect("id"),
        active: false,
    });
    let payload = codec::encode_postcard(&relayed).expect("encodes").payload();
    let back: ServerFrame = codec::decode_datagram(&payload).expect("decodes");
    assert!(back.datagram_allowed());

    // Other kinds decode (the receiver discards them), and nothing past the limit is read.
    let send: ClientFrame = codec::decode_datagram(
        &codec::encode_postcard(&text_send("hi"))
            .expect("encodes")
            .payload(),
    )
    .expect("decodes");
    assert!(!send.datagram_allowed());
    let ping = ServerFrame::Ping(Ping { nonce: 1 });
    assert!(!ping.datagram_allowed());
    let big = codec::encode_postcard(&text_send(&"x".repeat(MAX_DATAGRAM)))
        .expect("encodes")
        .payload();
    assert_eq!(
        codec::decode_datagram::<ClientFrame>(&big),
        Err(DecodeError::TooLarge {
            len: big.len() as u64,
            max: MAX_DATAGRAM
        })
    );
}
