//! Arbitrary end-to-end envelopes against chat-crypto's opening: never a panic, and
//! only the genuine envelope opens (to its own body); anything else is refused with the
//! reason the header parser agrees with.
#![no_main]

use std::sync::OnceLock;

use chat_crypto::e2e::{DeviceSecret, EnvelopeHeader, OpenError, message_aad};
use libfuzzer_sys::fuzz_target;

/// The envelope sealed by chat-crypto that the web client's tests open too.
const FIXTURE: &str = include_str!("../../chat-crypto/tests/data/envelope-interop.json");

struct Fixture {
    recipient: DeviceSecret,
    aad: Vec<u8>,
    genuine: Vec<u8>,
    body: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let v: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
        let field = |k: &str| v[k].as_str().expect("string field").to_owned();
        let id: [u8; 16] = unhex(&field("client_msg_id").replace('-', ""))
            .try_into()
            .expect("uuid");
        let aad = message_aad(
            v["conversation"].as_u64().expect("conversation"),
            v["sender"].as_u64().expect("sender"),
            &id,
        );
        Fixture {
            recipient: DeviceSecret::from_bytes(&unhex(&field("recipient_secret"))).expect("key"),
            aad: aad.to_vec(),
            genuine: unhex(&field("envelope")),
            body: field("body"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let envelope = match data.split_first() {
        // Edits to the genuine envelope: (position, xor) triples; a position past the
        // end truncates instead.
        Some((&0, edits)) => {
            let mut e = f.genuine.clone();
            for edit in edits.chunks_exact(3) {
                let at = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % (e.len() + 1);
                if at == e.len() {
                    e.truncate(usize::from(edit[2]) * e.len() / 256);
                } else {
                    e[at] ^= edit[2];
                }
            }
            e
        }
        Some((_, raw)) => raw.to_vec(),
        None => Vec::new(),
    };
    let header = EnvelopeHeader::parse(&envelope);
    match f.recipient.open(&envelope, &f.aad) {
        Ok(opened) => {
            assert_eq!(envelope, f.genuine, "an altered envelope opened");
            assert_eq!(&opened.body[..], f.body.as_bytes());
        }
        Err(OpenError::Malformed) => assert!(header.is_err(), "open and parse disagree"),
        Err(_) => assert!(header.is_ok(), "open and parse disagree"),
    }
});
