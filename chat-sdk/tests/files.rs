//! Files through the SDK against a real server: a chunked tus upload with progress,
//! paused and resumed under its id, and a streaming download of the same bytes;
//! refusals are typed.

mod common;

use std::ops::ControlFlow;

use chat_sdk::chat_proto::body::{Body, FileRef, ImageInfo};
use chat_sdk::files::CHUNK;
use chat_sdk::{Error, Events, FileToSend};
use common::{PASSWORD, TestServer, contains, next_message, user};

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

/// The files of the next message `events` delivers, with its caption.
async fn next_files(events: &mut Events) -> (String, Vec<FileRef>) {
    match next_message(events).await.body() {
        Some(Body::Attachments(a)) => (a.text.clone(), a.files.clone()),
        other => panic!("expected files, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_plain_and_encrypted_messages() {
    let server = TestServer::start().await;
    let keys = tempfile::tempdir().expect("keys");
    let (alice, _) = user(&server, "alice", Some(&keys.path().join("alice.key"))).await;
    let (bob, mut bob_events) = user(&server, "bob", Some(&keys.path().join("bob.key"))).await;
    let dir = tempfile::tempdir().expect("dir");

    // A plain conversation: the files as they are, described in the clear.
    let plain = alice.create_direct(bob.user_id()).await.expect("dm");
    let photo = dir.path().join("photo.jpg");
    let photo_bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::write(&photo, &photo_bytes).expect("write");
    let mut file = FileToSend::new(&photo, "image/jpeg");
    file.image = Some(ImageInfo {
        width: 640,
        height: 480,
        thumbnail: Some(vec![0xff, 0xd8].into()),
    });
    let mut progress = Vec::new();
    alice
        .send_files(plain.id, "the view", &[file], |i, stored, total| {
            progress.push((i, stored, total))
        })
        .await
        .expect("sent");
    assert_eq!(progress.last(), Some(&(0, 300_000, 300_000)));
    let (caption, files) = next_files(&mut bob_events).await;
    assert_eq!((caption.as_str(), files.len()), ("the view", 1));
    assert_eq!(
        (files[0].name.as_str(), files[0].size),
        ("photo.jpg", 300_000)
    );
    assert_eq!(
        files[0].image.as_ref().map(|i| (i.width, i.height)),
        Some((640, 480))
    );
    let mut back = Vec::new();
    bob.download_attachment(&files[0], &mut back)
        .await
        .expect("downloads");
    assert!(back == photo_bytes, "the same bytes");

    // An encrypted conversation: sealed before upload, opened after download.
    let sealed = alice
        .create_encrypted_direct(bob.user_id())
        .await
        .expect("encrypted dm");
    let secret_name = "plans-for-7261.txt";
    let secret = dir.path().join(secret_name);
    let marker = "the vault code is 7261";
    let mut secret_bytes = marker.repeat(10_000).into_bytes(); // over three file chunks
    secret_bytes.extend_from_slice(b"end");
    std::fs::write(&secret, &secret_bytes).expect("write");
    let caption_secret = "read this alone 9911";
    alice
        .send_files(
            sealed.id,
            caption_secret,
            &[FileToSend::new(&secret, "text/plain")],
            |_, _, _| {},
        )
        .await
        .expect("sealed send");
    let (caption, files) = next_files(&mut bob_events).await;
    assert_eq!(caption, caption_secret, "opened by the recipient");
    assert_eq!(
        (files[0].name.as_str(), files[0].size),
        (secret_name, secret_bytes.len() as u64)
    );
    let mut back = Vec::new();
    let n = bob
        .download_attachment(&files[0], &mut back)
        .await
        .expect("downloads and opens");
    assert_eq!(n, secret_bytes.len() as u64);
    assert!(back == secret_bytes, "the same bytes");

    // The server holds ciphertext only: not the bytes, name, type or caption.
    let stored_file = server.data_dir().join("files").join(files[0].id.as_str());
    let stored = std::fs::read(&stored_file).expect("stored file");
    assert_eq!(
        stored.len() as u64,
        chat_crypto::file::sealed_len(secret_bytes.len() as u64)
    );
    assert!(!contains(&stored, marker));
    let db = server.stored_bytes();
    assert!(
        contains(&db, "the view"),
        "the check finds plaintext when it is there"
    );
    for leak in [caption_secret, secret_name, marker] {
        assert!(!contains(&db, leak), "{leak} is stored in the clear");
    }

    // Bytes changed on the server do not open.
    let mut tampered = stored.clone();
    tampered[70_000] ^= 1;
    std::fs::write(&stored_file, &tampered).expect("tamper");
    let mut back = Vec::new();
    let refused = bob.download_attachment(&files[0], &mut back).await;
    assert!(matches!(refused, Err(Error::Protocol(_))), "{refused:?}");
    alice.close().await;
    bob.close().await;
}
