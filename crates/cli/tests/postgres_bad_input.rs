//! Bad input to the gateway's PostgreSQL listener, written byte by byte
//! over TCP: oversized length words, unknown message types and protocol
//! versions, a plaintext StartupMessage sent together with SSLRequest,
//! refused startup parameters, broken SCRAM exchanges and random bytes.
//! Every case must end in an ErrorResponse or a closed connection, and the
//! gateway must keep serving psql afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use support::oathtool;
use support::pg::{DATABASE, ROLE_PASSWORD, Setup, setup, stderr, tail};

/// Protocol version 3.0 as sent in a StartupMessage.
const PROTOCOL_3_0: u32 = 3 << 16;
/// Request code of SSLRequest, sent in place of a protocol version.
const SSL_REQUEST_CODE: u32 = 80_877_103;
/// How long a read waits before the case counts as hung.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

// ----- encoding -----

fn startup_packet(version: u32, parameters: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (name, value) in parameters {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = u32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    packet.extend_from_slice(&body);
    packet
}

fn login_parameters() -> Vec<(&'static str, &'static str)> {
    vec![("user", "ci-bot"), ("database", DATABASE)]
}

/// Encodes a regular message: type byte, length word, body.
fn message(type_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![type_byte];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&i32::try_from(data.len()).unwrap().to_be_bytes());
    body.extend_from_slice(data);
    message(b'p', &body)
}

// ----- decoding -----

/// One backend message: type byte and body.
#[derive(Debug)]
struct Backend {
    type_byte: u8,
    body: Vec<u8>,
}

impl Backend {
    /// Returns the authentication request code of an `R` message.
    fn auth_code(&self) -> Option<u32> {
        (self.type_byte == b'R').then(|| u32::from_be_bytes(self.body[..4].try_into().unwrap()))
    }

    /// Parses the fields of an ErrorResponse, keyed by field type: `S` severity,
    /// `C` SQLSTATE, `M` message.
    fn error_fields(&self) -> HashMap<char, String> {
        assert_eq!(self.type_byte, b'E', "not an ErrorResponse: {self:?}");
        self.body
            .split(|byte| *byte == 0)
            .filter(|field| !field.is_empty())
            .map(|field| {
                (
                    char::from(field[0]),
                    String::from_utf8_lossy(&field[1..]).into_owned(),
                )
            })
            .collect()
    }
}

/// Reads one backend message; `None` when the gateway closed the
/// connection. Panics when nothing arrives within [`READ_TIMEOUT`].
fn read_message(stream: &mut TcpStream, case: &str) -> Option<Backend> {
    let mut head = [0u8; 5];
    match stream.read_exact(&mut head) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::UnexpectedEof => return None,
        Err(err) if err.kind() == ErrorKind::ConnectionReset => return None,
        Err(err) => panic!("{case}: no answer and no close within {READ_TIMEOUT:?}: {err}"),
    }
    let length = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
    assert!(
        (4..1 << 20).contains(&length),
        "{case}: backend message {:?} with length {length}",
        char::from(head[0])
    );
    let mut body = vec![0u8; length - 4];
    stream
        .read_exact(&mut body)
        .unwrap_or_else(|err| panic!("{case}: truncated backend message: {err}"));
    Some(Backend {
        type_byte: head[0],
        body,
    })
}

/// Reads until the gateway closes the connection; returns every message.
fn read_to_close(stream: &mut TcpStream, case: &str) -> Vec<Backend> {
    let mut messages = Vec::new();
    while let Some(message) = read_message(stream, case) {
        assert!(messages.len() < 100, "{case}: endless answer {messages:?}");
        messages.push(message);
    }
    messages
}

