//! The server's stored form of a SCRAM-SHA-256 password.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

use crate::crypto::{self, KEY_LEN, Key};
use crate::{Error, message, password};

/// Default PBKDF2 iteration count, the one PostgreSQL uses for
/// `scram_iterations` (PostgreSQL 16) and for every password in earlier
/// versions.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Length in bytes of the random salt of [`StoredCredential::generate`], the
/// same as PostgreSQL's.
pub const DEFAULT_SALT_LEN: usize = 16;

const PREFIX: &str = "SCRAM-SHA-256$";

/// Server-side record of one SCRAM-SHA-256 password: enough to verify a
/// client's proof and to sign the server-final-message, but not the password.
///
/// The text form is PostgreSQL's `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` with standard
/// base64 for the binary parts. `Debug` prints the iteration count and salt
/// only, and the keys are zeroed on drop.
#[derive(Clone)]
pub struct StoredCredential {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl StoredCredential {
    /// Derives the credential of `password` with the given salt and
    /// iteration count.
    ///
    /// Fails on an empty salt, a zero iteration count, or a password that
    /// is not printable ASCII.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Result<Self, Error> {
        let password = password::prepare(password)?;
        let iterations = NonZeroU32::new(iterations)
            .ok_or(Error::InvalidCredential("the iteration count is zero"))?;
        if salt.is_empty() {
            return Err(Error::InvalidCredential("the salt is empty"));
        }
        let salted_password = crypto::salted_password(password, salt, iterations);
        Ok(StoredCredential {
            iterations,
            salt: salt.to_vec(),
            stored_key: crypto::sha256(crypto::client_key(&salted_password).as_ref()),
            server_key: *crypto::server_key(&salted_password),
        })
    }

    /// Derives the credential of `password` with a fresh random salt of
    /// [`DEFAULT_SALT_LEN`] bytes and the given iteration count, as
    /// PostgreSQL does when it stores a new password.
    pub fn generate(password: &str, iterations: u32) -> Result<Self, Error> {
        let mut salt = [0; DEFAULT_SALT_LEN];
        crypto::fill_random(&mut salt)?;
        Self::derive(password, &salt, iterations)
    }

    /// Builds a credential from its four parts.
    pub fn from_parts(
        iterations: u32,
        salt: &[u8],
        stored_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    ) -> Result<Self, Error> {
        let iterations = NonZeroU32::new(iterations)
            .ok_or(Error::InvalidCredential("the iteration count is zero"))?;
        if salt.is_empty() {
            return Err(Error::InvalidCredential("the salt is empty"));
        }
        Ok(StoredCredential {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        })
    }

    /// Parses PostgreSQL's text form,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    ///
    /// The iteration count must be a positive decimal number without a sign
    /// or leading zeros, the salt non-empty base64, and each key base64 of
    /// exactly 32 bytes. Errors name the part that is wrong but never
    /// contain the text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let rest = text.strip_prefix(PREFIX).ok_or(Error::InvalidCredential(
            "the text does not start with SCRAM-SHA-256$",
        ))?;
        let (parameters, keys) = rest.split_once('$').ok_or(Error::InvalidCredential(
            "missing '$' between the salt and the keys",
        ))?;
        let (iterations, salt) = parameters.split_once(':').ok_or(Error::InvalidCredential(
            "missing ':' between the iteration count and the salt",
        ))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(Error::InvalidCredential(
            "missing ':' between StoredKey and ServerKey",
        ))?;

        let iterations = message::parse_positive_number(iterations)
            .ok_or(Error::InvalidCredential("invalid iteration count"))?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| Error::InvalidCredential("the salt is not valid base64"))?;
        let stored_key = decode_key(stored_key).ok_or(Error::InvalidCredential(
            "StoredKey is not base64 of 32 bytes",
        ))?;
        let server_key = decode_key(server_key).ok_or(Error::InvalidCredential(
            "ServerKey is not base64 of 32 bytes",
        ))?;
        Self::from_parts(iterations, &salt, stored_key, server_key)
    }

    /// Formats the credential in PostgreSQL's text form, which
    /// [`StoredCredential::parse`] reads back. The result lets anyone who
    /// reads it impersonate the server, so store it like a password hash.
    pub fn format(&self) -> String {
        format!(
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Checks `password` against the credential by deriving its keys again
    /// and comparing them in constant time. A password that is not printable
    /// ASCII never matches.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(candidate) = Self::derive(password, &self.salt, self.iterations.get()) else {
            return false;
        };
        let stored = crypto::constant_time_eq(&candidate.stored_key, &self.stored_key);
        let server = crypto::constant_time_eq(&candidate.server_key, &self.server_key);
        stored & server
    }

    /// PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// Salt of the PBKDF2 derivation.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// StoredKey = SHA-256(ClientKey), which verifies client proofs.
    pub fn stored_key(&self) -> &[u8; KEY_LEN] {
        &self.stored_key
    }

    /// ServerKey = HMAC(SaltedPassword, "Server Key"), which signs the
    /// server-final-message.
    pub fn server_key(&self) -> &[u8; KEY_LEN] {
        &self.server_key
    }
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

impl Drop for StoredCredential {
    fn drop(&mut self) {
        self.stored_key.zeroize();
        self.server_key.zeroize();
    }
}

fn decode_key(text: &str) -> Option<Key> {
    let bytes = zeroize::Zeroizing::new(STANDARD.decode(text).ok()?);
    bytes.as_slice().try_into().ok()
}
