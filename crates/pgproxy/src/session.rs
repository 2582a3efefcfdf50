//! One client connection up to the message loop: startup (with TLS when
//! asked and configured), SCRAM authentication against the identity's
//! tokens, the identity's database role, and a server connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use stepgate_pg::startup::{ServerStartup, StartupConfig, StartupInfo, StartupStep};
use stepgate_pg::{
    Authentication, BackendMessage, ErrorFields, FrontendDecoder, FrontendMessage,
    SaslInitialResponse, Severity, TransactionStatus, sqlstate as pgstate,
};
use stepgate_scram::{Mechanism, ServerExchange, StoredCredential};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::Shared;
use crate::relay::Relay;
use crate::stream::PgStream;

/// Time a client has to finish startup and authentication.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Iterations of the SCRAM credential shown for an unknown user, the same
/// as `token issue` uses.
const MOCK_ITERATIONS: u32 = stepgate_scram::DEFAULT_ITERATIONS;

/// Run-time settings a client may give as startup parameters. Others,
/// such as `role`, `session_authorization` or `search_path`, would change
/// who runs the statements or which tables their names mean without the
/// gateway deciding on it, so they are refused.
const PASSED_SETTINGS: [&str; 14] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "bytea_output",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "standard_conforming_strings",
    "geqo",
];

/// The reason a session ended early; logged, never sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Closed(String),
}

/// Serves one client connection to its end.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    stopped: watch::Receiver<bool>,
) {
    match serve(shared, tcp, peer, stopped).await {
        Ok(()) => tracing::debug!(client.addr = %peer, "PostgreSQL session ended"),
        Err(err) => {
            tracing::info!(client.addr = %peer, error = %err, "PostgreSQL session ended early")
        }
    }
}

fn fatal(code: &str, message: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let _ = BackendMessage::ErrorResponse(ErrorFields::new(Severity::Fatal, code, message))
        .encode(&mut out);
    out
}

