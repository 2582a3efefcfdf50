//! stepgate's JSON-lines event schema, and stepgate's own audit export.
//!
//! One JSON object per line:
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `event_id` | yes | unique id of the event |
//! | `time` | yes | RFC 3339 time |
//! | `identity` | yes | who acted |
//! | `operation` | yes | what was done, such as `GET /orders/{n}` or `s3:GetObject` |
//! | `resource` | no | what it was done to; defaults to the path of an HTTP operation (`/orders/{n}`), else the operation |
//! | `action` | no | `read`, `write`, `delete` or `admin`; defaults to the action of an HTTP operation's method, else `read` |
//! | `client_addr` | no | client IP address |
//! | `user_agent` | no | client software |
//! | `credential` | no | id of the credential used (never the secret) |
//! | `session` | no | session name |
//! | `error` | no | `authentication`, `authorization` or any other error text |
//! | `bytes`, `rows` | no | data returned to the client |
//!
//! A line of `stepgate audit export --format jsonl` is read as well: its
//! `seq` is the event id, `method` and `resource` make the operation,
//! authentication failures count as failures, and administrative records
//! are left out.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Deserialize;
use stepgate_core::{Action, Timestamp};

use crate::event::{Event, EventError, classify_error};

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    identity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_addr: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    credential: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    bytes: Option<u64>,
    rows: Option<u64>,
    // Fields of stepgate's audit records.
    seq: Option<u64>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    token_id: Option<Cow<'a, str>>,
    upstream_status: Option<u16>,
}

/// Reason a well-formed line cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    #[error("line has no {0}")]
    Missing(&'static str),
    #[error("{field} {value:?} is not valid: {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// An audit record that is not a request (an administrative change).
    #[error("audit record {seq} is not a request ({event})")]
    NotARequest { seq: u64, event: String },
}

/// Reads one line.
pub fn parse_line(json: &str) -> Result<Result<Event, LineError>, serde_json::Error> {
    let line: Line<'_> = serde_json::from_str(json)?;
    Ok(match line.seq {
        Some(seq) => from_audit(seq, line),
        None => from_generic(line),
    })
}

fn time_of(text: Option<Cow<'_, str>>, field: &'static str) -> Result<Timestamp, LineError> {
    let text = text.ok_or(LineError::Missing(field))?;
    Timestamp::parse_rfc3339(&text).ok_or_else(|| LineError::Invalid {
        field,
        value: text.into_owned(),
        expected: "an RFC 3339 time such as 2024-03-01T10:00:00Z",
    })
}

fn addr_of(text: Option<Cow<'_, str>>) -> Result<IpAddr, LineError> {
    match text {
        None => Ok(Event::NO_NETWORK),
        Some(text) => text
            .parse::<IpAddr>()
            .map(|addr| addr.to_canonical())
            .map_err(|_| LineError::Invalid {
                field: "client_addr",
                value: text.into_owned(),
                expected: "an IP address",
            }),
    }
}

fn action_of(text: Option<Cow<'_, str>>) -> Result<Action, LineError> {
    match text {
        None => Ok(Action::Read),
        Some(text) => text.parse().map_err(|_| LineError::Invalid {
            field: "action",
            value: text.into_owned(),
            expected: "read, write, delete or admin",
        }),
    }
}

fn from_generic(line: Line<'_>) -> Result<Event, LineError> {
    let event_id = line.event_id.ok_or(LineError::Missing("event_id"))?;
    let time = time_of(line.time, "time")?;
    let identity = line
        .identity
        .filter(|identity| !identity.trim().is_empty())
        .ok_or(LineError::Missing("identity"))?;
    let operation = line
        .operation
        .filter(|operation| !operation.trim().is_empty())
        .ok_or(LineError::Missing("operation"))?;
    // An HTTP operation, `METHOD /path`, gives the default resource and
    // action.
    let http = operation
        .split_once(' ')
        .filter(|(method, path)| {
            path.starts_with('/')
                && !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_uppercase())
        })
        .map(|(method, path)| (method.to_owned(), path.to_owned()));
    let action = match (line.action, &http) {
        (Some(text), _) => action_of(Some(text))?,
        (None, Some((method, _))) => Action::from_http(method, false),
        (None, None) => Action::Read,
    };
    let error = line.error.map(|text| match text.as_ref() {
        "authentication" => EventError::Authentication,
        "authorization" => EventError::Authorization,
        other => classify_error(other),
    });
    Ok(Event {
        event_id: event_id.into_owned(),
        time,
        identity: identity.into_owned(),
        session: line.session.map(Cow::into_owned),
        client_addr: addr_of(line.client_addr)?,
        resource: match (line.resource, http) {
            (Some(resource), _) => resource.into_owned(),
            (None, Some((_, path))) => path,
            (None, None) => operation.clone().into_owned(),
        },
        operation: operation.into_owned(),
        action,
        user_agent: line.user_agent.map(Cow::into_owned),
        credential: line.credential.map(Cow::into_owned),
        error,
        bytes: line.bytes.unwrap_or(0),
        rows: line.rows.unwrap_or(0),
    })
}

