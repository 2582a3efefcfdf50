//! The engine: one decision per request. It authenticates the credential,
//! gathers signals against the identity's baseline, scores them, evaluates
//! the policy, picks the weakest sufficient step-up, checks step-up answers and
//! records every outcome in the audit trail.
//!
//! Front-ends turn wire input into [`RequestInput`] and the [`Verdict`] back
//! into their own words; they never decide. The engine keeps what the
//! decision path needs in memory and writes behind the request, except the
//! records and counters that must be durable before an answer: challenge,
//! deny and failure records, and the last accepted TOTP step.

mod approval;
mod grant_token;
mod state;
mod stepup;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use stepgate_audit::{Entry, Event};
use stepgate_config::{Config, StepUpConfig};
use stepgate_core::{
    ApiToken, Assurance, Clock, FactorKind, GrantScope, IdentityName, Locator, Network, Outcome,
    RequestFacts, RiskScore, Signal, SignalKind, Timestamp, Zones,
};
use stepgate_policy::{Policy, PolicyDecision, PolicyError, PolicyInput};
use stepgate_risk::{Accepted, Assessment, FailureKind, Scorer};
use stepgate_store::{Store, StoreError};

pub use approval::{
    APPROVAL_HEADER, ApprovalDesk, ApprovalEvent, ApprovalRejection, DeskError, Operation,
    PendingApproval, body_sha256, operation_digest,
};
pub use grant_token::{GrantKeys, GrantTokenError};
pub use stepup::StepUpFailure;
pub use writer::{AuditSink, AuditUnavailable, AuditWriter, Receipt};

use state::{Challenges, Credentials, Grants, RiskState, Sharded};

/// Most audit records that may wait for the writer. Past this the gateway
/// answers 503 instead of letting memory grow, because every allowed request
/// must still reach the audit trail.
const MAX_AUDIT_BACKLOG: u64 = 100_000;

/// Engine settings taken from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub risk: Arc<Scorer>,
    pub step_up: StepUpConfig,
    pub zones: Zones,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            risk: Arc::new(Scorer::new(config.risk.clone())),
            step_up: config.step_up.clone(),
            zones: Zones::new(config.zones.clone()),
        }
    }
}

/// A step-up answer carried by a request.
#[derive(Clone, Copy, Debug)]
pub struct StepUpAnswer<'a> {
    pub challenge_id: &'a str,
    pub totp_code: Option<&'a str>,
    pub dpop: Option<DpopAnswer<'a>>,
    pub signature: Option<SignatureAnswer<'a>>,
}

/// An approval id sent with a request (`Stepgate-Approval`) and the digest
/// of the request's operation, which the approval must cover.
#[derive(Clone, Copy, Debug)]
pub struct ApprovalAnswer<'a> {
    pub id: &'a str,
    /// [`operation_digest`] of the request as received.
    pub operation: &'a str,
}

/// An HTTP message signature (RFC 9421) sent to answer a challenge.
#[derive(Clone, Copy, Debug)]
pub struct SignatureAnswer<'a> {
    /// Every `Signature-Input` field line of the request.
    pub inputs: &'a [&'a str],
    /// Every `Signature` field line of the request.
    pub signatures: &'a [&'a str],
    /// The request as received, with the scheme and authority of the
    /// gateway's public origin.
    pub message: stepgate_pop::httpsig::Message<'a>,
    /// Result of the front-end's check of `Content-Digest` against the body
    /// it received.
    pub body: BodyDigest<'a>,
}

/// The front-end's check of a request body against its `Content-Digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyDigest<'a> {
    /// The request has no body.
    NoBody,
    /// `Content-Digest` matches the body received.
    Matches,
    /// The request has a body and no `Content-Digest`.
    Missing,
    /// `Content-Digest` does not match, or cannot be read; the reason.
    Mismatch(&'a str),
    /// The body could not be read whole; the reason.
    Unreadable(&'a str),
}

/// The DPoP proofs of a request, for a challenge or a DPoP-bound token.
#[derive(Clone, Copy, Debug)]
pub struct DpopAnswer<'a> {
    /// Every `DPoP` header of the request; exactly one is accepted.
    pub proofs: &'a [&'a str],
    /// The request URI built from the gateway's public origin and the
    /// normalised path, which the proof's `htu` must match.
    pub uri: &'a str,
}

/// The facts of a SQL statement that the audit trail records besides the
/// request facts.
#[derive(Clone, Copy, Debug)]
pub struct SqlStatement<'a> {
    pub database: &'a str,
    pub role: &'a str,
    /// `read`, `write`, `ddl`, `privilege`, `transaction`, `utility` or
    /// `function`.
    pub class: &'a str,
    pub fingerprint: &'a str,
    /// The text with its literals, when the configuration keeps it.
    pub text: Option<&'a str>,
}

/// The end of a SQL statement that was let through.
#[derive(Clone, Debug, Default)]
pub struct StatementEnd {
    /// Rows returned or changed, from the command tag or counted.
    pub rows: u64,
    /// Bytes of the result rows sent to the client.
    pub bytes: u64,
    /// SQLSTATE of the error, when the statement failed.
    pub sqlstate: Option<String>,
    /// False when the statement never reached the server.
    pub reached_server: bool,
}

/// One request as a front-end hands it over.
#[derive(Clone, Debug)]
pub struct RequestInput<'a> {
    /// The whole `Authorization` header value, if any.
    pub authorization: Option<&'a str>,
    /// The SQL statement the request is, for the PostgreSQL front-end.
    pub sql: Option<SqlStatement<'a>>,
    /// Id of the token that authenticated the connection the request came
    /// on, as a PostgreSQL client proves its token once with SCRAM. Used
    /// when `authorization` is `None`; the token is checked again on every
    /// request, so a revoked token or disabled identity stops the session.
    pub session_token: Option<&'a str>,
    pub answer: Option<StepUpAnswer<'a>>,
    /// DPoP proofs of the request and the URI they must name, for
    /// DPoP-bound tokens (`Authorization: DPoP`).
    pub dpop: Option<DpopAnswer<'a>>,
    pub facts: RequestFacts,
    /// Path and query for the audit trail, with query values redacted.
    pub audit_target: String,
    /// A signed grant token from an earlier step-up (`Stepgate-Grant`).
    pub grant_token: Option<&'a str>,
    /// The client certificate the TLS connection presented and the
    /// listener verified; `None` over plain HTTP or without one. It is
    /// checked against the identity's certificate bindings.
    pub client_certificate: Option<std::sync::Arc<stepgate_core::ClientCertificate>>,
    /// True when the request came over TLS on a listener that verifies
    /// client certificates, so a challenge can offer the certificate factor.
    pub client_certificates_checked: bool,
    /// An approval the request claims, with its operation digest.
    pub approval: Option<ApprovalAnswer<'a>>,
    /// True when an earlier decision of this same request accepted its DPoP
    /// proof, as when a held request is decided again after its approval.
    /// The proof is not checked twice, since its replay check would reject
    /// it.
    pub dpop_checked: bool,
}

