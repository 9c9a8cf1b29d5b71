//! A 128-bit digest that stands in memory for a text the operator only ever compares (an event's
//! identity, a claimed run's key): 16 bytes instead of the text, with no two texts sharing one in
//! practice (the first half of their SHA-256).

use sha2::{Digest, Sha256};

/// The digest of `text`.
pub(crate) fn of(text: &str) -> u128 {
    let hash = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    #[test]
    fn texts_have_their_own_digests() {
        assert_eq!(super::of("build_a_NP"), super::of("build_a_NP"));
        assert_ne!(super::of("build_a_NP"), super::of("build_b_NP"));
    }
}
