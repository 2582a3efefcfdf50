//! Messages that a server sends to a client, with their decoder and encoder.

use bytes::{Bytes, BytesMut};

use crate::codec::{Reader, Writer, encode_frame, split_message};
use crate::error::{DecodeError, Direction, EncodeError, TypeByte};
use crate::error_fields::ErrorFields;
use crate::{DEFAULT_MAX_MESSAGE_BYTES, ProtocolVersion};

/// An authentication request (`'R'`), identified by its Int32 request code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// Code 0: authentication succeeded.
    Ok,
    /// Code 2: Kerberos V5, which servers since 9.4 no longer offer.
    KerberosV5,
    /// Code 3.
    CleartextPassword,
    /// Code 5, with the salt for the MD5 hash.
    Md5Password { salt: [u8; 4] },
    /// Code 7.
    Gss,
    /// Code 8, with GSSAPI or SSPI data.
    GssContinue(Bytes),
    /// Code 9.
    Sspi,
    /// Code 10, with the SASL mechanisms the server offers, in its order of
    /// preference.
    Sasl(Vec<String>),
    /// Code 11, with the mechanism's server-first message.
    SaslContinue(Bytes),
    /// Code 12, with the mechanism's server-final message.
    SaslFinal(Bytes),
}

/// Transaction status reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block; statements are rejected until
    /// the block ends.
    Failed,
}

impl TransactionStatus {
    fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    /// OID of the table the column comes from, or 0.
    pub table_oid: u32,
    /// Attribute number of the column in that table, or 0.
    pub column_id: i16,
    pub type_oid: u32,
    /// `pg_type.typlen`; negative for variable-width types.
    pub type_size: i16,
    /// `pg_attribute.atttypmod`; its meaning depends on the type.
    pub type_modifier: i32,
    /// 0 for text, 1 for binary.
    pub format: i16,
}

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// 0 for textual COPY, 1 for binary.
    pub format: i8,
    /// One format code per column.
    pub column_formats: Vec<i16>,
}

/// A message a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    /// `'R'`.
    Authentication(Authentication),
    /// `'S'`: the current value of a run-time parameter.
    ParameterStatus { name: String, value: String },
    /// `'K'`: the key a client needs to send a CancelRequest.
    BackendKeyData { process_id: i32, secret_key: i32 },
    /// `'Z'`.
    ReadyForQuery(TransactionStatus),
    /// `'T'`.
    RowDescription(Vec<FieldDescription>),
    /// `'D'`: column values; `None` is NULL.
    DataRow(Vec<Option<Bytes>>),
    /// `'C'`: the command tag, such as `INSERT 0 1`.
    CommandComplete(String),
    /// `'I'`.
    EmptyQueryResponse,
    /// `'E'`.
    ErrorResponse(ErrorFields),
    /// `'N'`.
    NoticeResponse(ErrorFields),
    /// `'1'`.
    ParseComplete,
    /// `'2'`.
    BindComplete,
    /// `'3'`.
    CloseComplete,
    /// `'n'`.
    NoData,
    /// `'t'`: parameter type OIDs of a prepared statement.
    ParameterDescription(Vec<u32>),
    /// `'s'`.
    PortalSuspended,
    /// `'G'`.
    CopyInResponse(CopyResponse),
    /// `'H'`.
    CopyOutResponse(CopyResponse),
    /// `'W'`.
    CopyBothResponse(CopyResponse),
    /// `'d'`.
    CopyData(Bytes),
    /// `'c'`.
    CopyDone,
    /// `'A'`: a NOTIFY from `process_id` on `channel`.
    NotificationResponse {
        process_id: i32,
        channel: String,
        payload: String,
    },
    /// `'V'`: the result of a FunctionCall; `None` is NULL.
    FunctionCallResponse(Option<Bytes>),
    /// `'v'`: the newest protocol version the server supports for the
    /// requested major version, and the protocol options (`_pq_.` startup
    /// parameters) it did not recognise. The documentation calls the first
    /// field the newest minor version, but PostgreSQL 15 sends, and libpq
    /// reads, a whole version word (3.0 is 0x00030000).
    NegotiateProtocolVersion {
        newest_version: ProtocolVersion,
        unrecognized_options: Vec<String>,
    },
}

