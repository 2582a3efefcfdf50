//! Real PostgreSQL clients through the gateway: psycopg 3, tokio-postgres,
//! pgbench and psql do ordinary work, then a DDL statement is challenged,
//! the client completes the step-up with `stepgate.step_up` in the same
//! session, and the retried statement passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Output};

use support::oathtool;
use support::pg::{DATABASE, ROLE, ROLE_PASSWORD, Setup, setup, stderr, tail};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Reads the challenge id from an SG001 error's DETAIL, which contains
/// `challenge_id=ch_... factors=totp expires_at=...`.
fn challenge_id(detail: &str) -> String {
    detail
        .split_whitespace()
        .find_map(|word| word.strip_prefix("challenge_id="))
        .unwrap_or_else(|| panic!("no challenge id in {detail:?}"))
        .to_owned()
}

fn table_exists(setup: &Setup, table: &str) -> bool {
    let count = setup.app_sql(&format!(
        "SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"
    ));
    count == "1"
}

/// A psycopg 3 script: parameters (extended protocol), an INSERT, DDL that
/// is challenged, `stepgate.step_up(%s, %s)` with parameters and the retry,
/// all in one autocommit connection. Arguments: port, token, TOTP secret.
const PSYCOPG_SCRIPT: &str = r#"
import subprocess
import sys

import psycopg

port, token, secret = sys.argv[1], sys.argv[2], sys.argv[3]
conn = psycopg.connect(
    host="127.0.0.1",
    port=port,
    user="ci-bot",
    password=token,
    dbname="app",
    sslmode="disable",
    connect_timeout=10,
    autocommit=True,
)
cur = conn.cursor()

cur.execute("SELECT amount FROM orders WHERE id = %s", (7,))
amount = cur.fetchone()[0]
assert amount == 70, amount

cur.execute("INSERT INTO orders (id, amount) VALUES (%s, %s)", (1001, 17))
assert cur.rowcount == 1, cur.rowcount

try:
    cur.execute("CREATE TABLE psycopg_ddl (id int)")
    raise SystemExit("CREATE TABLE passed without a step-up")
except psycopg.Error as err:
    assert err.sqlstate == "SG001", (err.sqlstate, str(err))
    detail = err.diag.message_detail
print("challenged:", detail)
challenge = next(
    word.split("=", 1)[1] for word in detail.split() if word.startswith("challenge_id=")
)

# The session must still work after the error.
cur.execute("SELECT count(*) FROM orders WHERE id = %s", (1001,))
assert cur.fetchone()[0] == 1

code = subprocess.run(
    ["oathtool", "--totp", "-b", secret], check=True, capture_output=True, text=True
).stdout.strip()
cur.execute("SELECT stepgate.step_up(%s, %s)", (challenge, code))
print("step_up:", cur.fetchone()[0])

cur.execute("CREATE TABLE psycopg_ddl (id int)")
print("retried:", cur.statusmessage)
conn.close()
"#;

#[test]
fn psycopg_ddl_challenged_answered_retried() {
    let Some(setup) = setup("") else {
        return;
    };
    let script = setup.gateway.dir.path().join("psycopg_client.py");
    std::fs::write(&script, PSYCOPG_SCRIPT).unwrap();
    let output = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(setup.pg_port.to_string())
        .arg(&setup.token)
        .arg(&setup.totp)
        .output()
        .expect("python3 must be installed with the Debian package python3-psycopg");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "psycopg script failed\nstdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        stderr(&output),
        tail(&setup.gateway.log())
    );
    assert!(stdout.contains("challenged: challenge_id=ch_"), "{stdout}");
    assert!(stdout.contains("factors=totp"), "{stdout}");
    assert!(stdout.contains("step_up: totp accepted"), "{stdout}");
    assert!(stdout.contains("retried: CREATE TABLE"), "{stdout}");
    assert!(table_exists(&setup, "psycopg_ddl"));
    assert_eq!(
        setup.app_sql("SELECT amount FROM orders WHERE id = 1001"),
        "17"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects tokio-postgres to the gateway as `ci-bot` and drives the
/// connection on the runtime.
async fn connect(setup: &Setup) -> Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(setup.pg_port)
        .user("ci-bot")
        .password(&setup.token)
        .dbname(DATABASE)
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect(NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "connect failed: {err}\ngateway log:\n{}",
                tail(&setup.gateway.log())
            )
        });
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("tokio-postgres connection ended: {err}");
        }
    });
    client
}

