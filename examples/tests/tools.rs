//! `simulate` and `chat_cli` as real processes against an in-process server.

use std::process::Stdio;
use std::time::Duration;

use chat_sdk::{ClientBuilder, Event};
use chat_server::config::Config;
use tokio::io::AsyncWriteExt as _;

async fn server(dir: &std::path::Path) -> chat_server::RunningServer {
    chat_server::Server::bind(Config::for_tests(dir))
        .await
        .expect("server starts")
        .spawn()
}

/// A finished tool's standard output; fails the test, showing both outputs, unless it
/// exited successfully.
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The next log entry `events` delivers, within 20 seconds.
async fn next_entry(events: &mut chat_sdk::Events) -> chat_sdk::chat_proto::entry::Entry {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(Event::Entry(m)) = events.recv().await {
                return m;
            }
        }
    })
    .await
    .expect("an entry arrives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_checks_a_deployment_over_both_transports() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path()).await;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_simulate"))
            .args(["--url", &format!("ws://{}", server.http_addr)])
            .args(["--api-url", &format!("http://{}", server.http_addr)])
            .args(["--quic-url", &format!("quic://{}", server.quic_addr)])
            .args(["--pin", &server.quic_cert.fingerprint])
            .args([
                "--users",
                "6",
                "--groups",
                "2",
                "--duration",
                "3",
                "--think-ms",
                "150",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("finishes")
    .expect("runs");
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("6 people (3 on QUIC, 3 on WebSocket)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("missing 0, out of order or repeated 0"),
        "{stdout}"
    );
    server.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_cli_talks_to_a_person() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path()).await;
    let bob = ClientBuilder::new(format!("ws://{}", server.http_addr))
        .register("bob", "correct horse battery", None)
        .connect()
        .await
        .expect("bob connects");
    let mut events = bob.events();
    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat_cli"))
        .args(["--url", &format!("ws://{}", server.http_addr)])
        .args(["--username", "ada", "--register"])
        .env("CHAT_PASSWORD", "analytical engine")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chat_cli starts");
    let mut stdin = cli.stdin.take().expect("stdin");
    stdin
        .write_all(b"/dm bob\nhello from the terminal\n")
        .await
        .expect("typed");
    let got = next_entry(&mut events).await;
    assert_eq!(got.text(), Some("hello from the terminal"));
    bob.send_text(got.conversation, "hi ada")
        .await
        .expect("acked");
    // Files both ways: bob sends one, ada saves it; ada sends one, bob gets it.
    let files = tempfile::tempdir().expect("files");
    let sent = files.path().join("notes.txt");
    std::fs::write(&sent, b"three things to remember").expect("write");
    let file = chat_sdk::FileToSend::new(&sent, "text/plain");
    let ack = bob
        .send_files(got.conversation, "for you", &[file], |_, _, _| {})
        .await
        .expect("sent");
    let saved = files.path().join("saved");
    std::fs::create_dir(&saved).expect("dir");
    let typed = format!(
        "/save {} {}\n/send {} the reply\n",
        ack.seq.get(),
        saved.display(),
        sent.display()
    );
    stdin.write_all(typed.as_bytes()).await.expect("typed");
    let reply = loop {
        let e = next_entry(&mut events).await;
        if e.sender != bob.user_id() {
            break e;
        }
    };
    let Some(chat_sdk::chat_proto::body::Body::Attachments(a)) = reply.body() else {
        panic!("files from ada: {reply:?}");
    };
    assert_eq!(
        (a.text.as_str(), a.files[0].name.as_str()),
        ("the reply", "notes.txt")
    );
    assert_eq!(
        std::fs::read(saved.join("notes.txt")).expect("saved"),
        b"three things to remember"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write_all(b"/who\n/quit\n").await.expect("typed");
    let out = tokio::time::timeout(Duration::from_secs(20), cli.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("bob: hi ada"), "{stdout}");
    assert!(stdout.contains("ada: hello from the terminal"), "{stdout}");
    assert!(stdout.contains("  bob ("), "{stdout}");
    assert!(
        stdout.contains("bob: for you\n📎 notes.txt (24 B)"),
        "{stdout}"
    );
    bob.close().await;
    server.stop().await.expect("clean shutdown");
}

/// `send_file` uploads the files, sealed in an encrypted conversation, and the
/// recipient's client reads the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_file_delivers_plain_and_sealed_files() {
    use chat_sdk::chat_proto::body::Body;
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = server(dir.path()).await;
    let url = format!("ws://{}", server.http_addr);
    let keys = tempfile::tempdir().expect("keys");
    let connect = |name: &str| {
        ClientBuilder::new(&url)
            .register(name, "a long enough password", None)
            .device_key(keys.path().join(format!("{name}.key")))
            .connect()
    };
    let sender = connect("ada").await.expect("ada");
    sender.close().await;
    let grace = connect("grace").await.expect("grace");
    let mut events = grace.events();
    let photo = keys.path().join("photo.png");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&photo, &bytes).expect("write");
    for encrypted in [false, true] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_send_file"));
        command
            .args(["--url", &url, "--username", "ada", "--to", "grace"])
            .args(["--caption", "from the trip"])
            .args([
                "--device-key",
                &keys.path().join("ada.key").to_string_lossy(),
            ])
            .env("CHAT_PASSWORD", "a long enough password")
            .arg(&photo)
            .kill_on_drop(true);
        if encrypted {
            command.arg("--encrypted");
        }
        let out = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("finishes")
            .expect("runs");
        let stdout = succeeded(&out);
        assert!(stdout.contains("sent 1 file(s) to grace"), "{stdout}");
        let entry = next_entry(&mut events).await;
        let Some(Body::Attachments(a)) = entry.body() else {
            panic!("files, opened: {entry:?}");
        };
        assert_eq!(
            (a.text.as_str(), a.files[0].name.as_str()),
            ("from the trip", "photo.png")
        );
        assert_eq!(a.files[0].media_type, "image/png");
        let mut back = Vec::new();
        grace
            .download_attachment(&a.files[0], &mut back)
            .await
            .expect("downloads");
        assert!(back == bytes, "the same bytes (encrypted: {encrypted})");
    }
    grace.close().await;
    server.stop().await.expect("clean shutdown");
}
