//! DPoP proofs (RFC 9449): every check of §4.3 and a replay cache of `jti`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use stepgate_core::Timestamp;

use crate::PopError;
use crate::jwk::{Algorithm, PublicJwk, b64};

/// The `typ` of a DPoP proof.
const PROOF_TYPE: &str = "dpop+jwt";

/// Longest `jti` kept; a longer one is refused rather than stored.
const MAX_JTI_LEN: usize = 256;

/// Largest proof read, in bytes of the header value.
const MAX_PROOF_LEN: usize = 16 * 1024;

/// Accepted age of a proof's `iat`, past and future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpopWindow {
    /// Seconds a proof stays acceptable after its `iat`.
    pub max_age_secs: i64,
    /// Seconds an `iat` may lie ahead of the gateway's clock.
    pub future_secs: i64,
}

impl Default for DpopWindow {
    fn default() -> Self {
        Self {
            max_age_secs: 60,
            future_secs: 5,
        }
    }
}

/// The request a proof must match.
#[derive(Clone, Copy, Debug)]
pub struct ProofTarget<'a> {
    /// The request method, such as `POST`.
    pub method: &'a str,
    /// The request URI as the gateway's public origin makes it, such as
    /// `https://api.example.com/v1/orders`; its query and fragment are
    /// ignored.
    pub uri: &'a str,
    /// The access token presented with the proof, when there is one.
    pub access_token: Option<&'a str>,
    /// Nonces the gateway handed out with `DPoP-Nonce` and still accepts;
    /// empty when it requires none.
    pub nonces: &'a [String],
    pub now: Timestamp,
}

/// A proof that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof's key (`jkt`).
    pub thumbprint: String,
    pub jti: String,
    pub iat: i64,
    pub algorithm: Algorithm,
}

/// Verifies the `DPoP` header values of one request against `target`, then
/// records its `jti` in `replays`. `headers` contains every `DPoP` header of
/// the request, and more or fewer than one is rejected.
pub fn verify_proof(
    headers: &[&str],
    target: &ProofTarget<'_>,
    window: DpopWindow,
    replays: &ReplayCache,
) -> Result<VerifiedProof, PopError> {
    let [proof] = headers else {
        return Err(PopError::Malformed(format!(
            "{} DPoP headers; send exactly one",
            headers.len()
        )));
    };
    if proof.len() > MAX_PROOF_LEN {
        return Err(PopError::Malformed(format!(
            "DPoP proof longer than {MAX_PROOF_LEN} bytes"
        )));
    }
    let mut parts = proof.split('.');
    let (Some(header_text), Some(payload_text), Some(signature_text), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PopError::Malformed(
            "DPoP proof is not a compact JWS of three parts".to_owned(),
        ));
    };
    let header = json_object(&b64(header_text, "JWS header")?, "JWS header")?;
    let payload = json_object(&b64(payload_text, "JWT payload")?, "JWT payload")?;
    let signature = b64(signature_text, "JWS signature")?;

    let typ = string(&header, "typ")?;
    if !typ.eq_ignore_ascii_case(PROOF_TYPE) {
        return Err(PopError::Malformed(format!(
            "typ is {typ:?}; a DPoP proof has typ {PROOF_TYPE}"
        )));
    }
    let alg = string(&header, "alg")?;
    let algorithm = Algorithm::from_name(alg).ok_or_else(|| {
        PopError::Unsupported(format!(
            "alg {alg:?}; use an asymmetric algorithm such as ES256, EdDSA or PS256"
        ))
    })?;
    let jwk = PublicJwk::from_json(
        header
            .get("jwk")
            .ok_or_else(|| PopError::Malformed("JWS header has no jwk".to_owned()))?,
    )?;
    let signing_input = &proof[..header_text.len() + 1 + payload_text.len()];
    jwk.verify(algorithm, signing_input.as_bytes(), &signature)?;

    let jti = string(&payload, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(PopError::Malformed(format!(
            "jti must have 1 to {MAX_JTI_LEN} characters"
        )));
    }
    let htm = string(&payload, "htm")?;
    if htm != target.method {
        return Err(PopError::WrongTarget(format!(
            "htm {htm:?} is not the request method {}",
            target.method
        )));
    }
    let htu = string(&payload, "htu")?;
    if !same_uri(htu, target.uri) {
        return Err(PopError::WrongTarget(format!(
            "htu {htu:?} is not this request's URI {}",
            without_query(target.uri)
        )));
    }
    let iat = payload
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| PopError::Malformed("JWT payload has no integer iat".to_owned()))?;
    let now = target.now.as_secs();
    if iat > now.saturating_add(window.future_secs) {
        return Err(PopError::Expired(format!(
            "iat {iat} is {} s in the future",
            iat - now
        )));
    }
    if iat < now.saturating_sub(window.max_age_secs) {
        return Err(PopError::Expired(format!(
            "iat {iat} is {} s old; proofs are accepted for {} s",
            now - iat,
            window.max_age_secs
        )));
    }
    if !target.nonces.is_empty() {
        match payload.get("nonce").and_then(Value::as_str) {
            Some(nonce)
                if target
                    .nonces
                    .iter()
                    .any(|expected| constant_time_eq(nonce.as_bytes(), expected.as_bytes())) => {}
            Some(_) => return Err(PopError::Nonce("nonce is not a current one".to_owned())),
            None => return Err(PopError::Nonce("proof has no nonce".to_owned())),
        }
    }
    if let Some(token) = target.access_token {
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        match payload.get("ath").and_then(Value::as_str) {
            Some(ath) if constant_time_eq(ath.as_bytes(), expected.as_bytes()) => {}
            Some(_) => {
                return Err(PopError::WrongTarget(
                    "ath is not the hash of the presented token".to_owned(),
                ));
            }
            None => return Err(PopError::Malformed("proof has no ath".to_owned())),
        }
    }
    let thumbprint = jwk.thumbprint();
    // A proof stays acceptable while its iat is within the window.
    let keep_until = iat.saturating_add(window.max_age_secs);
    replays.remember(&thumbprint, jti, keep_until, now)?;
    Ok(VerifiedProof {
        thumbprint,
        jti: jti.to_owned(),
        iat,
        algorithm,
    })
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, PopError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(PopError::Malformed(format!("{what} is not a JSON object"))),
    }
}

