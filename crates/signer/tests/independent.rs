//! Signatures made by the signer verify with an independent implementation
//! (Python's `cryptography` package, Debian package python3-cryptography)
//! over the exact signature base, and fail over an altered base.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use stepgate_pop::httpsig::signature_bytes;
use stepgate_signer::{
    KeyFileSigner, RequestToSign, SignOptions, Signer, build_signature_base, key_thumbprint,
    sign_request,
};

#[test]
fn python_cryptography_verifies_signatures() {
    let rng = SystemRandom::new();
    let keys = [
        Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec(),
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec(),
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec(),
        RsaKeyPair::generate(KeySize::Rsa2048)
            .unwrap()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec(),
    ];
    let request = RequestToSign::parse(
        b"POST https://api.example.com/v1/orders?id=7\n\
          Content-Type: application/json\n\
          \n\
          {\"hello\": \"world\"}\n",
    )
    .unwrap();

    let mut cases = Vec::new();
    for der in &keys {
        let signer = KeyFileSigner::from_pkcs8_der(der).unwrap();
        let options = SignOptions {
            nonce: Some("ch_independent".to_owned()),
            expires: Some(1_700_000_300),
            ..SignOptions::new(key_thumbprint(&signer).unwrap(), 1_700_000_000)
        };
        let signed = sign_request(&request, &options, &signer).unwrap();
        let signature = signature_bytes(&signed.signature, &options.label).unwrap();
        cases.push(json!({
            "alg": signer.algorithm().name(),
            "jwk": signer.public_jwk(),
            "base": build_signature_base(&request, &options).unwrap(),
            "signature": STANDARD.encode(signature),
        }));
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_signatures.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (Debian packages python3 and python3-cryptography)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "ed25519 valid invalid",
            "ecdsa-p256-sha256 valid invalid",
            "ecdsa-p384-sha384 valid invalid",
            "rsa-pss-sha512 valid invalid",
        ]
    );
}
