//! The answer the engine gives a front-end for one request.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::assurance::FactorKind;
use crate::signal::{RiskScore, Signal};

/// The three possible outcomes of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    StepUp,
    Deny,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::StepUp => "step_up",
            Outcome::Deny => "deny",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision with the risk it was based on. `step_up` lists the factors
/// that would permit the request, weakest first, and is empty unless the
/// outcome is [`Outcome::StepUp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub risk: RiskScore,
    pub signals: Vec<Signal>,
    pub step_up: Vec<FactorKind>,
}