fn from_audit(seq: u64, line: Line<'_>) -> Result<Event, LineError> {
    let kind = line.event.as_deref().unwrap_or("");
    let error = match kind {
        "allow" | "challenge" | "deny" | "error" | "step_up_success" => None,
        "auth_failure" => Some(EventError::Authentication),
        "step_up_failure" => Some(EventError::Other),
        other => {
            return Err(LineError::NotARequest {
                seq,
                event: other.to_owned(),
            });
        }
    };
    let error = error.or(match line.upstream_status {
        Some(401 | 403) => Some(EventError::Authorization),
        _ => None,
    });
    let time = time_of(line.time, "time")?;
    let identity = match line.identity {
        Some(identity) => identity,
        // A token that named no known identity.
        None if kind == "auth_failure" => {
            return Err(LineError::NotARequest {
                seq,
                event: "auth_failure without an identity".to_owned(),
            });
        }
        None => return Err(LineError::Missing("identity")),
    };
    let method = line.method.ok_or(LineError::Missing("method"))?;
    let resource = line.resource.ok_or(LineError::Missing("resource"))?;
    Ok(Event {
        event_id: seq.to_string(),
        time,
        identity: identity.into_owned(),
        session: None,
        client_addr: addr_of(line.client_addr)?,
        operation: format!("{method} {resource}"),
        resource: resource.into_owned(),
        action: action_of(line.action)?,
        user_agent: line.user_agent.map(Cow::into_owned),
        credential: line.token_id.map(Cow::into_owned),
        error,
        bytes: line.bytes.unwrap_or(0),
        rows: line.rows.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_line_with_defaults() {
        let event = parse_line(
            r#"{"event_id":"a1","time":"2024-03-01T10:00:00Z","identity":"ci","operation":"GET /builds/{n}","client_addr":"192.0.2.7","bytes":512}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(event.resource, "/builds/{n}");
        assert_eq!(event.action, Action::Read);
        assert_eq!(event.bytes, 512);
        assert_eq!(event.client_addr.to_string(), "192.0.2.7");
    }

    #[test]
    fn http_operation_gives_resource_and_action() {
        let event = parse_line(
            r#"{"event_id":"a","time":"2024-03-01T10:00:00Z","identity":"ci","operation":"DELETE /reports/daily"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(event.resource, "/reports/daily");
        assert_eq!(event.action, Action::Delete);
        let cloud = parse_line(
            r#"{"event_id":"a","time":"2024-03-01T10:00:00Z","identity":"ci","operation":"s3:GetObject"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(cloud.resource, "s3:GetObject");
        assert_eq!(cloud.action, Action::Read);
        let empty = parse_line(
            r#"{"event_id":"a","time":"2024-03-01T10:00:00Z","identity":" ","operation":"x"}"#,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(empty, LineError::Missing("identity"));
    }

    #[test]
    fn audit_export_lines_are_requests() {
        let event = parse_line(
            r#"{"seq":7,"prev_hash":"00","time":"2024-03-01T10:00:00.000Z","event":"allow","identity":"ci-bot","token_id":"abc","client_addr":"127.0.0.2","method":"GET","path":"/orders/1","action":"read","resource":"/orders/{n}","signals":[],"policies":[],"upstream_status":403}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(event.event_id, "7");
        assert_eq!(event.operation, "GET /orders/{n}");
        assert_eq!(event.credential.as_deref(), Some("abc"));
        assert_eq!(event.error, Some(EventError::Authorization));
        let admin = parse_line(r#"{"seq":1,"prev_hash":"00","time":"2024-03-01T10:00:00Z","event":"admin","signals":[],"policies":[]}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(admin.to_string(), "audit record 1 is not a request (admin)");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = parse_line(r#"{"event_id":"a","time":"now","identity":"x","operation":"y"}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "time \"now\" is not valid: an RFC 3339 time such as 2024-03-01T10:00:00Z"
        );
        let err = parse_line(r#"{"event_id":"a","time":"2024-03-01T10:00:00Z","identity":"x","operation":"y","action":"burn"}"#)
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().starts_with("action \"burn\""));
        assert!(parse_line("[1,2]").is_err());
    }
}
