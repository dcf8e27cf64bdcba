//! End-to-end encryption costs: the AES-256-GCM body layer, sealing for 1, 10 and 100
//! recipient devices, and opening. Numbers and how to compare them with OpenSSL are in
//! BENCHMARKS.md.

use std::hint::black_box;

use chat_crypto::e2e::{DevicePublicKey, DeviceSecret, message_aad};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BODY: usize = 16 * 1024;

fn body_layer(c: &mut Criterion) {
    eprintln!("{}", chat_crypto::backend());
    // The body is what scales with message size: sealing for one device with and
    // without a 16 KiB body isolates its AES-256-GCM cost from the fixed HPKE cost.
    let sender = DeviceSecret::generate();
    let me = DeviceSecret::generate();
    let aad = message_aad(1, 1, &[0; 16]);
    let body = vec![0x61u8; BODY];
    let mut group = c.benchmark_group("seal_body");
    for len in [0usize, BODY] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, &len| {
            b.iter(|| {
                sender
                    .seal(black_box(&body[..len]), [me.public_key()], &aad)
                    .unwrap()
            })
        });
    }
    group.finish();

    // The primitive alone, as OpenSSL's `speed -evp aes-256-gcm` measures it.
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7; 32]).unwrap(),
    );
    let mut group = c.benchmark_group("aes_256_gcm");
    group.throughput(Throughput::Bytes(BODY as u64));
    let mut buf = vec![0x61u8; BODY];
    group.bench_function("16384", |b| {
        b.iter(|| {
            key.seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key([0; 12]),
                ring::aead::Aad::empty(),
                black_box(&mut buf[..]),
            )
            .unwrap()
        })
    });
    group.finish();
}

fn recipients(c: &mut Criterion) {
    let sender = DeviceSecret::generate();
    let devices: Vec<DeviceSecret> = (0..100).map(|_| DeviceSecret::generate()).collect();
    let keys: Vec<&DevicePublicKey> = devices.iter().map(|d| d.public_key()).collect();
    let aad = message_aad(1, 1, &[0; 16]);
    let body = vec![0x61u8; 1024];
    let mut group = c.benchmark_group("seal_1KiB");
    for n in [1usize, 10, 100] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                sender
                    .seal(black_box(&body), keys[..n].iter().copied(), &aad)
                    .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("open");
    for n in [1usize, 100] {
        let envelope = sender.seal(&body, keys[..n].iter().copied(), &aad).unwrap();
        // The last device's entry: the search through the recipient list is included.
        let reader = &devices[n - 1];
        group.bench_with_input(BenchmarkId::new("1KiB_of_recipients", n), &n, |b, _| {
            b.iter(|| reader.open(black_box(&envelope), &aad).unwrap())
        });
    }
    let big = sender
        .seal(&vec![0x61u8; BODY], [devices[0].public_key()], &aad)
        .unwrap();
    group.throughput(Throughput::Bytes(BODY as u64));
    group.bench_function("16KiB", |b| {
        b.iter(|| devices[0].open(black_box(&big), &aad).unwrap())
    });
    group.finish();
}

criterion_group!(benches, body_layer, recipients);
criterion_main!(benches);
