//! Risk: per-identity baselines, the signals a request raises against them,
//! and the risk score.
//!
//! The crate is pure. It learns from and scores [`RequestFacts`] handed to
//! it; storage of baselines, GeoIP lookups and the clock belong to the
//! caller, so every rule here runs in unit tests with plain timestamps.
//!
//! The score combines the weights of the raised signals as independent
//! probabilities, `100 * (1 - Π(1 - wᵢ/100))`: adding a signal or raising a
//! weight never lowers it, one signal alone scores its weight, and only a
//! signal of weight 100 reaches 100.

mod accepted;
mod baseline;
mod catalogue;
mod client;
mod config;
mod failures;
mod profile;
mod series;

pub use accepted::{ANY_VALUE, Accepted, accept_value};
pub use baseline::{BASELINE_VERSION, Baseline};
pub use catalogue::{Catalogue, Category, SensitiveOperations};
pub use client::Client;
pub use config::{RiskConfig, Weights};
pub use failures::{FailureKind, Failures};
pub use profile::Frequency;

use stepgate_core::{
    Action, Evidence, Network, RequestFacts, RiskScore, Signal, SignalKind, Timestamp,
};

use baseline::{
    Fix, MAX_CLIENTS, MAX_NETWORKS, MAX_OPERATIONS, MAX_PLACES, MAX_RESOURCES, MAX_SOURCES, Source,
};

const DAY_MS: f64 = 86_400_000.0;

/// Decayed count from which a sensitive operation is routine for an
/// identity and no longer raises its catalogue signal.
const ROUTINE_WEIGHT: f64 = 3.0;

/// Family recorded for requests without a User-Agent.
const NO_CLIENT: &str = "(none)";

/// Builds an [`Evidence`] map from `"name" => value` pairs.
macro_rules! evidence {
    ($($key:literal => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = Evidence::new();
        $(map.insert($key.to_owned(), serde_json::json!($value));)*
        map
    }};
}

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

    pub fn has(&self, kind: SignalKind) -> bool {
        self.signals.iter().any(|signal| signal.kind == kind)
    }
}

/// Collects signals, leaving out those weighted 0 or accepted as normal.
struct Collector<'a> {
    config: &'a RiskConfig,
    accepted: &'a Accepted,
    signals: Vec<Signal>,
}

impl Collector<'_> {
    /// True when a signal of `kind` for `value` would be kept.
    fn wants(&self, kind: SignalKind, value: &str) -> bool {
        self.config.weights.of(kind) > 0 && !self.accepted.covers(kind, value)
    }

    fn push(&mut self, kind: SignalKind, value: &str, reason: String, mut evidence: Evidence) {
        if !self.wants(kind, value) {
            return;
        }
        evidence.insert("value".to_owned(), serde_json::json!(value));
        self.signals.push(Signal {
            kind,
            weight: self.config.weights.of(kind),
            reason,
            evidence,
        });
    }
}

/// The risk engine: configuration compiled once, applied to any identity's
/// baseline.
#[derive(Debug)]
pub struct Scorer {
    config: RiskConfig,
    catalogue: Catalogue,
    half_life_ms: f64,
}

impl Scorer {
    pub fn new(config: RiskConfig) -> Self {
        let catalogue = Catalogue::new(config.sensitive_defaults, &config.sensitive);
        let half_life_ms = f64::from(config.half_life_days.max(1)) * DAY_MS;
        Self {
            config,
            catalogue,
            half_life_ms,
        }
    }

