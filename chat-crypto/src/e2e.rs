//! End-to-end message encryption: device keys, fingerprints and sealed envelopes.
//!
//! Every device holds an X25519 [`DeviceSecret`]; its [`DevicePublicKey`] is published
//! through the server. A message body is encrypted once with a fresh AES-256-GCM
//! content key, and that key is wrapped for every recipient device with HPKE
//! (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM).
//! The server forwards the resulting envelope without being able to read it.
//!
//! ```
//! use chat_crypto::e2e::{message_aad, DeviceSecret};
//!
//! let alice = DeviceSecret::generate();
//! let bob = DeviceSecret::generate();
//! // Who sent what where: conversation 7, user 1, the client's message id.
//! let aad = message_aad(7, 1, &[9; 16]);
//!
//! let envelope = alice.seal(b"hello bob", [bob.public_key(), alice.public_key()], &aad)?;
//! let opened = bob.open(&envelope, &aad)?;
//! assert_eq!(&opened.body[..], b"hello bob");
//! assert_eq!(opened.sender_device, alice.id());
//! // The same bytes claimed for another message do not open.
//! assert!(bob.open(&envelope, &message_aad(8, 1, &[9; 16])).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Envelope format, version 1
//!
//! All integers big-endian.
//!
//! | field | size | meaning |
//! |---|---|---|
//! | version | 1 | `1` |
//! | sender device | 16 | [`DeviceId`] of the sealing device |
//! | count | 2 | recipient entries, 1 to [`MAX_RECIPIENTS`] |
//! | entries | 96 each | recipient [`DeviceId`] (16), HPKE `enc` (32), wrapped content key (32 + 16 tag) |
//! | body | rest | AES-256-GCM ciphertext and 16-byte tag |
//!
//! Let `context = u32(len(aad)) || aad`. The content key is wrapped with HPKE info
//! [`WRAP_INFO`] and associated data `context || version || sender device`. The body
//! is encrypted under the content key with an all-zero nonce (every content key
//! encrypts exactly one body) and associated data `context || header`, where the
//! header is every byte before the body. Changing any byte of the envelope, or opening
//! it under other associated data, fails authentication.

use std::fmt;
use std::str::FromStr;

use hpke::aead::{AeadTag, AesGcm256};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand::RngCore as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize as _, Zeroizing};

type Kem = X25519HkdfSha256;

/// Envelope format version written by [`DeviceSecret::seal`].
pub const ENVELOPE_VERSION: u8 = 1;
/// Most recipient devices one envelope can carry.
pub const MAX_RECIPIENTS: usize = 400;
/// HPKE `info` string of the content-key wrap.
pub const WRAP_INFO: &[u8] = b"chat/1 e2e content key";
/// Length of a public or secret key, bytes.
pub const KEY_LEN: usize = 32;
/// Length of a [`DeviceId`], bytes.
pub const DEVICE_ID_LEN: usize = 16;

const HEADER_LEN: usize = 1 + DEVICE_ID_LEN + 2;
const ENC_LEN: usize = 32;
const TAG_LEN: usize = 16;
const CONTENT_KEY_LEN: usize = 32;
const WRAPPED_LEN: usize = CONTENT_KEY_LEN + TAG_LEN;
const ENTRY_LEN: usize = DEVICE_ID_LEN + ENC_LEN + WRAPPED_LEN;
const DEVICE_HASH_LABEL: &[u8] = b"chat/1 device key\0";
const MESSAGE_AAD_LABEL: &[u8] = b"chat/1 message\0";

/// Length of the associated data [`message_aad`] builds.
pub const MESSAGE_AAD_LEN: usize = MESSAGE_AAD_LABEL.len() + 8 + 8 + 16;

/// Why a body could not be sealed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// No recipient devices were given.
    #[error("a sealed message needs at least one recipient device")]
    NoRecipients,
    /// More than [`MAX_RECIPIENTS`] distinct devices were given.
    #[error("too many recipient devices (at most {MAX_RECIPIENTS})")]
    TooManyRecipients,
    /// The key wrap failed (it does not for keys that passed validation).
    #[error("sealing failed")]
    Failed,
}

