use std::net::IpAddr;
use std::sync::Arc;

use stepgate_core::{Action, Coordinates, Location, Network, RequestFacts, SignalKind, Timestamp};

use super::*;

/// Monday 2024-01-01 10:00:00 UTC.
const MONDAY_10: i64 = 1_704_103_200;
const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

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
        user_agent: Some("orders-bot/1.2".to_owned()),
        credential: Some("tok_home".to_owned()),
        location: None,
    }
}

fn located(mut facts: RequestFacts, latitude: f64, longitude: f64, country: &str) -> RequestFacts {
    facts.location = Some(Arc::new(Location {
        asn: None,
        as_org: None,
        country: Some(country.to_owned()),
        city: None,
        coordinates: Some(Coordinates {
            latitude,
            longitude,
            accuracy_km: 20,
        }),
        anonymizer: None,
    }));
    facts
}

struct Fixture {
    scorer: Scorer,
    baseline: Baseline,
    failures: Failures,
    accepted: Accepted,
}

impl Fixture {
    fn new(config: RiskConfig) -> Self {
        Self {
            scorer: Scorer::new(config),
            baseline: Baseline::default(),
            failures: Failures::default(),
            accepted: Accepted::default(),
        }
    }

    /// A fixture whose identity made `learning_requests` requests from
    /// 127.0.0.2 on Monday at 10:00.
    fn learned(config: RiskConfig) -> Self {
        let mut fixture = Self::new(config);
        for i in 0..fixture.scorer.config().learning_requests {
            fixture.allow(&facts(
                "127.0.0.2",
                "GET",
                "/orders/{n}",
                MONDAY_10 + i as i64,
            ));
        }
        fixture
    }

    fn assess(&self, request: &RequestFacts) -> Assessment {
        self.scorer
            .assess(&self.baseline, &self.failures, &self.accepted, request)
    }

    fn kinds(&self, request: &RequestFacts) -> Vec<SignalKind> {
        kinds(&self.assess(request))
    }

    /// Decides like the engine does for an allowed request: assess, observe,
    /// learn.
    fn allow(&mut self, request: &RequestFacts) -> Assessment {
        let assessment = self.assess(request);
        self.scorer.observe(&mut self.baseline, request);
        self.scorer.learn(&mut self.baseline, request);
        assessment
    }
}

fn kinds(assessment: &Assessment) -> Vec<SignalKind> {
    assessment
        .signals
        .iter()
        .map(|signal| signal.kind)
        .collect()
}

fn signal(assessment: &Assessment, kind: SignalKind) -> &Signal {
    assessment
        .signals
        .iter()
        .find(|signal| signal.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", assessment.signals))
}

#[test]
fn learning_period_suppresses_novelty_signals() {
    let fixture = Fixture::new(RiskConfig::default());
    let request = facts("127.0.9.9", "GET", "/orders/{n}", 100);
    let assessment = fixture.assess(&request);
    assert!(assessment.signals.is_empty());
    assert_eq!(assessment.score.value(), 0);
}

#[test]
fn known_request_raises_nothing() {
    let fixture = Fixture::learned(RiskConfig::default());
    let request = facts("127.0.0.77", "GET", "/orders/{n}", MONDAY_10 + 50);
    assert_eq!(fixture.kinds(&request), vec![]);
}

#[test]
fn new_network_signalled_with_reason_and_evidence() {
    let fixture = Fixture::learned(RiskConfig::default());
    let request = facts("127.0.9.9", "GET", "/orders/{n}", MONDAY_10 + 60);
    let assessment = fixture.assess(&request);
    assert_eq!(kinds(&assessment), vec![SignalKind::NewNetwork]);
    assert_eq!(assessment.score.value(), 40);
    let new_network = signal(&assessment, SignalKind::NewNetwork);
    assert_eq!(
        new_network.reason,
        "first request from network 127.0.9.0/24; networks seen: 1"
    );
    assert_eq!(new_network.evidence["value"], "127.0.9.0/24");
    assert_eq!(new_network.evidence["networks_seen"], 1);
}

#[test]
fn new_asn_and_country_name_the_place() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let mut home = located(
        facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60),
        59.33,
        18.06,
        "SE",
    );
    Arc::make_mut(home.location.as_mut().unwrap()).asn = Some(64500);
    fixture.allow(&home);
    let mut away = located(
        facts("127.0.0.9", "GET", "/orders/{n}", MONDAY_10 + 3 * DAY),
        48.85,
        2.35,
        "FR",
    );
    let location = Arc::make_mut(away.location.as_mut().unwrap());
    location.asn = Some(64501);
    location.as_org = Some("Example Net".to_owned());
    let assessment = fixture.assess(&away);
    assert_eq!(
        kinds(&assessment),
        vec![SignalKind::NewAsn, SignalKind::NewCountry]
    );
    assert_eq!(
        signal(&assessment, SignalKind::NewAsn).reason,
        "first request from AS64501 (Example Net); autonomous systems seen: 1"
    );
    assert_eq!(
        signal(&assessment, SignalKind::NewCountry).reason,
        "first request from FR; countries seen: SE"
    );
}

