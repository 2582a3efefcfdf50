//! The request path: normalise, route, ask the engine, then forward or
//! answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, FORWARDED, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use stepgate_core::{Action, RequestFacts, Timestamp};
use stepgate_engine::{
    BodyDigest, DpopAnswer, RequestInput, SignatureAnswer, StepUpAnswer, Verdict,
};
use stepgate_pop::httpsig::Message;
use tracing::Instrument;

use crate::answer::{
    self, CHALLENGE_HEADER, CONTENT_DIGEST_HEADER, DPOP_HEADER, GRANT_HEADER, SIGNATURE_HEADER,
    SIGNATURE_INPUT_HEADER, TOTP_HEADER,
};
use crate::approval::{self, APPROVAL_HEADER, Hold};
use crate::client_addr::client_addr;
use crate::hop::remove_hop_by_hop;
use crate::path::{normalize_path, redact_query, route_template};
use crate::route::Route;
use crate::{Body, Connection, Shared, UpstreamBody};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Handles one request from a client connection, inside a request span.
/// The connection's verified client certificate, if any, goes to the
/// engine with the request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    connection: Connection,
    request: Request<Incoming>,
) -> Response<Body> {
    let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!(
        "request",
        request.id = request_id,
        http.method = %request.method(),
        client.addr = %connection.peer,
        identity = tracing::field::Empty,
        tls.client.x5t_s256 = connection
            .client_certificate
            .as_ref()
            .map(|certificate| certificate.thumbprint_sha256.as_str()),
    );
    handle_in_span(shared, connection, request)
        .instrument(span)
        .await
}

/// Numbers requests for log correlation, per process.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

async fn handle_in_span(
    shared: Arc<Shared>,
    connection: Connection,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    if request.uri().path().starts_with(approval::STATUS_PREFIX) {
        let response = approval::status(&shared, &request).await;
        tracing::debug!(http.method = %method, http.status = response.status().as_u16(), "approval status served");
        return response;
    }
    let response = match prepare(&shared, connection.peer, &request) {
        Ok(prepared) => decide_and_forward(&shared, prepared, connection, request, started).await,
        Err(response) => response,
    };
    tracing::debug!(http.method = %method, http.status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request done");
    response
}

/// Request details worked out before the engine decides.
struct Prepared {
    route: Route,
    facts_peer: IpAddr,
    facts: RequestFacts,
    audit_target: String,
    path_and_query: String,
    /// The authority the request named, lowercased, or `-` without one;
    /// an approval covers it because it routes the request.
    host: String,
}

// The error is the finished response, built once per rejected request.
#[allow(clippy::result_large_err)]
fn prepare(
    shared: &Shared,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Result<Prepared, Response<Body>> {
    if let Err(message) = check_framing(request.headers()) {
        shared.metrics.request("bad_request");
        tracing::warn!(client.addr = %peer, reason = message, "ambiguous request framing rejected");
        return Err(answer::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            message,
        ));
    }
    if let Err(message) = check_host(request) {
        shared.metrics.request("bad_request");
        tracing::warn!(client.addr = %peer, reason = message, "request with a bad Host rejected");
        return Err(answer::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            message,
        ));
    }
    if request.method() == Method::CONNECT {
        shared.metrics.request("bad_request");
        return Err(answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "CONNECT is not supported by this gateway",
        ));
    }
    let raw_path = request.uri().path();
    let path = normalize_path(raw_path).map_err(|err| {
        shared.metrics.request("bad_request");
        tracing::warn!(client.addr = %peer, error = %err, "request path rejected");
        answer::error(StatusCode::BAD_REQUEST, "bad_path", &err.to_string())
    })?;
    let host = request_host(request);
    let route = shared
        .router
        .find(host.as_deref(), &path)
        .cloned()
        .ok_or_else(|| {
            shared.metrics.request("no_route");
            answer::error(
                StatusCode::NOT_FOUND,
                "no_route",
                "no route matches this host and path",
            )
        })?;

    let query = request.uri().query();
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.clone(),
    };
    let audit_target = match query {
        Some(query) => format!("{path}?{}", redact_query(query)),
        None => path.clone(),
    };
    let zone = shared.engine.settings().zones.find(&path).cloned();
    let action = Action::from_http(
        request.method().as_str(),
        zone.as_ref().is_some_and(|zone| zone.admin),
    );
    let template = route_template(&path);
    let mut client =
        client_addr(peer.ip(), request.headers(), &shared.trusted_proxies).to_canonical();
    if client.is_unspecified() {
        // The engine reads the unspecified address as "no network", which
        // would switch the network signals off; no real client has it.
        tracing::warn!(client.addr = %client, peer.addr = %peer, "forwarded client address is unspecified, using the peer");
        client = peer.ip().to_canonical();
    }
    let facts = RequestFacts {
        client_addr: client,
        peer_addr: peer.ip().to_canonical(),
        method: request.method().as_str().to_owned(),
        operation: format!("{} {template}", request.method()),
        resource: template,
        path,
        action,
        zone_read_only: zone.as_ref().is_some_and(|zone| zone.read_only),
        zone_sensitive: zone.as_ref().is_some_and(|zone| zone.sensitive),
        zone: zone.map(|zone| zone.name),
        time: Timestamp::default(),
        user_agent: header_str(request.headers(), &USER_AGENT).map(str::to_owned),
        credential: None,
        location: None,
    };
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str().to_ascii_lowercase(),
        None => header_str(request.headers(), &HOST)
            .map_or_else(|| "-".to_owned(), str::to_ascii_lowercase),
    };
    Ok(Prepared {
        route,
        facts_peer: peer.ip().to_canonical(),
        facts,
        audit_target,
        path_and_query,
        host,
    })
}

