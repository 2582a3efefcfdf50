//! The one mapping from engine verdicts and front-end errors to HTTP
//! responses: status, RFC 9470 / RFC 6750 headers and a JSON body.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use stepgate_core::FactorKind;
use stepgate_engine::{ChallengeIssued, StepUpFailure};

use crate::Body;

/// Header that carries the id of the challenge a request answers.
pub(crate) const CHALLENGE_HEADER: &str = "stepgate-challenge";
/// Header that carries a TOTP code.
pub(crate) const TOTP_HEADER: &str = "stepgate-totp";
/// Header of a DPoP proof (RFC 9449), for a challenge or a DPoP-bound token.
pub(crate) const DPOP_HEADER: &str = "dpop";
/// Header of a signed grant token, sent back after a step-up and shown by
/// the client on later requests.
pub(crate) const GRANT_HEADER: &str = "stepgate-grant";
/// Headers of an HTTP message signature (RFC 9421).
pub(crate) const SIGNATURE_INPUT_HEADER: &str = "signature-input";
pub(crate) const SIGNATURE_HEADER: &str = "signature";
/// Header with the digest of the body (RFC 9530).
pub(crate) const CONTENT_DIGEST_HEADER: &str = "content-digest";

/// The `Accept-Signature` value (RFC 9421 §5.1) of a challenge: the
/// components a signature must cover, the challenge id as nonce, and a
/// request for a creation time.
pub(crate) fn accept_signature(challenge_id: &str, has_body: bool) -> String {
    let digest = if has_body { " \"content-digest\"" } else { "" };
    format!(
        r#"stepgate=("@method" "@target-uri" "@authority"{digest});created;nonce="{challenge_id}""#
    )
}

/// The headers that answer a challenge with `factor`, with what goes in
/// each, for the challenge's JSON body.
fn answer_headers(factor: FactorKind, challenge_id: &str) -> Value {
    match factor {
        FactorKind::Totp => json!({
            "Stepgate-Challenge": challenge_id,
            "Stepgate-Totp": "<current TOTP code>",
        }),
        FactorKind::Dpop => json!({
            "Stepgate-Challenge": challenge_id,
            "DPoP": "<proof signed by the identity's bound key>",
        }),
        FactorKind::Signature => json!({
            "Stepgate-Challenge": challenge_id,
            "Content-Digest": "<sha-256 digest of the body, when there is one>",
            "Signature-Input": "<covering the components of Accept-Signature>",
            "Signature": "<by an enrolled signing key>",
        }),
        FactorKind::Certificate => json!({
            "Stepgate-Challenge": challenge_id,
        }),
        FactorKind::Approval => json!({
            "Stepgate-Approval": "<id of an approved approval of this exact request>",
        }),
    }
}

/// Builds a JSON response with `Cache-Control: no-store`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(Full::new(bytes).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A plain error: `{"error": code, "message": message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": code, "message": message }))
}

/// 401 for a missing or invalid credential (RFC 6750 §3). The body says
/// nothing about which check failed, so it does not help guessing.
pub(crate) fn unauthenticated(credential_presented: bool) -> Response<Body> {
    let (header, message) = if credential_presented {
        (
            r#"Bearer realm="stepgate", error="invalid_token""#,
            "the access token is missing, malformed, unknown, revoked or disabled",
        )
    } else {
        (
            r#"Bearer realm="stepgate""#,
            "send an API token as Authorization: Bearer TOKEN",
        )
    };
    let mut response = error(StatusCode::UNAUTHORIZED, "invalid_token", message);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(header));
    response
}

/// The step-up challenge (RFC 9470 §3): 401 with
/// `WWW-Authenticate: Bearer error="insufficient_user_authentication"`,
/// `acr_values` and `max_age`, and a JSON body that says how to answer.
pub(crate) fn challenge(
    issued: &ChallengeIssued,
    accept_signature: Option<&str>,
) -> Response<Body> {
    let acr_values: Vec<&str> = issued.factors.iter().map(|factor| factor.acr()).collect();
    let header = format!(
        r#"Bearer realm="stepgate", error="insufficient_user_authentication", error_description="A step-up is required", acr_values="{}", max_age="{}""#,
        acr_values.join(" "),
        issued.max_age.as_secs()
    );
    let factors: Vec<Value> = issued
        .factors
        .iter()
        .map(|factor| {
            json!({
                "factor": factor.name(),
                "acr": factor.acr(),
                "answer_headers": answer_headers(*factor, &issued.id),
            })
        })
        .collect();
    let mut body = json!({
        "error": "insufficient_user_authentication",
        "message": "this request needs a step-up: repeat it with the headers in answer_headers",
        "challenge_id": issued.id,
        "identity": issued.identity.as_str(),
        "factors": factors,
        "expires_at": issued.expires_at.to_rfc3339(),
        "max_age": issued.max_age.as_secs(),
    });
    if let Some(reasons) = &issued.reasons {
        body["risk"] = json!(issued.risk.value());
        body["reasons"] = json!(reasons
            .iter()
            .map(|signal| json!({ "signal": signal.kind.name(), "weight": signal.weight, "reason": signal.reason, "evidence": signal.evidence }))
            .collect::<Vec<_>>());
    }
    if let Some(accept) = accept_signature {
        body["accept_signature"] = json!(accept);
    }
    if issued.then_approval {
        body["then"] = json!("approval");
        body["message"] = json!(
            "this request needs a step-up and then a person's approval: repeat it with the headers in answer_headers, and the answer will say how the approval is requested"
        );
    }
    let mut response = json_response(StatusCode::UNAUTHORIZED, &body);
    if let Some(value) = accept_signature.and_then(|accept| HeaderValue::from_str(accept).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("accept-signature"), value);
    }
    match HeaderValue::from_str(&header) {
        Ok(value) => {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        Err(err) => tracing::error!(error = %err, "cannot build the challenge header"),
    }
    response
}

/// 401 for a step-up answer that was not accepted.
pub(crate) fn step_up_failed(failure: &StepUpFailure, challenge_id: &str) -> Response<Body> {
    let mut body = json!({
        "error": "step_up_failed",
        "reason": failure.code(),
        "message": failure.to_string(),
    });
    if failure.challenge_still_open() {
        body["challenge_id"] = json!(challenge_id);
    }
    let mut response = json_response(StatusCode::UNAUTHORIZED, &body);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="stepgate", error="insufficient_user_authentication", error_description="The step-up answer was not accepted""#,
        ),
    );
    response
}

/// 401 asking for a DPoP proof with the nonce in the `DPoP-Nonce` header.
/// 401 for a certificate-bound token on a connection without its client
/// certificate (RFC 8705 §3).
pub(crate) fn certificate_required() -> Response<Body> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "this token is bound to a client certificate: send it over TLS with that certificate (curl --cert CERT --key KEY)",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="stepgate", error="invalid_token", error_description="The token is bound to a client certificate""#,
        ),
    );
    response
}

pub(crate) fn use_dpop_nonce() -> Response<Body> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "use_dpop_nonce",
        "sign a new DPoP proof with the nonce in the DPoP-Nonce header",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#,
        ),
    );
    response
}

pub(crate) fn denied() -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        "access_denied",
        "the policy denies this request and no step-up can permit it",
    )
}

pub(crate) fn unavailable() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the gateway cannot decide or record this request now; retry later",
    )
}
