//! Typed errors: scheme mismatch, zero counter, bad keys and ciphertext lengths.

use super::*;
use crate::dukpt::aes;

#[test]
fn scheme_mismatch_is_rejected() {
    let u = usage(TdesVariant::Pin, false);
    let tdes_ksn = Ksn::parse_hex("FFFF9876543210E00001").unwrap();
    let aes_ksn = Ksn::Aes(aksn(1));
    let tdes_bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    assert_eq!(
        working_key(&tdes_bdk, &aes_ksn, &u).unwrap_err(),
        DukptError::SchemeMismatch
    );
    assert_eq!(
        working_key(&bdk128(), &tdes_ksn, &u).unwrap_err(),
        DukptError::SchemeMismatch
    );
    assert_eq!(
        working_key(&bdk256(), &tdes_ksn, &u).unwrap_err(),
        DukptError::SchemeMismatch
    );
    assert_eq!(
        aes::initial_key(&tdes_bdk, &aksn(1)).unwrap_err(),
        DukptError::SchemeMismatch
    );
}

#[test]
fn zero_counter_is_rejected() {
    let u = usage(TdesVariant::Pin, false);
    let tdes_bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    assert_eq!(
        working_key(&tdes_bdk, &Ksn::parse_hex(ANSI_IKSN).unwrap(), &u).unwrap_err(),
        DukptError::ZeroCounter
    );
    assert_eq!(
        working_key(&bdk128(), &Ksn::Aes(aksn(0)), &u).unwrap_err(),
        DukptError::ZeroCounter
    );
    assert_eq!(
        aes::working_key(&bdk256(), &aksn(0), AesUsage::Pin, AesKeyType::Aes128).unwrap_err(),
        DukptError::ZeroCounter
    );
}

#[test]
fn bdk_from_hex_checks_length_and_hex() {
    assert_eq!(
        Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap().scheme(),
        Scheme::Tdes
    );
    assert_eq!(
        Bdk::from_hex(Scheme::Aes128, &ANSI_BDK.to_lowercase())
            .unwrap()
            .scheme(),
        Scheme::Aes128
    );
    assert_eq!(bdk256().scheme(), Scheme::Aes256);
    assert_eq!(
        Bdk::from_hex(Scheme::Aes256, AES_BDK128).unwrap_err(),
        DukptError::BadKeyLength
    );
    assert_eq!(
        Bdk::from_hex(Scheme::Tdes, AES_BDK256).unwrap_err(),
        DukptError::BadKeyLength
    );
    assert_eq!(
        Bdk::from_hex(Scheme::Tdes, "0123").unwrap_err(),
        DukptError::BadKeyLength
    );
    assert_eq!(
        Bdk::from_hex(Scheme::Tdes, &ANSI_BDK[1..]).unwrap_err(),
        DukptError::BadKeyLength
    );
    assert_eq!(
        Bdk::from_hex(Scheme::Tdes, "0123456789ABCDEFFEDCBA987654321X").unwrap_err(),
        DukptError::BadHex
    );
}

#[test]
fn decrypt_rejects_bad_ciphertext_lengths() {
    let tk = WorkingKey::Tdes([0x11; 16]);
    let ak = WorkingKey::Aes128([0x11; 16]);
    assert_eq!(
        decrypt_cbc(&tk, &[]).unwrap_err(),
        DukptError::CiphertextLength
    );
    assert_eq!(
        decrypt_cbc(&tk, &[0; 12]).unwrap_err(),
        DukptError::CiphertextLength
    );
    assert_eq!(
        decrypt_cbc(&ak, &[0; 8]).unwrap_err(),
        DukptError::CiphertextLength
    );
    assert_eq!(
        decrypt_cbc(&ak, &[0; 24]).unwrap_err(),
        DukptError::CiphertextLength
    );
    assert!(decrypt_cbc(&tk, &[0; 16]).is_ok());
    assert!(decrypt_cbc(&ak, &[0; 32]).is_ok());
}
