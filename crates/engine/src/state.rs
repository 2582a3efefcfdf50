//! In-memory state of the decision path: credentials, per-identity risk
//! state, challenges and grants.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;
use stepgate_core::ClientCertificate;
use stepgate_core::{
    Grant, GrantScope, Identity, IdentityName, Network, SignalKind, Timestamp, TokenHash,
};
use stepgate_factors::totp::{Algorithm, TotpParams, TotpSecret};
use stepgate_pop::{PublicJwk, SignatureAlgorithm};
use stepgate_risk::{Accepted, Baseline, Failures};
use stepgate_store::{SignatureKeyRecord, Snapshot, TotpRecord};
use subtle::ConstantTimeEq;

/// Identities, tokens and factors, rebuilt whenever the store's revision
/// changes.
#[derive(Default)]
pub(crate) struct Credentials {
    pub(crate) revision: u64,
    pub(crate) identities: HashMap<IdentityName, Identity>,
    pub(crate) tokens: HashMap<String, TokenEntry>,
    pub(crate) totp: HashMap<IdentityName, TotpFactor>,
    /// Signals accepted as normal, per identity.
    pub(crate) accepted: HashMap<IdentityName, Accepted>,
    /// Each identity's bound DPoP key.
    pub(crate) dpop: HashMap<IdentityName, DpopBinding>,
    /// Each identity's message-signing keys, oldest first.
    pub(crate) signing_keys: HashMap<IdentityName, Vec<SigningKey>>,
    /// Each identity's client-certificate bindings.
    pub(crate) certificates: HashMap<IdentityName, Vec<CertificateBinding>>,
}

/// Certificate field that a binding compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CertificateRule {
    /// The SHA-256 thumbprint of the certificate (`x5t#S256`).
    Thumbprint,
    /// The subject, as an RFC 4514 string.
    Subject,
    /// One subject alternative name of one type, written `dns:NAME`,
    /// `uri:URI`, `email:ADDRESS` or `ip:ADDRESS`.
    San,
}

impl CertificateRule {
    pub(crate) fn from_name(name: &str) -> Option<CertificateRule> {
        match name {
            "x5t#S256" => Some(CertificateRule::Thumbprint),
            "subject" => Some(CertificateRule::Subject),
            "san" => Some(CertificateRule::San),
            _ => None,
        }
    }
}

/// A rule binding client certificates to an identity.
pub(crate) struct CertificateBinding {
    pub(crate) rule: CertificateRule,
    pub(crate) value: String,
    pub(crate) required: bool,
    pub(crate) not_before: Option<Timestamp>,
    pub(crate) not_after: Option<Timestamp>,
}

impl CertificateBinding {
    /// True when `certificate` satisfies the rule at `now`.
    pub(crate) fn matches(&self, certificate: &ClientCertificate, now: Timestamp) -> bool {
        let in_window = self.not_before.is_none_or(|from| now >= from)
            && self.not_after.is_none_or(|until| now <= until);
        in_window
            && match self.rule {
                CertificateRule::Thumbprint => bool::from(
                    certificate
                        .thumbprint_sha256
                        .as_bytes()
                        .ct_eq(self.value.as_bytes()),
                ),
                CertificateRule::Subject => certificate.subject == self.value,
                CertificateRule::San => {
                    let names = match self.value.split_once(':') {
                        Some(("dns", name)) => Some((&certificate.dns_names, name)),
                        Some(("uri", name)) => Some((&certificate.uris, name)),
                        Some(("email", name)) => Some((&certificate.emails, name)),
                        Some(("ip", name)) => Some((&certificate.ip_addresses, name)),
                        _ => None,
                    };
                    names.is_some_and(|(names, name)| names.iter().any(|known| known == name))
                }
            }
    }
}

/// A key that signs HTTP messages for an identity.
pub(crate) struct SigningKey {
    pub(crate) key_id: String,
    pub(crate) algorithm: SignatureAlgorithm,
    pub(crate) key: PublicJwk,
    pub(crate) not_before: Option<Timestamp>,
    pub(crate) not_after: Option<Timestamp>,
}

