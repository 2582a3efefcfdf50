//! A throwaway PostgreSQL server for integration tests.
//!
//! [`Postgres::start`] runs `initdb` in a new temporary folder and starts the
//! server on it. The server listens on 127.0.0.1 at a free port, where every
//! login needs a `scram-sha-256` password, and on a Unix socket in the
//! temporary folder, where every login is trusted. initdb refuses to run as
//! root, so under root the server and [`Postgres::psql`] run as the
//! `postgres` user through `setpriv`. Dropping the [`Postgres`] kills the
//! server and removes the folder.
//!
//! Two environment variables control where the server comes from:
//!
//! - `STEPGATE_PG_BIN` is the folder of the PostgreSQL binaries, by default
//!   `/usr/lib/postgresql/15/bin`.
//! - `STEPGATE_REQUIRE_POSTGRES=1` makes [`Postgres::start`] panic with the
//!   reason when PostgreSQL cannot run on this machine. Without it, `start`
//!   prints the reason and returns `None`, so the test can pass without
//!   checking anything.
//!
//! ```no_run
//! use stepgate_testpg::{Options, Postgres};
//!
//! let Some(postgres) = Postgres::start(Options::default()) else {
//!     return;
//! };
//! postgres.create_role("bot", "correct horse");
//! postgres.create_database("inventory", "bot");
//! assert_eq!(postgres.sql("SELECT 1"), "1");
//! ```

#![allow(
    clippy::panic,
    reason = "a test helper reports a broken setup by panicking, as an assertion does"
)]

mod certificates;
mod process;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub use certificates::Certificates;
use certificates::make_certificates;
use process::{command, is_root, program_exists, run, user_exists};

/// Environment variable with the folder of the PostgreSQL binaries.
pub const BIN_VARIABLE: &str = "STEPGATE_PG_BIN";
/// Folder of the PostgreSQL binaries when [`BIN_VARIABLE`] is not set: the
/// location of Debian's `postgresql-15` package.
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Environment variable that, set to `1`, turns a skipped start into a panic.
pub const REQUIRE_VARIABLE: &str = "STEPGATE_REQUIRE_POSTGRES";

/// Name of the superuser that initdb creates.
const SUPERUSER: &str = "postgres";
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const HOST_TEXT: &str = "127.0.0.1";
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Maximum number of server starts, because another process can take the
/// port between [`free_port`] and the server's bind.
const START_ATTEMPTS: u32 = 3;
/// What PostgreSQL 15 logs before it exits when it cannot bind its port. The
/// log is in English because initdb runs with `--locale=C`.
const BIND_FAILED: &str = "could not create any TCP/IP sockets";

/// How to set up the server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serves TLS with a certificate signed by a new test CA (see
    /// [`Certificates`]). Clients may still connect without TLS.
    pub tls: bool,
    /// Extra `postgresql.conf` settings as `name=value`, each passed to the
    /// server with `-c` after the defaults, so they override them.
    pub settings: Vec<String>,
    /// Extra `pg_hba.conf` lines placed before the default lines. The server
    /// uses the first line that matches a connection, so these take
    /// precedence, as `host all gateway 127.0.0.1/32 trust` does for the
    /// role `gateway`.
    pub hba: Vec<String>,
}

/// A running throwaway server. Dropping it kills the server and removes its
/// temporary folder.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    run_as: Option<&'static str>,
    /// The temporary folder, which contains the data folder, the Unix
    /// socket, the server log and the TLS files.
    folder: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    certificates: Option<Certificates>,
    /// Declared before `_temp_dir` so the server is killed before its folder
    /// is removed.
    _server: Server,
    _temp_dir: tempfile::TempDir,
}

