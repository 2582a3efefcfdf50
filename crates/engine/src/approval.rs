//! Human approval: requests for a person's approval of one operation, the
//! approvers' decisions under the rules of who may decide, and the waits of
//! clients holding a request open until someone decides.
//!
//! Every rule lives here so the gateway, the approvals page and the CLI
//! enforce the same ones: nobody decides for an identity they own or for
//! themselves, deciders belong to the request's group and decide inside the
//! group's time window, and a quorum needs distinct approvers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use stepgate_audit::{Entry, Event};
use stepgate_config::ApprovalConfig;
use stepgate_core::{Clock, IdentityName, Timestamp};
use stepgate_factors::totp::{self, Algorithm, TotpParams, TotpSecret, Verification};
use stepgate_store::{ApprovalRecord, ApprovalState, Store, StoreError, Vote, VoteError};
use tokio::sync::{Notify, mpsc};

/// Header a client repeats an approved request with.
pub const APPROVAL_HEADER: &str = "Stepgate-Approval";

/// Maximum pending approval requests of one identity; more are rejected so
/// one token cannot flood the approvers.
pub(crate) const MAX_PENDING_PER_IDENTITY: usize = 20;
/// Failed sign-ins or decisions in a row that lock an approver.
const MAX_CODE_FAILURES: u32 = 5;
/// How long a locked approver stays locked.
const CODE_LOCKOUT: Duration = Duration::from_secs(300);
/// Maximum length of a decision's comment, in characters.
const MAX_COMMENT_CHARS: usize = 1000;
/// How often a waiting client's approval is read again, for decisions made
/// by another process such as the CLI.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The digest an approval is bound to: the method, the host the request
/// named (which routes it), the normalised target (path and query as
/// received) and the body's SHA-256.
pub fn operation_digest(
    method: &str,
    host: &str,
    target: &str,
    body_sha256: Option<&str>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"stepgate-operation-v2\n");
    hasher.update(method.as_bytes());
    hasher.update(b"\n");
    hasher.update(host.as_bytes());
    hasher.update(b"\n");
    hasher.update(target.as_bytes());
    hasher.update(b"\n");
    hasher.update(body_sha256.unwrap_or("-").as_bytes());
    hex(&hasher.finalize())
}

/// Lowercase hex SHA-256 of a request body.
pub fn body_sha256(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The operation a front-end digested for an approval.
#[derive(Clone, Debug)]
pub struct Operation {
    pub digest: String,
    /// The host the request named, lowercased; `-` without one.
    pub host: String,
    /// Path and query as received, shown to approvers.
    pub target: String,
    pub body_sha256: Option<String>,
    pub body_bytes: u64,
    /// The start of a UTF-8 body, shown to approvers.
    pub body_preview: Option<String>,
}

/// A request the engine found needs approval, before the front-end has
/// digested its body.
#[derive(Clone, Debug)]
pub struct PendingApproval {
    pub identity: IdentityName,
    pub method: String,
    pub target: String,
    pub action: String,
    pub zone: Option<String>,
    pub client_addr: String,
    pub risk: u8,
    pub reasons: Vec<String>,
    pub policies: Vec<String>,
    pub group: String,
    pub quorum: u32,
    /// The decision's audit record, written when the approval is requested.
    pub(crate) entry: Entry,
}

/// A change of an approval request, for notifications.
#[derive(Clone, Debug)]
pub struct ApprovalEvent {
    /// `requested`, `approved`, `denied` or `expired`.
    pub kind: &'static str,
    pub approval: ApprovalRecord,
}

/// Reason an approval presented with a request does not let it through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRejection {
    #[error(
        "approval {0} is unknown for this identity: repeat the request without Stepgate-Approval to request one"
    )]
    Unknown(String),
    #[error(
        "approval {id} is still pending ({approvals} of {quorum} approvals): wait for it, then repeat the request"
    )]
    Pending {
        id: String,
        approvals: usize,
        quorum: u32,
    },
    #[error("approval {id} was denied by {by}{}", comment_suffix(comment))]
    Denied {
        id: String,
        by: String,
        comment: String,
    },
    #[error(
        "approval {0} expired: repeat the request without Stepgate-Approval to request a new one"
    )]
    Expired(String),
    #[error(
        "approval {0} was already used; each approval covers one request, so request a new one"
    )]
    Used(String),
    #[error(
        "approval {0} covers another operation: the method, target or body changed since it was approved, so a new approval is needed"
    )]
    OtherOperation(String),
    #[error("the approval could not be checked; try again")]
    StoreUnavailable,
    #[error(
        "identity has {0} approval requests pending already; wait for approvers to decide them before asking again"
    )]
    TooManyPending(usize),
}

