use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use stepgate_core::Timestamp;

use super::*;

fn vectors(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn target<'a>(method: &'a str, uri: &'a str, now: i64) -> ProofTarget<'a> {
    ProofTarget {
        method,
        uri,
        access_token: None,
        nonces: &[],
        now: Timestamp::from_secs(now),
    }
}

fn verify(proof: &str, target: &ProofTarget<'_>) -> Result<VerifiedProof, PopError> {
    verify_proof(
        &[proof],
        target,
        DpopWindow::default(),
        &ReplayCache::default(),
    )
}

/// A P-256 key that signs proofs, as a client would.
struct Signer {
    pair: EcdsaKeyPair,
    jwk: Value,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self { pair, jwk }
    }

    fn sign(&self, header: &Value, payload: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn proof(&self, method: &str, uri: &str, iat: i64, jti: &str) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let payload = json!({"jti": jti, "htm": method, "htu": uri, "iat": iat});
        self.sign(&header, &payload)
    }
}

#[test]
fn rfc7638_thumbprint_vector() {
    let vector = vectors("rfc7638-jwk-thumbprint.json");
    let jwk = PublicJwk::from_json(&vector["jwk"]).unwrap();
    assert_eq!(jwk.thumbprint(), vector["sha256_thumbprint_b64url"]);
}

#[test]
fn rfc9449_example_proofs_verify() {
    let vector = vectors("rfc9449-dpop.json");
    let examples = vector["jwt_examples"].as_array().unwrap();
    let jkt = vector["jkt_of_example_key_computed_here"][0]
        .as_str()
        .unwrap();
    let mut verified = 0;
    for example in examples {
        if example["es256_signature_verifies_with_embedded_jwk"] != true {
            continue;
        }
        let proof = example["jwt"].as_str().unwrap();
        let payload = &example["decoded_payload"];
        let method = payload["htm"].as_str().unwrap();
        let uri = payload["htu"].as_str().unwrap();
        let iat = payload["iat"].as_i64().unwrap();
        let mut target = target(method, uri, iat);
        let token = vector["access_token_example"].as_str().unwrap();
        if payload.get("ath").is_some() {
            target.access_token = Some(token);
        }
        let proof_ok = verify(proof, &target).unwrap();
        assert_eq!(proof_ok.thumbprint, jkt);
        assert_eq!(proof_ok.iat, iat);
        verified += 1;
        // An altered copy fails: one payload character changed.
        let parts: Vec<&str> = proof.split('.').collect();
        let mut payload_bytes = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        let last = payload_bytes.len() - 2;
        payload_bytes[last] ^= 1;
        let altered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(&payload_bytes),
            parts[2]
        );
        assert!(verify(&altered, &target).is_err(), "{}", example["section"]);
        // The same proof for another token fails its ath check.
        if target.access_token.is_some() {
            let mut other = target;
            other.access_token = Some("another-token");
            assert!(matches!(
                verify(proof, &other),
                Err(PopError::WrongTarget(_))
            ));
        }
    }
    assert_eq!(verified, 3);
}

#[test]
fn rfc9449_reused_jti_in_distinct_proofs() {
    // The RFC reuses one jti in two proofs 2680 s apart. A cache bounded by
    // the proof lifetime accepts the second and rejects a true replay.
    let vector = vectors("rfc9449-dpop.json");
    let examples = vector["jwt_examples"].as_array().unwrap();
    let replays = ReplayCache::default();
    let window = DpopWindow::default();
    let first = examples[0]["jwt"].as_str().unwrap();
    let second = examples[1]["jwt"].as_str().unwrap();
    let uri = "https://server.example.com/token";
    let at = |now| target("POST", uri, now);
    verify_proof(&[first], &at(1_562_262_616), window, &replays).unwrap();
    let replayed = verify_proof(&[first], &at(1_562_262_617), window, &replays);
    assert!(
        matches!(replayed, Err(PopError::Replayed(_))),
        "{replayed:?}"
    );
    verify_proof(&[second], &at(1_562_265_296), window, &replays).unwrap();
}

