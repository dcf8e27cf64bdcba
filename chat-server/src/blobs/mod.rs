//! Where uploaded files' bytes live, named by the upload's id (never by anything the
//! client chose): files under a directory (the default, one binary and nothing to set
//! up), or objects in an S3-compatible bucket for several nodes (the `s3` feature).
//!
//! Both stream: an upload is written chunk by chunk and a download read the same way,
//! so memory does not grow with a file's size. Both keep tus's contract: bytes past the
//! offset last recorded in the database are cut off when a writer reopens the upload.

mod dir;
#[cfg(feature = "s3")]
mod s3;

use std::io;
use std::path::Path;

use bytes::Bytes;
use futures_util::stream::BoxStream;

/// A file's bytes, read in chunks.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

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

fn checked(id: &str) -> io::Result<&str> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "bad file id"))
    }
}

/// Why a file store setting could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be made.
    #[error("creating the file directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// What went wrong.
        source: io::Error,
    },
    /// A URL scheme this build does not know.
    #[error("unknown file store {0:?}: use a directory path, file:///PATH or s3://BUCKET[/PREFIX]")]
    Scheme(String),
    /// `s3://` in a build without the `s3` feature.
    #[error(
        "the file store is {0:?}, but this chat-server was built without S3 support: build it with `--features s3`"
    )]
    NoS3(String),
    /// The S3 settings were refused.
    #[error("the S3 file store: {0}")]
    S3(String),
}

/// The file store: cheap to clone.
#[derive(Clone, Debug)]
pub enum Blobs {
    /// Files under a directory.
    Dir(dir::DirBlobs),
    /// Objects in an S3-compatible bucket.
    #[cfg(feature = "s3")]
    S3(s3::S3Blobs),
}

/// An upload being appended to.
#[derive(Debug)]
pub enum BlobWriter {
    /// A file under the directory.
    Dir(dir::DirWriter),
    /// Objects in the bucket.
    #[cfg(feature = "s3")]
    S3(s3::S3Writer),
}

impl Blobs {
    /// Files under `dir` (created, readable by its owner only).
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        dir::DirBlobs::open(dir)
            .map(Self::Dir)
            .map_err(|source| OpenError::Directory {
                path: dir.display().to_string(),
                source,
            })
    }

    /// The store a `--file-store` setting names: a directory (a path or `file://`
    /// URL), or `s3://BUCKET[/PREFIX]` with the endpoint, region and credentials from
    /// the standard `AWS_*` variables, overridden by `options` (object_store's S3
    /// configuration keys, such as `aws_endpoint` or `aws_allow_http`).
    pub fn from_setting(setting: &str, options: &[(String, String)]) -> Result<Self, OpenError> {
        if let Some(path) = setting.strip_prefix("file://") {
            return Self::open(Path::new(path));
        }
        if setting.starts_with("s3://") {
            #[cfg(feature = "s3")]
            return s3::S3Blobs::open(setting, options)
                .map(Self::S3)
                .map_err(OpenError::S3);
            #[cfg(not(feature = "s3"))]
            {
                let _ = options;
                return Err(OpenError::NoS3(setting.to_owned()));
            }
        }
        if setting.contains("://") {
            return Err(OpenError::Scheme(setting.to_owned()));
        }
        Self::open(Path::new(setting))
    }

    /// Which kind of store this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dir(_) => "directory",
            #[cfg(feature = "s3")]
            Self::S3(_) => "s3",
        }
    }

    /// Makes room for a new upload `id` (an empty file; nothing for a bucket).
    pub async fn create(&self, id: &str) -> io::Result<()> {
        let id = checked(id)?;
        match self {
            Self::Dir(d) => d.create(id).await,
            #[cfg(feature = "s3")]
            Self::S3(_) => Ok(()),
        }
    }

    /// Opens `id` for appending at `offset`, the length recorded as stored: whatever
    /// lies past it (bytes of an earlier write that was never recorded) is cut off.
    pub async fn writer(&self, id: &str, offset: u64) -> io::Result<BlobWriter> {
        let id = checked(id)?;
        match self {
            Self::Dir(d) => d.writer(id, offset).await.map(BlobWriter::Dir),
            #[cfg(feature = "s3")]
            Self::S3(s) => s.writer(id, offset).await.map(BlobWriter::S3),
        }
    }

    /// Bytes `[start, end)` of the finished file `id`.
    pub async fn read(&self, id: &str, start: u64, end: u64) -> io::Result<ByteStream> {
        let id = checked(id)?;
        match self {
            Self::Dir(d) => d.read(id, start, end).await,
            #[cfg(feature = "s3")]
            Self::S3(s) => s.read(id, start, end).await,
        }
    }

    /// Deletes `id`'s bytes; gone already is fine.
    pub async fn delete(&self, id: &str) -> io::Result<()> {
        let id = checked(id)?;
        match self {
            Self::Dir(d) => d.delete(id).await,
            #[cfg(feature = "s3")]
            Self::S3(s) => s.delete(id).await,
        }
    }
}

impl BlobWriter {
    /// Appends a chunk (a bucket's writer keeps up to one part in memory).
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        match self {
            Self::Dir(w) => w.write(&chunk).await,
            #[cfg(feature = "s3")]
            Self::S3(w) => w.write(chunk).await,
        }
    }

    /// The upload's length with what was written so far.
    pub fn written(&self) -> u64 {
        match self {
            Self::Dir(w) => w.written(),
            #[cfg(feature = "s3")]
            Self::S3(w) => w.written(),
        }
    }

    /// Makes everything written durable; returns the length that is.
    pub async fn sync(&mut self) -> io::Result<u64> {
        match self {
            Self::Dir(w) => w.sync().await,
            #[cfg(feature = "s3")]
            Self::S3(w) => w.sync().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_a_store_or_say_why_not() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("files");
        let store = Blobs::from_setting(path.to_str().expect("utf-8"), &[]).expect("path");
        assert_eq!(store.kind(), "directory");
        assert!(path.is_dir());
        let url = format!("file://{}", dir.path().join("other").display());
        assert_eq!(
            Blobs::from_setting(&url, &[]).expect("url").kind(),
            "directory"
        );
        assert!(matches!(
            Blobs::from_setting("ftp://host/x", &[]),
            Err(OpenError::Scheme(_))
        ));
        #[cfg(not(feature = "s3"))]
        assert!(matches!(
            Blobs::from_setting("s3://bucket", &[]),
            Err(OpenError::NoS3(_))
        ));
    }
}
