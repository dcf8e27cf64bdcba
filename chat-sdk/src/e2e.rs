//! End-to-end encryption in the client: the device key file, sealing sends to
//! encrypted conversations and opening what arrives.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chat_api::conversations::{ConversationDevices, GetConversation};
use chat_api::devices::{RegisterDevice, RegisterDeviceRequest};
use chat_crypto::e2e::{DevicePublicKey, DeviceSecret, OpenError, SealError, message_aad};
use chat_proto::body::{Attachments, Body, Envelope, FileId, SealedAttachments};
use chat_proto::entry::{Content, Entry, Reaction};
use chat_proto::ids::{ClientMsgId, ConversationId};
use chat_proto::limits::MAX_ENVELOPE;

use crate::api::Auth;
use crate::error::{Error, Result};

/// How long a conversation's device list is trusted before a send fetches it again.
/// Membership changes drop it at once.
const DEVICES_TTL: Duration = Duration::from_secs(10);
const KEY_FILE_HEADER: &str = "chat device key v1\n";

/// Why an encrypted message could not be read; see [`Event::Undecryptable`](crate::Event::Undecryptable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The client has no device key ([`ClientBuilder::device_key`](crate::ClientBuilder::device_key)).
    #[error("this client has no device key")]
    NoDeviceKey,
    /// The message was not sealed for this device (sent before the device was
    /// registered, or the sender did not know it yet).
    #[error("the message was not sealed for this device")]
    NotForThisDevice,
    /// Not an envelope this client understands.
    #[error("malformed envelope")]
    Malformed,
    /// The envelope failed authentication: altered, or replayed into another
    /// conversation or under another sender.
    #[error("the envelope failed authentication")]
    Rejected,
    /// The opened body is not UTF-8 text.
    #[error("the decrypted body is not text")]
    NotText,
}

impl From<OpenError> for DecryptError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NotARecipient => DecryptError::NotForThisDevice,
            OpenError::Malformed => DecryptError::Malformed,
            _ => DecryptError::Rejected,
        }
    }
}

/// Loads the device key at `path`, or creates it there (owner-only permissions).
pub(crate) fn load_or_create_key(path: &Path) -> Result<DeviceSecret> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            check_private(path)?;
            let not_a_key_file =
                || Error::Config(format!("{} is not a device key file", path.display()));
            let encoded = text
                .strip_prefix(KEY_FILE_HEADER)
                .map(str::trim)
                .ok_or_else(not_a_key_file)?;
            let bytes = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| not_a_key_file())?,
            );
            DeviceSecret::from_bytes(&bytes)
                .map_err(|_| Error::Config(format!("{} holds no valid device key", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = DeviceSecret::generate();
            let text = zeroize::Zeroizing::new(format!(
                "{KEY_FILE_HEADER}{}\n",
                base64::engine::general_purpose::STANDARD.encode(&key.to_bytes()[..])
            ));
            write_private(path, text.as_bytes()).map_err(|e| {
                Error::Config(format!("cannot create device key {}: {e}", path.display()))
            })?;
            Ok(key)
        }
        Err(e) => Err(Error::Config(format!(
            "cannot read device key {}: {e}",
            path.display()
        ))),
    }
}

/// Writes a new file only the owner can read (on Unix; elsewhere with the default
/// permissions of its directory).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Refuses a key file others can read, as ssh does.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read device key {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "device key {} is readable by others (mode {:o}); make it owner-only (chmod 600)",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<()> {
    Ok(())
}

pub use chat_api::Device;

/// What the SDK adds to a listed [`Device`].
pub trait DeviceExt {
    /// The key, checked: its id must be the one listed. People compare
    /// [`DevicePublicKey::fingerprint`] out of band to know it is the right key.
    fn key(&self) -> Result<DevicePublicKey>;
}

impl DeviceExt for Device {
    fn key(&self) -> Result<DevicePublicKey> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.public_key.as_bytes())
            .map_err(|_| Error::Protocol("device key is not base64".into()))?;
        let key = DevicePublicKey::from_bytes(&raw)
            .map_err(|e| Error::Protocol(format!("device key: {e}")))?;
        if key.id().to_string() != self.id {
            return Err(Error::Protocol("device id does not match its key".into()));
        }
        Ok(key)
    }
}

