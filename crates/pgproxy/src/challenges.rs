//! The statements behind open challenges. `stepgate.step_up` may come on
//! any connection of the identity, such as a client that reconnects, so the
//! challenged statement's facts are kept for the whole gateway until the
//! challenge expires. The engine checks the identity, network and expiry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stepgate_core::RequestFacts;

/// Maximum number of challenges kept; past it the oldest are dropped.
const MAX_CHALLENGES: usize = 10_000;

/// The facts of a challenged statement.
#[derive(Clone)]
pub(crate) struct Challenged {
    pub(crate) facts: RequestFacts,
    pub(crate) class: String,
    pub(crate) fingerprint: String,
    pub(crate) audit_target: String,
}

pub(crate) struct Challenges {
    ttl: Duration,
    open: Mutex<HashMap<String, (Instant, Challenged)>>,
}

impl Challenges {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, id: String, challenged: Challenged) {
        let now = Instant::now();
        let mut open = self.open.lock();
        open.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if open.len() >= MAX_CHALLENGES
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id, (now, challenged));
    }

    pub(crate) fn get(&self, id: &str) -> Option<Challenged> {
        let open = self.open.lock();
        let (at, challenged) = open.get(id)?;
        (at.elapsed() < self.ttl).then(|| challenged.clone())
    }

    pub(crate) fn remove(&self, id: &str) {
        self.open.lock().remove(id);
    }
}
