//! The audit trail's records and their hash chain.
//!
//! Each record is serialised to canonical JSON (fields in declaration order,
//! no whitespace) and stores the SHA-256 of the previous record's canonical
//! bytes in `prev_hash`, so changing, removing or reordering any stored
//! record breaks the chain at that record. This crate seals and verifies;
//! storing the records is the store's job.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stepgate_core::{Signal, Timestamp};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as written to the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A request was forwarded.
    Allow,
    /// A request was answered with a step-up challenge.
    Challenge,
    /// A challenge was answered with a valid factor.
    StepUpSuccess,
    /// A challenge answer failed (wrong or replayed code, unknown challenge, locked factor).
    StepUpFailure,
    /// A request was denied by policy.
    Deny,
    /// A request failed authentication.
    AuthFailure,
    /// The gateway could not complete a request (upstream failure, internal error).
    Error,
    /// An administrative change, such as a new identity or token.
    Admin,
    /// A request was held for a person's approval.
    ApprovalRequest,
    /// An approver approved or denied a request, or was refused.
    ApprovalVote,
    /// An approval request expired undecided, or an approval expired unused.
    ApprovalExpire,
    /// A notification about an approval was sent, or failed.
    ApprovalNotify,
    /// An approver signed in, or failed to.
    ApproverSignIn,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Allow => "allow",
            Event::Challenge => "challenge",
            Event::StepUpSuccess => "step_up_success",
            Event::StepUpFailure => "step_up_failure",
            Event::Deny => "deny",
            Event::AuthFailure => "auth_failure",
            Event::Error => "error",
            Event::Admin => "admin",
            Event::ApprovalRequest => "approval_request",
            Event::ApprovalVote => "approval_vote",
            Event::ApprovalExpire => "approval_expire",
            Event::ApprovalNotify => "approval_notify",
            Event::ApproverSignIn => "approver_sign_in",
        }
    }
}

/// The content of one audit record, before it is sealed into the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339 UTC time of the event.
    pub time: String,
    pub event: Option<Event>,
    pub identity: Option<String>,
    pub token_id: Option<String>,
    /// TCP peer address; no header can change it.
    pub peer_addr: Option<String>,
    /// Client address after trusted proxies.
    pub client_addr: Option<String>,
    pub method: Option<String>,
    /// Normalised path with query values replaced by `REDACTED`.
    pub path: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub zone: Option<String>,
    /// `allow`, `step_up` or `deny` for decisions.
    pub decision: Option<String>,
    pub risk: Option<u8>,
    pub signals: Vec<Signal>,
    /// Ids of the policies that decided.
    pub policies: Vec<String>,
    pub factor: Option<String>,
    pub challenge_id: Option<String>,
    pub upstream_status: Option<u16>,
    pub duration_us: Option<u64>,
    /// Who made an administrative change (the OS user of the CLI).
    pub actor: Option<String>,
    /// Free text: the administrative change or the failure, never a secret.
    pub detail: Option<String>,
    // The fields below describe SQL statements. They are left out of the
    // canonical JSON when unset, so records written before they existed
    // serialise to the same bytes and their hashes still verify.
    /// Database role a SQL statement ran as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_role: Option<String>,
    /// Database a SQL statement ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Class of a SQL statement: `read`, `write`, `ddl`, `privilege`,
    /// `transaction`, `utility` or `function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_class: Option<String>,
    /// Fingerprint of a SQL statement: equal for statements that differ
    /// only in constants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Text of a SQL statement with its literals, only when the gateway is
    /// configured to keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Rows a SQL statement returned or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes of result rows a SQL statement returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// SQLSTATE of the error a SQL statement ended with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
}

impl Entry {
    pub fn new(event: Event, at: Timestamp) -> Self {
        Self {
            time: at.to_rfc3339(),
            event: Some(event),
            ..Self::default()
        }
    }
}

/// A sealed record as stored: its position, canonical JSON and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub prev_hash: String,
    #[serde(flatten)]
    pub entry: Entry,
}

/// A record with its canonical bytes and their SHA-256, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub canonical: String,
    pub hash: String,
}

/// The end of the chain: the next sequence number and the last hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub next_seq: u64,
    pub prev_hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl Chain {
    /// Continues a chain whose last stored record has `seq` and `hash`.
    pub fn after(seq: u64, hash: String) -> Self {
        Self {
            next_seq: seq.saturating_add(1),
            prev_hash: hash,
        }
    }

    /// Appends `entry` to the chain and returns the record to store.
    pub fn seal(&mut self, entry: Entry) -> Result<Sealed, serde_json::Error> {
        let record = Record {
            seq: self.next_seq,
            prev_hash: self.prev_hash.clone(),
            entry,
        };
        let canonical = serde_json::to_string(&record)?;
        let hash = sha256_hex(canonical.as_bytes());
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev_hash.clone_from(&hash);
        Ok(Sealed {
            seq: record.seq,
            canonical,
            hash,
        })
    }
}

/// Why a stored chain does not verify, naming the first broken record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit record {seq}: stored bytes do not match the stored hash (record altered)")]
    HashMismatch { seq: u64 },
    #[error(
        "audit record {seq}: prev_hash does not match the hash of record {previous} (record altered, removed or reordered)"
    )]
    BrokenLink { seq: u64, previous: u64 },
    #[error("audit record {seq}: not valid canonical JSON ({reason})")]
    NotCanonical { seq: u64, reason: String },
    #[error("audit record {seq}: expected sequence number {expected} (record removed or inserted)")]
    Gap { seq: u64, expected: u64 },
}

/// What a successful verification saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub last_hash: String,
}

/// Verifies stored rows `(seq, canonical, hash)` in sequence order.
pub fn verify<'a>(
    rows: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
) -> Result<Verified, ChainError> {
    let mut chain = Chain::default();
    let mut count = 0;
    for (seq, canonical, hash) in rows {
        if seq != chain.next_seq {
            return Err(ChainError::Gap {
                seq,
                expected: chain.next_seq,
            });
        }
        let record: Record =
            serde_json::from_str(canonical).map_err(|err| ChainError::NotCanonical {
                seq,
                reason: err.to_string(),
            })?;
        let reserialised =
            serde_json::to_string(&record).map_err(|err| ChainError::NotCanonical {
                seq,
                reason: err.to_string(),
            })?;
        if sha256_hex(canonical.as_bytes()) != hash || reserialised != canonical {
            return Err(ChainError::HashMismatch { seq });
        }
        if record.seq != seq {
            return Err(ChainError::Gap {
                seq,
                expected: record.seq,
            });
        }
        if record.prev_hash != chain.prev_hash {
            return Err(ChainError::BrokenLink {
                seq,
                previous: seq.saturating_sub(1),
            });
        }
        chain = Chain::after(seq, hash.to_owned());
        count += 1;
    }
    Ok(Verified {
        records: count,
        last_hash: chain.prev_hash,
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
