//! An independent DUKPT host, written for the tests from the standards' text rather than from
//! `src/dukpt`: TDES DUKPT per ANSI X9.24-1:2009 (IPEK, the non-reversible key generation
//! process, the Table A-1 variants and the data-key one-way function) and AES DUKPT per
//! X9.24-3:2017 (derivation data, the initial key, one intermediate derivation key per set
//! counter bit from the top). The properties compare `snapgate::dukpt` against it, so a
//! derivation that ignored the counter, the BDK or the key usage would disagree. The
//! reference itself is checked against published vectors below.

use aes::{Aes128, Aes256};
use cipher::generic_array::GenericArray;
use cipher::{BlockEncrypt, KeyInit};
use des::{Des, TdesEde2};

fn des(key: &[u8], block: [u8; 8]) -> [u8; 8] {
    let mut b = GenericArray::from(block);
    Des::new_from_slice(key).unwrap().encrypt_block(&mut b);
    b.into()
}

fn tdes(key: &[u8; 16], block: [u8; 8]) -> [u8; 8] {
    let mut b = GenericArray::from(block);
    TdesEde2::new_from_slice(key).unwrap().encrypt_block(&mut b);
    b.into()
}

fn aes(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    let mut b = GenericArray::from(block);
    match key.len() {
        16 => Aes128::new_from_slice(key).unwrap().encrypt_block(&mut b),
        32 => Aes256::new_from_slice(key).unwrap().encrypt_block(&mut b),
        n => panic!("no AES key of {n} bytes"),
    }
    b.into()
}

fn xor8(a: [u8; 8], b: &[u8]) -> [u8; 8] {
    let mut o = a;
    for (x, y) in o.iter_mut().zip(b) {
        *x ^= y;
    }
    o
}

const KEY_MASK: [u8; 16] = [
    0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0, 0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0,
];

/// X9.24-1 A.6: the initial PIN entry device key from the BDK and the KSN (counter cleared).
pub fn tdes_ipek(bdk: &[u8; 16], ksn: &[u8; 10]) -> [u8; 16] {
    let mut reg: [u8; 8] = ksn[..8].try_into().unwrap();
    reg[7] &= 0xE0;
    let mut masked = *bdk;
    for (m, k) in masked.iter_mut().zip(KEY_MASK) {
        *m ^= k;
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&tdes(bdk, reg));
    out[8..].copy_from_slice(&tdes(&masked, reg));
    out
}

/// The non-reversible key generation process: Crypto Register-1 = `data`, the Key Register
/// = `key`; the new key is Crypto Register-1 then Crypto Register-2.
fn nrkgp(key: &[u8; 16], data: [u8; 8]) -> [u8; 16] {
    let r2 = xor8(des(&key[..8], xor8(data, &key[8..])), &key[8..]);
    let mut k = *key;
    for (m, x) in k.iter_mut().zip(KEY_MASK) {
        *m ^= x;
    }
    let r1 = xor8(des(&k[..8], xor8(data, &k[8..])), &k[8..]);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&r1);
    out[8..].copy_from_slice(&r2);
    out
}

/// The transaction key for `ksn`: from the IPEK, one step per set counter bit, leftmost first.
pub fn tdes_transaction_key(bdk: &[u8; 16], ksn: &[u8; 10]) -> [u8; 16] {
    let mut key = tdes_ipek(bdk, ksn);
    let reg = u64::from_be_bytes(ksn[2..].try_into().unwrap());
    let counter = reg & 0x1F_FFFF;
    let mut r = reg & !0x1F_FFFF;
    for bit in (0..21).rev() {
        let m = 1u64 << bit;
        if counter & m != 0 {
            r |= m;
            key = nrkgp(&key, r.to_be_bytes());
        }
    }
    key
}

/// Table A-1: the byte (of each half) each variant inverts: PIN, MAC request, MAC response,
/// data request, data response.
pub fn tdes_variant_byte(v: snapgate::dukpt::TdesVariant) -> usize {
    use snapgate::dukpt::TdesVariant::*;
    match v {
        Pin => 7,
        MacRequest => 6,
        MacResponse => 4,
        DataRequest => 5,
        DataResponse => 3,
    }
}

pub fn tdes_working_key(
    bdk: &[u8; 16],
    ksn: &[u8; 10],
    v: snapgate::dukpt::TdesVariant,
    owf: bool,
) -> [u8; 16] {
    use snapgate::dukpt::TdesVariant::*;
    let mut k = tdes_transaction_key(bdk, ksn);
    let i = tdes_variant_byte(v);
    k[i] ^= 0xFF;
    k[i + 8] ^= 0xFF;
    if owf && matches!(v, DataRequest | DataResponse) {
        // The data key: the variant key encrypts each of its own halves.
        let left = tdes(&k, k[..8].try_into().unwrap());
        let right = tdes(&k, k[8..].try_into().unwrap());
        k[..8].copy_from_slice(&left);
        k[8..].copy_from_slice(&right);
    }
    k
}

/// X9.24-3 key usage indicators.
pub fn aes_usage_code(u: snapgate::dukpt::AesUsage) -> u16 {
    use snapgate::dukpt::AesUsage::*;
    match u {
        Pin => 0x1000,
        MacGenerate => 0x2000,
        MacVerify => 0x2001,
        DataEncrypt => 0x3000,
        DataDecrypt => 0x3001,
        DataBoth => 0x3002,
    }
}

