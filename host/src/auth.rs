//! API keys: generated from the OS random source, shown once, stored only as SHA-256.
//!
//! A key is `tly_` (tenant) or `tly_admin_` (admin) followed by 32 random bytes in hex, so
//! it has 256 bits of entropy and is recognisable in a leaked-secret scan. Only its SHA-256
//! is kept. A request's key is found by hashing it and looking the hash up, so there is no
//! byte-by-byte comparison of secrets whose timing could leak a prefix: the lookup compares
//! hashes of an attacker's guesses, which tell nothing about the key. The one direct
//! comparison (the admin hash) is constant-time anyway, because it costs nothing.

use sha2::{Digest, Sha256};

/// The prefix of tenant keys.
pub const TENANT_KEY_PREFIX: &str = "tly_";

/// The prefix of admin keys.
pub const ADMIN_KEY_PREFIX: &str = "tly_admin_";

/// The OS could not give us random bytes.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// A new tenant key.
pub fn new_tenant_key() -> Result<String, RandomError> {
    Ok(format!("{TENANT_KEY_PREFIX}{}", random_hex(32)?))
}

/// A new admin key.
pub fn new_admin_key() -> Result<String, RandomError> {
    Ok(format!("{ADMIN_KEY_PREFIX}{}", random_hex(32)?))
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| RandomError(error.to_string()))?;
    Ok(hex::encode(buffer))
}

/// The SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares two hashes in time independent of where they differ.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0_u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The key of an `Authorization: Bearer <key>` header value, `None` for another scheme.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The user name of an `Authorization: Basic` header: how Segment sends its write key (the
/// key as the user name, no password).
pub fn basic_user(header: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_user_obeyed() {
        // "tly_key:" as Segment sends a write key.
        assert_eq!(basic_user("Basic dGx5X2tleTo=").as_deref(), Some("tly_key"));
    }

    #[test]
    fn basic_user_violated() {
        for header in ["Bearer dGx5X2tleTo=", "Basic !!!", "Basic Og==", "Basic"] {
            assert_eq!(basic_user(header), None, "{header}");
        }
    }

    #[test]
    fn keys_are_prefixed_random_and_hash_stably() {
        let a = new_tenant_key().unwrap();
        let b = new_tenant_key().unwrap();
        assert!(a.starts_with(TENANT_KEY_PREFIX) && a.len() == 4 + 64);
        assert_ne!(a, b);
        assert!(new_admin_key().unwrap().starts_with(ADMIN_KEY_PREFIX));
        assert!(hashes_equal(&hash_key(&a), &hash_key(&a)));
        assert!(!hashes_equal(&hash_key(&a), &hash_key(&b)));
    }

    #[test]
    fn bearer_tokens_are_read_and_other_schemes_refused() {
        assert_eq!(bearer_token("Bearer tly_x"), Some("tly_x"));
        assert_eq!(bearer_token("bearer  tly_x "), Some("tly_x"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("tly_x"), None);
    }
}
