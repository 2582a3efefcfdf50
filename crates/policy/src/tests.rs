use std::net::IpAddr;

use stepgate_core::{Action, FactorKind, Outcome, Zone};

use super::*;

fn input<'a>(
    action: Action,
    risk: u8,
    proved: &'a [(FactorKind, i64)],
    zone: Option<&'a Zone>,
) -> PolicyInput<'a> {
    PolicyInput {
        identity: "ci-bot",
        identity_learning: false,
        action,
        resource: "/orders/{n}",
        operation: "GET /orders/{n}",
        zone,
        risk,
        signals: &["new_network"],
        proved,
        source_ip: "127.0.0.2".parse::<IpAddr>().unwrap(),
        hour: 22,
        weekday: 1,
    }
}

fn decide(policy: &Policy, input: &PolicyInput<'_>) -> PolicyDecision {
    policy.decide(input, &FactorKind::ALL).unwrap()
}

#[test]
fn default_policy_validates() {
    let policy = Policy::default_policy().unwrap();
    assert_eq!(policy.policy_count(), 7);
}

#[test]
fn low_risk_allowed() {
    let policy = Policy::default_policy().unwrap();
    let decision = decide(&policy, &input(Action::Read, 0, &[], None));
    assert_eq!(decision.outcome, Outcome::Allow);
    assert_eq!(decision.reasons, vec!["low-risk".to_owned()]);
}

#[test]
fn medium_risk_steps_up_to_totp() {
    let policy = Policy::default_policy().unwrap();
    let decision = decide(&policy, &input(Action::Read, 40, &[], None));
    assert_eq!(decision.outcome, Outcome::StepUp);
    assert_eq!(decision.step_up, Some(FactorKind::Totp));
}

#[test]
fn recent_totp_allows_medium_risk() {
    let policy = Policy::default_policy().unwrap();
    let proved = [(FactorKind::Totp, 120)];
    let decision = decide(&policy, &input(Action::Read, 40, &proved, None));
    assert_eq!(decision.outcome, Outcome::Allow);
    let stale = [(FactorKind::Totp, 301)];
    let decision = decide(&policy, &input(Action::Read, 40, &stale, None));
    assert_eq!(decision.outcome, Outcome::StepUp);
}

#[test]
fn challenge_lists_every_satisfying_factor_weakest_first() {
    let policy = Policy::default_policy().unwrap();
    let decision = decide(&policy, &input(Action::Read, 40, &[], None));
    assert_eq!(decision.satisfying, FactorKind::ALL.to_vec());
    let offered = [FactorKind::Signature, FactorKind::Certificate];
    let decision = policy
        .decide(&input(Action::Read, 40, &[], None), &offered)
        .unwrap();
    assert_eq!(
        decision.satisfying,
        vec![FactorKind::Certificate, FactorKind::Signature]
    );
    assert_eq!(decision.step_up, Some(FactorKind::Certificate));
}

#[test]
fn policy_can_ask_for_a_hardware_held_key() {
    let text = r#"
        @id("base") permit (principal, action, resource);
        @id("writes-need-hsm")
        forbid (principal, action == Stepgate::Action::"write", resource)
        unless { context.assurance >= 3 };
    "#;
    let policy = Policy::new(text, "hsm.cedar").unwrap();
    let decision = decide(&policy, &input(Action::Write, 0, &[], None));
    assert_eq!(decision.outcome, Outcome::StepUp);
    assert_eq!(decision.satisfying, vec![FactorKind::Signature]);
    let totp = [(FactorKind::Totp, 5), (FactorKind::Dpop, 5)];
    let decision = decide(&policy, &input(Action::Write, 0, &totp, None));
    assert_eq!(decision.satisfying, vec![FactorKind::Signature]);
    let signed = [(FactorKind::Signature, 5)];
    let decision = decide(&policy, &input(Action::Write, 0, &signed, None));
    assert_eq!(decision.outcome, Outcome::Allow);
    let decision = decide(&policy, &input(Action::Read, 0, &[], None));
    assert_eq!(decision.outcome, Outcome::Allow);
}

#[test]
fn very_high_risk_denied() {
    let policy = Policy::default_policy().unwrap();
    let decision = decide(&policy, &input(Action::Read, 85, &[], None));
    assert_eq!(decision.outcome, Outcome::Deny);
    assert_eq!(decision.step_up, None);
}

#[test]
fn admin_action_needs_totp() {
    let policy = Policy::default_policy().unwrap();
    let decision = decide(&policy, &input(Action::Admin, 0, &[], None));
    assert_eq!(decision.outcome, Outcome::StepUp);
}

