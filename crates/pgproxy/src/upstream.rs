//! Connections to the real server: opening one (TCP, TLS as configured,
//! SCRAM or cleartext authentication as the configured role), and the pool
//! of idle connections per role and database.
//!
//! A connection goes back to the pool only after `DISCARD ALL` returned it
//! to a fresh session's state, so nothing one client set (settings,
//! prepared statements, temporary tables, advisory locks, `LISTEN`s) is
//! seen by the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use stepgate_config::UpstreamConfig;
use stepgate_pg::{
    Authentication, BackendDecoder, BackendMessage, CancelRequest, ErrorFields, FrontendMessage,
    SaslInitialResponse, StartupMessage, StartupPacket, TransactionStatus,
};
use stepgate_scram::{ChannelBinding, ClientExchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::PgStream;

/// A connection older than this in the pool is checked with an empty query
/// before it is handed out.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(30);

/// An error that stopped a server connection from opening or working.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect to the database server {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error(
        "the database server refused TLS; set postgres.upstream.tls = \"disable\" or enable ssl on the server"
    )]
    TlsRefused,
    #[error("TLS to the database server failed: {0}")]
    Tls(String),
    #[error("the database server sent an error: {}", .0.message().unwrap_or("no message"))]
    Server(ErrorFields),
    #[error(
        "the database server asked for {0} authentication, which stepgate does not speak; use scram-sha-256 in pg_hba.conf"
    )]
    UnsupportedAuth(&'static str),
    #[error("SCRAM authentication with the database server failed: {0}")]
    Scram(String),
    #[error("the database server broke the protocol: {0}")]
    Protocol(String),
    #[error("the database server closed the connection")]
    Closed,
    #[error("I/O error with the database server: {0}")]
    Io(#[from] std::io::Error),
    #[error("the database server did not answer within {0:?}")]
    Timeout(Duration),
}

/// The address of the server and the settings for reaching it.
pub(crate) struct Upstream {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_size: usize,
    pub(crate) max_message_bytes: usize,
}

impl Upstream {
    pub(crate) fn new(
        config: &UpstreamConfig,
        tls: Option<Arc<ClientConfig>>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            host: config.host.clone(),
            port: config.port,
            tls,
            connect_timeout: Duration::from_secs(config.connect_timeout_secs),
            pool_size: config.pool_size,
            max_message_bytes,
        }
    }

    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// An authenticated server connection, idle at ReadyForQuery.
pub(crate) struct ServerConn {
    pub(crate) stream: PgStream,
    /// Bytes read from the server and not yet decoded.
    pub(crate) read_buf: BytesMut,
    /// The server's current run-time parameters, from ParameterStatus.
    pub(crate) parameters: Vec<(String, String)>,
    /// The server's BackendKeyData, for CancelRequest.
    pub(crate) process_id: i32,
    pub(crate) secret_key: i32,
    pub(crate) role: String,
    pub(crate) database: String,
    pub(crate) idle_since: Instant,
}

impl ServerConn {
    /// Records a ParameterStatus the server sent.
    pub(crate) fn set_parameter(&mut self, name: String, value: String) {
        set_parameter(&mut self.parameters, name, value);
    }

    /// Reads one message, waiting at most `timeout`.
    async fn read_message(
        &mut self,
        decoder: &BackendDecoder,
        timeout: Duration,
    ) -> Result<BackendMessage, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(message) = decoder
                .decode(&mut self.read_buf)
                .map_err(|err| UpstreamError::Protocol(err.to_string()))?
            {
                return Ok(message);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf))
                .await
                .map_err(|_| UpstreamError::Timeout(timeout))??;
            if read == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }

    async fn send(&mut self, message: &FrontendMessage) -> Result<(), UpstreamError> {
        let mut out = BytesMut::new();
        message
            .encode(&mut out)
            .map_err(|err| UpstreamError::Protocol(err.to_string()))?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Runs `sql` as a simple query and reads until ReadyForQuery. Returns
    /// the first error the server sent and the final transaction status.
    /// ParameterStatus messages update the recorded parameters; the
    /// others are dropped.
    pub(crate) async fn run(
        &mut self,
        sql: &str,
        timeout: Duration,
        max_message_bytes: usize,
    ) -> Result<
        (
            Option<ErrorFields>,
            TransactionStatus,
            Vec<(String, String)>,
        ),
        UpstreamError,
    > {
        self.send(&FrontendMessage::Query(sql.to_owned())).await?;
        let decoder = BackendDecoder::new(max_message_bytes);
        let mut first_error = None;
        let mut reported = Vec::new();
        loop {
            match self.read_message(&decoder, timeout).await? {
                BackendMessage::ErrorResponse(fields) => {
                    first_error.get_or_insert(fields);
                }
                BackendMessage::ParameterStatus { name, value } => {
                    reported.push((name.clone(), value.clone()));
                    self.set_parameter(name, value);
                }
                BackendMessage::ReadyForQuery(status) => {
                    return Ok((first_error, status, reported));
                }
                BackendMessage::CopyInResponse(_) | BackendMessage::CopyBothResponse(_) => {
                    return Err(UpstreamError::Protocol(
                        "a reset statement started a COPY".into(),
                    ));
                }
                _ => {}
            }
        }
    }
}

