//! TDES DUKPT (X9.24-1:2009) test vectors, and EVO's Magensa sample.

use super::*;
use crate::dukpt::tdes;

// openemv test/dukpt_tdes_test.c: A.4.2 initial sequence (counters 1..=21):
// (transaction key, PIN block 041274EDCBA9876F encrypted under the PIN variant).
pub(super) const TDES_INITIAL_SEQUENCE: [(&str, &str); 21] = [
    ("042666B49184CFA368DE9628D0397BC9", "1B9C1845EB993A7A"),
    ("C46551CEF9FD24B0AA9AD834130D3BC7", "10A01C8D02C69107"),
    ("0DF3D9422ACA56E547676D07AD6BADFA", "18DC07B94797B466"),
    ("279C0F6AEED0BE652B2C733E1383AE91", "0BC79509D5645DF7"),
    ("5F8DC6D2C845C125508DDC048093B83F", "5BC0AF22AD87B327"),
    ("5E415CB0BAF9F03CD0C14B63FB62FF43", "A16DF70AE36158D8"),
    ("0C8F780B7C8B49D0AE84A9EB2A6CE660", "27711C16CB257F8E"),
    ("27F66D5244FF62E1AA6F6120EDEB4280", "50E55547A5027551"),
    ("27E31064FDC565698900E2057F658E7E", "536CF7F678ACFC8D"),
    ("6CF2500A22507C7CC776CEADC1E33014", "EDABBA23221833FE"),
    ("3E8260BA04B2D620C01482B3819A18B7", "2328981C57B4BDBA"),
    ("B716E1E11CF53D80726CAEE75C3A624F", "038D03CC926CF286"),
    ("E072EDF95340535FB6C581C58FBF2533", "6C8AA97088B62C68"),
    ("A80046087F5B8F245AAD95E18429084F", "F17C9E1D72CD4950"),
    ("93DD5B956C4878472E453AAEFD32A5AA", "B170F6E7F7F2F64A"),
    ("59598DCBD9BD94C094165CE453585F57", "D5D9638559EF53D6"),
    ("2B5F01F4F0CC05EA639D523231BF1BA2", "D544F8CDD292C863"),
    ("9CF640F279C2AEE615F725EEEAC2CBAF", "7A21BD10F36DC41D"),
    ("C3DF489FDF1153B4F03DE97C27DC4C2F", "78649BD17D0DFA60"),
    ("658488507721B3F14737FA93F923CBD2", "7E7E16EA0C31AD56"),
    ("E161D1956A61F6D2F37AFD7F9CC3699A", "72105C22EBC791E6"),
];

// openemv test/dukpt_tdes_test.c: A.4.3 rollover sequence (KSN, transaction key, PIN block).
pub(super) const TDES_ROLLOVER_SEQUENCE: [(&str, &str, &str); 13] = [
    (
        "FFFF9876543210EFF800",
        "F9CDFEBF4F5B1D9EB3EC12454527E176",
        "33365F5CC6F23C35",
    ),
    (
        "FFFF9876543210EFF801",
        "5BEE92627E97825C911BF619DF72CA3B",
        "3A86BF003F835C9D",
    ),
    (
        "FFFF9876543210EFF802",
        "64CA2F8AB93F61B01620B00BF77C7301",
        "3DB977D05C36DF3F",
    ),
    (
        "FFFF9876543210EFF804",
        "35A168695B3BA83307E871C42021DD37",
        "BA83243305712099",
    ),
    (
        "FFFF9876543210EFF808",
        "12C380FCB72ED3C26FC6079AF63F4787",
        "B0DA04AC90A36D85",
    ),
    (
        "FFFF9876543210EFF810",
        "D8007C833A1E3C49C6889B97A68C54FF",
        "2CF02BD9C309EEDA",
    ),
    (
        "FFFF9876543210EFF820",
        "A9C9FF9B735FDD49591F296B0BF0FD70",
        "9D1E2F77AEEE81C6",
    ),
    (
        "FFFF9876543210EFF840",
        "0E3E221062CB5E03A384602783A004FA",
        "40870B0F8BA2011C",
    ),
    (
        "FFFF9876543210EFF880",
        "CA8225C587124DFBB87F279C0BE29727",
        "22E340D6ABB40981",
    ),
    (
        "FFFF9876543210EFF900",
        "906AAC1751D4971A144D52C76C6E1F97",
        "1A4C10AFBA03A430",
    ),
    (
        "FFFF9876543210EFFA00",
        "2B9E2CE7C2750337E10B54D2989EA6AF",
        "849763B43E5F9CFF",
    ),
    (
        "FFFF9876543210EFFC00",
        "F9430DF975082491C77BE4EF4FDB91EE",
        "DEFC6F09F8927B71",
    ),
    (
        "FFFF9876543210F00000",
        "AA4D58DB653EC74A48C75F2F047DD2B5",
        "73EC88AD0AC5830E",
    ),
];

