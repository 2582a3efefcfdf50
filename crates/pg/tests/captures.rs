//! Decodes real PostgreSQL traffic from packet captures (see
//! `testdata/pg-wire/README.md`) and checks that every message encodes back
//! to exactly the bytes it was decoded from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::pcap::Connection;
use stepgate_pg::startup::{ServerStartup, StartupConfig, StartupError, StartupStep};
use stepgate_pg::{
    Authentication, BackendDecoder, BackendMessage, DecodeError, Direction, EncryptionResponse,
    Framing, FrontendDecoder, FrontendMessage, SaslInitialResponse, StartupPacket,
    TransactionStatus, TypeByte, parse_password,
};

/// Every message of one connection, in order per direction.
#[derive(Debug)]
struct Transcript {
    startup: Vec<StartupPacket>,
    encryption: Vec<EncryptionResponse>,
    frontend: Vec<FrontendMessage>,
    backend: Vec<BackendMessage>,
    /// Client bytes after an encryption request the server accepted.
    encrypted_client_bytes: BytesMut,
}

/// Decodes one connection. Startup packets and encryption responses are
/// round-tripped like messages. Decoding stops after an accepted
/// encryption request, because what follows is TLS.
fn transcript(connection: &Connection) -> Transcript {
    let decoder = FrontendDecoder::default();
    let backend_decoder = BackendDecoder::default();
    let mut client = BytesMut::from(&connection.client_to_server[..]);
    let mut server = BytesMut::from(&connection.server_to_client[..]);
    let mut transcript = Transcript {
        startup: Vec::new(),
        encryption: Vec::new(),
        frontend: Vec::new(),
        backend: Vec::new(),
        encrypted_client_bytes: BytesMut::new(),
    };
    loop {
        let before = client.clone();
        let packet = decoder
            .decode_startup(&mut client)
            .unwrap()
            .expect("complete startup packet");
        let mut encoded = BytesMut::new();
        packet.encode(&mut encoded).unwrap();
        assert_eq!(&encoded[..], &before[..before.len() - client.len()]);
        let is_encryption_request = matches!(
            packet,
            StartupPacket::SslRequest | StartupPacket::GssEncRequest
        );
        transcript.startup.push(packet);
        if !is_encryption_request {
            break;
        }
        let response = backend_decoder
            .decode_encryption_response(&mut server)
            .unwrap()
            .expect("response to the encryption request");
        transcript.encryption.push(response);
        if response != EncryptionResponse::Refuse {
            transcript.encrypted_client_bytes = client;
            return transcript;
        }
    }
    transcript.frontend = common::roundtrip_frontend(&mut client);
    transcript.backend = common::roundtrip_backend(&mut server);
    transcript
}

fn only_connection(name: &str) -> Transcript {
    let connections = common::capture(name);
    assert_eq!(connections.len(), 1, "{name}: connections");
    transcript(&connections[0])
}

fn startup_user(transcript: &Transcript) -> &str {
    match transcript.startup.last() {
        Some(StartupPacket::Startup(message)) => message.parameter("user").unwrap(),
        other => panic!("last startup packet is {other:?}"),
    }
}

fn command_tags(transcript: &Transcript) -> Vec<&str> {
    transcript
        .backend
        .iter()
        .filter_map(|message| match message {
            BackendMessage::CommandComplete(tag) => Some(tag.as_str()),
            _ => None,
        })
        .collect()
}

fn queries(transcript: &Transcript) -> Vec<&str> {
    transcript
        .frontend
        .iter()
        .filter_map(|message| match message {
            FrontendMessage::Query(query) => Some(query.as_str()),
            _ => None,
        })
        .collect()
}

fn error_codes(transcript: &Transcript) -> Vec<&str> {
    transcript
        .backend
        .iter()
        .filter_map(|message| match message {
            BackendMessage::ErrorResponse(fields) => fields.code(),
            _ => None,
        })
        .collect()
}

fn has_authentication(transcript: &Transcript, request: &Authentication) -> bool {
    transcript
        .backend
        .contains(&BackendMessage::Authentication(request.clone()))
}

/// Checks the SCRAM exchange that psql runs against PostgreSQL: the server
/// offers SCRAM-SHA-256 and the client's first response names it.
fn assert_scram_start(transcript: &Transcript) {
    assert_eq!(
        transcript.backend.first(),
        Some(&BackendMessage::Authentication(Authentication::Sasl(vec![
            "SCRAM-SHA-256".to_owned()
        ])))
    );

    let Some(FrontendMessage::PasswordMessage(body)) = transcript.frontend.first() else {
        panic!("first frontend message: {:?}", transcript.frontend.first());
    };

    let initial = SaslInitialResponse::parse(body).unwrap();
    assert_eq!(initial.mechanism, "SCRAM-SHA-256");
    assert!(initial.data.as_ref().unwrap().starts_with(b"n,,n=,r="));
    assert_eq!(initial_roundtrip(&initial), *body);
}

