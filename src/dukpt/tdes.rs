//! TDES DUKPT primitives (X9.24-1:2009 Annex A). Keys are 16-byte 2-key TDES keys.

use super::{TdesVariant, TDES_COUNTER_MASK};
use ::des::{Des, TdesEde2};
use cipher::generic_array::GenericArray;
use cipher::{BlockEncrypt, KeyInit};
use zeroize::{Zeroize, Zeroizing};

/// C0C0C0C000000000 applied to each half of a double-length key.
const KEY_MASK_HALF: u64 = 0xC0C0_C0C0_0000_0000;

fn tdes_encrypt_block(key: &[u8; 16], block: &mut [u8]) {
    TdesEde2::new(key.into()).encrypt_block(GenericArray::from_mut_slice(block));
}

fn des_encrypt(key: u64, data: u64) -> u64 {
    let mut k = key.to_be_bytes();
    let c = Des::new(&k.into());
    k.zeroize();
    let mut b = data.to_be_bytes();
    c.encrypt_block(GenericArray::from_mut_slice(&mut b));
    u64::from_be_bytes(b)
}

/// Non-reversible key generation process: new key from `key` and crypto register `reg`.
fn nrkgp(key: &mut [u8; 16], reg: u64) {
    let mut kl = u64::from_be_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ]);
    let mut kr = u64::from_be_bytes([
        key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
    ]);
    let mut right = des_encrypt(kl, reg ^ kr) ^ kr;
    kl ^= KEY_MASK_HALF;
    kr ^= KEY_MASK_HALF;
    let mut left = des_encrypt(kl, reg ^ kr) ^ kr;
    key[..8].copy_from_slice(&left.to_be_bytes());
    key[8..].copy_from_slice(&right.to_be_bytes());
    kl.zeroize();
    kr.zeroize();
    left.zeroize();
    right.zeroize();
}

/// Initial PIN encryption key (IPEK) from the BDK and any KSN of the device
/// (the counter bits are masked off).
pub fn ipek(bdk: &[u8; 16], ksn: &[u8; 10]) -> Zeroizing<[u8; 16]> {
    let mut iksn = [0u8; 8];
    iksn.copy_from_slice(&ksn[..8]);
    iksn[7] &= 0xE0;
    let mut out = Zeroizing::new([0u8; 16]);
    out[..8].copy_from_slice(&iksn);
    out[8..].copy_from_slice(&iksn);
    tdes_encrypt_block(bdk, &mut out[..8]);
    let mut masked = Zeroizing::new(*bdk);
    for i in [0, 1, 2, 3, 8, 9, 10, 11] {
        masked[i] ^= 0xC0;
    }
    tdes_encrypt_block(&masked, &mut out[8..]);
    out
}

/// Host-side transaction ("current") key for the KSN's counter. Works for any counter
/// (up to 0x1FFFFF); counter 0 returns the IPEK itself.
pub fn transaction_key(ipek: &[u8; 16], ksn: &[u8; 10]) -> Zeroizing<[u8; 16]> {
    let counter = u32::from_be_bytes([0, ksn[7], ksn[8], ksn[9]]) & TDES_COUNTER_MASK;
    let mut reg = u64::from_be_bytes([
        ksn[2], ksn[3], ksn[4], ksn[5], ksn[6], ksn[7], ksn[8], ksn[9],
    ]) & !u64::from(TDES_COUNTER_MASK);
    let mut key = Zeroizing::new(*ipek);
    let mut bit: u32 = 0x10_0000;
    while bit != 0 {
        if counter & bit != 0 {
            reg |= u64::from(bit);
            nrkgp(&mut key, reg);
        }
        bit >>= 1;
    }
    key
}

/// Apply a Table A-1 variant to a transaction key. With `data_owf` the data variants
/// (DataRequest/DataResponse) get the A.4.1 one-way function: the variant key encrypts
/// its own halves. `data_owf` is ignored for PIN and MAC variants.
pub fn variant_key(txn: &[u8; 16], v: TdesVariant, data_owf: bool) -> Zeroizing<[u8; 16]> {
    let idx = match v {
        TdesVariant::Pin => 7,
        TdesVariant::MacRequest => 6,
        TdesVariant::MacResponse => 4,
        TdesVariant::DataRequest => 5,
        TdesVariant::DataResponse => 3,
    };
    let mut vk = Zeroizing::new(*txn);
    vk[idx] ^= 0xFF;
    vk[idx + 8] ^= 0xFF;
    if data_owf && matches!(v, TdesVariant::DataRequest | TdesVariant::DataResponse) {
        let c = TdesEde2::new((&*vk).into());
        let mut out = Zeroizing::new(*vk);
        c.encrypt_block(GenericArray::from_mut_slice(&mut out[..8]));
        c.encrypt_block(GenericArray::from_mut_slice(&mut out[8..]));
        return out;
    }
    vk
}