/// Kills the server process when dropped.
#[derive(Debug)]
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Postgres {
    /// Starts a server set up by `options` and waits until it accepts
    /// connections.
    ///
    /// Returns `None`, after printing the reason to stderr, when the
    /// PostgreSQL binaries are missing, when running as root without a
    /// `postgres` user or `setpriv`, or when `options.tls` is set and
    /// `openssl` is missing. With `STEPGATE_REQUIRE_POSTGRES=1` those cases
    /// panic instead. Panics when a step of the setup fails or the server
    /// does not accept connections within 30 seconds, with the server log in
    /// the message.
    pub fn start(options: Options) -> Option<Postgres> {
        let bin = std::env::var_os(BIN_VARIABLE)
            .map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
        let required = std::env::var_os(REQUIRE_VARIABLE).is_some_and(|value| value == "1");
        match check_prerequisites(&bin, options.tls) {
            Ok(run_as) => Some(Self::start_checked(bin, run_as, &options)),
            Err(reason) if required => {
                panic!("PostgreSQL is required ({REQUIRE_VARIABLE}=1) but {reason}")
            }
            Err(reason) => {
                eprintln!("skipped: {reason}");
                None
            }
        }
    }

    fn start_checked(bin: PathBuf, run_as: Option<&'static str>, options: &Options) -> Postgres {
        let temp_dir = tempfile::Builder::new()
            .prefix("stepgate-testpg-")
            .tempdir()
            .unwrap_or_else(|error| panic!("creating a temporary folder failed: {error}"));
        let folder = temp_dir.path().to_path_buf();
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(&folder));
        }

        let data_dir = folder.join("data");
        run(command(run_as, &bin.join("initdb"))
            .arg("--no-sync")
            .arg(format!("--username={SUPERUSER}"))
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--encoding=UTF8", "--locale=C", "-D"])
            .arg(&data_dir));
        write_hba(&data_dir, &options.hba);

        let certificates = options.tls.then(|| make_certificates(&folder, run_as));
        let mut settings = vec![
            format!("listen_addresses={HOST_TEXT}"),
            "password_encryption=scram-sha-256".to_owned(),
            "fsync=off".to_owned(),
        ];
        if let Some(files) = &certificates {
            settings.push("ssl=on".to_owned());
            settings.push(format!("ssl_cert_file={}", files.server_cert.display()));
            settings.push(format!("ssl_key_file={}", files.server_key.display()));
        }
        settings.extend(options.settings.iter().cloned());

        let log_path = folder.join("server.log");
        let mut attempt = 1;
        let (server, port) = loop {
            let port = free_port();
            let log = File::create(&log_path)
                .unwrap_or_else(|error| panic!("creating {} failed: {error}", log_path.display()));
            let mut postgres = command(run_as, &bin.join("postgres"));
            postgres.arg("-D").arg(&data_dir);
            for setting in &settings {
                postgres.arg("-c").arg(setting);
            }
            let child = postgres
                .args(["-p", &port.to_string(), "-k"])
                .arg(&folder)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("{postgres:?} failed to start: {error}"));
            let mut server = Server(child);

            let psql = || psql_command(&bin, run_as, &folder, port);
            let Err(status) = wait_until_ready(&mut server.0, psql, &log_path) else {
                break (server, port);
            };
            let log = read_log(&log_path);
            if log.contains(BIND_FAILED) && attempt < START_ATTEMPTS {
                attempt += 1;
                continue;
            }
            panic!("PostgreSQL exited with {status} while starting. Server log:\n{log}");
        };

        Postgres {
            bin,
            run_as,
            folder,
            data_dir,
            log_path,
            port,
            certificates,
            _server: server,
            _temp_dir: temp_dir,
        }
    }

    /// Returns the server's TCP port on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the address the server listens on for TCP: `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST_TEXT
    }

    /// Returns the server's TCP address, `127.0.0.1` and [`port`](Self::port).
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((HOST, self.port))
    }

    /// Returns the path of a program in the PostgreSQL binaries folder, such
    /// as `bin("pgbench")`.
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    /// Returns the folder of the server's Unix socket, where every login is
    /// trusted. The socket file is `.s.PGSQL.<port>` in it.
    pub fn socket_dir(&self) -> &Path {
        &self.folder
    }

    /// Returns the server's data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Returns the name of the superuser: `postgres`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// Returns the user that the server and [`psql`](Self::psql) run as,
    /// `postgres` under root, or `None` when they run as the current user.
    pub fn run_as(&self) -> Option<&str> {
        self.run_as
    }

    /// Returns the TLS files when the server was started with
    /// [`Options::tls`].
    pub fn certificates(&self) -> Option<&Certificates> {
        self.certificates.as_ref()
    }

    /// Returns what the server has written to stderr so far, which includes
    /// its log.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// Returns a `psql` command that logs in as the superuser to the
    /// `postgres` database over the Unix socket, with unaligned tuples-only
    /// output (`-At`), without `.psqlrc` (`-X`) and with `ON_ERROR_STOP=1`.
    /// Under root it runs as the [`run_as`](Self::run_as) user.
    pub fn psql(&self) -> Command {
        psql_command(&self.bin, self.run_as, &self.folder, self.port)
    }

    /// Runs `statement` with `psql -c` as the superuser and returns its
    /// output without trailing whitespace: one line per row, columns
    /// separated by `|`. Of several statements separated by semicolons only
    /// the last one's output is returned. Panics with psql's output when
    /// the statement fails.
    pub fn sql(&self, statement: &str) -> String {
        let output = run(self.psql().arg("-c").arg(statement));
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned()
    }

    /// Creates a role that can log in with `password`, which the server
    /// stores as a SCRAM-SHA-256 secret whatever `password_encryption` is
    /// set to. A password already in PostgreSQL's SCRAM secret format
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) is
    /// stored unchanged.
    pub fn create_role(&self, name: &str, password: &str) {
        self.sql(&format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE {} LOGIN PASSWORD {}",
            quote_identifier(name),
            quote_literal(password)
        ));
    }

    /// Creates a database owned by the role `owner`.
    pub fn create_database(&self, name: &str, owner: &str) {
        self.sql(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote_identifier(name),
            quote_identifier(owner)
        ));
    }
}

