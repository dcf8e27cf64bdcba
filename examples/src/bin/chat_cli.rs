//! An interactive terminal client.
//!
//! `cargo run -p chat-examples --bin chat_cli -- --username ada [--register]`
//! (the password comes from `CHAT_PASSWORD` or is asked for). Type `/help`.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::Context as _;
use chat_examples::ConnectArgs;
use chat_sdk::chat_proto::body::Body;
use chat_sdk::chat_proto::entry::{Content, Entry, Reaction};
use chat_sdk::chat_proto::ids::{ConversationId, Seq, UserId};
use chat_sdk::chat_proto::prelude::PresenceStatus;
use chat_sdk::{Client, Event, FileToSend};
use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Chat from the terminal.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Account name.
    #[arg(long)]
    username: String,
    /// Password (asked for when absent).
    #[arg(long, env = "CHAT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Create the account first.
    #[arg(long)]
    register: bool,
}

const HELP: &str = "\
commands:
  /list                 your conversations, with unread counts
  /open N               open conversation N of /list (shows recent messages)
  /more                 older messages of the open conversation
  /dm USERNAME          open (or start) a direct chat
  /group TITLE USER...  create a group with these people
  /add USERNAME         add someone to the open group
  /leave                leave the open group
  /who                  members of the open conversation
  /typing               tell the open conversation you are typing
  /reply N TEXT         answer message #N of the open conversation
  /edit N TEXT          change your message #N
  /delete N             delete message #N (yours, or any in a group you own)
  /react N EMOJI        react to message #N (again with the entry's #, /delete N undoes it)
  /send PATH [CAPTION]  send a file (sealed end to end in an encrypted conversation)
  /save N [DIR]         save the files of message #N (into the current directory)
  /quit                 exit
anything else is sent to the open conversation";

struct Ui {
    client: Client,
    names: HashMap<UserId, String>,
    listed: Vec<ConversationId>,
    open: Option<ConversationId>,
    /// Oldest seq shown of the open conversation, for /more.
    oldest: Option<Seq>,
}

impl Ui {
    async fn name(&mut self, id: UserId) -> String {
        if let Some(n) = self.names.get(&id) {
            return n.clone();
        }
        let name = match self.client.user(id).await {
            Ok(u) => u.username,
            Err(_) => format!("user {}", id.get()),
        };
        self.names.insert(id, name.clone());
        name
    }

    async fn user_by_name(&self, username: &str) -> anyhow::Result<UserId> {
        let page = self.client.search_users(username, 10, None).await?;
        page.users
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .map(|u| u.id)
            .with_context(|| format!("no user named {username}"))
    }

