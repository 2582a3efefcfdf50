//! PostgreSQL-style command tags for top-level statements.

use pg_query::protobuf::{ObjectType, TransactionStmtKind, VariableSetKind};
use serde_json::{Map, Value};

/// Returns the command tag PostgreSQL would report for a statement node, in
/// the style of its `CommandTag` names (`SELECT`, `CREATE TABLE`,
/// `DROP INDEX`). Statement types without an entry here get their node name
/// in capitals with `Stmt` removed, such as `CREATE TS CONFIG`.
pub(crate) fn command_tag(node_type: &str, fields: &Map<String, Value>) -> String {
    let fixed = match node_type {
        "SelectStmt" => {
            if fields
                .get("into_clause")
                .is_some_and(|into| !into.is_null())
            {
                "SELECT INTO"
            } else {
                "SELECT"
            }
        }
        "InsertStmt" => "INSERT",
        "UpdateStmt" => "UPDATE",
        "DeleteStmt" => "DELETE",
        "MergeStmt" => "MERGE",
        "TruncateStmt" => "TRUNCATE TABLE",
        "CopyStmt" => "COPY",
        "ExplainStmt" => "EXPLAIN",
        "PrepareStmt" => "PREPARE",
        "ExecuteStmt" => "EXECUTE",
        "DeallocateStmt" => "DEALLOCATE",
        "DeclareCursorStmt" => "DECLARE CURSOR",
        "FetchStmt" => {
            if fields.get("ismove").and_then(Value::as_bool) == Some(true) {
                "MOVE"
            } else {
                "FETCH"
            }
        }
        "ClosePortalStmt" => "CLOSE CURSOR",
        "DoStmt" => "DO",
        "CallStmt" => "CALL",
        "TransactionStmt" => return transaction_tag(fields).to_owned(),
        "VariableSetStmt" => {
            if int(fields, "kind") >= VariableSetKind::VarReset as i64 {
                "RESET"
            } else {
                "SET"
            }
        }
        "VariableShowStmt" => "SHOW",
        "DiscardStmt" => "DISCARD",
        "ListenStmt" => "LISTEN",
        "UnlistenStmt" => "UNLISTEN",
        "NotifyStmt" => "NOTIFY",
        "LockStmt" => "LOCK TABLE",
        "CheckPointStmt" => "CHECKPOINT",
        "VacuumStmt" => {
            if fields.get("is_vacuumcmd").and_then(Value::as_bool) == Some(false) {
                "ANALYZE"
            } else {
                "VACUUM"
            }
        }
        "ClusterStmt" => "CLUSTER",
        "ReindexStmt" => "REINDEX",
        "LoadStmt" => "LOAD",
        "GrantStmt" => {
            if fields.get("is_grant").and_then(Value::as_bool) == Some(true) {
                "GRANT"
            } else {
                "REVOKE"
            }
        }
        "GrantRoleStmt" => {
            if fields.get("is_grant").and_then(Value::as_bool) == Some(true) {
                "GRANT ROLE"
            } else {
                "REVOKE ROLE"
            }
        }
        "AlterDefaultPrivilegesStmt" => "ALTER DEFAULT PRIVILEGES",
        "CreateRoleStmt" => "CREATE ROLE",
        "AlterRoleStmt" | "AlterRoleSetStmt" => "ALTER ROLE",
        "DropRoleStmt" => "DROP ROLE",
        "AlterSystemStmt" => "ALTER SYSTEM",
        "CreateStmt" => "CREATE TABLE",
        "CreateTableAsStmt" => {
            if int(fields, "objtype") == ObjectType::ObjectMatview as i64 {
                "CREATE MATERIALIZED VIEW"
            } else {
                "CREATE TABLE AS"
            }
        }
        "RefreshMatViewStmt" => "REFRESH MATERIALIZED VIEW",
        "ViewStmt" => "CREATE VIEW",
        "IndexStmt" => "CREATE INDEX",
        "CreateSchemaStmt" => "CREATE SCHEMA",
        "CreateSeqStmt" => "CREATE SEQUENCE",
        "AlterSeqStmt" => "ALTER SEQUENCE",
        "CreateFunctionStmt" => {
            if fields.get("is_procedure").and_then(Value::as_bool) == Some(true) {
                "CREATE PROCEDURE"
            } else {
                "CREATE FUNCTION"
            }
        }
        "RuleStmt" => "CREATE RULE",
        "CreateTrigStmt" => "CREATE TRIGGER",
        "CreateExtensionStmt" => "CREATE EXTENSION",
        "AlterExtensionStmt" | "AlterExtensionContentsStmt" => "ALTER EXTENSION",
        "CreateForeignServerStmt" => "CREATE SERVER",
        "CreateUserMappingStmt" => "CREATE USER MAPPING",
        "AlterUserMappingStmt" => "ALTER USER MAPPING",
        "DropUserMappingStmt" => "DROP USER MAPPING",
        "CreatedbStmt" => "CREATE DATABASE",
        "DropdbStmt" => "DROP DATABASE",
        "AlterDatabaseStmt" | "AlterDatabaseSetStmt" => "ALTER DATABASE",
        "CreatePolicyStmt" => "CREATE POLICY",
        "AlterPolicyStmt" => "ALTER POLICY",
        "CommentStmt" => "COMMENT",
        "SecLabelStmt" => "SECURITY LABEL",
        "ReassignOwnedStmt" => "REASSIGN OWNED",
        "DropOwnedStmt" => "DROP OWNED",
        "DropStmt" => return format!("DROP {}", object_name(int(fields, "remove_type"))),
        "AlterTableStmt" => return format!("ALTER {}", object_name(int(fields, "objtype"))),
        "RenameStmt" => return format!("ALTER {}", object_name(int(fields, "rename_type"))),
        "AlterOwnerStmt" | "AlterObjectSchemaStmt" => {
            return format!("ALTER {}", object_name(int(fields, "object_type")));
        }
        _ => return tag_from_node_name(node_type),
    };
    fixed.to_owned()
}

