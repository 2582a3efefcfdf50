//! A real PostgreSQL server as the independent implementation of both
//! sides: its `pg_authid.rolpassword` must parse and verify, it must accept
//! a credential this crate formats, and [`ClientExchange`] must log in to it
//! over TCP.
//!
//! The test starts a throwaway server with `initdb` in a temporary folder,
//! listening on 127.0.0.1 at a free port with `scram-sha-256` authentication
//! for TCP, and on a Unix socket in that folder with `trust` for `psql`.
//! initdb refuses to run as root, so under root the server runs as the
//! `postgres` user through `setpriv`. Without PostgreSQL binaries
//! (`STEPGATE_PG_BIN`, default `/usr/lib/postgresql/15/bin`) or, under root,
//! without a `postgres` user, the test prints why and passes without
//! checking. The login speaks protocol 3.0 by hand: StartupMessage,
//! AuthenticationSASL, SASLInitialResponse, AuthenticationSASLContinue,
//! SASLResponse, AuthenticationSASLFinal and AuthenticationOk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use stepgate_scram::{ClientExchange, Error, StoredCredential};

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const BOT_PASSWORD: &str = "sgt_7Hq2-Lm9~Xv4 Pw8!Zr3";

/// Stops the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds a command that runs `program` as `run_as`. setpriv execs the
/// program in place, so killing the child stops the server itself.
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

/// A running throwaway server.
struct Postgres {
    bin: PathBuf,
    run_as: Option<&'static str>,
    socket_dir: PathBuf,
    port: u16,
    _server: Server,
    _folder: tempfile::TempDir,
}