impl SigningKey {
    /// True when the key may be used at `now`.
    pub(crate) fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before.is_none_or(|from| now >= from)
            && self.not_after.is_none_or(|until| now <= until)
    }

    fn from_record(record: &SignatureKeyRecord) -> Option<SigningKey> {
        let algorithm = SignatureAlgorithm::from_name(&record.algorithm)?;
        let value: serde_json::Value = serde_json::from_str(&record.jwk).ok()?;
        let key = PublicJwk::from_json(&value).ok()?;
        Some(SigningKey {
            key_id: record.key_id.clone(),
            algorithm,
            key,
            not_before: record.not_before,
            not_after: record.not_after,
        })
    }
}

/// A DPoP key bound to an identity.
pub(crate) struct DpopBinding {
    /// RFC 7638 thumbprint of the key.
    pub(crate) thumbprint: String,
    /// Every request must carry a proof by this key.
    pub(crate) required: bool,
    pub(crate) not_before: Option<Timestamp>,
    pub(crate) not_after: Option<Timestamp>,
}

impl DpopBinding {
    /// True when the key may be used at `now`.
    pub(crate) fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before.is_none_or(|from| now >= from)
            && self.not_after.is_none_or(|until| now <= until)
    }
}

pub(crate) struct TokenEntry {
    pub(crate) identity: IdentityName,
    pub(crate) hash: TokenHash,
    pub(crate) revoked: bool,
    /// The token's SCRAM-SHA-256 credential in `rolpassword` form.
    pub(crate) scram: Option<String>,
}

pub(crate) struct TotpFactor {
    pub(crate) secret: TotpSecret,
    pub(crate) params: TotpParams,
}

impl Credentials {
    pub(crate) fn from_snapshot(snapshot: Snapshot) -> Self {
        let identities = snapshot
            .identities
            .into_iter()
            .map(|identity| (identity.name.clone(), identity))
            .collect();
        let tokens = snapshot
            .tokens
            .into_iter()
            .map(|token| {
                let entry = TokenEntry {
                    identity: token.identity,
                    hash: token.hash,
                    revoked: token.revoked_at.is_some(),
                    scram: token.scram,
                };
                (token.id.as_str().to_owned(), entry)
            })
            .collect();
        let totp = snapshot
            .totp
            .into_iter()
            .filter_map(|record| {
                totp_factor(&record).map(|factor| (record.identity.clone(), factor))
            })
            .collect();
        let mut accepted: HashMap<IdentityName, Accepted> = HashMap::new();
        for record in snapshot.accepted {
            match SignalKind::from_name(&record.signal) {
                Some(kind) => accepted
                    .entry(record.identity)
                    .or_default()
                    .insert(kind, record.value),
                None => {
                    tracing::warn!(identity = %record.identity, signal = %record.signal, "accepted signal unknown to this version, ignored");
                }
            }
        }
        let dpop = snapshot
            .dpop
            .into_iter()
            .map(|key| {
                let binding = DpopBinding {
                    thumbprint: key.thumbprint,
                    required: key.required,
                    not_before: key.not_before,
                    not_after: key.not_after,
                };
                (key.identity, binding)
            })
            .collect();
        let mut signing_keys: HashMap<IdentityName, Vec<SigningKey>> = HashMap::new();
        for record in &snapshot.signature_keys {
            match SigningKey::from_record(record) {
                Some(key) => signing_keys
                    .entry(record.identity.clone())
                    .or_default()
                    .push(key),
                None => {
                    tracing::error!(identity = %record.identity, key.id = %record.key_id, "stored signing key cannot be read, ignored");
                }
            }
        }
        let mut certificates: HashMap<IdentityName, Vec<CertificateBinding>> = HashMap::new();
        for record in snapshot.certificates {
            let Some(rule) = CertificateRule::from_name(&record.rule) else {
                tracing::error!(identity = %record.identity, rule = %record.rule, "stored certificate binding has an unknown rule, ignored");
                continue;
            };
            certificates
                .entry(record.identity)
                .or_default()
                .push(CertificateBinding {
                    rule,
                    value: record.value,
                    required: record.required,
                    not_before: record.not_before,
                    not_after: record.not_after,
                });
        }
        Self {
            revision: snapshot.revision,
            identities,
            tokens,
            totp,
            accepted,
            dpop,
            signing_keys,
            certificates,
        }
    }
}

