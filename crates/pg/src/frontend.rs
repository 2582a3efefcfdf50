//! Messages that a client sends to a server, with their decoder and encoder.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    Reader, check_length, encode_frame, format_count_matches, peek_length, split_message,
};
use crate::error::{DecodeError, Direction, EncodeError, Framing};
use crate::{DEFAULT_MAX_MESSAGE_BYTES, MAX_STARTUP_PACKET_BYTES, ProtocolVersion};

/// Request code of SSLRequest, sent in place of a protocol version.
pub const SSL_REQUEST_CODE: ProtocolVersion = ProtocolVersion::new(1234, 5679);
/// Request code of GSSENCRequest, sent in place of a protocol version.
pub const GSSENC_REQUEST_CODE: ProtocolVersion = ProtocolVersion::new(1234, 5680);
/// Request code of CancelRequest, sent in place of a protocol version.
pub const CANCEL_REQUEST_CODE: ProtocolVersion = ProtocolVersion::new(1234, 5678);

/// The first packet of a connection, which has a length word but no type
/// byte. After an SSLRequest or GSSENCRequest that the server refused, the
/// client sends another startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// Asks the server to start TLS.
    SslRequest,
    /// Asks the server to start GSSAPI encryption.
    GssEncRequest,
    /// Asks the server to cancel the query running on another connection.
    CancelRequest(CancelRequest),
    /// A StartupMessage for protocol major version 3, with any minor version.
    Startup(StartupMessage),
    /// A packet whose protocol version has a major number other than 3
    /// (including request codes other than the three above). The body after
    /// the version is kept unparsed, because its layout depends on the
    /// version.
    UnsupportedVersion {
        protocol: ProtocolVersion,
        body: Bytes,
    },
}

/// The key of the connection whose query a CancelRequest cancels, as the
/// server sent it in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest {
    pub process_id: i32,
    pub secret_key: i32,
}

/// A StartupMessage: the protocol version and the connection parameters in
/// the order the client sent them. Duplicates are kept; the startup state
/// machine rejects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub protocol: ProtocolVersion,
    pub parameters: Vec<(String, String)>,
}

impl StartupMessage {
    /// Returns the value of the first parameter called `name`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The kind of object a Describe or Close message refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A prepared statement (`'S'`).
    Statement,
    /// A portal (`'P'`).
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }

    fn from_byte(message: &'static str, byte: u8) -> Result<Self, DecodeError> {
        match byte {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            other => Err(DecodeError::InvalidValue {
                message,
                field: "target",
                value: i64::from(other),
            }),
        }
    }
}

/// Parse: prepares a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    /// Statement name; empty for the unnamed statement.
    pub name: String,
    pub query: String,
    /// Parameter type OIDs; 0 leaves a type for the server to infer.
    pub param_types: Vec<u32>,
}

/// Bind: creates a portal from a prepared statement and parameter values.
/// Each list contains at most 65535 entries, because PostgreSQL reads their
/// counts as unsigned 16-bit numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub portal: String,
    pub statement: String,
    /// Zero codes (all text), one (for all parameters) or one per parameter.
    pub param_formats: Vec<i16>,
    /// Parameter values; `None` is NULL.
    pub params: Vec<Option<Bytes>>,
    pub result_formats: Vec<i16>,
}

/// Execute: runs a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    pub portal: String,
    /// Maximum number of rows to return; 0 means no limit.
    pub max_rows: i32,
}

/// FunctionCall: calls a function by OID, bypassing SQL. Decoded so that a
/// gateway can recognise and reject it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    pub function_oid: u32,
    /// Zero codes (all text), one (for all arguments) or one per argument.
    pub arg_formats: Vec<i16>,
    /// Argument values; `None` is NULL.
    pub args: Vec<Option<Bytes>>,
    pub result_format: i16,
}

