//! The HTTP front-end: a reverse proxy (hyper 1, HTTP/1.1 and HTTP/2) that
//! turns each request into request facts, asks the engine, and forwards the
//! request or answers with the engine's verdict in HTTP's words.
//!
//! It also serves `/metrics` on the admin listener and, for trying the
//! gateway out, a built-in echo upstream. It decides nothing itself.
//!
//! Either listener can serve HTTPS, optionally verifying client
//! certificates (mutual TLS). The verified certificate goes to the engine
//! with each request of its connection.

mod answer;
mod approval;
mod client_addr;
mod client_cert;
mod echo;
mod framing;
mod hop;
mod metrics;
mod notify;
mod path;
mod proxy;
mod route;
mod tls;
mod volume;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use stepgate_config::Config;
use stepgate_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

pub use echo::serve_echo;
pub use notify::WebhookError;

/// Reads every approver group's webhook secret file and checks its URL and
/// the CA bundle, as the gateway does at start.
pub fn check_webhooks(config: &Config) -> Result<(), WebhookError> {
    notify::Webhooks::load(&config.approval, String::new()).map(|_| ())
}
pub use tls::TlsSetupError;

use client_addr::TrustedProxies;
use metrics::Metrics;
use route::Router;
use stepgate_core::ClientCertificate;
use tls::TlsListener;
use tokio::io::{AsyncRead, AsyncWrite};

/// The body of a forwarded request: streamed from the client, or read
/// whole when a message signature covers its digest.
pub(crate) type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Full<Bytes>>;

/// The body type of every response the gateway sends.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

pub(crate) fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    body.boxed()
}

/// A future of an admin page's response.
pub type AdminPageFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<Bytes>> + Send + 'static>>;

/// Serves the admin listener's requests other than `/metrics` and
/// `/healthz`, such as the approvals page. It gets the request and the
/// peer's address and returns the whole response.
pub type AdminPages = Arc<dyn Fn(Request<Incoming>, SocketAddr) -> AdminPageFuture + Send + Sync>;

/// Errors that stop the front-end from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Route(String),
    #[error("identity header {0:?} is not a valid header name")]
    IdentityHeader(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// The gateway's public origin, as clients name it: scheme, authority and
/// the path prefix a load balancer may put in front of every path.
pub(crate) struct Origin {
    /// The whole origin without a trailing slash, such as
    /// `https://api.example.com/gw`.
    pub(crate) full: String,
    pub(crate) scheme: String,
    pub(crate) authority: String,
    pub(crate) prefix: String,
}

impl Origin {
    fn parse(origin: &str) -> Origin {
        let (scheme, rest) = origin.split_once("://").unwrap_or(("http", origin));
        let (authority, prefix) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        Origin {
            full: origin.to_owned(),
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        }
    }
}

/// Signed answers whose bodies may be read whole at the same time.
const SIGNED_BODY_SLOTS: usize = 4;

/// Bodies of requests that need or claim an approval that may be read
/// whole at the same time.
const APPROVAL_BODY_SLOTS: usize = 64;

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) engine: Arc<Engine>,
    pub(crate) router: Router,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) identity_header: HeaderName,
    pub(crate) client: Client<HttpConnector, UpstreamBody>,
    pub(crate) response_timeout: Duration,
    pub(crate) metrics: Metrics,
    /// Public origin that DPoP proofs and message signatures name.
    pub(crate) origin: Origin,
    /// Slots for reading signed answers' bodies whole, which bounds the
    /// memory they can take to a few times 16 MiB.
    pub(crate) signed_body_slots: tokio::sync::Semaphore,
    /// True when the gateway listener verifies client certificates.
    pub(crate) checks_client_certificates: bool,
    /// Turns true when the gateway stops, so held requests get a response at
    /// once.
    pub(crate) stopping: watch::Sender<bool>,
    /// Slots for requests held open while they wait for an approval.
    pub(crate) held: tokio::sync::Semaphore,
    /// Largest body an approval covers (`approval.max_body_bytes`).
    pub(crate) approval_body_bytes: usize,
    /// Slots for reading bodies whole for approvals, which bounds their
    /// memory to [`APPROVAL_BODY_SLOTS`] times `approval.max_body_bytes`.
    pub(crate) approval_body_slots: tokio::sync::Semaphore,
    /// Bodies being read for approvals, per identity.
    pub(crate) approval_body_readers:
        std::sync::Mutex<std::collections::HashMap<stepgate_core::IdentityName, usize>>,
}

