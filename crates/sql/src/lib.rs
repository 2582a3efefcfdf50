//! Classifies PostgreSQL statements before they reach the database.
//!
//! [`classify`] parses SQL text with PostgreSQL's own parser (libpg_query,
//! through the `pg_query` crate) and returns one [`Statement`] per top-level
//! statement, in order. Each statement gets the most dangerous [`Class`]
//! found anywhere in its parse tree, the relations and functions it names,
//! PostgreSQL's command tag and pg_query's fingerprint.
//!
//! Rules beyond the obvious ones:
//! - Writable CTEs, subqueries in any clause and function calls in any
//!   expression all count: `WITH x AS (DELETE ...) SELECT ...` is `write`.
//! - `EXPLAIN` without `ANALYZE` is `read`, or `function` when the planned
//!   statement calls functions not known to be pure, because planning
//!   folds constant calls of functions marked immutable. `EXPLAIN ANALYZE`
//!   runs the statement and takes its class.
//! - `PREPARE` takes its statement's class. `EXECUTE` takes the class of the
//!   prepared statement, found earlier in the same input or through
//!   [`PreparedStatements`]; an unknown one is `write` (fail closed).
//! - `SELECT INTO` and `CREATE TABLE AS` create a table: `ddl`. `SELECT ...
//!   FOR UPDATE/SHARE` is `write`, because PostgreSQL requires UPDATE
//!   privilege for it and it writes row locks.
//! - `COPY ... FROM` is `write`, `COPY ... TO STDOUT` is `read` (or its
//!   query's class), `COPY ... TO 'file'` is `write` because it writes a file
//!   on the server, and `COPY ... PROGRAM` is `privilege` because it runs a
//!   shell command as the server's operating-system user.
//! - `DECLARE` is `read` (or its query's class); `FETCH` is `read`; `MOVE`
//!   and `CLOSE` are `utility`.
//! - `SET ROLE`, `SET SESSION AUTHORIZATION`, their `RESET`s, `DISCARD ALL`
//!   (which resets the session authorization), `set_config('role', ...)`,
//!   `ALTER ... OWNER TO`, row-level security and user mappings are
//!   `privilege`, as are `ALTER SYSTEM` and `LOAD`. So are changes of
//!   `search_path` (`SET`, `RESET`, `set_config`), because unqualified
//!   names are reported in `public` and a changed path would make them mean
//!   other tables.
//! - Statement types the classifier has no rule for are `privilege`.
//!
//! Limits: relations and functions are named as written, without
//! `search_path` lookup (unqualified relations are reported in `public`).
//! Operators and casts call functions too, which the classifier does not
//! see. A statement that nests deeper than pg_query's protobuf decoder
//! accepts (100 messages) is rejected with [`SqlError::TooDeep`].

mod catalogue;
mod class;
mod command;
pub mod facts;
pub mod gateway;
mod locate;
pub mod shape;
mod walk;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

pub use catalogue::{
    DEFAULT_PURE_FUNCTIONS, FunctionCatalogue, FunctionKind, SIDE_EFFECT_FUNCTIONS,
    SIDE_EFFECT_PREFIXES, is_side_effect,
};
pub use class::Class;

/// Default maximum size of the SQL text accepted by [`Classifier`]: 1 MiB.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 1024 * 1024;

/// One classified top-level statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// The most dangerous class found anywhere in the statement.
    pub class: Class,
    /// Relations the statement names, schema-qualified, sorted and without
    /// duplicates. Unqualified names get `public.` (or `pg_temp.` for a new
    /// temporary table); references to the statement's CTEs are left out.
    pub tables: Vec<String>,
    /// Functions the statement calls, sorted and without duplicates.
    /// Functions from the pure catalogue are reported as `pg_catalog.name`;
    /// other names are reported as written, because their schema depends on
    /// `search_path`.
    pub functions: Vec<String>,
    /// The subset of `functions` on the side-effect lists
    /// ([`SIDE_EFFECT_FUNCTIONS`], [`SIDE_EFFECT_PREFIXES`]).
    pub side_effect_functions: Vec<String>,
    /// PostgreSQL's command tag for the statement, such as `SELECT` or
    /// `CREATE TABLE`.
    pub command: String,
    /// pg_query's fingerprint of the statement: equal for statements that
    /// differ only in constants.
    pub fingerprint: String,
    /// For `PREPARE`, the name it defines: a session passes the statement's
    /// class back through [`PreparedStatements`] for later `EXECUTE`s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_name: Option<String>,
}