async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    stopped: watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let started = tokio::time::timeout(LOGIN_TIMEOUT, start(&shared, tcp)).await;
    let Ok(started) = started else {
        return Err(SessionError::Closed(format!(
            "startup not finished within {}s",
            LOGIN_TIMEOUT.as_secs()
        )));
    };
    let Some((mut stream, info, leftover)) = started? else {
        return Ok(());
    };
    let client_addr = peer.ip().to_canonical();

    if shared.config.require_tls && !info.tls {
        stream
            .write_all(&fatal(
                pgstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "this gateway accepts only TLS connections; connect with sslmode=require or stronger",
            ))
            .await?;
        return Ok(());
    }
    let login = tokio::time::timeout(
        LOGIN_TIMEOUT,
        authenticate(&shared, &mut stream, &info, client_addr, leftover),
    )
    .await
    .map_err(|_| SessionError::Closed("authentication not finished in time".into()))??;
    let Some((token_id, mut input)) = login else {
        return Ok(());
    };
    let identity = info.user.clone();
    let Some(mapping) = shared.config.role_of(&identity).cloned() else {
        tracing::info!(identity = %identity, "authenticated identity has no database role");
        stream
            .write_all(&fatal(
                pgstate::INVALID_AUTHORIZATION_SPECIFICATION,
                &format!(
                    "identity \"{identity}\" has no database role; add a [[postgres.identities]] entry for it"
                ),
            ))
            .await?;
        return Ok(());
    };
    if !mapping.databases.is_empty() && !mapping.databases.contains(&info.database) {
        tracing::info!(identity = %identity, pg.database = %info.database, "database not allowed for identity");
        stream
            .write_all(&fatal(
                pgstate::INVALID_AUTHORIZATION_SPECIFICATION,
                &format!(
                    "identity \"{identity}\" may not connect to database \"{}\"; it may use: {}",
                    info.database,
                    mapping.databases.join(", ")
                ),
            ))
            .await?;
        return Ok(());
    }
    if let Some(message) = refused_parameter(&info) {
        stream
            .write_all(&fatal(pgstate::FEATURE_NOT_SUPPORTED, &message))
            .await?;
        return Ok(());
    }
    let Some(password) = shared.passwords.get(&mapping.role) else {
        stream
            .write_all(&fatal(
                pgstate::INVALID_AUTHORIZATION_SPECIFICATION,
                &format!(
                    "database role \"{}\" has no password in [[postgres.roles]]",
                    mapping.role
                ),
            ))
            .await?;
        return Ok(());
    };
    let mut server = match shared
        .pool
        .checkout(&mapping.role, password.danger_expose(), &info.database)
        .await
    {
        Ok(server) => server,
        Err(err) => {
            tracing::warn!(identity = %identity, pg.role = %mapping.role, pg.database = %info.database, error = %err, "cannot open a server connection");
            let mut out = BytesMut::new();
            let _ = BackendMessage::ErrorResponse(ErrorFields::new(
                Severity::Fatal,
                pgstate::CONNECTION_FAILURE,
                &format!("stepgate cannot reach the database: {err}"),
            ))
            .encode(&mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
    };

    // Apply the client's settings on the server, so the server reports
    // them and converts as asked.
    let settings: Vec<&(String, String)> = info
        .parameters
        .iter()
        .filter(|(name, _)| PASSED_SETTINGS.contains(&name.to_ascii_lowercase().as_str()))
        .collect();
    let mut out = BytesMut::new();
    if !settings.is_empty() {
        let sql: String = settings
            .iter()
            .map(|(name, value)| {
                format!(
                    "SELECT pg_catalog.set_config({}, {}, false);",
                    quote_literal(name),
                    quote_literal(value)
                )
            })
            .collect();
        let timeout = shared.pool.upstream().connect_timeout;
        match server
            .run(&sql, timeout, shared.config.max_message_bytes)
            .await
        {
            Ok((None, TransactionStatus::Idle, _)) => {}
            Ok((error, _, _)) => {
                let mut fields = error.unwrap_or_else(|| {
                    ErrorFields::new(
                        Severity::Fatal,
                        pgstate::PROTOCOL_VIOLATION,
                        "setting the startup parameters failed",
                    )
                });
                fields.set_severity(Severity::Fatal);
                let _ = BackendMessage::ErrorResponse(fields).encode(&mut out);
                stream.write_all(&out).await?;
                shared.pool.checkin(server, TransactionStatus::Idle).await;
                return Ok(());
            }
            Err(err) => {
                stream
                    .write_all(&fatal(
                        pgstate::CONNECTION_FAILURE,
                        &format!("stepgate lost the database connection: {err}"),
                    ))
                    .await?;
                return Ok(());
            }
        }
    }
    let key = shared.cancels.issue();
    *key.target.server.lock() = Some((server.process_id, server.secret_key));
    for (name, value) in &server.parameters {
        let _ = BackendMessage::ParameterStatus {
            name: name.clone(),
            value: value.clone(),
        }
        .encode(&mut out);
    }
    let _ = BackendMessage::BackendKeyData {
        process_id: key.process_id,
        secret_key: key.secret_key,
    }
    .encode(&mut out);
    let _ = BackendMessage::ReadyForQuery(TransactionStatus::Idle).encode(&mut out);
    stream.write_all(&out).await?;
    tracing::info!(identity = %identity, pg.role = %mapping.role, pg.database = %info.database, client.addr = %client_addr, tls = info.tls, "PostgreSQL session started");

    let application = info
        .parameters
        .iter()
        .find(|(name, _)| name == "application_name")
        .map(|(_, value)| value.clone());
    input.reserve(8192);
    let reject_multi_statement = shared.config.rejects_multi_statement(&identity);
    let relay = Relay::new(
        shared.clone(),
        crate::relay::SessionFacts {
            identity,
            token_id,
            role: mapping.role.clone(),
            database: info.database.clone(),
            client_addr,
            application,
            reject_multi_statement,
        },
        key.target.clone(),
    );
    let ended = relay.run(stream, input, server, stopped).await;
    drop(key);
    match ended {
        Ok(Some((server, status))) => shared.pool.checkin(server, status).await,
        Ok(None) => {}
        Err(err) => return Err(err),
    }
    Ok(())
}

/// Returns the error message for a startup parameter the gateway does not
/// pass on, if the client sent one.
fn refused_parameter(info: &StartupInfo) -> Option<String> {
    for (name, value) in &info.parameters {
        match name.as_str() {
            "replication" if !value.eq_ignore_ascii_case("false") && value != "0" => {
                return Some(
                    "replication connections are not supported through stepgate; connect to the server directly"
                        .into(),
                );
            }
            "options" if !value.trim().is_empty() => {
                return Some(format!(
                    "startup parameter \"options\" ({value:?}) is not supported through stepgate; set parameters with SET or as startup parameters instead"
                ));
            }
            "client_encoding"
                if !["utf8", "unicode", "sql_ascii"]
                    .contains(&value.to_ascii_lowercase().replace(['-', '_'], "").as_str())
                    && !value.eq_ignore_ascii_case("sql_ascii") =>
            {
                return Some(format!(
                    "client_encoding \"{value}\" is not supported through stepgate; use UTF8"
                ));
            }
            "replication" | "options" | "client_encoding" | "user" | "database" => {}
            other if !PASSED_SETTINGS.contains(&other.to_ascii_lowercase().as_str()) => {
                return Some(format!(
                    "startup parameter \"{other}\" is not passed on by stepgate; run SET after connecting, or use one of: {}",
                    PASSED_SETTINGS.join(", ")
                ));
            }
            _ => {}
        }
    }
    None
}

/// Quotes `value` as a SQL string literal. Standard-conforming strings
/// are on by default; the `E''` form with doubled backslashes is correct
/// either way.
pub(crate) fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            other => out.push(other),
        }
    }
    out.push('\'');
    out
}