/// Why an envelope did not open. Deliberately coarse: it says what is public anyway
/// (the envelope's structure and recipient list) and nothing about keys or contents.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// Not an envelope of a known version, or truncated.
    #[error("malformed envelope")]
    Malformed,
    /// The envelope has no entry for this device.
    #[error("this device is not a recipient of the envelope")]
    NotARecipient,
    /// Authentication failed: the envelope was altered, or is opened under other
    /// associated data than it was sealed with.
    #[error("envelope failed authentication")]
    Rejected,
}

/// A public key or device id that cannot be used.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Wrong length or encoding.
    #[error("a device key is 32 bytes and a device id 16 bytes (32 hex digits)")]
    Malformed,
    /// A low-order X25519 point: every shared secret with it would be zero.
    #[error("the public key is a low-order point")]
    LowOrder,
}

/// A device's identifier: the first 16 bytes of SHA-256 over the device's public key
/// (with a label), so anyone can check that an id belongs to a key. Written as 32
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; DEVICE_ID_LEN]);

impl DeviceId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; DEVICE_ID_LEN] {
        &self.0
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; DEVICE_ID_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bytes = s.as_bytes();
        if bytes.len() != DEVICE_ID_LEN * 2 {
            return Err(KeyError::Malformed);
        }
        let mut out = [0u8; DEVICE_ID_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = hex(pair[0])
                .zip(hex(pair[1]))
                .map(|(h, l)| h << 4 | l)
                .ok_or(KeyError::Malformed)?;
        }
        Ok(Self(out))
    }
}

/// A device's X25519 public key, validated: never a low-order point.
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePublicKey {
    bytes: [u8; KEY_LEN],
    hash: [u8; 32],
}

impl DevicePublicKey {
    /// Parses and validates 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        // A low-order point gives the all-zero shared secret with every clamped scalar;
        // one Diffie-Hellman with a fixed scalar finds it.
        let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
        if !probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(bytes))
            .was_contributory()
        {
            return Err(KeyError::LowOrder);
        }
        Ok(Self::trusted(bytes))
    }

    fn trusted(bytes: [u8; KEY_LEN]) -> Self {
        let mut h = Sha256::new();
        h.update(DEVICE_HASH_LABEL);
        h.update(bytes);
        Self {
            bytes,
            hash: h.finalize().into(),
        }
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The device id this key names.
    pub fn id(&self) -> DeviceId {
        let mut id = [0u8; DEVICE_ID_LEN];
        id.copy_from_slice(&self.hash[..DEVICE_ID_LEN]);
        DeviceId(id)
    }

    /// The key's fingerprint, for people to compare out of band.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.hash)
    }
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey({})", self.id())
    }
}

/// A device key's "safety number": 40 decimal digits in eight groups of five, derived
/// from SHA-256 over the public key. Two people who read the same digits for a device
/// are talking to the same key. Compares in constant time.
#[derive(Clone, Copy)]
pub struct Fingerprint([u8; 32]);

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Fingerprint {}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.chunks_exact(4).enumerate() {
            let n = u32::from_be_bytes(chunk.try_into().expect("4-byte chunk")) % 100_000;
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{n:05}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The associated data of a chat message: binds an envelope to its conversation, its
/// sender (the user the server authenticated) and the sender's client message id. The
/// sending device is bound by the envelope itself.
pub fn message_aad(
    conversation: u64,
    sender: u64,
    client_msg_id: &[u8; 16],
) -> [u8; MESSAGE_AAD_LEN] {
    let mut out = [0u8; MESSAGE_AAD_LEN];
    let (label, rest) = out.split_at_mut(MESSAGE_AAD_LABEL.len());
    label.copy_from_slice(MESSAGE_AAD_LABEL);
    rest[..8].copy_from_slice(&conversation.to_be_bytes());
    rest[8..16].copy_from_slice(&sender.to_be_bytes());
    rest[16..].copy_from_slice(client_msg_id);
    out
}

/// A device's secret key. Zeroized on drop; never printed.
pub struct DeviceSecret {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: DevicePublicKey,
}

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceSecret({})", self.public.id())
    }
}

