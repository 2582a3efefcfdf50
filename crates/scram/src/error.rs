//! Errors of both sides of the exchange. No error carries a password, key,
//! proof or signature.

/// A failed SCRAM step, a rejected password or an invalid credential.
///
/// On the server side, [`Error::server_error_value`] gives the `e=` value of
/// RFC 5802 section 7 to send in a server-final-message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message is longer than [`crate::MAX_MESSAGE_LEN`].
    #[error("SCRAM message of {len} bytes is longer than the maximum of {max} bytes")]
    MessageTooLong {
        /// Length of the rejected message in bytes.
        len: usize,
        /// Maximum accepted length in bytes.
        max: usize,
    },
    /// The message does not follow the SCRAM grammar.
    #[error("invalid SCRAM message: {0}")]
    Malformed(&'static str),
    /// The `n=` user name has an invalid `=` escape or is not UTF-8.
    #[error("invalid SCRAM user name: {0}")]
    InvalidUsername(&'static str),
    /// The message contains the reserved mandatory extension `m=`.
    #[error("SCRAM mandatory extension (m=) is not supported")]
    ExtensionsNotSupported,
    /// The client sent an authorization identity (`a=`).
    #[error("SCRAM authorization identity (a=) is not supported; the login user is the identity")]
    AuthzidNotSupported,
    /// The client asked for channel binding, but the server has no channel
    /// binding data, for example because the connection does not use TLS.
    #[error("channel binding requested by the client, but the server has none to offer")]
    ChannelBindingNotSupported,
    /// The client asked for a channel binding type other than
    /// `tls-server-end-point`.
    #[error("unsupported channel binding type {0:?}; only tls-server-end-point is supported")]
    UnsupportedChannelBindingType(String),
    /// The client sent the `y` flag (it supports channel binding but thinks
    /// the server does not), while the server offers SCRAM-SHA-256-PLUS. A
    /// man in the middle may have removed SCRAM-SHA-256-PLUS from the list
    /// of mechanisms (RFC 5802 section 6).
    #[error("client believes the server does not support channel binding, but it does")]
    ServerSupportsChannelBinding,
    /// The client chose SCRAM-SHA-256-PLUS but sent no channel binding (`n` or
    /// `y` flag).
    #[error("SCRAM-SHA-256-PLUS was selected, but the client sent no channel binding")]
    ChannelBindingRequired,
    /// The client chose SCRAM-SHA-256 but asked for channel binding (`p=`).
    #[error("SCRAM-SHA-256 was selected, but the client asked for channel binding")]
    ChannelBindingUnexpected,
    /// The `c=` attribute differs from the GS2 header and channel binding data
    /// that the server expects.
    #[error("channel binding data in the client-final-message does not match")]
    ChannelBindingMismatch,
    /// The nonce does not continue the nonce of the earlier messages.
    #[error("SCRAM nonce does not match the nonce of the exchange")]
    NonceMismatch,
    /// The client proof does not match the stored credential.
    #[error("invalid SCRAM client proof")]
    InvalidProof,
    /// The server signature does not match, so the server does not have the
    /// password's ServerKey.
    #[error(
        "invalid SCRAM server signature: the server does not have the credential of this password"
    )]
    InvalidServerSignature,
    /// The server sent `e=` in its server-final-message.
    #[error("SCRAM server rejected the authentication: {0}")]
    ServerRejected(String),
    /// The password is empty or has a character outside printable ASCII.
    #[error("unsupported password: {0}")]
    UnsupportedPassword(&'static str),
    /// The server's iteration count is outside the client's limits.
    #[error(
        "SCRAM iteration count {iterations} is outside the accepted range {min} to {max}; \
         raise the server's count or change the client's limits"
    )]
    IterationCount {
        /// Iteration count sent by the server.
        iterations: u32,
        /// Minimum the client accepts.
        min: u32,
        /// Maximum the client accepts.
        max: u32,
    },
    /// A stored credential or its text form is invalid.
    #[error("invalid SCRAM credential: {0}")]
    InvalidCredential(&'static str),
    /// The mechanism cannot be used on this connection.
    #[error("SASL mechanism {0} is not available: {1}")]
    MechanismUnavailable(&'static str, &'static str),
    /// None of the server's mechanisms is one that this client can use.
    #[error("the server offers no SASL mechanism this client supports (SCRAM-SHA-256[-PLUS])")]
    NoCommonMechanism,
    /// The certificate cannot be parsed.
    #[error("invalid server certificate: {0}")]
    InvalidCertificate(String),
    /// The certificate's signature algorithm has no single hash function, so
    /// RFC 5929 defines no tls-server-end-point value for it (Ed25519 and
    /// Ed448 are such algorithms).
    #[error(
        "no tls-server-end-point hash for certificate signature algorithm {0}; use SCRAM-SHA-256"
    )]
    UnsupportedCertificateSignature(String),
    /// A method was called out of order, or after the exchange ended.
    #[error("SCRAM exchange called out of order: {0}")]
    InvalidState(&'static str),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    RandomUnavailable,
}

impl Error {
    /// Returns the `server-error-value` of RFC 5802 section 7 that a server
    /// sends as `e=<value>` for this error.
    pub fn server_error_value(&self) -> &'static str {
        match self {
            Error::MessageTooLong { .. } | Error::Malformed(_) => "invalid-encoding",
            Error::InvalidUsername(_) => "invalid-username-encoding",
            Error::ExtensionsNotSupported => "extensions-not-supported",
            Error::ChannelBindingNotSupported => "channel-binding-not-supported",
            Error::UnsupportedChannelBindingType(_) => "unsupported-channel-binding-type",
            Error::ServerSupportsChannelBinding => "server-does-support-channel-binding",
            Error::ChannelBindingMismatch => "channel-bindings-dont-match",
            Error::InvalidProof => "invalid-proof",
            Error::RandomUnavailable => "no-resources",
            _ => "other-error",
        }
    }

    /// Returns the server-final-message that reports this error to the
    /// client, `e=<server-error-value>`.
    pub fn server_final_message(&self) -> String {
        format!("e={}", self.server_error_value())
    }
}
