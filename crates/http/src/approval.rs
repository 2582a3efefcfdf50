//! Approvals on the HTTP front-end: the operation digest of a request,
//! holding a request open with `Prefer: wait` (RFC 7240), the approval
//! status URL, and the responses that tell a client the approval's state.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use stepgate_engine::{ApprovalRejection, Operation};
use stepgate_store::{ApprovalRecord, ApprovalState};

use crate::answer::{self, json_response};
use crate::{Body, Shared, UpstreamBody};

/// Header that carries the id of an approval a request claims.
pub(crate) const APPROVAL_HEADER: &str = "stepgate-approval";
/// Path prefix of the approval status URL on the gateway listener.
pub(crate) const STATUS_PREFIX: &str = "/.stepgate/approvals/";
/// Maximum wait for the body of a request that needs an approval.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the `wait` preference (RFC 7240 §4.3) of every `Prefer` field
/// line: the first valid `wait=N` counts. Other preferences are ignored.
pub(crate) fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .find_map(|preference| {
            let first = preference.split(';').next()?.trim();
            let (name, value) = first.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let value = value.trim().trim_matches('"');
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // A wait beyond u64 seconds is capped like any long one.
            Some(value.parse().unwrap_or(u64::MAX))
        })
}

/// Bytes of a UTF-8 body shown to approvers.
const BODY_PREVIEW_BYTES: usize = 4096;

/// Digests a request's operation for an approval: the method, the host it
/// named, the path and query, and the body.
pub(crate) fn operation(method: &str, host: &str, path_and_query: &str, body: &[u8]) -> Operation {
    let body_sha256 = (!body.is_empty()).then(|| stepgate_engine::body_sha256(body));
    Operation {
        digest: stepgate_engine::operation_digest(
            method,
            host,
            path_and_query,
            body_sha256.as_deref(),
        ),
        host: host.to_owned(),
        target: path_and_query.to_owned(),
        body_sha256,
        body_bytes: body.len() as u64,
        body_preview: body_preview(body),
    }
}

