//! DES and two-key Triple DES (EDE2), the block cipher under every TDES DUKPT step: the IPEK,
//! each counter bit's key generation, the data variant and the track's CBC decryption.
//!
//! Why not RustCrypto's `des` (the design card's crate, still the tests' reference): it
//! computes E and P bit by bit in every round and was ~16 % of a sale's CPU. Here the tables
//! are the standard's own (FIPS 46-3), and everything fast is derived from them at compile
//! time: the S-boxes merged with P ("SP" tables), and nibble tables for IP, FP, PC-1 and PC-2.
//! A round reads E's eight 6-bit windows straight from two rotations of R, and TDES skips the
//! FP/IP pair between its three passes. docs/DECISIONS.md, "Issue 9: a table-driven DES".
//!
//! Like the `des` crate, a round indexes its tables with key-dependent data (variable time);
//! the tables are 2 KB, within L1. Key schedules are zeroized on drop.

use zeroize::Zeroize;

/// Initial permutation: output bit j (1 = most significant) is input bit `IP[j-1]`.
#[rustfmt::skip]
const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4,
    62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8,
    57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3,
    61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

/// Permuted choice 1: the 56 key bits that form C (first 28) and D (last 28).
#[rustfmt::skip]
const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18,
    10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36,
    63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22,
    14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];

/// Permuted choice 2: a round's 48 key bits from CD.
#[rustfmt::skip]
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4,
    26, 8, 16, 7, 27, 20, 13, 2, 41, 52, 31, 37, 47, 55, 30, 40,
    51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];

/// Left rotations of C and D before each round.
const SHIFTS: [u32; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

/// The permutation P applied to the S-boxes' 32-bit output.
#[rustfmt::skip]
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10,
    2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25,
];

/// S1..S8 as printed: row (outer bits) by row, 16 columns (inner bits) each.
#[rustfmt::skip]
const S: [[u8; 64]; 8] = [
    [14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7,
     0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8,
     4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0,
     15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13],
    [15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10,
     3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5,
     0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15,
     13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9],
    [10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8,
     13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1,
     13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7,
     1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12],
    [7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15,
     13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9,
     10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4,
     3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14],
    [2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9,
     14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6,
     4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14,
     11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3],
    [12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11,
     10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8,
     9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6,
     4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13],
    [4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1,
     13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6,
     1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2,
     6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12],
    [13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7,
     1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2,
     7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8,
     2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11],
];

/// Apply a bit permutation table to the `in_bits`-wide value `x`, bit by bit. Bits are
/// numbered from 1 at the most significant end, as the standard prints them.
const fn permute_slow(x: u64, table: &[u8], in_bits: u32) -> u64 {
    let out_bits = table.len() as u32;
    let mut out = 0u64;
    let mut j = 0;
    while j < table.len() {
        let bit = (x >> (in_bits - table[j] as u32)) & 1;
        out |= bit << (out_bits - 1 - j as u32);
        j += 1;
    }
    out
}

/// A permutation as nibble tables: `t[n][v]` is the output when input nibble `n` (0 = most
/// significant) holds `v` and every other bit is 0. Sixteen lookups instead of 64 bit moves.
const fn nibble_tables<const N: usize>(table: &[u8], in_bits: u32) -> [[u64; 16]; N] {
    let mut t = [[0u64; 16]; N];
    let mut n = 0;
    while n < N {
        let mut v = 0;
        while v < 16 {
            let x = (v as u64) << (in_bits - 4 - 4 * n as u32);
            t[n][v] = permute_slow(x, table, in_bits);
            v += 1;
        }
        n += 1;
    }
    t
}

#[inline(always)]
fn permute<const N: usize>(x: u64, t: &[[u64; 16]; N]) -> u64 {
    let in_bits = 4 * N as u32;
    let mut out = 0;
    for (n, row) in t.iter().enumerate() {
        out |= row[((x >> (in_bits - 4 - 4 * n as u32)) & 0xF) as usize];
    }
    out
}

/// FP is IP's inverse.
const fn inverse(table: &[u8; 64]) -> [u8; 64] {
    let mut inv = [0u8; 64];
    let mut j = 0;
    while j < 64 {
        inv[table[j] as usize - 1] = j as u8 + 1;
        j += 1;
    }
    inv
}

static IP_T: [[u64; 16]; 16] = nibble_tables(&IP, 64);
static FP_T: [[u64; 16]; 16] = nibble_tables(&inverse(&IP), 64);
static PC1_T: [[u64; 16]; 16] = nibble_tables(&PC1, 64);
static PC2_T: [[u64; 16]; 14] = split_windows(nibble_tables(&PC2, 56));

