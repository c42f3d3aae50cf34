//! The IPEK cache (`CachedBdk`): bit-identical to `working_key` on the published vectors and
//! over many devices, counters and usages (through evictions), bounded with first-in-first-out
//! eviction that overwrites the evicted IPEK, off at 0, per BDK, AES untouched, errors unchanged.

use super::tdes::{TDES_INITIAL_SEQUENCE, TDES_ROLLOVER_SEQUENCE};
use super::*;
use crate::dukpt::ipek_cache::IpekCache;
use crate::dukpt::tdes;

const OTHER_TDES_BDK: &str = "FEDCBA98765432100123456789ABCDEF";

fn ansi() -> Bdk {
    Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap()
}

/// Every TDES usage a key file can name.
fn tdes_usages() -> Vec<KeyUsage> {
    let mut v = Vec::new();
    for variant in [
        TdesVariant::Pin,
        TdesVariant::MacRequest,
        TdesVariant::MacResponse,
        TdesVariant::DataRequest,
        TdesVariant::DataResponse,
    ] {
        for owf in [false, true] {
            v.push(usage(variant, owf));
        }
    }
    v
}

/// Cached and uncached agree on `ksn` (key bytes, or the same error).
fn assert_same(cached: &CachedBdk, ksn: &Ksn, u: &KeyUsage) {
    let plain = working_key(cached.bdk(), ksn, u);
    let fast = cached.working_key(ksn, u);
    match (plain, fast) {
        (Ok(a), Ok(b)) => assert_eq!(a.as_bytes(), b.as_bytes(), "{ksn} {u:?}"),
        (Err(a), Err(b)) => assert_eq!(a, b, "{ksn} {u:?}"),
        (a, b) => panic!("{ksn} {u:?}: uncached {:?}, cached {:?}", a.err(), b.err()),
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn ksn(&mut self) -> Ksn {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.next().to_be_bytes());
        b[8..].copy_from_slice(&self.next().to_be_bytes()[..2]);
        Ksn::Tdes(b)
    }
}

#[test]
fn cached_keys_match_the_ansi_sequences_and_their_pin_blocks() {
    // Room for 15 or more per shard: two devices can never evict each other, whichever shards
    // the per-process hasher puts them in (with 16 entries, one per shard, they shared a shard
    // in 1 run of 16 and the count below came out at 1: a CI dry run caught it).
    let cached = CachedBdk::new(ansi(), 1000);
    let pin = usage(TdesVariant::Pin, false);
    let pin_block = h(ANSI_PIN_BLOCK);
    for round in 0..2 {
        for (i, (_, pin_want)) in TDES_INITIAL_SEQUENCE.iter().enumerate() {
            let ksn = Ksn::parse_hex(ANSI_IKSN)
                .unwrap()
                .with_counter(i as u32 + 1);
            let key = cached.working_key(&ksn, &pin).unwrap();
            assert_eq!(
                hex::encode_upper(encrypt_cbc(&key, &pin_block)),
                *pin_want,
                "round {round} counter {}",
                i + 1
            );
            assert_same(&cached, &ksn, &pin);
        }
        for (ksn, _, pin_want) in TDES_ROLLOVER_SEQUENCE {
            let ksn = Ksn::parse_hex(ksn).unwrap();
            let key = cached.working_key(&ksn, &pin).unwrap();
            assert_eq!(hex::encode_upper(encrypt_cbc(&key, &pin_block)), pin_want);
        }
    }
    // One device: one IPEK, the published one.
    assert_eq!(cached.cached_ipeks(), 1);
    let want: [u8; 16] = h(ANSI_IPEK).try_into().unwrap();
    assert!(cached.ipek_cache().unwrap().holds_bytes(&want));
    // EVO's Magensa sample through the cache, twice (miss, then hit).
    let magensa = Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap();
    for _ in 0..2 {
        let key = cached.working_key(&magensa, &pin).unwrap();
        let plain = decrypt_cbc(&key, &h(EVO_MAGENSA_CT)).unwrap();
        assert_eq!(strip_zero_padding(&plain), EVO_MAGENSA_TRACK);
    }
    assert_eq!(cached.cached_ipeks(), 2);
}