type Started = Option<(PgStream, StartupInfo, BytesMut)>;

/// Runs startup; `None` when the connection ended there (an error was
/// sent, or it was a CancelRequest).
async fn start(shared: &Arc<Shared>, tcp: TcpStream) -> Result<Started, SessionError> {
    let mut startup = ServerStartup::new(StartupConfig {
        tls_available: shared.tls.is_some(),
        ..StartupConfig::default()
    });
    let mut stream = PgStream::Plain(tcp);
    let mut out = BytesMut::new();
    loop {
        let step = startup.advance(&mut out);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        match step {
            Err(err) => {
                tracing::info!(error = %err, "PostgreSQL startup rejected");
                return Ok(None);
            }
            Ok(StartupStep::NeedMore) => {
                if stream.read_buf(startup.buffer_mut()).await? == 0 {
                    return Ok(None);
                }
            }
            Ok(StartupStep::StartTls(upgrade)) => {
                let (PgStream::Plain(tcp), Some(tls)) = (stream, &shared.tls) else {
                    return Err(SessionError::Closed("TLS asked twice".into()));
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                let accepted = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|err| SessionError::Closed(format!("TLS handshake failed: {err}")))?;
                stream = PgStream::Accepted(Box::new(accepted));
                if let Err(err) = startup.tls_established(upgrade) {
                    return Err(SessionError::Closed(err.to_string()));
                }
            }
            Ok(StartupStep::Cancel(request)) => {
                cancel(shared, request.process_id, request.secret_key).await;
                return Ok(None);
            }
            Ok(StartupStep::Startup(info)) => {
                return Ok(Some((stream, info, startup.into_remaining())));
            }
        }
    }
}

async fn cancel(shared: &Arc<Shared>, process_id: i32, secret_key: i32) {
    let Some(target) = shared.cancels.find(process_id, secret_key) else {
        tracing::info!(
            pg.pid = process_id,
            "CancelRequest with an unknown key ignored"
        );
        return;
    };
    target.interrupt.notify_waiters();
    let server = *target.server.lock();
    if let Some((pid, key)) = server {
        match shared.pool.cancel(pid, key).await {
            Ok(()) => tracing::info!(
                pg.pid = process_id,
                pg.backend_pid = pid,
                "query cancel passed to the server"
            ),
            Err(err) => {
                tracing::warn!(pg.pid = process_id, error = %err, "cannot pass a query cancel to the server")
            }
        }
    }
}

