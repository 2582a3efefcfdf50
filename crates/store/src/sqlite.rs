use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use stepgate_audit::{Chain, Entry, Sealed};
use stepgate_core::{Identity, IdentityName, Timestamp, TokenHash, TokenId};
use stepgate_risk::Baseline;

mod approvals;

use crate::{
    AcceptedSignal, CertificateBindingRecord, DpopKeyRecord, SignatureKeyRecord, Snapshot, Store,
    StoreError, TokenRecord, TotpRecord,
};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the
/// ones applied. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE identities (
    name TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    identity TEXT NOT NULL REFERENCES identities(name),
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE totp_factors (
    identity TEXT PRIMARY KEY REFERENCES identities(name),
    secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    last_step INTEGER,
    locked_until INTEGER,
    created_at INTEGER NOT NULL
);
CREATE TABLE baselines (
    identity TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    hash TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE accepted_signals (
    identity TEXT NOT NULL REFERENCES identities(name),
    signal TEXT NOT NULL,
    value TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (identity, signal, value)
);
"#,
    r#"
CREATE TABLE dpop_keys (
    identity TEXT PRIMARY KEY REFERENCES identities(name),
    thumbprint TEXT NOT NULL,
    jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE dpop_keys ADD COLUMN required INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE dpop_keys ADD COLUMN not_before INTEGER;
ALTER TABLE dpop_keys ADD COLUMN not_after INTEGER;
"#,
    r#"
CREATE TABLE signature_keys (
    identity TEXT NOT NULL REFERENCES identities(name),
    key_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    not_before INTEGER,
    not_after INTEGER,
    PRIMARY KEY (identity, key_id)
);
CREATE TABLE certificate_bindings (
    identity TEXT NOT NULL REFERENCES identities(name),
    rule TEXT NOT NULL,
    value TEXT NOT NULL,
    required INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    not_before INTEGER,
    not_after INTEGER,
    PRIMARY KEY (identity, rule, value)
);
"#,
    r#"
INSERT INTO meta (key, value) VALUES ('approvals', 0);
CREATE TABLE approvers (
    name TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    last_step INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    created_at INTEGER NOT NULL
);
CREATE TABLE approver_groups (
    approver TEXT NOT NULL REFERENCES approvers(name),
    grp TEXT NOT NULL,
    PRIMARY KEY (approver, grp)
);
CREATE TABLE identity_owners (
    identity TEXT NOT NULL REFERENCES identities(name),
    approver TEXT NOT NULL REFERENCES approvers(name),
    PRIMARY KEY (identity, approver)
);
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    operation TEXT NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    target TEXT NOT NULL,
    body_sha256 TEXT,
    body_preview TEXT,
    body_bytes INTEGER NOT NULL,
    action TEXT NOT NULL,
    zone TEXT,
    client_addr TEXT NOT NULL,
    risk INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    policies TEXT NOT NULL,
    grp TEXT NOT NULL,
    quorum INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    valid_until INTEGER,
    decided_at INTEGER,
    used_at INTEGER,
    notified_at INTEGER
);
CREATE INDEX approvals_open ON approvals (state, expires_at);
CREATE INDEX approvals_operation ON approvals (identity, operation);
CREATE TABLE approval_votes (
    approval TEXT NOT NULL REFERENCES approvals(id),
    approver TEXT NOT NULL,
    approve INTEGER NOT NULL,
    comment TEXT NOT NULL,
    via TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (approval, approver)
);
"#,
    r#"
ALTER TABLE identities ADD COLUMN scram_salt BLOB;
ALTER TABLE tokens ADD COLUMN scram TEXT;
"#,
];

/// The SQLite store: one file, `stepgate.db`, in the data directory.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and applies
    /// pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("stepgate.db");
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_error)?;
        restrict_permissions(&path);
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_error)?;
        // WAL lets the CLI read while the gateway writes; FULL makes each
        // commit durable before it returns, which challenge and deny
        // records rely on.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        migrate(&mut conn).map_err(open_error)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Corrupt("store connection lock poisoned".into()))?;
        f(&mut conn)
    }

    /// Runs `change` and appends `audit` in one transaction, raising the
    /// revision so running gateways reload.
    fn admin_change(
        &self,
        audit: Entry,
        change: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            change(&tx)?;
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
                [],
            )?;
            append(&tx, vec![audit])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Like `admin_change`, for a change that may find nothing to do: when
    /// `change` returns false the transaction rolls back and neither the
    /// revision nor the audit trail moves.
    fn admin_change_if(
        &self,
        audit: Entry,
        change: impl FnOnce(&Transaction<'_>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !change(&tx)? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
                [],
            )?;
            append(&tx, vec![audit])?;
            tx.commit()?;
            Ok(true)
        })
    }
}

