//! Token strings: `ssv_<token id>_<secret>`. The id finds the record, the secret is checked
//! against its salted sha256 in constant time; the secret is shown once and never stored.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ssv_";

/// A token string split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenString {
    /// The public id.
    pub token_id: String,
    /// The secret part.
    pub secret: String,
}

/// A newly issued token: the string to hand out once, and what to store.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The full token, shown to its creator once.
    pub token: String,
    /// The public id.
    pub token_id: String,
    /// Salt, hex.
    pub salt: String,
    /// sha256(salt || secret), hex.
    pub hash: String,
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    // The OS random source failing is not recoverable for a credential store.
    if let Err(e) = getrandom::fill(&mut raw) {
        panic!("the operating system's random source failed: {e}");
    }
    hex::encode(raw)
}

/// A fresh random salt, hex.
pub fn new_salt() -> String {
    random_hex(16)
}

/// sha256(salt || secret), hex.
pub fn hash_secret(salt: &str, secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

impl TokenString {
    /// Splits a bearer string; `None` when it is not a sandserve token.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(PREFIX)?;
        let (token_id, secret) = rest.split_once('_')?;
        let hex_of =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex_of(token_id, 16) && hex_of(secret, 64)).then(|| Self {
            token_id: token_id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// Whether the secret matches a stored salt and hash (constant time).
    pub fn matches(&self, salt: &str, hash: &str) -> bool {
        secret_matches(&self.secret, salt, hash)
    }
}

/// Whether `secret` matches a stored salt and hash (constant time).
pub fn secret_matches(secret: &str, salt: &str, hash: &str) -> bool {
    hash_secret(salt, secret)
        .as_bytes()
        .ct_eq(hash.as_bytes())
        .into()
}

impl IssuedToken {
    /// Generates a new token.
    pub fn generate() -> Self {
        let token_id = random_hex(8);
        let secret = random_hex(32);
        let salt = new_salt();
        let hash = hash_secret(&salt, &secret);
        Self {
            token: format!("{PREFIX}{token_id}_{secret}"),
            token_id,
            salt,
            hash,
        }
    }
}

/// The first characters of a secret, safe to log.
pub fn redacted(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    format!("{shown}… ({} chars)", secret.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_verify() {
        let issued = IssuedToken::generate();
        let parsed = TokenString::parse(&issued.token).unwrap();
        assert_eq!(parsed.token_id, issued.token_id);
        assert!(parsed.matches(&issued.salt, &issued.hash));
        let mut wrong = parsed.clone();
        wrong.secret.replace_range(
            0..1,
            if wrong.secret.starts_with('0') {
                "1"
            } else {
                "0"
            },
        );
        assert!(!wrong.matches(&issued.salt, &issued.hash));
        assert!(TokenString::parse("Bearer nonsense").is_none());
        assert!(redacted("supersecret").starts_with("supe"));
    }
}
