//! The server-side startup state machine: encryption requests, cancel
//! requests, protocol versions, parameters and the TLS switch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{BufMut, BytesMut};
use stepgate_pg::startup::{ServerStartup, StartupConfig, StartupError, StartupInfo, StartupStep};
use stepgate_pg::{
    BackendDecoder, BackendMessage, CancelRequest, ErrorFields, ProtocolVersion, StartupMessage,
    StartupPacket,
};

fn packet_bytes(packet: &StartupPacket) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).unwrap();
    buf
}

fn startup_packet(protocol: ProtocolVersion, parameters: &[(&str, &str)]) -> BytesMut {
    packet_bytes(&StartupPacket::Startup(StartupMessage {
        protocol,
        parameters: parameters
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
    }))
}

fn plain() -> ServerStartup {
    ServerStartup::new(StartupConfig::default())
}

fn with_tls() -> ServerStartup {
    ServerStartup::new(StartupConfig {
        tls_available: true,
        ..StartupConfig::default()
    })
}

fn expect_startup(step: StartupStep) -> StartupInfo {
    match step {
        StartupStep::Startup(info) => info,
        other => panic!("expected Startup, got {other:?}"),
    }
}

/// Decodes the ErrorResponse that a failed step wrote to the output.
fn reply_error(output: &mut BytesMut) -> ErrorFields {
    match BackendDecoder::default().decode(output).unwrap() {
        Some(BackendMessage::ErrorResponse(fields)) => fields,
        other => panic!("expected ErrorResponse, got {other:?}"),
    }
}

#[test]
fn plain_startup() {
    let mut startup = plain();
    startup.feed(&startup_packet(
        ProtocolVersion::V3_0,
        &[
            ("user", "ci-bot"),
            ("database", "orders"),
            ("application_name", "deploy"),
            ("client_encoding", "UTF8"),
        ],
    ));

    let mut output = BytesMut::new();
    let info = expect_startup(startup.advance(&mut output).unwrap());
    assert_eq!(info.user, "ci-bot");
    assert_eq!(info.database, "orders");
    assert_eq!(
        info.parameters,
        [
            ("application_name".to_owned(), "deploy".to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
        ]
    );

    assert!(!info.tls);
    assert!(output.is_empty());
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::Finished
    );
}

#[test]
fn database_defaults_to_user() {
    for parameters in [&[("user", "bot")][..], &[("user", "bot"), ("database", "")]] {
        let mut startup = plain();
        startup.feed(&startup_packet(ProtocolVersion::V3_0, parameters));
        let info = expect_startup(startup.advance(&mut BytesMut::new()).unwrap());
        assert_eq!(info.database, "bot");
    }
}

#[test]
fn missing_user_rejected() {
    for parameters in [&[("database", "x")][..], &[("user", "")]] {
        let mut startup = plain();
        startup.feed(&startup_packet(ProtocolVersion::V3_0, parameters));
        let mut output = BytesMut::new();
        assert_eq!(
            startup.advance(&mut output).unwrap_err(),
            StartupError::MissingUser
        );
        let fields = reply_error(&mut output);
        assert_eq!(fields.code(), Some("28000"));
        assert_eq!(fields.severity(), Some("FATAL"));
    }
}

#[test]
fn byte_by_byte_input() {
    let mut startup = plain();
    let packet = startup_packet(ProtocolVersion::V3_0, &[("user", "bot")]);
    let mut output = BytesMut::new();
    for &byte in &packet[..packet.len() - 1] {
        startup.feed(&[byte]);
        assert_eq!(startup.advance(&mut output).unwrap(), StartupStep::NeedMore);
    }
    startup.feed(&packet[packet.len() - 1..]);
    let info = expect_startup(startup.advance(&mut output).unwrap());
    assert_eq!(info.user, "bot");
}

#[test]
fn ssl_refused_without_tls() {
    let mut startup = plain();
    // A client may pipeline its StartupMessage after 'N'; the bytes stay
    // plaintext either way.
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    startup.feed(&startup_packet(ProtocolVersion::V3_0, &[("user", "bot")]));
    let mut output = BytesMut::new();
    let info = expect_startup(startup.advance(&mut output).unwrap());
    assert_eq!(&output[..], b"N");
    assert!(!info.tls);
}