async fn decide_and_forward(
    shared: &Shared,
    prepared: Prepared,
    connection: Connection,
    request: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let signature_inputs = field_lines(headers, SIGNATURE_INPUT_HEADER);
    let signatures = field_lines(headers, SIGNATURE_HEADER);
    let has_body = !body.is_end_stream();
    let mut body = UpstreamBody::Left(body);
    // A signed answer covers the body's digest, so the body is read whole
    // and checked before the engine decides. It is read only for a valid
    // token with an open challenge that accepts signatures, within a time
    // limit and a gateway-wide cap on concurrent reads.
    let signs = headers.contains_key(CHALLENGE_HEADER)
        && (!signature_inputs.is_empty() || !signatures.is_empty());
    let mut digest_mismatch = None;
    let mut body_failure: Option<BodyReadFailure> = None;
    let mut digest_state = if has_body {
        BodyDigest::Missing
    } else {
        BodyDigest::NoBody
    };
    let expected = signs
        && shared.engine.expects_signed_answer(
            single_header(headers, &AUTHORIZATION),
            single_header(headers, &HeaderName::from_static(CHALLENGE_HEADER)).unwrap_or(""),
        );
    if expected {
        match read_signed_body(shared, body).await {
            Ok(bytes) => {
                let digest = field_lines(headers, CONTENT_DIGEST_HEADER);
                if !digest.is_empty() {
                    match stepgate_pop::verify_content_digest(&digest.join(", "), &bytes) {
                        Ok(()) => digest_state = BodyDigest::Matches,
                        Err(err) => digest_mismatch = Some(err.to_string()),
                    }
                } else if bytes.is_empty() {
                    digest_state = BodyDigest::NoBody;
                }
                body = UpstreamBody::Right(Full::new(bytes));
            }
            Err(failure) => {
                body = UpstreamBody::Right(Full::new(Bytes::new()));
                body_failure = Some(failure);
            }
        }
    }
    let body_digest = match (&body_failure, &digest_mismatch) {
        (Some(failure), _) => BodyDigest::Unreadable(&failure.message),
        (None, Some(reason)) => BodyDigest::Mismatch(reason),
        (None, None) => digest_state,
    };
    // Only a signed answer needs the header list and the public path.
    let (fields, signed_path): (Vec<(&str, &str)>, String) = if signs {
        let fields = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        (
            fields,
            format!("{}{}", shared.origin.prefix, prepared.facts.path),
        )
    } else {
        (Vec::new(), String::new())
    };
    let signature = signs.then_some(SignatureAnswer {
        inputs: &signature_inputs,
        signatures: &signatures,
        message: Message {
            method: Some(parts.method.as_str()),
            scheme: &shared.origin.scheme,
            authority: &shared.origin.authority,
            path: &signed_path,
            query: parts.uri.query(),
            status: None,
            fields: &fields,
        },
        body: body_digest,
    });
    let authorization = single_header(headers, &AUTHORIZATION);
    let challenge_id = single_header(headers, &HeaderName::from_static(CHALLENGE_HEADER));
    let totp_code = single_header(headers, &HeaderName::from_static(TOTP_HEADER));
    let credential_presented = headers.contains_key(AUTHORIZATION);
    // Every DPoP header, so that the engine can refuse more than one; a
    // value that is not visible ASCII counts as a malformed proof.
    let dpop_proofs: Vec<&str> = headers
        .get_all(HeaderName::from_static(DPOP_HEADER))
        .iter()
        .map(|value| value.to_str().unwrap_or("\u{0}"))
        .collect();
    let dpop_uri = format!("{}{}", shared.origin.full, prepared.facts.path);
    let dpop = (!dpop_proofs.is_empty()).then_some(DpopAnswer {
        proofs: &dpop_proofs,
        uri: &dpop_uri,
    });
    let answer = challenge_id.map(|challenge_id| StepUpAnswer {
        challenge_id,
        totp_code,
        dpop,
        signature,
    });
    // An approval covers the digest of the whole body, so a request that
    // claims one has its body read whole, but only for a valid token.
    let approval_id = single_header(headers, &HeaderName::from_static(APPROVAL_HEADER));
    let wait = approval::prefer_wait(headers);
    let mut body_bytes: Option<Bytes> = None;
    let mut claimed_operation = None;
    let claimant = approval_id
        .filter(|_| shared.engine.approvals().is_some())
        .and_then(|_| shared.engine.identity_of(authorization));
    if let (Some(id), Some(claimant)) = (approval_id, &claimant) {
        if body_failure.is_some() {
            return answer::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send either Stepgate-Approval or a signed step-up answer, not both",
            );
        }
        let bytes = match take_body(shared, &mut body, claimant).await {
            Ok(bytes) => bytes,
            Err(failure) => {
                tracing::info!(
                    approval.id = id,
                    reason = failure.code,
                    "body of a request with an approval not read"
                );
                return answer::error(failure.status, failure.code, &failure.message);
            }
        };
        claimed_operation = Some(approval::operation(
            parts.method.as_str(),
            &prepared.host,
            &prepared.path_and_query,
            &bytes,
        ));
        body_bytes = Some(bytes);
    }
    let claimed = approval_id
        .zip(claimed_operation.as_ref())
        .map(|(id, operation)| stepgate_engine::ApprovalAnswer {
            id,
            operation: &operation.digest,
        });
    let input = RequestInput {
        authorization,
        session_token: None,
        sql: None,
        answer,
        dpop: Some(DpopAnswer {
            proofs: &dpop_proofs,
            uri: &dpop_uri,
        }),
        facts: prepared.facts,
        audit_target: prepared.audit_target,
        grant_token: single_header(headers, &HeaderName::from_static(GRANT_HEADER)),
        client_certificate: connection.client_certificate,
        client_certificates_checked: connection.scheme == "https"
            && shared.checks_client_certificates,
        approval: claimed,
        dpop_checked: false,
    };
    let retry = (wait.is_some_and(|secs| secs > 0) && approval_id.is_none()).then(|| input.clone());
    let verdict = if answer.is_some() || claimed.is_some() {
        // Checking an answer writes the accepted TOTP step durably, which
        // blocks; let the runtime move other tasks off this thread.
        tokio::task::block_in_place(|| shared.engine.decide(input))
    } else {
        shared.engine.decide(input)
    };
    shared
        .metrics
        .decision_time(started.elapsed().as_secs_f64());
    let retried_operation;
    let verdict = match verdict {
        Verdict::ApprovalRequired(pending) => {
            let bytes = match body_bytes.take() {
                Some(bytes) => bytes,
                None => match take_body(shared, &mut body, &pending.identity).await {
                    Ok(bytes) => bytes,
                    Err(failure) => {
                        let receipt = shared.engine.abandon_approval(pending, &failure.message);
                        if receipt.wait().await.is_err() {
                            return answer::unavailable();
                        }
                        shared.metrics.request("bad_request");
                        return answer::error(failure.status, failure.code, &failure.message);
                    }
                },
            };
            body = UpstreamBody::Right(Full::new(bytes.clone()));
            let operation = approval::operation(
                parts.method.as_str(),
                &prepared.host,
                &prepared.path_and_query,
                &bytes,
            );
            let Some(desk) = shared.engine.approvals() else {
                return answer::unavailable();
            };
            let record = match tokio::task::block_in_place(|| desk.request(*pending, &operation)) {
                Ok(Ok(record)) => record,
                Ok(Err(rejection)) => {
                    shared.metrics.request("approval_rejected");
                    return approval::rejected(&rejection);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot record an approval request, failing closed");
                    shared.metrics.request("unavailable");
                    return answer::unavailable();
                }
            };
            shared.metrics.request("approval_required");
            tracing::info!(identity = %record.identity, approval.id = %record.id, "request needs approval");
            let Some((retry, secs)) = retry.zip(wait) else {
                return approval::required(shared, &record, None);
            };
            let secs = secs.min(desk.config().max_wait_secs);
            let Ok(_slot) = shared.held.try_acquire() else {
                tracing::warn!(approval.id = %record.id, "too many held requests, responding without holding");
                return approval::required(shared, &record, None);
            };
            let settled = match approval::hold(shared, &record.id, Duration::from_secs(secs)).await
            {
                Hold::Settled(settled) => settled,
                Hold::Stopping => {
                    tracing::info!(approval.id = %record.id, "gateway stopping, releasing a held request");
                    return approval::stopping(shared, &record);
                }
                Hold::Failed => return answer::unavailable(),
            };
            match settled.state {
                stepgate_store::ApprovalState::Approved => {}
                stepgate_store::ApprovalState::Pending => {
                    shared.metrics.request("approval_wait_timeout");
                    return approval::required(shared, &settled, Some(secs));
                }
                _ => return approval::closed(shared, &settled),
            }
            retried_operation = operation;
            let mut input = retry;
            // A step-up answered by the held request is already recorded as
            // a grant, and its code or proof cannot be used twice.
            input.answer = None;
            input.dpop_checked = true;
            input.approval = Some(stepgate_engine::ApprovalAnswer {
                id: &settled.id,
                operation: &retried_operation.digest,
            });
            tokio::task::block_in_place(|| shared.engine.decide(input))
        }
        other => other,
    };

    if let Some(identity) = verdict_identity(&verdict) {
        tracing::Span::current().record("identity", identity);
    }
    match &verdict {
        Verdict::Allow(allowed) => shared.metrics.signals(allowed.signals()),
        Verdict::Challenge(issued, _) => shared.metrics.signals(issued.signals.iter().copied()),
        Verdict::Deny { signals, .. } => shared.metrics.signals(signals.iter().copied()),
        _ => {}
    }
    match verdict {
        Verdict::Allow(_) if body_failure.is_some() => {
            // Only a signed answer reads the body, and it cannot pass
            // without one; never forward a body that was cut short.
            tracing::error!(
                "request allowed although its signed body was not read, failing closed"
            );
            shared.metrics.request("unavailable");
            answer::unavailable()
        }
        Verdict::Allow(mut allowed) => {
            if let Some(factor) = allowed.stepped_up {
                shared.metrics.step_up("success");
                tracing::info!(identity = %allowed.identity, factor = factor.name(), "step-up accepted");
            }
            if let Some(receipt) = allowed.receipt.take()
                && receipt.wait().await.is_err()
            {
                shared.metrics.request("unavailable");
                return answer::unavailable();
            }
            shared.metrics.request("allow");
            let identity = allowed.identity.clone();
            let grant_token = allowed.grant_token.take();
            let target = Target {
                route: &prepared.route,
                path_and_query: &prepared.path_and_query,
                peer: prepared.facts_peer,
                scheme: connection.scheme,
            };
            // Records the request even when the client goes away while the
            // upstream works and this future is dropped.
            let mut pending = PendingFinish {
                engine: &shared.engine,
                allowed: Some(allowed),
                started,
            };
            let request = Request::from_parts(parts, body);
            let (mut response, status) = forward(shared, target, &identity, request).await;
            pending.finish(status);
            if let Some(value) = grant_token.and_then(|token| HeaderValue::from_str(&token).ok()) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(GRANT_HEADER), value);
            }
            if status.is_some() {
                let engine = shared.engine.clone();
                response.map(|body| {
                    crate::boxed(crate::volume::CountedBody::new(body, engine, identity))
                })
            } else {
                response
            }
        }
        Verdict::Challenge(issued, receipt) => {
            if receipt.wait().await.is_err() {
                shared.metrics.request("unavailable");
                return answer::unavailable();
            }
            shared.metrics.request("step_up");
            for factor in &issued.factors {
                shared.metrics.challenge(factor.name());
            }
            tracing::info!(identity = %issued.identity, challenge.id = %issued.id, risk = issued.risk.value(), "step-up challenge sent");
            let accept_signature = issued
                .factors
                .contains(&stepgate_core::FactorKind::Signature)
                .then(|| answer::accept_signature(&issued.id, has_body));
            let mut response = answer::challenge(&issued, accept_signature.as_deref());
            if issued.factors.contains(&stepgate_core::FactorKind::Dpop) {
                add_dpop_nonce(shared, &mut response);
            }
            response
        }
        Verdict::Deny {
            identity,
            risk,
            receipt,
            ..
        } => {
            if receipt.wait().await.is_err() {
                shared.metrics.request("unavailable");
                return answer::unavailable();
            }
            shared.metrics.request("deny");
            tracing::info!(identity = %identity, risk = risk.value(), "request denied");
            answer::denied()
        }
        Verdict::Unauthenticated(failure, receipt) => {
            if receipt.wait().await.is_err() {
                shared.metrics.request("unavailable");
                return answer::unavailable();
            }
            shared.metrics.request("unauthenticated");
            tracing::info!(reason = failure.as_str(), "authentication failed");
            if failure == stepgate_engine::AuthFailure::CertificateRequired {
                return answer::certificate_required();
            }
            if failure == stepgate_engine::AuthFailure::DpopNonce {
                let mut response = answer::use_dpop_nonce();
                add_dpop_nonce(shared, &mut response);
                return response;
            }
            answer::unauthenticated(credential_presented)
        }
        Verdict::StepUpFailed(failure, receipt) => {
            if receipt.wait().await.is_err() {
                shared.metrics.request("unavailable");
                return answer::unavailable();
            }
            shared.metrics.request("step_up_failed");
            shared.metrics.step_up(failure.code());
            if let Some(body) = &body_failure {
                return answer::error(body.status, body.code, &body.message);
            }
            let mut response = answer::step_up_failed(&failure, challenge_id.unwrap_or_default());
            if failure == stepgate_engine::StepUpFailure::DpopNonce {
                add_dpop_nonce(shared, &mut response);
            }
            response
        }
        Verdict::ApprovalRequired(pending) => {
            // An approval was proved and the policy asks for another; this
            // does not happen with one approval per operation.
            let receipt = shared.engine.abandon_approval(
                pending,
                "a second approval was asked for the same operation",
            );
            let _ = receipt.wait().await;
            shared.metrics.request("deny");
            answer::denied()
        }
        Verdict::ApprovalRejected {
            identity,
            rejection,
            receipt,
        } => {
            if receipt.wait().await.is_err() {
                shared.metrics.request("unavailable");
                return answer::unavailable();
            }
            shared.metrics.request("approval_rejected");
            tracing::info!(identity = %identity, reason = rejection.code(), "approval not accepted");
            approval::rejected(&rejection)
        }
        Verdict::Unavailable => {
            shared.metrics.request("unavailable");
            answer::unavailable()
        }
    }
}