/// An opened envelope.
pub struct Opened {
    /// The device that sealed it (as the envelope says; authenticated together with the
    /// associated data).
    pub sender_device: DeviceId,
    /// The plaintext, zeroized on drop.
    pub body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("sender_device", &self.sender_device)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl DeviceSecret {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair(&mut rand::rng());
        Self::from_parts(secret, public)
    }

    fn from_parts(
        secret: <Kem as hpke::Kem>::PrivateKey,
        public: <Kem as hpke::Kem>::PublicKey,
    ) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        public.write_exact(&mut bytes);
        Self {
            secret,
            public: DevicePublicKey::trusted(bytes),
        }
    }

    /// Restores a key saved with [`DeviceSecret::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != KEY_LEN {
            return Err(KeyError::Malformed);
        }
        let secret =
            <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| KeyError::Malformed)?;
        let public = Kem::sk_to_pk(&secret);
        Ok(Self::from_parts(secret, public))
    }

    /// The secret's 32 bytes, to store (with owner-only permissions).
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        self.secret.write_exact(&mut out[..]);
        out
    }

    /// The public half.
    pub fn public_key(&self) -> &DevicePublicKey {
        &self.public
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.public.id()
    }

    /// Seals `body` for `recipients` (duplicates are sealed for once), bound to `aad`.
    /// Include this device's own key to read the message back later.
    pub fn seal<'a>(
        &self,
        body: &[u8],
        recipients: impl IntoIterator<Item = &'a DevicePublicKey>,
        aad: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut keys: Vec<&DevicePublicKey> = recipients.into_iter().collect();
        keys.sort_by_key(|k| k.id());
        keys.dedup_by_key(|k| k.id());
        if keys.is_empty() {
            return Err(SealError::NoRecipients);
        }
        if keys.len() > MAX_RECIPIENTS {
            return Err(SealError::TooManyRecipients);
        }
        let mut rng = rand::rng();
        let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
        rng.fill_bytes(&mut content_key[..]);

        let sender = self.id();
        let mut out = Vec::with_capacity(sealed_len(body.len(), keys.len()));
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(&(keys.len() as u16).to_be_bytes());

        let context = context(aad);
        let wrap_aad = key_wrap_aad(&context, &out);
        for key in keys {
            let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(key.as_bytes())
                .map_err(|_| SealError::Failed)?;
            let mut wrapped = Zeroizing::new(*content_key);
            let (enc, tag) =
                hpke::single_shot_seal_in_place_detached::<AesGcm256, HkdfSha256, Kem, _>(
                    &OpModeS::Base,
                    &pk,
                    WRAP_INFO,
                    &mut wrapped[..],
                    &wrap_aad,
                    &mut rng,
                )
                .map_err(|_| SealError::Failed)?;
            out.extend_from_slice(key.id().as_bytes());
            out.extend_from_slice(&enc.to_bytes());
            out.extend_from_slice(&wrapped[..]);
            out.extend_from_slice(&tag.to_bytes());
        }

        let mut body_aad = context;
        body_aad.extend_from_slice(&out);
        let header_len = out.len();
        out.extend_from_slice(body);
        let sealing = body_key(&content_key);
        let tag = sealing
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(&body_aad[..]),
                &mut out[header_len..],
            )
            .map_err(|_| SealError::Failed)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens an envelope sealed for this device under `aad`.
    pub fn open(&self, envelope: &[u8], aad: &[u8]) -> Result<Opened, OpenError> {
        let parsed = EnvelopeHeader::parse(envelope)?;
        let me = self.id();
        // Recipient ids are public; the comparison is constant-time anyway.
        let index = parsed
            .recipients
            .iter()
            .position(|id| bool::from(id.0.ct_eq(&me.0)))
            .ok_or(OpenError::NotARecipient)?;
        let entry = &envelope[HEADER_LEN + index * ENTRY_LEN..][..ENTRY_LEN];
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&entry[DEVICE_ID_LEN..][..ENC_LEN])
            .map_err(|_| OpenError::Rejected)?;
        let tag =
            AeadTag::<AesGcm256>::from_bytes(&entry[DEVICE_ID_LEN + ENC_LEN + CONTENT_KEY_LEN..])
                .map_err(|_| OpenError::Rejected)?;
        let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
        content_key.copy_from_slice(&entry[DEVICE_ID_LEN + ENC_LEN..][..CONTENT_KEY_LEN]);

        let context = context(aad);
        let wrap_aad = key_wrap_aad(&context, envelope);
        hpke::single_shot_open_in_place_detached::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            WRAP_INFO,
            &mut content_key[..],
            &wrap_aad,
            &tag,
        )
        .map_err(|_| OpenError::Rejected)?;

        let header_len = parsed.header_len();
        let mut body_aad = context;
        body_aad.extend_from_slice(&envelope[..header_len]);
        let mut body = Zeroizing::new(envelope[header_len..].to_vec());
        let opening = body_key(&content_key);
        let plain_len = match opening.open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(&body_aad[..]),
            &mut body[..],
        ) {
            Ok(plain) => plain.len(),
            Err(_) => {
                body.zeroize();
                return Err(OpenError::Rejected);
            }
        };
        body.truncate(plain_len);
        Ok(Opened {
            sender_device: parsed.sender_device,
            body,
        })
    }
}

