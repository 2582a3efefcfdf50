//! Client side of stepgate's signature step-up: HTTP Message Signatures
//! (RFC 9421) over a request, made with a key in a PKCS#8 file or in a
//! PKCS#11 token.
//!
//! The signature base comes from `stepgate_pop::httpsig::signature_base`,
//! the function the gateway verifies with, so the signer and the verifier
//! build the same base from the same message.

mod keyfile;
mod pkcs11;
mod request;
mod sign;

pub use keyfile::KeyFileSigner;
pub use pkcs11::{Pkcs11Signer, generate_key, public_jwk};
pub use request::RequestToSign;
pub use sign::{
    DEFAULT_LABEL, SignOptions, SignedHeaders, Signer, build_signature_base, content_digest,
    key_thumbprint, sign_request,
};
pub use stepgate_pop::httpsig::SignatureAlgorithm;

/// Reason a request could not be signed. Messages never contain a PIN or
/// private key material.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request description is malformed.
    #[error("invalid request description: {0}")]
    InvalidRequest(String),
    /// A signing option is invalid.
    #[error("invalid signing option: {0}")]
    InvalidOptions(String),
    /// The signature base or the public key was rejected by stepgate-pop.
    #[error(transparent)]
    Pop(#[from] stepgate_pop::PopError),
    /// A private key file could not be read or is not a supported key.
    #[error("{0}")]
    KeyFile(String),
    /// A PKCS#11 module, token or key operation failed.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// The key produced no signature, or one that does not verify with
    /// its own public key.
    #[error("signing failed: {0}")]
    Signing(String),
}

#[cfg(test)]
mod tests;