fn transaction_tag(fields: &Map<String, Value>) -> &'static str {
    let kind = i32::try_from(int(fields, "kind"))
        .ok()
        .and_then(|kind| TransactionStmtKind::try_from(kind).ok());
    match kind {
        Some(TransactionStmtKind::TransStmtBegin) => "BEGIN",
        Some(TransactionStmtKind::TransStmtStart) => "START TRANSACTION",
        Some(TransactionStmtKind::TransStmtCommit) => "COMMIT",
        Some(TransactionStmtKind::TransStmtRollback)
        | Some(TransactionStmtKind::TransStmtRollbackTo) => "ROLLBACK",
        Some(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
        Some(TransactionStmtKind::TransStmtRelease) => "RELEASE",
        Some(TransactionStmtKind::TransStmtPrepare) => "PREPARE TRANSACTION",
        Some(TransactionStmtKind::TransStmtCommitPrepared) => "COMMIT PREPARED",
        Some(TransactionStmtKind::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
        _ => "TRANSACTION",
    }
}

/// Returns an object type's name as a command tag writes it (`TABLE`,
/// `MATERIALIZED VIEW`, `FOREIGN TABLE`).
fn object_name(value: i64) -> String {
    let kind = i32::try_from(value)
        .ok()
        .and_then(|kind| ObjectType::try_from(kind).ok());
    match kind {
        Some(ObjectType::ObjectMatview) => "MATERIALIZED VIEW".to_owned(),
        Some(ObjectType::ObjectForeignTable) => "FOREIGN TABLE".to_owned(),
        Some(ObjectType::ObjectForeignServer) => "SERVER".to_owned(),
        Some(ObjectType::ObjectFdw) => "FOREIGN DATA WRAPPER".to_owned(),
        Some(ObjectType::ObjectTabconstraint) => "TABLE".to_owned(),
        Some(ObjectType::ObjectStatisticExt) => "STATISTICS".to_owned(),
        Some(ObjectType::ObjectTsconfiguration) => "TEXT SEARCH CONFIGURATION".to_owned(),
        Some(ObjectType::ObjectTsdictionary) => "TEXT SEARCH DICTIONARY".to_owned(),
        Some(kind) => kind
            .as_str_name()
            .trim_start_matches("OBJECT_")
            .replace('_', " "),
        None => "OBJECT".to_owned(),
    }
}

/// Turns `CreateEventTrigStmt` into `CREATE EVENT TRIG`.
fn tag_from_node_name(node_type: &str) -> String {
    let base = node_type.strip_suffix("Stmt").unwrap_or(node_type);
    let mut tag = String::new();
    for (index, c) in base.char_indices() {
        if c.is_ascii_uppercase() && index > 0 {
            tag.push(' ');
        }
        tag.push(c.to_ascii_uppercase());
    }
    tag
}

fn int(map: &Map<String, Value>, key: &str) -> i64 {
    map.get(key).and_then(Value::as_i64).unwrap_or(0)
}