impl Postgres {
    /// Starts the server, or returns `None` (after printing why) when the
    /// machine has no PostgreSQL to run.
    fn start() -> Option<Postgres> {
        let bin = PathBuf::from(
            std::env::var("STEPGATE_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        if !bin.join("initdb").exists() {
            eprintln!(
                "skipped: no PostgreSQL at {}; set STEPGATE_PG_BIN",
                bin.display()
            );
            return None;
        }
        let run_as = if is_root() {
            if !user_exists("postgres") {
                eprintln!("skipped: initdb refuses root and there is no postgres user to run it");
                return None;
            }
            Some("postgres")
        } else {
            None
        };

        let folder = tempfile::tempdir().unwrap();
        let root = folder.path().to_path_buf();
        if let Some(user) = run_as {
            check(Command::new("chown").arg(user).arg(&root).output(), "chown");
        }
        let data = root.join("data");
        check(
            command(run_as, &bin.join("initdb"))
                .args([
                    "--no-sync",
                    "--username=postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-D",
                ])
                .arg(&data)
                .output(),
            "initdb",
        );
        // initdb wrote its own pg_hba.conf, which the server owns; replace its
        // content through a command run as the server's user.
        let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let mut write_hba = command(run_as, Path::new("/usr/bin/tee"))
            .arg(data.join("pg_hba.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        write_hba
            .stdin
            .take()
            .unwrap()
            .write_all(hba.as_bytes())
            .unwrap();
        assert!(write_hba.wait().unwrap().success());

        let port = free_port();
        let child = command(run_as, &bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "password_encryption=scram-sha-256",
                "-c",
                "fsync=off",
                "-p",
                &port.to_string(),
                "-k",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("postgres failed to start: {error}"));
        let postgres = Postgres {
            bin,
            run_as,
            socket_dir: root,
            port,
            _server: Server(child),
            _folder: folder,
        };

        let started = Instant::now();
        while !postgres
            .psql()
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
        Some(postgres)
    }

    /// Returns `psql` as the superuser over the Unix socket.
    fn psql(&self) -> Command {
        let mut psql = command(self.run_as, &self.bin.join("psql"));
        psql.arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-At", "-X"])
            .args(["-v", "ON_ERROR_STOP=1"]);
        psql
    }

    /// Runs one SQL statement and returns its output without the final
    /// newline.
    fn sql(&self, statement: &str) -> String {
        let output = check(self.psql().args(["-c", statement]).output(), "psql");
        String::from_utf8(output.stdout)
            .unwrap()
            .trim_end()
            .to_owned()
    }
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend message: its type byte and body.
struct BackendMessage {
    kind: u8,
    body: Vec<u8>,
}

fn read_message(stream: &mut TcpStream) -> BackendMessage {
    let mut header = [0; 5];
    stream.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!((4..1 << 20).contains(&len), "bad message length {len}");
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).unwrap();
    BackendMessage {
        kind: header[0],
        body,
    }
}

/// Writes a frontend message with a type byte.
fn write_message(stream: &mut TcpStream, kind: u8, body: &[u8]) {
    let mut message = vec![kind];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    stream.write_all(&message).unwrap();
}

fn write_startup(stream: &mut TcpStream, user: &str) {
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (name, value) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = (body.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message).unwrap();
}

/// Returns the authentication request code and its data, or panics with
/// the server's error.
fn read_authentication(stream: &mut TcpStream) -> (u32, Vec<u8>) {
    let message = read_message(stream);
    match message.kind {
        b'R' => {
            let code = u32::from_be_bytes(message.body[..4].try_into().unwrap());
            (code, message.body[4..].to_vec())
        }
        b'E' => panic!("server error: {}", error_fields(&message.body)),
        other => panic!("unexpected message type {:?}", other as char),
    }
}

/// Formats the fields of an ErrorResponse as "S=... C=... M=...".
fn error_fields(body: &[u8]) -> String {
    body.split(|byte| *byte == 0)
        .filter(|field| !field.is_empty())
        .map(|field| format!("{}={}", field[0] as char, String::from_utf8_lossy(&field[1..])))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Result of a login attempt that reached the server's verdict.
#[derive(Debug, PartialEq)]
enum Login {
    /// The server sent AuthenticationOk and ReadyForQuery, after the client
    /// verified its server signature.
    Accepted,
    /// The server sent an ErrorResponse with this SQLSTATE after the
    /// client-final-message.
    Rejected(String),
}

/// Logs in as `user` with `password` and this crate's client.
fn login(port: u16, user: &str, password: &str) -> Result<Login, Error> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    write_startup(&mut stream, user);

    let (code, data) = read_authentication(&mut stream);
    assert_eq!(code, 10, "expected AuthenticationSASL");
    let mechanisms: Vec<&str> = data
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| std::str::from_utf8(name).unwrap())
        .collect();
    assert_eq!(mechanisms, ["SCRAM-SHA-256"], "no TLS, so no PLUS");

    let mut client = ClientExchange::negotiate(mechanisms, password, None)?;
    let client_first = client.client_first()?;
    let mut initial = client.mechanism().name().as_bytes().to_vec();
    initial.push(0);
    initial.extend_from_slice(&(client_first.len() as u32).to_be_bytes());
    initial.extend_from_slice(client_first.as_bytes());
    write_message(&mut stream, b'p', &initial);

    let (code, server_first) = read_authentication(&mut stream);
    assert_eq!(code, 11, "expected AuthenticationSASLContinue");
    let client_final = client.handle_server_first(&server_first)?;
    write_message(&mut stream, b'p', client_final.as_bytes());

    let message = read_message(&mut stream);
    if message.kind == b'E' {
        let fields = error_fields(&message.body);
        let code = fields
            .split(' ')
            .find_map(|field| field.strip_prefix("C="))
            .unwrap_or_default()
            .to_owned();
        return Ok(Login::Rejected(code));
    }
    assert_eq!(message.kind, b'R');
    assert_eq!(message.body[..4], 12u32.to_be_bytes(), "expected SASLFinal");
    client.handle_server_final(&message.body[4..])?;
    let (code, _) = read_authentication(&mut stream);
    assert_eq!(code, 0, "expected AuthenticationOk");
    loop {
        let message = read_message(&mut stream);
        match message.kind {
            b'Z' => break,
            b'E' => panic!("server error: {}", error_fields(&message.body)),
            _ => {}
        }
    }
    write_message(&mut stream, b'X', &[]);
    Ok(Login::Accepted)
}

#[test]
fn postgres_credentials_and_login() {
    let Some(postgres) = Postgres::start() else {
        return;
    };

    // The server hashes the password itself; this crate reads the result.
    postgres.sql(&format!(
        "CREATE ROLE bot LOGIN PASSWORD '{BOT_PASSWORD}'"
    ));
    let rolpassword = postgres.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'bot'");
    assert!(rolpassword.starts_with("SCRAM-SHA-256$4096:"), "{rolpassword}");
    let credential = StoredCredential::parse(&rolpassword).unwrap();
    assert_eq!(credential.iterations(), 4096);
    assert_eq!(credential.format(), rolpassword);
    assert!(credential.verify_password(BOT_PASSWORD));
    assert!(!credential.verify_password("sgt_wrong"));

    // This crate hashes the password; the server stores the text as is and
    // must accept a login with the password.
    let ours = StoredCredential::generate("sgt_ours-5Kd9", 8192).unwrap();
    postgres.sql(&format!(
        "CREATE ROLE ours LOGIN PASSWORD '{}'",
        ours.format()
    ));
    let stored = postgres.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'ours'");
    assert_eq!(stored, ours.format());

    assert_eq!(
        login(postgres.port, "bot", BOT_PASSWORD).unwrap(),
        Login::Accepted
    );
    assert_eq!(
        login(postgres.port, "ours", "sgt_ours-5Kd9").unwrap(),
        Login::Accepted
    );
    // 28P01 is invalid_password.
    assert_eq!(
        login(postgres.port, "bot", "sgt_wrong").unwrap(),
        Login::Rejected("28P01".into())
    );
    assert_eq!(
        login(postgres.port, "ours", BOT_PASSWORD).unwrap(),
        Login::Rejected("28P01".into())
    );
    // PostgreSQL runs a mock exchange for a role that does not exist, and
    // fails it at the proof like a wrong password.
    assert_eq!(
        login(postgres.port, "nobody", BOT_PASSWORD).unwrap(),
        Login::Rejected("28P01".into())
    );
}