/// Reads until the gateway sends an ErrorResponse, checks that no message
/// before it is an authentication success (`R` with code 0) or
/// ReadyForQuery, and that the gateway closes the connection after it.
/// Returns the error's fields.
fn expect_error(stream: &mut TcpStream, case: &str) -> HashMap<char, String> {
    loop {
        let message = read_message(stream, case)
            .unwrap_or_else(|| panic!("{case}: connection closed without an ErrorResponse"));
        assert_ne!(message.auth_code(), Some(0), "{case}: login succeeded");
        assert_ne!(message.type_byte, b'Z', "{case}: ReadyForQuery sent");
        if message.type_byte == b'E' {
            let error = message.error_fields();
            assert_eq!(error[&'S'], "FATAL", "{case}: {error:?}");
            let rest = read_to_close(stream, case);
            assert!(rest.is_empty(), "{case}: sent after the error: {rest:?}");
            return error;
        }
    }
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends a StartupMessage as ci-bot and runs the SCRAM-SHA-256 exchange
/// with `password` up to the server-first message. Returns the stream and
/// the SCRAM state, ready for the client-final message.
fn start_scram(port: u16, parameters: &[(&str, &str)], password: &str) -> (TcpStream, ScramSha256) {
    let mut stream = connect(port);
    stream
        .write_all(&startup_packet(PROTOCOL_3_0, parameters))
        .unwrap();
    let request = read_message(&mut stream, "login").expect("AuthenticationSASL");
    assert_eq!(request.auth_code(), Some(10), "{request:?}");
    assert!(
        request
            .body
            .windows(b"SCRAM-SHA-256\0".len())
            .any(|window| window == b"SCRAM-SHA-256\0"),
        "SCRAM-SHA-256 not offered: {request:?}"
    );
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    stream
        .write_all(&sasl_initial_response("SCRAM-SHA-256", scram.message()))
        .unwrap();
    let server_first = read_message(&mut stream, "login").expect("AuthenticationSASLContinue");
    assert_eq!(server_first.auth_code(), Some(11), "{server_first:?}");
    scram.update(&server_first.body[4..]).unwrap();
    (stream, scram)
}

/// Logs in as ci-bot with the token and reads up to ReadyForQuery.
fn login(setup: &Setup) -> TcpStream {
    let (mut stream, mut scram) = start_scram(setup.pg_port, &login_parameters(), &setup.token);
    stream.write_all(&message(b'p', scram.message())).unwrap();
    loop {
        let message = read_message(&mut stream, "login").unwrap_or_else(|| {
            panic!(
                "login: connection closed\ngateway log:\n{}",
                tail(&setup.gateway.log())
            )
        });
        match message.type_byte {
            b'R' if message.auth_code() == Some(12) => scram.finish(&message.body[4..]).unwrap(),
            b'E' => panic!("login failed: {:?}", message.error_fields()),
            b'Z' => return stream,
            _ => {}
        }
    }
}

/// Logs in with the right token and startup `parameters` that the gateway
/// or the server rejects. Returns the fields of the FATAL error, which may
/// come before or after authentication succeeded but never with
/// ReadyForQuery.
fn login_with_bad_parameter(
    setup: &Setup,
    parameters: &[(&str, &str)],
    case: &str,
) -> HashMap<char, String> {
    let (mut stream, scram) = start_scram(setup.pg_port, parameters, &setup.token);
    stream.write_all(&message(b'p', scram.message())).unwrap();
    let messages = read_to_close(&mut stream, case);
    assert!(
        !messages.iter().any(|message| message.type_byte == b'Z'),
        "{case}: ReadyForQuery sent: {messages:?}"
    );
    let error = messages
        .iter()
        .find(|message| message.type_byte == b'E')
        .unwrap_or_else(|| panic!("{case}: no ErrorResponse in {messages:?}"))
        .error_fields();
    assert_eq!(error[&'S'], "FATAL", "{case}: {error:?}");
    error
}

/// Checks that psql still logs in and runs a statement. Failed logins
/// raise the identity's risk, so the statement may need a step-up first;
/// then the test completes the step-up in a second session.
fn assert_still_serves(setup: &Setup) {
    let output = setup.psql("SELECT 1");
    if output.status.success() {
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
        return;
    }
    let message = stderr(&output);
    let challenge = message
        .split_whitespace()
        .find_map(|word| word.strip_prefix("challenge_id="))
        .unwrap_or_else(|| {
            panic!(
                "psql SELECT 1 failed: {message}\ngateway log:\n{}",
                tail(&setup.gateway.log())
            )
        });
    let script = format!(
        "SELECT stepgate.step_up('{challenge}', '{}');\nSELECT 1;\n",
        oathtool(&setup.totp)
    );
    let answered = setup.psql_script(&script);
    let stdout = String::from_utf8_lossy(&answered.stdout);
    assert!(
        stdout.contains("totp accepted") && stdout.trim_end().ends_with('1'),
        "step-up and SELECT 1 failed: {stdout} {}",
        stderr(&answered)
    );
}

fn assert_no_secrets_logged(setup: &Setup) {
    let log = setup.gateway.log();
    assert!(!log.contains(&setup.token), "the token reached the log");
    assert!(
        !log.contains(ROLE_PASSWORD),
        "the role password reached the log"
    );
    assert!(
        !log.contains("panicked"),
        "a gateway task panicked:\n{}",
        tail(&log)
    );
}

// ----- tests -----

#[test]
fn bad_startup_packets_rejected() {
    let Some(setup) = setup("") else {
        return;
    };

    // A length word of 0x7fffffff: the gateway must not wait for 2 GiB.
    let case = "startup length 0x7fffffff";
    let mut stream = connect(setup.pg_port);
    let mut packet = 0x7fff_ffffu32.to_be_bytes().to_vec();
    packet.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    stream.write_all(&packet).unwrap();
    let error = expect_error(&mut stream, case);
    assert_eq!(error[&'C'], "08P01", "{case}: {error:?}");
    assert!(error[&'M'].contains("2147483647"), "{case}: {error:?}");

    let case = "protocol 4.0";
    let mut stream = connect(setup.pg_port);
    stream
        .write_all(&startup_packet(4 << 16, &login_parameters()))
        .unwrap();
    let error = expect_error(&mut stream, case);
    // PostgreSQL 15 also rejects an unsupported protocol version with
    // 0A000 (feature_not_supported).
    assert_eq!(error[&'C'], "0A000", "{case}: {error:?}");
    assert!(error[&'M'].contains("protocol 4.0"), "{case}: {error:?}");

    // Only harmless settings pass as startup parameters: an unknown one,
    // and one that would change the role or the meaning of table names,
    // end the session before it starts.
    for (name, value) in [
        ("foo_bar", "1"),
        ("role", "postgres"),
        ("session_authorization", "postgres"),
        ("search_path", "billing"),
    ] {
        let case = format!("startup parameter {name}");
        let mut parameters = login_parameters();
        parameters.push((name, value));
        let error = login_with_bad_parameter(&setup, &parameters, &case);
        assert_eq!(error[&'C'], "0A000", "{case}: {error:?}");
        assert!(
            error[&'M'].contains(&format!("\"{name}\"")),
            "{case}: {error:?}"
        );
    }

    let case = "options=-c role=postgres";
    let mut parameters = login_parameters();
    parameters.push(("options", "-c role=postgres"));
    let error = login_with_bad_parameter(&setup, &parameters, case);
    assert!(error[&'M'].contains("options"), "{case}: {error:?}");

    assert_still_serves(&setup);
    assert_no_secrets_logged(&setup);
}

#[test]
fn broken_scram_exchanges_rejected() {
    let Some(setup) = setup("") else {
        return;
    };

    let case = "wrong token";
    let (mut stream, scram) = start_scram(
        setup.pg_port,
        &login_parameters(),
        "sgt_wrongtokenwrongtoken",
    );
    stream.write_all(&message(b'p', scram.message())).unwrap();
    let error = expect_error(&mut stream, case);
    assert_eq!(error[&'C'], "28P01", "{case}: {error:?}");
    assert!(
        error[&'M'].contains("password authentication failed for user \"ci-bot\""),
        "{case}: {error:?}"
    );

    // The message length is right, but the data length inside declares 100
    // bytes and only 10 follow.
    let case = "truncated SASLInitialResponse";
    let mut stream = connect(setup.pg_port);
    stream
        .write_all(&startup_packet(PROTOCOL_3_0, &login_parameters()))
        .unwrap();
    assert_eq!(
        read_message(&mut stream, case).unwrap().auth_code(),
        Some(10)
    );
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&100i32.to_be_bytes());
    body.extend_from_slice(b"n,,n=,r=ab");
    stream.write_all(&message(b'p', &body)).unwrap();
    let error = expect_error(&mut stream, case);
    assert_eq!(error[&'C'], "08P01", "{case}: {error:?}");
    assert!(
        error[&'M'].contains("SASLInitialResponse"),
        "{case}: {error:?}"
    );

    let case = "SASLInitialResponse cut off inside the mechanism name";
    let mut stream = connect(setup.pg_port);
    stream
        .write_all(&startup_packet(PROTOCOL_3_0, &login_parameters()))
        .unwrap();
    assert_eq!(
        read_message(&mut stream, case).unwrap().auth_code(),
        Some(10)
    );
    stream.write_all(&message(b'p', b"SCRAM-SH")).unwrap();
    let error = expect_error(&mut stream, case);
    assert_eq!(error[&'C'], "08P01", "{case}: {error:?}");
    assert!(
        error[&'M'].contains("SASLInitialResponse"),
        "{case}: {error:?}"
    );

    for garbage in [
        &b"garbage"[..],
        b"c=biws,r=nonsense,p=AAAA",
        b"\xff\xfe\x00\x01",
        b"",
    ] {
        let case = format!("SCRAM client-final {:?}", String::from_utf8_lossy(garbage));
        let (mut stream, _) = start_scram(setup.pg_port, &login_parameters(), &setup.token);
        stream.write_all(&message(b'p', garbage)).unwrap();
        let error = expect_error(&mut stream, &case);
        assert_eq!(error[&'C'], "28P01", "{case}: {error:?}");
    }

    assert_still_serves(&setup);
    assert_no_secrets_logged(&setup);
}