/// Sets `name` to `value` in a list of run-time parameters, as a
/// ParameterStatus message reports them.
pub(crate) fn set_parameter(parameters: &mut Vec<(String, String)>, name: String, value: String) {
    match parameters.iter_mut().find(|(key, _)| *key == name) {
        Some(entry) => entry.1 = value,
        None => parameters.push((name, value)),
    }
}

/// Opens and authenticates a connection to `database` as `role`.
pub(crate) async fn connect(
    upstream: &Upstream,
    role: &str,
    password: &str,
    database: &str,
) -> Result<ServerConn, UpstreamError> {
    let address = upstream.address();
    let timeout = upstream.connect_timeout;
    let tcp = tokio::time::timeout(
        timeout,
        TcpStream::connect((upstream.host.as_str(), upstream.port)),
    )
    .await
    .map_err(|_| UpstreamError::Connect {
        address: address.clone(),
        reason: format!("no connection within {}s", timeout.as_secs()),
    })?
    .map_err(|err| UpstreamError::Connect {
        address: address.clone(),
        reason: err.to_string(),
    })?;
    tcp.set_nodelay(true)?;
    let (stream, channel_binding) = match &upstream.tls {
        None => (PgStream::Plain(tcp), None),
        Some(config) => {
            let (stream, binding) = start_tls(tcp, config, &upstream.host, timeout).await?;
            (PgStream::Connected(Box::new(stream)), binding)
        }
    };
    let mut conn = ServerConn {
        stream,
        read_buf: BytesMut::with_capacity(8192),
        parameters: Vec::new(),
        process_id: 0,
        secret_key: 0,
        role: role.to_owned(),
        database: database.to_owned(),
        idle_since: Instant::now(),
    };
    let startup = StartupMessage {
        protocol: stepgate_pg::ProtocolVersion::V3_0,
        parameters: vec![
            ("user".into(), role.into()),
            ("database".into(), database.into()),
            ("client_encoding".into(), "UTF8".into()),
            ("application_name".into(), "stepgate".into()),
        ],
    };
    let mut out = BytesMut::new();
    StartupPacket::Startup(startup)
        .encode(&mut out)
        .map_err(|err| UpstreamError::Protocol(err.to_string()))?;
    conn.stream.write_all(&out).await?;
    authenticate(&mut conn, upstream, password, channel_binding).await?;
    let decoder = BackendDecoder::new(upstream.max_message_bytes);
    loop {
        match conn.read_message(&decoder, timeout).await? {
            BackendMessage::ParameterStatus { name, value } => conn.set_parameter(name, value),
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                conn.process_id = process_id;
                conn.secret_key = secret_key;
            }
            BackendMessage::ReadyForQuery(_) => break,
            BackendMessage::ErrorResponse(fields) => return Err(UpstreamError::Server(fields)),
            BackendMessage::NoticeResponse(_) | BackendMessage::NegotiateProtocolVersion { .. } => {
            }
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message during startup: {other:?}"
                )));
            }
        }
    }
    tracing::debug!(
        pg.role = role,
        pg.database = database,
        pg.backend_pid = conn.process_id,
        "server connection opened"
    );
    Ok(conn)
}

