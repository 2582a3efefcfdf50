//! A real PostgreSQL server as the independent implementation of both
//! sides: its `pg_authid.rolpassword` must parse and verify, it must accept
//! a credential this crate formats, and [`ClientExchange`] must log in to it
//! over TCP.
//!
//! The server comes from `stepgate_testpg`. It listens on 127.0.0.1 with
//! `scram-sha-256` authentication, and with TLS for the channel binding
//! test. Without PostgreSQL the tests print why and pass without
//! checking. The login speaks protocol 3.0 by hand: StartupMessage,
//! AuthenticationSASL, SASLInitialResponse, AuthenticationSASLContinue,
//! SASLResponse, AuthenticationSASLFinal and AuthenticationOk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use stepgate_scram::{ChannelBinding, ClientExchange, Error, StoredCredential};
use stepgate_testpg::{Options, Postgres};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const BOT_PASSWORD: &str = "sgt_7Hq2-Lm9~Xv4 Pw8!Zr3";

/// Opens a TLS connection to the server (SSLRequest, then a TLS handshake
/// that checks the certificate against `ca_der`) and returns it with the
/// channel binding of the certificate the server presented.
fn connect_tls(
    port: u16,
    ca_der: &[u8],
) -> (
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    ChannelBinding,
) {
    let mut tcp = connect(port);
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&80_877_103u32.to_be_bytes()); // SSLRequest code
    tcp.write_all(&request).unwrap();
    let mut answer = [0; 1];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], b'S', "server refused TLS");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).unwrap();
    }
    let certificate = connection.peer_certificates().unwrap()[0].clone();
    let binding = ChannelBinding::from_certificate(&certificate).unwrap();
    assert_eq!(
        binding.certificate_hash().len(),
        48,
        "a SHA-384 certificate has a SHA-384 binding"
    );
    (rustls::StreamOwned::new(connection, tcp), binding)
}

/// A backend message: its type byte and body.
struct BackendMessage {
    kind: u8,
    body: Vec<u8>,
}

fn read_message(stream: &mut impl Read) -> BackendMessage {
    let mut header = [0; 5];
    stream.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!((4..1 << 20).contains(&len), "bad message length {len}");
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).unwrap();
    BackendMessage {
        kind: header[0],
        body,
    }
}

/// Writes a frontend message with a type byte.
fn write_message(stream: &mut impl Write, kind: u8, body: &[u8]) {
    let mut message = vec![kind];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    stream.write_all(&message).unwrap();
}

fn write_startup(stream: &mut impl Write, user: &str) {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (name, value) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = (body.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message).unwrap();
}

/// Returns the authentication request code and its data, or panics with
/// the server's error.
fn read_authentication(stream: &mut impl Read) -> (u32, Vec<u8>) {
    let message = read_message(stream);
    match message.kind {
        b'R' => {
            let code = u32::from_be_bytes(message.body[..4].try_into().unwrap());
            (code, message.body[4..].to_vec())
        }
        b'E' => panic!("server error: {}", error_fields(&message.body)),
        other => panic!("unexpected message type {:?}", other as char),
    }
}

