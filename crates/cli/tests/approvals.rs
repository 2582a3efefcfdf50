//! Human approval end to end: the real binary holds a bot's request until
//! an approver decides with the CLI, binds the approval to the exact
//! operation, survives a restart, and notifies a webhook on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::{Gateway, Upstream, curl, oathtool};

const ZONE: &str = r#"
[[zones]]
name = "orders"
prefix = "/orders"
approval_for = ["write", "delete"]
"#;

/// Adds an approver and returns the base32 secret of their TOTP factor.
fn add_approver(gateway: &Gateway, name: &str, groups: &[&str]) -> String {
    let mut args = vec!["approver", "add", name];
    for group in groups {
        args.extend(["--group", group]);
    }
    let uri = gateway.cli_ok(&args);
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    uri.trim()
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))
        .expect("otpauth URI has a secret")
        .to_owned()
}

/// Starts a gateway with the orders zone asking for approval, a bot and
/// an approver named alice; returns the gateway, the bot's Authorization
/// header and alice's TOTP secret.
fn setup(upstream: &Upstream, extra: &str) -> (Gateway, String, String) {
    let mut gateway = Gateway::new(upstream.addr, &format!("{ZONE}\n{extra}"));
    let token = gateway.add_with_token("bot");
    let alice = add_approver(&gateway, "alice", &[]);
    gateway.start();
    (gateway, format!("Authorization: Bearer {token}"), alice)
}

fn pending_ids(gateway: &Gateway) -> Vec<String> {
    gateway
        .cli_ok(&["approvals", "list", "--format", "json"])
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Waits until exactly one approval is pending and returns its id.
fn wait_for_pending(gateway: &Gateway) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ids = pending_ids(gateway);
        if let [id] = ids.as_slice() {
            return id.clone();
        }
        assert!(Instant::now() < deadline, "no pending approval: {ids:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn decide(gateway: &Gateway, verb: &str, id: &str, approver: &str, secret: &str, comment: &str) {
    gateway.cli_ok(&[
        "approvals",
        verb,
        id,
        "--as",
        approver,
        "--totp",
        &oathtool(secret),
        "--comment",
        comment,
    ]);
}

/// Sends the bot's DELETE in the background with `Prefer: wait=N`.
fn held_delete(
    gateway: &Gateway,
    auth: &str,
    wait: u64,
) -> thread::JoinHandle<support::CurlResponse> {
    let url = gateway.url("/orders/7");
    let auth = auth.to_owned();
    thread::spawn(move || {
        curl(
            "127.0.0.2",
            &url,
            &[
                "-X",
                "DELETE",
                "-H",
                &auth,
                "-H",
                &format!("Prefer: wait={wait}"),
            ],
        )
    })
}

#[test]
fn held_request_is_forwarded_after_approval() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let held = held_delete(&gateway, &auth, 20);
    let id = wait_for_pending(&gateway);
    assert_eq!(
        upstream.count(),
        0,
        "nothing reaches the upstream before approval"
    );
    let shown = gateway.cli_ok(&["approvals", "show", &id]);
    assert!(shown.contains("operation  DELETE /orders/7"), "{shown}");
    assert!(shown.contains("identity   bot"), "{shown}");
    decide(&gateway, "approve", &id, "alice", &alice, "ticket OPS-1");
    let response = held.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.last().method, "DELETE");

    // The allow record is written behind the response.
    let deadline = Instant::now() + Duration::from_secs(10);
    let audit = loop {
        let audit = gateway.audit();
        if audit.iter().any(|record| record["event"] == "allow") {
            break audit;
        }
        assert!(Instant::now() < deadline, "no allow record: {audit:?}");
        thread::sleep(Duration::from_millis(100));
    };
    let events: Vec<&str> = audit
        .iter()
        .filter_map(|record| record["event"].as_str())
        .collect();
    assert!(events.contains(&"approval_request"), "{events:?}");
    let vote = audit
        .iter()
        .find(|record| record["event"] == "approval_vote")
        .expect("vote recorded");
    assert_eq!(vote["actor"], "alice");
    assert_eq!(vote["decision"], "approve");
    assert_eq!(vote["challenge_id"], id.as_str());
    assert!(vote["detail"].as_str().unwrap().contains("ticket OPS-1"));
    let allow = audit
        .iter()
        .find(|record| record["event"] == "allow")
        .expect("allow recorded");
    assert_eq!(allow["challenge_id"], id.as_str());
    assert_eq!(allow["factor"], "approval");
}

