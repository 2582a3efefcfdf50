use std::net::IpAddr;
use std::sync::Arc;

use stepgate_audit::Event;
use stepgate_core::{Action, ApiToken, Identity, ManualClock, RequestFacts, Timestamp, Zone};
use stepgate_factors::totp::{TotpParams, TotpSecret, code_at};
use stepgate_risk::RiskConfig;
use stepgate_store::{SqliteStore, Store, TokenRecord, TotpRecord};

use super::*;

const START: i64 = 1_800_000_000;

struct Harness {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    store: Arc<SqliteStore>,
    engine: Engine,
    token: String,
    secret: TotpSecret,
    writer: Option<AuditWriter>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let clock = ManualClock::new(Timestamp::from_secs(START));
        let name = IdentityName::new("bot").unwrap();
        let admin = || admin_entry(Timestamp::from_secs(START), "test", None, "setup".into());
        store
            .add_identity(
                &Identity {
                    name: name.clone(),
                    disabled: false,
                    created_at: Timestamp::from_secs(START),
                },
                admin(),
            )
            .unwrap();
        let token = ApiToken::generate();
        store
            .add_token(
                &TokenRecord {
                    id: token.id().clone(),
                    identity: name.clone(),
                    hash: token.hash(),
                    created_at: Timestamp::from_secs(START),
                    revoked_at: None,
                },
                admin(),
            )
            .unwrap();
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let record = TotpRecord::new(
            name,
            secret.danger_bytes().to_vec(),
            "SHA1".into(),
            6,
            30,
            Timestamp::from_secs(START),
        );
        store.enroll_totp(&record, admin()).unwrap();
        let (sink, writer) = AuditWriter::start(store.clone(), 64).unwrap();
        let settings = Settings {
            risk: Arc::new(Scorer::new(RiskConfig::default())),
            step_up: StepUpConfig::default(),
            zones: Zones::new(vec![Zone {
                name: "reports".into(),
                prefix: "/reports".into(),
                read_only: true,
                sensitive: false,
                admin: false,
            }]),
        };
        let engine = Engine::new(
            settings,
            Policy::default_policy().unwrap(),
            Arc::new(clock.clone()),
            store.clone(),
            sink,
        )
        .unwrap();
        Self {
            _dir: dir,
            clock,
            store,
            engine,
            token: token.danger_expose().to_owned(),
            secret,
            writer: Some(writer),
        }
    }

    fn facts(&self, addr: &str, method: &str, path: &str) -> RequestFacts {
        let zone = self.engine.settings.zones.find(path).cloned();
        let template = if path.starts_with("/orders/") {
            "/orders/{n}".to_owned()
        } else {
            path.to_owned()
        };
        RequestFacts {
            client_addr: addr.parse::<IpAddr>().unwrap(),
            peer_addr: addr.parse::<IpAddr>().unwrap(),
            method: method.into(),
            path: path.into(),
            operation: format!("{method} {template}"),
            resource: template,
            action: Action::from_http(method, false),
            zone_read_only: zone.as_ref().is_some_and(|z| z.read_only),
            zone_sensitive: false,
            zone: zone.map(|z| z.name),
            time: Timestamp::default(),
            user_agent: None,
            credential: None,
            location: None,
        }
    }

    fn request(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        answer: Option<StepUpAnswer<'_>>,
    ) -> Verdict {
        let authorization = format!("Bearer {}", self.token);
        self.request_with(Some(&authorization), addr, method, path, answer)
    }

    fn request_with(
        &self,
        authorization: Option<&str>,
        addr: &str,
        method: &str,
        path: &str,
        answer: Option<StepUpAnswer<'_>>,
    ) -> Verdict {
        let input = RequestInput {
            authorization,
            answer,
            dpop: None,
            facts: self.facts(addr, method, path),
            audit_target: path.into(),
            client_certificate: None,
        };
        let verdict = self.engine.decide(input);
        match verdict {
            Verdict::Allow(allowed) => {
                let identity = allowed.identity.clone();
                let risk = allowed.risk;
                let stepped_up = allowed.stepped_up;
                if let Some(receipt) = allowed.receipt {
                    receipt.wait_blocking().unwrap();
                }
                let rebuilt = Allowed {
                    identity,
                    risk,
                    stepped_up,
                    receipt: None,
                    entry: allowed.entry,
                    facts: allowed.facts,
                    learn: allowed.learn,
                };
                self.engine.finish(
                    Box::new(rebuilt.clone_for_test()),
                    Some(200),
                    Duration::from_millis(1),
                );
                Verdict::Allow(Box::new(rebuilt))
            }
            other => other,
        }
    }

    fn code(&self) -> String {
        code_at(
            &self.secret,
            &TotpParams::default(),
            self.clock.now().as_secs() as u64,
        )
    }

    fn learn(&self) {
        for i in 0..5 {
            let path = format!("/orders/{}", 100 + i);
            assert!(matches!(
                self.request("127.0.0.2", "GET", &path, None),
                Verdict::Allow(_)
            ));
        }
    }

    fn audit_events(mut self) -> Vec<Event> {
        drop(self.engine);
        self.writer.take().unwrap().join();
        let mut events = Vec::new();
        self.store
            .scan_audit(&mut |_, record, _| {
                let record: stepgate_audit::Record = serde_json::from_str(record).unwrap();
                events.push(record.entry.event.unwrap());
                true
            })
            .unwrap();
        events
    }
}