/// Reads the rest of a request body whole for an approval's digest and
/// puts it back as a buffered body.
async fn take_body(
    shared: &Shared,
    body: &mut UpstreamBody,
    identity: &stepgate_core::IdentityName,
) -> Result<Bytes, approval::BodyFailure> {
    let taken = std::mem::replace(body, UpstreamBody::Right(Full::new(Bytes::new())));
    let bytes = match taken {
        UpstreamBody::Right(full) => full
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default(),
        left if left.is_end_stream() => Bytes::new(),
        left => {
            let Some(_reading) = approval::BodyReader::start(shared, identity) else {
                return Err(approval::BodyFailure {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "too_many_bodies",
                    message: format!(
                        "identity {identity} already has {} request bodies being read for approvals; finish sending those first",
                        approval::BODY_READS_PER_IDENTITY
                    ),
                });
            };
            approval::read_body(shared, left, shared.approval_body_bytes).await?
        }
    };
    *body = UpstreamBody::Right(Full::new(bytes.clone()));
    Ok(bytes)
}

fn verdict_identity(verdict: &Verdict) -> Option<&str> {
    match verdict {
        Verdict::Allow(allowed) => Some(allowed.identity.as_str()),
        Verdict::Challenge(issued, _) => Some(issued.identity.as_str()),
        Verdict::Deny { identity, .. } => Some(identity.as_str()),
        _ => None,
    }
}

