//! A bot that answers every message in every conversation it belongs to, as a reply
//! to it, and reacts 👀 to commands (messages starting with `/`) before answering.
//!
//! `cargo run -p chat-examples --bin echo_bot -- --username echo --password 'long secret' --register`
//! then start a direct conversation with `echo` and say something. With
//! `--device-key echo.key` it also answers in end-to-end encrypted conversations,
//! sealing its echo (and its reactions) for every device there.

use anyhow::Context as _;
use chat_examples::ConnectArgs;
use chat_sdk::Event;
use chat_sdk::chat_proto::body::Body;
use chat_sdk::chat_proto::entry::{Content, Entry};
use chat_sdk::chat_proto::error::ErrorCode;
use clap::Parser;

/// Answers every message with an echo.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The bot's account.
    #[arg(long, default_value = "echo")]
    username: String,
    /// Its password.
    #[arg(long, env = "ECHO_BOT_PASSWORD")]
    password: String,
    /// Create the account first.
    #[arg(long)]
    register: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_examples::init_logging();
    let args = Args::parse();
    let builder = args.connect.builder("echo_bot")?;
    let builder = if args.register {
        builder.register(&args.username, &args.password, Some("Echo bot".into()))
    } else {
        builder.login(&args.username, &args.password)
    };
    let client = builder.connect().await.context("connecting")?;
    println!(
        "echo_bot ready as {} (user {})",
        args.username,
        client.user_id().get()
    );

    let mut events = client.events();
    while let Some(event) = events.recv().await {
        match event {
            Event::Entry(m) if m.sender != client.user_id() => {
                let reply = match &m.content {
                    Content::Message {
                        body: Some(Body::Text(text)),
                        ..
                    } => {
                        if text.starts_with('/') {
                            // Seen: the answer may take a while.
                            if let Err(e) = client.react(m.conversation, m.seq, "👀").await {
                                tracing::warn!(error = %e, "cannot react");
                            }
                        }
                        format!("echo: {text}")
                    }
                    Content::Message {
                        body: Some(Body::Encrypted(_)),
                        ..
                    } => "echo: (an encrypted message I cannot read)".into(),
                    // Edits, deletions, reactions and deleted messages: nothing to echo.
                    _ => continue,
                };
                answer(&client, &m, reply).await?;
            }
            Event::Undecryptable {
                entry: message,
                reason,
            } if message.sender != client.user_id() && message.content.is_message() => {
                answer(
                    &client,
                    &message,
                    format!("echo: (I could not read that: {reason})"),
                )
                .await?;
            }
            Event::Stopped(error) => return Err(error).context("the client stopped"),
            _ => {}
        }
    }
    Ok(())
}

async fn answer(client: &chat_sdk::Client, to: &Entry, reply: String) -> anyhow::Result<()> {
    let sent = match client.reply(to.conversation, to.seq, reply.clone()).await {
        // A server older than protocol 1.3 has no replies: a plain message then.
        Err(chat_sdk::Error::Server {
            code: ErrorCode::UnsupportedFrame,
            ..
        }) => client.send_text(to.conversation, reply).await,
        other => other,
    };
    match sent {
        Ok(_) => {}
        // An encrypted conversation and no device key: say so once in the log, go on.
        Err(e) => tracing::warn!(error = %e, conversation = to.conversation.get(), "cannot answer"),
    }
    client.mark_read(to.conversation, to.seq).await?;
    Ok(())
}