#[test]
fn operation_frequency_profile() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let mut at = MONDAY_10 + 100;
    for i in 0..400 {
        fixture.allow(&facts("127.0.0.2", "GET", "/orders/{n}", at));
        if i % 100 == 0 {
            fixture.allow(&facts("127.0.0.2", "POST", "/orders", at));
        }
        at += 1;
    }
    let rare = fixture.assess(&facts("127.0.0.2", "POST", "/orders", at));
    assert_eq!(kinds(&rare), vec![SignalKind::RareOperation]);
    assert!(rare.signals[0].reason.contains("is rare for this identity"));
    let unseen = fixture.assess(&facts("127.0.0.2", "DELETE", "/orders/{n}", at));
    assert_eq!(kinds(&unseen), vec![SignalKind::NewOperation]);
    assert_eq!(
        unseen.signals[0].reason,
        "first use of operation DELETE /orders/{n}; operations seen: 2"
    );
    assert_eq!(
        fixture.kinds(&facts("127.0.0.2", "GET", "/orders/{n}", at)),
        vec![]
    );
}

#[test]
fn new_resource_under_a_known_operation() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let mut request = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60);
    request.resource = "bucket/other".to_owned();
    assert_eq!(fixture.kinds(&request), vec![SignalKind::NewResource]);
    fixture.allow(&request);
    assert_eq!(fixture.kinds(&request), vec![]);
}

#[test]
fn observations_fade_with_the_half_life() {
    let config = RiskConfig {
        half_life_days: 10,
        dormant_after_days: 0,
        ..RiskConfig::default()
    };
    let mut fixture = Fixture::learned(config);
    // Seen once, a network is forgotten after a little over four half-lives.
    let elsewhere = facts("127.0.5.5", "GET", "/orders/{n}", MONDAY_10 + 100);
    fixture.allow(&elsewhere);
    let soon = facts("127.0.5.5", "GET", "/orders/{n}", MONDAY_10 + 40 * DAY);
    assert!(!fixture.kinds(&soon).contains(&SignalKind::NewNetwork));
    let late = facts("127.0.5.5", "GET", "/orders/{n}", MONDAY_10 + 45 * DAY);
    assert!(fixture.kinds(&late).contains(&SignalKind::NewNetwork));
}

