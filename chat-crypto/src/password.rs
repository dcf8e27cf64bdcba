//! Argon2id password hashing.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), so the parameters
//! travel with each hash and can be raised later: [`PasswordHasher::verify`] reports
//! when a hash was made with weaker parameters than the current ones, and the caller
//! stores a fresh hash while it still holds the plaintext.
//!
//! Hashing costs tens of milliseconds of CPU by design. Servers must call it off their
//! async workers (a blocking pool behind a concurrency limit).
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
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

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
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| PasswordError::Hashing)
    }

    /// Checks a password against a stored PHC string, in time independent of where the
    /// digests differ.
    pub fn verify(&self, password: &str, stored: &str) -> Result<Verification, PasswordError> {
        let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.hash.is_none()
            || parsed.salt.is_none()
        {
            return Err(PasswordError::MalformedHash);
        }
        // The verifier reads the parameters from the stored hash and compares digests
        // in constant time.
        match self.argon2().verify_password(password.as_bytes(), &parsed) {
            Ok(()) => {
                let current =
                    Params::try_from(&parsed).map_err(|_| PasswordError::MalformedHash)?;
                let same = current.m_cost() == self.params.m_cost()
                    && current.t_cost() == self.params.t_cost()
                    && current.p_cost() == self.params.p_cost()
                    && parsed.version == Some(Version::V0x13 as u32);
                Ok(if same {
                    Verification::Valid
                } else {
                    Verification::ValidNeedsRehash
                })
            }
            Err(argon2::password_hash::Error::Password) => Ok(Verification::Invalid),
            Err(_) => Err(PasswordError::MalformedHash),
        }
    }

    /// Spends the same work as a real verification against nothing, so that an
    /// unknown username takes as long to refuse as a wrong password.
    pub fn dummy_verify(&self, password: &str) {
        static DUMMY_SALT: &str = "c29tZXNhbHRzb21lc2FsdA";
        if let Ok(salt) = SaltString::from_b64(DUMMY_SALT) {
            let _ = self.argon2().hash_password(password.as_bytes(), &salt);
        }
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