#[test]
fn denial_answers_held_request() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let held = held_delete(&gateway, &auth, 20);
    let id = wait_for_pending(&gateway);
    decide(
        &gateway,
        "deny",
        &id,
        "alice",
        &alice,
        "not during the freeze",
    );
    let response = held.join().unwrap();
    assert_eq!(response.status, 403, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"], "approval_denied");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("denied by alice: not during the freeze"),
        "{message}"
    );
    assert_eq!(upstream.count(), 0);
}

#[test]
fn wait_timeout_answers_clearly() {
    let upstream = Upstream::start();
    let (gateway, auth, _alice) = setup(&upstream, "");
    let response = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth, "-H", "Prefer: wait=1"],
    );
    assert_eq!(response.status, 401, "{}", response.body);
    assert_eq!(response.header("preference-applied"), Some("wait=1"));
    let body = response.json();
    assert_eq!(body["error"], "approval_required");
    assert_eq!(body["approval"]["state"], "pending");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("no decision"), "{message}");
    let www = response.header("www-authenticate").unwrap();
    assert!(www.contains("urn:stepgate:acr:approval"), "{www}");
    assert_eq!(upstream.count(), 0);
}

#[test]
fn approval_is_used_once() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let url = gateway.url("/orders/7");
    let first = curl("127.0.0.2", &url, &["-X", "DELETE", "-H", &auth]);
    assert_eq!(first.status, 401, "{}", first.body);
    let body = first.json();
    let id = body["approval"]["id"].as_str().unwrap().to_owned();
    let status_url = body["approval"]["status_url"].as_str().unwrap().to_owned();
    assert_eq!(
        status_url,
        gateway.url(&format!("/.stepgate/approvals/{id}"))
    );

    // Repeating the request asks nobody twice.
    let again = curl("127.0.0.2", &url, &["-X", "DELETE", "-H", &auth]);
    assert_eq!(again.json()["approval"]["id"], id.as_str());

    let early = curl(
        "127.0.0.2",
        &url,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Approval: {id}"),
        ],
    );
    assert_eq!(early.status, 409, "{}", early.body);
    assert_eq!(early.json()["error"], "approval_pending");

    decide(&gateway, "approve", &id, "alice", &alice, "");
    let status = curl("127.0.0.2", &status_url, &["-H", &auth]);
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.json()["state"], "approved");

    let approved = curl(
        "127.0.0.2",
        &url,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Approval: {id}"),
        ],
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(upstream.count(), 1);
    let replayed = curl(
        "127.0.0.2",
        &url,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Approval: {id}"),
        ],
    );
    assert_eq!(replayed.status, 403, "{}", replayed.body);
    assert_eq!(replayed.json()["error"], "approval_used");
    assert_eq!(upstream.count(), 1);
}

#[test]
fn approval_covers_only_its_operation() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let url = gateway.url("/orders/7");
    let post = |body: &str, extra: &[&str]| {
        let mut args = vec!["-X", "POST", "-H", &auth, "--data-binary", body];
        args.extend_from_slice(extra);
        curl("127.0.0.2", &url, &args)
    };
    let first = post(r#"{"refund":10}"#, &[]);
    assert_eq!(first.status, 401, "{}", first.body);
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    decide(&gateway, "approve", &id, "alice", &alice, "");
    let header = format!("Stepgate-Approval: {id}");

    let changed = post(r#"{"refund":10000}"#, &["-H", &header]);
    assert_eq!(changed.status, 403, "{}", changed.body);
    assert_eq!(changed.json()["error"], "approval_other_operation");
    let other_target = curl(
        "127.0.0.2",
        &gateway.url("/orders/8"),
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "--data-binary",
            r#"{"refund":10}"#,
            "-H",
            &header,
        ],
    );
    assert_eq!(other_target.status, 403, "{}", other_target.body);
    assert_eq!(upstream.count(), 0);

    let same = post(r#"{"refund":10}"#, &["-H", &header]);
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(upstream.last().body, br#"{"refund":10}"#);
}

#[test]
fn nobody_approves_own_identity() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, ZONE);
    let alice = add_approver(&gateway, "alice", &[]);
    // An approver whose name is the identity's: the requester itself.
    let robot = add_approver(&gateway, "robot", &[]);
    gateway.cli_ok(&["identity", "add", "robot", "--owner", "alice"]);
    let token = gateway
        .cli_ok(&["token", "issue", "robot"])
        .trim()
        .to_owned();
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth],
    );
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();

    let owner = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &oathtool(&alice),
    ]);
    assert!(!owner.status.success());
    let message = String::from_utf8_lossy(&owner.stderr);
    assert!(message.contains("alice owns identity robot"), "{message}");

    let own = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "robot",
        "--totp",
        &oathtool(&robot),
    ]);
    assert!(!own.status.success());
    let message = String::from_utf8_lossy(&own.stderr);
    assert!(
        message.contains("requested by robot's own identity"),
        "{message}"
    );

    let unknown_owner = gateway.cli(&["identity", "add", "other", "--owner", "mallory"]);
    assert!(!unknown_owner.status.success());
    let message = String::from_utf8_lossy(&unknown_owner.stderr);
    assert!(
        message.contains("owner mallory is not an approver"),
        "{message}"
    );

    assert!(pending_ids(&gateway).contains(&id));
    let rejected = gateway
        .audit()
        .into_iter()
        .filter(|record| record["event"] == "approval_vote" && record["decision"] == "rejected")
        .count();
    assert_eq!(rejected, 2);
}