/// A message a client sends after the startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `'Q'`: a simple query, possibly with several statements.
    Query(String),
    /// `'P'`.
    Parse(Parse),
    /// `'B'`.
    Bind(Bind),
    /// `'D'`.
    Describe { target: Target, name: String },
    /// `'E'`.
    Execute(Execute),
    /// `'S'`.
    Sync,
    /// `'H'`.
    Flush,
    /// `'C'`.
    Close { target: Target, name: String },
    /// `'X'`.
    Terminate,
    /// `'d'`.
    CopyData(Bytes),
    /// `'c'`.
    CopyDone,
    /// `'f'`: aborts a COPY FROM STDIN with an error message.
    CopyFail(String),
    /// `'p'`: PasswordMessage, SASLInitialResponse, SASLResponse and
    /// GSSResponse share this type byte, and only the authentication request
    /// the server sent last distinguishes them. The body is kept raw, for
    /// [`SaslInitialResponse::parse`] and [`parse_password`] to interpret.
    PasswordMessage(Bytes),
    /// `'F'`.
    FunctionCall(FunctionCall),
}

fn is_frontend_type(byte: u8) -> bool {
    matches!(
        byte,
        b'Q' | b'P'
            | b'B'
            | b'D'
            | b'E'
            | b'S'
            | b'H'
            | b'C'
            | b'X'
            | b'd'
            | b'c'
            | b'f'
            | b'p'
            | b'F'
    )
}

/// Decodes frontend messages from a buffer that fills as bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendDecoder {
    /// Maximum value of a message's length word (which counts itself but not
    /// the type byte).
    pub max_message_bytes: usize,
    /// Maximum length of a startup packet, excluding its length word.
    pub max_startup_bytes: usize,
}

impl Default for FrontendDecoder {
    fn default() -> Self {
        FrontendDecoder {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_startup_bytes: MAX_STARTUP_PACKET_BYTES,
        }
    }
}

impl FrontendDecoder {
    /// Creates a decoder with the given message limit and PostgreSQL's
    /// startup packet limit.
    pub fn new(max_message_bytes: usize) -> Self {
        FrontendDecoder {
            max_message_bytes,
            ..FrontendDecoder::default()
        }
    }

    /// Decodes a startup packet from the front of `buf`, consuming it.
    /// Returns `Ok(None)` and consumes nothing while the packet is
    /// incomplete; the length is checked as soon as its four bytes arrive.
    pub fn decode_startup(&self, buf: &mut BytesMut) -> Result<Option<StartupPacket>, DecodeError> {
        let Some(length) = peek_length(buf, 0) else {
            return Ok(None);
        };
        // The length word counts itself, but PostgreSQL's limit excludes it.
        let max = self.max_startup_bytes.saturating_add(4);
        let length = check_length(Framing::Startup, length, 8, max)?;
        if buf.len() < length {
            return Ok(None);
        }

        let mut packet = buf.split_to(length).freeze();
        let _length_word = packet.split_to(4);
        decode_startup_body(packet).map(Some)
    }

    /// Decodes one message from the front of `buf`, consuming it. Returns
    /// `Ok(None)` and consumes nothing while the message is incomplete.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<FrontendMessage>, DecodeError> {
        let Some((type_byte, body)) = split_message(
            buf,
            Direction::Frontend,
            is_frontend_type,
            self.max_message_bytes,
        )?
        else {
            return Ok(None);
        };
        decode_body(type_byte, body).map(Some)
    }
}

/// Decodes a startup packet after its length word: the protocol version or
/// request code, then the fields that it determines.
fn decode_startup_body(body: Bytes) -> Result<StartupPacket, DecodeError> {
    let mut reader = Reader::new("startup packet", body);
    let protocol = ProtocolVersion {
        major: reader.u16("protocol version")?,
        minor: reader.u16("protocol version")?,
    };
    match protocol {
        SSL_REQUEST_CODE => {
            reader.finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            reader.finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let mut reader = Reader::new("CancelRequest", reader.rest());
            let request = CancelRequest {
                process_id: reader.i32("process ID")?,
                secret_key: reader.i32("secret key")?,
            };
            reader.finish()?;
            Ok(StartupPacket::CancelRequest(request))
        }
        ProtocolVersion { major: 3, .. } => {
            let parameters = decode_startup_parameters(reader.rest())?;
            Ok(StartupPacket::Startup(StartupMessage {
                protocol,
                parameters,
            }))
        }
        _ => Ok(StartupPacket::UnsupportedVersion {
            protocol,
            body: reader.rest(),
        }),
    }
}

