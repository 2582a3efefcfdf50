//! The decision core of stepgate: identities, credentials, request facts,
//! signals, risk scores, assurance, grants, decisions and the clock.
//!
//! Everything here is plain data and pure functions. The crate performs no
//! I/O and needs no async runtime, so risk scoring, policy and replay can be
//! driven from unit tests with plain values and a [`ManualClock`].

pub mod assurance;
pub mod certificate;
pub mod decision;
pub mod identity;
pub mod location;
pub mod network;
pub mod request;
pub mod secret;
pub mod signal;
pub mod time;
pub mod token;
pub mod zone;

pub use assurance::{Assurance, FactorKind, Grant, GrantScope};
pub use certificate::ClientCertificate;
pub use decision::{Decision, Outcome};
pub use identity::{Identity, IdentityName, InvalidName};
pub use location::{Coordinates, Location, Locator};
pub use network::Network;
pub use request::{Action, RequestFacts};
pub use secret::SecretString;
pub use signal::{Evidence, RiskScore, Signal, SignalKind};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use token::{ApiToken, TokenError, TokenHash, TokenId};
pub use zone::{Zone, Zones};
