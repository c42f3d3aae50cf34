//! Keys and what they are for: the base derivation key (`Bdk`, by `Scheme`), the TDES variants
//! and AES usages and key types a working key is derived for (`KeyUsage`), and the derived
//! `WorkingKey`. Key material is zeroized on drop and never printed.

use super::DukptError;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// DUKPT scheme of a BDK.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scheme {
    Tdes,
    Aes128,
    Aes256,
}

/// A base derivation key. Zeroized on drop; Debug is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub enum Bdk {
    /// Double-length (2-key) TDES BDK.
    Tdes([u8; 16]),
    Aes128([u8; 16]),
    Aes256([u8; 32]),
}

impl Bdk {
    /// Parse a BDK from hex (32 hex digits for Tdes/Aes128, 64 for Aes256).
    pub fn from_hex(scheme: Scheme, hex: &str) -> Result<Bdk, DukptError> {
        let mut buf = Zeroizing::new([0u8; 32]);
        let len = hex.len() / 2;
        if hex.len() % 2 != 0 || len > buf.len() {
            return Err(DukptError::BadKeyLength);
        }
        hex::decode_to_slice(hex, &mut buf[..len]).map_err(|_| DukptError::BadHex)?;
        Bdk::from_slice(scheme, &buf[..len])
    }

    /// Build a BDK from raw bytes (16 for Tdes/Aes128, 32 for Aes256).
    pub fn from_slice(scheme: Scheme, bytes: &[u8]) -> Result<Bdk, DukptError> {
        let expected = match scheme {
            Scheme::Tdes | Scheme::Aes128 => 16,
            Scheme::Aes256 => 32,
        };
        if bytes.len() != expected {
            return Err(DukptError::BadKeyLength);
        }
        let mut bdk = match scheme {
            Scheme::Tdes => Bdk::Tdes([0; 16]),
            Scheme::Aes128 => Bdk::Aes128([0; 16]),
            Scheme::Aes256 => Bdk::Aes256([0; 32]),
        };
        match &mut bdk {
            Bdk::Tdes(k) | Bdk::Aes128(k) => k.copy_from_slice(bytes),
            Bdk::Aes256(k) => k.copy_from_slice(bytes),
        }
        Ok(bdk)
    }

    pub fn scheme(&self) -> Scheme {
        match self {
            Bdk::Tdes(_) => Scheme::Tdes,
            Bdk::Aes128(_) => Scheme::Aes128,
            Bdk::Aes256(_) => Scheme::Aes256,
        }
    }
}

impl fmt::Debug for Bdk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bdk::{:?}(<redacted>)", self.scheme())
    }
}

/// TDES key variants (X9.24-1:2009 Table A-1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TdesVariant {
    Pin,
    MacRequest,
    MacResponse,
    DataRequest,
    DataResponse,
}

/// AES DUKPT working-key usages (X9.24-3:2017 key usage indicator).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AesUsage {
    /// 1000
    Pin,
    /// 2000 (request MAC)
    MacGenerate,
    /// 2001 (response MAC)
    MacVerify,
    /// 3000: the key a terminal encrypts *requests* with (the host decrypts requests with it).
    DataEncrypt,
    /// 3001: response data key.
    DataDecrypt,
    /// 3002: bidirectional data key.
    DataBoth,
}

impl AesUsage {
    /// The 16-bit key usage indicator placed in the derivation data.
    pub fn code(self) -> u16 {
        match self {
            AesUsage::Pin => 0x1000,
            AesUsage::MacGenerate => 0x2000,
            AesUsage::MacVerify => 0x2001,
            AesUsage::DataEncrypt => 0x3000,
            AesUsage::DataDecrypt => 0x3001,
            AesUsage::DataBoth => 0x3002,
        }
    }
}

/// Type of an AES DUKPT working key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AesKeyType {
    Aes128,
    Aes256,
}

impl AesKeyType {
    pub(super) fn algorithm_code(self) -> u16 {
        match self {
            AesKeyType::Aes128 => 0x0002,
            AesKeyType::Aes256 => 0x0004,
        }
    }
    pub(super) fn bits(self) -> u16 {
        match self {
            AesKeyType::Aes128 => 128,
            AesKeyType::Aes256 => 256,
        }
    }
}

/// How to get from BDK+KSN to the working key a terminal used.
/// The `tdes_*` fields apply to TDES BDKs, the `aes_*` fields to AES BDKs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyUsage {
    pub tdes_variant: TdesVariant,
    /// Apply the data-key one-way function (X9.24-1 A.4.1). Only affects the data variants.
    pub tdes_data_owf: bool,
    pub aes_usage: AesUsage,
    pub aes_key_type: AesKeyType,
}

/// A derived working key: TDES 16 bytes (2-key EDE), AES 16 or 32 bytes.
/// Zeroized on drop; Debug is redacted.
#[derive(Zeroize, ZeroizeOnDrop)]
pub enum WorkingKey {
    Tdes([u8; 16]),
    Aes128([u8; 16]),
    Aes256([u8; 32]),
}

impl WorkingKey {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WorkingKey::Tdes(k) | WorkingKey::Aes128(k) => k,
            WorkingKey::Aes256(k) => k,
        }
    }

    /// Cipher block length: 8 for TDES, 16 for AES.
    pub fn block_len(&self) -> usize {
        match self {
            WorkingKey::Tdes(_) => 8,
            WorkingKey::Aes128(_) | WorkingKey::Aes256(_) => 16,
        }
    }
}

impl fmt::Debug for WorkingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            WorkingKey::Tdes(_) => "Tdes",
            WorkingKey::Aes128(_) => "Aes128",
            WorkingKey::Aes256(_) => "Aes256",
        };
        write!(f, "WorkingKey::{kind}(<redacted>)")
    }
}
