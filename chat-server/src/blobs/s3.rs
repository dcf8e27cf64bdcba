//! Files in an S3-compatible bucket, for several nodes: any node can append to an
//! upload another node started and serve a file another node stored.
//!
//! S3 objects cannot be appended to, and tus appends in pieces of any size, so an
//! upload is a set of part objects under `PREFIX/ID/`, each named by the byte range it
//! holds (`START-END`, zero-padded). A writer keeps at most [`PART`] bytes in memory
//! and puts a part whenever that fills and when the request ends. Reopening an upload
//! at the recorded offset deletes the parts that start at or after it (they were never
//! recorded); a read walks the parts that cover the range asked for. Parts that
//! overlap (left by a writer cut off mid-request) hold the same bytes of the same
//! client file, so whichever covers a position serves it.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

use super::ByteStream;

/// The most bytes a writer holds before it puts a part.
const PART: usize = 4 * 1024 * 1024;

/// An upload's parts under its prefix.
#[derive(Clone, Debug)]
pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

/// One stored part: bytes `[start, end)` of its upload.
#[derive(Debug)]
struct Part {
    start: u64,
    end: u64,
    path: ObjectPath,
}

fn part_name(start: u64, end: u64) -> String {
    format!("{start:020}-{end:020}")
}

fn store_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        other => io::Error::other(other),
    }
}

