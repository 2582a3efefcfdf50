//! The store: the one place stepgate's state outlives a process.
//!
//! [`Store`] is the interface the engine and the CLI use; [`SqliteStore`]
//! implements it on one SQLite file under the data directory. Every
//! administrative change is written in the same transaction as its audit
//! record, so the trail never misses a change that took effect.

mod approval;
mod sqlite;

pub use approval::{ApprovalRecord, ApprovalState, ApprovalStore, ApproverRecord, Vote, VoteError};

pub use sqlite::SqliteStore;

use stepgate_audit::{Entry, Sealed};
use stepgate_core::{Identity, IdentityName, Timestamp, TokenHash, TokenId};
use stepgate_risk::Baseline;

/// Errors of the store. Messages name the object and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("identity {0} already exists")]
    IdentityExists(String),
    #[error("identity {0} not found: list identities with `stepgate identity list`")]
    IdentityNotFound(String),
    #[error("approver {0} already exists")]
    ApproverExists(String),
    #[error("approver {0} not found: list approvers with `stepgate approver list`")]
    ApproverNotFound(String),
    #[error("token {0} not found: list tokens with `stepgate token list`")]
    TokenNotFound(String),
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A stored API token: its public id, owner and hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub identity: IdentityName,
    pub hash: TokenHash,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// SCRAM-SHA-256 credential that checks the token as a PostgreSQL
    /// password, in PostgreSQL's `rolpassword` form. It is derived from the
    /// token with its identity's salt; tokens issued before it was kept
    /// have none.
    pub scram: Option<String>,
}

/// A stored TOTP factor. The secret is needed to compute codes, so it is
/// stored as is and must not leave this type except through
/// `danger_secret`.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    pub identity: IdentityName,
    secret: Vec<u8>,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    pub digits: u32,
    pub period: u64,
    /// The last accepted time step, so no code is accepted twice.
    pub last_step: Option<u64>,
    pub locked_until: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl TotpRecord {
    pub fn new(
        identity: IdentityName,
        secret: Vec<u8>,
        algorithm: String,
        digits: u32,
        period: u64,
        at: Timestamp,
    ) -> Self {
        Self {
            identity,
            secret,
            algorithm,
            digits,
            period,
            last_step: None,
            locked_until: None,
            created_at: at,
        }
    }

    pub fn danger_secret(&self) -> &[u8] {
        &self.secret
    }
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("identity", &self.identity)
            .field("secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// The state the engine loads at start and reloads on change.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub identities: Vec<Identity>,
    pub tokens: Vec<TokenRecord>,
    pub totp: Vec<TotpRecord>,
    pub accepted: Vec<AcceptedSignal>,
    pub dpop: Vec<DpopKeyRecord>,
    pub signature_keys: Vec<SignatureKeyRecord>,
    pub certificates: Vec<CertificateBindingRecord>,
}

/// A public key that signs HTTP messages (RFC 9421) for an identity. An
/// identity may have several, so a new key can be enrolled before the old
/// one is removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureKeyRecord {
    pub identity: IdentityName,
    /// The `keyid` signatures name; by default the RFC 7638 thumbprint.
    pub key_id: String,
    /// RFC 9421 algorithm name, fixed at enrolment, such as `ed25519`.
    pub algorithm: String,
    /// The public JWK.
    pub jwk: String,
    pub created_at: Timestamp,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
}

/// A rule that binds client certificates to an identity (RFC 8705).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateBindingRecord {
    pub identity: IdentityName,
    /// `x5t#S256`, `subject` or `san`.
    pub rule: String,
    /// The thumbprint, subject or subject alternative name to match.
    pub value: String,
    /// True when the identity's token is refused on a connection without a
    /// matching certificate.
    pub required: bool,
    pub created_at: Timestamp,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
}

/// A DPoP public key bound to an identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopKeyRecord {
    pub identity: IdentityName,
    /// RFC 7638 thumbprint (`jkt`) of the key.
    pub thumbprint: String,
    /// The public JWK as enrolled.
    pub jwk: String,
    pub created_at: Timestamp,
    /// True when every request of the identity must carry a DPoP proof
    /// (`Authorization: DPoP`), so its token alone is refused.
    pub required: bool,
    /// The key is valid from this time on, when set.
    pub not_before: Option<Timestamp>,
    /// The key is valid until this time, when set.
    pub not_after: Option<Timestamp>,
}