/// Reason a request failed authentication. Clients only ever learn "invalid
/// token"; the kind goes to the audit trail and the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    NotBearer,
    Malformed,
    UnknownToken,
    WrongSecret,
    Revoked,
    IdentityDisabled,
    /// The identity's token is DPoP-bound and came as a plain Bearer token.
    DpopRequired,
    /// A DPoP-bound token came without a valid proof by the bound key.
    DpopInvalid,
    /// A DPoP proof lacked the nonce the gateway requires.
    DpopNonce,
    /// The identity's token is bound to a client certificate and came on a
    /// connection without a matching one.
    CertificateRequired,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing credential",
            AuthFailure::NotBearer => "authorization scheme is not Bearer",
            AuthFailure::Malformed => "malformed token",
            AuthFailure::UnknownToken => "unknown token",
            AuthFailure::WrongSecret => "token secret does not match",
            AuthFailure::Revoked => "token revoked",
            AuthFailure::IdentityDisabled => "identity disabled",
            AuthFailure::DpopRequired => "token is DPoP-bound and came without a DPoP proof",
            AuthFailure::DpopInvalid => "DPoP proof missing, invalid or by another key",
            AuthFailure::DpopNonce => "DPoP proof without the current nonce",
            AuthFailure::CertificateRequired => {
                "token is bound to a client certificate and came without it"
            }
        }
    }
}

/// A permitted request. The front-end forwards it, then calls
/// [`Engine::finish`] so the allow record is written and the baseline learns.
#[derive(Debug)]
pub struct Allowed {
    pub identity: IdentityName,
    pub risk: RiskScore,
    /// The factor proved by this very request, if it answered a challenge.
    pub stepped_up: Option<FactorKind>,
    /// Durability of the step-up record, when this request answered a challenge.
    pub receipt: Option<Receipt>,
    /// The signed grant token this step-up earned, for the client to show
    /// any replica, when grant tokens are on.
    pub grant_token: Option<String>,
    /// The approval this request used up, put back when the request never
    /// reaches the upstream.
    approval_id: Option<String>,
    entry: Entry,
    facts: RequestFacts,
    /// True when the request passed on its token alone, so it may teach
    /// the baseline.
    learn: bool,
}

impl Allowed {
    /// Returns the kinds of signal the request raised, for metrics.
    pub fn signals(&self) -> impl Iterator<Item = SignalKind> + '_ {
        self.entry.signals.iter().map(|signal| signal.kind)
    }
}

/// A challenge the front-end must send.
#[derive(Clone, Debug)]
pub struct ChallengeIssued {
    pub id: String,
    pub identity: IdentityName,
    pub factors: Vec<FactorKind>,
    pub expires_at: Timestamp,
    pub max_age: Duration,
    pub risk: RiskScore,
    /// The signals, when the config allows them in the answer.
    pub reasons: Option<Vec<Signal>>,
    /// The kinds of signal raised, for metrics.
    pub signals: Vec<SignalKind>,
    /// True when a person's approval is also needed once the factor is
    /// proved.
    pub then_approval: bool,
}

/// The engine's answer for one request. Every variant but `Allow` carries
/// a [`Receipt`] that the front-end must wait for before it answers.
#[derive(Debug)]
pub enum Verdict {
    Allow(Box<Allowed>),
    Challenge(ChallengeIssued, Receipt),
    Deny {
        identity: IdentityName,
        risk: RiskScore,
        /// The kinds of signal raised, for metrics.
        signals: Vec<SignalKind>,
        receipt: Receipt,
    },
    Unauthenticated(AuthFailure, Receipt),
    StepUpFailed(StepUpFailure, Receipt),
    /// The request needs a person's approval. The front-end digests the
    /// operation and hands it to [`ApprovalDesk::request`], which writes
    /// the audit record.
    ApprovalRequired(Box<PendingApproval>),
    /// The approval sent with the request does not let it through.
    ApprovalRejected {
        identity: IdentityName,
        rejection: ApprovalRejection,
        receipt: Receipt,
    },
    /// The audit trail cannot be written, or the decision failed; the
    /// gateway fails closed.
    Unavailable,
}

/// The decision engine. Cheap to share behind an `Arc`.
pub struct Engine {
    settings: Settings,
    policy: Policy,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    audit: AuditSink,
    credentials: RwLock<Arc<Credentials>>,
    risk: Sharded<RiskState>,
    grants: Grants,
    challenges: Challenges,
    locator: Option<Arc<dyn Locator>>,
    /// `jti` values of accepted DPoP proofs.
    dpop_replays: stepgate_pop::ReplayCache,
    /// Issuer of DPoP nonces, when proofs must carry one.
    dpop_nonces: Option<stepgate_pop::NonceIssuer>,
    /// Keys of signed grant tokens, when they are on.
    grant_keys: Option<GrantKeys>,
    /// The approval desk, when approvals are on.
    approvals: Option<Arc<ApprovalDesk>>,
}

