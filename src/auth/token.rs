//! Tokens: made from 262 random bits with a prefix secret scanners can find, shown once,
//! stored as a SHA-256, and read from an `Authorization` header (raw or `Bearer`).
//!
//! The rule this module keeps: a plain token lives only in a [`PlainToken`], whose `Debug`
//! never prints it, and in the response that creates it.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Every cratedock token starts with this (a secret scanner's pattern:
/// `cratedock_[0-9A-Za-z]{44}`).
pub const TOKEN_PREFIX: &str = "cratedock_";
/// Base62 characters after the prefix: 44 × log2(62) ≈ 262 bits.
const SECRET_LEN: usize = 44;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A token in clear: made here, or read from a request.
pub struct PlainToken(String);

/// The SHA-256 of a token: what is stored and what identities are cached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// Why an `Authorization` header is not a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Scheme,
    NotOurs,
}

impl Malformed {
    pub fn detail(self) -> &'static str {
        match self {
            Self::Scheme => "the Authorization header must be the token itself or `Bearer <token>`",
            Self::NotOurs => {
                "the token is not a cratedock token (they start with `cratedock_`; was a token of another registry sent?)"
            }
        }
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random source works");
    buf
}

/// A random identifier of `bytes` bytes in lowercase hex (token and grant ids).
pub(super) fn random_id(bytes: usize) -> String {
    random_bytes::<16>()[..bytes.min(16)]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PlainToken {
    pub fn generate() -> Self {
        let mut secret = String::with_capacity(TOKEN_PREFIX.len() + SECRET_LEN);
        secret.push_str(TOKEN_PREFIX);
        while secret.len() < TOKEN_PREFIX.len() + SECRET_LEN {
            for b in random_bytes::<64>() {
                // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
                if b < 248 && secret.len() < TOKEN_PREFIX.len() + SECRET_LEN {
                    secret.push(BASE62[usize::from(b % 62)] as char);
                }
            }
        }
        Self(secret)
    }

    /// Reads a token from an `Authorization` header value (see [`token_in_header`]).
    pub fn from_header(value: &[u8]) -> Result<Self, Malformed> {
        token_in_header(value).map(|t| Self(t.to_owned()))
    }

    /// A token as written in a file or pasted: trimmed, with the right shape.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        well_formed(s).then(|| Self(s.to_owned()))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The token in clear, for the one response that shows it (or a file written 0600).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken(***)")
    }
}

/// The token in an `Authorization` header value: the token itself, or `Bearer` (any case) and
/// the token. The shape is checked before any lookup; nothing is copied.
pub fn token_in_header(value: &[u8]) -> Result<&str, Malformed> {
    // Bytes, not text: this runs on every request to a registry with auth.
    let value = value.trim_ascii();
    let token = match value.iter().position(|&b| b == b' ') {
        Some(i) if value[..i].eq_ignore_ascii_case(b"bearer") => value[i..].trim_ascii_start(),
        Some(_) => return Err(Malformed::Scheme),
        None => value,
    };
    match std::str::from_utf8(token) {
        Ok(t) if well_formed(t) => Ok(t),
        _ => Err(Malformed::NotOurs),
    }
}

fn well_formed(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX).is_some_and(|secret| {
        secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_prefix_and_262_bits() {
        let a = PlainToken::generate();
        let b = PlainToken::generate();
        assert!(a.expose().starts_with("cratedock_"));
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + SECRET_LEN);
        assert_ne!(a.expose(), b.expose());
        assert!(PlainToken::parse(a.expose()).is_some());
        assert_eq!(format!("{a:?}"), "PlainToken(***)");
        assert_eq!(a.hash().hex().len(), 64);
        assert_eq!(random_id(8).len(), 16);
    }

    #[test]
    fn headers_take_the_raw_token_or_bearer_in_any_case() {
        let t = PlainToken::generate();
        let raw = t.expose().to_owned();
        for value in [
            raw.clone(),
            format!("Bearer {raw}"),
            format!("bearer {raw}"),
            format!("BEARER  {raw} "),
        ] {
            let got = PlainToken::from_header(value.as_bytes()).unwrap();
            assert_eq!(got.hash(), t.hash(), "{value}");
        }
        for (value, why) in [
            (format!("Basic {raw}"), Malformed::Scheme),
            (format!("Token {raw}"), Malformed::Scheme),
            ("cio1234".to_owned(), Malformed::NotOurs),
            (format!("{raw}x"), Malformed::NotOurs),
            ("cratedock_short".to_owned(), Malformed::NotOurs),
            (String::new(), Malformed::NotOurs),
        ] {
            assert_eq!(
                PlainToken::from_header(value.as_bytes()).unwrap_err(),
                why,
                "{value}"
            );
        }
        let mut bad = raw.into_bytes();
        bad[15] = b'!';
        assert!(PlainToken::from_header(&bad).is_err());
    }
}