impl Allowed {
    fn clone_for_test(&self) -> Allowed {
        Allowed {
            identity: self.identity.clone(),
            risk: self.risk,
            stepped_up: self.stepped_up,
            receipt: None,
            entry: self.entry.clone(),
            facts: self.facts.clone(),
            learn: self.learn,
        }
    }
}

fn answer_with<'a>(challenge_id: &'a str, code: &'a str) -> StepUpAnswer<'a> {
    StepUpAnswer {
        challenge_id,
        totp_code: Some(code),
        dpop: None,
    }
}

fn challenge_id(verdict: Verdict) -> String {
    match verdict {
        Verdict::Challenge(issued, receipt) => {
            receipt.wait_blocking().unwrap();
            issued.id
        }
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[test]
fn learning_traffic_allowed() {
    let harness = Harness::new();
    harness.learn();
    assert!(matches!(
        harness.request("127.0.0.2", "GET", "/orders/1", None),
        Verdict::Allow(_)
    ));
    // A new operation alone (weight 25) stays below the step-up threshold.
    assert!(matches!(
        harness.request("127.0.0.2", "GET", "/reports/daily", None),
        Verdict::Allow(_)
    ));
}

#[test]
fn new_network_challenged_then_granted() {
    let harness = Harness::new();
    harness.learn();
    let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let code = harness.code();
    let answer = answer_with(&id, &code);
    match harness.request("127.0.9.9", "GET", "/orders/17", Some(answer)) {
        Verdict::Allow(allowed) => assert_eq!(allowed.stepped_up, Some(FactorKind::Totp)),
        other => panic!("expected allow, got {other:?}"),
    }
    // The grant covers similar requests from that network.
    harness.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        harness.request("127.0.9.10", "GET", "/orders/18", None),
        Verdict::Allow(_)
    ));
    // Other networks need their own step-up.
    assert!(matches!(
        harness.request("127.0.10.9", "GET", "/orders/18", None),
        Verdict::Challenge(..)
    ));
    // The default policy's step-up permit is annotated @teach_baseline: the
    // network proved once joined the baseline, so after the grant ends a
    // request from it is not challenged again; another network still is.
    harness.clock.advance(Duration::from_secs(300));
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/18", None),
        Verdict::Allow(_)
    ));
    assert!(matches!(
        harness.request("127.0.10.9", "GET", "/orders/18", None),
        Verdict::Challenge(..)
    ));
}

#[test]
fn replayed_code_rejected() {
    let harness = Harness::new();
    harness.learn();
    let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let code = harness.code();
    let answer = answer_with(&id, &code);
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(answer)),
        Verdict::Allow(_)
    ));
    let second = challenge_id(harness.request("127.0.10.9", "GET", "/orders/17", None));
    let answer = answer_with(&second, &code);
    match harness.request("127.0.10.9", "GET", "/orders/17", Some(answer)) {
        Verdict::StepUpFailed(failure, _) => assert_eq!(failure, StepUpFailure::ReplayedCode),
        other => panic!("expected replay failure, got {other:?}"),
    }
    let events = harness.audit_events();
    assert!(events.contains(&Event::StepUpFailure));
}

#[test]
fn wrong_codes_lock_factor() {
    let harness = Harness::new();
    harness.learn();
    let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let right = harness.code();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..StepUpConfig::default().totp_max_failures {
        let answer = answer_with(&id, wrong);
        assert!(matches!(
            harness.request("127.0.9.9", "GET", "/orders/17", Some(answer)),
            Verdict::StepUpFailed(StepUpFailure::WrongCode, _)
        ));
    }
    let answer = answer_with(&id, &right);
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(answer)),
        Verdict::StepUpFailed(StepUpFailure::Locked { .. }, _)
    ));
    // The failures raise the risk of later requests too.
    match harness.request("127.0.0.2", "GET", "/orders/17", None) {
        Verdict::Challenge(issued, _) => assert!(issued.risk.value() >= 30),
        other => panic!("expected a challenge, got {other:?}"),
    }
    assert!(
        harness.store.snapshot().unwrap().totp[0]
            .locked_until
            .is_some()
    );
}

#[test]
fn read_only_zone_write_challenged_during_learning() {
    let harness = Harness::new();
    assert!(matches!(
        harness.request("127.0.0.2", "POST", "/reports/daily", None),
        Verdict::Challenge(..)
    ));
    assert!(matches!(
        harness.request("127.0.0.2", "GET", "/reports/daily", None),
        Verdict::Allow(_)
    ));
}

