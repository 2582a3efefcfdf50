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

/// Failed sign-ins or decisions in a row that lock an approver.
const MAX_CODE_FAILURES: u32 = 5;
/// How long a locked approver stays locked.
const CODE_LOCKOUT: Duration = Duration::from_secs(300);
/// Longest comment kept with a decision, in characters.
const MAX_COMMENT_CHARS: usize = 1000;
/// How often a waiting client's approval is read again, for decisions made
/// by another process such as the CLI.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The digest an approval is bound to: the method, the normalised target
/// (path and query as received) and the body's SHA-256.
pub fn operation_digest(method: &str, target: &str, body_sha256: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"stepgate-operation-v1\n");
    hasher.update(method.as_bytes());
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
    pub body_sha256: Option<String>,
    pub body_bytes: u64,
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

/// What happened to an approval request, for notifications.
#[derive(Clone, Debug)]
pub struct ApprovalEvent {
    /// `requested`, `approved`, `denied` or `expired`.
    pub kind: &'static str,
    pub approval: ApprovalRecord,
}

/// Why an approval presented with a request does not let it through.
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
        }
    }
}

/// Why an approver's sign-in or decision was rejected. Messages never
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
        "{approver} is not in approver group {group}, which decides approval {id}; add them with `stepgate approver add {approver} --group {group}`"
    )]
    NotInGroup {
        approver: String,
        group: String,
        id: String,
    },
    #[error(
        "approver group {group} may decide only {window}; approval {id} must wait for that window or be decided by another group's member"
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
    failures: Mutex<HashMap<IdentityName, (u32, Option<Timestamp>)>>,
    events: Mutex<Option<mpsc::UnboundedSender<ApprovalEvent>>>,
    /// True when at least one approver exists, so approval can be offered.
    has_approvers: std::sync::atomic::AtomicBool,
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
            failures: Mutex::default(),
            events: Mutex::default(),
            has_approvers: std::sync::atomic::AtomicBool::new(false),
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
    ) -> Result<ApprovalRecord, StoreError> {
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
            return Ok(existing);
        }
        let id = format!("ap_{}", stepgate_core::token::random_id(24));
        let approval = ApprovalRecord {
            id: id.clone(),
            identity: pending.identity,
            operation: operation.digest.clone(),
            method: pending.method,
            target: pending.target,
            body_sha256: operation.body_sha256.clone(),
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
        Ok(approval)
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
        // Both are hex digests; the comparison need not be constant-time
        // because neither is secret.
        if approval.operation != operation {
            return Err(ApprovalRejection::OtherOperation(id.to_owned()));
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
        if let Some((_, Some(until))) = self.failures.lock().get(name).copied()
            && until > now
        {
            return Err(DeskError::Locked {
                name: name.to_string(),
                until,
            });
        }
        let approver = self
            .store
            .approver(name)?
            .ok_or_else(|| DeskError::UnknownApprover(name.to_string()))?;
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
        let mut failures = self.failures.lock();
        match &outcome {
            Ok(()) => {
                failures.remove(name);
            }
            Err(_) => {
                let entry = failures.entry(name.clone()).or_insert((0, None));
                entry.0 += 1;
                if entry.0 >= MAX_CODE_FAILURES {
                    entry.0 = 0;
                    entry.1 = Some(now.saturating_add(CODE_LOCKOUT));
                    tracing::warn!(approver = %name, "approver locked after repeated wrong codes");
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
        entry.actor = Some(parsed.to_string());
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
        if &approval.identity == approver {
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

    /// Waits until approval `id` leaves the pending state or `timeout`
    /// passes, and returns it as it then is. Decisions made in this process
    /// wake the wait at once; those of other processes are read every
    /// quarter second.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<ApprovalRecord, StoreError> {
        let notify = self
            .waiters
            .lock()
            .entry(id.to_owned())
            .or_default()
            .clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            let notified = notify.notified();
            let approval = match self.store.approval(id) {
                Ok(Some(approval)) => approval,
                Ok(None) => break Err(StoreError::Corrupt(format!("approval {id} vanished"))),
                Err(err) => break Err(err),
            };
            let now = tokio::time::Instant::now();
            if approval.state != ApprovalState::Pending
                || approval.expires_at <= self.now()
                || now >= deadline
            {
                break Ok(approval);
            }
            let pause = POLL_INTERVAL.min(deadline - now);
            let _ = tokio::time::timeout(pause, notified).await;
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
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_COMMENT_CHARS)
        .collect()
}
