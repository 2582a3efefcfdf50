//! The one mapping from engine verdicts and front-end errors to HTTP
//! responses: status, RFC 9470 / RFC 6750 headers and a JSON body.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use stepgate_engine::{ChallengeIssued, StepUpFailure};

use crate::Body;

/// Header that carries the id of the challenge a request answers.
pub(crate) const CHALLENGE_HEADER: &str = "stepgate-challenge";
/// Header that carries a TOTP code.
pub(crate) const TOTP_HEADER: &str = "stepgate-totp";
/// Header of a DPoP proof (RFC 9449), for a challenge or a DPoP-bound token.
pub(crate) const DPOP_HEADER: &str = "dpop";

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
pub(crate) fn challenge(issued: &ChallengeIssued) -> Response<Body> {
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
                "answer_headers": { "Stepgate-Challenge": issued.id, "Stepgate-Totp": "<current TOTP code>" },
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
    let mut response = json_response(StatusCode::UNAUTHORIZED, &body);
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
