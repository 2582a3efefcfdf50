//! Answers to challenges: the checks on the challenge and the TOTP code,
//! lockout after repeated failures, and the grant a success leaves.

use stepgate_core::{FactorKind, Grant, IdentityName, Network, RequestFacts, Timestamp};
use stepgate_factors::totp::{self, Verification};
use stepgate_risk::FailureKind;

use stepgate_pop::{DpopWindow, PopError, ProofTarget, VerifiedProof, verify_proof};
use subtle::ConstantTimeEq;

use stepgate_pop::httpsig::{
    parse_signature_input, signature_base, signature_bytes, verify_signature,
};

use crate::state::{Challenge, Credentials, DpopBinding, SigningKey};
use crate::{BodyDigest, DpopAnswer, SignatureAnswer};

/// Seconds a message signature stays acceptable after its `created` time.
const SIGNATURE_MAX_AGE_SECS: i64 = 60;

/// Longest `keyid` looked up; enrolment allows no longer ones.
const MAX_KEY_ID_LEN: usize = 256;

/// Seconds a signer's clock may run ahead of the gateway's.
const SIGNATURE_CLOCK_SKEW_SECS: i64 = 5;

/// Reason a DPoP proof by an identity's bound key did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DpopRejection {
    /// The bound key is outside its validity window.
    KeyExpired,
    /// The proof lacks a current server nonce.
    Nonce,
    /// The proof failed a check of RFC 9449; the reason names it.
    Invalid(String),
    /// The proof was signed by a key other than the bound one.
    WrongKey,
}
use crate::{Engine, StepUpAnswer};

/// A factor proved by a step-up answer, with the key that proved it for
/// the audit trail, such as `signature key hsm-1`.
pub(crate) struct ProvedFactor {
    pub(crate) factor: FactorKind,
    pub(crate) key: Option<String>,
}

/// Steps of clock drift accepted on each side of the current TOTP step.
const TOTP_DRIFT_STEPS: u64 = 1;

/// Why a step-up answer was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepUpFailure {
    #[error(
        "challenge is unknown or was already answered: repeat the request without Stepgate-Challenge to get a new one"
    )]
    UnknownChallenge,
    #[error("challenge expired: repeat the request without Stepgate-Challenge to get a new one")]
    Expired,
    #[error("challenge was issued to another identity")]
    WrongIdentity,
    #[error("challenge was issued for {expected}: repeat the challenged request")]
    WrongRequest { expected: String },
    #[error("challenge was issued to network {expected}, answered from {actual}")]
    WrongNetwork { expected: Network, actual: Network },
    #[error("the challenge does not accept this factor")]
    FactorNotAccepted,
    #[error("no TOTP factor is enrolled for this identity")]
    NotEnrolled,
    #[error("missing Stepgate-Totp header with the current TOTP code")]
    MissingCode,
    #[error("wrong TOTP code")]
    WrongCode,
    #[error("TOTP code was already used: wait for the next code")]
    ReplayedCode,
    #[error("TOTP factor is locked after repeated failures until {}", until.to_rfc3339())]
    Locked { until: Timestamp },
    #[error("the step-up could not be recorded")]
    StoreUnavailable,
    #[error("missing DPoP header with a proof signed by the identity's bound key")]
    MissingProof,
    #[error("DPoP proof rejected: {0}")]
    InvalidProof(String),
    #[error("DPoP proof signed by a key other than the identity's bound key")]
    WrongKey,
    #[error("DPoP proof without the current nonce: sign a new proof with the DPoP-Nonce value")]
    DpopNonce,
    #[error("the key is outside its validity window: enrol a current key")]
    KeyExpired,
    #[error(
        "missing Signature-Input and Signature headers: sign the request (RFC 9421) with an enrolled key and the challenge id as nonce"
    )]
    MissingSignature,
    #[error("message signature rejected: {0}")]
    InvalidSignature(String),
    #[error("keyid {0:?} is not an enrolled signing key of this identity")]
    UnknownSigningKey(String),
    #[error("the request body does not match its Content-Digest: {0}")]
    BodyChanged(String),
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
}

