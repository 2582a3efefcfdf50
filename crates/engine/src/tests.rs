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
                    scram: None,
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
                ..Zone::default()
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
            session_token: None,
            sql: None,
            answer,
            dpop: None,
            facts: self.facts(addr, method, path),
            audit_target: path.into(),
            grant_token: None,
            client_certificate: None,
            client_certificates_checked: false,
            approval: None,
            dpop_checked: false,
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
                    grant_token: None,
                    approval_id: None,
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
            grant_token: None,
            approval_id: self.approval_id.clone(),
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
        signature: None,
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

mod signatures {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use stepgate_pop::httpsig::{Message, byte_sequence, parse_signature_input, signature_base};
    use stepgate_store::SignatureKeyRecord;

    use super::*;

    struct Key {
        id: &'static str,
        pair: Ed25519KeyPair,
    }

    impl Key {
        fn new(id: &'static str) -> Key {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            Key { id, pair }
        }

        fn jwk(&self) -> String {
            let x = URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref());
            format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#)
        }
    }

    /// A signed answer: its header values, owned.
    struct Signed {
        input: String,
        signature: String,
        fields: Vec<(&'static str, String)>,
        method: &'static str,
        path: String,
        body: BodyDigest<'static>,
    }

    impl Signed {
        fn answer<'a>(
            &'a self,
            challenge_id: &'a str,
            inputs: &'a [&'a str],
            signatures: &'a [&'a str],
            fields: &'a [(&'a str, &'a str)],
        ) -> StepUpAnswer<'a> {
            StepUpAnswer {
                challenge_id,
                totp_code: None,
                dpop: None,
                signature: Some(SignatureAnswer {
                    inputs,
                    signatures,
                    message: message(self.method, &self.path, fields),
                    body: self.body,
                }),
            }
        }
    }

    fn message<'a>(
        method: &'a str,
        path: &'a str,
        fields: &'a [(&'a str, &'a str)],
    ) -> Message<'a> {
        Message {
            method: Some(method),
            scheme: "https",
            authority: "api.example.com",
            path,
            query: None,
            status: None,
            fields,
        }
    }

    /// Signs `method path` for a challenge with `params` after the
    /// component list, such as `;created=...;keyid="k1";nonce="ch_..."`.
    fn sign(key: &Key, method: &'static str, path: &str, components: &str, params: &str) -> Signed {
        let input = format!("sig=({components}){params}");
        let parsed = &parse_signature_input(&input).unwrap()[0];
        let digest = ("content-digest", stepgate_pop::content_digest(b"{}"));
        let fields = vec![digest];
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let base = signature_base(&message(method, path, &borrowed), parsed).unwrap();
        let signature = format!(
            "sig={}",
            byte_sequence(key.pair.sign(base.as_bytes()).as_ref())
        );
        Signed {
            input,
            signature,
            fields,
            method,
            path: path.to_owned(),
            body: BodyDigest::NoBody,
        }
    }

    const COVERED: &str = r#""@method" "@target-uri" "@authority""#;

    fn params(harness: &Harness, key: &str, challenge: &str, created_offset: i64) -> String {
        let created = harness.clock.now().as_secs() + created_offset;
        format!(r#";created={created};keyid="{key}";nonce="{challenge}""#)
    }

    impl Harness {
        fn enrol(&self, key: &Key, window: (Option<i64>, Option<i64>)) {
            let record = SignatureKeyRecord {
                identity: IdentityName::new("bot").unwrap(),
                key_id: key.id.to_owned(),
                algorithm: "ed25519".to_owned(),
                jwk: key.jwk(),
                created_at: self.clock.now(),
                not_before: window.0.map(Timestamp::from_secs),
                not_after: window.1.map(Timestamp::from_secs),
            };
            let entry = admin_entry(self.clock.now(), "test", None, "enrol".into());
            self.store.enroll_signature_key(&record, entry).unwrap();
            self.engine.reload_if_changed().unwrap();
        }

        fn remove(&self, key: &Key) {
            let name = IdentityName::new("bot").unwrap();
            let entry = admin_entry(self.clock.now(), "test", None, "remove".into());
            assert!(
                self.store
                    .remove_signature_key(&name, key.id, entry)
                    .unwrap()
            );
            self.engine.reload_if_changed().unwrap();
        }

        fn answer_signed(&self, challenge: &str, signed: &Signed) -> Verdict {
            self.answer_signed_from("127.0.9.9", challenge, signed)
        }

        fn answer_signed_from(&self, addr: &str, challenge: &str, signed: &Signed) -> Verdict {
            let inputs = [signed.input.as_str()];
            let signatures = [signed.signature.as_str()];
            let fields: Vec<(&str, &str)> = signed
                .fields
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            let answer = signed.answer(challenge, &inputs, &signatures, &fields);
            self.request(addr, signed.method, &signed.path, Some(answer))
        }
    }

    fn failure(verdict: Verdict) -> StepUpFailure {
        match verdict {
            Verdict::StepUpFailed(failure, receipt) => {
                receipt.wait_blocking().unwrap();
                failure
            }
            other => panic!("expected a step-up failure, got {other:?}"),
        }
    }

    fn stepped_up(verdict: Verdict) -> Option<FactorKind> {
        match verdict {
            Verdict::Allow(allowed) => allowed.stepped_up,
            other => panic!("expected allow, got {other:?}"),
        }
    }

    #[test]
    fn signed_answer_grants_and_cannot_be_replayed() {
        let harness = Harness::new();
        let key = Key::new("k1");
        harness.enrol(&key, (None, None));
        harness.learn();
        let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
        let signed = sign(
            &key,
            "GET",
            "/orders/17",
            COVERED,
            &params(&harness, "k1", &id, 0),
        );
        assert_eq!(
            stepped_up(harness.answer_signed(&id, &signed)),
            Some(FactorKind::Signature)
        );
        assert_eq!(
            failure(harness.answer_signed(&id, &signed)),
            StepUpFailure::UnknownChallenge
        );
    }

    #[test]
    fn created_window_boundaries_to_the_second() {
        let harness = Harness::new();
        let key = Key::new("k1");
        harness.enrol(&key, (None, None));
        harness.learn();
        let cases = [(-61, false), (6, false), (-60, true), (5, true)];
        for (round, (offset, accepted)) in cases.into_iter().enumerate() {
            // A network proved once joins the baseline, so each round
            // comes from a new one.
            let addr = format!("127.0.{}.9", 20 + round);
            let id = challenge_id(harness.request(&addr, "GET", "/orders/17", None));
            let signed = sign(
                &key,
                "GET",
                "/orders/17",
                COVERED,
                &params(&harness, "k1", &id, offset),
            );
            let verdict = harness.answer_signed_from(&addr, &id, &signed);
            if accepted {
                assert_eq!(
                    stepped_up(verdict),
                    Some(FactorKind::Signature),
                    "created {offset}"
                );
                // Start the next case without the grant.
                harness.clock.advance(Duration::from_secs(301));
            } else {
                assert!(
                    matches!(failure(verdict), StepUpFailure::InvalidSignature(_)),
                    "created {offset}"
                );
            }
        }
        let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
        let now = harness.clock.now().as_secs();
        let expired = format!(r#";created={now};expires={now};keyid="k1";nonce="{id}""#);
        let signed = sign(&key, "GET", "/orders/17", COVERED, &expired);
        assert!(matches!(
            failure(harness.answer_signed(&id, &signed)),
            StepUpFailure::InvalidSignature(reason) if reason.contains("expired")
        ));
    }

    #[test]
    fn incomplete_or_foreign_signatures_fail() {
        let harness = Harness::new();
        let key = Key::new("k1");
        let stranger = Key::new("k1");
        harness.enrol(&key, (None, None));
        harness.learn();
        let id = challenge_id(harness.request("127.0.9.9", "GET", "/orders/17", None));
        let p = params(&harness, "k1", &id, 0);
        let cases = [
            (
                sign(&key, "GET", "/orders/17", r#""@method" "@target-uri""#, &p),
                "does not cover @authority",
            ),
            (
                sign(&stranger, "GET", "/orders/17", COVERED, &p),
                "does not verify",
            ),
            (
                sign(
                    &key,
                    "GET",
                    "/orders/17",
                    COVERED,
                    &params(&harness, "k1", "ch_other", 0),
                ),
                "nonce",
            ),
            (
                sign(
                    &key,
                    "GET",
                    "/orders/17",
                    COVERED,
                    &format!(r#"{p};alg="rsa-pss-sha512""#),
                ),
                "not the key's algorithm",
            ),
            (
                sign(
                    &key,
                    "GET",
                    "/orders/17",
                    COVERED,
                    &format!(r#";created={};nonce="{id}""#, harness.clock.now().as_secs()),
                ),
                "no keyid",
            ),
            (
                sign(
                    &key,
                    "GET",
                    "/orders/17",
                    COVERED,
                    &params(&harness, &"k".repeat(300), &id, 0),
                ),
                "longer than 256",
            ),
        ];
        for (signed, expected) in cases {
            match failure(harness.answer_signed(&id, &signed)) {
                StepUpFailure::InvalidSignature(reason) => {
                    assert!(reason.contains(expected), "{reason}")
                }
                other => panic!("expected {expected}, got {other:?}"),
            }
        }
        // Signed for another path, sent with this one.
        let mut moved = sign(&key, "GET", "/orders/18", COVERED, &p);
        moved.path = "/orders/17".to_owned();
        assert!(matches!(
            failure(harness.answer_signed(&id, &moved)),
            StepUpFailure::InvalidSignature(_)
        ));
        let unknown = sign(
            &key,
            "GET",
            "/orders/17",
            COVERED,
            &params(&harness, "k9", &id, 0),
        );
        assert_eq!(
            failure(harness.answer_signed(&id, &unknown)),
            StepUpFailure::UnknownSigningKey("k9".to_owned())
        );
        // The challenge is still open after all of these.
        let good = sign(&key, "GET", "/orders/17", COVERED, &p);
        assert_eq!(
            stepped_up(harness.answer_signed(&id, &good)),
            Some(FactorKind::Signature)
        );
    }

    #[test]
    fn body_must_match_its_covered_digest() {
        let harness = Harness::new();
        let key = Key::new("k1");
        harness.enrol(&key, (None, None));
        harness.learn();
        let id = challenge_id(harness.request("127.0.9.9", "POST", "/orders/17", None));
        let p = params(&harness, "k1", &id, 0);
        let mut signed = sign(&key, "POST", "/orders/17", COVERED, &p);
        signed.body = BodyDigest::Matches;
        assert!(matches!(
            failure(harness.answer_signed(&id, &signed)),
            StepUpFailure::InvalidSignature(reason) if reason.contains("content-digest")
        ));
        let with_digest = format!(r#"{COVERED} "content-digest""#);
        let mut signed = sign(&key, "POST", "/orders/17", &with_digest, &p);
        signed.body =
            BodyDigest::Mismatch("Content-Digest sha-256 does not match the body received");
        assert!(matches!(
            failure(harness.answer_signed(&id, &signed)),
            StepUpFailure::BodyChanged(_)
        ));
        signed.body = BodyDigest::Missing;
        assert!(matches!(
            failure(harness.answer_signed(&id, &signed)),
            StepUpFailure::BodyChanged(_)
        ));
        signed.body = BodyDigest::Matches;
        assert_eq!(
            stepped_up(harness.answer_signed(&id, &signed)),
            Some(FactorKind::Signature)
        );
    }

    #[test]
    fn key_windows_and_rotation() {
        let harness = Harness::new();
        let old = Key::new("old");
        let new = Key::new("new");
        let now = harness.clock.now().as_secs();
        harness.enrol(&old, (None, Some(now + 1000)));
        harness.enrol(&new, (Some(now + 500), None));
        harness.learn();
        let round = std::cell::Cell::new(0);
        let answer = |key: &Key| {
            round.set(round.get() + 1);
            let addr = format!("127.0.{}.9", 20 + round.get());
            let id = challenge_id(harness.request(&addr, "GET", "/orders/17", None));
            let signed = sign(
                key,
                "GET",
                "/orders/17",
                COVERED,
                &params(&harness, key.id, &id, 0),
            );
            harness.answer_signed_from(&addr, &id, &signed)
        };
        // Before its window the new key does not count.
        assert_eq!(failure(answer(&new)), StepUpFailure::KeyExpired);
        assert_eq!(stepped_up(answer(&old)), Some(FactorKind::Signature));
        // Both keys work while the windows overlap.
        harness.clock.advance(Duration::from_secs(600));
        assert_eq!(stepped_up(answer(&new)), Some(FactorKind::Signature));
        harness.clock.advance(Duration::from_secs(301));
        assert_eq!(stepped_up(answer(&old)), Some(FactorKind::Signature));
        // The old key retired: removed, or past its not-after.
        harness.clock.advance(Duration::from_secs(301));
        assert_eq!(failure(answer(&old)), StepUpFailure::KeyExpired);
        harness.remove(&old);
        assert_eq!(
            failure(answer(&old)),
            StepUpFailure::UnknownSigningKey("old".to_owned())
        );
        assert_eq!(stepped_up(answer(&new)), Some(FactorKind::Signature));
    }
}

mod approvals {
    use stepgate_config::ApprovalConfig;
    use stepgate_store::{ApprovalState, ApprovalStore, ApproverRecord};

    use super::*;

    const ALICE_SECRET: &[u8] = b"alice-secret-0123456";

    struct Desk {
        harness: Harness,
        desk: Arc<ApprovalDesk>,
    }

    /// A harness whose engine asks for approvals: `/orders` needs one for
    /// deletes, `policy` replaces the default policy when given, and
    /// alice is an approver when `with_approver` is set.
    fn desk(policy: Option<&str>, with_approver: bool) -> Desk {
        let mut harness = Harness::new();
        if with_approver {
            let alice = ApproverRecord::new(
                IdentityName::new("alice").unwrap(),
                ALICE_SECRET.to_vec(),
                "SHA1".into(),
                6,
                30,
                vec!["approvers".into(), "dba".into()],
                Timestamp::from_secs(START),
            );
            harness
                .store
                .add_approver(
                    &alice,
                    admin_entry(Timestamp::from_secs(START), "test", None, "alice".into()),
                )
                .unwrap();
        }
        let (sink, writer) = AuditWriter::start(harness.store.clone(), 64).unwrap();
        let settings = Settings {
            risk: Arc::new(Scorer::new(RiskConfig::default())),
            step_up: StepUpConfig::default(),
            zones: Zones::new(vec![Zone {
                name: "orders".into(),
                prefix: "/orders".into(),
                approval_for: vec![Action::Delete],
                ..Zone::default()
            }]),
        };
        let policy = match policy {
            Some(text) => Policy::new(text, "test policy").unwrap(),
            None => Policy::default_policy().unwrap(),
        };
        let clock: Arc<dyn Clock> = Arc::new(harness.clock.clone());
        let desk = Arc::new(ApprovalDesk::new(
            harness.store.clone(),
            clock.clone(),
            ApprovalConfig::default(),
        ));
        let engine = Engine::new(settings, policy, clock, harness.store.clone(), sink)
            .unwrap()
            .with_approvals(desk.clone());
        harness.engine = engine;
        harness.writer = Some(writer);
        Desk { harness, desk }
    }

    impl Desk {
        fn decide_with(&self, method: &str, path: &str, approval: Option<(&str, &str)>) -> Verdict {
            let authorization = format!("Bearer {}", self.harness.token);
            let input = RequestInput {
                authorization: Some(&authorization),
                session_token: None,
                sql: None,
                answer: None,
                dpop: None,
                facts: self.harness.facts("127.0.0.2", method, path),
                audit_target: path.into(),
                grant_token: None,
                client_certificate: None,
                client_certificates_checked: false,
                approval: approval.map(|(id, operation)| ApprovalAnswer { id, operation }),
                dpop_checked: false,
            };
            self.harness.engine.decide(input)
        }

        fn alice_code(&self) -> String {
            code_at(
                &TotpSecret::from_bytes(ALICE_SECRET.to_vec()),
                &TotpParams::default(),
                self.harness.clock.now().as_secs() as u64,
            )
        }

        fn request(&self, method: &str, path: &str) -> ApprovalRecord {
            let pending = match self.decide_with(method, path, None) {
                Verdict::ApprovalRequired(pending) => pending,
                other => panic!("expected an approval request, got {other:?}"),
            };
            let operation = Operation {
                digest: operation_digest(method, "api.example", path, None),
                host: "api.example".into(),
                target: path.into(),
                body_sha256: None,
                body_bytes: 0,
                body_preview: None,
            };
            self.desk.request(*pending, &operation).unwrap().unwrap()
        }
    }

    use stepgate_store::ApprovalRecord;

    #[test]
    fn zone_asks_for_approval() {
        let desk = desk(None, true);
        assert!(matches!(
            desk.decide_with("GET", "/orders/1", None),
            Verdict::Allow(_)
        ));
        let approval = desk.request("DELETE", "/orders/1");
        assert_eq!(approval.state, ApprovalState::Pending);
        assert_eq!(approval.group, "approvers");
        assert_eq!(approval.quorum, 1);
        assert_eq!(approval.method, "DELETE");
        // The same operation again reuses the pending request.
        assert_eq!(desk.request("DELETE", "/orders/1").id, approval.id);
        assert_ne!(desk.request("DELETE", "/orders/2").id, approval.id);
    }

    #[test]
    fn approval_lets_exact_operation_through_once() {
        let desk = desk(None, true);
        let approval = desk.request("DELETE", "/orders/1");
        let digest = operation_digest("DELETE", "api.example", "/orders/1", None);
        let early = desk.decide_with("DELETE", "/orders/1", Some((&approval.id, &digest)));
        assert!(
            matches!(
                &early,
                Verdict::ApprovalRejected {
                    rejection: ApprovalRejection::Pending { .. },
                    ..
                }
            ),
            "{early:?}"
        );
        let alice = IdentityName::new("alice").unwrap();
        let decided = desk
            .desk
            .decide(
                &approval.id,
                &alice,
                true,
                "ok",
                Some(&desk.alice_code()),
                true,
                "test",
            )
            .unwrap();
        assert_eq!(decided.state, ApprovalState::Approved);

        let other = operation_digest("DELETE", "api.example", "/orders/2", None);
        let wrong = desk.decide_with("DELETE", "/orders/2", Some((&approval.id, &other)));
        assert!(
            matches!(
                &wrong,
                Verdict::ApprovalRejected {
                    rejection: ApprovalRejection::OtherOperation(_),
                    ..
                }
            ),
            "{wrong:?}"
        );
        let allowed = desk.decide_with("DELETE", "/orders/1", Some((&approval.id, &digest)));
        assert!(matches!(allowed, Verdict::Allow(_)), "{allowed:?}");
        let replayed = desk.decide_with("DELETE", "/orders/1", Some((&approval.id, &digest)));
        assert!(
            matches!(
                &replayed,
                Verdict::ApprovalRejected {
                    rejection: ApprovalRejection::Used(_),
                    ..
                }
            ),
            "{replayed:?}"
        );
    }

    #[test]
    fn no_approver_means_deny() {
        let desk = desk(None, false);
        let verdict = desk.decide_with("DELETE", "/orders/1", None);
        assert!(matches!(verdict, Verdict::Deny { .. }), "{verdict:?}");
    }

    #[test]
    fn approval_expires_undecided() {
        let desk = desk(None, true);
        let approval = desk.request("DELETE", "/orders/1");
        desk.harness.clock.advance(ApprovalConfig::default().ttl());
        assert_eq!(desk.desk.expire_due().unwrap(), 1);
        let digest = operation_digest("DELETE", "api.example", "/orders/1", None);
        let late = desk.decide_with("DELETE", "/orders/1", Some((&approval.id, &digest)));
        assert!(
            matches!(
                &late,
                Verdict::ApprovalRejected {
                    rejection: ApprovalRejection::Expired(_),
                    ..
                }
            ),
            "{late:?}"
        );
        let alice = IdentityName::new("alice").unwrap();
        let vote = desk.desk.decide(
            &approval.id,
            &alice,
            true,
            "",
            Some(&desk.alice_code()),
            true,
            "test",
        );
        assert!(matches!(vote, Err(DeskError::Vote(_))), "{vote:?}");
    }

    #[test]
    fn policy_names_group_and_quorum() {
        let policy = r#"
@id("reads") permit (principal, action == Stepgate::Action::"read", resource);
@id("deletes-need-two")
@approval_group("dba")
@approval_quorum("2")
permit (principal, action == Stepgate::Action::"delete", resource)
when { context.proved has approval };
"#;
        let desk = desk(Some(policy), true);
        let verdict = desk.decide_with("DELETE", "/accounts/1", None);
        let Verdict::ApprovalRequired(pending) = verdict else {
            panic!("expected an approval request, got {verdict:?}");
        };
        assert_eq!(pending.group, "dba");
        assert_eq!(pending.quorum, 2);
    }

    #[test]
    fn factor_comes_before_approval() {
        let policy = r#"
@id("reads") permit (principal, action == Stepgate::Action::"read", resource);
@id("deletes-need-both")
permit (principal, action == Stepgate::Action::"delete", resource)
when { context.proved has totp && context.proved has approval };
"#;
        let desk = desk(Some(policy), true);
        let verdict = desk.decide_with("DELETE", "/accounts/1", None);
        let Verdict::Challenge(issued, receipt) = verdict else {
            panic!("expected a challenge, got {verdict:?}");
        };
        receipt.wait_blocking().unwrap();
        assert_eq!(issued.factors, [FactorKind::Totp]);
        assert!(issued.then_approval);
    }

    #[test]
    fn bad_quorum_annotation_rejected() {
        let policy = r#"
@id("x") @approval_quorum("zero")
permit (principal, action, resource) when { context.proved has approval };
"#;
        let err = Policy::new(policy, "test policy").unwrap_err().to_string();
        assert!(err.contains("@approval_quorum(\"zero\")"), "{err}");
    }
}
