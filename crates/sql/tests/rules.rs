//! One test per classification rule, through the public API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use stepgate_sql::{
    Class, Classifier, ErrorPosition, FunctionCatalogue, SqlError, Statement, classify,
};

fn one(sql: &str) -> Statement {
    let mut statements = classify(sql).unwrap_or_else(|error| panic!("{sql}: {error}"));
    assert_eq!(statements.len(), 1, "{sql}");
    statements.remove(0)
}

fn class(sql: &str) -> Class {
    one(sql).class
}

#[test]
fn plain_statements_get_their_own_class() {
    let cases = [
        ("SELECT * FROM orders", Class::Read),
        ("VALUES (1), (2)", Class::Read),
        ("INSERT INTO orders VALUES (1)", Class::Write),
        ("UPDATE orders SET n = 1", Class::Write),
        ("DELETE FROM orders", Class::Write),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            Class::Write,
        ),
        ("TRUNCATE orders", Class::Write),
        ("CREATE TABLE t (id int)", Class::Ddl),
        ("ALTER TABLE t ADD COLUMN n int", Class::Ddl),
        ("DROP INDEX i", Class::Ddl),
        ("CREATE VIEW v AS SELECT * FROM t", Class::Ddl),
        ("COMMENT ON TABLE t IS 'x'", Class::Ddl),
        ("REFRESH MATERIALIZED VIEW mv", Class::Write),
    ];
    for (sql, expected) in cases {
        assert_eq!(class(sql), expected, "{sql}");
    }
}

#[test]
fn writable_cte_is_write() {
    let statement = one("WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone");
    assert_eq!(statement.class, Class::Write);
    assert_eq!(statement.tables, ["public.orders"]);
    assert_eq!(statement.command, "SELECT");
}

#[test]
fn nested_subquery_write_is_found() {
    let sql = "SELECT * FROM a WHERE id IN (SELECT id FROM b WHERE x = \
               (SELECT max(id) FROM (WITH w AS (UPDATE c SET n = 1 RETURNING id) \
               SELECT id FROM w) AS inner_q))";
    let statement = one(sql);
    assert_eq!(statement.class, Class::Write);
    assert_eq!(statement.tables, ["public.a", "public.b", "public.c"]);
}

#[test]
fn select_for_update_is_write() {
    assert_eq!(
        class("SELECT * FROM jobs FOR UPDATE SKIP LOCKED"),
        Class::Write
    );
    assert_eq!(class("SELECT * FROM jobs FOR KEY SHARE"), Class::Write);
}

#[test]
fn select_into_and_create_table_as_are_ddl() {
    let into = one("SELECT * INTO archive FROM orders");
    assert_eq!(into.class, Class::Ddl);
    assert_eq!(into.tables, ["public.archive", "public.orders"]);
    assert_eq!(into.command, "SELECT INTO");
    let create = one("CREATE TABLE archive AS SELECT * FROM orders");
    assert_eq!(create.class, Class::Ddl);
    assert_eq!(create.command, "CREATE TABLE AS");
}

#[test]
fn explain_without_analyze_is_read() {
    let statement = one("EXPLAIN DELETE FROM orders");
    assert_eq!(statement.class, Class::Read);
    assert_eq!(statement.tables, ["public.orders"]);
    assert_eq!(
        class("EXPLAIN (ANALYZE false) DELETE FROM orders"),
        Class::Read
    );
    assert_eq!(
        class("EXPLAIN (ANALYZE off) DELETE FROM orders"),
        Class::Read
    );
}

#[test]
fn explain_keeps_unknown_function_class() {
    assert_eq!(class("EXPLAIN SELECT audit_me(1)"), Class::Function);
    assert_eq!(class("EXPLAIN SELECT lower('A')"), Class::Read);
    assert_eq!(
        class("EXPLAIN DELETE FROM t WHERE id = audit_me(1)"),
        Class::Function
    );
    assert_eq!(class("EXPLAIN EXECUTE unknown_plan"), Class::Function);
}

#[test]
fn explain_analyze_takes_inner_class() {
    assert_eq!(class("EXPLAIN ANALYZE DELETE FROM orders"), Class::Write);
    assert_eq!(class("EXPLAIN (ANALYZE) DELETE FROM orders"), Class::Write);
    assert_eq!(
        class("EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM orders"),
        Class::Write
    );
    assert_eq!(class("EXPLAIN ANALYZE SELECT 1"), Class::Read);
    assert_eq!(class("EXPLAIN ANALYZE EXECUTE unknown_plan"), Class::Write);
}

