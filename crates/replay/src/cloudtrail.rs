//! AWS CloudTrail records as AWS writes them, and as common forwarders
//! reshape them.
//!
//! Identity is the principal ARN; for an assumed role it is the role itself
//! (the session issuer's ARN), with the session name kept apart. Network is
//! `sourceIPAddress`, unless that names an AWS service. Operation is
//! `service:EventName`, where the service is `eventSource` without
//! `.amazonaws.com`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use stepgate_core::{Action, Timestamp};

use crate::event::{Event, classify_error};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    #[serde(borrow, rename = "eventID", alias = "eventid")]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "eventtime")]
    event_time: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "eventsource")]
    event_source: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "eventname")]
    event_name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "sourceIPAddress", alias = "sourceipaddress")]
    source_ip_address: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "useragent")]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "errorcode")]
    error_code: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "eventtype")]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, alias = "recipientaccountid")]
    recipient_account_id: Option<Cow<'a, str>>,
    #[serde(alias = "readonly")]
    read_only: Option<ReadOnly>,
    #[serde(borrow, alias = "useridentity")]
    user_identity: Option<UserIdentity<'a>>,
    #[serde(default, alias = "requestparameters")]
    request_parameters: ResourceHint,
    /// Forwarders that move the client address and user agent.
    #[serde(borrow)]
    network: Option<ForwardedNetwork<'a>>,
    #[serde(borrow)]
    http: Option<ForwardedHttp<'a>>,
}

/// `readOnly` is a boolean in CloudTrail, a string in some exports.
#[derive(Deserialize)]
#[serde(untagged)]
enum ReadOnly {
    Bool(bool),
    Text(String),
}

impl ReadOnly {
    fn is_true(&self) -> bool {
        match self {
            ReadOnly::Bool(value) => *value,
            ReadOnly::Text(text) => text.eq_ignore_ascii_case("true"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentity<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arn: Option<Cow<'a, str>>,
    #[serde(borrow)]
    access_key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    principal_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    invoked_by: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_context: Option<SessionContext<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionContext<'a> {
    #[serde(borrow)]
    session_issuer: Option<SessionIssuer<'a>>,
}

#[derive(Deserialize)]
struct SessionIssuer<'a> {
    #[serde(borrow)]
    arn: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ForwardedNetwork<'a> {
    #[serde(borrow)]
    client: Option<ForwardedClient<'a>>,
}

#[derive(Deserialize)]
struct ForwardedClient<'a> {
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ForwardedHttp<'a> {
    #[serde(borrow)]
    useragent: Option<Cow<'a, str>>,
}

/// Request parameters that name the resource an event acted on, most
/// specific first. Only string values count.
const RESOURCE_KEYS: &[&str] = &[
    "secretId",
    "name",
    "bucketName",
    "roleName",
    "userName",
    "groupName",
    "policyArn",
    "functionName",
    "trailName",
    "detectorId",
    "snapshotId",
    "imageId",
    "instanceId",
    "keyId",
    "tableName",
    "repositoryName",
    "clusterName",
    "logGroupName",
    "stackName",
    "dBInstanceIdentifier",
    "topicArn",
    "queueUrl",
];

/// The resource named by `requestParameters`, read without building the
/// whole JSON tree.
#[derive(Default)]
struct ResourceHint(Option<(usize, String)>);

impl<'de> Deserialize<'de> for ResourceHint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HintVisitor)
    }
}

struct HintVisitor;