#[test]
fn tdes_ipek_matches_ansi_vector() {
    let ipek = tdes::ipek(&ansi_bdk(), &tksn(ANSI_IKSN));
    assert_eq!(hex::encode_upper(*ipek), ANSI_IPEK);
    // Any KSN of the device gives the same IPEK: the counter bits are masked.
    let ipek2 = tdes::ipek(&ansi_bdk(), &tksn("FFFF9876543210FFFFFF"));
    assert_eq!(hex::encode_upper(*ipek2), ANSI_IPEK);
}

#[test]
fn tdes_transaction_keys_match_dukpt_md_table() {
    // dukpt.md section 4 table.
    for (ksn, want) in [
        ("FFFF9876543210E00001", "042666B49184CFA368DE9628D0397BC9"),
        ("FFFF9876543210E00002", "C46551CEF9FD24B0AA9AD834130D3BC7"),
        ("FFFF9876543210E00008", "27F66D5244FF62E1AA6F6120EDEB4280"),
        ("FFFF9876543210EFF800", "F9CDFEBF4F5B1D9EB3EC12454527E176"),
        ("FFFF9876543210F00000", "AA4D58DB653EC74A48C75F2F047DD2B5"),
    ] {
        assert_eq!(hex::encode_upper(*tdes_txn(ksn)), want, "KSN {ksn}");
    }
}

#[test]
fn tdes_counter_zero_transaction_key_is_ipek() {
    assert_eq!(hex::encode_upper(*tdes_txn(ANSI_IKSN)), ANSI_IPEK);
}

#[test]
fn tdes_initial_sequence_keys_and_pin_blocks_match_ansi_a42() {
    let pin_block = h(ANSI_PIN_BLOCK);
    for (i, (txn_want, pin_want)) in TDES_INITIAL_SEQUENCE.iter().enumerate() {
        let ksn = Ksn::parse_hex(ANSI_IKSN)
            .unwrap()
            .with_counter(i as u32 + 1);
        let Ksn::Tdes(k) = ksn else { unreachable!() };
        let txn = tdes::transaction_key(&tdes::ipek(&ansi_bdk(), &k), &k);
        assert_eq!(hex::encode_upper(*txn), *txn_want, "counter {}", i + 1);
        let pin_key = WorkingKey::Tdes(*tdes::variant_key(&txn, TdesVariant::Pin, false));
        // One block, zero IV: CBC == ECB.
        assert_eq!(
            hex::encode_upper(encrypt_cbc(&pin_key, &pin_block)),
            *pin_want
        );
        assert_eq!(*decrypt_cbc(&pin_key, &h(pin_want)).unwrap(), pin_block);
    }
}

#[test]
fn tdes_rollover_sequence_keys_and_pin_blocks_match_ansi_a43() {
    let pin_block = h(ANSI_PIN_BLOCK);
    for (ksn, txn_want, pin_want) in TDES_ROLLOVER_SEQUENCE {
        let txn = tdes_txn(ksn);
        assert_eq!(hex::encode_upper(*txn), txn_want, "KSN {ksn}");
        let pin_key = WorkingKey::Tdes(*tdes::variant_key(&txn, TdesVariant::Pin, false));
        assert_eq!(
            hex::encode_upper(encrypt_cbc(&pin_key, &pin_block)),
            pin_want
        );
    }
}

