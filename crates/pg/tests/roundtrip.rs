//! Encodes every message type, decodes it back and compares, for a table of
//! hand-written messages and for randomly generated ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{Bytes, BytesMut};
use common::XorShift;
use stepgate_pg::{
    Authentication, BackendDecoder, BackendMessage, Bind, CancelRequest, CopyResponse, ErrorFields,
    Execute, FieldDescription, FrontendDecoder, FrontendMessage, FunctionCall, Parse,
    ProtocolVersion, SaslInitialResponse, Severity, StartupMessage, StartupPacket, Target,
    TransactionStatus, parse_password, password_message,
};

fn frontend_table() -> Vec<FrontendMessage> {
    vec![
        FrontendMessage::Query("SELECT 1; SELECT 'ü'".into()),
        FrontendMessage::Query(String::new()),
        FrontendMessage::Parse(Parse {
            name: "s1".into(),
            query: "SELECT $1::int, $2".into(),
            param_types: vec![23, 0, u32::MAX],
        }),
        FrontendMessage::Parse(Parse {
            name: String::new(),
            query: "SELECT 1".into(),
            param_types: vec![],
        }),
        FrontendMessage::Bind(Bind {
            portal: "p".into(),
            statement: "s1".into(),
            param_formats: vec![1],
            params: vec![Some(Bytes::from_static(b"\0\0\0\x2a")), None],
            result_formats: vec![0, 1],
        }),
        FrontendMessage::Bind(Bind {
            portal: String::new(),
            statement: String::new(),
            param_formats: vec![0, 1, 0],
            params: vec![Some(Bytes::new()), None, Some(Bytes::from_static(b"x"))],
            result_formats: vec![],
        }),
        FrontendMessage::Describe {
            target: Target::Statement,
            name: "s1".into(),
        },
        FrontendMessage::Describe {
            target: Target::Portal,
            name: String::new(),
        },
        FrontendMessage::Execute(Execute {
            portal: "p".into(),
            max_rows: 100,
        }),
        FrontendMessage::Execute(Execute {
            portal: String::new(),
            max_rows: 0,
        }),
        FrontendMessage::Sync,
        FrontendMessage::Flush,
        FrontendMessage::Close {
            target: Target::Portal,
            name: "p".into(),
        },
        FrontendMessage::Close {
            target: Target::Statement,
            name: "s1".into(),
        },
        FrontendMessage::Terminate,
        FrontendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
        FrontendMessage::CopyData(Bytes::new()),
        FrontendMessage::CopyDone,
        FrontendMessage::CopyFail("client aborted".into()),
        FrontendMessage::PasswordMessage(Bytes::from_static(b"secret\0")),
        SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: Some(Bytes::from_static(b"n,,n=,r=abc")),
        }
        .to_message()
        .unwrap(),
        SaslInitialResponse {
            mechanism: "SCRAM-SHA-256-PLUS".into(),
            data: None,
        }
        .to_message()
        .unwrap(),
        // SASLResponse: the body is the mechanism's data as is.
        FrontendMessage::PasswordMessage(Bytes::from_static(b"c=biws,r=abc,p=xyz")),
        FrontendMessage::FunctionCall(FunctionCall {
            function_oid: 1598,
            arg_formats: vec![1],
            args: vec![Some(Bytes::from_static(b"\0\0\0\x01")), None],
            result_format: 1,
        }),
    ]
}

