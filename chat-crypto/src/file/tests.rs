use super::*;

fn key() -> FileKey {
    FileKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).expect("key")
}

fn plain(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn open_all(
    key: FileKey,
    sealed: &[u8],
    digest: [u8; 32],
    piece: usize,
) -> Result<Vec<u8>, FileError> {
    let mut opener = FileOpener::new(key, sealed.len() as u64, digest)?;
    let mut out = Vec::new();
    for part in sealed.chunks(piece.max(1)) {
        out.extend(opener.push(part)?);
    }
    out.extend(opener.finish()?);
    Ok(out)
}

const SIZES: [usize; 7] = [
    0,
    1,
    FILE_CHUNK - 1,
    FILE_CHUNK,
    FILE_CHUNK + 1,
    3 * FILE_CHUNK,
    200_000,
];

#[test]
fn files_of_every_shape_round_trip_in_any_pieces() {
    for n in SIZES {
        let data = plain(n);
        let (sealed, digest) = seal_file(&key(), &data);
        assert_eq!(sealed.len() as u64, sealed_len(n as u64), "size {n}");
        assert_eq!(plain_len(sealed.len() as u64), Ok(n as u64), "size {n}");
        for piece in [1000, SEALED_CHUNK, 7919, usize::MAX] {
            let piece = piece.min(sealed.len().max(1));
            assert_eq!(
                open_all(key(), &sealed, digest, piece).expect("opens"),
                data,
                "size {n}"
            );
        }
    }
}

#[test]
fn any_range_of_the_sealed_file_is_computed_from_the_plaintext() {
    let data = plain(3 * FILE_CHUNK + 500);
    let (sealed, _) = seal_file(&key(), &data);
    let read = |start: u64, buf: &mut [u8]| {
        let s = start as usize;
        buf.copy_from_slice(&data[s..s + buf.len()]);
        Ok(())
    };
    for (offset, max) in [
        (0, 10),
        (5, SEALED_CHUNK),
        (SEALED_CHUNK - 3, 10),
        (SEALED_CHUNK * 3, 1 << 20),
        (100, 4 << 20),
    ] {
        let range =
            sealed_range(&key(), data.len() as u64, offset as u64, max, read).expect("range");
        let end = sealed.len().min(offset + max);
        assert_eq!(range, sealed[offset..end], "offset {offset}");
    }
}

#[test]
fn a_changed_reordered_cut_or_extended_file_does_not_open() {
    let data = plain(3 * FILE_CHUNK + 10);
    let (sealed, digest) = seal_file(&key(), &data);

    let mut flipped = sealed.clone();
    flipped[SEALED_CHUNK + 5] ^= 1;
    assert_eq!(
        open_all(key(), &flipped, digest, 4096),
        Err(FileError::Chunk(1))
    );

    let mut swapped = sealed.clone();
    let (a, b) = swapped.split_at_mut(SEALED_CHUNK);
    a.swap_with_slice(&mut b[..SEALED_CHUNK]);
    assert_eq!(
        open_all(key(), &swapped, digest, 4096),
        Err(FileError::Chunk(0))
    );

    // Cut at a chunk boundary: the new last chunk was not sealed as the last.
    let cut = &sealed[..2 * SEALED_CHUNK];
    assert_eq!(open_all(key(), cut, digest, 4096), Err(FileError::Chunk(1)));

    // Another file's final chunk appended.
    let (other, _) = seal_file(&FileKey::generate(), &plain(10));
    let mut longer = sealed.clone();
    longer.extend_from_slice(&other);
    assert!(open_all(key(), &longer, digest, 4096).is_err());

    // The right bytes under another key, or under a wrong digest.
    assert_eq!(
        open_all(FileKey::generate(), &sealed, digest, 4096),
        Err(FileError::Chunk(0))
    );
    assert_eq!(
        open_all(key(), &sealed, [0; 32], 4096),
        Err(FileError::Digest)
    );

    // More bytes than announced.
    let mut opener = FileOpener::new(key(), 100, digest).expect("a possible length");
    assert!(opener.push(&[0; 101]).is_err());
}

#[test]
fn impossible_sizes_are_refused() {
    for bad in [0, 1, 15, SEALED_CHUNK as u64 + 15] {
        assert_eq!(plain_len(bad), Err(FileError::Length(bad)), "{bad}");
    }
    assert_eq!(plain_len(16), Ok(0));
    assert_eq!(plain_len(SEALED_CHUNK as u64), Ok(FILE_CHUNK as u64));
    // A full chunk followed by an empty final one is not how sealing ends a file.
    assert!(plain_len(SEALED_CHUNK as u64 + 16).is_err());
    assert_eq!(FileKey::from_bytes(&[0; 31]).unwrap_err(), FileError::Key);
}

/// The vectors of `tests/data/file-interop.json` (PROTOCOL.md §5.3.1 quotes the
/// second); the web client's tests check the same file with WebCrypto.
#[test]
fn the_shared_vectors_hold() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/data/file-interop.json")).expect("json");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(doc["key"], hex(key().as_bytes()));
    let vectors = doc["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let n = v["plain_len"].as_u64().expect("length");
        let (sealed, digest) = seal_file(&key(), &plain(n as usize));
        assert_eq!(
            sealed.len() as u64,
            v["sealed_len"].as_u64().expect("sealed length")
        );
        assert_eq!(hex(&sealed[..16]), v["sealed_first_16"], "{n}");
        assert_eq!(hex(&digest), v["sealed_sha256"], "{n}");
        assert_eq!(
            open_all(key(), &sealed, digest, 5000).expect("opens"),
            plain(n as usize)
        );
    }
}
