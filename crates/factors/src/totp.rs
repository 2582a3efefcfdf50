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
    /// HMAC-SHA-1, the function of RFC 4226 and the default of `otpauth://` URIs.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// Every algorithm, from SHA1 to SHA512.
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
/// linearly with `drift_steps`, so callers should keep it small.
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;
    use std::io::ErrorKind;
    use std::process::Command;

    /// RFC 4226 Appendix D, copied into the crate so tests need no outside files.
    const RFC4226_VECTORS: &str = include_str!("../testdata/rfc4226-hotp.json");
    /// RFC 6238 Appendix B, with one seed per algorithm.
    const RFC6238_VECTORS: &str = include_str!("../testdata/rfc6238-totp.json");

    /// The 20-byte secret of RFC 4226 Appendix D and RFC 6238 Appendix B.
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    /// A time inside step 37037036 with 30-second steps (an RFC 6238 table row).
    const NOW: u64 = 1_111_111_109;
    const NOW_STEP: u64 = 37_037_036;

    #[derive(Deserialize)]
    struct HotpVectors {
        secret_hex: String,
        digits: u32,
        vectors: Vec<HotpVector>,
    }

    #[derive(Deserialize)]
    struct HotpVector {
        count: u64,
        hmac_sha1_hex: String,
        truncated_decimal: u32,
        hotp_6_digits: String,
    }

    #[derive(Deserialize)]
    struct TotpVectors {
        seeds: HashMap<String, Seed>,
        time_step_seconds: u64,
        #[serde(rename = "T0")]
        t0: u64,
        digits: u32,
        vectors: Vec<TotpVector>,
    }

    #[derive(Deserialize)]
    struct Seed {
        hex: String,
    }

    #[derive(Deserialize)]
    struct TotpVector {
        unix_time: u64,
        #[serde(rename = "T_hex")]
        t_hex: String,
        mode: String,
        totp_8_digits: String,
    }

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_SECRET.to_vec())
    }

    fn code_for_step(secret: &TotpSecret, params: &TotpParams, step: u64) -> String {
        code_at(secret, params, step * params.period)
    }

    #[test]
    fn hotp_matches_rfc4226_appendix_d() {
        let data: HotpVectors = serde_json::from_str(RFC4226_VECTORS).unwrap();
        let key = hex::decode(&data.secret_hex).unwrap();
        assert_eq!(key, RFC_SECRET);
        assert_eq!(data.vectors.len(), 10);
        for vector in &data.vectors {
            let code = hotp(&key, vector.count, Algorithm::Sha1, data.digits);
            assert_eq!(
                format!("{code:06}"),
                vector.hotp_6_digits,
                "count {}",
                vector.count
            );
        }
    }

    #[test]
    fn truncation_matches_rfc4226_intermediate_values() {
        let data: HotpVectors = serde_json::from_str(RFC4226_VECTORS).unwrap();
        let key = hex::decode(&data.secret_hex).unwrap();
        for vector in &data.vectors {
            let hmac = hex::decode(&vector.hmac_sha1_hex).unwrap();
            assert_eq!(
                dynamic_truncation(&hmac),
                vector.truncated_decimal,
                "count {}",
                vector.count
            );
            // With 10 or more digits `hotp` returns the truncated value unreduced.
            assert_eq!(
                hotp(&key, vector.count, Algorithm::Sha1, 10),
                vector.truncated_decimal,
                "count {}",
                vector.count
            );
        }
    }

    #[test]
    fn code_at_matches_rfc6238_appendix_b() {
        let data: TotpVectors = serde_json::from_str(RFC6238_VECTORS).unwrap();
        assert_eq!(data.t0, 0);
        assert_eq!(data.vectors.len(), 18);
        for vector in &data.vectors {
            let algorithm: Algorithm = vector.mode.parse().unwrap();
            let seed = hex::decode(&data.seeds[algorithm.as_str()].hex).unwrap();
            assert_eq!(seed.len(), algorithm.recommended_secret_len());
            let secret = TotpSecret::from_bytes(seed);
            let params = TotpParams::new(algorithm, data.digits, data.time_step_seconds).unwrap();
            let context = format!("{} at {}", vector.mode, vector.unix_time);

            let expected_step = u64::from_str_radix(&vector.t_hex, 16).unwrap();
            assert_eq!(
                time_step(&params, vector.unix_time),
                expected_step,
                "{context}"
            );
            assert_eq!(
                code_at(&secret, &params, vector.unix_time),
                vector.totp_8_digits,
                "{context}"
            );
        }
    }

    #[test]
    fn code_at_matches_oathtool() {
        let times = [
            0,
            59,
            1_111_111_109,
            1_234_567_890,
            2_000_000_000,
            20_000_000_000,
        ];
        for algorithm in Algorithm::ALL {
            let secret = TotpSecret::generate(algorithm).unwrap();
            for (digits, period) in [(6, 30), (7, 1), (8, 60)] {
                let params = TotpParams::new(algorithm, digits, period).unwrap();
                for unix_secs in times {
                    assert_eq!(
                        code_at(&secret, &params, unix_secs),
                        oathtool_totp(&secret, &params, unix_secs),
                        "{algorithm}, {digits} digits, {period} s period, at {unix_secs}"
                    );
                }
            }
        }
    }

    /// Runs oathtool (OATH Toolkit), an independent TOTP implementation.
    fn oathtool_totp(secret: &TotpSecret, params: &TotpParams, unix_secs: u64) -> String {
        let output = Command::new("oathtool")
            .arg(format!("--totp={}", params.algorithm.as_str()))
            .arg("--base32")
            .arg(format!("--digits={}", params.digits))
            .arg(format!("--time-step-size={}s", params.period))
            .arg(format!("--now=@{unix_secs}"))
            .arg(secret.danger_to_base32())
            .output();
        let output = match output {
            Ok(output) => output,
            Err(error) if error.kind() == ErrorKind::NotFound => panic!(
                "oathtool not found: install the Debian package oathtool \
                 (apt-get install oathtool) to run this test"
            ),
            Err(error) => panic!("failed to run oathtool: {error}"),
        };
        assert!(
            output.status.success(),
            "oathtool failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn code_at_pads_leading_zeros() {
        let secret = rfc_secret();
        let eight = TotpParams::new(Algorithm::Sha1, 8, 30).unwrap();
        assert_eq!(code_at(&secret, &eight, NOW), "07081804");
        let six = TotpParams::default();
        assert_eq!(code_at(&secret, &six, NOW), "081804");
    }

    #[test]
    fn time_step_counts_periods_from_epoch() {
        let params = TotpParams::default();
        assert_eq!(time_step(&params, 0), 0);
        assert_eq!(time_step(&params, 29), 0);
        assert_eq!(time_step(&params, 30), 1);
        assert_eq!(time_step(&params, NOW), NOW_STEP);
        let zero_period = TotpParams {
            period: 0,
            ..TotpParams::default()
        };
        assert_eq!(time_step(&zero_period, 42), 42);
    }

    #[test]
    fn algorithm_parses_any_letter_case() {
        let cases = [
            ("sha1", Algorithm::Sha1),
            ("SHA1", Algorithm::Sha1),
            ("Sha256", Algorithm::Sha256),
            ("SHA256", Algorithm::Sha256),
            ("sHa512", Algorithm::Sha512),
        ];
        for (name, algorithm) in cases {
            assert_eq!(name.parse::<Algorithm>(), Ok(algorithm), "{name}");
        }
        for algorithm in Algorithm::ALL {
            assert_eq!(algorithm.as_str().parse::<Algorithm>(), Ok(algorithm));
            assert_eq!(algorithm.to_string(), algorithm.as_str());
        }
    }

    #[test]
    fn unknown_algorithm_error_lists_choices() {
        for name in ["md5", "SHA-1", "sha384", "", " sha1"] {
            assert_eq!(
                name.parse::<Algorithm>(),
                Err(TotpError::UnknownAlgorithm(name.to_owned())),
                "{name:?}"
            );
        }
        let message = "md5".parse::<Algorithm>().unwrap_err().to_string();
        assert!(message.contains("\"md5\""), "{message}");
        assert!(message.contains("SHA1, SHA256 or SHA512"), "{message}");
    }

    #[test]
    fn params_new_rejects_out_of_range() {
        assert_eq!(
            TotpParams::new(Algorithm::Sha1, 5, 30),
            Err(TotpError::InvalidDigits(5))
        );
        assert_eq!(
            TotpParams::new(Algorithm::Sha1, 9, 30),
            Err(TotpError::InvalidDigits(9))
        );
        assert_eq!(
            TotpParams::new(Algorithm::Sha1, 6, 0),
            Err(TotpError::InvalidPeriod(0))
        );
        assert_eq!(
            TotpParams::new(Algorithm::Sha1, 6, 301),
            Err(TotpError::InvalidPeriod(301))
        );
        assert!(TotpParams::new(Algorithm::Sha512, 6, 1).is_ok());
        assert!(TotpParams::new(Algorithm::Sha512, 8, 300).is_ok());

        let digits_message = TotpError::InvalidDigits(9).to_string();
        assert_eq!(
            digits_message,
            "invalid TOTP digit count 9: expected 6 to 8"
        );
        let period_message = TotpError::InvalidPeriod(301).to_string();
        assert_eq!(
            period_message,
            "invalid TOTP period 301 s: expected 1 to 300 seconds"
        );
    }

    #[test]
    fn default_params_are_sha1_six_thirty() {
        let params = TotpParams::default();
        assert_eq!(params.algorithm, Algorithm::Sha1);
        assert_eq!(params.digits, 6);
        assert_eq!(params.period, 30);
        assert_eq!(TotpParams::new(Algorithm::Sha1, 6, 30), Ok(params));
    }

    #[test]
    fn generated_secret_has_recommended_length() {
        for (algorithm, len) in [
            (Algorithm::Sha1, 20),
            (Algorithm::Sha256, 32),
            (Algorithm::Sha512, 64),
        ] {
            let first = TotpSecret::generate(algorithm).unwrap();
            let second = TotpSecret::generate(algorithm).unwrap();
            assert_eq!(first.danger_bytes().len(), len, "{algorithm}");
            assert_ne!(first.danger_bytes(), second.danger_bytes(), "{algorithm}");
        }
    }

    #[test]
    fn secret_debug_hides_key_material() {
        let secret = TotpSecret::generate(Algorithm::Sha1).unwrap();
        let debug = format!("{secret:?}");
        assert_eq!(debug, "TotpSecret(<redacted>)");
        assert!(!debug.contains(&secret.danger_to_base32()), "{debug}");
        assert!(
            !debug.contains(&hex::encode(secret.danger_bytes())),
            "{debug}"
        );
        assert!(
            !debug.contains(&format!("{:?}", secret.danger_bytes())),
            "{debug}"
        );
        let alternate = format!("{secret:#?}");
        assert_eq!(alternate, "TotpSecret(<redacted>)");
    }

    #[test]
    fn secret_base32_round_trips() {
        let secret = TotpSecret::generate(Algorithm::Sha256).unwrap();
        let text = secret.danger_to_base32();
        let decoded = TotpSecret::from_base32(&text.to_lowercase()).unwrap();
        assert_eq!(decoded.danger_bytes(), secret.danger_bytes());
        assert_eq!(
            rfc_secret().danger_to_base32(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn from_base32_rejects_invalid_secret() {
        let error = TotpSecret::from_base32("GEZD GNB1").unwrap_err();
        assert_eq!(
            error,
            TotpError::InvalidSecret(base32::DecodeError::InvalidCharacter {
                character: '1',
                position: 8
            })
        );
        let message = error.to_string();
        assert!(message.starts_with("invalid TOTP secret: "), "{message}");
        assert!(message.contains("'1' at position 8"), "{message}");
    }

    #[test]
    fn verify_accepts_current_step() {
        let secret = rfc_secret();
        let params = TotpParams::default();
        let code = code_at(&secret, &params, NOW);
        let accepted = Verification::Accepted { step: NOW_STEP };
        assert_eq!(verify(&secret, &params, &code, NOW, None, 1), accepted);
        assert_eq!(verify(&secret, &params, &code, NOW, None, 0), accepted);
        let previous = Some(NOW_STEP - 1);
        assert_eq!(verify(&secret, &params, &code, NOW, previous, 1), accepted);
    }

    #[test]
    fn verify_accepts_drift_of_one_step() {
        let secret = rfc_secret();
        let params = TotpParams::default();
        let current = code_for_step(&secret, &params, NOW_STEP);
        for step in [NOW_STEP - 1, NOW_STEP + 1] {
            let code = code_for_step(&secret, &params, step);
            assert_ne!(code, current, "step {step} has the current code");
            assert_eq!(
                verify(&secret, &params, &code, NOW, None, 1),
                Verification::Accepted { step },
                "step {step}"
            );
            assert_eq!(
                verify(&secret, &params, &code, NOW, None, 0),
                Verification::Invalid,
                "step {step} without drift"
            );
        }
    }

    #[test]
    fn verify_rejects_two_steps_away() {
        let secret = rfc_secret();
        let params = TotpParams::default();
        let window: Vec<String> = (NOW_STEP - 1..=NOW_STEP + 1)
            .map(|step| code_for_step(&secret, &params, step))
            .collect();
        for step in [NOW_STEP - 2, NOW_STEP + 2] {
            let code = code_for_step(&secret, &params, step);
            assert!(
                !window.contains(&code),
                "step {step} collides with the window"
            );
            assert_eq!(
                verify(&secret, &params, &code, NOW, None, 1),
                Verification::Invalid,
                "step {step}"
            );
            assert_eq!(
                verify(&secret, &params, &code, NOW, None, 2),
                Verification::Accepted { step },
                "step {step} with drift 2"
            );
        }
    }

    #[test]
    fn verify_reports_replay_of_accepted_step() {
        let secret = rfc_secret();
        let params = TotpParams::default();
        let code = code_at(&secret, &params, NOW);
        let replayed = Verification::Replayed { step: NOW_STEP };
        assert_eq!(
            verify(&secret, &params, &code, NOW, Some(NOW_STEP), 1),
            replayed
        );
        assert_eq!(
            verify(&secret, &params, &code, NOW, Some(NOW_STEP + 1), 1),
            replayed
        );

        // A code of an earlier step than the last accepted one is also a replay.
        let earlier = code_for_step(&secret, &params, NOW_STEP - 1);
        assert_eq!(
            verify(&secret, &params, &earlier, NOW, Some(NOW_STEP), 1),
            Verification::Replayed { step: NOW_STEP - 1 }
        );
    }

    #[test]
    fn verify_rejects_wrong_length_codes() {
        let secret = rfc_secret();
        let params = TotpParams::default();
        let code = code_at(&secret, &params, NOW);
        let too_short = &code[..5];
        let too_long = format!("{code}0");
        let padded = format!("0{code}");
        for candidate in ["", too_short, &too_long, &padded] {
            assert_eq!(
                verify(&secret, &params, candidate, NOW, None, 1),
                Verification::Invalid,
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn verify_rejects_non_digit_codes() {
        let secret = rfc_secret();
        let params = TotpParams::default();
        let code = code_at(&secret, &params, NOW);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        let trailing_newline = format!("{}\n", &code[..5]);
        let plus_sign = format!("+{}", &code[1..]);
        let letter = format!("{}a", &code[..5]);
        // Fullwidth digits are not ASCII digits.
        let fullwidth = "１２３４５６";
        for candidate in [&spaced, &trailing_newline, &plus_sign, &letter, fullwidth] {
            assert_eq!(
                verify(&secret, &params, candidate, NOW, None, 1),
                Verification::Invalid,
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn verify_prefers_current_then_earlier_step() {
        // One-digit codes, which `TotpParams::new` rejects, make matches of
        // several steps frequent enough to find within a few hundred steps.
        let secret = rfc_secret();
        let params = TotpParams {
            digits: 1,
            ..TotpParams::default()
        };
        let code = |step: u64| code_for_step(&secret, &params, step);

        let current_and_previous = (1..1000)
            .find(|&step| code(step) == code(step - 1) && code(step) == code(step + 1))
            .expect("no step whose neighbours share its code");
        let now = current_and_previous * params.period;
        let shared = code(current_and_previous);
        assert_eq!(
            verify(&secret, &params, &shared, now, None, 1),
            Verification::Accepted {
                step: current_and_previous
            }
        );
        // The current step wins even when the previous step was accepted.
        assert_eq!(
            verify(
                &secret,
                &params,
                &shared,
                now,
                Some(current_and_previous - 1),
                1
            ),
            Verification::Accepted {
                step: current_and_previous
            }
        );

        let both_neighbours = (1..1000)
            .find(|&step| code(step - 1) == code(step + 1) && code(step) != code(step - 1))
            .expect("no step whose two neighbours share a code");
        let now = both_neighbours * params.period;
        assert_eq!(
            verify(&secret, &params, &code(both_neighbours + 1), now, None, 1),
            Verification::Accepted {
                step: both_neighbours - 1
            }
        );
    }

    #[test]
    fn verify_window_stops_at_u64_limits() {
        let secret = rfc_secret();
        let params = TotpParams::new(Algorithm::Sha1, 6, 1).unwrap();
        for unix_secs in [0, 1, u64::MAX - 1, u64::MAX] {
            let code = code_at(&secret, &params, unix_secs);
            assert_eq!(
                verify(&secret, &params, &code, unix_secs, None, 3),
                Verification::Accepted { step: unix_secs },
                "at {unix_secs}"
            );
        }
    }

    #[test]
    fn otpauth_uri_has_key_uri_format() {
        let uri = otpauth_uri(
            "Stepgate",
            "alice@example.com",
            &rfc_secret(),
            &TotpParams::default(),
        );
        assert_eq!(
            uri,
            "otpauth://totp/Stepgate:alice%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Stepgate\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn otpauth_uri_parses_back_to_inputs() {
        let issuer = "ACME Co: Zürich";
        let account = "alice smith:admin";
        let secret = TotpSecret::generate(Algorithm::Sha512).unwrap();
        let params = TotpParams::new(Algorithm::Sha512, 8, 60).unwrap();
        let uri = otpauth_uri(issuer, account, &secret, &params);

        assert!(
            uri.starts_with("otpauth://totp/ACME%20Co%3A%20Z%C3%BCrich:alice%20smith%3Aadmin?"),
            "{uri}"
        );
        let parsed = ParsedUri::parse(&uri);
        assert_eq!(parsed.issuer_prefix.as_deref(), Some(issuer));
        assert_eq!(parsed.account, account);
        assert_eq!(parsed.query["issuer"], issuer);
        let decoded = TotpSecret::from_base32(&parsed.query["secret"]).unwrap();
        assert_eq!(decoded.danger_bytes(), secret.danger_bytes());
        assert_eq!(parsed.query["algorithm"], "SHA512");
        assert_eq!(parsed.query["digits"], "8");
        assert_eq!(parsed.query["period"], "60");
        assert_eq!(parsed.query.len(), 5);
    }

    #[test]
    fn otpauth_uri_omits_empty_issuer() {
        let uri = otpauth_uri("", "alice", &rfc_secret(), &TotpParams::default());
        let parsed = ParsedUri::parse(&uri);
        assert_eq!(parsed.issuer_prefix, None);
        assert_eq!(parsed.account, "alice");
        assert!(!parsed.query.contains_key("issuer"), "{uri}");
        assert_eq!(parsed.query.len(), 4);
    }

    /// An `otpauth://totp/` URI split into its decoded parts. The label is
    /// split at its first literal colon, which is the issuer separator.
    struct ParsedUri {
        issuer_prefix: Option<String>,
        account: String,
        query: HashMap<String, String>,
    }

    impl ParsedUri {
        fn parse(uri: &str) -> Self {
            let rest = uri.strip_prefix("otpauth://totp/").expect(uri);
            let (label, query) = rest.split_once('?').expect(uri);
            let (issuer_prefix, account) = match label.split_once(':') {
                Some((issuer, account)) => (Some(percent_decode(issuer)), percent_decode(account)),
                None => (None, percent_decode(label)),
            };
            let mut parameters = HashMap::new();
            for pair in query.split('&') {
                let (name, value) = pair.split_once('=').expect(pair);
                let previous = parameters.insert(percent_decode(name), percent_decode(value));
                assert!(previous.is_none(), "duplicate parameter {name} in {uri}");
            }
            Self {
                issuer_prefix,
                account,
                query: parameters,
            }
        }
    }

    fn percent_decode(text: &str) -> String {
        let mut bytes = Vec::with_capacity(text.len());
        let mut rest = text.as_bytes();
        while let Some((&byte, tail)) = rest.split_first() {
            if byte == b'%' {
                let hex_digits = std::str::from_utf8(&tail[..2]).unwrap();
                bytes.push(u8::from_str_radix(hex_digits, 16).unwrap());
                rest = &tail[2..];
            } else {
                assert!(
                    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte),
                    "unencoded byte {byte:#04x} in {text:?}"
                );
                bytes.push(byte);
                rest = tail;
            }
        }
        String::from_utf8(bytes).unwrap()
    }
}
