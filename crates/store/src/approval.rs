//! Records of approvers, identity owners and approval requests: the state
//! behind human approval, which must outlive a gateway restart.

use stepgate_audit::Entry;
use stepgate_core::{IdentityName, Timestamp};

use crate::StoreError;

/// A person who may approve requests, with the TOTP factor they sign in
/// with. The secret must not leave this type except through
/// `danger_secret`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApproverRecord {
    pub name: IdentityName,
    secret: Vec<u8>,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    pub digits: u32,
    pub period: u64,
    /// The last accepted time step, so no code is accepted twice.
    pub last_step: Option<u64>,
    /// Wrong codes since the last accepted one.
    pub failures: u32,
    /// Codes are rejected until this time after repeated wrong ones.
    pub locked_until: Option<Timestamp>,
    pub groups: Vec<String>,
    pub created_at: Timestamp,
}

impl ApproverRecord {
    pub fn new(
        name: IdentityName,
        secret: Vec<u8>,
        algorithm: String,
        digits: u32,
        period: u64,
        groups: Vec<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            name,
            secret,
            algorithm,
            digits,
            period,
            last_step: None,
            failures: 0,
            locked_until: None,
            groups,
            created_at: at,
        }
    }

    pub fn danger_secret(&self) -> &[u8] {
        &self.secret
    }
}

impl std::fmt::Debug for ApproverRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproverRecord")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("groups", &self.groups)
            .finish()
    }
}

/// State of an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalState {
    /// Waiting for approvers.
    Pending,
    /// Approved by a quorum; the identity may run the operation once.
    Approved,
    /// Denied by an approver.
    Denied,
    /// Nobody decided in time, or the approval was not used in time.
    Expired,
    /// The approved operation ran.
    Used,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Used => "used",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Denied,
            ApprovalState::Expired,
            ApprovalState::Used,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// One approver's decision on an approval request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub approver: IdentityName,
    pub approve: bool,
    pub comment: String,
    /// `web` or `cli`.
    pub via: String,
    pub at: Timestamp,
}

/// A request for approval of one operation of one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `ap_` and 24 random characters.
    pub id: String,
    pub identity: IdentityName,
    /// Hex SHA-256 over the method, normalised target and body digest; an
    /// approval covers only the operation with this digest.
    pub operation: String,
    pub method: String,
    /// The `Host` the request named, which routes it; `-` without one.
    pub host: String,
    /// Path and query as received, so approvers see what they approve.
    pub target: String,
    /// Hex SHA-256 of the body, when the request had one.
    pub body_sha256: Option<String>,
    /// The start of a UTF-8 body, for approvers to read.
    pub body_preview: Option<String>,
    pub body_bytes: u64,
    pub action: String,
    pub zone: Option<String>,
    pub client_addr: String,
    pub risk: u8,
    /// Signal descriptions, such as `new_network: 10.1.0.0/24`.
    pub reasons: Vec<String>,
    /// Ids of the policies that asked for the approval.
    pub policies: Vec<String>,
    pub group: String,
    pub quorum: u32,
    pub state: ApprovalState,
    pub created_at: Timestamp,
    /// The request expires pending at this time.
    pub expires_at: Timestamp,
    /// An approved request must be used before this time.
    pub valid_until: Option<Timestamp>,
    pub decided_at: Option<Timestamp>,
    pub used_at: Option<Timestamp>,
    /// When a notification of the request was delivered.
    pub notified_at: Option<Timestamp>,
    pub votes: Vec<Vote>,
}

impl ApprovalRecord {
    pub fn approvals(&self) -> usize {
        self.votes.iter().filter(|vote| vote.approve).count()
    }
}

/// Reason a vote could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    #[error("approval {0} not found: list approvals with `stepgate approvals list`")]
    NotFound(String),
    #[error("approval {id} is {state}, not pending: it can no longer be decided")]
    Closed { id: String, state: &'static str },
    #[error("{approver} already decided approval {id}; a quorum needs distinct approvers")]
    AlreadyVoted { id: String, approver: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Storage of approvers, owners and approval requests. Each change is
/// written in one transaction with its audit record.
pub trait ApprovalStore: Send + Sync {
    fn add_approver(&self, approver: &ApproverRecord, audit: Entry) -> Result<(), StoreError>;
    /// Removes an approver with their votes kept; false when none has the name.
    fn remove_approver(&self, name: &IdentityName, audit: Entry) -> Result<bool, StoreError>;
    fn approver(&self, name: &IdentityName) -> Result<Option<ApproverRecord>, StoreError>;
    fn approvers(&self) -> Result<Vec<ApproverRecord>, StoreError>;
    /// Stores `step` as the approver's last accepted TOTP step when it is
    /// later than the stored one; false when it is not, so the code was
    /// already used.
    fn advance_approver_step(&self, name: &IdentityName, step: u64) -> Result<bool, StoreError>;
    /// Counts a wrong code of an approver; at `max_failures` in a row the
    /// approver is locked until `now + lockout`, which is returned.
    fn record_approver_failure(
        &self,
        name: &IdentityName,
        now: Timestamp,
        max_failures: u32,
        lockout: std::time::Duration,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// Clears an approver's count of wrong codes after an accepted one.
    fn clear_approver_failures(&self, name: &IdentityName) -> Result<(), StoreError>;
    fn add_owner(
        &self,
        identity: &IdentityName,
        approver: &IdentityName,
        audit: Entry,
    ) -> Result<(), StoreError>;
    fn owners(&self, identity: &IdentityName) -> Result<Vec<IdentityName>, StoreError>;
    /// Inserts a pending approval request with its audit record.
    fn create_approval(&self, approval: &ApprovalRecord, audit: Entry) -> Result<(), StoreError>;
    /// Returns the pending request of `identity` for `operation`, so a
    /// repeated request does not ask people twice.
    fn pending_approval(
        &self,
        identity: &IdentityName,
        operation: &str,
        now: Timestamp,
    ) -> Result<Option<ApprovalRecord>, StoreError>;
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError>;
    /// Counts the requests of `identity` still pending at `now`.
    fn pending_count(&self, identity: &IdentityName, now: Timestamp) -> Result<usize, StoreError>;
    /// Returns requests, newest first: pending ones only, or all.
    fn approvals(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;
    /// Records a vote and settles the request: one denial denies it, and
    /// `quorum` approvals approve it until `now + valid_for`. Returns the
    /// request after the vote.
    fn vote(
        &self,
        id: &str,
        vote: &Vote,
        valid_for: std::time::Duration,
        audit: Entry,
    ) -> Result<ApprovalRecord, VoteError>;
    /// Records that a notification of approval `id` was delivered.
    fn mark_notified(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Puts a used approval back to approved, when the request it let
    /// through never reached the upstream.
    fn release_approval(&self, id: &str) -> Result<bool, StoreError>;
    /// Counter raised by every change of an approval request, so waiters in
    /// one process notice decisions made by another.
    fn approvals_revision(&self) -> Result<u64, StoreError>;
    /// Marks an approved request used, when it still is approved and valid
    /// at `now`; false when it is not, so it cannot be used twice.
    fn use_approval(&self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Expires requests still pending at `now` and approved requests not
    /// used in time, writing the audit record `audit` builds for each.
    fn expire_approvals(
        &self,
        now: Timestamp,
        audit: &dyn Fn(&ApprovalRecord) -> Entry,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;
    /// Returns the canonical JSON of the most recent audit records of
    /// `identity`, newest first.
    fn recent_audit(
        &self,
        identity: &IdentityName,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
}