#[test]
fn ssl_accepted_then_startup_over_tls() {
    let mut startup = with_tls();
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    let mut output = BytesMut::new();
    let StartupStep::StartTls(upgrade) = startup.advance(&mut output).unwrap() else {
        panic!("SSLRequest did not start TLS");
    };

    assert_eq!(&output[..], b"S");
    startup.tls_established(upgrade).unwrap();
    assert!(startup.is_tls());
    // Bytes read through TLS from here on.
    startup.feed(&startup_packet(ProtocolVersion::V3_0, &[("user", "bot")]));
    let info = expect_startup(startup.advance(&mut BytesMut::new()).unwrap());
    assert!(info.tls);
}

#[test]
fn sslrequest_with_pipelined_bytes_fails() {
    let mut startup = with_tls();
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    startup.feed(&startup_packet(
        ProtocolVersion::V3_0,
        &[("user", "postgres")],
    ));

    let mut output = BytesMut::new();
    let error = startup.advance(&mut output).unwrap_err();
    assert_eq!(error, StartupError::DataAfterSslRequest { count: 23 });
    // Neither 'S' nor an ErrorResponse: the client gets nothing.
    assert!(output.is_empty());
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::Finished
    );
}

#[test]
fn bytes_buffered_before_handshake_fail_switch() {
    let mut startup = with_tls();
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    let mut output = BytesMut::new();
    let StartupStep::StartTls(upgrade) = startup.advance(&mut output).unwrap() else {
        panic!("SSLRequest did not start TLS");
    };

    // Bytes read from the raw socket after 'S' but before the handshake.
    startup.buffer_mut().put_slice(b"Q\0\0\0\x0dSELECT 1\0");
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::TlsPending
    );

    assert_eq!(
        startup.tls_established(upgrade).unwrap_err(),
        StartupError::DataAfterSslRequest { count: 14 }
    );

    assert!(!startup.is_tls());
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::Finished
    );
}

#[test]
fn duplicate_sslrequest_rejected() {
    let mut startup = plain();
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    let mut output = BytesMut::new();
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::DuplicateSslRequest
    );

    assert_eq!(output.split_to(1), &b"N"[..]);
    assert_eq!(reply_error(&mut output).code(), Some("08P01"));
}

#[test]
fn gssencrequest_then_startup() {
    let mut startup = plain();
    startup.feed(&packet_bytes(&StartupPacket::GssEncRequest));
    let mut output = BytesMut::new();
    assert_eq!(startup.advance(&mut output).unwrap(), StartupStep::NeedMore);
    assert_eq!(&output[..], b"N");
    startup.feed(&startup_packet(ProtocolVersion::V3_0, &[("user", "bot")]));
    let info = expect_startup(startup.advance(&mut output).unwrap());
    assert_eq!(info.user, "bot");
    assert_eq!(&output[..], b"N");
}

#[test]
fn gssencrequest_then_sslrequest() {
    let mut startup = with_tls();
    startup.feed(&packet_bytes(&StartupPacket::GssEncRequest));
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    let mut output = BytesMut::new();
    let StartupStep::StartTls(upgrade) = startup.advance(&mut output).unwrap() else {
        panic!("SSLRequest did not start TLS");
    };

    assert_eq!(&output[..], b"NS");
    startup.tls_established(upgrade).unwrap();
    // No GSSENCRequest once TLS is on.
    startup.feed(&packet_bytes(&StartupPacket::GssEncRequest));
    assert_eq!(
        startup.advance(&mut BytesMut::new()).unwrap_err(),
        StartupError::GssEncRequestOverTls
    );
}

#[test]
fn duplicate_gssencrequest_rejected() {
    let mut startup = plain();
    startup.feed(&packet_bytes(&StartupPacket::GssEncRequest));
    startup.feed(&packet_bytes(&StartupPacket::GssEncRequest));
    assert_eq!(
        startup.advance(&mut BytesMut::new()).unwrap_err(),
        StartupError::DuplicateGssEncRequest
    );
}

#[test]
fn cancel_request() {
    let request = CancelRequest {
        process_id: 31337,
        secret_key: -559_038_737,
    };

    let mut startup = plain();
    startup.feed(&packet_bytes(&StartupPacket::CancelRequest(request)));
    let mut output = BytesMut::new();
    assert_eq!(
        startup.advance(&mut output).unwrap(),
        StartupStep::Cancel(request)
    );

    assert!(output.is_empty());

    // After a refused SSLRequest a CancelRequest is still allowed.
    let mut startup = plain();
    startup.feed(&packet_bytes(&StartupPacket::SslRequest));
    startup.feed(&packet_bytes(&StartupPacket::CancelRequest(request)));
    assert_eq!(
        startup.advance(&mut BytesMut::new()).unwrap(),
        StartupStep::Cancel(request)
    );
}

