//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS authentication (RFC 5802, RFC 7677)
//! as PostgreSQL uses it, for both ends of the exchange.
//!
//! - [`StoredCredential`] is the server's record in place of the password:
//!   the iteration count, salt, StoredKey and ServerKey, with the text form of
//!   PostgreSQL's `pg_authid.rolpassword`.
//! - [`ServerExchange`] checks a client's proof against a stored credential.
//! - [`ClientExchange`] logs in to a server that has the password's credential.
//! - [`ChannelBinding`] is the `tls-server-end-point` channel binding of
//!   RFC 5929, computed from the server certificate by
//!   [`tls_server_end_point`].
//!
//! Both state machines take raw message bytes and return the next message as
//! a string. Invalid input returns an [`Error`] rather than panicking, which
//! `tests/exchange.rs` checks with mutated messages, and every message is
//! limited to [`MAX_MESSAGE_LEN`] bytes.
//!
//! # Example
//!
//! ```
//! use stepgate_scram::{
//!     ClientChannelBinding, ClientExchange, Mechanism, ServerExchange, StoredCredential,
//!     advertised_mechanisms,
//! };
//!
//! # fn main() -> Result<(), stepgate_scram::Error> {
//! // The gateway stores this instead of the token.
//! let credential = StoredCredential::generate("sgt_example-token", 4096)?;
//! let stored = credential.format();
//!
//! // Without TLS the server offers SCRAM-SHA-256 only.
//! let offered = advertised_mechanisms(None);
//! let mut client = ClientExchange::negotiate(
//!     offered.iter().map(|mechanism| mechanism.name()),
//!     "sgt_example-token",
//!     None,
//! )?;
//! let mut server = ServerExchange::new(
//!     client.mechanism(),
//!     StoredCredential::parse(&stored)?,
//!     None,
//! )?;
//!
//! let client_first = client.client_first()?;
//! let server_first = server.handle_client_first(client_first.as_bytes())?;
//! let client_final = client.handle_server_first(server_first.as_bytes())?;
//! let server_final = server.handle_client_final(client_final.as_bytes())?;
//! client.handle_server_final(server_final.as_bytes())?;
//! assert!(server.is_authenticated());
//! assert_eq!(client.mechanism(), Mechanism::ScramSha256);
//! # Ok(())
//! # }
//! ```
//!
//! # Passwords
//!
//! SCRAM runs the password through SASLprep (RFC 4013) before hashing, and
//! PostgreSQL (`src/common/saslprep.c`) uses the raw password bytes when
//! SASLprep rejects a password. This crate does not implement SASLprep: it
//! accepts only passwords of printable ASCII characters (0x20 to 0x7E), which
//! SASLprep leaves unchanged, and rejects any other password with
//! [`Error::UnsupportedPassword`]. Passwords for stepgate identities
//! are stepgate API tokens, which are ASCII.

mod channel_binding;
mod client;
mod credential;
mod crypto;
mod error;
mod message;
mod password;
mod server;

#[cfg(test)]
mod tests;

pub use channel_binding::{ChannelBinding, TLS_SERVER_END_POINT, tls_server_end_point};
pub use client::{ClientChannelBinding, ClientExchange, DEFAULT_MAX_ITERATIONS};
pub use credential::{DEFAULT_ITERATIONS, DEFAULT_SALT_LEN, StoredCredential};
pub use error::Error;
pub use server::{ServerExchange, advertised_mechanisms};

/// Maximum size in bytes of any SCRAM message this crate accepts. The
/// largest message of a normal exchange, a client-final-message with
/// channel binding to a certificate signed with SHA-512, is under 300 bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// A SASL mechanism name that this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-256`, without channel binding.
    ScramSha256,
    /// `SCRAM-SHA-256-PLUS`, with `tls-server-end-point` channel binding.
    ScramSha256Plus,
}

impl Mechanism {
    /// Returns the SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
        }
    }

    /// Looks up a mechanism by its exact SASL name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-256-PLUS" => Some(Mechanism::ScramSha256Plus),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