async fn start_tls(
    mut tcp: TcpStream,
    config: &Arc<ClientConfig>,
    host: &str,
    timeout: Duration,
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Option<ChannelBinding>,
    ),
    UpstreamError,
> {
    let mut request = BytesMut::new();
    StartupPacket::SslRequest
        .encode(&mut request)
        .map_err(|err| UpstreamError::Protocol(err.to_string()))?;
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(timeout, tcp.read_exact(&mut answer))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))??;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(UpstreamError::TlsRefused),
        other => {
            return Err(UpstreamError::Protocol(format!(
                "response {other:#04x} to SSLRequest"
            )));
        }
    }
    let name = ServerName::try_from(host.to_owned())
        .map_err(|err| UpstreamError::Tls(format!("server name {host:?}: {err}")))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
        .map_err(|err| UpstreamError::Tls(err.to_string()))?;
    let binding = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| ChannelBinding::from_certificate(leaf.as_ref()).ok());
    Ok((stream, binding))
}

async fn authenticate(
    conn: &mut ServerConn,
    upstream: &Upstream,
    password: &str,
    channel_binding: Option<ChannelBinding>,
) -> Result<(), UpstreamError> {
    let decoder = BackendDecoder::new(upstream.max_message_bytes);
    let timeout = upstream.connect_timeout;
    let mut exchange: Option<ClientExchange> = None;
    let mut server_proved = false;
    loop {
        let message = conn.read_message(&decoder, timeout).await?;
        let request = match message {
            BackendMessage::Authentication(request) => request,
            BackendMessage::ErrorResponse(fields) => return Err(UpstreamError::Server(fields)),
            BackendMessage::NoticeResponse(_) => continue,
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "expected an authentication request, got {other:?}"
                )));
            }
        };
        match request {
            Authentication::Ok => {
                if exchange.is_some() && !server_proved {
                    return Err(UpstreamError::Scram(
                        "the server ended SCRAM before proving it knows the password".into(),
                    ));
                }
                return Ok(());
            }
            Authentication::CleartextPassword => {
                conn.send(
                    &stepgate_pg::password_message(password)
                        .map_err(|err| UpstreamError::Protocol(err.to_string()))?,
                )
                .await?;
            }
            Authentication::Sasl(mechanisms) => {
                let mut client = ClientExchange::negotiate(
                    mechanisms.iter().map(String::as_str),
                    password,
                    channel_binding.clone(),
                )
                .map_err(|err| UpstreamError::Scram(err.to_string()))?;
                let first = client
                    .client_first()
                    .map_err(|err| UpstreamError::Scram(err.to_string()))?;
                let initial = SaslInitialResponse {
                    mechanism: client.mechanism().name().to_owned(),
                    data: Some(first.into_bytes().into()),
                };
                conn.send(
                    &initial
                        .to_message()
                        .map_err(|err| UpstreamError::Protocol(err.to_string()))?,
                )
                .await?;
                exchange = Some(client);
            }
            Authentication::SaslContinue(data) => {
                let client = exchange
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASLContinue before SASL".into()))?;
                let reply = client
                    .handle_server_first(&data)
                    .map_err(|err| UpstreamError::Scram(err.to_string()))?;
                conn.send(&FrontendMessage::PasswordMessage(reply.into_bytes().into()))
                    .await?;
            }
            Authentication::SaslFinal(data) => {
                let client = exchange
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASLFinal before SASL".into()))?;
                client
                    .handle_server_final(&data)
                    .map_err(|err| UpstreamError::Scram(err.to_string()))?;
                server_proved = true;
            }
            Authentication::Md5Password { .. } => {
                return Err(UpstreamError::UnsupportedAuth("md5"));
            }
            Authentication::KerberosV5 => return Err(UpstreamError::UnsupportedAuth("Kerberos")),
            Authentication::Gss | Authentication::GssContinue(_) => {
                return Err(UpstreamError::UnsupportedAuth("GSSAPI"));
            }
            Authentication::Sspi => return Err(UpstreamError::UnsupportedAuth("SSPI")),
        }
    }
}