/// The location of a parse error, counted in the whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPosition {
    /// 1-based character position, as PostgreSQL reports error positions.
    pub position: usize,
    /// 1-based line number.
    pub line: usize,
    /// 1-based character column within the line.
    pub column: usize,
}

/// An error that stopped SQL text from being classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The text contains no statement, only whitespace, comments or `;`.
    #[error("SQL text contains no statement")]
    Empty,
    /// The text is longer than the classifier accepts.
    #[error("SQL text is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Size of the text in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The text contains a NUL character, which PostgreSQL never accepts in
    /// a query string.
    #[error("SQL text contains a NUL character at position {position}")]
    NulCharacter {
        /// 1-based character position of the first NUL.
        position: usize,
    },
    /// PostgreSQL's parser rejected a statement.
    #[error("statement {statement}: {message}{}", position_suffix(.position))]
    Parse {
        /// 1-based number of the statement that failed.
        statement: usize,
        /// The parser's message, such as `syntax error at or near "FROM"`.
        message: String,
        /// The location where the parser stopped, when it could be found.
        position: Option<ErrorPosition>,
    },
    /// A statement nests deeper than pg_query's protobuf decoding allows
    /// (100 nested messages, such as a sum of about 50 terms).
    #[error(
        "statement {statement} nests too deeply for the SQL parser's tree decoder; \
         split long expressions or nested subqueries"
    )]
    TooDeep {
        /// 1-based number of the statement, or 1 when it is unknown.
        statement: usize,
    },
    /// pg_query failed in an unexpected way.
    #[error("SQL parser failed: {0}")]
    Internal(String),
}

fn position_suffix(position: &Option<ErrorPosition>) -> String {
    match position {
        Some(at) => format!(
            " at position {} (line {}, column {})",
            at.position, at.line, at.column
        ),
        None => String::new(),
    }
}

/// Classes of the statements prepared in a session, for `EXECUTE`.
pub trait PreparedStatements {
    /// Returns the class of the prepared statement `name`, or `None` when
    /// the session has no statement of that name.
    fn class_of(&self, name: &str) -> Option<Class>;

    /// Returns the tables of the prepared statement `name`, which an
    /// `EXECUTE` of it touches. None by default.
    fn tables_of(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
}

/// A session without prepared statements: every `EXECUTE` of a name not
/// prepared in the same input is `write`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPreparedStatements;

impl PreparedStatements for NoPreparedStatements {
    fn class_of(&self, _name: &str) -> Option<Class> {
        None
    }
}

impl PreparedStatements for HashMap<String, Class> {
    fn class_of(&self, name: &str) -> Option<Class> {
        self.get(name).copied()
    }
}

impl PreparedStatements for BTreeMap<String, Class> {
    fn class_of(&self, name: &str) -> Option<Class> {
        self.get(name).copied()
    }
}

/// A statement classifier with its function catalogue and input limit.
#[derive(Debug, Clone)]
pub struct Classifier {
    catalogue: FunctionCatalogue,
    max_input_bytes: usize,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new(FunctionCatalogue::default())
    }
}

/// Classifies every statement of `sql` with the default catalogue and no
/// prepared statements. See [`Classifier::classify`].
pub fn classify(sql: &str) -> Result<Vec<Statement>, SqlError> {
    Classifier::default().classify(sql)
}

impl Classifier {
    /// Creates a classifier with `catalogue` and the default input limit.
    pub fn new(catalogue: FunctionCatalogue) -> Self {
        Self {
            catalogue,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
        }
    }

    /// Sets the maximum size of SQL text in bytes.
    pub fn with_max_input_bytes(mut self, max: usize) -> Self {
        self.max_input_bytes = max;
        self
    }

    /// Returns the function catalogue.
    pub fn catalogue(&self) -> &FunctionCatalogue {
        &self.catalogue
    }

    /// Parses `sql` and classifies each top-level statement, in order.
    /// `EXECUTE` of a name not prepared earlier in `sql` is `write`.
    pub fn classify(&self, sql: &str) -> Result<Vec<Statement>, SqlError> {
        self.classify_in_session(sql, &NoPreparedStatements)
    }

