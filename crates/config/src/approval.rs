//! The `[approval]` table: how long approvals stay open, how long a client
//! may hold a request, and the approver groups with their quorums, time
//! windows and webhooks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Name of the group asked when neither a zone nor a policy names one.
pub const DEFAULT_GROUP: &str = "approvers";

/// The `[approval]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Seconds an approval request stays pending before it expires.
    /// Default 900.
    pub ttl_secs: u64,
    /// Seconds a granted approval can be used. Default 300.
    pub valid_secs: u64,
    /// Maximum hold a client can request with `Prefer: wait=N`, in seconds.
    /// Default 300.
    pub max_wait_secs: u64,
    /// An approval lets its operation through once. When false, the same
    /// operation passes again until `valid_secs` after the approval.
    /// Default true.
    pub single_use: bool,
    /// Ask approvers for a fresh TOTP code on every decision, not only at
    /// sign-in. The CLI always requires one. Default false.
    pub totp_on_decision: bool,
    /// Largest request body an approval can cover, in bytes; the gateway
    /// reads it whole to digest it. Default 1048576.
    pub max_body_bytes: usize,
    /// Most requests held open at once; more get the approval id at once
    /// instead of waiting. Default 256.
    pub max_held: usize,
    /// Group asked when neither the zone nor the policy names one.
    pub default_group: String,
    /// Base URL of the approvals page, such as `https://stepgate.example.com`,
    /// for links in notifications. Default: the admin listener's address.
    pub page_url: Option<String>,
    /// Seconds a sign-in to the approvals page lasts. Default 3600.
    pub session_secs: u64,
    /// Attempts per webhook notification, the first included. Default 5.
    pub webhook_attempts: u32,
    /// PEM bundle of CA certificates for https webhooks; the system bundle
    /// when unset.
    pub webhook_ca_file: Option<PathBuf>,
    /// Approver groups. A group that is not listed has a quorum of 1, no
    /// time window and no webhook.
    pub groups: Vec<ApproverGroupConfig>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 900,
            valid_secs: 300,
            max_wait_secs: 300,
            single_use: true,
            totp_on_decision: false,
            max_body_bytes: 1 << 20,
            max_held: 256,
            default_group: DEFAULT_GROUP.to_owned(),
            page_url: None,
            session_secs: 3600,
            webhook_attempts: 5,
            webhook_ca_file: None,
            groups: Vec::new(),
        }
    }
}

