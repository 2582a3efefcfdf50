//! Verifications per second of each proof-of-possession check: DPoP proofs
//! (ES256, EdDSA, PS256, with every §4.3 check and the replay cache) and
//! RFC 9421 signatures (ecdsa-p256-sha256, ed25519, rsa-pss-sha512 over a
//! base the size of the RFC's examples, alone and as the whole check of a
//! step-up answer with a 1 KiB body), each on one thread.
//!
//! Run with `cargo bench -p stepgate-pop --bench verify`;
//! `scripts/bench-factors` runs it next to `openssl speed` for the same
//! algorithms, in the same run.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use stepgate_core::Timestamp;
use stepgate_pop::httpsig::{
    Message, SignatureAlgorithm, byte_sequence, parse_signature_input, signature_base,
    signature_bytes, verify_signature,
};
use stepgate_pop::{DpopWindow, ProofTarget, PublicJwk, ReplayCache, verify_proof};

const URI: &str = "https://api.example.com/v1/orders";
const NOW: i64 = 1_800_000_000;
const ROUNDS: usize = 3000;

/// Signs data; the flag picks SHA-512 for an RSA-PSS key.
type Signer = Box<dyn Fn(&[u8], bool) -> Vec<u8>>;

/// A signing key, its public JWK and its JWS and RFC 9421 algorithms.
struct Key {
    jwk: Value,
    alg: &'static str,
    sig_alg: SignatureAlgorithm,
    sign: Signer,
}

fn keys() -> Vec<Key> {
    let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let ed = Ed25519KeyPair::generate().unwrap();
    let ed_public = ed.public_key().as_ref().to_vec();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let components: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = rsa.public_key().into();
    vec![
        Key {
            jwk: json!({"kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
            alg: "ES256",
            sig_alg: SignatureAlgorithm::EcdsaP256Sha256,
            sign: Box::new(move |data, _| {
                ec.sign(&SystemRandom::new(), data)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }),
        },
        Key {
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&ed_public)}),
            alg: "EdDSA",
            sig_alg: SignatureAlgorithm::Ed25519,
            sign: Box::new(move |data, _| ed.sign(data).as_ref().to_vec()),
        },
        Key {
            jwk: json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&components.n), "e": URL_SAFE_NO_PAD.encode(&components.e)}),
            alg: "PS256",
            sig_alg: SignatureAlgorithm::RsaPssSha512,
            sign: Box::new(move |data, sha512| {
                let mut out = vec![0; rsa.public_modulus_len()];
                let encoding: &'static dyn signature::RsaEncoding = if sha512 {
                    &signature::RSA_PSS_SHA512
                } else {
                    &signature::RSA_PSS_SHA256
                };
                rsa.sign(encoding, &SystemRandom::new(), data, &mut out)
                    .unwrap();
                out
            }),
        },
    ]
}

fn proof(key: &Key, jti: usize) -> String {
    let header = json!({"typ": "dpop+jwt", "alg": key.alg, "jwk": key.jwk});
    let payload = json!({"jti": format!("j{jti}"), "htm": "GET", "htu": URI, "iat": NOW});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature = (key.sign)(input.as_bytes(), false);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

const BASE: &str = "\"@method\": POST\n\"@path\": /foo\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n\"@signature-params\": (\"@method\" \"@path\" \"@authority\" \"content-type\" \"content-digest\");created=1618884473;keyid=\"k\"";

fn per_second(label: &str, mut run: impl FnMut(usize)) {
    let started = Instant::now();
    for i in 0..ROUNDS {
        run(i);
    }
    let rate = ROUNDS as f64 / started.elapsed().as_secs_f64();
    println!("{label:<32} {rate:>10.0} verifications/s");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let keys = keys();
    let window = DpopWindow::default();
    let target = ProofTarget {
        method: "GET",
        uri: URI,
        access_token: None,
        nonces: &[],
        now: Timestamp::from_secs(NOW),
    };
    let input = &parse_signature_input(
        r#"sig=("@method" "@path" "@authority" "content-type" "content-digest");created=1618884473;keyid="k""#,
    )
    .unwrap()[0];
    for key in &keys {
        // Distinct proofs, so that the replay cache accepts every one.
        let proofs: Vec<String> = (0..ROUNDS).map(|i| proof(key, i)).collect();
        let replays = ReplayCache::default();
        per_second(&format!("dpop proof {}", key.alg), |i| {
            black_box(verify_proof(&[&proofs[i]], &target, window, &replays).unwrap());
        });
        let public = PublicJwk::from_json(&key.jwk).unwrap();
        let signature = (key.sign)(BASE.as_bytes(), true);
        per_second(&format!("rfc9421 {}", key.sig_alg.name()), |_| {
            verify_signature(&public, key.sig_alg, input, BASE, &signature).unwrap();
        });
        // The whole answer check: parse both fields, check the body's
        // digest, rebuild the base from the request, verify.
        let body = vec![b'x'; 1024];
        let digest = stepgate_pop::content_digest(&body);
        let fields = [("content-digest", digest.as_str())];
        let message = Message {
            method: Some("POST"),
            scheme: "https",
            authority: "api.example.com",
            path: "/v1/orders",
            query: None,
            status: None,
            fields: &fields,
        };
        let header = r#"sig=("@method" "@target-uri" "@authority" "content-digest");created=1800000000;keyid="k";nonce="ch_0123456789abcdef""#;
        let parsed = &parse_signature_input(header).unwrap()[0];
        let base = signature_base(&message, parsed).unwrap();
        let value = format!("sig={}", byte_sequence(&(key.sign)(base.as_bytes(), true)));
        per_second(&format!("rfc9421 answer {}", key.sig_alg.name()), |_| {
            stepgate_pop::verify_content_digest(&digest, &body).unwrap();
            let input = &parse_signature_input(header).unwrap()[0];
            let base = signature_base(&message, input).unwrap();
            let bytes = signature_bytes(&value, "sig").unwrap();
            verify_signature(&public, key.sig_alg, input, &base, &bytes).unwrap();
        });
    }
}
