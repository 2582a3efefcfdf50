//! The PostgreSQL front-end: a proxy that speaks protocol 3.0 to clients
//! and to the real server, and checks every statement with the engine
//! before the server sees it.
//!
//! A client connects with its stepgate identity as `user` and one of the
//! identity's API tokens as password, proved with SCRAM-SHA-256 (or
//! SCRAM-SHA-256-PLUS over TLS) against the credential stored when the
//! token was issued. The gateway alone holds the database role's password
//! and opens the server connection as that role.
//!
//! Each statement is classified with PostgreSQL's parser
//! ([`stepgate_sql`]) and decided like an HTTP request. A statement that is
//! not let through never reaches the server: the client gets an
//! ErrorResponse with a SQLSTATE of class `SG` (see [`sqlstate`]), and the
//! session stays usable. `SELECT stepgate.step_up('<challenge id>',
//! '<code>')` answers a challenge without touching the database.

mod cache;
mod cancel;
mod challenges;
mod relay;
mod session;
mod stream;
mod tls;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use stepgate_config::{Config, PostgresConfig};
use stepgate_core::SecretString;
use stepgate_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// SQLSTATE codes of the gateway's own errors. Class `SG` is outside the
/// classes the SQL standard and PostgreSQL define, as the standard leaves
/// classes starting with a letter from I to Z to implementations.
pub mod sqlstate {
    /// The statement needs a step-up; the detail names the challenge.
    pub const STEP_UP_REQUIRED: &str = "SG001";
    /// The statement needs a person's approval, which is still pending.
    pub const APPROVAL_REQUIRED: &str = "SG002";
    /// Policy denies the statement.
    pub const DENIED: &str = "SG003";
    /// An approver denied the statement.
    pub const APPROVAL_DENIED: &str = "SG004";
    /// A `stepgate.step_up` code was wrong, or the challenge expired or
    /// belongs to another statement.
    pub const STEP_UP_FAILED: &str = "SG005";
    /// The approval cannot be used for this statement.
    pub const APPROVAL_REJECTED: &str = "SG006";
    /// The message contains several statements and the identity may send only
    /// one at a time.
    pub const MULTI_STATEMENT: &str = "SG007";
    /// The gateway cannot decide (the audit trail cannot be written), so
    /// it refuses.
    pub const UNAVAILABLE: &str = "SG009";
}

/// Errors that stop the PostgreSQL listener from starting.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("postgres.listen {address}: cannot listen: {reason}")]
    Listen { address: SocketAddr, reason: String },
    #[error("{0}")]
    Tls(String),
    #[error("postgres.roles: {0}")]
    Role(String),
}

/// The state every session shares.
pub(crate) struct Shared {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: PostgresConfig,
    pub(crate) passwords: HashMap<String, SecretString>,
    pub(crate) tls: Option<tls::ServerTls>,
    pub(crate) pool: upstream::Pool,
    pub(crate) classifier: stepgate_sql::Classifier,
    pub(crate) statements: cache::StatementCache,
    pub(crate) cancels: cancel::Registry,
    pub(crate) challenges: challenges::Challenges,
    /// Secret for the salts of unknown users' SCRAM exchanges.
    pub(crate) mock_secret: [u8; 32],
}

/// Reads every file `[postgres]` names (role passwords, TLS certificate
/// and key, the upstream CA bundle) as the listener would at start,
/// without binding anything. Does nothing without a `[postgres]` table.
pub fn check(config: &Config) -> Result<(), SetupError> {
    let Some(postgres) = &config.postgres else {
        return Ok(());
    };
    read_passwords(postgres)?;
    postgres.tls.as_ref().map(tls::server_tls).transpose()?;
    tls::upstream_tls(&postgres.upstream)?;
    Ok(())
}

/// Reads the password file of each `[[postgres.roles]]` entry.
fn read_passwords(postgres: &PostgresConfig) -> Result<HashMap<String, SecretString>, SetupError> {
    let mut passwords = HashMap::new();
    for role in &postgres.roles {
        let text = std::fs::read_to_string(&role.password_file).map_err(|err| {
            SetupError::Role(format!(
                "{}: cannot read password_file {}: {err}",
                role.name,
                role.password_file.display()
            ))
        })?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(SetupError::Role(format!(
                "{}: password_file {} is empty; write the role's password in it",
                role.name,
                role.password_file.display()
            )));
        }
        passwords.insert(role.name.clone(), SecretString::new(password.to_owned()));
    }
    Ok(passwords)
}

/// The PostgreSQL listener, bound and ready to serve.
pub struct PgGateway {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl PgGateway {
    /// Binds `postgres.listen` and loads the TLS files and role passwords,
    /// or returns `None` when the config has no `[postgres]` table.
    pub async fn bind(config: &Config, engine: Arc<Engine>) -> Result<Option<Self>, SetupError> {
        let Some(postgres) = &config.postgres else {
            return Ok(None);
        };
        let passwords = read_passwords(postgres)?;
        let server_tls = postgres.tls.as_ref().map(tls::server_tls).transpose()?;
        let upstream_tls = tls::upstream_tls(&postgres.upstream)?;
        let upstream =
            upstream::Upstream::new(&postgres.upstream, upstream_tls, postgres.max_message_bytes);
        let listener =
            TcpListener::bind(postgres.listen)
                .await
                .map_err(|err| SetupError::Listen {
                    address: postgres.listen,
                    reason: err.to_string(),
                })?;
        let mut catalogue = stepgate_sql::FunctionCatalogue::default();
        for name in &postgres.pure_functions {
            catalogue.insert(name);
        }
        let engine_challenge_ttl = engine.settings().step_up.challenge_ttl();
        let mut mock_secret = [0u8; 32];
        // TODO: keep the secret across restarts, so an unknown user's salt
        // stays the same as a real user's does.
        rand::fill(&mut mock_secret);
        tracing::info!(
            listen = %postgres.listen,
            tls = server_tls.is_some(),
            upstream = %format!("{}:{}", postgres.upstream.host, postgres.upstream.port),
            "PostgreSQL listener bound"
        );
        Ok(Some(Self {
            listener,
            shared: Arc::new(Shared {
                engine,
                config: postgres.clone(),
                passwords,
                tls: server_tls,
                pool: upstream::Pool::new(upstream),
                classifier: stepgate_sql::Classifier::new(catalogue),
                statements: cache::StatementCache::default(),
                cancels: cancel::Registry::default(),
                challenges: challenges::Challenges::new(engine_challenge_ttl),
                mock_secret,
            }),
        }))
    }

    /// Returns the bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts clients until `stopped` turns true. Sessions in progress
    /// get a FATAL ErrorResponse (57P01) when the gateway stops.
    pub async fn serve(self, mut stopped: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a PostgreSQL connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let shared = self.shared.clone();
            let stopped = stopped.clone();
            tokio::spawn(async move {
                session::run(shared, tcp, peer, stopped).await;
            });
        }
        tracing::info!("PostgreSQL listener stopped");
    }
}
