//! Which accelerated code paths the primitives use on this CPU.
//!
//! The primitives pick their fastest implementation at run time; this module asks the
//! CPU the same questions so operators and benchmarks can see what is in use.

use std::fmt;

/// The hardware features the encryption primitives use, as detected on this CPU, and
/// the libraries that implement each primitive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backend {
    /// AES round instructions (AES-NI): AES-256-GCM bodies (ring) and key wraps
    /// (RustCrypto `aes`).
    pub aes_ni: bool,
    /// Carry-less multiplication (PCLMULQDQ): GHASH in both AES-GCM implementations.
    pub pclmulqdq: bool,
    /// AVX: ring's AES-GCM uses its AVX code path when AES-NI and PCLMULQDQ are also
    /// present.
    pub avx: bool,
    /// AVX2: wider vector code in ring's AES-GCM (with VAES and VPCLMULQDQ) and in
    /// curve25519-dalek.
    pub avx2: bool,
    /// Vector AES (VAES).
    pub vaes: bool,
    /// Vector carry-less multiplication (VPCLMULQDQ).
    pub vpclmulqdq: bool,
    /// SHA extensions (SHA-NI), used by SHA-256 in HKDF and fingerprints.
    pub sha_ni: bool,
}

impl Backend {
    /// Whether AES-GCM runs on hardware AES and carry-less multiplication rather than
    /// constant-time software fallbacks (several times slower).
    pub fn aes_gcm_accelerated(&self) -> bool {
        self.aes_ni && self.pclmulqdq
    }
}

/// What this CPU offers the primitives.
pub fn backend() -> Backend {
    detect()
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn detect() -> Backend {
    Backend {
        aes_ni: std::arch::is_x86_feature_detected!("aes"),
        pclmulqdq: std::arch::is_x86_feature_detected!("pclmulqdq"),
        avx: std::arch::is_x86_feature_detected!("avx"),
        avx2: std::arch::is_x86_feature_detected!("avx2"),
        vaes: std::arch::is_x86_feature_detected!("vaes"),
        vpclmulqdq: std::arch::is_x86_feature_detected!("vpclmulqdq"),
        sha_ni: std::arch::is_x86_feature_detected!("sha"),
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Backend {
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    Backend {
        aes_ni: aes,
        pclmulqdq: aes, // PMULL comes with the AES extension
        avx: false,
        avx2: false,
        vaes: false,
        vpclmulqdq: false,
        sha_ni: std::arch::is_aarch64_feature_detected!("sha2"),
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Backend {
    Backend {
        aes_ni: false,
        pclmulqdq: false,
        avx: false,
        avx2: false,
        vaes: false,
        vpclmulqdq: false,
        sha_ni: false,
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "AES-256-GCM bodies: ring ({}); key wrap: HPKE (hpke crate, RustCrypto AES-GCM {}); \
             X25519: curve25519-dalek; CPU: AES-NI {}, PCLMULQDQ {}, AVX {}, AVX2 {}, VAES {}, \
             VPCLMULQDQ {}, SHA-NI {}",
            if self.aes_gcm_accelerated() {
                "hardware AES + GHASH"
            } else {
                "software"
            },
            if self.aes_gcm_accelerated() {
                "hardware"
            } else {
                "software"
            },
            on(self.aes_ni),
            on(self.pclmulqdq),
            on(self.avx),
            on(self.avx2),
            on(self.vaes),
            on(self.vpclmulqdq),
            on(self.sha_ni),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_was_detected() {
        let b = backend();
        let shown = b.to_string();
        for (name, on) in [
            ("AES-NI", b.aes_ni),
            ("PCLMULQDQ", b.pclmulqdq),
            ("AVX2", b.avx2),
            ("VAES", b.vaes),
            ("SHA-NI", b.sha_ni),
        ] {
            let expected = format!("{name} {}", if on { "yes" } else { "no" });
            assert!(
                shown.contains(&expected),
                "{expected:?} missing from {shown:?}"
            );
        }
        assert_eq!(b.aes_gcm_accelerated(), b.aes_ni && b.pclmulqdq);
        assert_eq!(
            shown.contains("hardware AES + GHASH"),
            b.aes_gcm_accelerated()
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(b.aes_ni, std::arch::is_x86_feature_detected!("aes"));
    }
}