impl Engine {
    /// Builds an engine on the store's current state.
    pub fn new(
        settings: Settings,
        policy: Policy,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        audit: AuditSink,
    ) -> Result<Self, StoreError> {
        let credentials = Credentials::from_snapshot(store.snapshot()?);
        let risk = Sharded::new();
        let mut outdated = 0;
        for (name, baseline) in store.load_baselines()? {
            if baseline.is_current() {
                risk.with(&name, |state: &mut RiskState| state.baseline = baseline);
            } else {
                outdated += 1;
                // Saved at the next flush in the current layout.
                risk.with(&name, |state: &mut RiskState| state.dirty = true);
            }
        }
        if outdated > 0 {
            tracing::warn!(
                baselines = outdated,
                "baselines of an older layout dropped; those identities learn again"
            );
        }
        let engine = Self {
            settings,
            policy,
            clock,
            store,
            audit,
            credentials: RwLock::new(Arc::new(credentials)),
            risk,
            grants: Sharded::new(),
            challenges: Challenges::default(),
            locator: None,
            dpop_replays: stepgate_pop::ReplayCache::default(),
            dpop_nonces: None,
            grant_keys: None,
            approvals: None,
        };
        engine.restore_locks();
        Ok(engine)
    }

    fn restore_locks(&self) {
        let Ok(snapshot) = self.store.snapshot() else {
            return;
        };
        for record in snapshot.totp {
            if let Some(until) = record.locked_until {
                self.risk
                    .with(&record.identity, |state| state.failures.lock_totp(until));
            }
        }
    }

    /// Requires server-provided nonces in DPoP proofs
    /// (`step_up.dpop_nonce`).
    pub fn with_dpop_nonces(mut self, issuer: stepgate_pop::NonceIssuer) -> Self {
        self.dpop_nonces = Some(issuer);
        self
    }

