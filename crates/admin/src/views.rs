//! Page templates (askama) and their view models, built from the desk's
//! records. Templates escape every value as HTML.

use askama::Template;
use stepgate_audit::Entry;
use stepgate_core::{SignalKind, Timestamp};
use stepgate_store::{ApprovalRecord, ApprovalState, Vote};

/// Parts of every page: its title, the signed-in approver and the static
/// files' version.
pub(crate) struct Layout {
    pub(crate) title: String,
    /// Name of the signed-in approver; None on the sign-in page.
    pub(crate) approver: Option<String>,
    /// The session's CSRF token, for the sign-out form.
    pub(crate) csrf: String,
    pub(crate) version: &'static str,
}

impl Layout {
    pub(crate) fn new(title: impl Into<String>, approver: Option<String>, csrf: &str) -> Self {
        Self {
            title: title.into(),
            approver,
            csrf: csrf.to_owned(),
            version: crate::assets::VERSION.as_str(),
        }
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(crate) struct SignInPage {
    pub(crate) layout: Layout,
    pub(crate) csrf: String,
    pub(crate) name: String,
    pub(crate) error: Option<String>,
}

#[derive(Template)]
#[template(path = "queue.html")]
pub(crate) struct QueuePage {
    pub(crate) layout: Layout,
    pub(crate) pending: Vec<ApprovalView>,
    pub(crate) decided: Vec<ApprovalView>,
}

#[derive(Template)]
#[template(path = "approval.html")]
pub(crate) struct ApprovalPage {
    pub(crate) layout: Layout,
    pub(crate) approval: ApprovalView,
    pub(crate) owners: Vec<String>,
    pub(crate) history: Vec<HistoryRow>,
    pub(crate) csrf: String,
    /// True when the config requires a TOTP code on every decision.
    pub(crate) code_required: bool,
    /// True when the signed-in approver owns the requesting identity, so
    /// the desk will reject their decision.
    pub(crate) viewer_is_owner: bool,
    /// The signed-in approver's own vote, when they decided already.
    pub(crate) viewer_vote: Option<VoteView>,
    /// Reason the last decision was not recorded.
    pub(crate) error: Option<String>,
    /// The comment the approver typed, kept after an error.
    pub(crate) comment: String,
}

#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct MessagePage {
    pub(crate) layout: Layout,
    pub(crate) heading: String,
    pub(crate) message: String,
}

/// Severity band of a risk score, for colour and words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub(crate) fn of(score: u8) -> Self {
        match score {
            0..=24 => RiskLevel::Low,
            25..=49 => RiskLevel::Medium,
            50..=74 => RiskLevel::High,
            _ => RiskLevel::Critical,
        }
    }

    /// CSS class suffix.
    pub(crate) fn class(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            RiskLevel::Low => "Low risk",
            RiskLevel::Medium => "Medium risk",
            RiskLevel::High => "High risk",
            RiskLevel::Critical => "Critical risk",
        }
    }
}

/// One reason a request needs a person, as a short label and its detail.
pub(crate) struct Reason {
    pub(crate) label: String,
    pub(crate) detail: String,
}

/// An approval request as the pages show it.
pub(crate) struct ApprovalView {
    pub(crate) id: String,
    pub(crate) identity: String,
    pub(crate) method: String,
    /// The host the request named, which routes it.
    pub(crate) host: String,
    pub(crate) target: String,
    /// The start of a text body, for the approver to read.
    pub(crate) body_preview: Option<String>,
    pub(crate) risk: u8,
    pub(crate) risk_class: &'static str,
    pub(crate) risk_label: &'static str,
    pub(crate) reasons: Vec<Reason>,
    /// True while it waits for a decision and has not expired.
    pub(crate) open: bool,
    /// CSS class suffix of the state: pending, approved, denied, expired
    /// or used.
    pub(crate) state: &'static str,
    pub(crate) state_label: String,
    /// Time left to decide, or what became of the request.
    pub(crate) time_left: String,
    /// `urgent` under a minute left, `soon` under five, else `ok`.
    pub(crate) urgency: &'static str,
    pub(crate) requested_at: String,
    pub(crate) requested_ago: String,
    pub(crate) expires_at: String,
    pub(crate) decided: String,
    pub(crate) approvals: usize,
    pub(crate) quorum: u32,
    pub(crate) group: String,
    pub(crate) zone: String,
    pub(crate) action: String,
    pub(crate) client_addr: String,
    pub(crate) body: String,
    pub(crate) policies: String,
    pub(crate) votes: Vec<VoteView>,
}

/// One approver's decision.
pub(crate) struct VoteView {
    pub(crate) approver: String,
    pub(crate) approve: bool,
    pub(crate) comment: String,
    pub(crate) at: String,
    pub(crate) via: String,
}

