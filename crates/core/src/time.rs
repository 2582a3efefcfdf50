//! Time as the decision core sees it: Unix milliseconds from a [`Clock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time as milliseconds since the Unix epoch, UTC.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Builds a timestamp from whole seconds since the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Whole seconds since the epoch, rounded down.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Hour of the day in UTC, 0 to 23.
    pub const fn hour_of_day(self) -> u8 {
        (self.as_secs().rem_euclid(86_400) / 3600) as u8
    }

    /// Hour of the week in UTC, 0 to 167, counting from Monday 00:00.
    pub const fn hour_of_week(self) -> u8 {
        // 1970-01-01 was a Thursday, three days after a Monday.
        let hours = self.as_secs().div_euclid(3600) + 72;
        hours.rem_euclid(168) as u8
    }

    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// Time elapsed from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let millis = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(millis.unsigned_abs())
    }

    /// RFC 3339 rendering in UTC with millisecond precision.
    pub fn to_rfc3339(self) -> String {
        let secs = self.as_secs();
        let millis = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

impl Timestamp {
    /// Parses an RFC 3339 date-time such as `2022-07-20T20:53:54Z` or
    /// `2022-07-20T22:53:54.250+02:00`. Fractions beyond milliseconds are
    /// dropped.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let bytes = text.as_bytes();
        if bytes.len() < 20 || !text.is_ascii() {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let separators_ok = bytes[4] == b'-'
            && bytes[7] == b'-'
            && matches!(bytes[10], b'T' | b't' | b' ')
            && bytes[13] == b':'
            && bytes[16] == b':';
        if !separators_ok {
            return None;
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut rest = &text[19..];
        let mut millis = 0;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let mut scaled = 0;
            for position in 0..3 {
                let digit = fraction
                    .as_bytes()
                    .get(position)
                    .filter(|_| position < digits);
                scaled = scaled * 10 + digit.map_or(0, |digit| i64::from(digit - b'0'));
            }
            millis = scaled;
            rest = &fraction[digits..];
        }
        let offset_secs = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first() {
                    Some(b'+') => 1,
                    Some(b'-') => -1,
                    _ => return None,
                };
                if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                    return None;
                }
                let digits = |part: &str| -> Option<i64> {
                    if part.bytes().all(|b| b.is_ascii_digit()) {
                        part.parse().ok()
                    } else {
                        None
                    }
                };
                let hours = digits(rest.get(1..3)?)?;
                let minutes = digits(rest.get(4..6)?)?;
                if hours > 23 || minutes > 59 {
                    return None;
                }
                sign * (hours * 3600 + minutes * 60)
            }
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
        Some(Timestamp(secs * 1000 + millis))
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Converts a proleptic Gregorian date to days since 1970-01-01, the inverse
/// of [`civil_from_days`], after the same public-domain algorithm.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// after Howard Hinnant's public-domain `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The source of the current time for every decision.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when set or advanced, for tests and for replay.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn set(&self, at: Timestamp) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_renders_known_instants() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            Timestamp::from_secs(951_782_400).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn rfc3339_parses_what_it_renders_and_offsets() {
        for millis in [
            0,
            1_700_000_000_123,
            951_782_400_000,
            -86_400_000,
            4_102_444_799_999,
        ] {
            let text = Timestamp(millis).to_rfc3339();
            assert_eq!(
                Timestamp::parse_rfc3339(&text),
                Some(Timestamp(millis)),
                "{text}"
            );
        }
        let utc = Timestamp::parse_rfc3339("2022-07-20T20:53:54Z").unwrap();
        assert_eq!(utc, Timestamp::from_secs(1_658_350_434));
        assert_eq!(
            Timestamp::parse_rfc3339("2022-07-20T22:53:54+02:00"),
            Some(utc)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2022-07-20T20:53:54.5Z"),
            Some(Timestamp(utc.0 + 500))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2022-07-20T20:53:54.123456789Z"),
            Some(Timestamp(utc.0 + 123))
        );
    }

    #[test]
    fn rfc3339_rejects_malformed_dates() {
        for text in [
            "",
            "2022-07-20",
            "2022-07-20T20:53:54",
            "2022-13-20T20:53:54Z",
            "2023-02-29T00:00:00Z",
            "2022-07-20T24:00:00Z",
            "2022-07-20T20:53:54.Z",
            "2022-07-20T20:53:54+0200",
            "2022-07-20T20:53:54+-1:00",
            "2022-07-20T20:53:54+01:-0",
            "2022/07/20T20:53:54Z",
            "2022-07-20T20:53:54Zjunk",
            "２０２2-07-20T20:53:54Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(text), None, "{text}");
        }
    }

    #[test]
    fn hour_of_week_starts_monday() {
        // 1970-01-05 was a Monday.
        assert_eq!(Timestamp::from_secs(4 * 86_400).hour_of_week(), 0);
        assert_eq!(Timestamp::from_secs(0).hour_of_week(), 72);
        assert_eq!(
            Timestamp::from_secs(4 * 86_400 + 3600 * 25).hour_of_week(),
            25
        );
    }

    #[test]
    fn manual_clock_advances() {
        let clock = ManualClock::new(Timestamp::from_secs(10));
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), Timestamp::from_secs(15));
    }
}
