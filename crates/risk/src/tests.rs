use std::net::IpAddr;

use stepgate_core::{Action, RequestFacts, SignalKind, Timestamp};

use super::*;

fn facts(addr: &str, method: &str, template: &str, secs: i64) -> RequestFacts {
    let action = Action::from_http(method, false);
    RequestFacts {
        client_addr: addr.parse::<IpAddr>().unwrap(),
        peer_addr: addr.parse::<IpAddr>().unwrap(),
        method: method.to_owned(),
        path: template.replace("{n}", "1"),
        operation: format!("{method} {template}"),
        resource: template.to_owned(),
        action,
        zone: None,
        zone_read_only: false,
        zone_sensitive: false,
        time: Timestamp::from_secs(secs),
        user_agent: None,
    }
}

fn kinds(assessment: &Assessment) -> Vec<SignalKind> {
    assessment
        .signals
        .iter()
        .map(|signal| signal.kind)
        .collect()
}

fn learned(config: &RiskConfig) -> Baseline {
    let mut baseline = Baseline::default();
    for i in 0..config.learning_requests {
        baseline.learn(&facts(
            "127.0.0.2",
            "GET",
            "/orders/{n}",
            3600 * 10 + i as i64,
        ));
    }
    baseline
}

#[test]
fn learning_period_suppresses_baseline_signals() {
    let config = RiskConfig::default();
    let baseline = Baseline::default();
    let request = facts("127.0.9.9", "GET", "/orders/{n}", 100);
    let assessment = assess(&config, &baseline, &Failures::default(), &request);
    assert!(assessment.signals.is_empty());
    assert_eq!(assessment.score.value(), 0);
}

#[test]
fn known_request_raises_nothing() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let request = facts("127.0.0.77", "GET", "/orders/{n}", 3600 * 10 + 50);
    let assessment = assess(&config, &baseline, &Failures::default(), &request);
    assert_eq!(kinds(&assessment), vec![]);
}

#[test]
fn new_network_signalled_with_reason() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let request = facts("127.0.9.9", "GET", "/orders/{n}", 3600 * 10);
    let assessment = assess(&config, &baseline, &Failures::default(), &request);
    assert_eq!(kinds(&assessment), vec![SignalKind::NewNetwork]);
    assert_eq!(assessment.score.value(), config.weights.new_network);
    assert!(assessment.signals[0].reason.contains("127.0.9.0/24"));
}

#[test]
fn new_operation_signalled() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let request = facts("127.0.0.2", "DELETE", "/orders/{n}", 3600 * 10);
    let assessment = assess(&config, &baseline, &Failures::default(), &request);
    assert_eq!(kinds(&assessment), vec![SignalKind::NewOperation]);
    assert!(assessment.signals[0].reason.contains("DELETE /orders/{n}"));
}

#[test]
fn read_only_zone_write_applies_while_learning() {
    let config = RiskConfig::default();
    let mut request = facts("127.0.0.2", "POST", "/reports/daily", 100);
    request.zone = Some("reports".into());
    request.zone_read_only = true;
    let assessment = assess(
        &config,
        &Baseline::default(),
        &Failures::default(),
        &request,
    );
    assert_eq!(kinds(&assessment), vec![SignalKind::ReadOnlyZoneWrite]);
    request.method = "GET".into();
    request.action = Action::Read;
    let read = assess(
        &config,
        &Baseline::default(),
        &Failures::default(),
        &request,
    );
    assert!(read.signals.is_empty());
}

#[test]
fn sensitive_zone_always_signalled() {
    let config = RiskConfig::default();
    let mut request = facts("127.0.0.2", "GET", "/secrets/{n}", 100);
    request.zone = Some("secrets".into());
    request.zone_sensitive = true;
    let assessment = assess(&config, &learned(&config), &Failures::default(), &request);
    assert!(kinds(&assessment).contains(&SignalKind::SensitiveZone));
}

