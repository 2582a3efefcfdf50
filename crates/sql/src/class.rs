//! The statement classes and their danger order.

use serde::Serialize;

/// The kind of effect a statement can have, ordered from least to most
/// dangerous so that `max` picks the most dangerous class of a tree.
///
/// The order is `transaction < utility < read < function < write < ddl <
/// privilege`:
/// - `transaction` only opens, closes or marks transactions.
/// - `utility` changes session state or runs maintenance, but returns or
///   changes no table rows.
/// - `read` returns table data, or planner estimates of it (`EXPLAIN`).
/// - `function` calls code whose side effects are unknown, so it may do
///   anything that code is allowed to do. It ranks below `write` because a
///   write is a certain change to data while a function call is a possible
///   one, and the statement's `functions` list still names every call.
/// - `write` changes rows.
/// - `ddl` changes the schema, which changes what later statements do.
/// - `privilege` changes who may do what, or runs code with more rights
///   than the client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, two-phase commit.
    Transaction,
    /// `SET`, `SHOW`, `VACUUM`, `LOCK`, `LISTEN`, `CLOSE` and similar.
    Utility,
    /// `SELECT`, `COPY ... TO`, `FETCH`, `EXPLAIN` without `ANALYZE`.
    Read,
    /// `DO`, `CALL` and calls of functions not known to be side-effect free.
    Function,
    /// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `TRUNCATE`, `COPY ... FROM`.
    Write,
    /// `CREATE`, `ALTER`, `DROP` of schema objects, `SELECT INTO`.
    Ddl,
    /// `GRANT`, `REVOKE`, role management, `SET ROLE`, ownership changes.
    Privilege,
}

impl Class {
    /// Every class, from least to most dangerous.
    pub const ALL: [Class; 7] = [
        Class::Transaction,
        Class::Utility,
        Class::Read,
        Class::Function,
        Class::Write,
        Class::Ddl,
        Class::Privilege,
    ];

    /// Returns the class's name as used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Transaction => "transaction",
            Class::Utility => "utility",
            Class::Read => "read",
            Class::Function => "function",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Privilege => "privilege",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
