//! Signature-Input, signature base and Signature for a request
//! (RFC 9421 §2.5 and §3.1), plus its Content-Digest (RFC 9530).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use stepgate_pop::PublicJwk;
use stepgate_pop::httpsig::{
    Message, SignatureAlgorithm, SignatureInput, byte_sequence, parse_signature_input,
    signature_base, verify_signature,
};

use crate::{RequestToSign, SignError};

/// Signature label used when the caller names none.
pub const DEFAULT_LABEL: &str = "stepgate";

/// Components covered when the caller names none.
const DEFAULT_COMPONENTS: [&str; 3] = ["@method", "@target-uri", "@authority"];

/// A private key that makes RFC 9421 signatures.
pub trait Signer {
    /// Algorithm the key signs with.
    fn algorithm(&self) -> SignatureAlgorithm;

    /// Public key as a JWK (RFC 7517), without private members.
    fn public_jwk(&self) -> serde_json::Value;

    /// Signs `message` in the encoding of RFC 9421 §3.3: 64 raw bytes for
    /// Ed25519, `r || s` for ECDSA, and an RSASSA-PSS signature with
    /// SHA-512, MGF1-SHA-512 and a 64-byte salt for RSA.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Parameters of one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignOptions {
    /// Signature label, a structured-field key such as `stepgate`.
    pub label: String,
    /// Covered components. `None` covers `@method`, `@target-uri` and
    /// `@authority`, plus `content-digest` when the request has a body.
    pub components: Option<Vec<String>>,
    /// `nonce` parameter: the challenge id in a response to a challenge.
    pub nonce: Option<String>,
    /// `created` parameter, in Unix seconds.
    pub created: i64,
    /// `expires` parameter, in Unix seconds.
    pub expires: Option<i64>,
    /// `keyid` parameter: the id the key was enrolled under.
    pub keyid: String,
}

impl SignOptions {
    /// Creates options with the default label and components, no nonce and
    /// no expiry.
    pub fn new(keyid: impl Into<String>, created: i64) -> SignOptions {
        SignOptions {
            label: DEFAULT_LABEL.to_owned(),
            components: None,
            nonce: None,
            created,
            expires: None,
            keyid: keyid.into(),
        }
    }
}

/// Header field values that carry a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Content-Digest` value. The signature covers this value when the
    /// components include `content-digest`, so the request must send it.
    pub content_digest: Option<String>,
    /// `Signature-Input` value.
    pub signature_input: String,
    /// `Signature` value.
    pub signature: String,
}

impl SignedHeaders {
    /// Renders the headers as `Name: value` lines, each ending in `\n`, in
    /// the form `curl -H @FILE` reads.
    pub fn header_lines(&self) -> String {
        let mut lines = String::new();
        if let Some(digest) = &self.content_digest {
            let _ = writeln!(lines, "Content-Digest: {digest}");
        }
        let _ = writeln!(lines, "Signature-Input: {}", self.signature_input);
        let _ = writeln!(lines, "Signature: {}", self.signature);
        lines
    }
}

/// Computes the `Content-Digest` value of `body` with SHA-256, in the form
/// `sha-256=:BASE64:` (RFC 9530 §2).
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Computes the RFC 7638 thumbprint of the signer's public key, the
/// default key id.
pub fn key_thumbprint(signer: &dyn Signer) -> Result<String, SignError> {
    Ok(PublicJwk::from_json(&signer.public_jwk())?.thumbprint())
}

/// Signs `request` with `signer` and returns the header values to send
/// with it. The signature is verified with the signer's public key before
/// it is returned, so a faulty key or token yields an error.
pub fn sign_request(
    request: &RequestToSign,
    options: &SignOptions,
    signer: &dyn Signer,
) -> Result<SignedHeaders, SignError> {
    let prepared = prepare(request, options)?;
    let signature = signer.sign(prepared.base.as_bytes())?;

    let public = PublicJwk::from_json(&signer.public_jwk())?;
    verify_signature(
        &public,
        signer.algorithm(),
        &prepared.input,
        &prepared.base,
        &signature,
    )
    .map_err(|err| {
        SignError::Signing(format!(
            "the {} signature does not verify with the key's own public key ({err}); \
             check that the key matches its public key and algorithm",
            signer.algorithm().name()
        ))
    })?;

    Ok(SignedHeaders {
        content_digest: prepared.content_digest,
        signature_input: prepared.signature_input,
        signature: format!("{}={}", options.label, byte_sequence(&signature)),
    })
}

/// Builds the signature base that `sign_request` signs for the same
/// request and options.
pub fn build_signature_base(
    request: &RequestToSign,
    options: &SignOptions,
) -> Result<String, SignError> {
    Ok(prepare(request, options)?.base)
}

