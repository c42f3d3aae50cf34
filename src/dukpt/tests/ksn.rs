//! KSN parsing and fields.

use super::*;

#[test]
fn ksn_parses_20_hex_as_tdes() {
    let k = Ksn::parse_hex("FFFF9876543210E00008").unwrap();
    assert_eq!(k, Ksn::Tdes(tksn("ffff9876543210e00008")));
    assert_eq!(k.to_hex(), "FFFF9876543210E00008");
    assert_eq!(k.to_string(), "FFFF9876543210E00008");
}

#[test]
fn ksn_parses_24_hex_as_aes() {
    let k = Ksn::parse_hex("123456789012345600000001").unwrap();
    assert_eq!(k, Ksn::Aes(aksn(1)));
    assert_eq!(k.to_hex(), "123456789012345600000001");
}

#[test]
fn ksn_parses_16_hex_as_ffff_padded_tdes() {
    let k = Ksn::parse_hex("9876543210e00001").unwrap();
    assert_eq!(k.to_hex(), "FFFF9876543210E00001");
    assert_eq!(k.counter(), 1);
}

#[test]
fn ksn_rejects_bad_lengths_and_non_hex() {
    for s in [
        "",
        "FFFF",
        "FFFF9876543210E0000",
        "FFFF9876543210E000011",
        "1234567890123456000000011",
    ] {
        assert_eq!(
            Ksn::parse_hex(s),
            Err(DukptError::BadKsnLength(s.len())),
            "{s:?}"
        );
    }
    assert_eq!(
        Ksn::parse_hex("FFFF9876543210E0000G"),
        Err(DukptError::BadHex)
    );
    assert_eq!(Ksn::parse_hex("9876543210E0000 "), Err(DukptError::BadHex));
    assert_eq!(
        Ksn::parse_hex("12345678901234560000000Z"),
        Err(DukptError::BadHex)
    );
}

#[test]
fn ksn_counter_device_id_and_key_set_id_are_extracted() {
    let t = Ksn::parse_hex("FFFF9876543210EFF801").unwrap();
    assert_eq!(t.counter(), 0x0F_F801);
    assert_eq!(t.key_set_id(), "FFFF987654");
    assert_eq!(t.device_id(), "TFFFF9876543210E0");
    // The device ID does not depend on the counter.
    assert_eq!(t.with_counter(1).device_id(), t.device_id());

    let m = Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap();
    assert_eq!(m.counter(), 0x21);
    assert_eq!(m.key_set_id(), "9010010B0C");
    assert_eq!(m.device_id(), "T9010010B0C247200");

    // cws-protocol.md: RegisterTerminal KSN FFFF0079000007E0007C has counter 0x7C.
    assert_eq!(
        Ksn::parse_hex("FFFF0079000007E0007C").unwrap().counter(),
        0x7C
    );

    let a = Ksn::parse_hex("1234567890123456FFFE2000").unwrap();
    assert_eq!(a.counter(), 0xFFFE_2000);
    assert_eq!(a.key_set_id(), "12345678");
    assert_eq!(a.device_id(), "A1234567890123456");
}

#[test]
fn device_id_is_compares_with_the_device_id_exactly() {
    let t = Ksn::parse_hex("FFFF9876543210EFF801").unwrap();
    let a = Ksn::parse_hex("FFFF9876543210EFF8012000").unwrap();
    for k in [t, t.with_counter(1), a] {
        assert!(k.device_id_is(&k.device_id()), "{k:?}");
    }
    assert!(t.device_id_is("TFFFF9876543210E0"));
    assert!(a.device_id_is("AFFFF9876543210EF"));
    for other in [
        "AFFFF9876543210E0", // the other scheme
        "TFFFF9876543210E1", // a counter bit kept
        "Tffff9876543210e0", // lowercase is another string
        "TFFFF9876543210E",
        "TFFFF9876543210E00",
        "",
    ] {
        assert!(!t.device_id_is(other), "{other}");
    }
}

#[test]
fn ksn_with_counter_replaces_only_the_counter() {
    let t = Ksn::parse_hex("FFFF9876543210E00000").unwrap();
    assert_eq!(t.with_counter(0x1F_F800).to_hex(), "FFFF9876543210FFF800");
    // TDES masks to 21 bits and keeps the top 3 bits of byte 7.
    assert_eq!(t.with_counter(0xFFFF_FFFF).to_hex(), "FFFF9876543210FFFFFF");
    assert_eq!(t.with_counter(0xFFFF_FFFF).counter(), 0x1F_FFFF);
    let a = Ksn::Aes(aksn(1));
    assert_eq!(
        a.with_counter(0xFFFF_0000).to_hex(),
        "1234567890123456FFFF0000"
    );
}

#[test]
fn ksn_counter_is_standard_follows_one_bit_rules() {
    let t = Ksn::parse_hex(ANSI_IKSN).unwrap();
    assert!(!t.with_counter(0).counter_is_standard());
    assert!(t.with_counter(1).counter_is_standard());
    assert!(t.with_counter(0x1F_F800).counter_is_standard()); // 10 bits
    assert!(t.with_counter(0x10_0000).counter_is_standard());
    assert!(!t.with_counter(0x1F_FC00).counter_is_standard()); // 11 bits
    let a = Ksn::Aes(aksn(1));
    assert!(a.counter_is_standard());
    assert!(!a.with_counter(0).counter_is_standard());
    assert!(a.with_counter(0xFFFF_0000).counter_is_standard()); // 16 bits
    assert!(!a.with_counter(0x0001_FFFF).counter_is_standard()); // 17 bits
}

#[test]
fn with_counter_keeps_device_bits_in_byte_7_that_are_not_all_ones() {
    // The sample KSN's byte 7 is E0 (its top 3 bits all ones), which hides a counter write
    // that sets those bits instead of keeping them: they belong to the device id.
    let t = Ksn::parse_hex("FFFF9876543210A00000").unwrap();
    assert_eq!(t.with_counter(5).to_hex(), "FFFF9876543210A00005");
    assert_eq!(t.with_counter(5).device_id(), t.device_id());
    let z = Ksn::parse_hex("FFFF9876543210000000").unwrap();
    assert_eq!(z.with_counter(0x1F_FFFF).to_hex(), "FFFF98765432101FFFFF");
}
