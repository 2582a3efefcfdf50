//! Starts real servers and checks what the crate's API promises. The checks
//! cover SCRAM on TCP, trust on the Unix socket, TLS verified with the test
//! CA, extra settings and `pg_hba.conf` lines, and cleanup on drop. They also
//! cover skipping or panicking when PostgreSQL is missing.
//!
//! TCP logins use `psql` from the server's binaries as the current user,
//! root or not, since a TCP client reads no file of the server's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use stepgate_testpg::{Options, Postgres, quote_identifier, quote_literal};

/// A password with a quote, a backslash and a space, so that quoting mistakes
/// show up as a failed login.
const BOT_PASSWORD: &str = r"it's a \secret";

/// Runs `statement` with psql over TCP with the libpq connection string
/// `conninfo`, never prompting for a password.
fn psql_tcp(
    postgres: &Postgres,
    conninfo: &str,
    password: Option<&str>,
    statement: &str,
) -> Output {
    let mut psql = Command::new(postgres.bin("psql"));
    psql.args(["-At", "-X", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo)
        .args(["-c", statement])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null");
    if let Some(password) = password {
        psql.env("PGPASSWORD", password);
    }
    psql.output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned()
}

fn stderr(output: &Output) -> String {
    assert!(!output.status.success(), "psql succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plain_server_logins() {
    let Some(postgres) = Postgres::start(Options::default()) else {
        return;
    };
    assert_eq!(postgres.host(), "127.0.0.1");
    assert_eq!(postgres.address().port(), postgres.port());
    assert!(postgres.certificates().is_none());
    let socket = postgres
        .socket_dir()
        .join(format!(".s.PGSQL.{}", postgres.port()));
    assert!(socket.exists(), "{}", socket.display());
    assert!(postgres.data_dir().join("PG_VERSION").exists());
    assert!(postgres.bin("pgbench").exists());

    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    assert_eq!(postgres.run_as(), root.then_some("postgres"));

    assert_eq!(postgres.sql("SELECT 1"), "1");
    assert_eq!(postgres.sql("SELECT current_user"), postgres.superuser());
    assert_eq!(
        postgres.sql("SELECT 1, 'a' UNION ALL SELECT 2, 'b'"),
        "1|a\n2|b"
    );
    assert_eq!(postgres.sql("SHOW server_encoding"), "UTF8");
    assert_eq!(postgres.sql("SHOW fsync"), "off");
    let failed = postgres
        .psql()
        .args(["-c", "SELECT * FROM no_such_table"])
        .output()
        .unwrap();
    assert!(!failed.status.success());

    postgres.create_role("bot", BOT_PASSWORD);
    postgres.create_database("inventory", "bot");
    let secret = postgres.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'bot'");
    assert!(secret.starts_with("SCRAM-SHA-256$4096:"), "{secret}");
    assert_eq!(
        postgres.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'inventory'"),
        "bot"
    );

    let conninfo = format!(
        "host=127.0.0.1 port={} user=bot dbname=inventory",
        postgres.port()
    );
    let login = psql_tcp(
        &postgres,
        &conninfo,
        Some(BOT_PASSWORD),
        "SELECT current_user, current_database()",
    );
    assert_eq!(stdout(&login), "bot|inventory");

    let wrong = psql_tcp(&postgres, &conninfo, Some("wrong"), "SELECT 1");
    let message = stderr(&wrong);
    assert!(
        message.contains("password authentication failed for user \"bot\""),
        "{message}"
    );

    // The superuser has no password, and TCP logins need one.
    let superuser = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        postgres.port()
    );
    let message = stderr(&psql_tcp(&postgres, &superuser, None, "SELECT 1"));
    assert!(message.contains("no password supplied"), "{message}");

    assert!(postgres.log().contains("database system is ready"));
}

#[test]
fn tls_server_verifies_with_test_ca() {
    let Some(postgres) = Postgres::start(Options {
        tls: true,
        ..Options::default()
    }) else {
        return;
    };
    let certificates = postgres.certificates().unwrap();
    assert_eq!(
        certificates.ca_der[0], 0x30,
        "DER starts with a SEQUENCE tag"
    );
    for path in [
        &certificates.ca_cert_pem,
        &certificates.ca_key,
        &certificates.server_cert,
        &certificates.server_key,
    ] {
        assert!(path.exists(), "{}", path.display());
    }
    assert_eq!(postgres.sql("SHOW ssl"), "on");
    postgres.create_role("bot", BOT_PASSWORD);

    let in_tls = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    // The certificate names both localhost and 127.0.0.1.
    for host in ["host=localhost hostaddr=127.0.0.1", "host=127.0.0.1"] {
        let conninfo = format!(
            "{host} port={} user=bot dbname=postgres sslmode=verify-full sslrootcert={}",
            postgres.port(),
            certificates.ca_cert_pem.display()
        );
        let output = psql_tcp(&postgres, &conninfo, Some(BOT_PASSWORD), in_tls);
        assert_eq!(stdout(&output), "t", "{host}");
    }

    // The server certificate does not name other hosts.
    let conninfo = format!(
        "host=example.test hostaddr=127.0.0.1 port={} user=bot dbname=postgres \
         sslmode=verify-full sslrootcert={}",
        postgres.port(),
        certificates.ca_cert_pem.display()
    );
    let message = stderr(&psql_tcp(&postgres, &conninfo, Some(BOT_PASSWORD), in_tls));
    assert!(message.contains("does not match host name"), "{message}");

    // TLS is optional for clients.
    let conninfo = format!(
        "host=127.0.0.1 port={} user=bot dbname=postgres sslmode=disable",
        postgres.port()
    );
    let output = psql_tcp(&postgres, &conninfo, Some(BOT_PASSWORD), in_tls);
    assert_eq!(stdout(&output), "f");
}

#[test]
fn options_add_settings_and_hba_lines() {
    let Some(postgres) = Postgres::start(Options {
        tls: false,
        settings: vec!["fsync=on".into(), "work_mem=8MB".into()],
        hba: vec!["host all trusted 127.0.0.1/32 trust".into()],
    }) else {
        return;
    };
    assert_eq!(
        postgres.sql("SHOW fsync"),
        "on",
        "a setting overrides a default"
    );
    assert_eq!(postgres.sql("SHOW work_mem"), "8MB");

    postgres.create_role("trusted", "unused");
    postgres.create_role("bot", BOT_PASSWORD);
    let trusted = format!(
        "host=127.0.0.1 port={} user=trusted dbname=postgres",
        postgres.port()
    );
    let output = psql_tcp(&postgres, &trusted, None, "SELECT current_user");
    assert_eq!(stdout(&output), "trusted");

    let bot = format!(
        "host=127.0.0.1 port={} user=bot dbname=postgres",
        postgres.port()
    );
    let message = stderr(&psql_tcp(&postgres, &bot, None, "SELECT 1"));
    assert!(message.contains("no password supplied"), "{message}");
}

#[test]
fn drop_stops_server_and_removes_folder() {
    let Some(postgres) = Postgres::start(Options::default()) else {
        return;
    };
    let address = postgres.address();
    let folder = postgres.socket_dir().to_path_buf();
    let pid_file = std::fs::read_to_string(postgres.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().to_owned();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    TcpStream::connect(address).unwrap();

    drop(postgres);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!folder.exists(), "{}", folder.display());
    assert!(TcpStream::connect(address).is_err());
}

#[test]
fn quote_functions_double_quotes() {
    assert_eq!(quote_identifier("bot"), "\"bot\"");
    assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_literal("it's"), "'it''s'");
    assert_eq!(quote_literal(r"a\b"), r"'a\b'");
}

