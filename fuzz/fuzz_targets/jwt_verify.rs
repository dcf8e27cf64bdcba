//! Arbitrary access tokens against the server's JWT verification: only a genuine
//! token verifies, and then only to its own claims. Forged signatures, `alg: none`,
//! other algorithms, edited payloads, oversized and malformed tokens are refused
//! without a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use chat_proto::ids::UserId;
use chat_server::auth::Tokens;
use libfuzzer_sys::fuzz_target;

/// The key of this target; the committed seeds are tokens signed with it.
const SECRET: &[u8] = b"chat fuzzing key, never used by a real server";

struct Fixture {
    tokens: Tokens,
    genuine: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let day = Duration::from_secs(86_400);
        let tokens = Tokens::from_secret(SECRET, day, day);
        let user = UserId::new(42).expect("id");
        let genuine = tokens.issue_access(user, 7).expect("issues");
        Fixture { tokens, genuine }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    // Structure-aware half: the fuzzer's bytes replace one part of a genuine token.
    let token = match data.split_first() {
        Some((&selector, rest)) if selector < 3 => {
            let mut parts: Vec<String> = f.genuine.split('.').map(str::to_owned).collect();
            parts[usize::from(selector)] = String::from_utf8_lossy(rest).into_owned();
            parts.join(".")
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    if let Ok(claims) = f.tokens.verify_access(&token) {
        // Whatever verified carries the genuine header and payload, byte for byte.
        let signed = |t: &str| t.rsplit_once('.').map(|(signed, _)| signed.to_owned());
        assert_eq!(
            signed(&token),
            signed(&f.genuine),
            "forged token verified: {token}"
        );
        assert_eq!((claims.user.get(), claims.session), (42, 7));
    }
});