#[test]
fn quorum_needs_two_approvers() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        r#"
[[zones]]
name = "orders"
prefix = "/orders"
approval_for = ["delete"]
approval_quorum = 2
"#,
    );
    let token = gateway.add_with_token("bot");
    let alice = add_approver(&gateway, "alice", &[]);
    let bob = add_approver(&gateway, "bob", &[]);
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    let url = gateway.url("/orders/7");
    let first = curl("127.0.0.2", &url, &["-X", "DELETE", "-H", &auth]);
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first.json()["approval"]["quorum"], 2);
    let first_code = oathtool(&alice);
    gateway.cli_ok(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &first_code,
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&gateway.cli_ok(&["approvals", "show", &id, "--format", "json"]))
            .unwrap();
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["approvals"], 1);
    assert_eq!(shown["quorum"], 2);
    let header = format!("Stepgate-Approval: {id}");
    let early = curl(
        "127.0.0.2",
        &url,
        &["-X", "DELETE", "-H", &auth, "-H", &header],
    );
    assert_eq!(early.status, 409, "{}", early.body);
    assert!(early.json()["message"].as_str().unwrap().contains("1 of 2"));

    let twice = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &support::next_totp_code(&alice, &first_code),
    ]);
    assert!(!twice.status.success());
    let message = String::from_utf8_lossy(&twice.stderr);
    assert!(message.contains("alice already decided"), "{message}");
    assert_eq!(upstream.count(), 0);

    // The second approval releases a request held at that moment.
    let held = held_delete(&gateway, &auth, 15);
    thread::sleep(Duration::from_millis(500));
    decide(&gateway, "approve", &id, "bob", &bob, "second pair of eyes");
    let response = held.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(upstream.count(), 1);
}

#[test]
fn pending_approval_survives_restart() {
    let upstream = Upstream::start();
    let (mut gateway, auth, alice) = setup(&upstream, "");
    let held = held_delete(&gateway, &auth, 20);
    let id = wait_for_pending(&gateway);
    let stopped_at = Instant::now();
    gateway.stop();
    let response = held.join().unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(15));
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.header("retry-after"), Some("5"));
    let body = response.json();
    assert_eq!(body["error"], "gateway_restarting");
    assert_eq!(body["approval"]["id"], id.as_str());

    gateway.start();
    assert_eq!(pending_ids(&gateway), std::slice::from_ref(&id));
    decide(&gateway, "approve", &id, "alice", &alice, "");
    let retried = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            &format!("Stepgate-Approval: {id}"),
        ],
    );
    assert_eq!(retried.status, 200, "{}", retried.body);
}

#[test]
fn status_url_waits_for_decision() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth],
    );
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    let status_url = gateway.url(&format!("/.stepgate/approvals/{id}"));

    let other = gateway.add_with_token("other-bot");
    support::wait_for_reload();
    let foreign = curl(
        "127.0.0.2",
        &status_url,
        &["-H", &format!("Authorization: Bearer {other}")],
    );
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    let anonymous = curl("127.0.0.2", &status_url, &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    let waiting = {
        let status_url = status_url.clone();
        let auth = auth.clone();
        thread::spawn(move || {
            curl(
                "127.0.0.2",
                &status_url,
                &["-H", &auth, "-H", "Prefer: wait=15"],
            )
        })
    };
    thread::sleep(Duration::from_millis(500));
    decide(&gateway, "approve", &id, "alice", &alice, "");
    let response = waiting.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["state"], "approved");
    assert_eq!(response.header("preference-applied"), Some("wait=15"));
}

