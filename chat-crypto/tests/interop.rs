//! The envelope fixture other implementations test against (the web client's
//! `tests/e2e.test.ts` opens it with WebCrypto). This test checks that the committed
//! fixture is what this crate derives and opens; `UPDATE_FIXTURE=1` seals a new one.

use chat_crypto::e2e::{DevicePublicKey, DeviceSecret, message_aad};
use serde::{Deserialize, Serialize};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/envelope-interop.json"
);

#[derive(Serialize, Deserialize)]
struct Fixture {
    recipient_secret: String,
    recipient_public: String,
    recipient_id: String,
    recipient_fingerprint: String,
    sender_public: String,
    sender_id: String,
    conversation: u64,
    sender: u64,
    client_msg_id: String,
    body: String,
    envelope: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn uuid_bytes(s: &str) -> [u8; 16] {
    unhex(&s.replace('-', "")).try_into().unwrap()
}

#[test]
fn the_committed_fixture_is_what_this_crate_derives_and_opens() {
    if std::env::var_os("UPDATE_FIXTURE").is_some() {
        let recipient = DeviceSecret::generate();
        let sender = DeviceSecret::generate();
        let client_msg_id = "0b7e1a52-3c44-4d1e-8f60-1d2c3b4a5f67";
        let body = "interop: héllo from Rust 🦀";
        let aad = message_aad(9, 4, &uuid_bytes(client_msg_id));
        let envelope = sender
            .seal(
                body.as_bytes(),
                [recipient.public_key(), sender.public_key()],
                &aad,
            )
            .unwrap();
        let fixture = Fixture {
            recipient_secret: hex(&recipient.to_bytes()[..]),
            recipient_public: hex(recipient.public_key().as_bytes()),
            recipient_id: recipient.id().to_string(),
            recipient_fingerprint: recipient.public_key().fingerprint().to_string(),
            sender_public: hex(sender.public_key().as_bytes()),
            sender_id: sender.id().to_string(),
            conversation: 9,
            sender: 4,
            client_msg_id: client_msg_id.into(),
            body: body.into(),
            envelope: hex(&envelope),
        };
        std::fs::write(PATH, serde_json::to_string_pretty(&fixture).unwrap() + "\n").unwrap();
    }
    let f: Fixture = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let recipient = DeviceSecret::from_bytes(&unhex(&f.recipient_secret)).unwrap();
    assert_eq!(hex(recipient.public_key().as_bytes()), f.recipient_public);
    assert_eq!(recipient.id().to_string(), f.recipient_id);
    assert_eq!(
        recipient.public_key().fingerprint().to_string(),
        f.recipient_fingerprint
    );
    let sender = DevicePublicKey::from_bytes(&unhex(&f.sender_public)).unwrap();
    assert_eq!(sender.id().to_string(), f.sender_id);

    let aad = message_aad(f.conversation, f.sender, &uuid_bytes(&f.client_msg_id));
    let opened = recipient.open(&unhex(&f.envelope), &aad).unwrap();
    assert_eq!(std::str::from_utf8(&opened.body).unwrap(), f.body);
    assert_eq!(opened.sender_device, sender.id());
}
