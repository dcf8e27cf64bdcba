//! Tokens and passwords.
//!
//! - Access tokens are HS256 JWTs signed with a key generated on first start and kept
//!   in the data directory (owner-only). The algorithm is pinned, and `exp`, `iat`,
//!   `iss`, `aud` and `sub` are all required and checked; the `sid` claim ties the
//!   token to its session, which the server checks on every request, so logout,
//!   password changes and account deletion take effect at once.
//! - Refresh tokens are 256 random bits, stored only as their SHA-256, rotated on every
//!   use; reusing a rotated token revokes its whole session.
//! - Passwords are hashed with Argon2id on the blocking pool behind a semaphore, so a
//!   flood of logins cannot starve the async workers.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_crypto::password::{Cost, PasswordHasher, Scratch, Verification};
use chat_proto::ids::UserId;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// Issuer claim of every access token.
pub const ISSUER: &str = "chat-server";
/// Audience claim of every access token.
pub const AUDIENCE: &str = "chat";
const KEY_FILE: &str = "jwt-signing.key";
const KEY_LEN: usize = 64;

/// The authenticated caller of an HTTP request or a real-time session.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Their profile.
    pub user: crate::store::User,
    /// The session of the access token.
    pub session: i64,
}

/// Why an access token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad signature or claims, expired, or its session revoked or its user deleted.
    #[error("the access token is invalid or expired")]
    InvalidToken,
    /// The session could not be checked (storage failed).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why an access token was refused. Deliberately coarse: clients only learn
/// "invalid", logs learn why.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, algorithm, claims or expiry did not check out.
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: i64,
    iat: u64,
    exp: u64,
    iss: String,
    aud: String,
}

/// A verified access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessClaims {
    /// The user.
    pub user: UserId,
    /// The session it was issued for.
    pub session: i64,
}

/// Seconds of clock difference allowed when checking `exp`.
const LEEWAY_SECS: u64 = 5;

/// The only JOSE header this server writes, and the only algorithm it accepts.
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The JOSE header of a presented token, as far as it is read.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Issues and verifies tokens: JSON Web Tokens (RFC 7519) signed with HMAC-SHA256
/// (ring's). The algorithm is pinned: a token naming any other, `none` included, is
/// refused before its signature is looked at.
pub struct Tokens {
    key: hmac::Key,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads the signing key from the data directory, creating it (mode 0600) on first
    /// start.
    pub fn load_or_create(
        data_dir: &Path,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 32 => bytes,
            Ok(_) => anyhow::bail!("{} is shorter than 32 bytes", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; KEY_LEN] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(&path)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
                file.write_all(&key)?;
                file.sync_all()?;
                tracing::info!(path = %path.display(), "generated a new token signing key");
                key.to_vec()
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "signing key is readable by other users; chmod 600 it");
            }
        }
        Ok(Self::from_secret(&key, access_ttl, refresh_ttl))
    }

    /// Tokens over an explicit secret.
    pub fn from_secret(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            access_ttl,
            refresh_ttl,
        }
    }

    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// Signs an access token for a session.
    pub fn issue_access(&self, user: UserId, session: i64) -> Result<String, TokenError> {
        let now = unix_now();
        let claims = Claims {
            sub: user.to_string(),
            sid: session,
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let payload =
            serde_json::to_vec(&claims).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(JWT_HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    /// Verifies an access token's signature and claims (the session is checked by the
    /// caller against the store).
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > chat_proto::limits::MAX_TOKEN {
            return Err(TokenError::Invalid("oversized".into()));
        }
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        let mut parts = token.split('.');
        let (Some(raw_header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not three parts"));
        };
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(raw_header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| invalid("bad header"))?;
        if header.alg != "HS256" || header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(invalid("algorithm not accepted"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| invalid("bad signature encoding"))?;
        // What was signed: the first two parts and the dot between them.
        let signing_input = &token[..raw_header.len() + 1 + payload.len()];
        hmac::verify(&self.key, signing_input.as_bytes(), &signature)
            .map_err(|_| invalid("bad signature"))?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| invalid("bad claims"))?;
        if claims.iss != ISSUER || claims.aud != AUDIENCE {
            return Err(invalid("wrong issuer or audience"));
        }
        let now = unix_now();
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(invalid("expired"));
        }
        if claims.iat > now + 60 {
            return Err(invalid("issued in the future"));
        }
        let user = claims
            .sub
            .parse::<UserId>()
            .map_err(|_| TokenError::Invalid("bad subject".into()))?;
        Ok(AccessClaims {
            user,
            session: claims.sid,
        })
    }

    /// A new refresh token and the hash to store.
    pub fn new_refresh(&self) -> (String, [u8; 32]) {
        let raw: [u8; 32] = rand::random();
        (URL_SAFE_NO_PAD.encode(raw), Sha256::digest(raw).into())
    }

    /// The stored hash of a presented refresh token, if it is well-formed.
    pub fn refresh_hash(token: &str) -> Option<[u8; 32]> {
        if token.len() != 43 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        (raw.len() == 32).then(|| Sha256::digest(&raw).into())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Password hashing off the async runtime, with bounded concurrency. Each running
/// hash borrows working memory from a pool (at most one per permit), so memory stays
/// at concurrency × cost instead of fragmenting the heap hash after hash.
#[derive(Clone, Debug)]
pub struct Passwords {
    hasher: PasswordHasher,
    permits: Arc<Semaphore>,
    scratch: Arc<Mutex<Vec<Scratch>>>,
}

/// Hashing failed (a bug or a corrupt stored hash, never a wrong password).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashingError(String);

impl Passwords {
    /// Argon2id at OWASP cost, at most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Self {
        Self {
            hasher: PasswordHasher::new(Cost::OWASP)
                .unwrap_or_else(|_| unreachable!("OWASP cost is valid")),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            scratch: Arc::default(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PasswordHasher, &mut Scratch) -> T + Send + 'static,
    ) -> Result<T, HashingError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashingError("shutting down".into()))?;
        let hasher = self.hasher.clone();
        let pool = self.scratch.clone();
        tokio::task::spawn_blocking(move || {
            let taken = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut scratch = taken.unwrap_or_default();
            let out = f(&hasher, &mut scratch);
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
            out
        })
        .await
        .map_err(|e| HashingError(e.to_string()))
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, HashingError> {
        self.blocking(move |h, scratch| h.hash_with(&password, scratch))
            .await?
            .map_err(|e| HashingError(e.to_string()))
    }

    /// Verifies a password; with no stored hash (unknown user) it spends the same time
    /// and answers [`Verification::Invalid`].
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verification, HashingError> {
        self.blocking(move |h, scratch| match stored {
            Some(stored) => h
                .verify_with(&password, &stored, scratch)
                .map_err(|e| HashingError(e.to_string())),
            None => {
                h.dummy_verify_with(&password, scratch);
                Ok(Verification::Invalid)
            }
        })
        .await?
    }
}

/// Throttles failed logins per username and per client address.
#[derive(Debug)]
pub struct LoginThrottle {
    inner: Mutex<HashMap<ThrottleKey, Failures>>,
    window: Duration,
    per_user: u32,
    per_address: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ThrottleKey {
    User(String),
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Entries kept at most; past this, expired entries are purged and, if still full, new
/// keys are not tracked (memory stays bounded whatever an attacker sends).
const THROTTLE_CAPACITY: usize = 100_000;

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60), 10, 50)
    }
}