#[test]
fn failure_burst_needs_threshold_within_window() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let mut failures = Failures::default();
    for i in 0..config.failure_burst_threshold - 1 {
        failures.record(
            FailureKind::Authentication,
            Timestamp::from_secs(1000 + i as i64),
            stepgate_core::Network::of("127.0.0.2".parse().unwrap()),
        );
    }
    let request = facts("127.0.0.2", "GET", "/orders/{n}", 1010);
    assert!(
        assess(&config, &baseline, &failures, &request)
            .signals
            .is_empty()
    );

    let from = stepgate_core::Network::of("127.0.9.9".parse().unwrap());
    failures.record(FailureKind::StepUp, Timestamp::from_secs(1005), from);
    let burst = assess(&config, &baseline, &failures, &request);
    assert_eq!(kinds(&burst), vec![SignalKind::FailureBurst]);

    let later = facts(
        "127.0.0.2",
        "GET",
        "/orders/{n}",
        1000 + config.failure_window_secs as i64 + 10,
    );
    assert!(
        assess(&config, &baseline, &failures, &later)
            .signals
            .is_empty()
    );
}

#[test]
fn totp_failure_and_lock_raise_risk() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let mut failures = Failures::default();
    failures.record(
        FailureKind::Totp,
        Timestamp::from_secs(1000),
        stepgate_core::Network::of("127.0.0.2".parse().unwrap()),
    );
    let request = facts("127.0.0.2", "GET", "/orders/{n}", 1001);
    let assessment = assess(&config, &baseline, &failures, &request);
    assert_eq!(kinds(&assessment), vec![SignalKind::TotpFailure]);

    let mut locked = Failures::default();
    locked.lock_totp(Timestamp::from_secs(5000));
    let assessment = assess(&config, &baseline, &locked, &request);
    assert!(assessment.signals[0].reason.contains("locked"));
}

#[test]
fn unusual_hour_needs_evidence() {
    let config = RiskConfig {
        unusual_hour_min_requests: 10,
        ..RiskConfig::default()
    };
    let mut baseline = Baseline::default();
    for i in 0..9 {
        baseline.learn(&facts("127.0.0.2", "GET", "/orders/{n}", 3600 * 10 + i));
    }
    let night = facts("127.0.0.2", "GET", "/orders/{n}", 3600 * 3);
    assert!(
        assess(&config, &baseline, &Failures::default(), &night)
            .signals
            .is_empty()
    );
    baseline.learn(&facts("127.0.0.2", "GET", "/orders/{n}", 3600 * 10 + 9));
    let assessment = assess(&config, &baseline, &Failures::default(), &night);
    assert_eq!(kinds(&assessment), vec![SignalKind::UnusualHour]);
}

#[test]
fn zero_weight_turns_signal_off() {
    let mut config = RiskConfig::default();
    config.weights.new_network = 0;
    let baseline = learned(&config);
    let request = facts("127.0.9.9", "GET", "/orders/{n}", 3600 * 10);
    assert!(
        assess(&config, &baseline, &Failures::default(), &request)
            .signals
            .is_empty()
    );
}

#[test]
fn baseline_round_trips_through_json() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let json = serde_json::to_string(&baseline).unwrap();
    let back: Baseline = serde_json::from_str(&json).unwrap();
    assert_eq!(back, baseline);
}

#[test]
fn forged_auth_failures_stay_on_their_network() {
    let config = RiskConfig::default();
    let baseline = learned(&config);
    let mut failures = Failures::default();
    let elsewhere = stepgate_core::Network::of("127.0.77.1".parse().unwrap());
    for i in 0..20 {
        failures.record(
            FailureKind::Authentication,
            Timestamp::from_secs(1000 + i),
            elsewhere,
        );
    }
    let home = facts("127.0.0.2", "GET", "/orders/{n}", 1030);
    assert!(
        assess(&config, &baseline, &failures, &home)
            .signals
            .is_empty()
    );
    let there = facts("127.0.77.1", "GET", "/orders/{n}", 1030);
    assert!(
        kinds(&assess(&config, &baseline, &failures, &there)).contains(&SignalKind::FailureBurst)
    );
}

#[test]
fn baseline_memory_is_bounded() {
    let mut baseline = Baseline::default();
    for i in 0..3000 {
        let addr = format!("10.{}.{}.1", i / 256, i % 256);
        baseline.learn(&facts(&addr, "GET", &format!("/p{i}"), 1000 + i as i64));
    }
    assert_eq!(baseline.network_count(), 256);
    assert_eq!(baseline.operation_count(), 1024);
    // The most recent ones are kept.
    assert!(baseline.knows_operation("GET /p2999"));
    assert!(!baseline.knows_operation("GET /p0"));
}
