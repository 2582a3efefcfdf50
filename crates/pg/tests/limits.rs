//! Every length limit and decode or encode error, on hand-made bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{BufMut, Bytes, BytesMut};
use stepgate_pg::{
    BackendDecoder, BackendMessage, Bind, DecodeError, Direction, EncodeError, ErrorFields,
    Framing, FrontendDecoder, FrontendMessage, ProtocolVersion, SaslInitialResponse,
    StartupMessage, StartupPacket, TypeByte, password_message,
};

/// Builds a typed message from its type byte and body, with a correct
/// length word.
fn message(type_byte: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(type_byte);
    buf.put_i32(i32::try_from(body.len() + 4).unwrap());
    buf.put_slice(body);
    buf
}

fn decode_frontend(buf: &mut BytesMut) -> Result<Option<FrontendMessage>, DecodeError> {
    FrontendDecoder::default().decode(buf)
}

fn decode_backend(buf: &mut BytesMut) -> Result<Option<BackendMessage>, DecodeError> {
    BackendDecoder::default().decode(buf)
}

#[test]
fn length_below_four() {
    for length in [0, 3, -1, i32::MIN] {
        let mut buf = BytesMut::new();
        buf.put_u8(b'Q');
        buf.put_i32(length);
        assert_eq!(
            decode_frontend(&mut buf).unwrap_err(),
            DecodeError::LengthTooSmall {
                framing: Framing::Message(TypeByte(b'Q')),
                length,
                min: 4
            }
        );
        let mut buf = BytesMut::new();
        buf.put_u8(b'D');
        buf.put_i32(length);
        assert!(matches!(
            decode_backend(&mut buf).unwrap_err(),
            DecodeError::LengthTooSmall { .. }
        ));
    }
}

#[test]
fn length_over_max_fails_before_body() {
    let decoder = FrontendDecoder::new(1000);
    // Only the header has arrived.
    let mut buf = BytesMut::new();
    buf.put_u8(b'd');
    buf.put_i32(1001);
    assert_eq!(
        decoder.decode(&mut buf).unwrap_err(),
        DecodeError::TooLong {
            framing: Framing::Message(TypeByte(b'd')),
            length: 1001,
            max: 1000
        }
    );

    // At the limit the decoder waits for the body.
    let mut buf = BytesMut::new();
    buf.put_u8(b'd');
    buf.put_i32(1000);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    buf.put_slice(&[7; 996]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(FrontendMessage::CopyData(Bytes::from(vec![7; 996])))
    );

    let mut buf = BytesMut::new();
    buf.put_u8(b'D');
    buf.put_i32(i32::MAX);
    assert!(matches!(
        BackendDecoder::default().decode(&mut buf).unwrap_err(),
        DecodeError::TooLong { max, .. } if max == 64 * 1024 * 1024
    ));
}

#[test]
fn startup_packet_limits() {
    let decoder = FrontendDecoder::default();
    // Length word only: 10,000 body bytes plus the word is the maximum.
    let mut buf = BytesMut::new();
    buf.put_i32(10_005);
    assert_eq!(
        decoder.decode_startup(&mut buf).unwrap_err(),
        DecodeError::TooLong {
            framing: Framing::Startup,
            length: 10_005,
            max: 10_004
        }
    );

    for length in [7, 4, 0, -8] {
        let mut buf = BytesMut::new();
        buf.put_i32(length);
        assert_eq!(
            decoder.decode_startup(&mut buf).unwrap_err(),
            DecodeError::LengthTooSmall {
                framing: Framing::Startup,
                length,
                min: 8
            }
        );
    }

    // A packet of exactly the maximum length is accepted.
    let filler = "x".repeat(10_004 - 4 - 4 - "options".len() - 1 - 1 - 1);
    let packet = StartupPacket::Startup(StartupMessage {
        protocol: ProtocolVersion::V3_0,
        parameters: vec![("options".into(), filler)],
    });

    let mut buf = BytesMut::new();
    packet.encode(&mut buf).unwrap();
    assert_eq!(buf.len(), 10_004);
    assert_eq!(decoder.decode_startup(&mut buf).unwrap(), Some(packet));
}

