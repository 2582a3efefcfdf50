//! Decode and encode errors.

use std::fmt;

/// A message type byte, shown as its character where printable, as
/// PostgreSQL's documentation names message types by character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeByte(pub u8);

impl fmt::Display for TypeByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}' ({:#04x})", char::from(self.0), self.0)
        } else {
            write!(f, "{:#04x}", self.0)
        }
    }
}

/// The framing of a packet. A startup packet has only a length word, and
/// every later message has a type byte before its length word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The first packet of a connection: StartupMessage, SSLRequest,
    /// GSSENCRequest or CancelRequest.
    Startup,
    /// A message with the given type byte.
    Message(TypeByte),
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::Startup => f.write_str("startup packet"),
            Framing::Message(type_byte) => write!(f, "message of type {type_byte}"),
        }
    }
}

/// The sender of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Direction::Frontend => f.write_str("frontend"),
            Direction::Backend => f.write_str("backend"),
        }
    }
}

/// A protocol violation found while decoding bytes from the network. Every
/// variant means the connection can no longer be framed and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length word is below its minimum (it counts itself, so a message
    /// length is at least 4 and a startup packet length at least 8).
    #[error("invalid {framing} length {length}: the minimum is {min}")]
    LengthTooSmall {
        framing: Framing,
        length: i32,
        min: usize,
    },
    /// The length word exceeds the configured maximum. Raised as soon as the
    /// length word has arrived, before the body is read.
    #[error("{framing} length {length} exceeds the maximum of {max} bytes")]
    TooLong {
        framing: Framing,
        length: usize,
        max: usize,
    },
    /// The type byte names no message that this direction may send.
    #[error("unknown {direction} message type {type_byte}")]
    UnknownMessageType {
        direction: Direction,
        type_byte: TypeByte,
    },
    /// A string field runs to the end of the message without a NUL byte.
    #[error("{message}: field {field} is missing its NUL terminator")]
    MissingNul {
        message: &'static str,
        field: &'static str,
    },
    /// A string field is not valid UTF-8.
    #[error("{message}: field {field} is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
    },
    /// Bytes remain after the last field of a message.
    #[error("{message}: {count} unexpected bytes after the last field")]
    TrailingBytes { message: &'static str, count: usize },
    /// A field, or the elements that a count announces, need more bytes than
    /// the message has left.
    #[error("{message}: field {field} needs {needed} bytes but only {remaining} remain")]
    Truncated {
        message: &'static str,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// A count is negative.
    #[error("{message}: field {field} has negative count {value}")]
    NegativeCount {
        message: &'static str,
        field: &'static str,
        value: i32,
    },
    /// A value length is negative but not -1, the only negative length
    /// (meaning NULL).
    #[error("{message}: field {field} has invalid length {value}; only -1 (NULL) may be negative")]
    NegativeLength {
        message: &'static str,
        field: &'static str,
        value: i32,
    },
    /// A field contains a value the protocol does not define, such as an
    /// unknown authentication request code.
    #[error("{message}: field {field} has invalid value {value}")]
    InvalidValue {
        message: &'static str,
        field: &'static str,
        value: i64,
    },
    /// The number of format codes is not 0, 1 or the number of values.
    #[error("{message}: {formats} format codes for {values} values; expected 0, 1 or {values}")]
    FormatCountMismatch {
        message: &'static str,
        formats: usize,
        values: usize,
    },
    /// The server responded to an SSLRequest or GSSENCRequest with a byte
    /// other than the ones the protocol allows.
    #[error("invalid response {type_byte} to an encryption request; expected 'S', 'G' or 'N'")]
    InvalidEncryptionResponse { type_byte: TypeByte },
}

/// A message that cannot be encoded because the protocol cannot represent
/// it. Nothing is written to the buffer when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string contains a NUL byte, which would end it early and let the
    /// rest be read as further fields.
    #[error("{message}: field {field} contains a NUL byte")]
    NulInString {
        message: &'static str,
        field: &'static str,
    },
    /// An empty string where the protocol uses an empty string as the end of
    /// a list (startup parameter names, SASL mechanism names).
    #[error("{message}: field {field} must not be empty")]
    EmptyString {
        message: &'static str,
        field: &'static str,
    },
    /// More elements than the count field's type can hold.
    #[error("{message}: field {field} has {count} elements, more than the maximum of {max}")]
    TooManyElements {
        message: &'static str,
        field: &'static str,
        count: usize,
        max: usize,
    },
    /// The whole message, or one value in it, is longer than an Int32 length
    /// can express.
    #[error("{message}: {length} bytes exceed the maximum of {max} bytes")]
    TooLong {
        message: &'static str,
        length: usize,
        max: usize,
    },
    /// A field contains a value the protocol does not allow.
    #[error("{message}: field {field} has invalid value {value}")]
    InvalidValue {
        message: &'static str,
        field: &'static str,
        value: i64,
    },
    /// The number of format codes is not 0, 1 or the number of values.
    #[error("{message}: {formats} format codes for {values} values; expected 0, 1 or {values}")]
    FormatCountMismatch {
        message: &'static str,
        formats: usize,
        values: usize,
    },
}
