//! Time-based one-time passwords: TOTP (RFC 6238) on top of HOTP (RFC 4226).
//!
//! A TOTP code is the HOTP code whose counter is the time step
//! `floor(unix_secs / period)`, with the Unix epoch as the start time (T0 = 0).
//! [`verify`] checks a submitted code against the steps around the current one
//! and reports replays of steps that were already accepted. The caller stores
//! the last accepted step per secret and passes it back on the next call.

use std::fmt;
use std::str::FromStr;

use hmac::{EagerHash, Hmac, KeyInit, Mac};
use rand::TryRng;
use rand::rngs::{SysError, SysRng};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::base32;

/// Error returned when TOTP parameters, secrets or algorithm names are invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TotpError {
    /// A digit count outside [`TotpParams::MIN_DIGITS`]..=[`TotpParams::MAX_DIGITS`].
    #[error(
        "invalid TOTP digit count {0}: expected {min} to {max}",
        min = TotpParams::MIN_DIGITS,
        max = TotpParams::MAX_DIGITS
    )]
    InvalidDigits(u32),

    /// A period outside [`TotpParams::MIN_PERIOD`]..=[`TotpParams::MAX_PERIOD`] seconds.
    #[error(
        "invalid TOTP period {0} s: expected {min} to {max} seconds",
        min = TotpParams::MIN_PERIOD,
        max = TotpParams::MAX_PERIOD
    )]
    InvalidPeriod(u64),

    /// An algorithm name other than SHA1, SHA256 or SHA512 in any letter case.
    #[error("unknown TOTP algorithm {0:?}: expected SHA1, SHA256 or SHA512 (any letter case)")]
    UnknownAlgorithm(String),

    /// A secret whose base32 text does not decode.
    #[error("invalid TOTP secret: {0}")]
    InvalidSecret(base32::DecodeError),

    /// The operating system's random number generator failed.
    #[error("failed to read random bytes from the operating system: {0}")]
    Random(SysError),
}

// The messages above include the wrapped error, so `From` is written by hand
// instead of with `#[from]`, which would also report it as `source()` and
// print it twice in error chains.
impl From<base32::DecodeError> for TotpError {
    fn from(error: base32::DecodeError) -> Self {
        Self::InvalidSecret(error)
    }
}

/// HMAC hash function used to compute codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA-1, the RFC 4226 function and the default of authenticator apps.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// Every algorithm, in the order of [`Algorithm::as_str`] in error messages.
    pub const ALL: [Self; 3] = [Self::Sha1, Self::Sha256, Self::Sha512];

    /// Returns the name used by the `algorithm` parameter of `otpauth://` URIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    /// Returns the secret length in bytes that [`TotpSecret::generate`] uses:
    /// the hash output size, which is 20, 32 or 64 bytes.
    ///
    /// RFC 4226 section 4 recommends a 160-bit (20-byte) secret, and the
    /// RFC 6238 reference code uses 32- and 64-byte seeds for SHA-256 and SHA-512.
    pub const fn recommended_secret_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = TotpError;

    /// Parses `SHA1`, `SHA256` or `SHA512` in any letter case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| TotpError::UnknownAlgorithm(name.to_owned()))
    }
}

/// TOTP parameters shared by the server and the authenticator app.
///
/// [`TotpParams::new`] validates the fields. The fields are public, so values
/// built without it may be out of range, and the functions of this module
/// document what they do with such values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    /// HMAC hash function.
    pub algorithm: Algorithm,
    /// Number of decimal digits in a code.
    pub digits: u32,
    /// Length of a time step in seconds.
    pub period: u64,
}

impl TotpParams {
    /// Minimum digit count. RFC 4226 section 5.3 requires at least 6 digits.
    pub const MIN_DIGITS: u32 = 6;
    /// Maximum digit count, the largest that RFC 4226 section 5.3 names.
    pub const MAX_DIGITS: u32 = 8;
    /// Minimum period in seconds.
    pub const MIN_PERIOD: u64 = 1;
    /// Maximum period in seconds (5 minutes).
    pub const MAX_PERIOD: u64 = 300;

