//! The risk signals of the live gateway, driven through the proxy with
//! curl: data volume, request bursts, impossible travel with the GeoIP test
//! databases, sensitive operations, and signals accepted as normal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use support::{Gateway, Upstream, curl, wait_for_reload};

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn geoip(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/geoip")
        .join(name)
        .display()
        .to_string()
}

/// Creates a gateway whose `[risk]` table gets `risk` and whose challenges
/// list their reasons. `top` goes before the `[risk]` table.
fn gateway(upstream: &Upstream, risk: &str, top: &str) -> Gateway {
    let gateway = Gateway::new(upstream.addr, risk);
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    let text = text.replace("[risk]\n", &format!("{top}\n[risk]\n"));
    std::fs::write(
        &gateway.config,
        format!("{text}\n[step_up]\ninclude_reasons = true\n"),
    )
    .unwrap();
    gateway
}

/// Returns the signal names of a challenge's reasons.
fn reasons(body: &serde_json::Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .map(|reason| reason["signal"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn reason_text<'a>(body: &'a serde_json::Value, signal: &str) -> &'a str {
    body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|reason| reason["signal"] == signal)
        .and_then(|reason| reason["reason"].as_str())
        .unwrap_or_else(|| panic!("no {signal} in {body}"))
}

/// Makes `count` allowed requests so the identity leaves its learning period.
fn learn(gateway: &Gateway, auth: &str, from: &str, extra: &[&str], count: usize) {
    for i in 0..count {
        let mut args = vec!["-H", auth];
        args.extend_from_slice(extra);
        let response = curl(from, &gateway.url(&format!("/orders/{i}")), &args);
        assert_eq!(response.status, 200, "{}", response.body);
    }
}