#[test]
fn sensitive_operations_from_the_catalogue() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let create_token = facts("127.0.0.2", "POST", "/v1/tokens", MONDAY_10 + 60);
    let assessment = fixture.assess(&create_token);
    assert_eq!(
        kinds(&assessment),
        vec![SignalKind::CredentialCreation, SignalKind::NewOperation]
    );
    assert_eq!(
        signal(&assessment, SignalKind::CredentialCreation).reason,
        "POST /v1/tokens creates credentials and is unseen for this identity"
    );
    // Applies while learning too.
    let fresh = Fixture::new(RiskConfig::default());
    let mut stop = facts("127.0.0.2", "POST", "/x", 100);
    stop.operation = "cloudtrail:StopLogging".to_owned();
    assert_eq!(fresh.kinds(&stop), vec![SignalKind::LoggingChange]);
    // An identity whose job it is does it often, and then it is not raised.
    for i in 0..50 {
        fixture.allow(&facts(
            "127.0.0.2",
            "POST",
            "/v1/tokens",
            MONDAY_10 + 100 + i,
        ));
    }
    let routine = facts("127.0.0.2", "POST", "/v1/tokens", MONDAY_10 + 200);
    assert_eq!(fixture.kinds(&routine), vec![]);
}

#[test]
fn configured_sensitive_operations_and_defaults_off() {
    let config = RiskConfig {
        sensitive_defaults: false,
        sensitive: vec![SensitiveOperations {
            category: Category::SecretRead,
            operations: vec!["GET /vault-export*".to_owned()],
        }],
        ..RiskConfig::default()
    };
    let fixture = Fixture::new(config);
    assert_eq!(
        fixture.kinds(&facts("127.0.0.2", "GET", "/vault-export/{n}", 100)),
        vec![SignalKind::SecretRead]
    );
    assert_eq!(
        fixture.kinds(&facts("127.0.0.2", "POST", "/v1/tokens", 100)),
        vec![]
    );
}

#[test]
fn impossible_travel_between_distant_fixes() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let stockholm = located(
        facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60),
        59.33,
        18.06,
        "SE",
    );
    fixture.allow(&stockholm);
    // Stockholm to Seattle (about 7,500 km) in ten minutes.
    let seattle = located(
        facts("127.0.7.7", "GET", "/orders/{n}", MONDAY_10 + 660),
        47.61,
        -122.33,
        "US",
    );
    let assessment = fixture.assess(&seattle);
    let travel = signal(&assessment, SignalKind::ImpossibleTravel);
    assert!(
        travel
            .reason
            .contains("km from the last request (127.0.0.0/24"),
        "{}",
        travel.reason
    );
    assert!(travel.reason.contains("10 min ago"), "{}", travel.reason);
    let speed = travel.evidence["speed_kmh"].as_f64().unwrap();
    assert!(speed > 40_000.0, "{speed}");
    // Twelve hours later the same trip is a flight.
    let flown = located(
        facts(
            "127.0.7.7",
            "GET",
            "/orders/{n}",
            MONDAY_10 + 60 + 12 * HOUR,
        ),
        47.61,
        -122.33,
        "US",
    );
    assert!(
        !fixture
            .kinds(&flown)
            .contains(&SignalKind::ImpossibleTravel)
    );
    // Nearby moves within the accuracy radii and the minimum distance are not travel.
    let uppsala = located(
        facts("127.0.8.8", "GET", "/orders/{n}", MONDAY_10 + 120),
        59.86,
        17.64,
        "SE",
    );
    assert!(
        !fixture
            .kinds(&uppsala)
            .contains(&SignalKind::ImpossibleTravel)
    );
}

#[test]
fn travel_boundary_is_the_configured_speed() {
    let config = RiskConfig {
        travel_max_kmh: 1000,
        travel_min_km: 0,
        ..RiskConfig::default()
    };
    let mut fixture = Fixture::learned(config);
    let start = located(facts("127.0.0.2", "GET", "/a", MONDAY_10), 0.0, 0.0, "XA");
    fixture.allow(&start);
    // About 1000 km east along the equator, minus 40 km of accuracy margin.
    let degrees = 1000.0 / (std::f64::consts::PI * 6371.0088 / 180.0);
    let far = |secs| {
        located(
            facts("127.0.1.2", "GET", "/a", MONDAY_10 + secs),
            0.0,
            degrees,
            "XB",
        )
    };
    // 960 km beyond the margins: in 3456 s the speed is exactly 1000 km/h.
    assert!(
        !fixture
            .kinds(&far(3456))
            .contains(&SignalKind::ImpossibleTravel)
    );
    assert!(
        fixture
            .kinds(&far(3455))
            .contains(&SignalKind::ImpossibleTravel)
    );
}