#[test]
fn cached_keys_match_uncached_over_many_devices_counters_and_usages() {
    let usages = tdes_usages();
    // A cache far smaller than the devices (evicting all along), one larger, one off.
    for entries in [3, 64, 10_000, 0] {
        let cached = CachedBdk::new(ansi(), entries);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ entries as u64);
        let devices: Vec<Ksn> = (0..150).map(|_| rng.ksn()).collect();
        for pass in 0..3 {
            for (d, dev) in devices.iter().enumerate() {
                let counter = match pass {
                    0 => 1,
                    1 => rng.next() as u32 & 0x1F_FFFF,
                    _ => 0x1F_FFFF,
                };
                let u = &usages[(d + pass) % usages.len()];
                assert_same(&cached, &dev.with_counter(counter), u);
            }
        }
        assert!(cached.cached_ipeks() <= entries, "{entries}");
        assert_eq!(cached.ipek_cache_capacity(), entries);
        if entries == 10_000 {
            assert_eq!(cached.cached_ipeks(), devices.len());
        }
    }
}

#[test]
fn disabled_cache_keeps_nothing_and_derives_the_same_keys() {
    let cached = CachedBdk::new(ansi(), 0);
    assert!(cached.ipek_cache().is_none());
    for u in tdes_usages() {
        assert_same(&cached, &Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap(), &u);
    }
    assert_eq!(cached.cached_ipeks(), 0);
    assert_eq!(cached.ipek_cache_capacity(), 0);
}

#[test]
fn two_bdks_with_the_same_ksn_get_their_own_keys() {
    let a = CachedBdk::new(ansi(), 64);
    let b = CachedBdk::new(Bdk::from_hex(Scheme::Tdes, OTHER_TDES_BDK).unwrap(), 64);
    let pin = usage(TdesVariant::Pin, false);
    let ksn = Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap();
    for _ in 0..2 {
        // Both caches warm after the first round: each still answers with its own BDK's key.
        let ka = a.working_key(&ksn, &pin).unwrap();
        let kb = b.working_key(&ksn, &pin).unwrap();
        assert_ne!(ka.as_bytes(), kb.as_bytes());
        assert_eq!(
            ka.as_bytes(),
            working_key(&ansi(), &ksn, &pin).unwrap().as_bytes()
        );
        assert_eq!(
            kb.as_bytes(),
            working_key(b.bdk(), &ksn, &pin).unwrap().as_bytes()
        );
    }
    assert_eq!((a.cached_ipeks(), b.cached_ipeks()), (1, 1));
}

#[test]
fn a_full_shard_evicts_its_oldest_entry_and_overwrites_its_ipek() {
    let bdk = ansi_bdk();
    // One shard of three: first in, first out.
    let cache = IpekCache::with_shards(3, 1);
    let mut rng = Rng(7);
    let devs: Vec<[u8; 10]> = (0..5)
        .map(|_| match rng.ksn() {
            Ksn::Tdes(b) => b,
            Ksn::Aes(_) => unreachable!(),
        })
        .collect();
    let ipek = |k: &[u8; 10]| tdes::ipek(&bdk, k);
    for d in &devs[..3] {
        cache.get_or_derive(d, || ipek(d));
    }
    assert_eq!(cache.len(), 3);
    cache.get_or_derive(&devs[3], || ipek(&devs[3]));
    assert_eq!(cache.len(), 3);
    assert!(!cache.contains(&devs[0]), "the oldest goes first");
    assert!(
        !cache.holds_bytes(&ipek(&devs[0])),
        "its IPEK is overwritten"
    );
    assert!(devs[1..4].iter().all(|d| cache.contains(d)));
    // A hit does not reorder (FIFO, not LRU): devs[1] is next out.
    cache.get_or_derive(&devs[1], || panic!("cached: no derivation"));
    cache.get_or_derive(&devs[4], || ipek(&devs[4]));
    assert!(!cache.contains(&devs[1]) && !cache.holds_bytes(&ipek(&devs[1])));
    assert!(devs[2..5].iter().all(|d| cache.contains(d)));
    // Every answer is still the right IPEK.
    for d in &devs {
        assert_eq!(*cache.get_or_derive(d, || ipek(d)), *ipek(d));
    }
    assert_eq!(cache.len(), 3);
}

