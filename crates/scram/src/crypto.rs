//! The SCRAM-SHA-256 key derivation of RFC 5802 section 3, on aws-lc-rs.

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Error;

/// Output length of SHA-256 and HMAC-SHA-256, the length of every SCRAM key,
/// proof and signature.
pub(crate) const KEY_LEN: usize = 32;

pub(crate) type Key = [u8; KEY_LEN];

/// Computes HMAC-SHA-256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<Key> {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = Zeroizing::new([0; KEY_LEN]);
    out.copy_from_slice(tag.as_ref());
    out
}

pub(crate) fn sha256(data: &[u8]) -> Key {
    let hash = digest::digest(&digest::SHA256, data);
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(hash.as_ref());
    out
}

/// Computes SaltedPassword = Hi(password, salt, iterations), which is
/// PBKDF2 with HMAC-SHA-256 and a 32-byte output.
pub(crate) fn salted_password(
    password: &[u8],
    salt: &[u8],
    iterations: NonZeroU32,
) -> Zeroizing<Key> {
    let mut out = Zeroizing::new([0; KEY_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        out.as_mut(),
    );
    out
}

pub(crate) fn client_key(salted_password: &Key) -> Zeroizing<Key> {
    hmac_sha256(salted_password, b"Client Key")
}

pub(crate) fn server_key(salted_password: &Key) -> Zeroizing<Key> {
    hmac_sha256(salted_password, b"Server Key")
}

/// XORs two keys, as ClientProof = ClientKey XOR ClientSignature and its
/// inverse.
pub(crate) fn xor(a: &Key, b: &Key) -> Zeroizing<Key> {
    let mut out = Zeroizing::new([0; KEY_LEN]);
    for ((out, a), b) in out.iter_mut().zip(a).zip(b) {
        *out = a ^ b;
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Fills `out` from the system random number generator.
pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), Error> {
    aws_lc_rs::rand::fill(out).map_err(|_| Error::RandomUnavailable)
}
