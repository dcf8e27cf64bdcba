//! Search vectors: for each text and query, the index words, whether it matches and the
//! snippet, as `chat_api::search` computes them. The web client's own implementation
//! (for searching decrypted messages in the browser) checks the same file, so both find
//! the same messages. `CHAT_UPDATE_VECTORS=1` rewrites it.

use std::path::PathBuf;

use chat_api::search::{Query, snippet, tokens};
use serde_json::{Value, json};

const TEXTS: &[&str] = &[
    "Shall we meet for lunch on Friday?",
    "我爱北京天安门, see https://example.org/menu",
    "東京タワーで会いましょう",
    "서울에서 만나요",
    "Café au lait — 3.14 € — naïve",
    "नमस्ते दुनिया",
    "great, let's EAT at 12:30",
];

const QUERIES: &[&str] = &[
    "lunch",
    "LUN fri",
    "\"lunch on\"",
    "\"on lunch\"",
    "lunch -friday",
    "北京",
    "京",
    "京北",
    "天安门",
    "タワー",
    "서울",
    "café",
    "cafe",
    "eat",
    "eet",
    "14",
    "दुनिया",
    "example menu",
];

fn vectors() -> Value {
    let mut cases = Vec::new();
    for text in TEXTS {
        for q in QUERIES {
            let query = Query::parse(q).expect("query");
            let parts: Vec<Value> = snippet(text, &query, 40)
                .into_iter()
                .map(|p| json!([p.text, p.matched]))
                .collect();
            cases.push(json!({
                "text": text,
                "query": q,
                "matches": query.matches(text),
                "snippet": parts,
            }));
        }
    }
    let documents: Vec<Value> = TEXTS
        .iter()
        .map(|t| json!({"text": t, "tokens": tokens(t)}))
        .collect();
    json!({
        "description": "chat_api::search: index words of texts, and for each text and query whether it matches and its snippet (width 40) as [text, matched] pieces",
        "documents": documents,
        "cases": cases,
    })
}

#[test]
fn search_vectors_are_fresh() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/search-vectors.json");
    let fresh = serde_json::to_string_pretty(&vectors()).expect("json") + "\n";
    if std::env::var_os("CHAT_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
        std::fs::write(&path, &fresh).expect("written");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run `CHAT_UPDATE_VECTORS=1 cargo test -p chat-api --test search_vectors`",
        path.display()
    );
}
