//! Decaying counts: how often and how recently something was seen, with old
//! observations fading by a half-life.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stepgate_core::Timestamp;

/// Below this decayed weight an entry counts as forgotten: seen once, it
/// fades this far after a little over four half-lives.
pub(crate) const FORGOTTEN: f64 = 0.05;

/// Factor by which a weight fades from `then` to `now`.
pub(crate) fn decay(then: Timestamp, now: Timestamp, half_life_ms: f64) -> f64 {
    let elapsed = now.as_millis().saturating_sub(then.as_millis()).max(0) as f64;
    if half_life_ms <= 0.0 {
        return 1.0;
    }
    (-elapsed / half_life_ms).exp2()
}

/// A decaying count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Seen {
    pub(crate) weight: f64,
    pub(crate) last: Timestamp,
}

impl Seen {
    /// Returns the weight, decayed to `now`.
    pub(crate) fn at(&self, now: Timestamp, half_life_ms: f64) -> f64 {
        self.weight * decay(self.last, now, half_life_ms)
    }

    /// Adds one observation at `at`. An observation older than the last one
    /// (events replayed slightly out of order) adds its own faded weight.
    pub(crate) fn add(&mut self, at: Timestamp, half_life_ms: f64) {
        if at >= self.last {
            self.weight = self.at(at, half_life_ms) + 1.0;
            self.last = at;
        } else {
            self.weight += decay(at, self.last, half_life_ms);
        }
    }
}

/// How often an entry of a profile occurs among all observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frequency {
    /// Forgotten or never seen.
    Unseen,
    /// Below the rare share.
    Rare,
    /// Between the rare and the frequent share.
    Infrequent,
    Frequent,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Unseen => "unseen",
            Frequency::Rare => "rare",
            Frequency::Infrequent => "infrequent",
            Frequency::Frequent => "frequent",
        }
    }
}

/// Decaying counts of values, bounded in size: past `max` entries the one
/// with the least weight left is forgotten, so a flood of new values cannot
/// grow memory without bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Profile<K: Ord> {
    entries: BTreeMap<K, Seen>,
    total: Seen,
}

impl<K: Ord> Default for Profile<K> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            total: Seen::default(),
        }
    }
}

