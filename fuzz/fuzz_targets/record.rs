//! The stored terminal record codec (`store::codec`) on arbitrary bytes, as if read back from a
//! damaged or hostile database: `decode` must return (never panic), and whatever it accepts
//! must survive `encode` then `decode` unchanged, with stable bytes (the store's
//! compare-and-swap compares bytes). Name indexes resolve to `name-<index>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapgate::store::codec;
use snapgate::store::StoreError;

fn names(i: [u16; 3]) -> Result<[String; 3], StoreError> {
    Ok(i.map(|n| format!("name-{n}")))
}

fuzz_target!(|data: &[u8]| {
    let mut indexes = None;
    let Ok(record) = codec::decode(data, |i| {
        indexes = Some(i);
        names(i)
    }) else {
        return;
    };
    // In the layout it came in (names indexed or not), and with every name inline.
    for indexes in [indexes, None] {
        let bytes = codec::encode(&record, indexes);
        let back = codec::decode(&bytes, names).expect("the codec reads its own bytes");
        assert_eq!(back, record);
        assert_eq!(codec::encode(&back, indexes), bytes);
    }
});