/// Returns the start of a body that is UTF-8 text, cut on a character
/// boundary, for approvers to read; `None` for an empty or binary body.
fn body_preview(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let head = &body[..body.len().min(BODY_PREVIEW_BYTES)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A multi-byte character cut at the end is dropped.
        Err(err) if err.error_len().is_none() => {
            std::str::from_utf8(&head[..err.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let mut preview = text.to_owned();
    if body.len() > head.len() {
        preview.push('…');
    }
    Some(preview)
}

/// Reason the body of a request that needs an approval could not be read.
pub(crate) struct BodyFailure {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// Most bodies of one identity read at once for approvals, so slow
/// senders of one identity cannot take every reading slot.
pub(crate) const BODY_READS_PER_IDENTITY: usize = 4;

/// A body being read for an approval, counted against its identity until
/// dropped.
pub(crate) struct BodyReader<'a> {
    shared: &'a Shared,
    identity: stepgate_core::IdentityName,
}

impl<'a> BodyReader<'a> {
    /// Counts one more body of `identity`; `None` when it has
    /// [`BODY_READS_PER_IDENTITY`] already.
    pub(crate) fn start(
        shared: &'a Shared,
        identity: &stepgate_core::IdentityName,
    ) -> Option<Self> {
        let mut readers = shared
            .approval_body_readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = readers.entry(identity.clone()).or_default();
        if *count >= BODY_READS_PER_IDENTITY {
            return None;
        }
        *count += 1;
        Some(Self {
            shared,
            identity: identity.clone(),
        })
    }
}

impl Drop for BodyReader<'_> {
    fn drop(&mut self) {
        let mut readers = self
            .shared
            .approval_body_readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = readers.get_mut(&self.identity) {
            *count -= 1;
            if *count == 0 {
                readers.remove(&self.identity);
            }
        }
    }
}

/// Reads a body whole to digest it, up to `max_bytes` and within
/// [`BODY_TIMEOUT`].
pub(crate) async fn read_body(
    shared: &Shared,
    body: UpstreamBody,
    max_bytes: usize,
) -> Result<Bytes, BodyFailure> {
    use http_body_util::BodyExt;
    let read = async {
        let _slot = shared.approval_body_slots.acquire().await;
        http_body_util::Limited::new(body, max_bytes)
            .collect()
            .await
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(BodyFailure {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!(
                "an approval covers the digest of the whole body, which may have at most {max_bytes} bytes (approval.max_body_bytes); send a smaller request"
            ),
        }),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "failed to read the body of a request that needs approval");
            Err(BodyFailure {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request_body",
                message: "the request body is malformed or ended early".to_owned(),
            })
        }
        Err(_) => Err(BodyFailure {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "body_timeout",
            message: format!(
                "the request body did not arrive within {} s; send it again",
                BODY_TIMEOUT.as_secs()
            ),
        }),
    }
}

pub(crate) fn status_url(shared: &Shared, id: &str) -> String {
    format!("{}{STATUS_PREFIX}{id}", shared.origin.full)
}

/// Builds the approval as a client sees it: state, operation, votes and
/// where to wait. Approvers' comments are included because they are meant
/// for the requester.
pub(crate) fn approval_json(shared: &Shared, approval: &ApprovalRecord) -> Value {
    let votes: Vec<Value> = approval
        .votes
        .iter()
        .map(|vote| {
            json!({
                "approver": vote.approver.as_str(),
                "decision": if vote.approve { "approve" } else { "deny" },
                "comment": vote.comment,
                "at": vote.at.to_rfc3339(),
            })
        })
        .collect();
    let mut value = json!({
        "id": approval.id,
        "state": approval.state.as_str(),
        "identity": approval.identity.as_str(),
        "method": approval.method,
        "host": approval.host,
        "target": approval.target,
        "group": approval.group,
        "quorum": approval.quorum,
        "approvals": approval.approvals(),
        "votes": votes,
        "created_at": approval.created_at.to_rfc3339(),
        "expires_at": approval.expires_at.to_rfc3339(),
        "status_url": status_url(shared, &approval.id),
    });
    if let Some(until) = approval.valid_until {
        value["valid_until"] = json!(until.to_rfc3339());
    }
    value
}

fn max_wait(shared: &Shared) -> u64 {
    shared
        .engine
        .approvals()
        .map_or(0, |desk| desk.config().max_wait_secs)
}

/// 401 for a request that waits for a person's approval: the approval, the
/// header to repeat the request with, and how to wait.
pub(crate) fn required(
    shared: &Shared,
    approval: &ApprovalRecord,
    waited: Option<u64>,
) -> Response<Body> {
    let max_wait = max_wait(shared);
    let message = match waited {
        Some(secs) => format!(
            "no decision on approval {} within {secs} s; wait on status_url, then repeat the request with Stepgate-Approval: {}",
            approval.id, approval.id
        ),
        None => format!(
            "this request needs a person's approval, requested as {}: repeat it with Prefer: wait=N (up to {max_wait} s) to hold it until someone decides, or wait on status_url and then repeat it with Stepgate-Approval: {}",
            approval.id, approval.id
        ),
    };
    let body = json!({
        "error": "approval_required",
        "message": message,
        "approval": approval_json(shared, approval),
        "answer_headers": { "Stepgate-Approval": approval.id },
        "wait": { "header": "Prefer", "value": format!("wait={max_wait}"), "max_secs": max_wait },
    });
    let mut response = json_response(StatusCode::UNAUTHORIZED, &body);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="stepgate", error="insufficient_user_authentication", error_description="A person's approval is required", acr_values="urn:stepgate:acr:approval""#,
        ),
    );
    if let Some(secs) = waited
        && let Ok(value) = HeaderValue::from_str(&format!("wait={secs}"))
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("preference-applied"), value);
    }
    response
}

