//! Rates and volumes per minute against an identity's own smoothed usual
//! level: an exponentially weighted mean and variance, so bursts stand out
//! and slow drifts are learned.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use stepgate_core::Timestamp;

/// Weight of the newest sample in the moving mean and variance. With 0.05 a
/// sample's influence halves after about 14 further samples.
const ALPHA: f64 = 0.05;

fn minute_of(at: Timestamp) -> i64 {
    at.as_millis().div_euclid(60_000)
}

/// An exponentially weighted mean and variance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Moving {
    pub(crate) mean: f64,
    pub(crate) variance: f64,
    pub(crate) samples: u64,
}

impl Moving {
    pub(crate) fn add(&mut self, value: f64) {
        if self.samples == 0 {
            self.mean = value;
            self.variance = 0.0;
        } else {
            let diff = value - self.mean;
            let increment = ALPHA * diff;
            self.mean += increment;
            self.variance = (1.0 - ALPHA) * (self.variance + diff * increment);
        }
        self.samples = self.samples.saturating_add(1);
    }

    pub(crate) fn deviation(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    /// Returns the level above which a sample is out of the ordinary: the
    /// mean plus `sigmas` deviations (each at least `min_deviation`), and at
    /// least `floor`.
    pub(crate) fn threshold(&self, sigmas: f64, min_deviation: f64, floor: f64) -> f64 {
        (self.mean + sigmas * self.deviation().max(min_deviation)).max(floor)
    }
}

/// Requests per active minute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RateSeries {
    minute: i64,
    count: u32,
    pub(crate) usual: Moving,
}

impl RateSeries {
    /// Counts one request at `at`, closing the previous minute if `at` is in
    /// a later one. A closed minute above `burst_threshold` is not learned, so
    /// bursts do not teach the usual rate.
    pub(crate) fn observe(&mut self, at: Timestamp, burst_threshold: f64) {
        let minute = minute_of(at);
        if minute < self.minute {
            // A late event (replayed out of order) belongs to a minute that
            // is already closed; counting it in the current one would fake
            // a burst.
            return;
        }
        if minute > self.minute {
            if self.count > 0 && f64::from(self.count) <= burst_threshold {
                self.usual.add(f64::from(self.count));
            }
            self.minute = minute;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
    }

    /// Requests in the minute of `at`, counting one more for the request
    /// being decided.
    pub(crate) fn count_with_next(&self, at: Timestamp) -> u32 {
        if minute_of(at) == self.minute {
            self.count.saturating_add(1)
        } else {
            1
        }
    }
}

/// Bytes or rows read over a sliding window of minutes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct VolumeSeries {
    /// Totals of the recent minutes, oldest first.
    minutes: VecDeque<(i64, u64)>,
    /// Window totals at the end of each active minute.
    pub(crate) usual: Moving,
}

impl VolumeSeries {
    /// Adds `amount` read at `at`. When `at` opens a new minute, the window
    /// total at the end of the previous one is learned unless it exceeded
    /// `excess_threshold`.
    pub(crate) fn add(
        &mut self,
        at: Timestamp,
        amount: u64,
        window_mins: u32,
        excess_threshold: f64,
    ) {
        let minute = minute_of(at);
        match self.minutes.back_mut() {
            Some((last, total)) if *last >= minute => {
                *total = total.saturating_add(amount);
                return;
            }
            Some(&mut (last, _)) => {
                let closed = self.window_total(last, window_mins);
                if closed > 0 && closed as f64 <= excess_threshold {
                    self.usual.add(closed as f64);
                }
            }
            None => {}
        }
        self.minutes.push_back((minute, amount));
        let oldest = minute - i64::from(window_mins);
        while self.minutes.front().is_some_and(|(m, _)| *m <= oldest) {
            self.minutes.pop_front();
        }
    }

