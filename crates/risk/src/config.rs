use std::time::Duration;

use serde::{Deserialize, Serialize};
use stepgate_core::SignalKind;

use crate::catalogue::SensitiveOperations;

/// Settings of the risk engine, the `[risk]` table of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Allowed requests an identity makes before the novelty signals (new
    /// network, operation, client, hour...) apply. Default 5.
    pub learning_requests: u64,
    /// Days after which an observation counts half as much in a baseline.
    /// Default 30.
    pub half_life_days: u32,
    /// Failed authentications, step-ups or authorizations within
    /// `failure_window_secs` that make a burst. Default 5.
    pub failure_burst_threshold: u32,
    /// Length of the window for failure counts, in seconds. Default 300.
    pub failure_window_secs: u64,
    /// Decayed requests a baseline needs before an hour of the week without
    /// activity counts as unusual. Default 200.
    pub unusual_hour_min_requests: u64,
    /// Days without activity after which a request raises `dormant`.
    /// Default 30.
    pub dormant_after_days: u32,
    /// Share of an identity's recent requests, in per mille, below which an
    /// operation is rare. Default 10 (1 %).
    pub rare_operation_permille: u32,
    /// Share, in per mille, from which an operation is frequent. Default 50.
    pub frequent_operation_permille: u32,
    /// Active minutes the usual rate needs before bursts count. Default 20.
    pub rate_min_minutes: u32,
    /// Standard deviations above the usual rate that make a burst. Default 4.
    pub rate_sigmas: u32,
    /// Requests per minute that never count as a burst. Default 30.
    pub rate_floor_per_minute: u32,
    /// Length of the data-volume window in minutes. Default 10.
    pub volume_window_mins: u32,
    /// Windows the usual volume needs before excesses count. Default 10.
    pub volume_min_windows: u32,
    /// Standard deviations above the usual volume that make an excess.
    /// Default 4.
    pub volume_sigmas: u32,
    /// Bytes per window that never count as an excess. Default 10 MiB.
    pub volume_floor_bytes: u64,
    /// Rows per window that never count as an excess. Default 10,000.
    pub volume_floor_rows: u64,
    /// Fastest believable travel between two requests, in km/h. Default 1000.
    pub travel_max_kmh: u32,
    /// Distances up to this many kilometres (beyond both locations'
    /// accuracy radii) never count as travel. Default 500.
    pub travel_min_km: u32,
    /// Seconds within which one credential used from two networks counts as
    /// concurrent use. Default 300.
    pub concurrent_window_secs: u64,
    /// Kilometres apart the two networks must be; without locations, the
    /// networks must differ in their /16 (IPv4) or /32 (IPv6). Default 500.
    pub concurrent_min_km: u32,
    /// Use the built-in catalogue of sensitive operations. Default true.
    pub sensitive_defaults: bool,
    /// More sensitive operations, matched before the built-in ones.
    pub sensitive: Vec<SensitiveOperations>,
    pub weights: Weights,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            learning_requests: 5,
            half_life_days: 30,
            failure_burst_threshold: 5,
            failure_window_secs: 300,
            unusual_hour_min_requests: 200,
            dormant_after_days: 30,
            rare_operation_permille: 10,
            frequent_operation_permille: 50,
            rate_min_minutes: 20,
            rate_sigmas: 4,
            rate_floor_per_minute: 30,
            volume_window_mins: 10,
            volume_min_windows: 10,
            volume_sigmas: 4,
            volume_floor_bytes: 10 * 1024 * 1024,
            volume_floor_rows: 10_000,
            travel_max_kmh: 1000,
            travel_min_km: 500,
            concurrent_window_secs: 300,
            concurrent_min_km: 500,
            sensitive_defaults: true,
            sensitive: Vec::new(),
            weights: Weights::default(),
        }
    }
}

impl RiskConfig {
    pub fn failure_window(&self) -> Duration {
        Duration::from_secs(self.failure_window_secs)
    }

    /// Checks the values against each other; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (name, weight) in self.weights.entries() {
            if weight > 100 {
                return Err(format!(
                    "risk.weights.{name} = {weight} is above 100; use 0 to 100 (0 turns the signal off)"
                ));
            }
        }
        let positive = [
            ("half_life_days", u64::from(self.half_life_days)),
            ("failure_window_secs", self.failure_window_secs),
            ("volume_window_mins", u64::from(self.volume_window_mins)),
            ("concurrent_window_secs", self.concurrent_window_secs),
            ("travel_max_kmh", u64::from(self.travel_max_kmh)),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("risk.{name} = 0; use a value above 0"));
            }
        }
        if self.volume_window_mins > 24 * 60 {
            return Err(format!(
                "risk.volume_window_mins = {} is longer than a day; use at most 1440",
                self.volume_window_mins
            ));
        }
        if self.rare_operation_permille > self.frequent_operation_permille
            || self.frequent_operation_permille > 1000
        {
            return Err(format!(
                "risk.rare_operation_permille = {} and risk.frequent_operation_permille = {}: \
                 the rare share must not exceed the frequent one, and both lie in 0 to 1000",
                self.rare_operation_permille, self.frequent_operation_permille
            ));
        }
        for table in &self.sensitive {
            if table.operations.is_empty() {
                return Err(format!(
                    "risk.sensitive entry for {} lists no operations; add patterns or remove it",
                    table.category
                ));
            }
            if let Some(empty) = table.operations.iter().find(|op| op.trim().is_empty()) {
                return Err(format!(
                    "risk.sensitive pattern {empty:?} is empty; write an operation such as \
                     \"POST */tokens\" or \"iam:CreateAccessKey\""
                ));
            }
        }
        Ok(())
    }
}