fn initial_roundtrip(initial: &SaslInitialResponse) -> bytes::Bytes {
    match initial.to_message().unwrap() {
        FrontendMessage::PasswordMessage(body) => body,
        other => panic!("SASLInitialResponse built {other:?}"),
    }
}

fn assert_session_ready(transcript: &Transcript) {
    assert!(has_authentication(transcript, &Authentication::Ok));
    assert!(
        transcript
            .backend
            .iter()
            .any(|message| matches!(message, BackendMessage::BackendKeyData { .. }))
    );

    assert!(transcript.backend.iter().any(|message| matches!(
        message,
        BackendMessage::ParameterStatus { name, .. } if name == "server_version"
    )));
}

#[test]
fn psql_login_scram() {
    let transcript = only_connection("psql-login.pcap");
    assert_eq!(transcript.startup[0], StartupPacket::SslRequest);
    assert_eq!(transcript.encryption, [EncryptionResponse::Refuse]);
    assert_eq!(startup_user(&transcript), "zeek");
    assert_scram_start(&transcript);
    assert_session_ready(&transcript);
    assert_eq!(
        transcript.backend.last(),
        Some(&BackendMessage::ReadyForQuery(TransactionStatus::Idle))
    );
}

#[test]
fn psql_select_now() {
    let transcript = only_connection("psql-select-now.pcap");
    assert_scram_start(&transcript);
    assert_session_ready(&transcript);
    assert_eq!(queries(&transcript), ["select now()"]);
    assert_eq!(
        transcript.frontend.last(),
        Some(&FrontendMessage::Terminate)
    );

    let description = transcript
        .backend
        .iter()
        .find_map(|message| match message {
            BackendMessage::RowDescription(fields) => Some(fields),
            _ => None,
        })
        .unwrap();
    assert_eq!(description.len(), 1);
    assert_eq!(description[0].name, "now");
    // 1184 is timestamptz.
    assert_eq!(description[0].type_oid, 1184);
    assert_eq!(command_tags(&transcript), ["SELECT 1"]);
}

#[test]
fn psql_wrong_password() {
    for name in ["psql-login-wrong.pcap", "psql-login-fail.pcap"] {
        let transcript = only_connection(name);
        assert_scram_start(&transcript);
        let Some(BackendMessage::ErrorResponse(fields)) = transcript.backend.last() else {
            panic!("{name}: last message {:?}", transcript.backend.last());
        };
        assert_eq!(fields.severity(), Some("FATAL"), "{name}");
        assert_eq!(fields.code(), Some("28P01"), "{name}");
        assert!(
            fields
                .message()
                .unwrap()
                .starts_with("password authentication failed"),
            "{name}"
        );
        assert!(!has_authentication(&transcript, &Authentication::Ok));
    }
}

#[test]
fn psql_without_sslrequest() {
    let connections = common::capture("psql-login-no-sslrequest.pcap");
    assert_eq!(connections.len(), 2);
    let abandoned = transcript(&connections[0]);
    assert!(matches!(abandoned.startup[..], [StartupPacket::Startup(_)]));
    assert!(abandoned.frontend.is_empty());
    assert_eq!(abandoned.backend.len(), 1);
    let completed = transcript(&connections[1]);
    assert!(matches!(completed.startup[..], [StartupPacket::Startup(_)]));
    assert_scram_start(&completed);
    assert_session_ready(&completed);
    assert_eq!(completed.frontend.last(), Some(&FrontendMessage::Terminate));
}

#[test]
fn psql_md5_against_rds() {
    for name in [
        "psql-aws-ssl-disable.pcap",
        "psql-aws-ssl-disable-15432.pcap",
    ] {
        let transcript = only_connection(name);
        assert!(transcript.encryption.is_empty(), "{name}");
        assert!(matches!(
            transcript.backend.first(),
            Some(BackendMessage::Authentication(
                Authentication::Md5Password { .. }
            ))
        ));
        let Some(FrontendMessage::PasswordMessage(body)) = transcript.frontend.first() else {
            panic!(
                "{name}: first frontend message {:?}",
                transcript.frontend.first()
            );
        };
        let hashed = parse_password(body).unwrap();
        // "md5" followed by 32 hex digits.
        assert_eq!(hashed.len(), 35, "{name}");
        assert!(hashed.starts_with("md5"), "{name}");
        assert_session_ready(&transcript);
        assert_eq!(queries(&transcript), ["select now()"], "{name}");
        assert_eq!(command_tags(&transcript), ["SELECT 1"], "{name}");
    }
}