fn backend_table() -> Vec<BackendMessage> {
    let authentication = [
        Authentication::Ok,
        Authentication::KerberosV5,
        Authentication::CleartextPassword,
        Authentication::Md5Password {
            salt: [1, 2, 0, 255],
        },
        Authentication::Gss,
        Authentication::GssContinue(Bytes::from_static(b"\x60\x82token")),
        Authentication::Sspi,
        Authentication::Sasl(vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]),
        Authentication::Sasl(vec![]),
        Authentication::SaslContinue(Bytes::from_static(b"r=abc,s=c2FsdA==,i=4096")),
        Authentication::SaslFinal(Bytes::from_static(b"v=c2lnbmF0dXJl")),
    ];

    let copy = CopyResponse {
        format: 1,
        column_formats: vec![1, 1],
    };

    let mut messages: Vec<BackendMessage> = authentication
        .into_iter()
        .map(BackendMessage::Authentication)
        .collect();
    messages.extend([
        BackendMessage::ParameterStatus {
            name: "server_version".into(),
            value: "15.8".into(),
        },
        BackendMessage::BackendKeyData {
            process_id: 4242,
            secret_key: -17,
        },
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
        BackendMessage::ReadyForQuery(TransactionStatus::Failed),
        BackendMessage::RowDescription(vec![
            FieldDescription {
                name: "id".into(),
                table_oid: 16384,
                column_id: 1,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 0,
            },
            FieldDescription {
                name: String::new(),
                table_oid: 0,
                column_id: 0,
                type_oid: 25,
                type_size: -1,
                type_modifier: -1,
                format: 1,
            },
        ]),
        BackendMessage::RowDescription(vec![]),
        BackendMessage::DataRow(vec![
            Some(Bytes::from_static(b"42")),
            None,
            Some(Bytes::new()),
        ]),
        BackendMessage::DataRow(vec![]),
        BackendMessage::CommandComplete("INSERT 0 1".into()),
        BackendMessage::EmptyQueryResponse,
        BackendMessage::ErrorResponse(
            ErrorFields::new(Severity::Error, "42501", "permission denied for table t")
                .with_detail("stepgate requires a step-up for writes")
                .with_hint("approve the request and retry"),
        ),
        BackendMessage::ErrorResponse(ErrorFields::default()),
        BackendMessage::NoticeResponse(ErrorFields {
            fields: vec![
                (b'S', "NOTICE".into()),
                (b'P', "12".into()),
                (b'x', "unknown code".into()),
            ],
        }),
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        BackendMessage::CloseComplete,
        BackendMessage::NoData,
        BackendMessage::ParameterDescription(vec![23, 25, u32::MAX]),
        BackendMessage::ParameterDescription(vec![]),
        BackendMessage::PortalSuspended,
        BackendMessage::CopyInResponse(copy.clone()),
        BackendMessage::CopyOutResponse(CopyResponse {
            format: 0,
            column_formats: vec![],
        }),
        BackendMessage::CopyBothResponse(copy),
        BackendMessage::CopyData(Bytes::from_static(b"\x00binary")),
        BackendMessage::CopyDone,
        BackendMessage::NotificationResponse {
            process_id: 77,
            channel: "jobs".into(),
            payload: "{\"id\":1}".into(),
        },
        BackendMessage::FunctionCallResponse(Some(Bytes::from_static(b"\x01"))),
        BackendMessage::FunctionCallResponse(None),
        BackendMessage::NegotiateProtocolVersion {
            newest_version: ProtocolVersion::V3_0,
            unrecognized_options: vec!["_pq_.compression".into()],
        },
        BackendMessage::NegotiateProtocolVersion {
            newest_version: ProtocolVersion::V3_0,
            unrecognized_options: vec![],
        },
    ]);
    messages
}

fn startup_table() -> Vec<StartupPacket> {
    vec![
        StartupPacket::SslRequest,
        StartupPacket::GssEncRequest,
        StartupPacket::CancelRequest(CancelRequest {
            process_id: 4242,
            secret_key: i32::MIN,
        }),
        StartupPacket::Startup(StartupMessage {
            protocol: ProtocolVersion::V3_0,
            parameters: vec![
                ("user".into(), "ci-bot".into()),
                ("database".into(), "app".into()),
                ("options".into(), "-c statement_timeout=5s".into()),
                ("application_name".into(), String::new()),
            ],
        }),
        StartupPacket::Startup(StartupMessage {
            protocol: ProtocolVersion::new(3, 2),
            parameters: vec![],
        }),
        StartupPacket::UnsupportedVersion {
            protocol: ProtocolVersion::new(2, 0),
            body: Bytes::from_static(b"v2 fixed-size fields"),
        },
    ]
}

/// Checks decode(encode(m)) == m, and that every proper prefix of the
/// encoding decodes to nothing without consuming a byte.
fn check_frontend(message: &FrontendMessage) {
    let mut encoded = BytesMut::new();
    message.encode(&mut encoded).unwrap();
    let decoder = FrontendDecoder::default();
    for cut in 0..encoded.len() {
        let mut prefix = BytesMut::from(&encoded[..cut]);
        assert_eq!(
            decoder.decode(&mut prefix).unwrap(),
            None,
            "{message:?} cut at {cut}"
        );
        assert_eq!(prefix.len(), cut);
    }

    let mut buf = encoded.clone();
    buf.extend_from_slice(b"X\0\0\0\x04");
    assert_eq!(decoder.decode(&mut buf).unwrap().as_ref(), Some(message));
    assert_eq!(
        &buf[..],
        b"X\0\0\0\x04",
        "{message:?} consumed the next message"
    );
}