fn is_backend_type(byte: u8) -> bool {
    matches!(
        byte,
        b'R' | b'S'
            | b'K'
            | b'Z'
            | b'T'
            | b'D'
            | b'C'
            | b'I'
            | b'E'
            | b'N'
            | b'1'
            | b'2'
            | b'3'
            | b'n'
            | b't'
            | b's'
            | b'G'
            | b'H'
            | b'W'
            | b'd'
            | b'c'
            | b'A'
            | b'V'
            | b'v'
    )
}

/// The server's one-byte response to an SSLRequest or GSSENCRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionResponse {
    /// `'S'`: start the TLS handshake.
    AcceptSsl,
    /// `'G'`: start GSSAPI encryption.
    AcceptGss,
    /// `'N'`: encryption refused; send a startup packet in plaintext.
    Refuse,
}

impl EncryptionResponse {
    /// Returns the byte sent on the wire.
    pub fn byte(self) -> u8 {
        match self {
            EncryptionResponse::AcceptSsl => b'S',
            EncryptionResponse::AcceptGss => b'G',
            EncryptionResponse::Refuse => b'N',
        }
    }
}

/// Decodes backend messages from a buffer that fills as bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendDecoder {
    /// Maximum value of a message's length word (which counts itself but not
    /// the type byte).
    pub max_message_bytes: usize,
}

impl Default for BackendDecoder {
    fn default() -> Self {
        BackendDecoder {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl BackendDecoder {
    pub fn new(max_message_bytes: usize) -> Self {
        BackendDecoder { max_message_bytes }
    }

    /// Decodes the one-byte response to an SSLRequest or GSSENCRequest.
    /// Returns `Ok(None)` on an empty buffer.
    pub fn decode_encryption_response(
        &self,
        buf: &mut BytesMut,
    ) -> Result<Option<EncryptionResponse>, DecodeError> {
        let Some(&byte) = buf.first() else {
            return Ok(None);
        };
        let response = match byte {
            b'S' => EncryptionResponse::AcceptSsl,
            b'G' => EncryptionResponse::AcceptGss,
            b'N' => EncryptionResponse::Refuse,
            other => {
                return Err(DecodeError::InvalidEncryptionResponse {
                    type_byte: TypeByte(other),
                });
            }
        };
        let _byte = buf.split_to(1);
        Ok(Some(response))
    }

    /// Decodes one message from the front of `buf`, consuming it. Returns
    /// `Ok(None)` and consumes nothing while the message is incomplete.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<BackendMessage>, DecodeError> {
        let Some((type_byte, body)) = split_message(
            buf,
            Direction::Backend,
            is_backend_type,
            self.max_message_bytes,
        )?
        else {
            return Ok(None);
        };
        decode_body(type_byte, body).map(Some)
    }
}

/// One whole backend message as received: type byte, length word and body.
/// A proxy forwards the bytes as they are and decodes only the messages it
/// needs to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBackendMessage {
    bytes: Bytes,
}

impl RawBackendMessage {
    /// Returns the type byte, such as `b'D'` for DataRow.
    pub fn type_byte(&self) -> u8 {
        self.bytes[0]
    }

    /// Returns the whole message, header included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Returns the message body, after the type byte and length word.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(HEADER_BYTES..)
    }

    /// Decodes the message.
    pub fn decode(&self) -> Result<BackendMessage, DecodeError> {
        decode_body(self.type_byte(), self.body())
    }
}

impl BackendDecoder {
    /// Splits one message off the front of `buf` without decoding its body,
    /// after the same type and length checks as [`BackendDecoder::decode`].
    /// Returns `Ok(None)` and consumes nothing while the message is
    /// incomplete.
    pub fn next_raw(&self, buf: &mut BytesMut) -> Result<Option<RawBackendMessage>, DecodeError> {
        let Some(&type_byte) = buf.first() else {
            return Ok(None);
        };
        if !is_backend_type(type_byte) {
            return Err(DecodeError::UnknownMessageType {
                direction: Direction::Backend,
                type_byte: TypeByte(type_byte),
            });
        }
        let Some(length) = crate::codec::peek_length(buf, 1) else {
            return Ok(None);
        };
        let framing = crate::error::Framing::Message(TypeByte(type_byte));
        let length = crate::codec::check_length(framing, length, 4, self.max_message_bytes)?;
        let total = length.checked_add(1).ok_or(DecodeError::TooLong {
            framing,
            length,
            max: self.max_message_bytes,
        })?;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some(RawBackendMessage {
            bytes: buf.split_to(total).freeze(),
        }))
    }
}

/// Length word plus type byte.
const HEADER_BYTES: usize = 5;

