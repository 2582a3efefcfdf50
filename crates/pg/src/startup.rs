//! The server side of connection startup, up to the point where
//! authentication begins.
//!
//! [`ServerStartup`] owns the bytes read from the client until startup
//! finishes. Owning them is what lets it enforce the TLS rule: after it
//! responds `'S'` to an SSLRequest, every byte that the client sent before the
//! TLS handshake is plaintext that an attacker on the path could have
//! injected, so any such byte fails the connection instead of being read as
//! if it had come over TLS.
//!
//! ```text
//! loop {
//!     read from the socket (plain or TLS) into startup.buffer_mut()
//!     let result = startup.advance(&mut output);
//!     write `output` to the client (it may hold 'N', 'S' or an ErrorResponse)
//!     match result? {
//!         NeedMore => continue,
//!         StartTls(upgrade) => { TLS handshake; startup.tls_established(upgrade)? }
//!         Cancel(request) => { match the key, close }
//!         Startup(info) => { authenticate info.user, then proxy }
//!     }
//! }
//! ```

use bytes::{BufMut, BytesMut};

use crate::backend::{BackendMessage, EncryptionResponse};
use crate::error::{DecodeError, EncodeError};
use crate::error_fields::{ErrorFields, Severity, sqlstate};
use crate::frontend::{CancelRequest, FrontendDecoder, StartupMessage, StartupPacket};
use crate::{MAX_STARTUP_PACKET_BYTES, ProtocolVersion};

/// Prefix of startup parameters that request protocol extensions rather
/// than set run-time parameters.
pub const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

/// Startup settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupConfig {
    /// Whether the caller can run a TLS handshake. Without it every
    /// SSLRequest gets the response `'N'`.
    pub tls_available: bool,
    /// Maximum length of a startup packet, excluding its length word.
    pub max_startup_bytes: usize,
}

impl Default for StartupConfig {
    fn default() -> Self {
        StartupConfig {
            tls_available: false,
            max_startup_bytes: MAX_STARTUP_PACKET_BYTES,
        }
    }
}

/// What the caller must do after [`ServerStartup::advance`].
#[derive(Debug, PartialEq, Eq)]
pub enum StartupStep {
    /// Read more bytes into [`ServerStartup::buffer_mut`].
    NeedMore,
    /// `'S'` was written to the output. Send it, run the TLS handshake on the
    /// raw socket, then pass the token to [`ServerStartup::tls_established`]
    /// before reading anything over TLS.
    StartTls(TlsUpgrade),
    /// The client asked to cancel a query of another connection. Nothing is
    /// sent in reply: close the connection after matching the key against
    /// the keys this server issued.
    Cancel(CancelRequest),
    /// The client sent a valid StartupMessage. The output may hold a
    /// NegotiateProtocolVersion; authentication comes next.
    Startup(StartupInfo),
}

/// Proof that the state machine responded `'S'` to an SSLRequest. Only
/// [`ServerStartup::tls_established`] consumes it, and startup cannot go on
/// until it does.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "pass the token to ServerStartup::tls_established after the TLS handshake"]
pub struct TlsUpgrade {
    _private: (),
}

/// The accepted StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupInfo {
    /// The version the client requested; the connection speaks 3.0.
    pub protocol: ProtocolVersion,
    pub user: String,
    /// The `database` parameter, or the user name when it is missing or
    /// empty (as in PostgreSQL).
    pub database: String,
    /// Every other parameter except protocol options, in the order sent.
    /// They are not validated: `options` (server command-line switches),
    /// `replication` and run-time parameters reach the caller as sent.
    pub parameters: Vec<(String, String)>,
    /// Names of the `_pq_.` protocol options the client sent; none is
    /// supported, so all were listed in the NegotiateProtocolVersion.
    pub unrecognized_protocol_options: Vec<String>,
    /// Whether the StartupMessage came over TLS.
    pub tls: bool,
}

/// Why startup failed. The connection must be closed after the output,
/// which may hold an ErrorResponse, is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error("invalid startup packet: {0}")]
    Decode(#[from] DecodeError),
    /// Bytes followed an SSLRequest that got the response `'S'`. They arrived
    /// before the TLS handshake, so they are not protected by it.
    #[error(
        "received {count} unencrypted bytes after SSLRequest; a client must wait for the \
         server's response before sending more"
    )]
    DataAfterSslRequest { count: usize },
    #[error("unsupported frontend protocol {0}; this server supports 3.0")]
    UnsupportedProtocol(ProtocolVersion),
    #[error("received a second SSLRequest")]
    DuplicateSslRequest,
    #[error("received a second GSSENCRequest")]
    DuplicateGssEncRequest,
    #[error("received GSSENCRequest on a TLS connection")]
    GssEncRequestOverTls,
    #[error("no user name specified in the startup packet")]
    MissingUser,
    #[error("startup parameter {name:?} given more than once")]
    DuplicateParameter { name: String },
    #[error("startup is waiting for the TLS handshake; call tls_established first")]
    TlsPending,
    #[error("startup already finished or failed")]
    Finished,
    #[error("failed to encode the reply: {0}")]
    Encode(#[from] EncodeError),
}

