//! [`ApprovalStore`] on SQLite.

use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior, params};
use stepgate_audit::Entry;
use stepgate_core::{IdentityName, Timestamp};

use super::{SqliteStore, append, identity_exists, parse_name};
use crate::StoreError;
use crate::approval::{
    ApprovalRecord, ApprovalState, ApprovalStore, ApproverRecord, Vote, VoteError,
};

const APPROVAL_COLUMNS: &str = "id, identity, operation, method, target, body_sha256, body_bytes, \
     action, zone, client_addr, risk, reasons, policies, grp, quorum, state, created_at, \
     expires_at, valid_until, decided_at, used_at, host, body_preview, notified_at";

/// Reads a text column that must parse, reporting a value that does not as
/// a conversion failure of that column.
fn parsed<T, E: std::error::Error + Send + Sync + 'static>(
    row: &Row<'_>,
    index: usize,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let state: String = row.get(15)?;
    Ok(ApprovalRecord {
        id: row.get(0)?,
        identity: parsed(row, 1, IdentityName::new)?,
        operation: row.get(2)?,
        method: row.get(3)?,
        target: row.get(4)?,
        body_sha256: row.get(5)?,
        body_bytes: row.get(6)?,
        action: row.get(7)?,
        zone: row.get(8)?,
        client_addr: row.get(9)?,
        risk: row.get(10)?,
        reasons: parsed(row, 11, |text| serde_json::from_str::<Vec<String>>(text))?,
        policies: parsed(row, 12, |text| serde_json::from_str::<Vec<String>>(text))?,
        group: row.get(13)?,
        quorum: row.get(14)?,
        // An unknown state can decide nothing, so it reads as expired.
        state: ApprovalState::parse(&state).unwrap_or(ApprovalState::Expired),
        created_at: Timestamp(row.get(16)?),
        expires_at: Timestamp(row.get(17)?),
        valid_until: row.get::<_, Option<i64>>(18)?.map(Timestamp),
        decided_at: row.get::<_, Option<i64>>(19)?.map(Timestamp),
        used_at: row.get::<_, Option<i64>>(20)?.map(Timestamp),
        host: row.get(21)?,
        body_preview: row.get(22)?,
        notified_at: row.get::<_, Option<i64>>(23)?.map(Timestamp),
        votes: Vec::new(),
    })
}

/// Adds the votes of an approval read by [`approval_from_row`].
fn finish_record(
    tx: &Transaction<'_>,
    mut record: ApprovalRecord,
) -> Result<ApprovalRecord, StoreError> {
    let mut statement = tx.prepare_cached(
        "SELECT approver, approve, comment, via, at FROM approval_votes \
         WHERE approval = ?1 ORDER BY at, approver",
    )?;
    let rows = statement.query_map([&record.id], |row| {
        Ok(Vote {
            approver: parsed(row, 0, IdentityName::new)?,
            approve: row.get(1)?,
            comment: row.get(2)?,
            via: row.get(3)?,
            at: Timestamp(row.get(4)?),
        })
    })?;
    for vote in rows {
        record.votes.push(vote?);
    }
    Ok(record)
}

fn load_approval(tx: &Transaction<'_>, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
    let row = tx
        .query_row(
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            approval_from_row,
        )
        .optional()?;
    row.map(|row| finish_record(tx, row)).transpose()
}

fn load_approvals(
    tx: &Transaction<'_>,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ApprovalRecord>, StoreError> {
    let rows = {
        let mut statement = tx.prepare(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals {filter}"
        ))?;
        statement
            .query_map(args, approval_from_row)?
            .collect::<Result<Vec<_>, _>>()?
    };
    rows.into_iter().map(|row| finish_record(tx, row)).collect()
}

