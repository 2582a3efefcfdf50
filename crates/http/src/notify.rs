//! Webhook notifications of approval events: each approver group with a
//! webhook hears of requests, decisions and expiries. Every attempt is
//! written to the audit trail and counted in the metrics.

use std::collections::HashMap;
use std::sync::Arc;

use stepgate_audit::{Entry, Event};
use stepgate_config::ApprovalConfig;
use stepgate_engine::{ApprovalEvent, Engine};
use stepgate_notify::{
    Attempt, Deliverer, Endpoint, Notification, NotificationKind, Outcome, RetryPolicy, Secret,
};
use tokio::sync::mpsc;

use crate::Shared;

/// Reason the webhooks cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("approval.groups[{group}].webhook_secret_file {path}: {reason}")]
    Secret {
        group: String,
        path: String,
        reason: String,
    },
    #[error("approval.groups[{group}].webhook_url: {reason}")]
    Endpoint { group: String, reason: String },
    #[error("approval.webhook_ca_file: {0}")]
    Roots(String),
}

/// The webhooks of the approver groups that have one.
pub(crate) struct Webhooks {
    endpoints: HashMap<String, Endpoint>,
    deliverer: Deliverer,
    /// Base of the links to the approvals page.
    page_url: String,
}

impl Webhooks {
    /// Reads every group's secret file and checks its URL.
    pub(crate) fn load(
        config: &ApprovalConfig,
        page_url: String,
    ) -> Result<Option<Self>, WebhookError> {
        let mut endpoints = HashMap::new();
        for group in &config.groups {
            let (Some(url), Some(path)) = (&group.webhook_url, &group.webhook_secret_file) else {
                continue;
            };
            let secret_error = |reason: String| WebhookError::Secret {
                group: group.name.clone(),
                path: path.display().to_string(),
                reason,
            };
            let metadata = std::fs::metadata(path).map_err(|err| secret_error(err.to_string()))?;
            if metadata.len() > 4096 {
                return Err(secret_error(
                    "is larger than 4096 bytes; it should hold one key".to_owned(),
                ));
            }
            let text = std::fs::read(path).map_err(|err| secret_error(err.to_string()))?;
            let key = trim_ascii(&text).to_vec();
            let endpoint =
                Endpoint::new(group.name.clone(), url, Secret::new(key)).map_err(|err| match err {
                    stepgate_notify::NotifyError::ShortSecret { .. } => secret_error(format!(
                        "{err}; write a random key of at least {} bytes, such as the output of `openssl rand -hex 32`",
                        stepgate_notify::MIN_SECRET_LEN
                    )),
                    other => WebhookError::Endpoint {
                        group: group.name.clone(),
                        reason: other.to_string(),
                    },
                })?;
            endpoints.insert(group.name.clone(), endpoint);
        }
        if endpoints.is_empty() {
            return Ok(None);
        }
        let policy = RetryPolicy {
            attempts: config.webhook_attempts,
            ..RetryPolicy::default()
        };
        let deliverer = Deliverer::new(policy, config.webhook_ca_file.as_deref())
            .map_err(|err| WebhookError::Roots(err.to_string()))?;
        for endpoint in endpoints.values() {
            deliverer
                .check(endpoint)
                .map_err(|err| WebhookError::Endpoint {
                    group: endpoint.group.clone(),
                    reason: err.to_string(),
                })?;
        }
        Ok(Some(Self {
            endpoints,
            deliverer,
            page_url: page_url.trim_end_matches('/').to_owned(),
        }))
    }

