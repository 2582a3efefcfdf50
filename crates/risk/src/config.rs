use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the risk engine, the `[risk]` table of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Requests an identity makes before its baseline signals apply; until
    /// then only zone and failure signals count. Default 5.
    pub learning_requests: u64,
    /// Failed authentications or step-ups within `failure_window_secs` that
    /// make a burst. Default 5.
    pub failure_burst_threshold: u32,
    /// Length of the window for failure counts, in seconds. Default 300.
    pub failure_window_secs: u64,
    /// Requests a baseline needs before an hour without activity counts as
    /// unusual. Default 200.
    pub unusual_hour_min_requests: u64,
    pub weights: Weights,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            learning_requests: 5,
            failure_burst_threshold: 5,
            failure_window_secs: 300,
            unusual_hour_min_requests: 200,
            weights: Weights::default(),
        }
    }
}

impl RiskConfig {
    pub fn failure_window(&self) -> Duration {
        Duration::from_secs(self.failure_window_secs)
    }
}

/// Weight of each signal, 0 to 100; 0 turns a signal off. The `[risk.weights]`
/// table of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub new_network: u8,
    pub new_operation: u8,
    pub unusual_hour: u8,
    pub read_only_zone_write: u8,
    pub sensitive_zone: u8,
    pub failure_burst: u8,
    pub totp_failure: u8,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            new_network: 40,
            new_operation: 25,
            unusual_hour: 15,
            read_only_zone_write: 60,
            sensitive_zone: 35,
            failure_burst: 50,
            totp_failure: 20,
        }
    }
}

impl Weights {
    /// Names and values, for validation messages.
    pub fn entries(&self) -> [(&'static str, u8); 7] {
        [
            ("new_network", self.new_network),
            ("new_operation", self.new_operation),
            ("unusual_hour", self.unusual_hour),
            ("read_only_zone_write", self.read_only_zone_write),
            ("sensitive_zone", self.sensitive_zone),
            ("failure_burst", self.failure_burst),
            ("totp_failure", self.totp_failure),
        ]
    }
}