    pub fn config(&self) -> &RiskConfig {
        &self.config
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// True while the identity has made fewer allowed requests than
    /// `learning_requests`.
    pub fn in_learning(&self, baseline: &Baseline) -> bool {
        baseline.requests < self.config.learning_requests
    }

    /// Scores one request against the identity's baseline, recent failures
    /// and accepted signals.
    ///
    /// Zone, failure, sensitive-operation, anonymiser, travel, concurrent-use,
    /// rate and volume rules apply from the first request (rate and volume
    /// once their own evidence suffices). The novelty rules (network,
    /// autonomous system, country, operation, resource, client, hour,
    /// dormancy) wait for the learning period, so a new identity is neither
    /// trusted blindly nor challenged on every request.
    pub fn assess(
        &self,
        baseline: &Baseline,
        failures: &Failures,
        accepted: &Accepted,
        facts: &RequestFacts,
    ) -> Assessment {
        let mut out = Collector {
            config: &self.config,
            accepted,
            signals: Vec::new(),
        };
        let learning = self.in_learning(baseline);
        self.zone_signals(facts, &mut out);
        self.failure_signals(failures, facts, &mut out);
        self.sensitive_signal(baseline, learning, facts, &mut out);
        self.anonymizer_signal(baseline, learning, facts, &mut out);
        self.travel_signal(baseline, facts, &mut out);
        self.concurrent_signal(baseline, facts, &mut out);
        self.rate_signal(baseline, facts, &mut out);
        self.volume_signals(baseline, facts.time, &mut out);
        if !learning {
            self.network_signals(baseline, facts, &mut out);
            self.operation_signals(baseline, facts, &mut out);
            if facts.has_network() {
                // Without a client network a cloud service made the call,
                // and the user agent names that service.
                self.client_signals(baseline, facts, &mut out);
            }
            self.time_signals(baseline, facts.time, &mut out);
        }
        let score = RiskScore::combine(out.signals.iter().map(|signal| signal.weight));
        Assessment {
            signals: out.signals,
            score,
        }
    }

    /// Counts an authenticated request, whatever its outcome: the rate, the
    /// last activity and the credential's sources.
    pub fn observe(&self, baseline: &mut Baseline, facts: &RequestFacts) {
        let now = facts.time;
        let burst = self.rate_threshold(baseline).unwrap_or(f64::MAX);
        baseline.rate.observe(now, burst);
        baseline.last_active = Some(baseline.last_active.map_or(now, |last| last.max(now)));
        if let Some(credential) = facts.credential.as_ref().filter(|_| facts.has_network()) {
            let network = facts.network();
            let location = facts.location.as_deref();
            let coordinates = location.and_then(|location| location.coordinates);
            let asn = location.and_then(|location| location.asn);
            match baseline
                .sources
                .iter_mut()
                .find(|source| &source.credential == credential && source.network == network)
            {
                Some(source) => {
                    source.last = source.last.max(now);
                    source.coordinates = coordinates.or(source.coordinates);
                    source.asn = asn.or(source.asn);
                }
                None => {
                    if baseline.sources.len() >= MAX_SOURCES
                        && let Some(oldest) = baseline
                            .sources
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, source)| source.last)
                            .map(|(index, _)| index)
                    {
                        baseline.sources.swap_remove(oldest);
                    }
                    baseline.sources.push(Source {
                        credential: credential.clone(),
                        network,
                        coordinates,
                        asn,
                        last: now,
                    });
                }
            }
        }
    }

    /// Adds an allowed request to the baseline.
    pub fn learn(&self, baseline: &mut Baseline, facts: &RequestFacts) {
        let at = facts.time;
        let half_life = self.half_life_ms;
        baseline.requests = baseline.requests.saturating_add(1);
        let network = facts.network();
        if facts.has_network() {
            baseline.networks.add(&network, at, half_life, MAX_NETWORKS);
        }
        if let Some(location) = facts.location.as_deref().filter(|_| facts.has_network()) {
            if let Some(asn) = location.asn {
                baseline.asns.add(&asn, at, half_life, MAX_PLACES);
            }
            if let Some(country) = &location.country {
                baseline
                    .countries
                    .add(country.as_str(), at, half_life, MAX_PLACES);
            }
            if let Some(coordinates) = location.coordinates
                && baseline.last_fix.is_none_or(|fix| fix.at <= at)
            {
                baseline.last_fix = Some(Fix {
                    at,
                    coordinates,
                    network,
                });
            }
        }
        baseline
            .operations
            .add(facts.operation.as_str(), at, half_life, MAX_OPERATIONS);
        baseline
            .resources
            .add(facts.resource.as_str(), at, half_life, MAX_RESOURCES);
        if facts.has_network() {
            let client = client_of(facts);
            baseline
                .clients
                .add(client.family.as_str(), at, half_life, MAX_CLIENTS);
            baseline
                .client_versions
                .add(client.label().as_str(), at, half_life, MAX_CLIENTS);
        }
        baseline.add_week_hour(at, half_life);
    }

    /// Adds bytes or rows sent to the identity at `at` to its volume windows.
    pub fn record_volume(&self, baseline: &mut Baseline, at: Timestamp, bytes: u64, rows: u64) {
        let window = self.config.volume_window_mins;
        if bytes > 0 {
            let excess = self
                .volume_threshold(&baseline.bytes.usual, self.config.volume_floor_bytes)
                .unwrap_or(f64::MAX);
            baseline.bytes.add(at, bytes, window, excess);
        }
        if rows > 0 {
            let excess = self
                .volume_threshold(&baseline.rows.usual, self.config.volume_floor_rows)
                .unwrap_or(f64::MAX);
            baseline.rows.add(at, rows, window, excess);
        }
    }

    fn zone_signals(&self, facts: &RequestFacts, out: &mut Collector<'_>) {
        let zone = facts.zone.as_deref().unwrap_or("?");
        if facts.zone_read_only && facts.action != Action::Read {
            out.push(
                SignalKind::ReadOnlyZoneWrite,
                zone,
                format!(
                    "{} ({}) in read-only zone {zone}",
                    facts.operation, facts.action
                ),
                evidence! {"operation" => facts.operation, "action" => facts.action.as_str()},
            );
        }
        if facts.zone_sensitive {
            out.push(
                SignalKind::SensitiveZone,
                zone,
                format!("{} in sensitive zone {zone}", facts.operation),
                evidence! {"operation" => facts.operation},
            );
        }
    }

    fn failure_signals(&self, failures: &Failures, facts: &RequestFacts, out: &mut Collector<'_>) {
        let window = self.config.failure_window();
        // Anyone who has seen a token id can fail authentication in its name, so
        // only failures from the request's own network count against it.
        // Step-up and authorization failures need the whole token and count
        // from anywhere.
        let network = facts.network();
        let authentication = failures.count_since(
            facts.time,
            window,
            &[FailureKind::Authentication],
            Some(network),
        );
        let step_up = failures.count_since(
            facts.time,
            window,
            &[FailureKind::StepUp, FailureKind::Totp],
            None,
        );
        let authorization =
            failures.count_since(facts.time, window, &[FailureKind::Authorization], None);
        let total = authentication + step_up + authorization;
        if total >= self.config.failure_burst_threshold {
            out.push(
                SignalKind::FailureBurst,
                ANY_VALUE,
                format!(
                    "{total} failures in the last {} s: {authentication} authentication, \
                     {step_up} step-up, {authorization} authorization",
                    window.as_secs()
                ),
                evidence! {
                    "authentication" => authentication,
                    "step_up" => step_up,
                    "authorization" => authorization,
                    "window_secs" => window.as_secs(),
                },
            );
        }
        let totp_failures = failures.count_since(facts.time, window, &[FailureKind::Totp], None);
        let locked = failures.totp_locked(facts.time);
        if totp_failures > 0 || locked {
            let lock = if locked { ", factor locked" } else { "" };
            out.push(
                SignalKind::TotpFailure,
                ANY_VALUE,
                format!(
                    "{totp_failures} wrong or replayed TOTP codes in the last {} s{lock}",
                    window.as_secs()
                ),
                evidence! {"failures" => totp_failures, "locked" => locked},
            );
        }
    }

    fn sensitive_signal(
        &self,
        baseline: &Baseline,
        learning: bool,
        facts: &RequestFacts,
        out: &mut Collector<'_>,
    ) {
        let Some(category) = self.catalogue.category(&facts.operation) else {
            return;
        };
        let kind = category.signal();
        if !out.wants(kind, &facts.operation) {
            return;
        }
        let (frequency, share) = self.operation_frequency(baseline, &facts.operation, facts.time);
        let routine =
            baseline
                .operations
                .weight(facts.operation.as_str(), facts.time, self.half_life_ms);
        // An identity whose job is this operation does it regularly, if
        // rarely (a daily secret read). It is sensitive when it is new or
        // was seen only a few times recently.
        if !learning && routine >= ROUTINE_WEIGHT {
            return;
        }
        out.push(
            kind,
            &facts.operation,
            format!(
                "{} {} and is {} for this identity",
                facts.operation,
                category.describe(),
                frequency.as_str()
            ),
            evidence! {
                "operation" => facts.operation,
                "category" => category.to_string(),
                "frequency" => frequency.as_str(),
                "share" => round(share, 4),
                "recent_uses" => round(routine, 2),
            },
        );
    }

    fn anonymizer_signal(
        &self,
        baseline: &Baseline,
        learning: bool,
        facts: &RequestFacts,
        out: &mut Collector<'_>,
    ) {
        let Some(why) = facts
            .location
            .as_deref()
            .and_then(|location| location.anonymizer.as_deref())
        else {
            return;
        };
        let network = facts.network();
        // An identity that always runs in a hosting network (a CI job in a
        // cloud) has that network in its baseline.
        if !learning
            && baseline
                .networks
                .knows(&network, facts.time, self.half_life_ms)
        {
            return;
        }
        let value = network.to_string();
        out.push(
            SignalKind::AnonymizerNetwork,
            &value,
            format!("request from {why} ({network})"),
            evidence! {"network" => value, "kind" => why},
        );
    }

    fn travel_signal(&self, baseline: &Baseline, facts: &RequestFacts, out: &mut Collector<'_>) {
        let (Some(fix), Some(location)) = (baseline.last_fix, facts.location.as_deref()) else {
            return;
        };
        let Some(here) = location.coordinates else {
            return;
        };
        if !facts.has_network() || fix.network == facts.network() || facts.time < fix.at {
            return;
        }
        let distance = fix.coordinates.distance_km(&here);
        let margin = f64::from(fix.coordinates.accuracy_km) + f64::from(here.accuracy_km);
        let beyond = distance - margin;
        if beyond <= f64::from(self.config.travel_min_km) {
            return;
        }
        let elapsed = facts.time.since(fix.at).as_secs_f64().max(1.0);
        let speed = beyond / (elapsed / 3600.0);
        if speed <= f64::from(self.config.travel_max_kmh) {
            return;
        }
        let place = location.place().unwrap_or_else(|| here.to_string());
        out.push(
            SignalKind::ImpossibleTravel,
            ANY_VALUE,
            format!(
                "{:.0} km from the last request ({}, {}) {} ago: {:.0} km/h needed, at most {} believable",
                distance,
                fix.network,
                fix.coordinates,
                human_duration(elapsed),
                speed,
                self.config.travel_max_kmh
            ),
            evidence! {
                "from_network" => fix.network.to_string(),
                "from" => fix.coordinates.to_string(),
                "to" => here.to_string(),
                "to_place" => place,
                "distance_km" => round(distance, 1),
                "elapsed_secs" => round(elapsed, 1),
                "speed_kmh" => round(speed, 0),
            },
        );
    }

    fn concurrent_signal(
        &self,
        baseline: &Baseline,
        facts: &RequestFacts,
        out: &mut Collector<'_>,
    ) {
        let Some(credential) = facts.credential.as_ref().filter(|_| facts.has_network()) else {
            return;
        };
        let network = facts.network();
        let location = facts.location.as_deref();
        let here = location.and_then(|location| location.coordinates);
        let asn = location.and_then(|location| location.asn);
        let window = self.config.concurrent_window_secs;
        let other = baseline.sources.iter().find_map(|source| {
            if &source.credential != credential
                || source.network == network
                || facts.time.since(source.last).as_secs() >= window
            {
                return None;
            }
            let distance = match (source.coordinates, here) {
                (Some(there), Some(here)) => Some(there.distance_km(&here)),
                _ => None,
            };
            let distant = match (distance, source.asn, asn) {
                (Some(km), _, _) => km >= f64::from(self.config.concurrent_min_km),
                (None, Some(a), Some(b)) => a != b,
                (None, _, _) => !same_wide_network(&source.network, &network),
            };
            distant.then_some((source, distance))
        });
        let Some((source, distance)) = other else {
            return;
        };
        let apart = distance.map_or_else(String::new, |km| format!(", {km:.0} km apart"));
        out.push(
            SignalKind::ConcurrentSessions,
            ANY_VALUE,
            format!(
                "credential {credential} used from {} {} ago and now from {network}{apart}",
                source.network,
                human_duration(facts.time.since(source.last).as_secs_f64()),
            ),
            evidence! {
                "credential" => credential,
                "other_network" => source.network.to_string(),
                "network" => network.to_string(),
                "distance_km" => distance.map(|km| round(km, 1)),
            },
        );
    }

    fn rate_threshold(&self, baseline: &Baseline) -> Option<f64> {
        let usual = &baseline.rate.usual;
        if usual.samples < u64::from(self.config.rate_min_minutes) {
            return None;
        }
        // Counts per minute vary at least as much as a Poisson process.
        Some(usual.threshold(
            f64::from(self.config.rate_sigmas),
            usual.mean.max(0.0).sqrt(),
            f64::from(self.config.rate_floor_per_minute),
        ))
    }

    fn rate_signal(&self, baseline: &Baseline, facts: &RequestFacts, out: &mut Collector<'_>) {
        let Some(threshold) = self.rate_threshold(baseline) else {
            return;
        };
        let count = baseline.rate.count_with_next(facts.time);
        if f64::from(count) <= threshold {
            return;
        }
        let usual = &baseline.rate.usual;
        out.push(
            SignalKind::RequestBurst,
            ANY_VALUE,
            format!(
                "{count} requests in this minute; usual {:.1} ± {:.1} per active minute, burst above {:.0}",
                usual.mean,
                usual.deviation(),
                threshold
            ),
            evidence! {
                "count" => count,
                "usual_mean" => round(usual.mean, 2),
                "usual_deviation" => round(usual.deviation(), 2),
                "threshold" => round(threshold, 1),
            },
        );
    }

    fn volume_threshold(&self, usual: &series::Moving, floor: u64) -> Option<f64> {
        if usual.samples < u64::from(self.config.volume_min_windows) {
            return None;
        }
        Some(usual.threshold(
            f64::from(self.config.volume_sigmas),
            usual.mean.max(0.0) / 4.0,
            floor as f64,
        ))
    }

    fn volume_signals(&self, baseline: &Baseline, now: Timestamp, out: &mut Collector<'_>) {
        let window = self.config.volume_window_mins;
        for (series, floor, unit) in [
            (&baseline.bytes, self.config.volume_floor_bytes, "bytes"),
            (&baseline.rows, self.config.volume_floor_rows, "rows"),
        ] {
            let Some(threshold) = self.volume_threshold(&series.usual, floor) else {
                continue;
            };
            let total = series.total_at(now, window);
            if (total as f64) <= threshold {
                continue;
            }
            out.push(
                SignalKind::DataVolume,
                unit,
                format!(
                    "{total} {unit} read in the last {window} min; usual {:.0} ± {:.0}, excess above {:.0}",
                    series.usual.mean,
                    series.usual.deviation(),
                    threshold
                ),
                evidence! {
                    "unit" => unit,
                    "total" => total,
                    "window_mins" => window,
                    "usual_mean" => round(series.usual.mean, 0),
                    "threshold" => round(threshold, 0),
                },
            );
        }
    }

    fn network_signals(&self, baseline: &Baseline, facts: &RequestFacts, out: &mut Collector<'_>) {
        let now = facts.time;
        let half_life = self.half_life_ms;
        let network = facts.network();
        if !facts.has_network() {
            return;
        }
        if !baseline.networks.knows(&network, now, half_life) {
            let value = network.to_string();
            let seen = baseline.networks.live_count(now, half_life);
            out.push(
                SignalKind::NewNetwork,
                &value,
                format!("first request from network {network}; networks seen: {seen}"),
                evidence! {"network" => value, "networks_seen" => seen},
            );
        }
        let Some(location) = facts.location.as_deref() else {
            return;
        };
        if let Some(asn) = location.asn
            && !baseline.asns.knows(&asn, now, half_life)
        {
            let value = format!("AS{asn}");
            let seen = baseline.asns.live_count(now, half_life);
            let label = location.as_label().unwrap_or_else(|| value.clone());
            out.push(
                SignalKind::NewAsn,
                &value,
                format!("first request from {label}; autonomous systems seen: {seen}"),
                evidence! {"asn" => asn, "as_org" => location.as_org, "asns_seen" => seen},
            );
        }
        if let Some(country) = &location.country
            && !baseline.countries.knows(country.as_str(), now, half_life)
        {
            let seen: Vec<&String> = baseline.countries.keys().collect();
            let place = location.place().unwrap_or_else(|| country.clone());
            out.push(
                SignalKind::NewCountry,
                country,
                format!(
                    "first request from {place}; countries seen: {}",
                    if seen.is_empty() {
                        "none".to_owned()
                    } else {
                        seen.iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                evidence! {"country" => country, "countries_seen" => seen},
            );
        }
    }

    fn operation_frequency(
        &self,
        baseline: &Baseline,
        operation: &str,
        now: Timestamp,
    ) -> (Frequency, f64) {
        baseline.operations.frequency(
            operation,
            now,
            self.half_life_ms,
            f64::from(self.config.rare_operation_permille) / 1000.0,
            f64::from(self.config.frequent_operation_permille) / 1000.0,
        )
    }

    fn operation_signals(
        &self,
        baseline: &Baseline,
        facts: &RequestFacts,
        out: &mut Collector<'_>,
    ) {
        let now = facts.time;
        let operation = facts.operation.as_str();
        let (frequency, share) = self.operation_frequency(baseline, operation, now);
        let seen = baseline.operations.live_count(now, self.half_life_ms);
        match frequency {
            Frequency::Unseen => out.push(
                SignalKind::NewOperation,
                operation,
                format!("first use of operation {operation}; operations seen: {seen}"),
                evidence! {"operation" => operation, "operations_seen" => seen},
            ),
            Frequency::Rare => out.push(
                SignalKind::RareOperation,
                operation,
                format!(
                    "operation {operation} is rare for this identity: {:.2} % of recent requests",
                    share * 100.0
                ),
                evidence! {"operation" => operation, "share" => round(share, 4)},
            ),
            Frequency::Infrequent | Frequency::Frequent => {}
        }
        // A new operation already implies a new resource for it, so only a
        // new resource under a known operation is raised.
        if frequency != Frequency::Unseen
            && !baseline
                .resources
                .knows(facts.resource.as_str(), now, self.half_life_ms)
        {
            let seen = baseline.resources.live_count(now, self.half_life_ms);
            out.push(
                SignalKind::NewResource,
                &facts.resource,
                format!(
                    "first access to resource {} with {operation}; resources seen: {seen}",
                    facts.resource
                ),
                evidence! {"resource" => facts.resource, "resources_seen" => seen},
            );
        }
    }

    fn client_signals(&self, baseline: &Baseline, facts: &RequestFacts, out: &mut Collector<'_>) {
        let now = facts.time;
        let client = client_of(facts);
        let families: Vec<&String> = baseline.clients.keys().collect();
        if !baseline
            .clients
            .knows(client.family.as_str(), now, self.half_life_ms)
        {
            out.push(
                SignalKind::NewClient,
                &client.family,
                format!(
                    "client software {} not seen for this identity; seen: {}",
                    client.label(),
                    join_or_none(&families)
                ),
                evidence! {"client" => client.label(), "clients_seen" => families},
            );
            return;
        }
        let label = client.label();
        if !baseline
            .client_versions
            .knows(label.as_str(), now, self.half_life_ms)
        {
            let versions: Vec<&String> = baseline
                .client_versions
                .keys()
                .filter(|seen| {
                    seen.split_once('/')
                        .map_or(seen.as_str(), |(family, _)| family)
                        == client.family
                })
                .collect();
            out.push(
                SignalKind::ClientVersion,
                &label,
                format!(
                    "client version {label} not seen for this identity; seen: {}",
                    join_or_none(&versions)
                ),
                evidence! {"client" => label, "versions_seen" => versions},
            );
        }
    }

    fn time_signals(&self, baseline: &Baseline, now: Timestamp, out: &mut Collector<'_>) {
        let half_life = self.half_life_ms;
        let total = baseline.week_total(now, half_life);
        let hour = usize::from(now.hour_of_week());
        if total >= self.config.unusual_hour_min_requests as f64 {
            let near = baseline.week_hour(hour + 167, now, half_life)
                + baseline.week_hour(hour, now, half_life)
                + baseline.week_hour(hour + 1, now, half_life);
            if near < 0.5 {
                let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
                    .get(hour / 24)
                    .copied()
                    .unwrap_or("?");
                let hour_of_day = hour % 24;
                out.push(
                    SignalKind::UnusualHour,
                    &format!("{day} {hour_of_day:02}"),
                    format!(
                        "no activity on {day} {hour_of_day:02}:00-{hour_of_day:02}:59 UTC or the hours \
                         next to it in {total:.0} recent requests"
                    ),
                    evidence! {"hour_of_week" => hour, "nearby_weight" => round(near, 3), "recent_requests" => round(total, 0)},
                );
            }
        }
        if let Some(last) = baseline.last_active {
            let idle = now.since(last);
            let limit = u64::from(self.config.dormant_after_days) * 86_400;
            if limit > 0 && idle.as_secs() >= limit {
                out.push(
                    SignalKind::Dormant,
                    ANY_VALUE,
                    format!(
                        "first request after {} days without activity (last {})",
                        idle.as_secs() / 86_400,
                        last.to_rfc3339()
                    ),
                    evidence! {"idle_days" => idle.as_secs() / 86_400, "last_active" => last.to_rfc3339()},
                );
            }
        }
    }
}

fn client_of(facts: &RequestFacts) -> Client {
    facts
        .user_agent
        .as_deref()
        .and_then(Client::parse)
        .unwrap_or_else(|| Client {
            family: NO_CLIENT.to_owned(),
            version: None,
        })
}

/// True when two networks share their /16 (IPv4) or /32 (IPv6) prefix.
fn same_wide_network(a: &Network, b: &Network) -> bool {
    match (a, b) {
        (Network::V4(a), Network::V4(b)) => a[..2] == b[..2],
        (Network::V6(a), Network::V6(b)) => a[..2] == b[..2],
        _ => false,
    }
}

fn join_or_none(values: &[&String]) -> String {
    if values.is_empty() {
        "none".to_owned()
    } else {
        values
            .iter()
            .map(|value| value.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

fn human_duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.0} h", secs / 3600.0)
    } else {
        format!("{:.0} days", secs / 86_400.0)
    }
}

#[cfg(test)]
mod tests;
