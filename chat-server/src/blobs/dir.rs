//! Files under one directory, one per upload, named by its id. Writes go to disk chunk
//! by chunk and are synced before their length is recorded.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::ByteStream;

/// Files under one directory.
#[derive(Clone, Debug)]
pub struct DirBlobs {
    dir: PathBuf,
}

impl DirBlobs {
    /// The store in `dir` (created, readable by its owner only).
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The file of `id`, an id already checked.
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub async fn create(&self, id: &str) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(id))
            .await?;
        Ok(())
    }

    pub async fn writer(&self, id: &str, offset: u64) -> io::Result<DirWriter> {
        let mut file = OpenOptions::new().write(true).open(self.path(id)).await?;
        file.set_len(offset).await?;
        file.seek(SeekFrom::Start(offset)).await?;
        Ok(DirWriter {
            file,
            written: offset,
        })
    }

    pub async fn read(&self, id: &str, start: u64, end: u64) -> io::Result<ByteStream> {
        let mut file = File::open(self.path(id)).await?;
        file.seek(SeekFrom::Start(start)).await?;
        let limited = file.take(end.saturating_sub(start));
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            limited,
            64 * 1024,
        )))
    }

    pub async fn delete(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// An open file being appended to.
#[derive(Debug)]
pub struct DirWriter {
    file: File,
    written: u64,
}

impl DirWriter {
    pub async fn write(&mut self, chunk: &Bytes) -> io::Result<()> {
        self.file.write_all(chunk).await?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn sync(&mut self) -> io::Result<u64> {
        self.file.flush().await?;
        self.file.sync_data().await?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Blobs, new_id, valid_id};
    use bytes::Bytes;
    use futures_util::TryStreamExt as _;

    #[tokio::test]
    async fn appends_resume_at_the_recorded_offset_and_cut_what_was_not() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::open(dir.path()).expect("open");
        let id = new_id();
        assert!(valid_id(&id));
        blobs.create(&id).await.expect("create");
        let mut w = blobs.writer(&id, 0).await.expect("writer");
        w.write(Bytes::from_static(b"hello, "))
            .await
            .expect("write");
        w.write(Bytes::from_static(b"world (not recorded)"))
            .await
            .expect("write");
        drop(w);
        // Only the first 7 bytes were recorded as stored: the rest is cut on resume.
        let mut w = blobs.writer(&id, 7).await.expect("writer");
        w.write(Bytes::from_static(b"there")).await.expect("write");
        assert_eq!(w.sync().await.expect("sync"), 12);
        assert_eq!(
            std::fs::read(dir.path().join(&id)).expect("read"),
            b"hello, there"
        );
        let part: Vec<Bytes> = blobs
            .read(&id, 3, 9)
            .await
            .expect("read")
            .try_collect()
            .await
            .expect("bytes");
        assert_eq!(part.concat(), b"lo, th");
        for bad in [
            "../etc/passwd",
            "ABCDEF",
            "0123456789abcdef0123456789abcde/",
        ] {
            assert!(blobs.create(bad).await.is_err(), "{bad}");
            assert!(blobs.read(bad, 0, 1).await.is_err(), "{bad}");
        }
        blobs.delete(&id).await.expect("delete");
        blobs.delete(&id).await.expect("again");
    }
}
