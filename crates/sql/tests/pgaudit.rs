//! Compares the classifier with the classes pgAudit logged in its
//! regression test (testdata/pgaudit): every statement must agree with
//! pgAudit's most dangerous class for it, or be listed in `DIFFERENCES`
//! with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use stepgate_sql::{Class, Classifier, SqlError};

const RECORDS: &str = include_str!("../../../testdata/pgaudit/audit_records.jsonl");

/// Statement texts that pgAudit logs in place of SQL.
const PLACEHOLDERS: [&str; 2] = ["<not logged>", "<previously logged>"];

/// What the classifier returns for a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Class(Class),
    ParseError,
}

/// One statement where the classifier and pgAudit differ.
struct Difference {
    /// The statement text as logged, before redactions are filled in.
    statement: &'static str,
    /// pgAudit's most dangerous class for the statement, mapped to ours.
    pgaudit: Class,
    ours: Outcome,
    reason: &'static str,
}

const DIFFERENCES: &[Difference] = &[
    Difference {
        statement: "SELECT *\n  FROM account\n WHERE password = 'HASH2'\n   FOR UPDATE",
        pgaudit: Class::Read,
        ours: Outcome::Class(Class::Write),
        reason: "FOR UPDATE needs UPDATE privilege and writes row locks; pgAudit logs a SELECT",
    },
    Difference {
        statement: "SELECT name\nFROM account\n    FOR UPDATE",
        pgaudit: Class::Read,
        ours: Outcome::Class(Class::Write),
        reason: "FOR UPDATE needs UPDATE privilege and writes row locks; pgAudit logs a SELECT",
    },
    Difference {
        statement: "EXECUTE pgclassstmt (1)",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Read),
        reason: "EXECUTE runs the prepared SELECT, so it takes that class; pgAudit logs the \
                 EXECUTE itself as MISC",
    },
    Difference {
        statement: "EXECUTE pgclassstmt1 (1)",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Read),
        reason: "EXECUTE runs the prepared SELECT, so it takes that class; pgAudit logs the \
                 EXECUTE itself as MISC",
    },
    Difference {
        statement: "EXECUTE pgclassstmt2 (1)",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Read),
        reason: "EXECUTE runs the prepared SELECT, so it takes that class; pgAudit logs the \
                 EXECUTE itself as MISC",
    },
    Difference {
        statement: "FETCH NEXT FROM ctest",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Read),
        reason: "FETCH returns rows of the cursor's query; pgAudit logs it as MISC",
    },
    Difference {
        statement: "FETCH NEXT FROM ctest1",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Read),
        reason: "FETCH returns rows of the cursor's query; pgAudit logs it as MISC",
    },
    Difference {
        statement: "FETCH NEXT FROM ctest2",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Read),
        reason: "FETCH returns rows of the cursor's query; pgAudit logs it as MISC",
    },
    Difference {
        statement: "SET ROLE regress_alice",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Privilege),
        reason: "SET ROLE changes the privileges of the session; pgAudit logs every SET as MISC",
    },
    Difference {
        statement: "SET search_path TO test, public",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Privilege),
        reason: "search_path decides which table an unqualified name means, so the gateway \
                 treats changing it like a change of privileges; pgAudit logs every SET as MISC",
    },
    Difference {
        statement: "SET search_path TO public",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Privilege),
        reason: "as for SET search_path TO test, public",
    },
    Difference {
        statement: "RESET ROLE",
        pgaudit: Class::Utility,
        ours: Outcome::Class(Class::Privilege),
        reason: "RESET ROLE changes the privileges of the session; pgAudit logs every RESET as \
                 MISC",
    },
    Difference {
        statement: "DROP USER MAPPING FOR regress_user1 SERVER fdw_server",
        pgaudit: Class::Ddl,
        ours: Outcome::Class(Class::Privilege),
        reason: "user mappings hold a role's credentials for a foreign server, so all three \
                 statements are privilege; pgAudit logs CREATE and ALTER as ROLE but DROP as DDL",
    },
    Difference {
        statement: "SELECT name\n  FROM GRAPH_TABLE (graph_test MATCH (v IS graph_vertex) \
                    COLUMNS (v.name))\n ORDER BY name",
        pgaudit: Class::Read,
        ours: Outcome::ParseError,
        reason: "GRAPH_TABLE is PostgreSQL 19 syntax and pg_query 18 embeds the PostgreSQL 18 \
                 parser; the gateway rejects what it cannot parse",
    },
];

/// Differences where the classifier is less strict than pgAudit. Each must
/// be a listed difference with its reason.
const WEAKER: &[&str] = &[
    "SELECT name\n  FROM GRAPH_TABLE (graph_test MATCH (v IS graph_vertex) COLUMNS (v.name))\n \
     ORDER BY name",
];