#[derive(Debug)]
struct Recipients {
    keys: Arc<Vec<DevicePublicKey>>,
    fetched: Instant,
}

/// What opens a sealed file: its key and the SHA-256 of its stored bytes.
pub(crate) type FileSecret = ([u8; 32], [u8; 32]);

/// The client's encryption state: its device key and what it knows of conversations.
#[derive(Debug)]
pub(crate) struct Crypto {
    device: Option<DeviceSecret>,
    /// Whether each conversation seen so far is encrypted (it never changes).
    encrypted: Mutex<HashMap<ConversationId, bool>>,
    recipients: Mutex<HashMap<ConversationId, Recipients>>,
    /// The key and digest of every sealed file of the messages opened so far.
    file_keys: Mutex<HashMap<FileId, FileSecret>>,
}

impl Crypto {
    pub(crate) fn new(device: Option<DeviceSecret>) -> Self {
        Self {
            device,
            encrypted: Mutex::default(),
            recipients: Mutex::default(),
            file_keys: Mutex::default(),
        }
    }

    pub(crate) fn device(&self) -> Option<&DeviceSecret> {
        self.device.as_ref()
    }

    /// Registers the device key with the server (idempotent).
    pub(crate) async fn register(&self, auth: &Auth, name: &str) -> Result<()> {
        let Some(device) = &self.device else {
            return Ok(());
        };
        let public_key =
            base64::engine::general_purpose::STANDARD.encode(device.public_key().as_bytes());
        let request = RegisterDeviceRequest {
            public_key,
            name: name.to_owned(),
        };
        let registered = auth
            .call::<RegisterDevice>(&[], None, Some(&request))
            .await?;
        if registered.id != device.id().to_string() {
            return Err(Error::Protocol(
                "the server registered another device id".into(),
            ));
        }
        Ok(())
    }

    /// Forgets a conversation's device list (its members changed).
    pub(crate) fn members_changed(&self, conversation: ConversationId) {
        self.recipients.lock().expect("lock").remove(&conversation);
    }

    /// Whether text sent to `conversation` is sealed first: the conversation is
    /// encrypted and this client has a device key. Other bodies go as they are.
    pub(crate) async fn seals_text(
        &self,
        auth: &Auth,
        conversation: ConversationId,
    ) -> Result<bool> {
        if self.device.is_none() {
            return Ok(false);
        }
        self.is_encrypted(auth, conversation).await
    }

