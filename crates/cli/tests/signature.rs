//! HTTP message signatures (RFC 9421) as a step-up factor, driven through
//! the gateway with curl carrying signatures made by an independent Python
//! signer (the `cryptography` package).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{CurlResponse, Gateway, Upstream, curl};

const ALGORITHMS: [&str; 4] = [
    "ed25519",
    "ecdsa-p256-sha256",
    "ecdsa-p384-sha384",
    "rsa-pss-sha512",
];

fn signer(args: &[&str], env: &[(&str, &str)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/httpsig_client.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs (Debian packages python3 and python3-cryptography)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Writes a private key for `alg` and its public PEM; returns both paths.
fn keygen(dir: &Path, name: &str, alg: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let public = signer(&["keygen", key.to_str().unwrap(), alg], &[]);
    let public_file = dir.join(format!("{name}.pub"));
    std::fs::write(&public_file, public).unwrap();
    (key, public_file)
}

/// A request to sign: method, URL, challenge and body file.
struct ToSign<'a> {
    key: &'a Path,
    alg: &'a str,
    key_id: &'a str,
    method: &'a str,
    url: &'a str,
    challenge: &'a str,
    body: Option<&'a Path>,
}

/// Signs a request and returns curl arguments carrying the signature
/// headers and the challenge id.
fn signed_headers(request: &ToSign<'_>, env: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec![
        "sign",
        request.key.to_str().unwrap(),
        request.alg,
        request.key_id,
        request.method,
        request.url,
        request.challenge,
    ];
    if let Some(body) = request.body {
        args.push(body.to_str().unwrap());
    }
    let mut headers = vec![
        "-H".to_owned(),
        format!("Stepgate-Challenge: {}", request.challenge),
    ];
    for line in signer(&args, env).lines() {
        headers.push("-H".to_owned());
        headers.push(line.to_owned());
    }
    headers
}

fn send(
    from: &str,
    url: &str,
    auth: &str,
    method: &str,
    body: Option<&Path>,
    extra: &[String],
) -> CurlResponse {
    let mut args: Vec<String> = vec!["-X".into(), method.into(), "-H".into(), auth.into()];
    if let Some(body) = body {
        args.push("--data-binary".into());
        args.push(format!("@{}", body.display()));
        args.push("-H".into());
        args.push("Content-Type: application/json".into());
    }
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(from, url, &args)
}

#[test]
fn signatures_by_every_algorithm_answer_a_challenge() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let keys = tempfile::tempdir().unwrap();
    let body = keys.path().join("body.json");
    std::fs::write(&body, br#"{"order": 17, "quantity": 3}"#).unwrap();
    let mut bots = Vec::new();
    for alg in ALGORITHMS {
        let name = format!("bot-{}", alg.split('-').next().unwrap_or(alg));
        let name = if alg == "ecdsa-p384-sha384" {
            "bot-p384".to_owned()
        } else {
            name
        };
        let token = gateway.add_with_token(&name);
        let (key, public) = keygen(keys.path(), &name, alg);
        let key_id = gateway
            .cli_ok(&[
                "factor",
                "enroll",
                "signature",
                &name,
                "--key",
                public.to_str().unwrap(),
            ])
            .trim()
            .to_owned();
        // The default key id is the RFC 7638 thumbprint.
        assert_eq!(key_id.len(), 43, "{key_id}");
        bots.push((name, token, key, key_id, alg));
    }
    gateway.start();
    for (name, token, key, key_id, alg) in &bots {
        let auth = format!("Authorization: Bearer {token}");
        gateway.learn(&auth);
        let url = gateway.url("/orders/17");
        let challenged = send("127.0.9.9", &url, &auth, "POST", Some(&body), &[]);
        assert_eq!(challenged.status, 401, "{}", challenged.body);
        let json = challenged.json();
        assert_eq!(json["factors"][0]["factor"], "signature", "{json}");
        let challenge = json["challenge_id"].as_str().unwrap().to_owned();
        let accept = challenged
            .header("accept-signature")
            .expect("Accept-Signature");
        assert_eq!(
            accept,
            format!(
                r#"stepgate=("@method" "@target-uri" "@authority" "content-digest");created;nonce="{challenge}""#
            )
        );
        assert!(
            challenged
                .header("www-authenticate")
                .unwrap()
                .contains("urn:stepgate:acr:httpsig")
        );

        let request = ToSign {
            key,
            alg,
            key_id,
            method: "POST",
            url: &url,
            challenge: &challenge,
            body: Some(&body),
        };
        let headers = signed_headers(&request, &[]);
        let answered = send("127.0.9.9", &url, &auth, "POST", Some(&body), &headers);
        assert_eq!(answered.status, 200, "{name}: {}", answered.body);
        let seen = upstream.last();
        assert_eq!(
            seen.body,
            r#"{"order": 17, "quantity": 3}"#.as_bytes(),
            "{name}"
        );
        assert!(seen.header("stepgate-challenge").is_none());

        // The same signed request again is a replay.
        let replayed = send("127.0.9.9", &url, &auth, "POST", Some(&body), &headers);
        assert_eq!(replayed.status, 401, "{}", replayed.body);
        assert_eq!(
            replayed.json()["reason"],
            "unknown_challenge",
            "{}",
            replayed.body
        );
    }
    gateway.stop();
    let audit = gateway.audit();
    for (name, _, _, key_id, _) in &bots {
        assert!(
            audit
                .iter()
                .any(|record| record["event"] == "step_up_success"
                    && record["identity"] == name.as_str()
                    && record["factor"] == "signature"
                    && record["detail"] == format!("signature key {key_id}")),
            "no success record for {name}"
        );
    }
}

