use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use stepgate_core::SignalKind;

/// Value that accepts every occurrence of a signal for an identity.
pub const ANY_VALUE: &str = "*";

/// Signals an operator accepted as normal for one identity, each for one
/// value (the `value` in the signal's evidence, such as a network or an
/// operation) or for any value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted(BTreeSet<(SignalKind, String)>);

impl Accepted {
    pub fn insert(&mut self, kind: SignalKind, value: impl Into<String>) {
        self.0.insert((kind, value.into()));
    }

    pub fn remove(&mut self, kind: SignalKind, value: &str) -> bool {
        self.0.remove(&(kind, value.to_owned()))
    }

    /// True when the signal is accepted for `value` or for any value.
    pub fn covers(&self, kind: SignalKind, value: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        self.0.contains(&(kind, ANY_VALUE.to_owned())) || self.0.contains(&(kind, value.to_owned()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(SignalKind, String)> {
        self.0.iter()
    }
}