/// Reads one client message during authentication.
async fn read_message(
    stream: &mut PgStream,
    buf: &mut BytesMut,
    decoder: &FrontendDecoder,
) -> Result<Option<FrontendMessage>, SessionError> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(message)) => return Ok(Some(message)),
            Ok(None) => {}
            Err(err) => {
                stream
                    .write_all(&fatal(
                        pgstate::PROTOCOL_VIOLATION,
                        &format!("invalid message: {err}"),
                    ))
                    .await?;
                return Ok(None);
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Authenticates the client with SCRAM against the SCRAM credentials of
/// its identity's tokens. Returns the matched token's id and the bytes
/// already read, or `None` when the client failed (after telling it).
async fn authenticate(
    shared: &Arc<Shared>,
    stream: &mut PgStream,
    info: &StartupInfo,
    client_addr: std::net::IpAddr,
    mut buf: BytesMut,
) -> Result<Option<(String, BytesMut)>, SessionError> {
    let decoder = FrontendDecoder::new(shared.config.max_message_bytes.min(64 * 1024));
    let binding = match (&shared.tls, info.tls) {
        (Some(tls), true) => Some(tls.channel_binding.clone()),
        _ => None,
    };
    let mechanisms = stepgate_scram::advertised_mechanisms(binding.as_ref());
    let mut out = BytesMut::new();
    let _ = BackendMessage::Authentication(Authentication::Sasl(
        mechanisms.iter().map(|m| m.name().to_owned()).collect(),
    ))
    .encode(&mut out);
    stream.write_all(&out).await?;

    let Some(FrontendMessage::PasswordMessage(body)) =
        read_message(stream, &mut buf, &decoder).await?
    else {
        stream
            .write_all(&fatal(
                pgstate::PROTOCOL_VIOLATION,
                "expected SASLInitialResponse",
            ))
            .await?;
        return Ok(None);
    };
    let refuse = |message: String| fatal(pgstate::INVALID_PASSWORD, &message);
    let Ok(initial) = SaslInitialResponse::parse(&body) else {
        stream
            .write_all(&fatal(
                pgstate::PROTOCOL_VIOLATION,
                "malformed SASLInitialResponse",
            ))
            .await?;
        return Ok(None);
    };
    let Some(mechanism) = Mechanism::from_name(&initial.mechanism) else {
        stream
            .write_all(&fatal(
                pgstate::PROTOCOL_VIOLATION,
                &format!(
                    "SASL mechanism {:?} is not offered; use SCRAM-SHA-256",
                    initial.mechanism
                ),
            ))
            .await?;
        return Ok(None);
    };
    let identity = info.user.as_str();
    let credentials: Vec<(String, StoredCredential)> = shared
        .engine
        .scram_credentials(identity)
        .into_iter()
        .filter_map(|(id, text)| Some((id, StoredCredential::parse(&text).ok()?)))
        .collect();
    let exchange = match credentials.split_first() {
        Some(((_, first), rest)) => ServerExchange::new(mechanism, first.clone(), binding.clone())
            .and_then(|exchange| {
                exchange.with_alternatives(rest.iter().map(|(_, c)| c.clone()).collect())
            }),
        None => ServerExchange::for_unknown_user(
            mechanism,
            identity,
            &shared.mock_secret,
            MOCK_ITERATIONS,
            binding.clone(),
        ),
    };
    let mut exchange = match exchange {
        Ok(exchange) => exchange,
        Err(err) => {
            tracing::warn!(identity, error = %err, "cannot start SCRAM for the identity");
            stream
                .write_all(&refuse(format!(
                    "password authentication failed for user \"{identity}\""
                )))
                .await?;
            return Ok(None);
        }
    };
    let failed = |identity: &str| {
        refuse(format!(
            "password authentication failed for user \"{identity}\"; the password is one of the identity's API tokens"
        ))
    };
    let first = initial.data.unwrap_or_default();
    let server_first = match exchange.handle_client_first(&first) {
        Ok(message) => message,
        Err(err) => {
            tracing::info!(identity, error = %err, "SCRAM client-first rejected");
            stream.write_all(&failed(identity)).await?;
            return Ok(None);
        }
    };
    out.clear();
    let _ = BackendMessage::Authentication(Authentication::SaslContinue(
        server_first.into_bytes().into(),
    ))
    .encode(&mut out);
    stream.write_all(&out).await?;
    let Some(FrontendMessage::PasswordMessage(body)) =
        read_message(stream, &mut buf, &decoder).await?
    else {
        stream
            .write_all(&fatal(pgstate::PROTOCOL_VIOLATION, "expected SASLResponse"))
            .await?;
        return Ok(None);
    };
    let server_final = match exchange.handle_client_final(&body) {
        Ok(message) => message,
        Err(err) => {
            tracing::info!(identity, error = %err, "PostgreSQL client failed SCRAM authentication");
            shared.engine.record_pg_auth_failure(identity, client_addr);
            stream.write_all(&failed(identity)).await?;
            return Ok(None);
        }
    };
    let Some(token_id) = exchange
        .matched_credential()
        .and_then(|index| credentials.get(index))
        .map(|(id, _)| id.clone())
    else {
        stream.write_all(&failed(identity)).await?;
        return Ok(None);
    };
    out.clear();
    let _ =
        BackendMessage::Authentication(Authentication::SaslFinal(server_final.into_bytes().into()))
            .encode(&mut out);
    let _ = BackendMessage::Authentication(Authentication::Ok).encode(&mut out);
    stream.write_all(&out).await?;
    Ok(Some((token_id, buf)))
}