/// 403 for a request whose approval was denied or expired while it waited.
pub(crate) fn closed(shared: &Shared, approval: &ApprovalRecord) -> Response<Body> {
    let (code, message) = match approval.state {
        ApprovalState::Denied => {
            let vote = approval.votes.iter().find(|vote| !vote.approve);
            let by = vote.map_or("an approver", |vote| vote.approver.as_str());
            let comment = vote
                .map(|vote| vote.comment.as_str())
                .filter(|comment| !comment.is_empty())
                .map(|comment| format!(": {comment}"))
                .unwrap_or_default();
            (
                "approval_denied",
                format!("approval {} was denied by {by}{comment}", approval.id),
            )
        }
        _ => (
            "approval_expired",
            format!(
                "approval {} expired before anyone decided; repeat the request to ask again",
                approval.id
            ),
        ),
    };
    json_response(
        StatusCode::FORBIDDEN,
        &json!({ "error": code, "message": message, "approval": approval_json(shared, approval) }),
    )
}

/// 503 for a held request when the gateway stops: the approval survives
/// the restart, so the client waits on the status URL and repeats.
pub(crate) fn stopping(shared: &Shared, approval: &ApprovalRecord) -> Response<Body> {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({
            "error": "gateway_restarting",
            "message": format!(
                "the gateway is restarting; approval {} is kept and still {}: wait on status_url, then repeat the request with Stepgate-Approval: {}",
                approval.id,
                approval.state.as_str(),
                approval.id
            ),
            "approval": approval_json(shared, approval),
            "answer_headers": { "Stepgate-Approval": approval.id },
        }),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Builds the response to a request whose approval does not let it
/// through.
pub(crate) fn rejected(rejection: &ApprovalRejection) -> Response<Body> {
    let status = match rejection {
        ApprovalRejection::Pending { .. } => StatusCode::CONFLICT,
        ApprovalRejection::TooManyPending(_) => StatusCode::TOO_MANY_REQUESTS,
        ApprovalRejection::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    answer::error(status, rejection.code(), &rejection.to_string())
}

/// Outcome of holding a request.
pub(crate) enum Hold {
    /// The approval left the pending state, or the wait ran out.
    Settled(Box<ApprovalRecord>),
    /// The gateway is stopping.
    Stopping,
    Failed,
}

/// Holds a request until approval `id` is decided, `wait` passes or the
/// gateway stops.
pub(crate) async fn hold(shared: &Shared, id: &str, wait: Duration) -> Hold {
    let Some(desk) = shared.engine.approvals() else {
        return Hold::Failed;
    };
    let mut stopping = shared.stopping.subscribe();
    if *stopping.borrow() {
        return Hold::Stopping;
    }
    tokio::select! {
        result = desk.wait(id, wait) => match result {
            Ok(approval) => Hold::Settled(Box::new(approval)),
            Err(err) => {
                tracing::error!(approval.id = %id, error = %err, "cannot read an approval while holding a request");
                Hold::Failed
            }
        },
        _ = stopping.wait_for(|stopping| *stopping) => Hold::Stopping,
    }
}

/// `GET /.stepgate/approvals/{id}`: the approval's state for the identity
/// that requested it, held up to `Prefer: wait=N` seconds while pending.
/// Anyone else gets 404, so approval ids cannot be probed.
pub(crate) async fn status(shared: &Shared, request: &Request<Incoming>) -> Response<Body> {
    let not_found = || {
        answer::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such approval for this identity; send the identity's token with the approval id from the approval_required answer",
        )
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the approval status URL accepts GET",
        );
    }
    let Some(desk) = shared.engine.approvals() else {
        return not_found();
    };
    let id = request.uri().path().trim_start_matches(STATUS_PREFIX);
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(identity) = shared.engine.identity_of(authorization) else {
        return answer::unauthenticated(authorization.is_some());
    };
    let approval = match desk.approval(id) {
        Ok(Some(approval)) if approval.identity == identity => approval,
        Ok(_) => return not_found(),
        Err(err) => {
            tracing::error!(approval.id = %id, error = %err, "cannot read an approval");
            return answer::unavailable();
        }
    };
    let wait = prefer_wait(request.headers()).map(|secs| secs.min(desk.config().max_wait_secs));
    // Long polls share the held-request slots; without a free slot the
    // state is returned at once.
    let slot = shared.held.try_acquire();
    let (approval, waited) = match wait {
        Some(secs) if secs > 0 && approval.state == ApprovalState::Pending && slot.is_ok() => {
            match hold(shared, id, Duration::from_secs(secs)).await {
                Hold::Settled(approval) => (*approval, Some(secs)),
                Hold::Stopping => return stopping(shared, &approval),
                Hold::Failed => return answer::unavailable(),
            }
        }
        _ => (approval, None),
    };
    let mut response = json_response(StatusCode::OK, &approval_json(shared, &approval));
    if let Some(secs) = waited
        && let Ok(value) = HeaderValue::from_str(&format!("wait={secs}"))
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("preference-applied"), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append("prefer", HeaderValue::from_str(line).unwrap());
        }
        map
    }

    #[test]
    fn prefer_wait_parses_rfc_7240_forms() {
        assert_eq!(prefer_wait(&headers(&["wait=10"])), Some(10));
        assert_eq!(prefer_wait(&headers(&["respond-async, wait=5"])), Some(5));
        assert_eq!(prefer_wait(&headers(&["WAIT = 7"])), Some(7));
        assert_eq!(
            prefer_wait(&headers(&["handling=lenient", "wait=\"3\""])),
            Some(3)
        );
        assert_eq!(prefer_wait(&headers(&["wait=3;foo=bar"])), Some(3));
    }

    #[test]
    fn prefer_wait_ignores_bad_values() {
        assert_eq!(prefer_wait(&headers(&[])), None);
        assert_eq!(prefer_wait(&headers(&["wait=-1"])), None);
        assert_eq!(prefer_wait(&headers(&["wait=1.5"])), None);
        assert_eq!(prefer_wait(&headers(&["wait="])), None);
        assert_eq!(
            prefer_wait(&headers(&["wait=99999999999"])),
            Some(99_999_999_999)
        );
        assert_eq!(
            prefer_wait(&headers(&["wait=999999999999999999999999"])),
            Some(u64::MAX)
        );
        assert_eq!(prefer_wait(&headers(&["waiting=3"])), None);
    }

    #[test]
    fn operation_digest_covers_body() {
        let empty = operation("POST", "api", "/orders", b"");
        let body = operation("POST", "api", "/orders", b"{\"n\":1}");
        let other = operation("POST", "api", "/orders", b"{\"n\":2}");
        assert_eq!(empty.body_sha256, None);
        assert_ne!(empty.digest, body.digest);
        assert_ne!(body.digest, other.digest);
        let put = operation("PUT", "api", "/orders", b"{\"n\":1}");
        assert_ne!(body.digest, put.digest);
        let query = operation("POST", "api", "/orders?x=1", b"{\"n\":1}");
        assert_ne!(body.digest, query.digest);
        let host = operation("POST", "prod", "/orders", b"{\"n\":1}");
        assert_ne!(body.digest, host.digest);
        assert_eq!(body.body_bytes, 7);
        assert_eq!(body.body_preview.as_deref(), Some("{\"n\":1}"));
    }

    #[test]
    fn body_preview_is_text_only() {
        assert_eq!(body_preview(b""), None);
        assert_eq!(body_preview(&[0xff, 0xfe, 0x00]), None);
        let long = "é".repeat(3000);
        let preview = body_preview(long.as_bytes()).unwrap();
        assert!(preview.ends_with('…'));
        assert!(preview.len() <= BODY_PREVIEW_BYTES + '…'.len_utf8());
    }
}