#[test]
fn concurrent_use_of_one_credential_from_distant_networks() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    fixture.allow(&facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60));
    // Another /16 two minutes later, no locations known.
    let other = facts("127.9.0.2", "GET", "/orders/{n}", MONDAY_10 + 180);
    let assessment = fixture.assess(&other);
    let concurrent = signal(&assessment, SignalKind::ConcurrentSessions);
    assert_eq!(
        concurrent.reason,
        "credential tok_home used from 127.0.0.0/24 2 min ago and now from 127.9.0.0/24"
    );
    // A different credential of the same identity is not concurrent use.
    let mut second_token = other.clone();
    second_token.credential = Some("tok_other".to_owned());
    assert!(
        !fixture
            .kinds(&second_token)
            .contains(&SignalKind::ConcurrentSessions)
    );
    // The same /16 is a neighbouring network, not a distant one.
    let neighbour = facts("127.0.44.2", "GET", "/orders/{n}", MONDAY_10 + 180);
    assert!(
        !fixture
            .kinds(&neighbour)
            .contains(&SignalKind::ConcurrentSessions)
    );
    // After the window the earlier use is over.
    let later = facts("127.9.0.2", "GET", "/orders/{n}", MONDAY_10 + 60 + 300);
    assert!(
        !fixture
            .kinds(&later)
            .contains(&SignalKind::ConcurrentSessions)
    );
    let just_inside = facts("127.9.0.2", "GET", "/orders/{n}", MONDAY_10 + 60 + 299);
    assert!(
        fixture
            .kinds(&just_inside)
            .contains(&SignalKind::ConcurrentSessions)
    );
}

#[test]
fn anonymizer_network_unless_the_identity_lives_there() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let mut tor = facts("127.0.66.1", "GET", "/orders/{n}", MONDAY_10 + 60);
    tor.location = Some(Arc::new(Location {
        anonymizer: Some("tor exit node".to_owned()),
        ..Location::default()
    }));
    let assessment = fixture.assess(&tor);
    assert_eq!(
        signal(&assessment, SignalKind::AnonymizerNetwork).reason,
        "request from tor exit node (127.0.66.0/24)"
    );
    for i in 0..10 {
        let mut again = tor.clone();
        again.time = Timestamp::from_secs(MONDAY_10 + 100 + i);
        fixture.allow(&again);
    }
    assert!(!fixture.kinds(&tor).contains(&SignalKind::AnonymizerNetwork));
}

#[test]
fn request_burst_against_the_usual_rate() {
    let config = RiskConfig::default();
    let mut fixture = Fixture::learned(config);
    // Thirty active minutes of about 5 requests each.
    let mut minute = MONDAY_10 / MINUTE + 1;
    for i in 0..30 {
        for second in 0..(4 + i % 3) {
            fixture.allow(&facts(
                "127.0.0.2",
                "GET",
                "/orders/{n}",
                minute * MINUTE + second,
            ));
        }
        minute += 2;
    }
    let usual = &fixture.baseline.rate.usual;
    assert!(
        usual.samples >= 29 && (usual.mean - 5.0).abs() < 1.0,
        "{usual:?}"
    );
    // Thirty requests in a minute stay below the floor.
    for second in 0..29 {
        fixture.allow(&facts(
            "127.0.0.2",
            "GET",
            "/orders/{n}",
            minute * MINUTE + second,
        ));
    }
    let thirtieth = facts("127.0.0.2", "GET", "/orders/{n}", minute * MINUTE + 40);
    assert_eq!(fixture.kinds(&thirtieth), vec![]);
    fixture.allow(&thirtieth);
    let burst = fixture.assess(&facts(
        "127.0.0.2",
        "GET",
        "/orders/{n}",
        minute * MINUTE + 41,
    ));
    assert_eq!(kinds(&burst), vec![SignalKind::RequestBurst]);
    assert!(
        burst.signals[0]
            .reason
            .starts_with("31 requests in this minute; usual 5.0"),
        "{}",
        burst.signals[0].reason
    );
}