#[test]
fn signature_failures_are_refused_and_audited() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("signer");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path(), "signer", "ecdsa-p256-sha256");
    let (other, _) = keygen(keys.path(), "other", "ecdsa-p256-sha256");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "signature",
        "signer",
        "--key",
        public.to_str().unwrap(),
        "--key-id",
        "hsm-1",
    ]);
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    gateway.learn(&auth);
    let body = keys.path().join("body.json");
    std::fs::write(&body, br#"{"amount": 10}"#).unwrap();
    let changed = keys.path().join("changed.json");
    std::fs::write(&changed, br#"{"amount": 10000}"#).unwrap();
    let url = gateway.url("/orders/1");
    let challenged = send("127.0.9.9", &url, &auth, "POST", Some(&body), &[]);
    assert_eq!(challenged.status, 401, "{}", challenged.body);
    let challenge = challenged.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = ToSign {
        key: &key,
        alg: "ecdsa-p256-sha256",
        key_id: "hsm-1",
        method: "POST",
        url: &url,
        challenge: &challenge,
        body: Some(&body),
    };
    let other_url = gateway.url("/orders/2");
    let cases: Vec<(&str, Vec<String>, &Path, &str)> = vec![
        (
            "missing component",
            signed_headers(
                &base,
                &[("COMPONENTS", "@method @target-uri content-digest")],
            ),
            &body,
            "invalid_signature",
        ),
        (
            "body changed after signing",
            signed_headers(&base, &[]),
            &changed,
            "body_changed",
        ),
        (
            "signature for another URL",
            signed_headers(
                &ToSign {
                    url: &other_url,
                    ..base
                },
                &[],
            ),
            &body,
            "invalid_signature",
        ),
        (
            "wrong key",
            signed_headers(
                &ToSign {
                    key: &other,
                    ..base
                },
                &[],
            ),
            &body,
            "invalid_signature",
        ),
        (
            "unknown key id",
            signed_headers(
                &ToSign {
                    key_id: "hsm-9",
                    ..base
                },
                &[],
            ),
            &body,
            "unknown_key",
        ),
        (
            "created too long ago",
            signed_headers(&base, &[("CREATED", "1700000000")]),
            &body,
            "invalid_signature",
        ),
        (
            "Signature without Signature-Input",
            vec![
                "-H".to_owned(),
                format!("Stepgate-Challenge: {challenge}"),
                "-H".to_owned(),
                "Signature: bot=:AAAA:".to_owned(),
            ],
            &body,
            "missing_signature",
        ),
    ];
    for (case, headers, sent_body, reason) in &cases {
        let answered = send("127.0.9.9", &url, &auth, "POST", Some(sent_body), headers);
        assert_eq!(answered.status, 401, "{case}: {}", answered.body);
        let json = answered.json();
        assert_eq!(json["reason"], *reason, "{case}: {json}");
        // The challenge stays open for a correct answer.
        assert_eq!(json["challenge_id"], challenge.as_str(), "{case}");
    }
    assert_eq!(upstream.count(), 5, "nothing reached the upstream");
    let good = signed_headers(&base, &[]);
    let answered = send("127.0.9.9", &url, &auth, "POST", Some(&body), &good);
    assert_eq!(answered.status, 200, "{}", answered.body);

    gateway.stop();
    let failures: Vec<String> = gateway
        .audit()
        .into_iter()
        .filter(|record| record["event"] == "step_up_failure")
        .map(|record| {
            assert_eq!(record["factor"], "signature", "{record}");
            record["detail"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(failures.len(), cases.len(), "{failures:?}");
    assert!(
        failures[0].contains("hsm-1") && failures[0].contains("@authority"),
        "{failures:?}"
    );
    assert!(failures[1].contains("Content-Digest"), "{failures:?}");
    assert!(failures[3].contains("does not verify"), "{failures:?}");
    assert!(failures[4].contains("hsm-9"), "{failures:?}");
    // Key material never reaches the audit trail.
    let public_pem = std::fs::read_to_string(&public).unwrap();
    let key_line = public_pem.lines().nth(1).unwrap();
    let log = gateway.log();
    for text in failures.iter().chain(std::iter::once(&log)) {
        assert!(!text.contains(key_line));
    }
}

#[test]
fn expired_and_rotated_keys() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("rotating");
    let keys = tempfile::tempdir().unwrap();
    let (old, old_public) = keygen(keys.path(), "old", "ed25519");
    let (new, new_public) = keygen(keys.path(), "new", "ed25519");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "signature",
        "rotating",
        "--key",
        old_public.to_str().unwrap(),
        "--key-id",
        "old",
        "--not-after",
        "2020-01-01T00:00:00Z",
    ]);
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    gateway.learn(&auth);
    let answer = |from: &str, key: &Path, key_id: &str| {
        let url = gateway.url("/orders/1");
        let challenged = send(from, &url, &auth, "GET", None, &[]);
        assert_eq!(challenged.status, 401, "{}", challenged.body);
        let challenge = challenged.json()["challenge_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let request = ToSign {
            key,
            alg: "ed25519",
            key_id,
            method: "GET",
            url: &url,
            challenge: &challenge,
            body: None,
        };
        let headers = signed_headers(&request, &[]);
        send(from, &url, &auth, "GET", None, &headers)
    };
    let expired = answer("127.0.9.9", &old, "old");
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert_eq!(expired.json()["reason"], "key_expired");

    // Rotation: the new key is enrolled while the old one is still there;
    // then the old one is removed and no longer counts.
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "signature",
        "rotating",
        "--key",
        new_public.to_str().unwrap(),
        "--key-id",
        "new",
    ]);
    support::wait_for_reload();
    assert_eq!(answer("127.0.10.9", &new, "new").status, 200);
    let keys = |gateway: &Gateway| -> Vec<serde_json::Value> {
        gateway
            .cli_ok(&["factor", "list", "rotating", "--format", "json"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let listed = keys(&gateway);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["key"], "old");
    assert_eq!(listed[0]["algorithm"], "ed25519");
    assert_eq!(listed[0]["not_after"], "2020-01-01T00:00:00.000Z");
    assert_eq!(listed[1]["key"], "new");
    gateway.cli_ok(&[
        "factor",
        "remove",
        "signature",
        "rotating",
        "--key-id",
        "old",
    ]);
    support::wait_for_reload();
    let listed = keys(&gateway);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], "new");
    let removed = answer("127.0.11.9", &old, "old");
    assert_eq!(removed.json()["reason"], "unknown_key", "{}", removed.body);
    assert_eq!(answer("127.0.12.9", &new, "new").status, 200);
}