/// Decodes name/value pairs up to the empty name that ends the list, which
/// must be the last byte of the packet.
fn decode_startup_parameters(body: Bytes) -> Result<Vec<(String, String)>, DecodeError> {
    let mut reader = Reader::new("StartupMessage", body);
    let mut parameters = Vec::new();
    loop {
        let name = reader.cstr("parameter name")?;
        if name.is_empty() {
            break;
        }
        let value = reader.cstr("parameter value")?;
        parameters.push((name, value));
    }
    reader.finish()?;
    Ok(parameters)
}

fn decode_body(type_byte: u8, body: Bytes) -> Result<FrontendMessage, DecodeError> {
    let message = match type_byte {
        b'Q' => {
            let mut reader = Reader::new("Query", body);
            let query = reader.cstr("query")?;
            reader.finish()?;
            FrontendMessage::Query(query)
        }
        b'P' => FrontendMessage::Parse(decode_parse(body)?),
        b'B' => FrontendMessage::Bind(decode_bind(body)?),
        b'D' => {
            let (target, name) = decode_target("Describe", body)?;
            FrontendMessage::Describe { target, name }
        }
        b'E' => {
            let mut reader = Reader::new("Execute", body);
            let execute = Execute {
                portal: reader.cstr("portal")?,
                max_rows: reader.i32("max rows")?,
            };
            reader.finish()?;
            FrontendMessage::Execute(execute)
        }
        b'S' => empty("Sync", body, FrontendMessage::Sync)?,
        b'H' => empty("Flush", body, FrontendMessage::Flush)?,
        b'C' => {
            let (target, name) = decode_target("Close", body)?;
            FrontendMessage::Close { target, name }
        }
        b'X' => empty("Terminate", body, FrontendMessage::Terminate)?,
        b'd' => FrontendMessage::CopyData(body),
        b'c' => empty("CopyDone", body, FrontendMessage::CopyDone)?,
        b'f' => {
            let mut reader = Reader::new("CopyFail", body);
            let error = reader.cstr("error message")?;
            reader.finish()?;
            FrontendMessage::CopyFail(error)
        }
        b'p' => FrontendMessage::PasswordMessage(body),
        b'F' => FrontendMessage::FunctionCall(decode_function_call(body)?),
        other => {
            return Err(DecodeError::UnknownMessageType {
                direction: Direction::Frontend,
                type_byte: crate::error::TypeByte(other),
            });
        }
    };
    Ok(message)
}

fn empty(
    message: &'static str,
    body: Bytes,
    value: FrontendMessage,
) -> Result<FrontendMessage, DecodeError> {
    Reader::new(message, body).finish()?;
    Ok(value)
}

fn decode_target(message: &'static str, body: Bytes) -> Result<(Target, String), DecodeError> {
    let mut reader = Reader::new(message, body);
    let target = Target::from_byte(message, reader.u8("target")?)?;
    let name = reader.cstr("name")?;
    reader.finish()?;
    Ok((target, name))
}

fn decode_parse(body: Bytes) -> Result<Parse, DecodeError> {
    let mut reader = Reader::new("Parse", body);
    let name = reader.cstr("statement name")?;
    let query = reader.cstr("query")?;
    let count = reader.count_u16("parameter types", 4)?;
    let mut param_types = Vec::with_capacity(count);
    for _ in 0..count {
        param_types.push(reader.oid("parameter types")?);
    }
    reader.finish()?;
    Ok(Parse {
        name,
        query,
        param_types,
    })
}

fn read_formats(reader: &mut Reader, field: &'static str) -> Result<Vec<i16>, DecodeError> {
    let count = reader.count_u16(field, 2)?;
    let mut formats = Vec::with_capacity(count);
    for _ in 0..count {
        formats.push(reader.i16(field)?);
    }
    Ok(formats)
}

fn read_values(
    reader: &mut Reader,
    field: &'static str,
) -> Result<Vec<Option<Bytes>>, DecodeError> {
    // Each value has at least its Int32 length.
    let count = reader.count_u16(field, 4)?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(reader.nullable(field)?);
    }
    Ok(values)
}