impl StartupError {
    /// Returns the ErrorResponse sent to the client for this error, if one
    /// is sent. Nothing is sent after the response `'S'` to an SSLRequest,
    /// because
    /// the client expects a TLS handshake there.
    pub fn error_response(&self) -> Option<ErrorFields> {
        let code = match self {
            StartupError::DataAfterSslRequest { .. }
            | StartupError::TlsPending
            | StartupError::Finished
            | StartupError::Encode(_) => return None,
            StartupError::UnsupportedProtocol(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            StartupError::MissingUser => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            StartupError::Decode(_)
            | StartupError::DuplicateSslRequest
            | StartupError::DuplicateGssEncRequest
            | StartupError::GssEncRequestOverTls
            | StartupError::DuplicateParameter { .. } => sqlstate::PROTOCOL_VIOLATION,
        };
        Some(ErrorFields::new(Severity::Fatal, code, &self.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingPacket,
    AwaitingTls,
    Done,
}

/// The server side of startup for one connection.
#[derive(Debug)]
pub struct ServerStartup {
    decoder: FrontendDecoder,
    tls_available: bool,
    input: BytesMut,
    phase: Phase,
    ssl_done: bool,
    gss_done: bool,
    tls_active: bool,
}

impl ServerStartup {
    pub fn new(config: StartupConfig) -> Self {
        ServerStartup {
            decoder: FrontendDecoder {
                max_startup_bytes: config.max_startup_bytes,
                ..FrontendDecoder::default()
            },
            tls_available: config.tls_available,
            input: BytesMut::new(),
            phase: Phase::AwaitingPacket,
            ssl_done: false,
            gss_done: false,
            tls_active: false,
        }
    }

    /// The buffer to read client bytes into.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.input
    }

    /// Appends client bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.put_slice(bytes);
    }

    /// Whether the TLS handshake has completed on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// Processes the buffered bytes and appends any reply to `output`. On
    /// error the reply is the ErrorResponse, if any, from
    /// [`StartupError::error_response`]; send it and close the connection.
    /// After an error or a finished startup every call fails.
    pub fn advance(&mut self, output: &mut BytesMut) -> Result<StartupStep, StartupError> {
        match self.phase {
            Phase::AwaitingPacket => {}
            Phase::AwaitingTls => return Err(StartupError::TlsPending),
            Phase::Done => return Err(StartupError::Finished),
        }
        let result = self.process(output);
        match &result {
            Ok(StartupStep::NeedMore) | Ok(StartupStep::StartTls(_)) => {}
            Ok(_) => self.phase = Phase::Done,
            Err(error) => {
                self.phase = Phase::Done;
                if let Some(fields) = error.error_response() {
                    // Best effort: the error itself is what the caller acts on.
                    let _ = BackendMessage::ErrorResponse(fields).encode(output);
                }
            }
        }
        result
    }

    fn process(&mut self, output: &mut BytesMut) -> Result<StartupStep, StartupError> {
        loop {
            let Some(packet) = self.decoder.decode_startup(&mut self.input)? else {
                return Ok(StartupStep::NeedMore);
            };
            match packet {
                StartupPacket::SslRequest => {
                    if self.ssl_done {
                        return Err(StartupError::DuplicateSslRequest);
                    }
                    self.ssl_done = true;
                    if !self.tls_available {
                        output.put_u8(EncryptionResponse::Refuse.byte());
                        continue;
                    }
                    if !self.input.is_empty() {
                        return Err(StartupError::DataAfterSslRequest {
                            count: self.input.len(),
                        });
                    }
                    output.put_u8(EncryptionResponse::AcceptSsl.byte());
                    self.phase = Phase::AwaitingTls;
                    return Ok(StartupStep::StartTls(TlsUpgrade { _private: () }));
                }
                StartupPacket::GssEncRequest => {
                    if self.tls_active {
                        return Err(StartupError::GssEncRequestOverTls);
                    }
                    if self.gss_done {
                        return Err(StartupError::DuplicateGssEncRequest);
                    }
                    self.gss_done = true;
                    // GSSAPI encryption is not supported, so the client may
                    // go on in plaintext or with an SSLRequest.
                    output.put_u8(EncryptionResponse::Refuse.byte());
                }
                StartupPacket::CancelRequest(request) => return Ok(StartupStep::Cancel(request)),
                StartupPacket::UnsupportedVersion { protocol, .. } => {
                    return Err(StartupError::UnsupportedProtocol(protocol));
                }
                StartupPacket::Startup(message) => {
                    let info = self.accept_startup(message, output)?;
                    return Ok(StartupStep::Startup(info));
                }
            }
        }
    }

    fn accept_startup(
        &self,
        message: StartupMessage,
        output: &mut BytesMut,
    ) -> Result<StartupInfo, StartupError> {
        // PostgreSQL lets the last duplicate win. Rejecting duplicates keeps
        // the gateway and the server from disagreeing on, say, the user.
        for (index, (name, _)) in message.parameters.iter().enumerate() {
            if message.parameters[..index]
                .iter()
                .any(|(earlier, _)| earlier == name)
            {
                return Err(StartupError::DuplicateParameter { name: name.clone() });
            }
        }
        let mut user = None;
        let mut database = None;
        let mut parameters = Vec::new();
        let mut unrecognized_protocol_options = Vec::new();
        for (name, value) in message.parameters {
            match name.as_str() {
                "user" => user = Some(value),
                "database" => database = Some(value),
                _ if name.starts_with(PROTOCOL_OPTION_PREFIX) => {
                    unrecognized_protocol_options.push(name);
                }
                _ => parameters.push((name, value)),
            }
        }
        let user = user
            .filter(|user| !user.is_empty())
            .ok_or(StartupError::MissingUser)?;
        let database = database
            .filter(|database| !database.is_empty())
            .unwrap_or_else(|| user.clone());
        if message.protocol.minor > 0 || !unrecognized_protocol_options.is_empty() {
            BackendMessage::NegotiateProtocolVersion {
                newest_version: ProtocolVersion::V3_0,
                unrecognized_options: unrecognized_protocol_options.clone(),
            }
            .encode(output)?;
        }
        Ok(StartupInfo {
            protocol: message.protocol,
            user,
            database,
            parameters,
            unrecognized_protocol_options,
            tls: self.tls_active,
        })
    }

    /// Records that the TLS handshake completed. Fails, and the connection
    /// must be closed, if any byte is buffered: such bytes were read from
    /// the socket before the handshake and are not protected by TLS.
    pub fn tls_established(&mut self, upgrade: TlsUpgrade) -> Result<(), StartupError> {
        let TlsUpgrade { _private: () } = upgrade;
        if self.phase != Phase::AwaitingTls {
            return Err(StartupError::Finished);
        }
        if !self.input.is_empty() {
            self.phase = Phase::Done;
            return Err(StartupError::DataAfterSslRequest {
                count: self.input.len(),
            });
        }
        self.tls_active = true;
        // A GSSENCRequest is not allowed once TLS is on.
        self.gss_done = true;
        self.phase = Phase::AwaitingPacket;
        Ok(())
    }

    /// Returns the bytes the client sent after its StartupMessage, to be
    /// decoded as regular messages.
    pub fn into_remaining(self) -> BytesMut {
        self.input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_bytes(parameters: &[(&str, &str)], protocol: ProtocolVersion) -> BytesMut {
        let mut buf = BytesMut::new();
        StartupPacket::Startup(StartupMessage {
            protocol,
            parameters: parameters
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        })
        .encode(&mut buf)
        .unwrap();
        buf
    }

    #[test]
    fn duplicate_user_is_rejected() {
        let mut startup = ServerStartup::new(StartupConfig::default());
        startup.feed(&startup_bytes(
            &[("user", "bot"), ("user", "postgres")],
            ProtocolVersion::V3_0,
        ));
        let mut output = BytesMut::new();
        let error = startup.advance(&mut output).unwrap_err();
        assert_eq!(
            error,
            StartupError::DuplicateParameter {
                name: "user".into()
            }
        );
        assert_eq!(output.first(), Some(&b'E'));
    }

    #[test]
    fn tls_pending_blocks_advance() {
        let mut startup = ServerStartup::new(StartupConfig {
            tls_available: true,
            ..StartupConfig::default()
        });
        let mut buf = BytesMut::new();
        StartupPacket::SslRequest.encode(&mut buf).unwrap();
        startup.feed(&buf);
        let mut output = BytesMut::new();
        let step = startup.advance(&mut output).unwrap();
        assert!(matches!(step, StartupStep::StartTls(_)));
        assert_eq!(
            startup.advance(&mut output).unwrap_err(),
            StartupError::TlsPending
        );
    }
}
