//! The approvals page ("console") on the admin listener: approvers sign in
//! with a TOTP code, see the requests held for a person's approval and
//! approve or deny them.
//!
//! Every page is rendered on the server and works with JavaScript off.
//! htmx, served from this crate, only boosts links and forms and refreshes
//! the queue. Every rule about who may decide lives in
//! [`stepgate_engine::ApprovalDesk`]; this crate only shows its records and
//! passes decisions to it.

mod assets;
mod pages;
mod security;
mod session;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use stepgate_core::{Clock, SystemClock};
use stepgate_engine::ApprovalDesk;
use tower::ServiceExt as _;

use crate::session::Sessions;

/// Largest response body the console returns, in bytes. Pages list at
/// most a few hundred records, so a larger body means a bug.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Settings of the console.
#[derive(Clone)]
pub struct ConsoleSettings {
    /// Marks cookies `Secure` and gives them the `__Host-` name prefix. Set
    /// it when the page is served over HTTPS or on a loopback address,
    /// which browsers treat as a secure context over plain HTTP too.
    pub secure_cookies: bool,
    /// How long a sign-in lasts, counted from the sign-in.
    pub session_ttl: Duration,
    /// Origin people reach the page at through a proxy, such as
    /// `https://stepgate.example.com`. POST requests whose `Origin` header
    /// matches it, or matches the request's own host, are same-origin.
    pub public_origin: Option<String>,
    /// Clock for session expiry and the times shown on pages.
    pub clock: Arc<dyn Clock>,
}

impl ConsoleSettings {
    /// Settings with the system clock and no public origin.
    pub fn new(secure_cookies: bool, session_ttl: Duration) -> Self {
        Self {
            secure_cookies,
            session_ttl,
            public_origin: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("secure_cookies", &self.secure_cookies)
            .field("session_ttl", &self.session_ttl)
            .field("public_origin", &self.public_origin)
            .finish_non_exhaustive()
    }
}

/// State shared by every request of one console.
pub(crate) struct Shared {
    pub(crate) desk: Arc<ApprovalDesk>,
    pub(crate) settings: ConsoleSettings,
    pub(crate) sessions: Sessions,
}

/// The TCP peer of a request, for logs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The approvals page: an axum router over the approval desk.
pub struct Console {
    shared: Arc<Shared>,
    router: Router,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl Console {
    pub fn new(desk: Arc<ApprovalDesk>, settings: ConsoleSettings) -> Arc<Console> {
        let sessions = Sessions::new(settings.session_ttl, settings.clock.clone());
        let shared = Arc::new(Shared {
            desk,
            settings,
            sessions,
        });
        let router = pages::router(shared.clone());
        tracing::info!(
            secure_cookies = shared.settings.secure_cookies,
            session_ttl_secs = shared.settings.session_ttl.as_secs(),
            "approvals page ready"
        );
        Arc::new(Console { shared, router })
    }

    /// Handles one request of the admin listener and returns the whole
    /// response.
    ///
    /// POST requests from another site are rejected with 403 before
    /// routing, and every response gets the security headers.
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Bytes>
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let mut response = match security::check_origin(&request, &self.shared.settings) {
            Err(reason) => {
                tracing::warn!(
                    peer = %peer,
                    method = %request.method(),
                    path = request.uri().path(),
                    reason,
                    "approvals page rejected a cross-site request"
                );
                pages::cross_site_response()
            }
            Ok(()) => {
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(Peer(peer));
                let request = Request::from_parts(parts, Body::new(body));
                match self.router.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        };
        security::add_headers(response.headers_mut());
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await {
            Ok(bytes) => Response::from_parts(parts, bytes),
            Err(err) => {
                tracing::error!(peer = %peer, error = %err, "approvals page response could not be read");
                let mut response = Response::new(Bytes::from_static(
                    b"The page could not be rendered; try again.\n",
                ));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                security::add_headers(response.headers_mut());
                response
            }
        }
    }
}