/// Everything about a signature but the signature bytes.
struct Prepared {
    content_digest: Option<String>,
    signature_input: String,
    input: SignatureInput,
    base: String,
}

fn prepare(request: &RequestToSign, options: &SignOptions) -> Result<Prepared, SignError> {
    let url = request.validate()?;
    let components = match &options.components {
        Some(components) => components.clone(),
        None => {
            let mut components: Vec<String> =
                DEFAULT_COMPONENTS.iter().map(|c| (*c).to_owned()).collect();
            if !request.body.is_empty() {
                components.push("content-digest".to_owned());
            }
            components
        }
    };
    let covers_digest = components.iter().any(|c| c == "content-digest");
    let digest = (covers_digest || !request.body.is_empty()).then(|| content_digest(&request.body));

    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(request.headers.len() + 1);
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("content-digest") {
            if digest.as_deref() != Some(value.as_str()) {
                return Err(SignError::InvalidRequest(format!(
                    "the Content-Digest header {value:?} is not the SHA-256 digest of the body; \
                     remove it, because the signer computes it"
                )));
            }
            continue;
        }
        fields.push((name, value));
    }
    if let Some(digest) = &digest {
        fields.push(("Content-Digest", digest));
    }

    let signature_input = signature_input_value(options, &components)?;
    let input = parse_signature_input(&signature_input)?
        .into_iter()
        .find(|input| input.label == options.label)
        .ok_or_else(|| {
            SignError::InvalidOptions(format!(
                "label {:?} is missing from the parsed Signature-Input",
                options.label
            ))
        })?;

    let message = Message {
        method: Some(&request.method),
        scheme: url.scheme,
        authority: url.authority,
        path: url.path,
        query: url.query,
        status: None,
        fields: &fields,
    };
    let base = signature_base(&message, &input)?;
    Ok(Prepared {
        content_digest: digest,
        signature_input,
        input,
        base,
    })
}

/// Serializes the `Signature-Input` dictionary member for one signature
/// (RFC 9421 §4.1).
fn signature_input_value(
    options: &SignOptions,
    components: &[String],
) -> Result<String, SignError> {
    check_label(&options.label)?;
    if components.is_empty() {
        return Err(SignError::InvalidOptions(
            "no components to cover; name at least one, such as @method".to_owned(),
        ));
    }
    if options.created < 0 {
        return Err(SignError::InvalidOptions(format!(
            "created {} is before 1970; give Unix seconds",
            options.created
        )));
    }
    if let Some(expires) = options.expires
        && expires <= options.created
    {
        return Err(SignError::InvalidOptions(format!(
            "expires {expires} is not after created {}",
            options.created
        )));
    }
    if options.keyid.is_empty() {
        return Err(SignError::InvalidOptions(
            "keyid is empty; give the enrolled key id".to_owned(),
        ));
    }

    let mut quoted = Vec::with_capacity(components.len());
    for component in components {
        check_component(component)?;
        quoted.push(sf_string(component, "component")?);
    }
    let mut value = format!("{}=({})", options.label, quoted.join(" "));
    let _ = write!(value, ";created={}", options.created);
    if let Some(expires) = options.expires {
        let _ = write!(value, ";expires={expires}");
    }
    let _ = write!(value, ";keyid={}", sf_string(&options.keyid, "keyid")?);
    if let Some(nonce) = &options.nonce {
        let _ = write!(value, ";nonce={}", sf_string(nonce, "nonce")?);
    }
    Ok(value)
}

/// Checks that `label` is a structured-field key (RFC 9651 §3.1.2).
fn check_label(label: &str) -> Result<(), SignError> {
    let mut bytes = label.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'*');
    let rest_ok = bytes.all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
    });
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(SignError::InvalidOptions(format!(
            "label {label:?} is not a structured-field key; use lower-case letters, digits, \
             _ - . and *, starting with a letter, such as {DEFAULT_LABEL}"
        )))
    }
}

/// Checks a component name: a derived component starts with `@`, and a
/// header field name must be in lower case (RFC 9421 §2.1).
fn check_component(name: &str) -> Result<(), SignError> {
    if name.starts_with('@') {
        return Ok(());
    }
    if name.is_empty()
        || name
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b.is_ascii_uppercase())
    {
        return Err(SignError::InvalidOptions(format!(
            "component {name:?} is not a lower-case field name; write it like content-type"
        )));
    }
    Ok(())
}

/// Serializes `text` as a structured-field string (RFC 9651 §4.1.6), which
/// allows printable ASCII only.
fn sf_string(text: &str, parameter: &str) -> Result<String, SignError> {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            other => {
                return Err(SignError::InvalidOptions(format!(
                    "{parameter} {text:?} contains {other:?}; use printable ASCII only"
                )));
            }
        }
    }
    out.push('"');
    Ok(out)
}
