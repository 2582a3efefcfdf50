//! Non-human identities and their names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A validated identity name: 1 to 64 characters from ASCII letters, digits,
/// `.`, `_`, `-` and `@`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdentityName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid identity name {0:?}: use 1 to 64 ASCII letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
)]
pub struct InvalidName(pub String);

impl IdentityName {
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
        let starts_well = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if name.len() > 64 || !starts_well || !name.chars().all(valid_char) {
            return Err(InvalidName(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdentityName {
    type Error = InvalidName;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<IdentityName> for String {
    fn from(value: IdentityName) -> Self {
        value.0
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service account, bot, CI job or agent known to the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: IdentityName,
    pub disabled: bool,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_validated() {
        assert!(IdentityName::new("ci-bot").is_ok());
        assert!(IdentityName::new("agent@team.example").is_ok());
        assert!(IdentityName::new("").is_err());
        assert!(IdentityName::new("-x").is_err());
        assert!(IdentityName::new("a b").is_err());
        assert!(IdentityName::new(&"a".repeat(65)).is_err());
    }
}
