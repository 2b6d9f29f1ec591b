//! One-time enrollment tokens: 256 random bits shown once as `hmk_` + 64 hex digits, stored
//! only as their SHA-256.

use aws_lc_rs::{constant_time, digest, rand};

/// Prefix of every token, so a token is recognisable in a paste or a leak scan.
pub const TOKEN_PREFIX: &str = "hmk_";
const TOKEN_BYTES: usize = 32;

/// Why a token text was refused before any lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("enrollment token is malformed: expected `hmk_` followed by 64 hex digits")]
pub struct MalformedToken;

/// A new random token; returns `(text to show once, hash to store)`.
pub fn new_token() -> Result<(String, [u8; 32]), aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes)?;
    let text = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = token_hash(&text);
    Ok((text, hash))
}

/// Checks the token's shape and returns its hash.
pub fn parse_token(text: &str) -> Result<[u8; 32], MalformedToken> {
    let text = text.trim();
    let body = text.strip_prefix(TOKEN_PREFIX).ok_or(MalformedToken)?;
    if body.len() != 2 * TOKEN_BYTES
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(MalformedToken);
    }
    Ok(token_hash(text))
}

/// SHA-256 of the token text.
pub fn token_hash(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, text.as_bytes()).as_ref());
    out
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hash_stably() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(parse_token(&a).unwrap(), ha);
        assert!(hashes_equal(&ha, &token_hash(&a)));
        let mut tampered = a.clone().into_bytes();
        tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_ne!(parse_token(&tampered).unwrap(), ha);
        assert_eq!(parse_token("hmk_xyz"), Err(MalformedToken));
        assert_eq!(parse_token(&a.to_uppercase()), Err(MalformedToken));
    }
}
