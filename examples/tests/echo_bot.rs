//! `echo_bot` as a real process against an in-process server: a person writes to it,
//! it answers with a reply, and reacts 👀 to commands.

use std::process::Stdio;
use std::time::Duration;

use chat_sdk::chat_proto::body::Body;
use chat_sdk::chat_proto::entry::{Content, Reaction};
use chat_sdk::{ClientBuilder, Event};
use chat_server::config::Config;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_answers_over_quic() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = chat_server::Server::bind(Config::for_tests(dir.path()))
        .await
        .expect("server starts")
        .spawn();
    let api = format!("http://{}", server.http_addr);
    let mut bot = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo_bot"))
        .args(["--url", &format!("quic://{}", server.quic_addr)])
        .args(["--api-url", &api])
        .args(["--pin", &server.quic_cert.fingerprint])
        .args(["--username", "echo", "--register"])
        .env("ECHO_BOT_PASSWORD", "a long bot password")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("echo_bot starts");
    let mut ready = BufReader::new(bot.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), ready.next_line())
        .await
        .expect("ready in time")
        .expect("stdout")
        .expect("a line");
    assert!(line.starts_with("echo_bot ready"), "{line}");

    let me = ClientBuilder::new(format!("ws://{}", server.http_addr))
        .register("person", "correct horse battery", None)
        .connect()
        .await
        .expect("person connects");
    let mut events = me.events();
    let echo = me
        .search_users("echo", 1, None)
        .await
        .expect("search")
        .users;
    let dm = me.create_direct(echo[0].id).await.expect("DM with the bot");
    for word in ["hello", "/again"] {
        let sent = me.send_text(dm.id, word).await.expect("acked");
        let mut seen = Vec::new();
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(Event::Entry(m)) = events.recv().await
                    && m.sender == echo[0].id
                {
                    if m.content.is_message() {
                        return m;
                    }
                    seen.push(m.content);
                }
            }
        })
        .await
        .expect("the bot answers");
        assert_eq!(
            answer.content,
            Content::Message {
                body: Some(Body::Text(format!("echo: {word}"))),
                reply_to: Some(sent.seq),
            },
            "a reply to the message"
        );
        // A command is acknowledged with 👀 before the answer; a plain word is not.
        let eyes = Content::Reaction {
            target: sent.seq,
            reaction: Some(Reaction::Emoji("👀".into())),
        };
        let expected = if word.starts_with('/') {
            vec![eyes]
        } else {
            vec![]
        };
        assert_eq!(seen, expected);
    }
    // It marks what it answered read.
    let receipt = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Receipt(r)) = events.recv().await
                && r.user == echo[0].id
            {
                return r;
            }
        }
    })
    .await
    .expect("a receipt from the bot");
    assert_eq!(receipt.conversation, dm.id);

    bot.kill().await.expect("stops");
    me.close().await;
    server.stop().await.expect("clean shutdown");
}