fn string<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, PopError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PopError::Malformed(format!("DPoP proof has no string {name:?}")))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn without_query(uri: &str) -> &str {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    &uri[..end]
}

/// Splits `scheme://authority/path` into lower-case scheme, lower-case host,
/// port (the scheme's default when absent) and path, ignoring query and
/// fragment. `None` for anything else.
fn uri_parts(uri: &str) -> Option<(String, String, u16, &str)> {
    let uri = without_query(uri);
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority.ends_with(']') => {
            let port = authority[colon + 1..].parse::<u16>().ok()?;
            (&authority[..colon], port)
        }
        _ => (authority, default_port),
    };
    Some((scheme, host.to_ascii_lowercase(), port, path))
}

/// Compares two URIs as RFC 9449 §4.3 allows: scheme and host without regard
/// to case, an explicit default port as none, the query and fragment
/// ignored. Paths must match byte for byte, and an empty path equals `/`.
pub fn same_uri(claimed: &str, actual: &str) -> bool {
    match (uri_parts(claimed), uri_parts(actual)) {
        (Some(a), Some(b)) => {
            let path = |path: &str| {
                if path.is_empty() {
                    "/".to_owned()
                } else {
                    path.to_owned()
                }
            };
            a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && path(a.3) == path(b.3)
        }
        _ => false,
    }
}

/// Maximum number of proofs remembered at once. Past this, expired entries
/// are dropped. If none has expired the proof is rejected: the gateway fails
/// closed rather than forget a `jti` that could still be replayed.
const MAX_REMEMBERED: usize = 100_000;

/// `jti` values seen per key thumbprint, each kept until no check could
/// accept its proof any more.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl ReplayCache {
    /// Records a proof's `jti` until `keep_until` (Unix seconds); fails when
    /// the same key already used it and the entry has not run out.
    pub fn remember(
        &self,
        thumbprint: &str,
        jti: &str,
        keep_until: i64,
        now: i64,
    ) -> Result<(), PopError> {
        let mut seen = self.seen.lock();
        let key = (thumbprint.to_owned(), jti.to_owned());
        if let Some(until) = seen.get(&key)
            && *until >= now
        {
            return Err(PopError::Replayed(format!(
                "jti {jti:?} was already used with this key"
            )));
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= MAX_REMEMBERED {
                return Err(PopError::Replayed(
                    "too many recent proofs to remember; retry shortly".to_owned(),
                ));
            }
        }
        seen.insert(key, keep_until);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seconds one nonce is handed out; the previous one is still accepted, so a
/// nonce stays valid for one to two periods.
pub const NONCE_PERIOD_SECS: i64 = 60;

/// Server-provided DPoP nonces (RFC 9449 §8), derived from a secret key and
/// the time, so that any replica with the key can check them without state.
pub struct NonceIssuer {
    key: [u8; 32],
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceIssuer")
    }
}

impl NonceIssuer {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Creates an issuer with a random key.
    pub fn random() -> Result<Self, PopError> {
        let mut key = [0_u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| PopError::Unsupported("no random numbers for DPoP nonces".to_owned()))?;
        Ok(Self { key })
    }

    fn nonce_for(&self, period: i64) -> String {
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.key),
            &period.to_be_bytes(),
        );
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..18])
    }

    /// Returns the nonce to hand out at `now`.
    pub fn current(&self, now: Timestamp) -> String {
        self.nonce_for(now.as_secs().div_euclid(NONCE_PERIOD_SECS))
    }

    /// Returns the nonces a proof may carry at `now`: the current and the
    /// previous one.
    pub fn accepted(&self, now: Timestamp) -> [String; 2] {
        let period = now.as_secs().div_euclid(NONCE_PERIOD_SECS);
        [self.nonce_for(period), self.nonce_for(period - 1)]
    }
}
