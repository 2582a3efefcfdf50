//! Test support: a recording upstream, a gateway process started from the
//! built binary, and the real clients (curl, oathtool, sqlite3, python3).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod pg;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

pub const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An upstream HTTP server on loopback that records every request and
/// answers 200 with a small JSON body.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            if request.uri().path().starts_with("/slow") {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes().to_vec())
                                .unwrap_or_default();
                            let headers = parts
                                .headers
                                .iter()
                                .map(|(n, v)| {
                                    (
                                        n.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            // `/big/N` returns N bytes, for data-volume tests.
                            let size = parts
                                .uri
                                .path()
                                .strip_prefix("/big/")
                                .and_then(|n| n.parse::<usize>().ok());
                            recorded.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers,
                                body,
                            });
                            let answer = match size {
                                Some(size) => Bytes::from(vec![b'x'; size]),
                                None => Bytes::from_static(b"{\"ok\":true}\n"),
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(answer)))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Returns two different free ports. Each is free when returned, and the
/// system can hand out a port again once its listener closes, so the two
/// are held open together.
pub fn two_free_ports() -> (u16, u16) {
    let first = StdListener::bind("127.0.0.1:0").unwrap();
    let second = StdListener::bind("127.0.0.1:0").unwrap();
    (
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    )
}

/// A gateway process with its own data directory and config file.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    child: Option<Child>,
}

impl Gateway {
    /// Writes a config routing `/` to `upstream` (plus `extra` TOML) and
    /// prepares the data directory; the gateway is not started yet.
    pub fn new(upstream: SocketAddr, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = two_free_ports();
        let config = dir.path().join("stepgate.toml");
        let text = format!(
            r#"
[gateway]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
trusted_proxies = []

[admin]
listen = "127.0.0.1:{admin_port}"

[[routes]]
prefix = "/"
upstream = "http://{upstream}"

[[zones]]
name = "reports"
prefix = "/reports"
read_only = true

[risk]
learning_requests = 5
{extra}
"#,
            data = dir.path().join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            config,
            port,
            admin_port,
            child: None,
        }
    }

    /// Returns a replica: a second gateway process that shares this one's
    /// config and data directory (store and keys) on its own ports.
    pub fn replica(&self) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = two_free_ports();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text
            .replace(
                &format!("127.0.0.1:{}", self.port),
                &format!("127.0.0.1:{port}"),
            )
            .replace(
                &format!("127.0.0.1:{}", self.admin_port),
                &format!("127.0.0.1:{admin_port}"),
            );
        let config = dir.path().join("stepgate.toml");
        std::fs::write(&config, text).unwrap();
        Gateway {
            dir,
            config,
            port,
            admin_port,
            child: None,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("stepgate.db")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Runs a CLI command against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a CLI command that must succeed and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "stepgate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Lets `proxy` name the client in forwarded headers.
    pub fn trust_proxy(&self, proxy: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace(
            "trusted_proxies = []",
            &format!("trusted_proxies = [\"{proxy}\"]"),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Makes five allowed requests to `/orders/N` from 127.0.0.2 with the
    /// `Authorization` header `auth`: the identity's learning period.
    pub fn learn(&self, auth: &str) {
        for i in 0..5 {
            let response = curl(
                "127.0.0.2",
                &self.url(&format!("/orders/{i}")),
                &["-H", auth],
            );
            assert_eq!(response.status, 200, "{}", response.body);
        }
    }

    /// Adds an identity with a token and no factor; returns the token.
    pub fn add_with_token(&self, name: &str) -> String {
        self.cli_ok(&["identity", "add", name]);
        self.cli_ok(&["token", "issue", name]).trim().to_owned()
    }

    /// Adds an identity with a token and a TOTP factor; returns the token
    /// and the base32 TOTP secret.
    pub fn enrol(&self, name: &str) -> (String, String) {
        self.cli_ok(&["identity", "add", name]);
        let token = self.cli_ok(&["token", "issue", name]).trim().to_owned();
        let uri = self
            .cli_ok(&["factor", "enroll", "totp", name])
            .trim()
            .to_owned();
        let secret = uri
            .split(['?', '&'])
            .find_map(|part| part.strip_prefix("secret="))
            .expect("otpauth URI has a secret")
            .to_owned();
        (token, secret)
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("STEPGATE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not start; log:\n{}", self.log());
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "gateway exited with {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not stop after SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Every audit record, parsed.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.cli_ok(&["audit", "export", "--format", "jsonl"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A curl response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct CurlResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.body))
    }
}

/// Runs curl from source address `from` with extra arguments.
pub fn curl(from: &str, url: &str, args: &[&str]) -> CurlResponse {
    try_curl(from, url, args).unwrap_or_else(|err| panic!("curl {url} failed: {err}"))
}

/// Runs curl like [`curl`]; returns curl's error output when it fails,
/// such as when a TLS handshake is rejected.
pub fn try_curl(from: &str, url: &str, args: &[&str]) -> Result<CurlResponse, String> {
    let output = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "--interface", from])
        .args(args)
        .arg(url)
        .output()
        .expect("curl must be installed (Debian package curl)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(parse_curl(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_curl(text: &str) -> CurlResponse {
    // With --http2 or a 100 Continue there can be several heads; the last wins.
    let mut rest = text;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        if body.starts_with("HTTP/") {
            rest = body;
            continue;
        }
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return CurlResponse {
            status,
            headers,
            body: body.to_owned(),
        };
    }
}

/// The current TOTP code from oathtool, an independent implementation.
pub fn oathtool(secret: &str) -> String {
    let output = Command::new("oathtool")
        .args(["--totp", "-b", secret])
        .output()
        .expect("oathtool must be installed (Debian package oathtool)");
    assert!(
        output.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Waits until a code from the next TOTP step is available, so that two
/// step-ups in one test never need the same code.
pub fn next_totp_code(secret: &str, after: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let code = oathtool(secret);
        if code != after {
            return code;
        }
        assert!(Instant::now() < deadline, "TOTP code did not change");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits for a running gateway to load administrative changes.
pub fn wait_for_reload() {
    std::thread::sleep(Duration::from_millis(1200));
}

pub fn sqlite3(db: &Path, sql: &str) -> String {
    let output = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 must be installed (Debian package sqlite3)");
    assert!(
        output.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A python3 that can import requests: Debian's first, then PATH.
pub fn python_with_requests() -> String {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import requests"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return candidate.to_owned();
        }
    }
    panic!("no python3 with requests: install the Debian package python3-requests");
}

/// Sends raw bytes to the gateway and returns everything it answers until
/// it closes the connection or five seconds pass.
pub fn raw_request(port: u16, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Status code of the first response in a raw answer, 0 when there is none.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
