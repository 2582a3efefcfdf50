//! Public JSON Web Keys (RFC 7517) and their thumbprints (RFC 7638).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::PopError;

/// Members that only a private or symmetric key has. A proof's `jwk` with
/// any of them is refused (RFC 9449 §4.3, check 7).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// A public key from a JWK, with the members its thumbprint covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicJwk {
    /// `kty` EC, `crv` P-256 or P-384, the point as `0x04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
        x: String,
        y: String,
    },
    /// `kty` OKP, `crv` Ed25519.
    Ed25519 { key: Vec<u8>, x: String },
    /// `kty` RSA.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        n_text: String,
        e_text: String,
    },
}

/// Elliptic curves of EC keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// JWS algorithms a proof may use: asymmetric ones only, never `none` or a
/// MAC (RFC 9449 §4.3, check 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Es256,
    Es384,
    EdDsa,
    Ps256,
    Ps384,
    Ps512,
    Rs256,
}

impl Algorithm {
    /// Reads a JWS `alg` value; `None` for anything not accepted.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "EdDSA" | "Ed25519" => Algorithm::EdDsa,
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "RS256" => Algorithm::Rs256,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Rs256 => "RS256",
        }
    }
}

/// Decodes base64url without padding, as JOSE writes it, refusing padding
/// and non-canonical trailing bits.
pub(crate) fn b64(text: &str, what: &str) -> Result<Vec<u8>, PopError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| PopError::Malformed(format!("{what} is not base64url without padding")))
}

fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, PopError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| PopError::Malformed(format!("jwk has no string member {name:?}")))
}

impl PublicJwk {
    /// Reads a public JWK, refusing private or symmetric keys, unknown key
    /// types and curves, and RSA keys below 2048 bits.
    pub fn from_json(value: &Value) -> Result<PublicJwk, PopError> {
        let object = value
            .as_object()
            .ok_or_else(|| PopError::Malformed("jwk is not a JSON object".to_owned()))?;
        if let Some(private) = PRIVATE_MEMBERS
            .iter()
            .find(|name| object.contains_key(**name))
        {
            return Err(PopError::PrivateKey(format!(
                "jwk has the private member {private:?}; send the public key only"
            )));
        }
        match member(object, "kty")? {
            "EC" => {
                let curve = match member(object, "crv")? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    other => {
                        return Err(PopError::Unsupported(format!(
                            "EC curve {other:?}; use P-256 or P-384"
                        )));
                    }
                };
                let (x, y) = (member(object, "x")?, member(object, "y")?);
                let (xb, yb) = (b64(x, "jwk x")?, b64(y, "jwk y")?);
                if xb.len() != curve.coordinate_len() || yb.len() != curve.coordinate_len() {
                    return Err(PopError::Malformed(format!(
                        "jwk coordinates have the wrong length for {}",
                        curve.name()
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * xb.len());
                point.push(0x04);
                point.extend_from_slice(&xb);
                point.extend_from_slice(&yb);
                Ok(PublicJwk::Ec {
                    curve,
                    point,
                    x: x.to_owned(),
                    y: y.to_owned(),
                })
            }
            "OKP" => {
                let curve = member(object, "crv")?;
                if curve != "Ed25519" {
                    return Err(PopError::Unsupported(format!(
                        "OKP curve {curve:?}; use Ed25519"
                    )));
                }
                let x = member(object, "x")?;
                let key = b64(x, "jwk x")?;
                if key.len() != 32 {
                    return Err(PopError::Malformed(
                        "Ed25519 jwk x is not 32 bytes".to_owned(),
                    ));
                }
                Ok(PublicJwk::Ed25519 {
                    key,
                    x: x.to_owned(),
                })
            }
            "RSA" => {
                let (n_text, e_text) = (member(object, "n")?, member(object, "e")?);
                let n = b64(n_text, "jwk n")?;
                let e = b64(e_text, "jwk e")?;
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if bits < MIN_RSA_BITS {
                    return Err(PopError::Unsupported(format!(
                        "RSA key of {bits} bits; use at least {MIN_RSA_BITS}"
                    )));
                }
                Ok(PublicJwk::Rsa {
                    n,
                    e,
                    n_text: n_text.to_owned(),
                    e_text: e_text.to_owned(),
                })
            }
            other => Err(PopError::Unsupported(format!(
                "key type {other:?}; use EC, OKP or RSA"
            ))),
        }
    }

    /// Computes the RFC 7638 thumbprint: SHA-256 of the required members in
    /// lexicographic order without whitespace, base64url encoded.
    pub fn thumbprint(&self) -> String {
        // The members are base64url text, which needs no JSON escaping.
        let canonical = match self {
            PublicJwk::Ec { curve, x, y, .. } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{x}","y":"{y}"}}"#,
                curve.name()
            ),
            PublicJwk::Ed25519 { x, .. } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
            PublicJwk::Rsa { n_text, e_text, .. } => {
                format!(r#"{{"e":"{e_text}","kty":"RSA","n":"{n_text}"}}"#)
            }
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Verifies a JWS signature over `message` with `algorithm`, which must
    /// suit the key type.
    pub fn verify(&self, algorithm: Algorithm, message: &[u8], sig: &[u8]) -> Result<(), PopError> {
        let mismatch = || {
            PopError::Unsupported(format!(
                "alg {} does not suit this key type",
                algorithm.name()
            ))
        };
        let result = match (self, algorithm) {
            (
                PublicJwk::Ec {
                    curve: Curve::P256,
                    point,
                    ..
                },
                Algorithm::Es256,
            ) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, sig),
            (
                PublicJwk::Ec {
                    curve: Curve::P384,
                    point,
                    ..
                },
                Algorithm::Es384,
            ) => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                .verify(message, sig),
            (PublicJwk::Ed25519 { key, .. }, Algorithm::EdDsa) => {
                UnparsedPublicKey::new(&signature::ED25519, key).verify(message, sig)
            }
            (PublicJwk::Rsa { n, e, .. }, rsa) => {
                let params = match rsa {
                    Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    _ => return Err(mismatch()),
                };
                signature::RsaPublicKeyComponents { n, e }.verify(params, message, sig)
            }
            _ => return Err(mismatch()),
        };
        result.map_err(|_| PopError::BadSignature)
    }
}