    /// Returns the DPoP nonce to hand out now, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonces
            .as_ref()
            .map(|issuer| issuer.current(self.now()))
    }

    /// Nonces a DPoP proof may carry now; empty when none is required.
    pub(crate) fn accepted_nonces(&self, now: Timestamp) -> Vec<String> {
        self.dpop_nonces
            .as_ref()
            .map(|issuer| issuer.accepted(now).to_vec())
            .unwrap_or_default()
    }

    /// Looks client addresses up with `locator` (GeoIP databases, listed
    /// hosting networks) before scoring them.
    /// Returns true when `authorization` carries a valid token of an identity
    /// with the open challenge `challenge_id`, and that challenge accepts
    /// message signatures. The front-end asks before it reads a signed
    /// answer's body whole, so no one else can make it buffer bodies.
    pub fn expects_signed_answer(&self, authorization: Option<&str>, challenge_id: &str) -> bool {
        let Some((_, value)) = presented_token(authorization) else {
            return false;
        };
        let Ok(token) = ApiToken::parse(value) else {
            return false;
        };
        let credentials = self.credentials.read().clone();
        let Some(stored) = credentials.tokens.get(token.id().as_str()) else {
            return false;
        };
        if stored.revoked || stored.hash != token.hash() {
            return false;
        }
        let now = self.now();
        self.challenges.get(challenge_id).is_some_and(|challenge| {
            challenge.identity == stored.identity
                && now < challenge.expires_at
                && challenge.factors.contains(&FactorKind::Signature)
        })
    }

    /// Hands out and accepts signed grant tokens (`step_up.grant_tokens`).
    pub fn with_grant_keys(mut self, keys: GrantKeys) -> Self {
        self.grant_keys = Some(keys);
        self
    }

    /// Asks people for approvals through `desk`.
    pub fn with_approvals(mut self, desk: Arc<ApprovalDesk>) -> Self {
        self.approvals = Some(desk);
        self
    }

    pub fn approvals(&self) -> Option<&Arc<ApprovalDesk>> {
        self.approvals.as_ref()
    }

    /// Returns the identity of a valid, unrevoked token of an enabled
    /// identity in `authorization`, without recording anything. Front-ends
    /// ask before they do work for a caller, such as reading a body whole.
    pub fn identity_of(&self, authorization: Option<&str>) -> Option<IdentityName> {
        let (_, value) = presented_token(authorization)?;
        let token = ApiToken::parse(value).ok()?;
        let credentials = self.credentials.read().clone();
        let stored = credentials.tokens.get(token.id().as_str())?;
        if stored.revoked || stored.hash != token.hash() {
            return None;
        }
        credentials
            .identities
            .get(&stored.identity)
            .filter(|identity| !identity.disabled)
            .map(|_| stored.identity.clone())
    }

    /// Returns the SCRAM credentials of every unrevoked token of the
    /// enabled identity `name`, with each token's id, for a front-end that
    /// checks tokens as database passwords. Empty when the identity is
    /// unknown or disabled or has no token with a SCRAM credential.
    pub fn scram_credentials(&self, name: &str) -> Vec<(String, String)> {
        let credentials = self.credentials.read().clone();
        let Ok(name) = IdentityName::new(name) else {
            return Vec::new();
        };
        if credentials
            .identities
            .get(&name)
            .is_none_or(|identity| identity.disabled)
        {
            return Vec::new();
        }
        let mut found: Vec<(String, String)> = credentials
            .tokens
            .iter()
            .filter(|(_, token)| token.identity == name && !token.revoked)
            .filter_map(|(id, token)| Some((id.clone(), token.scram.clone()?)))
            .collect();
        found.sort();
        found
    }

    /// Checks a step-up answer sent apart from the request it unlocks, as a
    /// PostgreSQL client does with `stepgate.step_up(...)`. `input.facts`
    /// are those of the challenged request. On success the grant covers
    /// that request, which the client then repeats, and the returned
    /// receipt is for the durable step-up record. On failure the verdict
    /// says why, as `decide` would.
    pub fn answer_apart(
        &self,
        input: RequestInput<'_>,
    ) -> Result<(FactorKind, Receipt), Box<Verdict>> {
        if !self.audit.is_healthy() {
            return Err(Box::new(Verdict::Unavailable));
        }
        let now = self.now();
        let mut facts = input.facts.clone();
        facts.time = now;
        let credentials = self.credentials.read().clone();
        let mut entry = request_entry(&input, now);
        let identity = match self.authenticate(
            &credentials,
            input.authorization,
            input.session_token,
            &mut entry,
            now,
            facts.network(),
        ) {
            Ok(identity) => identity,
            Err(failure) => {
                entry.event = Some(Event::AuthFailure);
                entry.detail = Some(failure.as_str().to_owned());
                return Err(Box::new(Verdict::Unauthenticated(
                    failure,
                    self.audit.durable(entry),
                )));
            }
        };
        let Some(answer) = input.answer else {
            entry.event = Some(Event::StepUpFailure);
            entry.detail = Some(StepUpFailure::UnknownChallenge.to_string());
            return Err(Box::new(Verdict::StepUpFailed(
                StepUpFailure::UnknownChallenge,
                self.audit.durable(entry),
            )));
        };
        entry.challenge_id = Some(answer.challenge_id.to_owned());
        match self.answer_challenge(&credentials, &identity, &facts, answer, None, None, now) {
            Ok(proved) => {
                entry.event = Some(Event::StepUpSuccess);
                entry.factor = Some(proved.factor.name().to_owned());
                entry.detail = proved.key;
                Ok((proved.factor, self.audit.durable(entry)))
            }
            Err(failure) => {
                entry.event = Some(Event::StepUpFailure);
                entry.factor = Some(FactorKind::Totp.name().to_owned());
                entry.detail = Some(failure.to_string());
                Err(Box::new(Verdict::StepUpFailed(
                    failure,
                    self.audit.durable(entry),
                )))
            }
        }
    }

    /// Records a failed database login of `name` (a wrong SCRAM proof) in
    /// the audit trail and counts it as an authentication failure of the
    /// identity, when it exists. The record names no token: SCRAM does not
    /// say which token the client tried.
    pub fn record_pg_auth_failure(&self, name: &str, client_addr: std::net::IpAddr) {
        let now = self.now();
        let mut entry = Entry::new(Event::AuthFailure, now);
        entry.client_addr = Some(client_addr.to_string());
        entry.peer_addr = Some(client_addr.to_string());
        entry.method = Some("STARTUP".to_owned());
        entry.detail = Some("PostgreSQL login: SCRAM proof matches no token".to_owned());
        if let Ok(identity) = IdentityName::new(name) {
            let known = self.credentials.read().identities.contains_key(&identity);
            if known {
                entry.identity = Some(identity.to_string());
                self.record_failure(
                    &identity,
                    FailureKind::Authentication,
                    now,
                    Network::of(client_addr),
                );
            }
        }
        self.audit.behind(entry);
    }

    pub fn with_locator(mut self, locator: Arc<dyn Locator>) -> Self {
        self.locator = Some(locator);
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn audit(&self) -> &AuditSink {
        &self.audit
    }

    /// Reloads identities, tokens and factors when an administrative change
    /// raised the store's revision. Returns true when it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, StoreError> {
        let current = self.credentials.read().revision;
        if self.store.revision()? == current {
            return Ok(false);
        }
        let snapshot = self.store.snapshot()?;
        let revision = snapshot.revision;
        *self.credentials.write() = Arc::new(Credentials::from_snapshot(snapshot));
        if let Some(desk) = &self.approvals {
            desk.refresh();
        }
        tracing::info!(revision, "credentials reloaded");
        Ok(true)
    }

    /// Saves changed baselines and drops expired challenges and grants.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let now = self.now();
        let mut changed = Vec::new();
        self.risk.for_each(|name, state| {
            if state.dirty {
                state.dirty = false;
                changed.push((name.clone(), state.baseline.clone()));
            }
        });
        if !changed.is_empty()
            && let Err(err) = self.store.save_baselines(&changed)
        {
            // Mark them again so the next flush retries.
            for (name, _) in &changed {
                self.risk.with(name, |state| state.dirty = true);
            }
            return Err(err);
        }
        self.challenges.purge_expired(now);
        self.grants
            .for_each(|_, grants| grants.retain(|grant| grant.expires_at > now));
        Ok(changed.len())
    }

    /// Decides one request.
    pub fn decide(&self, mut input: RequestInput<'_>) -> Verdict {
        if !self.audit.is_healthy() {
            return Verdict::Unavailable;
        }
        if self.audit.queued() > MAX_AUDIT_BACKLOG {
            tracing::warn!(
                queued = self.audit.queued(),
                "audit writer behind, shedding load"
            );
            return Verdict::Unavailable;
        }
        let now = self.now();
        input.facts.time = now;
        let credentials = self.credentials.read().clone();

        let mut entry = request_entry(&input, now);
        let identity = match self.authenticate(
            &credentials,
            input.authorization,
            input.session_token,
            &mut entry,
            now,
            input.facts.network(),
        ) {
            Ok(identity) => identity,
            Err(failure) => {
                entry.event = Some(Event::AuthFailure);
                entry.detail = Some(failure.as_str().to_owned());
                tracing::debug!(reason = failure.as_str(), client.addr = %input.facts.client_addr, "authentication failed");
                return Verdict::Unauthenticated(failure, self.audit.durable(entry));
            }
        };
        entry.identity = Some(identity.to_string());
        // A proof sent with a challenge response is checked with that
        // response. Any other proof is checked here, for DPoP-bound tokens.
        let answers_with_dpop = input.answer.is_some_and(|answer| answer.dpop.is_some());
        let proved_dpop = if answers_with_dpop {
            false
        } else {
            match self.check_bound_token(&credentials, &identity, &input, now) {
                Ok(proved) => proved,
                Err(failure) => {
                    self.record_failure(
                        &identity,
                        FailureKind::Authentication,
                        now,
                        input.facts.network(),
                    );
                    entry.event = Some(Event::AuthFailure);
                    entry.detail = Some(failure.as_str().to_owned());
                    tracing::info!(identity = %identity, reason = failure.as_str(), "DPoP-bound token rejected");
                    return Verdict::Unauthenticated(failure, self.audit.durable(entry));
                }
            }
        };
        let proved_certificate = match self.check_certificate(&credentials, &identity, &input, now)
        {
            Ok(proved) => proved,
            Err(failure) => {
                self.record_failure(
                    &identity,
                    FailureKind::Authentication,
                    now,
                    input.facts.network(),
                );
                entry.event = Some(Event::AuthFailure);
                entry.detail = Some(match &input.client_certificate {
                    Some(certificate) => format!(
                        "{} (presented x5t#S256 {})",
                        failure.as_str(),
                        certificate.thumbprint_sha256
                    ),
                    None => failure.as_str().to_owned(),
                });
                tracing::info!(identity = %identity, reason = failure.as_str(), "certificate-bound token rejected");
                return Verdict::Unauthenticated(failure, self.audit.durable(entry));
            }
        };
        input.facts.credential = entry.token_id.clone();
        if let Some(locator) = &self.locator {
            input.facts.location = locator.locate(input.facts.client_addr);
        }

        let mut stepped_up = None;
        let mut step_up_receipt = None;
        if let Some(answer) = input.answer {
            let token = presented_token(input.authorization).map(|(_, token)| token);
            let certificate = proved_certificate.as_deref();
            match self.answer_challenge(
                &credentials,
                &identity,
                &input.facts,
                answer,
                token,
                certificate,
                now,
            ) {
                Ok(proved) => {
                    let mut success = entry.clone();
                    success.event = Some(Event::StepUpSuccess);
                    success.factor = Some(proved.factor.name().to_owned());
                    success.challenge_id = Some(answer.challenge_id.to_owned());
                    success.detail = proved.key;
                    step_up_receipt = Some(self.audit.durable(success));
                    stepped_up = Some(proved.factor);
                }
                Err(failure) => {
                    entry.event = Some(Event::StepUpFailure);
                    entry.challenge_id = Some(answer.challenge_id.to_owned());
                    let attempted = if answer.dpop.is_some() {
                        FactorKind::Dpop
                    } else if answer.signature.is_some() {
                        FactorKind::Signature
                    } else {
                        FactorKind::Totp
                    };
                    entry.factor = Some(attempted.name().to_owned());
                    entry.detail = Some(failure.to_string());
                    return Verdict::StepUpFailed(failure, self.audit.durable(entry));
                }
            }
        }

        let mut approval: Option<(String, Timestamp)> = None;
        if let Some(answer) = input.approval {
            let checked = match &self.approvals {
                Some(desk) => desk.check(answer.id, &identity, answer.operation),
                None => Err(ApprovalRejection::Unknown(answer.id.to_owned())),
            };
            match checked {
                Ok(record) => {
                    approval = Some((record.id, record.decided_at.unwrap_or(record.created_at)));
                }
                Err(rejection) => {
                    entry.event = Some(Event::StepUpFailure);
                    entry.factor = Some(FactorKind::Approval.name().to_owned());
                    entry.challenge_id = Some(answer.id.to_owned());
                    entry.detail = Some(rejection.to_string());
                    tracing::info!(identity = %identity, approval.id = answer.id, reason = rejection.code(), "approval not accepted");
                    return Verdict::ApprovalRejected {
                        identity,
                        rejection,
                        receipt: self.audit.durable(entry),
                    };
                }
            }
        }

        let facts = &input.facts;
        let scope = GrantScope {
            action: facts.action,
            resource: facts.resource.clone(),
        };
        let network = facts.network();
        let scorer = &self.settings.risk;
        let no_acceptances = Accepted::default();
        let accepted = credentials
            .accepted
            .get(&identity)
            .unwrap_or(&no_acceptances);
        let (assessment, learning) = self.risk.with(&identity, |state| {
            let assessment = scorer.assess(&state.baseline, &state.failures, accepted, facts);
            let learning = scorer.in_learning(&state.baseline);
            // The rate and the credential's sources change on every request.
            // They are saved with the next learned request, so observing
            // alone does not mark the baseline for the next flush.
            scorer.observe(&mut state.baseline, facts);
            (assessment, learning)
        });
        let mut assurance = Assurance::none();
        if proved_dpop {
            assurance.add(FactorKind::Dpop, now);
        }
        if let Some((_, approved_at)) = &approval {
            assurance.add(FactorKind::Approval, *approved_at);
        }
        if let Some(thumbprint) = &proved_certificate {
            assurance.add(FactorKind::Certificate, now);
            entry.detail = Some(format!("certificate x5t#S256 {thumbprint}"));
        }
        self.grants.with(&identity, |grants| {
            for grant in grants
                .iter()
                .filter(|grant| grant.covers(&identity, &scope, network, now))
            {
                assurance.add(grant.factor, grant.proved_at);
            }
        });
        let proved_jkt = credentials
            .dpop
            .get(&identity)
            .filter(|_| proved_dpop || stepped_up == Some(FactorKind::Dpop))
            .map(|binding| binding.thumbprint.as_str());
        let proved_x5t = proved_certificate.as_deref();
        if let (Some(keys), Some(token)) = (&self.grant_keys, input.grant_token) {
            match keys.verify(
                token, &identity, &scope, network, proved_jkt, proved_x5t, now,
            ) {
                Ok(grant) => assurance.add(grant.factor, grant.proved_at),
                Err(err) => {
                    tracing::info!(identity = %identity, error = %err, "grant token not counted");
                    entry.detail = Some(err.to_string());
                }
            }
        }
        let grant_token = match (&self.grant_keys, stepped_up) {
            (Some(keys), Some(factor)) => {
                let grant = stepgate_core::Grant::new(
                    identity.clone(),
                    scope.clone(),
                    network,
                    factor,
                    now,
                    self.settings.step_up.max_age(),
                );
                Some(keys.issue(&grant, proved_jkt, proved_x5t))
            }
            _ => None,
        };
        let proved: Vec<(FactorKind, i64)> = assurance
            .iter()
            .map(|(kind, at)| (kind, now.since(at).as_secs() as i64))
            .collect();
        let offered: Vec<FactorKind> =
            self.enrolled_factors(&credentials, &identity, input.client_certificates_checked);
        let decision = match evaluate_policy(
            &self.settings,
            &self.policy,
            identity.as_str(),
            learning,
            facts,
            &assessment,
            &proved,
            &offered,
        ) {
            Ok(decision) => decision,
            Err(err) => {
                tracing::error!(identity = %identity, error = %err, "policy evaluation failed, failing closed");
                return Verdict::Unavailable;
            }
        };

        let teaches = self.policy.teaches_baseline(&decision.reasons);
        entry.risk = Some(assessment.score.value());
        entry.signals = assessment.signals.clone();
        entry.policies = decision.reasons;
        entry.decision = Some(decision.outcome.as_str().to_owned());
        if let Some((factor, _)) = assurance.iter().next() {
            entry.factor = Some(factor.name().to_owned());
        }

        let satisfying = decision.satisfying;
        let then_approval = decision.then_approval;
        let zone = facts
            .zone
            .as_deref()
            .and_then(|name| self.settings.zones.iter().find(|zone| zone.name == name));
        let zone_wants_approval =
            approval.is_none() && zone.is_some_and(|zone| zone.needs_approval(facts.action));
        match (decision.outcome, decision.step_up) {
            (Outcome::Allow, _) if zone_wants_approval => {
                let ask = stepgate_policy::ApprovalAsk::default();
                let cause = zone.map(|zone| {
                    format!(
                        "zone_approval: zone {} needs a person's approval for every {}",
                        zone.name,
                        facts.action.as_str()
                    )
                });
                self.approval_required(entry, &identity, facts, &assessment, &ask, zone, cause)
            }
            (Outcome::StepUp, Some(FactorKind::Approval)) => {
                let ask = self.policy.approval_ask(&entry.policies);
                let cause = Some(format!(
                    "policy: {} asks for a person's approval",
                    entry.policies.join(", ")
                ));
                self.approval_required(entry, &identity, facts, &assessment, &ask, zone, cause)
            }
            (Outcome::Allow, _) => {
                if let Some((id, _)) = &approval {
                    let used = match &self.approvals {
                        Some(desk) if !desk.config().single_use => Ok(true),
                        Some(desk) => desk.use_approval(id),
                        None => Ok(false),
                    };
                    match used {
                        Ok(true) => {
                            tracing::info!(identity = %identity, approval.id = %id, "approval used");
                            entry.challenge_id = Some(id.clone());
                            entry.factor = Some(FactorKind::Approval.name().to_owned());
                            // Durable before forwarding, like a step-up, so
                            // the trail shows the use even after a crash.
                            let mut used = entry.clone();
                            used.event = Some(Event::StepUpSuccess);
                            used.detail = Some(format!("approval {id} used"));
                            step_up_receipt = Some(self.audit.durable(used));
                        }
                        Ok(false) => {
                            let rejection = ApprovalRejection::Used(id.clone());
                            entry.event = Some(Event::StepUpFailure);
                            entry.factor = Some(FactorKind::Approval.name().to_owned());
                            entry.challenge_id = Some(id.clone());
                            entry.detail = Some(rejection.to_string());
                            return Verdict::ApprovalRejected {
                                identity,
                                rejection,
                                receipt: self.audit.durable(entry),
                            };
                        }
                        Err(err) => {
                            tracing::error!(identity = %identity, approval.id = %id, error = %err, "cannot use an approval, failing closed");
                            return Verdict::Unavailable;
                        }
                    }
                }
                entry.event = Some(Event::Allow);
                Verdict::Allow(Box::new(Allowed {
                    identity,
                    risk: assessment.score,
                    stepped_up,
                    receipt: step_up_receipt,
                    grant_token,
                    approval_id: approval.map(|(id, _)| id),
                    entry,
                    learn: assurance.is_empty() || teaches,
                    facts: input.facts,
                }))
            }
            (Outcome::StepUp, Some(factor)) => {
                // An approval is asked for only when nothing else would do.
                let factors: Vec<FactorKind> = satisfying
                    .into_iter()
                    .filter(|kind| *kind != FactorKind::Approval)
                    .collect();
                let factors = if factors.is_empty() {
                    vec![factor]
                } else {
                    factors
                };
                let id = format!("ch_{}", stepgate_core::token::random_id(24));
                let expires_at = now.saturating_add(self.settings.step_up.challenge_ttl());
                let challenge = state::Challenge {
                    identity: identity.clone(),
                    scope,
                    network,
                    factors: factors.clone(),
                    expires_at,
                };
                self.challenges.insert(id.clone(), challenge);
                entry.event = Some(Event::Challenge);
                entry.challenge_id = Some(id.clone());
                let names: Vec<&str> = factors.iter().map(|factor| factor.name()).collect();
                entry.factor = Some(names.join(" "));
                let kinds = assessment
                    .signals
                    .iter()
                    .map(|signal| signal.kind)
                    .collect();
                let issued = ChallengeIssued {
                    id,
                    identity,
                    factors,
                    expires_at,
                    max_age: self.settings.step_up.max_age(),
                    risk: assessment.score,
                    reasons: self
                        .settings
                        .step_up
                        .include_reasons
                        .then_some(assessment.signals),
                    signals: kinds,
                    then_approval: then_approval || zone_wants_approval,
                };
                Verdict::Challenge(issued, self.audit.durable(entry))
            }
            _ => {
                entry.event = Some(Event::Deny);
                entry.decision = Some(Outcome::Deny.as_str().to_owned());
                Verdict::Deny {
                    identity,
                    risk: assessment.score,
                    signals: assessment
                        .signals
                        .iter()
                        .map(|signal| signal.kind)
                        .collect(),
                    receipt: self.audit.durable(entry),
                }
            }
        }
    }

    /// Records a request that needed approval but whose operation could not
    /// be digested, such as when its body did not arrive; no approval is
    /// requested.
    pub fn abandon_approval(&self, pending: Box<PendingApproval>, reason: &str) -> Receipt {
        let mut entry = pending.entry;
        entry.decision = Some(Outcome::Deny.as_str().to_owned());
        entry.detail = Some(format!("approval not requested: {reason}"));
        self.audit.durable(entry)
    }

    /// Records the end of an allowed request and teaches the baseline.
    pub fn finish(&self, allowed: Box<Allowed>, upstream_status: Option<u16>, duration: Duration) {
        let Allowed {
            identity,
            mut entry,
            facts,
            learn,
            approval_id,
            ..
        } = *allowed;
        if upstream_status.is_none()
            && let (Some(id), Some(desk)) = (&approval_id, &self.approvals)
            && desk.config().single_use
        {
            match desk.store().release_approval(id) {
                Ok(true) => {
                    tracing::info!(identity = %identity, approval.id = %id, "request did not reach the upstream, approval usable again");
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(identity = %identity, approval.id = %id, error = %err, "cannot put an unused approval back");
                }
            }
        }
        entry.upstream_status = upstream_status;
        entry.duration_us = Some(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
        if upstream_status.is_none() {
            entry.event = Some(Event::Error);
        }
        self.audit.behind(entry);
        let refused = matches!(upstream_status, Some(401 | 403));
        if learn || refused {
            let scorer = &self.settings.risk;
            let network = facts.network();
            self.risk.with(&identity, |state| {
                if refused {
                    state
                        .failures
                        .record(FailureKind::Authorization, facts.time, network);
                } else {
                    scorer.learn(&mut state.baseline, &facts);
                    state.dirty = true;
                }
            });
        }
    }

    /// Records the end of an allowed SQL statement, with its rows and
    /// bytes, and teaches the baseline. A statement that failed with a
    /// permission error (SQLSTATE class 42501) counts as a refusal.
    pub fn finish_statement(
        &self,
        mut allowed: Box<Allowed>,
        end: StatementEnd,
        duration: Duration,
    ) {
        allowed.entry.rows = Some(end.rows);
        allowed.entry.bytes = Some(end.bytes);
        let status = match (&end.sqlstate, end.reached_server) {
            (_, false) => None,
            (None, true) => Some(200),
            (Some(code), true) if code == "42501" => Some(403),
            (Some(_), true) => Some(500),
        };
        allowed.entry.sqlstate = end.sqlstate;
        let identity = allowed.identity.clone();
        self.finish(allowed, status, duration);
        self.record_volume(&identity, end.bytes, end.rows);
    }

    /// Adds bytes sent to `identity` in a response body to its data-volume
    /// window. Front-ends call it when the body has been sent or abandoned.
    pub fn record_volume(&self, identity: &IdentityName, bytes: u64, rows: u64) {
        if bytes == 0 && rows == 0 {
            return;
        }
        let now = self.now();
        let scorer = &self.settings.risk;
        self.risk.with(identity, |state| {
            scorer.record_volume(&mut state.baseline, now, bytes, rows);
            state.dirty = true;
        });
    }

    fn authenticate(
        &self,
        credentials: &Credentials,
        authorization: Option<&str>,
        session_token: Option<&str>,
        entry: &mut Entry,
        now: Timestamp,
        network: Network,
    ) -> Result<IdentityName, AuthFailure> {
        let stored = match (authorization, session_token) {
            (None, Some(id)) => {
                entry.token_id = Some(id.to_owned());
                let stored = credentials
                    .tokens
                    .get(id)
                    .ok_or(AuthFailure::UnknownToken)?;
                entry.identity = Some(stored.identity.to_string());
                stored
            }
            (header, _) => {
                let header = header.ok_or(AuthFailure::Missing)?;
                let (scheme, value) = header.split_once(' ').ok_or(AuthFailure::NotBearer)?;
                if !scheme.eq_ignore_ascii_case("Bearer") && !scheme.eq_ignore_ascii_case("DPoP") {
                    return Err(AuthFailure::NotBearer);
                }
                let token =
                    ApiToken::parse(value.trim_matches(' ')).map_err(|_| AuthFailure::Malformed)?;
                entry.token_id = Some(token.id().to_string());
                let stored = credentials
                    .tokens
                    .get(token.id().as_str())
                    .ok_or(AuthFailure::UnknownToken)?;
                entry.identity = Some(stored.identity.to_string());
                if stored.hash != token.hash() {
                    self.record_failure(
                        &stored.identity,
                        FailureKind::Authentication,
                        now,
                        network,
                    );
                    return Err(AuthFailure::WrongSecret);
                }
                stored
            }
        };
        if stored.revoked {
            self.record_failure(&stored.identity, FailureKind::Authentication, now, network);
            return Err(AuthFailure::Revoked);
        }
        match credentials.identities.get(&stored.identity) {
            Some(identity) if !identity.disabled => Ok(stored.identity.clone()),
            _ => {
                self.record_failure(&stored.identity, FailureKind::Authentication, now, network);
                Err(AuthFailure::IdentityDisabled)
            }
        }
    }

    /// Checks the DPoP proof of a request whose token is DPoP-bound or that
    /// uses the `DPoP` scheme. Returns true when a proof by the bound key
    /// passed, so the request proves the DPoP factor.
    fn check_bound_token(
        &self,
        credentials: &Credentials,
        identity: &IdentityName,
        input: &RequestInput<'_>,
        now: Timestamp,
    ) -> Result<bool, AuthFailure> {
        let presented = presented_token(input.authorization);
        let scheme_dpop = presented.is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("DPoP"));
        let binding = credentials.dpop.get(identity);
        if scheme_dpop && input.dpop_checked && binding.is_some() {
            return Ok(true);
        }
        if !scheme_dpop {
            return match binding {
                Some(binding) if binding.required => Err(AuthFailure::DpopRequired),
                _ => Ok(false),
            };
        }
        let (Some(binding), Some(dpop)) = (binding, input.dpop) else {
            return Err(AuthFailure::DpopInvalid);
        };
        let token = presented.map(|(_, token)| token);
        match self.verify_bound_proof(binding, dpop, &input.facts.method, token, now) {
            Ok(_) => Ok(true),
            Err(rejection) => {
                tracing::info!(identity = %identity, reason = ?rejection, "DPoP proof rejected");
                Err(match rejection {
                    stepup::DpopRejection::Nonce => AuthFailure::DpopNonce,
                    _ => AuthFailure::DpopInvalid,
                })
            }
        }
    }

    /// Checks the identity's certificate bindings against the connection's
    /// client certificate. Returns the thumbprint of a matching certificate,
    /// which proves the certificate factor; fails when a binding is
    /// required and nothing matches.
    fn check_certificate(
        &self,
        credentials: &Credentials,
        identity: &IdentityName,
        input: &RequestInput<'_>,
        now: Timestamp,
    ) -> Result<Option<String>, AuthFailure> {
        let Some(bindings) = credentials.certificates.get(identity) else {
            return Ok(None);
        };
        let matched = input.client_certificate.as_deref().filter(|certificate| {
            bindings
                .iter()
                .any(|binding| binding.matches(certificate, now))
        });
        if let Some(certificate) = matched {
            return Ok(Some(certificate.thumbprint_sha256.clone()));
        }
        if let Some(certificate) = &input.client_certificate {
            tracing::info!(identity = %identity, tls.client.x5t_s256 = %certificate.thumbprint_sha256, "client certificate matches no binding of the identity");
        }
        if bindings.iter().any(|binding| binding.required) {
            return Err(AuthFailure::CertificateRequired);
        }
        Ok(None)
    }

    /// Builds the verdict for a request that needs a person's approval:
    /// the group and quorum come from the policy's annotations, then the
    /// zone, then the group's settings. Without any approver the request is
    /// denied, since nobody could approve it.
    #[allow(clippy::too_many_arguments)]
    fn approval_required(
        &self,
        mut entry: Entry,
        identity: &IdentityName,
        facts: &RequestFacts,
        assessment: &Assessment,
        ask: &stepgate_policy::ApprovalAsk,
        zone: Option<&stepgate_core::Zone>,
        cause: Option<String>,
    ) -> Verdict {
        let signals = assessment
            .signals
            .iter()
            .map(|signal| signal.kind)
            .collect();
        let Some(desk) = self.approvals.as_ref().filter(|desk| desk.has_approvers()) else {
            entry.event = Some(Event::Deny);
            entry.decision = Some(Outcome::Deny.as_str().to_owned());
            entry.detail = Some(
                "approval needed but no approver exists; add one with `stepgate approver add`"
                    .to_owned(),
            );
            return Verdict::Deny {
                identity: identity.clone(),
                risk: assessment.score,
                signals,
                receipt: self.audit.durable(entry),
            };
        };
        let config = desk.config();
        let group = ask
            .group
            .clone()
            .or_else(|| zone.and_then(|zone| zone.approval_group.clone()))
            .unwrap_or_else(|| config.default_group.clone());
        let quorum = ask
            .quorum
            .or_else(|| zone.and_then(|zone| zone.approval_quorum))
            .unwrap_or_else(|| config.group(&group).quorum);
        entry.event = Some(Event::ApprovalRequest);
        entry.decision = Some(Outcome::StepUp.as_str().to_owned());
        entry.factor = Some(FactorKind::Approval.name().to_owned());
        let reasons = cause
            .into_iter()
            .chain(
                assessment
                    .signals
                    .iter()
                    .map(|signal| format!("{}: {}", signal.kind.name(), signal.reason)),
            )
            .collect();
        Verdict::ApprovalRequired(Box::new(PendingApproval {
            identity: identity.clone(),
            method: facts.method.clone(),
            target: entry.path.clone().unwrap_or_default(),
            action: facts.action.as_str().to_owned(),
            zone: facts.zone.clone(),
            client_addr: facts.client_addr.to_string(),
            risk: assessment.score.value(),
            reasons,
            policies: entry.policies.clone(),
            group,
            quorum,
            entry,
        }))
    }

    fn record_failure(
        &self,
        identity: &IdentityName,
        kind: FailureKind,
        now: Timestamp,
        network: Network,
    ) {
        self.risk
            .with(identity, |state| state.failures.record(kind, now, network));
    }

    fn enrolled_factors(
        &self,
        credentials: &Credentials,
        identity: &IdentityName,
        client_certificates_checked: bool,
    ) -> Vec<FactorKind> {
        let mut factors = Vec::new();
        if credentials.totp.contains_key(identity) {
            factors.push(FactorKind::Totp);
        }
        if credentials.dpop.contains_key(identity) {
            factors.push(FactorKind::Dpop);
        }
        // A certificate cannot answer on a connection that carries none.
        if client_certificates_checked && credentials.certificates.contains_key(identity) {
            factors.push(FactorKind::Certificate);
        }
        if credentials.signing_keys.contains_key(identity) {
            factors.push(FactorKind::Signature);
        }
        if self
            .approvals
            .as_ref()
            .is_some_and(|desk| desk.has_approvers())
        {
            factors.push(FactorKind::Approval);
        }
        factors
    }
}