fn approver_exists(tx: &Transaction<'_>, name: &IdentityName) -> Result<bool, StoreError> {
    let found: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM approvers WHERE name = ?1",
            [name.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

fn load_approvers(
    tx: &Transaction<'_>,
    name: Option<&IdentityName>,
) -> Result<Vec<ApproverRecord>, StoreError> {
    let mut statement = tx.prepare(
        "SELECT name, secret, algorithm, digits, period, last_step, created_at, failures, \
         locked_until FROM approvers \
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = statement
        .query_map([name.map(IdentityName::as_str)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u32>(3)?,
                row.get::<_, u64>(4)?,
                row.get::<_, Option<u64>>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, u32>(7)?,
                row.get::<_, Option<i64>>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups_of =
        tx.prepare_cached("SELECT grp FROM approver_groups WHERE approver = ?1 ORDER BY grp")?;
    let mut approvers = Vec::with_capacity(rows.len());
    for (name, secret, algorithm, digits, period, last_step, created_at, failures, locked_until) in
        rows
    {
        let groups = groups_of
            .query_map([&name], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut record = ApproverRecord::new(
            parse_name(name)?,
            secret,
            algorithm,
            digits,
            period,
            groups,
            Timestamp(created_at),
        );
        record.last_step = last_step;
        record.failures = failures;
        record.locked_until = locked_until.map(Timestamp);
        approvers.push(record);
    }
    Ok(approvers)
}

impl SqliteStore {
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            f(&tx)
        })
    }

    /// Runs `change` and appends the audit records it returns in one
    /// immediate transaction, without raising the credentials' revision.
    fn approval_change<T, E: From<StoreError>>(
        &self,
        change: impl FnOnce(&Transaction<'_>) -> Result<(T, Vec<Entry>), E>,
    ) -> Result<T, E> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Corrupt("store connection lock poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let (value, entries) = change(&tx)?;
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'approvals'",
            [],
        )
        .map_err(StoreError::from)?;
        append(&tx, entries)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(value)
    }
}

impl ApprovalStore for SqliteStore {
    fn add_approver(&self, approver: &ApproverRecord, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if approver_exists(tx, &approver.name)? {
                return Err(StoreError::ApproverExists(approver.name.to_string()));
            }
            tx.execute(
                "INSERT INTO approvers (name, secret, algorithm, digits, period, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    approver.name.as_str(),
                    approver.danger_secret(),
                    approver.algorithm,
                    approver.digits,
                    approver.period,
                    approver.created_at.0
                ],
            )?;
            for group in &approver.groups {
                tx.execute(
                    "INSERT OR IGNORE INTO approver_groups (approver, grp) VALUES (?1, ?2)",
                    params![approver.name.as_str(), group],
                )?;
            }
            Ok(())
        })
    }

    fn remove_approver(&self, name: &IdentityName, audit: Entry) -> Result<bool, StoreError> {
        self.admin_change_if(audit, |tx| {
            tx.execute(
                "DELETE FROM approver_groups WHERE approver = ?1",
                [name.as_str()],
            )?;
            tx.execute(
                "DELETE FROM identity_owners WHERE approver = ?1",
                [name.as_str()],
            )?;
            Ok(tx.execute("DELETE FROM approvers WHERE name = ?1", [name.as_str()])? == 1)
        })
    }

    fn approver(&self, name: &IdentityName) -> Result<Option<ApproverRecord>, StoreError> {
        self.read(|tx| Ok(load_approvers(tx, Some(name))?.pop()))
    }

    fn approvers(&self) -> Result<Vec<ApproverRecord>, StoreError> {
        self.read(|tx| load_approvers(tx, None))
    }

    fn advance_approver_step(&self, name: &IdentityName, step: u64) -> Result<bool, StoreError> {
        self.with(|conn| {
            let changed = conn.execute(
                "UPDATE approvers SET last_step = ?2 \
                 WHERE name = ?1 AND (last_step IS NULL OR last_step < ?2)",
                params![name.as_str(), step],
            )?;
            Ok(changed == 1)
        })
    }

    fn record_approver_failure(
        &self,
        name: &IdentityName,
        now: Timestamp,
        max_failures: u32,
        lockout: std::time::Duration,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE approvers SET failures = failures + 1 WHERE name = ?1",
                [name.as_str()],
            )?;
            let failures: Option<u32> = tx
                .query_row(
                    "SELECT failures FROM approvers WHERE name = ?1",
                    [name.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            let mut locked = None;
            if failures.is_some_and(|failures| failures >= max_failures) {
                let until = now.saturating_add(lockout);
                tx.execute(
                    "UPDATE approvers SET failures = 0, locked_until = ?2 WHERE name = ?1",
                    params![name.as_str(), until.0],
                )?;
                locked = Some(until);
            }
            tx.commit()?;
            Ok(locked)
        })
    }

    fn clear_approver_failures(&self, name: &IdentityName) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE approvers SET failures = 0 WHERE name = ?1",
                [name.as_str()],
            )?;
            Ok(())
        })
    }

    fn mark_notified(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE approvals SET notified_at = COALESCE(notified_at, ?2) WHERE id = ?1",
                params![id, at.0],
            )?;
            Ok(())
        })
    }

    fn release_approval(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let changed = conn.execute(
                "UPDATE approvals SET state = 'approved', used_at = NULL \
                 WHERE id = ?1 AND state = 'used'",
                [id],
            )?;
            Ok(changed == 1)
        })
    }

    fn add_owner(
        &self,
        identity: &IdentityName,
        approver: &IdentityName,
        audit: Entry,
    ) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, identity)? {
                return Err(StoreError::IdentityNotFound(identity.to_string()));
            }
            if !approver_exists(tx, approver)? {
                return Err(StoreError::ApproverNotFound(approver.to_string()));
            }
            tx.execute(
                "INSERT OR IGNORE INTO identity_owners (identity, approver) VALUES (?1, ?2)",
                params![identity.as_str(), approver.as_str()],
            )?;
            Ok(())
        })
    }

    fn owners(&self, identity: &IdentityName) -> Result<Vec<IdentityName>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare(
                "SELECT approver FROM identity_owners WHERE identity = ?1 ORDER BY approver",
            )?;
            let names = statement
                .query_map([identity.as_str()], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            names.into_iter().map(parse_name).collect()
        })
    }

    fn create_approval(&self, approval: &ApprovalRecord, audit: Entry) -> Result<(), StoreError> {
        let reasons = serde_json::to_string(&approval.reasons)
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let policies = serde_json::to_string(&approval.policies)
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        self.approval_change(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                      ?17, ?18, NULL, NULL, NULL, ?19, ?20, NULL)"
                ),
                params![
                    approval.id,
                    approval.identity.as_str(),
                    approval.operation,
                    approval.method,
                    approval.target,
                    approval.body_sha256,
                    approval.body_bytes,
                    approval.action,
                    approval.zone,
                    approval.client_addr,
                    approval.risk,
                    reasons,
                    policies,
                    approval.group,
                    approval.quorum,
                    approval.state.as_str(),
                    approval.created_at.0,
                    approval.expires_at.0,
                    approval.host,
                    approval.body_preview,
                ],
            )?;
            Ok::<_, StoreError>(((), vec![audit]))
        })
    }

    fn pending_approval(
        &self,
        identity: &IdentityName,
        operation: &str,
        now: Timestamp,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        self.read(|tx| {
            Ok(load_approvals(
                tx,
                "WHERE identity = ?1 AND operation = ?2 AND state = 'pending' \
                 AND expires_at > ?3 ORDER BY created_at DESC LIMIT 1",
                &[&identity.as_str(), &operation, &now.0],
            )?
            .pop())
        })
    }

    fn pending_count(&self, identity: &IdentityName, now: Timestamp) -> Result<usize, StoreError> {
        self.with(|conn| {
            let count: i64 = conn.query_row(
                "SELECT COUNT(*) FROM approvals WHERE identity = ?1 AND state = 'pending' \
                 AND expires_at > ?2",
                params![identity.as_str(), now.0],
                |row| row.get(0),
            )?;
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        })
    }

    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.read(|tx| load_approval(tx, id))
    }

    fn approvals(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            load_approvals(
                tx,
                "WHERE (?1 = 0 OR state = 'pending') ORDER BY created_at DESC, id LIMIT ?2",
                &[&pending_only, &limit],
            )
        })
    }

    fn vote(
        &self,
        id: &str,
        vote: &Vote,
        valid_for: std::time::Duration,
        audit: Entry,
    ) -> Result<ApprovalRecord, VoteError> {
        self.approval_change(|tx| {
            let Some(approval) = load_approval(tx, id)? else {
                return Err(VoteError::NotFound(id.to_owned()));
            };
            if approval.state != ApprovalState::Pending || approval.expires_at <= vote.at {
                let state = if approval.state == ApprovalState::Pending {
                    ApprovalState::Expired
                } else {
                    approval.state
                };
                return Err(VoteError::Closed {
                    id: id.to_owned(),
                    state: state.as_str(),
                });
            }
            if approval
                .votes
                .iter()
                .any(|earlier| earlier.approver == vote.approver)
            {
                return Err(VoteError::AlreadyVoted {
                    id: id.to_owned(),
                    approver: vote.approver.to_string(),
                });
            }
            tx.execute(
                "INSERT INTO approval_votes (approval, approver, approve, comment, via, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    vote.approver.as_str(),
                    vote.approve,
                    vote.comment,
                    vote.via,
                    vote.at.0
                ],
            )
            .map_err(StoreError::from)?;
            let approvals = approval.approvals() + usize::from(vote.approve);
            if !vote.approve {
                tx.execute(
                    "UPDATE approvals SET state = 'denied', decided_at = ?2 WHERE id = ?1",
                    params![id, vote.at.0],
                )
                .map_err(StoreError::from)?;
            } else if approvals >= approval.quorum as usize {
                let valid_until = vote.at.saturating_add(valid_for);
                tx.execute(
                    "UPDATE approvals SET state = 'approved', decided_at = ?2, valid_until = ?3 \
                     WHERE id = ?1",
                    params![id, vote.at.0, valid_until.0],
                )
                .map_err(StoreError::from)?;
            }
            let after = load_approval(tx, id)?.ok_or_else(|| VoteError::NotFound(id.to_owned()))?;
            Ok((after, vec![audit]))
        })
    }

    fn approvals_revision(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            let value: u64 = conn.query_row(
                "SELECT value FROM meta WHERE key = 'approvals'",
                [],
                |row| row.get(0),
            )?;
            Ok(value)
        })
    }

    fn use_approval(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.with(|conn| {
            let changed = conn.execute(
                "UPDATE approvals SET state = 'used', used_at = ?2 \
                 WHERE id = ?1 AND state = 'approved' AND valid_until > ?2",
                params![id, now.0],
            )?;
            Ok(changed == 1)
        })
    }

    fn expire_approvals(
        &self,
        now: Timestamp,
        audit: &dyn Fn(&ApprovalRecord) -> Entry,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.approval_change(|tx| {
            let due = load_approvals(
                tx,
                "WHERE (state = 'pending' AND expires_at <= ?1) \
                 OR (state = 'approved' AND valid_until <= ?1) ORDER BY created_at, id",
                &[&now.0],
            )?;
            let mut entries = Vec::with_capacity(due.len());
            for approval in &due {
                tx.execute(
                    "UPDATE approvals SET state = 'expired' WHERE id = ?1",
                    [&approval.id],
                )?;
                entries.push(audit(approval));
            }
            Ok::<_, StoreError>((due, entries))
        })
    }

    fn recent_audit(
        &self,
        identity: &IdentityName,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            // Scans from the newest record backwards and stops at `limit`.
            // TODO: index records by identity when trails grow large.
            let mut statement = tx.prepare(
                "SELECT record FROM audit WHERE json_extract(record, '$.identity') = ?1 \
                 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![identity.as_str(), limit], |row| {
                    row.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}
