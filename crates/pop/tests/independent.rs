//! DPoP proofs made by an independent implementation (Python's
//! `cryptography` package) verify, and their thumbprints agree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use stepgate_core::Timestamp;
use stepgate_pop::{DpopWindow, ProofTarget, ReplayCache, verify_proof};

#[test]
fn python_cryptography_proofs_verify() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dpop_proofs.py");
    let uri = "https://api.example.com/v1/orders";
    let iat = 1_800_000_000;
    let output = Command::new("python3")
        .args([script, uri, &iat.to_string()])
        .output()
        .expect("python3 runs (Debian packages python3 and python3-cryptography)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replays = ReplayCache::default();
    let mut algorithms = Vec::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let target = ProofTarget {
            method: case["method"].as_str().unwrap(),
            uri,
            access_token: None,
            nonces: &[],
            now: Timestamp::from_secs(iat + 1),
        };
        let proof = case["proof"].as_str().unwrap();
        let verified = verify_proof(&[proof], &target, DpopWindow::default(), &replays)
            .unwrap_or_else(|err| panic!("{}: {err}", case["alg"]));
        assert_eq!(verified.thumbprint, case["jkt"], "{}", case["alg"]);
        algorithms.push(verified.algorithm.name());
        // The same proof again is a replay.
        assert!(verify_proof(&[proof], &target, DpopWindow::default(), &replays).is_err());
    }
    assert_eq!(algorithms, ["ES256", "EdDSA", "PS256"]);
}

/// Converts an ECDSA signature from DER, as openssl writes it, to the
/// fixed-width `r || s` form of RFC 9421 §3.3.
fn ecdsa_der_to_raw(der: &[u8], width: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut at = if der[1] == 0x81 { 3 } else { 2 };
    let mut raw = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[at], 0x02);
        let len = usize::from(der[at + 1]);
        let mut int = &der[at + 2..at + 2 + len];
        while int.len() > width && int[0] == 0 {
            int = &int[1..];
        }
        raw.extend(std::iter::repeat_n(0, width - int.len()));
        raw.extend_from_slice(int);
        at += 2 + len;
    }
    raw
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn openssl_keys_and_signatures_verify() {
    use stepgate_pop::SignatureAlgorithm;
    use stepgate_pop::httpsig::{parse_signature_input, verify_signature};

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let base = "\"@method\": POST\n\"@signature-params\": (\"@method\");created=1700000000";
    std::fs::write(path("base"), base).unwrap();
    let input = &parse_signature_input("sig=(\"@method\");created=1700000000").unwrap()[0];
    let cases: [(&str, &[&str], SignatureAlgorithm); 4] = [
        (
            "ed25519",
            &["-algorithm", "ed25519"],
            SignatureAlgorithm::Ed25519,
        ),
        (
            "p256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            SignatureAlgorithm::EcdsaP256Sha256,
        ),
        (
            "p384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            SignatureAlgorithm::EcdsaP384Sha384,
        ),
        (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            SignatureAlgorithm::RsaPssSha512,
        ),
    ];
    for (name, keygen, algorithm) in cases {
        let key = path(&format!("{name}.key"));
        let public = path(&format!("{name}.pub"));
        let sig = path(&format!("{name}.sig"));
        let mut args = vec!["genpkey"];
        args.extend_from_slice(keygen);
        args.extend_from_slice(&["-out", &key]);
        openssl(&args);
        openssl(&["pkey", "-in", &key, "-pubout", "-out", &public]);
        match algorithm {
            SignatureAlgorithm::Ed25519 => openssl(&[
                "pkeyutl",
                "-sign",
                "-rawin",
                "-inkey",
                &key,
                "-in",
                &path("base"),
                "-out",
                &sig,
            ]),
            SignatureAlgorithm::EcdsaP256Sha256 => openssl(&[
                "dgst",
                "-sha256",
                "-sign",
                &key,
                "-out",
                &sig,
                &path("base"),
            ]),
            SignatureAlgorithm::EcdsaP384Sha384 => openssl(&[
                "dgst",
                "-sha384",
                "-sign",
                &key,
                "-out",
                &sig,
                &path("base"),
            ]),
            SignatureAlgorithm::RsaPssSha512 => openssl(&[
                "dgst",
                "-sha512",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:64",
                "-sign",
                &key,
                "-out",
                &sig,
                &path("base"),
            ]),
        }
        let pem = std::fs::read_to_string(&public).unwrap();
        let jwk =
            stepgate_pop::public_key_from_pem(&pem).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(SignatureAlgorithm::for_key(&jwk), algorithm, "{name}");
        let mut signature = std::fs::read(&sig).unwrap();
        match algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => signature = ecdsa_der_to_raw(&signature, 32),
            SignatureAlgorithm::EcdsaP384Sha384 => signature = ecdsa_der_to_raw(&signature, 48),
            _ => {}
        }
        verify_signature(&jwk, algorithm, input, base, &signature)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let altered = base.replace("POST", "GET");
        assert!(verify_signature(&jwk, algorithm, input, &altered, &signature).is_err());
    }
}
