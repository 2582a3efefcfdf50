//! Step-up authentication factors for stepgate.
//!
//! The crate currently provides the TOTP factor:
//!
//! - [`totp`] computes HOTP codes (RFC 4226) and TOTP codes (RFC 6238) with
//!   HMAC-SHA-1, HMAC-SHA-256 or HMAC-SHA-512. It verifies a submitted code
//!   within a window of clock drift and detects replayed codes. It also
//!   generates secrets from the operating system's random number generator
//!   and builds `otpauth://` URIs for authenticator apps.
//! - [`base32`] encodes and decodes RFC 4648 base32, the encoding that
//!   authenticator apps use for TOTP secrets.
//!
//! The crate is pure computation. It does no I/O, needs no async runtime and
//! does not read the clock, so callers pass the current Unix time in seconds.
//! It does not store secrets or the last accepted time step. It also does not
//! limit the rate of verification attempts or render QR codes, so the caller
//! must do all of these.

pub mod base32;
pub mod totp;