#[test]
fn psql_ddl_and_dml() {
    let transcript = only_connection("psql-create-insert-select-delete-drop.pcap");
    assert_eq!(
        queries(&transcript),
        [
            "DROP TABLE IF EXISTS t;",
            "CREATE TABLE IF NOT EXISTS t (i int, s varchar, t time);",
            "INSERT INTO t VALUES (42, 'forty-two', now());",
            "INSERT INTO t VALUES (86, 'eighty-six', now());",
            "SELECT * from t;",
            "DELETE FROM t;",
            "DROP TABLE t;",
        ]
    );

    assert_eq!(
        command_tags(&transcript),
        [
            "DROP TABLE",
            "CREATE TABLE",
            "INSERT 0 1",
            "INSERT 0 1",
            "SELECT 2",
            "DELETE 2",
            "DROP TABLE",
        ]
    );

    // DROP TABLE IF EXISTS on a missing table sends a notice.
    assert!(transcript.backend.iter().any(|message| matches!(
        message,
        BackendMessage::NoticeResponse(fields) if fields.code() == Some("00000")
    )));
    let rows: Vec<&Vec<Option<bytes::Bytes>>> = transcript
        .backend
        .iter()
        .filter_map(|message| match message {
            BackendMessage::DataRow(values) => Some(values),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0].as_deref(), Some(&b"42"[..]));
    assert_eq!(rows[1][1].as_deref(), Some(&b"eighty-six"[..]));
}

#[test]
fn psql_failing_statements() {
    let transcript = only_connection("psql-insert-fail-drop-fail.pcap");
    assert_eq!(queries(&transcript).len(), 5);
    // 42804: datatype_mismatch on the INSERT, 42P01: undefined_table on the
    // second DROP.
    assert_eq!(error_codes(&transcript), ["42804", "42P01"]);
    assert_eq!(
        command_tags(&transcript),
        ["DROP TABLE", "CREATE TABLE", "DROP TABLE"]
    );
}

#[test]
fn psql_sslrequest_accepted() {
    for name in [
        "psql-aws-ssl-preferred.pcap",
        "psql-aws-ssl-require.pcap",
        "psql-aws-ssl-require-15432.pcap",
    ] {
        let transcript = only_connection(name);
        assert_eq!(transcript.startup, [StartupPacket::SslRequest], "{name}");
        assert_eq!(
            transcript.encryption,
            [EncryptionResponse::AcceptSsl],
            "{name}"
        );
        // 0x16 is a TLS handshake record: the ClientHello.
        assert_eq!(
            transcript.encrypted_client_bytes.first(),
            Some(&0x16),
            "{name}"
        );
    }
}

/// A TLS-capable ServerStartup that receives the client's SSLRequest and
/// ClientHello in one read must fail rather than decode the ClientHello.
#[test]
fn ssl_capture_pipelined_bytes_rejected() {
    let connections = common::capture("psql-aws-ssl-require.pcap");
    let client = &connections[0].client_to_server;
    let config = StartupConfig {
        tls_available: true,
        ..StartupConfig::default()
    };

    let mut startup = ServerStartup::new(config);
    startup.feed(client);
    let mut output = BytesMut::new();
    let error = startup.advance(&mut output).unwrap_err();
    assert!(matches!(error, StartupError::DataAfterSslRequest { .. }));
    assert!(output.is_empty(), "sent {output:?}");

    // Read in two steps, the ClientHello arrives after 'S'; it is still
    // plaintext read outside TLS, so the switch fails.
    let mut startup = ServerStartup::new(config);
    startup.feed(&client[..8]);
    let mut output = BytesMut::new();
    let StartupStep::StartTls(upgrade) = startup.advance(&mut output).unwrap() else {
        panic!("SSLRequest did not start TLS");
    };

    assert_eq!(&output[..], b"S");
    startup.feed(&client[8..]);
    let error = startup.tls_established(upgrade).unwrap_err();
    assert!(matches!(error, StartupError::DataAfterSslRequest { .. }));
}

/// Runs the server startup state machine over the client side of every
/// plaintext login.
#[test]
fn startup_machine_on_captures() {
    let cases = [
        ("psql-login.pcap", "zeek"),
        ("psql-select-now.pcap", "zeek"),
        ("psql-login-wrong.pcap", "zeek"),
        ("psql-login-fail.pcap", "postgres"),
        ("psql-login-no-sslrequest.pcap", "zeek"),
        ("psql-aws-ssl-disable.pcap", "zeek"),
        ("psql-create-insert-select-delete-drop.pcap", "postgres"),
        ("psql-insert-fail-drop-fail.pcap", "postgres"),
    ];

    for (name, user) in cases {
        for connection in common::capture(name) {
            let mut startup = ServerStartup::new(StartupConfig::default());
            startup.feed(&connection.client_to_server);
            let mut output = BytesMut::new();
            let step = startup.advance(&mut output).unwrap();
            let StartupStep::Startup(info) = step else {
                panic!("{name}: {step:?}");
            };
            assert_eq!(info.user, user, "{name}");
            assert!(!info.tls, "{name}");
            assert!(
                info.parameters
                    .iter()
                    .any(|(key, value)| key == "application_name" && value == "psql"),
                "{name}"
            );
            // The only output is the response 'N' to an SSLRequest, if any.
            assert!(output.is_empty() || &output[..] == b"N", "{name}");
            // What remains is the client's messages after startup.
            let mut rest = startup.into_remaining();
            common::roundtrip_frontend(&mut rest);
        }
    }
}

