//! The stored credential's text form and the tls-server-end-point hash of
//! the certificates in testdata/scram/certs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use stepgate_scram::{
    ChannelBinding, DEFAULT_ITERATIONS, Error, StoredCredential, tls_server_end_point,
};

/// The RFC 7677 example credential (password "pencil") in PostgreSQL's
/// text form.
const RFC7677: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

#[test]
fn parse_and_format_round_trip() {
    let credential = StoredCredential::parse(RFC7677).unwrap();
    assert_eq!(credential.iterations(), 4096);
    assert_eq!(credential.salt().len(), 16);
    assert_eq!(credential.format(), RFC7677);
    assert!(credential.verify_password("pencil"));
    assert!(!credential.verify_password("pencil "));
    assert!(!credential.verify_password("Pencil"));
    assert!(!credential.verify_password("p\u{e9}ncil"));
}

#[test]
fn derive_matches_parsed_form() {
    let parsed = StoredCredential::parse(RFC7677).unwrap();
    let derived = StoredCredential::derive("pencil", parsed.salt(), 4096).unwrap();
    assert_eq!(derived.format(), RFC7677);
    assert_eq!(derived.stored_key(), parsed.stored_key());
    assert_eq!(derived.server_key(), parsed.server_key());
}

#[test]
fn generate_uses_fresh_salt() {
    let first = StoredCredential::generate("sgt_token", DEFAULT_ITERATIONS).unwrap();
    let second = StoredCredential::generate("sgt_token", DEFAULT_ITERATIONS).unwrap();
    assert_eq!(first.salt().len(), 16);
    assert_ne!(first.salt(), second.salt());
    assert_ne!(first.stored_key(), second.stored_key());
    assert!(first.verify_password("sgt_token"));
    assert!(second.verify_password("sgt_token"));
    let reparsed = StoredCredential::parse(&first.format()).unwrap();
    assert!(reparsed.verify_password("sgt_token"));
}

#[test]
fn iteration_count_is_kept() {
    let credential = StoredCredential::generate("sgt_token", 10_000).unwrap();
    assert!(credential.format().starts_with("SCRAM-SHA-256$10000:"));
    assert!(matches!(
        StoredCredential::generate("sgt_token", 0),
        Err(Error::InvalidCredential(_))
    ));
    assert!(matches!(
        StoredCredential::derive("sgt_token", b"", 4096),
        Err(Error::InvalidCredential(_))
    ));
}

#[test]
fn parse_rejects_invalid_text() {
    let (_, keys) = RFC7677.split_once("==$").unwrap();
    let (stored, server) = keys.split_once(':').unwrap();
    let short_key = "AAAA";
    let cases = [
        String::new(),
        "md5a3556571e93b0d20722ba62be61e8c2d".into(),
        RFC7677.replace("SCRAM-SHA-256$", "SCRAM-SHA-1$"),
        RFC7677.replace("SCRAM-SHA-256$", "scram-sha-256$"),
        RFC7677.replace("$4096:", "$0:"),
        RFC7677.replace("$4096:", "$04096:"),
        RFC7677.replace("$4096:", "$-4096:"),
        RFC7677.replace("$4096:", "$:"),
        RFC7677.replace("$4096:", "$4096x:"),
        RFC7677.replace("$4096:", "$99999999999:"),
        RFC7677.replace("$4096:", "$4096"),
        RFC7677.replace("W22ZaJ0SNY7soEsUEjb6gQ==", ""),
        RFC7677.replace("W22ZaJ0SNY7soEsUEjb6gQ==", "W22ZaJ0SNY7soEsUEjb6gQ"),
        RFC7677.replace("W22ZaJ0SNY7soEsUEjb6gQ==", "W22Z!J0SNY7soEsUEjb6gQ=="),
        RFC7677.replace(stored, short_key),
        RFC7677.replace(server, short_key),
        RFC7677.replace(&format!("{stored}:"), stored),
        format!("{RFC7677}:AAAA"),
        format!("{RFC7677}$"),
        format!(" {RFC7677}"),
        format!("{RFC7677}\n"),
    ];
    for text in &cases {
        let result = StoredCredential::parse(text);
        assert!(
            matches!(result, Err(Error::InvalidCredential(_))),
            "{text:?} gave {result:?}"
        );
        let message = result.unwrap_err().to_string();
        assert!(!message.contains(stored), "{message}");
    }
}

#[test]
fn debug_hides_keys() {
    let credential = StoredCredential::parse(RFC7677).unwrap();
    let debug = format!("{credential:?}");
    assert!(debug.contains("W22ZaJ0SNY7soEsUEjb6gQ=="), "{debug}");
    assert!(!debug.contains("WG5d8oPm"), "{debug}");
    assert!(!debug.contains("wfPLwcE6"), "{debug}");
    assert!(!debug.contains("88, 110"), "{debug}");
}

fn certificate(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../testdata/scram/certs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

#[test]
fn end_point_hash_matches_openssl() {
    let expected = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/scram/certs/expected.txt"
    ))
    .unwrap();
    let mut checked = 0;
    for line in expected.lines().filter(|line| !line.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [file, algorithm, hash] = fields[..] else {
            panic!("bad line {line:?}");
        };
        let computed = tls_server_end_point(&certificate(file)).unwrap();
        assert_eq!(hex::encode(&computed), hash, "{file} ({algorithm})");
        let binding = ChannelBinding::from_certificate(&certificate(file)).unwrap();
        assert_eq!(binding.certificate_hash(), computed.as_slice());
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn end_point_hash_of_sha1_certificate_uses_sha256() {
    let hash = tls_server_end_point(&certificate("rsa-sha1.der")).unwrap();
    assert_eq!(hash.len(), 32);
}

#[test]
fn end_point_hash_rejects_ed25519() {
    assert_eq!(
        tls_server_end_point(&certificate("ed25519.der")),
        Err(Error::UnsupportedCertificateSignature("1.3.101.112".into()))
    );
}

#[test]
fn end_point_hash_rejects_bad_der() {
    let mut der = certificate("rsa-sha256.der");
    assert!(matches!(
        tls_server_end_point(&der[..der.len() - 1]),
        Err(Error::InvalidCertificate(_))
    ));
    assert!(matches!(
        tls_server_end_point(b""),
        Err(Error::InvalidCertificate(_))
    ));
    der.push(0);
    assert!(matches!(
        tls_server_end_point(&der),
        Err(Error::InvalidCertificate(_))
    ));
    assert!(matches!(
        ChannelBinding::tls_server_end_point(Vec::new()),
        Err(Error::MechanismUnavailable(..))
    ));
}
