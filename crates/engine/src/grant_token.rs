//! Grants as short-lived signed tokens, so that another replica can check a
//! step-up without a shared lookup. A token is a compact JWS (RFC 7515)
//! signed with the gateway's Ed25519 key. It is bound to the identity, the
//! scope, the client network and, where the request proved one, the DPoP
//! key or client certificate (RFC 7800 `cnf`).

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use stepgate_core::{Action, FactorKind, Grant, GrantScope, IdentityName, Network, Timestamp};
use stepgate_pop::{Algorithm, PublicJwk};

/// Media type in the token's `typ` header.
const TOKEN_TYPE: &str = "stepgate-grant+jwt";

/// Maximum token length in bytes. Longer tokens are not parsed.
const MAX_TOKEN_BYTES: usize = 4096;

/// Reason a presented grant token does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantTokenError {
    #[error("grant token is malformed: {0}")]
    Malformed(&'static str),
    #[error("grant token is signed by unknown key {0:?}")]
    UnknownKey(String),
    #[error("grant token signature does not verify")]
    BadSignature,
    #[error("grant token expired")]
    Expired,
    #[error("grant token was issued to another identity")]
    WrongIdentity,
    #[error("grant token does not cover this request's scope or network")]
    OutOfScope,
    #[error("grant token is bound to a DPoP key or certificate this request did not prove")]
    WrongKey,
}

/// Claims of a grant token.
#[derive(Debug, Deserialize, Serialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    /// Action and route template the grant covers.
    act: String,
    res: String,
    /// The client network, such as `127.0.9.0/24`.
    net: String,
    /// The factor proved, as its ACR URI.
    acr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

/// The key a grant is bound to: a DPoP key (RFC 9449 §6.1) or a client
/// certificate (RFC 8705 §3.1).
#[derive(Debug, Deserialize, Serialize)]
struct Confirmation {
    #[serde(skip_serializing_if = "Option::is_none")]
    jkt: Option<String>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// The key that signs grant tokens and the keys whose tokens count.
pub struct GrantKeys {
    signer: Ed25519KeyPair,
    kid: String,
    trusted: Vec<(String, PublicJwk)>,
}

impl std::fmt::Debug for GrantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantKeys").field("kid", &self.kid).finish()
    }
}