fn context(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + aad.len() + HEADER_LEN + 2 * ENTRY_LEN);
    out.extend_from_slice(&u32::try_from(aad.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(aad);
    out
}

/// The key wrap's associated data: the context, the version and the sending device,
/// which are the first bytes of `envelope`.
fn key_wrap_aad(context: &[u8], envelope: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + 1 + DEVICE_ID_LEN);
    out.extend_from_slice(context);
    out.extend_from_slice(&envelope[..1 + DEVICE_ID_LEN]);
    out
}

fn body_key(key: &[u8; CONTENT_KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 keys are 32 bytes"))
}

/// Length of an envelope sealing `body_len` bytes for `recipients` devices.
pub fn sealed_len(body_len: usize, recipients: usize) -> usize {
    HEADER_LEN + recipients * ENTRY_LEN + body_len + TAG_LEN
}

/// The public part of an envelope: who sealed it and for which devices. Parsing needs
/// no key; a server can check recipient lists without reading anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The device that sealed it.
    pub sender_device: DeviceId,
    /// The devices it was sealed for, in envelope order.
    pub recipients: Vec<DeviceId>,
}

impl EnvelopeHeader {
    /// Parses an envelope's header and checks the envelope's overall structure.
    pub fn parse(envelope: &[u8]) -> Result<Self, OpenError> {
        if envelope.len() < HEADER_LEN || envelope[0] != ENVELOPE_VERSION {
            return Err(OpenError::Malformed);
        }
        let sender_device = DeviceId(envelope[1..1 + DEVICE_ID_LEN].try_into().expect("16 bytes"));
        let count = usize::from(u16::from_be_bytes([
            envelope[HEADER_LEN - 2],
            envelope[HEADER_LEN - 1],
        ]));
        if count == 0 || count > MAX_RECIPIENTS || envelope.len() < sealed_len(0, count) {
            return Err(OpenError::Malformed);
        }
        let recipients = envelope[HEADER_LEN..HEADER_LEN + count * ENTRY_LEN]
            .chunks_exact(ENTRY_LEN)
            .map(|entry| DeviceId(entry[..DEVICE_ID_LEN].try_into().expect("16 bytes")))
            .collect();
        Ok(Self {
            sender_device,
            recipients,
        })
    }

    fn header_len(&self) -> usize {
        HEADER_LEN + self.recipients.len() * ENTRY_LEN
    }
}

#[cfg(test)]
mod tests;