fn decode_bind(body: Bytes) -> Result<Bind, DecodeError> {
    let mut reader = Reader::new("Bind", body);
    let portal = reader.cstr("portal")?;
    let statement = reader.cstr("statement name")?;
    let param_formats = read_formats(&mut reader, "parameter formats")?;
    let params = read_values(&mut reader, "parameters")?;
    if !format_count_matches(param_formats.len(), params.len()) {
        return Err(DecodeError::FormatCountMismatch {
            message: "Bind",
            formats: param_formats.len(),
            values: params.len(),
        });
    }
    let result_formats = read_formats(&mut reader, "result formats")?;
    reader.finish()?;
    Ok(Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

fn decode_function_call(body: Bytes) -> Result<FunctionCall, DecodeError> {
    let mut reader = Reader::new("FunctionCall", body);
    let function_oid = reader.oid("function OID")?;
    let arg_formats = read_formats(&mut reader, "argument formats")?;
    let args = read_values(&mut reader, "arguments")?;
    if !format_count_matches(arg_formats.len(), args.len()) {
        return Err(DecodeError::FormatCountMismatch {
            message: "FunctionCall",
            formats: arg_formats.len(),
            values: args.len(),
        });
    }
    let result_format = reader.i16("result format")?;
    reader.finish()?;
    Ok(FunctionCall {
        function_oid,
        arg_formats,
        args,
        result_format,
    })
}

impl StartupPacket {
    /// Appends the packet to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            StartupPacket::SslRequest => encode_frame(buf, None, "SSLRequest", |w| {
                SSL_REQUEST_CODE.write(w);
                Ok(())
            }),
            StartupPacket::GssEncRequest => encode_frame(buf, None, "GSSENCRequest", |w| {
                GSSENC_REQUEST_CODE.write(w);
                Ok(())
            }),
            StartupPacket::CancelRequest(request) => {
                encode_frame(buf, None, "CancelRequest", |w| {
                    CANCEL_REQUEST_CODE.write(w);
                    w.i32(request.process_id);
                    w.i32(request.secret_key);
                    Ok(())
                })
            }
            StartupPacket::Startup(startup) => encode_frame(buf, None, "StartupMessage", |w| {
                if startup.protocol.major != 3 {
                    return Err(w.invalid("protocol major", i64::from(startup.protocol.major)));
                }
                startup.protocol.write(w);
                for (name, value) in &startup.parameters {
                    w.nonempty_cstr("parameter name", name)?;
                    w.cstr("parameter value", value)?;
                }
                w.u8(0);
                Ok(())
            }),
            StartupPacket::UnsupportedVersion { protocol, body } => {
                encode_frame(buf, None, "startup packet", |w| {
                    protocol.write(w);
                    w.bytes(body);
                    Ok(())
                })
            }
        }
    }
}