impl S3Blobs {
    /// The bucket and prefix of `url` (`s3://BUCKET[/PREFIX]`): settings from the
    /// environment's `AWS_*` variables, then `options`.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self, String> {
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key.parse().map_err(|e| format!("option {key}: {e}"))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|e| e.to_string())?;
        let prefix = ObjectPath::parse(prefix.trim_matches('/'))
            .map_err(|e| format!("prefix {prefix:?}: {e}"))?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
        })
    }

    fn dir(&self, id: &str) -> ObjectPath {
        self.prefix.child(id)
    }

    /// The upload's parts, by start.
    async fn parts(&self, id: &str) -> io::Result<Vec<Part>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.dir(id)))
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut parts: Vec<Part> = listed
            .into_iter()
            .filter_map(|meta| {
                let (start, end) = meta.location.filename()?.split_once('-')?;
                let (start, end) = (start.parse().ok()?, end.parse().ok()?);
                (end > start && meta.size == end - start).then_some(Part {
                    start,
                    end,
                    path: meta.location,
                })
            })
            .collect();
        parts.sort_by_key(|p| (p.start, p.end));
        Ok(parts)
    }

    pub async fn writer(&self, id: &str, offset: u64) -> io::Result<S3Writer> {
        let unrecorded = self
            .parts(id)
            .await?
            .into_iter()
            .filter(|p| p.start >= offset)
            .map(|p| p.path);
        self.delete_all(unrecorded).await?;
        Ok(S3Writer {
            store: self.store.clone(),
            dir: self.dir(id),
            stored: offset,
            buffered: Vec::new(),
            buffered_len: 0,
        })
    }

    pub async fn read(&self, id: &str, start: u64, end: u64) -> io::Result<ByteStream> {
        let parts = self.parts(id).await?;
        let mut plan = Vec::new();
        let mut at = start;
        while at < end {
            let Some(part) = parts
                .iter()
                .filter(|p| p.start <= at && at < p.end)
                .max_by_key(|p| p.end)
            else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the bucket lacks bytes {at}.. of file {id}"),
                ));
            };
            let to = part.end.min(end);
            plan.push((part.path.clone(), (at - part.start)..(to - part.start)));
            at = to;
        }
        let store = self.store.clone();
        let stream = futures_util::stream::iter(plan)
            .then(move |(path, range)| {
                let store = store.clone();
                async move {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(range)),
                        ..Default::default()
                    };
                    let got = store.get_opts(&path, options).await?;
                    Ok::<_, object_store::Error>(got.into_stream())
                }
            })
            .try_flatten()
            .map_err(store_error);
        Ok(Box::pin(stream))
    }

    pub async fn delete(&self, id: &str) -> io::Result<()> {
        let parts = self.parts(id).await?.into_iter().map(|p| p.path);
        self.delete_all(parts).await
    }

    async fn delete_all(&self, paths: impl Iterator<Item = ObjectPath>) -> io::Result<()> {
        let paths: Vec<_> = paths.map(Ok).collect();
        if paths.is_empty() {
            return Ok(());
        }
        let mut deleted = self
            .store
            .delete_stream(futures_util::stream::iter(paths).boxed());
        while let Some(done) = deleted.next().await {
            match done {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(())
    }
}

/// An upload being appended to: the part being filled is in memory.
#[derive(Debug)]
pub struct S3Writer {
    store: Arc<dyn ObjectStore>,
    dir: ObjectPath,
    /// The upload's length in stored parts.
    stored: u64,
    buffered: Vec<Bytes>,
    buffered_len: usize,
}

impl S3Writer {
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.buffered_len += chunk.len();
        self.buffered.push(chunk);
        if self.buffered_len >= PART {
            self.put_part().await?;
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.stored + self.buffered_len as u64
    }

    pub async fn sync(&mut self) -> io::Result<u64> {
        self.put_part().await?;
        Ok(self.stored)
    }

    /// Puts what is buffered as one part. On failure it is dropped: the upload's
    /// length stays what was stored, and the client resumes from there.
    async fn put_part(&mut self) -> io::Result<()> {
        if self.buffered_len == 0 {
            return Ok(());
        }
        let end = self.stored + self.buffered_len as u64;
        let payload: PutPayload = std::mem::take(&mut self.buffered).into_iter().collect();
        self.buffered_len = 0;
        self.store
            .put(&self.dir.child(part_name(self.stored, end)), payload)
            .await
            .map_err(store_error)?;
        self.stored = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    /// The same part logic over object_store's in-memory store (the S3 protocol itself
    /// is tested against a real S3-compatible server in tests/files.rs).
    fn in_memory() -> S3Blobs {
        S3Blobs {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: ObjectPath::parse("chat/files").expect("prefix"),
        }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn read(blobs: &S3Blobs, id: &str, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = blobs.read(id, start, end).await?.try_collect().await?;
        Ok(chunks.concat())
    }

    async fn names(blobs: &S3Blobs, id: &str) -> Vec<String> {
        let parts = blobs.parts(id).await.expect("parts");
        parts
            .iter()
            .map(|p| format!("{}-{}", p.start / MIB as u64, p.end / MIB as u64))
            .collect()
    }

    #[tokio::test]
    async fn parts_are_put_as_they_fill_and_cut_where_the_record_ends() {
        let blobs = in_memory();
        let id = super::super::new_id();
        let data = content(8 * MIB);
        let mut w = blobs.writer(&id, 0).await.expect("writer");
        for chunk in data[..6 * MIB].chunks(MIB) {
            w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        }
        // One part put when the buffer filled; the rest waits in memory.
        assert_eq!(names(&blobs, &id).await, ["0-4"]);
        assert_eq!(w.written(), 6 * MIB as u64);
        assert_eq!(w.sync().await.expect("sync"), 6 * MIB as u64);
        assert_eq!(names(&blobs, &id).await, ["0-4", "4-6"]);
        assert_eq!(
            read(&blobs, &id, 3 * MIB as u64, 5 * MIB as u64)
                .await
                .expect("read"),
            &data[3 * MIB..5 * MIB]
        );

        // Only 4 MiB were recorded (the request died before its end was): reopening
        // there drops the unrecorded part, and the upload goes on from 4 MiB.
        let mut w = blobs.writer(&id, 4 * MIB as u64).await.expect("writer");
        assert_eq!(names(&blobs, &id).await, ["0-4"]);
        w.write(Bytes::copy_from_slice(&data[4 * MIB..]))
            .await
            .expect("write");
        assert_eq!(w.sync().await.expect("sync"), 8 * MIB as u64);
        assert_eq!(
            read(&blobs, &id, 0, 8 * MIB as u64).await.expect("read"),
            data
        );

        // A part left by a writer cut off mid-request may overlap others: the read
        // still takes every byte once, in order.
        let stray = ObjectPath::from(format!(
            "chat/files/{id}/{}",
            part_name(2 * MIB as u64, 5 * MIB as u64)
        ));
        blobs
            .store
            .put(
                &stray,
                Bytes::copy_from_slice(&data[2 * MIB..5 * MIB]).into(),
            )
            .await
            .expect("put");
        assert_eq!(
            read(&blobs, &id, MIB as u64 + 7, 8 * MIB as u64 - 3)
                .await
                .expect("read"),
            &data[MIB + 7..8 * MIB - 3]
        );

        // Bytes missing from the bucket are an error, never a short file.
        let first = ObjectPath::from(format!("chat/files/{id}/{}", part_name(0, 4 * MIB as u64)));
        blobs.store.delete(&first).await.expect("delete");
        let missing = read(&blobs, &id, 0, 10).await.expect_err("missing bytes");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);

        blobs.delete(&id).await.expect("delete");
        assert!(names(&blobs, &id).await.is_empty());
        blobs.delete(&id).await.expect("again");
    }
}
