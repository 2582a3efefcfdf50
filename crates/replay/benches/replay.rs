//! Replay throughput: CloudTrail records, one per line, read, parsed,
//! scored, decided and written as JSON decisions, on one thread.
//!
//! Run with `cargo bench -p stepgate-replay --bench replay`. The input is
//! 200,000 generated records of 1,000 identities over two weeks, each
//! identity with its own networks, operations and client. The bench prints
//! events per second besides criterion's time per run.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stepgate_config::StepUpConfig;
use stepgate_core::{Timestamp, Zones};
use stepgate_engine::Settings;
use stepgate_policy::Policy;
use stepgate_replay::{Format, Replayer, read_file};
use stepgate_risk::{RiskConfig, Scorer};

const EVENTS: usize = 200_000;
const IDENTITIES: usize = 1_000;

const OPERATIONS: &[(&str, &str, bool)] = &[
    ("s3.amazonaws.com", "GetObject", true),
    ("s3.amazonaws.com", "PutObject", false),
    ("s3.amazonaws.com", "ListBucket", true),
    ("sts.amazonaws.com", "GetCallerIdentity", true),
    ("ecs.amazonaws.com", "DescribeServices", true),
    ("ecs.amazonaws.com", "UpdateService", false),
    ("athena.amazonaws.com", "StartQueryExecution", false),
    ("athena.amazonaws.com", "GetQueryResults", true),
    ("glue.amazonaws.com", "GetTable", true),
    ("secretsmanager.amazonaws.com", "GetSecretValue", true),
    ("iam.amazonaws.com", "ListRoles", true),
    (
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        false,
    ),
];

/// Writes the input file: CloudTrail records as AWS writes them, one per
/// line, in time order with a little jitter.
fn write_input(path: &Path) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let start = Timestamp::from_secs(1_709_251_200).as_millis();
    let span_ms: i64 = 14 * 86_400_000;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..EVENTS {
        let identity = (next() % IDENTITIES as u64) as usize;
        let (source, name, read_only) = OPERATIONS[(next() % OPERATIONS.len() as u64) as usize];
        let offset = (i as i64) * span_ms / EVENTS as i64 + (next() % 2000) as i64;
        let time = Timestamp(start + offset).to_rfc3339();
        let network = identity % 200;
        let host = next() % 250 + 1;
        writeln!(
            file,
            concat!(
                r#"{{"eventVersion":"1.09","userIdentity":{{"type":"AssumedRole","principalId":"AROAEXAMPLE{id}:run-{run}","#,
                r#""arn":"arn:aws:sts::111122223333:assumed-role/bot-{id}/run-{run}","accountId":"111122223333","accessKeyId":"ASIAEXAMPLE{id:05}","#,
                r#""sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROAEXAMPLE{id}","arn":"arn:aws:iam::111122223333:role/bot-{id}","accountId":"111122223333","userName":"bot-{id}"}},"#,
                r#""attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}},"eventTime":"{time}","eventSource":"{source}","#,
                r#""eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"10.{a}.{b}.{host}","#,
                r#""userAgent":"aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22 prompt/off command/s3.cp","#,
                r#""requestParameters":{{"bucketName":"artefacts-{id}","key":"builds/{i}/app.tar.gz"}},"responseElements":null,"#,
                r#""requestID":"REQ{i:012}","eventID":"{i:08x}-4f1e-4c8e-9d3a-{id:012}","readOnly":{read_only},"eventType":"AwsApiCall","#,
                r#""managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management"}}"#
            ),
            id = identity,
            run = i / 5000,
            time = time,
            source = source,
            name = name,
            a = network / 100,
            b = network % 100,
            host = host,
            i = i,
            read_only = read_only,
        )
        .unwrap();
    }
    file.flush().unwrap();
}

fn settings() -> Settings {
    Settings {
        risk: Arc::new(Scorer::new(RiskConfig::default())),
        step_up: StepUpConfig::default(),
        zones: Zones::new(Vec::new()),
    }
}

/// Replays the whole file once; returns the events replayed.
fn replay_file(path: &Path, policy: &Policy) -> u64 {
    let mut replayer = Replayer::new(settings(), policy.clone(), std::io::sink());
    let mut failed = None;
    read_file(
        path,
        Format::CloudTrail,
        &mut |event| {
            if let Err(err) = replayer.push(event) {
                failed = Some(err);
            }
        },
        &mut |skip| panic!("generated record skipped: {skip:?}"),
    );
    assert!(failed.is_none());
    let (_, report) = replayer.finish().unwrap();
    report.decisions.events
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_input(&path);
    let policy = Policy::default_policy().unwrap();

    let started = Instant::now();
    let events = replay_file(&path, &policy);
    let elapsed = started.elapsed();
    assert_eq!(events, EVENTS as u64);
    println!(
        "replay: {events} CloudTrail events of {IDENTITIES} identities in {:.2} s: {:.0} events/s on one thread",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );

    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("200k CloudTrail events, 1k identities", |b| {
        b.iter(|| replay_file(&path, &policy))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