fn decode_body(type_byte: u8, body: Bytes) -> Result<BackendMessage, DecodeError> {
    let message = match type_byte {
        b'R' => BackendMessage::Authentication(decode_authentication(body)?),
        b'S' => {
            let mut reader = Reader::new("ParameterStatus", body);
            let name = reader.cstr("name")?;
            let value = reader.cstr("value")?;
            reader.finish()?;
            BackendMessage::ParameterStatus { name, value }
        }
        b'K' => {
            let mut reader = Reader::new("BackendKeyData", body);
            let process_id = reader.i32("process ID")?;
            let secret_key = reader.i32("secret key")?;
            reader.finish()?;
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            }
        }
        b'Z' => {
            let mut reader = Reader::new("ReadyForQuery", body);
            let status = match reader.u8("transaction status")? {
                b'I' => TransactionStatus::Idle,
                b'T' => TransactionStatus::InTransaction,
                b'E' => TransactionStatus::Failed,
                other => {
                    return Err(DecodeError::InvalidValue {
                        message: "ReadyForQuery",
                        field: "transaction status",
                        value: i64::from(other),
                    });
                }
            };
            reader.finish()?;
            BackendMessage::ReadyForQuery(status)
        }
        b'T' => BackendMessage::RowDescription(decode_row_description(body)?),
        b'D' => {
            let mut reader = Reader::new("DataRow", body);
            // Each column has at least its Int32 length.
            let count = reader.count16("columns", 4)?;
            let mut values = Vec::with_capacity(count);
            for _ in 0..count {
                values.push(reader.nullable("columns")?);
            }
            reader.finish()?;
            BackendMessage::DataRow(values)
        }
        b'C' => {
            let mut reader = Reader::new("CommandComplete", body);
            let tag = reader.cstr("command tag")?;
            reader.finish()?;
            BackendMessage::CommandComplete(tag)
        }
        b'I' => empty(
            "EmptyQueryResponse",
            body,
            BackendMessage::EmptyQueryResponse,
        )?,
        b'E' => BackendMessage::ErrorResponse(ErrorFields::decode("ErrorResponse", body)?),
        b'N' => BackendMessage::NoticeResponse(ErrorFields::decode("NoticeResponse", body)?),
        b'1' => empty("ParseComplete", body, BackendMessage::ParseComplete)?,
        b'2' => empty("BindComplete", body, BackendMessage::BindComplete)?,
        b'3' => empty("CloseComplete", body, BackendMessage::CloseComplete)?,
        b'n' => empty("NoData", body, BackendMessage::NoData)?,
        b't' => {
            let mut reader = Reader::new("ParameterDescription", body);
            let count = reader.count_u16("parameter types", 4)?;
            let mut oids = Vec::with_capacity(count);
            for _ in 0..count {
                oids.push(reader.oid("parameter types")?);
            }
            reader.finish()?;
            BackendMessage::ParameterDescription(oids)
        }
        b's' => empty("PortalSuspended", body, BackendMessage::PortalSuspended)?,
        b'G' => BackendMessage::CopyInResponse(decode_copy_response("CopyInResponse", body)?),
        b'H' => BackendMessage::CopyOutResponse(decode_copy_response("CopyOutResponse", body)?),
        b'W' => BackendMessage::CopyBothResponse(decode_copy_response("CopyBothResponse", body)?),
        b'd' => BackendMessage::CopyData(body),
        b'c' => empty("CopyDone", body, BackendMessage::CopyDone)?,
        b'A' => {
            let mut reader = Reader::new("NotificationResponse", body);
            let process_id = reader.i32("process ID")?;
            let channel = reader.cstr("channel")?;
            let payload = reader.cstr("payload")?;
            reader.finish()?;
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }
        b'V' => {
            let mut reader = Reader::new("FunctionCallResponse", body);
            let value = reader.nullable("result")?;
            reader.finish()?;
            BackendMessage::FunctionCallResponse(value)
        }
        b'v' => {
            let mut reader = Reader::new("NegotiateProtocolVersion", body);
            let newest_version = ProtocolVersion {
                major: reader.u16("newest protocol version")?,
                minor: reader.u16("newest protocol version")?,
            };
            // Each option name has at least its NUL terminator.
            let count = reader.count32("unrecognized options", 1)?;
            let mut unrecognized_options = Vec::with_capacity(count);
            for _ in 0..count {
                unrecognized_options.push(reader.cstr("unrecognized options")?);
            }
            reader.finish()?;
            BackendMessage::NegotiateProtocolVersion {
                newest_version,
                unrecognized_options,
            }
        }
        other => {
            return Err(DecodeError::UnknownMessageType {
                direction: Direction::Backend,
                type_byte: TypeByte(other),
            });
        }
    };
    Ok(message)
}