#[test]
fn group_window_limits_decisions() {
    let upstream = Upstream::start();
    // A one-hour window two hours from now, so it is closed now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = (now / 3600 + 2) % 24;
    let group = format!(
        r#"
[[approval.groups]]
name = "oncall"
hours = "{hour:02}:00-{:02}:00"

[[zones]]
name = "orders"
prefix = "/orders"
approval_for = ["delete"]
approval_group = "oncall"
"#,
        (hour + 1) % 24
    );
    let mut gateway = Gateway::new(upstream.addr, &group);
    let token = gateway.add_with_token("bot");
    let carol = add_approver(&gateway, "carol", &["oncall"]);
    let alice = add_approver(&gateway, "alice", &[]);
    gateway.start();
    let auth = format!("Authorization: Bearer {token}");
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth],
    );
    let body = first.json();
    assert_eq!(body["approval"]["group"], "oncall");
    let id = body["approval"]["id"].as_str().unwrap().to_owned();

    let outside = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "carol",
        "--totp",
        &oathtool(&carol),
    ]);
    assert!(!outside.status.success());
    let message = String::from_utf8_lossy(&outside.stderr);
    assert!(message.contains("may decide only every day"), "{message}");

    let not_member = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &oathtool(&alice),
    ]);
    assert!(!not_member.status.success());
    let message = String::from_utf8_lossy(&not_member.stderr);
    assert!(
        message.contains("alice is not in approver group oncall"),
        "{message}"
    );
}

#[test]
fn wrong_totp_code_is_refused() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth],
    );
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    let code = oathtool(&alice);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let output = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        wrong,
    ]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("wrong TOTP code for approver alice"),
        "{message}"
    );
    assert!(!message.contains(wrong));
    assert_eq!(pending_ids(&gateway), [id]);
}

#[test]
fn webhook_receives_signed_notification() {
    let receiver = Upstream::start();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.key");
    std::fs::write(&secret_file, "webhook-test-key-0123456789abcdef\n").unwrap();
    let extra = format!(
        r#"
[approval]
page_url = "https://stepgate.example"

[[approval.groups]]
name = "approvers"
webhook_url = "http://{}/hooks/approvals"
webhook_secret_file = "{}"
"#,
        receiver.addr,
        secret_file.display()
    );
    let (gateway, auth, _alice) = setup(&upstream, &extra);
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth],
    );
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.count() == 0 {
        assert!(Instant::now() < deadline, "no webhook arrived");
        thread::sleep(Duration::from_millis(100));
    }
    let hook = receiver.last();
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.path, "/hooks/approvals");
    let signature = hook
        .header("stepgate-signature")
        .expect("signed")
        .to_owned();
    let (timestamp, mac) = signature
        .split_once(",v1=")
        .map(|(t, mac)| (t.trim_start_matches("t="), mac))
        .expect("t=...,v1=...");
    // Python's hmac module checks the signature independently.
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; key=b'webhook-test-key-0123456789abcdef'; \
             body=sys.stdin.buffer.read(); \
             print(hmac.new(key, sys.argv[1].encode()+b'.'+body, hashlib.sha256).hexdigest())",
            timestamp,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    python.stdin.take().unwrap().write_all(&hook.body).unwrap();
    let expected = python.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&expected.stdout).trim(), mac);

    let body: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("bot"), "{text}");
    assert_eq!(body["stepgate"]["event"], "approval.requested");
    assert_eq!(body["stepgate"]["approval_id"], id.as_str());
    assert_eq!(body["stepgate"]["method"], "DELETE");
    assert_eq!(
        body["stepgate"]["link"],
        format!("https://stepgate.example/approvals/{id}").as_str()
    );
    assert!(!String::from_utf8_lossy(&hook.body).contains("webhook-test-key"));

    thread::sleep(Duration::from_millis(500));
    let notified: Vec<serde_json::Value> = gateway
        .audit()
        .into_iter()
        .filter(|record| record["event"] == "approval_notify")
        .collect();
    assert_eq!(notified.len(), 1, "{notified:?}");
    assert_eq!(notified[0]["decision"], "delivered");
    let metrics = curl(
        "127.0.0.1",
        &format!("http://127.0.0.1:{}/metrics", gateway.admin_port),
        &[],
    );
    assert!(
        metrics
            .body
            .contains("stepgate_http_approval_webhooks_total{result=\"delivered\"} 1"),
        "{}",
        metrics.body
    );
}