    /// Saves the files of message `seq` into `dir`, each under its own name (its last
    /// path component only, so a name cannot write outside `dir`).
    async fn save(
        &self,
        conversation: ConversationId,
        seq: Seq,
        dir: &std::path::Path,
    ) -> anyhow::Result<()> {
        let after = Seq::new(seq.get() + 1)?;
        let page = self.client.history(conversation, Some(after), 1).await?;
        let entry = page
            .entries
            .into_iter()
            .find(|e| e.seq == seq)
            .with_context(|| format!("no message #{}", seq.get()))?;
        let Some(Body::Attachments(a)) = entry.body() else {
            anyhow::bail!("message #{} has no files this client can open", seq.get());
        };
        for file in &a.files {
            let name = std::path::Path::new(&file.name)
                .file_name()
                .map_or_else(|| "file".into(), |n| n.to_owned());
            let path = dir.join(name);
            let mut out = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("creating {}", path.display()))?;
            match self.client.download_attachment(file, &mut out).await {
                Ok(n) => println!("  saved {} ({n} bytes)", path.display()),
                Err(e) => {
                    // What arrived of a file that failed must not pass for the file.
                    drop(out);
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(e).with_context(|| format!("downloading {}", file.name));
                }
            }
        }
        Ok(())
    }

    async fn show(&mut self, m: &Entry) {
        let who = self.name(m.sender).await;
        let body = |b: &Option<Body>| match b {
            Some(Body::Text(t)) => t.clone(),
            Some(Body::Encrypted(_) | Body::SealedAttachments(_)) => "(encrypted)".into(),
            // The caption, then a line per file, as older clients see it.
            Some(files @ Body::Attachments(_)) => {
                files.without_files().as_text().unwrap_or("").into()
            }
            None => "(deleted)".into(),
        };
        let text = match &m.content {
            Content::Message {
                body: b,
                reply_to: None,
            } => body(b),
            Content::Message {
                body: b,
                reply_to: Some(to),
            } => format!("(to #{}) {}", to.get(), body(b)),
            Content::Edit { target, body: b } => {
                format!("✎ #{} now reads: {}", target.get(), body(b))
            }
            Content::Delete { target } => format!("🗑 deleted #{}", target.get()),
            Content::Reaction {
                target,
                reaction: Some(Reaction::Emoji(e)),
            } => format!("{e} to #{}", target.get()),
            Content::Reaction { target, .. } => format!("(a reaction to #{})", target.get()),
        };
        let here = Some(m.conversation) == self.open;
        let place = if here {
            String::new()
        } else {
            format!("[#{}] ", m.conversation.get())
        };
        println!("{place}#{:<4} {who}: {text}", m.seq.get());
    }

    async fn open(&mut self, conversation: ConversationId) -> anyhow::Result<()> {
        self.open = Some(conversation);
        self.oldest = None;
        let c = self.client.conversation(conversation).await?;
        let title = if c.title.is_empty() {
            let names: Vec<String> = c.members.iter().map(|m| m.user.username.clone()).collect();
            names.join(", ")
        } else {
            c.title.clone()
        };
        println!("── {title} ──");
        self.more().await
    }

    async fn more(&mut self) -> anyhow::Result<()> {
        let conversation = self.open.context("no conversation open (/open N)")?;
        let page = self.client.history(conversation, self.oldest, 20).await?;
        if page.entries.is_empty() {
            println!("(nothing older)");
        }
        for m in page.entries.iter().rev() {
            self.show(m).await;
        }
        if let Some(last) = page.entries.first() {
            let _ = self.client.mark_read(conversation, last.seq).await;
        }
        self.oldest = page.entries.last().map(|m| m.seq).or(self.oldest);
        Ok(())
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<bool> {
        let mut words = line.split_whitespace();
        match words.next().unwrap_or_default() {
            "/quit" | "/exit" => return Ok(false),
            "/help" => println!("{HELP}"),
            "/list" => {
                self.listed.clear();
                for (i, s) in self.client.conversations().await?.iter().enumerate() {
                    let c = &s.conversation;
                    let title = if c.title.is_empty() {
                        let others: Vec<&str> = c
                            .members
                            .iter()
                            .filter(|m| m.user.id != self.client.user_id())
                            .map(|m| m.user.username.as_str())
                            .collect();
                        others.join(", ")
                    } else {
                        c.title.clone()
                    };
                    let unread = if s.unread > 0 {
                        format!("  ({} unread)", s.unread)
                    } else {
                        String::new()
                    };
                    println!("{:>3}. {title}{unread}", i + 1);
                    self.listed.push(c.id);
                }
            }
            "/open" => {
                let n: usize = words.next().context("/open N")?.parse()?;
                let id = *self
                    .listed
                    .get(n.wrapping_sub(1))
                    .context("no such entry; /list first")?;
                self.open(id).await?;
            }
            "/more" => self.more().await?,
            "/dm" => {
                let user = self
                    .user_by_name(words.next().context("/dm USERNAME")?)
                    .await?;
                let c = self.client.create_direct(user).await?;
                self.open(c.id).await?;
            }
            "/group" => {
                let title = words.next().context("/group TITLE USER...")?;
                let mut members = Vec::new();
                for name in words {
                    members.push(self.user_by_name(name).await?);
                }
                let c = self.client.create_group(title, &members).await?;
                self.open(c.id).await?;
            }
            "/add" => {
                let conversation = self.open.context("no conversation open")?;
                let user = self
                    .user_by_name(words.next().context("/add USERNAME")?)
                    .await?;
                self.client.add_member(conversation, user).await?;
            }
            "/leave" => {
                let conversation = self.open.take().context("no conversation open")?;
                self.client.leave(conversation).await?;
                println!("left");
            }
            "/who" => {
                let conversation = self.open.context("no conversation open")?;
                for m in self.client.conversation(conversation).await?.members {
                    let seen = m
                        .user
                        .last_seen
                        .map(|t| format!(", last seen {}", t.as_millis()))
                        .unwrap_or_default();
                    println!(
                        "  {} ({:?}, read up to #{}{seen})",
                        m.user.username,
                        m.role,
                        m.last_read_seq.get()
                    );
                }
            }
            "/reply" | "/edit" | "/delete" | "/react" => {
                let conversation = self.open.context("no conversation open")?;
                let command = line.split_whitespace().next().unwrap_or_default();
                let n: u64 = words
                    .next()
                    .context("which message: #N")?
                    .trim_start_matches('#')
                    .parse()?;
                let target = Seq::new(n)?;
                let rest = words.collect::<Vec<_>>().join(" ");
                let ack = match command {
                    "/reply" => self.client.reply(conversation, target, rest).await?,
                    "/edit" => self.client.edit(conversation, target, rest).await?,
                    "/delete" => self.client.delete(conversation, target).await?,
                    _ => self.client.react(conversation, target, rest).await?,
                };
                println!("  (#{})", ack.seq.get());
            }
            "/send" => {
                let conversation = self.open.context("no conversation open")?;
                let path = words.next().context("/send PATH [CAPTION]")?;
                let caption = words.collect::<Vec<_>>().join(" ");
                let file = FileToSend::new(path, chat_examples::media_type(path.as_ref()));
                let ack = self
                    .client
                    .send_files(conversation, &caption, &[file], |_, _, _| {})
                    .await?;
                println!("  (#{})", ack.seq.get());
            }
            "/save" => {
                let conversation = self.open.context("no conversation open")?;
                let n: u64 = words
                    .next()
                    .context("/save N [DIR]")?
                    .trim_start_matches('#')
                    .parse()?;
                let dir = std::path::PathBuf::from(words.next().unwrap_or("."));
                self.save(conversation, Seq::new(n)?, &dir).await?;
            }
            "/typing" => {
                let conversation = self.open.context("no conversation open")?;
                self.client.set_typing(conversation, true)?;
            }
            other => println!("unknown command {other}; /help lists them"),
        }
        Ok(true)
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Entry(m) => {
                self.show(&m).await;
                if Some(m.conversation) == self.open && m.sender != self.client.user_id() {
                    let _ = self.client.mark_read(m.conversation, m.seq).await;
                }
            }
            Event::Typing(t) if t.active && Some(t.conversation) == self.open => {
                println!("  … {} is typing", self.name(t.user).await);
            }
            Event::Receipt(r)
                if Some(r.conversation) == self.open && r.user != self.client.user_id() =>
            {
                println!(
                    "  ✓ {} read up to #{}",
                    self.name(r.user).await,
                    r.seq.get()
                );
            }
            Event::Presence(p) => {
                let state = if p.status == PresenceStatus::Online {
                    "online"
                } else {
                    "offline"
                };
                println!("  · {} is {state}", self.name(p.user).await);
            }
            Event::Membership(m) => {
                println!(
                    "  · {} {:?} in #{} by {}",
                    self.name(m.user).await,
                    m.change,
                    m.conversation.get(),
                    self.name(m.by).await
                );
            }
            Event::Disconnected { reason, retry_in } => {
                println!("  ! disconnected ({reason}); reconnecting in {retry_in:.1?}");
            }
            Event::Live => println!("  · connected"),
            Event::Stopped(e) => println!("  ! stopped: {e}"),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_examples::init_logging();
    let args = Args::parse();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let password = match args.password.clone() {
        Some(p) => p,
        None => {
            eprint!("password for {} (shown as typed): ", args.username);
            std::io::stderr().flush()?;
            lines.next_line().await?.context("no password given")?
        }
    };
    let builder = args.connect.builder("chat_cli")?;
    let builder = if args.register {
        builder.register(&args.username, &password, None)
    } else {
        builder.login(&args.username, &password)
    };
    let client = builder.connect().await.context("connecting")?;
    println!("signed in as {}; /help for commands", args.username);
    let mut events = client.events();
    let mut ui = Ui {
        client,
        names: HashMap::new(),
        listed: Vec::new(),
        open: None,
        oldest: None,
    };
    ui.command("/list").await?;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let result = if line.starts_with('/') {
                    ui.command(line).await
                } else if let Some(conversation) = ui.open {
                    ui.client.send_text(conversation, line).await.map(|_| true).map_err(Into::into)
                } else {
                    println!("open a conversation first (/list, /open N, /dm USERNAME)");
                    Ok(true)
                };
                match result {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => println!("  ! {e:#}"),
                }
            }
            event = events.recv() => match event {
                Some(event) => ui.event(event).await,
                None => break,
            },
        }
    }
    ui.client.close().await;
    Ok(())
}
