use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn aad() -> [u8; MESSAGE_AAD_LEN] {
    message_aad(42, 7, &[3; 16])
}

#[test]
fn every_recipient_opens_and_no_one_else_does() {
    let sender = DeviceSecret::generate();
    let devices: Vec<DeviceSecret> = (0..5).map(|_| DeviceSecret::generate()).collect();
    let outsider = DeviceSecret::generate();
    let body = "héllo 👋 — a message".as_bytes();
    let recipients: Vec<&DevicePublicKey> = devices.iter().map(|d| d.public_key()).collect();
    let envelope = sender.seal(body, recipients, &aad()).unwrap();
    assert_eq!(envelope.len(), sealed_len(body.len(), 5));
    for device in &devices {
        let opened = device.open(&envelope, &aad()).unwrap();
        assert_eq!(&opened.body[..], body);
        assert_eq!(opened.sender_device, sender.id());
    }
    assert_eq!(
        outsider.open(&envelope, &aad()).unwrap_err(),
        OpenError::NotARecipient
    );
    // The sender did not include itself: it cannot read its own message back.
    assert_eq!(
        sender.open(&envelope, &aad()).unwrap_err(),
        OpenError::NotARecipient
    );
    // The body is not in the envelope in the clear.
    assert!(!envelope.windows(body.len()).any(|w| w == body));
}

#[test]
fn empty_and_large_bodies_round_trip() {
    let a = DeviceSecret::generate();
    for len in [0usize, 1, 15, 16, 17, 16 * 1024, 100_000] {
        let body: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let envelope = a.seal(&body, [a.public_key()], b"").unwrap();
        assert_eq!(&a.open(&envelope, b"").unwrap().body[..], &body[..]);
    }
}

#[test]
fn recipients_are_deduplicated_and_bounded() {
    let a = DeviceSecret::generate();
    let b = DeviceSecret::generate();
    let envelope = a
        .seal(b"x", [b.public_key(), a.public_key(), b.public_key()], b"")
        .unwrap();
    let header = EnvelopeHeader::parse(&envelope).unwrap();
    assert_eq!(header.recipients.len(), 2);
    assert!(header.recipients.contains(&a.id()) && header.recipients.contains(&b.id()));
    assert_eq!(header.sender_device, a.id());

    assert_eq!(a.seal(b"x", [], b"").unwrap_err(), SealError::NoRecipients);
    let many: Vec<DeviceSecret> = (0..=MAX_RECIPIENTS)
        .map(|_| DeviceSecret::generate())
        .collect();
    assert_eq!(
        a.seal(b"x", many.iter().map(|d| d.public_key()), b"")
            .unwrap_err(),
        SealError::TooManyRecipients
    );
    let envelope = a
        .seal(
            b"x",
            many[..MAX_RECIPIENTS].iter().map(|d| d.public_key()),
            b"",
        )
        .unwrap();
    assert_eq!(
        &many[MAX_RECIPIENTS - 1].open(&envelope, b"").unwrap().body[..],
        b"x"
    );
}

#[test]
fn any_flipped_bit_is_rejected() {
    let a = DeviceSecret::generate();
    let b = DeviceSecret::generate();
    let envelope = a
        .seal(b"attack at dawn", [a.public_key(), b.public_key()], &aad())
        .unwrap();
    for byte in 0..envelope.len() {
        for bit in 0..8 {
            let mut tampered = envelope.clone();
            tampered[byte] ^= 1 << bit;
            for reader in [&a, &b] {
                let err = reader.open(&tampered, &aad()).unwrap_err();
                assert!(
                    matches!(
                        err,
                        OpenError::Rejected | OpenError::Malformed | OpenError::NotARecipient
                    ),
                    "byte {byte} bit {bit}: {err:?}"
                );
            }
        }
    }
}

#[test]
fn changed_associated_data_is_rejected() {
    let a = DeviceSecret::generate();
    let envelope = a.seal(b"hi", [a.public_key()], &aad()).unwrap();
    assert!(a.open(&envelope, &aad()).is_ok());
    for other in [
        message_aad(43, 7, &[3; 16]),
        message_aad(42, 8, &[3; 16]),
        message_aad(42, 7, &[4; 16]),
    ] {
        assert_eq!(a.open(&envelope, &other).unwrap_err(), OpenError::Rejected);
    }
    assert_eq!(a.open(&envelope, b"").unwrap_err(), OpenError::Rejected);
    // A longer aad that starts with the right one is different associated data too.
    let mut longer = aad().to_vec();
    longer.push(0);
    assert_eq!(a.open(&envelope, &longer).unwrap_err(), OpenError::Rejected);
}