#[test]
fn tdes_pin_block_vector_encrypts_under_counter_1_pin_key() {
    // dukpt.md section 4: 041274EDCBA9876F -> 1B9C1845EB993A7A at counter 1.
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let ksn = Ksn::parse_hex("FFFF9876543210E00001").unwrap();
    let key = working_key(&bdk, &ksn, &usage(TdesVariant::Pin, false)).unwrap();
    let ct = encrypt_cbc(&key, &h(ANSI_PIN_BLOCK));
    assert_eq!(hex::encode_upper(&ct), "1B9C1845EB993A7A");
    assert_eq!(*decrypt_cbc(&key, &ct).unwrap(), h(ANSI_PIN_BLOCK));
}

#[test]
fn tdes_pin_and_owf_data_request_keys_match_dukpt_md_table() {
    // dukpt.md section 4 table; data keys also match shenyan1206/dukpt test/test_dukpt.js.
    for (ksn, pin_want, data_want) in [
        (
            "FFFF9876543210E00001",
            "042666B49184CF5C68DE9628D0397B36",
            "448D3F076D8304036A55A3D7E0055A78",
        ),
        (
            "FFFF9876543210E00002",
            "C46551CEF9FD244FAA9AD834130D3B38",
            "F1BE73B36135C5C26CF937D50ABBE5AF",
        ),
        (
            "FFFF9876543210E00008",
            "27F66D5244FF621EAA6F6120EDEB427F",
            "C39B2778B058AC376FB18DC906F75CBA",
        ),
    ] {
        let txn = tdes_txn(ksn);
        let pin = tdes::variant_key(&txn, TdesVariant::Pin, false);
        assert_eq!(hex::encode_upper(*pin), pin_want, "PIN key {ksn}");
        // data_owf is ignored for the PIN variant.
        let pin_owf = tdes::variant_key(&txn, TdesVariant::Pin, true);
        assert_eq!(hex::encode_upper(*pin_owf), pin_want);
        let data = tdes::variant_key(&txn, TdesVariant::DataRequest, true);
        assert_eq!(hex::encode_upper(*data), data_want, "data key {ksn}");
        // Top-level API agrees.
        let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
        let k = working_key(
            &bdk,
            &Ksn::parse_hex(ksn).unwrap(),
            &usage(TdesVariant::DataRequest, true),
        )
        .unwrap();
        assert_eq!(hex::encode_upper(k.as_bytes()), data_want);
    }
}

#[test]
fn tdes_counter_1_encrypted_request_matches_ansi_sample_both_ways() {
    // dukpt.md section 4 / moov-io/dukpt pkg/des/des_test.go (DataReqEnc, counter 1).
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let ksn = Ksn::parse_hex("FFFF9876543210E00001").unwrap();
    let key = working_key(&bdk, &ksn, &usage(TdesVariant::DataRequest, true)).unwrap();
    let ct = encrypt_cbc(&key, ANSI_DATA);
    assert_eq!(
        hex::encode_upper(&ct),
        "FC0D53B7EA1FDA9EE68AAF2E70D9B9506229BE2AA993F04F"
    );
    let pt = decrypt_cbc(&key, &ct).unwrap();
    assert_eq!(pt.len(), 24);
    assert_eq!(&pt[17..], &[0u8; 7]);
    assert_eq!(strip_zero_padding(&pt), ANSI_DATA);
}

#[test]
fn tdes_variant_only_data_key_does_not_produce_the_ansi_sample() {
    // Pitfall 1 in dukpt.md: without the OWF the published sample is not reproduced.
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let ksn = Ksn::parse_hex("FFFF9876543210E00001").unwrap();
    let key = working_key(&bdk, &ksn, &usage(TdesVariant::DataRequest, false)).unwrap();
    assert_ne!(
        hex::encode_upper(encrypt_cbc(&key, ANSI_DATA)),
        "FC0D53B7EA1FDA9EE68AAF2E70D9B9506229BE2AA993F04F"
    );
}

