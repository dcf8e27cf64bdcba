//! Folding a conversation's log does not depend on how its entries arrive: any log the
//! fuzzer makes (every kind of entry, any targets, purged content), applied in any
//! order with any repeats, gives the same message views as the log applied in order
//! (PROTOCOL.md §5.2, "Folding").
#![no_main]

use arbitrary::Arbitrary;
use chat_proto::entry::{Content, Entry};
use chat_proto::ids::{ClientMsgId, ConversationId, MessageId, Seq, Timestamp, UserId};
use chat_proto::timeline::Timeline;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The log, one entry per seq from 1; targets are taken modulo its length.
    log: Vec<(u8, Content)>,
    /// Arrival order: indices into the log (modulo its length), repeats allowed.
    arrivals: Vec<u16>,
}

fn seq(n: usize) -> Seq {
    Seq::new(n as u64).unwrap_or(Seq::ZERO)
}

/// Points a target at an entry of the log.
fn within(content: Content, len: usize) -> Content {
    let fix = |t: Seq| seq(t.get() as usize % len + 1);
    match content {
        Content::Message { body, reply_to } => Content::Message {
            body,
            reply_to: reply_to.map(fix),
        },
        Content::Edit { target, body } => Content::Edit {
            target: fix(target),
            body,
        },
        Content::Delete { target } => Content::Delete {
            target: fix(target),
        },
        Content::Reaction { target, reaction } => Content::Reaction {
            target: fix(target),
            reaction,
        },
    }
}

fuzz_target!(|input: Input| {
    if input.log.is_empty() || input.log.len() > 512 {
        return;
    }
    let len = input.log.len();
    let log: Vec<Entry> = input
        .log
        .into_iter()
        .enumerate()
        .map(|(i, (sender, content))| Entry {
            conversation: ConversationId::new(1).expect("id"),
            seq: seq(i + 1),
            id: MessageId::new(i as u64 + 1).expect("id"),
            sender: UserId::new(u64::from(sender % 4) + 1).expect("id"),
            client_msg_id: ClientMsgId::from_bytes([i as u8; 16]),
            sent_at: Timestamp(i as i64),
            content: within(content, len),
        })
        .collect();
    let mut in_order = Timeline::default();
    for e in &log {
        in_order.apply(e.clone());
    }
    let mut arrived = Timeline::default();
    let mut seen = vec![false; len];
    for i in input.arrivals {
        let i = usize::from(i) % len;
        seen[i] = true;
        arrived.apply(log[i].clone());
    }
    // Whatever did not arrive yet arrives last, so both timelines hold the whole log.
    for (i, e) in log.iter().enumerate() {
        if !seen[i] {
            arrived.apply(e.clone());
        }
    }
    let a: Vec<_> = in_order.messages().collect();
    let b: Vec<_> = arrived.messages().collect();
    assert_eq!(a, b, "the fold depends on the order of arrival");
});