#[test]
fn prepare_takes_inner_class() {
    assert_eq!(
        class("PREPARE ins(int) AS INSERT INTO t VALUES ($1)"),
        Class::Write
    );
    assert_eq!(class("PREPARE sel AS SELECT 1"), Class::Read);
    let prepare = one("PREPARE sel AS SELECT 1");
    assert_eq!(prepare.command, "PREPARE");
    assert_eq!(prepare.prepared_name.as_deref(), Some("sel"));
    assert_eq!(one("SELECT 1").prepared_name, None);
}

#[test]
fn execute_without_lookup_fails_closed() {
    assert_eq!(class("EXECUTE sel"), Class::Write);
}

#[test]
fn execute_uses_session_lookup() {
    let session = HashMap::from([
        ("sel".to_owned(), Class::Read),
        ("grant_it".to_owned(), Class::Privilege),
    ]);
    let classifier = Classifier::default();
    let classes: Vec<Class> = classifier
        .classify_in_session("EXECUTE sel(1); EXECUTE grant_it; EXECUTE other", &session)
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .map(|statement| statement.class)
        .collect();
    assert_eq!(classes, [Class::Read, Class::Privilege, Class::Write]);
}

#[test]
fn execute_uses_prepare_in_same_input() {
    let session = HashMap::from([("p".to_owned(), Class::Write)]);
    let sql = "PREPARE p AS SELECT 1; EXECUTE p; DEALLOCATE p; EXECUTE p";
    let classes: Vec<Class> = Classifier::default()
        .classify_in_session(sql, &session)
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .map(|statement| statement.class)
        .collect();
    assert_eq!(
        classes,
        [Class::Read, Class::Read, Class::Utility, Class::Write]
    );
}

#[test]
fn do_and_call_are_function() {
    assert_eq!(class("DO $$BEGIN PERFORM 1; END$$"), Class::Function);
    let call = one("CALL archive_orders(30)");
    assert_eq!(call.class, Class::Function);
    assert_eq!(call.functions, ["archive_orders"]);
}

#[test]
fn copy_direction_sets_class() {
    assert_eq!(class("COPY orders TO STDOUT"), Class::Read);
    assert_eq!(class("COPY orders FROM STDIN"), Class::Write);
    assert_eq!(class("COPY (SELECT * FROM orders) TO STDOUT"), Class::Read);
    assert_eq!(
        class("COPY (WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d) TO STDOUT"),
        Class::Write
    );
    assert_eq!(
        class("COPY (SELECT unknown_fn()) TO STDOUT"),
        Class::Function
    );
    assert_eq!(class("COPY orders TO '/tmp/orders.csv'"), Class::Write);
    assert_eq!(class("COPY orders FROM PROGRAM 'curl x'"), Class::Privilege);
    assert_eq!(class("COPY orders TO PROGRAM 'gzip'"), Class::Privilege);
}

#[test]
fn pure_function_stays_read() {
    let statement = one("SELECT now(), count(*), lower(name), pg_catalog.upper(name) FROM t");
    assert_eq!(statement.class, Class::Read);
    assert_eq!(
        statement.functions,
        [
            "pg_catalog.count",
            "pg_catalog.lower",
            "pg_catalog.now",
            "pg_catalog.upper"
        ]
    );
    assert!(statement.side_effect_functions.is_empty());
}

#[test]
fn sql_syntax_functions_are_pure() {
    let sql = "SELECT substring('Thomas' from 2 for 3), trim(both ' ' from name), \
               extract(year from now()), position('a' in name), now() AT TIME ZONE 'UTC' FROM t";
    assert_eq!(class(sql), Class::Read);
}

#[test]
fn unknown_function_is_function() {
    let statement = one("SELECT my_schema.compute(id) FROM t");
    assert_eq!(statement.class, Class::Function);
    assert_eq!(statement.functions, ["my_schema.compute"]);
    // A pure name outside pg_catalog is a different function.
    assert_eq!(class("SELECT public.lower('x')"), Class::Function);
    assert_eq!(class("SELECT random()"), Class::Function);
}