#[test]
fn htu_normalises_scheme_host_port_only() {
    let same = [
        (
            "https://server.example.com/token",
            "https://server.example.com/token",
        ),
        (
            "HTTPS://Server.Example.COM/token",
            "https://server.example.com/token",
        ),
        (
            "https://server.example.com:443/token",
            "https://server.example.com/token",
        ),
        (
            "http://server.example.com:80/token",
            "http://server.example.com/token",
        ),
        (
            "https://server.example.com/token",
            "https://server.example.com/token?a=1#f",
        ),
        ("https://server.example.com", "https://server.example.com/"),
    ];
    for (claimed, actual) in same {
        assert!(same_uri(claimed, actual), "{claimed} vs {actual}");
    }
    let different = [
        (
            "https://server.example.com/token/",
            "https://server.example.com/token",
        ),
        (
            "https://server.example.com//token",
            "https://server.example.com/token",
        ),
        (
            "https://server.example.com/Token",
            "https://server.example.com/token",
        ),
        (
            "https://server.example.com/%74oken",
            "https://server.example.com/token",
        ),
        (
            "http://server.example.com/token",
            "https://server.example.com/token",
        ),
        (
            "https://server.example.com:8443/token",
            "https://server.example.com/token",
        ),
        (
            "https://other.example.com/token",
            "https://server.example.com/token",
        ),
        (
            "https://user@server.example.com/token",
            "https://server.example.com/token",
        ),
        (
            "server.example.com/token",
            "https://server.example.com/token",
        ),
    ];
    for (claimed, actual) in different {
        assert!(!same_uri(claimed, actual), "{claimed} vs {actual}");
    }
}

#[test]
fn iat_window_boundaries_to_the_second() {
    let signer = Signer::new();
    let uri = "https://api.example.com/orders";
    let now = 1_800_000_000;
    let check = |iat: i64| {
        let proof = signer.proof("GET", uri, iat, &format!("jti-{iat}"));
        verify(&proof, &target("GET", uri, now))
    };
    assert!(check(now - 60).is_ok());
    assert!(matches!(check(now - 61), Err(PopError::Expired(_))));
    assert!(check(now + 5).is_ok());
    assert!(matches!(check(now + 6), Err(PopError::Expired(_))));
}

#[test]
fn replay_cache_covers_proof_lifetime() {
    let signer = Signer::new();
    let uri = "https://api.example.com/orders";
    let iat = 1_800_000_000;
    let proof = signer.proof("GET", uri, iat, "once");
    let replays = ReplayCache::default();
    let window = DpopWindow::default();
    let at = |now| target("GET", uri, now);
    verify_proof(&[&proof], &at(iat), window, &replays).unwrap();
    // Until iat + 60 the replay is caught by the cache ...
    for now in [iat, iat + 30, iat + 60] {
        let replayed = verify_proof(&[&proof], &at(now), window, &replays);
        assert!(
            matches!(replayed, Err(PopError::Replayed(_))),
            "{now}: {replayed:?}"
        );
    }
    // ... and from iat + 61 by the time window.
    let late = verify_proof(&[&proof], &at(iat + 61), window, &replays);
    assert!(matches!(late, Err(PopError::Expired(_))), "{late:?}");
    // Another key may use the same jti.
    let other = Signer::new().proof("GET", uri, iat, "once");
    verify_proof(&[&other], &at(iat), window, &replays).unwrap();
    assert_eq!(replays.len(), 2);
}

#[test]
fn proofs_for_another_request_fail() {
    let signer = Signer::new();
    let uri = "https://api.example.com/orders";
    let now = 1_800_000_000;
    let proof = signer.proof("POST", uri, now, "a");
    assert!(matches!(
        verify(&proof, &target("GET", uri, now)),
        Err(PopError::WrongTarget(_))
    ));
    assert!(matches!(
        verify(
            &proof,
            &target("POST", "https://api.example.com/orders/", now)
        ),
        Err(PopError::WrongTarget(_))
    ));
    assert!(
        verify(
            &proof,
            &target("POST", "https://API.example.com:443/orders?x=1", now)
        )
        .is_ok()
    );
}

