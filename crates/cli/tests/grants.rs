//! Signed grant tokens: a step-up proved on one replica counts on another
//! that shares the signing key, within the grant's scope, network and
//! lifetime only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::{Gateway, Upstream, curl, oathtool};

const GRANTS: &str = "[step_up]\ngrant_tokens = true\n";

#[test]
fn grant_token_from_one_replica_counts_on_another() {
    let upstream = Upstream::start();
    let mut first = Gateway::new(upstream.addr, GRANTS);
    let (token, secret) = first.enrol("bot");
    first.start();
    let auth = format!("Authorization: Bearer {token}");
    first.learn(&auth);

    // The second replica starts once the first has saved the baseline it
    // learned, as a replica added to a running deployment would.
    std::thread::sleep(Duration::from_millis(2500));
    let mut second = first.replica();
    second.start();

    let challenged = curl("127.0.9.9", &first.url("/orders/7"), &["-H", &auth]);
    assert_eq!(challenged.status, 401, "{}", challenged.body);
    let challenge = challenged.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = oathtool(&secret);
    let answered = curl(
        "127.0.9.9",
        &first.url("/orders/7"),
        &[
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Challenge: {challenge}"),
            "-H",
            &format!("Stepgate-Totp: {code}"),
        ],
    );
    assert_eq!(answered.status, 200, "{}", answered.body);
    let grant = answered
        .header("stepgate-grant")
        .expect("a grant token")
        .to_owned();
    assert_eq!(grant.split('.').count(), 3, "{grant}");
    assert!(upstream.last().header("stepgate-grant").is_none());

    // The other replica never saw the step-up, and challenges without the
    // token. Another network, another resource, an altered token or another
    // identity get no grant from it either.
    let grant_header = format!("Stepgate-Grant: {grant}");
    let without = curl("127.0.9.10", &second.url("/orders/8"), &["-H", &auth]);
    assert_eq!(without.status, 401, "{}", without.body);
    let elsewhere = curl(
        "127.0.10.9",
        &second.url("/orders/8"),
        &["-H", &auth, "-H", &grant_header],
    );
    assert_eq!(elsewhere.status, 401, "{}", elsewhere.body);
    let other_resource = curl(
        "127.0.9.10",
        &second.url("/invoices/3"),
        &["-H", &auth, "-H", &grant_header],
    );
    assert_eq!(other_resource.status, 401, "{}", other_resource.body);
    let (claims_end, _) = grant.rsplit_once('.').unwrap();
    let forged_signature = format!("{claims_end}.{}", "A".repeat(86));
    let forged = curl(
        "127.0.9.10",
        &second.url("/orders/8"),
        &[
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Grant: {forged_signature}"),
        ],
    );
    assert_eq!(forged.status, 401, "{}", forged.body);
    let (other_token, _) = first.enrol("other");
    support::wait_for_reload();
    let other_auth = format!("Authorization: Bearer {other_token}");
    second.learn(&other_auth);
    let stolen = curl(
        "127.0.9.10",
        &second.url("/orders/8"),
        &["-H", &other_auth, "-H", &grant_header],
    );
    assert_eq!(stolen.status, 401, "{}", stolen.body);

    // With the token the request passes on the replica.
    let with = curl(
        "127.0.9.10",
        &second.url("/orders/8"),
        &["-H", &auth, "-H", &grant_header],
    );
    assert_eq!(with.status, 200, "{}", with.body);
    assert!(
        upstream.last().header("stepgate-grant").is_none(),
        "the token is not forwarded"
    );

    second.stop();
    let log = second.log();
    assert!(log.contains("grant token not counted"), "{log}");
    assert!(!log.contains(&grant), "the token never reaches the log");
}

#[test]
fn grant_key_is_printable_and_checked() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, GRANTS);
    let printed = gateway.cli_ok(&["grant-key"]);
    let jwk: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(jwk["kty"], "OKP", "{printed}");
    assert!(jwk.get("d").is_none(), "only the public key is printed");
    // The created key is PKCS#8 that openssl reads.
    let key = gateway.dir.path().join("data").join("grant-key.pem");
    let openssl = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl runs (Debian package openssl)");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    gateway.cli_ok(&["check-config"]);

    // check-config reads the configured keys as `run` would.
    let dir = gateway.dir.path();
    let p256 = dir.join("p256.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&p256)
        .status()
        .unwrap();
    assert!(made.success());
    let p256_public = dir.join("p256.pub");
    let made = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&p256)
        .arg("-out")
        .arg(&p256_public)
        .status()
        .unwrap();
    assert!(made.success());
    let cases = [
        (
            format!("grant_key_file = \"{}\"", dir.join("absent.pem").display()),
            "cannot read grant key",
        ),
        (
            format!("grant_key_file = \"{}\"", p256.display()),
            "not an Ed25519 private key",
        ),
        (
            format!("grant_trusted_keys = [\"{}\"]", p256_public.display()),
            "not an Ed25519 key",
        ),
    ];
    let original = std::fs::read_to_string(&gateway.config).unwrap();
    for (line, expected) in cases {
        let text = original.replace(
            "grant_tokens = true",
            &format!("grant_tokens = true\n{line}"),
        );
        std::fs::write(&gateway.config, text).unwrap();
        let output = gateway.cli(&["check-config"]);
        assert!(!output.status.success(), "{line}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{line}: {stderr}");
    }
}