fn check_backend(message: &BackendMessage) {
    let mut encoded = BytesMut::new();
    message.encode(&mut encoded).unwrap();
    let decoder = BackendDecoder::default();
    for cut in 0..encoded.len() {
        let mut prefix = BytesMut::from(&encoded[..cut]);
        assert_eq!(
            decoder.decode(&mut prefix).unwrap(),
            None,
            "{message:?} cut at {cut}"
        );
        assert_eq!(prefix.len(), cut);
    }

    let mut buf = encoded.clone();
    buf.extend_from_slice(b"Z\0\0\0\x05I");
    assert_eq!(decoder.decode(&mut buf).unwrap().as_ref(), Some(message));
    assert_eq!(
        &buf[..],
        b"Z\0\0\0\x05I",
        "{message:?} consumed the next message"
    );
}

fn check_startup(packet: &StartupPacket) {
    let mut encoded = BytesMut::new();
    packet.encode(&mut encoded).unwrap();
    let decoder = FrontendDecoder::default();
    for cut in 0..encoded.len() {
        let mut prefix = BytesMut::from(&encoded[..cut]);
        assert_eq!(
            decoder.decode_startup(&mut prefix).unwrap(),
            None,
            "{packet:?} cut at {cut}"
        );
        assert_eq!(prefix.len(), cut);
    }

    let mut buf = encoded.clone();
    assert_eq!(
        decoder.decode_startup(&mut buf).unwrap().as_ref(),
        Some(packet)
    );

    assert!(buf.is_empty());
}

#[test]
fn frontend_messages_roundtrip() {
    for message in frontend_table() {
        check_frontend(&message);
    }
}

#[test]
fn backend_messages_roundtrip() {
    for message in backend_table() {
        check_backend(&message);
    }
}

#[test]
fn startup_packets_roundtrip() {
    for packet in startup_table() {
        check_startup(&packet);
    }
}

#[test]
fn known_encodings() {
    let cases: [(BackendMessage, &[u8]); 3] = [
        (
            BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            b"Z\0\0\0\x05I",
        ),
        (
            BackendMessage::Authentication(Authentication::Ok),
            b"R\0\0\0\x08\0\0\0\0",
        ),
        (
            BackendMessage::CommandComplete("SELECT 1".into()),
            b"C\0\0\0\x0dSELECT 1\0",
        ),
    ];

    for (message, expected) in cases {
        let mut buf = BytesMut::new();
        message.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], expected, "{message:?}");
    }

    let mut buf = BytesMut::new();
    StartupPacket::SslRequest.encode(&mut buf).unwrap();
    assert_eq!(&buf[..], b"\0\0\0\x08\x04\xd2\x16\x2f");
}

#[test]
fn password_helpers_roundtrip() {
    let FrontendMessage::PasswordMessage(body) = password_message("md5abc").unwrap() else {
        panic!("password_message built another message");
    };

    assert_eq!(&body[..], b"md5abc\0");
    assert_eq!(parse_password(&body).unwrap(), "md5abc");
    let initial = SaslInitialResponse {
        mechanism: "SCRAM-SHA-256".into(),
        data: Some(Bytes::from_static(b"n,,n=,r=nonce")),
    };

    let FrontendMessage::PasswordMessage(body) = initial.to_message().unwrap() else {
        panic!("to_message built another message");
    };

    assert_eq!(&body[..], b"SCRAM-SHA-256\0\0\0\0\x0dn,,n=,r=nonce");
    assert_eq!(SaslInitialResponse::parse(&body).unwrap(), initial);
}

/// Random strings without NUL, mixing ASCII and multi-byte characters.
fn random_string(rng: &mut XorShift) -> String {
    let len = rng.below(12);
    (0..len)
        .map(|_| match rng.below(4) {
            0 => 'é',
            1 => '😀',
            _ => char::from(b'a' + u8::try_from(rng.below(26)).unwrap()),
        })
        .collect()
}

fn random_value(rng: &mut XorShift) -> Option<Bytes> {
    (!rng.chance(4)).then(|| Bytes::from(rng.bytes_below(10)))
}

