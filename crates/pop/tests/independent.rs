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