impl<K: Ord + Clone> Profile<K> {
    pub(crate) fn add<Q>(&mut self, key: &Q, at: Timestamp, half_life_ms: f64, max: usize)
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        self.total.add(at, half_life_ms);
        if let Some(seen) = self.entries.get_mut(key) {
            seen.add(at, half_life_ms);
            return;
        }
        if self.entries.len() >= max {
            self.forget_weakest(at, half_life_ms, max);
        }
        let mut seen = Seen::default();
        seen.add(at, half_life_ms);
        self.entries.insert(key.to_owned(), seen);
    }

    fn forget_weakest(&mut self, now: Timestamp, half_life_ms: f64, max: usize) {
        self.entries
            .retain(|_, seen| seen.at(now, half_life_ms) >= FORGOTTEN);
        while self.entries.len() >= max {
            let Some(weakest) = self
                .entries
                .iter()
                .min_by(|a, b| {
                    a.1.at(now, half_life_ms)
                        .total_cmp(&b.1.at(now, half_life_ms))
                })
                .map(|(key, _)| key.clone())
            else {
                return;
            };
            self.entries.remove(&weakest);
        }
    }

    /// Decayed weight of `key` at `now`; zero when unknown or forgotten.
    pub(crate) fn weight<Q>(&self, key: &Q, now: Timestamp, half_life_ms: f64) -> f64
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let weight = self
            .entries
            .get(key)
            .map_or(0.0, |seen| seen.at(now, half_life_ms));
        if weight < FORGOTTEN { 0.0 } else { weight }
    }

    pub(crate) fn knows<Q>(&self, key: &Q, now: Timestamp, half_life_ms: f64) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.weight(key, now, half_life_ms) > 0.0
    }

    /// Decayed weight of all observations at `now`.
    pub(crate) fn total(&self, now: Timestamp, half_life_ms: f64) -> f64 {
        self.total.at(now, half_life_ms)
    }

    /// Entries whose weight has not faded below [`FORGOTTEN`] at `now`.
    pub(crate) fn live_count(&self, now: Timestamp, half_life_ms: f64) -> usize {
        self.entries
            .values()
            .filter(|seen| seen.at(now, half_life_ms) >= FORGOTTEN)
            .count()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Classifies `key` by its share of the total weight, against the rare
    /// and frequent shares.
    pub(crate) fn frequency<Q>(
        &self,
        key: &Q,
        now: Timestamp,
        half_life_ms: f64,
        rare_share: f64,
        frequent_share: f64,
    ) -> (Frequency, f64)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let weight = self.weight(key, now, half_life_ms);
        if weight == 0.0 {
            return (Frequency::Unseen, 0.0);
        }
        let total = self.total(now, half_life_ms).max(weight);
        let share = weight / total;
        let frequency = if share < rare_share {
            Frequency::Rare
        } else if share < frequent_share {
            Frequency::Infrequent
        } else {
            Frequency::Frequent
        };
        (frequency, share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: f64 = 86_400_000.0;

    #[test]
    fn weight_halves_each_half_life() {
        let mut seen = Seen::default();
        seen.add(Timestamp::from_secs(0), DAY_MS);
        assert_eq!(seen.at(Timestamp::from_secs(0), DAY_MS), 1.0);
        let later = seen.at(Timestamp::from_secs(86_400), DAY_MS);
        assert!((later - 0.5).abs() < 1e-12, "{later}");
        let much_later = seen.at(Timestamp::from_secs(3 * 86_400), DAY_MS);
        assert!((much_later - 0.125).abs() < 1e-12, "{much_later}");
    }

    #[test]
    fn out_of_order_observation_adds_its_faded_weight() {
        let mut seen = Seen::default();
        seen.add(Timestamp::from_secs(86_400), DAY_MS);
        seen.add(Timestamp::from_secs(0), DAY_MS);
        assert_eq!(seen.last, Timestamp::from_secs(86_400));
        assert!((seen.weight - 1.5).abs() < 1e-12);
    }

    #[test]
    fn entries_are_forgotten_after_a_few_half_lives() {
        let mut profile = Profile::default();
        profile.add(&"a".to_owned(), Timestamp::from_secs(0), DAY_MS, 8);
        assert!(profile.knows(&"a".to_owned(), Timestamp::from_secs(0), DAY_MS));
        assert!(profile.knows(&"a".to_owned(), Timestamp::from_secs(4 * 86_400), DAY_MS));
        assert!(!profile.knows(&"a".to_owned(), Timestamp::from_secs(5 * 86_400), DAY_MS));
    }

    #[test]
    fn full_profile_forgets_the_weakest_entry() {
        let mut profile = Profile::default();
        let now = Timestamp::from_secs(10);
        for _ in 0..5 {
            profile.add(&1_u32, now, DAY_MS, 3);
        }
        profile.add(&2, now, DAY_MS, 3);
        profile.add(&2, now, DAY_MS, 3);
        profile.add(&3, now, DAY_MS, 3);
        profile.add(&4, now, DAY_MS, 3);
        assert_eq!(profile.len(), 3);
        assert!(profile.knows(&1, now, DAY_MS));
        assert!(profile.knows(&2, now, DAY_MS));
        assert!(!profile.knows(&3, now, DAY_MS));
        assert!(profile.knows(&4, now, DAY_MS));
    }

    #[test]
    fn frequency_classes_follow_the_share() {
        let mut profile = Profile::default();
        let now = Timestamp::from_secs(0);
        for _ in 0..900 {
            profile.add(&"common", now, DAY_MS, 16);
        }
        for _ in 0..95 {
            profile.add(&"sometimes", now, DAY_MS, 16);
        }
        for _ in 0..5 {
            profile.add(&"seldom", now, DAY_MS, 16);
        }
        let class = |key| profile.frequency(&key, now, DAY_MS, 0.01, 0.05).0;
        assert_eq!(class("common"), Frequency::Frequent);
        assert_eq!(class("sometimes"), Frequency::Frequent);
        assert_eq!(class("seldom"), Frequency::Rare);
        assert_eq!(class("never"), Frequency::Unseen);
        let class =
            |profile: &Profile<&str>, key| profile.frequency(&key, now, DAY_MS, 0.01, 0.05).0;
        for _ in 0..30 {
            profile.add(&"seldom", now, DAY_MS, 16);
        }
        assert_eq!(class(&profile, "seldom"), Frequency::Infrequent);
    }
}
