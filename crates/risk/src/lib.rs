//! Risk: per-identity baselines, the signals a request raises against them,
//! and the risk score.
//!
//! The crate is pure. It learns from and scores [`RequestFacts`] handed to
//! it; storage of baselines and the clock belong to the caller.

mod baseline;
mod config;
mod failures;

pub use baseline::Baseline;
pub use config::{RiskConfig, Weights};
pub use failures::{FailureKind, Failures};

use stepgate_core::{RequestFacts, RiskScore, Signal, SignalKind};

/// The signals a request raised and the score they add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    pub signals: Vec<Signal>,
    pub score: RiskScore,
}

impl Assessment {
    pub fn signal_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.signals.iter().map(|signal| signal.kind.name())
    }
}

/// Scores one request against the identity's baseline and recent failures.
///
/// While the baseline is in its learning period only the zone rules
/// (read-only and sensitive zones) and failure signals apply, so a new
/// identity is neither trusted blindly nor challenged on every request.
pub fn assess(
    config: &RiskConfig,
    baseline: &Baseline,
    failures: &Failures,
    facts: &RequestFacts,
) -> Assessment {
    let weights = &config.weights;
    let mut signals = Vec::new();
    let mut push = |kind: SignalKind, weight: u8, reason: String| {
        if weight > 0 {
            signals.push(Signal {
                kind,
                weight,
                reason,
            });
        }
    };

    if facts.zone_read_only && facts.action != stepgate_core::Action::Read {
        push(
            SignalKind::ReadOnlyZoneWrite,
            weights.read_only_zone_write,
            format!(
                "{} ({}) in read-only zone {}",
                facts.operation,
                facts.action,
                facts.zone.as_deref().unwrap_or("?")
            ),
        );
    }
    if facts.zone_sensitive {
        push(
            SignalKind::SensitiveZone,
            weights.sensitive_zone,
            format!(
                "{} in sensitive zone {}",
                facts.operation,
                facts.zone.as_deref().unwrap_or("?")
            ),
        );
    }

    let window = config.failure_window();
    // Anyone who has seen a token id can fail authentication in its name, so
    // only failures from the request's own network count against it. Step-up
    // failures need the whole token and count from anywhere.
    let network = facts.network();
    let recent_failures = failures.count_since(
        facts.time,
        window,
        &[FailureKind::Authentication],
        Some(network),
    ) + failures.count_since(
        facts.time,
        window,
        &[FailureKind::StepUp, FailureKind::Totp],
        None,
    );
    if recent_failures >= config.failure_burst_threshold {
        push(
            SignalKind::FailureBurst,
            weights.failure_burst,
            format!(
                "{recent_failures} failed authentications or step-ups in the last {} s",
                window.as_secs()
            ),
        );
    }
    let totp_failures = failures.count_since(facts.time, window, &[FailureKind::Totp], None);
    if totp_failures > 0 || failures.totp_locked(facts.time) {
        let locked = if failures.totp_locked(facts.time) {
            ", factor locked"
        } else {
            ""
        };
        push(
            SignalKind::TotpFailure,
            weights.totp_failure,
            format!(
                "{totp_failures} wrong or replayed TOTP codes in the last {} s{locked}",
                window.as_secs()
            ),
        );
    }

    if !baseline.in_learning(config) {
        baseline_signals(config, baseline, facts, &mut push);
    }

    let score = RiskScore::combine(signals.iter().map(|signal| signal.weight));
    Assessment { signals, score }
}

fn baseline_signals(
    config: &RiskConfig,
    baseline: &Baseline,
    facts: &RequestFacts,
    push: &mut impl FnMut(SignalKind, u8, String),
) {
    let weights = &config.weights;
    let network = facts.network();
    if !baseline.knows_network(&network) {
        push(
            SignalKind::NewNetwork,
            weights.new_network,
            format!(
                "first request from network {network}; networks seen: {}",
                baseline.network_count()
            ),
        );
    }
    if !baseline.knows_operation(&facts.operation) {
        push(
            SignalKind::NewOperation,
            weights.new_operation,
            format!(
                "first use of operation {}; operations seen: {}",
                facts.operation,
                baseline.operation_count()
            ),
        );
    }
    let hour = facts.time.hour_of_day();
    if baseline.requests() >= config.unusual_hour_min_requests
        && baseline.requests_in_hour(hour) == 0
    {
        push(
            SignalKind::UnusualHour,
            weights.unusual_hour,
            format!(
                "no activity seen at {hour:02}:00-{hour:02}:59 UTC in {} requests",
                baseline.requests()
            ),
        );
    }
}

#[cfg(test)]
mod tests;
