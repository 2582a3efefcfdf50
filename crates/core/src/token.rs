//! API tokens: the format, generation, parsing and the stored hash.
//!
//! A token reads `sgt_<id>_<secret><checksum>`:
//! - `sgt_` is a fixed prefix so secret scanners can find leaked tokens;
//! - `<id>` is 12 base62 characters naming the token (public, listed by the
//!   CLI and written to the audit trail);
//! - `<secret>` is 32 base62 characters from the OS random generator
//!   (about 190 bits);
//! - `<checksum>` is the CRC-32 of everything before it, as 6 base62
//!   characters, so a scanner can tell a real token from a lookalike
//!   without asking the gateway.
//!
//! Only the SHA-256 of the whole token is stored. The token carries enough
//! entropy that a slow password hash would add cost and no protection.

use std::fmt;

use rand::{Rng, RngExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

pub const TOKEN_PREFIX: &str = "sgt_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented string is not a well-formed token. The messages never
/// echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token does not start with the prefix {TOKEN_PREFIX}")]
    MissingPrefix,
    #[error("token has {0} characters, expected {TOKEN_LEN}")]
    BadLength(usize),
    #[error("token contains a character outside base62")]
    BadCharacter,
    #[error("token checksum does not match: the token was mistyped or truncated")]
    BadChecksum,
}

/// The public name of a token, safe to log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

impl TokenId {
    pub fn new(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a whole token; equality runs in constant time.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenHash {}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// A whole API token as presented by a client or just generated.
#[derive(Clone, Debug)]
pub struct ApiToken {
    id: TokenId,
    secret: SecretString,
}

impl ApiToken {
    /// Generates a new token with a random id and secret.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let id = random_base62(&mut rng, ID_LEN);
        let secret = random_base62(&mut rng, SECRET_LEN);
        let body = format!("{TOKEN_PREFIX}{id}_{secret}");
        let whole = format!("{body}{}", checksum(&body));
        Self {
            id: TokenId(id),
            secret: SecretString::new(whole),
        }
    }

    /// Parses a presented token, checking prefix, length, alphabet and
    /// checksum. Nothing here depends on stored state.
    pub fn parse(presented: &str) -> Result<Self, TokenError> {
        let rest = presented
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::MissingPrefix)?;
        if presented.len() != TOKEN_LEN {
            return Err(TokenError::BadLength(presented.len()));
        }
        let (id, tail) = rest
            .split_at_checked(ID_LEN)
            .ok_or(TokenError::BadCharacter)?;
        let tail = tail.strip_prefix('_').ok_or(TokenError::BadCharacter)?;
        if !id
            .bytes()
            .chain(tail.bytes())
            .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(TokenError::BadCharacter);
        }
        let body_len = TOKEN_LEN - CHECKSUM_LEN;
        let (body, sum) = presented
            .split_at_checked(body_len)
            .ok_or(TokenError::BadLength(presented.len()))?;
        if checksum(body).as_bytes().ct_eq(sum.as_bytes()).unwrap_u8() != 1 {
            return Err(TokenError::BadChecksum);
        }
        Ok(Self {
            id: TokenId(id.to_owned()),
            secret: SecretString::new(presented.to_owned()),
        })
    }

    pub fn id(&self) -> &TokenId {
        &self.id
    }

    pub fn hash(&self) -> TokenHash {
        let digest = Sha256::digest(self.secret.danger_expose().as_bytes());
        TokenHash(digest.into())
    }

    /// The whole token text, for printing once at issue time.
    pub fn danger_expose(&self) -> &str {
        self.secret.danger_expose()
    }
}

/// A random base62 string of `len` characters from the thread's
/// cryptographically secure generator, for ids that must not be guessed.
pub fn random_id(len: usize) -> String {
    random_base62(&mut rand::rng(), len)
}

fn random_base62(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

fn checksum(body: &str) -> String {
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_parses_back() {
        let token = ApiToken::generate();
        let parsed = ApiToken::parse(token.danger_expose()).unwrap();
        assert_eq!(parsed.id(), token.id());
        assert_eq!(parsed.hash(), token.hash());
        assert!(token.danger_expose().starts_with("sgt_"));
        assert_eq!(token.danger_expose().len(), TOKEN_LEN);
    }

    #[test]
    fn altered_token_fails_checksum() {
        let token = ApiToken::generate();
        let text = token.danger_expose();
        let mut bytes = text.as_bytes().to_vec();
        let at = TOKEN_PREFIX.len() + ID_LEN + 5;
        bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            ApiToken::parse(&altered).unwrap_err(),
            TokenError::BadChecksum
        );
    }

    #[test]
    fn malformed_tokens_rejected() {
        assert_eq!(
            ApiToken::parse("abc").unwrap_err(),
            TokenError::MissingPrefix
        );
        assert_eq!(
            ApiToken::parse("sgt_abc").unwrap_err(),
            TokenError::BadLength(7)
        );
        let token = ApiToken::generate();
        let spaced = token
            .danger_expose()
            .replacen('_', "-", 2)
            .replacen('-', "_", 1);
        assert_eq!(
            ApiToken::parse(&spaced).unwrap_err(),
            TokenError::BadCharacter
        );
        let unicode = format!("sgt_{}", "é".repeat((TOKEN_LEN - 4) / 2));
        assert!(ApiToken::parse(&unicode).is_err());
    }

    #[test]
    fn debug_never_shows_secret() {
        let token = ApiToken::generate();
        let printed = format!("{token:?} {:?}", token.hash());
        assert!(!printed.contains(&token.danger_expose()[20..]));
    }
}
