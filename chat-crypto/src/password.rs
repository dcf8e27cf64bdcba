//! Argon2id password hashing.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), so the parameters
//! travel with each hash and can be raised later: [`PasswordHasher::verify`] reports
//! when a hash was made with weaker parameters than the current ones, and the caller
//! stores a fresh hash while it still holds the plaintext.
//!
//! Hashing costs tens of milliseconds of CPU and megabytes of memory by design. Servers
//! must call it off their async workers (a blocking pool behind a concurrency limit),
//! and should give each worker a [`Scratch`] to reuse: allocating 19 MiB per hash
//! fragments the heap until the process holds hundreds of megabytes it does not use.
//!
//! ```
//! use chat_crypto::password::{PasswordHasher, Verification};
//!
//! let hasher = PasswordHasher::for_tests();
//! let hash = hasher.hash("correct horse battery staple")?;
//! assert_eq!(hasher.verify("correct horse battery staple", &hash)?, Verification::Valid);
//! assert_eq!(hasher.verify("wrong", &hash)?, Verification::Invalid);
//! # Ok::<(), chat_crypto::password::PasswordError>(())
//! ```

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;

/// Why hashing or verification could not be carried out. A wrong password is not an
/// error: it is [`Verification::Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not a PHC string this module understands.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The parameters are outside what Argon2 accepts.
    #[error("invalid Argon2 parameters")]
    InvalidParams,
    /// The hashing itself failed.
    #[error("password hashing failed")]
    Hashing,
}

/// Outcome of checking a password against a stored hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verification {
    /// The password matches and the hash uses the current parameters.
    Valid,
    /// The password matches but the hash uses other parameters: store a new hash.
    ValidNeedsRehash,
    /// The password does not match.
    Invalid,
}

impl Verification {
    /// Whether the password matched.
    pub fn is_valid(self) -> bool {
        !matches!(self, Verification::Invalid)
    }
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Cost {
    /// OWASP's first recommended Argon2id setting: 19 MiB, 2 iterations, 1 lane.
    pub const OWASP: Cost = Cost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
}

impl Default for Cost {
    fn default() -> Self {
        Cost::OWASP
    }
}

/// Reusable Argon2 working memory: one per hashing thread keeps memory use flat at
/// (threads × cost) however many passwords are hashed.
#[derive(Default)]
pub struct Scratch {
    blocks: Vec<Block>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} KiB)", self.blocks.len())
    }
}

impl Scratch {
    /// Empty; grows to the cost of the first hash.
    pub fn new() -> Self {
        Self::default()
    }

    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::default());
        }
        &mut self.blocks[..count]
    }
}

/// Stored hashes asking for more memory than this are refused rather than computed.
const MAX_STORED_MEMORY_KIB: u32 = 1024 * 1024;

/// Hashes and verifies passwords with Argon2id at a fixed cost.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    params: Params,
}

impl PasswordHasher {
    /// A hasher at the given cost; refuses costs below OWASP's recommendation
    /// ([`Cost::OWASP`]: 19 MiB, 2 iterations).
    pub fn new(cost: Cost) -> Result<Self, PasswordError> {
        if cost.memory_kib < Cost::OWASP.memory_kib || cost.iterations < 2 {
            return Err(PasswordError::InvalidParams);
        }
        Self::unchecked(cost)
    }

