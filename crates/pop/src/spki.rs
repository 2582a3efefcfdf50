//! Public keys in PEM: the `PUBLIC KEY` (SubjectPublicKeyInfo, RFC 5280
//! §4.1.2.7) form that `openssl pkey -pubout` writes, read into a
//! [`PublicJwk`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::{self, PemObject};
use serde_json::json;

use crate::{PopError, PublicJwk};

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2B, 0x65, 0x70];
const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

fn malformed(message: &str) -> PopError {
    PopError::Malformed(format!("public key PEM: {message}"))
}

/// Reads the first `PUBLIC KEY` block of a PEM text. A private key block
/// is refused with a message saying how to extract the public key.
pub fn public_key_from_pem(text: &str) -> Result<PublicJwk, PopError> {
    if text.contains("PRIVATE KEY-----") {
        return Err(PopError::PrivateKey(
            "the PEM contains a private key; give the public key only (openssl pkey -in KEY -pubout)"
                .to_owned(),
        ));
    }
    let der =
        SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes()).map_err(|err| match err {
            pem::Error::NoItemsFound => malformed("no -----BEGIN PUBLIC KEY----- block"),
            pem::Error::MissingSectionEnd { .. } => malformed("no -----END PUBLIC KEY----- line"),
            _ => malformed("the block is not base64"),
        })?;
    public_key_from_spki(&der)
}

/// Reads a DER SubjectPublicKeyInfo.
pub fn public_key_from_spki(der: &[u8]) -> Result<PublicJwk, PopError> {
    let mut outer = Der::new(der);
    let spki = outer.take(TAG_SEQUENCE)?;
    outer.finish()?;
    let mut spki = Der::new(spki);
    let mut algorithm = Der::new(spki.take(TAG_SEQUENCE)?);
    let key_bits = spki.take(TAG_BIT_STRING)?;
    spki.finish()?;
    let oid = algorithm.take(TAG_OID)?;
    let key = match key_bits.split_first() {
        Some((0, key)) => key,
        _ => return Err(malformed("the key bit string has unused bits")),
    };
    let value = match oid {
        OID_EC_PUBLIC_KEY => {
            let curve = algorithm.take(TAG_OID)?;
            let (name, len) = match curve {
                OID_P256 => ("P-256", 32),
                OID_P384 => ("P-384", 48),
                _ => {
                    return Err(PopError::Unsupported(
                        "EC curve other than P-256 or P-384".to_owned(),
                    ));
                }
            };
            let point = match key.split_first() {
                Some((0x04, point)) if point.len() == 2 * len => point,
                Some((0x02 | 0x03, _)) => {
                    return Err(PopError::Unsupported(
                        "compressed EC point; export the key uncompressed".to_owned(),
                    ));
                }
                _ => return Err(malformed("the EC point has the wrong length")),
            };
            json!({
                "kty": "EC",
                "crv": name,
                "x": URL_SAFE_NO_PAD.encode(&point[..len]),
                "y": URL_SAFE_NO_PAD.encode(&point[len..]),
            })
        }
        OID_ED25519 => json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(key),
        }),
        OID_RSA | OID_RSA_PSS => {
            let mut outer = Der::new(key);
            let mut rsa = Der::new(outer.take(TAG_SEQUENCE)?);
            outer.finish()?;
            let n = unsigned(rsa.take(TAG_INTEGER)?);
            let e = unsigned(rsa.take(TAG_INTEGER)?);
            rsa.finish()?;
            json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(n),
                "e": URL_SAFE_NO_PAD.encode(e),
            })
        }
        _ => {
            return Err(PopError::Unsupported(
                "key algorithm; use an Ed25519, P-256, P-384 or RSA key".to_owned(),
            ));
        }
    };
    PublicJwk::from_json(&value)
}

/// Drops the sign byte of a DER integer.
fn unsigned(integer: &[u8]) -> &[u8] {
    match integer {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    }
}

/// A reader of DER tag-length-value items.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Takes the next item, which must have `tag`, and returns its value.
    fn take(&mut self, tag: u8) -> Result<&'a [u8], PopError> {
        let [found, first, rest @ ..] = self.rest else {
            return Err(malformed("the DER ends early"));
        };
        if *found != tag {
            return Err(malformed("unexpected DER item"));
        }
        let (len, rest) = match *first {
            short if short < 0x80 => (usize::from(short), rest),
            0x81 => match rest {
                [len, rest @ ..] if *len >= 0x80 => (usize::from(*len), rest),
                _ => return Err(malformed("non-minimal DER length")),
            },
            0x82 => match rest {
                [high, low, rest @ ..] if *high != 0 => {
                    (usize::from(*high) << 8 | usize::from(*low), rest)
                }
                _ => return Err(malformed("non-minimal DER length")),
            },
            _ => return Err(malformed("DER length out of range")),
        };
        if rest.len() < len {
            return Err(malformed("the DER ends early"));
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    fn finish(&self) -> Result<(), PopError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed("trailing bytes after the DER"))
        }
    }
}