const KEY_DERIVATION: u16 = 0x8000;
const INITIAL_KEY: u16 = 0x8001;

/// (algorithm indicator, length in bits) of an AES key of `bytes` bytes.
fn aes_type(bytes: usize) -> (u16, u16) {
    match bytes {
        16 => (0x0002, 128),
        32 => (0x0004, 256),
        n => panic!("no AES key type of {n} bytes"),
    }
}

fn derivation_data(usage: u16, key_bytes: usize, ikid: &[u8; 8], counter: u32) -> [u8; 16] {
    let (alg, bits) = aes_type(key_bytes);
    let mut d = [0u8; 16];
    d[0] = 0x01; // version
    d[1] = 0x01; // key block counter
    d[2..4].copy_from_slice(&usage.to_be_bytes());
    d[4..6].copy_from_slice(&alg.to_be_bytes());
    d[6..8].copy_from_slice(&bits.to_be_bytes());
    if usage == INITIAL_KEY {
        d[8..].copy_from_slice(ikid);
    } else {
        d[8..12].copy_from_slice(&ikid[4..]);
        d[12..].copy_from_slice(&counter.to_be_bytes());
    }
    d
}

fn derive(key: &[u8], out_bytes: usize, mut data: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 1u8;
    while out.len() < out_bytes {
        data[1] = i;
        out.extend_from_slice(&aes(key, data));
        i += 1;
    }
    out.truncate(out_bytes);
    out
}

pub fn aes_initial_key(bdk: &[u8], ikid: &[u8; 8]) -> Vec<u8> {
    derive(
        bdk,
        bdk.len(),
        derivation_data(INITIAL_KEY, bdk.len(), ikid, 0),
    )
}

/// The host's working key for a 12-byte AES KSN (initial key id, then a 32-bit counter).
pub fn aes_working_key(bdk: &[u8], ksn: &[u8; 12], usage: u16, key_bytes: usize) -> Vec<u8> {
    let ikid: [u8; 8] = ksn[..8].try_into().unwrap();
    let counter = u32::from_be_bytes(ksn[8..].try_into().unwrap());
    let mut key = aes_initial_key(bdk, &ikid);
    let mut working = 0u32;
    for bit in (0..32).rev() {
        let m = 1u32 << bit;
        if counter & m != 0 {
            working |= m;
            let d = derivation_data(KEY_DERIVATION, bdk.len(), &ikid, working);
            key = derive(&key, bdk.len(), d);
        }
    }
    derive(
        &key,
        key_bytes,
        derivation_data(usage, key_bytes, &ikid, counter),
    )
}

/// CBC with an all-zero IV over zero-padded data (at least one block), as terminals send
/// track data: `block` encrypts one block.
pub fn cbc_encrypt(bs: usize, block: impl Fn(&[u8]) -> Vec<u8>, plain: &[u8]) -> Vec<u8> {
    let n = plain.len().div_ceil(bs).max(1) * bs;
    let mut data = plain.to_vec();
    data.resize(n, 0);
    let mut prev = vec![0u8; bs];
    let mut out = Vec::with_capacity(n);
    for chunk in data.chunks(bs) {
        let x: Vec<u8> = chunk.iter().zip(&prev).map(|(a, b)| a ^ b).collect();
        prev = block(&x);
        out.extend_from_slice(&prev);
    }
    out
}

pub fn tdes_block(key: [u8; 16]) -> impl Fn(&[u8]) -> Vec<u8> {
    move |b| tdes(&key, b.try_into().unwrap()).to_vec()
}

pub fn aes_block(key: Vec<u8>) -> impl Fn(&[u8]) -> Vec<u8> {
    move |b| aes(&key, b.try_into().unwrap()).to_vec()
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn the_tdes_reference_gives_the_x9_24_1_sample_keys() {
    // X9.24-1:2009 A.4: BDK 0123456789ABCDEFFEDCBA9876543210, IKSN FFFF9876543210E00000.
    let bdk: [u8; 16] = unhex("0123456789ABCDEFFEDCBA9876543210");
    let ksn = |c: &str| unhex::<10>(&format!("FFFF9876543210E{c}"));
    assert_eq!(
        tdes_ipek(&bdk, &ksn("00000")),
        unhex::<16>("6AC292FAA1315B4D858AB3A3D7D5933A")
    );
    for (c, key) in [
        ("00001", "042666B49184CFA368DE9628D0397BC9"),
        ("00002", "C46551CEF9FD24B0AA9AD834130D3BC7"),
        ("00015", "E161D1956A61F6D2F37AFD7F9CC3699A"),
    ] {
        assert_eq!(tdes_transaction_key(&bdk, &ksn(c)), unhex::<16>(key), "{c}");
    }
}

#[test]
fn the_aes_reference_gives_the_x9_24_3_sample_initial_key() {
    // X9.24-3:2017 B.1: AES-128 BDK FEDCBA9876543210F1F1F1F1F1F1F1F1, IK ID 1234567890123456.
    let bdk: [u8; 16] = unhex("FEDCBA9876543210F1F1F1F1F1F1F1F1");
    let ikid: [u8; 8] = unhex("1234567890123456");
    assert_eq!(
        aes_initial_key(&bdk, &ikid),
        unhex::<16>("1273671EA26AC29AFA4D1084127652A1").to_vec()
    );
}
