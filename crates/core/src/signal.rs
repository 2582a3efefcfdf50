//! Signals and the risk score they add up to.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of deviation or risky property a request can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The client network (/24 or /48) was not seen recently for this identity.
    NewNetwork,
    /// The client's autonomous system was not seen recently for this identity.
    NewAsn,
    /// The client's country was not seen recently for this identity.
    NewCountry,
    /// The client address belongs to a hosting or anonymising network.
    AnonymizerNetwork,
    /// The client is farther from the identity's last location than the time
    /// since allows.
    ImpossibleTravel,
    /// The same credential is in use from two distant networks at once.
    ConcurrentSessions,
    /// The identity is rarely or never active in this hour of the week.
    UnusualHour,
    /// First request after a long time without activity.
    Dormant,
    /// More requests in this minute than the identity's usual rate allows.
    RequestBurst,
    /// The operation was not used recently by this identity.
    NewOperation,
    /// The operation is rare for this identity.
    RareOperation,
    /// The resource was not touched recently by this identity.
    NewResource,
    /// An operation that changes permissions.
    PermissionChange,
    /// An operation that creates credentials.
    CredentialCreation,
    /// An operation that disables or changes logging or detection.
    LoggingChange,
    /// An operation that reads secrets.
    SecretRead,
    /// More data read in the recent window than the identity's usual volume.
    DataVolume,
    /// A client software family not seen recently for this identity.
    NewClient,
    /// A version of a known client software family not seen recently.
    ClientVersion,
    /// A request other than a read in a read-only zone.
    ReadOnlyZoneWrite,
    /// Any request in a sensitive zone.
    SensitiveZone,
    /// Several failed authentications, step-ups or authorizations in a short
    /// time.
    FailureBurst,
    /// A wrong or replayed TOTP code, or a locked TOTP factor.
    TotpFailure,
}

impl SignalKind {
    pub const ALL: [SignalKind; 23] = [
        SignalKind::NewNetwork,
        SignalKind::NewAsn,
        SignalKind::NewCountry,
        SignalKind::AnonymizerNetwork,
        SignalKind::ImpossibleTravel,
        SignalKind::ConcurrentSessions,
        SignalKind::UnusualHour,
        SignalKind::Dormant,
        SignalKind::RequestBurst,
        SignalKind::NewOperation,
        SignalKind::RareOperation,
        SignalKind::NewResource,
        SignalKind::PermissionChange,
        SignalKind::CredentialCreation,
        SignalKind::LoggingChange,
        SignalKind::SecretRead,
        SignalKind::DataVolume,
        SignalKind::NewClient,
        SignalKind::ClientVersion,
        SignalKind::ReadOnlyZoneWrite,
        SignalKind::SensitiveZone,
        SignalKind::FailureBurst,
        SignalKind::TotpFailure,
    ];

    /// The name used in policies, configuration, audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::NewNetwork => "new_network",
            SignalKind::NewAsn => "new_asn",
            SignalKind::NewCountry => "new_country",
            SignalKind::AnonymizerNetwork => "anonymizer_network",
            SignalKind::ImpossibleTravel => "impossible_travel",
            SignalKind::ConcurrentSessions => "concurrent_sessions",
            SignalKind::UnusualHour => "unusual_hour",
            SignalKind::Dormant => "dormant",
            SignalKind::RequestBurst => "request_burst",
            SignalKind::NewOperation => "new_operation",
            SignalKind::RareOperation => "rare_operation",
            SignalKind::NewResource => "new_resource",
            SignalKind::PermissionChange => "permission_change",
            SignalKind::CredentialCreation => "credential_creation",
            SignalKind::LoggingChange => "logging_change",
            SignalKind::SecretRead => "secret_read",
            SignalKind::DataVolume => "data_volume",
            SignalKind::NewClient => "new_client",
            SignalKind::ClientVersion => "client_version",
            SignalKind::ReadOnlyZoneWrite => "read_only_zone_write",
            SignalKind::SensitiveZone => "sensitive_zone",
            SignalKind::FailureBurst => "failure_burst",
            SignalKind::TotpFailure => "totp_failure",
        }
    }

    /// Looks a kind up by its name.
    pub fn from_name(name: &str) -> Option<SignalKind> {
        SignalKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Named values a signal was based on, such as the networks seen or the
/// usual rate. The `value` entry, when present, is what an operator
/// passes to `stepgate baseline accept` to accept the signal as normal.
pub type Evidence = BTreeMap<String, serde_json::Value>;

/// One observed deviation, with its weight (0 to 100), a reason a person
/// can read and the evidence it used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub kind: SignalKind,
    pub weight: u8,
    pub reason: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: Evidence,
}

/// A risk score from 0 (nothing unusual) to 100.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RiskScore(u8);

impl RiskScore {
    pub const ZERO: RiskScore = RiskScore(0);

    /// Builds a score, clamping to 100.
    pub fn new(value: u8) -> Self {
        Self(value.min(100))
    }

    /// Combines signal weights as independent probabilities:
    /// `100 * (1 - Π(1 - wᵢ/100))`, rounded to the nearest integer.
    ///
    /// The result never decreases when a signal is added or a weight grows,
    /// stays within 0 to 100, equals the weight for a single signal and
    /// reaches 100 only when some signal weighs 100.
    pub fn combine(weights: impl IntoIterator<Item = u8>) -> Self {
        let mut remaining = 1.0_f64;
        for weight in weights {
            remaining *= 1.0 - f64::from(weight.min(100)) / 100.0;
        }
        let score = (100.0 * (1.0 - remaining)).round();
        // The product stays within [0, 1], so the cast cannot truncate.
        Self(score.clamp(0.0, 100.0) as u8)
    }

    pub fn value(self) -> u8 {
        self.0
    }
}

impl fmt::Display for RiskScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_single_signal_equals_weight() {
        for weight in 0..=100 {
            assert_eq!(RiskScore::combine([weight]).value(), weight);
        }
    }

    #[test]
    fn combine_is_monotone() {
        let weights = [40, 25, 10, 60, 30];
        let mut previous = 0;
        for len in 0..=weights.len() {
            let score = RiskScore::combine(weights[..len].iter().copied()).value();
            assert!(score >= previous, "{score} < {previous}");
            previous = score;
        }
        assert_eq!(RiskScore::combine([40, 25]).value(), 55);
        assert_eq!(RiskScore::combine([100, 1]).value(), 100);
        assert_eq!(RiskScore::combine([99, 99, 99]).value(), 100);
        assert_eq!(RiskScore::combine([]).value(), 0);
    }

    #[test]
    fn signal_names_are_distinct() {
        let mut names: Vec<_> = SignalKind::ALL.iter().map(|kind| kind.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SignalKind::ALL.len());
    }
}