/// Weight of each signal, 0 to 100; 0 turns a signal off. The `[risk.weights]`
/// table of the config file; keys are the signal names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub new_network: u16,
    pub new_asn: u16,
    pub new_country: u16,
    pub anonymizer_network: u16,
    pub impossible_travel: u16,
    pub concurrent_sessions: u16,
    pub unusual_hour: u16,
    pub dormant: u16,
    pub request_burst: u16,
    pub new_operation: u16,
    pub rare_operation: u16,
    pub new_resource: u16,
    pub permission_change: u16,
    pub credential_creation: u16,
    pub logging_change: u16,
    pub secret_read: u16,
    pub data_volume: u16,
    pub new_client: u16,
    pub client_version: u16,
    pub read_only_zone_write: u16,
    pub sensitive_zone: u16,
    pub failure_burst: u16,
    pub totp_failure: u16,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            new_network: 40,
            new_asn: 30,
            new_country: 40,
            anonymizer_network: 50,
            impossible_travel: 70,
            concurrent_sessions: 50,
            unusual_hour: 15,
            dormant: 30,
            request_burst: 35,
            new_operation: 25,
            rare_operation: 10,
            new_resource: 15,
            permission_change: 50,
            credential_creation: 50,
            logging_change: 70,
            secret_read: 30,
            data_volume: 50,
            new_client: 20,
            client_version: 5,
            read_only_zone_write: 60,
            sensitive_zone: 35,
            failure_burst: 50,
            totp_failure: 20,
        }
    }
}

impl Weights {
    /// Returns the weight of one signal.
    pub fn of(&self, kind: SignalKind) -> u8 {
        // Validation keeps weights at or below 100.
        u8::try_from(self.configured(kind).min(100)).unwrap_or(100)
    }

    /// Returns the weight as configured, before validation.
    pub fn configured(&self, kind: SignalKind) -> u16 {
        match kind {
            SignalKind::NewNetwork => self.new_network,
            SignalKind::NewAsn => self.new_asn,
            SignalKind::NewCountry => self.new_country,
            SignalKind::AnonymizerNetwork => self.anonymizer_network,
            SignalKind::ImpossibleTravel => self.impossible_travel,
            SignalKind::ConcurrentSessions => self.concurrent_sessions,
            SignalKind::UnusualHour => self.unusual_hour,
            SignalKind::Dormant => self.dormant,
            SignalKind::RequestBurst => self.request_burst,
            SignalKind::NewOperation => self.new_operation,
            SignalKind::RareOperation => self.rare_operation,
            SignalKind::NewResource => self.new_resource,
            SignalKind::PermissionChange => self.permission_change,
            SignalKind::CredentialCreation => self.credential_creation,
            SignalKind::LoggingChange => self.logging_change,
            SignalKind::SecretRead => self.secret_read,
            SignalKind::DataVolume => self.data_volume,
            SignalKind::NewClient => self.new_client,
            SignalKind::ClientVersion => self.client_version,
            SignalKind::ReadOnlyZoneWrite => self.read_only_zone_write,
            SignalKind::SensitiveZone => self.sensitive_zone,
            SignalKind::FailureBurst => self.failure_burst,
            SignalKind::TotpFailure => self.totp_failure,
        }
    }

    /// Sets the weight of one signal.
    pub fn set(&mut self, kind: SignalKind, weight: u8) {
        *self.slot(kind) = u16::from(weight);
    }

    fn slot(&mut self, kind: SignalKind) -> &mut u16 {
        match kind {
            SignalKind::NewNetwork => &mut self.new_network,
            SignalKind::NewAsn => &mut self.new_asn,
            SignalKind::NewCountry => &mut self.new_country,
            SignalKind::AnonymizerNetwork => &mut self.anonymizer_network,
            SignalKind::ImpossibleTravel => &mut self.impossible_travel,
            SignalKind::ConcurrentSessions => &mut self.concurrent_sessions,
            SignalKind::UnusualHour => &mut self.unusual_hour,
            SignalKind::Dormant => &mut self.dormant,
            SignalKind::RequestBurst => &mut self.request_burst,
            SignalKind::NewOperation => &mut self.new_operation,
            SignalKind::RareOperation => &mut self.rare_operation,
            SignalKind::NewResource => &mut self.new_resource,
            SignalKind::PermissionChange => &mut self.permission_change,
            SignalKind::CredentialCreation => &mut self.credential_creation,
            SignalKind::LoggingChange => &mut self.logging_change,
            SignalKind::SecretRead => &mut self.secret_read,
            SignalKind::DataVolume => &mut self.data_volume,
            SignalKind::NewClient => &mut self.new_client,
            SignalKind::ClientVersion => &mut self.client_version,
            SignalKind::ReadOnlyZoneWrite => &mut self.read_only_zone_write,
            SignalKind::SensitiveZone => &mut self.sensitive_zone,
            SignalKind::FailureBurst => &mut self.failure_burst,
            SignalKind::TotpFailure => &mut self.totp_failure,
        }
    }

    /// Names and configured values, for validation messages.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, u16)> + '_ {
        SignalKind::ALL
            .into_iter()
            .map(|kind| (kind.name(), self.configured(kind)))
    }
}