/// Starts a server from the environment and reports the outcome. The test
/// below runs it in a child process with a changed environment, since a
/// test cannot change its own environment safely while other tests run.
#[test]
#[ignore = "run by missing_postgres_skips_or_panics with a changed environment"]
fn start_from_environment() {
    match Postgres::start(Options::default()) {
        Some(_) => println!("outcome: started"),
        None => println!("outcome: skipped"),
    }
}

#[test]
fn missing_postgres_skips_or_panics() {
    let run = |require: Option<&str>| {
        let mut test = Command::new(std::env::current_exe().unwrap());
        test.args([
            "--exact",
            "start_from_environment",
            "--ignored",
            "--nocapture",
        ])
        .env("STEPGATE_PG_BIN", "/nonexistent/bin")
        .env_remove("STEPGATE_REQUIRE_POSTGRES");
        if let Some(value) = require {
            test.env("STEPGATE_REQUIRE_POSTGRES", value);
        }
        let output = test.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };
    let reason = "/nonexistent/bin/initdb was not found; set STEPGATE_PG_BIN";

    for require in [None, Some("0")] {
        let (passed, text) = run(require);
        assert!(passed, "{require:?}: {text}");
        assert!(text.contains(&format!("skipped: {reason}")), "{text}");
        assert!(text.contains("outcome: skipped"), "{text}");
    }

    let (passed, text) = run(Some("1"));
    assert!(!passed, "{text}");
    assert!(
        text.contains(&format!(
            "PostgreSQL is required (STEPGATE_REQUIRE_POSTGRES=1) but {reason}"
        )),
        "{text}"
    );
}
