use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use stepgate_pop::httpsig::{
    Message, SignatureAlgorithm, parse_signature_input, signature_base, signature_bytes,
    verify_signature,
};
use stepgate_pop::{PopError, PublicJwk};

use crate::*;

const CREATED: i64 = 1_700_000_000;

fn pem(der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut text = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(chunk).unwrap());
        text.push('\n');
    }
    text.push_str("-----END PRIVATE KEY-----\n");
    text
}

fn ed25519_pem() -> String {
    pem(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .unwrap()
        .as_ref())
}

/// Generates one key of each supported algorithm, as PEM.
fn keys() -> Vec<(SignatureAlgorithm, String)> {
    let rng = SystemRandom::new();
    let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    vec![
        (SignatureAlgorithm::Ed25519, ed25519_pem()),
        (SignatureAlgorithm::EcdsaP256Sha256, pem(p256.as_ref())),
        (SignatureAlgorithm::EcdsaP384Sha384, pem(p384.as_ref())),
        (
            SignatureAlgorithm::RsaPssSha512,
            pem(rsa.as_der().unwrap().as_ref()),
        ),
    ]
}

fn post_request() -> RequestToSign {
    RequestToSign::parse(
        b"POST https://api.example.com/orders?id=7\n\
          Content-Type: application/json\n\
          \n\
          {\"hello\": \"world\"}",
    )
    .unwrap()
}

fn options(keyid: &str) -> SignOptions {
    SignOptions {
        nonce: Some("ch_0123abcd".to_owned()),
        expires: Some(CREATED + 300),
        ..SignOptions::new(keyid, CREATED)
    }
}

/// What the gateway receives: the request as sent plus the signed headers.
struct Received {
    method: String,
    scheme: &'static str,
    authority: String,
    path: String,
    query: Option<String>,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    /// Builds the received message for a request to `https://{authority}`.
    fn new(request: &RequestToSign, signed: &SignedHeaders) -> Received {
        let rest = request.url.strip_prefix("https://").unwrap();
        let (authority, path_and_query) = rest.split_at(rest.find('/').unwrap());
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut fields = request.headers.clone();
        if let Some(digest) = &signed.content_digest {
            fields.push(("Content-Digest".to_owned(), digest.clone()));
        }
        fields.push(("Signature-Input".to_owned(), signed.signature_input.clone()));
        fields.push(("Signature".to_owned(), signed.signature.clone()));
        Received {
            method: request.method.clone(),
            scheme: "https",
            authority: authority.to_owned(),
            path,
            query,
            fields,
            body: request.body.clone(),
        }
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Verifies the `stepgate` signature as the gateway does: the body must
    /// match Content-Digest, then the signature must verify over the base.
    fn verify(&self, jwk: &PublicJwk, algorithm: SignatureAlgorithm) -> Result<(), PopError> {
        if let Some(digest) = self.field("content-digest")
            && digest != content_digest(&self.body)
        {
            return Err(PopError::Malformed("Content-Digest mismatch".to_owned()));
        }
        let inputs = parse_signature_input(self.field("signature-input").unwrap())?;
        let input = inputs.iter().find(|i| i.label == DEFAULT_LABEL).unwrap();
        let signature = signature_bytes(self.field("signature").unwrap(), DEFAULT_LABEL)?;
        let fields: Vec<(&str, &str)> = self
            .fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let message = Message {
            method: Some(&self.method),
            scheme: self.scheme,
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            status: None,
            fields: &fields,
        };
        let base = signature_base(&message, input)?;
        verify_signature(jwk, algorithm, input, &base, &signature)
    }
}

/// A change an attacker makes to a request in transit.
type Alteration = fn(&mut Received);

fn sign_all(request: &RequestToSign) -> Vec<(KeyFileSigner, SignedHeaders)> {
    keys()
        .into_iter()
        .map(|(algorithm, pem)| {
            let signer = KeyFileSigner::from_pem(&pem).unwrap();
            assert_eq!(signer.algorithm(), algorithm);
            let keyid = key_thumbprint(&signer).unwrap();
            let signed = sign_request(request, &options(&keyid), &signer).unwrap();
            (signer, signed)
        })
        .collect()
}

#[test]
fn parse_request_with_body() {
    let request = RequestToSign::parse(
        b"PUT https://api.example.com:8443/v1/items/9?dry=1\n\
          Content-Type: application/octet-stream\n\
          X-Trace:  abc \t\n\
          \n\
          line one\n\n\x00\xffend\n",
    )
    .unwrap();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.url, "https://api.example.com:8443/v1/items/9?dry=1");
    assert_eq!(
        request.headers,
        vec![
            (
                "Content-Type".to_owned(),
                "application/octet-stream".to_owned()
            ),
            ("X-Trace".to_owned(), "abc".to_owned()),
        ]
    );
    assert_eq!(request.body, b"line one\n\n\x00\xffend\n");
}

