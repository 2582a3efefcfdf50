//! Checks the function catalogue against a real PostgreSQL server: every
//! pure function must be marked immutable or stable in `pg_proc` for all its
//! overloads, and every listed side-effect function that the server has must
//! be volatile.
//!
//! The test starts a throwaway server with `initdb` in a temporary folder,
//! listening only on a Unix socket in that folder. initdb refuses to run as
//! root, so under root the server runs as the `postgres` user through
//! `setpriv`. Without PostgreSQL binaries (`STEPGATE_PG_BIN`, default
//! `/usr/lib/postgresql/15/bin`) or, under root, without a `postgres` user,
//! the test prints why and passes without checking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use stepgate_sql::{DEFAULT_PURE_FUNCTIONS, SIDE_EFFECT_FUNCTIONS};

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds a command that runs `program` as the server's user. setpriv
/// execs the program in place, so killing the child stops the server itself.
fn command(run_as: Option<&str>, program: &Path) -> Command {
    match run_as {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .args(["--init-groups", "--"])
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|output| output.status.success())
}

fn check(output: std::io::Result<Output>, what: &str) -> Output {
    let output = output.unwrap_or_else(|error| panic!("{what} failed to start: {error}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Returns (name, volatility marks of all overloads) for each `pg_catalog`
/// function in `names`.
fn volatility(psql: &mut Command, names: &[&str]) -> Vec<(String, String)> {
    let list = names
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(",");
    let query = format!(
        "SELECT proname, string_agg(DISTINCT provolatile::text, '' ORDER BY provolatile::text) \
         FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace \
         AND proname IN ({list}) GROUP BY proname ORDER BY proname"
    );
    let output = check(psql.arg("-c").arg(query).output(), "psql");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(name, marks)| (name.to_owned(), marks.to_owned()))
        .collect()
}

#[test]
fn catalogue_matches_postgres_volatility() {
    let bin = PathBuf::from(
        std::env::var("STEPGATE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    );
    if !bin.join("initdb").exists() {
        eprintln!(
            "skipped: no PostgreSQL at {}; set STEPGATE_PG_BIN",
            bin.display()
        );
        return;
    }
    let run_as = if is_root() {
        if !user_exists("postgres") {
            eprintln!("skipped: initdb refuses root and there is no postgres user to run it");
            return;
        }
        Some("postgres")
    } else {
        None
    };

    let folder = tempfile::tempdir().unwrap_or_else(|error| panic!("temp folder: {error}"));
    let root = folder.path();
    if let Some(user) = run_as {
        check(Command::new("chown").arg(user).arg(root).output(), "chown");
    }
    let data = root.join("data");
    check(
        command(run_as, &bin.join("initdb"))
            .args(["--no-sync", "--auth=trust", "--username=catalogue", "-D"])
            .arg(&data)
            .output(),
        "initdb",
    );
    // Port 5432 names the socket file only: listen_addresses='' opens no TCP port.
    let child = command(run_as, &bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args([
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=off",
            "-p",
            "5432",
            "-k",
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("postgres failed to start: {error}"));
    let _server = Server(child);

    let psql = || {
        let mut psql = command(run_as, &bin.join("psql"));
        psql.arg("-h").arg(root).args([
            "-p",
            "5432",
            "-U",
            "catalogue",
            "-d",
            "postgres",
            "-At",
            "-X",
        ]);
        psql
    };
    let started = Instant::now();
    while !psql()
        .args(["-c", "SELECT 1"])
        .output()
        .is_ok_and(|output| output.status.success())
    {
        assert!(
            started.elapsed() < SERVER_START_TIMEOUT,
            "PostgreSQL did not accept connections within {SERVER_START_TIMEOUT:?}"
        );
        sleep(Duration::from_millis(200));
    }

    let pure = volatility(&mut psql(), DEFAULT_PURE_FUNCTIONS);
    let missing: Vec<&&str> = DEFAULT_PURE_FUNCTIONS
        .iter()
        .filter(|name| !pure.iter().any(|(found, _)| found == *name))
        .collect();
    assert!(
        missing.is_empty(),
        "pure functions unknown to PostgreSQL: {missing:?}"
    );
    let volatile: Vec<&(String, String)> = pure
        .iter()
        .filter(|(_, marks)| marks.contains('v'))
        .collect();
    assert!(
        volatile.is_empty(),
        "pure functions with a volatile overload: {volatile:?}"
    );

    let side_effects = volatility(&mut psql(), SIDE_EFFECT_FUNCTIONS);
    assert!(!side_effects.is_empty());
    // These two are marked stable but assign a transaction ID to a
    // transaction that has none, which is why the side-effect list
    // overrides volatility marks.
    let not_volatile: Vec<&str> = side_effects
        .iter()
        .filter(|(_, marks)| marks != "v")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(not_volatile, ["pg_current_xact_id", "txid_current"]);
}
