//! Webhook endpoints: the URL checks and the redacted form of a URL that
//! errors and logs show.

use std::fmt;
use std::str::FromStr;

use http::Uri;
use zeroize::Zeroizing;

use crate::NotifyError;

/// Minimum length of a webhook secret in bytes (128 bits). RFC 2104
/// discourages HMAC keys shorter than the hash output, 32 bytes for
/// SHA-256, but this check only rejects keys that are clearly too short.
pub const MIN_SECRET_LEN: usize = 16;

/// HMAC key of a webhook. The bytes are zeroized on drop, and `Debug`
/// prints `<redacted>`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Length of the key in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A webhook of one approver group.
#[derive(Clone)]
pub struct Endpoint {
    pub group: String,
    /// An `http` or `https` URL with a host and without user information.
    pub url: Uri,
    pub secret: Secret,
}

impl Endpoint {
    /// Parses `url` and checks it and the secret as [`Endpoint::check`]
    /// does.
    pub fn new(group: impl Into<String>, url: &str, secret: Secret) -> Result<Self, NotifyError> {
        let group = group.into();
        let url = Uri::from_str(url).map_err(|err| NotifyError::InvalidUrl {
            group: group.clone(),
            // The text did not parse, so no part of it is known to be free
            // of a token.
            url: "<unparsable>".to_owned(),
            reason: err.to_string(),
        })?;
        let endpoint = Self { group, url, secret };
        endpoint.check()?;
        Ok(endpoint)
    }

    /// Checks that the URL has the scheme `http` or `https`, a host and no
    /// user information, and that the secret has at least
    /// [`MIN_SECRET_LEN`] bytes.
    pub fn check(&self) -> Result<(), NotifyError> {
        Target::from_endpoint(self).map(|_| ())
    }

    /// Returns the URL for errors and logs: scheme, host and port, with the path
    /// shown as `/…` and the query as `?…`. Slack and Teams incoming webhook
    /// URLs carry their credential in the path, other services often in
    /// the query, so neither is shown. User information is left out.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("group", &self.group)
            .field("url", &self.redacted_url())
            .field("secret", &self.secret)
            .finish()
    }
}

fn redact(url: &Uri) -> String {
    let mut text = String::new();
    if let Some(scheme) = url.scheme_str() {
        text.push_str(scheme);
        text.push_str("://");
    }
    if let Some(host) = url.host() {
        text.push_str(host);
    }
    if let Some(port) = url.port() {
        text.push(':');
        text.push_str(port.as_str());
    }
    let path = url.path();
    if !path.is_empty() && path != "/" {
        text.push_str("/…");
    }
    if url.query().is_some() {
        text.push_str("?…");
    }
    text
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// Connection details of a checked endpoint URL.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Value of the Host header: host and port as the URL spells them,
    /// without user information.
    pub(crate) authority: String,
    /// Path and query of the request line, `/` when the URL has no path.
    pub(crate) path_and_query: String,
    /// Scheme, host and port, for logs and error reasons.
    pub(crate) origin: String,
}

impl Target {
    pub(crate) fn from_endpoint(endpoint: &Endpoint) -> Result<Self, NotifyError> {
        let url = &endpoint.url;
        let invalid = |reason: &str| NotifyError::InvalidUrl {
            group: endpoint.group.clone(),
            url: redact(url),
            reason: reason.to_owned(),
        };

        let scheme = match url.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(_) => return Err(invalid("the scheme must be http or https")),
            None => return Err(invalid("the URL has no scheme, use http:// or https://")),
        };
        let Some(authority) = url.authority() else {
            return Err(invalid("the URL has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(invalid(
                "the URL contains user information, which webhooks do not use",
            ));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("the URL has no host"));
        }

        if endpoint.secret.len() < MIN_SECRET_LEN {
            return Err(NotifyError::ShortSecret {
                group: endpoint.group.clone(),
                len: endpoint.secret.len(),
            });
        }

        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let path_and_query = match url.path_and_query() {
            Some(path_and_query) if !path_and_query.as_str().is_empty() => {
                path_and_query.as_str().to_owned()
            }
            _ => "/".to_owned(),
        };
        let origin = match url.port() {
            Some(port) => format!("{}://{host}:{}", scheme_str(scheme), port.as_str()),
            None => format!("{}://{host}", scheme_str(scheme)),
        };
        Ok(Self {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            path_and_query,
            origin,
        })
    }
}

