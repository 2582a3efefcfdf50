//! Signals and the risk score they add up to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of deviation or risky property a request can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The client network was never seen for this identity.
    NewNetwork,
    /// The operation (method and route template) was never used by this identity.
    NewOperation,
    /// The identity was never active in this hour of the day.
    UnusualHour,
    /// A request other than a read in a read-only zone.
    ReadOnlyZoneWrite,
    /// Any request in a sensitive zone.
    SensitiveZone,
    /// Several failed authentications or step-ups in a short time.
    FailureBurst,
    /// A wrong or replayed TOTP code, or a locked TOTP factor.
    TotpFailure,
}

impl SignalKind {
    pub const ALL: [SignalKind; 7] = [
        SignalKind::NewNetwork,
        SignalKind::NewOperation,
        SignalKind::UnusualHour,
        SignalKind::ReadOnlyZoneWrite,
        SignalKind::SensitiveZone,
        SignalKind::FailureBurst,
        SignalKind::TotpFailure,
    ];

    /// The name used in policies, audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::NewNetwork => "new_network",
            SignalKind::NewOperation => "new_operation",
            SignalKind::UnusualHour => "unusual_hour",
            SignalKind::ReadOnlyZoneWrite => "read_only_zone_write",
            SignalKind::SensitiveZone => "sensitive_zone",
            SignalKind::FailureBurst => "failure_burst",
            SignalKind::TotpFailure => "totp_failure",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One observed deviation, with its weight (0 to 100) and a reason a person
/// can read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub kind: SignalKind,
    pub weight: u8,
    pub reason: String,
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