#[test]
fn bad_messages_after_login_rejected() {
    let Some(setup) = setup("") else {
        return;
    };

    // A Query whose length word declares 512 MiB, over the 64 MiB default of
    // max_message_bytes. Only the header is sent.
    let case = "Query of 512 MiB";
    let mut stream = login(&setup);
    let mut header = vec![b'Q'];
    header.extend_from_slice(&(512u32 << 20).to_be_bytes());
    stream.write_all(&header).unwrap();
    let error = expect_error(&mut stream, case);
    assert_eq!(error[&'C'], "08P01", "{case}: {error:?}");
    assert!(error[&'M'].contains("536870912"), "{case}: {error:?}");

    let case = "unknown message type";
    let mut stream = login(&setup);
    stream.write_all(&message(b'!', b"")).unwrap();
    let error = expect_error(&mut stream, case);
    assert_eq!(error[&'C'], "08P01", "{case}: {error:?}");
    assert!(
        error[&'M'].contains("unknown frontend message type"),
        "{case}: {error:?}"
    );

    assert_still_serves(&setup);
    assert_no_secrets_logged(&setup);
}

/// xorshift64*: a small seeded generator, so a failing fuzz run can be
/// repeated.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> usize {
        usize::try_from(self.next() % bound).unwrap()
    }

    /// Returns `min` up to `min + spread - 1` random bytes.
    fn bytes(&mut self, min: usize, spread: u64) -> Vec<u8> {
        let count = min + self.below(spread);
        (0..count).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// Message types a client sends after login, so that most fuzz inputs get
/// past the type check and reach the message decoders.
const FRONTEND_TYPES: &[u8] = b"QPBEDCSHFXdcfp";

#[test]
fn random_bytes_after_login_never_crash() {
    let Some(setup) = setup("") else {
        return;
    };
    let seed = 0x5eed_f022_u64;
    let mut random = Random(seed);
    for round in 0..300 {
        let mut input = Vec::new();
        match round % 3 {
            // Raw bytes.
            0 => input = random.bytes(1, 64),
            // A frontend type byte, a correct length and a random body.
            1 => {
                let type_byte = FRONTEND_TYPES[random.below(FRONTEND_TYPES.len() as u64)];
                let body = random.bytes(0, 48);
                input.extend_from_slice(&message(type_byte, &body));
            }
            // A frontend type byte, a random length and a random body.
            _ => {
                input.push(FRONTEND_TYPES[random.below(FRONTEND_TYPES.len() as u64)]);
                input.extend_from_slice(&random.bytes(4, 40));
            }
        }
        let mut stream = login(&setup);
        stream
            .write_all(&input)
            .unwrap_or_else(|err| panic!("round {round} (seed {seed:#x}): write failed: {err}"));
        // End the input, so a gateway waiting for the rest of a message
        // sees end of file and closes.
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
            Err(err) => panic!(
                "round {round} (seed {seed:#x}, input {input:?}): no close within {READ_TIMEOUT:?}: {err}"
            ),
        }
    }

    assert_still_serves(&setup);
    assert_no_secrets_logged(&setup);
}