/// PC-2's tables with each entry already in a round key's layout (`RoundKey`): the even E
/// windows in the high 32 bits, the odd ones in the low 32, so the schedule does no shuffling.
const fn split_windows<const N: usize>(mut t: [[u64; 16]; N]) -> [[u64; 16]; N] {
    let mut n = 0;
    while n < N {
        let mut v = 0;
        while v < 16 {
            let sub = t[n][v];
            let mut packed = 0u64;
            let mut i = 0;
            while i < 8 {
                let w = (sub >> (42 - 6 * i)) & 0x3F;
                let byte = 3 - (i / 2) as u64;
                let half = if i % 2 == 0 { 32 } else { 0 };
                packed |= w << (half + 8 * byte);
                i += 1;
            }
            t[n][v] = packed;
            v += 1;
        }
        n += 1;
    }
    t
}

/// `SP[i][x]`: S-box i+1 on the 6-bit input x, placed in its nibble of the 32-bit S output
/// and permuted by P, so a round ORs eight lookups and is done.
const fn sp_tables() -> [[u32; 64]; 8] {
    let mut sp = [[0u32; 64]; 8];
    let mut i = 0;
    while i < 8 {
        let mut x = 0;
        while x < 64 {
            let row = ((x >> 4) & 2) | (x & 1);
            let col = (x >> 1) & 0xF;
            let s = S[i][row * 16 + col] as u64;
            sp[i][x] = permute_slow(s << (28 - 4 * i), &P, 32) as u32;
            x += 1;
        }
        i += 1;
    }
    sp
}

static SP: [[u32; 64]; 8] = sp_tables();

/// One round key, split as the round reads it: E's windows for S1, S3, S5, S7 in `even` and
/// for S2, S4, S6, S8 in `odd`, one window per byte (low 6 bits).
#[derive(Clone, Copy, Default)]
struct RoundKey {
    even: u32,
    odd: u32,
}

/// E(R) ^ K through the S-boxes and P. E's window i covers R's bits 4i..4i+5 (bit 0 being bit
/// 32), so the even windows sit 8 bits apart in R rotated right by 3, the odd ones in R rotated
/// left by 1.
#[inline(always)]
fn f(r: u32, k: RoundKey) -> u32 {
    let e = r.rotate_right(3) ^ k.even;
    let o = r.rotate_left(1) ^ k.odd;
    SP[0][(e >> 24) as usize & 0x3F]
        | SP[2][(e >> 16) as usize & 0x3F]
        | SP[4][(e >> 8) as usize & 0x3F]
        | SP[6][e as usize & 0x3F]
        | SP[1][(o >> 24) as usize & 0x3F]
        | SP[3][(o >> 16) as usize & 0x3F]
        | SP[5][(o >> 8) as usize & 0x3F]
        | SP[7][o as usize & 0x3F]
}

/// Sixteen rounds on (L, R), then the final swap: the result is the pre-output R16 L16, which
/// is also the next pass's (L0, R0) in TDES (FP then IP cancel).
#[inline(always)]
fn rounds<'k>(mut l: u32, mut r: u32, keys: impl Iterator<Item = &'k RoundKey>) -> (u32, u32) {
    for k in keys {
        let t = l ^ f(r, *k);
        l = r;
        r = t;
    }
    (r, l)
}

/// One DES key's 16 round keys. Zeroized on drop.
pub(crate) struct Des {
    keys: [RoundKey; 16],
}

impl Des {
    /// The key schedule of an 8-byte key given big-endian as a u64 (parity bits ignored).
    pub(crate) fn new(key: u64) -> Self {
        let mut cd = permute(key, &PC1_T);
        let mut c = (cd >> 28) as u32;
        let mut d = (cd & 0x0FFF_FFFF) as u32;
        let mut keys = [RoundKey::default(); 16];
        for (k, &s) in keys.iter_mut().zip(&SHIFTS) {
            c = ((c << s) | (c >> (28 - s))) & 0x0FFF_FFFF;
            d = ((d << s) | (d >> (28 - s))) & 0x0FFF_FFFF;
            cd = (u64::from(c) << 28) | u64::from(d);
            let mut packed = permute(cd, &PC2_T);
            k.even = (packed >> 32) as u32;
            k.odd = packed as u32;
            packed.zeroize();
        }
        cd.zeroize();
        c.zeroize();
        d.zeroize();
        Des { keys }
    }

    pub(crate) fn encrypt(&self, block: u64) -> u64 {
        let x = permute(block, &IP_T);
        let (l, r) = rounds((x >> 32) as u32, x as u32, self.keys.iter());
        permute((u64::from(l) << 32) | u64::from(r), &FP_T)
    }

    #[cfg(test)]
    pub(crate) fn decrypt(&self, block: u64) -> u64 {
        let x = permute(block, &IP_T);
        let (l, r) = rounds((x >> 32) as u32, x as u32, self.keys.iter().rev());
        permute((u64::from(l) << 32) | u64::from(r), &FP_T)
    }
}

impl Drop for Des {
    fn drop(&mut self) {
        for k in &mut self.keys {
            k.even.zeroize();
            k.odd.zeroize();
        }
    }
}

/// Two-key Triple DES, EDE: encrypt under K1, decrypt under K2, encrypt under K1.
pub(crate) struct Tdes2 {
    k1: Des,
    k2: Des,
}

