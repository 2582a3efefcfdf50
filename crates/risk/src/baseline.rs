use serde::{Deserialize, Serialize};
use stepgate_core::{Coordinates, Network, Timestamp};

use crate::profile::{Profile, decay};
use crate::series::{RateSeries, VolumeSeries};

/// Version of the baseline layout. A stored baseline of another version is
/// dropped and learned again, so no identity is judged against a baseline
/// whose fields meant something else.
pub const BASELINE_VERSION: u32 = 2;

/// Most networks one baseline remembers; past this the weakest is forgotten,
/// so a flood of new values cannot grow memory without bound.
pub(crate) const MAX_NETWORKS: usize = 256;
/// Most autonomous systems and countries one baseline remembers.
pub(crate) const MAX_PLACES: usize = 64;
/// Most operations one baseline remembers.
pub(crate) const MAX_OPERATIONS: usize = 1024;
/// Most resources one baseline remembers.
pub(crate) const MAX_RESOURCES: usize = 1024;
/// Most client families and versions one baseline remembers.
pub(crate) const MAX_CLIENTS: usize = 32;
/// Most credential sources kept for concurrent-use checks.
pub(crate) const MAX_SOURCES: usize = 16;

/// Hours in a week, the length of the activity profile.
const WEEK_HOURS: usize = 168;

/// Location and time of a request, for travel checks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fix {
    pub(crate) at: Timestamp,
    pub(crate) coordinates: Coordinates,
    pub(crate) network: Network,
}

/// The last use of one credential from one network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Source {
    pub(crate) credential: String,
    pub(crate) network: Network,
    pub(crate) coordinates: Option<Coordinates>,
    pub(crate) asn: Option<u32>,
    pub(crate) last: Timestamp,
}

/// Normal behaviour of one identity, learned from its own traffic. Counts
/// decay with the configured half-life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Baseline {
    /// Missing in stored baselines of the first layout, which read as 0.
    #[serde(default)]
    pub(crate) version: u32,
    /// Requests learned, ever; decides the learning period.
    pub(crate) requests: u64,
    /// Last authenticated request, learned or not.
    pub(crate) last_active: Option<Timestamp>,
    pub(crate) networks: Profile<Network>,
    pub(crate) asns: Profile<u32>,
    pub(crate) countries: Profile<String>,
    pub(crate) operations: Profile<String>,
    pub(crate) resources: Profile<String>,
    pub(crate) clients: Profile<String>,
    pub(crate) client_versions: Profile<String>,
    /// Decayed requests per hour of the week, Monday 00:00 UTC first.
    pub(crate) week_hours: Vec<f32>,
    pub(crate) week_hours_at: Timestamp,
    pub(crate) last_fix: Option<Fix>,
    pub(crate) sources: Vec<Source>,
    pub(crate) rate: RateSeries,
    pub(crate) bytes: VolumeSeries,
    pub(crate) rows: VolumeSeries,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            version: BASELINE_VERSION,
            requests: 0,
            last_active: None,
            networks: Profile::default(),
            asns: Profile::default(),
            countries: Profile::default(),
            operations: Profile::default(),
            resources: Profile::default(),
            clients: Profile::default(),
            client_versions: Profile::default(),
            week_hours: vec![0.0; WEEK_HOURS],
            week_hours_at: Timestamp::default(),
            last_fix: None,
            sources: Vec::new(),
            rate: RateSeries::default(),
            bytes: VolumeSeries::default(),
            rows: VolumeSeries::default(),
        }
    }
}

impl Baseline {
    /// True when the baseline was stored by this version of stepgate.
    pub fn is_current(&self) -> bool {
        self.version == BASELINE_VERSION && self.week_hours.len() == WEEK_HOURS
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn last_active(&self) -> Option<Timestamp> {
        self.last_active
    }

    pub fn knows_network(&self, network: &Network, now: Timestamp, half_life_ms: f64) -> bool {
        self.networks.knows(network, now, half_life_ms)
    }

    pub fn knows_operation(&self, operation: &str, now: Timestamp, half_life_ms: f64) -> bool {
        self.operations.knows(operation, now, half_life_ms)
    }

    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.keys()
    }

    /// Decayed weight of the hour of the week `hour` at `now`.
    pub(crate) fn week_hour(&self, hour: usize, now: Timestamp, half_life_ms: f64) -> f64 {
        let weight = self
            .week_hours
            .get(hour % WEEK_HOURS)
            .copied()
            .unwrap_or(0.0);
        f64::from(weight) * decay(self.week_hours_at, now, half_life_ms)
    }

    /// Decayed weight of all hours at `now`.
    pub(crate) fn week_total(&self, now: Timestamp, half_life_ms: f64) -> f64 {
        let sum: f32 = self.week_hours.iter().sum();
        f64::from(sum) * decay(self.week_hours_at, now, half_life_ms)
    }

    /// Adds one request at `at` to the hour-of-week profile. The whole
    /// profile fades at most once an hour, which keeps learning cheap.
    pub(crate) fn add_week_hour(&mut self, at: Timestamp, half_life_ms: f64) {
        if self.week_hours.len() != WEEK_HOURS {
            self.week_hours = vec![0.0; WEEK_HOURS];
        }
        if at.since(self.week_hours_at).as_secs() >= 3600 {
            let factor = decay(self.week_hours_at, at, half_life_ms) as f32;
            for weight in &mut self.week_hours {
                *weight *= factor;
            }
            self.week_hours_at = at;
        }
        if let Some(slot) = self.week_hours.get_mut(usize::from(at.hour_of_week())) {
            *slot += 1.0;
        }
    }
}
