//! HTTP Message Signatures (RFC 9421): the signature base rebuilt from a
//! message as received, and signature verification with a key whose
//! algorithm was fixed when it was enrolled.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sfv::{BareItem, Dictionary, FieldType, InnerList, Item, List, ListEntry, Parser};

use crate::PopError;

/// An HTTP message as received by the verifier.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Request method; `None` for a response.
    pub method: Option<&'a str>,
    /// Scheme of the request URI, such as `https`.
    pub scheme: &'a str,
    /// Host and port, as the request named them.
    pub authority: &'a str,
    /// Absolute path of the request URI.
    pub path: &'a str,
    /// Query of the request URI, without `?`.
    pub query: Option<&'a str>,
    /// Status of a response.
    pub status: Option<u16>,
    /// Header fields in the order received, names in any case.
    pub fields: &'a [(&'a str, &'a str)],
}

/// One signature named in `Signature-Input`: its covered components and
/// parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SignatureInput {
    pub label: String,
    list: InnerList,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub alg: Option<String>,
    pub keyid: Option<String>,
    pub tag: Option<String>,
}

impl SignatureInput {
    /// Names of the covered components, such as `@method` or
    /// `content-digest`, without their parameters.
    pub fn components(&self) -> Vec<String> {
        self.list
            .items
            .iter()
            .filter_map(|item| match &item.bare_item {
                BareItem::String(name) => Some(name.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }
}

fn malformed(message: impl Into<String>) -> PopError {
    PopError::Malformed(message.into())
}

/// Parses the combined `Signature-Input` field. Duplicate labels,
/// components or parameters are rejected, and so is any parameter this
/// verifier does not know.
pub fn parse_signature_input(value: &str) -> Result<Vec<SignatureInput>, PopError> {
    reject_duplicate_keys(value)?;
    let dictionary: Dictionary = Parser::new(value).parse().map_err(|err| {
        malformed(format!(
            "Signature-Input is not a structured dictionary: {err}"
        ))
    })?;
    let mut inputs = Vec::new();
    for (label, entry) in &dictionary {
        let ListEntry::InnerList(list) = entry else {
            return Err(malformed(format!(
                "Signature-Input {label} is not an inner list"
            )));
        };
        let mut seen = Vec::new();
        for item in &list.items {
            let BareItem::String(name) = &item.bare_item else {
                return Err(malformed(format!(
                    "Signature-Input {label} names a component that is not a string"
                )));
            };
            let identifier = serialize_item(item)?;
            if seen.contains(&identifier) {
                return Err(malformed(format!(
                    "Signature-Input {label} covers {} twice",
                    name.as_str()
                )));
            }
            seen.push(identifier);
        }
        let mut input = SignatureInput {
            label: label.as_str().to_owned(),
            list: list.clone(),
            created: None,
            expires: None,
            nonce: None,
            alg: None,
            keyid: None,
            tag: None,
        };
        for (key, value) in &list.params {
            match (key.as_str(), value) {
                ("created", BareItem::Integer(v)) => input.created = Some(i64::from(*v)),
                ("expires", BareItem::Integer(v)) => input.expires = Some(i64::from(*v)),
                ("nonce", BareItem::String(v)) => input.nonce = Some(v.as_str().to_owned()),
                ("alg", BareItem::String(v)) => input.alg = Some(v.as_str().to_owned()),
                ("keyid", BareItem::String(v)) => input.keyid = Some(v.as_str().to_owned()),
                ("tag", BareItem::String(v)) => input.tag = Some(v.as_str().to_owned()),
                (other, _) => {
                    return Err(malformed(format!(
                        "Signature-Input {label} has an unknown or mistyped parameter {other}"
                    )));
                }
            }
        }
        inputs.push(input);
    }
    Ok(inputs)
}

/// Rejects a dictionary whose top-level keys repeat. A structured-field
/// parser keeps the last value of a repeated key (RFC 9651 §4.2.2), which
/// would let a second signature or digest hide behind the first one.
pub(crate) fn reject_duplicate_keys(value: &str) -> Result<(), PopError> {
    let mut labels = Vec::new();
    let mut depth = 0_u32;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = true;
    let mut current = String::new();
    for c in value.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                start = true;
                current.clear();
            }
            '=' | ';' if start && depth == 0 => {
                start = false;
                let label = current.trim().to_owned();
                if labels.contains(&label) {
                    return Err(malformed(format!("dictionary key {label} appears twice")));
                }
                labels.push(label);
            }
            _ if start => current.push(c),
            _ => {}
        }
    }
    if start && !current.trim().is_empty() {
        let label = current.trim().to_owned();
        if labels.contains(&label) {
            return Err(malformed(format!("dictionary key {label} appears twice")));
        }
    }
    Ok(())
}

