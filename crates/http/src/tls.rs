//! TLS on a listener: the rustls server configuration built from a `tls`
//! table, its reload when the certificate, key or CA files change, and the
//! handshake of each accepted connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use stepgate_config::{ClientAuth, TlsConfig, TlsFileError, TlsFiles};
use stepgate_core::ClientCertificate;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::client_cert::client_certificate;

/// How often the files are checked for changes.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// ALPN protocols offered, in order of preference. The connection builder
/// serves both.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors that stop a listener's TLS configuration from being built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Files(#[from] TlsFileError),
    #[error("{table}: cannot build the TLS configuration: {message}")]
    Config {
        table: &'static str,
        message: String,
    },
}

/// The TLS side of one listener: the server configuration in use and the
/// settings it was built from.
pub(crate) struct TlsListener {
    /// Key of the table, such as `gateway.tls`, for logs.
    table: &'static str,
    settings: TlsConfig,
    provider: Arc<CryptoProvider>,
    /// The configuration new connections use; replaced on reload.
    current: watch::Sender<Arc<ServerConfig>>,
}

impl TlsListener {
    /// Loads the files of `settings` and builds the first configuration.
    pub(crate) fn load(table: &'static str, settings: &TlsConfig) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = build_server_config(table, settings, &provider)?;
        tracing::info!(
            tls.table = table,
            cert_file = %settings.cert_file.display(),
            client_auth = settings.client_auth.as_str(),
            "TLS configuration loaded"
        );
        Ok(Self {
            table,
            settings: settings.clone(),
            provider,
            current: watch::Sender::new(Arc::new(config)),
        })
    }

    /// Runs the TLS handshake on an accepted connection within the
    /// handshake timeout, using the configuration current at this moment.
    /// Returns `None` and logs the reason when the handshake fails; with a
    /// verified client certificate, also returns its parsed form.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, Option<Arc<ClientCertificate>>)> {
        let acceptor = TlsAcceptor::from(self.current.borrow().clone());
        let timeout = self.settings.handshake_timeout();
        let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                // TCP health checks connect and close without a handshake.
                tracing::debug!(tls.table = self.table, client.addr = %peer, error = %err, "connection closed during the TLS handshake");
                return None;
            }
            Ok(Err(err)) => {
                tracing::info!(tls.table = self.table, client.addr = %peer, error = %err, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::info!(tls.table = self.table, client.addr = %peer, timeout_s = timeout.as_secs(), "TLS handshake timed out");
                return None;
            }
        };
        let (_, session) = stream.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| der.as_ref().to_vec());
        tracing::debug!(
            tls.table = self.table,
            tls.version = ?session.protocol_version(),
            tls.alpn = ?session.alpn_protocol().map(String::from_utf8_lossy),
            tls.client_certificate = leaf.is_some(),
            "TLS handshake done"
        );
        let certificate = match leaf {
            None => None,
            Some(der) => match client_certificate(der) {
                Ok(certificate) => {
                    tracing::debug!(
                        tls.table = self.table,
                        tls.client.subject = %certificate.subject,
                        tls.client.x5t_s256 = %certificate.thumbprint_sha256,
                        tls.client.dns_names = ?certificate.dns_names,
                        tls.client.uris = ?certificate.uris,
                        tls.client.emails = ?certificate.emails,
                        tls.client.ip_addresses = ?certificate.ip_addresses,
                        tls.client.not_after = %certificate.not_after.to_rfc3339(),
                        "client certificate verified"
                    );
                    Some(Arc::new(certificate))
                }
                Err(err) => {
                    // rustls verified the certificate, so x509-parser
                    // rejected one of its fields. The connection closes
                    // because serving it would drop the identity it proved.
                    tracing::warn!(tls.table = self.table, client.addr = %peer, error = %err, "cannot read the verified client certificate, closing the connection");
                    return None;
                }
            },
        };
        Some((stream, certificate))
    }

    /// Checks the files once a second and swaps in a new configuration when
    /// any of them changed, until `shutdown` turns true. A change that
    /// does not load keeps the configuration in use.
    pub(crate) async fn reload_on_change(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut seen = fingerprint(&self.settings);
        let mut interval = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => break,
            }
            let now = fingerprint(&self.settings);
            if now == seen {
                continue;
            }
            // Taken before reading, so a write that goes on during the read
            // changes the fingerprint again and triggers another reload.
            seen = now;
            let listener = self.clone();
            let built = tokio::task::spawn_blocking(move || {
                build_server_config(listener.table, &listener.settings, &listener.provider)
            })
            .await;
            match built {
                Ok(Ok(config)) => {
                    self.current.send_replace(Arc::new(config));
                    tracing::info!(
                        tls.table = self.table,
                        cert_file = %self.settings.cert_file.display(),
                        "TLS files changed, new connections use the reloaded configuration"
                    );
                }
                Ok(Err(err)) => {
                    tracing::error!(tls.table = self.table, error = %err, "cannot reload the changed TLS files, keeping the loaded configuration");
                }
                Err(err) => {
                    tracing::error!(tls.table = self.table, error = %err, "TLS reload task failed, keeping the loaded configuration");
                }
            }
        }
    }
}

/// Reads the files of `settings` and builds a server configuration with
/// ALPN and the client certificate verifier.
fn build_server_config(
    table: &'static str,
    settings: &TlsConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<ServerConfig, TlsSetupError> {
    let TlsFiles {
        certified_key,
        client_roots,
    } = settings.load_files(table, provider)?;
    let config_error = |message: String| TlsSetupError::Config { table, message };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| config_error(err.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            if settings.client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|err| config_error(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key)));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Modification time, size and inode of a file. `None` when the file cannot
/// be read, so a file that disappears and comes back counts as changed.
type FileStamp = Option<(SystemTime, u64, u64)>;

fn fingerprint(settings: &TlsConfig) -> Vec<(PathBuf, FileStamp)> {
    use std::os::unix::fs::MetadataExt;
    settings
        .files()
        .into_iter()
        .map(|path| {
            let stamp = std::fs::metadata(path)
                .and_then(|meta| Ok((meta.modified()?, meta.len(), meta.ino())))
                .ok();
            (path.to_owned(), stamp)
        })
        .collect()
}