/// Formats the fields of an ErrorResponse as "S=... C=... M=...".
fn error_fields(body: &[u8]) -> String {
    body.split(|byte| *byte == 0)
        .filter(|field| !field.is_empty())
        .map(|field| {
            format!(
                "{}={}",
                field[0] as char,
                String::from_utf8_lossy(&field[1..])
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Returns "SQLSTATE: message" from the fields of an ErrorResponse.
fn sqlstate_and_message(body: &[u8]) -> String {
    let field = |code: u8| {
        body.split(|byte| *byte == 0)
            .find_map(|field| field.strip_prefix(&[code]))
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default()
    };
    format!("{}: {}", field(b'C'), field(b'M'))
}

/// Returns PostgreSQL's rejection of a wrong password, or of any password
/// for a role that does not exist; 28P01 is invalid_password.
fn bad_password(user: &str) -> Login {
    Login::Rejected(format!(
        "28P01: password authentication failed for user \"{user}\""
    ))
}

/// Result of a login attempt that reached the server's verdict.
#[derive(Debug, PartialEq)]
enum Login {
    /// The server sent AuthenticationOk and ReadyForQuery, after the client
    /// verified its server signature.
    Accepted,
    /// The server sent an ErrorResponse during the SASL exchange, shown as
    /// "SQLSTATE: message".
    Rejected(String),
}

/// Opens a TCP connection to the server with I/O timeouts.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Logs in as `user` with `password` and this crate's client over a plain
/// TCP connection.
fn login(port: u16, user: &str, password: &str) -> Result<Login, Error> {
    let mut stream = connect(port);
    let attempt = Attempt {
        user,
        password,
        expected_mechanisms: &["SCRAM-SHA-256"],
        offered_to_client: &["SCRAM-SHA-256"],
        channel_binding: None,
    };
    login_over(&mut stream, &attempt)
}

/// One login attempt.
struct Attempt<'a> {
    user: &'a str,
    password: &'a str,
    /// Mechanisms the server must advertise.
    expected_mechanisms: &'a [&'a str],
    /// Mechanisms passed to the client's negotiation. A test of downgrade
    /// protection leaves SCRAM-SHA-256-PLUS out.
    offered_to_client: &'a [&'a str],
    channel_binding: Option<ChannelBinding>,
}

/// Runs the startup and SASL exchange on an open stream.
fn login_over(stream: &mut (impl Read + Write), attempt: &Attempt<'_>) -> Result<Login, Error> {
    write_startup(stream, attempt.user);

    let (code, data) = read_authentication(stream);
    assert_eq!(code, 10, "expected AuthenticationSASL");
    let mechanisms: Vec<&str> = data
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| std::str::from_utf8(name).unwrap())
        .collect();
    assert_eq!(mechanisms, attempt.expected_mechanisms);

    let mut client = ClientExchange::negotiate(
        attempt.offered_to_client.iter().copied(),
        attempt.password,
        attempt.channel_binding.clone(),
    )?;
    let client_first = client.client_first()?;
    let mut initial = client.mechanism().name().as_bytes().to_vec();
    initial.push(0);
    initial.extend_from_slice(&(client_first.len() as u32).to_be_bytes());
    initial.extend_from_slice(client_first.as_bytes());
    write_message(stream, b'p', &initial);

    let message = read_message(stream);
    if message.kind == b'E' {
        return Ok(Login::Rejected(sqlstate_and_message(&message.body)));
    }
    assert_eq!(message.kind, b'R');
    assert_eq!(
        message.body[..4],
        11u32.to_be_bytes(),
        "expected AuthenticationSASLContinue"
    );
    let server_first = &message.body[4..];
    let client_final = client.handle_server_first(server_first)?;
    write_message(stream, b'p', client_final.as_bytes());

    let message = read_message(stream);
    if message.kind == b'E' {
        return Ok(Login::Rejected(sqlstate_and_message(&message.body)));
    }
    assert_eq!(message.kind, b'R');
    assert_eq!(message.body[..4], 12u32.to_be_bytes(), "expected SASLFinal");
    client.handle_server_final(&message.body[4..])?;
    let (code, _) = read_authentication(stream);
    assert_eq!(code, 0, "expected AuthenticationOk");
    loop {
        let message = read_message(stream);
        match message.kind {
            b'Z' => break,
            b'E' => panic!("server error: {}", error_fields(&message.body)),
            _ => {}
        }
    }
    write_message(stream, b'X', &[]);
    Ok(Login::Accepted)
}