#[test]
fn slow_drift_of_the_rate_is_learned() {
    let config = RiskConfig {
        rate_floor_per_minute: 0,
        ..RiskConfig::default()
    };
    let mut fixture = Fixture::learned(config);
    let mut minute = MONDAY_10 / MINUTE + 1;
    let mut raised = 0;
    // The rate grows from 10 to 40 per minute over 600 minutes.
    for step in 0..600 {
        let count = 10 + step / 20;
        for second in 0..count {
            let request = facts(
                "127.0.0.2",
                "GET",
                "/orders/{n}",
                minute * MINUTE + second % 60,
            );
            if fixture.allow(&request).has(SignalKind::RequestBurst) {
                raised += 1;
            }
        }
        minute += 1;
    }
    assert_eq!(raised, 0);
    // Four times the drifted rate is still a burst.
    let mut burst = false;
    for second in 0..160 {
        let request = facts(
            "127.0.0.2",
            "GET",
            "/orders/{n}",
            minute * MINUTE + second % 60,
        );
        burst |= fixture.allow(&request).has(SignalKind::RequestBurst);
    }
    assert!(burst);
}

#[test]
fn data_volume_over_the_window() {
    let config = RiskConfig {
        volume_floor_bytes: 1_000_000,
        ..RiskConfig::default()
    };
    let mut fixture = Fixture::learned(config);
    let start = MONDAY_10 + HOUR;
    // Twenty windows of about 100 kB.
    for i in 0..20 {
        let at = Timestamp::from_secs(start + i * 11 * MINUTE);
        fixture.scorer.record_volume(
            &mut fixture.baseline,
            at,
            90_000 + (i as u64 % 3) * 10_000,
            0,
        );
    }
    let now = start + 20 * 11 * MINUTE;
    let request = facts("127.0.0.2", "GET", "/orders/{n}", now);
    assert_eq!(fixture.kinds(&request), vec![]);
    fixture.scorer.record_volume(
        &mut fixture.baseline,
        Timestamp::from_secs(now),
        5_000_000,
        0,
    );
    let assessment = fixture.assess(&facts("127.0.0.2", "GET", "/orders/{n}", now + 30));
    let volume = signal(&assessment, SignalKind::DataVolume);
    assert!(
        volume
            .reason
            .starts_with("5000000 bytes read in the last 10 min; usual"),
        "{}",
        volume.reason
    );
    // Ten minutes later the window has slid past the excess.
    let later = facts("127.0.0.2", "GET", "/orders/{n}", now + 10 * MINUTE);
    assert!(!fixture.kinds(&later).contains(&SignalKind::DataVolume));
    // The excess was not learned as usual.
    assert!(fixture.baseline.bytes.usual.mean < 200_000.0);
}

#[test]
fn data_volume_needs_evidence_unless_configured_off() {
    let mut fixture = Fixture::learned(RiskConfig {
        volume_floor_bytes: 1000,
        ..RiskConfig::default()
    });
    fixture.scorer.record_volume(
        &mut fixture.baseline,
        Timestamp::from_secs(MONDAY_10),
        50_000,
        0,
    );
    let request = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 1);
    assert_eq!(fixture.kinds(&request), vec![]);
    let mut eager = Fixture::learned(RiskConfig {
        volume_floor_bytes: 1000,
        volume_min_windows: 0,
        ..RiskConfig::default()
    });
    eager.scorer.record_volume(
        &mut eager.baseline,
        Timestamp::from_secs(MONDAY_10),
        50_000,
        0,
    );
    assert_eq!(eager.kinds(&request), vec![SignalKind::DataVolume]);
}