#[test]
fn header_and_key_checks() {
    let signer = Signer::new();
    let uri = "https://api.example.com/orders";
    let now = 1_800_000_000;
    let payload = json!({"jti": "j", "htm": "GET", "htu": uri, "iat": now});
    let at = target("GET", uri, now);
    let with_header = |header: Value| verify(&signer.sign(&header, &payload), &at);

    let wrong_typ = with_header(json!({"typ": "JWT", "alg": "ES256", "jwk": signer.jwk}));
    assert!(
        matches!(wrong_typ, Err(PopError::Malformed(_))),
        "{wrong_typ:?}"
    );
    for alg in ["none", "HS256", "ES512", ""] {
        let refused = with_header(json!({"typ": "dpop+jwt", "alg": alg, "jwk": signer.jwk}));
        assert!(
            matches!(refused, Err(PopError::Unsupported(_))),
            "{alg}: {refused:?}"
        );
    }
    let mut private = signer.jwk.clone();
    private["d"] = json!("AAAA");
    let refused = with_header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}));
    assert!(
        matches!(refused, Err(PopError::PrivateKey(_))),
        "{refused:?}"
    );
    let mut symmetric = json!({"kty": "oct", "k": "c2VjcmV0"});
    let refused = with_header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": symmetric.take()}));
    assert!(
        matches!(refused, Err(PopError::PrivateKey(_))),
        "{refused:?}"
    );
    let no_jwk = with_header(json!({"typ": "dpop+jwt", "alg": "ES256"}));
    assert!(matches!(no_jwk, Err(PopError::Malformed(_))), "{no_jwk:?}");
    // Signed by one key, claiming another.
    let other = Signer::new();
    let claimed = verify(
        &signer.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": other.jwk}),
            &payload,
        ),
        &at,
    );
    assert_eq!(claimed, Err(PopError::BadSignature));
    let good = signer.proof("GET", uri, now, "k");
    assert!(matches!(
        verify_proof(
            &[&good, &good],
            &at,
            DpopWindow::default(),
            &ReplayCache::default()
        ),
        Err(PopError::Malformed(_))
    ));
    assert!(matches!(
        verify_proof(&[], &at, DpopWindow::default(), &ReplayCache::default()),
        Err(PopError::Malformed(_))
    ));
    for broken in [
        format!("{good}.extra"),
        good.replacen('.', "", 1),
        format!("{good}="),
        "a.b.c".to_owned(),
    ] {
        assert!(
            matches!(verify(&broken, &at), Err(PopError::Malformed(_))),
            "{broken}"
        );
    }
}

#[test]
fn nonce_when_the_gateway_asks() {
    let signer = Signer::new();
    let uri = "https://api.example.com/orders";
    let now = 1_800_000_000;
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": signer.jwk});
    let mut asked = target("GET", uri, now);
    let nonces = ["eyJ7S_zG.eyJH0-Z.HX4w-7v".to_owned(), "previous".to_owned()];
    asked.nonces = &nonces;
    let without = signer.proof("GET", uri, now, "n1");
    assert!(matches!(verify(&without, &asked), Err(PopError::Nonce(_))));
    let payload = |nonce: &str, jti: &str| json!({"jti": jti, "htm": "GET", "htu": uri, "iat": now, "nonce": nonce});
    let wrong = signer.sign(&header, &payload("old", "n2"));
    assert!(matches!(verify(&wrong, &asked), Err(PopError::Nonce(_))));
    let right = signer.sign(&header, &payload("eyJ7S_zG.eyJH0-Z.HX4w-7v", "n3"));
    assert!(verify(&right, &asked).is_ok());
}

#[test]
fn ed25519_proofs_and_mismatched_algorithms() {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
    let uri = "https://api.example.com/orders";
    let now = 1_800_000_000;
    let sign = |alg: &str| {
        let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk});
        let payload = json!({"jti": alg, "htm": "GET", "htu": uri, "iat": now});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    let verified = verify(&sign("EdDSA"), &target("GET", uri, now)).unwrap();
    assert_eq!(verified.algorithm, Algorithm::EdDsa);
    assert!(matches!(
        verify(&sign("ES256"), &target("GET", uri, now)),
        Err(PopError::Unsupported(_))
    ));
}

