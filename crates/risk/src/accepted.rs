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

/// Checks a value given to `stepgate baseline accept` against what the
/// signal puts in its evidence, and returns it in that form: an address
/// becomes its network, `64500` becomes `AS64500`, a country code is upper
/// case. The error names what to write instead.
pub fn accept_value(kind: SignalKind, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == ANY_VALUE {
        return Ok(ANY_VALUE.to_owned());
    }
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(format!(
            "value {value:?} is empty or has control characters; give the `value` from the signal's evidence, or none to accept every value"
        ));
    }
    match kind {
        SignalKind::NewNetwork | SignalKind::AnonymizerNetwork => {
            let addr = value.split_once('/').map_or(value, |(addr, _)| addr);
            let network = addr
                .parse::<std::net::IpAddr>()
                .map(|addr| stepgate_core::Network::of(addr.to_canonical()))
                .map_err(|_| {
                    format!(
                        "value {value:?} is not a network; give a /24 (IPv4) or /48 (IPv6) network such as 203.0.113.0/24, or an address in it"
                    )
                })?;
            let normalised = network.to_string();
            if value.contains('/') && value != normalised {
                return Err(format!(
                    "value {value:?} is not the network the signal names; networks are /24 (IPv4) or /48 (IPv6): use {normalised}"
                ));
            }
            Ok(normalised)
        }
        SignalKind::NewAsn => {
            let digits = value
                .strip_prefix("AS")
                .or_else(|| value.strip_prefix("as"))
                .unwrap_or(value);
            digits
                .parse::<u32>()
                .map(|asn| format!("AS{asn}"))
                .map_err(|_| {
                    format!("value {value:?} is not an autonomous system; write it as AS64500")
                })
        }
        SignalKind::NewCountry => {
            if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(value.to_ascii_uppercase())
            } else {
                Err(format!(
                    "value {value:?} is not a country code; write an ISO 3166-1 code such as SE"
                ))
            }
        }
        SignalKind::DataVolume => match value {
            "bytes" | "rows" => Ok(value.to_owned()),
            _ => Err(format!(
                "value {value:?} is not valid for data_volume; use bytes or rows"
            )),
        },
        SignalKind::ImpossibleTravel
        | SignalKind::ConcurrentSessions
        | SignalKind::RequestBurst
        | SignalKind::FailureBurst
        | SignalKind::TotpFailure
        | SignalKind::Dormant => Err(format!(
            "signal {kind} has no values to choose from; leave the value out to accept every occurrence"
        )),
        _ => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_form_the_signal_uses() {
        let cases = [
            (SignalKind::NewNetwork, "127.0.12.9", Ok("127.0.12.0/24")),
            (SignalKind::NewNetwork, "127.0.12.0/24", Ok("127.0.12.0/24")),
            (
                SignalKind::NewNetwork,
                "2001:db8:1:2::5",
                Ok("2001:db8:1::/48"),
            ),
            (SignalKind::NewAsn, "64500", Ok("AS64500")),
            (SignalKind::NewAsn, "AS64500", Ok("AS64500")),
            (SignalKind::NewCountry, "se", Ok("SE")),
            (
                SignalKind::NewOperation,
                "GET /orders/{n}",
                Ok("GET /orders/{n}"),
            ),
            (SignalKind::ImpossibleTravel, "*", Ok("*")),
        ];
        for (kind, value, expected) in cases {
            assert_eq!(
                accept_value(kind, value).as_deref(),
                expected.map_err(|_: ()| String::new()).as_deref(),
                "{kind} {value}"
            );
        }
    }

    #[test]
    fn values_that_never_match_are_refused() {
        let refused = [
            (SignalKind::NewNetwork, "10.0.0.0/16", "use 10.0.0.0/24"),
            (SignalKind::NewNetwork, "somewhere", "is not a network"),
            (SignalKind::NewAsn, "Example Net", "write it as AS64500"),
            (SignalKind::NewCountry, "Sweden", "ISO 3166-1"),
            (
                SignalKind::ImpossibleTravel,
                "somewhere",
                "leave the value out",
            ),
            (SignalKind::DataVolume, "gigabytes", "use bytes or rows"),
            (SignalKind::NewOperation, "", "empty"),
            (
                SignalKind::NewClient,
                "curl\u{1b}[31m",
                "control characters",
            ),
        ];
        for (kind, value, message) in refused {
            let err = accept_value(kind, value).unwrap_err();
            assert!(err.contains(message), "{kind} {value}: {err}");
        }
    }
}