#[test]
fn bulk_read_raises_data_volume() {
    let upstream = Upstream::start();
    let mut gateway = gateway(
        &upstream,
        "volume_min_windows = 0\nvolume_floor_bytes = 1000000\n",
        "",
    );
    let (token, _) = gateway.enrol("exporter");
    gateway.start();
    let auth = bearer(&token);
    learn(&gateway, &auth, "127.0.0.2", &[], 5);
    // 3 MB through the proxy: counted from the body actually sent.
    let bulk = curl("127.0.0.2", &gateway.url("/big/3000000"), &["-H", &auth]);
    assert_eq!(bulk.status, 200);
    assert_eq!(bulk.body.len(), 3_000_000);
    let next = curl("127.0.0.2", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(next.status, 401, "{}", next.body);
    let body = next.json();
    assert_eq!(reasons(&body), vec!["data_volume"], "{body}");
    let text = reason_text(&body, "data_volume");
    assert!(text.starts_with("3000"), "{text}");
    assert!(text.contains("bytes read in the last 10 min"), "{text}");
    // The audit record keeps the evidence.
    let audit = gateway.audit();
    let challenge = audit
        .iter()
        .rev()
        .find(|record| record["event"] == "challenge")
        .unwrap();
    assert_eq!(challenge["signals"][0]["evidence"]["unit"], "bytes");
    // And the metrics count it.
    let metrics = curl(
        "127.0.0.1",
        &format!("http://127.0.0.1:{}/metrics", gateway.admin_port),
        &[],
    );
    assert!(
        metrics
            .body
            .contains("stepgate_http_signals_total{signal=\"data_volume\"} 1"),
        "{}",
        metrics.body
    );
}

#[test]
fn burst_of_requests_raises_request_burst() {
    let upstream = Upstream::start();
    let mut gateway = gateway(
        &upstream,
        "rate_min_minutes = 0\nrate_floor_per_minute = 20\n",
        "",
    );
    let (token, _) = gateway.enrol("crawler");
    gateway.start();
    let auth = bearer(&token);
    learn(&gateway, &auth, "127.0.0.2", &[], 5);
    // More than 20 requests in one minute; a minute boundary may reset
    // the count once, so allow for two minutes' worth.
    let mut challenged = None;
    for i in 0..60 {
        let response = curl(
            "127.0.0.2",
            &gateway.url(&format!("/orders/{i}")),
            &["-H", &auth],
        );
        if response.status == 401 {
            challenged = Some(response);
            break;
        }
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let body = challenged.expect("a burst is challenged").json();
    assert_eq!(reasons(&body), vec!["request_burst"], "{body}");
    assert!(
        reason_text(&body, "request_burst").contains("requests in this minute"),
        "{body}"
    );
}

#[test]
fn impossible_travel_with_geoip_test_databases() {
    let upstream = Upstream::start();
    // Only impossible travel weighs here, so that the challenge shows it
    // alone. The risk crate tests the new network, country, autonomous
    // system and concurrent use that come with it. With all of them the
    // score passes 80 and the default policy denies.
    let top = format!(
        "[geoip]\ncity_db = \"{}\"\nasn_db = \"{}\"\n",
        geoip("GeoLite2-City-Test.mmdb"),
        geoip("GeoLite2-ASN-Test.mmdb")
    );
    let mut gateway = gateway(
        &upstream,
        "\n[risk.weights]\nnew_network = 0\nnew_country = 0\nnew_asn = 0\nconcurrent_sessions = 0\n",
        &top,
    );
    gateway.trust_proxy("127.0.0.1");
    let (token, _) = gateway.enrol("roamer");
    gateway.start();
    let auth = bearer(&token);
    // Linköping, Sweden, by the City test database.
    learn(
        &gateway,
        &auth,
        "127.0.0.1",
        &["-H", "X-Forwarded-For: 89.160.20.112"],
        6,
    );
    // Milton, Washington, seconds later.
    let far = curl(
        "127.0.0.1",
        &gateway.url("/orders/1"),
        &["-H", &auth, "-H", "X-Forwarded-For: 216.160.83.56"],
    );
    assert_eq!(far.status, 401, "{}", far.body);
    let body = far.json();
    assert_eq!(reasons(&body), vec!["impossible_travel"], "{body}");
    let text = reason_text(&body, "impossible_travel");
    assert!(
        text.contains("km from the last request (89.160.20.0/24"),
        "{text}"
    );
    assert!(text.contains("km/h needed"), "{text}");
    // Back home is where the identity was: nothing unusual.
    let home = curl(
        "127.0.0.1",
        &gateway.url("/orders/2"),
        &["-H", &auth, "-H", "X-Forwarded-For: 89.160.20.113"],
    );
    assert_eq!(home.status, 200, "{}", home.body);
    let check = gateway.cli(&["check-config"]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("GeoIP on"));
}

#[test]
fn sensitive_operations_are_challenged() {
    let upstream = Upstream::start();
    let mut gateway = gateway(&upstream, "", "");
    let (token, _) = gateway.enrol("deployer");
    gateway.start();
    let auth = bearer(&token);
    learn(&gateway, &auth, "127.0.0.2", &[], 5);
    let create_key = curl(
        "127.0.0.2",
        &gateway.url("/v1/api-keys"),
        &["-H", &auth, "-X", "POST", "-d", "{}"],
    );
    assert_eq!(create_key.status, 401, "{}", create_key.body);
    let body = create_key.json();
    let signals = reasons(&body);
    assert!(
        signals.contains(&"credential_creation".to_owned()),
        "{body}"
    );
    assert!(
        reason_text(&body, "credential_creation").contains("creates credentials"),
        "{body}"
    );
    let grant_role = curl(
        "127.0.0.2",
        &gateway.url("/admin/roles/7"),
        &["-H", &auth, "-X", "PUT", "-d", "{}"],
    );
    assert_eq!(grant_role.status, 401, "{}", grant_role.body);
    assert!(reasons(&grant_role.json()).contains(&"permission_change".to_owned()));
    let read_secret = curl("127.0.0.2", &gateway.url("/secrets/db"), &["-H", &auth]);
    assert_eq!(read_secret.status, 401, "{}", read_secret.body);
    assert!(reasons(&read_secret.json()).contains(&"secret_read".to_owned()));
}

#[test]
fn accepted_signal_stops_challenging() {
    let upstream = Upstream::start();
    let mut gateway = gateway(&upstream, "", "");
    let (token, _) = gateway.enrol("mover");
    gateway.start();
    let auth = bearer(&token);
    learn(&gateway, &auth, "127.0.0.2", &[], 5);
    let moved = curl("127.0.9.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(moved.status, 401);
    let body = moved.json();
    let value = body["reasons"][0]["evidence"]["value"]
        .as_str()
        .map(str::to_owned);
    assert_eq!(value.as_deref(), Some("127.0.9.0/24"), "{body}");
    let out = gateway.cli_ok(&["baseline", "accept", "mover", "new_network", "127.0.9.0/24"]);
    assert!(
        out.contains("signal new_network accepted as normal for mover"),
        "{out}"
    );
    wait_for_reload();
    let again = curl("127.0.9.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(again.status, 200, "{}", again.body);
    // Another network is still new.
    let other = curl("127.0.10.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(other.status, 401);
    // The acceptance is in the audit trail and in `baseline show`.
    let audit = gateway.audit();
    assert!(audit.iter().any(|record| {
        record["event"] == "admin"
            && record["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("accept signal new_network"))
    }));
    let shown: serde_json::Value =
        serde_json::from_str(&gateway.cli_ok(&["baseline", "show", "mover"])).unwrap();
    assert_eq!(shown["accepted"][0]["value"], "127.0.9.0/24");
    // Without a value every new network is accepted, until revoked.
    gateway.cli_ok(&["baseline", "accept", "mover", "new_network"]);
    wait_for_reload();
    let anywhere = curl("127.0.20.9", &gateway.url("/orders/1"), &["-H", &auth]);
    assert_eq!(anywhere.status, 200, "{}", anywhere.body);
    let out = gateway.cli_ok(&["baseline", "revoke", "mover", "new_network"]);
    assert!(out.contains("revoked"), "{out}");
    wait_for_reload();
    let revoked = curl("127.0.30.9", &gateway.url("/orders/2"), &["-H", &auth]);
    assert_eq!(revoked.status, 401, "{}", revoked.body);
    let again = gateway.cli(&["baseline", "revoke", "mover", "new_network"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("was not accepted for mover"));
    let bad = gateway.cli(&["baseline", "accept", "mover", "new_planet"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown signal \"new_planet\"; use one of")
    );
}

#[test]
fn unspecified_forwarded_address_uses_peer() {
    let upstream = Upstream::start();
    let mut gateway = gateway(&upstream, "", "");
    gateway.trust_proxy("127.0.0.1");
    let (token, _) = gateway.enrol("forwarded");
    gateway.start();
    let auth = bearer(&token);
    learn(
        &gateway,
        &auth,
        "127.0.0.1",
        &["-H", "X-Forwarded-For: 127.0.5.5"],
        5,
    );
    // 0.0.0.0 would mean "no network" to the engine and switch the network
    // signals off. The peer is used instead, and its network is new.
    for header in ["X-Forwarded-For: 0.0.0.0", "Forwarded: for=\"[::]\""] {
        let response = curl(
            "127.0.0.1",
            &gateway.url("/orders/1"),
            &["-H", &auth, "-H", header],
        );
        assert_eq!(response.status, 401, "{header}: {}", response.body);
        assert_eq!(reasons(&response.json()), vec!["new_network"], "{header}");
    }
}
