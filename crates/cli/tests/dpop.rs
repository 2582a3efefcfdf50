//! DPoP (RFC 9449) as a step-up factor, driven through the gateway with curl
//! and proofs made by a Python client with the `cryptography` package.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Gateway, Upstream, curl};

fn client(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dpop_client.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (Debian packages python3 and python3-cryptography)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let jwk = client(&["keygen", key.to_str().unwrap()]);
    let jwk_file = dir.join(format!("{name}.jwk"));
    std::fs::write(&jwk_file, jwk).unwrap();
    (key, jwk_file)
}

fn proof(key: &Path, method: &str, uri: &str, token: &str) -> String {
    client(&["proof", key.to_str().unwrap(), method, uri, token])
}

#[test]
fn dpop_proof_answers_a_challenge() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("signer");
    let keys = tempfile::tempdir().unwrap();
    let (key, jwk) = keygen(keys.path(), "bot");
    let thumbprint = gateway.cli_ok(&[
        "factor",
        "enroll",
        "dpop",
        "signer",
        "--jwk",
        jwk.to_str().unwrap(),
    ]);
    assert_eq!(thumbprint.trim().len(), 43, "{thumbprint}");
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    gateway.learn(&auth);

    // A new network is challenged, with DPoP as the factor on offer.
    let challenged = curl("127.0.9.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(challenged.status, 401, "{}", challenged.body);
    let body = challenged.json();
    assert_eq!(body["factors"][0]["factor"], "dpop", "{body}");
    let www = challenged.header("www-authenticate").unwrap();
    assert!(
        www.contains("acr_values=\"urn:stepgate:acr:dpop\""),
        "{www}"
    );
    let challenge = body["challenge_id"].as_str().unwrap().to_owned();

    // A proof for another URL, then one by another key, are rejected and
    // leave the challenge open.
    let uri = gateway.url("/orders/1");
    let elsewhere = proof(&key, "GET", &gateway.url("/orders/2"), &token);
    let ch = format!("Stepgate-Challenge: {challenge}");
    let wrong_url = curl(
        "127.0.9.9",
        &uri,
        &["-H", &auth, "-H", &ch, "-H", &format!("DPoP: {elsewhere}")],
    );
    assert_eq!(wrong_url.status, 401);
    assert_eq!(
        wrong_url.json()["reason"],
        "invalid_proof",
        "{}",
        wrong_url.body
    );
    let (other_key, _) = keygen(keys.path(), "thief");
    let stolen = proof(&other_key, "GET", &uri, &token);
    let wrong_key = curl(
        "127.0.9.9",
        &uri,
        &["-H", &auth, "-H", &ch, "-H", &format!("DPoP: {stolen}")],
    );
    assert_eq!(
        wrong_key.json()["reason"],
        "wrong_key",
        "{}",
        wrong_key.body
    );

    // The bound key's proof for this very request passes.
    let good = proof(&key, "GET", &uri, &token);
    let dpop = format!("DPoP: {good}");
    let answered = curl("127.0.9.9", &uri, &["-H", &auth, "-H", &ch, "-H", &dpop]);
    assert_eq!(answered.status, 200, "{}", answered.body);

    // The same proof is rejected for another challenge.
    let again = curl("127.0.10.9", &uri, &["-H", &auth]);
    assert_eq!(again.status, 401);
    let second = again.json()["challenge_id"].as_str().unwrap().to_owned();
    let ch2 = format!("Stepgate-Challenge: {second}");
    let replayed = curl("127.0.10.9", &uri, &["-H", &auth, "-H", &ch2, "-H", &dpop]);
    assert_eq!(replayed.status, 401);
    let replayed = replayed.json();
    assert_eq!(replayed["reason"], "invalid_proof", "{replayed}");
    assert!(
        replayed["message"]
            .as_str()
            .unwrap()
            .contains("replayed proof"),
        "{replayed}"
    );

    let audit = gateway.audit();
    assert!(
        audit
            .iter()
            .any(|record| record["event"] == "step_up_success" && record["factor"] == "dpop")
    );
    assert!(audit.iter().any(|record| {
        record["event"] == "admin"
            && record["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("factor enroll dpop")
    }));
}

#[test]
fn dpop_enrolment_rejects_private_and_bad_keys() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, "");
    gateway.cli_ok(&["identity", "add", "signer"]);
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.jwk");
    std::fs::write(
        &private,
        r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}"#,
    )
    .unwrap();
    let out = gateway.cli(&[
        "factor",
        "enroll",
        "dpop",
        "signer",
        "--jwk",
        private.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private member \"d\""));
    let garbage = dir.path().join("garbage.jwk");
    std::fs::write(&garbage, "not json").unwrap();
    let out = gateway.cli(&[
        "factor",
        "enroll",
        "dpop",
        "signer",
        "--jwk",
        garbage.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not JSON"));
}

#[test]
fn dpop_bound_token_needs_proofs() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("bound");
    let keys = tempfile::tempdir().unwrap();
    let (key, jwk) = keygen(keys.path(), "bound");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "dpop",
        "bound",
        "--jwk",
        jwk.to_str().unwrap(),
        "--require",
    ]);
    gateway.start();
    let uri = gateway.url("/orders/1");

    // The token alone, as Bearer, is refused.
    let bearer = curl(
        "127.0.0.2",
        &uri,
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(bearer.status, 401, "{}", bearer.body);
    assert!(bearer.json().get("challenge_id").is_none());

    // With the DPoP scheme and a proof by the bound key it passes, and
    // every request proves possession: a new network needs no challenge.
    let auth = format!("Authorization: DPoP {token}");
    for i in 0..6 {
        let proved = proof(&key, "GET", &uri, &token);
        let response = curl(
            "127.0.0.2",
            &uri,
            &["-H", &auth, "-H", &format!("DPoP: {proved}")],
        );
        assert_eq!(response.status, 200, "{i}: {}", response.body);
    }
    let fresh = proof(&key, "GET", &uri, &token);
    let moved = curl(
        "127.0.9.9",
        &uri,
        &["-H", &auth, "-H", &format!("DPoP: {fresh}")],
    );
    assert_eq!(moved.status, 200, "{}", moved.body);

    // Without a proof, with a replayed one, or with another key's: refused.
    let none = curl("127.0.0.2", &uri, &["-H", &auth]);
    assert_eq!(none.status, 401);
    let replayed = curl(
        "127.0.0.2",
        &uri,
        &["-H", &auth, "-H", &format!("DPoP: {fresh}")],
    );
    assert_eq!(replayed.status, 401);
    let (thief, _) = keygen(keys.path(), "thief");
    let stolen = proof(&thief, "GET", &uri, &token);
    let other_key = curl(
        "127.0.0.2",
        &uri,
        &["-H", &auth, "-H", &format!("DPoP: {stolen}")],
    );
    assert_eq!(other_key.status, 401);

    let audit = gateway.audit();
    let rejections: Vec<&str> = audit
        .iter()
        .filter(|record| record["event"] == "auth_failure")
        .filter_map(|record| record["detail"].as_str())
        .collect();
    assert!(
        rejections.contains(&"token is DPoP-bound and came without a DPoP proof"),
        "{rejections:?}"
    );
    assert!(
        rejections.contains(&"DPoP proof missing, invalid or by another key"),
        "{rejections:?}"
    );
}