fn random_formats(rng: &mut XorShift, values: usize) -> Vec<i16> {
    let count = match rng.below(3) {
        0 => 0,
        1 => 1,
        _ => values,
    };
    (0..count).map(|_| i16::from(rng.chance(2))).collect()
}

fn random_frontend(rng: &mut XorShift) -> FrontendMessage {
    match rng.below(8) {
        0 => FrontendMessage::Query(random_string(rng)),
        1 => FrontendMessage::Parse(Parse {
            name: random_string(rng),
            query: random_string(rng),
            param_types: (0..rng.below(5)).map(|_| u32::from(rng.byte())).collect(),
        }),
        2 => {
            let params: Vec<Option<Bytes>> = (0..rng.below(6)).map(|_| random_value(rng)).collect();
            FrontendMessage::Bind(Bind {
                portal: random_string(rng),
                statement: random_string(rng),
                param_formats: random_formats(rng, params.len()),
                params,
                result_formats: {
                    let columns = rng.below(4);
                    random_formats(rng, columns)
                },
            })
        }
        3 => FrontendMessage::Execute(Execute {
            portal: random_string(rng),
            max_rows: i32::from(rng.byte()),
        }),
        4 => FrontendMessage::CopyData(Bytes::from(rng.bytes_below(20))),
        5 => FrontendMessage::Describe {
            target: if rng.chance(2) {
                Target::Portal
            } else {
                Target::Statement
            },
            name: random_string(rng),
        },
        6 => {
            let args: Vec<Option<Bytes>> = (0..rng.below(4)).map(|_| random_value(rng)).collect();
            FrontendMessage::FunctionCall(FunctionCall {
                function_oid: u32::from(rng.byte()),
                arg_formats: random_formats(rng, args.len()),
                args,
                result_format: i16::from(rng.chance(2)),
            })
        }
        _ => FrontendMessage::PasswordMessage(Bytes::from(rng.bytes_below(20))),
    }
}

fn random_backend(rng: &mut XorShift) -> BackendMessage {
    match rng.below(7) {
        0 => BackendMessage::DataRow((0..rng.below(6)).map(|_| random_value(rng)).collect()),
        1 => BackendMessage::RowDescription(
            (0..rng.below(4))
                .map(|_| FieldDescription {
                    name: random_string(rng),
                    table_oid: u32::from(rng.byte()),
                    column_id: i16::from(rng.byte()),
                    type_oid: u32::from(rng.byte()),
                    type_size: -1,
                    type_modifier: i32::from(rng.byte()) - 1,
                    format: i16::from(rng.chance(2)),
                })
                .collect(),
        ),
        2 => BackendMessage::ErrorResponse(ErrorFields {
            fields: (0..rng.below(6))
                .map(|_| (rng.byte().max(1), random_string(rng)))
                .collect(),
        }),
        3 => BackendMessage::ParameterStatus {
            name: random_string(rng),
            value: random_string(rng),
        },
        4 => BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from(
            rng.bytes_below(30),
        ))),
        5 => BackendMessage::NotificationResponse {
            process_id: i32::from(rng.byte()),
            channel: random_string(rng),
            payload: random_string(rng),
        },
        _ => BackendMessage::NegotiateProtocolVersion {
            newest_version: ProtocolVersion::new(3, u16::from(rng.byte())),
            unrecognized_options: (0..rng.below(3)).map(|_| random_string(rng)).collect(),
        },
    }
}

#[test]
fn random_messages_roundtrip() {
    let mut rng = XorShift::new(0x5eed_0001);
    for _ in 0..2000 {
        check_frontend(&random_frontend(&mut rng));
        check_backend(&random_backend(&mut rng));
    }
}

/// Many messages in one buffer decode in order, whatever the read sizes.
#[test]
fn stream_in_random_chunks() {
    let mut rng = XorShift::new(0x5eed_0002);
    let messages = backend_table();
    let mut stream = BytesMut::new();
    for message in &messages {
        message.encode(&mut stream).unwrap();
    }

    for _ in 0..50 {
        let decoder = BackendDecoder::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut offset = 0;
        while offset < stream.len() {
            let end = (offset + 1 + rng.below(40)).min(stream.len());
            buf.extend_from_slice(&stream[offset..end]);
            offset = end;
            while let Some(message) = decoder.decode(&mut buf).unwrap() {
                decoded.push(message);
            }
        }
        assert_eq!(decoded, messages);
        assert!(buf.is_empty());
    }
}