/// Reads the signature bytes of `label` from the combined `Signature` field.
pub fn signature_bytes(value: &str, label: &str) -> Result<Vec<u8>, PopError> {
    reject_duplicate_keys(value)?;
    let dictionary: Dictionary = Parser::new(value)
        .parse()
        .map_err(|err| malformed(format!("Signature is not a structured dictionary: {err}")))?;
    match dictionary.get(label) {
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            ..
        })) => Ok(bytes.clone()),
        Some(_) => Err(malformed(format!(
            "Signature {label} is not a byte sequence"
        ))),
        None => Err(malformed(format!("Signature has no {label}"))),
    }
}

fn serialize_item(item: &Item) -> Result<String, PopError> {
    Ok(item.serialize())
}

/// Returns the value of a header field: every field line of that name,
/// trimmed, joined with `, ` (RFC 9421 §2.1).
fn field_value(message: &Message<'_>, name: &str) -> Option<String> {
    let values: Vec<&str> = message
        .fields
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim_matches([' ', '\t']))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Percent-encodes everything but unreserved characters, after
/// form-urlencoded decoding (RFC 9421 §2.2.8).
fn reencode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => match text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(byte) => {
                    decoded.push(byte);
                    i += 2;
                }
                None => decoded.push(b'%'),
            },
            other => decoded.push(other),
        }
        i += 1;
    }
    let mut out = String::with_capacity(decoded.len());
    for byte in decoded {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn normalised_authority(message: &Message<'_>) -> String {
    let authority = message.authority.to_ascii_lowercase();
    let default = match message.scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    match authority.strip_suffix(default) {
        Some(host) if !default.is_empty() => host.to_owned(),
        _ => authority,
    }
}

/// Derives the value of one covered component.
fn component_value(message: &Message<'_>, item: &Item) -> Result<String, PopError> {
    let BareItem::String(name) = &item.bare_item else {
        return Err(malformed("component is not a string"));
    };
    let name = name.as_str();
    let missing = || malformed(format!("the message has no component {name:?}"));
    let path = if message.path.is_empty() {
        "/"
    } else {
        message.path
    };
    for (key, _) in &item.params {
        let allowed = matches!(key.as_str(), "name") && name == "@query-param";
        if !allowed {
            return Err(PopError::Unsupported(format!(
                "component parameter {} on {name}",
                key.as_str()
            )));
        }
    }
    Ok(match name {
        "@method" => message.method.ok_or_else(missing)?.to_owned(),
        "@target-uri" => {
            let query = message.query.map(|q| format!("?{q}")).unwrap_or_default();
            format!(
                "{}://{}{path}{query}",
                message.scheme.to_ascii_lowercase(),
                message.authority
            )
        }
        "@authority" => normalised_authority(message),
        "@scheme" => message.scheme.to_ascii_lowercase(),
        "@request-target" => match message.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        },
        "@path" => path.to_owned(),
        "@query" => format!("?{}", message.query.unwrap_or("")),
        "@query-param" => {
            let Some(BareItem::String(requested)) = item.params.get("name") else {
                return Err(malformed("@query-param needs a name parameter"));
            };
            let requested = reencode(requested.as_str());
            let values: Vec<String> = message
                .query
                .unwrap_or("")
                .split('&')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (reencode(key) == requested).then(|| reencode(value))
                })
                .collect();
            match values.as_slice() {
                [value] => value.clone(),
                [] => return Err(missing()),
                _ => {
                    return Err(malformed(format!(
                        "query parameter {requested} appears more than once"
                    )));
                }
            }
        }
        "@status" => message.status.ok_or_else(missing)?.to_string(),
        derived if derived.starts_with('@') => {
            return Err(PopError::Unsupported(format!(
                "derived component {derived}"
            )));
        }
        field => {
            if field.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(malformed(format!("field name {field} is not lower case")));
            }
            field_value(message, field).ok_or_else(missing)?
        }
    })
}