#[test]
fn parse_request_crlf_lines() {
    let request =
        RequestToSign::parse(b"POST http://127.0.0.1:8080/x\r\nA: 1\r\n\r\nbody\r\n").unwrap();
    assert_eq!(request.url, "http://127.0.0.1:8080/x");
    assert_eq!(request.headers, vec![("A".to_owned(), "1".to_owned())]);
    assert_eq!(request.body, b"body\r\n");
}

#[test]
fn parse_request_without_body() {
    for text in [
        &b"GET https://api.example.com/"[..],
        b"GET https://api.example.com/\n",
        b"GET https://api.example.com/\nAccept: */*\n",
        b"GET https://api.example.com/\nAccept: */*\n\n",
    ] {
        let request = RequestToSign::parse(text).unwrap();
        assert!(
            request.body.is_empty(),
            "{:?}",
            String::from_utf8_lossy(text)
        );
        assert_eq!(request.method, "GET");
    }
}

#[test]
fn parse_request_errors() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "line 1: is empty"),
        (b"\nA: b\n", "line 1: is empty"),
        (b"GET\n", "has no URL"),
        (b"GET /orders HTTP/1.1\n", "remove the HTTP version"),
        (b"GET /orders\n", "is not absolute"),
        (b"GET ftp://example.com/\n", "use http or https"),
        (b"GET https://example.com/#top\n", "fragment"),
        (b"GET https:///path\n", "has no host"),
        (b"GET https://user:pw@example.com/\n", "user information"),
        (b"G(T https://example.com/\n", "not an HTTP token"),
        (b"GET https://example.com/ a b\n", "more than two words"),
        (
            b"GET https://example.com/\nNoColon\n",
            "line 2: \"NoColon\" has no colon",
        ),
        (
            b"GET https://example.com/\nBad Name: x\n",
            "line 2: header name",
        ),
        (
            b"GET https://example.com/\nA: 1\n folded\n",
            "line 3: starts with white space",
        ),
        (b"GET https://example.com/\nA: \x01\n", "control character"),
        (
            b"GET https://example.com/\nA: \xff\n",
            "line 2: is not UTF-8",
        ),
        (
            b"GET https://example.com/\nHost: other.example\n",
            "differs from the URL",
        ),
    ];
    for (text, expected) in cases {
        let err = RequestToSign::parse(text).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{:?}: {err:?} lacks {expected:?}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn parse_accepts_matching_host() {
    let request =
        RequestToSign::parse(b"GET https://API.example.com/\nHost: api.example.com\n").unwrap();
    assert_eq!(request.headers.len(), 1);
}

#[test]
fn content_digest_values() {
    // Reference values from Python's hashlib: base64(sha256(body)).
    assert_eq!(
        content_digest(b"{\"hello\": \"world\"}"),
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    );
    assert_eq!(
        content_digest(b"{\"hello\": \"world\"}\n"),
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    );
    assert_eq!(
        content_digest(b""),
        "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    );
}

#[test]
fn signature_base_exact_text() {
    let request = post_request();
    let base = build_signature_base(&request, &options("k1")).unwrap();
    let expected = "\"@method\": POST\n\
        \"@target-uri\": https://api.example.com/orders?id=7\n\
        \"@authority\": api.example.com\n\
        \"content-digest\": sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n\
        \"@signature-params\": (\"@method\" \"@target-uri\" \"@authority\" \"content-digest\")\
        ;created=1700000000;expires=1700000300;keyid=\"k1\";nonce=\"ch_0123abcd\"";
    assert_eq!(base, expected);
}

#[test]
fn sign_then_verify_every_algorithm() {
    let request = post_request();
    for (signer, signed) in sign_all(&request) {
        let name = signer.algorithm().name();
        let jwk = PublicJwk::from_json(&signer.public_jwk()).unwrap();
        assert_eq!(
            signed.content_digest.as_deref(),
            Some("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
            "{name}"
        );
        assert_eq!(
            signed.signature_input,
            format!(
                "stepgate=(\"@method\" \"@target-uri\" \"@authority\" \"content-digest\")\
                 ;created={CREATED};expires={};keyid=\"{}\";nonce=\"ch_0123abcd\"",
                CREATED + 300,
                jwk.thumbprint()
            ),
            "{name}"
        );
        assert!(signed.signature.starts_with("stepgate=:"), "{name}");
        let received = Received::new(&request, &signed);
        received
            .verify(&jwk, signer.algorithm())
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
}

#[test]
fn signature_lengths_follow_rfc9421() {
    let request = post_request();
    for (signer, signed) in sign_all(&request) {
        let bytes = signature_bytes(&signed.signature, DEFAULT_LABEL).unwrap();
        let expected = match signer.algorithm() {
            SignatureAlgorithm::Ed25519 => 64,
            SignatureAlgorithm::EcdsaP256Sha256 => 64,
            SignatureAlgorithm::EcdsaP384Sha384 => 96,
            SignatureAlgorithm::RsaPssSha512 => 256,
        };
        assert_eq!(bytes.len(), expected, "{}", signer.algorithm().name());
    }
}

#[test]
fn altered_request_fails_verification() {
    let request = post_request();
    for (signer, signed) in sign_all(&request) {
        let name = signer.algorithm().name();
        let jwk = PublicJwk::from_json(&signer.public_jwk()).unwrap();
        let alterations: Vec<(&str, Alteration)> = vec![
            ("body with its own digest", |r: &mut Received| {
                r.body = b"{\"hello\": \"mallory\"}".to_vec();
                let digest = content_digest(&r.body);
                for (field, value) in &mut r.fields {
                    if field == "Content-Digest" {
                        *value = digest.clone();
                    }
                }
            }),
            ("body only", |r: &mut Received| r.body.push(b' ')),
            ("method", |r: &mut Received| r.method = "PUT".to_owned()),
            ("path", |r: &mut Received| r.path = "/orders/8".to_owned()),
            ("query", |r: &mut Received| {
                r.query = Some("id=8".to_owned())
            }),
            ("authority", |r: &mut Received| {
                r.authority = "evil.example.com".to_owned()
            }),
            ("scheme", |r: &mut Received| r.scheme = "http"),
        ];
        for (what, alter) in alterations {
            let mut received = Received::new(&request, &signed);
            alter(&mut received);
            assert!(
                received.verify(&jwk, signer.algorithm()).is_err(),
                "{name}: altered {what} still verifies"
            );
        }
    }
}

#[test]
fn default_components_without_body() {
    let request = RequestToSign::parse(b"DELETE https://api.example.com/orders/7\n").unwrap();
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let signed = sign_request(&request, &SignOptions::new("k1", CREATED), &signer).unwrap();
    assert_eq!(signed.content_digest, None);
    assert_eq!(
        signed.signature_input,
        "stepgate=(\"@method\" \"@target-uri\" \"@authority\");created=1700000000;keyid=\"k1\""
    );
    let jwk = PublicJwk::from_json(&signer.public_jwk()).unwrap();
    Received::new(&request, &signed)
        .verify(&jwk, SignatureAlgorithm::Ed25519)
        .unwrap();
}

#[test]
fn custom_components_and_label() {
    let request = post_request();
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let options = SignOptions {
        label: "sig-b.1".to_owned(),
        components: Some(vec![
            "@method".to_owned(),
            "@path".to_owned(),
            "content-type".to_owned(),
            "content-digest".to_owned(),
        ]),
        ..SignOptions::new("k1", CREATED)
    };
    let signed = sign_request(&request, &options, &signer).unwrap();
    assert!(signed.signature.starts_with("sig-b.1=:"));
    let base = build_signature_base(&request, &options).unwrap();
    assert!(
        base.contains("\"content-type\": application/json\n"),
        "{base}"
    );
    assert!(base.contains("\"@path\": /orders\n"), "{base}");

    let missing = SignOptions {
        components: Some(vec!["x-missing".to_owned()]),
        ..options.clone()
    };
    let err = sign_request(&request, &missing, &signer).unwrap_err();
    assert!(err.to_string().contains("x-missing"), "{err}");
}

#[test]
fn empty_body_covered_digest() {
    let request = RequestToSign::parse(b"POST https://api.example.com/ping\n").unwrap();
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let options = SignOptions {
        components: Some(vec!["@method".to_owned(), "content-digest".to_owned()]),
        ..SignOptions::new("k1", CREATED)
    };
    let signed = sign_request(&request, &options, &signer).unwrap();
    assert_eq!(
        signed.content_digest.as_deref(),
        Some("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:")
    );
}

#[test]
fn request_content_digest_header() {
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let mut request = post_request();
    request
        .headers
        .push(("Content-Digest".to_owned(), content_digest(&request.body)));
    let signed = sign_request(&request, &SignOptions::new("k1", CREATED), &signer).unwrap();
    assert_eq!(
        signed.content_digest.as_deref(),
        Some(content_digest(&request.body).as_str())
    );

    request.headers.last_mut().unwrap().1 = content_digest(b"other");
    let err = sign_request(&request, &SignOptions::new("k1", CREATED), &signer).unwrap_err();
    assert!(err.to_string().contains("not the SHA-256 digest"), "{err}");
}

#[test]
fn header_lines_rendering() {
    let signed = SignedHeaders {
        content_digest: Some("sha-256=:AA==:".to_owned()),
        signature_input: "stepgate=(\"@method\");created=1;keyid=\"k\"".to_owned(),
        signature: "stepgate=:AA==:".to_owned(),
    };
    assert_eq!(
        signed.header_lines(),
        "Content-Digest: sha-256=:AA==:\n\
         Signature-Input: stepgate=(\"@method\");created=1;keyid=\"k\"\n\
         Signature: stepgate=:AA==:\n"
    );
    let without_digest = SignedHeaders {
        content_digest: None,
        ..signed
    };
    assert!(!without_digest.header_lines().contains("Content-Digest"));
}

#[test]
fn keyid_and_nonce_escaping() {
    let request = post_request();
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let options = SignOptions {
        nonce: Some("n\"1\\".to_owned()),
        ..SignOptions::new("key \"one\"", CREATED)
    };
    let signed = sign_request(&request, &options, &signer).unwrap();
    let inputs = parse_signature_input(&signed.signature_input).unwrap();
    assert_eq!(inputs[0].keyid.as_deref(), Some("key \"one\""));
    assert_eq!(inputs[0].nonce.as_deref(), Some("n\"1\\"));
}

#[test]
fn invalid_options_rejected() {
    let request = post_request();
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let base = SignOptions::new("k1", CREATED);
    let cases = [
        (
            SignOptions {
                label: "Stepgate".to_owned(),
                ..base.clone()
            },
            "not a structured-field key",
        ),
        (
            SignOptions {
                label: String::new(),
                ..base.clone()
            },
            "not a structured-field key",
        ),
        (
            SignOptions {
                expires: Some(CREATED),
                ..base.clone()
            },
            "is not after created",
        ),
        (
            SignOptions {
                created: -1,
                ..base.clone()
            },
            "before 1970",
        ),
        (SignOptions::new("", CREATED), "keyid is empty"),
        (SignOptions::new("kéy", CREATED), "printable ASCII"),
        (
            SignOptions {
                nonce: Some("a\nb".to_owned()),
                ..base.clone()
            },
            "printable ASCII",
        ),
        (
            SignOptions {
                components: Some(vec![]),
                ..base.clone()
            },
            "no components",
        ),
        (
            SignOptions {
                components: Some(vec!["Content-Type".to_owned()]),
                ..base.clone()
            },
            "lower-case field name",
        ),
        (
            SignOptions {
                components: Some(vec!["@method".to_owned(), "@method".to_owned()]),
                ..base.clone()
            },
            "twice",
        ),
        (
            SignOptions {
                components: Some(vec!["@nonsense".to_owned()]),
                ..base.clone()
            },
            "@nonsense",
        ),
    ];
    for (options, expected) in cases {
        let err = sign_request(&request, &options, &signer)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "{options:?}: {err:?} lacks {expected:?}"
        );
    }
}

#[test]
fn invalid_request_fields_rejected() {
    let signer = KeyFileSigner::from_pem(&ed25519_pem()).unwrap();
    let mut request = post_request();
    request.method = "GE T".to_owned();
    let err = sign_request(&request, &SignOptions::new("k1", CREATED), &signer).unwrap_err();
    assert!(err.to_string().contains("not an HTTP token"), "{err}");

    let mut request = post_request();
    request.url = "/relative".to_owned();
    let err = sign_request(&request, &SignOptions::new("k1", CREATED), &signer).unwrap_err();
    assert!(err.to_string().contains("not absolute"), "{err}");
}

/// A signer that signs with one key but presents another key's JWK.
struct MismatchedKey {
    signing: KeyFileSigner,
    presented: KeyFileSigner,
}

impl Signer for MismatchedKey {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.signing.algorithm()
    }

    fn public_jwk(&self) -> serde_json::Value {
        self.presented.public_jwk()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signing.sign(message)
    }
}

#[test]
fn sign_request_checks_own_signature() {
    let signer = MismatchedKey {
        signing: KeyFileSigner::from_pem(&ed25519_pem()).unwrap(),
        presented: KeyFileSigner::from_pem(&ed25519_pem()).unwrap(),
    };
    let err = sign_request(&post_request(), &SignOptions::new("k1", CREATED), &signer)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not verify with the key's own public key"),
        "{err}"
    );
}

#[test]
fn key_file_thumbprint_matches_pop() {
    for (_, pem) in keys() {
        let signer = KeyFileSigner::from_pem(&pem).unwrap();
        let jwk = signer.public_jwk();
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{private} in {jwk}");
        }
        assert_eq!(
            key_thumbprint(&signer).unwrap(),
            PublicJwk::from_json(&jwk).unwrap().thumbprint()
        );
    }
}

#[test]
fn key_file_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::write(&path, ed25519_pem()).unwrap();
    let signer = KeyFileSigner::from_file(&path).unwrap();
    assert_eq!(signer.algorithm(), SignatureAlgorithm::Ed25519);
    assert!(!format!("{signer:?}").contains("PRIVATE"));

    let missing = dir.path().join("missing.pem");
    let err = KeyFileSigner::from_file(&missing).unwrap_err().to_string();
    assert!(err.contains("cannot read key file"), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
}

#[test]
fn key_file_errors() {
    let cases = [
        ("no pem here", "no -----BEGIN PRIVATE KEY----- block"),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        ),
        (
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            "SEC1 or PKCS#1",
        ),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n", "cut short"),
        (
            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
            "not valid base64",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a valid Ed25519",
        ),
    ];
    for (text, expected) in cases {
        let err = KeyFileSigner::from_pem(text).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{text:?}: {err:?} lacks {expected:?}"
        );
    }
}