#[test]
fn small_rsa_keys_and_unknown_curves_are_refused() {
    let small = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xff_u8; 128]), "e": "AQAB"});
    assert!(matches!(
        PublicJwk::from_json(&small),
        Err(PopError::Unsupported(_))
    ));
    let curve = json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"});
    assert!(matches!(
        PublicJwk::from_json(&curve),
        Err(PopError::Unsupported(_))
    ));
    let short = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"});
    assert!(matches!(
        PublicJwk::from_json(&short),
        Err(PopError::Malformed(_))
    ));
}

#[test]
fn nonces_last_one_to_two_periods() {
    let issuer = NonceIssuer::new([7; 32]);
    let start = Timestamp::from_secs(1_800_000_000 - 1_800_000_000 % NONCE_PERIOD_SECS);
    let first = issuer.current(start);
    assert_eq!(first.len(), 24);
    let later = |secs: i64| Timestamp::from_secs(start.as_secs() + secs);
    assert_eq!(issuer.current(later(NONCE_PERIOD_SECS - 1)), first);
    assert!(issuer.accepted(later(NONCE_PERIOD_SECS)).contains(&first));
    assert!(
        issuer
            .accepted(later(2 * NONCE_PERIOD_SECS - 1))
            .contains(&first)
    );
    assert!(
        !issuer
            .accepted(later(2 * NONCE_PERIOD_SECS))
            .contains(&first)
    );
    assert_ne!(NonceIssuer::new([8; 32]).current(start), first);
}

mod httpsig_vectors {
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::httpsig::{
        Message, SignatureAlgorithm, parse_signature_input, signature_base, signature_bytes,
        verify_signature,
    };

    /// A message parsed from the RFC's text form.
    struct Parsed {
        method: Option<String>,
        path: String,
        query: Option<String>,
        status: Option<u16>,
        fields: Vec<(String, String)>,
    }