fn totp_factor(record: &TotpRecord) -> Option<TotpFactor> {
    let algorithm: Algorithm = match record.algorithm.parse() {
        Ok(algorithm) => algorithm,
        Err(err) => {
            tracing::error!(identity = %record.identity, error = %err, "stored TOTP factor unusable, skipped");
            return None;
        }
    };
    let params = match TotpParams::new(algorithm, record.digits, record.period) {
        Ok(params) => params,
        Err(err) => {
            tracing::error!(identity = %record.identity, error = %err, "stored TOTP factor unusable, skipped");
            return None;
        }
    };
    Some(TotpFactor {
        secret: TotpSecret::from_bytes(record.danger_secret().to_vec()),
        params,
    })
}

/// Risk state of one identity.
#[derive(Default)]
pub(crate) struct RiskState {
    pub(crate) baseline: Baseline,
    pub(crate) failures: Failures,
    /// Consecutive wrong or replayed TOTP codes since the last success.
    pub(crate) totp_failures: u32,
    /// The baseline changed since it was last saved.
    pub(crate) dirty: bool,
}

const SHARDS: usize = 32;

/// A map from identity to `T`, split into shards so that requests of
/// different identities rarely wait for the same lock.
pub(crate) struct Sharded<T> {
    shards: Vec<Mutex<HashMap<IdentityName, T>>>,
}

impl<T: Default> Sharded<T> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, name: &IdentityName) -> &Mutex<HashMap<IdentityName, T>> {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        let index = (hasher.finish() % SHARDS as u64) as usize;
        // `index` is below SHARDS, the length of `shards`.
        &self.shards[index]
    }

    /// Runs `f` on the identity's entry, creating it if missing.
    pub(crate) fn with<R>(&self, name: &IdentityName, f: impl FnOnce(&mut T) -> R) -> R {
        let mut shard = self.shard(name).lock();
        match shard.get_mut(name) {
            Some(entry) => f(entry),
            None => f(shard.entry(name.clone()).or_default()),
        }
    }

    /// Runs `f` on every entry, one shard at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&IdentityName, &mut T)) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            for (name, entry) in shard.iter_mut() {
                f(name, entry);
            }
        }
    }
}

/// An open challenge, waiting for a step-up answer.
#[derive(Clone, Debug)]
pub(crate) struct Challenge {
    pub(crate) identity: IdentityName,
    pub(crate) scope: GrantScope,
    pub(crate) network: Network,
    pub(crate) factors: Vec<stepgate_core::FactorKind>,
    pub(crate) expires_at: Timestamp,
}

/// Open challenges by id, dropped when answered or expired.
#[derive(Default)]
pub(crate) struct Challenges {
    inner: Mutex<OpenChallenges>,
}

#[derive(Default)]
struct OpenChallenges {
    by_id: HashMap<String, Challenge>,
    /// Ids of each identity's open challenges, oldest first.
    by_identity: HashMap<IdentityName, std::collections::VecDeque<String>>,
}

/// Most open challenges per identity. A new challenge past this drops the
/// identity's oldest one, so one token holder cannot crowd out others.
const MAX_CHALLENGES_PER_IDENTITY: usize = 32;

impl Challenges {
    pub(crate) fn insert(&self, id: String, challenge: Challenge) {
        let mut open = self.inner.lock();
        let OpenChallenges { by_id, by_identity } = &mut *open;
        let ids = by_identity.entry(challenge.identity.clone()).or_default();
        ids.retain(|id| by_id.contains_key(id));
        while ids.len() >= MAX_CHALLENGES_PER_IDENTITY {
            if let Some(oldest) = ids.pop_front() {
                by_id.remove(&oldest);
            }
        }
        ids.push_back(id.clone());
        by_id.insert(id, challenge);
    }

    pub(crate) fn get(&self, id: &str) -> Option<Challenge> {
        self.inner.lock().by_id.get(id).cloned()
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Challenge> {
        self.inner.lock().by_id.remove(id)
    }

    pub(crate) fn purge_expired(&self, now: Timestamp) -> usize {
        let mut open = self.inner.lock();
        let OpenChallenges { by_id, by_identity } = &mut *open;
        let before = by_id.len();
        by_id.retain(|_, challenge| challenge.expires_at > now);
        by_identity.retain(|_, ids| {
            ids.retain(|id| by_id.contains_key(id));
            !ids.is_empty()
        });
        before - by_id.len()
    }
}

/// Grants by identity.
pub(crate) type Grants = Sharded<Vec<Grant>>;