    /// Delivers notifications of the events from `events` until it closes,
    /// at most [`CONCURRENT_DELIVERIES`] at a time. Pending requests whose
    /// notification was never delivered, such as when the gateway stopped
    /// while retrying, are notified again first.
    pub(crate) async fn run(
        self,
        shared: Arc<Shared>,
        backlog: Vec<ApprovalEvent>,
        mut events: mpsc::UnboundedReceiver<ApprovalEvent>,
    ) {
        let webhooks = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DELIVERIES));
        tracing::info!(
            groups = webhooks.endpoints.len(),
            backlog = backlog.len(),
            "approval webhooks on"
        );
        let replayed: std::collections::HashSet<String> = backlog
            .iter()
            .map(|event| event.approval.id.clone())
            .collect();
        let mut backlog: std::collections::VecDeque<ApprovalEvent> = backlog.into();
        loop {
            let event = match backlog.pop_front() {
                Some(event) => event,
                None => match events.recv().await {
                    Some(event)
                        if event.kind == "requested" && replayed.contains(&event.approval.id) =>
                    {
                        continue;
                    }
                    Some(event) => event,
                    None => break,
                },
            };
            let Some(endpoint) = webhooks.endpoints.get(&event.approval.group).cloned() else {
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let webhooks = webhooks.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                webhooks.deliver(&endpoint, &event, &shared).await;
            });
        }
    }

    async fn deliver(&self, endpoint: &Endpoint, event: &ApprovalEvent, shared: &Shared) {
        let engine = &shared.engine;
        let metrics = &shared.metrics;
        let approval = &event.approval;
        let kind = match event.kind {
            "approved" => NotificationKind::Approved,
            "denied" => NotificationKind::Denied,
            "expired" => NotificationKind::Expired,
            _ => NotificationKind::Requested,
        };
        let notification = Notification {
            kind,
            approval_id: approval.id.clone(),
            identity: approval.identity.to_string(),
            method: approval.method.clone(),
            // Query values may carry secrets and the receiver is often
            // outside, so they are redacted; the page shows them.
            target: format!("{}{}", approval.host, redacted_target(&approval.target)),
            risk: approval.risk,
            reasons: approval.reasons.clone(),
            requested_at: approval.created_at.to_rfc3339(),
            expires_at: approval.expires_at.to_rfc3339(),
            group: approval.group.clone(),
            quorum: approval.quorum,
            decided_by: approval
                .votes
                .iter()
                .map(|vote| vote.approver.to_string())
                .collect(),
            link: format!("{}/approvals/{}", self.page_url, approval.id),
        };
        let mut report = |attempt: &Attempt| {
            let result = match (&attempt.result, attempt.retry_in) {
                (Ok(status), _) if (200..300).contains(status) => "delivered",
                (_, Some(_)) => "retry",
                (Ok(_), None) => "rejected",
                (Err(_), None) => "failed",
            };
            metrics.webhook(result);
            let mut entry = Entry::new(Event::ApprovalNotify, engine.now());
            entry.identity = Some(approval.identity.to_string());
            entry.challenge_id = Some(approval.id.clone());
            entry.decision = Some(result.to_owned());
            entry.detail = Some(format!(
                "{} to group {} webhook {} (delivery {}, attempt {}): {}{}",
                kind.as_str(),
                endpoint.group,
                endpoint.redacted_url(),
                attempt.delivery_id,
                attempt.number,
                match &attempt.result {
                    Ok(status) => format!("HTTP status {status}"),
                    Err(reason) => reason.clone(),
                },
                match attempt.retry_in {
                    Some(delay) => format!("; retrying in {} s", delay.as_secs()),
                    None => String::new(),
                }
            ));
            engine.audit().behind(entry);
        };
        // Records a delivery cut short by the gateway stopping, when the
        // runtime drops this future mid-retry.
        let mut unfinished = Unfinished {
            engine,
            approval,
            kind: kind.as_str(),
            group: &endpoint.group,
            done: false,
        };
        let outcome = self
            .deliverer
            .deliver(endpoint, &notification, &mut report)
            .await;
        unfinished.done = true;
        match outcome {
            Outcome::Delivered { attempts, .. } => {
                tracing::info!(approval.id = %approval.id, group = %endpoint.group, attempts, "approval webhook delivered");
                if kind == NotificationKind::Requested
                    && let Some(desk) = engine.approvals()
                    && let Err(err) = desk.store().mark_notified(&approval.id, engine.now())
                {
                    tracing::error!(approval.id = %approval.id, error = %err, "cannot record a delivered notification");
                }
            }
            Outcome::GaveUp { attempts, last } => {
                tracing::warn!(approval.id = %approval.id, group = %endpoint.group, attempts, last = %last, "approval webhook failed, giving up");
            }
            Outcome::Rejected { status } => {
                tracing::warn!(approval.id = %approval.id, group = %endpoint.group, status, "approval webhook rejected");
            }
            Outcome::NotSent { reason } => {
                metrics.webhook("not_sent");
                let mut entry = Entry::new(Event::ApprovalNotify, engine.now());
                entry.identity = Some(approval.identity.to_string());
                entry.challenge_id = Some(approval.id.clone());
                entry.decision = Some("not_sent".to_owned());
                entry.detail = Some(format!(
                    "{} to group {} not sent: {reason}",
                    kind.as_str(),
                    endpoint.group
                ));
                engine.audit().behind(entry);
                tracing::error!(approval.id = %approval.id, group = %endpoint.group, reason = %reason, "approval webhook not sent");
            }
        }
    }
}

/// Returns the pending requests whose notification was never delivered,
/// such as when the gateway stopped while retrying, to notify again.
pub(crate) fn unnotified(desk: &stepgate_engine::ApprovalDesk) -> Vec<ApprovalEvent> {
    match desk.approvals(true, 1000) {
        Ok(pending) => pending
            .into_iter()
            .filter(|approval| approval.notified_at.is_none())
            .map(|approval| ApprovalEvent {
                kind: "requested",
                approval,
            })
            .collect(),
        Err(err) => {
            tracing::error!(error = %err, "cannot read pending approvals to notify");
            Vec::new()
        }
    }
}

/// Deliveries of approval notifications in flight at once.
const CONCURRENT_DELIVERIES: usize = 16;

/// Replaces the query values of a target, as the audit trail does.
fn redacted_target(target: &str) -> String {
    match target.split_once('?') {
        Some((path, query)) => format!("{path}?{}", crate::path::redact_query(query)),
        None => target.to_owned(),
    }
}

/// Writes an audit record for a delivery that never finished.
struct Unfinished<'a> {
    engine: &'a Engine,
    approval: &'a stepgate_store::ApprovalRecord,
    kind: &'static str,
    group: &'a str,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        tracing::warn!(approval.id = %self.approval.id, group = self.group, "approval webhook not finished, gateway stopping");
        let mut entry = Entry::new(Event::ApprovalNotify, self.engine.now());
        entry.identity = Some(self.approval.identity.to_string());
        entry.challenge_id = Some(self.approval.id.clone());
        entry.decision = Some("not_finished".to_owned());
        entry.detail = Some(format!(
            "{} to group {} not finished: the gateway stopped; a pending request is notified again at the next start",
            self.kind, self.group
        ));
        self.engine.audit().behind(entry);
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| !byte.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    &bytes[start..end]
}
