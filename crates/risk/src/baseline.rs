use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stepgate_core::{Network, RequestFacts, Timestamp};

use crate::config::RiskConfig;

/// What is normal for one identity, learned from its own allowed traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Baseline {
    requests: u64,
    networks: BTreeMap<Network, Seen>,
    operations: BTreeMap<String, Seen>,
    hours: [u64; 24],
}

/// Most networks one baseline remembers; past this the least recently seen
/// is forgotten, so a flood of new values cannot grow memory without bound.
const MAX_NETWORKS: usize = 256;
/// Most operations one baseline remembers, forgotten the same way.
const MAX_OPERATIONS: usize = 1024;

/// Removes the least recently seen entries until `map` has room for one more.
fn evict_oldest<K: Ord + Clone>(map: &mut BTreeMap<K, Seen>, max: usize) {
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, seen)| seen.last)
            .map(|(key, _)| key.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

/// How often and how recently something was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    count: u64,
    last: Timestamp,
}

impl Seen {
    fn record(&mut self, at: Timestamp) {
        self.count = self.count.saturating_add(1);
        self.last = self.last.max(at);
    }
}

impl Baseline {
    /// Adds one allowed request to the baseline.
    pub fn learn(&mut self, facts: &RequestFacts) {
        self.requests = self.requests.saturating_add(1);
        let network = facts.network();
        if !self.networks.contains_key(&network) {
            evict_oldest(&mut self.networks, MAX_NETWORKS);
        }
        self.networks.entry(network).or_default().record(facts.time);
        match self.operations.get_mut(&facts.operation) {
            Some(seen) => seen.record(facts.time),
            None => {
                evict_oldest(&mut self.operations, MAX_OPERATIONS);
                let mut seen = Seen::default();
                seen.record(facts.time);
                self.operations.insert(facts.operation.clone(), seen);
            }
        }
        let hour = usize::from(facts.time.hour_of_day());
        if let Some(slot) = self.hours.get_mut(hour) {
            *slot = slot.saturating_add(1);
        }
    }

    /// True while the identity has made fewer requests than the learning
    /// period asks for.
    pub fn in_learning(&self, config: &RiskConfig) -> bool {
        self.requests < config.learning_requests
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn knows_network(&self, network: &Network) -> bool {
        self.networks.contains_key(network)
    }

    pub fn network_count(&self) -> usize {
        self.networks.len()
    }

    pub fn knows_operation(&self, operation: &str) -> bool {
        self.operations.contains_key(operation)
    }

    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }

    pub fn requests_in_hour(&self, hour: u8) -> u64 {
        self.hours.get(usize::from(hour)).copied().unwrap_or(0)
    }

    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.keys()
    }
}
