//! Delivery of a notification to one endpoint, with retries.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rustls::ClientConfig;

use crate::endpoint::{Scheme, Target};
use crate::transport::{self, Message, Response};
use crate::{Endpoint, Notification, NotifyError, Secret, render, sign};

/// Name of the request header that carries the delivery id. The id is
/// random per [`Deliverer::deliver`] call and the same on each of its
/// attempts, so a receiver can drop duplicates.
pub const DELIVERY_HEADER: &str = "Stepgate-Delivery";

/// The CA bundle used for https webhooks when no CA file is given.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How often and how long a delivery is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Maximum number of attempts, the first included. 0 counts as 1.
    pub attempts: u32,
    /// Delay before the second attempt. Each further delay doubles.
    pub first_delay: Duration,
    /// Upper bound of every delay, including one asked for by `Retry-After`.
    pub max_delay: Duration,
    /// Time limit of one attempt: connect, TLS handshake, request and
    /// response.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Backoff delay after failed attempt `number` (1-based):
    /// `first_delay * 2^(number - 1)`, at most `max_delay`.
    fn backoff(&self, number: u32) -> Duration {
        let factor = 2u32
            .checked_pow(number.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Record of one attempt, passed to the `report` callback of
/// [`Deliverer::deliver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub group: String,
    pub approval_id: String,
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub number: u32,
    /// HTTP status of the response, or the reason no response came, such
    /// as `connect to 127.0.0.1:9 failed: connection refused` or
    /// `timed out after 10 s`.
    pub result: Result<u16, String>,
    /// Delay before the next attempt, `None` when this was the last one.
    pub retry_in: Option<Duration>,
}

/// Result of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver responded with a 2xx status.
    Delivered { attempts: u32, status: u16 },
    /// Every attempt failed with a retryable status or error. `last` is the
    /// last one, such as `HTTP status 503` or `timed out after 10 s`.
    GaveUp { attempts: u32, last: String },
    /// The receiver responded with a status that is not retried: a 4xx
    /// other than 408 and 429, or a 1xx or 3xx (redirects are not
    /// followed).
    Rejected { status: u16 },
    /// Nothing was sent because the endpoint cannot be used (see
    /// [`Deliverer::check`]) or no random delivery id could be made. The
    /// `report` callback is not called.
    NotSent { reason: String },
}

/// Trusted roots for https webhooks.
#[derive(Clone, Debug)]
enum Roots {
    Loaded(Arc<ClientConfig>),
    /// The system bundle could not be loaded. Only https deliveries fail.
    Unavailable {
        path: String,
        reason: String,
    },
}

/// Sends notifications to webhooks. One deliverer serves any number of
/// endpoints and concurrent deliveries.
#[derive(Clone, Debug)]
pub struct Deliverer {
    policy: RetryPolicy,
    roots: Roots,
}

impl Deliverer {
    /// Builds a deliverer. `ca_file` is a PEM bundle of the roots trusted
    /// for https webhooks, read now: an unreadable file or one without a
    /// usable certificate is an error. Without it the system bundle
    /// `/etc/ssl/certs/ca-certificates.crt` is read, and if that fails the
    /// deliverer is still built, but https endpoints fail [`Self::check`]
    /// and their deliveries end in [`Outcome::NotSent`].
    pub fn new(policy: RetryPolicy, ca_file: Option<&Path>) -> Result<Self, NotifyError> {
        let roots = match ca_file {
            Some(path) => match transport::client_config(path) {
                Ok(config) => Roots::Loaded(config),
                Err(reason) => {
                    return Err(NotifyError::CaFile {
                        path: path.display().to_string(),
                        reason,
                    });
                }
            },
            None => match transport::client_config(Path::new(SYSTEM_CA_FILE)) {
                Ok(config) => Roots::Loaded(config),
                Err(reason) => {
                    tracing::warn!(
                        ca_file = SYSTEM_CA_FILE,
                        error = %reason,
                        "cannot load the system CA bundle, https webhooks will fail"
                    );
                    Roots::Unavailable {
                        path: SYSTEM_CA_FILE.to_owned(),
                        reason,
                    }
                }
            },
        };
        Ok(Self { policy, roots })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Checks that `endpoint` can be used: its URL and secret as
    /// [`Endpoint::check`] does, and for https that CA roots are loaded.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), NotifyError> {
        self.prepare(endpoint).map(|_| ())
    }

