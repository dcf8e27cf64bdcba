//! Which servers to trust: the system's roots, or one pinned certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::{Error, Result};

/// How the client authenticates the server over TLS (`wss://`, `https://`, `quic://`).
///
/// ```
/// use chat_sdk::Trust;
///
/// // The fingerprint chat-server prints at start for its development certificate.
/// let pin = Trust::fingerprint(
///     "9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08",
/// )?;
/// # Ok::<(), chat_sdk::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Trust {
    /// The operating system's root certificates, with the usual name checks.
    #[default]
    System,
    /// Exactly one certificate, by the SHA-256 of its DER encoding (for self-signed
    /// development certificates). Name and validity period are not checked: the pin
    /// is the identity.
    Pinned([u8; 32]),
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::System => f.write_str("System"),
            Trust::Pinned(pin) => write!(f, "Pinned({})", hex(pin)),
        }
    }
}

impl Trust {
    /// Pins a SHA-256 fingerprint written as hex, with or without colons
    /// (`AB:CD:…` as chat-server prints it).
    pub fn fingerprint(text: &str) -> Result<Self> {
        let digits: String = text.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        let bad = || Error::Config(format!("not a SHA-256 fingerprint: {text:?}"));
        if digits.len() != 64 || !digits.is_ascii() {
            return Err(bad());
        }
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Trust::Pinned(pin))
    }

    /// Pins the certificate in a PEM (or DER) file, such as chat-server's
    /// `quic-cert.pem`; the first certificate of the file is the pin.
    pub fn certificate_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let der = match CertificateDer::pem_slice_iter(&bytes).next() {
            Some(Ok(cert)) => cert.as_ref().to_vec(),
            Some(Err(e)) => {
                return Err(Error::Config(format!("{}: {e}", path.display())));
            }
            // Not PEM: take the file as one DER certificate.
            None => bytes,
        };
        Ok(Trust::Pinned(Sha256::digest(&der).into()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client configuration for `trust`, offering `alpn`.
pub(crate) fn client_config(
    trust: &Trust,
    alpn: &[&[u8]],
    tls13_only: bool,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::System => builder
            .with_root_certificates(system_roots())
            .with_no_client_auth(),
        Trust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The operating system's roots, loaded once per process. None found is not an error
/// here (plain `ws://` and `http://` need none); TLS connections then fail with an
/// unknown-issuer error.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    errors = found.errors.len(),
                    "no usable system root certificates; TLS servers cannot be verified"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// The server name to verify for `host`.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Config(format!("not a valid server name: {host:?}")))
}

/// Accepts exactly the certificate whose SHA-256 is the pin; the handshake signature
/// is still checked, so the server must hold that certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(digest.ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let colons = "9F:86:D0:81:88:4C:7D:65:9A:2F:EA:A0:C5:5A:D0:15:A3:BF:4F:1B:2B:0B:82:2C:D1:5D:6C:15:B0:F0:0A:08";
        let plain = colons.replace(':', "").to_lowercase();
        let a = Trust::fingerprint(colons).unwrap();
        assert_eq!(a, Trust::fingerprint(&plain).unwrap());
        let Trust::Pinned(pin) = a else { panic!() };
        assert_eq!(pin, <[u8; 32]>::from(Sha256::digest(b"test")));
        assert_eq!(format!("{a:?}"), format!("Pinned({colons})"));
        assert!(Trust::fingerprint("AB:CD").is_err());
        assert!(Trust::fingerprint(&"zz".repeat(32)).is_err());
        assert!(Trust::fingerprint(&"é".repeat(32)).is_err());
    }

    #[test]
    fn only_the_pinned_certificate_verifies() {
        let verifier = PinnedCertificate {
            pin: Sha256::digest(b"cert").into(),
            algorithms: provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();
        assert!(
            verifier
                .verify_server_cert(&CertificateDer::from(&b"cert"[..]), &[], &name, &[], now)
                .is_ok()
        );
        let wrong = verifier
            .verify_server_cert(&CertificateDer::from(&b"cerT"[..]), &[], &name, &[], now)
            .unwrap_err();
        assert!(is_pin(&wrong));
    }

    fn is_pin(e: &rustls::Error) -> bool {
        matches!(Error::connect(e), Error::CertificateMismatch)
    }
}
