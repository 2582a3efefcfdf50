//! The PostgreSQL gateway end to end: a real PostgreSQL 15 server started
//! in a temporary folder, the `stepgate` binary in front of it, and real
//! clients (psql) connecting with an identity's API token as password.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::pg::{DATABASE, ROLE, ROLE_PASSWORD, setup, stderr};
use support::{Gateway, oathtool};

/// Reads the challenge id from psql's error output: the DETAIL line contains
/// `challenge_id=ch_...`.
fn challenge_id(stderr: &str) -> String {
    stderr
        .split_whitespace()
        .find_map(|word| word.strip_prefix("challenge_id="))
        .unwrap_or_else(|| panic!("no challenge id in {stderr}"))
        .to_owned()
}

#[test]
fn ddl_challenge_answer_and_retry() {
    let Some(setup) = setup("") else {
        return;
    };
    assert_eq!(setup.psql_ok("SELECT count(*) FROM orders"), "50");
    assert_eq!(
        setup.psql_ok("SELECT amount FROM orders WHERE id = 7"),
        "70"
    );
    assert_eq!(setup.psql_ok("SELECT current_user"), ROLE);

    // DDL is the admin action, which always needs a step-up.
    let refused = setup.psql("CREATE TABLE audit_copy (id int)");
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("needs step-up"), "{message}");
    let challenge = challenge_id(&message);
    assert!(
        setup.app_sql("SELECT count(*) FROM pg_tables WHERE tablename = 'audit_copy'") == "0",
        "the refused statement reached the server"
    );

    // The answer and the retry in one session; the grant covers the
    // statement for the session's network.
    let script = format!(
        "SELECT stepgate.step_up('{challenge}', '{}');\nCREATE TABLE audit_copy (id int);\n",
        oathtool(&setup.totp)
    );
    let answered = setup.psql_script(&script);
    let out = String::from_utf8_lossy(&answered.stdout);
    assert!(
        out.contains("totp accepted"),
        "stdout {out} stderr {}",
        stderr(&answered)
    );
    assert!(out.contains("CREATE TABLE"), "{out} {}", stderr(&answered));
    assert_eq!(
        setup.app_sql("SELECT count(*) FROM pg_tables WHERE tablename = 'audit_copy'"),
        "1"
    );

    let audit = setup.gateway.audit();
    let challenge_record = audit
        .iter()
        .find(|record| record["event"] == "challenge")
        .expect("challenge recorded");
    assert_eq!(challenge_record["statement_class"], "ddl");
    assert_eq!(challenge_record["database_role"], ROLE);
    assert_eq!(challenge_record["identity"], "ci-bot");
    assert!(challenge_record.get("statement").is_none());
    assert!(
        audit
            .iter()
            .any(|record| record["event"] == "step_up_success"),
        "{audit:?}"
    );
}

#[test]
fn wrong_token_and_unknown_identity_are_refused_alike() {
    let Some(setup) = setup("") else {
        return;
    };
    let wrong = setup.psql_as("ci-bot", "sgt_notatokenatall", "SELECT 1");
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("password authentication failed for user \"ci-bot\""),
        "{}",
        stderr(&wrong)
    );
    let unknown = setup.psql_as("nobody", &setup.token, "SELECT 1");
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("password authentication failed for user \"nobody\""),
        "{}",
        stderr(&unknown)
    );
    // The role password never works through the gateway.
    let role = setup.psql_as(ROLE, ROLE_PASSWORD, "SELECT 1");
    assert!(!role.status.success());
    let log = setup.gateway.log();
    assert!(!log.contains(&setup.token), "the token reached the log");
    assert!(
        !log.contains(ROLE_PASSWORD),
        "the role password reached the log"
    );
}

#[test]
fn held_write_runs_after_cli_approval() {
    let Some(setup) = setup("") else {
        return;
    };
    let uri = setup.gateway.cli_ok(&["approver", "add", "alice"]);
    let alice = uri
        .trim()
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    support::wait_for_reload();

    let held = {
        let args = (
            setup.postgres.bin("psql"),
            setup.gateway.dir.path().join("home"),
            setup.token.clone(),
            setup.pg_port,
        );
        thread::spawn(move || {
            std::fs::create_dir_all(&args.1).unwrap();
            Command::new(&args.0)
                .env("HOME", &args.1)
                .env("PGPASSWORD", &args.2)
                .env("PGSSLMODE", "disable")
                .args(["-h", "127.0.0.1", "-p", &args.3.to_string()])
                .args(["-U", "ci-bot", "-d", DATABASE, "-X", "-At"])
                .args(["-c", "INSERT INTO payouts (amount) VALUES (4200)"])
                .output()
                .unwrap()
        })
    };
    let id = wait_for_pending(&setup.gateway);
    let shown = setup.gateway.cli_ok(&["approvals", "show", &id]);
    assert!(
        shown.contains("INSERT INTO payouts (amount) VALUES (4200)"),
        "{shown}"
    );
    setup.gateway.cli_ok(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "alice",
        "--totp",
        &oathtool(&alice),
    ]);
    let output = held.join().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(setup.app_sql("SELECT amount FROM payouts"), "4200");
}