fn comment_suffix(comment: &str) -> String {
    if comment.is_empty() {
        String::new()
    } else {
        format!(": {comment}")
    }
}

impl ApprovalRejection {
    /// Stable reason code for the wire and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ApprovalRejection::Unknown(_) => "approval_unknown",
            ApprovalRejection::Pending { .. } => "approval_pending",
            ApprovalRejection::Denied { .. } => "approval_denied",
            ApprovalRejection::Expired(_) => "approval_expired",
            ApprovalRejection::Used(_) => "approval_used",
            ApprovalRejection::OtherOperation(_) => "approval_other_operation",
            ApprovalRejection::StoreUnavailable => "approval_unavailable",
            ApprovalRejection::TooManyPending(_) => "too_many_pending_approvals",
        }
    }
}

/// Reason an approver's sign-in or decision was rejected. Messages never
/// contain a code or secret.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("approver {0} not found: add one with `stepgate approver add NAME`")]
    UnknownApprover(String),
    #[error("wrong TOTP code for approver {0}")]
    WrongCode(String),
    #[error("TOTP code of approver {0} was already used: wait for the next code")]
    ReplayedCode(String),
    #[error("a TOTP code of approver {0} is needed to decide")]
    CodeRequired(String),
    #[error("approver {name} is locked after repeated wrong codes until {}", until.to_rfc3339())]
    Locked { name: String, until: Timestamp },
    #[error("approval {0} not found: list approvals with `stepgate approvals list`")]
    NotFound(String),
    #[error(
        "{approver} cannot decide approval {id}: it was requested by {approver}'s own identity"
    )]
    OwnRequest { approver: String, id: String },
    #[error(
        "{approver} cannot decide approval {id}: {approver} owns identity {identity}, and owners never approve their own identities' requests"
    )]
    Owner {
        approver: String,
        id: String,
        identity: String,
    },
    #[error(
        "{approver} is not in approver group {group}, which decides approval {id}; a member of {group} must decide it"
    )]
    NotInGroup {
        approver: String,
        group: String,
        id: String,
    },
    #[error(
        "approver group {group} may decide only {window}; approval {id} must wait for that window"
    )]
    OutsideWindow {
        group: String,
        window: String,
        id: String,
    },
    #[error("{0}")]
    Vote(VoteError),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

/// The approval desk: shared by every front-end of one process.
pub struct ApprovalDesk {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: ApprovalConfig,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    events: Mutex<Option<mpsc::UnboundedSender<ApprovalEvent>>>,
    /// True when at least one approver exists, so approval can be offered.
    has_approvers: std::sync::atomic::AtomicBool,
    /// The store's approvals revision when it was last read, and when.
    seen_revision: std::sync::atomic::AtomicU64,
    polled_at: Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for ApprovalDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalDesk").finish_non_exhaustive()
    }
}

