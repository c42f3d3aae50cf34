//! `soap::parse_envelope` on arbitrary bytes, under the server's default limits: it must return
//! (never panic), and an envelope it accepts must respect those limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapgate::cws::soap::{self, Element, XmlLimits, MAX_NAMESPACE_BYTES};

const LIMITS: XmlLimits = XmlLimits {
    max_depth: 32,
    max_elements: 2_000,
    max_attributes: 32,
};

fn walk(e: &Element, depth: usize, count: &mut usize) {
    assert!(depth <= LIMITS.max_depth);
    assert!(e.ns.as_deref().map_or(0, str::len) <= MAX_NAMESPACE_BYTES);
    *count += 1;
    for c in &e.children {
        walk(c, depth + 1, count);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = soap::parse_envelope(data, &LIMITS) {
        // Envelope and Body are levels 1 and 2.
        let mut count = 2;
        if let Some(h) = &env.header {
            walk(h, 2, &mut count);
        }
        walk(&env.operation, 3, &mut count);
        assert!(count <= LIMITS.max_elements);
    }
});