#[test]
fn dpop_nonce_and_public_origin() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    // Clients reach the gateway as https://api.example.com/gw, behind a
    // load balancer that strips the prefix.
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    let text = text.replace(
        "trusted_proxies = []",
        "trusted_proxies = []\npublic_origin = \"https://api.example.com/gw\"",
    );
    std::fs::write(
        &gateway.config,
        format!("{text}\n[step_up]\ndpop_nonce = true\n"),
    )
    .unwrap();
    let token = gateway.add_with_token("bound");
    let keys = tempfile::tempdir().unwrap();
    let (key, jwk) = keygen(keys.path(), "bound");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "dpop",
        "bound",
        "--jwk",
        jwk.to_str().unwrap(),
        "--require",
    ]);
    gateway.start();
    let auth = format!("Authorization: DPoP {token}");
    let public = "https://api.example.com/gw/orders/1";

    // Without a nonce: 401 use_dpop_nonce, with the nonce to use.
    let first = proof(&key, "GET", public, &token);
    let nonce_required = curl(
        "127.0.0.2",
        &gateway.url("/orders/1"),
        &["-H", &auth, "-H", &format!("DPoP: {first}")],
    );
    assert_eq!(nonce_required.status, 401, "{}", nonce_required.body);
    assert_eq!(
        nonce_required.json()["error"],
        "use_dpop_nonce",
        "{}",
        nonce_required.body
    );
    assert!(
        nonce_required
            .header("www-authenticate")
            .unwrap()
            .contains("use_dpop_nonce")
    );
    let nonce = nonce_required
        .header("dpop-nonce")
        .expect("DPoP-Nonce header")
        .to_owned();

    // With the nonce and the public URI, the proof passes.
    let signed = client(&[
        "proof",
        key.to_str().unwrap(),
        "GET",
        public,
        &token,
        &nonce,
    ]);
    let passed = curl(
        "127.0.0.2",
        &gateway.url("/orders/1"),
        &["-H", &auth, "-H", &format!("DPoP: {signed}")],
    );
    assert_eq!(passed.status, 200, "{}", passed.body);

    // A proof naming the gateway's own address instead of the public origin
    // fails: htu is rebuilt from the configuration, not from the request.
    let local = client(&[
        "proof",
        key.to_str().unwrap(),
        "GET",
        &gateway.url("/orders/1"),
        &token,
        &nonce,
    ]);
    let rejected = curl(
        "127.0.0.2",
        &gateway.url("/orders/1"),
        &["-H", &auth, "-H", &format!("DPoP: {local}")],
    );
    assert_eq!(rejected.status, 401, "{}", rejected.body);
}

