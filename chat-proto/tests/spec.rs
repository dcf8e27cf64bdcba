//! Keeps PROTOCOL.md true: every example decodes, re-encodes to the same JSON and to
//! the postcard bytes printed beside it; every frame kind has an example; the error
//! code and limit tables match the code.
//!
//! `BLESS=1 cargo test -p chat-proto --test spec` rewrites the postcard blocks from the
//! JSON examples (review the diff before committing).

use std::collections::BTreeSet;
use std::path::PathBuf;

use chat_proto::codec;
use chat_proto::error::ErrorCode;
use chat_proto::frame::{ClientFrame, Frame, ServerFrame};
use chat_proto::limits;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../PROTOCOL.md")
}

/// A fenced code block: its info string, its content and where the content lies.
struct Block {
    info: String,
    content: String,
    start: usize,
    end: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(open) = text[pos..].find("```") {
        let open = pos + open;
        let Some(line_end) = text[open..].find('\n') else {
            break;
        };
        let info = text[open + 3..open + line_end].trim().to_owned();
        let start = open + line_end + 1;
        let Some(close) = text[start..].find("```") else {
            break;
        };
        let end = start + close;
        out.push(Block {
            info,
            content: text[start..end].to_owned(),
            start,
            end,
        });
        pos = end + 3;
    }
    out
}

fn hex_rows(bytes: &[u8]) -> String {
    let mut s = String::new();
    for row in bytes.chunks(16) {
        let line: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    s
}

fn parse_hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex byte {h:?}")))
        .collect()
}

/// Checks one example; returns (kind, postcard bytes).
fn check_example<F: Frame + PartialEq + std::fmt::Debug>(
    json: &str,
    kind_of: impl Fn(&F) -> &'static str,
) -> (&'static str, Vec<u8>) {
    let json = json.trim();
    let frame: F = codec::decode_json_str(json)
        .unwrap_or_else(|e| panic!("spec example does not decode: {e}\n{json}"));
    // The example is exactly what an encoder produces (same members, same values).
    let expected: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    let produced: serde_json::Value =
        serde_json::from_str(&codec::encode_json(&frame).expect("encodes")).expect("valid JSON");
    assert_eq!(produced, expected, "JSON example is not canonical");
    let encoded = codec::encode_postcard(&frame).expect("encodes");
    let bytes = encoded.payload().to_vec();
    assert_eq!(codec::decode_postcard::<F>(&bytes).as_ref(), Ok(&frame));
    (kind_of(&frame), bytes)
}

#[test]
fn protocol_md_examples_are_exact() {
    let path = spec_path();
    let text = std::fs::read_to_string(&path).expect("PROTOCOL.md is readable");
    let bless = std::env::var_os("BLESS").is_some();
    let all = blocks(&text);
    let mut client_kinds = BTreeSet::new();
    let mut server_kinds = BTreeSet::new();
    let mut replacements = Vec::new();
    let mut examples = 0;
    for (i, block) in all.iter().enumerate() {
        let (kind, bytes) = match block.info.as_str() {
            "json client" => {
                let (k, b) = check_example::<ClientFrame>(&block.content, ClientFrame::kind);
                client_kinds.insert(k);
                (k, b)
            }
            "json server" => {
                let (k, b) = check_example::<ServerFrame>(&block.content, ServerFrame::kind);
                server_kinds.insert(k);
                (k, b)
            }
            _ => continue,
        };
        examples += 1;
        let next = all
            .get(i + 1)
            .filter(|b| b.info == "postcard")
            .unwrap_or_else(|| panic!("example of {kind} has no postcard block after it"));
        if bless {
            replacements.push((next.start, next.end, hex_rows(&bytes)));
        } else {
            assert_eq!(
                parse_hex(&next.content),
                bytes,
                "postcard bytes of the {kind} example differ; expected:\n{}",
                hex_rows(&bytes)
            );
        }
    }
    if bless {
        let mut text = text.clone();
        for (start, end, hex) in replacements.into_iter().rev() {
            text.replace_range(start..end, &hex);
        }
        std::fs::write(&path, text).expect("PROTOCOL.md is writable");
    }
    assert!(examples >= ClientFrame::KINDS.len() + ServerFrame::KINDS.len());
    let want_client: BTreeSet<_> = ClientFrame::KINDS.iter().copied().collect();
    let want_server: BTreeSet<_> = ServerFrame::KINDS.iter().copied().collect();
    assert_eq!(
        client_kinds, want_client,
        "every client frame kind has an example"
    );
    assert_eq!(
        server_kinds, want_server,
        "every server frame kind has an example"
    );
}

