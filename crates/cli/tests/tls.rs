//! End-to-end tests of HTTPS and client certificates: the built `stepgate`
//! binary with `[gateway.tls]` and `[admin.tls]`, certificates made by the
//! `openssl` command-line tool, and curl and `openssl s_client` as clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Gateway, Upstream, curl, try_curl};

/// Runs `openssl` in `dir` and panics with its error output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A directory of test CAs, certificates and keys, all P-256.
struct Pki {
    dir: tempfile::TempDir,
    next_serial: u32,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            next_serial: 0x1000,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Makes a self-signed CA `NAME.pem` with key `NAME.key`.
    fn ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/O=Stepgate Test/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// Makes `NAME.pem` and `NAME.key` issued by CA `ca`, with the subject
    /// `subject` (OpenSSL's /TYPE=value form), the subject alternative
    /// names `san` and extended key usage `usage` (serverAuth or
    /// clientAuth). Returns the serial number in hex.
    fn issue(&mut self, ca: &str, name: &str, subject: &str, san: &str, usage: &str) -> String {
        self.next_serial += 1;
        let serial = format!("{:X}", self.next_serial);
        let extensions = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName={san}\n"
        );
        std::fs::write(self.path(&format!("{name}.ext")), extensions).unwrap();
        let dir = self.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &format!("0x{serial}"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        serial
    }

    /// Makes a server certificate for 127.0.0.1 and localhost; returns its
    /// serial number in hex.
    fn server(&mut self, ca: &str, name: &str) -> String {
        self.issue(
            ca,
            name,
            &format!("/CN={name}"),
            "DNS:localhost,IP:127.0.0.1",
            "serverAuth",
        )
    }

    /// Computes the `x5t#S256` thumbprint of `NAME.pem` with openssl and
    /// coreutils' basenc, independently of the gateway.
    fn thumbprint(&self, name: &str) -> String {
        let output = Command::new("sh")
            .current_dir(self.dir.path())
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {name}.pem -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=\\n'"
            ))
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    }
}

/// TOML for a `tls` table at `table` serving `server` from `pki`.
fn tls_table(pki: &Pki, table: &str, server: &str, client_auth: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "\n[{table}]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.path(&format!("{server}.pem")).display(),
        pki.path(&format!("{server}.key")).display(),
    );
    if let Some((mode, ca)) = client_auth {
        text.push_str(&format!(
            "client_ca_file = \"{}\"\nclient_auth = \"{mode}\"\n",
            pki.path(&format!("{ca}.pem")).display()
        ));
    }
    text
}