#[test]
fn bad_startup_message() {
    let connections = common::capture("bad-startup-message-1.pcap");
    let mut client = BytesMut::from(&connections[0].client_to_server[..]);
    let error = FrontendDecoder::default()
        .decode_startup(&mut client)
        .unwrap_err();
    assert_eq!(
        error,
        DecodeError::LengthTooSmall {
            framing: Framing::Startup,
            length: 3,
            min: 8
        }
    );

    assert_eq!(
        error.to_string(),
        "invalid startup packet length 3: the minimum is 8"
    );

    // The capturing test server's reply has a length word of 20 where its
    // fields take 23 bytes, so the message ends inside "Test Error".
    let mut server = BytesMut::from(&connections[0].server_to_client[..]);
    let error = BackendDecoder::default().decode(&mut server).unwrap_err();
    assert_eq!(
        error,
        DecodeError::MissingNul {
            message: "ErrorResponse",
            field: "field value"
        }
    );

    let mut startup = ServerStartup::new(StartupConfig::default());
    startup.feed(&connections[0].client_to_server);
    let mut output = BytesMut::new();
    let error = startup.advance(&mut output).unwrap_err();
    assert!(matches!(error, StartupError::Decode(_)));
    let reply = BackendDecoder::default()
        .decode(&mut output)
        .unwrap()
        .unwrap();
    let BackendMessage::ErrorResponse(fields) = reply else {
        panic!("reply {reply:?}");
    };

    assert_eq!(fields.code(), Some("08P01"));
}

#[test]
fn bad_backend_message() {
    let connections = common::capture("bad-backend-message-1.pcap");
    let mut server = BytesMut::from(&connections[0].server_to_client[..]);
    let error = BackendDecoder::default().decode(&mut server).unwrap_err();
    assert_eq!(
        error,
        DecodeError::LengthTooSmall {
            framing: Framing::Message(TypeByte(b'Z')),
            length: 1,
            min: 4
        }
    );

    assert_eq!(
        error.to_string(),
        "invalid message of type 'Z' (0x5a) length 1: the minimum is 4"
    );
}

#[test]
fn http_on_postgres_port() {
    let connections = common::capture("http-on-port-5432.pcap");
    let mut client = BytesMut::from(&connections[0].client_to_server[..]);
    let error = FrontendDecoder::default()
        .decode_startup(&mut client)
        .unwrap_err();
    // "GET " read as a length word.
    assert!(
        matches!(error, DecodeError::TooLong { framing: Framing::Startup, length, max: 10_004 }
            if length == 0x4745_5420),
        "{error}"
    );

    let mut client = BytesMut::from(&connections[0].client_to_server[..]);
    let error = FrontendDecoder::default().decode(&mut client).unwrap_err();
    assert_eq!(
        error,
        DecodeError::UnknownMessageType {
            direction: Direction::Frontend,
            type_byte: TypeByte(b'G')
        }
    );

    assert_eq!(
        error.to_string(),
        "unknown frontend message type 'G' (0x47)"
    );

    // "HTTP/1.1" read as a CopyOutResponse whose length is "TTP/".
    let mut server = BytesMut::from(&connections[0].server_to_client[..]);
    let error = BackendDecoder::default().decode(&mut server).unwrap_err();
    assert!(
        matches!(error, DecodeError::TooLong { length, .. } if length == 0x5454_502f),
        "{error}"
    );
}

#[test]
fn mysql_on_postgres_port() {
    let connections = common::capture("mysql-on-port-5432.pcap");
    assert_eq!(connections.len(), 1);
    let mut client = BytesMut::from(&connections[0].client_to_server[..]);
    let error = FrontendDecoder::default()
        .decode_startup(&mut client)
        .unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::LengthTooSmall {
                framing: Framing::Startup,
                length,
                ..
            } if length < 0
        ),
        "{error}"
    );

    // The MySQL greeting starts with 'I' and a length of 10: an
    // EmptyQueryResponse with six bytes too many.
    let mut server = BytesMut::from(&connections[0].server_to_client[..]);
    let error = BackendDecoder::default().decode(&mut server).unwrap_err();
    assert_eq!(
        error,
        DecodeError::TrailingBytes {
            message: "EmptyQueryResponse",
            count: 6
        }
    );
}