#[test]
fn approval_is_bound_to_host() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let url = gateway.url("/orders/7");
    let first = curl(
        "127.0.0.2",
        &url,
        &["-X", "DELETE", "-H", &auth, "-H", "Host: staging.example"],
    );
    let approval = &first.json()["approval"];
    assert_eq!(approval["host"], "staging.example");
    let id = approval["id"].as_str().unwrap().to_owned();
    decide(&gateway, "approve", &id, "alice", &alice, "");
    let header = format!("Stepgate-Approval: {id}");
    let other_host = curl(
        "127.0.0.2",
        &url,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            "Host: prod.example",
            "-H",
            &header,
        ],
    );
    assert_eq!(other_host.status, 403, "{}", other_host.body);
    assert_eq!(other_host.json()["error"], "approval_other_operation");
    let same_host = curl(
        "127.0.0.2",
        &url,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            "-H",
            "Host: Staging.Example",
            "-H",
            &header,
        ],
    );
    assert_eq!(same_host.status, 200, "{}", same_host.body);
}

#[test]
fn approvers_see_query_and_body() {
    let upstream = Upstream::start();
    let (gateway, auth, _alice) = setup(&upstream, "");
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/pay?dry_run=false"),
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "--data-binary",
            r#"{"amount":1000000}"#,
        ],
    );
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    let shown = gateway.cli_ok(&["approvals", "show", &id]);
    assert!(
        shown.contains("operation  POST /orders/pay?dry_run=false"),
        "{shown}"
    );
    assert!(
        shown.contains(r#"body text  {\"amount\":1000000}"#),
        "{shown}"
    );
    // The audit trail keeps query values redacted.
    let request = gateway
        .audit()
        .into_iter()
        .find(|record| record["event"] == "approval_request")
        .unwrap();
    assert_eq!(request["path"], "/orders/pay?dry_run=REDACTED");
}

#[test]
fn pending_requests_per_identity_are_capped() {
    let upstream = Upstream::start();
    let (gateway, auth, _alice) = setup(&upstream, "");
    for i in 0..20 {
        let response = curl(
            "127.0.0.2",
            &gateway.url(&format!("/orders/{i}")),
            &["-X", "DELETE", "-H", &auth],
        );
        assert_eq!(response.status, 401, "{i}: {}", response.body);
    }
    let over = curl(
        "127.0.0.2",
        &gateway.url("/orders/99"),
        &["-X", "DELETE", "-H", &auth],
    );
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.json()["error"], "too_many_pending_approvals");
    assert_eq!(pending_ids(&gateway).len(), 20);
}

#[test]
fn wrong_codes_lock_approver_everywhere() {
    let upstream = Upstream::start();
    let (gateway, auth, alice) = setup(&upstream, "");
    let first = curl(
        "127.0.0.2",
        &gateway.url("/orders/7"),
        &["-X", "DELETE", "-H", &auth],
    );
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    let code = oathtool(&alice);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let output = gateway.cli(&[
            "approvals",
            "approve",
            &id,
            "--as",
            "alice",
            "--totp",
            wrong,
        ]);
        assert!(!output.status.success());
    }
    // Each CLI run is its own process; the count is in the store.
    let locked = gateway.cli(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &code,
    ]);
    assert!(!locked.status.success());
    let message = String::from_utf8_lossy(&locked.stderr);
    assert!(message.contains("approver alice is locked"), "{message}");
    assert_eq!(pending_ids(&gateway), std::slice::from_ref(&id));
}

#[test]
fn unreachable_upstream_keeps_approval() {
    let upstream = Upstream::start();
    let dead = support::free_port();
    let extra = format!(
        r#"
[[routes]]
prefix = "/vault"
upstream = "http://127.0.0.1:{dead}"

[[zones]]
name = "vault"
prefix = "/vault"
approval_for = ["delete"]
"#
    );
    let (gateway, auth, alice) = setup(&upstream, &extra);
    let url = gateway.url("/vault/keys/1");
    let first = curl("127.0.0.2", &url, &["-X", "DELETE", "-H", &auth]);
    let id = first.json()["approval"]["id"].as_str().unwrap().to_owned();
    decide(&gateway, "approve", &id, "alice", &alice, "");
    let header = format!("Stepgate-Approval: {id}");
    for attempt in 0..2 {
        let response = curl(
            "127.0.0.2",
            &url,
            &["-X", "DELETE", "-H", &auth, "-H", &header],
        );
        assert_eq!(response.status, 502, "{attempt}: {}", response.body);
    }
    let shown: serde_json::Value =
        serde_json::from_str(&gateway.cli_ok(&["approvals", "show", &id, "--format", "json"]))
            .unwrap();
    assert_eq!(shown["state"], "approved");
}
