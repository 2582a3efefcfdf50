//! A step-up answered with a key that never leaves an HSM: SoftHSM2 holds
//! the key, `stepgate hsm keygen` creates it inside the token, `stepgate
//! sign` signs the request through PKCS#11, and curl carries the headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{CurlResponse, Gateway, Upstream, curl};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "26081975";

/// A SoftHSM2 token in a temporary directory.
struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Token {
    fn new() -> Token {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is missing ({MODULE}); install it with: apt-get install softhsm2"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let init = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", "bots"])
            .args(["--pin", PIN, "--so-pin", "12345678"])
            .output()
            .expect("softhsm2-util runs (Debian package softhsm2)");
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        Token { dir, conf }
    }

    /// Runs `stepgate` with the token's configuration and PIN.
    fn stepgate(&self, args: &[&str]) -> Output {
        Command::new(support::BIN)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("STEPGATE_PKCS11_PIN", PIN)
            .args(args)
            .output()
            .unwrap()
    }

    fn stepgate_ok(&self, args: &[&str]) -> String {
        let output = self.stepgate(args);
        assert!(
            output.status.success(),
            "stepgate {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Signs a request description with the key `label` for a challenge;
    /// returns the file of header lines for `curl -H @FILE`.
    fn sign(&self, label: &str, key_id: &str, challenge: &str, description: &str) -> PathBuf {
        let request = self.dir.path().join("request.txt");
        std::fs::write(&request, description).unwrap();
        let headers = self.stepgate_ok(&[
            "sign",
            "--pkcs11-module",
            MODULE,
            "--token",
            "bots",
            "--key-label",
            label,
            "--key-id",
            key_id,
            "--challenge",
            challenge,
            "--request",
            request.to_str().unwrap(),
        ]);
        let file = self.dir.path().join(format!("headers-{challenge}.txt"));
        std::fs::write(&file, headers).unwrap();
        file
    }
}

fn post(from: &str, url: &str, auth: &str, body: &str, headers: Option<&Path>) -> CurlResponse {
    let header_file = headers.map(|path| format!("@{}", path.display()));
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        auth,
        "-H",
        "Content-Type: application/json",
    ];
    args.extend(["--data-binary", body]);
    if let Some(file) = &header_file {
        args.extend(["-H", file.as_str()]);
    }
    curl(from, url, &args)
}

#[test]
fn hsm_key_answers_a_step_up_through_curl() {
    let token = Token::new();
    let jwk = token.stepgate_ok(&[
        "hsm",
        "keygen",
        "--pkcs11-module",
        MODULE,
        "--token",
        "bots",
        "--key-label",
        "deploy-bot",
        "--algorithm",
        "ecdsa-p256-sha256",
    ]);
    let value: serde_json::Value = serde_json::from_str(jwk.trim()).unwrap();
    assert_eq!(value["crv"], "P-256", "{jwk}");
    assert!(
        value.get("d").is_none(),
        "the private key stays in the token"
    );
    let jwk_file = token.dir.path().join("deploy-bot.jwk");
    std::fs::write(&jwk_file, &jwk).unwrap();

    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let api_token = gateway.add_with_token("deploy-bot");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "signature",
        "deploy-bot",
        "--key",
        jwk_file.to_str().unwrap(),
        "--key-id",
        "hsm:deploy-bot",
    ]);
    gateway.start();
    let auth = format!("Authorization: Bearer {api_token}");
    for i in 0..5 {
        let response = curl(
            "127.0.0.2",
            &gateway.url(&format!("/deploys/{i}")),
            &["-H", &auth],
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }

    let url = gateway.url("/deploys/42");
    let body = r#"{"image": "registry.local/app:1.4.2"}"#;
    let challenged = post("127.0.9.9", &url, &auth, body, None);
    assert_eq!(challenged.status, 401, "{}", challenged.body);
    let challenge = challenged.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        challenged
            .header("accept-signature")
            .unwrap()
            .contains("content-digest")
    );

    let description = format!("POST {url}\nContent-Type: application/json\n\n{body}");
    let headers = token.sign("deploy-bot", "hsm:deploy-bot", &challenge, &description);

    // The body changed after signing: rejected, and the challenge stays open.
    let changed = post(
        "127.0.9.9",
        &url,
        &auth,
        r#"{"image": "evil/app:latest"}"#,
        Some(&headers),
    );
    assert_eq!(changed.status, 401, "{}", changed.body);
    assert_eq!(changed.json()["reason"], "body_changed");

    let answered = post("127.0.9.9", &url, &auth, body, Some(&headers));
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(upstream.last().body, body.as_bytes());

    // The same signed request again is a replay.
    let replayed = post("127.0.9.9", &url, &auth, body, Some(&headers));
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    assert_eq!(replayed.json()["reason"], "unknown_challenge");

    // Signed by another key in the token under the enrolled key id.
    token.stepgate_ok(&[
        "hsm",
        "keygen",
        "--pkcs11-module",
        MODULE,
        "--token",
        "bots",
        "--key-label",
        "intruder",
    ]);
    let other = post("127.0.10.9", &url, &auth, body, None);
    let challenge = other.json()["challenge_id"].as_str().unwrap().to_owned();
    let description = format!("POST {url}\nContent-Type: application/json\n\n{body}");
    let forged = token.sign("intruder", "hsm:deploy-bot", &challenge, &description);
    let rejected = post("127.0.10.9", &url, &auth, body, Some(&forged));
    assert_eq!(rejected.status, 401, "{}", rejected.body);
    assert_eq!(rejected.json()["reason"], "invalid_signature");

    gateway.stop();
    let audit = gateway.audit();
    assert!(
        audit
            .iter()
            .any(|record| record["event"] == "step_up_success"
                && record["detail"] == "signature key hsm:deploy-bot")
    );
}

#[test]
fn hsm_errors_name_the_problem() {
    let token = Token::new();
    let wrong_pin = Command::new(support::BIN)
        .env("SOFTHSM2_CONF", &token.conf)
        .env("STEPGATE_PKCS11_PIN", "0000")
        .args([
            "hsm",
            "keygen",
            "--pkcs11-module",
            MODULE,
            "--token",
            "bots",
            "--key-label",
            "k",
        ])
        .output()
        .unwrap();
    assert!(!wrong_pin.status.success());
    let stderr = String::from_utf8_lossy(&wrong_pin.stderr);
    assert!(stderr.to_lowercase().contains("pin"), "{stderr}");
    assert!(!stderr.contains("0000"), "the PIN never appears: {stderr}");

    let missing = token.stepgate(&[
        "hsm",
        "keygen",
        "--pkcs11-module",
        "/nonexistent/libpkcs11.so",
        "--token",
        "bots",
        "--key-label",
        "k",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/libpkcs11.so"));
}