#[test]
fn tdes_data_request_and_response_ciphertexts_match_moov_io() {
    // moov-io/dukpt pkg/des/des_test.go InitialSequence (DataReqEnc, DataResEnc):
    // "4012345678909D987" zero-padded, CBC, zero IV, data variant + OWF.
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    for (ksn, req, resp) in [
        (
            "FFFF9876543210E00001",
            "FC0D53B7EA1FDA9EE68AAF2E70D9B9506229BE2AA993F04F",
            "1FCC89AF66222F27B903898BB2BC8589CDBFDE5EC6AFCC25",
        ),
        (
            "FFFF9876543210E00002",
            "A2B4E70F846E63D68775B7215EB4563DFD3037244C61CC13",
            "5B692A6B1FDD5E25B0DEFAFDE1672E402F8011360CFF3508",
        ),
        (
            "FFFF9876543210E00003",
            "BD751E65F10E75B6C1D5B1D283496A36C2DE21D993C387A7",
            "345992D4163E4926C927BFD8ABD5D76F087A9CE81D5A27B8",
        ),
        (
            "FFFF9876543210E00004",
            "1118F50947441BBDA3C8C70220021A12EC31CC473F7215F4",
            "418C7413576C0D1819E785D3807AF32334231FDEC23414DB",
        ),
        (
            "FFFF9876543210E00005",
            "9FD7BD1EC28845ACA93367A9DA9317BD555C6B33AE22D365",
            "7D4C109E49E83355A556AE949EED359F4404E7A2F0167C00",
        ),
    ] {
        let ksn = Ksn::parse_hex(ksn).unwrap();
        let kreq = working_key(&bdk, &ksn, &usage(TdesVariant::DataRequest, true)).unwrap();
        let kresp = working_key(&bdk, &ksn, &usage(TdesVariant::DataResponse, true)).unwrap();
        assert_eq!(hex::encode_upper(encrypt_cbc(&kreq, ANSI_DATA)), req);
        assert_eq!(hex::encode_upper(encrypt_cbc(&kresp, ANSI_DATA)), resp);
        assert_eq!(
            strip_zero_padding(&decrypt_cbc(&kreq, &h(req)).unwrap()),
            ANSI_DATA
        );
        assert_eq!(
            strip_zero_padding(&decrypt_cbc(&kresp, &h(resp)).unwrap()),
            ANSI_DATA
        );
    }
}

#[test]
fn evo_magensa_sample_decrypts_under_pin_variant_without_owf() {
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let ksn = Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap();
    let key = working_key(&bdk, &ksn, &usage(TdesVariant::Pin, false)).unwrap();
    let pt = decrypt_cbc(&key, &h(EVO_MAGENSA_CT)).unwrap();
    assert_eq!(pt.len(), 40);
    assert_eq!(pt[39], 0x00, "one byte of zero padding");
    assert_eq!(strip_zero_padding(&pt), EVO_MAGENSA_TRACK);
    // And encrypting the track reproduces EVO's ciphertext.
    assert_eq!(
        hex::encode_upper(encrypt_cbc(&key, EVO_MAGENSA_TRACK)),
        EVO_MAGENSA_CT
    );
}

#[test]
fn evo_magensa_sample_does_not_decrypt_under_data_request_variant() {
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let ksn = Ksn::parse_hex(EVO_MAGENSA_KSN).unwrap();
    for owf in [false, true] {
        let key = working_key(&bdk, &ksn, &usage(TdesVariant::DataRequest, owf)).unwrap();
        let pt = decrypt_cbc(&key, &h(EVO_MAGENSA_CT)).unwrap();
        assert_ne!(strip_zero_padding(&pt), EVO_MAGENSA_TRACK, "owf={owf}");
        assert!(!pt.starts_with(b";5454"), "owf={owf}");
    }
}

#[test]
fn tdes_host_derivation_accepts_high_counters() {
    // Counters above 1,048,575 are valid (0x1FF800 is the highest 10-bit counter).
    let bdk = Bdk::from_hex(Scheme::Tdes, ANSI_BDK).unwrap();
    let base = Ksn::parse_hex(ANSI_IKSN).unwrap();
    for c in [0x1F_F800u32, 0x10_0000, 0x1F_FFFF] {
        let ksn = base.with_counter(c);
        assert_eq!(ksn.counter(), c);
        assert!(working_key(&bdk, &ksn, &usage(TdesVariant::Pin, false)).is_ok());
    }
    // F00000 in the A.4.3 rollover sample is counter 0x100000.
    assert_eq!(
        Ksn::parse_hex("FFFF9876543210F00000").unwrap().counter(),
        0x10_0000
    );
}
