//! Validation of the `tls` tables and of the files they name. The test
//! certificates and keys come from the `openssl` command-line tool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use crate::{ClientAuth, Config};

const BASE: &str = r#"
[gateway]
listen = "127.0.0.1:8080"
data_dir = "./stepgate-data"

[[routes]]
prefix = "/"
upstream = "http://127.0.0.1:9000"
"#;

/// Writes a self-signed certificate `NAME.pem` and its key `NAME.key`.
fn self_signed(dir: &Path, name: &str) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-keyout", &format!("{name}.key")])
        .args(["-out", &format!("{name}.pem")])
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `text` after [`BASE`] into `stepgate.toml` in `dir` and loads it.
fn load(dir: &Path, text: &str) -> Result<Config, crate::ConfigError> {
    let path = dir.join("stepgate.toml");
    std::fs::write(&path, format!("{BASE}{text}")).unwrap();
    Config::load(&path)
}

fn file_error(dir: &Path, text: &str) -> String {
    let config = load(dir, text).unwrap();
    config.check_tls_files().unwrap_err().to_string()
}

#[test]
fn tls_is_off_without_table() {
    let config = Config::parse(BASE, "test.toml").unwrap();
    assert!(config.gateway.tls.is_none());
    assert!(config.tls_tables().is_empty());
    assert_eq!(config.gateway.origin(), "http://127.0.0.1:8080");
}

#[test]
fn valid_files_pass_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    self_signed(dir.path(), "ca");
    let config = load(
        dir.path(),
        r#"
[gateway.tls]
cert_file = "server.pem"
key_file = "server.key"
client_ca_file = "ca.pem"
client_auth = "required"

[admin]
listen = "127.0.0.1:9090"

[admin.tls]
cert_file = "server.pem"
key_file = "server.key"
"#,
    )
    .unwrap();
    let tls = config.gateway.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, dir.path().join("server.pem"));
    assert_eq!(tls.key_file, dir.path().join("server.key"));
    assert_eq!(tls.client_ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.handshake_timeout_secs, 10);
    let admin = config.admin.as_ref().unwrap().tls.as_ref().unwrap();
    assert_eq!(admin.client_auth, ClientAuth::None);
    assert_eq!(config.gateway.origin(), "https://127.0.0.1:8080");
    config.check_tls_files().unwrap();

    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let files = tls.load_files("gateway.tls", &provider).unwrap();
    assert_eq!(files.certified_key.cert.len(), 1);
    assert_eq!(files.client_roots.unwrap().len(), 1);
}

#[test]
fn client_auth_without_ca_rejected() {
    for mode in ["optional", "required"] {
        let text = format!(
            "[gateway.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_auth = \"{mode}\"\n"
        );
        let err = Config::parse(&format!("{BASE}{text}"), "test.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.tls.client_auth"), "{err}");
        assert!(err.contains(mode), "{err}");
        assert!(err.contains("client_ca_file"), "{err}");
    }
}

#[test]
fn ca_without_client_auth_rejected() {
    let text =
        "[gateway.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n";
    let err = Config::parse(&format!("{BASE}{text}"), "test.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("gateway.tls.client_ca_file"), "{err}");
    assert!(err.contains("client_auth"), "{err}");
}

#[test]
fn unknown_client_auth_rejected() {
    let text =
        "[gateway.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_auth = \"always\"\n";
    let err = Config::parse(&format!("{BASE}{text}"), "test.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("always"), "{err}");
}

#[test]
fn empty_paths_and_timeout_rejected() {
    for (text, key) in [
        (
            "[gateway.tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n",
            "gateway.tls.cert_file",
        ),
        (
            "[gateway.tls]\ncert_file = \"c.pem\"\nkey_file = \"\"\n",
            "gateway.tls.key_file",
        ),
        (
            "[gateway.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nhandshake_timeout_secs = 0\n",
            "gateway.tls.handshake_timeout_secs",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:9090\"\n[admin.tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n",
            "admin.tls.cert_file",
        ),
    ] {
        let err = Config::parse(&format!("{BASE}{text}"), "test.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn missing_file_names_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"nowhere.key\"\n",
    );
    assert!(err.contains("gateway.tls.key_file"), "{err}");
    assert!(err.contains("nowhere.key"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn file_without_certificate_rejected() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.key\"\nkey_file = \"server.key\"\n",
    );
    assert!(err.contains("gateway.tls.cert_file"), "{err}");
    assert!(err.contains("server.key"), "{err}");
    assert!(err.contains("contains no certificate"), "{err}");
}

#[test]
fn file_without_key_rejected() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.pem\"\n",
    );
    assert!(err.contains("gateway.tls.key_file"), "{err}");
    assert!(err.contains("contains no private key"), "{err}");
}

#[test]
fn mismatched_key_rejected() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    self_signed(dir.path(), "other");
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"other.key\"\n",
    );
    assert!(err.contains("gateway.tls.key_file"), "{err}");
    assert!(err.contains("other.key"), "{err}");
    assert!(err.contains("server.pem"), "{err}");
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn broken_pem_key_not_quoted() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    let key = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
    let body = key.lines().nth(1).unwrap().to_owned();
    let broken = key.replace("-----END PRIVATE KEY-----", "");
    std::fs::write(dir.path().join("broken.key"), broken).unwrap();
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"broken.key\"\n",
    );
    assert!(err.contains("gateway.tls.key_file"), "{err}");
    assert!(err.contains("not valid PEM"), "{err}");
    assert!(!err.contains(&body), "key material in the message: {err}");
}

#[test]
fn garbage_ca_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"ca.pem\"\nclient_auth = \"optional\"\n",
    );
    assert!(err.contains("gateway.tls.client_ca_file"), "{err}");
    assert!(err.contains("ca.pem"), "{err}");
    assert!(err.contains("contains no certificate"), "{err}");
}

#[test]
fn leaf_as_client_ca_rejected() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    let output = Command::new("openssl")
        .current_dir(dir.path())
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=leaf"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", "leaf.key", "-out", "leaf.pem"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"leaf.pem\"\nclient_auth = \"optional\"\n",
    );
    assert!(err.contains("gateway.tls.client_ca_file"), "{err}");
    assert!(err.contains("not a CA certificate"), "{err}");
}

#[test]
fn endless_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server");
    let err = file_error(
        dir.path(),
        "[gateway.tls]\ncert_file = \"/dev/zero\"\nkey_file = \"server.key\"\n",
    );
    assert!(err.contains("gateway.tls.cert_file"), "{err}");
    assert!(err.contains("larger than 16 MiB"), "{err}");
}
