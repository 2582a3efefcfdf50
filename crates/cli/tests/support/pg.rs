//! A real PostgreSQL 15 server with an `app` database and a gateway in
//! front of it, for the PostgreSQL gateway's end-to-end tests.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use stepgate_testpg::{Options, Postgres};

use super::{Gateway, free_port};

pub const ROLE: &str = "app_rw";
pub const ROLE_PASSWORD: &str = "role-password-9f3b";
pub const DATABASE: &str = "app";

/// A database with tables and a gateway in front of it.
pub struct Setup {
    pub postgres: Postgres,
    pub gateway: Gateway,
    pub pg_port: u16,
    pub token: String,
    pub totp: String,
}

/// Starts PostgreSQL with the `app` database owned by `app_rw`, and a
/// gateway whose `ci-bot` identity works as `app_rw`. `extra` is added to
/// the gateway's config. Returns `None` when PostgreSQL is not installed.
pub fn setup(extra: &str) -> Option<Setup> {
    setup_with(
        Options::default(),
        "",
        |_| "host = \"127.0.0.1\"\ntls = \"disable\"".to_owned(),
        extra,
    )
}

/// Like [`setup`], with the server started with `options`, `postgres` keys
/// (such as `require_tls = true`) added to the gateway's `[postgres]`
/// table, and the `host` and TLS keys that `upstream` returns for the
/// started server in its `[postgres.upstream]` table.
pub fn setup_with(
    options: Options,
    postgres_keys: &str,
    upstream: impl Fn(&Postgres) -> String,
    extra: &str,
) -> Option<Setup> {
    let postgres = Postgres::start(options)?;
    let upstream = upstream(&postgres);
    postgres.create_role(ROLE, ROLE_PASSWORD);
    postgres.create_database(DATABASE, ROLE);
    let mut psql = postgres.psql();
    psql.args(["-d", DATABASE, "-c"]).arg(format!(
        "SET ROLE {ROLE}; \
         CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL); \
         INSERT INTO orders SELECT n, n * 10 FROM generate_series(1, 50) n; \
         CREATE TABLE payouts (id serial PRIMARY KEY, amount int NOT NULL);"
    ));
    let output = psql.output().unwrap();
    assert!(output.status.success(), "{output:?}");

    let pg_port = free_port();
    // An HTTP upstream is required by the config; nothing listens there.
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut gateway = Gateway::new(
        nowhere,
        &format!(
            r#"
[[zones]]
name = "payouts"
prefix = "/postgres/{DATABASE}/public/payouts"
approval_for = ["write"]

[postgres]
listen = "127.0.0.1:{pg_port}"
{postgres_keys}

[postgres.upstream]
port = {port}
{upstream}
pool_size = 4

[[postgres.roles]]
name = "{ROLE}"
password_file = "role-password"

[[postgres.identities]]
identity = "ci-bot"
role = "{ROLE}"
databases = ["{DATABASE}"]
{extra}
"#,
            port = postgres.port()
        ),
    );
    std::fs::write(
        gateway.dir.path().join("role-password"),
        format!("{ROLE_PASSWORD}\n"),
    )
    .unwrap();
    let (token, totp) = gateway.enrol("ci-bot");
    gateway.start();
    wait_for_port(pg_port);
    Some(Setup {
        postgres,
        gateway,
        pg_port,
        token,
        totp,
    })
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "PostgreSQL listener not up");
        thread::sleep(Duration::from_millis(50));
    }
}

impl Setup {
    /// Runs `sql` in the `app` database directly, as the superuser.
    pub fn app_sql(&self, sql: &str) -> String {
        let output = self
            .postgres
            .psql()
            .args(["-d", DATABASE, "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// psql through the gateway as `user` with `password`, run as the
    /// current user with its own HOME so no client certificate is looked
    /// up.
    pub fn psql_as(&self, user: &str, password: &str, sql: &str) -> Output {
        let home = self.gateway.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        Command::new(self.postgres.bin("psql"))
            .env("HOME", &home)
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
            .args([
                "-U",
                user,
                "-d",
                DATABASE,
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .output()
            .unwrap()
    }

    pub fn psql(&self, sql: &str) -> Output {
        self.psql_as("ci-bot", &self.token, sql)
    }

    pub fn psql_ok(&self, sql: &str) -> String {
        let output = self.psql(sql);
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}\ngateway log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            tail(&self.gateway.log())
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Runs psql with a script on stdin: several statements in one session.
    pub fn psql_script(&self, script: &str) -> Output {
        use std::io::Write;
        let home = self.gateway.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(self.postgres.bin("psql"))
            .env("HOME", &home)
            .env("PGPASSWORD", &self.token)
            .env("PGSSLMODE", "disable")
            .args(["-h", "127.0.0.1", "-p", &self.pg_port.to_string()])
            .args(["-U", "ci-bot", "-d", DATABASE, "-X", "-At"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits up to 10 s for an audit record that `matches`, and returns it.
/// Allow records are written behind the statement's answer.
pub fn wait_for_record(
    gateway: &Gateway,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = gateway
            .audit()
            .into_iter()
            .rev()
            .find(|record| matches(record))
        {
            return record;
        }
        assert!(Instant::now() < deadline, "no matching audit record");
        thread::sleep(Duration::from_millis(100));
    }
}