/// An allowed request whose audit record is still to be written.
struct PendingFinish<'a> {
    engine: &'a stepgate_engine::Engine,
    allowed: Option<Box<stepgate_engine::Allowed>>,
    started: Instant,
}

impl PendingFinish<'_> {
    fn finish(&mut self, upstream_status: Option<u16>) {
        if let Some(allowed) = self.allowed.take() {
            self.engine
                .finish(allowed, upstream_status, self.started.elapsed());
        }
    }
}

impl Drop for PendingFinish<'_> {
    fn drop(&mut self) {
        if self.allowed.is_some() {
            tracing::debug!("client went away before the upstream answered");
            self.finish(None);
        }
    }
}

/// Most bytes of a request body read whole to check its `Content-Digest`.
const MAX_SIGNED_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Longest wait for a signed answer's body, including the wait for a
/// reading slot.
const SIGNED_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a signed answer's body could not be read: the status and message
/// the client gets once the engine has recorded the failure.
struct BodyReadFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// Reads the body of a signed answer whole, up to
/// [`MAX_SIGNED_BODY_BYTES`] and within [`SIGNED_BODY_TIMEOUT`], holding
/// one of the gateway's slots for such reads.
async fn read_signed_body(shared: &Shared, body: UpstreamBody) -> Result<Bytes, BodyReadFailure> {
    let read = async {
        let _slot = shared.signed_body_slots.acquire().await;
        http_body_util::Limited::new(body, MAX_SIGNED_BODY_BYTES)
            .collect()
            .await
    };
    match tokio::time::timeout(SIGNED_BODY_TIMEOUT, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(BodyReadFailure {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!(
                "a signed step-up answer's body is read whole to check its Content-Digest and may have at most {MAX_SIGNED_BODY_BYTES} bytes; answer the challenge with a smaller request"
            ),
        }),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "failed to read the body of a signed step-up answer");
            Err(BodyReadFailure {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request_body",
                message: "the request body is malformed or ended early".to_owned(),
            })
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = SIGNED_BODY_TIMEOUT.as_secs(),
                "reading the body of a signed step-up answer timed out"
            );
            Err(BodyReadFailure {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "body_timeout",
                message: format!(
                    "the body of the signed step-up answer did not arrive within {} s; send it again",
                    SIGNED_BODY_TIMEOUT.as_secs()
                ),
            })
        }
    }
}

