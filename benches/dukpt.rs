//! DUKPT host path: derive the working key from BDK + KSN, then CBC-decrypt the ciphertext
//! (`dukpt::working_key` + `dukpt::decrypt_cbc`), as RegisterTerminal and track decryption do.
//! Cost grows with the number of one-bits in the KSN counter, so each scheme is measured with
//! a typical counter and with the worst case (TDES 10 one-bits, AES 16 one-bits).
//! Targets: TDES <= 10 us, AES <= 3 us per derive+decrypt.
//! `tdes_ipek_cache/*`: the TDES working key alone (EVO's Magensa track key), uncached
//! (`working_key`) against `CachedBdk::working_key` with the device's IPEK cached, for one
//! device and cycling over 10,000 devices (all cached), and derive+decrypt through the cache.

use criterion::{criterion_group, criterion_main, Criterion};
use snapgate::dukpt::{
    decrypt_cbc, encrypt_cbc, working_key, AesKeyType, AesUsage, Bdk, CachedBdk, KeyUsage, Ksn,
    Scheme, TdesVariant, DEFAULT_IPEK_CACHE_ENTRIES,
};
use std::hint::black_box;

const ANSI_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";
const AES_BDK128: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
const AES_BDK256: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1";
/// EVO's Magensa sample: a track 2 encrypted under the PIN variant, KSN counter 0x21.
const MAGENSA_CT: &str =
    "87936F09AE06386BA4CD81ADFF7DF0FA5AC1B28EF9F7B7075E415545F9B9095C0AC5FA12B9905325";
const MAGENSA_KSN: &str = "9010010B0C2472000021";
const TRACK: &[u8] = b";5454545454545454=13121010134988000010?";

fn usage(key_type: AesKeyType) -> KeyUsage {
    KeyUsage {
        tdes_variant: TdesVariant::Pin,
        tdes_data_owf: false,
        aes_usage: AesUsage::DataEncrypt,
        aes_key_type: key_type,
    }
}

/// One case: BDK, KSN, usage, and a ciphertext made under the derived key.
fn case(
    scheme: Scheme,
    bdk: &str,
    ksn: &str,
    key_type: AesKeyType,
) -> (Bdk, Ksn, KeyUsage, Vec<u8>) {
    let bdk = Bdk::from_hex(scheme, bdk).unwrap();
    let ksn = Ksn::parse_hex(ksn).unwrap();
    let usage = usage(key_type);
    let ct = encrypt_cbc(&working_key(&bdk, &ksn, &usage).unwrap(), TRACK);
    (bdk, ksn, usage, ct)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dukpt");
    let magensa = case(Scheme::Tdes, ANSI_BDK, MAGENSA_KSN, AesKeyType::Aes128);
    assert_eq!(
        magensa.3,
        hex::decode(MAGENSA_CT).unwrap(),
        "Magensa vector"
    );
    let cases = [
        ("tdes/magensa_ctr21", magensa),
        (
            "tdes/worst_10_bits",
            case(
                Scheme::Tdes,
                ANSI_BDK,
                "FFFF9876543210EFF800",
                AesKeyType::Aes128,
            ),
        ),
        (
            "aes128/ctr21",
            case(
                Scheme::Aes128,
                AES_BDK128,
                "123456789012345600000021",
                AesKeyType::Aes128,
            ),
        ),
        (
            "aes128/worst_16_bits",
            case(
                Scheme::Aes128,
                AES_BDK128,
                "1234567890123456FFFF0000",
                AesKeyType::Aes128,
            ),
        ),
        (
            "aes256/ctr21",
            case(
                Scheme::Aes256,
                AES_BDK256,
                "123456789012345600000021",
                AesKeyType::Aes256,
            ),
        ),
        (
            "aes256/worst_16_bits",
            case(
                Scheme::Aes256,
                AES_BDK256,
                "1234567890123456FFFF0000",
                AesKeyType::Aes256,
            ),
        ),
    ];
    for (name, (bdk, ksn, usage, ct)) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let key = working_key(black_box(bdk), black_box(ksn), usage).unwrap();
                decrypt_cbc(&key, black_box(ct)).unwrap()
            })
        });
    }
    g.finish();
}

fn bench_ipek_cache(c: &mut Criterion) {
    let mut g = c.benchmark_group("tdes_ipek_cache");
    let (bdk, ksn, usage, ct) = case(Scheme::Tdes, ANSI_BDK, MAGENSA_KSN, AesKeyType::Aes128);
    let cached = CachedBdk::new(bdk.clone(), DEFAULT_IPEK_CACHE_ENTRIES);
    assert_eq!(
        cached.working_key(&ksn, &usage).unwrap().as_bytes(),
        working_key(&bdk, &ksn, &usage).unwrap().as_bytes()
    );
    g.bench_function("working_key/uncached", |b| {
        b.iter(|| working_key(black_box(&bdk), black_box(&ksn), &usage).unwrap())
    });
    g.bench_function("working_key/cached", |b| {
        b.iter(|| cached.working_key(black_box(&ksn), &usage).unwrap())
    });
    // 10,000 devices of the key set (TRSM ids in KSN bytes 5..=7), counter 0x21, all cached.
    let Ksn::Tdes(base) = ksn else { unreachable!() };
    let devices: Vec<Ksn> = (0..10_000u32)
        .map(|d| {
            let mut k = base;
            let id = (d << 5).to_be_bytes();
            k[5] = id[1];
            k[6] = id[2];
            k[7] = id[3];
            Ksn::Tdes(k).with_counter(0x21)
        })
        .collect();
    for k in &devices {
        cached.working_key(k, &usage).unwrap();
    }
    let mut i = 0;
    g.bench_function("working_key/cached_10000_devices", |b| {
        b.iter(|| {
            i = (i + 1) % devices.len();
            cached.working_key(black_box(&devices[i]), &usage).unwrap()
        })
    });
    g.bench_function("magensa_derive_decrypt/cached", |b| {
        b.iter(|| {
            let key = cached.working_key(black_box(&ksn), &usage).unwrap();
            decrypt_cbc(&key, black_box(&ct)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_ipek_cache);
criterion_main!(benches);