    /// A cheap hasher for tests only (64 KiB, 1 iteration): fast, and far too weak for
    /// real passwords.
    pub fn for_tests() -> Self {
        Self::unchecked(Cost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap_or_else(|_| unreachable!("constant parameters are valid"))
    }

    fn unchecked(cost: Cost) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|_| PasswordError::InvalidParams)?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a password with a fresh random salt; returns the PHC string.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_with(password, &mut Scratch::new())
    }

    /// [`hash`](Self::hash) in the given working memory.
    pub fn hash_with(
        &self,
        password: &str,
        scratch: &mut Scratch,
    ) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut raw = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut raw)
            .map_err(|_| PasswordError::Hashing)?;
        let argon2 = self.argon2();
        let blocks = scratch.blocks(self.params.block_count());
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
                .map_err(Into::into)
        })
        .map_err(|_| PasswordError::Hashing)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|_| PasswordError::Hashing)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Checks a password against a stored PHC string, in time independent of where the
    /// digests differ.
    pub fn verify(&self, password: &str, stored: &str) -> Result<Verification, PasswordError> {
        self.verify_with(password, stored, &mut Scratch::new())
    }

    /// [`verify`](Self::verify) in the given working memory.
    pub fn verify_with(
        &self,
        password: &str,
        stored: &str,
        scratch: &mut Scratch,
    ) -> Result<Verification, PasswordError> {
        let malformed = |_| PasswordError::MalformedHash;
        let parsed = PasswordHash::new(stored).map_err(malformed)?;
        let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
            return Err(PasswordError::MalformedHash);
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return Err(PasswordError::MalformedHash);
        }
        // The parameters come from the stored hash, so older hashes still verify.
        let params = Params::try_from(&parsed).map_err(malformed)?;
        if params.m_cost() > MAX_STORED_MEMORY_KIB {
            return Err(PasswordError::MalformedHash);
        }
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|_| PasswordError::MalformedHash)?,
            None => Version::V0x10,
        };
        let mut raw = [0u8; 64];
        let salt = salt.decode_b64(&mut raw).map_err(malformed)?;
        let mut digest = [0u8; Output::MAX_LENGTH];
        let digest = digest
            .get_mut(..expected.len())
            .ok_or(PasswordError::MalformedHash)?;
        Argon2::new(Algorithm::Argon2id, version, params.clone())
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                digest,
                scratch.blocks(params.block_count()),
            )
            .map_err(|_| PasswordError::MalformedHash)?;
        if !bool::from(digest.ct_eq(expected.as_bytes())) {
            return Ok(Verification::Invalid);
        }
        let same = params.m_cost() == self.params.m_cost()
            && params.t_cost() == self.params.t_cost()
            && params.p_cost() == self.params.p_cost()
            && version == Version::V0x13;
        Ok(if same {
            Verification::Valid
        } else {
            Verification::ValidNeedsRehash
        })
    }

    /// Spends the same work as a real verification against nothing, so that an
    /// unknown username takes as long to refuse as a wrong password.
    pub fn dummy_verify(&self, password: &str) {
        self.dummy_verify_with(password, &mut Scratch::new());
    }

    /// [`dummy_verify`](Self::dummy_verify) in the given working memory.
    pub fn dummy_verify_with(&self, password: &str, scratch: &mut Scratch) {
        const DUMMY_SALT: &[u8] = b"somesaltsomesalt";
        let mut digest = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let _ = self.argon2().hash_password_into_with_memory(
            password.as_bytes(),
            DUMMY_SALT,
            &mut digest,
            scratch.blocks(self.params.block_count()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_phc_strings() {
        let hasher = PasswordHasher::for_tests();
        let a = hasher.hash("hunter22").expect("hashes");
        let b = hasher.hash("hunter22").expect("hashes");
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "fresh salt per hash");
        assert_eq!(
            hasher.verify("hunter22", &a).ok(),
            Some(Verification::Valid)
        );
        assert_eq!(
            hasher.verify("hunter23", &a).ok(),
            Some(Verification::Invalid)
        );
        assert_eq!(hasher.verify("", &a).ok(), Some(Verification::Invalid));
    }

    #[test]
    fn reused_memory_gives_standard_interchangeable_hashes() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::for_tests();
        let mut scratch = Scratch::new();
        let ours = hasher.hash_with("hunter22", &mut scratch).expect("hashes");
        // The reference implementation accepts ours…
        let parsed = PasswordHash::new(&ours).expect("PHC");
        assert!(
            hasher
                .argon2()
                .verify_password(b"hunter22", &parsed)
                .is_ok()
        );
        assert!(
            hasher
                .argon2()
                .verify_password(b"hunter2", &parsed)
                .is_err()
        );
        // …and we accept its hashes, in the same reused memory.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = hasher
            .argon2()
            .hash_password(b"hunter22", &salt)
            .expect("hashes")
            .to_string();
        for _ in 0..3 {
            assert_eq!(
                hasher.verify_with("hunter22", &theirs, &mut scratch).ok(),
                Some(Verification::Valid)
            );
            assert_eq!(
                hasher.verify_with("nope", &theirs, &mut scratch).ok(),
                Some(Verification::Invalid)
            );
        }
        assert_eq!(format!("{scratch:?}"), "Scratch(64 KiB)");
        // A stored hash demanding absurd memory is refused, not computed.
        let greedy = ours.replace("m=64,", "m=4194304,");
        assert!(matches!(
            hasher.verify("hunter22", &greedy),
            Err(PasswordError::MalformedHash)
        ));
    }

    #[test]
    fn raised_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::for_tests();
        let hash = old.hash("pässwörd ✓").expect("hashes");
        let new = PasswordHasher::unchecked(Cost {
            memory_kib: 128,
            iterations: 1,
            parallelism: 1,
        })
        .expect("valid");
        assert_eq!(
            new.verify("pässwörd ✓", &hash).ok(),
            Some(Verification::ValidNeedsRehash)
        );
        assert_eq!(
            new.verify("password", &hash).ok(),
            Some(Verification::Invalid)
        );
    }

    #[test]
    fn production_cost_meets_owasp() {
        assert!(PasswordHasher::new(Cost::OWASP).is_ok());
        assert!(matches!(
            PasswordHasher::new(Cost {
                memory_kib: 1024,
                iterations: 2,
                parallelism: 1
            }),
            Err(PasswordError::InvalidParams)
        ));
        let hasher = PasswordHasher::new(Cost::OWASP).expect("valid");
        let hash = hasher.hash("a real password").expect("hashes");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_errors() {
        let hasher = PasswordHasher::for_tests();
        for stored in [
            "",
            "plaintext",
            "$argon2id$v=19$m=64",
            "$2b$12$abcdefghijklmnopqrstuv",
        ] {
            assert!(
                matches!(
                    hasher.verify("x", stored),
                    Err(PasswordError::MalformedHash)
                ),
                "{stored}"
            );
        }
        let argon2i = "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$0HsGNoBIcONRZPdRXjHDCw";
        assert!(hasher.verify("x", argon2i).is_err());
        hasher.dummy_verify("anything");
    }
}