/// Makes the database readable by its owner only: it contains TOTP secrets.
/// SQLite gives the WAL and shared-memory files the same permissions.
#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %err, "cannot restrict the store's file permissions");
    }
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "store migrated");
    }
    Ok(())
}

fn append(tx: &Transaction<'_>, entries: Vec<Entry>) -> Result<Vec<Sealed>, StoreError> {
    let tail: Option<(u64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let mut chain = match tail {
        Some((seq, hash)) => Chain::after(seq, hash),
        None => Chain::default(),
    };
    let mut statement =
        tx.prepare_cached("INSERT INTO audit (seq, record, hash) VALUES (?1, ?2, ?3)")?;
    let mut sealed_all = Vec::with_capacity(entries.len());
    for entry in entries {
        let sealed = chain
            .seal(entry)
            .map_err(|err| StoreError::Corrupt(format!("cannot serialise audit record: {err}")))?;
        statement.execute(params![sealed.seq, sealed.canonical, sealed.hash])?;
        sealed_all.push(sealed);
    }
    Ok(sealed_all)
}

fn identity_exists(tx: &Transaction<'_>, name: &IdentityName) -> Result<bool, StoreError> {
    let found: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM identities WHERE name = ?1",
            [name.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

fn text_lossy(value: rusqlite::types::ValueRef<'_>) -> String {
    let bytes = value.as_bytes_or_null().ok().flatten().unwrap_or_default();
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_name(text: String) -> Result<IdentityName, StoreError> {
    IdentityName::new(&text).map_err(|err| StoreError::Corrupt(err.to_string()))
}

impl Store for SqliteStore {
    fn revision(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            let value: u64 =
                conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |row| {
                    row.get(0)
                })?;
            Ok(value)
        })
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let revision: u64 = tx.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |row| row.get(0))?;
            let mut identities = Vec::new();
            {
                let mut statement = tx.prepare("SELECT name, disabled, created_at FROM identities ORDER BY name")?;
                let rows = statement.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?, row.get::<_, i64>(2)?))
                })?;
                for row in rows {
                    let (name, disabled, created_at) = row?;
                    identities.push(Identity {
                        name: parse_name(name)?,
                        disabled,
                        created_at: Timestamp(created_at),
                    });
                }
            }
            let mut tokens = Vec::new();
            {
                let mut statement =
                    tx.prepare("SELECT id, identity, hash, created_at, revoked_at, scram FROM tokens ORDER BY created_at, id")?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                    ))
                })?;
                for row in rows {
                    let (id, identity, hash, created_at, revoked_at, scram) = row?;
                    let hash: [u8; 32] = hash
                        .try_into()
                        .map_err(|_| StoreError::Corrupt(format!("token {id} has a hash of the wrong length")))?;
                    tokens.push(TokenRecord {
                        id: TokenId::new(id),
                        identity: parse_name(identity)?,
                        hash: TokenHash::from_bytes(hash),
                        created_at: Timestamp(created_at),
                        revoked_at: revoked_at.map(Timestamp),
                        scram,
                    });
                }
            }
            let mut totp = Vec::new();
            {
                let mut statement = tx.prepare(
                    "SELECT identity, secret, algorithm, digits, period, last_step, locked_until, created_at FROM totp_factors",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, u64>(4)?,
                        row.get::<_, Option<u64>>(5)?,
                        row.get::<_, Option<i64>>(6)?,
                        row.get::<_, i64>(7)?,
                    ))
                })?;
                for row in rows {
                    let (identity, secret, algorithm, digits, period, last_step, locked_until, created_at) = row?;
                    let mut record =
                        TotpRecord::new(parse_name(identity)?, secret, algorithm, digits, period, Timestamp(created_at));
                    record.last_step = last_step;
                    record.locked_until = locked_until.map(Timestamp);
                    totp.push(record);
                }
            }
            let mut accepted = Vec::new();
            {
                let mut statement = tx.prepare(
                    "SELECT identity, signal, value, accepted_at FROM accepted_signals ORDER BY identity, signal, value",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })?;
                for row in rows {
                    let (identity, signal, value, accepted_at) = row?;
                    accepted.push(AcceptedSignal {
                        identity: parse_name(identity)?,
                        signal,
                        value,
                        accepted_at: Timestamp(accepted_at),
                    });
                }
            }
            let mut dpop = Vec::new();
            {
                let mut statement =
                    tx.prepare("SELECT identity, thumbprint, jwk, created_at, required, not_before, not_after FROM dpop_keys ORDER BY identity")?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, bool>(4)?,
                        row.get::<_, Option<i64>>(5)?,
                        row.get::<_, Option<i64>>(6)?,
                    ))
                })?;
                for row in rows {
                    let (identity, thumbprint, jwk, created_at, required, not_before, not_after) = row?;
                    dpop.push(DpopKeyRecord {
                        identity: parse_name(identity)?,
                        thumbprint,
                        jwk,
                        created_at: Timestamp(created_at),
                        required,
                        not_before: not_before.map(Timestamp),
                        not_after: not_after.map(Timestamp),
                    });
                }
            }
            let mut signature_keys = Vec::new();
            {
                let mut statement = tx.prepare(
                    "SELECT identity, key_id, algorithm, jwk, created_at, not_before, not_after \
                     FROM signature_keys ORDER BY identity, created_at, key_id",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, Option<i64>>(5)?,
                        row.get::<_, Option<i64>>(6)?,
                    ))
                })?;
                for row in rows {
                    let (identity, key_id, algorithm, jwk, created_at, not_before, not_after) =
                        row?;
                    signature_keys.push(SignatureKeyRecord {
                        identity: parse_name(identity)?,
                        key_id,
                        algorithm,
                        jwk,
                        created_at: Timestamp(created_at),
                        not_before: not_before.map(Timestamp),
                        not_after: not_after.map(Timestamp),
                    });
                }
            }
            let mut certificates = Vec::new();
            {
                let mut statement = tx.prepare(
                    "SELECT identity, rule, value, required, created_at, not_before, not_after \
                     FROM certificate_bindings ORDER BY identity, created_at, rule, value",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, Option<i64>>(5)?,
                        row.get::<_, Option<i64>>(6)?,
                    ))
                })?;
                for row in rows {
                    let (identity, rule, value, required, created_at, not_before, not_after) =
                        row?;
                    certificates.push(CertificateBindingRecord {
                        identity: parse_name(identity)?,
                        rule,
                        value,
                        required,
                        created_at: Timestamp(created_at),
                        not_before: not_before.map(Timestamp),
                        not_after: not_after.map(Timestamp),
                    });
                }
            }
            Ok(Snapshot {
                revision,
                identities,
                tokens,
                totp,
                accepted,
                dpop,
                signature_keys,
                certificates,
            })
        })
    }

    fn add_identity(&self, identity: &Identity, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if identity_exists(tx, &identity.name)? {
                return Err(StoreError::IdentityExists(identity.name.to_string()));
            }
            tx.execute(
                "INSERT INTO identities (name, disabled, created_at) VALUES (?1, ?2, ?3)",
                params![
                    identity.name.as_str(),
                    identity.disabled,
                    identity.created_at.0
                ],
            )?;
            Ok(())
        })
    }

    fn set_identity_disabled(
        &self,
        name: &IdentityName,
        disabled: bool,
        audit: Entry,
    ) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            let changed = tx.execute(
                "UPDATE identities SET disabled = ?2 WHERE name = ?1",
                params![name.as_str(), disabled],
            )?;
            if changed == 0 {
                return Err(StoreError::IdentityNotFound(name.to_string()));
            }
            Ok(())
        })
    }

    fn add_token(&self, token: &TokenRecord, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, &token.identity)? {
                return Err(StoreError::IdentityNotFound(token.identity.to_string()));
            }
            tx.execute(
                "INSERT INTO tokens (id, identity, hash, created_at, scram) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    token.id.as_str(),
                    token.identity.as_str(),
                    token.hash.as_bytes().as_slice(),
                    token.created_at.0,
                    token.scram
                ],
            )?;
            Ok(())
        })
    }

    fn identity_scram_salt(
        &self,
        identity: &IdentityName,
        candidate: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE identities SET scram_salt = ?2 WHERE name = ?1 AND scram_salt IS NULL",
                params![identity.as_str(), candidate],
            )?;
            let salt: Option<Option<Vec<u8>>> = tx
                .query_row(
                    "SELECT scram_salt FROM identities WHERE name = ?1",
                    [identity.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            tx.commit()?;
            match salt {
                Some(Some(salt)) => Ok(salt),
                Some(None) => Err(StoreError::Corrupt(format!(
                    "identity {identity} has no SCRAM salt after setting one"
                ))),
                None => Err(StoreError::IdentityNotFound(identity.to_string())),
            }
        })
    }

    fn revoke_token(&self, id: &TokenId, at: Timestamp, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            let changed = tx.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id.as_str(), at.0],
            )?;
            if changed == 0 {
                return Err(StoreError::TokenNotFound(id.to_string()));
            }
            Ok(())
        })
    }

    fn enroll_totp(&self, factor: &TotpRecord, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, &factor.identity)? {
                return Err(StoreError::IdentityNotFound(factor.identity.to_string()));
            }
            tx.execute(
                "INSERT OR REPLACE INTO totp_factors \
                 (identity, secret, algorithm, digits, period, last_step, locked_until, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6)",
                params![
                    factor.identity.as_str(),
                    factor.secret,
                    factor.algorithm,
                    factor.digits,
                    factor.period,
                    factor.created_at.0
                ],
            )?;
            Ok(())
        })
    }

    fn enroll_dpop(&self, key: &DpopKeyRecord, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, &key.identity)? {
                return Err(StoreError::IdentityNotFound(key.identity.to_string()));
            }
            tx.execute(
                "INSERT OR REPLACE INTO dpop_keys \
                 (identity, thumbprint, jwk, created_at, required, not_before, not_after) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.identity.as_str(),
                    key.thumbprint,
                    key.jwk,
                    key.created_at.0,
                    key.required,
                    key.not_before.map(|at| at.0),
                    key.not_after.map(|at| at.0)
                ],
            )?;
            Ok(())
        })
    }

    fn enroll_signature_key(
        &self,
        key: &SignatureKeyRecord,
        audit: Entry,
    ) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, &key.identity)? {
                return Err(StoreError::IdentityNotFound(key.identity.to_string()));
            }
            tx.execute(
                "INSERT OR REPLACE INTO signature_keys \
                 (identity, key_id, algorithm, jwk, created_at, not_before, not_after) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.identity.as_str(),
                    key.key_id,
                    key.algorithm,
                    key.jwk,
                    key.created_at.0,
                    key.not_before.map(|at| at.0),
                    key.not_after.map(|at| at.0)
                ],
            )?;
            Ok(())
        })
    }

    fn remove_signature_key(
        &self,
        identity: &IdentityName,
        key_id: &str,
        audit: Entry,
    ) -> Result<bool, StoreError> {
        self.admin_change_if(audit, |tx| {
            let removed = tx.execute(
                "DELETE FROM signature_keys WHERE identity = ?1 AND key_id = ?2",
                params![identity.as_str(), key_id],
            )?;
            Ok(removed > 0)
        })
    }

    fn bind_certificate(
        &self,
        binding: &CertificateBindingRecord,
        audit: Entry,
    ) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, &binding.identity)? {
                return Err(StoreError::IdentityNotFound(binding.identity.to_string()));
            }
            tx.execute(
                "INSERT OR REPLACE INTO certificate_bindings \
                 (identity, rule, value, required, created_at, not_before, not_after) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    binding.identity.as_str(),
                    binding.rule,
                    binding.value,
                    binding.required,
                    binding.created_at.0,
                    binding.not_before.map(|at| at.0),
                    binding.not_after.map(|at| at.0)
                ],
            )?;
            Ok(())
        })
    }

    fn unbind_certificate(
        &self,
        identity: &IdentityName,
        rule: &str,
        value: &str,
        audit: Entry,
    ) -> Result<bool, StoreError> {
        self.admin_change_if(audit, |tx| {
            let removed = tx.execute(
                "DELETE FROM certificate_bindings WHERE identity = ?1 AND rule = ?2 AND value = ?3",
                params![identity.as_str(), rule, value],
            )?;
            Ok(removed > 0)
        })
    }

    fn accept_signal(&self, accepted: &AcceptedSignal, audit: Entry) -> Result<(), StoreError> {
        self.admin_change(audit, |tx| {
            if !identity_exists(tx, &accepted.identity)? {
                return Err(StoreError::IdentityNotFound(accepted.identity.to_string()));
            }
            tx.execute(
                "INSERT OR REPLACE INTO accepted_signals (identity, signal, value, accepted_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    accepted.identity.as_str(),
                    accepted.signal,
                    accepted.value,
                    accepted.accepted_at.0
                ],
            )?;
            Ok(())
        })
    }

    fn revoke_acceptance(
        &self,
        identity: &IdentityName,
        signal: &str,
        value: &str,
        audit: Entry,
    ) -> Result<bool, StoreError> {
        let exists = self.with(|conn| {
            let count: i64 = conn.query_row(
                "SELECT COUNT(*) FROM accepted_signals WHERE identity = ?1 AND signal = ?2 AND value = ?3",
                params![identity.as_str(), signal, value],
                |row| row.get(0),
            )?;
            Ok(count > 0)
        })?;
        if !exists {
            return Ok(false);
        }
        self.admin_change(audit, |tx| {
            tx.execute(
                "DELETE FROM accepted_signals WHERE identity = ?1 AND signal = ?2 AND value = ?3",
                params![identity.as_str(), signal, value],
            )?;
            Ok(())
        })?;
        Ok(true)
    }

    fn advance_totp_step(&self, identity: &IdentityName, step: u64) -> Result<bool, StoreError> {
        self.with(|conn| {
            let changed = conn.execute(
                "UPDATE totp_factors SET last_step = ?2 \
                 WHERE identity = ?1 AND (last_step IS NULL OR last_step < ?2)",
                params![identity.as_str(), step],
            )?;
            Ok(changed == 1)
        })
    }

    fn set_totp_lock(
        &self,
        identity: &IdentityName,
        until: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE totp_factors SET locked_until = ?2 WHERE identity = ?1",
                params![identity.as_str(), until.map(|t| t.0)],
            )?;
            Ok(())
        })
    }

    fn load_baselines(&self) -> Result<Vec<(IdentityName, Baseline)>, StoreError> {
        self.with(|conn| {
            let mut statement = conn.prepare("SELECT identity, data FROM baselines")?;
            let rows = statement.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut baselines = Vec::new();
            for row in rows {
                let (identity, data) = row?;
                let baseline: Baseline = serde_json::from_str(&data)
                    .map_err(|err| StoreError::Corrupt(format!("baseline of {identity}: {err}")))?;
                baselines.push((parse_name(identity)?, baseline));
            }
            Ok(baselines)
        })
    }

    fn save_baselines(&self, baselines: &[(IdentityName, Baseline)]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut statement = tx.prepare_cached(
                    "INSERT OR REPLACE INTO baselines (identity, data) VALUES (?1, ?2)",
                )?;
                for (identity, baseline) in baselines {
                    let data = serde_json::to_string(baseline).map_err(|err| {
                        StoreError::Corrupt(format!("baseline of {identity}: {err}"))
                    })?;
                    statement.execute(params![identity.as_str(), data])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn append_audit(&self, entries: Vec<Entry>) -> Result<Vec<Sealed>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sealed = append(&tx, entries)?;
            tx.commit()?;
            Ok(sealed)
        })
    }

    fn scan_audit(&self, row: &mut dyn FnMut(u64, &str, &str) -> bool) -> Result<(), StoreError> {
        self.with(|conn| {
            let mut statement = conn.prepare("SELECT seq, record, hash FROM audit ORDER BY seq")?;
            let mut rows = statement.query([])?;
            while let Some(next) = rows.next()? {
                let seq: u64 = next.get(0)?;
                // Read as bytes so a record altered into invalid UTF-8 is
                // still reported by verification instead of failing the scan.
                let record = text_lossy(next.get_ref(1)?);
                let hash = text_lossy(next.get_ref(2)?);
                if !row(seq, &record, &hash) {
                    break;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
