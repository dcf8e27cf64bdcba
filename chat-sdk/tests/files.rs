//! Files through the SDK against a real server: a chunked tus upload with progress,
//! paused and resumed under its id, and a streaming download of the same bytes;
//! refusals are typed.

mod common;

use std::ops::ControlFlow;

use chat_sdk::Error;
use chat_sdk::files::CHUNK;
use common::{PASSWORD, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_and_download_the_same_bytes() {
    let server = TestServer::start_with(|c| c.max_file_size = 64 * 1024 * 1024).await;
    let client = server
        .ws("files")
        .register("fay", PASSWORD, None)
        .connect()
        .await
        .expect("connects");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("photo.jpg");
    let length = 2 * CHUNK + 12_345;
    let content: Vec<u8> = (0..length).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&path, &content).expect("write");

    // Paused after the first chunk, from the progress callback.
    let mut seen = Vec::new();
    let paused = client
        .upload_file(&path, "image/jpeg", |stored, total| {
            seen.push((stored, total));
            ControlFlow::Break(())
        })
        .await
        .expect("upload starts");
    assert_eq!(seen, vec![(CHUNK as u64, length as u64)]);
    assert!(!paused.is_complete());

    // Resumed under its id, from where the server has it.
    let mut seen = Vec::new();
    let done = client
        .resume_upload(&paused.id, &path, |stored, total| {
            seen.push((stored, total));
            ControlFlow::Continue(())
        })
        .await
        .expect("upload resumes");
    assert!(done.is_complete());
    assert_eq!(
        seen,
        vec![
            (2 * CHUNK as u64, length as u64),
            (length as u64, length as u64)
        ]
    );

    let mut back = Vec::new();
    let n = client
        .download_file(&done.id, &mut back)
        .await
        .expect("downloads");
    assert_eq!(n, length as u64);
    assert!(back == content, "the bytes differ");

    // Someone else's file is not found; a file past the limit is refused up front.
    let other = server
        .ws("other")
        .register("gil", PASSWORD, None)
        .connect()
        .await
        .expect("connects");
    let mut sink = Vec::new();
    match other.download_file(&done.id, &mut sink).await {
        Err(Error::Api { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(65 * 1024 * 1024))
        .expect("sparse file");
    match client
        .upload_file(&big, "application/octet-stream", |_, _| {
            ControlFlow::Continue(())
        })
        .await
    {
        Err(Error::Api {
            status: 413, code, ..
        }) => assert_eq!(code, "file_too_large"),
        other => panic!("{other:?}"),
    }
    client.close().await;
    other.close().await;
}