impl ApprovalConfig {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }

    pub fn valid_for(&self) -> Duration {
        Duration::from_secs(self.valid_secs)
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.max_wait_secs)
    }

    /// Returns the settings of `group`, or the defaults of an unlisted group.
    pub fn group(&self, name: &str) -> ApproverGroupConfig {
        self.groups
            .iter()
            .find(|group| group.name == name)
            .cloned()
            .unwrap_or_else(|| ApproverGroupConfig {
                name: name.to_owned(),
                ..ApproverGroupConfig::default()
            })
    }

    /// Checks every key; returns the key, value and reason of the first bad one.
    pub(crate) fn validate(&mut self) -> Result<(), (String, String, String)> {
        let bad = |key: &str, value: String, reason: &str| {
            Err((format!("approval.{key}"), value, reason.to_owned()))
        };
        const DAY: u64 = 86_400;
        for (key, value) in [
            ("ttl_secs", self.ttl_secs),
            ("valid_secs", self.valid_secs),
            ("max_wait_secs", self.max_wait_secs),
            ("session_secs", self.session_secs),
        ] {
            if value == 0 || value > DAY {
                return bad(
                    key,
                    value.to_string(),
                    "must be between 1 and 86400 seconds",
                );
            }
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 64 << 20 {
            return bad(
                "max_body_bytes",
                self.max_body_bytes.to_string(),
                "must be between 1 and 67108864 bytes",
            );
        }
        if self.max_held == 0 {
            return bad("max_held", "0".into(), "must be at least 1");
        }
        if self.webhook_attempts == 0 || self.webhook_attempts > 20 {
            return bad(
                "webhook_attempts",
                self.webhook_attempts.to_string(),
                "must be between 1 and 20",
            );
        }
        if !is_group_name(&self.default_group) {
            return bad(
                "default_group",
                self.default_group.clone(),
                "use ASCII letters, digits, '-' and '_'",
            );
        }
        if let Some(url) = &self.page_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad(
                "page_url",
                url.clone(),
                "expected an http:// or https:// URL, such as https://stepgate.example.com",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, group) in self.groups.iter_mut().enumerate() {
            let key = |name: &str| format!("groups[{i}].{name}");
            if !is_group_name(&group.name) {
                return bad(
                    &key("name"),
                    group.name.clone(),
                    "use ASCII letters, digits, '-' and '_'",
                );
            }
            if !seen.insert(group.name.clone()) {
                return bad(
                    &key("name"),
                    group.name.clone(),
                    "another group has this name",
                );
            }
            if group.quorum == 0 || group.quorum > 10 {
                return bad(
                    &key("quorum"),
                    group.quorum.to_string(),
                    "must be between 1 and 10",
                );
            }
            if let Some(url) = &group.webhook_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return bad(
                        &key("webhook_url"),
                        redact_query(url),
                        "expected an http:// or https:// URL",
                    );
                }
                if group.webhook_secret_file.is_none() {
                    return bad(
                        &key("webhook_secret_file"),
                        String::new(),
                        "is missing; webhooks are signed, so give the file that holds the HMAC key",
                    );
                }
            }
            if let Some(hours) = &group.hours {
                match parse_hours(hours) {
                    Some(window) => group.window = Some(window),
                    None => {
                        return bad(
                            &key("hours"),
                            hours.clone(),
                            "expected HH:MM-HH:MM in UTC, such as 08:00-18:00 (22:00-06:00 spans midnight)",
                        );
                    }
                }
            }
            let mut days = 0u8;
            for day in &group.days {
                match DAYS.iter().position(|name| name.eq_ignore_ascii_case(day)) {
                    Some(index) => days |= 1 << index,
                    None => {
                        return bad(
                            &key("days"),
                            day.clone(),
                            "expected mon, tue, wed, thu, fri, sat or sun",
                        );
                    }
                }
            }
            group.day_mask = if days == 0 { 0x7f } else { days };
        }
        Ok(())
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One `[[approval.groups]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApproverGroupConfig {
    pub name: String,
    /// Approvals from distinct members needed. Default 1.
    pub quorum: u32,
    /// URL that receives a signed JSON notification for each approval
    /// request of this group.
    pub webhook_url: Option<String>,
    /// File holding the HMAC-SHA256 key that signs the webhook's requests.
    pub webhook_secret_file: Option<PathBuf>,
    /// Time of day, in UTC, when members may decide, such as `08:00-18:00`.
    pub hours: Option<String>,
    /// Days, in UTC, when members may decide, such as `["mon", "fri"]`.
    /// Every day when empty.
    pub days: Vec<String>,
    /// `hours` parsed: minutes after midnight, start inclusive, end exclusive.
    #[serde(skip)]
    pub window: Option<(u16, u16)>,
    /// `days` parsed: bit 0 Monday to bit 6 Sunday.
    #[serde(skip)]
    pub day_mask: u8,
}

impl Default for ApproverGroupConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            quorum: 1,
            webhook_url: None,
            webhook_secret_file: None,
            hours: None,
            days: Vec::new(),
            window: None,
            day_mask: 0x7f,
        }
    }
}

impl ApproverGroupConfig {
    /// True when members may decide at `unix_secs`.
    pub fn is_open_at(&self, unix_secs: u64) -> bool {
        // 1970-01-01 was a Thursday, day 3 counted from Monday.
        let day = ((unix_secs / 86_400 + 3) % 7) as u8;
        if self.day_mask & (1 << day) == 0 {
            return false;
        }
        let Some((start, end)) = self.window else {
            return true;
        };
        let minute = ((unix_secs % 86_400) / 60) as u16;
        if start <= end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        }
    }

    /// Describes when members may decide, for messages.
    pub fn window_text(&self) -> String {
        let days = if self.day_mask == 0x7f {
            "every day".to_owned()
        } else {
            DAYS.iter()
                .enumerate()
                .filter(|(index, _)| self.day_mask & (1 << index) != 0)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.hours {
            Some(hours) => format!("{days}, {hours} UTC"),
            None => days,
        }
    }
}

/// True for a valid approver group name: 1 to 64 ASCII letters, digits,
/// `-` and `_`.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_hours(text: &str) -> Option<(u16, u16)> {
    let (start, end) = text.split_once('-')?;
    let minute = |part: &str| -> Option<u16> {
        let (hours, minutes) = part.trim().split_once(':')?;
        if hours.len() != 2 || minutes.len() != 2 {
            return None;
        }
        let hours: u16 = hours.parse().ok()?;
        let minutes: u16 = minutes.parse().ok()?;
        (hours <= 24 && minutes < 60 && hours * 60 + minutes <= 1440)
            .then_some(hours * 60 + minutes)
    };
    let (start, end) = (minute(start)?, minute(end)?);
    (start != end).then_some((start, end))
}

/// Drops the query of a URL for messages, since it may carry a token.
pub fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?REDACTED"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(hours: Option<&str>, days: &[&str]) -> ApproverGroupConfig {
        let mut config = ApprovalConfig {
            groups: vec![ApproverGroupConfig {
                name: "oncall".into(),
                hours: hours.map(str::to_owned),
                days: days.iter().map(|day| (*day).to_owned()).collect(),
                ..ApproverGroupConfig::default()
            }],
            ..ApprovalConfig::default()
        };
        config.validate().unwrap();
        config.group("oncall")
    }

    // 2026-12-07 is a Monday.
    const MONDAY: u64 = 1_796_601_600;

    #[test]
    fn window_covers_office_hours() {
        let group = group(Some("08:00-18:00"), &["mon", "tue", "wed", "thu", "fri"]);
        assert!(group.is_open_at(MONDAY + 8 * 3600));
        assert!(group.is_open_at(MONDAY + 18 * 3600 - 1));
        assert!(!group.is_open_at(MONDAY + 18 * 3600));
        assert!(!group.is_open_at(MONDAY + 8 * 3600 - 1));
        // Saturday 10:00.
        assert!(!group.is_open_at(MONDAY + 5 * 86_400 + 10 * 3600));
        assert_eq!(
            group.window_text(),
            "mon, tue, wed, thu, fri, 08:00-18:00 UTC"
        );
    }

    #[test]
    fn window_spans_midnight() {
        let group = group(Some("22:00-06:00"), &[]);
        assert!(group.is_open_at(MONDAY + 23 * 3600));
        assert!(group.is_open_at(MONDAY + 3600));
        assert!(!group.is_open_at(MONDAY + 12 * 3600));
    }

    #[test]
    fn unlisted_group_is_always_open() {
        let config = ApprovalConfig::default();
        let group = config.group("anyone");
        assert_eq!(group.quorum, 1);
        assert!(group.is_open_at(MONDAY + 3 * 3600));
    }

    #[test]
    fn bad_hours_and_days_are_rejected() {
        for hours in ["8-18", "08:00", "25:00-26:00", "08:00-08:00", "08:60-09:00"] {
            let mut config = ApprovalConfig {
                groups: vec![ApproverGroupConfig {
                    name: "g".into(),
                    hours: Some(hours.into()),
                    ..ApproverGroupConfig::default()
                }],
                ..ApprovalConfig::default()
            };
            let err = config.validate().unwrap_err();
            assert_eq!(err.0, "approval.groups[0].hours", "{hours}");
        }
        let mut config = ApprovalConfig {
            groups: vec![ApproverGroupConfig {
                name: "g".into(),
                days: vec!["monday".into()],
                ..ApproverGroupConfig::default()
            }],
            ..ApprovalConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().0, "approval.groups[0].days");
    }

    #[test]
    fn webhook_needs_secret() {
        let mut config = ApprovalConfig {
            groups: vec![ApproverGroupConfig {
                name: "g".into(),
                webhook_url: Some("https://hooks.example/x?token=abc".into()),
                ..ApproverGroupConfig::default()
            }],
            ..ApprovalConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.0, "approval.groups[0].webhook_secret_file");
    }
}