#[test]
fn rows_count_like_bytes() {
    let mut fixture = Fixture::learned(RiskConfig {
        volume_min_windows: 0,
        volume_floor_rows: 100,
        ..RiskConfig::default()
    });
    fixture.scorer.record_volume(
        &mut fixture.baseline,
        Timestamp::from_secs(MONDAY_10),
        10,
        500,
    );
    let assessment = fixture.assess(&facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 1));
    assert_eq!(
        signal(&assessment, SignalKind::DataVolume).evidence["unit"],
        "rows"
    );
}

#[test]
fn client_family_and_version_changes() {
    let fixture = Fixture::learned(RiskConfig::default());
    let mut other = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60);
    other.user_agent = Some("python-requests/2.31.0".to_owned());
    let assessment = fixture.assess(&other);
    assert_eq!(kinds(&assessment), vec![SignalKind::NewClient]);
    assert_eq!(
        assessment.signals[0].reason,
        "client software python-requests/2.31.0 not seen for this identity; seen: orders-bot"
    );
    other.user_agent = Some("orders-bot/1.3".to_owned());
    assert_eq!(
        signal(&fixture.assess(&other), SignalKind::ClientVersion).reason,
        "client version orders-bot/1.3 not seen for this identity; seen: orders-bot/1.2"
    );
    other.user_agent = None;
    assert_eq!(fixture.kinds(&other), vec![SignalKind::NewClient]);
}

#[test]
fn unusual_hour_of_the_week_needs_evidence() {
    let config = RiskConfig {
        unusual_hour_min_requests: 50,
        ..RiskConfig::default()
    };
    let mut fixture = Fixture::learned(config);
    // Weekdays 09:00 to 17:59 for two weeks, a few requests an hour.
    for week in 0..2 {
        for day in 0..5 {
            for hour in 9..18 {
                let at = MONDAY_10 - HOUR + week * 7 * DAY + day * DAY + (hour - 9) * HOUR;
                fixture.allow(&facts("127.0.0.2", "GET", "/orders/{n}", at));
            }
        }
    }
    let next_monday = MONDAY_10 + 14 * DAY;
    let usual = facts("127.0.0.2", "GET", "/orders/{n}", next_monday + 2 * HOUR);
    assert_eq!(fixture.kinds(&usual), vec![]);
    // Saturday 03:00.
    let night = facts(
        "127.0.0.2",
        "GET",
        "/orders/{n}",
        next_monday + 5 * DAY - 7 * HOUR,
    );
    let assessment = fixture.assess(&night);
    assert_eq!(kinds(&assessment), vec![SignalKind::UnusualHour]);
    assert!(
        assessment.signals[0]
            .reason
            .starts_with("no activity on Sat 03:00-03:59 UTC"),
        "{}",
        assessment.signals[0].reason
    );
    // The hour next to a usual one is not unusual.
    let early = facts("127.0.0.2", "GET", "/orders/{n}", next_monday - 2 * HOUR);
    assert_eq!(fixture.kinds(&early), vec![]);
}

#[test]
fn dormant_identity_after_long_inactivity() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    fixture.allow(&facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60));
    let within = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60 + 29 * DAY);
    assert!(!fixture.kinds(&within).contains(&SignalKind::Dormant));
    let after = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60 + 30 * DAY);
    let assessment = fixture.assess(&after);
    assert!(
        signal(&assessment, SignalKind::Dormant)
            .reason
            .starts_with("first request after 30 days without activity")
    );
}

