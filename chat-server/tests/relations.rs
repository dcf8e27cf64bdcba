//! Relations (protocol 1.3) over real connections: replies, edits, deletions and
//! reactions reach 1.3 sessions as entries and 1.2 sessions as messages at the same
//! seqs, live, in history and on resume; the session's refusals carry the 1.3 codes;
//! the HTTP history serves both views; everything survives a restart.

mod common;

use chat_proto::body::Body;
use chat_proto::entry::{Content, DELETED_TEXT, Entry, Reaction, Relation};
use chat_proto::error::ErrorCode;
use chat_proto::frame::{
    Ack, ClientFrame, Cursor, Error, History, Message, Relate, Send, ServerFrame, Sync,
};
use chat_proto::ids::{ClientMsgId, ConversationId, RequestId, Seq};
use chat_proto::version::ProtocolVersion;
use chat_server::testing::TestDbKind;
use common::ws::{Sub, WsClient};
use common::{TestServer, V1_2};

fn cid(n: u64) -> ConversationId {
    ConversationId::new(n).expect("id")
}

fn seq(n: u64) -> Seq {
    Seq::new(n).expect("seq")
}

fn key(n: u8) -> ClientMsgId {
    ClientMsgId::from_bytes([n; 16])
}

fn relate(request: u32, conversation: u64, k: u8, relation: Relation) -> ClientFrame {
    ClientFrame::Relate(Relate {
        request_id: RequestId(request),
        conversation: cid(conversation),
        client_msg_id: key(k),
        relation,
    })
}

fn text(t: &str) -> Body {
    Body::Text(t.into())
}

/// A raw session that keeps the log frames (entries or messages) it receives while a
/// test waits for other frames.
struct Session {
    ws: WsClient,
    relations: bool,
    entries: Vec<Entry>,
    messages: Vec<Message>,
}

impl Session {
    async fn send(&mut self, frame: &ClientFrame) {
        self.ws.send(frame).await;
    }

    /// The next frame that is not a log frame (those are kept).
    async fn until<T>(&mut self, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
        loop {
            let frame = self.ws.recv().await.expect("a frame");
            if let Some(other) = self.keep(frame)
                && let Some(t) = pick(other)
            {
                return t;
            }
        }
    }

    /// Keeps a log frame; gives back any other.
    fn keep(&mut self, frame: ServerFrame) -> Option<ServerFrame> {
        match frame {
            ServerFrame::Entry(e) => {
                assert!(self.relations, "a 1.2 session got an entry frame");
                self.entries.push(e);
                None
            }
            ServerFrame::Message(m) => {
                assert!(!self.relations, "a 1.3 session got a message frame");
                self.messages.push(m);
                None
            }
            other => Some(other),
        }
    }

    /// Waits until `n` log frames were received in all.
    async fn log_frames(&mut self, n: usize) {
        while self.entries.len() + self.messages.len() < n {
            let frame = self.ws.recv().await.expect("a frame");
            self.keep(frame);
        }
    }

    /// The first `n` entries received (a 1.3 session).
    async fn entries(&mut self, n: usize) -> Vec<Entry> {
        self.log_frames(n).await;
        self.entries[..n].to_vec()
    }

    /// The first `n` messages received (a 1.2 session).
    async fn messages(&mut self, n: usize) -> Vec<Message> {
        self.log_frames(n).await;
        self.messages[..n].to_vec()
    }

    /// The answer to request `id`: its ack, or the error refusing it.
    async fn answer(&mut self, id: u32) -> Result<Ack, Error> {
        self.until(|f| match f {
            ServerFrame::Ack(a) if a.request_id == RequestId(id) => Some(Ok(a)),
            ServerFrame::Error(e) if e.request_id == Some(RequestId(id)) => Some(Err(e)),
            _ => None,
        })
        .await
    }

    /// The answers to several requests, whatever order they come in.
    async fn answers(&mut self, ids: &[u32]) -> Vec<Result<Ack, Error>> {
        let mut got: Vec<Option<Result<Ack, Error>>> = vec![None; ids.len()];
        while got.iter().any(Option::is_none) {
            let (id, answer) = self
                .until(|f| match f {
                    ServerFrame::Ack(a) => Some((a.request_id, Ok(a))),
                    ServerFrame::Error(e) => Some((e.request_id?, Err(e))),
                    _ => None,
                })
                .await;
            if let Some(i) = ids.iter().position(|&x| RequestId(x) == id) {
                got[i] = Some(answer);
            }
        }
        got.into_iter().flatten().collect()
    }

    async fn refused(&mut self, id: u32) -> ErrorCode {
        self.answer(id).await.expect_err("refused").code
    }
}

