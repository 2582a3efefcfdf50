//! The in-process allow path: token lookup, signals, risk score and Cedar
//! evaluation, on warm baselines of 10,000 identities.
//!
//! Run with `cargo bench -p stepgate-engine --bench decide`. Besides
//! criterion's mean, the bench prints the p50, p99 and p99.9 of 200,000
//! single decisions timed one by one. It runs three setups side by side:
//! only the signals of the first risk engine (network, operation, hour,
//! zones, failures) without GeoIP; every signal with the GeoIP test
//! databases; and every signal with Cedar evaluating every request, the
//! cost of a decision-cache miss.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stepgate_config::StepUpConfig;
use stepgate_core::{
    Action, ApiToken, Identity, IdentityName, RequestFacts, SystemClock, Timestamp, Zone, Zones,
};
use stepgate_core::{Locator, SignalKind};
use stepgate_engine::{AuditWriter, Engine, RequestInput, Settings, Verdict, admin_entry};
use stepgate_geo::{Geo, GeoSources};
use stepgate_policy::Policy;
use stepgate_risk::{RiskConfig, Scorer, Weights};
use stepgate_store::{SqliteStore, Store, TokenRecord};

const IDENTITIES: usize = 10_000;

struct Fixture {
    engine: Engine,
    bots: Vec<(String, IpAddr)>,
    _writer: AuditWriter,
    _dir: tempfile::TempDir,
}

/// Signal set of a bench setup.
#[derive(Clone, Copy)]
enum Signals {
    /// The signals of the first risk engine, without GeoIP.
    FirstVersion,
    /// Every signal, with the GeoIP test databases.
    All,
}

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/geoip")
        .join(name)
}

fn geo() -> Geo {
    Geo::open(&GeoSources {
        asn_db: Some(testdata("GeoLite2-ASN-Test.mmdb")),
        city_db: Some(testdata("GeoLite2-City-Test.mmdb")),
        anonymous_db: Some(testdata("GeoIP2-Anonymous-IP-Test.mmdb")),
        hosting_networks: Vec::new(),
    })
    .expect("GeoIP test databases")
}

/// IPv4 addresses the City test database places with coordinates and the
/// Anonymous IP test database does not flag.
fn located_addresses(geo: &Geo) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(testdata("GeoLite2-City-Test.json")).expect("City source");
    let entries: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&text).expect("City source JSON");
    let mut addrs: Vec<IpAddr> = entries
        .iter()
        .flat_map(|entry| entry.keys())
        .filter_map(|cidr| cidr.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
        .map(IpAddr::V4)
        .filter(|addr| {
            geo.lookup(*addr).is_some_and(|location| {
                location.coordinates.is_some() && location.anonymizer.is_none()
            })
        })
        .collect();
    addrs.dedup();
    assert!(addrs.len() >= 5, "too few located addresses: {addrs:?}");
    addrs
}

fn first_version_config() -> RiskConfig {
    let mut weights = Weights::default();
    let first = [
        SignalKind::NewNetwork,
        SignalKind::NewOperation,
        SignalKind::UnusualHour,
        SignalKind::ReadOnlyZoneWrite,
        SignalKind::SensitiveZone,
        SignalKind::FailureBurst,
        SignalKind::TotpFailure,
    ];
    let defaults = Weights::default();
    for kind in SignalKind::ALL {
        if !first.contains(&kind) {
            weights.set(kind, 0);
        } else {
            weights.set(kind, defaults.of(kind));
        }
    }
    RiskConfig {
        weights,
        sensitive_defaults: false,
        ..RiskConfig::default()
    }
}

