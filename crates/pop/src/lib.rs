//! Proof-of-possession factors a machine can satisfy: JSON Web Keys and
//! their thumbprints (RFC 7517, RFC 7638), DPoP proofs (RFC 9449), HTTP
//! message signatures (RFC 9421) with content digests (RFC 9530).
//!
//! The crate only verifies; where keys are bound and which requests need a
//! proof is the engine's business.

pub mod digest;
pub mod dpop;
pub mod httpsig;
pub mod jwk;
pub mod spki;

pub use digest::{content_digest, verify_content_digest};
pub use dpop::{
    DpopWindow, NONCE_PERIOD_SECS, NonceIssuer, ProofTarget, ReplayCache, VerifiedProof, same_uri,
    verify_proof,
};
pub use httpsig::SignatureAlgorithm;
pub use jwk::{Algorithm, Curve, PublicJwk};
pub use spki::public_key_from_pem;

/// Reason a proof or key was rejected. Messages name the check that failed
/// and never contain key material or tokens.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("private key: {0}")]
    PrivateKey(String),
    #[error("signature does not verify with the proof's key")]
    BadSignature,
    #[error("for another request: {0}")]
    WrongTarget(String),
    #[error("proof out of its time window: {0}")]
    Expired(String),
    #[error("nonce: {0}")]
    Nonce(String),
    #[error("replayed proof: {0}")]
    Replayed(String),
    /// A `Content-Digest` that does not match the body.
    #[error("{0}")]
    DigestMismatch(String),
}

#[cfg(test)]
mod tests;
