//! A bot that answers every message in every conversation it belongs to.
//!
//! `cargo run -p chat-examples --bin echo_bot -- --username echo --password 'long secret' --register`
//! then start a direct conversation with `echo` and say something. With
//! `--device-key echo.key` it also answers in end-to-end encrypted conversations,
//! sealing its echo for every device there.

use anyhow::Context as _;
use chat_examples::ConnectArgs;
use chat_sdk::Event;
use chat_sdk::chat_proto::body::Body;
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
            Event::Message(m) if m.sender != client.user_id() => {
                let reply = match &m.body {
                    Body::Text(text) => format!("echo: {text}"),
                    Body::Encrypted(_) => "echo: (an encrypted message I cannot read)".into(),
                };
                answer(&client, &m, reply).await?;
            }
            Event::Undecryptable { message, reason } if message.sender != client.user_id() => {
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

async fn answer(
    client: &chat_sdk::Client,
    to: &chat_sdk::chat_proto::frame::Message,
    reply: String,
) -> anyhow::Result<()> {
    match client.send_text(to.conversation, reply).await {
        Ok(_) => {}
        // An encrypted conversation and no device key: say so once in the log, go on.
        Err(e) => tracing::warn!(error = %e, conversation = to.conversation.get(), "cannot answer"),
    }
    client.mark_read(to.conversation, to.seq).await?;
    Ok(())
}