fn pgaudit_class(class: &str, command: &str) -> Class {
    match class {
        "READ" => Class::Read,
        "WRITE" => Class::Write,
        "FUNCTION" => Class::Function,
        "ROLE" => Class::Privilege,
        "DDL" => Class::Ddl,
        "MISC" => match command {
            "BEGIN"
            | "START TRANSACTION"
            | "COMMIT"
            | "ROLLBACK"
            | "SAVEPOINT"
            | "RELEASE"
            | "PREPARE TRANSACTION"
            | "COMMIT PREPARED"
            | "ROLLBACK PREPARED" => Class::Transaction,
            _ => Class::Utility,
        },
        other => panic!("unknown pgAudit class {other}"),
    }
}

/// Puts a string literal in place of `<REDACTED>` and closes an open
/// parenthesis, so that the text parses. pgAudit writes `<REDACTED>` in
/// place of a password and, inside an OPTIONS list, the rest of the list.
fn fill_redactions(statement: &str) -> String {
    let filled = statement.replace("<REDACTED>", "'redacted'");
    let open = filled.matches('(').count();
    let close = filled.matches(')').count();
    format!("{filled}{}", ")".repeat(open.saturating_sub(close)))
}

struct Logged {
    statement: String,
    classes: BTreeSet<Class>,
}

/// Groups the records by statement text in order of first appearance.
fn logged_statements() -> (Vec<Logged>, usize, usize) {
    let mut order: Vec<Logged> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let (mut records, mut placeholders) = (0, 0);
    for line in RECORDS.lines() {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}"));
        records += 1;
        let field = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
        let statement = field("statement");
        if PLACEHOLDERS.contains(&statement.as_str()) {
            placeholders += 1;
            continue;
        }
        let class = pgaudit_class(&field("class"), &field("command"));
        let position = *index.entry(statement.clone()).or_insert_with(|| {
            order.push(Logged {
                statement: statement.clone(),
                classes: BTreeSet::new(),
            });
            order.len() - 1
        });
        order[position].classes.insert(class);
    }
    (order, records, placeholders)
}

#[test]
fn classes_match_pgaudit_or_are_explained() {
    let (logged, records, placeholders) = logged_statements();
    assert_eq!(records, 415);
    assert_eq!(placeholders, 13);

    let classifier = Classifier::default();
    // The session's prepared statements, as the regression test ran them.
    let mut session: HashMap<String, Class> = HashMap::new();
    let mut agreements = 0;
    let mut found = Vec::new();
    for entry in &logged {
        let pgaudit = entry
            .classes
            .iter()
            .copied()
            .max()
            .unwrap_or(Class::Transaction);
        let ours =
            match classifier.classify_in_session(&fill_redactions(&entry.statement), &session) {
                Ok(statements) => {
                    for statement in &statements {
                        if let Some(name) = &statement.prepared_name {
                            session.insert(name.clone(), statement.class);
                        }
                    }
                    let class = statements.iter().map(|statement| statement.class).max();
                    Outcome::Class(class.unwrap_or(Class::Transaction))
                }
                Err(SqlError::Parse { .. }) => Outcome::ParseError,
                Err(other) => panic!("{}: {other}", entry.statement),
            };
        if ours == Outcome::Class(pgaudit) {
            agreements += 1;
        } else {
            found.push((entry.statement.clone(), pgaudit, ours));
        }
    }

    let mut unexplained = Vec::new();
    for (statement, pgaudit, ours) in &found {
        let listed = DIFFERENCES
            .iter()
            .find(|difference| difference.statement == statement);
        match listed {
            Some(difference) if difference.pgaudit == *pgaudit && difference.ours == *ours => {}
            _ => unexplained.push(format!("{statement:?}: pgAudit {pgaudit}, ours {ours:?}")),
        }
    }
    assert!(
        unexplained.is_empty(),
        "unexplained differences:\n{}",
        unexplained.join("\n")
    );

    let stale: Vec<&str> = DIFFERENCES
        .iter()
        .filter(|difference| {
            !found
                .iter()
                .any(|(statement, _, _)| statement == difference.statement)
        })
        .map(|difference| difference.statement)
        .collect();
    assert!(
        stale.is_empty(),
        "listed differences that no longer occur: {stale:?}"
    );

    // A parse error counts as weaker: the statement gets no class at all.
    let weaker: Vec<&str> = DIFFERENCES
        .iter()
        .filter(|difference| match difference.ours {
            Outcome::Class(class) => class < difference.pgaudit,
            Outcome::ParseError => true,
        })
        .map(|difference| difference.statement)
        .collect();
    assert_eq!(weaker, WEAKER);
    for difference in DIFFERENCES {
        assert!(!difference.reason.is_empty(), "{}", difference.statement);
    }
    assert_eq!(agreements + found.len(), logged.len());
    println!(
        "{} statements from {records} records: {agreements} agree, {} explained differences",
        logged.len(),
        found.len()
    );
}