#[test]
fn read_only_zone_write_applies_while_learning() {
    let fixture = Fixture::new(RiskConfig::default());
    let mut request = facts("127.0.0.2", "POST", "/reports/daily", 100);
    request.zone = Some("reports".into());
    request.zone_read_only = true;
    assert_eq!(fixture.kinds(&request), vec![SignalKind::ReadOnlyZoneWrite]);
    request.method = "GET".into();
    request.action = Action::Read;
    request.operation = "GET /reports/daily".into();
    assert!(fixture.assess(&request).signals.is_empty());
}

#[test]
fn sensitive_zone_always_signalled() {
    let fixture = Fixture::learned(RiskConfig::default());
    let mut request = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60);
    request.zone = Some("orders".into());
    request.zone_sensitive = true;
    assert_eq!(fixture.kinds(&request), vec![SignalKind::SensitiveZone]);
}

#[test]
fn failure_burst_needs_threshold_within_window() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let home = Network::of("127.0.0.2".parse().unwrap());
    let threshold = fixture.scorer.config().failure_burst_threshold;
    for i in 0..threshold - 2 {
        fixture.failures.record(
            FailureKind::Authentication,
            Timestamp::from_secs(MONDAY_10 + 100 + i64::from(i)),
            home,
        );
    }
    fixture.failures.record(
        FailureKind::Authorization,
        Timestamp::from_secs(MONDAY_10 + 104),
        home,
    );
    let request = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 110);
    assert!(fixture.assess(&request).signals.is_empty());
    let elsewhere = Network::of("127.0.9.9".parse().unwrap());
    fixture.failures.record(
        FailureKind::StepUp,
        Timestamp::from_secs(MONDAY_10 + 105),
        elsewhere,
    );
    let burst = fixture.assess(&request);
    assert_eq!(kinds(&burst), vec![SignalKind::FailureBurst]);
    assert_eq!(
        burst.signals[0].reason,
        "5 failures in the last 300 s: 3 authentication, 1 step-up, 1 authorization"
    );
    let later = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 100 + 310);
    assert!(fixture.assess(&later).signals.is_empty());
}

#[test]
fn forged_auth_failures_stay_on_their_network() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let elsewhere = Network::of("127.0.77.1".parse().unwrap());
    for i in 0..20 {
        fixture.failures.record(
            FailureKind::Authentication,
            Timestamp::from_secs(MONDAY_10 + 100 + i),
            elsewhere,
        );
    }
    let home = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 130);
    assert!(fixture.assess(&home).signals.is_empty());
    let there = facts("127.0.77.1", "GET", "/orders/{n}", MONDAY_10 + 130);
    assert!(fixture.kinds(&there).contains(&SignalKind::FailureBurst));
}

#[test]
fn totp_failure_and_lock_raise_risk() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let home = Network::of("127.0.0.2".parse().unwrap());
    fixture.failures.record(
        FailureKind::Totp,
        Timestamp::from_secs(MONDAY_10 + 100),
        home,
    );
    let request = facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 101);
    assert_eq!(fixture.kinds(&request), vec![SignalKind::TotpFailure]);
    fixture.failures = Failures::default();
    fixture
        .failures
        .lock_totp(Timestamp::from_secs(MONDAY_10 + 5000));
    assert!(
        fixture.assess(&request).signals[0]
            .reason
            .contains("locked")
    );
}

#[test]
fn accepted_signals_are_left_out() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let request = facts("127.0.9.9", "DELETE", "/orders/{n}", MONDAY_10 + 60);
    assert_eq!(
        fixture.kinds(&request),
        vec![SignalKind::NewNetwork, SignalKind::NewOperation]
    );
    fixture
        .accepted
        .insert(SignalKind::NewNetwork, "127.0.9.0/24");
    assert_eq!(fixture.kinds(&request), vec![SignalKind::NewOperation]);
    fixture.accepted.insert(SignalKind::NewOperation, ANY_VALUE);
    assert_eq!(fixture.kinds(&request), vec![]);
    // Another network is still new.
    let other = facts("127.0.10.9", "DELETE", "/orders/{n}", MONDAY_10 + 60);
    assert_eq!(fixture.kinds(&other), vec![SignalKind::NewNetwork]);
}