#[test]
fn swapped_or_relabelled_recipient_entries_are_rejected() {
    let a = DeviceSecret::generate();
    let b = DeviceSecret::generate();
    let envelope = a
        .seal(b"for both", [a.public_key(), b.public_key()], &aad())
        .unwrap();
    let first = HEADER_LEN;
    let second = HEADER_LEN + ENTRY_LEN;

    // Swap the two wrapped keys but keep the ids: each device finds the other's key.
    let mut swapped = envelope.clone();
    let (x, y) = (
        envelope[first + DEVICE_ID_LEN..first + ENTRY_LEN].to_vec(),
        envelope[second + DEVICE_ID_LEN..second + ENTRY_LEN].to_vec(),
    );
    swapped[first + DEVICE_ID_LEN..first + ENTRY_LEN].copy_from_slice(&y);
    swapped[second + DEVICE_ID_LEN..second + ENTRY_LEN].copy_from_slice(&x);
    assert_eq!(a.open(&swapped, &aad()).unwrap_err(), OpenError::Rejected);
    assert_eq!(b.open(&swapped, &aad()).unwrap_err(), OpenError::Rejected);

    // Swap whole entries: each key still unwraps, but the body's header binding fails.
    let mut reordered = envelope.clone();
    reordered[first..first + ENTRY_LEN].copy_from_slice(&envelope[second..second + ENTRY_LEN]);
    reordered[second..second + ENTRY_LEN].copy_from_slice(&envelope[first..first + ENTRY_LEN]);
    assert_eq!(a.open(&reordered, &aad()).unwrap_err(), OpenError::Rejected);

    // Claim another sender device.
    let mut relabelled = envelope.clone();
    relabelled[1..1 + DEVICE_ID_LEN].copy_from_slice(b.id().as_bytes());
    assert_eq!(
        b.open(&relabelled, &aad()).unwrap_err(),
        OpenError::Rejected
    );

    // Graft a third device's entry from another envelope of the same sender.
    let c = DeviceSecret::generate();
    let other = a.seal(b"other", [c.public_key()], &aad()).unwrap();
    let mut grafted = envelope[..HEADER_LEN].to_vec();
    grafted[HEADER_LEN - 1] = 3;
    grafted.extend_from_slice(&envelope[first..second + ENTRY_LEN]);
    grafted.extend_from_slice(&other[HEADER_LEN..HEADER_LEN + ENTRY_LEN]);
    grafted.extend_from_slice(&envelope[second + ENTRY_LEN..]);
    assert_eq!(c.open(&grafted, &aad()).unwrap_err(), OpenError::Rejected);
    assert_eq!(a.open(&grafted, &aad()).unwrap_err(), OpenError::Rejected);
}

#[test]
fn truncated_and_malformed_envelopes_fail_cleanly() {
    let a = DeviceSecret::generate();
    let envelope = a.seal(b"short", [a.public_key()], b"").unwrap();
    for len in 0..envelope.len() {
        let err = a.open(&envelope[..len], b"").unwrap_err();
        assert!(
            matches!(err, OpenError::Malformed | OpenError::Rejected),
            "{len}: {err:?}"
        );
    }
    let mut wrong_version = envelope.clone();
    wrong_version[0] = 2;
    assert_eq!(
        a.open(&wrong_version, b"").unwrap_err(),
        OpenError::Malformed
    );
    let mut no_recipients = envelope[..HEADER_LEN].to_vec();
    no_recipients[HEADER_LEN - 1] = 0;
    no_recipients.extend_from_slice(&[0; TAG_LEN]);
    assert_eq!(
        EnvelopeHeader::parse(&no_recipients).unwrap_err(),
        OpenError::Malformed
    );
    let mut too_many = envelope.clone();
    too_many[HEADER_LEN - 2..HEADER_LEN].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(a.open(&too_many, b"").unwrap_err(), OpenError::Malformed);
}

