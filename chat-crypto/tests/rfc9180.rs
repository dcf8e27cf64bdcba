//! RFC 9180 known-answer test for the suite the envelopes use: base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
//!
//! `data/rfc9180-base-x25519-sha256-aes256gcm.json` is that suite's entry of the CFRG
//! `test-vectors.json` at commit 5f503c5 (the vectors of the published RFC), cut to its
//! first eight encryptions.

use chat_crypto::e2e::{DevicePublicKey, DeviceSecret};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    info: String,
    #[serde(rename = "ikmE")]
    ikm_e: String,
    #[serde(rename = "ikmR")]
    ikm_r: String,
    #[serde(rename = "skRm")]
    sk_r: String,
    #[serde(rename = "pkRm")]
    pk_r: String,
    #[serde(rename = "pkEm")]
    pk_e: String,
    enc: String,
    encryptions: Vec<Encryption>,
}

#[derive(Deserialize)]
struct Encryption {
    aad: String,
    ct: String,
    pt: String,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Hands out fixed bytes: makes the sender's ephemeral key the vector's `ikmE`.
struct Fixed(Vec<u8>);

impl rand::RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used")
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used")
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        assert!(
            dst.len() <= self.0.len(),
            "asked for more fixed randomness than the vector has"
        );
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
    }
}

impl rand::CryptoRng for Fixed {}

fn vector() -> Vector {
    let text = include_str!("data/rfc9180-base-x25519-sha256-aes256gcm.json");
    let v: Vector = serde_json::from_str(text).unwrap();
    assert_eq!((v.mode, v.kem_id, v.kdf_id, v.aead_id), (0, 0x20, 1, 2));
    v
}

#[test]
fn key_derivation_matches() {
    let v = vector();
    let (sk, pk) = X25519HkdfSha256::derive_keypair(&hex(&v.ikm_r));
    assert_eq!(sk.to_bytes().to_vec(), hex(&v.sk_r));
    assert_eq!(pk.to_bytes().to_vec(), hex(&v.pk_r));
    // A device key restored from the vector's secret has the vector's public key.
    let device = DeviceSecret::from_bytes(&hex(&v.sk_r)).unwrap();
    assert_eq!(device.public_key().as_bytes().to_vec(), hex(&v.pk_r));
    assert!(DevicePublicKey::from_bytes(&hex(&v.pk_r)).is_ok());
}

#[test]
fn sender_produces_the_vector_ciphertexts() {
    let v = vector();
    let pk = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&hex(&v.pk_r)).unwrap();
    let mut rng = Fixed(hex(&v.ikm_e));
    let (enc, mut ctx) = hpke::setup_sender::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        &hex(&v.info),
        &mut rng,
    )
    .unwrap();
    assert_eq!(enc.to_bytes().to_vec(), hex(&v.enc));
    assert_eq!(hex(&v.enc), hex(&v.pk_e));
    for (seq, e) in v.encryptions.iter().enumerate() {
        let ct = ctx.seal(&hex(&e.pt), &hex(&e.aad)).unwrap();
        assert_eq!(ct, hex(&e.ct), "encryption {seq}");
    }
}

#[test]
fn recipient_opens_the_vector_ciphertexts() {
    let v = vector();
    let sk = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&hex(&v.sk_r)).unwrap();
    let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&hex(&v.enc)).unwrap();
    let mut ctx = hpke::setup_receiver::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &enc,
        &hex(&v.info),
    )
    .unwrap();
    for (seq, e) in v.encryptions.iter().enumerate() {
        let pt = ctx.open(&hex(&e.ct), &hex(&e.aad)).unwrap();
        assert_eq!(pt, hex(&e.pt), "encryption {seq}");
    }
    // The first encryption is what a one-shot seal of the envelope's key wrap does.
    let first = &v.encryptions[0];
    let pt = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &enc,
        &hex(&v.info),
        &hex(&first.ct),
        &hex(&first.aad),
    )
    .unwrap();
    assert_eq!(pt, hex(&first.pt));
    let mut tampered = hex(&first.ct);
    tampered[0] ^= 1;
    assert!(
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            &hex(&v.info),
            &tampered,
            &hex(&first.aad),
        )
        .is_err()
    );
}