/// Returns the SQLSTATE, message and detail of a database error.
fn db_error(err: &tokio_postgres::Error) -> (String, String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got {err:?}"));
    (
        db.code().code().to_owned(),
        db.message().to_owned(),
        db.detail().unwrap_or_default().to_owned(),
    )
}

#[test]
fn tokio_postgres_prepared_transactions_and_step_up() {
    let Some(setup) = setup("") else {
        return;
    };
    runtime().block_on(async {
        let client = connect(&setup).await;

        // query, query_one and execute each run Parse/Bind/Execute with
        // parameters.
        let row = client
            .query_one("SELECT amount FROM orders WHERE id = $1", &[&7i32])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 70);
        let rows = client
            .query(
                "SELECT id FROM orders WHERE amount > $1 ORDER BY id",
                &[&450i32],
            )
            .await
            .unwrap();
        let ids: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(ids, (46..=50).collect::<Vec<i32>>());
        let inserted = client
            .execute(
                "INSERT INTO orders (id, amount) VALUES ($1, $2)",
                &[&2001i32, &5i32],
            )
            .await
            .unwrap();
        assert_eq!(inserted, 1);
        let user: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, ROLE);

        // A named prepared statement, reused with different parameters.
        let by_id = client
            .prepare("SELECT amount FROM orders WHERE id = $1")
            .await
            .unwrap();
        for id in [1i32, 2, 3, 25, 50, 2001] {
            let amount: i32 = client.query_one(&by_id, &[&id]).await.unwrap().get(0);
            let expected = if id == 2001 { 5 } else { id * 10 };
            assert_eq!(amount, expected, "amount of order {id}");
        }

        // A transaction that commits.
        let mut client = client;
        let transaction = client.transaction().await.unwrap();
        for id in [2002i32, 2003] {
            transaction
                .execute(
                    "INSERT INTO orders (id, amount) VALUES ($1, $2)",
                    &[&id, &1i32],
                )
                .await
                .unwrap();
        }
        let updated = transaction
            .execute(
                "UPDATE orders SET amount = amount + 1 WHERE id >= $1",
                &[&2002i32],
            )
            .await
            .unwrap();
        assert_eq!(updated, 2);
        transaction.commit().await.unwrap();
        assert_eq!(
            setup.app_sql("SELECT sum(amount) FROM orders WHERE id >= 2002"),
            "4"
        );

        // A statement refused inside a transaction block aborts the
        // transaction, as a server error would; ROLLBACK recovers.
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("INSERT INTO orders (id, amount) VALUES (2004, 1)", &[])
            .await
            .unwrap();
        let refused = client
            .execute("CREATE TABLE in_transaction (id int)", &[])
            .await
            .unwrap_err();
        assert_eq!(db_error(&refused).0, "SG001", "{refused:?}");
        let after = client.query_one("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(
            after.code(),
            Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
            "a statement after the refusal: {after:?}"
        );
        client.batch_execute("ROLLBACK").await.unwrap();
        let count: i64 = client
            .query_one("SELECT count(*) FROM orders WHERE id = 2004", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0, "the rolled back INSERT is gone");
        assert!(!table_exists(&setup, "in_transaction"));

        // DDL outside a transaction: challenged, step-up with parameters,
        // retried.
        let refused = client
            .execute("CREATE TABLE tokio_ddl (id int)", &[])
            .await
            .unwrap_err();
        let (code, message, detail) = db_error(&refused);
        assert_eq!(code, "SG001", "{message}");
        assert!(detail.contains("factors=totp"), "{detail}");
        assert!(!table_exists(&setup, "tokio_ddl"));
        let challenge = challenge_id(&detail);
        let answer: String = client
            .query_one(
                "SELECT stepgate.step_up($1, $2)",
                &[&challenge, &oathtool(&setup.totp)],
            )
            .await
            .unwrap_or_else(|err| panic!("step_up failed: {err:?}"))
            .get(0);
        assert!(answer.contains("totp accepted"), "{answer}");
        client
            .execute("CREATE TABLE tokio_ddl (id int)", &[])
            .await
            .unwrap_or_else(|err| panic!("retried DDL failed: {err:?}"));
        assert!(table_exists(&setup, "tokio_ddl"));

        // The prepared statement still works after the errors.
        let amount: i32 = client.query_one(&by_id, &[&4i32]).await.unwrap().get(0);
        assert_eq!(amount, 40);
    });
}

