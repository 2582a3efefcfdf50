//! A signer whose private key is an unencrypted PKCS#8 file.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RSA_PSS_SHA512, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use stepgate_pop::PublicJwk;
use stepgate_pop::httpsig::SignatureAlgorithm;
use zeroize::Zeroizing;

use crate::{SignError, Signer};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// How to turn other private key files into unencrypted PKCS#8.
const CONVERT_HINT: &str = "convert it to unencrypted PKCS#8 with: \
     openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8.pem";

enum Key {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signer with an Ed25519, P-256, P-384 or RSA private key read from a
/// PKCS#8 PEM file. The algorithm follows from the key type, and RSA keys
/// sign with `rsa-pss-sha512`.
pub struct KeyFileSigner {
    key: Key,
    algorithm: SignatureAlgorithm,
    jwk: Value,
}

impl std::fmt::Debug for KeyFileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFileSigner")
            .field("algorithm", &self.algorithm.name())
            .finish_non_exhaustive()
    }
}

impl KeyFileSigner {
    /// Reads a PKCS#8 PEM private key file.
    pub fn from_file(path: &Path) -> Result<KeyFileSigner, SignError> {
        let text = Zeroizing::new(std::fs::read(path).map_err(|err| {
            SignError::KeyFile(format!("cannot read key file {}: {err}", path.display()))
        })?);
        let text = std::str::from_utf8(&text).map_err(|_| {
            SignError::KeyFile(format!(
                "key file {} is not PEM text; {CONVERT_HINT}",
                path.display()
            ))
        })?;
        KeyFileSigner::from_pem(text).map_err(|err| match err {
            SignError::KeyFile(message) => {
                SignError::KeyFile(format!("key file {}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Reads a private key from PEM text with a `PRIVATE KEY` block
    /// (unencrypted PKCS#8, RFC 5958).
    pub fn from_pem(pem: &str) -> Result<KeyFileSigner, SignError> {
        let der = pem_private_key(pem)?;
        KeyFileSigner::from_pkcs8_der(&der)
    }

    /// Reads an unencrypted PKCS#8 private key in DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<KeyFileSigner, SignError> {
        let (key, algorithm, jwk) = if let Ok(pair) = Ed25519KeyPair::from_pkcs8(der) {
            let jwk = json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            });
            (Key::Ed25519(pair), SignatureAlgorithm::Ed25519, jwk)
        } else if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            let jwk = ec_jwk("P-256", pair.public_key().as_ref());
            let algorithm = SignatureAlgorithm::EcdsaP256Sha256;
            (Key::Ecdsa(pair), algorithm, jwk)
        } else if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der) {
            let jwk = ec_jwk("P-384", pair.public_key().as_ref());
            let algorithm = SignatureAlgorithm::EcdsaP384Sha384;
            (Key::Ecdsa(pair), algorithm, jwk)
        } else if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let jwk = json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.n)),
                "e": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.e)),
            });
            (Key::Rsa(pair), SignatureAlgorithm::RsaPssSha512, jwk)
        } else {
            return Err(SignError::KeyFile(
                "the PKCS#8 key is not a valid Ed25519, P-256, P-384 or RSA (at least 2048 bits) \
                 private key"
                    .to_owned(),
            ));
        };
        // The verifier accepts only keys that `PublicJwk` accepts, so check
        // here rather than at the gateway.
        PublicJwk::from_json(&jwk)?;
        Ok(KeyFileSigner {
            key,
            algorithm,
            jwk,
        })
    }
}

impl Signer for KeyFileSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let failed = |what: &str| SignError::Signing(format!("{what} signing failed"));
        match &self.key {
            Key::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Key::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| failed("ECDSA")),
            Key::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PSS_SHA512,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| failed("RSA-PSS"))?;
                Ok(signature)
            }
        }
    }
}

/// Builds an EC JWK from an uncompressed point `0x04 || x || y`.
pub(crate) fn ec_jwk(curve: &str, point: &[u8]) -> Value {
    let coordinates = point.get(1..).unwrap_or_default();
    let (x, y) = coordinates.split_at(coordinates.len() / 2);
    json!({
        "kty": "EC",
        "crv": curve,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    })
}

/// Strips leading zero bytes from a big-endian integer, as JWK `n` and `e`
/// require (RFC 7518 §6.3.1).
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Decodes the `PRIVATE KEY` block of PEM text. For other PEM blocks the
/// error gives the command that converts them.
fn pem_private_key(pem: &str) -> Result<Zeroizing<Vec<u8>>, SignError> {
    let Some(start) = pem.find(PEM_BEGIN) else {
        let message = if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            format!("the private key is encrypted; {CONVERT_HINT}")
        } else if pem.contains("-----BEGIN EC PRIVATE KEY-----")
            || pem.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            format!("the private key is in SEC1 or PKCS#1 form; {CONVERT_HINT}")
        } else {
            format!("no {PEM_BEGIN} block found; {CONVERT_HINT}")
        };
        return Err(SignError::KeyFile(message));
    };
    let body = &pem[start + PEM_BEGIN.len()..];
    let Some(end) = body.find(PEM_END) else {
        return Err(SignError::KeyFile(format!(
            "the PEM block has no {PEM_END} line; the file is cut short"
        )));
    };
    let base64: Zeroizing<String> = Zeroizing::new(
        body[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    STANDARD
        .decode(base64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| SignError::KeyFile("the PEM block is not valid base64".to_owned()))
}