impl LoginThrottle {
    /// At most `per_user` failures per username and `per_address` per address within
    /// `window`.
    pub fn new(window: Duration, per_user: u32, per_address: u32) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            window,
            per_user,
            per_address,
        }
    }

    fn keys(username: &str, address: IpAddr) -> [(ThrottleKey, bool); 2] {
        [
            (ThrottleKey::User(username.to_owned()), true),
            (ThrottleKey::Address(address), false),
        ]
    }

    /// `Err(retry_after)` while either limit is exhausted.
    pub fn check(&self, username: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, is_user) in Self::keys(username, address) {
            let limit = if is_user {
                self.per_user
            } else {
                self.per_address
            };
            if let Some(f) = map.get(&key)
                && now.duration_since(f.since) < self.window
                && f.count >= limit
            {
                wait = wait.max(self.window - now.duration_since(f.since));
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, username: &str, address: IpAddr, now: Instant) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= THROTTLE_CAPACITY {
            let window = self.window;
            map.retain(|_, f| now.duration_since(f.since) < window);
        }
        for (key, _) in Self::keys(username, address) {
            if map.len() >= THROTTLE_CAPACITY && !map.contains_key(&key) {
                continue;
            }
            let entry = map.entry(key).or_insert(Failures {
                count: 0,
                since: now,
            });
            if now.duration_since(entry.since) >= self.window {
                *entry = Failures {
                    count: 0,
                    since: now,
                };
            }
            entry.count += 1;
        }
    }

    /// A successful login clears the username's record (not the address's).
    pub fn succeeded(&self, username: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&ThrottleKey::User(username.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    fn tokens() -> Tokens {
        Tokens::from_secret(
            &[7u8; 64],
            Duration::from_secs(900),
            Duration::from_secs(3600),
        )
    }

    fn forge(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap_or_default()
    }

    fn claims(now: u64) -> serde_json::Value {
        serde_json::json!({"sub": "42", "sid": 7, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE})
    }

    #[test]
    fn genuine_tokens_verify() {
        let t = tokens();
        let user = UserId::new(42).unwrap_or_else(|_| unreachable!());
        let token = t.issue_access(user, 7).unwrap_or_default();
        assert_eq!(
            t.verify_access(&token).ok(),
            Some(AccessClaims { user, session: 7 })
        );
    }

    #[test]
    fn forged_expired_and_tampered_tokens_fail() {
        let t = tokens();
        let now = unix_now();
        assert!(
            t.verify_access(&forge(claims(now), Algorithm::HS256, &[7u8; 64]))
                .is_ok()
        );
        // Wrong key, other HMAC algorithms, expired, wrong issuer/audience, missing claims.
        assert!(
            t.verify_access(&forge(claims(now), Algorithm::HS256, &[8u8; 64]))
                .is_err()
        );
        assert!(
            t.verify_access(&forge(claims(now), Algorithm::HS512, &[7u8; 64]))
                .is_err()
        );
        let mut expired = claims(now - 7200);
        expired["exp"] = (now - 3600).into();
        assert!(
            t.verify_access(&forge(expired, Algorithm::HS256, &[7u8; 64]))
                .is_err()
        );
        for (field, value) in [
            ("iss", "evil"),
            ("aud", "other"),
            ("sub", "not-a-number"),
            ("sub", "0"),
        ] {
            let mut c = claims(now);
            c[field] = value.into();
            assert!(
                t.verify_access(&forge(c, Algorithm::HS256, &[7u8; 64]))
                    .is_err(),
                "{field}={value}"
            );
        }
        for missing in ["exp", "iat", "sub", "iss", "aud"] {
            let mut c = claims(now);
            c.as_object_mut().map(|o| o.remove(missing));
            assert!(
                t.verify_access(&forge(c, Algorithm::HS256, &[7u8; 64]))
                    .is_err(),
                "without {missing}"
            );
        }
        let mut future = claims(now + 3600);
        future["exp"] = (now + 7200).into();
        assert!(
            t.verify_access(&forge(future, Algorithm::HS256, &[7u8; 64]))
                .is_err()
        );
        // alg: none, and a tampered payload under a genuine signature.
        let genuine = t
            .issue_access(UserId::new(42).unwrap_or_else(|_| unreachable!()), 7)
            .unwrap_or_default();
        let parts: Vec<&str> = genuine.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            t.verify_access(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );
        let evil_payload =
            URL_SAFE_NO_PAD.encode(claims(now).to_string().replace("\"42\"", "\"1\""));
        assert!(
            t.verify_access(&format!("{}.{evil_payload}.{}", parts[0], parts[2]))
                .is_err()
        );
        assert!(t.verify_access("").is_err());
        assert!(t.verify_access("a.b.c").is_err());
    }

    #[test]
    fn issued_tokens_are_standard_hs256_jwts() {
        // Another implementation verifies what this one signs.
        let t = tokens();
        let token = t
            .issue_access(UserId::new(42).unwrap_or_else(|_| unreachable!()), 7)
            .unwrap_or_default();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(&[7u8; 64]),
            &validation,
        )
        .expect("a standard HS256 token");
        assert_eq!(decoded.claims["sub"], "42");
        assert_eq!(decoded.claims["sid"], 7);
        // Headers naming another type, and tokens of more parts, are refused.
        let parts: Vec<&str> = token.split('.').collect();
        let other_typ = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"at+jwt"}"#);
        let resigned = {
            let input = format!("{other_typ}.{}", parts[1]);
            let key = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 64]);
            let tag = hmac::sign(&key, input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        };
        assert!(t.verify_access(&resigned).is_err());
        assert!(t.verify_access(&format!("{token}.x")).is_err());
        assert!(t.verify_access(&format!("{token}=")).is_err(), "padding");
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let t = tokens();
        let (a, ha) = t.new_refresh();
        let (b, hb) = t.new_refresh();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(Tokens::refresh_hash(&a), Some(ha));
        assert_eq!(Tokens::refresh_hash(&b), Some(hb));
        assert_eq!(Tokens::refresh_hash("short"), None);
        assert_eq!(Tokens::refresh_hash(&"!".repeat(43)), None);
    }

    #[test]
    fn signing_key_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let ttl = Duration::from_secs(60);
        let a = Tokens::load_or_create(dir.path(), ttl, ttl).unwrap_or_else(|e| panic!("{e}"));
        let user = UserId::new(1).unwrap_or_else(|_| unreachable!());
        let token = a.issue_access(user, 1).unwrap_or_default();
        let b = Tokens::load_or_create(dir.path(), ttl, ttl).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.verify_access(&token).is_ok(), "same key after restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn throttle_limits_per_user_and_per_address() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 3, 5);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(throttle.check("ann", ip, t0).is_ok());
            throttle.failed("ann", ip, t0);
        }
        let wait = throttle.check("ann", other, t0).expect_err("user limit");
        assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(59));
        assert!(throttle.check("ben", other, t0).is_ok());
        throttle.failed("ben", ip, t0);
        throttle.failed("cat", ip, t0);
        assert!(throttle.check("dan", ip, t0).is_err(), "address limit");
        assert!(
            throttle
                .check("dan", ip, t0 + Duration::from_secs(61))
                .is_ok(),
            "window passed"
        );
        throttle.succeeded("ann");
        assert!(throttle.check("ann", other, t0).is_ok());
    }
}