    /// Like [`Classifier::classify`], with the classes of the session's
    /// prepared statements for `EXECUTE`. Statements prepared or
    /// deallocated earlier in `sql` take precedence over `session`.
    pub fn classify_in_session(
        &self,
        sql: &str,
        session: &dyn PreparedStatements,
    ) -> Result<Vec<Statement>, SqlError> {
        if sql.len() > self.max_input_bytes {
            return Err(SqlError::TooLarge {
                size: sql.len(),
                max: self.max_input_bytes,
            });
        }
        if let Some(offset) = sql.find('\0') {
            return Err(SqlError::NulCharacter {
                position: char_position(sql, offset).position,
            });
        }
        let parsed = match locate::guarded(|| pg_query::parse(sql, 0)) {
            Some(Ok(parsed)) => parsed,
            Some(Err(pg_query::Error::Parse(message))) => return Err(parse_error(sql, message)),
            Some(Err(pg_query::Error::Decode(_))) => {
                return Err(SqlError::TooDeep {
                    statement: too_deep_statement(sql),
                });
            }
            Some(Err(other)) => return Err(SqlError::Internal(other.to_string())),
            None => return Err(SqlError::Internal("pg_query panicked".to_owned())),
        };
        if parsed.protobuf.stmts.is_empty() {
            return Err(SqlError::Empty);
        }

        let mut local_prepared = HashMap::new();
        let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
        for (index, raw) in parsed.protobuf.stmts.iter().enumerate() {
            let number = index + 1;
            let tree = serde_json::to_value(&raw.stmt)
                .map_err(|error| SqlError::Internal(error.to_string()))?;
            let walker = walk::Walker::new(&self.catalogue, session, &mut local_prepared);
            let findings = walker.walk(&tree);
            if findings.too_deep {
                return Err(SqlError::TooDeep { statement: number });
            }
            let text = statement_text(sql, raw.stmt_location, raw.stmt_len);
            statements.push(Statement {
                class: findings.class,
                tables: findings.tables,
                functions: findings.functions,
                side_effect_functions: findings.side_effect_functions,
                command: top_level_command(&tree),
                fingerprint: fingerprint(text)?,
                prepared_name: prepared_name(&tree),
            });
        }
        Ok(statements)
    }
}

fn parse_error(sql: &str, message: String) -> SqlError {
    let offset = locate::error_offset(sql, &message);
    let statement = offset.map_or(1, |offset| locate::statement_number(sql, offset));
    SqlError::Parse {
        statement,
        message,
        position: offset.map(|offset| char_position(sql, offset)),
    }
}

/// Finds the statement that pg_query cannot decode by splitting the text
/// with the parser and parsing each statement alone.
fn too_deep_statement(sql: &str) -> usize {
    let Some(Ok(parts)) = locate::guarded(|| pg_query::split_with_parser(sql)) else {
        return 1;
    };
    parts
        .iter()
        .position(|part| {
            matches!(
                locate::guarded(|| pg_query::parse(part, 0)),
                Some(Err(pg_query::Error::Decode(_)))
            )
        })
        .map_or(1, |index| index + 1)
}

fn char_position(text: &str, offset: usize) -> ErrorPosition {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    ErrorPosition {
        position: before.chars().count() + 1,
        line: before.matches('\n').count() + 1,
        column: before
            .get(line_start..)
            .map_or(0, |line| line.chars().count())
            + 1,
    }
}

/// Returns one statement's text; PostgreSQL gives a length of 0 for a
/// statement that runs to the end of the input.
fn statement_text(sql: &str, location: i32, length: i32) -> &str {
    let start = usize::try_from(location).unwrap_or(0);
    let length = usize::try_from(length).unwrap_or(0);
    let end = if length == 0 {
        sql.len()
    } else {
        start.saturating_add(length).min(sql.len())
    };
    sql.get(start..end).unwrap_or(sql)
}

fn fingerprint(text: &str) -> Result<String, SqlError> {
    match locate::guarded(|| pg_query::fingerprint(text, 0, 0)) {
        Some(Ok(fingerprint)) => Ok(fingerprint.hex),
        Some(Err(error)) => Err(SqlError::Internal(error.to_string())),
        None => Err(SqlError::Internal("pg_query panicked".to_owned())),
    }
}

fn top_level_command(tree: &serde_json::Value) -> String {
    let node = tree
        .get("node")
        .and_then(serde_json::Value::as_object)
        .and_then(|node| node.iter().next());
    match node {
        Some((node_type, serde_json::Value::Object(fields))) => {
            command::command_tag(node_type, fields)
        }
        _ => String::new(),
    }
}

fn prepared_name(tree: &serde_json::Value) -> Option<String> {
    tree.get("node")?
        .get("PrepareStmt")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}