/// Evaluates the policy for one scored request: the step shared by the
/// gateway and by offline replay, so both decide alike.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_policy(
    settings: &Settings,
    policy: &Policy,
    identity: &str,
    learning: bool,
    facts: &RequestFacts,
    assessment: &Assessment,
    proved: &[(FactorKind, i64)],
    offered: &[FactorKind],
) -> Result<PolicyDecision, PolicyError> {
    let signal_names: Vec<&'static str> = assessment.signal_names().collect();
    let zone = facts
        .zone
        .as_deref()
        .and_then(|name| settings.zones.iter().find(|z| z.name == name));
    let input = PolicyInput {
        identity,
        identity_learning: learning,
        action: facts.action,
        resource: &facts.resource,
        operation: &facts.operation,
        zone,
        risk: assessment.score.value(),
        signals: &signal_names,
        proved,
        source_ip: facts.client_addr,
        hour: facts.time.hour_of_day(),
        weekday: facts.time.hour_of_week() / 24,
    };
    policy.decide(&input, offered)
}

/// Splits an `Authorization` header of the `Bearer` or `DPoP` scheme into
/// the scheme and the token.
fn presented_token(authorization: Option<&str>) -> Option<(&str, &str)> {
    let (scheme, value) = authorization?.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("Bearer") || scheme.eq_ignore_ascii_case("DPoP"))
        .then(|| (scheme, value.trim_matches(' ')))
}