#[test]
fn challenge_lists_every_enrolled_factor() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let (token, secret) = gateway.enrol("both");
    let keys = tempfile::tempdir().unwrap();
    let (key, jwk) = keygen(keys.path(), "both");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "dpop",
        "both",
        "--jwk",
        jwk.to_str().unwrap(),
    ]);
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    gateway.learn(&auth);
    let challenged = curl("127.0.9.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(challenged.status, 401);
    let body = challenged.json();
    let factors: Vec<&str> = body["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|factor| factor["factor"].as_str().unwrap())
        .collect();
    assert_eq!(factors, ["totp", "dpop"], "{body}");
    let www = challenged.header("www-authenticate").unwrap();
    assert!(
        www.contains("acr_values=\"urn:stepgate:acr:totp urn:stepgate:acr:dpop\""),
        "{www}"
    );
    // Either factor meets the challenge. Here the DPoP key does.
    let challenge = body["challenge_id"].as_str().unwrap();
    let uri = gateway.url("/orders/1");
    let signed = proof(&key, "GET", &uri, &token);
    let answered = curl(
        "127.0.9.9",
        &uri,
        &[
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Challenge: {challenge}"),
            "-H",
            &format!("DPoP: {signed}"),
        ],
    );
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert!(!secret.is_empty());
}

#[test]
fn dpop_key_outside_its_window_is_refused() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("expired");
    let keys = tempfile::tempdir().unwrap();
    let (key, jwk) = keygen(keys.path(), "old");
    let jwk = jwk.to_str().unwrap();
    let backwards = gateway.cli(&[
        "factor",
        "enroll",
        "dpop",
        "expired",
        "--jwk",
        jwk,
        "--not-before",
        "2030-01-01T00:00:00Z",
        "--not-after",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("would never be valid"));
    let bad_time = gateway.cli(&[
        "factor",
        "enroll",
        "dpop",
        "expired",
        "--jwk",
        jwk,
        "--not-after",
        "soon",
    ]);
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("is not an RFC 3339 time"));
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "dpop",
        "expired",
        "--jwk",
        jwk,
        "--not-after",
        "2020-01-01T00:00:00Z",
    ]);
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    gateway.learn(&auth);
    let uri = gateway.url("/orders/1");
    let challenged = curl("127.0.9.9", &uri, &["-H", &auth]);
    let challenge = challenged.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let signed = proof(&key, "GET", &uri, &token);
    let rejected = curl(
        "127.0.9.9",
        &uri,
        &[
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Challenge: {challenge}"),
            "-H",
            &format!("DPoP: {signed}"),
        ],
    );
    assert_eq!(rejected.status, 401);
    assert_eq!(
        rejected.json()["reason"],
        "key_expired",
        "{}",
        rejected.body
    );
}

#[test]
fn dpop_bound_request_held_for_approval() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        r#"
[[zones]]
name = "orders"
prefix = "/orders"
approval_for = ["delete"]
"#,
    );
    let token = gateway.add_with_token("bound");
    let keys = tempfile::tempdir().unwrap();
    let (key, jwk) = keygen(keys.path(), "bound");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "dpop",
        "bound",
        "--jwk",
        jwk.to_str().unwrap(),
        "--require",
    ]);
    let uri_secret = gateway.cli_ok(&["approver", "add", "alice"]);
    let secret = uri_secret
        .trim()
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    gateway.start();
    let uri = gateway.url("/orders/1");
    let proved = proof(&key, "DELETE", &uri, &token);
    let held = {
        let uri = uri.clone();
        let auth = format!("Authorization: DPoP {token}");
        std::thread::spawn(move || {
            curl(
                "127.0.0.2",
                &uri,
                &[
                    "-X",
                    "DELETE",
                    "-H",
                    &auth,
                    "-H",
                    &format!("DPoP: {proved}"),
                    "-H",
                    "Prefer: wait=15",
                ],
            )
        })
    };
    // The held request's proof was accepted once; after the approval the
    // request is decided again without checking that proof a second time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let id = loop {
        let listed = gateway.cli_ok(&["approvals", "list", "--format", "json"]);
        if let Some(line) = listed.lines().next() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            break value["id"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no pending approval");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    gateway.cli_ok(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &support::oathtool(&secret),
    ]);
    let response = held.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(upstream.count(), 1);
}
