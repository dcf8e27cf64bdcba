//! The conformance vectors (`conformance/vectors.json`): every frame of PROTOCOL.md's
//! examples in both encodings, an `error` frame for every error code, and invalid
//! inputs with the error code the spec requires for each. Generated from chat-proto and
//! checked fresh here: this test fails while the committed file differs from what the
//! code produces, and `CHAT_UPDATE_VECTORS=1 cargo test -p chat-proto --test vectors`
//! rewrites it. Every vector is also checked against the codecs, so the file states
//! what this implementation does, not what someone wrote down.

use std::path::PathBuf;

use chat_proto::body::Body;
use chat_proto::body::{Attachments, Binary, FileId, FileRef, ImageInfo};
use chat_proto::codec::{self, StreamDecoder};
use chat_proto::error::{DecodeError, ErrorCode};
use chat_proto::frame::{ClientFrame, Frame, Send, ServerFrame};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId};
use chat_proto::limits::{self, ServerLimits};
use chat_proto::session::{Inbound, ServerSession};
use chat_proto::version::ProtocolVersion;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

/// The `json client` / `json server` examples of PROTOCOL.md with the section each is in.
fn examples() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(root().join("PROTOCOL.md")).expect("PROTOCOL.md");
    let mut out = Vec::new();
    let mut section = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line
            .strip_prefix("#### ")
            .or_else(|| line.strip_prefix("### "))
        {
            section = h.split_whitespace().next().unwrap_or_default().to_owned();
        }
        let direction = match line.trim() {
            "```json client" => "client",
            "```json server" => "server",
            _ => continue,
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        out.push((section.clone(), direction.to_owned(), body.join("\n")));
    }
    out
}

fn since(v: ProtocolVersion) -> String {
    v.to_string()
}

/// A valid frame vector: its JSON and postcard forms, checked to round-trip.
fn valid<F: Frame + PartialEq + std::fmt::Debug>(
    section: &str,
    direction: &str,
    frame: &F,
    kind: &str,
    since_version: ProtocolVersion,
) -> Value {
    let json_text = codec::encode_json(frame).expect("encodes");
    let postcard = codec::encode_postcard(frame)
        .expect("encodes")
        .payload()
        .to_vec();
    assert_eq!(
        codec::decode_json::<F>(json_text.as_bytes()).as_ref(),
        Ok(frame)
    );
    assert_eq!(codec::decode_postcard::<F>(&postcard).as_ref(), Ok(frame));
    json!({
        "section": section,
        "direction": direction,
        "kind": kind,
        "since": since(since_version),
        "json": json_text,
        "postcard": hex(&postcard),
    })
}

/// An invalid input and the code a receiver answers it with, checked against this
/// implementation's decoders (and, for sections 9.2 and 5.3, its server session).
struct Invalid {
    name: &'static str,
    section: &'static str,
    direction: &'static str,
    encoding: &'static str,
    input: Vec<u8>,
    code: ErrorCode,
    fatal: bool,
}

impl Invalid {
    fn to_json(&self) -> Value {
        let input = match self.encoding {
            "json" => match std::str::from_utf8(&self.input) {
                Ok(text) if self.input.len() <= 200 => json!({ "text": text }),
                _ if self.input.len() <= 200 => json!({ "hex": hex(&self.input) }),
                // Oversized inputs are described, not spelled out.
                _ => {
                    json!({ "repeat": { "prefix": String::from_utf8_lossy(&self.input[..8]), "length": self.input.len() } })
                }
            },
            _ if self.input.len() <= 200 => json!({ "hex": hex(&self.input) }),
            _ => {
                json!({ "repeat": { "prefix": hex(&self.input[..8]), "length": self.input.len() } })
            }
        };
        json!({
            "name": self.name,
            "section": self.section,
            "direction": self.direction,
            "encoding": self.encoding,
            "input": input,
            "error": self.code.as_str(),
            "fatal": self.fatal,
        })
    }
}

/// What this implementation's decoder says of `input` on `encoding`.
fn decoded<F: Frame>(encoding: &str, input: &[u8]) -> Result<F, DecodeError> {
    match encoding {
        "json" => codec::decode_json::<F>(input),
        "postcard" => codec::decode_postcard::<F>(input),
        "stream" => {
            let mut buf = bytes::BytesMut::from(input);
            let mut decoder = StreamDecoder::<F>::new();
            match decoder.decode(&mut buf)? {
                Some(frame) => frame,
                None => Err(DecodeError::Truncated),
            }
        }
        other => panic!("unknown encoding {other}"),
    }
}