    fn parse_message(text: &str) -> Parsed {
        let head = text.split("\n\n").next().unwrap();
        let mut lines = head.lines();
        let start: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let fields: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_owned(), value.trim().to_owned())
            })
            .collect();
        if start[0].starts_with("HTTP/") {
            return Parsed {
                method: None,
                path: String::new(),
                query: None,
                status: Some(start[1].parse().unwrap()),
                fields,
            };
        }
        let (path, query) = match start[1].split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (start[1].to_owned(), None),
        };
        Parsed {
            method: Some(start[0].to_owned()),
            path,
            query,
            status: None,
            fields,
        }
    }

    fn public_key(name: &str) -> PublicJwk {
        let mut jwk = vectors(&format!("rfc9421-keys/{name}.jwk.json"));
        let object = jwk.as_object_mut().unwrap();
        for private in ["d", "p", "q", "dp", "dq", "qi", "kid", "alg"] {
            object.remove(private);
        }
        PublicJwk::from_json(&jwk).unwrap()
    }

    fn header<'a>(headers: &'a str, name: &str) -> &'a str {
        headers
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap()
    }

    #[test]
    fn appendix_b2_bases_and_signatures() {
        let vector = vectors("rfc9421-test-cases.json");
        let mut checked = 0;
        for case in vector["test_cases"].as_array().unwrap() {
            let Some(label) = case["label"].as_str() else {
                continue;
            };
            let text = match case["message"].as_str().unwrap() {
                "test-request" => vector["test_request"].as_str().unwrap(),
                _ => vector["test_response"].as_str().unwrap(),
            };
            let parsed = parse_message(text);
            let fields: Vec<(&str, &str)> = parsed
                .fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let message = Message {
                method: parsed.method.as_deref(),
                scheme: "https",
                authority: "example.com",
                path: &parsed.path,
                query: parsed.query.as_deref(),
                status: parsed.status,
                fields: &fields,
            };
            let headers = case["signature_headers"].as_str().unwrap();
            let inputs = parse_signature_input(header(headers, "Signature-Input")).unwrap();
            let input = inputs.iter().find(|input| input.label == label).unwrap();
            let base = signature_base(&message, input).unwrap();
            assert_eq!(base, case["signature_base"].as_str().unwrap(), "{label}");
            let signature = signature_bytes(header(headers, "Signature"), label).unwrap();
            let algorithm = match case["alg"].as_str().unwrap() {
                "rsa-pss-sha512" => Some((SignatureAlgorithm::RsaPssSha512, "test-key-rsa-pss")),
                "ecdsa-p256-sha256" => {
                    Some((SignatureAlgorithm::EcdsaP256Sha256, "test-key-ecc-p256"))
                }
                "ed25519" => Some((SignatureAlgorithm::Ed25519, "test-key-ed25519")),
                _ => None,
            };
            match algorithm {
                Some((algorithm, key)) => {
                    let key = public_key(key);
                    verify_signature(&key, algorithm, input, &base, &signature).unwrap();
                    // An altered base fails.
                    let altered = base.replacen("example.com", "example.org", 1);
                    let altered = if altered == base {
                        format!("{base} ")
                    } else {
                        altered
                    };
                    assert_eq!(
                        verify_signature(&key, algorithm, input, &altered, &signature),
                        Err(PopError::BadSignature),
                        "{label}"
                    );
                }
                None => {
                    // hmac-sha256: the shared secret reproduces the signature.
                    let secret_text = std::fs::read_to_string(
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("../../testdata/vectors/rfc9421-keys/test-shared-secret.b64"),
                    )
                    .unwrap();
                    let secret = STANDARD.decode(secret_text.trim()).unwrap();
                    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
                    aws_lc_rs::hmac::verify(&key, base.as_bytes(), &signature).unwrap();
                }
            }
            checked += 1;
        }
        assert_eq!(checked, 6);
    }

    #[test]
    fn appendix_b4_transformations() {
        let vector = vectors("rfc9421-test-cases.json");
        let cases = vector["test_cases"].as_array().unwrap();
        let b4 = cases
            .iter()
            .find(|case| case["section"] == "RFC 9421 Appendix B.4")
            .unwrap();
        let key = public_key("test-key-ed25519");
        let mut outcomes = Vec::new();
        for case in b4["transformed_messages"].as_array().unwrap() {
            let text = case["message"].as_str().unwrap();
            let parsed = parse_message(text);
            let fields: Vec<(&str, &str)> = parsed
                .fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let host = fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("host"))
                .map(|(_, value)| *value)
                .unwrap();
            let message = Message {
                method: parsed.method.as_deref(),
                scheme: "https",
                authority: host,
                path: &parsed.path,
                query: parsed.query.as_deref(),
                status: None,
                fields: &fields,
            };
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(field, _)| field.eq_ignore_ascii_case(name))
                    .map(|(_, value)| *value)
                    .unwrap()
            };
            let input = &parse_signature_input(field("Signature-Input")).unwrap()[0];
            let signature = signature_bytes(field("Signature"), &input.label).unwrap();
            let base = signature_base(&message, input).unwrap();
            let valid =
                verify_signature(&key, SignatureAlgorithm::Ed25519, input, &base, &signature)
                    .is_ok();
            let expected = case["rfc_says_signature_still_valid"].as_bool().unwrap();
            assert_eq!(valid, expected, "{text}");
            outcomes.push(valid);
        }
        assert!(outcomes.contains(&true));
        assert!(outcomes.contains(&false));
    }

    #[test]
    fn duplicates_and_unknown_parameters_are_rejected() {
        let twice = r#"sig=("@method");created=1, sig=("@path");created=2"#;
        assert!(matches!(
            parse_signature_input(twice),
            Err(PopError::Malformed(_))
        ));
        let component_twice = r#"sig=("@method" "@method");created=1"#;
        assert!(matches!(
            parse_signature_input(component_twice),
            Err(PopError::Malformed(_))
        ));
        let unknown = r#"sig=("@method");created=1;color="red""#;
        assert!(matches!(
            parse_signature_input(unknown),
            Err(PopError::Malformed(_))
        ));
        let mistyped = r#"sig=("@method");created="yesterday""#;
        assert!(matches!(
            parse_signature_input(mistyped),
            Err(PopError::Malformed(_))
        ));
        let not_list = r#"sig="@method""#;
        assert!(matches!(
            parse_signature_input(not_list),
            Err(PopError::Malformed(_))
        ));
        let fine = r#"a=("@method");created=1, b=("@path");created=2"#;
        assert_eq!(parse_signature_input(fine).unwrap().len(), 2);
    }

    #[test]
    fn alg_in_the_message_never_chooses_the_algorithm() {
        let input =
            &parse_signature_input(r#"sig=();created=1;alg="ecdsa-p256-sha256""#).unwrap()[0];
        let key = public_key("test-key-ed25519");
        let refused = verify_signature(&key, SignatureAlgorithm::Ed25519, input, "base", &[0; 64]);
        assert!(
            matches!(refused, Err(PopError::Unsupported(_))),
            "{refused:?}"
        );
    }
}