#[test]
fn protocol_2_0_rejected() {
    let mut startup = plain();
    let mut packet = BytesMut::new();
    // A version 2.0 startup packet is 296 bytes of fixed-size fields.
    packet.put_i32(296);
    packet.put_u16(2);
    packet.put_u16(0);
    packet.put_slice(&[0; 288]);
    startup.feed(&packet);
    let mut output = BytesMut::new();
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::UnsupportedProtocol(ProtocolVersion::new(2, 0))
    );

    let fields = reply_error(&mut output);
    assert_eq!(fields.code(), Some("0A000"));
    assert_eq!(
        fields.message(),
        Some("unsupported frontend protocol 2.0; this server supports 3.0")
    );
}

#[test]
fn protocol_4_0_rejected() {
    let mut startup = plain();
    startup.feed(&packet_bytes(&StartupPacket::UnsupportedVersion {
        protocol: ProtocolVersion::new(4, 0),
        body: bytes::Bytes::from_static(b"user\0bot\0\0"),
    }));
    let mut output = BytesMut::new();
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::UnsupportedProtocol(ProtocolVersion::new(4, 0))
    );

    assert_eq!(reply_error(&mut output).code(), Some("0A000"));
}

#[test]
fn protocol_3_99_negotiated_down() {
    let mut startup = plain();
    startup.feed(&startup_packet(
        ProtocolVersion::new(3, 99),
        &[("user", "bot")],
    ));

    let mut output = BytesMut::new();
    let info = expect_startup(startup.advance(&mut output).unwrap());
    assert_eq!(info.protocol, ProtocolVersion::new(3, 99));
    assert_eq!(
        BackendDecoder::default().decode(&mut output).unwrap(),
        Some(BackendMessage::NegotiateProtocolVersion {
            newest_version: ProtocolVersion::V3_0,
            unrecognized_options: vec![],
        })
    );

    assert!(output.is_empty());
}

#[test]
fn protocol_options_listed_as_unrecognized() {
    let mut startup = plain();
    startup.feed(&startup_packet(
        ProtocolVersion::V3_0,
        &[
            ("user", "bot"),
            ("_pq_.compression", "zstd"),
            ("_pq_.", "x"),
            ("search_path", "app"),
        ],
    ));

    let mut output = BytesMut::new();
    let info = expect_startup(startup.advance(&mut output).unwrap());
    assert_eq!(
        info.unrecognized_protocol_options,
        ["_pq_.compression", "_pq_."]
    );

    assert_eq!(
        info.parameters,
        [("search_path".to_owned(), "app".to_owned())]
    );

    assert_eq!(
        BackendDecoder::default().decode(&mut output).unwrap(),
        Some(BackendMessage::NegotiateProtocolVersion {
            newest_version: ProtocolVersion::V3_0,
            unrecognized_options: vec!["_pq_.compression".into(), "_pq_.".into()],
        })
    );
}

#[test]
fn duplicate_parameter_rejected() {
    let mut startup = plain();
    startup.feed(&startup_packet(
        ProtocolVersion::V3_0,
        &[("user", "bot"), ("database", "a"), ("database", "b")],
    ));

    let mut output = BytesMut::new();
    assert_eq!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::DuplicateParameter {
            name: "database".into()
        }
    );

    assert_eq!(reply_error(&mut output).code(), Some("08P01"));
}

#[test]
fn oversized_startup_packet_rejected() {
    let mut startup = plain();
    let mut packet = BytesMut::new();
    packet.put_i32(1_000_000);
    startup.feed(&packet);
    let mut output = BytesMut::new();
    assert!(matches!(
        startup.advance(&mut output).unwrap_err(),
        StartupError::Decode(_)
    ));

    assert_eq!(reply_error(&mut output).code(), Some("08P01"));
}

#[test]
fn remaining_bytes_returned() {
    let mut startup = plain();
    startup.feed(&startup_packet(ProtocolVersion::V3_0, &[("user", "bot")]));
    startup.feed(b"p\0\0\0\x09pass\0");
    expect_startup(startup.advance(&mut BytesMut::new()).unwrap());
    assert_eq!(&startup.into_remaining()[..], b"p\0\0\0\x09pass\0");
}
