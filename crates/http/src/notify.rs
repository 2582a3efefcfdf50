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
use crate::metrics::Metrics;

/// Why the webhooks cannot be set up.
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
                Endpoint::new(group.name.clone(), url, Secret::new(key)).map_err(|err| {
                    WebhookError::Endpoint {
                        group: group.name.clone(),
                        reason: err.to_string(),
                    }
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

    /// Delivers notifications of the events from `events` until it closes.
    pub(crate) async fn run(
        self,
        shared: Arc<Shared>,
        mut events: mpsc::UnboundedReceiver<ApprovalEvent>,
    ) {
        let webhooks = Arc::new(self);
        tracing::info!(groups = webhooks.endpoints.len(), "approval webhooks on");
        while let Some(event) = events.recv().await {
            let Some(endpoint) = webhooks.endpoints.get(&event.approval.group).cloned() else {
                continue;
            };
            let webhooks = webhooks.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                webhooks
                    .deliver(&endpoint, &event, &shared.engine, &shared.metrics)
                    .await;
            });
        }
    }

    async fn deliver(
        &self,
        endpoint: &Endpoint,
        event: &ApprovalEvent,
        engine: &Engine,
        metrics: &Metrics,
    ) {
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
            target: approval.target.clone(),
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
        let outcome = self
            .deliverer
            .deliver(endpoint, &notification, &mut report)
            .await;
        match outcome {
            Outcome::Delivered { attempts, .. } => {
                tracing::info!(approval.id = %approval.id, group = %endpoint.group, attempts, "approval webhook delivered");
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
