//! The JSON body of a notification.
//!
//! One body serves three kinds of receiver. Slack incoming webhooks show
//! `blocks` and use `text` for the push notification. Teams incoming
//! webhooks (Office 365 connectors) show only `text`, so `text` is a
//! complete summary on its own. Other receivers read the `stepgate` object.
//!
//! NOTE: Teams webhooks made with the Workflows app, which Microsoft offers
//! in place of the retiring Office 365 connectors, accept only Adaptive
//! Cards (Microsoft Learn, "Create and send messages", known issues). This
//! body has no Adaptive Card, so such a webhook needs a workflow that
//! builds one from `text` or the `stepgate` fields.
//!
//! Every value in `text` and `blocks` is escaped for Slack mrkdwn (`&`, `<`
//! and `>`), so a crafted path cannot form a link or a mention such as
//! `<!channel>`. Values that come from a request are also shown inside code
//! spans, where neither Slack nor Teams turns a bare URL or a Markdown link
//! into a link.

use serde::Serialize;
use serde_json::{Value, json};

/// Maximum number of characters kept of each text value (identity, target,
/// a reason, group, an approver, the approval id, the timestamps). Longer
/// values are cut and end in `…`.
pub const MAX_VALUE_CHARS: usize = 256;
/// Maximum number of characters kept of the method.
pub const MAX_METHOD_CHARS: usize = 32;
/// Maximum number of reasons in the body. The `stepgate` object counts the
/// rest in `reasons_omitted`.
pub const MAX_REASONS: usize = 10;
/// Maximum number of approvers in the body. The `stepgate` object counts
/// the rest in `decided_by_omitted`.
pub const MAX_DECIDED_BY: usize = 10;
/// Maximum length of the approval page link. A longer link is left out of
/// the body, because a cut URL would lead elsewhere.
pub const MAX_LINK_CHARS: usize = 2000;

/// Slack rejects a section text over 3000 characters and a section field
/// over 2000, so the lists in them stop below these budgets.
const SLACK_SECTION_BUDGET: usize = 2900;
const SLACK_FIELD_BUDGET: usize = 1900;
/// Budget for each list (reasons, approvers) in the top-level `text`,
/// which should stay short enough to read in a push notification.
const TEXT_LIST_BUDGET: usize = 1000;

/// Label of the only button: it opens the approval page.
const REVIEW_LABEL: &str = "Review in stepgate";

/// Event of an approval that a notification reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NotificationKind {
    /// A request is held until the group approves it.
    #[serde(rename = "approval.requested")]
    Requested,
    #[serde(rename = "approval.approved")]
    Approved,
    #[serde(rename = "approval.denied")]
    Denied,
    /// No decision came before the approval expired.
    #[serde(rename = "approval.expired")]
    Expired,
}

impl NotificationKind {
    /// Event name in the `stepgate` object, such as `approval.requested`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "approval.requested",
            Self::Approved => "approval.approved",
            Self::Denied => "approval.denied",
            Self::Expired => "approval.expired",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Requested => "Approval requested",
            Self::Approved => "Request approved",
            Self::Denied => "Request denied",
            Self::Expired => "Approval expired",
        }
    }
}

/// An approval event for one approver group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    /// Approval id, such as `ap_...`.
    pub approval_id: String,
    /// Bot or service identity that made the request.
    pub identity: String,
    /// HTTP method of the held request, such as `DELETE`.
    pub method: String,
    /// Path of the held request, such as `/orders/42`.
    pub target: String,
    /// Risk score, 0 to 100.
    pub risk: u8,
    /// Risk signal descriptions, such as `new_network: 10.0.0.0/24`.
    pub reasons: Vec<String>,
    /// RFC 3339 UTC time of the request.
    pub requested_at: String,
    /// RFC 3339 UTC time after which the approval expires.
    pub expires_at: String,
    pub group: String,
    /// Number of approvals the group must give.
    pub quorum: u32,
    /// Approvers who decided so far, for `Approved` and `Denied`.
    pub decided_by: Vec<String>,
    /// URL of the approval page for this approval.
    pub link: String,
}

/// The notification with every cap applied. Its serialized form is the
/// `stepgate` object for machine receivers.
#[derive(Serialize)]
struct Capped<'a> {
    #[serde(rename = "event")]
    kind: NotificationKind,
    approval_id: String,
    identity: String,
    method: String,
    target: String,
    risk: u8,
    reasons: Vec<String>,
    reasons_omitted: usize,
    requested_at: String,
    expires_at: String,
    group: String,
    quorum: u32,
    decided_by: Vec<String>,
    decided_by_omitted: usize,
    /// Empty when the link is missing or longer than [`MAX_LINK_CHARS`].
    link: &'a str,
}