fn empty(
    message: &'static str,
    body: Bytes,
    value: BackendMessage,
) -> Result<BackendMessage, DecodeError> {
    Reader::new(message, body).finish()?;
    Ok(value)
}

fn decode_authentication(body: Bytes) -> Result<Authentication, DecodeError> {
    let mut reader = Reader::new("Authentication", body);
    let code = reader.i32("request code")?;
    let request = match code {
        0 => Authentication::Ok,
        2 => Authentication::KerberosV5,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = reader.bytes("salt", 4)?;
            let mut bytes = [0; 4];
            bytes.copy_from_slice(&salt);
            Authentication::Md5Password { salt: bytes }
        }
        7 => Authentication::Gss,
        8 => Authentication::GssContinue(reader.rest()),
        9 => Authentication::Sspi,
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = reader.cstr("mechanisms")?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            Authentication::Sasl(mechanisms)
        }
        11 => Authentication::SaslContinue(reader.rest()),
        12 => Authentication::SaslFinal(reader.rest()),
        other => {
            return Err(DecodeError::InvalidValue {
                message: "Authentication",
                field: "request code",
                value: i64::from(other),
            });
        }
    };
    reader.finish()?;
    Ok(request)
}

fn decode_row_description(body: Bytes) -> Result<Vec<FieldDescription>, DecodeError> {
    let mut reader = Reader::new("RowDescription", body);
    // A field is at least a NUL (empty name) and 18 bytes of fixed fields.
    let count = reader.count16("fields", 19)?;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        fields.push(FieldDescription {
            name: reader.cstr("field name")?,
            table_oid: reader.oid("table OID")?,
            column_id: reader.i16("column attribute number")?,
            type_oid: reader.oid("type OID")?,
            type_size: reader.i16("type size")?,
            type_modifier: reader.i32("type modifier")?,
            format: reader.i16("format code")?,
        });
    }
    reader.finish()?;
    Ok(fields)
}

fn decode_copy_response(message: &'static str, body: Bytes) -> Result<CopyResponse, DecodeError> {
    let mut reader = Reader::new(message, body);
    let format = reader.i8("format")?;
    let count = reader.count16("column formats", 2)?;
    let mut column_formats = Vec::with_capacity(count);
    for _ in 0..count {
        column_formats.push(reader.i16("column formats")?);
    }
    reader.finish()?;
    Ok(CopyResponse {
        format,
        column_formats,
    })
}

