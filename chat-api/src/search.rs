//! Searching messages: the endpoint, its bodies, and the text rules every side shares,
//! so the server's index (SQLite FTS5 or PostgreSQL full-text search) and a client's
//! local index of decrypted messages find the same messages for the same query.
//!
//! **Words.** Text is lowercased and split into words of letters, digits and marks;
//! everything else separates. A word matches the words it begins (`meet` finds
//! "meeting"); accents count (`café` does not find "cafe").
//!
//! **Scripts without spaces.** Chinese, Japanese and Korean text is indexed as
//! overlapping pairs of characters (and the last character of each run alone), so any
//! run of one or more characters of it is found wherever it occurs, without a
//! dictionary: `北京` finds "我爱北京天安门", and so does `京`.
//!
//! **Queries.** Words all have to match (`lunch friday`); `"quoted words"` match as a
//! phrase, in that order and next to each other; `-word` or `-"a phrase"` excludes.
//! A query needs at least one word that is not excluded.
//!
//! ```
//! use chat_api::search::{Query, document, snippet};
//!
//! let q = Query::parse(r#"lunch "on friday" -pizza"#).expect("query");
//! assert_eq!(q.terms.len(), 3);
//! assert_eq!(document("Lunch on Friday?"), "lunch on friday");
//! assert_eq!(document("我爱北京"), "我爱 爱北 北京 京");
//! let parts = snippet("Shall we meet for lunch on Friday?", &q, 80);
//! assert!(parts.iter().any(|p| p.matched && p.text == "lunch"));
//! ```

use serde::{Deserialize, Serialize};

use chat_proto::ids::{ConversationId, Seq, Timestamp, UserId};

crate::endpoints! {
    /// `GET /api/search?q=…&conversation=ID&before=CURSOR&limit=N`: messages of the
    /// caller's conversations that match, newest first.
    Search: GET "/api/search", () => SearchPage;
}

/// The longest query accepted, in bytes.
pub const MAX_QUERY: usize = 256;

/// Most terms in a query.
pub const MAX_TERMS: usize = 16;

/// Results per page by default, and at most.
pub const DEFAULT_LIMIT: u32 = 20;
/// The most results a page may ask for.
pub const MAX_LIMIT: u32 = 50;

/// A page of results: the answer to [`Search`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SearchPage {
    /// The matching messages, newest first.
    pub results: Vec<SearchResult>,
    /// Pass as `before` to get the next (older) page; `None` on the last one.
    pub next: Option<String>,
}

/// One matching message, with what is needed to show it and open it in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SearchResult {
    /// Its conversation.
    pub conversation: ConversationId,
    /// Its position there: open the conversation at this seq.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// When it was sent.
    pub sent_at: Timestamp,
    /// Its text as it reads now (the latest edit's).
    pub text: String,
    /// The part of the text around the first match, in pieces; the matching words
    /// are marked. Text only: show it as text, never as markup.
    pub snippet: Vec<SnippetPart>,
}

/// A piece of a snippet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnippetPart {
    /// The text of the piece.
    pub text: String,
    /// Whether it is a match, to be highlighted.
    pub matched: bool,
}

/// Why a query cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No word to look for (empty, only punctuation, or only exclusions).
    #[error("the query has no word to look for")]
    Empty,
    /// Longer than [`MAX_QUERY`] bytes or more than [`MAX_TERMS`] terms.
    #[error("the query is too long")]
    TooLong,
}

/// One term of a query: words that must match next to each other, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// The index words (see [`tokens`]); the last one matches as a prefix.
    pub words: Vec<String>,
    /// The term excludes instead.
    pub negated: bool,
    /// The words as typed (lowercased), for marking matches in a snippet.
    pub needles: Vec<String>,
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Its terms, all of which must hold.
    pub terms: Vec<Term>,
}

/// Whether `c` belongs to a script written without spaces between words.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x31F0..=0x31FF   // Katakana extensions
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0x20000..=0x2FA1F // CJK extensions B–F, compatibility supplement
    )
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || unicode_mark(c)
}

/// Combining marks (accents written as separate characters, vowel signs of Indic
/// scripts): part of the word they follow.
fn unicode_mark(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x0483..=0x0489 | 0x0591..=0x05C7 | 0x0610..=0x061A
        | 0x064B..=0x065F | 0x0900..=0x0903 | 0x093A..=0x094F | 0x0951..=0x0957
        | 0x0962..=0x0963 | 0x0981..=0x0983 | 0x09BC..=0x09D7 | 0x0E31..=0x0E3A
        | 0x0E47..=0x0E4E | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF
        | 0xFE20..=0xFE2F)
}