impl FrontendMessage {
    /// Appends the message to `buf`. On error nothing is appended.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            FrontendMessage::Query(query) => {
                encode_frame(buf, Some(b'Q'), "Query", |w| w.cstr("query", query))
            }
            FrontendMessage::Parse(parse) => encode_frame(buf, Some(b'P'), "Parse", |w| {
                w.cstr("statement name", &parse.name)?;
                w.cstr("query", &parse.query)?;
                w.count_u16("parameter types", parse.param_types.len())?;
                for &oid in &parse.param_types {
                    w.oid(oid);
                }
                Ok(())
            }),
            FrontendMessage::Bind(bind) => encode_frame(buf, Some(b'B'), "Bind", |w| {
                w.check_formats(bind.param_formats.len(), bind.params.len())?;
                w.cstr("portal", &bind.portal)?;
                w.cstr("statement name", &bind.statement)?;
                w.count_u16("parameter formats", bind.param_formats.len())?;
                for &format in &bind.param_formats {
                    w.i16(format);
                }
                w.count_u16("parameters", bind.params.len())?;
                for value in &bind.params {
                    w.nullable(value.as_ref())?;
                }
                w.count_u16("result formats", bind.result_formats.len())?;
                for &format in &bind.result_formats {
                    w.i16(format);
                }
                Ok(())
            }),
            FrontendMessage::Describe { target, name } => {
                encode_frame(buf, Some(b'D'), "Describe", |w| {
                    w.u8(target.byte());
                    w.cstr("name", name)
                })
            }
            FrontendMessage::Execute(execute) => encode_frame(buf, Some(b'E'), "Execute", |w| {
                w.cstr("portal", &execute.portal)?;
                w.i32(execute.max_rows);
                Ok(())
            }),
            FrontendMessage::Sync => encode_frame(buf, Some(b'S'), "Sync", |_| Ok(())),
            FrontendMessage::Flush => encode_frame(buf, Some(b'H'), "Flush", |_| Ok(())),
            FrontendMessage::Close { target, name } => {
                encode_frame(buf, Some(b'C'), "Close", |w| {
                    w.u8(target.byte());
                    w.cstr("name", name)
                })
            }
            FrontendMessage::Terminate => encode_frame(buf, Some(b'X'), "Terminate", |_| Ok(())),
            FrontendMessage::CopyData(data) => encode_frame(buf, Some(b'd'), "CopyData", |w| {
                w.bytes(data);
                Ok(())
            }),
            FrontendMessage::CopyDone => encode_frame(buf, Some(b'c'), "CopyDone", |_| Ok(())),
            FrontendMessage::CopyFail(error) => encode_frame(buf, Some(b'f'), "CopyFail", |w| {
                w.cstr("error message", error)
            }),
            FrontendMessage::PasswordMessage(body) => {
                encode_frame(buf, Some(b'p'), "PasswordMessage", |w| {
                    w.bytes(body);
                    Ok(())
                })
            }
            FrontendMessage::FunctionCall(call) => {
                encode_frame(buf, Some(b'F'), "FunctionCall", |w| {
                    w.check_formats(call.arg_formats.len(), call.args.len())?;
                    w.oid(call.function_oid);
                    w.count_u16("argument formats", call.arg_formats.len())?;
                    for &format in &call.arg_formats {
                        w.i16(format);
                    }
                    w.count_u16("arguments", call.args.len())?;
                    for value in &call.args {
                        w.nullable(value.as_ref())?;
                    }
                    w.i16(call.result_format);
                    Ok(())
                })
            }
        }
    }
}

/// The body of a SASLInitialResponse, the first `'p'` message after the
/// server's AuthenticationSASL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    /// Mechanism the client chose, such as `SCRAM-SHA-256`.
    pub mechanism: String,
    /// The mechanism's initial client response; `None` when the client sent
    /// length -1.
    pub data: Option<Bytes>,
}

impl SaslInitialResponse {
    /// Parses the body of a [`FrontendMessage::PasswordMessage`] received
    /// after AuthenticationSASL.
    pub fn parse(body: &Bytes) -> Result<Self, DecodeError> {
        let mut reader = Reader::new("SASLInitialResponse", body.clone());
        let mechanism = reader.cstr("mechanism")?;
        let data = reader.nullable("initial response")?;
        reader.finish()?;
        Ok(SaslInitialResponse { mechanism, data })
    }

    /// Builds the `'p'` message that carries this response.
    pub fn to_message(&self) -> Result<FrontendMessage, EncodeError> {
        let mut body = BytesMut::new();
        // Encoded as a frame so the field checks apply, then the header is
        // dropped to leave the body.
        encode_frame(&mut body, None, "SASLInitialResponse", |w| {
            w.nonempty_cstr("mechanism", &self.mechanism)?;
            w.nullable(self.data.as_ref())
        })?;
        let _length_word = body.split_to(4);
        Ok(FrontendMessage::PasswordMessage(body.freeze()))
    }
}

/// Parses the body of a PasswordMessage sent in response to
/// AuthenticationCleartextPassword or AuthenticationMD5Password: one
/// NUL-terminated string.
pub fn parse_password(body: &Bytes) -> Result<String, DecodeError> {
    let mut reader = Reader::new("PasswordMessage", body.clone());
    let password = reader.cstr("password")?;
    reader.finish()?;
    Ok(password)
}

/// Builds a PasswordMessage that carries a cleartext or MD5-hashed password.
pub fn password_message(password: &str) -> Result<FrontendMessage, EncodeError> {
    if password.as_bytes().contains(&0) {
        return Err(EncodeError::NulInString {
            message: "PasswordMessage",
            field: "password",
        });
    }
    let mut body = BytesMut::with_capacity(password.len().saturating_add(1));
    body.put_slice(password.as_bytes());
    body.put_u8(0);
    Ok(FrontendMessage::PasswordMessage(body.freeze()))
}