impl BackendMessage {
    /// Appends the message to `buf`. On error nothing is appended.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            BackendMessage::Authentication(request) => {
                encode_frame(buf, Some(b'R'), "Authentication", |w| {
                    encode_authentication(w, request)
                })
            }
            BackendMessage::ParameterStatus { name, value } => {
                encode_frame(buf, Some(b'S'), "ParameterStatus", |w| {
                    w.cstr("name", name)?;
                    w.cstr("value", value)
                })
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => encode_frame(buf, Some(b'K'), "BackendKeyData", |w| {
                w.i32(*process_id);
                w.i32(*secret_key);
                Ok(())
            }),
            BackendMessage::ReadyForQuery(status) => {
                encode_frame(buf, Some(b'Z'), "ReadyForQuery", |w| {
                    w.u8(status.byte());
                    Ok(())
                })
            }
            BackendMessage::RowDescription(fields) => {
                encode_frame(buf, Some(b'T'), "RowDescription", |w| {
                    w.count16("fields", fields.len())?;
                    for field in fields {
                        w.cstr("field name", &field.name)?;
                        w.oid(field.table_oid);
                        w.i16(field.column_id);
                        w.oid(field.type_oid);
                        w.i16(field.type_size);
                        w.i32(field.type_modifier);
                        w.i16(field.format);
                    }
                    Ok(())
                })
            }
            BackendMessage::DataRow(values) => encode_frame(buf, Some(b'D'), "DataRow", |w| {
                w.count16("columns", values.len())?;
                for value in values {
                    w.nullable(value.as_ref())?;
                }
                Ok(())
            }),
            BackendMessage::CommandComplete(tag) => {
                encode_frame(buf, Some(b'C'), "CommandComplete", |w| {
                    w.cstr("command tag", tag)
                })
            }
            BackendMessage::EmptyQueryResponse => {
                encode_frame(buf, Some(b'I'), "EmptyQueryResponse", |_| Ok(()))
            }
            BackendMessage::ErrorResponse(fields) => {
                encode_frame(buf, Some(b'E'), "ErrorResponse", |w| fields.write(w))
            }
            BackendMessage::NoticeResponse(fields) => {
                encode_frame(buf, Some(b'N'), "NoticeResponse", |w| fields.write(w))
            }
            BackendMessage::ParseComplete => {
                encode_frame(buf, Some(b'1'), "ParseComplete", |_| Ok(()))
            }
            BackendMessage::BindComplete => {
                encode_frame(buf, Some(b'2'), "BindComplete", |_| Ok(()))
            }
            BackendMessage::CloseComplete => {
                encode_frame(buf, Some(b'3'), "CloseComplete", |_| Ok(()))
            }
            BackendMessage::NoData => encode_frame(buf, Some(b'n'), "NoData", |_| Ok(())),
            BackendMessage::ParameterDescription(oids) => {
                encode_frame(buf, Some(b't'), "ParameterDescription", |w| {
                    w.count_u16("parameter types", oids.len())?;
                    for &oid in oids {
                        w.oid(oid);
                    }
                    Ok(())
                })
            }
            BackendMessage::PortalSuspended => {
                encode_frame(buf, Some(b's'), "PortalSuspended", |_| Ok(()))
            }
            BackendMessage::CopyInResponse(response) => {
                encode_copy_response(buf, b'G', "CopyInResponse", response)
            }
            BackendMessage::CopyOutResponse(response) => {
                encode_copy_response(buf, b'H', "CopyOutResponse", response)
            }
            BackendMessage::CopyBothResponse(response) => {
                encode_copy_response(buf, b'W', "CopyBothResponse", response)
            }
            BackendMessage::CopyData(data) => encode_frame(buf, Some(b'd'), "CopyData", |w| {
                w.bytes(data);
                Ok(())
            }),
            BackendMessage::CopyDone => encode_frame(buf, Some(b'c'), "CopyDone", |_| Ok(())),
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => encode_frame(buf, Some(b'A'), "NotificationResponse", |w| {
                w.i32(*process_id);
                w.cstr("channel", channel)?;
                w.cstr("payload", payload)
            }),
            BackendMessage::FunctionCallResponse(value) => {
                encode_frame(buf, Some(b'V'), "FunctionCallResponse", |w| {
                    w.nullable(value.as_ref())
                })
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_version,
                unrecognized_options,
            } => encode_frame(buf, Some(b'v'), "NegotiateProtocolVersion", |w| {
                newest_version.write(w);
                w.count32("unrecognized options", unrecognized_options.len())?;
                for option in unrecognized_options {
                    w.cstr("unrecognized options", option)?;
                }
                Ok(())
            }),
        }
    }
}

fn encode_authentication(w: &mut Writer<'_>, request: &Authentication) -> Result<(), EncodeError> {
    match request {
        Authentication::Ok => w.i32(0),
        Authentication::KerberosV5 => w.i32(2),
        Authentication::CleartextPassword => w.i32(3),
        Authentication::Md5Password { salt } => {
            w.i32(5);
            w.bytes(salt);
        }
        Authentication::Gss => w.i32(7),
        Authentication::GssContinue(data) => {
            w.i32(8);
            w.bytes(data);
        }
        Authentication::Sspi => w.i32(9),
        Authentication::Sasl(mechanisms) => {
            w.i32(10);
            for mechanism in mechanisms {
                w.nonempty_cstr("mechanisms", mechanism)?;
            }
            w.u8(0);
        }
        Authentication::SaslContinue(data) => {
            w.i32(11);
            w.bytes(data);
        }
        Authentication::SaslFinal(data) => {
            w.i32(12);
            w.bytes(data);
        }
    }
    Ok(())
}

fn encode_copy_response(
    buf: &mut BytesMut,
    type_byte: u8,
    message: &'static str,
    response: &CopyResponse,
) -> Result<(), EncodeError> {
    encode_frame(buf, Some(type_byte), message, |w| {
        w.i8(response.format);
        w.count16("column formats", response.column_formats.len())?;
        for &format in &response.column_formats {
            w.i16(format);
        }
        Ok(())
    })
}