/// A signal an operator accepted as normal for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedSignal {
    pub identity: IdentityName,
    /// Signal name, such as `new_network`.
    pub signal: String,
    /// The value accepted, or `*` for any value.
    pub value: String,
    pub accepted_at: Timestamp,
}

/// Storage for identities, credentials, factors, baselines and the audit trail.
pub trait Store: ApprovalStore + Send + Sync {
    /// Counter raised by every administrative change; a running gateway
    /// polls it to reload identities, tokens and factors.
    fn revision(&self) -> Result<u64, StoreError>;
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    fn add_identity(&self, identity: &Identity, audit: Entry) -> Result<(), StoreError>;
    fn set_identity_disabled(
        &self,
        name: &IdentityName,
        disabled: bool,
        audit: Entry,
    ) -> Result<(), StoreError>;
    fn add_token(&self, token: &TokenRecord, audit: Entry) -> Result<(), StoreError>;
    /// Returns the SCRAM salt of `identity`, storing `candidate` as its salt
    /// first when it has none, so every token of an identity shares one
    /// salt: SCRAM names the salt before the client proves which token it
    /// holds.
    fn identity_scram_salt(
        &self,
        identity: &IdentityName,
        candidate: &[u8],
    ) -> Result<Vec<u8>, StoreError>;
    fn revoke_token(&self, id: &TokenId, at: Timestamp, audit: Entry) -> Result<(), StoreError>;
    /// Enrols or replaces the identity's TOTP factor.
    fn enroll_totp(&self, factor: &TotpRecord, audit: Entry) -> Result<(), StoreError>;

    /// Binds (or replaces) the identity's DPoP key.
    fn enroll_dpop(&self, key: &DpopKeyRecord, audit: Entry) -> Result<(), StoreError>;

    /// Enrols (or replaces, by key id) a message-signing key.
    fn enroll_signature_key(
        &self,
        key: &SignatureKeyRecord,
        audit: Entry,
    ) -> Result<(), StoreError>;
    /// Removes a message-signing key; false (and nothing written) when the
    /// identity has no key with that id.
    fn remove_signature_key(
        &self,
        identity: &IdentityName,
        key_id: &str,
        audit: Entry,
    ) -> Result<bool, StoreError>;

    /// Adds (or replaces) a certificate binding.
    fn bind_certificate(
        &self,
        binding: &CertificateBindingRecord,
        audit: Entry,
    ) -> Result<(), StoreError>;
    /// Removes a certificate binding; false when there was none.
    fn unbind_certificate(
        &self,
        identity: &IdentityName,
        rule: &str,
        value: &str,
        audit: Entry,
    ) -> Result<bool, StoreError>;

    /// Records that a signal is normal for an identity.
    fn accept_signal(&self, accepted: &AcceptedSignal, audit: Entry) -> Result<(), StoreError>;
    /// Removes an acceptance; returns false (and writes nothing) when there
    /// was none.
    fn revoke_acceptance(
        &self,
        identity: &IdentityName,
        signal: &str,
        value: &str,
        audit: Entry,
    ) -> Result<bool, StoreError>;

    /// Records `step` as the last accepted step of the identity's TOTP
    /// factor if and only if it is later than the stored one. Returns false
    /// when another request already accepted this step or a later one, so a
    /// code can pass at most once even across gateway processes.
    fn advance_totp_step(&self, identity: &IdentityName, step: u64) -> Result<bool, StoreError>;
    fn set_totp_lock(
        &self,
        identity: &IdentityName,
        until: Option<Timestamp>,
    ) -> Result<(), StoreError>;

    fn load_baselines(&self) -> Result<Vec<(IdentityName, Baseline)>, StoreError>;
    fn save_baselines(&self, baselines: &[(IdentityName, Baseline)]) -> Result<(), StoreError>;

    /// Appends entries to the audit chain in one durable transaction.
    fn append_audit(&self, entries: Vec<Entry>) -> Result<Vec<Sealed>, StoreError>;
    /// Calls `row` with `(seq, canonical, hash)` for each record in order.
    fn scan_audit(&self, row: &mut dyn FnMut(u64, &str, &str) -> bool) -> Result<(), StoreError>;
}