#[test]
fn enrolment_errors_name_the_problem() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, "");
    gateway.cli_ok(&["identity", "add", "bot"]);
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = keygen(keys.path(), "bot", "ed25519");
    let garbage = keys.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let huge = keys.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 2 * 1024 * 1024]).unwrap();
    let cases: [(&[&str], &str); 8] = [
        (
            &["--key", huge.to_str().unwrap()],
            "larger than 1048576 bytes",
        ),
        (&["--key", private.to_str().unwrap()], "private key"),
        (&["--key", garbage.to_str().unwrap()], "public key PEM"),
        (
            &["--key", "/nonexistent/key.pem"],
            "cannot read public key file",
        ),
        (
            &[
                "--key",
                public.to_str().unwrap(),
                "--not-before",
                "2030-01-01T00:00:00Z",
                "--not-after",
                "2029-01-01T00:00:00Z",
            ],
            "never be valid",
        ),
        (
            &["--key", public.to_str().unwrap(), "--key-id", ""],
            "--key-id",
        ),
        (
            &["--key", public.to_str().unwrap(), "--key-id", "clé-1"],
            "visible ASCII",
        ),
        (
            &["--key", public.to_str().unwrap(), "--key-id", " hsm-1"],
            "visible ASCII",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["factor", "enroll", "signature", "bot"];
        full.extend_from_slice(args);
        let output = gateway.cli(&full);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // A private key never echoes back.
        assert!(!stderr.contains("PRIVATE KEY-----\n"), "{stderr}");
    }
    let output = gateway.cli(&[
        "factor",
        "enroll",
        "signature",
        "nobody",
        "--key",
        public.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let output = gateway.cli(&["factor", "remove", "signature", "nobody", "--key-id", "k"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("identity nobody not found"));
    let output = gateway.cli(&["factor", "remove", "signature", "bot", "--key-id", "absent"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no signing key absent"));
}

#[test]
fn signed_bodies_are_read_only_for_open_challenges() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("signer");
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = keygen(keys.path(), "signer", "ed25519");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "signature",
        "signer",
        "--key",
        public.to_str().unwrap(),
    ]);
    gateway.start();

    // Without a valid token and an open challenge the gateway answers at
    // once instead of waiting for a body it was promised.
    for authorization in ["", &format!("Authorization: Bearer {token}\r\n")] {
        let head = format!(
            "POST /orders/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Stepgate-Challenge: ch_unknown\r\nSignature-Input: x\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\nabc"
        );
        let started = std::time::Instant::now();
        let answer = support::raw_request(gateway.port, head.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "the gateway waited for the body"
        );
    }

    // A body over the limit for an open challenge: 413, and audited.
    let auth = format!("Authorization: Bearer {token}");
    gateway.learn(&auth);
    let big = keys.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 16 * 1024 * 1024 + 1]).unwrap();
    let challenged = send(
        "127.0.9.9",
        &gateway.url("/orders/1"),
        &auth,
        "POST",
        Some(&big),
        &[],
    );
    assert_eq!(challenged.status, 401, "{}", challenged.body);
    let challenge = challenged.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let headers = [
        "-H".to_owned(),
        format!("Stepgate-Challenge: {challenge}"),
        "-H".to_owned(),
        "Signature-Input: bot=(\"@method\");created=1;keyid=\"k\"".to_owned(),
        "-H".to_owned(),
        "Signature: bot=:AAAA:".to_owned(),
    ];
    let too_large = send(
        "127.0.9.9",
        &gateway.url("/orders/1"),
        &auth,
        "POST",
        Some(&big),
        &headers,
    );
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert_eq!(too_large.json()["error"], "body_too_large");

    gateway.stop();
    assert!(
        gateway
            .audit()
            .iter()
            .any(|record| record["event"] == "step_up_failure"
                && record["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains("could not be read"))),
        "no audit record for the unreadable body"
    );
    assert_eq!(upstream.count(), 5);
}