/// The client connection a request came on, as request handling uses it.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    /// `https` when the connection uses TLS, else `http`.
    pub(crate) scheme: &'static str,
    /// The client certificate the TLS handshake verified.
    pub(crate) client_certificate: Option<Arc<ClientCertificate>>,
}

/// The HTTP front-end, ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsListener>,
    admin: Option<TcpListener>,
    admin_tls: Option<TlsListener>,
    max_header_bytes: usize,
    max_headers: usize,
    shutdown_grace: Duration,
    admin_pages: Option<AdminPages>,
    webhooks: Option<notify::Webhooks>,
}

impl Gateway {
    /// Serves `pages` on the admin listener for every path but `/metrics`
    /// and `/healthz`.
    pub fn with_admin_pages(mut self, pages: AdminPages) -> Self {
        self.admin_pages = Some(pages);
        self
    }

    /// Binds the listeners named in `config`.
    pub async fn bind(config: &Config, engine: Arc<Engine>) -> Result<Self, StartError> {
        let router =
            Router::new(&config.routes).map_err(|err| StartError::Route(err.to_string()))?;
        let identity_header = HeaderName::from_bytes(
            config
                .gateway
                .identity_header
                .to_ascii_lowercase()
                .as_bytes(),
        )
        .map_err(|_| StartError::IdentityHeader(config.gateway.identity_header.clone()))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout()));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let tls = match &config.gateway.tls {
            Some(settings) => Some(TlsListener::load("gateway.tls", settings)?),
            None => None,
        };
        let admin_tls = match config.admin.as_ref().and_then(|admin| admin.tls.as_ref()) {
            Some(settings) => Some(TlsListener::load("admin.tls", settings)?),
            None => None,
        };
        let listener = bind(config.gateway.listen).await?;
        let admin = match &config.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        };
        let page_url = match (&config.approval.page_url, &config.admin) {
            (Some(url), _) => url.clone(),
            (None, Some(admin)) if admin.tls.is_some() => format!("https://{}", admin.listen),
            (None, Some(admin)) => format!("http://{}", admin.listen),
            (None, None) => config.gateway.origin(),
        };
        let webhooks = notify::Webhooks::load(&config.approval, page_url)?;
        let shared = Shared {
            engine,
            router,
            trusted_proxies: TrustedProxies::new(config.trusted_proxy_nets.clone()),
            identity_header,
            client,
            response_timeout: config.response_timeout(),
            metrics: Metrics::new(),
            origin: Origin::parse(&config.gateway.origin()),
            signed_body_slots: tokio::sync::Semaphore::new(SIGNED_BODY_SLOTS),
            checks_client_certificates: config
                .gateway
                .tls
                .as_ref()
                .is_some_and(|tls| tls.client_auth != stepgate_config::ClientAuth::None),
            stopping: watch::channel(false).0,
            held: tokio::sync::Semaphore::new(config.approval.max_held),
            approval_body_bytes: config.approval.max_body_bytes,
            approval_body_slots: tokio::sync::Semaphore::new(APPROVAL_BODY_SLOTS),
            approval_body_readers: std::sync::Mutex::default(),
        };
        Ok(Self {
            shared: Arc::new(shared),
            listener,
            tls,
            admin,
            admin_tls,
            max_header_bytes: config.gateway.max_header_bytes,
            max_headers: config.gateway.max_headers,
            shutdown_grace: Duration::from_secs(config.gateway.shutdown_grace_secs),
            admin_pages: None,
            webhooks,
        })
    }

    /// Address the proxy listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    // TODO: a proxied request costs about twice the CPU of nginx's on the
    // same path, spread over the HTTP/1 codec, the client pool, the
    // scheduler and allocation. Per-core runtimes and a leaner upstream
    // pool are the next things to measure.
    /// Serves until `shutdown` turns true, then stops accepting and waits
    /// up to the shutdown grace period for requests in flight.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let Gateway {
            shared,
            listener,
            tls,
            admin,
            admin_tls,
            max_header_bytes,
            max_headers,
            shutdown_grace,
            admin_pages,
            webhooks,
        } = self;
        if let (Some(webhooks), Some(desk)) = (webhooks, shared.engine.approvals()) {
            let (sender, events) = tokio::sync::mpsc::unbounded_channel();
            // Subscribed before the backlog is read, so no request falls
            // between the two; one found in both is delivered once.
            desk.subscribe(sender);
            let backlog = notify::unnotified(desk);
            tokio::spawn(webhooks.run(shared.clone(), backlog, events));
        }
        if let Some(admin) = admin {
            let admin_tls = admin_tls.map(Arc::new);
            if let Some(admin_tls) = &admin_tls {
                tokio::spawn(admin_tls.clone().reload_on_change(shutdown.clone()));
            }
            tokio::spawn(serve_admin(
                admin,
                admin_tls,
                shared.clone(),
                admin_pages,
                shutdown.clone(),
            ));
        }
        let tls = tls.map(Arc::new);
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().reload_on_change(shutdown.clone()));
        }
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(max_header_bytes.max(8192))
            .max_headers(max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let server_addr = listener.local_addr().ok();
        tracing::info!(listen = ?listener.local_addr().ok(), tls = tls.is_some(), "HTTP gateway listening");
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let server = ProxyServer {
                        shared: shared.clone(),
                        builder: builder.clone(),
                        max_header_bytes,
                        watcher: graceful.watcher(),
                    };
                    let tls = tls.clone();
                    let span = tracing::debug_span!(
                        "connection",
                        client.addr = %peer,
                        server.addr = ?server_addr,
                        tls.client.x5t_s256 = tracing::field::Empty,
                    );
                    tokio::spawn(
                        async move {
                            let Some(tls) = tls else {
                                server.serve(stream, Connection { peer, scheme: "http", client_certificate: None }).await;
                                return;
                            };
                            let Some((stream, client_certificate)) = tls.handshake(stream, peer).await else {
                                return;
                            };
                            if let Some(certificate) = &client_certificate {
                                tracing::Span::current().record("tls.client.x5t_s256", certificate.thumbprint_sha256.as_str());
                            }
                            server.serve(stream, Connection { peer, scheme: "https", client_certificate }).await;
                        }
                        .instrument(span),
                    );
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        shared.stopping.send_replace(true);
        tracing::info!(
            grace_s = shutdown_grace.as_secs(),
            "HTTP gateway stopping, waiting for requests in flight"
        );
        if tokio::time::timeout(shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over, closing remaining connections");
        }
        tracing::info!("HTTP gateway stopped");
    }
}