fn wait_for_pending(gateway: &Gateway) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ids: Vec<String> = gateway
            .cli_ok(&["approvals", "list", "--format", "json"])
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["id"].as_str().unwrap().to_owned()
            })
            .collect();
        if let [id] = ids.as_slice() {
            return id.clone();
        }
        assert!(Instant::now() < deadline, "no pending approval: {ids:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Makes a self-signed certificate for 127.0.0.1 in `dir`; returns the
/// certificate and key paths.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("pg-cert.pem");
    let key = dir.join("pg-key.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=stepgate test", "-addext"])
        .args(["subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed");
    assert!(output.status.success(), "{output:?}");
    (cert, key)
}

#[test]
fn tls_with_scram_channel_binding() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let extra = format!(
        "\n[postgres.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let Some(setup) = setup(&extra) else {
        return;
    };
    let home = setup.gateway.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // verify-full checks the certificate and host; channel_binding=require
    // makes libpq insist on SCRAM-SHA-256-PLUS.
    let output = Command::new(setup.postgres.bin("psql"))
        .env("HOME", &home)
        .env("PGPASSWORD", &setup.token)
        .arg(format!(
            "host=127.0.0.1 port={} user=ci-bot dbname={DATABASE} sslmode=verify-full \
             sslrootcert={} channel_binding=require",
            setup.pg_port,
            cert.display()
        ))
        .args(["-X", "-At", "-c", "SELECT count(*) FROM orders"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "50");

    // Without TLS the same client still logs in, as require_tls is off.
    assert_eq!(setup.psql_ok("SELECT 1"), "1");
}

#[test]
fn cancel_request_reaches_the_server() {
    let Some(setup) = setup("") else {
        return;
    };
    // psycopg sends a CancelRequest with the key from BackendKeyData, which
    // the gateway made; the gateway passes it on to the server process.
    let script = format!(
        r#"
import threading, time, psycopg
conn = psycopg.connect(host="127.0.0.1", port={port}, user="ci-bot", dbname="{DATABASE}",
                       password="{token}", sslmode="disable")
timer = threading.Timer(1.0, conn.cancel)
timer.start()
started = time.monotonic()
try:
    conn.execute("SELECT count(*) FROM generate_series(1, 100000000000)")
    print("not cancelled")
except psycopg.errors.QueryCanceled:
    print("cancelled after", round(time.monotonic() - started))
    conn.rollback()
print(conn.execute("SELECT count(*) FROM orders").fetchone()[0])
"#,
        port = setup.pg_port,
        token = setup.token,
    );
    let output = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3 must be installed");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out} {}", stderr(&output));
    assert!(out.contains("cancelled after"), "{out}");
    assert!(out.trim_end().ends_with("50"), "{out}");
}

#[test]
fn pooled_connection_keeps_no_session_state() {
    let Some(setup) = setup("") else {
        return;
    };
    let first = setup.psql_ok(
        "SET work_mem = '7MB'; SET application_name = 'left-behind'; \
         PREPARE leftover AS SELECT 1; \
         SELECT pid FROM pg_stat_activity WHERE usename = current_user AND state = 'active'",
    );
    let second = setup.psql_ok(
        "SELECT pid, current_setting('work_mem'), \
         (SELECT count(*) FROM pg_prepared_statements) \
         FROM pg_stat_activity WHERE usename = current_user AND state = 'active'",
    );
    let mut fields = second.split('|');
    // The same server process served both clients, so the pool reused it.
    assert_eq!(fields.next(), Some(first.lines().last().unwrap()));
    assert_eq!(fields.next(), Some("4MB"));
    assert_eq!(fields.next(), Some("0"));
}

#[test]
fn upstream_tls_is_verified_against_the_configured_ca() {
    // The server rejects the role over plain TCP, so only a TLS connection
    // logs in, and it is reached by the name in its certificate.
    let options = stepgate_testpg::Options {
        tls: true,
        hba: vec![format!("hostnossl all {ROLE} 127.0.0.1/32 reject")],
        ..Default::default()
    };
    let upstream = |postgres: &stepgate_testpg::Postgres| {
        let ca = &postgres.certificates().unwrap().ca_cert_pem;
        format!(
            "host = \"localhost\"\ntls = \"verify-full\"\nca_file = \"{}\"",
            ca.display()
        )
    };
    let Some(setup) = support::pg::setup_with(options, "", upstream, "") else {
        return;
    };
    assert_eq!(
        setup.psql_ok(
            "SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE usename = current_user AND state = 'active'"
        ),
        "t"
    );
}

