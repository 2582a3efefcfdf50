//! The fields of ErrorResponse and NoticeResponse, and helpers to build them.

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, EncodeError};

/// Field codes of ErrorResponse and NoticeResponse, as PostgreSQL 15–17
/// define them. Clients ignore codes they do not know.
pub mod field {
    /// Severity, possibly localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (PostgreSQL 9.6 and later).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// SQLSTATE code.
    pub const CODE: u8 = b'C';
    /// Primary message.
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    /// Cursor position in the query string, in characters from 1.
    pub const POSITION: u8 = b'P';
    pub const INTERNAL_POSITION: u8 = b'p';
    pub const INTERNAL_QUERY: u8 = b'q';
    pub const WHERE: u8 = b'W';
    pub const SCHEMA_NAME: u8 = b's';
    pub const TABLE_NAME: u8 = b't';
    pub const COLUMN_NAME: u8 = b'c';
    pub const DATA_TYPE_NAME: u8 = b'd';
    pub const CONSTRAINT_NAME: u8 = b'n';
    pub const FILE: u8 = b'F';
    pub const LINE: u8 = b'L';
    pub const ROUTINE: u8 = b'R';
}

/// SQLSTATE codes that a gateway sends itself, from PostgreSQL's
/// errcodes.txt.
pub mod sqlstate {
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
}

/// Severity of an error or notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Aborts the current command.
    Error,
    /// Ends the session.
    Fatal,
    /// Ends all sessions of the server.
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    /// Returns the English name PostgreSQL sends in the `S` and `V` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse, in the order they
/// appear on the wire. Each field is a one-byte code and a string. The code
/// is never 0, because 0 ends the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// Builds the fields PostgreSQL itself sends first: severity (both `S`
    /// and `V`), SQLSTATE and primary message.
    pub fn new(severity: Severity, code: &str, message: &str) -> Self {
        ErrorFields {
            fields: vec![
                (field::SEVERITY, severity.as_str().to_owned()),
                (field::SEVERITY_NONLOCALIZED, severity.as_str().to_owned()),
                (field::CODE, code.to_owned()),
                (field::MESSAGE, message.to_owned()),
            ],
        }
    }

    /// Replaces both severity fields, as when a server's error ends a
    /// session and must be sent as FATAL.
    pub fn set_severity(&mut self, severity: Severity) {
        for (code, value) in &mut self.fields {
            if *code == field::SEVERITY || *code == field::SEVERITY_NONLOCALIZED {
                *value = severity.as_str().to_owned();
            }
        }
    }

    /// Adds a detail field.
    pub fn with_detail(mut self, detail: &str) -> Self {
        self.fields.push((field::DETAIL, detail.to_owned()));
        self
    }

    /// Adds a hint field.
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.fields.push((field::HINT, hint.to_owned()));
        self
    }

    /// Returns the value of the first field with `code`.
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field_code, _)| *field_code == code)
            .map(|(_, value)| value.as_str())
    }

    /// Returns the non-localized severity, or the `S` field when the sender
    /// omitted `V` (servers before 9.6 do).
    pub fn severity(&self) -> Option<&str> {
        self.get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY))
    }

    /// Returns the SQLSTATE code.
    pub fn code(&self) -> Option<&str> {
        self.get(field::CODE)
    }

    /// Returns the primary message.
    pub fn message(&self) -> Option<&str> {
        self.get(field::MESSAGE)
    }

    pub(crate) fn decode(message: &'static str, body: Bytes) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(message, body);
        let mut fields = Vec::new();
        loop {
            let code = reader.u8("field code")?;
            if code == 0 {
                break;
            }
            fields.push((code, reader.cstr("field value")?));
        }
        reader.finish()?;
        Ok(ErrorFields { fields })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        for (code, value) in &self.fields {
            if *code == 0 {
                return Err(w.invalid("field code", 0));
            }
            w.u8(*code);
            w.cstr("field value", value)?;
        }
        w.u8(0);
        Ok(())
    }
}
