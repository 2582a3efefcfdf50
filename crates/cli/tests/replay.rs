//! `stepgate replay` driven as a user runs it, over real and generated
//! CloudTrail records and stepgate's own audit export.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use stepgate_risk::Catalogue;
use support::BIN;

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(path)
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("replay")
        .args(args)
        .env_remove("STEPGATE_CONFIG")
        .output()
        .expect("stepgate runs")
}

fn decisions(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn signal_names(decision: &Value) -> Vec<String> {
    decision["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|signal| signal["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn stratus_samples_caught_malformed_reported() {
    let output = replay(&[
        "--format",
        "cloudtrail",
        testdata("cloudtrail/stratus").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // One file is malformed as shipped. It is reported with its name and
    // position, the others are replayed, and the exit status is 1.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("aws.execution.ec2-user-data.json: not a valid CloudTrail file")
            && stderr.contains("line 112 column 1"),
        "{stderr}"
    );
    let decisions = decisions(&output);
    assert_eq!(decisions.len(), 12, "{stderr}");
    for decision in &decisions {
        for field in [
            "event_id", "time", "identity", "decision", "risk", "signals",
        ] {
            assert!(
                decision.get(field).is_some(),
                "{field} missing in {decision}"
            );
        }
        assert_eq!(
            decision["identity"],
            "arn:aws:iam::677301038893:role/account-admin"
        );
        assert_eq!(decision["session"], "christophe.tafanidereeper");
    }
    let find = |operation: &'static str| {
        decisions
            .iter()
            .filter(move |decision| decision["operation"] == operation)
    };
    let delete_trail = find("cloudtrail:DeleteTrail").next().unwrap();
    assert_ne!(delete_trail["decision"], "allow", "{delete_trail}");
    assert!(signal_names(delete_trail).contains(&"logging_change".to_owned()));
    let share = find("ec2:ModifySnapshotAttribute").next().unwrap();
    assert_ne!(share["decision"], "allow", "{share}");
    assert!(signal_names(share).contains(&"permission_change".to_owned()));
    let secrets: Vec<&Value> = find("secretsmanager:GetSecretValue").collect();
    assert_eq!(secrets.len(), 10);
    assert!(
        secrets
            .iter()
            .all(|decision| decision["decision"] != "allow")
    );
    assert!(stderr.contains("decisions: allow"), "{stderr}");
    assert!(stderr.contains("top signals:"), "{stderr}");
}

#[test]
fn leaked_credential_scenarios_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("leaked-credential");
    let generated = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-scenarios.py"))
        .arg(&scenarios)
        .output()
        .expect("python3 runs");
    assert!(generated.status.success(), "{generated:?}");
    let labels = scenarios.join("labels.csv");
    let summary = dir.path().join("summary.json");
    let output = replay(&[
        "--format",
        "cloudtrail",
        "--labels",
        labels.to_str().unwrap(),
        "--step-ups",
        "labels",
        "--summary",
        summary.to_str().unwrap(),
        scenarios.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let overall = &summary["detection"]["overall"];
    let attacks = overall["attack_events"].as_u64().unwrap();
    let caught = overall["attack_caught"].as_u64().unwrap();
    let normal = overall["normal_events"].as_u64().unwrap();
    let challenged = overall["normal_challenged"].as_u64().unwrap();
    assert_eq!(overall["unlabelled"], 0);
    assert_eq!(
        attacks + normal,
        decisions(&output).len() as u64,
        "every event decided once"
    );
    assert!(attacks > 500, "{overall}");
    assert!(normal > 10_000, "{overall}");
    // At least 95 % of attack events stepped up or denied, at most 1 % of
    // normal events challenged.
    assert!(caught * 100 >= attacks * 95, "{overall}");
    assert!(challenged * 100 <= normal, "{overall}");
    for (identity, figures) in summary["detection"]["identities"].as_object().unwrap() {
        if figures["attack_events"].as_u64().unwrap() > 0 {
            let delay = figures["events_to_first_challenge"].as_u64();
            assert!(
                delay.is_some_and(|delay| delay <= 3),
                "{identity}: {figures}"
            );
        }
    }
    assert!(
        stderr.contains("detection (15912 labels, 15912 matched an event, 0 events unlabelled):"),
        "{stderr}"
    );
    assert!(
        stderr.contains("overall: attack events stepped up or denied"),
        "{stderr}"
    );
}

#[test]
fn replay_uses_the_configured_geoip_databases() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("leaked-credential");
    let generated = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-scenarios.py"))
        .arg(&scenarios)
        .output()
        .expect("python3 runs");
    assert!(generated.status.success(), "{generated:?}");
    let config = dir.path().join("stepgate.toml");
    let embedded = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/stepgate.toml"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "{embedded}\n[geoip]\ncity_db = \"{}\"\nasn_db = \"{}\"\n",
            testdata("geoip/GeoLite2-City-Test.mmdb").display(),
            testdata("geoip/GeoLite2-ASN-Test.mmdb").display()
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["replay", "--format", "cloudtrail", "--config"])
        .arg(&config)
        .arg(&scenarios)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The leaked key's first use from Linköping names the new country and
    // autonomous system from the test databases.
    let located = decisions(&output)
        .into_iter()
        .find(|decision| {
            decision["identity"] == "arn:aws:iam::111122223333:user/svc-reporter"
                && signal_names(decision).contains(&"new_asn".to_owned())
        })
        .expect("a decision with new_asn");
    let reasons: Vec<&str> = located["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|signal| signal["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("AS29518 (Bredband2 AB)")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("Linköping, SE")),
        "{reasons:?}"
    );
    assert_ne!(located["decision"], "allow");
}

/// Panther's labelled CloudTrail test events, one per line, with each
/// `eventID` made unique (the rule authors reuse ids such as "1").
fn panther_events(dir: &Path) -> (PathBuf, Vec<(String, bool, String)>) {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(testdata("cloudtrail/panther/aws_cloudtrail_rules.jsonl.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let path = dir.join("panther.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let case: Value = serde_json::from_str(line).unwrap();
        let mut log = case["log"].clone();
        let id = format!("panther-{index}");
        let operation = match (
            log.get("eventSource").and_then(Value::as_str),
            log.get("eventName").and_then(Value::as_str),
        ) {
            (Some(source), Some(name)) => {
                format!("{}:{name}", source.trim_end_matches(".amazonaws.com"))
            }
            _ => String::new(),
        };
        let key = if log.get("eventid").is_some() {
            "eventid"
        } else {
            "eventID"
        };
        log[key] = Value::String(id.clone());
        writeln!(file, "{log}").unwrap();
        cases.push((id, case["label_rule_fires"] == true, operation));
    }
    (path, cases)
}

#[test]
fn panther_records_read_sensitive_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cases) = panther_events(dir.path());
    assert_eq!(cases.len(), 461);
    let summary = dir.path().join("summary.json");
    let output = replay(&[
        "--format",
        "cloudtrail",
        "--summary",
        summary.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    // Every line is read as a CloudTrail record. The only ones skipped are
    // records whose time or principal is missing, each with that reason.
    let skipped = summary["skipped"].as_array().unwrap();
    for skip in skipped {
        let reason = skip["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("record has no ") || reason.contains("not an RFC 3339 time"),
            "{skip}"
        );
    }
    let decisions = decisions(&output);
    assert_eq!(decisions.len() + skipped.len(), cases.len());
    let by_id: std::collections::HashMap<&str, &Value> = decisions
        .iter()
        .map(|decision| (decision["event_id"].as_str().unwrap(), decision))
        .collect();
    let catalogue = Catalogue::new(true, &[]);
    let mut sensitive = 0;
    for (id, suspicious, operation) in &cases {
        let Some(decision) = by_id.get(id.as_str()) else {
            continue;
        };
        if let Some(category) = catalogue.category(operation)
            && *suspicious
        {
            sensitive += 1;
            let names = signal_names(decision);
            assert!(
                names.contains(&category.signal().name().to_owned()),
                "{id} {operation}: {names:?}"
            );
            assert_ne!(decision["decision"], "allow", "{decision}");
        }
    }
    assert!(sensitive >= 30, "{sensitive}");
}

#[test]
fn audit_export_replays_as_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("audit.jsonl");
    let mut file = std::fs::File::create(&export).unwrap();
    // Records in the layout `stepgate audit export` writes: an admin
    // change, then requests of one bot from its usual network, then a burst
    // of writes from another network.
    writeln!(file, r#"{{"seq":0,"prev_hash":"0","time":"2024-03-01T10:00:00.000Z","event":"admin","actor":"cli:root","detail":"add identity","signals":[],"policies":[]}}"#).unwrap();
    for i in 1..=20 {
        writeln!(file, r#"{{"seq":{i},"prev_hash":"x","time":"2024-03-01T10:{i:02}:00.000Z","event":"allow","identity":"ci-bot","token_id":"t1","client_addr":"192.0.2.7","method":"GET","path":"/orders/{i}","action":"read","resource":"/orders/{{n}}","signals":[],"policies":[],"upstream_status":200}}"#).unwrap();
    }
    writeln!(file, r#"{{"seq":21,"prev_hash":"x","time":"2024-03-01T10:30:00.000Z","event":"allow","identity":"ci-bot","token_id":"t1","client_addr":"198.51.100.9","method":"DELETE","path":"/orders/9","action":"delete","resource":"/orders/{{n}}","signals":[],"policies":[]}}"#).unwrap();
    drop(file);
    let output = replay(&["--format", "jsonl", export.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The admin record is not a request: counted apart, not an error.
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ignored: 1 records that are not requests"),
        "{stderr}"
    );
    let decisions = decisions(&output);
    assert_eq!(decisions.len(), 21);
    let last = decisions.last().unwrap();
    assert_eq!(last["event_id"], "21");
    assert_eq!(last["operation"], "DELETE /orders/{n}");
    assert_eq!(last["decision"], "step_up", "{last}");
    let names = signal_names(last);
    assert!(names.contains(&"new_network".to_owned()), "{names:?}");
    assert!(names.contains(&"new_operation".to_owned()), "{names:?}");
}

#[test]
fn bad_arguments_get_clear_errors() {
    let output = replay(&["--format", "cloudtrail", "/nonexistent/trail"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/trail"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, "e1,maybe\n").unwrap();
    let output = replay(&[
        "--format",
        "cloudtrail",
        "--labels",
        labels.to_str().unwrap(),
        testdata("cloudtrail/stratus").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("label \"maybe\" is not valid; use attack or normal"),
        "{stderr}"
    );
    let output = replay(&[
        "--format",
        "cloudtrail",
        "--step-ups",
        "labels",
        testdata("cloudtrail/stratus").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--step-ups labels needs --labels FILE"),
        "{stderr}"
    );
}