fn scheme_str(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(vec![7; 32])
    }

    fn invalid_reason(url: &str) -> (String, String) {
        match Endpoint::new("ops", url, secret()) {
            Err(NotifyError::InvalidUrl { url, reason, .. }) => (url, reason),
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }

    #[test]
    fn secret_debug_redacted() {
        let secret = Secret::new(b"top-secret-value-1234".to_vec());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let endpoint = Endpoint::new("ops", "https://hooks.example/a?token=abc", secret).unwrap();
        let debug = format!("{endpoint:?}");
        assert!(!debug.contains("top-secret"), "{debug}");
        assert!(!debug.contains("token=abc"), "{debug}");
        assert!(debug.contains("https://hooks.example/…?…"), "{debug}");
    }

    #[test]
    fn target_of_https_url() {
        let endpoint = Endpoint::new(
            "ops",
            "https://hooks.example:8443/services/T1/B2?x=1",
            secret(),
        )
        .unwrap();
        let target = Target::from_endpoint(&endpoint).unwrap();
        assert_eq!(target.scheme, Scheme::Https);
        assert_eq!(target.host, "hooks.example");
        assert_eq!(target.port, 8443);
        assert_eq!(target.authority, "hooks.example:8443");
        assert_eq!(target.path_and_query, "/services/T1/B2?x=1");
        assert_eq!(target.origin, "https://hooks.example:8443");
    }

    #[test]
    fn target_default_ports_and_path() {
        let http = Endpoint::new("ops", "http://127.0.0.1", secret()).unwrap();
        let http = Target::from_endpoint(&http).unwrap();
        assert_eq!(http.port, 80);
        assert_eq!(http.path_and_query, "/");
        assert_eq!(http.authority, "127.0.0.1");
        let https = Endpoint::new("ops", "https://hooks.example/h", secret()).unwrap();
        assert_eq!(Target::from_endpoint(&https).unwrap().port, 443);
    }

    #[test]
    fn target_ipv6_host_without_brackets() {
        let endpoint = Endpoint::new("ops", "http://[::1]:8080/hook", secret()).unwrap();
        let target = Target::from_endpoint(&endpoint).unwrap();
        assert_eq!(target.host, "::1");
        assert_eq!(target.authority, "[::1]:8080");
    }

    #[test]
    fn userinfo_rejected_without_printing_it() {
        let (url, reason) = invalid_reason("https://admin:hunter2@hooks.example/h?token=abc");
        assert!(reason.contains("user information"), "{reason}");
        assert_eq!(url, "https://hooks.example/…?…");
        let message = Endpoint::new("ops", "https://admin:hunter2@hooks.example/h", secret())
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("\"ops\""), "{message}");
    }

    #[test]
    fn other_scheme_rejected() {
        let (url, reason) = invalid_reason("ftp://files.example/hook?token=abc");
        assert!(reason.contains("must be http or https"), "{reason}");
        assert_eq!(url, "ftp://files.example/…?…");
    }

    #[test]
    fn missing_host_rejected() {
        let (_, reason) = invalid_reason("/hooks/approvals");
        assert!(reason.contains("no scheme"), "{reason}");
        let missing_host = Endpoint {
            group: "ops".to_owned(),
            url: Uri::from_static("/only/a/path"),
            secret: secret(),
        };
        assert!(missing_host.check().is_err());
        // `http::Uri` itself rejects an empty authority.
        let err = Endpoint::new("ops", "http:///hook", secret()).unwrap_err();
        assert!(matches!(err, NotifyError::InvalidUrl { .. }), "{err:?}");
        let (_, reason) = invalid_reason("https://:443/hook");
        assert_eq!(reason, "the URL has no host");
    }

    #[test]
    fn unparsable_url_not_echoed() {
        let err = Endpoint::new("ops", "https://hooks example/?token=abc", secret()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("<unparsable>"), "{message}");
        assert!(!message.contains("token"), "{message}");
    }

    #[test]
    fn short_secret_rejected() {
        let err =
            Endpoint::new("ops", "https://hooks.example/h", Secret::new(vec![1; 15])).unwrap_err();
        assert_eq!(
            err,
            NotifyError::ShortSecret {
                group: "ops".to_owned(),
                len: 15
            }
        );
    }

    #[test]
    fn redacted_url_forms() {
        let cases = [
            ("https://hooks.example", "https://hooks.example"),
            ("https://hooks.example/", "https://hooks.example"),
            ("http://127.0.0.1:9000/x/y", "http://127.0.0.1:9000/…"),
            ("https://hooks.example/?sig=1", "https://hooks.example?…"),
        ];
        for (url, expected) in cases {
            let endpoint = Endpoint::new("ops", url, secret()).unwrap();
            assert_eq!(endpoint.redacted_url(), expected, "{url}");
        }
    }
}