fn request_entry(input: &RequestInput<'_>, now: Timestamp) -> Entry {
    let facts = &input.facts;
    let mut entry = Entry::new(Event::Allow, now);
    entry.peer_addr = Some(facts.peer_addr.to_string());
    entry.client_addr = Some(facts.client_addr.to_string());
    entry.method = Some(facts.method.clone());
    entry.path = Some(input.audit_target.clone());
    entry.action = Some(facts.action.as_str().to_owned());
    entry.resource = Some(facts.resource.clone());
    entry.zone = facts.zone.clone();
    if let Some(sql) = input.sql {
        entry.database = Some(sql.database.to_owned());
        entry.database_role = Some(sql.role.to_owned());
        entry.statement_class = Some(sql.class.to_owned());
        entry.fingerprint = Some(sql.fingerprint.to_owned());
        entry.statement = sql.text.map(str::to_owned);
    }
    entry
}

/// Audit entry for an administrative change made by `actor`.
pub fn admin_entry(
    now: Timestamp,
    actor: &str,
    identity: Option<&IdentityName>,
    detail: String,
) -> Entry {
    let mut entry = Entry::new(Event::Admin, now);
    entry.actor = Some(actor.to_owned());
    entry.identity = identity.map(ToString::to_string);
    entry.detail = Some(detail);
    entry
}

#[cfg(test)]
mod tests;
