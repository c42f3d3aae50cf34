//! The CBC cipher and key handling: round trips, padding, lengths, redacted Debug.

use super::*;
use crate::dukpt::aes;

#[test]
fn encrypt_decrypt_round_trip_for_all_key_types() {
    let keys = [
        WorkingKey::Tdes(*tdes_txn("FFFF9876543210E00001")),
        aes::working_key(
            &bdk128(),
            &aksn(3),
            AesUsage::DataEncrypt,
            AesKeyType::Aes128,
        )
        .unwrap(),
        aes::working_key(
            &bdk256(),
            &aksn(3),
            AesUsage::DataEncrypt,
            AesKeyType::Aes256,
        )
        .unwrap(),
    ];
    for key in &keys {
        let bs = key.block_len();
        for len in [0usize, 1, bs - 1, bs, bs + 1, 3 * bs, 100] {
            let pt: Vec<u8> = (1..=len).map(|i| (i % 251) as u8 + 1).collect();
            let ct = encrypt_cbc(key, &pt);
            assert_eq!(ct.len(), len.div_ceil(bs).max(1) * bs, "{key:?} len {len}");
            let back = decrypt_cbc(key, &ct).unwrap();
            assert_eq!(back.len(), ct.len());
            assert_eq!(&back[..len], &pt[..]);
            assert!(back[len..].iter().all(|&b| b == 0));
            assert_eq!(strip_zero_padding(&back), &pt[..]);
        }
    }
}

#[test]
fn encrypt_empty_input_gives_one_zero_block() {
    let key = WorkingKey::Aes128([7; 16]);
    let ct = encrypt_cbc(&key, &[]);
    assert_eq!(ct.len(), 16);
    assert_eq!(*decrypt_cbc(&key, &ct).unwrap(), vec![0u8; 16]);
}

#[test]
fn block_len_and_key_len_follow_key_type() {
    assert_eq!(WorkingKey::Tdes([0; 16]).block_len(), 8);
    assert_eq!(WorkingKey::Aes128([0; 16]).block_len(), 16);
    assert_eq!(WorkingKey::Aes256([0; 32]).block_len(), 16);
    assert_eq!(WorkingKey::Aes256([0; 32]).as_bytes().len(), 32);
}

#[test]
fn strip_zero_padding_removes_only_trailing_zeros() {
    assert_eq!(strip_zero_padding(b"ab\0c\0\0"), b"ab\0c");
    assert_eq!(strip_zero_padding(&[0, 0, 0]), b"");
    assert_eq!(strip_zero_padding(b""), b"");
    assert_eq!(strip_zero_padding(b"abc"), b"abc");
}

#[test]
fn debug_output_of_keys_is_redacted() {
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let s = format!("{bdk:?}");
    assert!(s.contains("<redacted>"));
    for needle in ["0123456789", "01, 35", "1, 35, 69"] {
        assert!(!s.to_uppercase().contains(needle), "{s}");
    }
    let b256 = bdk256();
    assert!(!format!("{b256:?}").to_uppercase().contains("FEDCBA"));
    assert!(!format!("{b256:#?}").contains("254"));

    let wk = aes::working_key(
        &bdk128(),
        &aksn(1),
        AesUsage::DataEncrypt,
        AesKeyType::Aes128,
    )
    .unwrap();
    let s = format!("{wk:?} {wk:#?}");
    assert!(s.contains("<redacted>"));
    assert!(!s.to_uppercase().contains("A35C412E"));
    assert!(!s.contains("163, 92")); // A3 5C as decimal
    let tk = WorkingKey::Tdes(*tdes_txn("FFFF9876543210E00001"));
    let s = format!("{tk:?}");
    assert!(!s.to_uppercase().contains("042666B4"));
    assert!(!s.contains("4, 38, 102"));
}