/// The shared state and settings for serving one proxy connection.
struct ProxyServer {
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    max_header_bytes: usize,
    watcher: hyper_util::server::graceful::Watcher,
}

impl ProxyServer {
    /// Serves HTTP/1.1 or HTTP/2 on `io` until the connection ends.
    async fn serve<S>(self, io: S, connection: Connection)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ProxyServer {
            shared,
            builder,
            max_header_bytes,
            watcher,
        } = self;
        let peer = connection.peer;
        let service = service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let connection = connection.clone();
            async move { Ok::<_, Infallible>(proxy::handle(shared, connection, request).await) }
        });
        let guarded = framing::FramingGuard::new(io, max_header_bytes, peer);
        let served = builder
            .serve_connection(TokioIo::new(guarded), service)
            .into_owned();
        if let Err(err) = watcher.watch(served).await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Serves `/metrics` (Prometheus text format) and `/healthz`.
async fn serve_admin(
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
    shared: Arc<Shared>,
    pages: Option<AdminPages>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(listen = ?listener.local_addr().ok(), tls = tls.is_some(), "admin listener started");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let shared = shared.clone();
                let tls = tls.clone();
                let pages = pages.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_admin_connection(stream, peer, shared, pages).await,
                        Some(tls) => {
                            if let Some((stream, _)) = tls.handshake(stream, peer).await {
                                serve_admin_connection(stream, peer, shared, pages).await;
                            }
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("admin listener stopped");
}

async fn serve_admin_connection<S>(
    io: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pages: Option<AdminPages>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = shared.clone();
        let pages = pages.clone();
        async move {
            let path = request.uri().path();
            let response = match pages {
                Some(pages) if path != "/metrics" && path != "/healthz" => {
                    pages(request, peer).await.map(|bytes| {
                        http_body_util::Full::new(bytes)
                            .map_err(|never| match never {})
                            .boxed()
                    })
                }
                _ => admin_response(&shared, &request),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(err) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %err, "admin connection ended with an error");
    }
}

fn admin_response(shared: &Shared, request: &Request<Incoming>) -> Response<Body> {
    use http::StatusCode;
    match request.uri().path() {
        "/metrics" => {
            let text = shared.metrics.render(shared.engine.audit().queued());
            let mut response = Response::new(
                http_body_util::Full::new(Bytes::from(text))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" if shared.engine.audit().is_healthy() => {
            answer::json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
        }
        "/healthz" => answer::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "audit trail unavailable" }),
        ),
        _ => answer::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin listener serves /metrics and /healthz",
        ),
    }
}
