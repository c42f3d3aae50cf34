//! The RegisterTerminal credential path without the server: `Ksn::parse_hex` on the KSN, hex
//! decoding of the encrypted secret, and DUKPT decryption under a fixed BDK. Input is
//! `KSN|SECRET-HEX`; it must return (never panic) for any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapgate::dukpt::{self, AesKeyType, AesUsage, Bdk, KeyUsage, Ksn, Scheme, TdesVariant};

/// The longest secret the server accepts, in hex digits (`register_terminal::MAX_SECRET_HEX`).
const MAX_SECRET_HEX: usize = 512;

const USAGE: KeyUsage = KeyUsage {
    tdes_variant: TdesVariant::Pin,
    tdes_data_owf: false,
    aes_usage: AesUsage::DataEncrypt,
    aes_key_type: AesKeyType::Aes128,
};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (ksn_hex, secret_hex) = s.split_once('|').unwrap_or((s, ""));
    let Ok(ksn) = Ksn::parse_hex(ksn_hex) else {
        return;
    };
    assert_eq!(Ksn::parse_hex(&ksn.to_hex()), Ok(ksn));
    let _ = (ksn.key_set_id(), ksn.device_id(), ksn.counter_is_standard());
    if secret_hex.len() > MAX_SECRET_HEX {
        return;
    }
    let Ok(ciphertext) = hex::decode(secret_hex) else {
        return;
    };
    // The ANSI X9.24-1 and X9.24-3 test BDKs, one per scheme.
    let bdk = match ksn {
        Ksn::Tdes(_) => Bdk::from_hex(Scheme::Tdes, "0123456789ABCDEFFEDCBA9876543210"),
        Ksn::Aes(_) => Bdk::from_hex(Scheme::Aes128, "FEDCBA9876543210F1F2F3F4F5F6F7F8"),
    }
    .unwrap();
    let Ok(key) = dukpt::working_key(&bdk, &ksn, &USAGE) else {
        assert_eq!(ksn.counter(), 0, "only a zero counter has no key");
        return;
    };
    match dukpt::decrypt_cbc(&key, &ciphertext) {
        Ok(plain) => {
            assert_eq!(plain.len(), ciphertext.len());
            let _ = dukpt::strip_zero_padding(&plain);
        }
        Err(e) => assert_eq!(e, dukpt::DukptError::CiphertextLength),
    }
});