/// Rows of the markdown table that follows `heading`.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn frame_kind_tables_match_the_code() {
    let text = std::fs::read_to_string(spec_path()).expect("PROTOCOL.md");
    for (heading, kinds) in [
        ("### 6.1 Client frames", ClientFrame::KINDS),
        ("### 6.2 Server frames", ServerFrame::KINDS),
    ] {
        let rows = table_after(&text, heading);
        assert_eq!(rows.len(), kinds.len(), "{heading}");
        for (i, (row, kind)) in rows.iter().zip(kinds).enumerate() {
            assert_eq!(row[0], i.to_string(), "{heading}");
            assert_eq!(row[1], *kind, "{heading}");
        }
    }
}

#[test]
fn error_table_matches_the_code() {
    let text = std::fs::read_to_string(spec_path()).expect("PROTOCOL.md");
    let rows = table_after(&text, "## 7. Errors");
    assert_eq!(rows.len(), ErrorCode::ALL.len());
    for (i, (row, code)) in rows.iter().zip(ErrorCode::ALL).enumerate() {
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1], code.as_str());
        assert_eq!(row[2] == "yes", code.is_fatal(), "fatality of {code}");
        // The JSON name and the postcard index are what the table says.
        assert_eq!(
            serde_json::to_string(&code).ok(),
            Some(format!("\"{}\"", code.as_str()))
        );
        assert_eq!(postcard::to_allocvec(&code).ok(), Some(vec![i as u8]));
    }
}

#[test]
fn limits_table_matches_the_code() {
    let text = std::fs::read_to_string(spec_path()).expect("PROTOCOL.md");
    let rows = table_after(&text, "## 8. Limits");
    let ms = |d: std::time::Duration| format!("{} ms", d.as_millis());
    let expected: Vec<(&str, String)> = vec![
        ("MAX_CLIENT_FRAME", limits::MAX_CLIENT_FRAME.to_string()),
        ("MAX_SERVER_FRAME", limits::MAX_SERVER_FRAME.to_string()),
        (
            "MAX_CLIENT_FRAME_JSON",
            limits::MAX_CLIENT_FRAME_JSON.to_string(),
        ),
        (
            "MAX_SERVER_FRAME_JSON",
            limits::MAX_SERVER_FRAME_JSON.to_string(),
        ),
        ("MAX_TEXT_BODY", limits::MAX_TEXT_BODY.to_string()),
        ("MAX_ENVELOPE", limits::MAX_ENVELOPE.to_string()),
        ("MAX_TOKEN", limits::MAX_TOKEN.to_string()),
        ("MAX_CLIENT_NAME", limits::MAX_CLIENT_NAME.to_string()),
        ("MAX_RESUME_CURSORS", limits::MAX_RESUME_CURSORS.to_string()),
        ("MAX_PAGE", limits::MAX_PAGE.to_string()),
        ("MAX_ERROR_MESSAGE", limits::MAX_ERROR_MESSAGE.to_string()),
        ("MAX_IN_FLIGHT", limits::MAX_IN_FLIGHT.to_string()),
        ("MAX_REPLAY", limits::MAX_REPLAY.to_string()),
        ("MAX_DATAGRAM", limits::MAX_DATAGRAM.to_string()),
        ("MAX_REACTION", limits::MAX_REACTION.to_string()),
        ("MAX_REACTIONS", limits::MAX_REACTIONS.to_string()),
        ("MAX_FILES", limits::MAX_FILES.to_string()),
        ("MAX_FILE_NAME", limits::MAX_FILE_NAME.to_string()),
        ("MAX_MEDIA_TYPE", limits::MAX_MEDIA_TYPE.to_string()),
        ("MAX_THUMBNAIL", limits::MAX_THUMBNAIL.to_string()),
        ("HANDSHAKE_TIMEOUT", ms(limits::HANDSHAKE_TIMEOUT)),
        ("HEARTBEAT_INTERVAL", ms(limits::HEARTBEAT_INTERVAL)),
        ("IDLE_TIMEOUT", ms(limits::IDLE_TIMEOUT)),
        ("TYPING_TTL", ms(limits::TYPING_TTL)),
    ];
    let got: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn stream_framing_example() {
    let frame = ClientFrame::Ping(chat_proto::frame::Ping { nonce: 7 });
    let encoded = codec::encode_postcard(&frame).expect("encodes");
    assert_eq!(&encoded.length_delimited()[..], &[0, 0, 0, 2, 6, 7]);
}
