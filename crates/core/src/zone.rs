//! Zones: named path prefixes with rules that apply whatever the baseline
//! contains.

use serde::{Deserialize, Serialize};

use crate::request::Action;

/// A named part of the upstream's path space.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Name used in policies, audit records and reasons.
    pub name: String,
    /// Path prefix, matched on segment boundaries: `/reports` covers
    /// `/reports` and `/reports/daily` but not `/reportsx`.
    pub prefix: String,
    /// Any request other than a read is a risk signal.
    #[serde(default)]
    pub read_only: bool,
    /// Every request is a risk signal.
    #[serde(default)]
    pub sensitive: bool,
    /// Writes and deletes count as the `admin` action.
    #[serde(default)]
    pub admin: bool,
    /// Actions that need a person's approval of the exact operation, such
    /// as `["write", "delete"]`, whatever the risk.
    #[serde(default)]
    pub approval_for: Vec<Action>,
    /// Approver group asked for approvals in this zone; the default group
    /// when unset.
    #[serde(default)]
    pub approval_group: Option<String>,
    /// Approvals needed from distinct approvers; the group's quorum when
    /// unset.
    #[serde(default)]
    pub approval_quorum: Option<u32>,
}

impl Zone {
    /// True when the zone covers `path`, ignoring ASCII case: an upstream
    /// that matches paths without regard to case must not see `/Reports`
    /// escape the rules of `/reports`.
    pub fn needs_approval(&self, action: Action) -> bool {
        self.approval_for.contains(&action)
    }

    pub fn covers(&self, path: &str) -> bool {
        prefix_covers(
            &self.prefix.to_ascii_lowercase(),
            &path.to_ascii_lowercase(),
        )
    }
}

/// True when `prefix` covers `path` on a segment boundary.
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// All configured zones; the longest covering prefix wins.
#[derive(Clone, Debug, Default)]
pub struct Zones(Vec<Zone>);

impl Zones {
    pub fn new(mut zones: Vec<Zone>) -> Self {
        zones.sort_by_key(|zone| std::cmp::Reverse(zone.prefix.trim_end_matches('/').len()));
        Self(zones)
    }

    pub fn find(&self, path: &str) -> Option<&Zone> {
        self.0.iter().find(|zone| zone.covers(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, prefix: &str) -> Zone {
        Zone {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            read_only: false,
            sensitive: false,
            admin: false,
            approval_for: Vec::new(),
            approval_group: None,
            approval_quorum: None,
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundary() {
        assert!(prefix_covers("/reports", "/reports"));
        assert!(prefix_covers("/reports", "/reports/daily"));
        assert!(prefix_covers("/reports/", "/reports/daily"));
        assert!(!prefix_covers("/reports", "/reportsx"));
        assert!(prefix_covers("/", "/anything"));
    }

    #[test]
    fn longest_zone_wins() {
        let zones = Zones::new(vec![
            zone("all", "/"),
            zone("admin", "/admin/keys"),
            zone("a", "/admin"),
        ]);
        assert_eq!(zones.find("/admin/keys/1").unwrap().name, "admin");
        assert_eq!(zones.find("/admin/x").unwrap().name, "a");
        assert_eq!(zones.find("/other").unwrap().name, "all");
        assert_eq!(zones.find("/ADMIN/Keys/1").unwrap().name, "admin");
    }
}