#[test]
fn startup_message_layout_errors() {
    let decoder = FrontendDecoder::default();
    let cases: [(&[u8], DecodeError); 4] = [
        // No list terminator.
        (
            b"user\0bot\0",
            DecodeError::MissingNul {
                message: "StartupMessage",
                field: "parameter name",
            },
        ),
        // A name without a value.
        (
            b"user\0",
            DecodeError::MissingNul {
                message: "StartupMessage",
                field: "parameter value",
            },
        ),
        // Bytes after the terminator.
        (
            b"user\0bot\0\0junk",
            DecodeError::TrailingBytes {
                message: "StartupMessage",
                count: 4,
            },
        ),
        (
            b"user\0\xff\0\0",
            DecodeError::InvalidUtf8 {
                message: "StartupMessage",
                field: "parameter value",
            },
        ),
    ];

    for (parameters, expected) in cases {
        let mut buf = BytesMut::new();
        buf.put_i32(i32::try_from(8 + parameters.len()).unwrap());
        buf.put_u16(3);
        buf.put_u16(0);
        buf.put_slice(parameters);
        assert_eq!(decoder.decode_startup(&mut buf).unwrap_err(), expected);
    }

    // SSLRequest and CancelRequest have fixed sizes.
    let mut buf = BytesMut::new();
    buf.put_i32(12);
    buf.put_u16(1234);
    buf.put_u16(5679);
    buf.put_i32(0);
    assert!(matches!(
        decoder.decode_startup(&mut buf).unwrap_err(),
        DecodeError::TrailingBytes { count: 4, .. }
    ));

    let mut buf = BytesMut::new();
    buf.put_i32(12);
    buf.put_u16(1234);
    buf.put_u16(5678);
    buf.put_i32(7);
    assert!(matches!(
        decoder.decode_startup(&mut buf).unwrap_err(),
        DecodeError::Truncated {
            message: "CancelRequest",
            ..
        }
    ));
}

#[test]
fn unknown_type_byte_fails_at_once() {
    for byte in [b'z', b'R', 0, 0xff] {
        let mut buf = BytesMut::from(&[byte][..]);
        assert_eq!(
            decode_frontend(&mut buf).unwrap_err(),
            DecodeError::UnknownMessageType {
                direction: Direction::Frontend,
                type_byte: TypeByte(byte)
            }
        );
    }

    for byte in [b'Q', b'X', b'p'] {
        let mut buf = BytesMut::from(&[byte][..]);
        let error = decode_backend(&mut buf).unwrap_err();
        assert_eq!(
            error,
            DecodeError::UnknownMessageType {
                direction: Direction::Backend,
                type_byte: TypeByte(byte)
            }
        );
    }

    let mut buf = BytesMut::from(&[0x01][..]);
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err().to_string(),
        "unknown frontend message type 0x01"
    );
}

#[test]
fn missing_nul_terminator() {
    let mut buf = message(b'Q', b"SELECT 1");
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::MissingNul {
            message: "Query",
            field: "query"
        }
    );

    let mut buf = message(b'C', b"SELECT 1");
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::MissingNul {
            message: "CommandComplete",
            field: "command tag"
        }
    );

    // An ErrorResponse without the final 0 byte.
    let mut buf = message(b'E', b"SERROR\0");
    assert!(matches!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::Truncated {
            message: "ErrorResponse",
            field: "field code",
            ..
        }
    ));
}

#[test]
fn trailing_bytes_inside_message() {
    let cases: [(u8, &[u8], &str); 4] = [
        (b'Q', b"SELECT 1\0x", "Query"),
        (b'S', b"\0", "Sync"),
        (b'X', b"abc", "Terminate"),
        (b'E', b"p\0\0\0\0\0\0", "Execute"),
    ];

    for (type_byte, body, name) in cases {
        let mut buf = message(type_byte, body);
        assert!(
            matches!(
                decode_frontend(&mut buf).unwrap_err(),
                DecodeError::TrailingBytes { message, .. } if message == name
            ),
            "{name}"
        );
    }

    let mut buf = message(b'Z', b"II");
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::TrailingBytes {
            message: "ReadyForQuery",
            count: 1
        }
    );

    let mut buf = message(b'R', b"\0\0\0\0\0");
    assert!(matches!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::TrailingBytes {
            message: "Authentication",
            ..
        }
    ));
}

/// Builds a Bind body with the given counts and raw parameter bytes.
fn bind_body(formats: &[i16], param_count: i16, params: &[u8]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_slice(b"portal\0stmt\0");
    body.put_i16(i16::try_from(formats.len()).unwrap());
    for &format in formats {
        body.put_i16(format);
    }
    body.put_i16(param_count);
    body.put_slice(params);
    body.put_i16(0);
    body.to_vec()
}

