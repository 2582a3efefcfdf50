//! PostgreSQL frontend/backend protocol 3.0: message types, an incremental
//! decoder and an encoder for each direction, and the server side of
//! connection startup.
//!
//! The codec follows "Message Formats" in the PostgreSQL 15–17
//! documentation. It is sans-IO: decoders take bytes from a
//! [`bytes::BytesMut`] that the caller fills from a socket, and encoders
//! append to one.
//!
//! Decoders check every length before waiting for or copying the bytes it
//! announces. Each of these is a [`DecodeError`]:
//! - a length word below its minimum or above the configured maximum,
//! - an unknown type byte,
//! - a string without its NUL terminator,
//! - a negative column count, or any count larger than the remaining bytes
//!   can hold,
//! - bytes left after the last field.
//!
//! Strings must be UTF-8, so connections must use `client_encoding` UTF8.
//!
//! Encoders convert every length and count with a checked conversion and
//! reject strings containing NUL, which would otherwise split a field
//! and let the rest be read as further fields ([`EncodeError`]).
//!
//! [`startup::ServerStartup`] handles a client's first packets: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage. Authentication and the
//! message loop after startup belong to the caller.

mod backend;
mod codec;
mod error;
mod error_fields;
mod frontend;
pub mod startup;

use std::fmt;

pub use backend::{
    Authentication, BackendDecoder, BackendMessage, CopyResponse, EncryptionResponse,
    FieldDescription, RawBackendMessage, TransactionStatus,
};
pub use error::{DecodeError, Direction, EncodeError, Framing, TypeByte};
pub use error_fields::{ErrorFields, Severity, field, sqlstate};
pub use frontend::{
    Bind, CANCEL_REQUEST_CODE, CancelRequest, Execute, FrontendDecoder, FrontendMessage,
    FunctionCall, GSSENC_REQUEST_CODE, Parse, SSL_REQUEST_CODE, SaslInitialResponse,
    StartupMessage, StartupPacket, Target, parse_password, password_message,
};

/// Default maximum of a message's length word: 64 MiB. PostgreSQL itself
/// accepts up to 1 GiB for some messages; a larger limit lets one client
/// make the gateway buffer that much per connection.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Maximum length of a startup packet, excluding its 4-byte length word.
/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` has the same value and is
/// counted the same way.
pub const MAX_STARTUP_PACKET_BYTES: usize = 10_000;

/// A protocol version as sent in a startup packet: the major number in the
/// high 16 bits, the minor in the low 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0, the only version this crate speaks.
    pub const V3_0: ProtocolVersion = ProtocolVersion::new(3, 0);

    pub const fn new(major: u16, minor: u16) -> Self {
        ProtocolVersion { major, minor }
    }

    pub(crate) fn write(self, w: &mut codec::Writer<'_>) {
        w.u16(self.major);
        w.u16(self.minor);
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