fn pgbench(setup: &Setup, args: &[&str]) -> Output {
    let home = setup.gateway.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    Command::new(setup.postgres.bin("pgbench"))
        .env("HOME", &home)
        .env("PGPASSWORD", &setup.token)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-h", "127.0.0.1", "-p", &setup.pg_port.to_string()])
        .args(["-U", "ci-bot"])
        .args(args)
        .arg(DATABASE)
        .output()
        .unwrap()
}

#[test]
fn pgbench_select_only_and_tpcb_pass() {
    let Some(setup) = setup("") else {
        return;
    };
    // `pgbench -i` runs DDL, which needs a step-up through the gateway, so
    // the tables are created on the server directly, as app_rw.
    let init = Command::new(setup.postgres.bin("pgbench"))
        .env("PGPASSWORD", ROLE_PASSWORD)
        .env("PGSSLMODE", "disable")
        .args(["-h", "127.0.0.1", "-p", &setup.postgres.port().to_string()])
        .args(["-U", ROLE, "-i", "-s", "1", "-q", DATABASE])
        .output()
        .unwrap();
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));

    let select_only = pgbench(&setup, &["-n", "-c", "2", "-t", "50", "-S"]);
    assert!(
        select_only.status.success(),
        "pgbench -S failed: {}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&select_only.stdout),
        stderr(&select_only),
        tail(&setup.gateway.log())
    );
    let report = String::from_utf8_lossy(&select_only.stdout);
    assert!(
        report.contains("number of transactions actually processed: 100/100"),
        "{report}"
    );

    let tpcb = pgbench(&setup, &["-n", "-c", "2", "-t", "20"]);
    assert!(
        tpcb.status.success(),
        "pgbench TPC-B failed: {}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&tpcb.stdout),
        stderr(&tpcb),
        tail(&setup.gateway.log())
    );
    let report = String::from_utf8_lossy(&tpcb.stdout);
    assert!(
        report.contains("number of transactions actually processed: 40/40"),
        "{report}"
    );
    assert_eq!(setup.app_sql("SELECT count(*) FROM pgbench_history"), "40");

    // Allow records are written behind the answers.
    support::pg::wait_for_record(&setup.gateway, |record| {
        record["statement_class"] == "write" && record["rows"] == 1
    });
    let audit = setup.gateway.audit();
    let statements: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|record| record.get("statement_class").is_some())
        .collect();
    assert!(
        statements.len() >= 100,
        "{} statement records",
        statements.len()
    );
    let update = statements
        .iter()
        .find(|record| {
            record["statement_class"] == "write"
                && record["fingerprint"].is_string()
                && record["rows"] == 1
        })
        .unwrap_or_else(|| panic!("no write record with rows = 1: {statements:?}"));
    assert_eq!(update["database_role"], ROLE);
    assert_eq!(update["database"], DATABASE);
    let read = statements
        .iter()
        .find(|record| record["statement_class"] == "read" && record["rows"] == 1)
        .unwrap_or_else(|| panic!("no read record with rows = 1: {statements:?}"));
    assert!(read["fingerprint"].is_string(), "{read}");
    assert!(
        read.get("statement").is_none(),
        "statement text written without audit_statement_text: {read}"
    );
}