/// One audit record of the requesting identity.
pub(crate) struct HistoryRow {
    pub(crate) time: String,
    pub(crate) event: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) decision: String,
    pub(crate) risk: String,
}

impl ApprovalView {
    pub(crate) fn new(record: &ApprovalRecord, now: Timestamp) -> Self {
        let level = RiskLevel::of(record.risk);
        let expired = record.state == ApprovalState::Expired
            || (record.state == ApprovalState::Pending && record.expires_at <= now);
        let open = record.state == ApprovalState::Pending && !expired;
        let left = record.expires_at.since(now);
        let (state, state_label, time_left) = if open {
            (
                "pending",
                "Waiting for a decision".to_owned(),
                format!("{} left to decide", duration_text(left.as_secs())),
            )
        } else if expired {
            (
                "expired",
                "Expired without a decision".to_owned(),
                format!(
                    "Expired {} ago",
                    duration_text(now.since(record.expires_at).as_secs())
                ),
            )
        } else {
            let deciders = deciders(&record.votes, record.state == ApprovalState::Denied);
            match record.state {
                ApprovalState::Denied => (
                    "denied",
                    format!("Denied by {deciders}"),
                    "Denied".to_owned(),
                ),
                ApprovalState::Used => (
                    "used",
                    format!("Approved by {deciders} and used"),
                    "Approved and used".to_owned(),
                ),
                _ => (
                    "approved",
                    format!("Approved by {deciders}"),
                    match record.valid_until {
                        Some(until) if until > now => format!(
                            "Approved: the client may repeat the request within {}",
                            duration_text(until.since(now).as_secs())
                        ),
                        _ => "Approved".to_owned(),
                    },
                ),
            }
        };
        let urgency = match left.as_secs() {
            _ if !open => "ok",
            0..60 => "urgent",
            60..300 => "soon",
            _ => "ok",
        };
        let decided_at = record
            .decided_at
            .or_else(|| expired.then_some(record.expires_at));
        Self {
            id: record.id.clone(),
            identity: record.identity.to_string(),
            method: record.method.clone(),
            host: record.host.clone(),
            target: record.target.clone(),
            body_preview: record.body_preview.clone(),
            risk: record.risk,
            risk_class: level.class(),
            risk_label: level.label(),
            reasons: reasons(record),
            open,
            state,
            state_label,
            time_left,
            urgency,
            requested_at: clock_text(record.created_at),
            requested_ago: format!(
                "{} ago",
                duration_text(now.since(record.created_at).as_secs())
            ),
            expires_at: clock_text(record.expires_at),
            decided: decided_at
                .map(|at| format!("{} ago", duration_text(now.since(at).as_secs())))
                .unwrap_or_default(),
            approvals: record.approvals(),
            quorum: record.quorum,
            group: record.group.clone(),
            zone: record.zone.clone().unwrap_or_else(|| "none".to_owned()),
            action: record.action.clone(),
            client_addr: record.client_addr.clone(),
            body: match &record.body_sha256 {
                Some(digest) => format!("{} bytes, SHA-256 {digest}", record.body_bytes),
                None => "none".to_owned(),
            },
            policies: if record.policies.is_empty() {
                "none".to_owned()
            } else {
                record.policies.join(", ")
            },
            votes: record.votes.iter().map(VoteView::new).collect(),
        }
    }
}

impl VoteView {
    pub(crate) fn new(vote: &Vote) -> Self {
        Self {
            approver: vote.approver.to_string(),
            approve: vote.approve,
            comment: vote.comment.clone(),
            at: clock_text(vote.at),
            via: vote.via.clone(),
        }
    }
}

impl HistoryRow {
    pub(crate) fn new(entry: &Entry) -> Self {
        let dash = || "–".to_owned();
        Self {
            time: Timestamp::parse_rfc3339(&entry.time)
                .map(clock_text)
                .unwrap_or_else(|| entry.time.clone()),
            event: entry
                .event
                .map(|event| event.as_str().replace('_', " "))
                .unwrap_or_else(dash),
            method: entry.method.clone().unwrap_or_else(dash),
            path: entry.path.clone().unwrap_or_else(dash),
            decision: entry
                .decision
                .as_deref()
                .map(|decision| decision.replace('_', " "))
                .unwrap_or_else(dash),
            risk: entry.risk.map(|risk| risk.to_string()).unwrap_or_else(dash),
        }
    }
}