#[test]
fn keys_round_trip_and_name_themselves() {
    let a = DeviceSecret::generate();
    let restored = DeviceSecret::from_bytes(&a.to_bytes()[..]).unwrap();
    assert_eq!(restored.public_key(), a.public_key());
    assert_eq!(restored.id(), a.id());
    let envelope = a.seal(b"kept", [a.public_key()], b"").unwrap();
    assert_eq!(&restored.open(&envelope, b"").unwrap().body[..], b"kept");

    let public = DevicePublicKey::from_bytes(a.public_key().as_bytes()).unwrap();
    assert_eq!(public.id(), a.id());
    assert_eq!(public.fingerprint(), a.public_key().fingerprint());
    assert!(public.fingerprint() != DeviceSecret::generate().public_key().fingerprint());

    let id = a.id();
    assert_eq!(id.to_string().len(), 32);
    assert_eq!(id.to_string().parse::<DeviceId>().unwrap(), id);
    assert_eq!("zz".parse::<DeviceId>().unwrap_err(), KeyError::Malformed);
    assert_eq!(
        id.to_string()
            .to_uppercase()
            .parse::<DeviceId>()
            .unwrap_err(),
        KeyError::Malformed
    );

    let shown = public.fingerprint().to_string();
    assert_eq!(shown.len(), 8 * 5 + 7, "{shown}");
    assert!(
        shown
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
    );
    // Debug output never contains the secret.
    let secret_hex: String = a.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert!(!format!("{a:?}").contains(&secret_hex));

    assert_eq!(
        DeviceSecret::from_bytes(&[1; 31]).unwrap_err(),
        KeyError::Malformed
    );
    assert_eq!(
        DevicePublicKey::from_bytes(&[1; 33]).unwrap_err(),
        KeyError::Malformed
    );
}

#[test]
fn the_device_id_and_fingerprint_derivation_is_fixed() {
    // Other implementations (the web client) derive the same values from a key.
    let public = DevicePublicKey::from_bytes(&hex(
        "430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c",
    ))
    .unwrap();
    let mut h = Sha256::new();
    h.update(b"chat/1 device key\0");
    h.update(public.as_bytes());
    let digest = h.finalize();
    assert_eq!(public.id().as_bytes(), &digest[..16]);
    let first = u32::from_be_bytes(digest[..4].try_into().unwrap()) % 100_000;
    assert!(
        public
            .fingerprint()
            .to_string()
            .starts_with(&format!("{first:05} "))
    );
}

#[test]
fn low_order_public_keys_are_refused() {
    // u = 0 and u = 1 are points of small order; so is this order-8 point.
    for key in [
        [0u8; 32].to_vec(),
        {
            let mut k = [0u8; 32];
            k[0] = 1;
            k.to_vec()
        },
        hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ] {
        assert_eq!(
            DevicePublicKey::from_bytes(&key).unwrap_err(),
            KeyError::LowOrder
        );
    }
}

#[test]
fn message_aad_layout() {
    let aad = message_aad(0x0102, 0x0304, &[0xaa; 16]);
    assert_eq!(&aad[..15], b"chat/1 message\0");
    assert_eq!(&aad[15..23], &0x0102u64.to_be_bytes());
    assert_eq!(&aad[23..31], &0x0304u64.to_be_bytes());
    assert_eq!(&aad[31..], &[0xaa; 16]);
}

/// AES-256-GCM known answers from McGrew and Viega, "The Galois/Counter Mode of
/// Operation", test cases 13, 14 and 16 (the 256-bit key cases NIST SP 800-38D uses),
/// through the same key construction the envelope body uses.
#[test]
fn aes_256_gcm_known_answers() {
    struct Case {
        key: &'static str,
        iv: &'static str,
        aad: &'static str,
        pt: &'static str,
        ct: &'static str,
        tag: &'static str,
    }
    let cases = [
        Case {
            key: "0000000000000000000000000000000000000000000000000000000000000000",
            iv: "000000000000000000000000",
            aad: "",
            pt: "",
            ct: "",
            tag: "530f8afbc74536b9a963b4f1c4cb738b",
        },
        Case {
            key: "0000000000000000000000000000000000000000000000000000000000000000",
            iv: "000000000000000000000000",
            aad: "",
            pt: "00000000000000000000000000000000",
            ct: "cea7403d4d606b6e074ec5d3baf39d18",
            tag: "d0d1c8a799996bf0265b98b5d48ab919",
        },
        Case {
            key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                 1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            tag: "76fc6ece0f4e1768cddf8853bb2d551b",
        },
    ];
    for case in cases {
        let key: [u8; 32] = hex(case.key).try_into().unwrap();
        let iv: [u8; 12] = hex(case.iv).try_into().unwrap();
        let sealing = body_key(&key);
        let mut buf = hex(case.pt);
        let tag = sealing
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(hex(case.aad)),
                &mut buf,
            )
            .unwrap();
        assert_eq!(buf, hex(case.ct));
        assert_eq!(tag.as_ref(), &hex(case.tag)[..]);
        buf.extend_from_slice(tag.as_ref());
        let plain = sealing
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(hex(case.aad)),
                &mut buf,
            )
            .unwrap();
        assert_eq!(plain, &hex(case.pt)[..]);
    }
}