impl ApprovalDesk {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: ApprovalConfig) -> Self {
        let desk = Self {
            store,
            clock,
            config,
            waiters: Mutex::default(),
            events: Mutex::default(),
            has_approvers: std::sync::atomic::AtomicBool::new(false),
            seen_revision: std::sync::atomic::AtomicU64::new(0),
            polled_at: Mutex::new(None),
        };
        desk.refresh();
        desk
    }

    pub fn config(&self) -> &ApprovalConfig {
        &self.config
    }

    /// Sends every later [`ApprovalEvent`] to `sender`, for notifications.
    pub fn subscribe(&self, sender: mpsc::UnboundedSender<ApprovalEvent>) {
        *self.events.lock() = Some(sender);
    }

    /// Reads again whether any approver exists.
    pub fn refresh(&self) {
        match self.store.approvers() {
            Ok(approvers) => self
                .has_approvers
                .store(!approvers.is_empty(), std::sync::atomic::Ordering::Relaxed),
            Err(err) => tracing::error!(error = %err, "cannot read approvers"),
        }
    }

    pub fn has_approvers(&self) -> bool {
        self.has_approvers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn emit(&self, kind: &'static str, approval: &ApprovalRecord) {
        if let Some(sender) = self.events.lock().as_ref() {
            let _ = sender.send(ApprovalEvent {
                kind,
                approval: approval.clone(),
            });
        }
    }

    fn wake(&self, id: &str) {
        if let Some(notify) = self.waiters.lock().get(id) {
            notify.notify_waiters();
        }
    }

    /// Records the request for approval of `operation`, or returns the
    /// pending one of the same identity and operation, so a repeated
    /// request does not ask people twice. The decision's audit record is
    /// written durably either way.
    pub fn request(
        &self,
        pending: PendingApproval,
        operation: &Operation,
    ) -> Result<Result<ApprovalRecord, ApprovalRejection>, StoreError> {
        let now = self.now();
        let mut entry = pending.entry;
        if let Some(existing) =
            self.store
                .pending_approval(&pending.identity, &operation.digest, now)?
        {
            entry.challenge_id = Some(existing.id.clone());
            entry.detail = Some(format!(
                "approval {} already pending for this operation",
                existing.id
            ));
            self.store.append_audit(vec![entry])?;
            return Ok(Ok(existing));
        }
        let pending_count = self.store.pending_count(&pending.identity, now)?;
        if pending_count >= MAX_PENDING_PER_IDENTITY {
            let rejection = ApprovalRejection::TooManyPending(pending_count);
            entry.decision = Some("deny".to_owned());
            entry.detail = Some(format!("approval not requested: {rejection}"));
            self.store.append_audit(vec![entry])?;
            tracing::warn!(identity = %pending.identity, pending = pending_count, "too many pending approvals, request rejected");
            return Ok(Err(rejection));
        }
        let id = format!("ap_{}", stepgate_core::token::random_id(24));
        let approval = ApprovalRecord {
            id: id.clone(),
            identity: pending.identity,
            operation: operation.digest.clone(),
            method: pending.method,
            host: operation.host.clone(),
            target: operation.target.clone(),
            body_sha256: operation.body_sha256.clone(),
            body_preview: operation.body_preview.clone(),
            body_bytes: operation.body_bytes,
            action: pending.action,
            zone: pending.zone,
            client_addr: pending.client_addr,
            risk: pending.risk,
            reasons: pending.reasons,
            policies: pending.policies,
            group: pending.group,
            quorum: pending.quorum,
            state: ApprovalState::Pending,
            created_at: now,
            expires_at: now.saturating_add(self.config.ttl()),
            valid_until: None,
            decided_at: None,
            used_at: None,
            notified_at: None,
            votes: Vec::new(),
        };
        entry.challenge_id = Some(id.clone());
        entry.detail = Some(format!(
            "approval requested from group {} (quorum {}), operation sha256 {}",
            approval.group, approval.quorum, approval.operation
        ));
        self.store.create_approval(&approval, entry)?;
        tracing::info!(approval.id = %id, identity = %approval.identity, group = %approval.group, "approval requested");
        self.emit("requested", &approval);
        Ok(Ok(approval))
    }

    /// Checks an approval presented with a request of `identity` for
    /// `operation`. It does not use it up: [`ApprovalDesk::use_approval`]
    /// does once the request is allowed.
    pub fn check(
        &self,
        id: &str,
        identity: &IdentityName,
        operation: &str,
    ) -> Result<ApprovalRecord, ApprovalRejection> {
        let now = self.now();
        let approval = match self.store.approval(id) {
            Ok(Some(approval)) if &approval.identity == identity => approval,
            Ok(_) => return Err(ApprovalRejection::Unknown(id.to_owned())),
            Err(err) => {
                tracing::error!(approval.id = %id, error = %err, "cannot read an approval, failing closed");
                return Err(ApprovalRejection::StoreUnavailable);
            }
        };
        // Both are hex digests; the comparison need not be constant-time
        // because neither is secret.
        if approval.operation != operation {
            return Err(ApprovalRejection::OtherOperation(id.to_owned()));
        }
        match approval.state {
            ApprovalState::Pending if approval.expires_at > now => {
                return Err(ApprovalRejection::Pending {
                    id: id.to_owned(),
                    approvals: approval.approvals(),
                    quorum: approval.quorum,
                });
            }
            ApprovalState::Pending | ApprovalState::Expired => {
                return Err(ApprovalRejection::Expired(id.to_owned()));
            }
            ApprovalState::Denied => {
                let vote = approval.votes.iter().find(|vote| !vote.approve);
                return Err(ApprovalRejection::Denied {
                    id: id.to_owned(),
                    by: vote
                        .map(|vote| vote.approver.to_string())
                        .unwrap_or_default(),
                    comment: vote.map(|vote| vote.comment.clone()).unwrap_or_default(),
                });
            }
            ApprovalState::Used => return Err(ApprovalRejection::Used(id.to_owned())),
            ApprovalState::Approved => {}
        }
        if approval.valid_until.is_none_or(|until| until <= now) {
            return Err(ApprovalRejection::Expired(id.to_owned()));
        }
        Ok(approval)
    }

    /// Uses an approval up; false when it is no longer approved and valid,
    /// such as when a concurrent request used it first.
    pub fn use_approval(&self, id: &str) -> Result<bool, StoreError> {
        self.store.use_approval(id, self.now())
    }

    /// Checks an approver's TOTP code, storing its step so it is not
    /// accepted again, and locks the approver after repeated failures.
    pub fn check_code(&self, name: &IdentityName, code: &str) -> Result<(), DeskError> {
        let now = self.now();
        let approver = self
            .store
            .approver(name)?
            .ok_or_else(|| DeskError::UnknownApprover(name.to_string()))?;
        if let Some(until) = approver.locked_until
            && until > now
        {
            return Err(DeskError::Locked {
                name: name.to_string(),
                until,
            });
        }
        let algorithm: Algorithm = approver
            .algorithm
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("approver {name}: bad TOTP algorithm")))?;
        let params = TotpParams::new(algorithm, approver.digits, approver.period)
            .map_err(|err| StoreError::Corrupt(format!("approver {name}: {err}")))?;
        let secret = TotpSecret::from_bytes(approver.danger_secret().to_vec());
        let unix_secs = u64::try_from(now.as_secs()).unwrap_or(0);
        let outcome = match totp::verify(&secret, &params, code, unix_secs, approver.last_step, 1) {
            Verification::Accepted { step } => {
                if self.store.advance_approver_step(name, step)? {
                    Ok(())
                } else {
                    Err(DeskError::ReplayedCode(name.to_string()))
                }
            }
            Verification::Replayed { .. } => Err(DeskError::ReplayedCode(name.to_string())),
            Verification::Invalid => Err(DeskError::WrongCode(name.to_string())),
        };
        // The count lives in the store, so the lockout holds for the page,
        // the CLI and every gateway process alike.
        match &outcome {
            Ok(()) if approver.failures > 0 => self.store.clear_approver_failures(name)?,
            Ok(()) => {}
            Err(_) => {
                let locked = self.store.record_approver_failure(
                    name,
                    now,
                    MAX_CODE_FAILURES,
                    CODE_LOCKOUT,
                )?;
                if let Some(until) = locked {
                    tracing::warn!(approver = %name, until = %until.to_rfc3339(), "approver locked after repeated wrong codes");
                }
            }
        }
        outcome
    }

    /// Signs an approver in with a TOTP code, writing the attempt to the
    /// audit trail.
    pub fn sign_in(&self, name: &str, code: &str, via: &str) -> Result<IdentityName, DeskError> {
        let parsed =
            IdentityName::new(name).map_err(|_| DeskError::UnknownApprover(name.to_owned()))?;
        let outcome = self.check_code(&parsed, code);
        let mut entry = Entry::new(Event::ApproverSignIn, self.now());
        // A name that is no approver may be a code typed in the wrong
        // field, so it is not written to the audit trail.
        entry.actor = Some(match &outcome {
            Err(DeskError::UnknownApprover(_)) => "unknown approver".to_owned(),
            _ => parsed.to_string(),
        });
        entry.decision = Some(if outcome.is_ok() { "allow" } else { "deny" }.to_owned());
        entry.detail = Some(match &outcome {
            Ok(()) => format!("signed in via {via}"),
            Err(err) => format!("sign-in via {via} failed: {err}"),
        });
        self.store.append_audit(vec![entry])?;
        outcome.map(|()| parsed)
    }

    /// Records an approver's decision after checking every rule. A code is
    /// checked when given, and required when `code_required` is true or
    /// the config asks for one on every decision.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        id: &str,
        approver: &IdentityName,
        approve: bool,
        comment: &str,
        code: Option<&str>,
        code_required: bool,
        via: &str,
    ) -> Result<ApprovalRecord, DeskError> {
        let outcome = self.decide_checked(id, approver, approve, comment, code, code_required, via);
        if let Err(err) = &outcome {
            let mut entry = Entry::new(Event::ApprovalVote, self.now());
            entry.actor = Some(approver.to_string());
            entry.challenge_id = Some(id.to_owned());
            entry.decision = Some("rejected".to_owned());
            entry.detail = Some(format!(
                "{} via {via} rejected: {err}",
                if approve { "approve" } else { "deny" }
            ));
            if let Ok(Some(approval)) = self.store.approval(id) {
                entry.identity = Some(approval.identity.to_string());
            }
            if let Err(store_err) = self.store.append_audit(vec![entry]) {
                tracing::error!(approval.id = %id, error = %store_err, "cannot record a rejected decision");
            }
            tracing::info!(approval.id = %id, approver = %approver, error = %err, "approval decision rejected");
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_checked(
        &self,
        id: &str,
        approver: &IdentityName,
        approve: bool,
        comment: &str,
        code: Option<&str>,
        code_required: bool,
        via: &str,
    ) -> Result<ApprovalRecord, DeskError> {
        let record = self
            .store
            .approver(approver)?
            .ok_or_else(|| DeskError::UnknownApprover(approver.to_string()))?;
        match code {
            Some(code) => self.check_code(approver, code)?,
            None if code_required || self.config.totp_on_decision => {
                return Err(DeskError::CodeRequired(approver.to_string()));
            }
            None => {}
        }
        let approval = self
            .store
            .approval(id)?
            .ok_or_else(|| DeskError::NotFound(id.to_owned()))?;
        // Names differing only in case are the same person here.
        if approval
            .identity
            .as_str()
            .eq_ignore_ascii_case(approver.as_str())
        {
            return Err(DeskError::OwnRequest {
                approver: approver.to_string(),
                id: id.to_owned(),
            });
        }
        if self.store.owners(&approval.identity)?.contains(approver) {
            return Err(DeskError::Owner {
                approver: approver.to_string(),
                id: id.to_owned(),
                identity: approval.identity.to_string(),
            });
        }
        if !record.groups.contains(&approval.group) {
            return Err(DeskError::NotInGroup {
                approver: approver.to_string(),
                group: approval.group.clone(),
                id: id.to_owned(),
            });
        }
        let now = self.now();
        let group = self.config.group(&approval.group);
        if !group.is_open_at(u64::try_from(now.as_secs()).unwrap_or(0)) {
            return Err(DeskError::OutsideWindow {
                group: approval.group.clone(),
                window: group.window_text(),
                id: id.to_owned(),
            });
        }
        let comment = clean_comment(comment);
        let vote = Vote {
            approver: approver.clone(),
            approve,
            comment: comment.clone(),
            via: via.to_owned(),
            at: now,
        };
        let mut entry = Entry::new(Event::ApprovalVote, now);
        entry.identity = Some(approval.identity.to_string());
        entry.actor = Some(approver.to_string());
        entry.challenge_id = Some(id.to_owned());
        entry.method = Some(approval.method.clone());
        entry.path = Some(approval.target.clone());
        entry.decision = Some(if approve { "approve" } else { "deny" }.to_owned());
        entry.detail = Some(format!(
            "{} via {via} ({} of {} approvals before this vote){}",
            if approve { "approved" } else { "denied" },
            approval.approvals(),
            approval.quorum,
            if comment.is_empty() {
                String::new()
            } else {
                format!(": {comment}")
            }
        ));
        let after = self
            .store
            .vote(id, &vote, self.config.valid_for(), entry)
            .map_err(|err| match err {
                VoteError::Store(err) => DeskError::Store(err),
                other => DeskError::Vote(other),
            })?;
        tracing::info!(approval.id = %id, approver = %approver, approve, state = after.state.as_str(), "approval decision recorded");
        self.wake(id);
        match after.state {
            ApprovalState::Approved => self.emit("approved", &after),
            ApprovalState::Denied => self.emit("denied", &after),
            _ => {}
        }
        Ok(after)
    }

    /// Expires requests nobody decided in time and approvals nobody used in
    /// time, with an audit record for each.
    pub fn expire_due(&self) -> Result<usize, StoreError> {
        let now = self.now();
        let expired = self.store.expire_approvals(now, &|approval| {
            let mut entry = Entry::new(Event::ApprovalExpire, now);
            entry.identity = Some(approval.identity.to_string());
            entry.challenge_id = Some(approval.id.clone());
            entry.method = Some(approval.method.clone());
            entry.path = Some(approval.target.clone());
            entry.detail = Some(match approval.state {
                ApprovalState::Approved => "approved but not used in time".to_owned(),
                _ => format!(
                    "no decision in time ({} of {} approvals)",
                    approval.approvals(),
                    approval.quorum
                ),
            });
            entry
        })?;
        for approval in &expired {
            tracing::info!(approval.id = %approval.id, identity = %approval.identity, "approval expired");
            self.wake(&approval.id);
            if approval.state == ApprovalState::Pending {
                self.emit("expired", approval);
            }
        }
        Ok(expired.len())
    }

    /// Reads the store's approvals revision, at most once per poll
    /// interval for all waiters together, and wakes every waiter when it
    /// changed: another process, such as the CLI, decided something.
    fn poll_changes(&self) {
        {
            let mut polled_at = self.polled_at.lock();
            let now = std::time::Instant::now();
            if polled_at.is_some_and(|at| now.duration_since(at) < POLL_INTERVAL) {
                return;
            }
            *polled_at = Some(now);
        }
        let revision = match self.store.approvals_revision() {
            Ok(revision) => revision,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the approvals revision");
                return;
            }
        };
        let seen = self
            .seen_revision
            .swap(revision, std::sync::atomic::Ordering::AcqRel);
        if seen != revision {
            for notify in self.waiters.lock().values() {
                notify.notify_waiters();
            }
        }
    }

    /// Waits until approval `id` leaves the pending state or `timeout`
    /// passes, and returns it as it then is. Decisions made in this process
    /// wake the wait at once. Those of other processes are noticed through
    /// the store's approvals revision, read every quarter second for all
    /// waiters together.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<ApprovalRecord, StoreError> {
        let notify = self
            .waiters
            .lock()
            .entry(id.to_owned())
            .or_default()
            .clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stale = true;
        let mut read_at = 0;
        let mut approval = None;
        let result = loop {
            // Registered before the read, so a wake between the read and
            // the wait is not lost.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let revision = self
                .seen_revision
                .load(std::sync::atomic::Ordering::Acquire);
            if stale || revision != read_at {
                read_at = revision;
                approval = match self.store.approval(id) {
                    Ok(Some(approval)) => Some(approval),
                    Ok(None) => break Err(StoreError::Corrupt(format!("approval {id} vanished"))),
                    Err(err) => break Err(err),
                };
                stale = false;
            }
            let Some(current) = &approval else {
                break Err(StoreError::Corrupt(format!("approval {id} vanished")));
            };
            let now = tokio::time::Instant::now();
            if current.state != ApprovalState::Pending
                || current.expires_at <= self.now()
                || now >= deadline
            {
                break Ok(current.clone());
            }
            let pause = POLL_INTERVAL.min(deadline - now);
            if tokio::time::timeout(pause, notified).await.is_ok() {
                stale = true;
            }
            self.poll_changes();
        };
        let mut waiters = self.waiters.lock();
        if let Some(existing) = waiters.get(id)
            && Arc::strong_count(existing) <= 2
        {
            waiters.remove(id);
        }
        result
    }

    pub fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.store.approval(id)
    }

    pub fn approvals(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.store.approvals(pending_only, limit)
    }

    /// Returns the most recent audit records of `identity`, newest first.
    pub fn history(&self, identity: &IdentityName, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let records = self.store.recent_audit(identity, limit)?;
        Ok(records
            .iter()
            .filter_map(|record| serde_json::from_str::<Entry>(record).ok())
            .collect())
    }

    pub fn owners(&self, identity: &IdentityName) -> Result<Vec<IdentityName>, StoreError> {
        self.store.owners(identity)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Trims a comment, replaces control characters and caps its length, so it
/// prints safely in terminals, pages and notifications.
fn clean_comment(comment: &str) -> String {
    comment
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                ' '
            } else {
                c
            }
        })
        .take(MAX_COMMENT_CHARS)
        .collect()
}

/// True for the Unicode controls that reorder text (U+200E, U+200F,
/// U+202A to U+202E and U+2066 to U+2069), which could make a comment read
/// differently.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
