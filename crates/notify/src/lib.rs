//! Webhook notifications for approvals: when the gateway holds a request
//! until a human approves it, this crate tells the approver group.
//!
//! [`render`] builds a JSON body that Slack and Microsoft Teams incoming
//! webhooks display and that carries the same facts as structured fields
//! for other receivers. [`sign`] and [`verify`] make and check the
//! `Stepgate-Signature` header, an HMAC-SHA256 over a timestamp and the
//! body. [`Deliverer`] POSTs the body over HTTP/1.1, with TLS for https
//! URLs, retries with exponential backoff and reports every attempt to the
//! caller. A notification never approves anything: its only action is a
//! link to the approval page.
//!
//! A receiver checks the `Stepgate-Signature` header (`t=<unix seconds>,
//! v1=<hex>`) by computing HMAC-SHA256 with the shared secret over the
//! timestamp, a full stop and the raw body, comparing it in constant time,
//! and rejecting timestamps far from its clock. It can drop a repeated
//! `Stepgate-Delivery` id, because retries of one delivery reuse it. In
//! Rust:
//!
//! ```
//! use stepgate_notify::{Secret, sign, verify};
//!
//! let secret = Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
//! let body = br#"{"text":"Approval requested"}"#;
//! let header = sign(&secret, 1_767_225_600, body);
//! // The receiver's clock reads 50 s later; it accepts up to 300 s of skew.
//! assert!(verify(&secret, &header, body, 1_767_225_650, 300).is_ok());
//! assert!(verify(&secret, &header, b"{}", 1_767_225_650, 300).is_err());
//! ```

mod deliver;
mod endpoint;
mod payload;
mod signature;
mod transport;

pub use deliver::{Attempt, DELIVERY_HEADER, Deliverer, Outcome, RetryPolicy};
pub use endpoint::{Endpoint, MIN_SECRET_LEN, Secret};
pub use payload::{
    MAX_DECIDED_BY, MAX_LINK_CHARS, MAX_METHOD_CHARS, MAX_REASONS, MAX_VALUE_CHARS, Notification,
    NotificationKind, render,
};
pub use signature::{SIGNATURE_HEADER, VerifyError, sign, verify};

/// Errors in the setup of webhooks: an endpoint that cannot be used or CA
/// roots that cannot be loaded. Messages never contain a secret, and URLs
/// in them are redacted as [`Endpoint::redacted_url`] describes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook URL {url} of group {group:?} is invalid: {reason}")]
    InvalidUrl {
        group: String,
        url: String,
        reason: String,
    },
    #[error(
        "webhook secret of group {group:?} is {len} bytes long, it must have at least {MIN_SECRET_LEN}"
    )]
    ShortSecret { group: String, len: usize },
    #[error("cannot load CA certificates from {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot build the TLS client configuration: {0}")]
    TlsConfig(String),
}
