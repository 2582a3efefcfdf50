use std::collections::VecDeque;
use std::time::Duration;

use stepgate_core::{Network, Timestamp};

/// The kinds of failure the risk engine counts per identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A token whose id names this identity but whose secret is wrong, or a
    /// token of a disabled identity.
    Authentication,
    /// A step-up answered for an unknown, expired or foreign challenge.
    StepUp,
    /// A wrong or replayed TOTP code.
    Totp,
    /// A request the upstream refused as unauthorized or forbidden (HTTP 401
    /// or 403, or a cloud `AccessDenied` error).
    Authorization,
}

/// Most failures remembered per identity; older ones are dropped first.
const MAX_REMEMBERED: usize = 256;

/// Recent failures of one identity, and the lock of its TOTP factor.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    recent: VecDeque<(FailureKind, Timestamp, Network)>,
    totp_locked_until: Option<Timestamp>,
}

impl Failures {
    /// Records a failure seen from `network`.
    pub fn record(&mut self, kind: FailureKind, at: Timestamp, network: Network) {
        if self.recent.len() >= MAX_REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((kind, at, network));
    }

    /// Counts failures of the given kinds in the `window` before `now`,
    /// only those from `network` when one is given.
    pub fn count_since(
        &self,
        now: Timestamp,
        window: Duration,
        kinds: &[FailureKind],
        network: Option<Network>,
    ) -> u32 {
        let count = self
            .recent
            .iter()
            .rev()
            .take_while(|(_, at, _)| now.since(*at) < window)
            .filter(|(kind, _, from)| {
                kinds.contains(kind) && network.is_none_or(|network| *from == network)
            })
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    pub fn lock_totp(&mut self, until: Timestamp) {
        self.totp_locked_until = Some(until);
    }

    pub fn totp_locked(&self, now: Timestamp) -> bool {
        self.totp_locked_until.is_some_and(|until| now < until)
    }

    pub fn totp_locked_until(&self) -> Option<Timestamp> {
        self.totp_locked_until
    }
}