#[test]
fn function_in_where_clause_counts() {
    assert_eq!(
        class("SELECT * FROM t WHERE id = leak(id)"),
        Class::Function
    );
    assert_eq!(
        class("SELECT * FROM t ORDER BY (SELECT leak(1))"),
        Class::Function
    );
}

#[test]
fn side_effect_functions_are_flagged() {
    let sql = "SELECT pg_terminate_backend(1), nextval('s'), dblink_exec('c', 'x'), \
               lo_import('/etc/passwd'), pg_read_file('x')";
    let statement = one(sql);
    assert_eq!(statement.class, Class::Function);
    assert_eq!(
        statement.side_effect_functions,
        [
            "dblink_exec",
            "lo_import",
            "nextval",
            "pg_read_file",
            "pg_terminate_backend"
        ]
    );
}

#[test]
fn side_effect_function_beats_custom_pure_list() {
    let classifier = Classifier::new(FunctionCatalogue::new(["nextval", "now"]));
    let statements = classifier
        .classify("SELECT nextval('s'), now()")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(statements[0].class, Class::Function);
    assert_eq!(statements[0].side_effect_functions, ["nextval"]);
}

#[test]
fn empty_catalogue_makes_every_call_function() {
    let classifier = Classifier::new(FunctionCatalogue::empty());
    let statements = classifier
        .classify("SELECT now()")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(statements[0].class, Class::Function);
    assert_eq!(statements[0].functions, ["now"]);
}

#[test]
fn set_config_of_role_is_privilege() {
    assert_eq!(
        class("SELECT set_config('role', 'admin', false)"),
        Class::Privilege
    );
    assert_eq!(
        class("SELECT pg_catalog.set_config('SESSION_AUTHORIZATION', 'x', false)"),
        Class::Privilege
    );
    assert_eq!(
        class("SELECT set_config(name, 'x', false) FROM t"),
        Class::Privilege
    );
    assert_eq!(
        class("SELECT set_config('work_mem', '4MB', false)"),
        Class::Function
    );
}

#[test]
fn privilege_statements() {
    let cases = [
        "GRANT SELECT ON orders TO bot",
        "REVOKE ALL ON orders FROM bot",
        "GRANT admin TO bot",
        "REVOKE admin FROM bot",
        "CREATE ROLE bot LOGIN",
        "CREATE USER bot PASSWORD 'x'",
        "ALTER ROLE bot SUPERUSER",
        "ALTER USER bot SET search_path = x",
        "SET search_path TO app",
        "SET LOCAL search_path = billing, public",
        "RESET search_path",
        "SELECT set_config('search_path', 'billing', false)",
        "ALTER ROLE bot RENAME TO robot",
        "DROP ROLE bot",
        "DROP USER bot",
        "CREATE GROUP ops",
        "ALTER TABLE orders OWNER TO bot",
        "ALTER FUNCTION f() OWNER TO bot",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY p ON orders USING (true)",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bot",
        "SECURITY LABEL ON TABLE orders IS 'secret'",
        "REASSIGN OWNED BY bot TO admin",
        "DROP OWNED BY bot",
        "SET ROLE admin",
        "SET LOCAL ROLE admin",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION admin",
        "RESET SESSION AUTHORIZATION",
        "DISCARD ALL",
        "CREATE USER MAPPING FOR bot SERVER s OPTIONS (user 'x')",
        "ALTER SYSTEM SET archive_command = 'x'",
        "LOAD 'auto_explain'",
        "CREATE SCHEMA s GRANT SELECT ON t TO bot",
    ];
    for sql in cases {
        assert_eq!(class(sql), Class::Privilege, "{sql}");
    }
}

#[test]
fn transaction_control() {
    let cases = [
        ("BEGIN", "BEGIN"),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "START TRANSACTION",
        ),
        ("COMMIT", "COMMIT"),
        ("ROLLBACK", "ROLLBACK"),
        ("SAVEPOINT s", "SAVEPOINT"),
        ("RELEASE SAVEPOINT s", "RELEASE"),
        ("ROLLBACK TO SAVEPOINT s", "ROLLBACK"),
        ("PREPARE TRANSACTION 'tx'", "PREPARE TRANSACTION"),
        ("COMMIT PREPARED 'tx'", "COMMIT PREPARED"),
        ("ROLLBACK PREPARED 'tx'", "ROLLBACK PREPARED"),
        ("SET TRANSACTION READ ONLY", "SET"),
    ];
    for (sql, command) in cases {
        let statement = one(sql);
        assert_eq!(statement.class, Class::Transaction, "{sql}");
        assert_eq!(statement.command, command, "{sql}");
    }
}