/// Builds the signature base of `input` over `message` (RFC 9421 §2.5).
pub fn signature_base(message: &Message<'_>, input: &SignatureInput) -> Result<String, PopError> {
    let mut base = String::new();
    for item in &input.list.items {
        let value = component_value(message, item)?;
        if value.contains('\n') || value.contains('\r') {
            return Err(malformed("component value contains a line break"));
        }
        base.push_str(&serialize_item(item)?);
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    let params: List = vec![ListEntry::InnerList(input.list.clone())];
    let serialized = params
        .serialize()
        .ok_or_else(|| malformed("signature parameters cannot be serialized"))?;
    base.push_str("\"@signature-params\": ");
    base.push_str(&serialized);
    Ok(base)
}

/// Signature algorithms of RFC 9421 §3.3 that enrolled keys can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    Ed25519,
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    RsaPssSha512,
}

impl SignatureAlgorithm {
    /// Every algorithm, in the order [`SignatureAlgorithm::name`] lists them.
    pub const ALL: [SignatureAlgorithm; 4] = [
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::EcdsaP384Sha384,
        SignatureAlgorithm::RsaPssSha512,
    ];

    /// Reads an RFC 9421 algorithm name.
    pub fn from_name(name: &str) -> Option<SignatureAlgorithm> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Returns the algorithm that a key of this type signs with.
    pub fn for_key(key: &crate::PublicJwk) -> SignatureAlgorithm {
        match key {
            crate::PublicJwk::Ed25519 { .. } => SignatureAlgorithm::Ed25519,
            crate::PublicJwk::Ec {
                curve: crate::Curve::P256,
                ..
            } => SignatureAlgorithm::EcdsaP256Sha256,
            crate::PublicJwk::Ec {
                curve: crate::Curve::P384,
                ..
            } => SignatureAlgorithm::EcdsaP384Sha384,
            crate::PublicJwk::Rsa { .. } => SignatureAlgorithm::RsaPssSha512,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SignatureAlgorithm::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            SignatureAlgorithm::RsaPssSha512 => "rsa-pss-sha512",
        }
    }

    fn jws(self) -> crate::Algorithm {
        match self {
            SignatureAlgorithm::Ed25519 => crate::Algorithm::EdDsa,
            SignatureAlgorithm::EcdsaP256Sha256 => crate::Algorithm::Es256,
            SignatureAlgorithm::EcdsaP384Sha384 => crate::Algorithm::Es384,
            SignatureAlgorithm::RsaPssSha512 => crate::Algorithm::Ps512,
        }
    }
}

/// Verifies `signature` over `base` with `key` and the algorithm fixed at
/// enrolment. An `alg` parameter in the message must name the same
/// algorithm; it never chooses one (RFC 9421 §3.2).
pub fn verify_signature(
    key: &crate::PublicJwk,
    algorithm: SignatureAlgorithm,
    input: &SignatureInput,
    base: &str,
    signature: &[u8],
) -> Result<(), PopError> {
    if let Some(alg) = &input.alg
        && alg != algorithm.name()
    {
        return Err(PopError::Unsupported(format!(
            "alg {alg} in the message is not the key's algorithm {}",
            algorithm.name()
        )));
    }
    key.verify(algorithm.jws(), base.as_bytes(), signature)
}

/// Encodes bytes as a structured-field byte sequence, for signers.
pub fn byte_sequence(bytes: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(bytes))
}