#[test]
fn zero_weight_turns_signal_off() {
    let mut config = RiskConfig::default();
    config.weights.new_network = 0;
    let fixture = Fixture::learned(config);
    let request = facts("127.0.9.9", "GET", "/orders/{n}", MONDAY_10 + 60);
    assert!(fixture.assess(&request).signals.is_empty());
}

#[test]
fn score_grows_with_every_signal() {
    let fixture = Fixture::learned(RiskConfig::default());
    let mut request = facts("127.0.9.9", "DELETE", "/orders/{n}", MONDAY_10 + 60);
    request.user_agent = Some("curl/8.5.0".to_owned());
    let assessment = fixture.assess(&request);
    assert_eq!(
        kinds(&assessment),
        vec![
            SignalKind::NewNetwork,
            SignalKind::NewOperation,
            SignalKind::NewClient
        ]
    );
    // 1 - 0.6 * 0.75 * 0.8 = 0.64
    assert_eq!(assessment.score.value(), 64);
}

#[test]
fn baseline_round_trips_through_json() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let request = located(
        facts("127.0.0.2", "GET", "/orders/{n}", MONDAY_10 + 60),
        59.33,
        18.06,
        "SE",
    );
    fixture.allow(&request);
    fixture.scorer.record_volume(
        &mut fixture.baseline,
        Timestamp::from_secs(MONDAY_10 + 61),
        1234,
        5,
    );
    let json = serde_json::to_string(&fixture.baseline).unwrap();
    let back: Baseline = serde_json::from_str(&json).unwrap();
    assert_eq!(back, fixture.baseline);
    assert!(back.is_current());
}

#[test]
fn baseline_of_an_older_layout_is_not_current() {
    let old = r#"{"requests":40,"networks":{"10.0.0.0/24":{"count":40,"last":1}},"hours":[0,0,0,0,0,0,0,0,0,0,40,0,0,0,0,0,0,0,0,0,0,0,0,0]}"#;
    let baseline: Baseline = serde_json::from_str(old).unwrap();
    assert!(!baseline.is_current());
}

#[test]
fn baseline_memory_is_bounded() {
    let mut fixture = Fixture::new(RiskConfig::default());
    for i in 0..3000 {
        let addr = format!("10.{}.{}.1", i / 256, i % 256);
        let mut request = facts(&addr, "GET", &format!("/p{i}"), MONDAY_10 + i as i64);
        request.user_agent = Some(format!("tool{i}/1.0"));
        request.credential = Some(format!("tok_{i}"));
        fixture.allow(&request);
    }
    let baseline = &fixture.baseline;
    assert_eq!(baseline.networks.len(), 256);
    assert_eq!(baseline.operations.len(), 1024);
    assert_eq!(baseline.resources.len(), 1024);
    assert_eq!(baseline.clients.len(), 32);
    assert_eq!(baseline.sources.len(), 16);
    let json = serde_json::to_string(baseline).unwrap();
    assert!(json.len() < 200_000, "{}", json.len());
}

#[test]
fn requests_from_no_network_raise_no_network_signals() {
    let mut fixture = Fixture::learned(RiskConfig::default());
    let service = facts("0.0.0.0", "GET", "/orders/{n}", MONDAY_10 + 60);
    assert_eq!(fixture.kinds(&service), vec![]);
    fixture.allow(&service);
    assert!(
        !fixture
            .baseline
            .networks()
            .any(|network| network.to_string() == "0.0.0.0/24")
    );
    assert!(
        fixture
            .baseline
            .sources
            .iter()
            .all(|source| source.network.to_string() != "0.0.0.0/24")
    );
}