/// Lists the approvers who decided, for "Approved by alice and bob".
fn deciders(votes: &[Vote], denied: bool) -> String {
    let names: Vec<&str> = votes
        .iter()
        .filter(|vote| vote.approve != denied)
        .map(|vote| vote.approver.as_str())
        .collect();
    match names.as_slice() {
        [] => "nobody".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Describes the signals of a request in plain words. The desk stores each as
/// `kind: description`. A request without signals needed approval only
/// because of its zone or policy, which the only reason then states.
fn reasons(record: &ApprovalRecord) -> Vec<Reason> {
    if record.reasons.is_empty() {
        let place = match &record.zone {
            Some(zone) => format!("in zone {zone}"),
            None => "here".to_owned(),
        };
        return vec![Reason {
            label: "Approval rule".to_owned(),
            detail: format!(
                "nothing unusual was seen, but every {} request {place} needs a person's approval",
                record.action
            ),
        }];
    }
    record
        .reasons
        .iter()
        .map(|reason| match reason.split_once(": ") {
            Some((kind, detail)) => Reason {
                label: signal_label(kind),
                detail: detail.to_owned(),
            },
            None => Reason {
                label: "Signal".to_owned(),
                detail: reason.clone(),
            },
        })
        .collect()
}

/// Returns a short label for a signal kind, in the words an on-call person
/// uses.
fn signal_label(kind: &str) -> String {
    // The engine puts the rule that asked for the approval first.
    match kind {
        "zone_approval" => return "Approval rule".to_owned(),
        "policy" => return "Policy".to_owned(),
        _ => {}
    }
    let Some(kind) = SignalKind::from_name(kind) else {
        return kind.replace('_', " ");
    };
    match kind {
        SignalKind::NewNetwork => "New network",
        SignalKind::NewAsn => "New network provider",
        SignalKind::NewCountry => "New country",
        SignalKind::AnonymizerNetwork => "Hosting or anonymising network",
        SignalKind::ImpossibleTravel => "Impossible travel",
        SignalKind::ConcurrentSessions => "Used from two places at once",
        SignalKind::UnusualHour => "Unusual hour",
        SignalKind::Dormant => "Dormant identity is active again",
        SignalKind::RequestBurst => "Burst of requests",
        SignalKind::NewOperation => "Operation never used before",
        SignalKind::RareOperation => "Rare operation",
        SignalKind::NewResource => "Resource never touched before",
        SignalKind::PermissionChange => "Changes permissions",
        SignalKind::CredentialCreation => "Creates credentials",
        SignalKind::LoggingChange => "Changes logging or detection",
        SignalKind::SecretRead => "Reads secrets",
        SignalKind::DataVolume => "Unusual data volume",
        SignalKind::NewClient => "New client software",
        SignalKind::ClientVersion => "New client version",
        SignalKind::ReadOnlyZoneWrite => "Write to a read-only zone",
        SignalKind::SensitiveZone => "Sensitive zone",
        SignalKind::FailureBurst => "Burst of failures",
        SignalKind::TotpFailure => "Failed TOTP codes",
    }
    .to_owned()
}

/// Formats a time as `2026-05-01 14:02:11 UTC`.
pub(crate) fn clock_text(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    match (text.get(..10), text.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text,
    }
}

/// Formats a duration in whole seconds for people: `45 s`, `12 min 5 s`,
/// `2 h 3 min`, `3 days`.
pub(crate) fn duration_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..600 => format!("{} min {} s", secs / 60, secs % 60),
        600..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_text_rounds_for_people() {
        assert_eq!(duration_text(0), "0 s");
        assert_eq!(duration_text(59), "59 s");
        assert_eq!(duration_text(125), "2 min 5 s");
        assert_eq!(duration_text(900), "15 min");
        assert_eq!(duration_text(7380), "2 h 3 min");
        assert_eq!(duration_text(3 * 86_400 + 5), "3 days");
    }

    #[test]
    fn risk_levels_cover_the_scale() {
        assert_eq!(RiskLevel::of(0), RiskLevel::Low);
        assert_eq!(RiskLevel::of(24), RiskLevel::Low);
        assert_eq!(RiskLevel::of(25), RiskLevel::Medium);
        assert_eq!(RiskLevel::of(50), RiskLevel::High);
        assert_eq!(RiskLevel::of(75), RiskLevel::Critical);
        assert_eq!(RiskLevel::of(100), RiskLevel::Critical);
    }

    #[test]
    fn signal_labels_cover_every_kind() {
        for kind in SignalKind::ALL {
            assert_ne!(signal_label(kind.name()), kind.name().replace('_', " "));
        }
        assert_eq!(signal_label("brand_new"), "brand new");
    }

    #[test]
    fn clock_text_is_utc() {
        assert_eq!(
            clock_text(Timestamp::from_secs(1_700_000_000)),
            "2023-11-14 22:13:20 UTC"
        );
    }
}
