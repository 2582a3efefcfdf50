//! The facts of one request, as a front-end hands them to the engine.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::location::Location;
use crate::network::Network;
use crate::time::Timestamp;

/// What a request does, derived from its method and its zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Delete,
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Delete, Action::Admin];

    /// Derives the action from an HTTP method. Safe methods read, DELETE
    /// deletes and every other method writes. In an admin zone every
    /// request that is not a read counts as `admin`.
    pub fn from_http(method: &str, admin_zone: bool) -> Self {
        let action = match method {
            "GET" | "HEAD" | "OPTIONS" => Action::Read,
            "DELETE" => Action::Delete,
            _ => Action::Write,
        };
        if admin_zone && action != Action::Read {
            Action::Admin
        } else {
            action
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| format!("unknown action {s:?}: expected read, write, delete or admin"))
    }
}

/// Everything the engine needs to know about one request, already
/// normalised by the front-end.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestFacts {
    /// Address the decision is about: the TCP peer, or the client named by
    /// trusted proxies. The unspecified address (`0.0.0.0`) means the
    /// request came from no network, as cloud audit events of calls a cloud
    /// service made on an identity's behalf.
    pub client_addr: IpAddr,
    /// TCP peer address, which no header can change.
    pub peer_addr: IpAddr,
    /// Upper-case method, such as `GET`.
    pub method: String,
    /// Normalised path without the query.
    pub path: String,
    /// Method and route template, such as `GET /orders/{n}`.
    pub operation: String,
    /// Route template part of `operation`, the resource a grant covers.
    pub resource: String,
    pub action: Action,
    /// Name of the covering zone, if any.
    pub zone: Option<String>,
    pub zone_read_only: bool,
    pub zone_sensitive: bool,
    pub time: Timestamp,
    pub user_agent: Option<String>,
    /// Id of the credential presented, such as an API token id or a cloud
    /// access key id; never the secret.
    pub credential: Option<String>,
    /// Place and owner of `client_addr`, when a GeoIP database or the
    /// configuration has them.
    pub location: Option<Arc<Location>>,
}

impl RequestFacts {
    /// False when the request came from no network (see `client_addr`).
    pub fn has_network(&self) -> bool {
        !self.client_addr.is_unspecified()
    }

    pub fn network(&self) -> Network {
        Network::of(self.client_addr)
    }
}
