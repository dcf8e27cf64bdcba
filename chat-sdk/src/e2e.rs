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
use chat_proto::body::{Body, Envelope};
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

/// The client's encryption state: its device key and what it knows of conversations.
#[derive(Debug)]
pub(crate) struct Crypto {
    device: Option<DeviceSecret>,
    /// Whether each conversation seen so far is encrypted (it never changes).
    encrypted: Mutex<HashMap<ConversationId, bool>>,
    recipients: Mutex<HashMap<ConversationId, Recipients>>,
}

impl Crypto {
    pub(crate) fn new(device: Option<DeviceSecret>) -> Self {
        Self {
            device,
            encrypted: Mutex::default(),
            recipients: Mutex::default(),
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

    /// `text` sealed for every member's every device (the list is fetched when stale).
    pub(crate) async fn seal_text(
        &self,
        auth: &Auth,
        conversation: ConversationId,
        client_msg_id: ClientMsgId,
        text: &str,
    ) -> Result<Body> {
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
            .seal(text.as_bytes(), recipients.iter().chain([own]), &aad)
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
        Ok(Body::Encrypted(Envelope(sealed.into())))
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

    /// Opens an encrypted entry in place: a sealed body becomes its text, a sealed
    /// reaction its emoji. Plain entries pass through.
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
