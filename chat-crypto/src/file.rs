//! End-to-end encrypted files (PROTOCOL.md §5.3.1).
//!
//! A file sent to an encrypted conversation is sealed by the sender's client before it
//! is uploaded, under a fresh random 32-byte key that travels only inside the sealed
//! message. The plaintext is cut into chunks of [`FILE_CHUNK`] bytes (the last one
//! shorter, and one empty chunk for an empty file); chunk `i` is sealed with
//! AES-256-GCM under the file key, with the 96-bit nonce `0x00 0x00 0x00 ‖ u64(i) ‖
//! last` (big-endian index; `last` is 1 for the final chunk, else 0) and the associated
//! data `"chat/1 file"`. The stored file is the sealed chunks one after another, each
//! its ciphertext and 16-byte tag.
//!
//! So a reader can open any chunk on its own (streaming, range reads), chunks cannot
//! be reordered (the index is in the nonce), the file cannot be cut short or extended
//! (only the final chunk opens as final, and no chunk follows it), and chunks cannot
//! move between files (each file has its own key). The message also carries SHA-256 of
//! the stored bytes, which a reader of the whole file checks.
//!
//! AES-256-GCM comes from ring, SHA-256 from the `sha2` crate.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const FILE_CHUNK: usize = 64 * 1024;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// Stored bytes per full chunk.
pub const SEALED_CHUNK: usize = FILE_CHUNK + TAG_LEN;
/// Bytes of a file key.
pub const FILE_KEY_LEN: usize = 32;
/// Associated data of every chunk.
const AAD: &[u8] = b"chat/1 file";

/// Why a sealed file could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    /// A chunk did not authenticate: the bytes were changed, reordered, cut short or
    /// extended, or the key is not this file's.
    #[error("chunk {0} of the file does not authenticate")]
    Chunk(u64),
    /// The stored size cannot be a sealed file's (a partial tag).
    #[error("{0} bytes cannot be a sealed file")]
    Length(u64),
    /// The stored bytes are not those the message names.
    #[error("the file's digest does not match the message")]
    Digest,
    /// A key of the wrong length.
    #[error("a file key is {FILE_KEY_LEN} bytes")]
    Key,
}