impl<'a> Capped<'a> {
    fn new(notification: &'a Notification) -> Self {
        let capped_list = |values: &[String], max: usize| -> (Vec<String>, usize) {
            let kept = values
                .iter()
                .take(max)
                .map(|value| cap(value, MAX_VALUE_CHARS))
                .collect();
            (kept, values.len().saturating_sub(max))
        };
        let (reasons, reasons_omitted) = capped_list(&notification.reasons, MAX_REASONS);
        let (decided_by, decided_by_omitted) =
            capped_list(&notification.decided_by, MAX_DECIDED_BY);
        let link = if notification.link.chars().count() <= MAX_LINK_CHARS {
            notification.link.as_str()
        } else {
            ""
        };
        Self {
            kind: notification.kind,
            approval_id: cap(&notification.approval_id, MAX_VALUE_CHARS),
            identity: cap(&notification.identity, MAX_VALUE_CHARS),
            method: cap(&notification.method, MAX_METHOD_CHARS),
            target: cap(&notification.target, MAX_VALUE_CHARS),
            risk: notification.risk,
            reasons,
            reasons_omitted,
            requested_at: cap(&notification.requested_at, MAX_VALUE_CHARS),
            expires_at: cap(&notification.expires_at, MAX_VALUE_CHARS),
            group: cap(&notification.group, MAX_VALUE_CHARS),
            quorum: notification.quorum,
            decided_by,
            decided_by_omitted,
            link,
        }
    }
}

/// Renders the JSON body of `notification`: top-level `text`, Slack
/// `blocks` and the `stepgate` object. The caps are [`MAX_VALUE_CHARS`],
/// [`MAX_METHOD_CHARS`], [`MAX_REASONS`], [`MAX_DECIDED_BY`] and
/// [`MAX_LINK_CHARS`], which keep the body below 48 KiB whatever the input
/// (45 KiB for the worst case in the tests). A typical body has 1.5 KiB.
pub fn render(notification: &Notification) -> Vec<u8> {
    let capped = Capped::new(notification);
    let body = json!({
        "text": summary_text(&capped),
        "blocks": slack_blocks(&capped),
        "stepgate": &capped,
    });
    // Serializing a `Value` cannot fail because its map keys are strings,
    // so `to_string` is used in place of `serde_json::to_vec` and its
    // `Result`, whose error branch would never run.
    body.to_string().into_bytes()
}

/// Builds the top-level `text`, a summary that reads on its own in Slack
/// notifications and in Teams, which shows nothing else.
fn summary_text(capped: &Capped<'_>) -> String {
    let operation = code(&format!("{} {}", capped.method, capped.target));
    let identity = code(&capped.identity);
    let group = code(&capped.group);
    let risk = format!("risk {}/100", capped.risk);
    let mut lines = Vec::new();
    match capped.kind {
        NotificationKind::Requested => {
            lines.push(format!(
                "Approval requested: {identity} wants to run {operation}, {risk}."
            ));
            lines.push(format!("Reasons: {}.", reason_list(capped)));
            lines.push(format!(
                "Group {group} must give {} before {}.",
                approvals(capped.quorum),
                escape(&plain(&capped.expires_at))
            ));
        }
        NotificationKind::Approved | NotificationKind::Denied => {
            let verb = if capped.kind == NotificationKind::Approved {
                "Approved"
            } else {
                "Denied"
            };
            lines.push(format!(
                "{}: {operation} by {identity}, {risk}.",
                capped.kind.title()
            ));
            lines.push(format!(
                "{verb} by {} of group {group}.",
                decider_list(capped, TEXT_LIST_BUDGET)
            ));
            lines.push(format!("Reasons: {}.", reason_list(capped)));
        }
        NotificationKind::Expired => {
            lines.push(format!(
                "Approval expired: {operation} by {identity}, {risk}."
            ));
            lines.push(format!(
                "Group {group} gave no decision before {}.",
                escape(&plain(&capped.expires_at))
            ));
            lines.push(format!("Reasons: {}.", reason_list(capped)));
        }
    }
    let approval = code(&capped.approval_id);
    if capped.link.is_empty() {
        lines.push(format!("Approval {approval}."));
    } else {
        lines.push(format!(
            "Approval {approval}. {REVIEW_LABEL}: {}",
            escape(capped.link)
        ));
    }
    // Each line is a sentence, so the summary still reads where a receiver
    // joins the lines.
    lines.join("\n")
}

fn reason_list(capped: &Capped<'_>) -> String {
    if capped.reasons.is_empty() {
        return "none listed".to_owned();
    }
    join_within(
        capped.reasons.iter().map(|reason| code(reason)),
        capped.reasons.len() + capped.reasons_omitted,
        "; ",
        TEXT_LIST_BUDGET,
    )
}

