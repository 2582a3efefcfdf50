//! One HTTP/1.1 POST over a new connection, with TLS for https: connect,
//! handshake, send, and read the status and at most 64 KiB of the
//! response body. Errors are strings, the reasons of the caller's attempt
//! records.

use std::error::Error as StdError;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::endpoint::{Scheme, Target};
use crate::{DELIVERY_HEADER, SIGNATURE_HEADER};

/// Maximum number of response body bytes read before the connection is
/// dropped. The body is only read so that the exchange can finish.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Maximum size of a CA file, the limit the gateway also applies to its
/// TLS files. System CA bundles are a few hundred KiB.
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

const USER_AGENT_VALUE: &str = concat!("stepgate/", env!("CARGO_PKG_VERSION"));

/// Status and the headers that matter of a webhook response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// `Retry-After` in delay-seconds form. The HTTP-date form is ignored.
    pub(crate) retry_after: Option<Duration>,
}

/// Headers and body of one attempt.
pub(crate) struct Message<'a> {
    pub(crate) body: Bytes,
    pub(crate) signature: &'a str,
    pub(crate) delivery_id: &'a str,
}

/// Reads a PEM bundle of CA certificates and builds the TLS client
/// configuration for https webhooks, with ALPN `http/1.1`.
pub(crate) fn client_config(path: &Path) -> Result<Arc<ClientConfig>, String> {
    let roots = load_roots(path)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let file = File::open(path).map_err(|err| err.to_string())?;
    let mut pem = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|err| err.to_string())?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} MiB",
            MAX_CA_FILE_BYTES / (1024 * 1024)
        ));
    }
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificates.push(certificate.map_err(|err| format!("invalid PEM: {err}"))?);
    }
    let found = certificates.len();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!(
            "no usable CA certificate among the {found} PEM certificates in the file"
        ));
    }
    Ok(roots)
}

/// POSTs `message` to `target` over a new connection. The caller bounds
/// the time it takes.
pub(crate) async fn post(
    tls: Option<&Arc<ClientConfig>>,
    target: &Target,
    message: Message<'_>,
) -> Result<Response, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(SIGNATURE_HEADER, message.signature)
        .header(DELIVERY_HEADER, message.delivery_id)
        .body(Full::new(message.body))
        .map_err(|err| format!("cannot build the request: {err}"))?;
    let (stream, address) = connect(target).await?;
    match (target.scheme, tls) {
        (Scheme::Http, _) => exchange(stream, request).await,
        (Scheme::Https, Some(config)) => {
            let server_name = ServerName::try_from(target.host.clone())
                .map_err(|_| format!("{} is not a valid TLS server name", target.host))?;
            let stream = TlsConnector::from(config.clone())
                .connect(server_name, stream)
                .await
                .map_err(|err| format!("TLS handshake with {address} failed: {err}"))?;
            exchange(stream, request).await
        }
        // The deliverer checks for roots before it sends to an https URL.
        (Scheme::Https, None) => Err("no CA certificates are loaded for https".to_owned()),
    }
}

/// Connects to the first address of the host that accepts. When all fail,
/// the error names the last address tried.
async fn connect(target: &Target) -> Result<(TcpStream, SocketAddr), String> {
    let addresses: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|err| format!("resolve {} failed: {err}", target.host))?
            .collect(),
    };
    let mut last_error = format!("resolve {} failed: no addresses", target.host);
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                // Nagle's algorithm would only delay the small request.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(error = %err, "cannot set TCP_NODELAY on a webhook connection");
                }
                return Ok((stream, address));
            }
            Err(err) => last_error = format!("connect to {address} failed: {}", describe_io(&err)),
        }
    }
    Err(last_error)
}

/// Sends `request` over `io` and reads the response, while driving the
/// connection in the same task so that nothing outlives the attempt.
async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| format!("HTTP handshake failed: {}", describe_error(&err)))?;
    let response = async move {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        drain_body(response.into_body()).await;
        Ok::<_, hyper::Error>(Response {
            status,
            retry_after,
        })
    };
    tokio::pin!(response);
    tokio::pin!(connection);
    let mut connection_error = None;
    tokio::select! {
        result = &mut response => {
            return result.map_err(|err| format!("HTTP exchange failed: {}", describe_error(&err)));
        }
        result = &mut connection => {
            if let Err(err) = result {
                connection_error = Some(err);
            }
        }
    }
    // The connection ended first, which completes or fails the response.
    response.await.map_err(|err| {
        let cause = connection_error.as_ref().unwrap_or(&err);
        format!("HTTP exchange failed: {}", describe_error(cause))
    })
}

async fn drain_body(mut body: hyper::body::Incoming) {
    let mut read = 0;
    while read < MAX_RESPONSE_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                }
            }
            Some(Err(err)) => {
                // The status is already known, which is all a delivery needs.
                tracing::debug!(error = %err, "reading the webhook response body failed");
                return;
            }
            None => return,
        }
    }
}

/// Parses `Retry-After` in its delay-seconds form.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Values too large for u64 are far above any max delay.
    let seconds = value.parse().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds))
}

/// Describes a socket error by its kind where the kind is specific, which
/// leaves out the OS error number.
fn describe_io(err: &io::Error) -> String {
    use io::ErrorKind::*;
    match err.kind() {
        kind @ (ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut
        | HostUnreachable | NetworkUnreachable | AddrNotAvailable | PermissionDenied) => {
            kind.to_string()
        }
        _ => err.to_string(),
    }
}

/// Joins an error and its sources with ": ", skipping a source whose text
/// repeats the one before.
fn describe_error(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut previous = text.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = match cause.downcast_ref::<io::Error>() {
            Some(io_error) => describe_io(io_error),
            None => cause.to_string(),
        };
        if !previous.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        previous = cause_text;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let cases = [
            ("0", Some(Duration::ZERO)),
            ("120", Some(Duration::from_secs(120))),
            (" 7 ", Some(Duration::from_secs(7))),
            (
                "99999999999999999999999",
                Some(Duration::from_secs(u64::MAX)),
            ),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("-1", None),
            ("1.5", None),
            ("", None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            assert_eq!(retry_after(&headers), expected, "{value:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn io_error_kind_described() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io(&refused), "connection refused");
        let other = io::Error::other("disk on fire");
        assert_eq!(describe_io(&other), "disk on fire");
    }

    #[test]
    fn ca_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(client_config(&missing).is_err());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = client_config(&empty).unwrap_err();
        assert!(
            err.contains("no usable CA certificate among the 0"),
            "{err}"
        );
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(&broken).unwrap_err();
        assert!(err.contains("invalid PEM"), "{err}");
    }
}