#[test]
fn utility_statements() {
    let cases = [
        "SET work_mem TO '64MB'",
        "RESET work_mem",
        "RESET ALL",
        "SHOW work_mem",
        "DISCARD PLANS",
        "DISCARD TEMP",
        "LISTEN jobs",
        "NOTIFY jobs, 'x'",
        "UNLISTEN *",
        "VACUUM orders",
        "ANALYZE orders",
        "CHECKPOINT",
        "CLUSTER orders USING orders_pkey",
        "REINDEX TABLE orders",
        "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
        "CLOSE c",
        "MOVE NEXT FROM c",
        "DEALLOCATE p",
        "SET CONSTRAINTS ALL DEFERRED",
    ];
    for sql in cases {
        assert_eq!(class(sql), Class::Utility, "{sql}");
    }
}

#[test]
fn cursors_read() {
    let declare = one("DECLARE c CURSOR FOR SELECT * FROM orders");
    assert_eq!(declare.class, Class::Read);
    assert_eq!(declare.tables, ["public.orders"]);
    assert_eq!(class("FETCH NEXT FROM c"), Class::Read);
}

#[test]
fn rule_and_function_bodies_are_ddl() {
    assert_eq!(
        class("CREATE RULE r AS ON INSERT TO t DO ALSO (DELETE FROM u; INSERT INTO v VALUES (1))"),
        Class::Ddl
    );
    assert_eq!(
        class("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END"),
        Class::Ddl
    );
    assert_eq!(
        class("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$"),
        Class::Ddl
    );
}

#[test]
fn multi_statement_text_keeps_order() {
    let sql = "BEGIN; SELECT * FROM a; UPDATE b SET x = 1; GRANT SELECT ON a TO bot; \
               SET work_mem = '4MB'; SELECT f(); DROP TABLE c; COMMIT";
    let statements = classify(sql).unwrap_or_else(|error| panic!("{error}"));
    let classes: Vec<Class> = statements.iter().map(|statement| statement.class).collect();
    assert_eq!(
        classes,
        [
            Class::Transaction,
            Class::Read,
            Class::Write,
            Class::Privilege,
            Class::Utility,
            Class::Function,
            Class::Ddl,
            Class::Transaction,
        ]
    );
    assert_eq!(statements[1].tables, ["public.a"]);
    assert_eq!(statements[6].tables, ["public.c"]);
}

#[test]
fn fingerprint_ignores_constants() {
    let statements =
        classify("SELECT * FROM t WHERE id = 1; SELECT * FROM t WHERE id = 2; SELECT 1")
            .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(statements[0].fingerprint, statements[1].fingerprint);
    assert_ne!(statements[0].fingerprint, statements[2].fingerprint);
    assert_eq!(statements[0].fingerprint.len(), 16);
}

#[test]
fn tables_are_schema_qualified() {
    let statement =
        one("SELECT * FROM orders o JOIN sales.items i ON true JOIN db.sales.x ON true, orders");
    assert_eq!(
        statement.tables,
        ["db.sales.x", "public.orders", "sales.items"]
    );
    let temp = one("CREATE TEMP TABLE scratch (id int)");
    assert_eq!(temp.tables, ["pg_temp.scratch"]);
}

#[test]
fn cte_names_are_not_tables() {
    let statement = one("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent");
    assert_eq!(statement.tables, ["public.orders"]);
    // A non-recursive CTE body refers to the real table of the same name.
    let shadow = one("WITH orders AS (SELECT * FROM orders) SELECT * FROM orders");
    assert_eq!(shadow.tables, ["public.orders"]);
    // A DML target is never a CTE.
    let target = one("WITH t AS (SELECT 1 AS n) INSERT INTO t SELECT n FROM t");
    assert_eq!(target.tables, ["public.t"]);
    let recursive = one(
        "WITH RECURSIVE walk AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM walk WHERE n < 5) \
         SELECT * FROM walk",
    );
    assert!(recursive.tables.is_empty(), "{:?}", recursive.tables);
}

