//! End-to-end tests: the built `stepgate` binary in front of a recording
//! upstream on loopback, driven by curl, oathtool, sqlite3 and Python
//! requests from several loopback source addresses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{
    Gateway, Upstream, curl, next_totp_code, oathtool, raw_request, raw_status, sqlite3,
};

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn count_events(records: &[serde_json::Value], event: &str) -> usize {
    records
        .iter()
        .filter(|record| record["event"] == event)
        .count()
}

#[test]
fn step_up_flow_end_to_end() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let (token, secret) = gateway.enrol("ci-bot");
    let (lock_token, lock_secret) = gateway.enrol("lock-bot");
    gateway.start();
    let auth = bearer(&token);
    let mut allowed = 0;

    // Through the learning period and after it, the bot's usual reads pass
    // and the upstream never sees its token.
    for i in 0..10 {
        let path = if i % 2 == 0 {
            format!("/orders/{}", 8800 + i)
        } else {
            "/reports/daily".to_owned()
        };
        let response = curl("127.0.0.2", &gateway.url(&path), &["-H", &auth]);
        assert_eq!(
            response.status, 200,
            "request {i} to {path}: {}",
            response.body
        );
        allowed += 1;
        let seen = upstream.last();
        assert_eq!(seen.path, path);
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.header("stepgate-identity"), Some("ci-bot"));
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2"));
        assert_eq!(
            seen.header("forwarded")
                .map(|f| f.starts_with("for=127.0.0.2")),
            Some(true)
        );
    }
    assert_eq!(upstream.count(), 10);

    // The same token from a new /24: an RFC 9470 challenge, nothing upstream.
    let challenged = curl("127.0.9.9", &gateway.url("/orders/17"), &["-H", &auth]);
    assert_eq!(challenged.status, 401);
    let header = challenged
        .header("www-authenticate")
        .expect("challenge header");
    assert!(header.starts_with("Bearer "), "{header}");
    assert!(
        header.contains(r#"error="insufficient_user_authentication""#),
        "{header}"
    );
    assert!(
        header.contains(r#"acr_values="urn:stepgate:acr:totp""#),
        "{header}"
    );
    assert!(header.contains(r#"max_age="300""#), "{header}");
    let body = challenged.json();
    let challenge_id = body["challenge_id"].as_str().unwrap().to_owned();
    assert!(challenge_id.starts_with("ch_"));
    assert_eq!(body["factors"][0]["factor"], "totp");
    assert!(
        body.get("reasons").is_none(),
        "reasons leak into the body by default"
    );
    assert_eq!(upstream.count(), 10);

    // oathtool's code answers it; the request then passes without the
    // step-up headers reaching the upstream.
    let code = oathtool(&secret);
    let answered = curl(
        "127.0.9.9",
        &gateway.url("/orders/17"),
        &[
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Challenge: {challenge_id}"),
            "-H",
            &format!("Stepgate-Totp: {code}"),
        ],
    );
    assert_eq!(answered.status, 200, "{}", answered.body);
    allowed += 1;
    let seen = upstream.last();
    assert_eq!(seen.path, "/orders/17");
    assert_eq!(seen.header("stepgate-totp"), None);
    assert_eq!(seen.header("stepgate-challenge"), None);
    assert_eq!(seen.header("authorization"), None);

    // Similar requests from that network pass for max_age without a challenge.
    for (from, path) in [
        ("127.0.9.9", "/orders/18"),
        ("127.0.9.50", "/orders/19"),
        ("127.0.9.9", "/orders/20"),
    ] {
        let response = curl(from, &gateway.url(path), &["-H", &auth]);
        assert_eq!(response.status, 200, "{from} {path}: {}", response.body);
        allowed += 1;
    }
    // Another network still needs its own step-up.
    assert_eq!(
        curl("127.0.11.9", &gateway.url("/orders/21"), &["-H", &auth]).status,
        401
    );

    // A write to the read-only zone from the known network is challenged.
    let before = upstream.count();
    let write = curl(
        "127.0.0.2",
        &gateway.url("/reports/daily"),
        &["-H", &auth, "-X", "POST", "-d", "x=1"],
    );
    assert_eq!(write.status, 401);
    assert!(
        write
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_user_authentication")
    );
    assert_eq!(upstream.count(), before);

    // The same TOTP code a second time fails and is audited as a replay.
    let second = curl("127.0.10.9", &gateway.url("/orders/22"), &["-H", &auth]);
    let second_id = second.json()["challenge_id"].as_str().unwrap().to_owned();
    let replayed = curl(
        "127.0.10.9",
        &gateway.url("/orders/22"),
        &[
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Challenge: {second_id}"),
            "-H",
            &format!("Stepgate-Totp: {code}"),
        ],
    );
    assert_eq!(replayed.status, 401);
    assert_eq!(
        replayed.json()["reason"],
        "replayed_code",
        "{}",
        replayed.body
    );
    assert_eq!(upstream.count(), before);

    // A forged X-Forwarded-For or Forwarded changes nothing without trusted proxies.
    for forged in ["X-Forwarded-For: 127.0.0.2", "Forwarded: for=127.0.0.2"] {
        let response = curl(
            "127.0.12.9",
            &gateway.url("/orders/23"),
            &["-H", &auth, "-H", forged],
        );
        assert_eq!(
            response.status, 401,
            "{forged} bypassed the new-network check"
        );
    }
    assert_eq!(upstream.count(), before);

    // Wrong codes lock the factor; then even the right code is refused.
    let lock_auth = bearer(&lock_token);
    let lock_challenge = curl(
        "127.0.0.3",
        &gateway.url("/reports/daily"),
        &["-H", &lock_auth, "-X", "POST"],
    );
    let lock_id = lock_challenge.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let right = oathtool(&lock_secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for attempt in 0..5 {
        let response = curl(
            "127.0.0.3",
            &gateway.url("/reports/daily"),
            &[
                "-H",
                &lock_auth,
                "-X",
                "POST",
                "-H",
                &format!("Stepgate-Challenge: {lock_id}"),
                "-H",
                &format!("Stepgate-Totp: {wrong}"),
            ],
        );
        assert_eq!(response.json()["reason"], "wrong_code", "attempt {attempt}");
    }
    let locked = curl(
        "127.0.0.3",
        &gateway.url("/reports/daily"),
        &[
            "-H",
            &lock_auth,
            "-X",
            "POST",
            "-H",
            &format!("Stepgate-Challenge: {lock_id}"),
            "-H",
            &format!("Stepgate-Totp: {right}"),
        ],
    );
    assert_eq!(locked.json()["reason"], "locked", "{}", locked.body);
    assert_eq!(upstream.count(), before);

    // A clean SIGTERM loses no record, and the chain verifies.
    gateway.stop();
    let records = gateway.audit();
    assert_eq!(count_events(&records, "allow"), allowed);
    assert_eq!(count_events(&records, "step_up_success"), 1);
    assert!(count_events(&records, "challenge") >= 6);
    let replay_record = records
        .iter()
        .find(|record| {
            record["event"] == "step_up_failure" && record["challenge_id"] == second_id.as_str()
        })
        .expect("replay audited");
    assert!(
        replay_record["detail"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    let forged_record = records
        .iter()
        .rev()
        .find(|record| record["client_addr"] == "127.0.12.9")
        .expect("forged request audited");
    assert_eq!(forged_record["peer_addr"], "127.0.12.9");
    assert!(
        records
            .iter()
            .all(|record| !record.to_string().contains(&token))
    );
    assert!(
        records
            .iter()
            .all(|record| !record.to_string().contains(&code))
    );

    let verify = gateway.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // One changed byte in one stored record breaks the chain at that record.
    sqlite3(
        &gateway.db(),
        "UPDATE audit SET record = replace(record, '\"method\":\"GET\"', '\"method\":\"PUT\"') WHERE seq = 12",
    );
    let broken = gateway.cli(&["audit", "verify"]);
    assert!(!broken.status.success());
    let message = String::from_utf8_lossy(&broken.stdout);
    assert!(message.contains("audit record 12"), "{message}");
}

#[test]
fn python_bot_answers_challenge() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let (token, secret) = gateway.enrol("py-bot");
    gateway.start();
    let auth = bearer(&token);
    for i in 0..5 {
        assert_eq!(
            curl(
                "127.0.0.2",
                &gateway.url(&format!("/orders/{i}")),
                &["-H", &auth]
            )
            .status,
            200
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stepup_client.py");
    let output = std::process::Command::new(support::python_with_requests())
        .args([
            script,
            &gateway.url(""),
            &token,
            &secret,
            "127.0.20.5",
            "/orders/7",
            "/orders/8",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(results[0]["first_status"], 401);
    assert!(
        results[0]["www_authenticate"]
            .as_str()
            .unwrap()
            .contains("acr_values")
    );
    assert_eq!(results[0]["answer_status"], 200, "{}", results[0]);
    // The grant covers the second, similar request.
    assert_eq!(results[1]["first_status"], 200);
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("127.0.20.5")
    );
    // The Python client's own RFC 6238 code agreed with oathtool's secret.
    let _ = next_totp_code;
}

#[test]
fn bad_input_never_reaches_upstream() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let (token, _) = gateway.enrol("bot");
    gateway.start();
    let auth = bearer(&token);
    let url = gateway.url("/orders/1");

    let missing = curl("127.0.0.2", &url, &[]);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="stepgate""#)
    );

    let malformed = curl(
        "127.0.0.2",
        &url,
        &["-H", "Authorization: Bearer not-a-token"],
    );
    // A well-formed token from another installation: valid checksum, unknown here.
    let other = Gateway::new(upstream.addr, "");
    let (foreign, _) = other.enrol("bot");
    let unknown_token = format!("Authorization: Bearer {foreign}");
    let unknown = curl("127.0.0.2", &url, &["-H", &unknown_token]);
    let basic = curl(
        "127.0.0.2",
        &url,
        &["-H", "Authorization: Basic Ym90OnNlY3JldA=="],
    );
    for response in [&malformed, &unknown, &basic] {
        assert_eq!(response.status, 401);
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"Bearer realm="stepgate", error="invalid_token""#)
        );
        assert_eq!(
            response.body, malformed.body,
            "answers must not tell failures apart"
        );
    }

    let unknown_challenge = curl(
        "127.0.0.2",
        &url,
        &[
            "-H",
            &auth,
            "-H",
            "Stepgate-Challenge: ch_nope",
            "-H",
            "Stepgate-Totp: 123456",
        ],
    );
    assert_eq!(unknown_challenge.status, 401);
    assert_eq!(unknown_challenge.json()["reason"], "unknown_challenge");

    let big = format!("X-Big: {}", "a".repeat(20_000));
    assert_eq!(
        curl("127.0.0.2", &url, &["-H", &auth, "-H", &big]).status,
        431
    );

    for path in [
        "/reports/../orders/1",
        "/reports/%2e%2e/orders/1",
        "/reports%2Fdaily",
        "/a%5cb",
        "//reports/daily",
    ] {
        let response = curl(
            "127.0.0.2",
            &gateway.url(path),
            &["--path-as-is", "-H", &auth],
        );
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        assert_eq!(response.json()["error"], "bad_path");
    }

    let framings: [&[u8]; 6] = [
        b"POST /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"POST /orders/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"POST /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
        b"POST /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\nConnection: close\r\n\r\nabcd",
        b"POST /orders/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabcd",
        b"POST /orders/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n",
    ];
    for framing in framings {
        let answer = raw_request(gateway.port, framing);
        assert_eq!(
            raw_status(&answer),
            400,
            "{}\n=> {answer}",
            String::from_utf8_lossy(framing)
        );
    }

    // Percent-encoded letters are decoded once, so the zone check and the
    // upstream see the same path: this is a write to the read-only zone.
    let sneaky = curl(
        "127.0.0.2",
        &gateway.url("/%72eports/daily"),
        &["--path-as-is", "-H", &auth, "-X", "POST"],
    );
    assert_eq!(sneaky.status, 401);
    assert!(
        sneaky
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_user_authentication")
    );

    let hosts: [&[u8]; 4] = [
        b"GET /orders/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET /orders/1 HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /orders/1 HTTP/1.1\r\nHost: admin.example@evil\r\nConnection: close\r\n\r\n",
        b"POST /orders/1 HTTP/1.1\nHost: x\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
    ];
    for request in hosts {
        let answer = raw_request(gateway.port, request);
        assert_eq!(
            raw_status(&answer),
            400,
            "{}\n=> {answer}",
            String::from_utf8_lossy(request)
        );
    }
    for path in ["/admin;a/users", "/admin%3b/users"] {
        let response = curl(
            "127.0.0.2",
            &gateway.url(path),
            &["--path-as-is", "-H", &auth, "-X", "POST"],
        );
        assert_eq!(response.status, 400, "{path}");
    }

    assert_eq!(upstream.count(), 0, "bad input reached the upstream");
    let ok = curl(
        "127.0.0.2",
        &gateway.url("/%72eports/daily"),
        &[
            "--path-as-is",
            "-H",
            &auth,
            "-H",
            "Stepgate_Identity: admin",
        ],
    );
    assert_eq!(ok.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.path, "/reports/daily");
    assert_eq!(
        seen.header("stepgate_identity"),
        None,
        "identity header lookalike forwarded"
    );
    assert_eq!(seen.header("stepgate-identity"), Some("bot"));
}

#[test]
fn upstream_failures_answer_json() {
    let upstream = Upstream::start();
    let closed = support::free_port();
    let extra =
        format!("\n[[routes]]\nprefix = \"/down\"\nupstream = \"http://127.0.0.1:{closed}\"\n");
    let mut gateway = Gateway::new(upstream.addr, &extra);
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    let text = text.replace(
        "trusted_proxies = []",
        "trusted_proxies = []\nresponse_timeout_secs = 1",
    );
    std::fs::write(&gateway.config, text).unwrap();
    let (token, _) = gateway.enrol("bot");
    gateway.start();
    let auth = bearer(&token);

    let down = curl("127.0.0.2", &gateway.url("/down/x"), &["-H", &auth]);
    assert_eq!(down.status, 502);
    assert_eq!(down.json()["error"], "upstream_unavailable");
    let slow = curl("127.0.0.2", &gateway.url("/slow"), &["-H", &auth]);
    assert_eq!(slow.status, 504);
    assert_eq!(slow.json()["error"], "upstream_timeout");

    // A client that gives up before the upstream answers is still audited.
    let gave_up = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "0.3",
            "--interface",
            "127.0.0.2",
            "-H",
            &auth,
        ])
        .arg(gateway.url("/slow/again"))
        .status()
        .unwrap();
    assert!(!gave_up.success(), "curl should have timed out");
    std::thread::sleep(std::time::Duration::from_millis(1500));

    // HTTP/2 from the client (prior knowledge, cleartext) works too.
    let h2 = curl(
        "127.0.0.2",
        &gateway.url("/orders/1"),
        &["--http2-prior-knowledge", "-H", &auth],
    );
    assert_eq!(h2.status, 200);

    let metrics = curl(
        "127.0.0.1",
        &format!("http://127.0.0.1:{}/metrics", gateway.admin_port),
        &[],
    );
    for name in [
        "stepgate_http_requests_total{decision=\"allow\"}",
        "stepgate_http_decision_duration_seconds_bucket",
        "stepgate_http_upstream_duration_seconds_count",
    ] {
        assert!(
            metrics.body.contains(name),
            "{name} missing from:\n{}",
            metrics.body
        );
    }
    gateway.stop();
    let records = gateway.audit();
    assert_eq!(count_events(&records, "error"), 3);
    assert!(
        records.iter().any(|r| r["path"] == "/slow/again"),
        "abandoned request not audited"
    );
}

#[test]
fn cli_rejects_bad_config_and_policy() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, "");
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    std::fs::write(
        &gateway.config,
        text.replace("learning_requests = 5", "learning_requests = \"five\""),
    )
    .unwrap();
    let output = gateway.cli(&["check-config"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("learning_requests"), "{stderr}");

    std::fs::write(
        &gateway.config,
        text.replace("trusted_proxies = []", "trusted_proxies = [\"10.0.0.300\"]"),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&gateway.cli(&["check-config"]).stderr).into_owned();
    assert!(
        stderr.contains("gateway.trusted_proxies[0]") && stderr.contains("10.0.0.300"),
        "{stderr}"
    );

    std::fs::write(&gateway.config, &text).unwrap();
    assert!(gateway.cli(&["check-config"]).status.success());

    let policy = gateway.dir.path().join("bad.cedar");
    std::fs::write(
        &policy,
        "permit (principal, action, resource) when { context.riks < 30 };",
    )
    .unwrap();
    let output = gateway.cli(&["policy", "check", policy.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("riks"));
    let default_policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policy/policies/default.cedar"
    );
    assert!(
        gateway
            .cli(&["policy", "check", default_policy])
            .status
            .success()
    );
}

#[test]
fn token_output_and_listing_keep_secrets() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, "");
    gateway.cli_ok(&["identity", "add", "lister"]);
    let output = gateway.cli(&["token", "issue", "lister"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "token issue prints only the token on stdout"
    );
    let token = stdout.trim();
    assert!(token.starts_with("sgt_"));
    let listing = gateway.cli_ok(&["token", "list"]);
    assert!(!listing.contains(token));
    assert!(listing.contains(&token[4..16]), "list shows the token id");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(gateway.db())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the store holds TOTP secrets");
    let stored = sqlite3(&gateway.db(), "SELECT hex(hash) FROM tokens");
    assert!(!stored.contains(token));
    let identities = gateway.cli_ok(&["identity", "list", "--format", "json"]);
    assert!(identities.contains("\"active_tokens\":1"), "{identities}");
    let id = &token[4..16];
    gateway.cli_ok(&["token", "revoke", id]);
    let listing = gateway.cli_ok(&["token", "list", "--format", "json"]);
    assert!(listing.contains("\"revoked_at\":\"20"), "{listing}");
    let unknown = gateway.cli(&["token", "revoke", "nosuchtoken0"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
    let missing = gateway.cli(&["token", "issue", "ghost"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("identity ghost not found"));
}

#[test]
fn audit_failure_fails_closed() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let (token, _) = gateway.enrol("bot");
    gateway.start();
    let auth = bearer(&token);
    let mut allowed = 0;
    for i in 0..5 {
        assert_eq!(
            curl(
                "127.0.0.2",
                &gateway.url(&format!("/orders/{i}")),
                &["-H", &auth]
            )
            .status,
            200
        );
        allowed += 1;
    }

    // A real SQLite error on every audit insert, made from outside.
    sqlite3(
        &gateway.db(),
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = curl(
            "127.0.0.2",
            &gateway.url(&format!("/orders/{i}")),
            &["-H", &auth],
        );
        if response.status == 200 {
            allowed += 1;
        }
        statuses.push(response.status);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The first allow is queued behind the response; once its write fails,
    // every request is refused, challenges and denials included.
    assert!(
        statuses.iter().skip(1).all(|status| *status == 503),
        "{statuses:?}"
    );
    let challenge = curl("127.0.9.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(challenge.status, 503);
    let seen = upstream.count();

    sqlite3(&gateway.db(), "DROP TRIGGER fail_audit;");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let recovered = curl("127.0.0.2", &gateway.url("/orders/9"), &["-H", &auth]);
    assert_eq!(recovered.status, 200, "{}", recovered.body);
    allowed += 1;
    assert_eq!(upstream.count(), seen + 1);

    gateway.stop();
    let records = gateway.audit();
    assert_eq!(
        count_events(&records, "allow"),
        allowed,
        "allow records were lost"
    );
    assert!(gateway.cli(&["audit", "verify"]).status.success());
}

#[test]
fn trusted_proxy_names_client() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    gateway.trust_proxy("127.0.0.1");
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    std::fs::write(
        &gateway.config,
        format!("{text}\n[step_up]\ninclude_reasons = true\n"),
    )
    .unwrap();
    let (token, _) = gateway.enrol("bot");
    gateway.start();
    let auth = bearer(&token);
    // Through the trusted proxy at 127.0.0.1, the client is 127.0.0.2.
    for i in 0..6 {
        let response = curl(
            "127.0.0.1",
            &gateway.url(&format!("/orders/{i}")),
            &["-H", &auth, "-H", "X-Forwarded-For: 127.0.0.2"],
        );
        assert_eq!(response.status, 200);
    }
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2, 127.0.0.1"));
    // The proxy names a new client network: challenged.
    let moved = curl(
        "127.0.0.1",
        &gateway.url("/orders/7"),
        &["-H", &auth, "-H", "Forwarded: for=127.0.9.9"],
    );
    assert_eq!(moved.status, 401);
    let body = moved.json();
    assert_eq!(body["reasons"][0]["signal"], "new_network", "{body}");
    assert!(
        body["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("127.0.9.0/24")
    );
    // A spoofed entry left of the client changes nothing.
    let spoofed = curl(
        "127.0.0.1",
        &gateway.url("/orders/8"),
        &["-H", &auth, "-H", "X-Forwarded-For: 127.0.9.9, 127.0.0.2"],
    );
    assert_eq!(spoofed.status, 200);
    // A direct client that is not a trusted proxy cannot name anyone.
    let direct = curl(
        "127.0.9.9",
        &gateway.url("/orders/9"),
        &["-H", &auth, "-H", "X-Forwarded-For: 127.0.0.2"],
    );
    assert_eq!(direct.status, 401);
    gateway.stop();
    let records = gateway.audit();
    let moved_record = records
        .iter()
        .find(|r| r["client_addr"] == "127.0.9.9" && r["peer_addr"] == "127.0.0.1");
    assert!(
        moved_record.is_some(),
        "audit keeps the peer apart from the client"
    );
}

#[test]
fn bodies_stream_and_queries_redacted() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let (token, _) = gateway.enrol("bot");
    gateway.start();
    let auth = bearer(&token);
    let upload = gateway.dir.path().join("upload.bin");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&upload, &body).unwrap();
    let posted = curl(
        "127.0.0.2",
        &gateway.url("/uploads"),
        &[
            "-H",
            &auth,
            "--data-binary",
            &format!("@{}", upload.display()),
        ],
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(upstream.last().body, body);
    let chunked = curl(
        "127.0.0.2",
        &gateway.url("/uploads"),
        &[
            "-H",
            &auth,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", upload.display()),
        ],
    );
    assert_eq!(chunked.status, 200);
    assert_eq!(upstream.last().body.len(), body.len());

    let query = curl(
        "127.0.0.2",
        &gateway.url("/orders/1?api_key=hunter2&page=3"),
        &["-H", &auth],
    );
    assert_eq!(query.status, 200);
    assert_eq!(upstream.last().path, "/orders/1?api_key=hunter2&page=3");

    // A malformed chunked body is the client's fault, not the upstream's.
    let bad_chunk = format!(
        "POST /uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    );
    let answer = support::raw_request(gateway.port, bad_chunk.as_bytes());
    assert_eq!(support::raw_status(&answer), 400, "{answer}");

    gateway.cli_ok(&["identity", "disable", "bot"]);
    support::wait_for_reload();
    assert_eq!(
        curl("127.0.0.2", &gateway.url("/orders/1"), &["-H", &auth]).status,
        401
    );
    gateway.stop();
    let records = gateway.audit();
    let text = records.iter().map(|r| r.to_string()).collect::<String>();
    assert!(
        !text.contains("hunter2"),
        "query values reached the audit trail"
    );
    assert!(text.contains("api_key=REDACTED&page=REDACTED"));
    assert!(text.contains("identity disable bot"));
}

#[test]
fn tokens_keep_scram_credentials() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, "");
    let first = gateway.add_with_token("db-bot");
    let second = gateway
        .cli_ok(&["token", "issue", "db-bot"])
        .trim()
        .to_owned();
    let rows = sqlite3(
        &gateway.db(),
        "SELECT scram FROM tokens WHERE identity = 'db-bot' ORDER BY created_at, id",
    );
    let stored: Vec<&str> = rows.lines().collect();
    assert_eq!(stored.len(), 2, "{rows}");
    // Both share the identity's salt, as SCRAM names one salt per user.
    let salts: Vec<&str> = stored
        .iter()
        .map(|text| text.split(['$', ':']).nth(2).unwrap())
        .collect();
    assert_eq!(salts[0], salts[1]);
    let tokens_by_id: Vec<String> = {
        let ids = sqlite3(
            &gateway.db(),
            "SELECT id FROM tokens WHERE identity = 'db-bot' ORDER BY created_at, id",
        );
        ids.lines().map(str::to_owned).collect()
    };
    // Python's hashlib derives the same StoredKey from each token (RFC 5802:
    // SHA-256(HMAC(PBKDF2(token, salt, 4096), "Client Key"))).
    for (text, id) in stored.iter().zip(&tokens_by_id) {
        let token = [&first, &second]
            .into_iter()
            .find(|token| token.contains(id.as_str()))
            .expect("token of this id");
        let output = std::process::Command::new("python3")
            .args([
                "-c",
                "import base64,hashlib,hmac,sys; \
                 text, token = sys.argv[1], sys.argv[2].encode(); \
                 iterations, rest = text.split('$')[1].split(':'); \
                 salt = base64.b64decode(rest); \
                 stored = text.split('$')[2].split(':')[0]; \
                 salted = hashlib.pbkdf2_hmac('sha256', token, salt, int(iterations)); \
                 key = hmac.new(salted, b'Client Key', hashlib.sha256).digest(); \
                 print(base64.b64encode(hashlib.sha256(key).digest()).decode() == stored)",
                text,
                token,
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "True",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