/// A run of text split the way the index splits it: `(word, is_unspaced_run)`.
fn runs(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut current_unspaced = false;
    for c in text.chars() {
        if !word_char(c) {
            if !current.is_empty() {
                out.push((std::mem::take(&mut current), current_unspaced));
            }
            continue;
        }
        let u = unspaced(c);
        if !current.is_empty() && u != current_unspaced {
            out.push((std::mem::take(&mut current), current_unspaced));
        }
        current_unspaced = u;
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push((current, current_unspaced));
    }
    out
}

/// The index words of a run of an unspaced script: overlapping pairs, then (in a
/// document) the last character alone.
fn pairs(run: &str, last_alone: bool) -> Vec<String> {
    let chars: Vec<char> = run.chars().collect();
    let mut out: Vec<String> = chars.windows(2).map(|w| w.iter().collect()).collect();
    if last_alone || chars.len() == 1 {
        out.push(chars[chars.len() - 1].to_string());
    }
    out
}

/// The index words of a text, in order.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (run, is_unspaced) in runs(text) {
        if is_unspaced {
            out.extend(pairs(&run, true));
        } else {
            out.push(run);
        }
    }
    out
}

/// What the index stores for a text: its index words separated by spaces, which any
/// full-text engine splits back into the same words.
pub fn document(text: &str) -> String {
    tokens(text).join(" ")
}

impl Query {
    /// Parses a query typed by a person (see the module's documentation).
    pub fn parse(q: &str) -> Result<Self, QueryError> {
        if q.len() > MAX_QUERY {
            return Err(QueryError::TooLong);
        }
        let mut terms = Vec::new();
        let mut rest = q.trim_start();
        while !rest.is_empty() {
            let negated = rest.starts_with('-');
            if negated {
                rest = &rest[1..];
            }
            let raw;
            if let Some(quoted) = rest.strip_prefix('"') {
                let end = quoted.find('"').unwrap_or(quoted.len());
                raw = &quoted[..end];
                rest = quoted.get(end + 1..).unwrap_or("");
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                raw = &rest[..end];
                rest = &rest[end..];
            }
            rest = rest.trim_start();
            let runs = runs(raw);
            if runs.is_empty() {
                continue;
            }
            let mut words = Vec::new();
            for (run, is_unspaced) in &runs {
                if *is_unspaced {
                    words.extend(pairs(run, false));
                } else {
                    words.push(run.clone());
                }
            }
            terms.push(Term {
                words,
                negated,
                needles: runs.into_iter().map(|(r, _)| r).collect(),
            });
        }
        if terms.len() > MAX_TERMS {
            return Err(QueryError::TooLong);
        }
        if terms.iter().all(|t| t.negated) {
            return Err(QueryError::Empty);
        }
        Ok(Self { terms })
    }

    /// Whether `text` matches, by the same rules as the server's index: for a client's
    /// local search over what it decrypted.
    pub fn matches(&self, text: &str) -> bool {
        let doc = tokens(text);
        self.terms
            .iter()
            .all(|t| phrase_at(&doc, &t.words).is_some() != t.negated)
    }
}

/// Where `words` occur in `doc` next to each other, the last as a prefix.
fn phrase_at(doc: &[String], words: &[String]) -> Option<usize> {
    let (last, init) = words.split_last()?;
    (0..doc.len()).find(|&i| {
        doc.len() >= i + words.len()
            && init.iter().enumerate().all(|(k, w)| doc[i + k] == *w)
            && doc[i + init.len()].starts_with(last.as_str())
    })
}