/// Returns every field line of `name` as text. A value that is not
/// visible ASCII becomes a NUL, which no check accepts.
fn field_lines<'a>(headers: &'a HeaderMap, name: &'static str) -> Vec<&'a str> {
    headers
        .get_all(HeaderName::from_static(name))
        .iter()
        .map(|value| value.to_str().unwrap_or("\u{0}"))
        .collect()
}

/// True when forwarding failed because reading the client's body failed,
/// not because of the upstream: hyper reports the body stream's error as a
/// user error, and the body's own error as a parse error.
fn client_body_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(hyper_error) = error.downcast_ref::<hyper::Error>()
            && (hyper_error.is_user() || hyper_error.is_parse())
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// Destination and sender of a permitted request.
struct Target<'a> {
    route: &'a Route,
    path_and_query: &'a str,
    peer: IpAddr,
    /// Scheme the client used to reach the gateway.
    scheme: &'static str,
}

/// Sends the request upstream and returns the response to relay, with the
/// upstream status when there was one.
async fn forward(
    shared: &Shared,
    target: Target<'_>,
    identity: &stepgate_core::IdentityName,
    request: Request<UpstreamBody>,
) -> (Response<Body>, Option<u16>) {
    let Target {
        route,
        path_and_query,
        peer,
        scheme,
    } = target;
    let (mut parts, body) = request.into_parts();
    let target = format!("{}{}", route.base_path, path_and_query);
    let uri = match Uri::builder()
        .scheme(route.scheme.clone())
        .authority(route.authority.clone())
        .path_and_query(target)
        .build()
    {
        Ok(uri) => uri,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the upstream URI");
            return (
                answer::error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "cannot build the upstream request",
                ),
                None,
            );
        }
    };
    let client_host = header_str(&parts.headers, &HOST)
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|authority| authority.to_string()));
    prepare_upstream_headers(
        shared,
        &mut parts.headers,
        identity,
        Client {
            addr: peer,
            scheme,
            host: client_host.as_deref(),
        },
    );
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let upstream_request = Request::from_parts(parts, body);

    let sent = Instant::now();
    let result = tokio::time::timeout(
        shared.response_timeout,
        shared.client.request(upstream_request),
    )
    .await;
    shared.metrics.upstream_time(sent.elapsed().as_secs_f64());
    match result {
        Ok(Ok(mut response)) => {
            remove_hop_by_hop(response.headers_mut());
            let status = response.status().as_u16();
            (response.map(crate::boxed), Some(status))
        }
        Ok(Err(err)) if client_body_failed(&err) => {
            tracing::warn!(upstream = %route.authority, error = %err, "client request body malformed or cut short");
            (
                answer::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request_body",
                    "the request body is malformed or ended early",
                ),
                None,
            )
        }
        Ok(Err(err)) => {
            tracing::warn!(upstream = %route.authority, error = %err, "upstream request failed");
            (
                answer::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream could not be reached or failed",
                ),
                None,
            )
        }
        Err(_) => {
            tracing::warn!(upstream = %route.authority, timeout_s = shared.response_timeout.as_secs(), "upstream response timed out");
            (
                answer::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                ),
                None,
            )
        }
    }
}