/// Idle server connections per role and database.
pub(crate) struct Pool {
    upstream: Upstream,
    idle: Mutex<HashMap<(String, String), Vec<ServerConn>>>,
}

impl Pool {
    pub(crate) fn new(upstream: Upstream) -> Self {
        Self {
            upstream,
            idle: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Returns an idle connection for `role` and `database`, or opens one.
    pub(crate) async fn checkout(
        &self,
        role: &str,
        password: &str,
        database: &str,
    ) -> Result<ServerConn, UpstreamError> {
        loop {
            let conn = {
                let mut idle = self.idle.lock();
                idle.get_mut(&(role.to_owned(), database.to_owned()))
                    .and_then(Vec::pop)
            };
            let Some(mut conn) = conn else {
                return connect(&self.upstream, role, password, database).await;
            };
            if conn.idle_since.elapsed() < CHECK_IDLE_AFTER {
                return Ok(conn);
            }
            match conn
                .run(
                    "",
                    self.upstream.connect_timeout,
                    self.upstream.max_message_bytes,
                )
                .await
            {
                Ok((None, TransactionStatus::Idle, _)) => return Ok(conn),
                Ok(_) | Err(_) => {
                    tracing::debug!(
                        pg.role = role,
                        pg.database = database,
                        "idle server connection failed its check, dropping it"
                    );
                }
            }
        }
    }

    /// Resets a connection a client used and keeps it for the next, or
    /// closes it when the reset fails or the pool is full.
    pub(crate) async fn checkin(&self, mut conn: ServerConn, status: TransactionStatus) {
        let timeout = self.upstream.connect_timeout;
        let max = self.upstream.max_message_bytes;
        if status != TransactionStatus::Idle {
            match conn.run("ROLLBACK", timeout, max).await {
                Ok((None, TransactionStatus::Idle, _)) => {}
                _ => {
                    tracing::debug!(
                        pg.backend_pid = conn.process_id,
                        "rollback before pooling failed, closing the server connection"
                    );
                    return;
                }
            }
        }
        match conn.run("DISCARD ALL", timeout, max).await {
            Ok((None, TransactionStatus::Idle, _)) => {}
            Ok((error, _, _)) => {
                tracing::warn!(pg.backend_pid = conn.process_id, error = ?error.as_ref().and_then(ErrorFields::message), "DISCARD ALL failed, closing the server connection");
                return;
            }
            Err(err) => {
                tracing::debug!(pg.backend_pid = conn.process_id, error = %err, "server connection lost during reset");
                return;
            }
        }
        conn.idle_since = Instant::now();
        let key = (conn.role.clone(), conn.database.clone());
        let mut idle = self.idle.lock();
        let slot = idle.entry(key).or_default();
        if slot.len() < self.upstream.pool_size {
            slot.push(conn);
        }
    }

    /// Sends a CancelRequest for the server process `process_id`.
    pub(crate) async fn cancel(
        &self,
        process_id: i32,
        secret_key: i32,
    ) -> Result<(), UpstreamError> {
        let address = self.upstream.address();
        let mut tcp = tokio::time::timeout(
            self.upstream.connect_timeout,
            TcpStream::connect((self.upstream.host.as_str(), self.upstream.port)),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(self.upstream.connect_timeout))?
        .map_err(|err| UpstreamError::Connect {
            address,
            reason: err.to_string(),
        })?;
        let mut packet = BytesMut::new();
        StartupPacket::CancelRequest(CancelRequest {
            process_id,
            secret_key,
        })
        .encode(&mut packet)
        .map_err(|err| UpstreamError::Protocol(err.to_string()))?;
        // TODO: send the CancelRequest over TLS when the server requires it.
        tcp.write_all(&packet).await?;
        let _ = tcp.shutdown().await;
        Ok(())
    }
}