fn https_url(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

/// curl arguments that trust `ca` and, when given, present `client`.
fn tls_args(pki: &Pki, ca: &str, client: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--cacert".to_owned(),
        pki.path(&format!("{ca}.pem")).display().to_string(),
    ];
    if let Some(client) = client {
        args.push("--cert".to_owned());
        args.push(pki.path(&format!("{client}.pem")).display().to_string());
        args.push("--key".to_owned());
        args.push(pki.path(&format!("{client}.key")).display().to_string());
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Subject and serial of the certificate the server at `port` presents,
/// read by `openssl s_client`.
fn served_certificate(pki: &Pki, port: u16) -> String {
    let output = Command::new("sh")
        .current_dir(pki.dir.path())
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls until the served certificate has `serial`, for at most 10 s.
fn wait_for_serial(pki: &Pki, port: u16, serial: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if served_certificate(pki, port).contains(&format!("serial={serial}")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Replaces `to` with `from` by a rename, as deployment tools do.
fn replace_file(pki: &Pki, from: &str, to: &str) {
    let staged = pki.path(&format!("{to}.new"));
    std::fs::copy(pki.path(from), &staged).unwrap();
    std::fs::rename(&staged, pki.path(to)).unwrap();
}

/// Removes the ANSI colour sequences the text log format adds.
fn without_ansi_colours(log: &str) -> String {
    let mut text = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn https_proxies_to_upstream() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.server("server-ca", "server");
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        &tls_table(&pki, "gateway.tls", "server", None),
    );
    let token = gateway.add_with_token("ci-bot");
    let checked = gateway.cli_ok(&["check-config"]);
    assert!(checked.contains("TLS on (gateway.tls)"), "{checked}");
    gateway.start();
    let args = tls_args(&pki, "server-ca", None);
    let auth = bearer(&token);
    let mut request = strs(&args);
    request.extend(["-H", &auth]);

    let response = curl("127.0.0.2", &https_url(gateway.port, "/orders/1"), &request);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, "{\"ok\":true}\n");
    let seen = upstream.last();
    assert_eq!(seen.path, "/orders/1");
    assert_eq!(seen.header("stepgate-identity"), Some("ci-bot"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    let forwarded = seen.header("forwarded").unwrap();
    assert!(forwarded.contains("proto=https"), "{forwarded}");

    // Without the token the gateway still responds over TLS, with 401.
    let anonymous = curl(
        "127.0.0.2",
        &https_url(gateway.port, "/orders/2"),
        &strs(&args),
    );
    assert_eq!(anonymous.status, 401);

    // Plain HTTP to the TLS listener gets no HTTP response.
    assert!(try_curl("127.0.0.2", &gateway.url("/orders/3"), &[]).is_err());
    // A client that does not trust the server's CA stops the handshake.
    assert!(try_curl("127.0.0.2", &https_url(gateway.port, "/orders/4"), &[]).is_err());
    assert_eq!(upstream.count(), 1);
    gateway.stop();
}

#[test]
fn alpn_selects_http2_or_http1() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.server("server-ca", "server");
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        &tls_table(&pki, "gateway.tls", "server", None),
    );
    let token = gateway.add_with_token("ci-bot");
    gateway.start();
    let auth = bearer(&token);
    for (flag, expected) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--interface", "127.0.0.2"])
            .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .args(["--cacert", pki.path("server-ca.pem").to_str().unwrap()])
            .args([flag, "-H", &auth])
            .arg(https_url(gateway.port, "/orders/1"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{expected} 200"),
            "curl {flag}"
        );
    }
    assert_eq!(upstream.count(), 2);
}

#[test]
fn required_client_auth_rejects_others() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.ca("client-ca");
    pki.ca("other-ca");
    pki.server("server-ca", "server");
    pki.issue(
        "client-ca",
        "client",
        "/O=Stepgate Test/CN=ci-bot",
        "URI:spiffe://example.test/ci-bot,DNS:ci-bot.example.test,email:ci-bot@example.test,IP:127.0.0.2",
        "clientAuth",
    );
    pki.issue(
        "other-ca",
        "stranger",
        "/CN=ci-bot",
        "DNS:ci-bot.example.test",
        "clientAuth",
    );
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        &tls_table(
            &pki,
            "gateway.tls",
            "server",
            Some(("required", "client-ca")),
        ),
    );
    let token = gateway.add_with_token("ci-bot");
    gateway.start();
    let auth = bearer(&token);
    let url = https_url(gateway.port, "/orders/1");

    let with_cert = tls_args(&pki, "server-ca", Some("client"));
    let mut request = strs(&with_cert);
    request.extend(["-H", &auth]);
    let response = curl("127.0.0.2", &url, &request);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(upstream.count(), 1);

    let without = tls_args(&pki, "server-ca", None);
    let mut request = strs(&without);
    request.extend(["-H", &auth]);
    let err = try_curl("127.0.0.2", &url, &request).unwrap_err();
    assert!(!err.is_empty());

    let stranger = tls_args(&pki, "server-ca", Some("stranger"));
    let mut request = strs(&stranger);
    request.extend(["-H", &auth]);
    assert!(try_curl("127.0.0.2", &url, &request).is_err());
    assert_eq!(upstream.count(), 1);

    gateway.stop();
    let log = without_ansi_colours(&gateway.log());
    let thumbprint = pki.thumbprint("client");
    assert!(
        log.contains(&format!("tls.client.x5t_s256={thumbprint}")),
        "thumbprint {thumbprint} not in the log:\n{log}"
    );
    assert!(
        log.contains("tls.client.subject=CN=ci-bot,O=Stepgate Test"),
        "{log}"
    );
    assert!(log.contains("spiffe://example.test/ci-bot"), "{log}");
    assert!(log.contains("ci-bot@example.test"), "{log}");
    assert!(log.contains("\"127.0.0.2\""), "{log}");
    assert!(log.contains("TLS handshake failed"), "{log}");
}

#[test]
fn optional_client_auth_accepts_both() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.ca("client-ca");
    pki.ca("other-ca");
    pki.server("server-ca", "server");
    pki.issue(
        "client-ca",
        "client",
        "/CN=ci-bot",
        "DNS:ci-bot",
        "clientAuth",
    );
    pki.issue(
        "other-ca",
        "stranger",
        "/CN=ci-bot",
        "DNS:ci-bot",
        "clientAuth",
    );
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        &tls_table(
            &pki,
            "gateway.tls",
            "server",
            Some(("optional", "client-ca")),
        ),
    );
    let token = gateway.add_with_token("ci-bot");
    gateway.start();
    let auth = bearer(&token);
    let url = https_url(gateway.port, "/orders/1");

    for client in [Some("client"), None] {
        let args = tls_args(&pki, "server-ca", client);
        let mut request = strs(&args);
        request.extend(["-H", &auth]);
        let response = curl("127.0.0.2", &url, &request);
        assert_eq!(response.status, 200, "{client:?}: {}", response.body);
    }
    // A certificate is still verified when one is presented.
    let args = tls_args(&pki, "server-ca", Some("stranger"));
    let mut request = strs(&args);
    request.extend(["-H", &auth]);
    assert!(try_curl("127.0.0.2", &url, &request).is_err());
    assert_eq!(upstream.count(), 2);
}

