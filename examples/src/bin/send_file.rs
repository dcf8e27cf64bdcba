//! Sends files to someone in one message, sealed end to end when the conversation is
//! encrypted, with upload progress on stderr.
//!
//! `cargo run -p chat-examples --bin send_file -- --username ada --to grace photo.jpg notes.pdf --caption "from the trip"`
//! (the password comes from `CHAT_PASSWORD` or `--password`; `--encrypted` with
//! `--device-key FILE` uses the end-to-end encrypted direct conversation).

use std::io::Write as _;

use anyhow::Context as _;
use chat_examples::ConnectArgs;
use chat_sdk::FileToSend;
use clap::Parser;

/// Send files to a person.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Your account name.
    #[arg(long)]
    username: String,
    /// Your password.
    #[arg(long, env = "CHAT_PASSWORD", hide_env_values = true)]
    password: String,
    /// Who gets the files (their account name).
    #[arg(long)]
    to: String,
    /// Text that goes with the files.
    #[arg(long, default_value = "")]
    caption: String,
    /// Use the end-to-end encrypted direct conversation (needs `--device-key`).
    #[arg(long)]
    encrypted: bool,
    /// The files, at most 10.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_examples::init_logging();
    let args = Args::parse();
    let client = args
        .connect
        .builder("send_file")?
        .login(&args.username, &args.password)
        .connect()
        .await
        .context("connecting")?;
    let found = client
        .search_users(&args.to, 10, None)
        .await
        .context("looking up the recipient")?;
    let to = found
        .users
        .iter()
        .find(|u| u.username == args.to)
        .with_context(|| format!("no user named {}", args.to))?;
    let conversation = if args.encrypted {
        client.create_encrypted_direct(to.id).await
    } else {
        client.create_direct(to.id).await
    }
    .context("opening the conversation")?;
    let files: Vec<FileToSend> = args
        .files
        .iter()
        .map(|p| FileToSend::new(p, chat_examples::media_type(p)))
        .collect();
    let mut shown = (usize::MAX, 0);
    let ack = client
        .send_files(
            conversation.id,
            &args.caption,
            &files,
            |i, stored, total| {
                let percent = (stored * 100).checked_div(total).unwrap_or(100);
                if shown != (i, percent) {
                    shown = (i, percent);
                    eprint!("\r{}: {percent}%   ", args.files[i].display());
                    let _ = std::io::stderr().flush();
                }
            },
        )
        .await
        .context("sending")?;
    eprintln!();
    println!(
        "sent {} file(s) to {} as message {} (seq {})",
        files.len(),
        args.to,
        ack.id,
        ack.seq
    );
    client.close().await;
    Ok(())
}
