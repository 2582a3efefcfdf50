//! Static files of the console, compiled into the binary: the vendored
//! htmx and the page's stylesheet.

use std::sync::LazyLock;

use aws_lc_rs::digest;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};

pub(crate) const HTMX: &[u8] = include_bytes!("../static/htmx.min.js");
pub(crate) const STYLESHEET: &[u8] = include_bytes!("../static/console.css");

/// Cache lifetime of static files. Pages link them with a digest of their
/// content in the query, so a changed file gets a new URL.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

/// First 16 hex digits of the SHA-256 of the stylesheet and htmx together,
/// appended to static URLs as `?v=` so browsers fetch them again after an
/// upgrade.
pub(crate) static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(HTMX);
    context.update(STYLESHEET);
    context
        .finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
});

pub(crate) async fn htmx() -> Response {
    static_file(HTMX, "text/javascript; charset=utf-8")
}

pub(crate) async fn stylesheet() -> Response {
    static_file(STYLESHEET, "text/css; charset=utf-8")
}

fn static_file(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_FOREVER),
            ),
        ],
        body,
    )
        .into_response()
}
