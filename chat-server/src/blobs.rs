//! Where uploaded files' bytes live: files under the data directory, one per upload,
//! named by the upload's id (never by anything the client chose). Writes stream to disk
//! chunk by chunk, so memory does not grow with a file's size.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

/// Files under one directory.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
}

/// Whether `id` is an id this store made: 32 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random id (128 bits from the operating system's generator).
pub fn new_id() -> String {
    let raw: [u8; 16] = rand::random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl Blobs {
    /// The store in `dir` (created, readable by its owner only).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> std::io::Result<PathBuf> {
        if !valid_id(id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad file id",
            ));
        }
        Ok(self.dir.join(id))
    }

    /// Creates an empty file for `id`.
    pub async fn create(&self, id: &str) -> std::io::Result<()> {
        let path = self.path(id)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await?;
        Ok(())
    }

    /// Opens `id` for appending at `offset`: whatever lies past it (bytes of an earlier
    /// write that was never recorded as stored) is cut off first.
    pub async fn writer(&self, id: &str, offset: u64) -> std::io::Result<BlobWriter> {
        let mut file = OpenOptions::new().write(true).open(self.path(id)?).await?;
        file.set_len(offset).await?;
        file.seek(SeekFrom::Start(offset)).await?;
        Ok(BlobWriter {
            file,
            written: offset,
        })
    }

    /// Opens `id` for reading.
    pub async fn reader(&self, id: &str) -> std::io::Result<File> {
        File::open(self.path(id)?).await
    }

    /// Deletes `id`'s bytes; gone already is fine.
    pub async fn delete(&self, id: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path(id)?).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// An open file being appended to.
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    written: u64,
}

impl BlobWriter {
    /// Appends a chunk.
    pub async fn write(&mut self, chunk: &Bytes) -> std::io::Result<()> {
        self.file.write_all(chunk).await?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// The file's length so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes everything written durable; returns the length that is.
    pub async fn sync(&mut self) -> std::io::Result<u64> {
        self.file.flush().await?;
        self.file.sync_data().await?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_resume_at_the_recorded_offset_and_cut_what_was_not() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::open(dir.path()).expect("open");
        let id = new_id();
        assert!(valid_id(&id));
        blobs.create(&id).await.expect("create");
        let mut w = blobs.writer(&id, 0).await.expect("writer");
        w.write(&Bytes::from_static(b"hello, "))
            .await
            .expect("write");
        w.write(&Bytes::from_static(b"world (not recorded)"))
            .await
            .expect("write");
        drop(w);
        // Only the first 7 bytes were recorded as stored: the rest is cut on resume.
        let mut w = blobs.writer(&id, 7).await.expect("writer");
        w.write(&Bytes::from_static(b"there")).await.expect("write");
        assert_eq!(w.sync().await.expect("sync"), 12);
        assert_eq!(
            std::fs::read(dir.path().join(&id)).expect("read"),
            b"hello, there"
        );
        for bad in [
            "../etc/passwd",
            "ABCDEF",
            "0123456789abcdef0123456789abcde/",
        ] {
            assert!(blobs.create(bad).await.is_err(), "{bad}");
        }
        blobs.delete(&id).await.expect("delete");
        blobs.delete(&id).await.expect("again");
    }
}
