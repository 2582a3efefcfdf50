//! The HTTP front-end: a reverse proxy (hyper 1, HTTP/1.1 and HTTP/2) that
//! turns each request into request facts, asks the engine, and forwards the
//! request or answers with the engine's verdict in HTTP's words.
//!
//! It also serves `/metrics` on the admin listener and, for trying the
//! gateway out, a built-in echo upstream. It decides nothing itself.

mod answer;
mod client_addr;
mod echo;
mod framing;
mod hop;
mod metrics;
mod path;
mod proxy;
mod route;
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

use client_addr::TrustedProxies;
use metrics::Metrics;
use route::Router;

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
}

/// The HTTP front-end, ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    max_header_bytes: usize,
    max_headers: usize,
    shutdown_grace: Duration,
}

impl Gateway {
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
        let listener = bind(config.gateway.listen).await?;
        let admin = match &config.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        };
        let shared = Shared {
            engine,
            router,
            trusted_proxies: TrustedProxies::new(config.trusted_proxy_nets.clone()),
            identity_header,
            client,
            response_timeout: config.response_timeout(),
            metrics: Metrics::new(),
            origin: Origin::parse(&config.gateway.origin()),
        };
        Ok(Self {
            shared: Arc::new(shared),
            listener,
            admin,
            max_header_bytes: config.gateway.max_header_bytes,
            max_headers: config.gateway.max_headers,
            shutdown_grace: Duration::from_secs(config.gateway.shutdown_grace_secs),
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
            admin,
            max_header_bytes,
            max_headers,
            shutdown_grace,
        } = self;
        if let Some(admin) = admin {
            tokio::spawn(serve_admin(admin, shared.clone(), shutdown.clone()));
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
        let graceful = GracefulShutdown::new();
        let server_addr = listener.local_addr().ok();
        tracing::info!(listen = ?listener.local_addr().ok(), "HTTP gateway listening");
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
                    let shared = shared.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(proxy::handle(shared, peer, request).await) }
                    });
                    let guarded = framing::FramingGuard::new(stream, max_header_bytes, peer);
                    let connection = builder.serve_connection(TokioIo::new(guarded), service).into_owned();
                    let connection = graceful.watch(connection);
                    let span = tracing::debug_span!("connection", client.addr = %peer, server.addr = ?server_addr);
                    tokio::spawn(
                        async move {
                            if let Err(err) = connection.await {
                                tracing::debug!(error = %err, "connection ended with an error");
                            }
                        }
                        .instrument(span),
                    );
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
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

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Serves `/metrics` (Prometheus text format) and `/healthz`.
async fn serve_admin(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(listen = ?listener.local_addr().ok(), "admin listener started");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(admin_response(&shared, &request)) }
                });
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %err, "admin connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
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