#[test]
fn changed_certificate_is_reloaded() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    let first = pki.server("server-ca", "server");
    let second = pki.server("server-ca", "server-2");
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        &tls_table(&pki, "gateway.tls", "server", None),
    );
    let token = gateway.add_with_token("ci-bot");
    gateway.start();
    let served = served_certificate(&pki, gateway.port);
    assert!(served.contains(&format!("serial={first}")), "{served}");
    assert!(served.contains("CN = server"), "{served}");

    // Key first, then certificate: a reload between the two renames loads a
    // mismatched pair, logs an error and keeps the first pair.
    replace_file(&pki, "server-2.key", "server.key");
    replace_file(&pki, "server-2.pem", "server.pem");
    assert!(
        wait_for_serial(&pki, gateway.port, &second),
        "new certificate not served; log:\n{}",
        gateway.log()
    );
    assert!(served_certificate(&pki, gateway.port).contains("CN = server-2"));
    let args = tls_args(&pki, "server-ca", None);
    let auth = bearer(&token);
    let mut request = strs(&args);
    request.extend(["-H", &auth]);
    let response = curl("127.0.0.2", &https_url(gateway.port, "/orders/1"), &request);
    assert_eq!(response.status, 200, "{}", response.body);

    // A broken certificate file keeps the loaded pair in use.
    let log_before = gateway.log().len();
    std::fs::write(
        pki.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway.log()[log_before..].contains("cannot reload the changed TLS files") {
        assert!(Instant::now() < deadline, "no reload error logged");
        std::thread::sleep(Duration::from_millis(200));
    }
    let errors = without_ansi_colours(&gateway.log()[log_before..]);
    assert!(errors.contains("gateway.tls.cert_file"), "{errors}");
    assert!(
        errors.contains(&pki.path("server.pem").display().to_string()),
        "{errors}"
    );
    let served = served_certificate(&pki, gateway.port);
    assert!(served.contains(&format!("serial={second}")), "{served}");
    let response = curl("127.0.0.2", &https_url(gateway.port, "/orders/2"), &request);
    assert_eq!(response.status, 200, "{}", response.body);
    gateway.stop();
}