#[test]
fn upstream_with_an_untrusted_certificate_is_not_used() {
    let other = tempfile::tempdir().unwrap();
    let (untrusted, _) = self_signed(other.path());
    let options = stepgate_testpg::Options {
        tls: true,
        ..Default::default()
    };
    let upstream = move |_: &stepgate_testpg::Postgres| {
        format!(
            "host = \"localhost\"\ntls = \"verify-full\"\nca_file = \"{}\"",
            untrusted.display()
        )
    };
    let Some(setup) = support::pg::setup_with(options, "", upstream, "") else {
        return;
    };
    let output = setup.psql("SELECT 1");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("stepgate cannot reach the database"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn plaintext_client_is_refused_when_tls_is_required() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let keys = format!(
        "require_tls = true\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let upstream =
        |_: &stepgate_testpg::Postgres| "host = \"127.0.0.1\"\ntls = \"disable\"".to_owned();
    let Some(setup) = support::pg::setup_with(Default::default(), &keys, upstream, "") else {
        return;
    };
    let output = setup.psql("SELECT 1");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("accepts only TLS connections"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_reads_the_role_password_file() {
    let nowhere: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let gateway = Gateway::new(
        nowhere,
        r#"
[postgres]
listen = "127.0.0.1:0"

[postgres.upstream]
host = "127.0.0.1"
tls = "disable"

[[postgres.roles]]
name = "app_rw"
password_file = "missing-password"
"#,
    );
    let output = gateway.cli(&["check-config"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("app_rw"), "{message}");
    assert!(message.contains("missing-password"), "{message}");

    std::fs::write(gateway.dir.path().join("missing-password"), "\n").unwrap();
    let message = stderr(&gateway.cli(&["check-config"]));
    assert!(message.contains("is empty"), "{message}");

    std::fs::write(gateway.dir.path().join("missing-password"), "secret\n").unwrap();
    gateway.cli_ok(&["check-config"]);
}

#[test]
fn new_statement_class_and_new_table_raise_signals() {
    let Some(setup) = setup("") else {
        return;
    };
    // Five reads of orders are the learning period.
    for id in 1..=5 {
        setup.psql_ok(&format!("SELECT amount FROM orders WHERE id = {id}"));
    }
    setup.psql_ok("SELECT count(*) FROM payouts");
    setup.psql_ok("UPDATE orders SET amount = amount WHERE id = 1");

    support::pg::wait_for_record(&setup.gateway, |record| record["method"] == "UPDATE");
    let audit = setup.gateway.audit();
    let signals_of = |table: &str| -> Vec<String> {
        audit
            .iter()
            .rev()
            .filter(|record| record["event"] == "allow")
            .find(|record| record["resource"] == table)
            .map(|record| {
                record["signals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|signal| signal["kind"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let payouts = signals_of("public.payouts");
    assert!(payouts.contains(&"new_resource".to_owned()), "{payouts:?}");
    let update = audit
        .iter()
        .rev()
        .find(|record| record["method"] == "UPDATE")
        .expect("the update is recorded");
    let kinds: Vec<&str> = update["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|signal| signal["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"new_operation"), "{update}");
    assert_eq!(update["rows"], 1);
    assert_eq!(update["statement_class"], "write");
}

#[test]
fn statement_text_is_audited_only_when_configured() {
    let upstream =
        |_: &stepgate_testpg::Postgres| "host = \"127.0.0.1\"\ntls = \"disable\"".to_owned();
    let Some(setup) = support::pg::setup_with(
        Default::default(),
        "audit_statement_text = true",
        upstream,
        "",
    ) else {
        return;
    };
    setup.psql_ok("SELECT amount FROM orders WHERE id = 42");
    // The allow record is written behind the statement's answer.
    let record = support::pg::wait_for_record(&setup.gateway, |record| {
        record["method"] == "SELECT" && record["event"] == "allow"
    });
    assert_eq!(
        record["statement"],
        "SELECT amount FROM orders WHERE id = 42"
    );
    assert_eq!(record["rows"], 1);
    assert!(
        record["fingerprint"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );
}

#[test]
fn configured_pure_function_is_not_a_write() {
    let upstream =
        |_: &stepgate_testpg::Postgres| "host = \"127.0.0.1\"\ntls = \"disable\"".to_owned();
    let keys = "pure_functions = [\"pg_backend_pid\"]";
    let Some(setup) = support::pg::setup_with(Default::default(), keys, upstream, "") else {
        return;
    };
    // Past the learning period, where only zone rules apply.
    for id in 1..=5 {
        setup.psql_ok(&format!("SELECT amount FROM orders WHERE id = {id}"));
    }
    let pid = setup.psql_ok("SELECT pg_backend_pid()");
    assert!(pid.parse::<u32>().is_ok(), "{pid}");
    // Any other function may write any table, so the payouts zone's
    // approval applies, and without approvers it is denied.
    let output = setup.psql("SELECT pg_sleep(0)");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("denied"), "{}", stderr(&output));
}
