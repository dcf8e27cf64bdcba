//! Message bodies (PROTOCOL.md §5 "Bodies").

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a message carries: plain text, or an end-to-end encrypted envelope that the
/// server stores and forwards without being able to read it; since 1.4 either of them
/// with files (§5.3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// UTF-8 text, non-empty, at most [`MAX_TEXT_BODY`](crate::limits::MAX_TEXT_BODY)
    /// bytes.
    Text(String),
    /// An opaque sealed envelope, at most [`MAX_ENVELOPE`](crate::limits::MAX_ENVELOPE)
    /// bytes; its format belongs to the end-to-end encryption layer.
    Encrypted(Envelope),
    /// Text (possibly empty) with files, since 1.4 (§5.3).
    Attachments(Attachments),
    /// An envelope whose plaintext is a [`SealedAttachments`] document, with the ids of
    /// the files it names, since 1.4 (§5.3).
    SealedAttachments(SealedAttachmentIds),
}

/// Text with files, in a conversation that is not end-to-end encrypted (§5.3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct Attachments {
    /// The caption, at most [`MAX_TEXT_BODY`](crate::limits::MAX_TEXT_BODY) bytes; may
    /// be empty.
    pub text: String,
    /// The files, 1 to [`MAX_FILES`](crate::limits::MAX_FILES).
    pub files: Vec<FileRef>,
}

/// A sealed message with files: the envelope (§5.1) whose plaintext is the JSON of a
/// [`SealedAttachments`], and the ids of its files in the clear, so that the server can
/// let the conversation's members download them and purge them with the message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct SealedAttachmentIds {
    /// The sealed caption and file descriptions.
    pub envelope: Envelope,
    /// The files' ids, 1 to [`MAX_FILES`](crate::limits::MAX_FILES), distinct.
    pub files: Vec<FileId>,
}

/// The id of an uploaded file: the id of its upload (32 lowercase hex digits).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[serde(transparent)]
pub struct FileId(pub String);

#[cfg(feature = "ts")]
crate::ts::alias!(FileId => "string");

impl FileId {
    /// Whether this is 32 lowercase hex digits.
    pub fn is_valid(&self) -> bool {
        self.0.len() == 32
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file in a message: what a client needs to show it without fetching it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FileRef {
    /// The upload holding its bytes (`GET /api/files/{id}`).
    pub id: FileId,
    /// Its name for display and saving, 1 to [`MAX_FILE_NAME`](crate::limits::MAX_FILE_NAME)
    /// bytes without control characters; never a path.
    pub name: String,
    /// Its size in bytes (of the plaintext, for a sealed file).
    pub size: u64,
    /// Its media type (`type/subtype`), at most
    /// [`MAX_MEDIA_TYPE`](crate::limits::MAX_MEDIA_TYPE) bytes.
    pub media_type: String,
    /// For an image: its size in pixels and a small preview.
    pub image: Option<ImageInfo>,
}

/// What a client shows of an image before fetching it. The server never decodes images;
/// the sender's client measures it and makes the thumbnail.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ImageInfo {
    /// Width in pixels, at least 1.
    pub width: u32,
    /// Height in pixels, at least 1.
    pub height: u32,
    /// A small JPEG, PNG or WebP preview, at most
    /// [`MAX_THUMBNAIL`](crate::limits::MAX_THUMBNAIL) bytes.
    pub thumbnail: Option<Binary>,
}

/// The plaintext of a [`Body::SealedAttachments`] envelope, as JSON (§5.3): the caption
/// and, for each file, its description and the key that opens its bytes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SealedAttachments {
    /// The caption; may be empty.
    pub text: String,
    /// The files, in the order of the body's ids.
    pub files: Vec<SealedFile>,
}

/// One file of a sealed message: its description and how to open its bytes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SealedFile {
    /// What the file is; `size` is the plaintext's.
    #[serde(flatten)]
    pub file: FileRef,
    /// The 32-byte key its chunks are sealed with (§5.3.1), base64.
    pub key: Binary,
    /// SHA-256 of the stored (encrypted) bytes, base64.
    pub digest: Binary,
}

impl Body {
    /// Size of the payload in bytes (text bytes or envelope bytes).
    pub fn len(&self) -> usize {
        match self {
            Body::Text(t) => t.len(),
            Body::Encrypted(e) => e.0.len(),
            Body::Attachments(a) => a.text.len(),
            Body::SealedAttachments(s) => s.envelope.0.len(),
        }
    }

