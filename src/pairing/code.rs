//! Setup codes: 8 Crockford base32 symbols (40 bits) drawn uniformly from the OS CSPRNG, the
//! forgiving normaliser for what a person types, and the keyed hash that is all we store.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Crockford's base32 alphabet: no I, L, O or U.
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const LEN: usize = 8;
/// Longer input is refused before it is looked at (dashes and spaces included).
pub const MAX_INPUT: usize = 32;

/// A setup code in canonical form (8 upper-case symbols). Never logged: no Debug, no Display.
pub struct SetupCode(Zeroizing<String>);

impl SetupCode {
    /// The canonical text, for showing to the operator or on the terminal only.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

/// A fresh uniform code. Each byte from the OS generator is masked to 5 bits: 256 is a multiple
/// of 32, so every symbol is equally likely.
pub fn generate() -> SetupCode {
    let mut raw = Zeroizing::new([0u8; LEN]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    SetupCode(Zeroizing::new(
        raw.iter()
            .map(|b| ALPHABET[(b & 31) as usize] as char)
            .collect(),
    ))
}

/// What a person typed, as a code: case ignored, O→0, I and L→1, dashes and spaces dropped.
/// None unless exactly 8 symbols of the alphabet remain.
pub fn normalise(input: &str) -> Option<SetupCode> {
    if input.len() > MAX_INPUT {
        return None;
    }
    let mut out = Zeroizing::new(String::with_capacity(LEN));
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if out.len() == LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == LEN).then_some(SetupCode(out))
}

/// The code's HMAC-SHA256 under the node's code key: the store's key for it. Keyed, so a copy
/// of the database alone does not let anyone search the 2^40 codes.
pub fn hash(key: &[u8; 32], code: &SetupCode) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(code.0.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two hashes.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_samples_and_typing_variants_normalise() {
        for (typed, canon) in [
            ("8QW1YS1D", "8QW1YS1D"),
            ("8qw1-ys1d", "8QW1YS1D"),
            (" 8QW1 YS1D ", "8QW1YS1D"),
            ("8QWIYSlD", "8QW1YS1D"),
            ("o0O0-1iIl", "00001111"),
        ] {
            assert_eq!(normalise(typed).unwrap().reveal(), canon, "{typed}");
        }
        for bad in [
            "",
            "8QW1YS1",
            "8QW1YS1D0",
            "8QW1YS1U",
            "8QW1YS1*",
            "８QW1YS1D",
            &"-".repeat(40),
        ] {
            assert!(normalise(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn generated_codes_are_canonical_and_uniform() {
        // χ² over the 32 symbols at every position, 10^5 codes: 31 degrees of freedom, so a
        // fair generator stays under 70 (p ≈ 10^-4) and a biased one (say 5% more of one
        // symbol) is far above.
        const N: usize = 100_000;
        let mut counts = [[0u32; 32]; LEN];
        for _ in 0..N {
            let c = generate();
            assert_eq!(normalise(c.reveal()).unwrap().reveal(), c.reveal());
            for (i, b) in c.reveal().bytes().enumerate() {
                let sym = ALPHABET.iter().position(|a| *a == b).unwrap();
                counts[i][sym] += 1;
            }
        }
        let expected = N as f64 / 32.0;
        for (pos, row) in counts.iter().enumerate() {
            let chi2: f64 = row
                .iter()
                .map(|&o| (o as f64 - expected).powi(2) / expected)
                .sum();
            assert!(chi2 > 5.0 && chi2 < 70.0, "position {pos}: chi2 {chi2}");
        }
    }

    #[test]
    fn hashes_are_keyed_and_compared_whole() {
        let code = normalise("8QW1YS1D").unwrap();
        let a = hash(&[1; 32], &code);
        let b = hash(&[2; 32], &code);
        assert_ne!(a, b);
        assert!(same(&a, &hash(&[1; 32], &normalise("8qw1-ys1d").unwrap())));
        assert!(!same(&a, &b));
    }

    proptest! {
        #[test]
        fn normalise_never_panics_and_is_idempotent(s in "\\PC{0,40}") {
            if let Some(c) = normalise(&s) {
                prop_assert_eq!(c.reveal().len(), LEN);
                let again = normalise(c.reveal()).unwrap();
                prop_assert_eq!(again.reveal(), c.reveal());
            }
        }

        #[test]
        fn any_case_and_separators_give_the_same_code(
            idx in proptest::collection::vec(0usize..32, LEN),
            lower in proptest::collection::vec(any::<bool>(), LEN),
            seps in proptest::collection::vec(0usize..3, LEN),
        ) {
            let canon: String = idx.iter().map(|&i| ALPHABET[i] as char).collect();
            let mut typed = String::new();
            for i in 0..LEN {
                let c = canon.as_bytes()[i] as char;
                typed.push(if lower[i] { c.to_ascii_lowercase() } else { c });
                typed.push_str(["", "-", " "][seps[i]]);
            }
            let got = normalise(&typed).unwrap();
            prop_assert_eq!(got.reveal(), canon.as_str());
        }
    }
}