async fn login(s: &TestServer, sub: Sub, token: &str, version: ProtocolVersion) -> Session {
    login_from(s, sub, token, version, vec![]).await
}

/// Logs in resuming from `resume`; the replay is kept like live frames.
async fn login_from(
    s: &TestServer,
    sub: Sub,
    token: &str,
    version: ProtocolVersion,
    resume: Vec<Cursor>,
) -> Session {
    let (ws, welcome) = WsClient::login_at(s.addr(), sub, token, resume, version).await;
    assert_eq!(welcome.version, version);
    let mut session = Session {
        ws,
        relations: version.has_relations(),
        entries: Vec::new(),
        messages: Vec::new(),
    };
    session
        .until(|f| matches!(f, ServerFrame::ReplayDone(_)).then_some(()))
        .await;
    session
}

fn texts(messages: &[Message]) -> Vec<(u64, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m.seq.get(),
                m.body.as_text().unwrap_or("<sealed>").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn relations_reach_new_and_old_sessions_live_and_in_history() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let (alice, bob, carol) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    let group = s.group(&alice, &[&bob, &carol]).await;
    let mut a = login(&s, Sub::Json, &alice.token, ProtocolVersion::CURRENT).await;
    let mut b = login(&s, Sub::Postcard, &bob.token, V1_2).await;
    let mut c = login(&s, Sub::Postcard, &carol.token, ProtocolVersion::CURRENT).await;

    a.send(&ClientFrame::Send(Send {
        request_id: RequestId(1),
        conversation: cid(group),
        client_msg_id: key(1),
        body: text("hello"),
    }))
    .await;
    assert_eq!(a.answer(1).await.expect("sent").seq, seq(1));
    let thumbs = Relation::React {
        target: seq(1),
        reaction: Reaction::Emoji("👍".into()),
    };
    c.send(&relate(1, group, 2, thumbs.clone())).await;
    assert_eq!(c.answer(1).await.expect("reacted").seq, seq(2));
    let edit = Relation::Edit {
        target: seq(1),
        body: text("hello, all"),
    };
    a.send(&relate(2, group, 3, edit.clone())).await;
    assert_eq!(a.answer(2).await.expect("edited").seq, seq(3));
    let reply = Relation::Reply {
        target: seq(1),
        body: text("hi!"),
    };
    c.send(&relate(2, group, 4, reply.clone())).await;
    assert_eq!(c.answer(2).await.expect("replied").seq, seq(4));

    // Refusals carry the 1.3 codes and answer the request.
    c.send(&relate(3, group, 5, edit.clone())).await;
    assert_eq!(c.refused(3).await, ErrorCode::Forbidden);
    c.send(&relate(4, group, 6, Relation::Delete { target: seq(1) }))
        .await;
    assert_eq!(c.refused(4).await, ErrorCode::Forbidden);
    c.send(&relate(
        5,
        group,
        7,
        Relation::Edit {
            target: seq(99),
            body: text("x"),
        },
    ))
    .await;
    assert_eq!(c.refused(5).await, ErrorCode::NotFound);
    c.send(&relate(
        6,
        group,
        8,
        Relation::React {
            target: seq(1),
            reaction: Reaction::Emoji("not one emoji".into()),
        },
    ))
    .await;
    assert_eq!(c.refused(6).await, ErrorCode::InvalidRequest);
    // A 1.2 session does not know the frame.
    b.send(&relate(1, group, 9, thumbs.clone())).await;
    let e = b
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::UnsupportedFrame);

    // The author deletes: everything about the message is purged.
    a.send(&relate(3, group, 10, Relation::Delete { target: seq(1) }))
        .await;
    assert_eq!(a.answer(3).await.expect("deleted").seq, seq(5));
    a.send(&relate(4, group, 11, edit.clone())).await;
    assert_eq!(a.refused(4).await, ErrorCode::Deleted);

    // Live: 1.3 sessions got entries, the 1.2 session one message per seq, gap-free.
    let expected = vec![
        Content::message(text("hello")),
        thumbs.clone().into_content(),
        edit.clone().into_content(),
        reply.clone().into_content(),
        Content::Delete { target: seq(1) },
    ];
    for session in [&mut a, &mut c] {
        let got = session.entries(5).await;
        assert_eq!(
            got.iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(
            got.into_iter().map(|e| e.content).collect::<Vec<_>>(),
            expected
        );
    }
    assert_eq!(
        texts(&b.messages(5).await),
        vec![
            (1, "hello".into()),
            (2, "👍 (reaction)".into()),
            (3, "✎ hello, all".into()),
            (4, "hi!".into()),
            (5, DELETED_TEXT.into()),
        ]
    );

    // History: entries, purged, for 1.3; their message view for 1.2.
    let history = |request| {
        ClientFrame::History(History {
            request_id: RequestId(request),
            conversation: cid(group),
            before: None,
            limit: 50,
        })
    };
    a.send(&history(20)).await;
    let page = a
        .until(|f| match f {
            ServerFrame::Entries(p) if p.request_id == RequestId(20) => Some(p),
            ServerFrame::HistoryPage(_) => panic!("a 1.3 session got a history_page"),
            _ => None,
        })
        .await;
    let contents: Vec<Content> = page.entries.iter().map(|e| e.content.clone()).collect();
    assert_eq!(
        contents,
        vec![
            Content::Delete { target: seq(1) },
            reply.clone().into_content(),
            Content::Edit {
                target: seq(1),
                body: None
            },
            Content::Reaction {
                target: seq(1),
                reaction: None
            },
            Content::Message {
                body: None,
                reply_to: None
            },
        ],
        "newest first, the deleted message's content purged"
    );
    b.send(&history(20)).await;
    let page = b
        .until(|f| match f {
            ServerFrame::HistoryPage(p) if p.request_id == RequestId(20) => Some(p),
            ServerFrame::Entries(_) => panic!("a 1.2 session got entries"),
            _ => None,
        })
        .await;
    let mut legacy = texts(&page.messages);
    legacy.reverse();
    assert_eq!(
        legacy,
        vec![
            (1, DELETED_TEXT.into()),
            (2, DELETED_TEXT.into()),
            (3, DELETED_TEXT.into()),
            (4, "hi!".into()),
            (5, DELETED_TEXT.into()),
        ]
    );
    // `sync` answers with `entries` too for 1.3.
    c.send(&ClientFrame::Sync(Sync {
        request_id: RequestId(21),
        conversation: cid(group),
        after: seq(3),
        limit: 50,
    }))
    .await;
    let page = c
        .until(|f| match f {
            ServerFrame::Entries(p) if p.request_id == RequestId(21) => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(
        page.entries.iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
        vec![4, 5]
    );

    // Over HTTP: /entries is the log, /messages the 1.2 view; previews and unread
    // counts see messages only.
    let r = s
        .get(&format!("/api/conversations/{group}/entries"), &bob.token)
        .await;
    let listed: Vec<Entry> = serde_json::from_value(r.body["entries"].clone()).expect("entries");
    assert_eq!(listed, {
        let mut all = page_all(&mut a, group).await;
        all.reverse();
        all
    });
    let r = s
        .get(&format!("/api/conversations/{group}/messages"), &bob.token)
        .await;
    let legacy: Vec<Message> =
        serde_json::from_value(r.body["messages"].clone()).expect("messages");
    assert_eq!(legacy[0].body, text(DELETED_TEXT));
    let r = s.get("/api/conversations", &bob.token).await;
    let summary = &r.body["conversations"][0];
    assert_eq!(
        summary["last_message"]["seq"], 4,
        "the reply is the newest message"
    );
    assert_eq!(summary["last_message"]["body"]["text"], "hi!");
    assert_eq!(
        summary["unread"], 1,
        "only the reply is left unread: a message of another"
    );
    s.stop().await;
}

/// Every entry of a conversation, oldest first, through `sync` of a 1.3 session.
async fn page_all(c: &mut Session, conversation: u64) -> Vec<Entry> {
    c.send(&ClientFrame::Sync(Sync {
        request_id: RequestId(900),
        conversation: cid(conversation),
        after: Seq::ZERO,
        limit: 200,
    }))
    .await;
    c.until(|f| match f {
        ServerFrame::Entries(p) if p.request_id == RequestId(900) => Some(p.entries),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_resumed_session_and_a_restarted_server_give_the_same_log() {
    let s = TestServer::start(TestDbKind::Sqlite).await;
    let (ann, ben) = (s.register("ann").await, s.register("ben").await);
    let dm = s.direct(&ann, &ben).await;
    let mut a = login(&s, Sub::Postcard, &ann.token, ProtocolVersion::CURRENT).await;
    let mut b = login(&s, Sub::Json, &ben.token, ProtocolVersion::CURRENT).await;
    a.send(&ClientFrame::Send(Send {
        request_id: RequestId(1),
        conversation: cid(dm),
        client_msg_id: key(1),
        body: text("first"),
    }))
    .await;
    a.answer(1).await.expect("sent");
    let online = b.entries(1).await;
    drop(b);

    // While Ben is away: a reaction, an edit, a reply, a reaction taken back.
    let relations = [
        Relation::React {
            target: seq(1),
            reaction: Reaction::Emoji("🎉".into()),
        },
        Relation::Edit {
            target: seq(1),
            body: text("first!"),
        },
        Relation::Reply {
            target: seq(1),
            body: text("and second"),
        },
        Relation::Delete { target: seq(2) },
    ];
    for (i, r) in relations.iter().enumerate() {
        let id = 2 + i as u32;
        a.send(&relate(id, dm, 10 + i as u8, r.clone())).await;
        a.answer(id).await.expect("stored");
    }
    let stayed = a.entries(5).await;

    // Ben resumes after seq 1: the replay holds exactly the relations he missed.
    let b = login_from(
        &s,
        Sub::Json,
        &ben.token,
        ProtocolVersion::CURRENT,
        vec![Cursor {
            conversation: cid(dm),
            seq: seq(1),
        }],
    )
    .await;
    let mut resumed = online.clone();
    resumed.extend(b.entries.clone());
    // The online view saw the reaction before it was taken back; both logs fold the
    // same way, and the entries after seq 1 are those Ann saw live.
    assert_eq!(
        resumed[1..].iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(
        resumed[2..]
            .iter()
            .map(|e| e.content.clone())
            .collect::<Vec<_>>(),
        stayed[2..]
            .iter()
            .map(|e| e.content.clone())
            .collect::<Vec<_>>()
    );
    let fold = |log: &[Entry]| {
        let mut t = chat_proto::timeline::Timeline::default();
        for e in log {
            t.apply(e.clone());
        }
        t.messages().collect::<Vec<_>>()
    };
    assert_eq!(fold(&resumed), fold(&stayed));
    let view = fold(&resumed);
    assert_eq!(view[0].body, Some(text("first!")));
    assert!(view[0].edited && view[0].reactions.is_empty());
    assert_eq!(view[1].reply_to, Some(seq(1)));
    drop((a, b));

    // After a restart the log is the same, relations and purges included.
    let s = s.restarted().await;
    let mut b = login(&s, Sub::Postcard, &ben.token, ProtocolVersion::CURRENT).await;
    let after_restart = page_all(&mut b, dm).await;
    assert_eq!(fold(&after_restart), view);
    assert_eq!(
        after_restart[1].content,
        Content::Reaction {
            target: seq(1),
            reaction: None
        },
        "the reaction taken back stays purged"
    );
    s.stop().await;
}

/// Relations follow the conversation's encryption policy and share the send rate.
#[tokio::test]
async fn relations_obey_the_encryption_policy_and_the_send_rate() {
    let s = TestServer::start_with(TestDbKind::Sqlite, |c| {
        c.send_rate = 1;
        c.send_burst = 3;
    })
    .await;
    let (eve, fin) = (s.register("eve").await, s.register("fin").await);
    let sealed = s.encrypted_direct(&eve, &fin).await.body["id"]
        .as_u64()
        .expect("id");
    let mut e = login(&s, Sub::Json, &eve.token, ProtocolVersion::CURRENT).await;
    // Plain text and plain emoji are refused before anything is stored (no target
    // needed to say so).
    for (i, relation) in [
        Relation::Edit {
            target: seq(1),
            body: text("in the clear"),
        },
        Relation::Reply {
            target: seq(1),
            body: text("in the clear"),
        },
        Relation::React {
            target: seq(1),
            reaction: Reaction::Emoji("👍".into()),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let id = i as u32 + 1;
        e.send(&relate(id, sealed, id as u8, relation)).await;
        assert_eq!(e.refused(id).await, ErrorCode::EncryptionRequired);
    }

    // Sends and relations draw on one rate: a burst of 3, then refusals with a time.
    let plain = s.direct(&eve, &fin).await;
    e.send(&ClientFrame::Send(Send {
        request_id: RequestId(10),
        conversation: cid(plain),
        client_msg_id: key(10),
        body: text("one"),
    }))
    .await;
    let first = e.answer(10).await.expect("sent").seq;
    for id in 11..=13u32 {
        e.send(&relate(
            id,
            plain,
            id as u8,
            Relation::React {
                target: first,
                reaction: Reaction::Emoji(["👍", "🎉", "👀"][id as usize - 11].into()),
            },
        ))
        .await;
    }
    let outcomes: Vec<Result<(), ErrorCode>> = e
        .answers(&[11, 12, 13])
        .await
        .into_iter()
        .map(|r| {
            r.map(|_| ()).map_err(|err| {
                assert!(err.retry_after_ms.is_some_and(|ms| ms > 0));
                err.code
            })
        })
        .collect();
    assert_eq!(outcomes[..2], [Ok(()), Ok(())]);
    assert_eq!(outcomes[2], Err(ErrorCode::RateLimited));
    s.stop().await;
}