#[test]
fn postgres_credentials_and_login() {
    let Some(postgres) = Postgres::start(Options::default()) else {
        return;
    };

    // The server hashes the password itself; this crate reads the result.
    postgres.create_role("bot", BOT_PASSWORD);
    let rolpassword = postgres.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'bot'");
    assert!(
        rolpassword.starts_with("SCRAM-SHA-256$4096:"),
        "{rolpassword}"
    );
    let credential = StoredCredential::parse(&rolpassword).unwrap();
    assert_eq!(credential.iterations(), 4096);
    assert_eq!(credential.format(), rolpassword);
    assert!(credential.verify_password(BOT_PASSWORD));
    assert!(!credential.verify_password("sgt_wrong"));

    // This crate hashes the password; the server stores the text as is and
    // must accept a login with the password.
    let ours = StoredCredential::generate("sgt_ours-5Kd9", 8192).unwrap();
    postgres.sql(&format!(
        "CREATE ROLE ours LOGIN PASSWORD '{}'",
        ours.format()
    ));
    let stored = postgres.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'ours'");
    assert_eq!(stored, ours.format());

    assert_eq!(
        login(postgres.port(), "bot", BOT_PASSWORD).unwrap(),
        Login::Accepted
    );
    assert_eq!(
        login(postgres.port(), "ours", "sgt_ours-5Kd9").unwrap(),
        Login::Accepted
    );
    assert_eq!(
        login(postgres.port(), "bot", "sgt_wrong").unwrap(),
        bad_password("bot")
    );
    assert_eq!(
        login(postgres.port(), "ours", BOT_PASSWORD).unwrap(),
        bad_password("ours")
    );
    // PostgreSQL runs a mock exchange for a role that does not exist, and
    // fails it at the proof like a wrong password.
    assert_eq!(
        login(postgres.port(), "nobody", BOT_PASSWORD).unwrap(),
        bad_password("nobody")
    );
}

#[test]
fn postgres_channel_binding_over_tls() {
    let Some(postgres) = Postgres::start(Options {
        tls: true,
        ..Options::default()
    }) else {
        return;
    };
    let ca_der = &postgres.certificates().unwrap().ca_der;
    postgres.create_role("bot", BOT_PASSWORD);
    let both = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"];

    // SCRAM-SHA-256-PLUS bound to the certificate the server presented.
    let (mut stream, binding) = connect_tls(postgres.port(), ca_der);
    let attempt = Attempt {
        user: "bot",
        password: BOT_PASSWORD,
        expected_mechanisms: &both,
        offered_to_client: &both,
        channel_binding: Some(binding.clone()),
    };
    assert_eq!(login_over(&mut stream, &attempt).unwrap(), Login::Accepted);

    // The same with a wrong password.
    let (mut stream, _) = connect_tls(postgres.port(), ca_der);
    let wrong_password = Attempt {
        password: "sgt_wrong",
        ..attempt
    };
    assert_eq!(
        login_over(&mut stream, &wrong_password).unwrap(),
        bad_password("bot")
    );

    // Bound to another certificate, as a man in the middle with its own
    // certificate would be.
    let other = ChannelBinding::tls_server_end_point(vec![0x42; 48]).unwrap();
    let (mut stream, _) = connect_tls(postgres.port(), ca_der);
    let wrong_binding = Attempt {
        password: BOT_PASSWORD,
        channel_binding: Some(other),
        ..wrong_password
    };
    assert_eq!(
        login_over(&mut stream, &wrong_binding).unwrap(),
        Login::Rejected("28000: SCRAM channel binding check failed".into())
    );

    // A client without channel binding uses SCRAM-SHA-256 with the n flag.
    let (mut stream, _) = connect_tls(postgres.port(), ca_der);
    let unbound = Attempt {
        channel_binding: None,
        ..wrong_binding
    };
    assert_eq!(login_over(&mut stream, &unbound).unwrap(), Login::Accepted);

    // A client that could bind but was shown only SCRAM-SHA-256 sends the y
    // flag, and the server, which does offer PLUS, detects the downgrade.
    let (mut stream, binding) = connect_tls(postgres.port(), ca_der);
    let downgraded = Attempt {
        offered_to_client: &["SCRAM-SHA-256"],
        channel_binding: Some(binding),
        ..unbound
    };
    assert_eq!(
        login_over(&mut stream, &downgraded).unwrap(),
        Login::Rejected("28000: SCRAM channel binding negotiation error".into())
    );
}