fn fixture(decision_cache: bool, signals: Signals) -> Fixture {
    let geo = geo();
    let located = located_addresses(&geo);
    // Files in memory, so that setting up 10,000 identities does not wait
    // for the disk; the decision path itself never touches the store.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temporary directory");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let now = Timestamp::from_secs(1_800_000_000);
    let mut bots = Vec::with_capacity(IDENTITIES);
    for i in 0..IDENTITIES {
        let name = IdentityName::new(&format!("bot-{i}")).expect("name");
        let identity = Identity {
            name: name.clone(),
            disabled: false,
            created_at: now,
        };
        store
            .add_identity(&identity, admin_entry(now, "bench", None, "add".into()))
            .expect("add identity");
        let token = ApiToken::generate();
        let record = TokenRecord {
            id: token.id().clone(),
            identity: name,
            hash: token.hash(),
            created_at: now,
            revoked_at: None,
            scram: None,
        };
        store
            .add_token(&record, admin_entry(now, "bench", None, "issue".into()))
            .expect("add token");
        let addr: IpAddr = match signals {
            Signals::FirstVersion => format!("10.{}.{}.7", i / 256 % 256, i % 256)
                .parse()
                .expect("address"),
            Signals::All => located[i % located.len()],
        };
        bots.push((format!("Bearer {}", token.danger_expose()), addr));
    }
    let (sink, writer) = AuditWriter::start(store.clone(), 512).expect("audit writer");
    let risk = match signals {
        Signals::FirstVersion => first_version_config(),
        Signals::All => RiskConfig::default(),
    };
    let settings = Settings {
        risk: Arc::new(Scorer::new(risk)),
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
    let mut policy = Policy::default_policy().expect("policy");
    if !decision_cache {
        policy = policy.without_decision_cache();
    }
    let mut engine =
        Engine::new(settings, policy, Arc::new(SystemClock), store, sink).expect("engine");
    if matches!(signals, Signals::All) {
        let locator: Arc<dyn Locator> = Arc::new(geo);
        engine = engine.with_locator(locator);
    }
    let fixture = Fixture {
        engine,
        bots,
        _writer: writer,
        _dir: dir,
    };
    // Warm every baseline past its learning period.
    for i in 0..IDENTITIES {
        for n in 0..8 {
            let verdict = fixture.decide(i, n);
            finish(&fixture.engine, verdict);
        }
    }
    fixture
}

impl Fixture {
    fn decide(&self, index: usize, n: u64) -> Verdict {
        let (authorization, addr) = &self.bots[index];
        let path = format!("/orders/{}", 1000 + n);
        let input = RequestInput {
            authorization: Some(authorization),
            session_token: None,
            sql: None,
            answer: None,
            dpop: None,
            facts: RequestFacts {
                client_addr: *addr,
                peer_addr: *addr,
                method: "GET".into(),
                path: path.clone(),
                operation: "GET /orders/{n}".into(),
                resource: "/orders/{n}".into(),
                action: Action::Read,
                zone: None,
                zone_read_only: false,
                zone_sensitive: false,
                time: Timestamp::default(),
                user_agent: Some("bench/1.0".into()),
                credential: None,
                location: None,
            },
            audit_target: path,
            grant_token: None,
            client_certificate: None,
            client_certificates_checked: false,
            approval: None,
            dpop_checked: false,
        };
        self.engine.decide(input)
    }
}

fn finish(engine: &Engine, verdict: Verdict) {
    match verdict {
        Verdict::Allow(allowed) => engine.finish(allowed, Some(200), Duration::from_micros(50)),
        other => panic!("expected allow on the warm path, got {other:?}"),
    }
}

fn percentiles(fixture: &Fixture, label: &str) {
    const SAMPLES: usize = 200_000;
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let index = (i * 7919) % IDENTITIES;
        let started = Instant::now();
        let verdict = fixture.decide(index, i as u64);
        finish(&fixture.engine, black_box(verdict));
        times.push(started.elapsed());
        if i % 10_000 == 0 {
            // Let the audit writer keep up, as it does between real requests.
            while fixture.engine.audit().queued() > 20_000 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{label}: decide+finish over {IDENTITIES} identities, {SAMPLES} samples: p50 {:?}  p99 {:?}  p99.9 {:?}",
        at(0.50),
        at(0.99),
        at(0.999)
    );
}

fn bench(c: &mut Criterion) {
    for (decision_cache, signals, label) in [
        (true, Signals::FirstVersion, "first-version signals"),
        (true, Signals::All, "all signals and GeoIP"),
        (
            false,
            Signals::All,
            "all signals and GeoIP, Cedar on every request",
        ),
    ] {
        let fixture = fixture(decision_cache, signals);
        percentiles(&fixture, label);
        let mut i = 0usize;
        c.bench_function(&format!("allow path, 10k identities, {label}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Waits for the audit writer are not timed: a tight loop
                    // outruns SQLite, and the engine would start shedding.
                    while fixture.engine.audit().queued() > 20_000 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    i = (i + 7919) % IDENTITIES;
                    let started = Instant::now();
                    let verdict = fixture.decide(i, i as u64);
                    finish(&fixture.engine, black_box(verdict));
                    total += started.elapsed();
                }
                total
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
