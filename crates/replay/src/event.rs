//! One recorded event, normalised from whatever log it came from.

use std::net::{IpAddr, Ipv4Addr};

use stepgate_core::{Action, Timestamp};

/// Failure of a recorded request, as the risk engine counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// The credential was refused (wrong secret, unknown or revoked token).
    Authentication,
    /// The request was authenticated but refused (HTTP 401/403, cloud
    /// `AccessDenied`).
    Authorization,
    /// Any other failure; it does not count as a failure signal.
    Other,
}

/// A recorded request in stepgate's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub time: Timestamp,
    pub identity: String,
    /// Session name of an assumed role, kept apart from the identity.
    pub session: Option<String>,
    /// Client address; the unspecified address when the call came from no
    /// network (a cloud service acting for the identity).
    pub client_addr: IpAddr,
    pub operation: String,
    pub resource: String,
    pub action: Action,
    pub user_agent: Option<String>,
    /// Credential id (access key id, token id), never a secret.
    pub credential: Option<String>,
    pub error: Option<EventError>,
    /// Bytes and rows returned to the client.
    pub bytes: u64,
    pub rows: u64,
}

impl Event {
    /// The address used when an event names no client network.
    pub const NO_NETWORK: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
}

/// Classifies an error code from a cloud audit log.
pub fn classify_error(code: &str) -> EventError {
    let lower = code.to_ascii_lowercase();
    let authorization = ["accessdenied", "unauthorized", "forbidden", "notauthorized"];
    let authentication = [
        "invalidclienttokenid",
        "signaturedoesnotmatch",
        "expiredtoken",
        "invalidaccesskeyid",
        "authfailure",
        "incompletesignature",
    ];
    if authentication.iter().any(|word| lower.contains(word)) {
        EventError::Authentication
    } else if authorization.iter().any(|word| lower.contains(word)) {
        EventError::Authorization
    } else {
        EventError::Other
    }
}

/// Reads an action name (`read`, `write`, `delete`, `admin`).
pub fn parse_action(text: &str) -> Option<Action> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        for (code, expected) in [
            ("AccessDenied", EventError::Authorization),
            ("Client.UnauthorizedOperation", EventError::Authorization),
            ("AccessDeniedException", EventError::Authorization),
            ("InvalidClientTokenId", EventError::Authentication),
            ("SignatureDoesNotMatch", EventError::Authentication),
            ("Client.AuthFailure", EventError::Authentication),
            ("NoSuchBucket", EventError::Other),
            ("ThrottlingException", EventError::Other),
        ] {
            assert_eq!(classify_error(code), expected, "{code}");
        }
    }
}