#[test]
fn bind_format_count_mismatch() {
    let mut params = BytesMut::new();
    for _ in 0..3 {
        params.put_i32(1);
        params.put_u8(b'x');
    }

    let mut buf = message(b'B', &bind_body(&[0, 1], 3, &params));
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::FormatCountMismatch {
            message: "Bind",
            formats: 2,
            values: 3
        }
    );

    // Zero, one and three format codes are all valid for three parameters.
    for formats in [&[][..], &[1], &[0, 1, 0]] {
        let mut buf = message(b'B', &bind_body(formats, 3, &params));
        assert!(decode_frontend(&mut buf).unwrap().is_some());
    }

    let bind = FrontendMessage::Bind(Bind {
        portal: String::new(),
        statement: String::new(),
        param_formats: vec![0, 0],
        params: vec![None],
        result_formats: vec![],
    });

    let mut out = BytesMut::new();
    assert_eq!(
        bind.encode(&mut out).unwrap_err(),
        EncodeError::FormatCountMismatch {
            message: "Bind",
            formats: 2,
            values: 1
        }
    );

    assert!(out.is_empty());
}

#[test]
fn negative_lengths_and_counts() {
    // DataRow: -1 is NULL, -2 is an error.
    let mut body = BytesMut::new();
    body.put_i16(2);
    body.put_i32(-1);
    body.put_i32(0);
    let mut buf = message(b'D', &body);
    assert_eq!(
        decode_backend(&mut buf).unwrap(),
        Some(BackendMessage::DataRow(vec![None, Some(Bytes::new())]))
    );

    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(-2);
    let mut buf = message(b'D', &body);
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::NegativeLength {
            message: "DataRow",
            field: "columns",
            value: -2
        }
    );

    // Bind: the same rule for parameter values.
    let mut params = BytesMut::new();
    params.put_i32(-1);
    let mut buf = message(b'B', &bind_body(&[], 1, &params));
    let Some(FrontendMessage::Bind(bind)) = decode_frontend(&mut buf).unwrap() else {
        panic!("Bind did not decode");
    };

    assert_eq!(bind.params, [None]);
    let mut params = BytesMut::new();
    params.put_i32(i32::MIN);
    let mut buf = message(b'B', &bind_body(&[], 1, &params));
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::NegativeLength {
            message: "Bind",
            field: "parameters",
            value: i32::MIN
        }
    );

    // Negative counts.
    let mut buf = message(b'D', &(-1i16).to_be_bytes());
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::NegativeCount {
            message: "DataRow",
            field: "columns",
            value: -1
        }
    );

    // Bind counts are unsigned, as PostgreSQL reads them: 0xfffd is 65533
    // parameters, more than the body holds.
    let mut buf = message(b'B', &bind_body(&[], -3, &[]));
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::Truncated {
            message: "Bind",
            field: "parameters",
            needed: 65_533 * 4,
            remaining: 2
        }
    );

    let mut body = BytesMut::new();
    body.put_i32(0);
    body.put_i32(-1);
    let mut buf = message(b'v', &body);
    assert!(matches!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::NegativeCount {
            message: "NegotiateProtocolVersion",
            ..
        }
    ));
}

/// libpq sends up to 65535 parameters, and PostgreSQL reads the count as
/// unsigned, so counts above 32767 are valid.
#[test]
fn bind_with_40000_parameters() {
    let bind = FrontendMessage::Bind(Bind {
        portal: String::new(),
        statement: String::new(),
        param_formats: vec![],
        params: vec![None; 40_000],
        result_formats: vec![],
    });

    let mut buf = BytesMut::new();
    bind.encode(&mut buf).unwrap();
    assert_eq!(decode_frontend(&mut buf).unwrap(), Some(bind));
}

#[test]
fn counts_beyond_remaining_bytes() {
    // 30,000 columns announced in a 2-byte body: rejected before any
    // allocation for them.
    let mut buf = message(b'D', &30_000i16.to_be_bytes());
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::Truncated {
            message: "DataRow",
            field: "columns",
            needed: 120_000,
            remaining: 0
        }
    );

    let mut body = BytesMut::new();
    body.put_i32(0);
    body.put_i32(i32::MAX);
    let mut buf = message(b'v', &body);
    assert!(matches!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::Truncated { .. }
    ));

    // A value length past the end of the message.
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_i32(100);
    body.put_slice(b"short");
    let mut buf = message(b'D', &body);
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::Truncated {
            message: "DataRow",
            field: "columns",
            needed: 100,
            remaining: 5
        }
    );

    let mut body = BytesMut::new();
    body.put_slice(b"s\0SELECT 1\0");
    body.put_i16(2);
    body.put_u32(23);
    let mut buf = message(b'P', &body);
    assert!(matches!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::Truncated {
            message: "Parse",
            ..
        }
    ));
}