fn decider_list(capped: &Capped<'_>, budget: usize) -> String {
    if capped.decided_by.is_empty() {
        return "nobody listed".to_owned();
    }
    join_within(
        capped.decided_by.iter().map(|name| code(name)),
        capped.decided_by.len() + capped.decided_by_omitted,
        ", ",
        budget,
    )
}

fn approvals(quorum: u32) -> String {
    if quorum == 1 {
        "1 approval".to_owned()
    } else {
        format!("{quorum} approvals")
    }
}

/// Slack Block Kit blocks: a header, the facts as section fields, the
/// reasons, the approval id and one link button to the approval page.
fn slack_blocks(capped: &Capped<'_>) -> Value {
    let mut fields = vec![
        mrkdwn(format!("*Identity*\n{}", code(&capped.identity))),
        mrkdwn(format!(
            "*Operation*\n{}",
            code(&format!("{} {}", capped.method, capped.target))
        )),
        mrkdwn(format!("*Risk*\n{}/100", capped.risk)),
        mrkdwn(format!("*Expires*\n{}", escape(&plain(&capped.expires_at)))),
        mrkdwn(format!(
            "*Group*\n{}, {} needed",
            code(&capped.group),
            approvals(capped.quorum)
        )),
    ];
    match capped.kind {
        NotificationKind::Approved => fields.push(mrkdwn(format!(
            "*Approved by*\n{}",
            decider_list(capped, SLACK_FIELD_BUDGET)
        ))),
        NotificationKind::Denied => fields.push(mrkdwn(format!(
            "*Denied by*\n{}",
            decider_list(capped, SLACK_FIELD_BUDGET)
        ))),
        NotificationKind::Requested | NotificationKind::Expired => {}
    }
    let reasons = if capped.reasons.is_empty() {
        "none listed".to_owned()
    } else {
        let bullets = capped
            .reasons
            .iter()
            .map(|reason| format!("• {}", code(reason)));
        join_within(
            bullets,
            capped.reasons.len() + capped.reasons_omitted,
            "\n",
            SLACK_SECTION_BUDGET,
        )
    };
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": { "type": "plain_text", "text": capped.kind.title() },
        }),
        json!({ "type": "section", "fields": fields }),
        json!({
            "type": "section",
            "text": mrkdwn(format!("*Reasons*\n{reasons}")),
        }),
        json!({
            "type": "context",
            "elements": [mrkdwn(format!(
                "Approval {}, requested at {}",
                code(&capped.approval_id),
                escape(&plain(&capped.requested_at))
            ))],
        }),
    ];
    if !capped.link.is_empty() {
        // A link button only opens the URL. Approving takes the approval
        // page, never the notification.
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": REVIEW_LABEL },
                "url": capped.link,
                "action_id": "review",
            }],
        }));
    }
    Value::Array(blocks)
}

fn mrkdwn(text: String) -> Value {
    json!({ "type": "mrkdwn", "text": text })
}

/// Joins `items` with `separator` while the result stays within `budget`
/// characters, and ends with "and N more" for the items of `total` left
/// out, whether by the budget or by a cap applied before.
fn join_within(
    items: impl Iterator<Item = String>,
    total: usize,
    separator: &str,
    budget: usize,
) -> String {
    let mut joined = String::new();
    let mut length = 0;
    let mut shown = 0;
    for item in items {
        let added = item.chars().count()
            + if shown == 0 {
                0
            } else {
                separator.chars().count()
            };
        if shown > 0 && length + added > budget {
            break;
        }
        if shown > 0 {
            joined.push_str(separator);
        }
        joined.push_str(&item);
        length += added;
        shown += 1;
    }
    if total > shown {
        joined.push_str(&format!("{separator}and {} more", total - shown));
    }
    joined
}

/// Cuts `value` to at most `max` characters, the last one `…` when cut.
fn cap(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_owned();
    }
    let mut capped: String = value.chars().take(max.saturating_sub(1)).collect();
    capped.push('…');
    capped
}

/// Formats a request value as escaped mrkdwn inside a code span. A backtick in the
/// value becomes `ˋ` (U+02CB) so that it cannot close the span.
fn code(value: &str) -> String {
    if value.is_empty() {
        return "(empty)".to_owned();
    }
    let text: String = plain(value)
        .chars()
        .map(|c| if c == '`' { 'ˋ' } else { c })
        .collect();
    format!("`{}`", escape(&text))
}

/// Replaces control characters and bidirectional formatting characters
/// with spaces, so a value cannot start a new line or reorder the text
/// around it.
fn plain(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi { ' ' } else { c }
        })
        .collect()
}

/// Escapes the three characters that Slack mrkdwn treats as control
/// characters: `&`, `<` and `>`.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests;