impl StepUpFailure {
    /// True when the same challenge can still be answered.
    pub fn challenge_still_open(&self) -> bool {
        matches!(
            self,
            StepUpFailure::MissingCode
                | StepUpFailure::WrongCode
                | StepUpFailure::ReplayedCode
                | StepUpFailure::MissingProof
                | StepUpFailure::InvalidProof(_)
                | StepUpFailure::WrongKey
                | StepUpFailure::DpopNonce
                | StepUpFailure::MissingSignature
                | StepUpFailure::InvalidSignature(_)
                | StepUpFailure::UnknownSigningKey(_)
                | StepUpFailure::BodyChanged(_)
                | StepUpFailure::BodyUnreadable(_)
        )
    }

    /// A stable name for metrics and machine-readable answers.
    pub fn code(&self) -> &'static str {
        match self {
            StepUpFailure::UnknownChallenge => "unknown_challenge",
            StepUpFailure::Expired => "expired_challenge",
            StepUpFailure::WrongIdentity => "wrong_identity",
            StepUpFailure::WrongRequest { .. } => "wrong_request",
            StepUpFailure::WrongNetwork { .. } => "wrong_network",
            StepUpFailure::FactorNotAccepted => "factor_not_accepted",
            StepUpFailure::NotEnrolled => "not_enrolled",
            StepUpFailure::MissingCode => "missing_code",
            StepUpFailure::WrongCode => "wrong_code",
            StepUpFailure::ReplayedCode => "replayed_code",
            StepUpFailure::Locked { .. } => "locked",
            StepUpFailure::StoreUnavailable => "unavailable",
            StepUpFailure::MissingProof => "missing_proof",
            StepUpFailure::InvalidProof(_) => "invalid_proof",
            StepUpFailure::WrongKey => "wrong_key",
            StepUpFailure::DpopNonce => "use_dpop_nonce",
            StepUpFailure::KeyExpired => "key_expired",
            StepUpFailure::MissingSignature => "missing_signature",
            StepUpFailure::InvalidSignature(_) => "invalid_signature",
            StepUpFailure::UnknownSigningKey(_) => "unknown_key",
            StepUpFailure::BodyChanged(_) => "body_changed",
            StepUpFailure::BodyUnreadable(_) => "body_unreadable",
        }
    }
}

