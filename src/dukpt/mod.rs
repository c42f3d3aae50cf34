//! DUKPT host-side key derivation, one file per part (as moov-io/dukpt splits by scheme):
//! `ksn` (key serial numbers), `bdk` (BDKs, key usages, working keys), `tdes` (ANSI
//! X9.24-1:2009), `aes` (X9.24-3:2017), `cbc` (the all-zero-IV, zero-padded data cipher used
//! with the derived keys), `ipek_cache` (a BDK with its bounded cache of TDES IPEKs per device,
//! `CachedBdk`). `working_key` picks the scheme. Test vectors live in `tests/`.

pub mod aes;
mod bdk;
mod cbc;
mod ipek_cache;
mod ksn;
pub mod tdes;
#[cfg(test)]
mod tests;

pub use self::bdk::{AesKeyType, AesUsage, Bdk, KeyUsage, Scheme, TdesVariant, WorkingKey};
pub use self::cbc::{decrypt_cbc, encrypt_cbc, strip_zero_padding};
pub use self::ipek_cache::{CachedBdk, DEFAULT_IPEK_CACHE_ENTRIES, MAX_IPEK_CACHE_ENTRIES};
pub use self::ksn::Ksn;
use self::ksn::TDES_COUNTER_MASK;

/// Errors from KSN/key parsing, derivation and decryption.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DukptError {
    #[error("value is not valid hexadecimal")]
    BadHex,
    #[error("KSN must be 16, 20 or 24 hex digits, got {0}")]
    BadKsnLength(usize),
    #[error("key has the wrong length for its scheme")]
    BadKeyLength,
    #[error("BDK scheme and KSN scheme do not match")]
    SchemeMismatch,
    #[error("KSN transaction counter is zero")]
    ZeroCounter,
    #[error("requested AES working key is stronger than the BDK")]
    KeyTooStrong,
    #[error("ciphertext must be a non-empty multiple of the cipher block length")]
    CiphertextLength,
}

/// Derive the working key for `ksn` under `bdk`.
///
/// The BDK and KSN schemes must agree (TDES BDK with a 10-byte KSN, AES BDK with a 12-byte
/// KSN), the counter must be non-zero, and an AES working key may not be stronger than the BDK.
pub fn working_key(bdk: &Bdk, ksn: &Ksn, usage: &KeyUsage) -> Result<WorkingKey, DukptError> {
    derive_working_key(bdk, ksn, usage, tdes::ipek)
}

/// `working_key`, with the TDES IPEK (from the BDK and the KSN) taken from `ipek`: the one
/// derivation both the plain and the cached path (`CachedBdk`) run, so they cannot drift.
fn derive_working_key(
    bdk: &Bdk,
    ksn: &Ksn,
    usage: &KeyUsage,
    ipek: impl FnOnce(&[u8; 16], &[u8; 10]) -> zeroize::Zeroizing<[u8; 16]>,
) -> Result<WorkingKey, DukptError> {
    match (bdk, ksn) {
        (Bdk::Tdes(k), Ksn::Tdes(s)) => {
            if ksn.counter() == 0 {
                return Err(DukptError::ZeroCounter);
            }
            let ipek = ipek(k, s);
            let txn = tdes::transaction_key(&ipek, s);
            let key = tdes::variant_key(&txn, usage.tdes_variant, usage.tdes_data_owf);
            Ok(WorkingKey::Tdes(*key))
        }
        (Bdk::Aes128(_) | Bdk::Aes256(_), Ksn::Aes(s)) => {
            aes::working_key(bdk, s, usage.aes_usage, usage.aes_key_type)
        }
        _ => Err(DukptError::SchemeMismatch),
    }
}