impl<'de> Visitor<'de> for HintVisitor {
    type Value = ResourceHint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request parameters")
    }

    fn visit_unit<E: de::Error>(self) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<ResourceHint, D::Error> {
        deserializer.deserialize_any(HintVisitor)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ResourceHint, E> {
        Ok(ResourceHint(None))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ResourceHint, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ResourceHint(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResourceHint, A::Error> {
        let mut best: Option<(usize, String)> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let rank = RESOURCE_KEYS.iter().position(|known| *known == key);
            match rank {
                Some(rank) if best.as_ref().is_none_or(|(held, _)| rank < *held) => {
                    if let StringOnly(Some(value)) = map.next_value::<StringOnly>()? {
                        best = Some((rank, value));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ResourceHint(best))
    }
}

/// A string value, or nothing for any other JSON value.
struct StringOnly(Option<String>);

impl<'de> Deserialize<'de> for StringOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringOnlyVisitor;
        impl<'de> Visitor<'de> for StringOnlyVisitor {
            type Value = StringOnly;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<StringOnly, E> {
                Ok(StringOnly(Some(value.to_owned())))
            }

            fn visit_unit<E: de::Error>(self) -> Result<StringOnly, E> {
                Ok(StringOnly(None))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<StringOnly, E> {
                Ok(StringOnly(None))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<StringOnly, E> {
                Ok(StringOnly(None))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<StringOnly, E> {
                Ok(StringOnly(None))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<StringOnly, E> {
                Ok(StringOnly(None))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StringOnly, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StringOnly(None))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOnly, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringOnly(None))
            }
        }
        deserializer.deserialize_any(StringOnlyVisitor)
    }
}

/// Reason a well-formed record cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record has no {0}")]
    Missing(&'static str),
    #[error("record has an eventTime that is not an RFC 3339 time: {0:?}")]
    BadTime(String),
}

/// Reads one CloudTrail record from its JSON text.
pub fn parse_record(json: &str) -> Result<Result<Event, RecordError>, serde_json::Error> {
    let record: Record<'_> = serde_json::from_str(json)?;
    Ok(to_event(record))
}

fn to_event(record: Record<'_>) -> Result<Event, RecordError> {
    let event_id = record
        .event_id
        .ok_or(RecordError::Missing("eventID"))?
        .into_owned();
    let time_text = record.event_time.ok_or(RecordError::Missing("eventTime"))?;
    let time = parse_event_time(&time_text)
        .ok_or_else(|| RecordError::BadTime(time_text.clone().into_owned()))?;
    let source = record
        .event_source
        .ok_or(RecordError::Missing("eventSource"))?;
    let name = record.event_name.ok_or(RecordError::Missing("eventName"))?;
    let service = source.strip_suffix(".amazonaws.com").unwrap_or(&source);
    // Events an AWS service raises on its own (`AwsServiceEvent`) may have
    // no caller; the service is their identity, as for `AWSService` callers.
    let service_event = record.event_type.as_deref() == Some("AwsServiceEvent");
    let (identity, session, credential) = match (&record.user_identity, service_event) {
        (Some(user), _) => {
            let account = user
                .account_id
                .as_deref()
                .or(record.recipient_account_id.as_deref());
            let (identity, session) = principal(user, account).ok_or(RecordError::Missing(
                "principal (userIdentity has no arn, principalId, userName or invokedBy)",
            ))?;
            (
                identity,
                session,
                user.access_key_id.clone().map(Cow::into_owned),
            )
        }
        (None, true) => (source.clone().into_owned(), None, None),
        (None, false) => return Err(RecordError::Missing("userIdentity")),
    };
    let operation = format!("{service}:{name}");
    let resource = match record.request_parameters.0 {
        Some((_, value)) => format!("{service}:{value}"),
        None => format!("{service}:*"),
    };
    let address = record.source_ip_address.or_else(|| {
        record
            .network
            .and_then(|network| network.client)
            .and_then(|client| client.ip)
    });
    let client_addr = address
        .and_then(|text| text.parse::<IpAddr>().ok())
        .map_or(Event::NO_NETWORK, |addr| addr.to_canonical());
    let user_agent = record
        .user_agent
        .or_else(|| record.http.and_then(|http| http.useragent))
        .map(Cow::into_owned);
    let read_only = record
        .read_only
        .map(|flag| flag.is_true())
        .unwrap_or_else(|| looks_read_only(&name));
    Ok(Event {
        event_id,
        time,
        identity,
        session,
        client_addr,
        action: action_of(read_only, &name),
        operation,
        resource,
        user_agent,
        credential,
        error: record.error_code.map(|code| classify_error(&code)),
        bytes: 0,
        rows: 0,
    })
}

/// Parses `eventTime`: RFC 3339, or a date and time without an offset as
/// log pipelines write it (`2025-01-21 17:49:47.000000000`), which is UTC
/// because CloudTrail times are.
fn parse_event_time(text: &str) -> Option<Timestamp> {
    Timestamp::parse_rfc3339(text).or_else(|| {
        let has_offset = text.len() > 19
            && text[19..]
                .bytes()
                .any(|b| matches!(b, b'Z' | b'z' | b'+' | b'-'));
        if has_offset || !text.is_ascii() {
            return None;
        }
        Timestamp::parse_rfc3339(&format!("{text}Z"))
    })
}

/// Returns the identity and, for assumed roles, the session name.
fn principal(user: &UserIdentity<'_>, account: Option<&str>) -> Option<(String, Option<String>)> {
    let kind = user.kind.as_deref().unwrap_or("");
    if kind == "AssumedRole" || kind == "FederatedUser" {
        let session = user
            .arn
            .as_deref()
            .and_then(|arn| arn.rsplit_once('/'))
            .map(|(_, session)| session.to_owned());
        let issuer = user
            .session_context
            .as_ref()
            .and_then(|context| context.session_issuer.as_ref())
            .and_then(|issuer| issuer.arn.as_deref())
            .map(str::to_owned)
            .or_else(|| user.arn.as_deref().and_then(role_of_session));
        if let Some(issuer) = issuer {
            return Some((issuer, session));
        }
    }
    if kind == "AWSService" {
        return user.invoked_by.as_deref().map(|by| (by.to_owned(), None));
    }
    if let Some(arn) = &user.arn {
        return Some((arn.clone().into_owned(), None));
    }
    if let Some(principal) = &user.principal_id {
        return Some((principal.clone().into_owned(), None));
    }
    match (account, &user.user_name) {
        (Some(account), Some(name)) => Some((format!("{account}:{name}"), None)),
        (None, Some(name)) => Some((name.clone().into_owned(), None)),
        _ => user.invoked_by.as_deref().map(|by| (by.to_owned(), None)),
    }
}

/// `arn:aws:iam::ACCOUNT:role/ROLE` from
/// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
fn role_of_session(arn: &str) -> Option<String> {
    let (prefix, rest) = arn.split_once(":assumed-role/")?;
    let (role, _) = rest.rsplit_once('/')?;
    let prefix = prefix.replacen(":sts:", ":iam:", 1);
    Some(format!("{prefix}:role/{role}"))
}

fn looks_read_only(name: &str) -> bool {
    [
        "Get", "List", "Describe", "Head", "Lookup", "Search", "Scan", "Query", "BatchGet",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

fn action_of(read_only: bool, name: &str) -> Action {
    if read_only {
        Action::Read
    } else if [
        "Delete",
        "Remove",
        "Terminate",
        "Detach",
        "Revoke",
        "Stop",
        "Disable",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
    {
        Action::Delete
    } else {
        Action::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventError;

    fn event(json: &str) -> Event {
        parse_record(json).unwrap().unwrap()
    }

    #[test]
    fn assumed_role_identity_and_session() {
        let record = r#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole",
            "principalId":"AROA:gh-actions-1","arn":"arn:aws:sts::111122223333:assumed-role/deployer/gh-actions-1",
            "accountId":"111122223333","accessKeyId":"ASIAEXAMPLE",
            "sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/deployer","userName":"deployer"}}},
            "eventTime":"2024-03-01T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"PutObject",
            "awsRegion":"us-east-1","sourceIPAddress":"10.20.30.4","userAgent":"aws-cli/2.15.30",
            "requestParameters":{"bucketName":"artefacts","key":"a/b.zip","nested":{"name":{"x":1}}},
            "responseElements":null,"eventID":"e-1","readOnly":false}"#;
        let event = event(record);
        assert_eq!(event.identity, "arn:aws:iam::111122223333:role/deployer");
        assert_eq!(event.session.as_deref(), Some("gh-actions-1"));
        assert_eq!(event.operation, "s3:PutObject");
        assert_eq!(event.resource, "s3:artefacts");
        assert_eq!(event.action, Action::Write);
        assert_eq!(event.client_addr.to_string(), "10.20.30.4");
        assert_eq!(event.credential.as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(event.time, Timestamp::from_secs(1_709_287_200));
    }

    #[test]
    fn role_from_session_arn() {
        let record = r#"{"userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::1:assumed-role/r/s"},
            "eventTime":"2024-03-01T10:00:00Z","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","eventID":"e"}"#;
        let event = event(record);
        assert_eq!(event.identity, "arn:aws:iam::1:role/r");
        assert_eq!(event.action, Action::Read);
    }

    #[test]
    fn service_source_and_error_code() {
        let record = r#"{"userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/svc","accessKeyId":"AKIA1"},
            "eventTime":"2024-03-01T10:00:00Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers",
            "sourceIPAddress":"cloudformation.amazonaws.com","errorCode":"AccessDenied","eventID":"e"}"#;
        let event = event(record);
        assert_eq!(event.client_addr, Event::NO_NETWORK);
        assert_eq!(event.error, Some(EventError::Authorization));
        assert_eq!(event.resource, "iam:*");
    }

    #[test]
    fn forwarded_layout_and_lower_case_keys_are_read() {
        let record = r#"{"userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/u"},
            "eventtime":"2024-03-01T10:00:00Z","eventsource":"cloudtrail.amazonaws.com","eventname":"DeleteTrail",
            "network":{"client":{"ip":"62.167.105.104"}},"http":{"useragent":"stratus"},"eventid":"e"}"#;
        let event = event(record);
        assert_eq!(event.operation, "cloudtrail:DeleteTrail");
        assert_eq!(event.client_addr.to_string(), "62.167.105.104");
        assert_eq!(event.user_agent.as_deref(), Some("stratus"));
        assert_eq!(event.action, Action::Delete);
    }

    #[test]
    fn user_name_and_service_events_name_an_identity() {
        let by_name = r#"{"userIdentity":{"type":"IAMUser","userName":"admin"},"recipientAccountId":"123",
            "eventTime":"2024-01-15T10:30:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","eventID":"e"}"#;
        assert_eq!(event(by_name).identity, "123:admin");
        let service = r#"{"eventType":"AwsServiceEvent","eventTime":"2024-01-15T10:30:00Z",
            "eventSource":"kms.amazonaws.com","eventName":"RotateKey","eventID":"e"}"#;
        let service = event(service);
        assert_eq!(service.identity, "kms.amazonaws.com");
        assert_eq!(service.client_addr, Event::NO_NETWORK);
    }

    #[test]
    fn event_time_without_offset_is_utc() {
        assert_eq!(
            parse_event_time("2025-01-21 17:49:47.000000000"),
            Timestamp::parse_rfc3339("2025-01-21T17:49:47Z")
        );
        assert_eq!(
            parse_event_time("2022-11-21 18:06:52"),
            Timestamp::parse_rfc3339("2022-11-21T18:06:52Z")
        );
        assert_eq!(parse_event_time("2022-11-21 18:06:52+0200"), None);
        assert_eq!(parse_event_time("2022-11-21"), None);
        assert_eq!(parse_event_time("21/11/2022 18:06:52"), None);
    }

    #[test]
    fn incomplete_records_name_what_is_missing() {
        let no_time = r#"{"userIdentity":{"arn":"a"},"eventSource":"s3.amazonaws.com","eventName":"X","eventID":"e"}"#;
        assert_eq!(
            parse_record(no_time).unwrap().unwrap_err(),
            RecordError::Missing("eventTime")
        );
        let bad_time = r#"{"userIdentity":{"arn":"a"},"eventTime":"yesterday","eventSource":"s","eventName":"X","eventID":"e"}"#;
        assert_eq!(
            parse_record(bad_time).unwrap().unwrap_err().to_string(),
            "record has an eventTime that is not an RFC 3339 time: \"yesterday\""
        );
        let no_principal = r#"{"userIdentity":{"type":"Unknown"},"eventTime":"2024-03-01T10:00:00Z","eventSource":"s","eventName":"X","eventID":"e"}"#;
        assert!(parse_record(no_principal).unwrap().is_err());
        let no_identity = r#"{"eventTime":"2024-03-01T10:00:00Z","eventSource":"s","eventName":"X","eventID":"e"}"#;
        assert_eq!(
            parse_record(no_identity).unwrap().unwrap_err(),
            RecordError::Missing("userIdentity")
        );
        assert!(parse_record("{\"eventID\": 5}").is_err());
    }
}