/// The key a file is sealed with.
pub struct FileKey(Zeroizing<[u8; FILE_KEY_LEN]>);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut key = Zeroizing::new([0u8; FILE_KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        Self(key)
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FileError> {
        let key: [u8; FILE_KEY_LEN] = bytes.try_into().map_err(|_| FileError::Key)?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// The key's bytes, to put in the sealed message.
    pub fn as_bytes(&self) -> &[u8; FILE_KEY_LEN] {
        &self.0
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("32-byte key"))
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// How many bytes the sealed form of `plain` bytes takes.
pub fn sealed_len(plain: u64) -> u64 {
    let chunks = plain.div_ceil(FILE_CHUNK as u64).max(1);
    plain + chunks * TAG_LEN as u64
}

/// How many plaintext bytes a sealed file of `sealed` bytes holds.
pub fn plain_len(sealed: u64) -> Result<u64, FileError> {
    let full = sealed / SEALED_CHUNK as u64;
    let rest = sealed % SEALED_CHUNK as u64;
    let plain = match rest {
        0 if full > 0 => full * FILE_CHUNK as u64,
        r if r >= TAG_LEN as u64 => full * FILE_CHUNK as u64 + r - TAG_LEN as u64,
        _ => return Err(FileError::Length(sealed)),
    };
    // The form sealed_len gives: an exact multiple of the chunk size has no empty
    // final chunk after it.
    if sealed_len(plain) == sealed {
        Ok(plain)
    } else {
        Err(FileError::Length(sealed))
    }
}

/// Seals chunk `index` of a file (`last` for its final chunk).
pub fn seal_chunk(key: &FileKey, index: u64, last: bool, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
    out.extend_from_slice(plain);
    key.aead()
        .seal_in_place_append_tag(nonce(index, last), Aad::from(AAD), &mut out)
        .expect("a chunk is far below AES-GCM's length limit");
    out
}

/// Opens chunk `index` of a file (`last` for its final chunk).
pub fn open_chunk(
    key: &FileKey,
    index: u64,
    last: bool,
    sealed: &[u8],
) -> Result<Vec<u8>, FileError> {
    let mut buf = sealed.to_vec();
    let plain = key
        .aead()
        .open_in_place(nonce(index, last), Aad::from(AAD), &mut buf)
        .map_err(|_| FileError::Chunk(index))?;
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

/// The sealed bytes of a file from `offset` on, at most `max` of them, computed from
/// its plaintext: sealing is deterministic for a key, so an interrupted upload resumes
/// at any offset. `read_plain(start, buf)` fills `buf` from plaintext offset `start`
/// (the caller's file); `plain_len` is the plaintext's size.
pub fn sealed_range(
    key: &FileKey,
    plain_len: u64,
    offset: u64,
    max: usize,
    mut read_plain: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    let total = sealed_len(plain_len);
    let end = total.min(offset.saturating_add(max as u64));
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    let mut index = offset / SEALED_CHUNK as u64;
    let mut skip = (offset % SEALED_CHUNK as u64) as usize;
    let chunks = total.div_ceil(SEALED_CHUNK as u64);
    let mut plain = vec![0u8; FILE_CHUNK];
    while offset + (out.len() as u64) < end {
        let start = index * FILE_CHUNK as u64;
        let n = (plain_len - start).min(FILE_CHUNK as u64) as usize;
        read_plain(start, &mut plain[..n])?;
        let sealed = seal_chunk(key, index, index + 1 == chunks, &plain[..n]);
        let want = (end - offset) as usize - out.len();
        let take = (sealed.len() - skip).min(want);
        out.extend_from_slice(&sealed[skip..skip + take]);
        skip = 0;
        index += 1;
    }
    Ok(out)
}

/// Seals a whole file held in memory, returning its sealed bytes and their SHA-256.
pub fn seal_file(key: &FileKey, plain: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let sealed = sealed_range(key, plain.len() as u64, 0, usize::MAX, |start, buf| {
        let start = start as usize;
        buf.copy_from_slice(&plain[start..start + buf.len()]);
        Ok(())
    })
    .expect("reading memory does not fail");
    let digest = Sha256::digest(&sealed).into();
    (sealed, digest)
}

/// Opens a sealed file as its bytes arrive, checking each chunk and, at the end, the
/// whole file's length and digest.
pub struct FileOpener {
    key: FileKey,
    sealed_len: u64,
    digest: [u8; 32],
    hasher: Sha256,
    buffer: Vec<u8>,
    index: u64,
    seen: u64,
}

impl std::fmt::Debug for FileOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOpener")
            .field("sealed_len", &self.sealed_len)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl FileOpener {
    /// An opener for a file of `sealed_len` stored bytes whose SHA-256 is `digest`.
    pub fn new(key: FileKey, sealed_len: u64, digest: [u8; 32]) -> Result<Self, FileError> {
        plain_len(sealed_len)?;
        Ok(Self {
            key,
            sealed_len,
            digest,
            hasher: Sha256::new(),
            buffer: Vec::with_capacity(SEALED_CHUNK),
            index: 0,
            seen: 0,
        })
    }

    /// Takes the next stored bytes; returns the plaintext of every chunk they complete.
    pub fn push(&mut self, mut sealed: &[u8]) -> Result<Vec<u8>, FileError> {
        if self.seen + sealed.len() as u64 > self.sealed_len {
            return Err(FileError::Length(self.seen + sealed.len() as u64));
        }
        self.hasher.update(sealed);
        let mut out = Vec::new();
        while !sealed.is_empty() {
            // A full chunk is opened once a byte after it arrives: until then it may
            // be the last.
            if self.buffer.len() == SEALED_CHUNK {
                out.extend(open_chunk(&self.key, self.index, false, &self.buffer)?);
                self.buffer.clear();
                self.index += 1;
            }
            let take = (SEALED_CHUNK - self.buffer.len()).min(sealed.len());
            self.buffer.extend_from_slice(&sealed[..take]);
            sealed = &sealed[take..];
            self.seen += take as u64;
        }
        Ok(out)
    }

    /// Ends the file: opens the final chunk and checks the length and digest.
    pub fn finish(self) -> Result<Vec<u8>, FileError> {
        if self.seen != self.sealed_len {
            return Err(FileError::Length(self.seen));
        }
        let last = open_chunk(&self.key, self.index, true, &self.buffer)?;
        let digest: [u8; 32] = self.hasher.finalize().into();
        if digest != self.digest {
            return Err(FileError::Digest);
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests;