/// The part of `text` around the first match of `query`, at most about `width`
/// characters, with the matches of its (not excluded) words marked.
pub fn snippet(text: &str, query: &Query, width: usize) -> Vec<SnippetPart> {
    let chars: Vec<char> = text.chars().collect();
    let lower: Vec<char> = chars
        .iter()
        .map(|c| c.to_lowercase().next().unwrap_or(*c))
        .collect();
    // Every occurrence of every needle, as character ranges.
    let mut marks: Vec<(usize, usize)> = Vec::new();
    for term in query.terms.iter().filter(|t| !t.negated) {
        for needle in &term.needles {
            let n: Vec<char> = needle.chars().collect();
            if n.is_empty() {
                continue;
            }
            let starts_word = !n.iter().all(|&c| unspaced(c));
            let mut i = 0;
            while i + n.len() <= lower.len() {
                let at_word_start = !starts_word || i == 0 || !word_char(lower[i - 1]);
                if at_word_start && lower[i..i + n.len()] == n[..] {
                    marks.push((i, i + n.len()));
                    i += n.len();
                } else {
                    i += 1;
                }
            }
        }
    }
    marks.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in marks {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    // A window around the first match, starting at a word boundary when it can.
    let first = merged.first().map_or(0, |m| m.0);
    let mut start = first.saturating_sub(width / 3);
    if start > 0 {
        let back = chars[..start]
            .iter()
            .rposition(|c| c.is_whitespace())
            .map_or(start, |p| p + 1);
        if start - back < 15 {
            start = back;
        }
    }
    let end = (start + width).min(chars.len());
    let mut parts = Vec::new();
    let mut push = |text: String, matched: bool| {
        if !text.is_empty() {
            parts.push(SnippetPart { text, matched });
        }
    };
    let mut at = start;
    let prefix = if start > 0 { "…" } else { "" };
    let mut lead = prefix.to_owned();
    for &(a, b) in merged.iter().filter(|m| m.1 > start && m.0 < end) {
        let (a, b) = (a.max(start), b.min(end));
        lead.extend(&chars[at..a]);
        push(std::mem::take(&mut lead), false);
        push(chars[a..b].iter().collect(), true);
        at = b;
    }
    lead.extend(&chars[at..end]);
    if end < chars.len() {
        lead.push('…');
    }
    push(lead, false);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(parts: &[SnippetPart]) -> String {
        parts
            .iter()
            .map(|p| {
                if p.matched {
                    format!("[{}]", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    #[test]
    fn documents_split_words_and_pair_unspaced_scripts() {
        assert_eq!(
            document("See https://example.org/menu — 3.14 Café!"),
            "see https example org menu 3 14 café"
        );
        assert_eq!(document("東京タワー"), "東京 京タ タワ ワー ー");
        assert_eq!(document("iPhone手机"), "iphone 手机 机");
        assert_eq!(
            document("서울에서 만나요"),
            "서울 울에 에서 서 만나 나요 요"
        );
        assert_eq!(document("नमस्ते दुनिया"), "नमस्ते दुनिया");
        assert_eq!(document("   "), "");
    }

    #[test]
    fn queries_have_words_phrases_and_exclusions() {
        let q =
            Query::parse(r#"  Lunch "on Friday" -pizza -"fish and chips" 北京 "#).expect("query");
        let words: Vec<(Vec<&str>, bool)> = q
            .terms
            .iter()
            .map(|t| (t.words.iter().map(String::as_str).collect(), t.negated))
            .collect();
        assert_eq!(
            words,
            vec![
                (vec!["lunch"], false),
                (vec!["on", "friday"], false),
                (vec!["pizza"], true),
                (vec!["fish", "and", "chips"], true),
                (vec!["北京"], false),
            ]
        );
        assert_eq!(Query::parse(""), Err(QueryError::Empty));
        assert_eq!(Query::parse("  ?! -- "), Err(QueryError::Empty));
        assert_eq!(Query::parse("-only"), Err(QueryError::Empty));
        assert_eq!(
            Query::parse(&"a".repeat(MAX_QUERY + 1)),
            Err(QueryError::TooLong)
        );
        assert_eq!(
            Query::parse(&"w ".repeat(MAX_TERMS + 1)),
            Err(QueryError::TooLong)
        );
        // An unclosed quote runs to the end.
        assert_eq!(
            Query::parse("\"open end").expect("query").terms[0].words,
            ["open", "end"]
        );
    }

    #[test]
    fn matching_follows_the_index_rules() {
        let text = "Shall we meet for lunch on Friday? 我爱北京天安门";
        let yes = [
            "meet",
            "mee",
            "LUNCH friday",
            "\"lunch on\"",
            "北京",
            "京",
            "天安门",
            "门",
            "-pizza lunch",
        ];
        for q in yes {
            assert!(Query::parse(q).expect("query").matches(text), "{q}");
        }
        for q in [
            "meeting",
            "\"on lunch\"",
            "lunch -friday",
            "pizza",
            "安北",
            "eet",
        ] {
            assert!(!Query::parse(q).expect("query").matches(text), "{q}");
        }
    }

    #[test]
    fn snippets_mark_matches_around_the_first_one() {
        let q = Query::parse("lunch friday").expect("query");
        assert_eq!(
            marked(&snippet("Shall we meet for lunch on Friday?", &q, 80)),
            "Shall we meet for [lunch] on [Friday]?"
        );
        let long = format!(
            "{} the lunch is at noon {}",
            "word ".repeat(40),
            "tail ".repeat(40)
        );
        let s = marked(&snippet(&long, &q, 60));
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("[lunch]"), "{s}");
        assert!(s.chars().count() <= 64, "{s}");
        // A word matches where a word starts, not inside another.
        let q = Query::parse("eat").expect("query");
        assert_eq!(
            marked(&snippet("great, let's eat", &q, 80)),
            "great, let's [eat]"
        );
        let q = Query::parse("京").expect("query");
        assert_eq!(marked(&snippet("我爱北京", &q, 80)), "我爱北[京]");
    }
}