    fn window_total(&self, minute: i64, window_mins: u32) -> u64 {
        let oldest = minute - i64::from(window_mins);
        self.minutes
            .iter()
            .filter(|(m, _)| *m > oldest && *m <= minute)
            .fold(0_u64, |sum, (_, amount)| sum.saturating_add(*amount))
    }

    /// Total read in the window that ends in the minute of `at`.
    pub(crate) fn total_at(&self, at: Timestamp, window_mins: u32) -> u64 {
        self.window_total(minute_of(at), window_mins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_minute(minute: i64, second: i64) -> Timestamp {
        Timestamp::from_secs(minute * 60 + second)
    }

    #[test]
    fn moving_mean_follows_a_slow_drift() {
        let mut moving = Moving::default();
        for step in 0..400 {
            moving.add(10.0 + f64::from(step) * 0.05);
        }
        // The level drifted from 10 to 30; the mean trails it by about
        // (1 - ALPHA) / ALPHA steps of 0.05.
        assert!((moving.mean - 29.0).abs() < 0.2, "{}", moving.mean);
        assert!(moving.deviation() < 2.0, "{}", moving.deviation());
    }

    #[test]
    fn threshold_floor_and_minimum_deviation() {
        let mut moving = Moving::default();
        for _ in 0..50 {
            moving.add(10.0);
        }
        assert_eq!(moving.deviation(), 0.0);
        assert_eq!(
            moving.threshold(4.0, 10_f64.sqrt(), 0.0),
            10.0 + 4.0 * 10_f64.sqrt()
        );
        assert_eq!(moving.threshold(4.0, 1.0, 30.0), 30.0);
    }

    #[test]
    fn rate_counts_current_learns_closed() {
        let mut rate = RateSeries::default();
        for second in 0..10 {
            rate.observe(at_minute(5, second), 100.0);
        }
        assert_eq!(rate.count_with_next(at_minute(5, 30)), 11);
        assert_eq!(rate.count_with_next(at_minute(6, 0)), 1);
        assert_eq!(rate.usual.samples, 0);
        rate.observe(at_minute(6, 0), 100.0);
        assert_eq!(rate.usual.samples, 1);
        assert_eq!(rate.usual.mean, 10.0);
    }

    #[test]
    fn late_events_do_not_count_as_a_burst() {
        let mut rate = RateSeries::default();
        for second in 0..10 {
            rate.observe(at_minute(9, second), 100.0);
        }
        assert_eq!(rate.count_with_next(at_minute(3, 0)), 1);
        rate.observe(at_minute(3, 0), 100.0);
        assert_eq!(rate.count_with_next(at_minute(9, 30)), 11);
    }

    #[test]
    fn rate_does_not_learn_a_burst() {
        let mut rate = RateSeries::default();
        for second in 0..50 {
            rate.observe(at_minute(1, second), 20.0);
        }
        rate.observe(at_minute(2, 0), 20.0);
        assert_eq!(rate.usual.samples, 0);
    }

    #[test]
    fn volume_window_slides() {
        let mut volume = VolumeSeries::default();
        volume.add(at_minute(0, 1), 100, 10, f64::MAX);
        volume.add(at_minute(3, 1), 50, 10, f64::MAX);
        assert_eq!(volume.total_at(at_minute(3, 59), 10), 150);
        assert_eq!(volume.total_at(at_minute(9, 0), 10), 150);
        assert_eq!(volume.total_at(at_minute(10, 0), 10), 50);
        assert_eq!(volume.total_at(at_minute(13, 0), 10), 0);
        // Opening minute 3 learned the window total at the end of minute 0.
        assert_eq!(volume.usual.samples, 1);
        assert_eq!(volume.usual.mean, 100.0);
    }

    #[test]
    fn volume_does_not_learn_an_excess() {
        let mut volume = VolumeSeries::default();
        volume.add(at_minute(0, 1), 1_000_000, 10, 1000.0);
        volume.add(at_minute(1, 1), 10, 10, 1000.0);
        assert_eq!(volume.usual.samples, 0);
    }
}
