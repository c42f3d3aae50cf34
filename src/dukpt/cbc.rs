//! The data cipher used with derived keys: CBC with an all-zero IV and zero padding, for TDES
//! (8-byte blocks) and AES (16-byte blocks).

use super::{DukptError, WorkingKey};
use ::aes::{Aes128, Aes256};
use ::des::TdesEde2;
use cipher::generic_array::GenericArray;
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use zeroize::Zeroizing;

fn cbc_encrypt_in_place<C: BlockEncrypt>(c: &C, buf: &mut [u8]) {
    let bs = C::block_size();
    let mut prev = [0u8; 16];
    for chunk in buf.chunks_exact_mut(bs) {
        for (b, p) in chunk.iter_mut().zip(&prev[..bs]) {
            *b ^= *p;
        }
        c.encrypt_block(GenericArray::from_mut_slice(chunk));
        prev[..bs].copy_from_slice(chunk);
    }
}

fn cbc_decrypt_in_place<C: BlockDecrypt>(c: &C, buf: &mut [u8]) {
    let bs = C::block_size();
    let mut prev = [0u8; 16];
    let mut cur = [0u8; 16];
    for chunk in buf.chunks_exact_mut(bs) {
        cur[..bs].copy_from_slice(chunk);
        c.decrypt_block(GenericArray::from_mut_slice(chunk));
        for (b, p) in chunk.iter_mut().zip(&prev[..bs]) {
            *b ^= *p;
        }
        prev = cur;
    }
}

/// CBC decrypt with an all-zero IV. The ciphertext must be a non-empty multiple of the block
/// length. Returns the raw plaintext INCLUDING any zero padding (see [`strip_zero_padding`]).
pub fn decrypt_cbc(key: &WorkingKey, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, DukptError> {
    if ciphertext.is_empty() || ciphertext.len() % key.block_len() != 0 {
        return Err(DukptError::CiphertextLength);
    }
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    match key {
        WorkingKey::Tdes(k) => cbc_decrypt_in_place(&TdesEde2::new(k.into()), &mut buf),
        WorkingKey::Aes128(k) => cbc_decrypt_in_place(&Aes128::new(k.into()), &mut buf),
        WorkingKey::Aes256(k) => cbc_decrypt_in_place(&Aes256::new(k.into()), &mut buf),
    }
    Ok(buf)
}

/// CBC encrypt with an all-zero IV, zero-padding to the block length
/// (empty input -> one zero block; input already block-aligned gets no extra block).
pub fn encrypt_cbc(key: &WorkingKey, plaintext: &[u8]) -> Vec<u8> {
    let bs = key.block_len();
    let blocks = plaintext.len().div_ceil(bs).max(1);
    let mut buf = vec![0u8; blocks * bs];
    buf[..plaintext.len()].copy_from_slice(plaintext);
    match key {
        WorkingKey::Tdes(k) => cbc_encrypt_in_place(&TdesEde2::new(k.into()), &mut buf),
        WorkingKey::Aes128(k) => cbc_encrypt_in_place(&Aes128::new(k.into()), &mut buf),
        WorkingKey::Aes256(k) => cbc_encrypt_in_place(&Aes256::new(k.into()), &mut buf),
    }
    buf
}

/// Strip trailing 0x00 bytes (zero padding). Lossy if the real plaintext ends in 0x00.
pub fn strip_zero_padding(p: &[u8]) -> &[u8] {
    let end = p.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &p[..end]
}