/// Returns a port on 127.0.0.1 that was free a moment ago. Another process
/// can take it before the caller binds it.
pub fn free_port() -> u16 {
    TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("binding a free port on {HOST} failed: {error}"))
        .port()
}

/// Quotes `name` as an SQL identifier, doubling each `"` in it.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes `value` as an SQL string literal, doubling each `'` in it.
/// Backslashes are left as they are, which is correct while
/// `standard_conforming_strings` is on, as it is by default.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Returns the user to run the server as, or the reason why the server
/// cannot run on this machine.
fn check_prerequisites(bin: &Path, tls: bool) -> Result<Option<&'static str>, String> {
    for program in ["initdb", "postgres", "psql"] {
        let path = bin.join(program);
        if !path.exists() {
            return Err(format!(
                "{} was not found; set {BIN_VARIABLE} to the folder of the PostgreSQL binaries",
                path.display()
            ));
        }
    }

    let run_as = if is_root() {
        if !user_exists(SUPERUSER) {
            return Err(format!(
                "initdb refuses to run as root and there is no {SUPERUSER} user to run it as"
            ));
        }
        if !program_exists("setpriv", "--version") {
            return Err(format!(
                "initdb refuses to run as root and setpriv, which runs it as {SUPERUSER}, \
                 was not found"
            ));
        }
        Some(SUPERUSER)
    } else {
        None
    };

    if tls && !program_exists("openssl", "version") {
        return Err("openssl, which makes the TLS certificates, was not found".to_owned());
    }
    Ok(run_as)
}

/// Replaces the `pg_hba.conf` that initdb wrote with `extra` lines followed
/// by trust on the Unix socket and SCRAM on 127.0.0.1. Writing to the
/// existing file keeps its owner and mode, so under root the server can still
/// read it.
fn write_hba(data_dir: &Path, extra: &[String]) {
    let mut hba = String::new();
    for line in extra {
        hba.push_str(line);
        hba.push('\n');
    }
    hba.push_str("local all all trust\n");
    hba.push_str(&format!("host all all {HOST_TEXT}/32 scram-sha-256\n"));
    let path = data_dir.join("pg_hba.conf");
    std::fs::write(&path, hba)
        .unwrap_or_else(|error| panic!("writing {} failed: {error}", path.display()));
}

fn psql_command(bin: &Path, run_as: Option<&str>, socket_dir: &Path, port: u16) -> Command {
    let mut psql = command(run_as, &bin.join("psql"));
    psql.arg("-h")
        .arg(socket_dir)
        .args(["-p", &port.to_string()])
        .args(["-U", SUPERUSER, "-d", "postgres", "-At", "-X"])
        .args(["-v", "ON_ERROR_STOP=1"]);
    psql
}

/// Waits until `SELECT 1` through `psql` succeeds. Returns the server's exit
/// status when it exits first, and panics with the server log when
/// [`START_TIMEOUT`] passes.
fn wait_until_ready(
    server: &mut Child,
    psql: impl Fn() -> Command,
    log_path: &Path,
) -> Result<(), ExitStatus> {
    let started = Instant::now();
    loop {
        let ready = psql()
            .args(["-c", "SELECT 1"])
            .output()
            .is_ok_and(|output| output.status.success());
        if ready {
            return Ok(());
        }
        match server.try_wait() {
            Ok(Some(status)) => return Err(status),
            Ok(None) => {}
            Err(error) => panic!("checking the PostgreSQL process failed: {error}"),
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "PostgreSQL did not accept connections within {START_TIMEOUT:?}. Server log:\n{}",
            read_log(log_path)
        );
        sleep(Duration::from_millis(100));
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read(path).map_or_else(
        |error| format!("(reading {} failed: {error})", path.display()),
        |bytes| String::from_utf8_lossy(&bytes).into_owned(),
    )
}