impl GrantKeys {
    /// Builds the keys from the signing key (PKCS#8 DER, Ed25519) and the
    /// public keys of other replicas. The signing key's own public key is
    /// always trusted.
    pub fn new(pkcs8: &[u8], others: Vec<PublicJwk>) -> Result<GrantKeys, String> {
        let signer = Ed25519KeyPair::from_pkcs8(pkcs8)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8))
            .map_err(|_| "the grant key is not an Ed25519 private key in PKCS#8".to_owned())?;
        let own = PublicJwk::from_json(&serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(signer.public_key().as_ref()),
        }))
        .map_err(|err| err.to_string())?;
        if let Some(other) = others
            .iter()
            .find(|key| !matches!(key, PublicJwk::Ed25519 { .. }))
        {
            return Err(format!(
                "trusted grant key {} is not an Ed25519 key; grant tokens are signed with Ed25519 only",
                other.thumbprint()
            ));
        }
        let kid = own.thumbprint();
        let mut trusted = vec![(kid.clone(), own)];
        trusted.extend(others.into_iter().map(|key| (key.thumbprint(), key)));
        Ok(GrantKeys {
            signer,
            kid,
            trusted,
        })
    }

    /// Builds the keys from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(text: &str, others: Vec<PublicJwk>) -> Result<GrantKeys, String> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
            .map_err(|_| "no valid -----BEGIN PRIVATE KEY----- block".to_owned())?;
        GrantKeys::new(der.secret_pkcs8_der(), others)
    }

    /// Generates a new Ed25519 signing key as PKCS#8 PEM.
    pub fn generate_pem() -> Result<String, String> {
        // PKCS#8 v1 (RFC 5208), which openssl and other tools read; v2
        // also carries the public key.
        let der = Ed25519KeyPair::generate()
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(|_| "cannot generate an Ed25519 key".to_owned())?;
        let base64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// Returns the public JWK of the signing key, for other replicas'
    /// `grant_trusted_keys`.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.signer.public_key().as_ref()),
        })
    }

    /// Returns the RFC 7638 thumbprint of the signing key, the tokens' `kid`.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// Signs a token for `grant`, bound to the DPoP key `jkt` and the
    /// client certificate `x5t` when given.
    pub(crate) fn issue(&self, grant: &Grant, jkt: Option<&str>, x5t: Option<&str>) -> String {
        let header = serde_json::json!({ "alg": "EdDSA", "typ": TOKEN_TYPE, "kid": self.kid });
        let claims = Claims {
            sub: grant.identity.to_string(),
            iat: grant.proved_at.as_secs(),
            exp: grant.expires_at.as_secs(),
            act: grant.scope.action.as_str().to_owned(),
            res: grant.scope.resource.clone(),
            net: grant.network.to_string(),
            acr: grant.factor.acr().to_owned(),
            cnf: (jkt.is_some() || x5t.is_some()).then(|| Confirmation {
                jkt: jkt.map(str::to_owned),
                x5t: x5t.map(str::to_owned),
            }),
        };
        let claims = serde_json::to_string(&claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.signer.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// Checks a presented token and returns the grant it carries when it
    /// covers this identity, scope and network at `now`. `proved_jkt` and
    /// `proved_x5t` are the thumbprints of the DPoP key and the client
    /// certificate this request proved, if any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn verify(
        &self,
        token: &str,
        identity: &IdentityName,
        scope: &GrantScope,
        network: Network,
        proved_jkt: Option<&str>,
        proved_x5t: Option<&str>,
        now: Timestamp,
    ) -> Result<Grant, GrantTokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(GrantTokenError::Malformed("longer than 4096 bytes"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GrantTokenError::Malformed("not a compact JWS"));
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
        let header: Header = decode(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(GrantTokenError::Malformed("header"))?;
        if header.alg != "EdDSA" || header.typ != TOKEN_TYPE {
            return Err(GrantTokenError::Malformed("alg or typ"));
        }
        let key = self
            .trusted
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .map(|(_, key)| key)
            .ok_or_else(|| GrantTokenError::UnknownKey(header.kid.clone()))?;
        let signature = decode(signature).ok_or(GrantTokenError::Malformed("signature"))?;
        let (signing_input, _) = token
            .rsplit_once('.')
            .ok_or(GrantTokenError::Malformed("not a compact JWS"))?;
        key.verify(Algorithm::EdDsa, signing_input.as_bytes(), &signature)
            .map_err(|_| GrantTokenError::BadSignature)?;
        let claims: Claims = decode(claims)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(GrantTokenError::Malformed("claims"))?;
        if now.as_secs() >= claims.exp {
            return Err(GrantTokenError::Expired);
        }
        if claims.sub != identity.as_str() {
            return Err(GrantTokenError::WrongIdentity);
        }
        let action: Action = claims
            .act
            .parse()
            .map_err(|_| GrantTokenError::Malformed("act"))?;
        let granted_network =
            Network::parse(&claims.net).ok_or(GrantTokenError::Malformed("net"))?;
        if action != scope.action || claims.res != scope.resource || granted_network != network {
            return Err(GrantTokenError::OutOfScope);
        }
        if let Some(cnf) = &claims.cnf {
            let jkt_ok = cnf.jkt.is_none() || cnf.jkt.as_deref() == proved_jkt;
            let x5t_ok = cnf.x5t.is_none() || cnf.x5t.as_deref() == proved_x5t;
            if !(jkt_ok && x5t_ok) {
                return Err(GrantTokenError::WrongKey);
            }
        }
        let factor = FactorKind::ALL
            .into_iter()
            .find(|kind| kind.acr() == claims.acr)
            .ok_or(GrantTokenError::Malformed("acr"))?;
        Ok(Grant {
            identity: identity.clone(),
            scope: scope.clone(),
            network,
            factor,
            proved_at: Timestamp::from_secs(claims.iat),
            expires_at: Timestamp::from_secs(claims.exp),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn keys() -> GrantKeys {
        GrantKeys::from_pem(&GrantKeys::generate_pem().unwrap(), Vec::new()).unwrap()
    }

    fn scope(resource: &str) -> GrantScope {
        GrantScope {
            action: Action::Write,
            resource: resource.to_owned(),
        }
    }

    fn grant() -> Grant {
        Grant::new(
            IdentityName::new("bot").unwrap(),
            scope("/orders/{n}"),
            Network::of("127.0.9.9".parse().unwrap()),
            FactorKind::Signature,
            Timestamp::from_secs(NOW),
            Duration::from_secs(300),
        )
    }

    fn check(keys: &GrantKeys, token: &str, at: i64) -> Result<Grant, GrantTokenError> {
        keys.verify(
            token,
            &IdentityName::new("bot").unwrap(),
            &scope("/orders/{n}"),
            Network::of("127.0.9.200".parse().unwrap()),
            None,
            None,
            Timestamp::from_secs(at),
        )
    }

    #[test]
    fn issued_token_verifies_until_expiry() {
        let keys = keys();
        let token = keys.issue(&grant(), None, None);
        let verified = check(&keys, &token, NOW + 299).unwrap();
        assert_eq!(verified.factor, FactorKind::Signature);
        assert_eq!(verified.proved_at, Timestamp::from_secs(NOW));
        assert_eq!(
            check(&keys, &token, NOW + 300),
            Err(GrantTokenError::Expired)
        );
    }

    #[test]
    fn other_replica_key_is_trusted_when_configured() {
        let issuer = keys();
        let token = issuer.issue(&grant(), None, None);
        let stranger = keys();
        assert!(matches!(
            check(&stranger, &token, NOW),
            Err(GrantTokenError::UnknownKey(_))
        ));
        let public = PublicJwk::from_json(&serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(issuer.signer.public_key().as_ref()),
        }))
        .unwrap();
        let pem = GrantKeys::generate_pem().unwrap();
        let trusting = GrantKeys::from_pem(&pem, vec![public]).unwrap();
        assert!(check(&trusting, &token, NOW).is_ok());
    }

    #[test]
    fn token_covers_only_its_identity_scope_and_network() {
        let keys = keys();
        let token = keys.issue(&grant(), None, None);
        let now = Timestamp::from_secs(NOW);
        let network = Network::of("127.0.9.1".parse().unwrap());
        let other = IdentityName::new("other").unwrap();
        let bot = IdentityName::new("bot").unwrap();
        assert_eq!(
            keys.verify(
                &token,
                &other,
                &scope("/orders/{n}"),
                network,
                None,
                None,
                now
            ),
            Err(GrantTokenError::WrongIdentity)
        );
        assert_eq!(
            keys.verify(&token, &bot, &scope("/admin"), network, None, None, now),
            Err(GrantTokenError::OutOfScope)
        );
        let elsewhere = Network::of("127.0.10.1".parse().unwrap());
        assert_eq!(
            keys.verify(
                &token,
                &bot,
                &scope("/orders/{n}"),
                elsewhere,
                None,
                None,
                now
            ),
            Err(GrantTokenError::OutOfScope)
        );
    }

    #[test]
    fn bound_token_needs_its_dpop_key() {
        let keys = keys();
        let token = keys.issue(&grant(), Some("jkt-1"), None);
        let bot = IdentityName::new("bot").unwrap();
        let network = Network::of("127.0.9.1".parse().unwrap());
        let now = Timestamp::from_secs(NOW);
        let verify =
            |jkt| keys.verify(&token, &bot, &scope("/orders/{n}"), network, jkt, None, now);
        assert_eq!(verify(None), Err(GrantTokenError::WrongKey));
        assert_eq!(verify(Some("jkt-2")), Err(GrantTokenError::WrongKey));
        assert!(verify(Some("jkt-1")).is_ok());
    }

    #[test]
    fn bound_token_needs_its_certificate() {
        let keys = keys();
        let token = keys.issue(&grant(), None, Some("x5t-1"));
        let bot = IdentityName::new("bot").unwrap();
        let network = Network::of("127.0.9.1".parse().unwrap());
        let now = Timestamp::from_secs(NOW);
        let verify =
            |x5t| keys.verify(&token, &bot, &scope("/orders/{n}"), network, None, x5t, now);
        assert_eq!(verify(None), Err(GrantTokenError::WrongKey));
        assert_eq!(verify(Some("x5t-2")), Err(GrantTokenError::WrongKey));
        assert!(verify(Some("x5t-1")).is_ok());
    }

    #[test]
    fn altered_or_malformed_tokens_fail() {
        let keys = keys();
        let token = keys.issue(&grant(), None, None);
        let (header, rest) = token.split_once('.').unwrap();
        let (claims, signature) = rest.split_once('.').unwrap();
        let mut decoded: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        decoded["exp"] = serde_json::json!(NOW + 86_400);
        let longer = URL_SAFE_NO_PAD.encode(decoded.to_string());
        assert_eq!(
            check(&keys, &format!("{header}.{longer}.{signature}"), NOW + 400),
            Err(GrantTokenError::BadSignature)
        );
        let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"stepgate-grant+jwt","kid":"x"}"#);
        assert!(matches!(
            check(&keys, &format!("{none}.{claims}."), NOW),
            Err(GrantTokenError::Malformed(_))
        ));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(
                matches!(check(&keys, bad, NOW), Err(GrantTokenError::Malformed(_))),
                "{bad}"
            );
        }
        let huge = "a".repeat(5000);
        assert!(matches!(
            check(&keys, &huge, NOW),
            Err(GrantTokenError::Malformed(_))
        ));
    }
}