    fn prepare(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(Target, Option<&Arc<ClientConfig>>), NotifyError> {
        let target = Target::from_endpoint(endpoint)?;
        let tls = match (&self.roots, target.scheme) {
            (_, Scheme::Http) => None,
            (Roots::Loaded(config), Scheme::Https) => Some(config),
            (Roots::Unavailable { path, reason }, Scheme::Https) => {
                return Err(NotifyError::CaFile {
                    path: path.clone(),
                    reason: reason.clone(),
                });
            }
        };
        Ok((target, tls))
    }

    /// Delivers `notification` to `endpoint`, retrying 408, 429, 5xx,
    /// connection errors and timeouts as the policy allows. Calls `report`
    /// after every attempt, before waiting for the next one.
    ///
    /// Each attempt is signed anew with the current time, so a receiver
    /// that checks the timestamp accepts a late retry.
    pub async fn deliver(
        &self,
        endpoint: &Endpoint,
        notification: &Notification,
        report: &mut (dyn FnMut(&Attempt) + Send),
    ) -> Outcome {
        let group = endpoint.group.as_str();
        let approval_id = notification.approval_id.as_str();
        let (target, tls) = match self.prepare(endpoint) {
            Ok(prepared) => prepared,
            Err(err) => {
                tracing::error!(webhook.group = group, approval.id = approval_id, error = %err, "webhook not sent");
                return Outcome::NotSent {
                    reason: err.to_string(),
                };
            }
        };

        let delivery_id = match new_delivery_id() {
            Ok(id) => id,
            Err(reason) => {
                tracing::error!(webhook.group = group, approval.id = approval_id, error = %reason, "webhook not sent");
                return Outcome::NotSent { reason };
            }
        };

        let body = Bytes::from(render(notification));
        let attempts = self.policy.attempts.max(1);
        let mut number = 0;
        loop {
            number += 1;
            let result = self
                .send_once(tls, &target, &endpoint.secret, &body, &delivery_id)
                .await;
            let (verdict, retry_after) = classify(&result);
            let retry_in = match verdict {
                Verdict::Retry if number < attempts => Some(self.retry_delay(number, retry_after)),
                _ => None,
            };
            let status_or_reason = result
                .as_ref()
                .map(|response| response.status)
                .map_err(String::clone);

            report(&Attempt {
                group: group.to_owned(),
                approval_id: approval_id.to_owned(),
                delivery_id: delivery_id.clone(),
                number,
                result: status_or_reason.clone(),
                retry_in,
            });

            let failure = match &status_or_reason {
                Ok(status) => format!("HTTP status {status}"),
                Err(reason) => reason.clone(),
            };
            match (verdict, retry_in) {
                (Verdict::Delivered(status), _) => {
                    tracing::info!(webhook.group = group, approval.id = approval_id, delivery.id = %delivery_id, attempt = number, status, "webhook delivered");
                    return Outcome::Delivered {
                        attempts: number,
                        status,
                    };
                }
                (Verdict::Rejected(status), _) => {
                    tracing::error!(webhook.group = group, approval.id = approval_id, delivery.id = %delivery_id, webhook.origin = %target.origin, attempt = number, status, "webhook receiver rejected the notification, not retrying");
                    return Outcome::Rejected { status };
                }
                (Verdict::Retry, Some(delay)) => {
                    tracing::warn!(webhook.group = group, approval.id = approval_id, delivery.id = %delivery_id, webhook.origin = %target.origin, attempt = number, error = %failure, retry_in_ms = delay.as_millis(), "webhook delivery failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                (Verdict::Retry, None) => {
                    tracing::error!(webhook.group = group, approval.id = approval_id, delivery.id = %delivery_id, webhook.origin = %target.origin, attempts = number, error = %failure, "webhook delivery failed, giving up");
                    return Outcome::GaveUp {
                        attempts: number,
                        last: failure,
                    };
                }
            }
        }
    }

    /// Signs and sends one attempt within the policy's timeout.
    async fn send_once(
        &self,
        tls: Option<&Arc<ClientConfig>>,
        target: &Target,
        secret: &Secret,
        body: &Bytes,
        delivery_id: &str,
    ) -> Result<Response, String> {
        let signature = sign(secret, unix_now(), body);
        let message = Message {
            body: body.clone(),
            signature: &signature,
            delivery_id,
        };
        let timeout = self.policy.timeout;
        match tokio::time::timeout(timeout, transport::post(tls, target, message)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}", describe_duration(timeout))),
        }
    }

    /// Delay after failed attempt `number`: the receiver's `Retry-After`
    /// if it sent one, else the backoff, in both cases at most `max_delay`.
    fn retry_delay(&self, number: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(delay) => delay.min(self.policy.max_delay),
            None => self.policy.backoff(number),
        }
    }
}

enum Verdict {
    Delivered(u16),
    Retry,
    Rejected(u16),
}

/// Sorts an attempt's result, and returns the `Retry-After` delay of a
/// retryable response.
fn classify(result: &Result<Response, String>) -> (Verdict, Option<Duration>) {
    match result {
        Err(_) => (Verdict::Retry, None),
        Ok(response) => match response.status {
            200..=299 => (Verdict::Delivered(response.status), None),
            408 | 429 | 500..=599 => (Verdict::Retry, response.retry_after),
            status => (Verdict::Rejected(status), None),
        },
    }
}

/// A new delivery id: `dlv_` and 32 hex digits from the system random
/// generator.
fn new_delivery_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| "the system random generator failed to make a delivery id".to_owned())?;
    Ok(format!("dlv_{}", hex::encode(bytes)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Formats a duration as whole seconds (`10 s`) or, with a fraction, as
/// milliseconds (`250 ms`).
fn describe_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (1..=8).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn classify_statuses() {
        let response = |status| {
            Ok(Response {
                status,
                retry_after: Some(Duration::from_secs(3)),
            })
        };
        assert!(matches!(
            classify(&response(200)).0,
            Verdict::Delivered(200)
        ));
        assert!(matches!(
            classify(&response(204)).0,
            Verdict::Delivered(204)
        ));
        for status in [408, 429, 500, 502, 503, 599] {
            let (verdict, retry_after) = classify(&response(status));
            assert!(matches!(verdict, Verdict::Retry), "{status}");
            assert_eq!(retry_after, Some(Duration::from_secs(3)), "{status}");
        }
        for status in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(
                matches!(classify(&response(status)).0, Verdict::Rejected(s) if s == status),
                "{status}"
            );
        }
        assert!(matches!(classify(&Err("x".to_owned())).0, Verdict::Retry));
    }

    #[test]
    fn duration_descriptions() {
        assert_eq!(describe_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(describe_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1500 ms");
    }

    #[test]
    fn delivery_ids_differ() {
        let first = new_delivery_id().unwrap();
        let second = new_delivery_id().unwrap();
        assert_eq!(first.len(), 36);
        assert!(first.starts_with("dlv_"));
        assert_ne!(first, second);
    }
}