fn send(body: Body) -> ClientFrame {
    ClientFrame::Send(Send {
        request_id: RequestId(1),
        conversation: ConversationId::new(7).expect("id"),
        client_msg_id: ClientMsgId::from_bytes([1; 16]),
        body,
    })
}

fn invalid_inputs() -> Vec<Invalid> {
    let client_example = codec::encode_postcard(&send(Body::Text("hi".into())))
        .expect("encodes")
        .payload()
        .to_vec();
    let client_json = codec::encode_json(&send(Body::Text("hi".into()))).expect("encodes");
    let mut cases = vec![
        Invalid {
            name: "postcard frame cut short",
            section: "4.1",
            direction: "client",
            encoding: "postcard",
            input: client_example[..client_example.len() - 1].to_vec(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "empty postcard frame",
            section: "4.1",
            direction: "client",
            encoding: "postcard",
            input: vec![],
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "postcard frame kind past the known ones",
            section: "2",
            direction: "client",
            encoding: "postcard",
            input: vec![ClientFrame::KINDS.len() as u8, 1, 2, 3],
            code: ErrorCode::UnsupportedFrame,
            fatal: false,
        },
        Invalid {
            name: "conversation id zero",
            section: "3",
            direction: "client",
            encoding: "postcard",
            // send: request 1, conversation 0, …
            input: [&[1u8, 1, 0][..], &[1; 16], &[0, 2, b'h', b'i']].concat(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "bool byte other than 00 or 01",
            section: "4.1",
            direction: "client",
            encoding: "postcard",
            // typing: conversation 7, active = 02
            input: vec![4, 7, 2],
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "postcard frame one byte over MAX_CLIENT_FRAME",
            section: "8",
            direction: "client",
            encoding: "postcard",
            input: vec![1; limits::MAX_CLIENT_FRAME + 1],
            code: ErrorCode::FrameTooLarge,
            fatal: true,
        },
        Invalid {
            name: "stream length prefix over MAX_CLIENT_FRAME",
            section: "4.1",
            direction: "client",
            encoding: "stream",
            input: ((limits::MAX_CLIENT_FRAME + 1) as u32)
                .to_be_bytes()
                .to_vec(),
            code: ErrorCode::FrameTooLarge,
            fatal: true,
        },
        Invalid {
            name: "not JSON",
            section: "4.2",
            direction: "client",
            encoding: "json",
            input: b"{not json".to_vec(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "JSON frame with two members",
            section: "4.2",
            direction: "client",
            encoding: "json",
            input: br#"{"ping":{"nonce":1},"pong":{"nonce":1}}"#.to_vec(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "JSON frame kind unknown",
            section: "2",
            direction: "client",
            encoding: "json",
            input: br#"{"teleport":{"to":"mars"}}"#.to_vec(),
            code: ErrorCode::UnsupportedFrame,
            fatal: false,
        },
        Invalid {
            name: "JSON text that is not UTF-8",
            section: "4.2",
            direction: "client",
            encoding: "json",
            input: [
                &br#"{"send":{"body":{"text":""#[..],
                &[0xff, 0xfe],
                br#""}}}"#,
            ]
            .concat(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "id of 2^53, past the largest exact JavaScript number",
            section: "3",
            direction: "client",
            encoding: "json",
            input: client_json
                .replace("\"conversation\":7", "\"conversation\":9007199254740992")
                .into_bytes(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "required field missing",
            section: "4.2",
            direction: "client",
            encoding: "json",
            input: br#"{"mark_read":{"request_id":1,"conversation":7}}"#.to_vec(),
            code: ErrorCode::BadFrame,
            fatal: false,
        },
        Invalid {
            name: "JSON frame one byte over MAX_CLIENT_FRAME_JSON",
            section: "8",
            direction: "client",
            encoding: "json",
            input: {
                let mut v = br#"{"ping":{"nonce":1}}"#.to_vec();
                v.resize(limits::MAX_CLIENT_FRAME_JSON + 1, b' ');
                v
            },
            code: ErrorCode::FrameTooLarge,
            fatal: true,
        },
        Invalid {
            name: "server frame kind past the known ones",
            section: "2",
            direction: "server",
            encoding: "postcard",
            input: vec![ServerFrame::KINDS.len() as u8, 0],
            code: ErrorCode::UnsupportedFrame,
            fatal: false,
        },
    ];
    // Decoded and refused by the session: limits + 1 and empty values (§9.2).
    let session = |name, input: ClientFrame, code| Invalid {
        name,
        section: "9.2",
        direction: "client",
        encoding: "json",
        input: codec::encode_json(&input).expect("encodes").into_bytes(),
        code,
        fatal: false,
    };
    cases.push(session(
        "text body one byte over max_text_body",
        send(Body::Text("x".repeat(limits::MAX_TEXT_BODY + 1))),
        ErrorCode::BodyTooLarge,
    ));
    cases.push(session(
        "empty text body",
        send(Body::Text(String::new())),
        ErrorCode::InvalidRequest,
    ));
    cases.push(session(
        "history page limit zero",
        ClientFrame::History(chat_proto::frame::History {
            request_id: RequestId(2),
            conversation: ConversationId::new(7).expect("id"),
            before: None,
            limit: 0,
        }),
        ErrorCode::InvalidRequest,
    ));
    cases.push(session(
        "history page limit over max_page",
        ClientFrame::History(chat_proto::frame::History {
            request_id: RequestId(3),
            conversation: ConversationId::new(7).expect("id"),
            before: None,
            limit: limits::MAX_PAGE + 1,
        }),
        ErrorCode::InvalidRequest,
    ));
    cases.push(session(
        "reaction of two emoji",
        ClientFrame::Relate(chat_proto::frame::Relate {
            request_id: RequestId(4),
            conversation: ConversationId::new(7).expect("id"),
            client_msg_id: ClientMsgId::from_bytes([2; 16]),
            relation: chat_proto::entry::Relation::React {
                target: chat_proto::ids::Seq::new(1).expect("seq"),
                reaction: chat_proto::entry::Reaction::Emoji("👍👍".into()),
            },
        }),
        ErrorCode::InvalidRequest,
    ));
    // Files in messages (§5.3).
    let file = |id: &str, name: &str, media_type: &str| FileRef {
        id: FileId(id.into()),
        name: name.into(),
        size: 10,
        media_type: media_type.into(),
        image: None,
    };
    let good = "9f86d081884c7d659a2feaa0c55ad015";
    let attachments = |files: Vec<FileRef>| {
        send(Body::Attachments(Attachments {
            text: String::new(),
            files,
        }))
    };
    let mut file_cases = vec![
        ("message with no files", attachments(vec![])),
        (
            "message with files over MAX_FILES",
            attachments(
                (0..=limits::MAX_FILES)
                    .map(|i| file(&format!("{i:032x}"), "a.txt", "text/plain"))
                    .collect(),
            ),
        ),
        (
            "file id not 32 lowercase hex digits",
            attachments(vec![file(
                "9F86D081884C7D659A2FEAA0C55AD015",
                "a.txt",
                "text/plain",
            )]),
        ),
        (
            "same file twice in a message",
            attachments(vec![
                file(good, "a.txt", "text/plain"),
                file(good, "b.txt", "text/plain"),
            ]),
        ),
        (
            "file name with a control character",
            attachments(vec![file(good, "a\nb.txt", "text/plain")]),
        ),
        (
            "file name over MAX_FILE_NAME",
            attachments(vec![file(
                good,
                &"n".repeat(limits::MAX_FILE_NAME + 1),
                "text/plain",
            )]),
        ),
        (
            "media type without a subtype",
            attachments(vec![file(good, "a.txt", "text")]),
        ),
    ];
    let mut thumb = file(good, "a.png", "image/png");
    thumb.image = Some(ImageInfo {
        width: 1,
        height: 1,
        thumbnail: Some(Binary::from(vec![0; limits::MAX_THUMBNAIL + 1])),
    });
    file_cases.push(("thumbnail over MAX_THUMBNAIL", attachments(vec![thumb])));
    for (name, frame) in file_cases {
        let mut case = session(name, frame, ErrorCode::InvalidRequest);
        case.section = "5.3";
        cases.push(case);
    }
    cases
}

/// Checks each invalid input against this implementation; returns it as JSON.
fn checked(case: &Invalid) -> Value {
    if matches!(case.section, "9.2" | "5.3") {
        // Decodes, then the established session refuses it.
        let frame: ClientFrame = codec::decode_json(&case.input).expect("decodes");
        let mut session = ServerSession::new(ServerLimits::default());
        let hello = ClientFrame::Hello(chat_proto::frame::Hello {
            version: ProtocolVersion::CURRENT,
            token: "t".into(),
            client: String::new(),
            resume: vec![],
        });
        assert!(matches!(session.receive(hello), Ok(Inbound::Hello { .. })));
        session
            .established(chat_proto::ids::UserId::new(1).expect("id"))
            .expect("established");
        let refused = session.receive(frame).expect_err(case.name);
        assert_eq!(
            (refused.code, refused.fatal),
            (case.code, case.fatal),
            "{}",
            case.name
        );
    } else {
        let error = match case.direction {
            "client" => decoded::<ClientFrame>(case.encoding, &case.input).map(|_| ()),
            _ => decoded::<ServerFrame>(case.encoding, &case.input).map(|_| ()),
        }
        .expect_err(case.name);
        assert_eq!(error.code(), case.code, "{}: {error}", case.name);
        assert_eq!(case.code.is_fatal(), case.fatal, "{}", case.name);
    }
    case.to_json()
}

fn vectors() -> Value {
    let mut frames = Vec::new();
    for (section, direction, json_text) in examples() {
        frames.push(match direction.as_str() {
            "client" => {
                let f: ClientFrame = codec::decode_json_str(&json_text).expect("example decodes");
                valid(&section, "client", &f, f.kind(), f.since())
            }
            _ => {
                let f: ServerFrame = codec::decode_json_str(&json_text).expect("example decodes");
                let since_version = match &f {
                    ServerFrame::Entry(_) | ServerFrame::Entries(_) => ProtocolVersion::RELATIONS,
                    _ => ProtocolVersion { major: 1, minor: 0 },
                };
                valid(&section, "server", &f, f.kind(), since_version)
            }
        });
    }
    // One `error` frame per code, with the version that defines it.
    for code in ErrorCode::ALL {
        let f = ServerFrame::error(Some(RequestId(1)), code, code.as_str());
        frames.push(valid("7", "server", &f, "error", code.since()));
    }
    let invalid: Vec<Value> = invalid_inputs().iter().map(checked).collect();
    json!({
        "about": "Conformance vectors of the chat protocol (PROTOCOL.md), generated from chat-proto by chat-proto/tests/vectors.rs. See conformance/README.md.",
        "version": since(ProtocolVersion::CURRENT),
        "frames": frames,
        "invalid": invalid,
    })
}

#[test]
fn conformance_vectors_are_fresh() {
    let path = root().join("conformance").join("vectors.json");
    let fresh = serde_json::to_string_pretty(&vectors()).expect("serializes") + "\n";
    if std::env::var_os("CHAT_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("create conformance/");
        std::fs::write(&path, &fresh).expect("write vectors");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "conformance/vectors.json is stale: run CHAT_UPDATE_VECTORS=1 cargo test -p chat-proto --test vectors"
    );
}

#[test]
fn every_frame_kind_and_error_code_has_a_vector() {
    let v = vectors();
    let kinds: std::collections::BTreeSet<(String, String)> = v["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            (
                f["direction"].as_str().expect("direction").to_owned(),
                f["kind"].as_str().expect("kind").to_owned(),
            )
        })
        .collect();
    for k in ClientFrame::KINDS {
        assert!(
            kinds.contains(&("client".into(), (*k).into())),
            "client {k}"
        );
    }
    for k in ServerFrame::KINDS {
        assert!(
            kinds.contains(&("server".into(), (*k).into())),
            "server {k}"
        );
    }
    let codes: std::collections::BTreeSet<&str> = v["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .filter(|f| f["kind"] == "error")
        .filter_map(|f| {
            let frame: ServerFrame = codec::decode_json_str(f["json"].as_str()?).ok()?;
            match frame {
                ServerFrame::Error(e) => Some(e.code.as_str()),
                _ => None,
            }
        })
        .collect();
    assert_eq!(codes.len(), ErrorCode::ALL.len());
}
