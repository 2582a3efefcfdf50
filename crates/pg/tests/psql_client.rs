//! Runs the real `psql` against a small server built on
//! [`ServerStartup`]: the server rejects SSL with 'N' and responds to the
//! StartupMessage with a FATAL ErrorResponse, which psql must print. This
//! checks the state machine and the encoder against an independent client.
//!
//! Without `psql` (`STEPGATE_PSQL`, default `/usr/bin/psql`) the test prints
//! why and passes without checking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use stepgate_pg::startup::{ServerStartup, StartupConfig, StartupInfo, StartupStep};
use stepgate_pg::{BackendMessage, ErrorFields, Severity, sqlstate};

const MESSAGE: &str = "stepgate test server";

/// What the server saw on its one connection.
#[derive(Debug)]
struct Seen {
    /// Bytes the server wrote before its ErrorResponse or before closing.
    replies: Vec<u8>,
    startup: Option<StartupInfo>,
}

/// Serves one connection in a thread and returns the port and the handle.
fn serve_once() -> (u16, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        handle_connection(stream)
    });
    (port, handle)
}

fn handle_connection(mut stream: TcpStream) -> Seen {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut startup = ServerStartup::new(StartupConfig::default());
    let mut seen = Seen {
        replies: Vec::new(),
        startup: None,
    };
    let mut chunk = [0; 4096];
    loop {
        let read = stream.read(&mut chunk).unwrap();
        if read == 0 {
            return seen;
        }
        startup.feed(&chunk[..read]);
        let mut output = BytesMut::new();
        let step = startup.advance(&mut output);
        seen.replies.extend_from_slice(&output);
        stream.write_all(&output).unwrap();
        match step.unwrap() {
            StartupStep::NeedMore => {}
            StartupStep::Startup(info) => {
                seen.startup = Some(info);
                let mut reply = BytesMut::new();
                BackendMessage::ErrorResponse(
                    ErrorFields::new(
                        Severity::Fatal,
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        MESSAGE,
                    )
                    .with_detail("startup decoded by stepgate-pg")
                    .with_hint("this server accepts no logins"),
                )
                .encode(&mut reply)
                .unwrap();
                stream.write_all(&reply).unwrap();
                return seen;
            }
            other => panic!("unexpected startup step {other:?}"),
        }
    }
}

fn psql() -> Option<PathBuf> {
    let path =
        PathBuf::from(std::env::var("STEPGATE_PSQL").unwrap_or_else(|_| "/usr/bin/psql".into()));
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: no psql at {}; set STEPGATE_PSQL", path.display());
        None
    }
}

fn run_psql(psql: &PathBuf, port: u16, sslmode: &str) -> Output {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=ci-bot dbname=orders application_name=deploy-job \
         sslmode={sslmode} gssencmode=disable connect_timeout=10"
    );
    Command::new(psql)
        .args(["-X", "-w", "-c", "SELECT 1"])
        .arg(conninfo)
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .output()
        .unwrap()
}

#[test]
fn psql_prints_gateway_error() {
    let Some(psql) = psql() else {
        return;
    };
    for sslmode in ["prefer", "disable"] {
        let (port, server) = serve_once();
        let output = run_psql(&psql, port, sslmode);
        let seen = server.join().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);

        // psql exits with 2 when the connection fails.
        assert_eq!(output.status.code(), Some(2), "sslmode={sslmode}: {stderr}");
        assert!(
            stderr.contains(&format!("FATAL:  {MESSAGE}")),
            "sslmode={sslmode}: {stderr}"
        );
        assert!(
            stderr.contains("DETAIL:  startup decoded by stepgate-pg"),
            "sslmode={sslmode}: {stderr}"
        );
        assert!(
            stderr.contains("HINT:  this server accepts no logins"),
            "sslmode={sslmode}: {stderr}"
        );

        // With sslmode=prefer psql sends an SSLRequest first and gets 'N'.
        let expected_replies: &[u8] = if sslmode == "prefer" { b"N" } else { b"" };
        assert_eq!(seen.replies, expected_replies, "sslmode={sslmode}");
        let info = seen.startup.expect("StartupMessage");
        assert_eq!(info.user, "ci-bot");
        assert_eq!(info.database, "orders");
        assert!(!info.tls);
        assert!(
            info.parameters
                .contains(&("application_name".to_owned(), "deploy-job".to_owned())),
            "{:?}",
            info.parameters
        );
    }
}

#[test]
fn psql_requiring_tls_stops_at_refusal() {
    let Some(psql) = psql() else {
        return;
    };
    let (port, server) = serve_once();
    let output = run_psql(&psql, port, "require");
    let seen = server.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("server does not support SSL, but SSL was required"),
        "{stderr}"
    );
    assert_eq!(seen.replies, b"N");
    assert!(seen.startup.is_none());
}