#[test]
fn parse_error_names_statement_and_position() {
    let error = classify("SELECT 1;\nSELECT * FROM FROM t;").err();
    assert_eq!(
        error,
        Some(SqlError::Parse {
            statement: 2,
            message: "syntax error at or near \"FROM\"".to_owned(),
            position: Some(ErrorPosition {
                position: 25,
                line: 2,
                column: 15
            }),
        })
    );
}

#[test]
fn parse_error_at_end_of_input() {
    let Some(SqlError::Parse {
        statement,
        position,
        ..
    }) = classify("SELECT 1; SELECT (").err()
    else {
        panic!("expected a parse error");
    };
    assert_eq!(statement, 2);
    assert_eq!(position.map(|at| at.position), Some(19));
}

#[test]
fn unterminated_string_position() {
    let Some(SqlError::Parse {
        statement,
        message,
        position,
    }) = classify("SELECT 1; SELECT 'abc").err()
    else {
        panic!("expected a parse error");
    };
    assert_eq!(statement, 2);
    assert!(
        message.starts_with("unterminated quoted string"),
        "{message}"
    );
    assert_eq!(position.map(|at| at.position), Some(18));
}

#[test]
fn parse_error_position_counts_characters() {
    let Some(SqlError::Parse { position, .. }) = classify("SELECT 'ü€' FROM FROM").err() else {
        panic!("expected a parse error");
    };
    assert_eq!(position.map(|at| at.column), Some(18));
}

#[test]
fn error_message_reads_well() {
    let error = classify("SELEC 1").err().map(|error| error.to_string());
    assert_eq!(
        error.as_deref(),
        Some("statement 1: syntax error at or near \"SELEC\" at position 1 (line 1, column 1)")
    );
}

#[test]
fn empty_input_is_rejected() {
    for sql in ["", "   ", ";;", "-- only a comment", "/* block */"] {
        assert_eq!(classify(sql).err(), Some(SqlError::Empty), "{sql:?}");
    }
}

#[test]
fn oversized_input_is_rejected() {
    let sql = format!("SELECT '{}'", "x".repeat(2 * 1024 * 1024));
    assert_eq!(
        classify(&sql).err(),
        Some(SqlError::TooLarge {
            size: sql.len(),
            max: 1024 * 1024
        })
    );
    let small = Classifier::default().with_max_input_bytes(8);
    assert!(matches!(
        small.classify("SELECT 12345"),
        Err(SqlError::TooLarge { max: 8, .. })
    ));
}

#[test]
fn nul_character_is_rejected() {
    assert_eq!(
        classify("SELECT 1;\0DROP TABLE t").err(),
        Some(SqlError::NulCharacter { position: 10 })
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let sum = format!("SELECT 1; SELECT {} FROM t", vec!["a"; 200].join(" + "));
    assert_eq!(
        classify(&sum).err(),
        Some(SqlError::TooDeep { statement: 2 })
    );
    let parens = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(classify(&parens).is_err());
    let minus = format!("SELECT {}", vec!["1"; 60_000].join("-"));
    assert!(classify(&minus).is_err());
}

#[test]
fn moderate_nesting_is_classified() {
    let sum = format!("SELECT {} FROM t", vec!["a"; 40].join(" + "));
    assert_eq!(class(&sum), Class::Read);
    let ors = format!(
        "SELECT * FROM t WHERE {}",
        vec!["a = 1"; 5_000].join(" OR ")
    );
    assert_eq!(class(&ors), Class::Read);
}

#[test]
fn long_input_is_classified() {
    let list = vec!["1"; 150_000].join(",");
    let sql = format!("SELECT * FROM t WHERE id IN ({list})");
    assert!(sql.len() < 1024 * 1024);
    assert_eq!(class(&sql), Class::Read);
}

#[test]
fn garbage_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet: Vec<char> =
        "SELECT FROM WHERE ( ) ; ' \" $$ -- /* */ , . * = 1 a é \\ E'\n\t[]{}"
            .chars()
            .collect();
    for _ in 0..300 {
        let mut text = String::new();
        for _ in 0..(seed % 80) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let index = usize::try_from(seed % alphabet.len() as u64).unwrap_or(0);
            text.push(alphabet[index]);
        }
        seed = seed.wrapping_add(1);
        // Either outcome is fine; only a panic fails.
        let _ = classify(&text);
    }
}
