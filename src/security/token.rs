//! API tokens: their text form, their generation, and the salted hash that is all the
//! server keeps of them.
//!
//! A token reads `qt_{id}_{secret}`: `id` (12 hex characters) names the token in lists, logs
//! and the audit trail and is not secret; `secret` is 32 random bytes in URL-safe base64. The
//! server stores `SHA-256(salt || secret)` with a random 16-byte salt per token and compares
//! in constant time. A slow password hash (argon2) is not needed: the secret has 256 bits of
//! entropy, so there is nothing to guess from its hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "qt_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
const SALT_BYTES: usize = 16;

/// The operating system's random generator failed (it does not, in practice).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(bytes)
}

/// A token as presented by a client, split into its parts (nothing checked but the shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl<'a> Presented<'a> {
    /// Splits `qt_{id}_{secret}`; `None` when the text cannot be a token.
    pub fn parse(text: &'a str) -> Option<Presented<'a>> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let id_ok = id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let secret_ok = !secret.is_empty() && secret.len() <= 64;
        (id_ok && secret_ok).then_some(Presented { id, secret })
    }
}

/// A newly generated token: the text handed to its owner once, and what the server keeps.
#[derive(Debug, Clone)]
pub struct Generated {
    pub id: String,
    /// The whole token (`qt_{id}_{secret}`); shown once, never stored.
    pub token: String,
    pub salt: [u8; SALT_BYTES],
    pub hash: [u8; 32],
}

/// Generates a token.
pub fn generate() -> Result<Generated, RandomError> {
    let id = hex(&random::<ID_BYTES>()?);
    let secret = URL_SAFE_NO_PAD.encode(random::<SECRET_BYTES>()?);
    let salt = random::<SALT_BYTES>()?;
    let hash = hash(&salt, &secret);
    Ok(Generated {
        token: format!("{PREFIX}{id}_{secret}"),
        id,
        salt,
        hash,
    })
}

/// `SHA-256(salt || secret)`.
pub fn hash(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

/// Whether `secret` hashes to `expected` with `salt`, compared in constant time.
pub fn matches(salt: &[u8], secret: &str, expected: &[u8]) -> bool {
    hash(salt, secret).ct_eq(expected).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses lower- or upper-case hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_matches_its_own_hash_only() {
        let g = generate().unwrap();
        let p = Presented::parse(&g.token).unwrap();
        assert_eq!(p.id, g.id);
        assert!(matches(&g.salt, p.secret, &g.hash));
        let other = generate().unwrap();
        assert!(!matches(
            &g.salt,
            Presented::parse(&other.token).unwrap().secret,
            &g.hash
        ));
        assert!(
            !matches(&other.salt, p.secret, &g.hash),
            "the salt takes part"
        );
    }

    #[test]
    fn two_tokens_never_share_an_id_or_a_secret() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 3 + 12 + 1 + 43);
    }

    #[test]
    fn text_that_cannot_be_a_token_is_refused_before_any_lookup() {
        for bad in [
            "",
            "qt_",
            "qt_abc_def",
            "qt_0123456789ab_",
            "xx_0123456789ab_secret",
            "qt_0123456789zz_secret",
        ] {
            assert_eq!(Presented::parse(bad), None, "{bad:?}");
        }
        assert!(Presented::parse("qt_0123456789ab_secret").is_some());
    }

    #[test]
    fn hex_round_trips_and_rejects_odd_or_foreign_text() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            [0, 1, 0xab, 0xff]
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
