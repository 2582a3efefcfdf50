//! The `[gateway.tls]` and `[admin.tls]` tables, and loading the
//! certificate, private key and client CA files they name.
//!
//! Loading reads and checks every file the way the listener uses it, so
//! `stepgate check-config`, `stepgate run` and the reload of changed files
//! report the same errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// A `tls` table: serve HTTPS on the listener it belongs to.
///
/// Relative paths are relative to the directory of the config file;
/// [`crate::Config::load`] resolves them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of the server certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM certificates of the CAs that issue client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate. Default `none`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Seconds a client has to finish the TLS handshake. Default 10.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
}

/// Whether the listener requests a client certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is requested.
    #[default]
    None,
    /// A client certificate is requested; clients without one are accepted,
    /// but a certificate that does not chain to a client CA is rejected.
    Optional,
    /// Every client must present a certificate that chains to a client CA.
    Required,
}

impl ClientAuth {
    /// Returns the value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// The parsed contents of the files a [`TlsConfig`] names.
#[derive(Debug)]
pub struct TlsFiles {
    /// Server certificate chain and its private key, checked to match.
    pub certified_key: Arc<CertifiedKey>,
    /// Trust anchors for client certificates; `None` when
    /// `client_auth = "none"`.
    pub client_roots: Option<Arc<RootCertStore>>,
}

/// Errors that make a certificate, key or CA file unusable. Every message
/// names the config key and the file, and none contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{key}: cannot read {path}: {source}; check that the file exists and is readable")]
    Read {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{key}: {path} is not valid PEM ({reason}); give a PEM file with -----BEGIN {label}----- sections"
    )]
    Pem {
        key: String,
        path: PathBuf,
        reason: String,
        label: &'static str,
    },
    #[error(
        "{key}: {path} contains no certificate; give a PEM file with -----BEGIN CERTIFICATE----- sections"
    )]
    NoCertificate { key: String, path: PathBuf },
    #[error(
        "{key}: {path} contains no private key; give a PEM file with one -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY section"
    )]
    NoKey { key: String, path: PathBuf },
    #[error("{key}: {path} contains a private key that is not supported: {reason}")]
    UnsupportedKey {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: the first certificate in {path} is not valid: {reason}")]
    BadCertificate {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{key_key}: the private key in {key_path} does not match the first certificate in {cert_key} ({cert_path}); give the key of the server certificate, and put the server certificate first in the chain"
    )]
    KeyMismatch {
        key_key: String,
        key_path: PathBuf,
        cert_key: String,
        cert_path: PathBuf,
    },
    #[error("{key}: {path} is larger than 16 MiB; give the certificate or key file itself")]
    TooLarge { key: String, path: PathBuf },
    #[error("{key}: certificate {index} in {path} cannot be a trust anchor: {reason}")]
    BadCa {
        key: String,
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

impl TlsConfig {
    /// Seconds a client has to finish the handshake, as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// Returns every file the table names, for change detection.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.cert_file.as_path(), self.key_file.as_path()];
        if let Some(ca) = &self.client_ca_file {
            files.push(ca);
        }
        files
    }

    /// Reads and checks the certificate chain, the private key and the
    /// client CAs. `table` is the table's key, such as `gateway.tls`, for
    /// messages.
    pub fn load_files(
        &self,
        table: &str,
        provider: &CryptoProvider,
    ) -> Result<TlsFiles, TlsFileError> {
        let cert_key = format!("{table}.cert_file");
        let key_key = format!("{table}.key_file");
        let chain = read_certificates(&cert_key, &self.cert_file)?;
        let private_key = read_private_key(&key_key, &self.key_file)?;
        let signing_key = provider
            .key_provider
            .load_private_key(private_key)
            .map_err(|err| TlsFileError::UnsupportedKey {
                key: key_key.clone(),
                path: self.key_file.clone(),
                reason: err.to_string(),
            })?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        match certified_key.keys_match() {
            // A key whose public half the provider cannot derive cannot be
            // compared; rustls accepts it too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsFileError::KeyMismatch {
                    key_key,
                    key_path: self.key_file.clone(),
                    cert_key,
                    cert_path: self.cert_file.clone(),
                });
            }
            Err(err) => {
                return Err(TlsFileError::BadCertificate {
                    key: cert_key,
                    path: self.cert_file.clone(),
                    reason: err.to_string(),
                });
            }
        }

        let client_roots = match (&self.client_ca_file, self.client_auth) {
            (Some(path), ClientAuth::Optional | ClientAuth::Required) => {
                let key = format!("{table}.client_ca_file");
                Some(Arc::new(read_roots(&key, path)?))
            }
            _ => None,
        };
        Ok(TlsFiles {
            certified_key: Arc::new(certified_key),
            client_roots,
        })
    }
}

fn default_handshake_timeout() -> u64 {
    10
}

/// Largest TLS file read, in bytes: far more than any certificate chain,
/// key or CA bundle, and a bound on what a wrong path such as /dev/zero
/// can make the gateway read.
const MAX_TLS_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(MAX_TLS_FILE_BYTES + 1).read_to_end(&mut bytes));
    match read {
        Ok(len) if len as u64 > MAX_TLS_FILE_BYTES => Err(TlsFileError::TooLarge {
            key: key.to_owned(),
            path: path.to_owned(),
        }),
        Ok(_) => Ok(bytes),
        Err(source) => Err(TlsFileError::Read {
            key: key.to_owned(),
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let text = read_file(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsFileError::Pem {
            key: key.to_owned(),
            path: path.to_owned(),
            reason: err.to_string(),
            label: "CERTIFICATE",
        })?;
    if certificates.is_empty() {
        return Err(TlsFileError::NoCertificate {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

fn read_private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let text = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsFileError::NoKey {
            key: key.to_owned(),
            path: path.to_owned(),
        },
        // The other errors' texts can quote lines of the file, so only the
        // kind of error is reported.
        pem::Error::Base64Decode(_) => pem_error(key, path, "bad base64 in a section"),
        pem::Error::MissingSectionEnd { .. } => pem_error(key, path, "a section has no END line"),
        pem::Error::IllegalSectionStart { .. } => pem_error(key, path, "malformed BEGIN line"),
        _ => pem_error(key, path, "unreadable PEM"),
    })
}

fn pem_error(key: &str, path: &Path, reason: &str) -> TlsFileError {
    TlsFileError::Pem {
        key: key.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
        label: "PRIVATE KEY",
    }
}

fn read_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsFileError> {
    let certificates = read_certificates(key, path)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        // A certificate that says it is no CA (basicConstraints CA:FALSE),
        // such as a server certificate given by mistake, is rejected.
        let leaf = x509_parser::parse_x509_certificate(certificate.as_ref())
            .ok()
            .and_then(|(_, parsed)| {
                parsed
                    .basic_constraints()
                    .ok()
                    .flatten()
                    .map(|bc| !bc.value.ca)
            })
            .unwrap_or(false);
        if leaf {
            return Err(TlsFileError::BadCa {
                key: key.to_owned(),
                path: path.to_owned(),
                index: index + 1,
                reason: "it is not a CA certificate (basicConstraints CA:FALSE); give the CA that issued the client certificates".to_owned(),
            });
        }
        roots.add(certificate).map_err(|err| TlsFileError::BadCa {
            key: key.to_owned(),
            path: path.to_owned(),
            index: index + 1,
            reason: err.to_string(),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests;
