//! TLS for both sides: the server configuration offered to clients after
//! SSLRequest, and the client configuration used to reach the server.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use stepgate_config::{TlsConfig, UpstreamConfig, UpstreamTls};

use crate::SetupError;

/// The system CA bundle on Debian, used for `verify-full` without a
/// `ca_file`.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS configuration for clients and the `tls-server-end-point`
/// channel-binding data of its certificate.
pub(crate) struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) channel_binding: stepgate_scram::ChannelBinding,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads the certificate and key of `postgres.tls`.
// TODO: reload the files on change, as the HTTP listeners do.
pub(crate) fn server_tls(settings: &TlsConfig) -> Result<ServerTls, SetupError> {
    let provider = provider();
    let files = settings
        .load_files("postgres.tls", &provider)
        .map_err(|err| SetupError::Tls(err.to_string()))?;
    let leaf = files.certified_key.cert.first().ok_or_else(|| {
        SetupError::Tls(
            "postgres.tls.cert_file contains no certificate; give a PEM certificate chain".into(),
        )
    })?;
    let channel_binding =
        stepgate_scram::ChannelBinding::from_certificate(leaf.as_ref()).map_err(|err| {
            SetupError::Tls(format!(
                "postgres.tls.cert_file: cannot compute the tls-server-end-point binding: {err}"
            ))
        })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| SetupError::Tls(err.to_string()))?;
    let builder = match files.client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
            if settings.client_auth == stepgate_config::ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|err| SetupError::Tls(err.to_string()))?,
            )
        }
    };
    let config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
        files.certified_key,
    )));
    Ok(ServerTls {
        config: Arc::new(config),
        channel_binding,
    })
}

/// Builds the client configuration for the server, or `None` for
/// `tls = "disable"`.
pub(crate) fn upstream_tls(
    upstream: &UpstreamConfig,
) -> Result<Option<Arc<ClientConfig>>, SetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| SetupError::Tls(err.to_string()))?;
    let config = match upstream.tls {
        UpstreamTls::Disable => return Ok(None),
        UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        UpstreamTls::VerifyFull => {
            let path = upstream
                .ca_file
                .as_deref()
                .unwrap_or(Path::new(SYSTEM_CA_FILE));
            builder
                .with_root_certificates(load_roots(path)?)
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

fn load_roots(path: &Path) -> Result<RootCertStore, SetupError> {
    let error = |reason: String| {
        SetupError::Tls(format!(
            "postgres.upstream.ca_file {}: {reason}; give a PEM file with the CA certificates that issued the server's certificate",
            path.display()
        ))
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|err| error(err.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|err| error(err.to_string()))?;
    let found = certificates.len();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(error(format!(
            "no usable CA certificate among its {found} PEM certificates"
        )));
    }
    Ok(roots)
}

/// Accepts any server certificate, for `tls = "require"`: the connection
/// is encrypted but the server is not authenticated, as with libpq's
/// `sslmode=require`. Signatures are still checked, so the handshake
/// proves the server has the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