fn make_certificate(dir: &Path) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn startup_after_ssl_request_in_same_write_closed() {
    let certificates = tempfile::tempdir().unwrap();
    make_certificate(certificates.path());
    // `setup` appends this to the `[[postgres.identities]]` entry; the
    // table header starts the `[postgres.tls]` table after it.
    let Some(setup) = setup(&format!(
        "\n[postgres.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certificates.path().join("cert.pem").display(),
        certificates.path().join("key.pem").display()
    )) else {
        return;
    };

    // A plaintext StartupMessage right behind SSLRequest, before the TLS
    // handshake: bytes a man in the middle could have added. The gateway
    // must not read them as the start of the session.
    let case = "SSLRequest followed by plaintext StartupMessage";
    let mut stream = connect(setup.pg_port);
    let mut bytes = 8u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    bytes.extend_from_slice(&startup_packet(PROTOCOL_3_0, &login_parameters()));
    stream.write_all(&bytes).unwrap();
    let mut answer = Vec::new();
    let result = stream.read_to_end(&mut answer);
    assert!(
        result.is_ok() || result.as_ref().unwrap_err().kind() == ErrorKind::ConnectionReset,
        "{case}: no close within {READ_TIMEOUT:?}: {result:?}, answer {answer:?}"
    );
    // The gateway closes the connection without answering: no `S`, and no
    // authentication request for the plaintext StartupMessage.
    assert!(answer.is_empty(), "{case}: answer {answer:?}");

    // The gateway accepts SSLRequest alone with `S`, and a TLS handshake
    // would follow; here the client gives up.
    let case = "SSLRequest alone";
    let mut stream = connect(setup.pg_port);
    let mut bytes = 8u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    stream.write_all(&bytes).unwrap();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(first[0], b'S', "{case}");
    drop(stream);

    assert_still_serves(&setup);
    assert_no_secrets_logged(&setup);
}
