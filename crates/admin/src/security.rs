//! Checks and headers that apply to every request of the console: the
//! same-origin rule for state-changing requests and the security headers.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};

use crate::ConsoleSettings;

/// Allows scripts, styles, images and requests only from the page's own
/// origin, and no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Rejects a state-changing request that a browser reports as coming from
/// another site. `Sec-Fetch-Site` must be `same-origin` or `none` when present, and
/// `Origin` must name this host (or the configured public origin) when
/// present. Requests with neither header come from clients other than
/// browsers and still need the CSRF token.
pub(crate) fn check_origin<B>(
    request: &Request<B>,
    settings: &ConsoleSettings,
) -> Result<(), &'static str> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return Ok(());
    }
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site != b"same-origin" && site != b"none" {
            return Err("Sec-Fetch-Site is not same-origin");
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "Origin is not ASCII")?;
    if let Some(public) = &settings.public_origin
        && origin.eq_ignore_ascii_case(public.trim_end_matches('/'))
    {
        return Ok(());
    }
    let Some((_scheme, origin_host)) = origin.split_once("://") else {
        return Err("Origin is opaque or malformed");
    };
    let host = request
        .uri()
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
        });
    match host {
        Some(host) if host.eq_ignore_ascii_case(origin_host) => Ok(()),
        Some(_) => Err("Origin names another host"),
        None => Err("request has no Host to compare Origin with"),
    }
}

/// Adds the security headers to a response. Pages get `Cache-Control:
/// no-store`; static files keep the caching they set.
pub(crate) fn add_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}