#[test]
fn bad_credentials_unauthenticated() {
    let harness = Harness::new();
    let unknown = format!("Bearer {}", ApiToken::generate().danger_expose());
    let cases: [(Option<&str>, AuthFailure); 5] = [
        (None, AuthFailure::Missing),
        (Some("Basic abc"), AuthFailure::NotBearer),
        (Some("Bearer sgt_nope"), AuthFailure::Malformed),
        (Some(unknown.as_str()), AuthFailure::UnknownToken),
        (Some("Bearer"), AuthFailure::NotBearer),
    ];
    for (authorization, expected) in cases {
        match harness.request_with(authorization, "127.0.0.2", "GET", "/orders/1", None) {
            Verdict::Unauthenticated(failure, receipt) => {
                assert_eq!(failure, expected);
                receipt.wait_blocking().unwrap();
            }
            other => panic!("expected unauthenticated for {authorization:?}, got {other:?}"),
        }
    }
}

#[test]
fn challenge_bound_to_network_and_single_use() {
    let harness = Harness::new();
    harness.learn();
    let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let code = harness.code();
    let answer = answer_with(&id, &code);
    assert!(matches!(
        harness.request("127.0.11.9", "GET", "/orders/17", Some(answer)),
        Verdict::StepUpFailed(StepUpFailure::WrongNetwork { .. }, _)
    ));
    let unknown = answer_with("ch_doesnotexist", &code);
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(unknown)),
        Verdict::StepUpFailed(StepUpFailure::UnknownChallenge, _)
    ));
    harness.clock.advance(Duration::from_secs(301));
    let late = answer_with(&id, &code);
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(late)),
        Verdict::StepUpFailed(StepUpFailure::Expired, _)
    ));
}

#[test]
fn audit_chain_records_every_decision() {
    let harness = Harness::new();
    harness.learn();
    let _ = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let events = harness.audit_events();
    assert_eq!(events.iter().filter(|e| **e == Event::Allow).count(), 5);
    assert_eq!(events.iter().filter(|e| **e == Event::Challenge).count(), 1);
    assert_eq!(events.iter().filter(|e| **e == Event::Admin).count(), 3);
}

#[test]
fn revoked_token_takes_effect_on_reload() {
    let harness = Harness::new();
    harness.learn();
    let token = ApiToken::parse(&harness.token).unwrap();
    harness
        .store
        .revoke_token(
            token.id(),
            Timestamp::from_secs(START),
            admin_entry(Timestamp::from_secs(START), "t", None, "revoke".into()),
        )
        .unwrap();
    assert!(harness.engine.reload_if_changed().unwrap());
    assert!(matches!(
        harness.request("127.0.0.2", "GET", "/orders/1", None),
        Verdict::Unauthenticated(AuthFailure::Revoked, _)
    ));
}

#[test]
fn concurrent_answers_with_one_code_pass_once() {
    let harness = Harness::new();
    harness.learn();
    let first = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let second = challenge_id(harness.request("127.0.9.9", "DELETE", "/orders/17", None));
    let code = harness.code();
    let passed = std::thread::scope(|scope| {
        let runs: Vec<_> = [("GET", first.as_str()), ("DELETE", second.as_str())]
            .into_iter()
            .map(|(method, id)| {
                let harness = &harness;
                let code = code.as_str();
                scope.spawn(move || {
                    let answer = answer_with(id, code);
                    matches!(
                        harness.request("127.0.9.9", method, "/orders/17", Some(answer)),
                        Verdict::Allow(_)
                    )
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|run| run.join().ok())
            .filter(|passed| *passed)
            .count()
    });
    assert_eq!(passed, 1);
}

#[test]
fn answer_for_other_request_rejected() {
    let harness = Harness::new();
    harness.learn();
    let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let code = harness.code();
    let answer = answer_with(&id, &code);
    assert!(matches!(
        harness.request("127.0.9.9", "DELETE", "/orders/17", Some(answer)),
        Verdict::StepUpFailed(StepUpFailure::WrongRequest { .. }, _)
    ));
    // The code was not used up by the mismatched answer.
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(answer)),
        Verdict::Allow(_)
    ));
}

#[test]
fn open_challenges_capped_per_identity() {
    let harness = Harness::new();
    harness.learn();
    let first = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    for _ in 0..40 {
        challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    }
    let latest = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
    let code = harness.code();
    let stale = answer_with(&first, &code);
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(stale)),
        Verdict::StepUpFailed(StepUpFailure::UnknownChallenge, _)
    ));
    let fresh = answer_with(&latest, &code);
    assert!(matches!(
        harness.request("127.0.9.9", "GET", "/orders/17", Some(fresh)),
        Verdict::Allow(_)
    ));
}