#[test]
fn step_up_not_offered_means_deny() {
    let policy = Policy::default_policy().unwrap();
    let decision = policy
        .decide(&input(Action::Read, 40, &[], None), &[])
        .unwrap();
    assert_eq!(decision.outcome, Outcome::Deny);
}

#[test]
fn zone_membership_visible_to_policies() {
    let text = r#"
        permit (principal, action == Stepgate::Action::"read", resource in Stepgate::Zone::"reports")
        when { resource.operation like "GET *" && principal.name == "ci-bot" };
    "#;
    let policy = Policy::new(text, "test").unwrap();
    let zone = Zone {
        name: "reports".into(),
        prefix: "/reports".into(),
        read_only: true,
        sensitive: false,
        admin: false,
        ..Zone::default()
    };
    let decision = decide(&policy, &input(Action::Read, 99, &[], Some(&zone)));
    assert_eq!(decision.outcome, Outcome::Allow);
    let decision = decide(&policy, &input(Action::Read, 0, &[], None));
    assert_eq!(decision.outcome, Outcome::Deny);
}

#[test]
fn source_ip_and_signals_usable() {
    let text = r#"
        permit (principal, action, resource)
        when { context.source_ip.isInRange(ip("127.0.0.0/24")) && !context.signals.contains("failure_burst") };
    "#;
    let policy = Policy::new(text, "test").unwrap();
    assert_eq!(
        decide(&policy, &input(Action::Read, 50, &[], None)).outcome,
        Outcome::Allow
    );
}

#[test]
fn unknown_attribute_fails_validation() {
    let text = "permit (principal, action, resource) when { context.riks < 30 };";
    let err = Policy::new(text, "bad.cedar").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("bad.cedar"), "{message}");
    assert!(message.contains("riks"), "{message}");
}

#[test]
fn syntax_error_names_source() {
    let err = Policy::new(
        "permit (principal, action, resource) when {",
        "broken.cedar",
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Parse { .. }));
    assert!(err.to_string().contains("broken.cedar"));
}

#[test]
fn cached_decisions_match_cedar() {
    let text = r#"
        permit (principal, action, resource)
        when { context.hour < 12 && context.source_ip.isInRange(ip("127.0.0.0/24")) && context.weekday < 5 };
        permit (principal, action, resource) when { context.proved has totp && context.risk < 50 };
    "#;
    let cached = Policy::new(text, "test").unwrap();
    let uncached = cached.without_decision_cache();
    let mut outcomes = std::collections::HashSet::new();
    for hour in [3, 13] {
        for addr in ["127.0.0.9", "127.0.1.9"] {
            for weekday in [2, 6] {
                for risk in [10, 60] {
                    for proved in [vec![], vec![(FactorKind::Totp, 5)]] {
                        let mut case = input(Action::Read, risk, &proved, None);
                        case.hour = hour;
                        case.weekday = weekday;
                        case.source_ip = addr.parse().unwrap();
                        let expected = decide(&uncached, &case);
                        // Twice: the second answer comes from the cache.
                        assert_eq!(decide(&cached, &case), expected, "{case:?}");
                        assert_eq!(decide(&cached, &case), expected, "{case:?}");
                        outcomes.insert(format!("{:?}", expected.outcome));
                    }
                }
            }
        }
    }
    assert_eq!(outcomes.len(), 3, "the cases cover allow, step-up and deny");
}

#[test]
fn parse_error_names_line_and_column() {
    let text = "permit (principal, action, resource)\nwhen { context.risk < 30 };\n\npermit (principal, action, resource) when { &&& };";
    let message = Policy::new(text, "broken.cedar").unwrap_err().to_string();
    assert!(message.contains("line 4"), "{message}");
}

#[test]
fn duplicate_ids_rejected() {
    let text = r#"
        @id("same") permit (principal, action, resource) when { context.risk < 30 };
        @id("same") permit (principal, action, resource) when { context.risk < 10 };
    "#;
    let message = Policy::new(text, "dup.cedar").unwrap_err().to_string();
    assert!(message.contains("same"), "{message}");
}

#[test]
fn policy_without_permit_rejected() {
    let message = Policy::new("", "empty.cedar").unwrap_err().to_string();
    assert!(message.contains("no permit policy"), "{message}");
}

#[test]
fn teach_baseline_annotation_is_found_by_policy_id() {
    let policy = Policy::default_policy().unwrap();
    assert!(policy.teaches_baseline(&["medium-risk-with-totp".to_owned()]));
    assert!(!policy.teaches_baseline(&["low-risk".to_owned()]));
    assert!(!policy.teaches_baseline(&[]));
    let plain = Policy::new(
        "@id(\"p\") permit (principal, action, resource) when { context.risk < 30 };",
        "plain.cedar",
    )
    .unwrap();
    assert!(!plain.teaches_baseline(&["p".to_owned()]));
}