mod content_digest {
    use crate::{PopError, content_digest, verify_content_digest};

    // RFC 9530 §2 and Appendix B.
    const BODY: &[u8] = b"{\"hello\": \"world\"}";
    const SHA256: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
    const SHA512: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";

    #[test]
    fn rfc9530_examples() {
        assert_eq!(content_digest(BODY), SHA256);
        verify_content_digest(SHA256, BODY).unwrap();
        verify_content_digest(SHA512, BODY).unwrap();
        verify_content_digest(&format!("{SHA256}, {SHA512}"), BODY).unwrap();
    }

    #[test]
    fn changed_body_fails() {
        let err = verify_content_digest(SHA256, b"{\"hello\": \"World\"}").unwrap_err();
        assert!(matches!(err, PopError::DigestMismatch(_)), "{err}");
        // One matching member does not excuse another that does not match.
        let mixed = format!("{SHA256}, sha-512=:{}:", "A".repeat(88));
        assert!(verify_content_digest(&mixed, BODY).is_err());
    }

    #[test]
    fn unknown_or_malformed_values_fail() {
        assert!(matches!(
            verify_content_digest("md5=:AAAA:", BODY),
            Err(PopError::Unsupported(_))
        ));
        assert!(verify_content_digest("sha-256=abc", BODY).is_err());
        assert!(verify_content_digest("sha-256=:not base64!:", BODY).is_err());
        assert!(verify_content_digest("", BODY).is_err());
    }

    #[test]
    fn repeated_members_fail() {
        let wrong = "sha-256=:AAAA:";
        assert!(verify_content_digest(&format!("{wrong}, {SHA256}"), BODY).is_err());
        assert!(verify_content_digest(&format!("{SHA256}, {SHA256}"), BODY).is_err());
    }
}

mod spki {
    use crate::{PopError, PublicJwk, public_key_from_pem};

    // RFC 9421 Appendix B.1.2 and B.1.4 public keys.
    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----
";
    const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
";

    fn jwk(file: &str) -> PublicJwk {
        let path = format!(
            "{}/../../testdata/vectors/rfc9421-keys/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The RFC's keys include the private part.
        value.as_object_mut().unwrap().remove("d");
        PublicJwk::from_json(&value).unwrap()
    }

    #[test]
    fn pem_keys_match_the_rfc_jwks() {
        assert_eq!(
            public_key_from_pem(P256).unwrap(),
            jwk("test-key-ecc-p256.jwk.json")
        );
        assert_eq!(
            public_key_from_pem(ED25519).unwrap(),
            jwk("test-key-ed25519.jwk.json")
        );
    }

    #[test]
    fn private_and_broken_pems_are_refused() {
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            public_key_from_pem(private),
            Err(PopError::PrivateKey(_))
        ));
        assert!(public_key_from_pem("not a pem").is_err());
        let cut = P256.replace(
            "w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==\n",
            "",
        );
        assert!(public_key_from_pem(&cut).is_err());
        let extra = P256.replace("XQ==", "XQAA");
        assert!(public_key_from_pem(&extra).is_err());
    }
}