    /// Whether the payload is empty: never valid on the wire for text and envelopes; a
    /// message with files may have no caption.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text, if this is a plain body (the caption, for one with files).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Body::Text(t) => Some(t),
            Body::Attachments(a) => Some(&a.text),
            Body::Encrypted(_) | Body::SealedAttachments(_) => None,
        }
    }

    /// The sealed envelope, if this body is sealed.
    pub fn envelope(&self) -> Option<&Envelope> {
        match self {
            Body::Encrypted(e) => Some(e),
            Body::SealedAttachments(s) => Some(&s.envelope),
            Body::Text(_) | Body::Attachments(_) => None,
        }
    }

    /// Whether this body is sealed (end-to-end encrypted).
    pub fn is_sealed(&self) -> bool {
        self.envelope().is_some()
    }

    /// The ids of the files this body carries (none for text and plain envelopes).
    pub fn file_ids(&self) -> Vec<&FileId> {
        match self {
            Body::Attachments(a) => a.files.iter().map(|f| &f.id).collect(),
            Body::SealedAttachments(s) => s.files.iter().collect(),
            Body::Text(_) | Body::Encrypted(_) => Vec::new(),
        }
    }

    /// Whether this body carries files (a 1.4 body).
    pub fn has_files(&self) -> bool {
        matches!(self, Body::Attachments(_) | Body::SealedAttachments(_))
    }

    /// This body as a peer of version 1.3 or older sees it (§2.2): a body with files
    /// becomes plain text, the caption followed by a line per file; a sealed one, whose
    /// caption the server cannot read, a notice naming how many files it holds.
    pub fn without_files(&self) -> Body {
        match self {
            Body::Attachments(a) => {
                let mut text = a.text.clone();
                for f in &a.files {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("📎 {} ({})", f.name, human_size(f.size)));
                }
                crate::frame::truncate_utf8(&mut text, crate::limits::MAX_TEXT_BODY);
                Body::Text(text)
            }
            Body::SealedAttachments(s) => Body::Text(sealed_files_notice(s.files.len())),
            other => other.clone(),
        }
    }
}

/// Whether `s` is a media type without parameters: `type/subtype`, each an RFC 9110
/// token, at most [`MAX_MEDIA_TYPE`](crate::limits::MAX_MEDIA_TYPE) bytes.
pub fn is_media_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    s.len() <= crate::limits::MAX_MEDIA_TYPE
        && s.split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub))
}

/// The text a peer of version 1.3 or older gets for a sealed message with `n` files.
pub fn sealed_files_notice(n: usize) -> String {
    let files = if n == 1 { "file" } else { "files" };
    format!("📎 an encrypted message with {n} {files}; this app is too old to open it")
}

/// A byte count for people: `999 B`, `1.5 KB`, `12 MB` (powers of 1,000; one decimal
/// below 10, rounded half up).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let bytes = u128::from(bytes);
    let mut unit: u128 = 1000;
    for (i, name) in UNITS.iter().enumerate() {
        let last = i + 1 == UNITS.len();
        let tenths = (bytes * 10 + unit / 2) / unit;
        if tenths < 100 {
            return format!("{}.{} {name}", tenths / 10, tenths % 10);
        }
        let whole = (bytes + unit / 2) / unit;
        if whole < 1000 || last {
            return format!("{whole} {name}");
        }
        unit *= 1000;
    }
    unreachable!("the last unit always answers")
}

/// Defines a newtype over bytes: a length-prefixed byte string in postcard, standard
/// base64 (with padding) in JSON.
macro_rules! base64_bytes {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Default)]
        pub struct $name(pub Bytes);

        #[cfg(feature = "ts")]
        crate::ts::alias!($name => "string");
        #[cfg(feature = "schema")]
        crate::schema::plain!($name, stringify!($name) => { "type": "string", "contentEncoding": "base64" });

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({} bytes)"), self.0.len())
            }
        }

        impl From<Vec<u8>> for $name {
            fn from(v: Vec<u8>) -> Self {
                Self(Bytes::from(v))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize_bytes(&self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_bytes(deserializer).map(Self)
            }
        }

        #[cfg(any(test, feature = "arbitrary"))]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok($name::from(Vec::<u8>::arbitrary(u)?))
            }
        }
    };
}

base64_bytes!(
    /// Opaque encrypted bytes: a length-prefixed byte string in postcard, standard base64
    /// (with padding) in JSON.
    Envelope
);

base64_bytes!(
    /// Bytes that are not text (a thumbnail, a key, a digest): a length-prefixed byte
    /// string in postcard, standard base64 (with padding) in JSON.
    Binary
);

fn serialize_bytes<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&BASE64.encode(bytes))
    } else {
        serializer.serialize_bytes(bytes)
    }
}

fn deserialize_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    struct Visitor {
        text: bool,
    }
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Bytes;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(if self.text {
                "a base64 string"
            } else {
                "a byte string"
            })
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
            BASE64
                .decode(v)
                .map(Bytes::from)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str("not base64"), &self))
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }
    }
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(Visitor { text: true })
    } else {
        deserializer.deserialize_bytes(Visitor { text: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        let cases = [
            (0, "0 B"),
            (999, "999 B"),
            (1000, "1.0 KB"),
            (1_250_000, "1.3 MB"),
            (12_345, "12 KB"),
            (999_999, "1.0 MB"),
            (104_857_600, "105 MB"),
            (u64::MAX, "18447 PB"),
        ];
        for (n, text) in cases {
            assert_eq!(human_size(n), text, "{n}");
        }
    }

    #[test]
    fn media_types_are_type_slash_subtype_tokens() {
        for good in ["image/png", "application/vnd.ms-excel", "text/x-c++"] {
            assert!(is_media_type(good), "{good}");
        }
        let long = format!("a/{}", "b".repeat(crate::limits::MAX_MEDIA_TYPE));
        for bad in [
            "",
            "image",
            "image/",
            "/png",
            "image/png; q=1",
            "ima ge/png",
            long.as_str(),
        ] {
            assert!(!is_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn file_ids_are_32_lowercase_hex_digits() {
        assert!(FileId("0123456789abcdef0123456789abcdef".into()).is_valid());
        assert!(!FileId("0123456789ABCDEF0123456789abcdef".into()).is_valid());
        assert!(!FileId("0123".into()).is_valid());
        assert!(!FileId("../../../../etc/passwd/0123456789".into()).is_valid());
    }
}
