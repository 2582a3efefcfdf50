//! Assurance: what an identity has proved, and the grants that keep it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::IdentityName;
use crate::network::Network;
use crate::request::Action;
use crate::time::Timestamp;

/// A kind of step-up proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    Totp,
    /// A DPoP proof (RFC 9449) signed by the identity's bound key.
    Dpop,
    /// A client certificate (RFC 8705) bound to the identity, presented on
    /// the request's TLS connection.
    Certificate,
    /// An HTTP message signature (RFC 9421) by one of the identity's
    /// enrolled signing keys, such as a key inside an HSM.
    Signature,
    /// A person approved this exact operation of the identity. It says
    /// nothing about who holds the token, so it adds no strength.
    Approval,
}

impl FactorKind {
    /// Every factor kind, weakest first; the step-up search tries them in
    /// this order.
    pub const ALL: [FactorKind; 5] = [
        FactorKind::Totp,
        FactorKind::Dpop,
        FactorKind::Certificate,
        FactorKind::Signature,
        FactorKind::Approval,
    ];

    /// The name used in policies (`context.proved.totp`) and audit records.
    pub fn name(self) -> &'static str {
        match self {
            FactorKind::Totp => "totp",
            FactorKind::Dpop => "dpop",
            FactorKind::Certificate => "certificate",
            FactorKind::Signature => "signature",
            FactorKind::Approval => "approval",
        }
    }

    /// Reads a factor name as [`FactorKind::name`] writes it.
    pub fn from_name(name: &str) -> Option<FactorKind> {
        FactorKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Assurance strength, which policies read as `context.assurance`: 1 for
    /// a shared secret, 2 for a software-held private key, 3 for a signing
    /// key enrolled for message signatures, which is meant to live in an
    /// HSM. An approval is 0: it covers the operation, not the caller.
    pub fn strength(self) -> u8 {
        match self {
            FactorKind::Approval => 0,
            FactorKind::Totp => 1,
            FactorKind::Dpop | FactorKind::Certificate => 2,
            FactorKind::Signature => 3,
        }
    }

    /// The Authentication Context Class Reference sent in `acr_values`.
    pub fn acr(self) -> &'static str {
        match self {
            FactorKind::Totp => "urn:stepgate:acr:totp",
            FactorKind::Dpop => "urn:stepgate:acr:dpop",
            FactorKind::Certificate => "urn:stepgate:acr:mtls",
            FactorKind::Signature => "urn:stepgate:acr:httpsig",
            FactorKind::Approval => "urn:stepgate:acr:approval",
        }
    }
}

impl fmt::Display for FactorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The factors proved for the current request and when each was proved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assurance {
    proved: Vec<(FactorKind, Timestamp)>,
}

impl Assurance {
    pub fn none() -> Self {
        Self::default()
    }

    /// Records a proof, keeping only the most recent one per kind.
    pub fn add(&mut self, kind: FactorKind, at: Timestamp) {
        match self.proved.iter_mut().find(|(k, _)| *k == kind) {
            Some(entry) => entry.1 = entry.1.max(at),
            None => self.proved.push((kind, at)),
        }
    }

    pub fn with(mut self, kind: FactorKind, at: Timestamp) -> Self {
        self.add(kind, at);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.proved.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (FactorKind, Timestamp)> + '_ {
        self.proved.iter().copied()
    }
}

/// The action and resource a grant covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantScope {
    pub action: Action,
    /// Route template, such as `/orders/{n}`.
    pub resource: String,
}

/// Raised assurance left by a successful step-up, bound to one identity,
/// one scope and one client network, and valid until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub identity: IdentityName,
    pub scope: GrantScope,
    pub network: Network,
    pub factor: FactorKind,
    pub proved_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Grant {
    pub fn new(
        identity: IdentityName,
        scope: GrantScope,
        network: Network,
        factor: FactorKind,
        proved_at: Timestamp,
        max_age: Duration,
    ) -> Self {
        Self {
            identity,
            scope,
            network,
            factor,
            proved_at,
            expires_at: proved_at.saturating_add(max_age),
        }
    }

    /// True when the grant covers this identity, scope and network at `now`.
    pub fn covers(
        &self,
        identity: &IdentityName,
        scope: &GrantScope,
        network: Network,
        now: Timestamp,
    ) -> bool {
        now < self.expires_at
            && &self.identity == identity
            && &self.scope == scope
            && self.network == network
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_bound_to_scope_network_and_time() {
        let identity = IdentityName::new("bot").unwrap();
        let scope = GrantScope {
            action: Action::Read,
            resource: "/orders/{n}".into(),
        };
        let network = Network::of("127.0.9.9".parse().unwrap());
        let grant = Grant::new(
            identity.clone(),
            scope.clone(),
            network,
            FactorKind::Totp,
            Timestamp::from_secs(100),
            Duration::from_secs(300),
        );
        assert!(grant.covers(&identity, &scope, network, Timestamp::from_secs(399)));
        assert!(!grant.covers(&identity, &scope, network, Timestamp::from_secs(400)));
        let other_net = Network::of("127.0.8.9".parse().unwrap());
        assert!(!grant.covers(&identity, &scope, other_net, Timestamp::from_secs(200)));
        let write = GrantScope {
            action: Action::Write,
            ..scope
        };
        assert!(!grant.covers(&identity, &write, network, Timestamp::from_secs(200)));
    }

    #[test]
    fn assurance_keeps_latest_proof() {
        let mut assurance = Assurance::none();
        assurance.add(FactorKind::Totp, Timestamp::from_secs(5));
        assurance.add(FactorKind::Totp, Timestamp::from_secs(3));
        assert_eq!(
            assurance.iter().collect::<Vec<_>>(),
            vec![(FactorKind::Totp, Timestamp::from_secs(5))]
        );
    }
}
