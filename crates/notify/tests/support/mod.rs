//! Loopback webhook receivers for the delivery tests: plain HTTP, HTTPS
//! with a certificate made by the `openssl` command, and a listener that
//! never responds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use stepgate_notify::{SIGNATURE_HEADER, Secret, VerifyError, verify};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Signature timestamps this far from the receiver's clock are rejected.
const TOLERANCE_SECS: u64 = 300;

/// One scripted response of a receiver.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<&'static str>,
    /// Size of the response body in bytes.
    pub(crate) body_len: usize,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            body_len: 0,
        }
    }

    pub(crate) fn retry_after(status: u16, seconds: &'static str) -> Self {
        Self {
            status,
            retry_after: Some(seconds),
            body_len: 0,
        }
    }
}

/// A request as the receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) method: String,
    /// Request target of the request line: path and query.
    pub(crate) target: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Result of checking the signature header with the receiver's secret.
    pub(crate) signature: Result<(), VerifyError>,
    /// SNI host name and ALPN protocol of a TLS connection.
    pub(crate) server_name: Option<String>,
    pub(crate) alpn: Option<Vec<u8>>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("request has no {name} header"))
            .to_str()
            .unwrap()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body must be JSON")
    }
}

struct State {
    secret: Secret,
    /// Replies in order. The last one repeats.
    replies: Vec<Reply>,
    received: Mutex<Vec<Received>>,
}

/// A webhook receiver on 127.0.0.1 that records each request and responds
/// with its scripted replies. A request whose signature does not verify
/// gets 401.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn http(secret: Secret, replies: Vec<Reply>) -> Self {
        Self::start(secret, replies, None).await
    }

    pub(crate) async fn https(secret: Secret, replies: Vec<Reply>, pki: &ServerPki) -> Self {
        let chain = CertificateDer::pem_file_iter(&pki.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start(secret, replies, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(secret: Secret, replies: Vec<Reply>, tls: Option<TlsAcceptor>) -> Self {
        assert!(!replies.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            secret,
            replies,
            received: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = accept_state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, state, None, None).await,
                        Some(acceptor) => {
                            // A failed handshake is what the untrusted
                            // certificate test expects; the client reports it.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let (_, session) = stream.get_ref();
                            let server_name = session.server_name().map(str::to_owned);
                            let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                            serve(stream, state, server_name, alpn).await;
                        }
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    /// URL of this receiver on 127.0.0.1 with `path_and_query`.
    pub(crate) fn url(&self, scheme: &str, path_and_query: &str) -> String {
        format!("{scheme}://{}{path_and_query}", self.addr)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S>(stream: S, state: Arc<State>, server_name: Option<String>, alpn: Option<Vec<u8>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        let server_name = server_name.clone();
        let alpn = alpn.clone();
        async move { Ok::<_, Infallible>(answer(request, &state, server_name, alpn).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    request: Request<Incoming>,
    state: &State,
    server_name: Option<String>,
    alpn: Option<Vec<u8>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signature = match parts.headers.get(SIGNATURE_HEADER) {
        None => Err(VerifyError::Malformed("no signature header".to_owned())),
        Some(value) => verify(
            &state.secret,
            value.to_str().unwrap_or(""),
            &body,
            now,
            TOLERANCE_SECS,
        ),
    };
    let verified = signature.is_ok();
    let index = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            method: parts.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts.headers,
            body,
            signature,
            server_name,
            alpn,
        });
        received.len() - 1
    };
    if !verified {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let reply = state
        .replies
        .get(index)
        .or(state.replies.last())
        .unwrap()
        .clone();
    let mut response = Response::builder().status(reply.status);
    if let Some(seconds) = reply.retry_after {
        response = response.header("retry-after", seconds);
    }
    response
        .body(Full::new(Bytes::from(vec![b'x'; reply.body_len])))
        .unwrap()
}

/// A listener on 127.0.0.1 that accepts connections and never responds.
pub(crate) struct Silent {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Silent {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Kept open so the client waits for a response instead of
            // reading the end of the connection.
            let mut open: Vec<TcpStream> = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        Self { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Returns a loopback port that nothing listens on: bound, then released.
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Files of a test CA and a server certificate it signed for `localhost`
/// and 127.0.0.1.
pub(crate) struct ServerPki {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command must be installed to run this test");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes a CA and a server certificate with the `openssl` command in
/// `dir`, with file names starting with `prefix`.
pub(crate) fn make_pki(dir: &Path, prefix: &str) -> ServerPki {
    let file = |name: &str| format!("{prefix}-{name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &file("ca.key"),
            "-out",
            &file("ca.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=stepgate test CA {prefix}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &file("server.key"),
            "-out",
            &file("server.csr"),
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join(file("server.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.pem"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-out",
            &file("server.pem"),
            "-days",
            "2",
            "-extfile",
            &file("server.ext"),
        ],
    );
    ServerPki {
        ca: dir.join(file("ca.pem")),
        cert: dir.join(file("server.pem")),
        key: dir.join(file("server.key")),
    }
}