impl Engine {
    /// Checks a step-up answer. On success the challenge is consumed and a
    /// grant for the challenged scope and network is stored.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer_challenge(
        &self,
        credentials: &Credentials,
        identity: &IdentityName,
        facts: &RequestFacts,
        answer: StepUpAnswer<'_>,
        token: Option<&str>,
        certificate: Option<&str>,
        now: Timestamp,
    ) -> Result<ProvedFactor, StepUpFailure> {
        let result = self.check_answer(
            credentials,
            identity,
            facts,
            answer,
            token,
            certificate,
            now,
        );
        match &result {
            Ok(_) => {
                tracing::info!(identity = %identity, challenge.id = answer.challenge_id, "step-up succeeded")
            }
            Err(failure) => {
                tracing::info!(identity = %identity, challenge.id = answer.challenge_id, reason = failure.code(), "step-up failed");
                let kind = match failure {
                    StepUpFailure::WrongCode | StepUpFailure::ReplayedCode => FailureKind::Totp,
                    _ => FailureKind::StepUp,
                };
                self.record_failure(identity, kind, now, facts.network());
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn check_answer(
        &self,
        credentials: &Credentials,
        identity: &IdentityName,
        facts: &RequestFacts,
        answer: StepUpAnswer<'_>,
        token: Option<&str>,
        certificate: Option<&str>,
        now: Timestamp,
    ) -> Result<ProvedFactor, StepUpFailure> {
        let challenge = self
            .challenges
            .get(answer.challenge_id)
            .ok_or(StepUpFailure::UnknownChallenge)?;
        if &challenge.identity != identity {
            return Err(StepUpFailure::WrongIdentity);
        }
        if now >= challenge.expires_at {
            self.challenges.remove(answer.challenge_id);
            return Err(StepUpFailure::Expired);
        }
        if facts.action != challenge.scope.action || facts.resource != challenge.scope.resource {
            return Err(StepUpFailure::WrongRequest {
                expected: format!("{} {}", challenge.scope.action, challenge.scope.resource),
            });
        }
        let network = facts.network();
        if network != challenge.network {
            return Err(StepUpFailure::WrongNetwork {
                expected: challenge.network,
                actual: network,
            });
        }
        if let Some(dpop) = answer.dpop
            && challenge.factors.contains(&FactorKind::Dpop)
        {
            let bound = credentials
                .dpop
                .get(identity)
                .ok_or(StepUpFailure::NotEnrolled)?;
            let proof = self
                .verify_bound_proof(bound, dpop, &facts.method, token, now)
                .map_err(|rejection| match rejection {
                    DpopRejection::KeyExpired => StepUpFailure::KeyExpired,
                    DpopRejection::Nonce => StepUpFailure::DpopNonce,
                    DpopRejection::Invalid(reason) => StepUpFailure::InvalidProof(reason),
                    DpopRejection::WrongKey => StepUpFailure::WrongKey,
                })?;
            tracing::info!(identity = %identity, dpop.jkt = %proof.thumbprint, dpop.alg = proof.algorithm.name(), "DPoP proof accepted");
            self.grant(
                identity,
                answer.challenge_id,
                challenge,
                FactorKind::Dpop,
                now,
            )?;
            return Ok(ProvedFactor {
                factor: FactorKind::Dpop,
                key: Some(format!("dpop key {}", proof.thumbprint)),
            });
        }
        if let Some(signature) = answer.signature
            && challenge.factors.contains(&FactorKind::Signature)
        {
            let keys = credentials
                .signing_keys
                .get(identity)
                .ok_or(StepUpFailure::NotEnrolled)?;
            let key_id = self.verify_signed_answer(keys, signature, answer.challenge_id, now)?;
            tracing::info!(identity = %identity, key.id = %key_id, "message signature accepted");
            self.grant(
                identity,
                answer.challenge_id,
                challenge,
                FactorKind::Signature,
                now,
            )?;
            return Ok(ProvedFactor {
                factor: FactorKind::Signature,
                key: Some(format!("signature key {key_id}")),
            });
        }
        // The connection's bound certificate answers a challenge that
        // offers it, when the request carries no other answer.
        if let Some(thumbprint) = certificate
            && answer.totp_code.is_none()
            && challenge.factors.contains(&FactorKind::Certificate)
        {
            self.grant(
                identity,
                answer.challenge_id,
                challenge,
                FactorKind::Certificate,
                now,
            )?;
            return Ok(ProvedFactor {
                factor: FactorKind::Certificate,
                key: Some(format!("certificate x5t#S256 {thumbprint}")),
            });
        }
        if !challenge.factors.contains(&FactorKind::Totp) {
            if challenge.factors.contains(&FactorKind::Signature) {
                return Err(StepUpFailure::MissingSignature);
            }
            if challenge.factors.contains(&FactorKind::Dpop) {
                return Err(StepUpFailure::MissingProof);
            }
            return Err(StepUpFailure::FactorNotAccepted);
        }
        let factor = credentials
            .totp
            .get(identity)
            .ok_or(StepUpFailure::NotEnrolled)?;
        let code = answer.totp_code.ok_or(StepUpFailure::MissingCode)?;
        if let Some(until) = self.risk.with(identity, |state| {
            state
                .failures
                .totp_locked(now)
                .then(|| state.failures.totp_locked_until())
                .flatten()
        }) {
            return Err(StepUpFailure::Locked { until });
        }

        let unix_secs = u64::try_from(now.as_secs()).unwrap_or(0);
        let verification = totp::verify(
            &factor.secret,
            &factor.params,
            code,
            unix_secs,
            None,
            TOTP_DRIFT_STEPS,
        );
        let outcome = match verification {
            Verification::Accepted { step } => match self.store.advance_totp_step(identity, step) {
                Ok(true) => Ok(()),
                Ok(false) => Err(StepUpFailure::ReplayedCode),
                Err(err) => {
                    tracing::error!(identity = %identity, error = %err, "cannot store the TOTP step, failing closed");
                    return Err(StepUpFailure::StoreUnavailable);
                }
            },
            Verification::Replayed { .. } => Err(StepUpFailure::ReplayedCode),
            Verification::Invalid => Err(StepUpFailure::WrongCode),
        };
        if let Err(failure) = outcome {
            self.count_totp_failure(identity, now);
            return Err(failure);
        }

        self.risk.with(identity, |state| state.totp_failures = 0);
        self.grant(
            identity,
            answer.challenge_id,
            challenge,
            FactorKind::Totp,
            now,
        )?;
        Ok(ProvedFactor {
            factor: FactorKind::Totp,
            key: None,
        })
    }

    /// Verifies a DPoP proof by an identity's bound key: the key's validity
    /// window, every RFC 9449 check (with the current nonces when they are
    /// required), then the proof key's thumbprint against the bound one.
    pub(crate) fn verify_bound_proof(
        &self,
        binding: &DpopBinding,
        dpop: DpopAnswer<'_>,
        method: &str,
        token: Option<&str>,
        now: Timestamp,
    ) -> Result<VerifiedProof, DpopRejection> {
        if !binding.valid_at(now) {
            return Err(DpopRejection::KeyExpired);
        }
        let nonces = self.accepted_nonces(now);
        let target = ProofTarget {
            method,
            uri: dpop.uri,
            access_token: token,
            nonces: &nonces,
            now,
        };
        let proof = verify_proof(
            dpop.proofs,
            &target,
            DpopWindow::default(),
            &self.dpop_replays,
        )
        .map_err(|err| match err {
            PopError::Nonce(_) => DpopRejection::Nonce,
            other => DpopRejection::Invalid(other.to_string()),
        })?;
        let same_key = proof
            .thumbprint
            .as_bytes()
            .ct_eq(binding.thumbprint.as_bytes());
        if !bool::from(same_key) {
            return Err(DpopRejection::WrongKey);
        }
        Ok(proof)
    }

    /// Verifies the message signature whose `nonce` is the challenge id and
    /// returns its key id. The key must be one of the identity's keys, within
    /// its validity window, and signs with the algorithm fixed at enrolment.
    /// The signature must cover the method, target URI, authority and (with
    /// a body) the content digest, and be created within the last minute.
    fn verify_signed_answer(
        &self,
        keys: &[SigningKey],
        answer: SignatureAnswer<'_>,
        challenge_id: &str,
        now: Timestamp,
    ) -> Result<String, StepUpFailure> {
        let invalid = |reason: String| StepUpFailure::InvalidSignature(reason);
        if let BodyDigest::Unreadable(reason) = answer.body {
            return Err(StepUpFailure::BodyUnreadable(reason.to_owned()));
        }
        if answer.inputs.is_empty() || answer.signatures.is_empty() {
            return Err(StepUpFailure::MissingSignature);
        }
        let inputs = parse_signature_input(&answer.inputs.join(", "))
            .map_err(|err| invalid(err.to_string()))?;
        let mut for_challenge = inputs
            .iter()
            .filter(|input| input.nonce.as_deref() == Some(challenge_id));
        let input = match (for_challenge.next(), for_challenge.next()) {
            (Some(input), None) => input,
            (None, _) => {
                return Err(invalid(format!(
                    "no signature has nonce=\"{challenge_id}\": sign with the challenge id as nonce"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "more than one signature has nonce=\"{challenge_id}\""
                )));
            }
        };
        if input
            .keyid
            .as_ref()
            .is_some_and(|id| id.len() > MAX_KEY_ID_LEN)
        {
            return Err(invalid(format!(
                "signature {} has a keyid longer than {MAX_KEY_ID_LEN} characters",
                input.label
            )));
        }
        let key_id = input.keyid.as_deref().ok_or_else(|| {
            invalid(format!(
                "signature {} has no keyid parameter: name the enrolled key",
                input.label
            ))
        })?;
        let key = keys
            .iter()
            .find(|key| key.key_id == key_id)
            .ok_or_else(|| StepUpFailure::UnknownSigningKey(key_id.to_owned()))?;
        if !key.valid_at(now) {
            return Err(StepUpFailure::KeyExpired);
        }
        let covered = input.components();
        let mut required = vec!["@method", "@target-uri", "@authority"];
        if answer.body != BodyDigest::NoBody {
            required.push("content-digest");
        }
        if let Some(missing) = required
            .iter()
            .find(|name| !covered.iter().any(|c| c == *name))
        {
            return Err(invalid(format!(
                "signature by key {key_id} does not cover {missing}"
            )));
        }
        let created = input.created.ok_or_else(|| {
            invalid(format!(
                "signature by key {key_id} has no created parameter"
            ))
        })?;
        let now_secs = now.as_secs();
        if created > now_secs + SIGNATURE_CLOCK_SKEW_SECS {
            return Err(invalid(format!(
                "signature by key {key_id} was created in the future ({created}); check the signer's clock"
            )));
        }
        if now_secs - created > SIGNATURE_MAX_AGE_SECS {
            return Err(invalid(format!(
                "signature by key {key_id} was created {} s ago, more than {SIGNATURE_MAX_AGE_SECS} s",
                now_secs - created
            )));
        }
        if let Some(expires) = input.expires
            && expires <= now_secs
        {
            return Err(invalid(format!(
                "signature by key {key_id} expired at {expires}"
            )));
        }
        match answer.body {
            BodyDigest::NoBody | BodyDigest::Matches => {}
            BodyDigest::Missing => {
                return Err(StepUpFailure::BodyChanged(
                    "the request has a body and no Content-Digest header".to_owned(),
                ));
            }
            BodyDigest::Mismatch(reason) => {
                return Err(StepUpFailure::BodyChanged(reason.to_owned()));
            }
            BodyDigest::Unreadable(_) => {}
        }
        let base = signature_base(&answer.message, input)
            .map_err(|err| invalid(format!("signature by key {key_id}: {err}")))?;
        let bytes = signature_bytes(&answer.signatures.join(", "), &input.label)
            .map_err(|err| invalid(err.to_string()))?;
        verify_signature(&key.key, key.algorithm, input, &base, &bytes).map_err(|err| {
            invalid(format!(
                "signature by key {key_id} ({}) does not verify: {err}",
                key.algorithm.name()
            ))
        })?;
        // The challenge is consumed on success, so the nonce cannot pass
        // again; the cache also refuses it while the signature is fresh.
        let keep_until = created + SIGNATURE_MAX_AGE_SECS + SIGNATURE_CLOCK_SKEW_SECS;
        self.dpop_replays
            .remember(
                &format!("httpsig:{key_id}"),
                challenge_id,
                keep_until,
                now_secs,
            )
            .map_err(|err| invalid(err.to_string()))?;
        Ok(key_id.to_owned())
    }

    /// Consumes the answered challenge and stores the grant it earns.
    fn grant(
        &self,
        identity: &IdentityName,
        challenge_id: &str,
        challenge: Challenge,
        factor: FactorKind,
        now: Timestamp,
    ) -> Result<(), StepUpFailure> {
        if self.challenges.remove(challenge_id).is_none() {
            return Err(StepUpFailure::UnknownChallenge);
        }
        let grant = Grant::new(
            identity.clone(),
            challenge.scope,
            challenge.network,
            factor,
            now,
            self.settings.step_up.max_age(),
        );
        self.grants.with(identity, |grants| {
            grants.retain(|existing| existing.expires_at > now);
            grants.push(grant);
        });
        Ok(())
    }

    /// Counts a wrong or replayed code and locks the factor when the count
    /// reaches the configured maximum.
    fn count_totp_failure(&self, identity: &IdentityName, now: Timestamp) {
        let max = self.settings.step_up.totp_max_failures;
        let lock_until = self.risk.with(identity, |state| {
            state.totp_failures = state.totp_failures.saturating_add(1);
            if state.totp_failures < max {
                return None;
            }
            state.totp_failures = 0;
            let until = now.saturating_add(self.settings.step_up.totp_lockout());
            state.failures.lock_totp(until);
            Some(until)
        });
        if let Some(until) = lock_until {
            tracing::warn!(identity = %identity, until = %until.to_rfc3339(), "TOTP factor locked after repeated failures");
            if let Err(err) = self.store.set_totp_lock(identity, Some(until)) {
                tracing::error!(identity = %identity, error = %err, "cannot store the TOTP lock");
            }
        }
    }
}