impl Tdes2 {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        let mut half = [0u8; 8];
        half.copy_from_slice(&key[..8]);
        let k1 = Des::new(u64::from_be_bytes(half));
        half.copy_from_slice(&key[8..]);
        let k2 = Des::new(u64::from_be_bytes(half));
        half.zeroize();
        Tdes2 { k1, k2 }
    }

    pub(crate) fn encrypt(&self, block: u64) -> u64 {
        let x = permute(block, &IP_T);
        let (l, r) = rounds((x >> 32) as u32, x as u32, self.k1.keys.iter());
        let (l, r) = rounds(l, r, self.k2.keys.iter().rev());
        let (l, r) = rounds(l, r, self.k1.keys.iter());
        permute((u64::from(l) << 32) | u64::from(r), &FP_T)
    }

    pub(crate) fn decrypt(&self, block: u64) -> u64 {
        let x = permute(block, &IP_T);
        let (l, r) = rounds((x >> 32) as u32, x as u32, self.k1.keys.iter().rev());
        let (l, r) = rounds(l, r, self.k2.keys.iter());
        let (l, r) = rounds(l, r, self.k1.keys.iter().rev());
        permute((u64::from(l) << 32) | u64::from(r), &FP_T)
    }

    /// Encrypt the 8-byte block in place.
    pub(crate) fn encrypt_in_place(&self, block: &mut [u8]) {
        let out = self.encrypt(read_block(block));
        block.copy_from_slice(&out.to_be_bytes());
    }

    /// Decrypt the 8-byte block in place.
    pub(crate) fn decrypt_in_place(&self, block: &mut [u8]) {
        let out = self.decrypt(read_block(block));
        block.copy_from_slice(&out.to_be_bytes());
    }
}

fn read_block(block: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(block);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::generic_array::GenericArray;
    use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    use proptest::prelude::*;

    fn reference_des(key: u64) -> ::des::Des {
        ::des::Des::new(&key.to_be_bytes().into())
    }

    #[test]
    fn the_textbook_vector_and_the_nbs_validation_vectors() {
        // The worked example of the standard's explanations (key 133457799BBCDFF1).
        let des = Des::new(0x1334_5779_9BBC_DFF1);
        assert_eq!(des.encrypt(0x0123_4567_89AB_CDEF), 0x85E8_1354_0F0A_B405);
        assert_eq!(des.decrypt(0x85E8_1354_0F0A_B405), 0x0123_4567_89AB_CDEF);
        // NBS Special Publication 500-20, variable-plaintext test with the all-parity key:
        // 8000000000000000 encrypts to 95F8A5E5DD31D900.
        let des = Des::new(0x0101_0101_0101_0101);
        assert_eq!(des.encrypt(0x8000_0000_0000_0000), 0x95F8_A5E5_DD31_D900);
        assert_eq!(des.encrypt(0x0000_0000_0000_0001), 0x166B_40B4_4ABA_4BD6);
    }

    #[test]
    fn the_tables_derived_at_compile_time_match_the_bit_by_bit_permutations() {
        let mut x = 0x0123_4567_89AB_CDEFu64;
        for _ in 0..64 {
            assert_eq!(permute(x, &IP_T), permute_slow(x, &IP, 64));
            assert_eq!(permute(permute(x, &IP_T), &FP_T), x);
            assert_eq!(permute(x, &PC1_T), permute_slow(x, &PC1, 64));
            let sub = permute_slow(x >> 8, &PC2, 56);
            let w = |i: u32| (sub >> (42 - 6 * i)) & 0x3F;
            let even = (w(0) << 24) | (w(2) << 16) | (w(4) << 8) | w(6);
            let odd = (w(1) << 24) | (w(3) << 16) | (w(5) << 8) | w(7);
            assert_eq!(permute(x >> 8, &PC2_T), (even << 32) | odd);
            x = x.rotate_left(7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// RustCrypto's `des` is the reference: any key, any block, both directions.
        #[test]
        fn des_agrees_with_the_des_crate(key: u64, block: u64) {
            let ours = Des::new(key);
            let theirs = reference_des(key);
            let mut b = GenericArray::from(block.to_be_bytes());
            theirs.encrypt_block(&mut b);
            prop_assert_eq!(ours.encrypt(block), u64::from_be_bytes(b.into()));
            let mut b = GenericArray::from(block.to_be_bytes());
            theirs.decrypt_block(&mut b);
            prop_assert_eq!(ours.decrypt(block), u64::from_be_bytes(b.into()));
        }

        #[test]
        fn tdes_agrees_with_the_des_crate(key: [u8; 16], block: [u8; 8]) {
            let ours = Tdes2::new(&key);
            let theirs = ::des::TdesEde2::new(&key.into());
            let (mut a, mut b) = (block, GenericArray::from(block));
            ours.encrypt_in_place(&mut a);
            theirs.encrypt_block(&mut b);
            prop_assert_eq!(&a[..], &b[..]);
            let (mut a, mut b) = (block, GenericArray::from(block));
            ours.decrypt_in_place(&mut a);
            theirs.decrypt_block(&mut b);
            prop_assert_eq!(&a[..], &b[..]);
        }
    }
}