    /// Creates parameters after checking `digits` and `period` (seconds)
    /// against the limits above.
    pub fn new(algorithm: Algorithm, digits: u32, period: u64) -> Result<Self, TotpError> {
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits) {
            return Err(TotpError::InvalidDigits(digits));
        }
        if !(Self::MIN_PERIOD..=Self::MAX_PERIOD).contains(&period) {
            return Err(TotpError::InvalidPeriod(period));
        }
        Ok(Self {
            algorithm,
            digits,
            period,
        })
    }
}

impl Default for TotpParams {
    /// SHA1, 6 digits and 30 seconds: the defaults of the `otpauth://` format.
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

/// Shared TOTP secret key, zeroed in memory when dropped.
///
/// `Debug` prints `TotpSecret(<redacted>)`. The methods whose names start with
/// `danger_` expose the key, so their results must not be logged.
#[derive(Clone)]
pub struct TotpSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl TotpSecret {
    /// Generates a random secret of [`Algorithm::recommended_secret_len`] bytes
    /// from the operating system's random number generator.
    pub fn generate(algorithm: Algorithm) -> Result<Self, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; algorithm.recommended_secret_len()]);
        SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(TotpError::Random)?;
        Ok(Self { bytes })
    }

    /// Wraps existing key bytes.
    ///
    /// Any length is accepted, the empty key included, because HMAC accepts
    /// keys of any length. RFC 4226 section 4 requires at least 16 bytes (128 bits)
    /// and recommends 20.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Decodes a base32 secret as printed by authenticator setup pages, with
    /// the leniency of [`base32::decode`].
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        Ok(Self::from_bytes(base32::decode(text)?))
    }

    /// Returns the raw key bytes.
    pub fn danger_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Encodes the key as unpadded uppercase base32, the `secret` parameter of
    /// `otpauth://` URIs. The returned `String` is not zeroed on drop.
    pub fn danger_to_base32(&self) -> String {
        base32::encode(&self.bytes)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// Computes the RFC 4226 HOTP value of `counter` as a number below `10^digits`.
///
/// The HMAC of the big-endian counter is reduced by dynamic truncation to a
/// 31-bit value, which is then taken modulo `10^digits`. For `digits` of 10
/// or more the 31-bit value is returned unreduced, because it has at most
/// 10 digits.
pub fn hotp(key: &[u8], counter: u64, algorithm: Algorithm, digits: u32) -> u32 {
    let message = counter.to_be_bytes();
    let truncated = match algorithm {
        Algorithm::Sha1 => truncated_hmac::<Sha1>(key, &message),
        Algorithm::Sha256 => truncated_hmac::<Sha256>(key, &message),
        Algorithm::Sha512 => truncated_hmac::<Sha512>(key, &message),
    };
    match 10u32.checked_pow(digits) {
        Some(modulus) => truncated % modulus,
        None => truncated,
    }
}

/// Computes HMAC-`D` of `message` and reduces it with [`dynamic_truncation`].
fn truncated_hmac<D>(key: &[u8], message: &[u8]) -> u32
where
    D: EagerHash,
    Hmac<D>: KeyInit + Mac,
{
    // HMAC hashes keys longer than its block size and pads shorter ones, so
    // hmac 0.13 returns `Ok` for every key length.
    let Ok(mac) = <Hmac<D> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    dynamic_truncation(&mac.chain_update(message).finalize().into_bytes())
}

/// Applies RFC 4226 dynamic truncation to an HMAC value of at least 20 bytes.
/// The low 4 bits of the last byte select an offset, and the 4 bytes from
/// there, read big-endian with the top bit cleared, form the 31-bit result.
fn dynamic_truncation(digest: &[u8]) -> u32 {
    // The smallest digest (SHA-1) has 20 bytes, and the largest offset is 15,
    // so the indices below stay within bounds for every supported algorithm.
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([
        digest[offset],
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    word & 0x7fff_ffff
}

/// Returns the TOTP time step of `unix_secs`, counted from the Unix epoch.
///
/// A period of 0, which [`TotpParams::new`] rejects, counts as 1 second.
pub fn time_step(params: &TotpParams, unix_secs: u64) -> u64 {
    unix_secs / params.period.max(1)
}

/// Computes the TOTP code for `unix_secs`, zero-padded to `params.digits`.
pub fn code_at(secret: &TotpSecret, params: &TotpParams, unix_secs: u64) -> String {
    let step = time_step(params, unix_secs);
    let code = hotp(secret.danger_bytes(), step, params.algorithm, params.digits);
    let width = usize::try_from(params.digits).unwrap_or(usize::MAX);
    format!("{code:0width$}")
}

/// Result of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The code matches `step`, which is later than the last accepted step.
    /// The caller must store `step` as the new last accepted step.
    Accepted { step: u64 },
    /// The code matches `step`, but `step` is at or before the last accepted
    /// step, so the code was already used or is older than a used one.
    Replayed { step: u64 },
    /// The code is malformed or matches no step in the window.
    Invalid,
}

/// Verifies a submitted code at time `unix_secs`.
///
/// The code must consist of exactly `params.digits` ASCII digits, with no
/// spaces. It is compared with the codes of every step from `t - drift_steps`
/// to `t + drift_steps`, where `t` is the current step. Steps below 0 or above
/// `u64::MAX` are left out. Each comparison is constant time, every step in
/// the window is computed whether or not an earlier one matched, and the
/// matched step is chosen with constant-time selection. The cost grows
/// linearly with `drift_steps`, so callers should keep it small (1 is usual).
///
/// When several steps match, the current step wins, then the step closest
/// to it, then the earlier of two equally close steps. A matched step at or
/// before `last_accepted_step` is reported as [`Verification::Replayed`].
pub fn verify(
    secret: &TotpSecret,
    params: &TotpParams,
    code: &str,
    unix_secs: u64,
    last_accepted_step: Option<u64>,
    drift_steps: u64,
) -> Verification {
    let Some(submitted) = parse_code(code, params.digits) else {
        return Verification::Invalid;
    };
    let current = time_step(params, unix_secs);

    let mut found = Choice::from(0);
    let mut matched_step: u64 = 0;
    for distance in 0..=drift_steps {
        let earlier = current.checked_sub(distance);
        let later = if distance == 0 {
            None
        } else {
            current.checked_add(distance)
        };
        for step in [earlier, later].into_iter().flatten() {
            let expected = u64::from(hotp(
                secret.danger_bytes(),
                step,
                params.algorithm,
                params.digits,
            ));
            let is_match = expected.ct_eq(&submitted);
            // Only the first match in preference order is kept.
            matched_step.conditional_assign(&step, is_match & !found);
            found |= is_match;
        }
    }

    if !bool::from(found) {
        return Verification::Invalid;
    }
    match last_accepted_step {
        Some(last) if matched_step <= last => Verification::Replayed { step: matched_step },
        _ => Verification::Accepted { step: matched_step },
    }
}

/// Parses a code of exactly `digits` ASCII digits into its numeric value.
/// Returns `None` for any other text, or when the value does not fit in `u64`.
fn parse_code(code: &str, digits: u32) -> Option<u64> {
    if usize::try_from(digits).ok() != Some(code.len()) {
        return None;
    }
    code.bytes().try_fold(0u64, |value, byte| {
        if !byte.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
    })
}

/// Builds an `otpauth://totp/` URI in the Key Uri Format of authenticator apps,
/// usually shown to the user as a QR code.
///
/// The label is `ISSUER:ACCOUNT` and the `issuer` parameter repeats the issuer.
/// Both are percent-encoded as UTF-8, keeping only the RFC 3986 unreserved
/// characters `A-Z a-z 0-9 - . _ ~` as they are. An empty `issuer` leaves out
/// the label prefix and the `issuer` parameter. The URI contains the secret.
///
/// NOTE: the Key Uri Format forbids colons in the issuer and the account name.
/// A colon is encoded as `%3A`, but some apps may still split the label there.
pub fn otpauth_uri(
    issuer: &str,
    account: &str,
    secret: &TotpSecret,
    params: &TotpParams,
) -> String {
    let account = percent_encode(account);
    let secret = secret.danger_to_base32();
    let algorithm = params.algorithm.as_str();
    let digits = params.digits;
    let period = params.period;
    if issuer.is_empty() {
        return format!(
            "otpauth://totp/{account}?secret={secret}\
             &algorithm={algorithm}&digits={digits}&period={period}"
        );
    }
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm={algorithm}&digits={digits}&period={period}"
    )
}

/// Percent-encodes every byte of `text` except the RFC 3986 unreserved
/// characters, with uppercase hexadecimal digits.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}