#[test]
fn the_bound_is_exact_across_shards() {
    for (entries, shards) in [(1, 1), (5, 3), (100, 64), (65, 64), (64, 64)] {
        let cache = IpekCache::with_shards(entries, shards);
        let mut rng = Rng(entries as u64 * 31 + 1);
        let bdk = ansi_bdk();
        for _ in 0..entries * 8 + 50 {
            let Ksn::Tdes(k) = rng.ksn() else {
                unreachable!()
            };
            cache.get_or_derive(&k, || tdes::ipek(&bdk, &k));
            assert!(cache.len() <= entries, "{entries}/{shards}");
        }
        assert_eq!(cache.capacity(), entries);
    }
    assert_eq!(IpekCache::new(65_536).capacity(), 65_536);
}

#[test]
fn a_cached_ipek_is_what_the_key_comes_from() {
    // The cache is consulted: a planted IPEK (counter 0) is returned as the transaction key.
    let cache = IpekCache::new(8);
    let ksn = tksn("FFFF9876543210E00001");
    let planted = Zeroizing::new([0x42u8; 16]);
    cache.get_or_derive(&ksn, || planted.clone());
    let got = cache.get_or_derive(&tksn("FFFF9876543210E1FFFF"), || panic!("same device"));
    assert_eq!(*got, *planted);
}

#[test]
fn errors_are_unchanged_and_cache_nothing() {
    let tdes_bdk = CachedBdk::new(ansi(), 16);
    let aes_bdk = CachedBdk::new(bdk128(), 16);
    let u = usage(TdesVariant::Pin, false);
    assert_eq!(
        tdes_bdk
            .working_key(&Ksn::parse_hex(ANSI_IKSN).unwrap(), &u)
            .unwrap_err(),
        DukptError::ZeroCounter
    );
    assert_eq!(
        tdes_bdk.working_key(&Ksn::Aes(aksn(1)), &u).unwrap_err(),
        DukptError::SchemeMismatch
    );
    assert_eq!(
        aes_bdk
            .working_key(&Ksn::parse_hex("FFFF9876543210E00001").unwrap(), &u)
            .unwrap_err(),
        DukptError::SchemeMismatch
    );
    assert_eq!(tdes_bdk.cached_ipeks(), 0);
}

#[test]
fn aes_bdks_are_not_cached_and_derive_as_before() {
    for bdk in [bdk128(), bdk256()] {
        let cached = CachedBdk::new(bdk.clone(), 1024);
        assert!(cached.ipek_cache().is_none());
        for counter in [1, 0x21, 0xFFFF_0000] {
            for key_type in [AesKeyType::Aes128, AesKeyType::Aes256] {
                let u = KeyUsage {
                    aes_key_type: key_type,
                    ..usage(TdesVariant::Pin, false)
                };
                assert_same(&cached, &Ksn::Aes(aksn(counter)), &u);
            }
        }
        assert_eq!(cached.cached_ipeks(), 0);
    }
}

#[test]
fn two_threads_share_one_cache_and_agree_with_the_plain_path() {
    let cached = CachedBdk::new(ansi(), 32);
    let pin = usage(TdesVariant::Pin, false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let cached = &cached;
            s.spawn(move || {
                let mut rng = Rng(t + 11);
                let devices: Vec<Ksn> = (0..40).map(|_| rng.ksn()).collect();
                for i in 0..400 {
                    let ksn = devices[i % devices.len()].with_counter(i as u32 + 1);
                    assert_same(cached, &ksn, &pin);
                }
            });
        }
    });
    assert!(cached.cached_ipeks() <= 32);
}

#[test]
fn debug_shows_no_key_material() {
    let cached = CachedBdk::new(ansi(), 16);
    let ksn = Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap();
    cached
        .working_key(&ksn, &usage(TdesVariant::Pin, false))
        .unwrap();
    let ipek = tdes::ipek(&ansi_bdk(), &tksn(EVO_MAGENSA_KSN));
    let dbg = format!("{cached:?}");
    assert!(dbg.contains("1 of 16"), "{dbg}");
    for secret in [
        hex::encode_upper(*ipek),
        hex::encode(*ipek),
        ANSI_BDK.into(),
    ] {
        assert!(
            !dbg.to_uppercase().contains(&secret.to_uppercase()),
            "{dbg}"
        );
    }
    // Nor the bytes as Rust's array Debug would print them.
    assert!(!dbg.contains(&format!("{:?}", &ipek[..4])), "{dbg}");
}