#[test]
fn admin_listener_serves_tls() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.ca("client-ca");
    pki.server("server-ca", "admin");
    pki.issue(
        "client-ca",
        "scraper",
        "/CN=prometheus",
        "DNS:prometheus",
        "clientAuth",
    );
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(
        upstream.addr,
        &tls_table(&pki, "admin.tls", "admin", Some(("required", "client-ca"))),
    );
    gateway.start();
    let metrics = format!("https://127.0.0.1:{}/metrics", gateway.admin_port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let args = tls_args(&pki, "server-ca", Some("scraper"));
    let response = loop {
        match try_curl("127.0.0.1", &metrics, &strs(&args)) {
            Ok(response) => break response,
            Err(err) => {
                assert!(Instant::now() < deadline, "admin listener: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(response.status, 200);
    assert!(response.body.contains("# EOF"), "{}", response.body);
    let without = tls_args(&pki, "server-ca", None);
    assert!(try_curl("127.0.0.1", &metrics, &strs(&without)).is_err());
    let plain = format!("http://127.0.0.1:{}/metrics", gateway.admin_port);
    assert!(try_curl("127.0.0.1", &plain, &[]).is_err());
    // The proxy listener stays plain HTTP.
    assert_eq!(
        curl("127.0.0.2", &gateway.url("/orders/1"), &[]).status,
        401
    );
    gateway.stop();
}

#[test]
fn silent_client_is_disconnected() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.server("server-ca", "server");
    let upstream = Upstream::start();
    let mut table = tls_table(&pki, "gateway.tls", "server", None);
    table.push_str("handshake_timeout_secs = 1\n");
    let mut gateway = Gateway::new(upstream.addr, &table);
    gateway.start();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    let read = stream.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)),
        "connection still open after {:?}: {read:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    gateway.stop();
    assert!(gateway.log().contains("TLS handshake timed out"));
}

#[test]
fn check_config_names_bad_files() {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.server("server-ca", "server");
    pki.server("server-ca", "other");
    let upstream = Upstream::start();
    for (cert, key, expected) in [
        (
            "missing.pem",
            "server.key",
            "gateway.tls.cert_file: cannot read",
        ),
        ("server.key", "server.key", "contains no certificate"),
        ("server.pem", "other.key", "does not match"),
    ] {
        let table = format!(
            "\n[gateway.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.path(cert).display(),
            pki.path(key).display()
        );
        let gateway = Gateway::new(upstream.addr, &table);
        let output = gateway.cli(&["check-config"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{cert} {key}: {stderr}");
        assert!(stderr.contains(expected), "{cert} {key}: {stderr}");
        assert!(stderr.contains(cert) || stderr.contains(key), "{stderr}");
    }
}

/// Sends `GET path` over HTTPS from `from` with a token and, when given,
/// the client certificate `client`.
fn https_get(
    pki: &Pki,
    gateway: &Gateway,
    from: &str,
    path: &str,
    token: &str,
    client: Option<&str>,
) -> support::CurlResponse {
    let tls = tls_args(pki, "server-ca", client);
    let auth = bearer(token);
    let mut args = strs(&tls);
    args.extend(["-H", auth.as_str()]);
    curl(from, &https_url(gateway.port, path), &args)
}

/// Makes a PKI with a server certificate and three client certificates from
/// one CA: `bot-cert` for deploy-bot, `other-cert` for someone else, and
/// `lookalike-cert`, whose DNS name spells deploy-bot's URI.
fn client_pki() -> Pki {
    let mut pki = Pki::new();
    pki.ca("server-ca");
    pki.ca("client-ca");
    pki.server("server-ca", "server");
    pki.issue(
        "client-ca",
        "bot-cert",
        "/O=Stepgate Test/CN=deploy-bot",
        "URI:spiffe://example.test/deploy-bot",
        "clientAuth",
    );
    pki.issue(
        "client-ca",
        "other-cert",
        "/O=Stepgate Test/CN=other",
        "URI:spiffe://example.test/other",
        "clientAuth",
    );
    pki.issue(
        "client-ca",
        "lookalike-cert",
        "/O=Stepgate Test/CN=lookalike",
        "DNS:spiffe://example.test/deploy-bot",
        "clientAuth",
    );
    pki
}

#[test]
fn bound_certificate_proves_step_up_without_retry() {
    let pki = client_pki();
    let upstream = Upstream::start();
    let tls = tls_table(
        &pki,
        "gateway.tls",
        "server",
        Some(("optional", "client-ca")),
    );
    let mut gateway = Gateway::new(upstream.addr, &tls);
    let token = gateway.add_with_token("deploy-bot");
    let bound = gateway.cli_ok(&[
        "factor",
        "enroll",
        "certificate",
        "deploy-bot",
        "--cert",
        pki.path("bot-cert.pem").to_str().unwrap(),
    ]);
    assert_eq!(
        bound.trim(),
        format!("x5t#S256 {}", pki.thumbprint("bot-cert"))
    );
    gateway.start();
    for i in 0..5 {
        let response = https_get(
            &pki,
            &gateway,
            "127.0.0.2",
            &format!("/orders/{i}"),
            &token,
            None,
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }

    // A new network without the certificate: challenged, with the
    // certificate as the factor on offer.
    let challenged = https_get(&pki, &gateway, "127.0.9.9", "/orders/9", &token, None);
    assert_eq!(challenged.status, 401, "{}", challenged.body);
    assert_eq!(challenged.json()["factors"][0]["factor"], "certificate");
    assert!(
        challenged
            .header("www-authenticate")
            .unwrap()
            .contains("urn:stepgate:acr:mtls")
    );
    // Another certificate from the same CA proves nothing.
    let other = https_get(
        &pki,
        &gateway,
        "127.0.10.9",
        "/orders/9",
        &token,
        Some("other-cert"),
    );
    assert_eq!(other.status, 401, "{}", other.body);
    // The bound certificate satisfies the step-up on the same request.
    let proved = https_get(
        &pki,
        &gateway,
        "127.0.11.9",
        "/orders/9",
        &token,
        Some("bot-cert"),
    );
    assert_eq!(proved.status, 200, "{}", proved.body);
    // A client that follows the challenge repeats the request with the
    // challenge id and the certificate: that passes too.
    let challenged = https_get(&pki, &gateway, "127.0.12.9", "/orders/9", &token, None);
    let challenge = challenged.json()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tls = tls_args(&pki, "server-ca", Some("bot-cert"));
    let auth = bearer(&token);
    let challenge_header = format!("Stepgate-Challenge: {challenge}");
    let mut args = strs(&tls);
    args.extend(["-H", auth.as_str(), "-H", challenge_header.as_str()]);
    let answered = curl("127.0.12.9", &https_url(gateway.port, "/orders/9"), &args);
    assert_eq!(answered.status, 200, "{}", answered.body);

    gateway.stop();
    let thumbprint = pki.thumbprint("bot-cert");
    let audit = gateway.audit();
    let allowed = audit
        .iter()
        .find(|record| record["client_addr"] == "127.0.11.9" && record["event"] == "allow")
        .expect("an allow record");
    assert_eq!(allowed["factor"], "certificate", "{allowed}");
    assert_eq!(
        allowed["detail"],
        format!("certificate x5t#S256 {thumbprint}")
    );
    assert!(
        audit
            .iter()
            .any(|record| record["event"] == "step_up_success"
                && record["client_addr"] == "127.0.12.9"
                && record["factor"] == "certificate")
    );
}

#[test]
fn certificate_bound_token_refused_without_it() {
    let pki = client_pki();
    let upstream = Upstream::start();
    let tls = tls_table(
        &pki,
        "gateway.tls",
        "server",
        Some(("optional", "client-ca")),
    );
    let mut gateway = Gateway::new(upstream.addr, &tls);
    let token = gateway.add_with_token("deploy-bot");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "certificate",
        "deploy-bot",
        "--san",
        "uri:spiffe://example.test/deploy-bot",
        "--require",
    ]);
    gateway.start();
    let with = https_get(
        &pki,
        &gateway,
        "127.0.0.2",
        "/orders/1",
        &token,
        Some("bot-cert"),
    );
    assert_eq!(with.status, 200, "{}", with.body);
    let without = https_get(&pki, &gateway, "127.0.0.2", "/orders/1", &token, None);
    assert_eq!(without.status, 401, "{}", without.body);
    let message = without.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("bound to a client certificate"),
        "{message}"
    );
    // A DNS name that spells the bound URI is not that URI.
    let lookalike = https_get(
        &pki,
        &gateway,
        "127.0.0.2",
        "/orders/1",
        &token,
        Some("lookalike-cert"),
    );
    assert_eq!(lookalike.status, 401, "{}", lookalike.body);
    let other = https_get(
        &pki,
        &gateway,
        "127.0.0.2",
        "/orders/1",
        &token,
        Some("other-cert"),
    );
    assert_eq!(other.status, 401, "{}", other.body);
    assert_eq!(upstream.count(), 1);

    // The binding removed, the token works alone again.
    gateway.cli_ok(&[
        "factor",
        "remove",
        "certificate",
        "deploy-bot",
        "--san",
        "uri:spiffe://example.test/deploy-bot",
    ]);
    support::wait_for_reload();
    let alone = https_get(&pki, &gateway, "127.0.0.2", "/orders/1", &token, None);
    assert_eq!(alone.status, 200, "{}", alone.body);

    gateway.stop();
    let failures: Vec<String> = gateway
        .audit()
        .into_iter()
        .filter(|record| record["event"] == "auth_failure")
        .map(|record| record["detail"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(
        failures[0].contains("bound to a client certificate"),
        "{failures:?}"
    );
    let lookalike_thumbprint = pki.thumbprint("lookalike-cert");
    assert!(failures[1].contains(&lookalike_thumbprint), "{failures:?}");
    let other_thumbprint = pki.thumbprint("other-cert");
    assert!(failures[2].contains(&other_thumbprint), "{failures:?}");
}

#[test]
fn certificate_binding_errors_name_the_problem() {
    let upstream = Upstream::start();
    let gateway = Gateway::new(upstream.addr, "");
    gateway.cli_ok(&["identity", "add", "bot"]);
    let pki = client_pki();
    let ca = pki.path("client-ca.pem").display().to_string();
    let junk = pki.path("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let junk = junk.display().to_string();
    let cases: [(&[&str], &str); 10] = [
        (
            &["--thumbprint", "abc"],
            "not a base64url SHA-256 thumbprint",
        ),
        (&["--cert", &ca], "is a CA certificate"),
        (&["--cert", &junk], "not a valid X.509 certificate"),
        (&["--subject", ""], "not an RFC 4514 name"),
        (&["--subject", "O = Example, CN = bot"], "-nameopt RFC2253"),
        (
            &["--san", "spiffe://example.test/bot"],
            "does not name its type",
        ),
        (&["--san", "ip:not-an-address"], "does not name its type"),
        (
            &["--cert", "/nonexistent/cert.pem"],
            "cannot read certificate file",
        ),
        (&["--san", "x", "--subject", "CN=x"], "cannot be used with"),
        (
            &[
                "--san",
                "dns:x",
                "--not-before",
                "2030-01-01T00:00:00Z",
                "--not-after",
                "2029-01-01T00:00:00Z",
            ],
            "never be valid",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["factor", "enroll", "certificate", "bot"];
        full.extend_from_slice(args);
        let output = gateway.cli(&full);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Without client-certificate checks on the listener a binding is
    // accepted with a warning that it cannot match.
    let output = gateway.cli(&[
        "factor",
        "enroll",
        "certificate",
        "bot",
        "--san",
        "dns:bot.example.test",
        "--require",
    ]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not verify client certificates")
            && stderr.contains("every request of the identity is rejected"),
        "{stderr}"
    );
    let output = gateway.cli(&[
        "factor",
        "remove",
        "certificate",
        "bot",
        "--san",
        "dns:absent",
    ]);
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("has no certificate binding san dns:absent")
    );
}

#[test]
fn plain_http_never_offers_certificate_factor() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, "");
    let token = gateway.add_with_token("deploy-bot");
    gateway.cli_ok(&[
        "factor",
        "enroll",
        "certificate",
        "deploy-bot",
        "--san",
        "uri:spiffe://example.test/deploy-bot",
    ]);
    gateway.start();
    let auth = bearer(&token);
    for i in 0..5 {
        let response = curl(
            "127.0.0.2",
            &gateway.url(&format!("/orders/{i}")),
            &["-H", &auth],
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }
    // The only factor cannot arrive over plain HTTP: denied, not a
    // challenge nobody can answer.
    let response = curl("127.0.9.9", &gateway.url("/orders/9"), &["-H", &auth]);
    assert_eq!(response.status, 403, "{}", response.body);
}
