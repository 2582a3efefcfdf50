//! Routing by host and path prefix to upstream URLs.

use http::uri::{Authority, Scheme};
use stepgate_config::RouteConfig;
use stepgate_core::zone::prefix_covers;

/// One route: requests for `host` (any host when `None`) whose path is
/// covered by `prefix` go to `upstream`.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) host: Option<String>,
    pub(crate) prefix: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// Path of the upstream URL without a trailing slash, prepended to the
    /// request path.
    pub(crate) base_path: String,
}

/// All routes; a route with a host wins over one without, then the longest
/// prefix wins.
#[derive(Clone, Debug, Default)]
pub(crate) struct Router(Vec<Route>);

#[derive(Debug, thiserror::Error)]
#[error("routes[{index}].upstream {url:?} is not a valid URL: {reason}")]
pub(crate) struct BadUpstream {
    index: usize,
    url: String,
    reason: String,
}

impl Router {
    pub(crate) fn new(routes: &[RouteConfig]) -> Result<Self, BadUpstream> {
        let mut parsed = Vec::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            let bad = |reason: String| BadUpstream {
                index,
                url: route.upstream.clone(),
                reason,
            };
            let uri: http::Uri = route
                .upstream
                .parse()
                .map_err(|err: http::uri::InvalidUri| bad(err.to_string()))?;
            let scheme = uri
                .scheme()
                .cloned()
                .ok_or_else(|| bad("no scheme".into()))?;
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| bad("no host".into()))?;
            parsed.push(Route {
                host: route.host.as_ref().map(|host| host.to_ascii_lowercase()),
                prefix: route.prefix.clone(),
                scheme,
                authority,
                base_path: uri.path().trim_end_matches('/').to_owned(),
            });
        }
        parsed.sort_by_key(|route| {
            (
                route.host.is_none(),
                std::cmp::Reverse(route.prefix.trim_end_matches('/').len()),
            )
        });
        Ok(Self(parsed))
    }

    /// Finds the route for a request. `host` is the request's host without
    /// port, lower case.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.0.iter().find(|route| {
            let host_matches = match (&route.host, host) {
                (None, _) => true,
                (Some(wanted), Some(host)) => wanted == host,
                (Some(_), None) => false,
            };
            host_matches && prefix_covers(&route.prefix, path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, upstream: &str, host: Option<&str>) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: upstream.into(),
            host: host.map(Into::into),
        }
    }

    #[test]
    fn host_and_longest_prefix_win() {
        let router = Router::new(&[
            route("/", "http://127.0.0.1:1", None),
            route("/api", "http://127.0.0.1:2/base/", None),
            route("/", "http://127.0.0.1:3", Some("Admin.Example")),
        ])
        .unwrap();
        assert_eq!(
            router.find(None, "/x").unwrap().authority.port_u16(),
            Some(1)
        );
        let api = router.find(None, "/api/v1").unwrap();
        assert_eq!(api.authority.port_u16(), Some(2));
        assert_eq!(api.base_path, "/base");
        assert_eq!(
            router.find(None, "/apix").unwrap().authority.port_u16(),
            Some(1)
        );
        assert_eq!(
            router
                .find(Some("admin.example"), "/api")
                .unwrap()
                .authority
                .port_u16(),
            Some(3)
        );
    }

    #[test]
    fn no_route_when_prefix_misses() {
        let router = Router::new(&[route("/api", "http://127.0.0.1:2", None)]).unwrap();
        assert!(router.find(None, "/other").is_none());
    }
}