#[test]
fn psql_multi_statement_query_passes() {
    let Some(setup) = setup("") else {
        return;
    };
    assert_eq!(setup.psql_ok("SELECT 1; SELECT 2"), "1\n2");
}

#[test]
fn multi_statement_query_rejected_per_identity() {
    // `setup` appends this line to the `[[postgres.identities]]` entry of
    // ci-bot.
    let Some(setup) = setup("reject_multi_statement = true") else {
        return;
    };
    assert_eq!(setup.psql_ok("SELECT 1"), "1");
    let refused = setup.psql("SELECT 1; SELECT 2");
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("one statement per query"),
        "psql stderr: {message}"
    );
    assert!(
        String::from_utf8_lossy(&refused.stdout).is_empty(),
        "no statement of the refused query may run"
    );
}

#[test]
fn sql_execute_of_protocol_statement_keeps_its_class() {
    let Some(setup) = setup("") else {
        return;
    };
    runtime().block_on(async {
        let client = connect(&setup).await;
        // Past the learning period, so only policy and zones decide.
        for id in 1..=5 {
            client
                .query("SELECT amount FROM orders WHERE id = $1", &[&id])
                .await
                .unwrap();
        }
        // Parse of a named statement is not decided; each Execute is. A SQL
        // EXECUTE of the same name must be decided as the statement itself.
        let ddl = client
            .prepare("CREATE TABLE via_execute (i int)")
            .await
            .unwrap();
        let payout = client
            .prepare("INSERT INTO payouts (amount) VALUES (804)")
            .await
            .unwrap();
        let grant = client
            .prepare("GRANT ALL ON orders TO PUBLIC")
            .await
            .unwrap();
        // The statements stay prepared while these handles live.
        let _prepared = (&ddl, &payout, &grant);
        // tokio-postgres picks the names; the server lists them.
        let name_of = |rows: &[tokio_postgres::Row], text: &str| -> String {
            rows.iter()
                .find(|row| row.get::<_, String>(1).starts_with(text))
                .map(|row| row.get::<_, String>(0))
                .unwrap_or_else(|| panic!("{text} is not prepared"))
        };
        let prepared = client
            .query("SELECT name, statement FROM pg_prepared_statements", &[])
            .await
            .unwrap();
        for text in ["CREATE TABLE via_execute", "GRANT ALL ON orders"] {
            let name = name_of(&prepared, text);
            let err = client
                .simple_query(&format!("EXECUTE {name}"))
                .await
                .unwrap_err();
            assert_eq!(db_error(&err).0, "SG001", "{text}");
        }
        let payout_name = name_of(&prepared, "INSERT INTO payouts");
        // The payout is in an approval zone; with no approver configured the
        // gateway denies it rather than run it.
        let err = client
            .simple_query(&format!("EXPLAIN ANALYZE EXECUTE {payout_name}"))
            .await
            .unwrap_err();
        assert!(db_error(&err).0.starts_with("SG"), "{err:?}");

        // A DO block is administrative, whatever it contains.
        let err = client
            .simple_query("DO $$ BEGIN INSERT INTO payouts (amount) VALUES (777); END $$")
            .await
            .unwrap_err();
        assert_eq!(db_error(&err).0, "SG001", "{err:?}");

        // A name qualified with the database is still the zone's table.
        let err = client
            .simple_query("INSERT INTO app.public.payouts (amount) VALUES (801)")
            .await
            .unwrap_err();
        assert!(db_error(&err).0.starts_with("SG"), "{err:?}");

        // Changing search_path could move unqualified names out of a zone.
        let err = client
            .simple_query("SET search_path TO pg_catalog")
            .await
            .unwrap_err();
        assert_eq!(db_error(&err).0, "SG001", "{err:?}");
    });
    assert!(!table_exists(&setup, "via_execute"));
    assert_eq!(setup.app_sql("SELECT count(*) FROM payouts"), "0");
    assert_eq!(
        setup.app_sql("SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'PUBLIC' AND table_name = 'orders'"),
        "0"
    );
}