/// The client side of a request, as the forwarded headers describe it.
struct Client<'a> {
    addr: IpAddr,
    /// `http` or `https`, as the client reached the gateway.
    scheme: &'static str,
    host: Option<&'a str>,
}

/// Rewrites the headers for the upstream: hop-by-hop headers, the
/// gateway credential and step-up headers go; `Forwarded`,
/// `X-Forwarded-*` and the identity header come.
fn prepare_upstream_headers(
    shared: &Shared,
    headers: &mut HeaderMap,
    identity: &stepgate_core::IdentityName,
    client: Client<'_>,
) {
    let Client {
        addr: peer,
        scheme,
        host: client_host,
    } = client;
    let peer_is_trusted = shared.trusted_proxies.contains(peer);
    remove_hop_by_hop(headers);
    headers.remove(AUTHORIZATION);
    headers.remove(CHALLENGE_HEADER);
    headers.remove(GRANT_HEADER);
    headers.remove(TOTP_HEADER);
    headers.remove(&shared.identity_header);
    // Some frameworks read `Stepgate_Identity` as the same CGI variable as
    // `Stepgate-Identity`, so every spelling with '_' for '-' goes too.
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            name.as_str().contains('_')
                && name.as_str().replace('_', "-") == shared.identity_header.as_str()
        })
        .cloned()
        .collect();
    for name in lookalikes {
        headers.remove(name);
    }
    if !peer_is_trusted {
        // Only a trusted proxy may extend the chain; anything else a client
        // sent is replaced.
        headers.remove(FORWARDED);
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
    }
    let node = match peer {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut forwarded = format!("for={node};proto={scheme}");
    if let Some(host) =
        client_host.filter(|host| host.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
    {
        forwarded.push_str(&format!(";host=\"{host}\""));
    }
    append_header(headers, FORWARDED, &forwarded);
    append_header(headers, X_FORWARDED_FOR, &peer.to_string());
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if !headers.contains_key(HOST)
        && let Some(value) = client_host.and_then(|host| HeaderValue::from_str(host).ok())
    {
        headers.insert(HOST, value);
    }
    if let Ok(value) = HeaderValue::from_str(identity.as_str()) {
        headers.insert(shared.identity_header.clone(), value);
    }
}

/// Appends `value` to the last field line of `name`, or adds the field.
fn append_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
    {
        existing if existing.is_empty() => value.to_owned(),
        existing => format!("{}, {value}", existing.join(", ")),
    };
    if let Ok(joined) = HeaderValue::from_str(&joined) {
        headers.insert(name, joined);
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The value of a header that must appear at most once; `None` when it is
/// missing, repeated or not visible ASCII.
fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Host of the request without port, lower case: the `Host` header for
/// HTTP/1.1, the `:authority` for HTTP/2.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
    let raw = match request.uri().authority() {
        Some(authority) => authority.to_string(),
        None => header_str(request.headers(), &HOST)?.to_owned(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

/// Checks the Host header: HTTP/1.1 requests carry exactly one (RFC 9112
/// §3.2), and its value must be a valid authority.
fn check_host(request: &Request<Incoming>) -> Result<(), &'static str> {
    let hosts: Vec<&HeaderValue> = request.headers().get_all(HOST).iter().collect();
    if hosts.len() > 1 {
        return Err("several Host headers: send exactly one");
    }
    if request.version() == http::Version::HTTP_11 && hosts.is_empty() {
        return Err("missing Host header: HTTP/1.1 requests must send one");
    }
    if let Some(value) = hosts.first() {
        let valid = value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<http::uri::Authority>().ok())
            .is_some_and(|authority| !authority.as_str().contains('@'));
        if !valid {
            return Err("invalid Host header: send host[:port]");
        }
    }
    Ok(())
}

/// Rejects framing that two HTTP parsers could read differently: several
/// Content-Length values, a Transfer-Encoding whose final coding is not
/// chunked, or both headers at once.
fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let lengths: Vec<&HeaderValue> = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    if lengths.len() > 1 || lengths.iter().any(|value| value.as_bytes().contains(&b',')) {
        return Err("several Content-Length values: send exactly one");
    }
    let codings: Vec<&HeaderValue> = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .collect();
    if codings.is_empty() {
        return Ok(());
    }
    if !lengths.is_empty() {
        return Err("both Content-Length and Transfer-Encoding: send only one");
    }
    let last = codings
        .last()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .map(|coding| coding.trim().to_ascii_lowercase());
    if last.as_deref() != Some("chunked") {
        return Err("Transfer-Encoding must end with chunked");
    }
    Ok(())
}

/// Adds the current `DPoP-Nonce` (RFC 9449 §8) when the gateway requires
/// nonces.
fn add_dpop_nonce(shared: &Shared, response: &mut Response<Body>) {
    if let Some(nonce) = shared.engine.dpop_nonce()
        && let Ok(value) = http::HeaderValue::from_str(&nonce)
    {
        response
            .headers_mut()
            .insert(HeaderName::from_static("dpop-nonce"), value);
    }
}