#[test]
fn invalid_field_values() {
    let mut buf = message(b'D', b"Xname\0");
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::InvalidValue {
            message: "Describe",
            field: "target",
            value: i64::from(b'X')
        }
    );

    let mut buf = message(b'Z', b"X");
    assert!(matches!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::InvalidValue {
            message: "ReadyForQuery",
            ..
        }
    ));

    let mut buf = message(b'R', &6i32.to_be_bytes());
    assert_eq!(
        decode_backend(&mut buf).unwrap_err(),
        DecodeError::InvalidValue {
            message: "Authentication",
            field: "request code",
            value: 6
        }
    );

    let mut buf = message(b'Q', b"SELECT '\xc3'\0");
    assert_eq!(
        decode_frontend(&mut buf).unwrap_err(),
        DecodeError::InvalidUtf8 {
            message: "Query",
            field: "query"
        }
    );

    let mut buf = BytesMut::from(&b"E"[..]);
    assert_eq!(
        BackendDecoder::default()
            .decode_encryption_response(&mut buf)
            .unwrap_err(),
        DecodeError::InvalidEncryptionResponse {
            type_byte: TypeByte(b'E')
        }
    );
}

#[test]
fn incomplete_message_consumes_nothing() {
    let mut buf = message(b'Q', b"SELECT 1\0");
    let full = buf.split();
    for cut in 0..full.len() {
        buf.extend_from_slice(&full[..cut]);
        assert_eq!(decode_frontend(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), cut);
        buf.clear();
    }
}

#[test]
fn encoder_rejects_unrepresentable_messages() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    let cases: [(FrontendMessage, EncodeError); 2] = [
        (
            FrontendMessage::Query("SELECT 1\0; DROP TABLE t".into()),
            EncodeError::NulInString {
                message: "Query",
                field: "query",
            },
        ),
        (
            FrontendMessage::Bind(Bind {
                portal: String::new(),
                statement: String::new(),
                param_formats: vec![],
                params: vec![None; 70_000],
                result_formats: vec![],
            }),
            EncodeError::TooManyElements {
                message: "Bind",
                field: "parameters",
                count: 70_000,
                max: 65_535,
            },
        ),
    ];

    for (message, expected) in cases {
        assert_eq!(message.encode(&mut out).unwrap_err(), expected);
        // A failed encode leaves the buffer as it was.
        assert_eq!(&out[..], b"prefix");
    }

    let startup = StartupPacket::Startup(StartupMessage {
        protocol: ProtocolVersion::V3_0,
        parameters: vec![(String::new(), "x".into())],
    });

    assert!(matches!(
        startup.encode(&mut out).unwrap_err(),
        EncodeError::EmptyString { .. }
    ));

    let startup = StartupPacket::Startup(StartupMessage {
        protocol: ProtocolVersion::new(2, 0),
        parameters: vec![],
    });

    assert!(matches!(
        startup.encode(&mut out).unwrap_err(),
        EncodeError::InvalidValue { .. }
    ));

    let error = BackendMessage::ErrorResponse(ErrorFields {
        fields: vec![(0, "x".into())],
    });

    assert!(matches!(
        error.encode(&mut out).unwrap_err(),
        EncodeError::InvalidValue {
            field: "field code",
            ..
        }
    ));

    let sasl = SaslInitialResponse {
        mechanism: String::new(),
        data: None,
    };

    assert!(matches!(
        sasl.to_message().unwrap_err(),
        EncodeError::EmptyString { .. }
    ));

    assert!(matches!(
        password_message("a\0b").unwrap_err(),
        EncodeError::NulInString { .. }
    ));

    let row = BackendMessage::DataRow(vec![None; 32_768]);
    assert!(matches!(
        row.encode(&mut out).unwrap_err(),
        EncodeError::TooManyElements { .. }
    ));

    assert_eq!(&out[..], b"prefix");
}
