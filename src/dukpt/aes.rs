//! AES DUKPT primitives (X9.24-3:2017 section 6). KSNs are 12 bytes: initial key ID (8) +
//! counter (4).

use super::{AesKeyType, AesUsage, Bdk, DukptError, WorkingKey};
use ::aes::{Aes128, Aes256};
use cipher::generic_array::GenericArray;
use cipher::{BlockEncrypt, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop};

const USAGE_INITIAL_KEY: u16 = 0x8001;
const USAGE_DERIVATION_KEY: u16 = 0x8000;

/// Internal fixed-size AES key (no heap).
#[derive(Zeroize, ZeroizeOnDrop)]
enum AesKey {
    K128([u8; 16]),
    K256([u8; 32]),
}

impl AesKey {
    fn key_type(&self) -> AesKeyType {
        match self {
            AesKey::K128(_) => AesKeyType::Aes128,
            AesKey::K256(_) => AesKeyType::Aes256,
        }
    }

    fn into_working(self) -> WorkingKey {
        match &self {
            AesKey::K128(k) => WorkingKey::Aes128(*k),
            AesKey::K256(k) => WorkingKey::Aes256(*k),
        }
    }
}

/// Encrypt derivation-data blocks under `key`; output is a key of `out_type`.
fn derive(key: &AesKey, usage: u16, out_type: AesKeyType, data8: &[u8; 8]) -> AesKey {
    let mut out = match out_type {
        AesKeyType::Aes128 => AesKey::K128([0; 16]),
        AesKeyType::Aes256 => AesKey::K256([0; 32]),
    };
    let buf: &mut [u8] = match &mut out {
        AesKey::K128(b) => b,
        AesKey::K256(b) => b,
    };
    for (i, block) in buf.chunks_exact_mut(16).enumerate() {
        block[0] = 0x01; // version
        block[1] = (i + 1) as u8; // key block counter
        block[2..4].copy_from_slice(&usage.to_be_bytes());
        block[4..6].copy_from_slice(&out_type.algorithm_code().to_be_bytes());
        block[6..8].copy_from_slice(&out_type.bits().to_be_bytes());
        block[8..16].copy_from_slice(data8);
    }
    match key {
        AesKey::K128(k) => {
            let c = Aes128::new(k.into());
            for block in buf.chunks_exact_mut(16) {
                c.encrypt_block(GenericArray::from_mut_slice(block));
            }
        }
        AesKey::K256(k) => {
            let c = Aes256::new(k.into());
            for block in buf.chunks_exact_mut(16) {
                c.encrypt_block(GenericArray::from_mut_slice(block));
            }
        }
    }
    out
}

fn bdk_key(bdk: &Bdk) -> Result<AesKey, DukptError> {
    match bdk {
        Bdk::Aes128(k) => Ok(AesKey::K128(*k)),
        Bdk::Aes256(k) => Ok(AesKey::K256(*k)),
        Bdk::Tdes(_) => Err(DukptError::SchemeMismatch),
    }
}

fn ik(bdk: &Bdk, ksn: &[u8; 12]) -> Result<AesKey, DukptError> {
    let b = bdk_key(bdk)?;
    let mut ikid = [0u8; 8];
    ikid.copy_from_slice(&ksn[..8]);
    Ok(derive(&b, USAGE_INITIAL_KEY, b.key_type(), &ikid))
}

fn counter(ksn: &[u8; 12]) -> u32 {
    u32::from_be_bytes([ksn[8], ksn[9], ksn[10], ksn[11]])
}

fn intermediate(bdk: &Bdk, ksn: &[u8; 12]) -> Result<AesKey, DukptError> {
    let mut key = ik(bdk, ksn)?;
    let kt = key.key_type();
    let tc = counter(ksn);
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&ksn[4..8]);
    let mut working_tc: u32 = 0;
    let mut bit: u32 = 0x8000_0000;
    while bit != 0 {
        if tc & bit != 0 {
            working_tc |= bit;
            data[4..].copy_from_slice(&working_tc.to_be_bytes());
            key = derive(&key, USAGE_DERIVATION_KEY, kt, &data);
        }
        bit >>= 1;
    }
    Ok(key)
}

/// Initial key (IK) for the KSN's initial key ID. Same type as the BDK.
/// TDES BDK -> Err(SchemeMismatch).
pub fn initial_key(bdk: &Bdk, ksn: &[u8; 12]) -> Result<WorkingKey, DukptError> {
    Ok(ik(bdk, ksn)?.into_working())
}

/// Intermediate derivation key for the KSN's counter (the supplement's
/// "transaction/derivation key"). Works for any counter; counter 0 returns the IK.
pub fn intermediate_key(bdk: &Bdk, ksn: &[u8; 12]) -> Result<WorkingKey, DukptError> {
    Ok(intermediate(bdk, ksn)?.into_working())
}

/// Working key of `usage` and `key_type` for the KSN. Counter 0 -> Err(ZeroCounter);
/// AES-256 working key from an AES-128 BDK -> Err(KeyTooStrong).
pub fn working_key(
    bdk: &Bdk,
    ksn: &[u8; 12],
    usage: AesUsage,
    key_type: AesKeyType,
) -> Result<WorkingKey, DukptError> {
    match (bdk, key_type) {
        (Bdk::Tdes(_), _) => return Err(DukptError::SchemeMismatch),
        (Bdk::Aes128(_), AesKeyType::Aes256) => return Err(DukptError::KeyTooStrong),
        _ => {}
    }
    if counter(ksn) == 0 {
        return Err(DukptError::ZeroCounter);
    }
    let key = intermediate(bdk, ksn)?;
    let mut data = [0u8; 8];
    data.copy_from_slice(&ksn[4..12]);
    Ok(derive(&key, usage.code(), key_type, &data).into_working())
}