    /// `plaintext` sealed for every member's every device (the list is fetched when
    /// stale).
    pub(crate) async fn seal(
        &self,
        auth: &Auth,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        plaintext: &[u8],
    ) -> Result<Envelope> {
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| Error::Config("no device key".into()))?;
        let recipients = self.recipients(auth, conversation).await?;
        let aad = message_aad(
            conversation.get(),
            auth.user().get(),
            client_msg_id.as_bytes(),
        );
        let own = device.public_key();
        let sealed = device
            .seal(plaintext, recipients.iter().chain([own]), &aad)
            .map_err(|e| match e {
                SealError::TooManyRecipients => {
                    Error::Config(format!("{e}: the conversation has too many devices"))
                }
                other => Error::Protocol(other.to_string()),
            })?;
        if sealed.len() > MAX_ENVELOPE {
            return Err(Error::Config(format!(
                "the sealed message is {} bytes, over the {MAX_ENVELOPE}-byte envelope limit",
                sealed.len()
            )));
        }
        Ok(Envelope(sealed.into()))
    }

    /// Whether `conversation` is end-to-end encrypted.
    pub(crate) async fn encrypts(&self, auth: &Auth, conversation: ConversationId) -> Result<bool> {
        self.is_encrypted(auth, conversation).await
    }

    /// The key and digest of a sealed file this client opened a message of.
    pub(crate) fn file_key(&self, id: &FileId) -> Option<FileSecret> {
        self.file_keys.lock().expect("lock").get(id).copied()
    }

    async fn is_encrypted(&self, auth: &Auth, conversation: ConversationId) -> Result<bool> {
        if let Some(&known) = self.encrypted.lock().expect("lock").get(&conversation) {
            return Ok(known);
        }
        let details = auth
            .call::<GetConversation>(&[&conversation.to_string()], None, None)
            .await?;
        self.encrypted
            .lock()
            .expect("lock")
            .insert(conversation, details.encrypted);
        Ok(details.encrypted)
    }

    async fn recipients(
        &self,
        auth: &Auth,
        conversation: ConversationId,
    ) -> Result<Arc<Vec<DevicePublicKey>>> {
        if let Some(cached) = self.recipients.lock().expect("lock").get(&conversation)
            && cached.fetched.elapsed() < DEVICES_TTL
        {
            return Ok(cached.keys.clone());
        }
        let devices = auth
            .call::<ConversationDevices>(&[&conversation.to_string()], None, None)
            .await?;
        let keys = Arc::new(
            devices
                .iter()
                .map(Device::key)
                .collect::<Result<Vec<_>>>()?,
        );
        self.recipients.lock().expect("lock").insert(
            conversation,
            Recipients {
                keys: keys.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(keys)
    }

    /// The body a sealed message with files opens to, given its plaintext (the JSON
    /// document of PROTOCOL.md §5.3); the files' keys are kept for downloads.
    fn open_files(
        &self,
        sealed: &Body,
        plaintext: &[u8],
    ) -> std::result::Result<Body, DecryptError> {
        let Body::SealedAttachments(ids) = sealed else {
            return Err(DecryptError::Malformed);
        };
        let doc: SealedAttachments =
            serde_json::from_slice(plaintext).map_err(|_| DecryptError::Malformed)?;
        let named: Vec<&FileId> = doc.files.iter().map(|f| &f.file.id).collect();
        // The ids the server grants access by are the ones the sender sealed.
        if named != ids.files.iter().collect::<Vec<_>>() {
            return Err(DecryptError::Malformed);
        }
        let mut keys = self.file_keys.lock().expect("lock");
        let mut files = Vec::with_capacity(doc.files.len());
        for f in doc.files {
            let key: [u8; 32] = f
                .key
                .0
                .as_ref()
                .try_into()
                .map_err(|_| DecryptError::Malformed)?;
            let digest: [u8; 32] = f
                .digest
                .0
                .as_ref()
                .try_into()
                .map_err(|_| DecryptError::Malformed)?;
            keys.insert(f.file.id.clone(), (key, digest));
            files.push(f.file);
        }
        Ok(Body::Attachments(Attachments {
            text: doc.text,
            files,
        }))
    }

    /// Opens an encrypted entry in place: a sealed body becomes its text (a sealed
    /// message with files, the files with their caption), a sealed reaction its emoji.
    /// Plain entries pass through.
    pub(crate) fn open(&self, entry: &mut Entry) -> std::result::Result<(), DecryptError> {
        let Some(envelope) = entry.content.envelope() else {
            return Ok(());
        };
        let device = self.device.as_ref().ok_or(DecryptError::NoDeviceKey)?;
        let aad = message_aad(
            entry.conversation.get(),
            entry.sender.get(),
            entry.client_msg_id.as_bytes(),
        );
        let opened = device.open(&envelope.0, &aad)?;
        if let Content::Message {
            body: Some(body @ Body::SealedAttachments(_)),
            ..
        } = &mut entry.content
        {
            *body = self.open_files(body, &opened.body)?;
            return Ok(());
        }
        let text = std::str::from_utf8(&opened.body)
            .map_err(|_| DecryptError::NotText)?
            .to_owned();
        match &mut entry.content {
            Content::Message { body, .. } | Content::Edit { body, .. } => {
                *body = Some(Body::Text(text));
            }
            Content::Reaction { reaction, .. } => {
                if !chat_proto::entry::is_reaction_text(&text) {
                    return Err(DecryptError::NotText);
                }
                *reaction = Some(Reaction::Emoji(text));
            }
            Content::Delete { .. } => {}
        }
        Ok(())
    }
}
