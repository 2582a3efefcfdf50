//! The published example exchanges of RFC 7677 (SCRAM-SHA-256) and RFC 5802
//! (SCRAM-SHA-1), replayed with their fixed nonces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lc_rs::{digest, hmac, pbkdf2};
use serde_json::Value;

use crate::crypto;
use crate::{
    ClientChannelBinding, ClientExchange, Error, Mechanism, ServerExchange, StoredCredential,
};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/scram/scram-rfc5802-rfc7677.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap()
}

fn field<'a>(vector: &'a Value, name: &str) -> &'a str {
    vector[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} is missing"))
}

fn intermediate<'a>(vector: &'a Value, name: &str) -> &'a str {
    field(&vector["derived_intermediates_computed_here"], name)
}

fn server_nonce_suffix(vector: &Value) -> String {
    let nonce = field(vector, "server_first")
        .strip_prefix("r=")
        .and_then(|rest| rest.split(',').next())
        .unwrap();
    nonce
        .strip_prefix(field(vector, "client_nonce"))
        .unwrap()
        .to_owned()
}

fn rfc7677_credential(vector: &Value) -> StoredCredential {
    let salt = crate::message::decode_base64(field(vector, "salt_b64"), "salt").unwrap();
    StoredCredential::derive(field(vector, "password"), &salt, 4096).unwrap()
}

#[test]
fn rfc7677_key_derivation() {
    let vectors = vectors();
    let vector = &vectors["rfc7677_section3_scram_sha256"];
    let credential = rfc7677_credential(vector);
    assert_eq!(
        hex::encode(credential.stored_key()),
        intermediate(vector, "StoredKey_hex")
    );
    assert_eq!(
        hex::encode(credential.server_key()),
        intermediate(vector, "ServerKey_hex")
    );
    let salted = crypto::salted_password(
        b"pencil",
        credential.salt(),
        std::num::NonZeroU32::new(4096).unwrap(),
    );
    assert_eq!(
        hex::encode(salted.as_ref()),
        intermediate(vector, "SaltedPassword_hex")
    );
}

#[test]
fn rfc7677_client_exchange() {
    let vectors = vectors();
    let vector = &vectors["rfc7677_section3_scram_sha256"];
    let mut client = ClientExchange::new(
        field(vector, "password"),
        ClientChannelBinding::NotSupported,
    )
    .unwrap()
    .with_username(field(vector, "user"))
    .with_client_nonce(field(vector, "client_nonce"));
    assert_eq!(client.mechanism(), Mechanism::ScramSha256);
    assert_eq!(
        client.client_first().unwrap(),
        field(vector, "client_first")
    );
    let client_final = client
        .handle_server_first(field(vector, "server_first").as_bytes())
        .unwrap();
    assert_eq!(client_final, field(vector, "client_final"));
    client
        .handle_server_final(field(vector, "server_final").as_bytes())
        .unwrap();
}

#[test]
fn rfc7677_server_exchange() {
    let vectors = vectors();
    let vector = &vectors["rfc7677_section3_scram_sha256"];
    let suffix = server_nonce_suffix(vector);
    assert_eq!(suffix, field(vector, "server_nonce_suffix"));
    let mut server = ServerExchange::new(Mechanism::ScramSha256, rfc7677_credential(vector), None)
        .unwrap()
        .with_server_nonce(&suffix);
    let server_first = server
        .handle_client_first(field(vector, "client_first").as_bytes())
        .unwrap();
    assert_eq!(server_first, field(vector, "server_first"));
    let server_final = server
        .handle_client_final(field(vector, "client_final").as_bytes())
        .unwrap();
    assert_eq!(server_final, field(vector, "server_final"));
    assert!(server.is_authenticated());
}

#[test]
fn rfc7677_server_rejects_changed_auth_message() {
    let vectors = vectors();
    let vector = &vectors["rfc7677_section3_scram_sha256"];
    let suffix = server_nonce_suffix(vector);
    // A different user name changes the AuthMessage, so the published proof
    // no longer matches.
    let client_first = field(vector, "client_first").replace("n=user", "n=other");
    let mut server = ServerExchange::new(Mechanism::ScramSha256, rfc7677_credential(vector), None)
        .unwrap()
        .with_server_nonce(&suffix);
    server.handle_client_first(client_first.as_bytes()).unwrap();
    assert_eq!(
        server.handle_client_final(field(vector, "client_final").as_bytes()),
        Err(Error::InvalidProof)
    );
}

#[test]
fn empty_username_variant_matches() {
    let vectors = vectors();
    let rfc = &vectors["rfc7677_section3_scram_sha256"];
    let vector = &vectors["postgres_style_empty_username_DERIVED_NOT_RFC"];
    let mut client =
        ClientExchange::new(field(rfc, "password"), ClientChannelBinding::NotSupported)
            .unwrap()
            .with_client_nonce(field(rfc, "client_nonce"));
    assert_eq!(
        client.client_first().unwrap(),
        field(vector, "client_first")
    );
    let client_final = client
        .handle_server_first(field(vector, "server_first").as_bytes())
        .unwrap();
    assert_eq!(client_final, field(vector, "client_final"));
    client
        .handle_server_final(field(vector, "server_final").as_bytes())
        .unwrap();

    let mut server = ServerExchange::new(Mechanism::ScramSha256, rfc7677_credential(rfc), None)
        .unwrap()
        .with_server_nonce(&server_nonce_suffix(rfc));
    assert_eq!(
        server
            .handle_client_first(field(vector, "client_first").as_bytes())
            .unwrap(),
        field(vector, "server_first")
    );
    assert_eq!(
        server
            .handle_client_final(field(vector, "client_final").as_bytes())
            .unwrap(),
        field(vector, "server_final")
    );
}

/// Replays the SCRAM key derivation and proof of RFC 5802 section 5 with
/// SHA-1 primitives, to check the formulas against a second published
/// example. The crate itself implements only SHA-256.
#[test]
fn rfc5802_sha1_derivation() {
    let vectors = vectors();
    let vector = &vectors["rfc5802_section5_scram_sha1"];
    let salt = crate::message::decode_base64(field(vector, "salt_b64"), "salt").unwrap();
    let sha1_hmac = |key: &[u8], data: &[u8]| {
        hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key),
            data,
        )
        .as_ref()
        .to_vec()
    };

    let mut salted = [0; 20];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA1,
        std::num::NonZeroU32::new(4096).unwrap(),
        &salt,
        field(vector, "password").as_bytes(),
        &mut salted,
    );
    assert_eq!(
        hex::encode(salted),
        intermediate(vector, "SaltedPassword_hex")
    );
    let client_key = sha1_hmac(&salted, b"Client Key");
    assert_eq!(
        hex::encode(&client_key),
        intermediate(vector, "ClientKey_hex")
    );
    let stored_key = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &client_key);
    assert_eq!(
        hex::encode(stored_key.as_ref()),
        intermediate(vector, "StoredKey_hex")
    );
    let server_key = sha1_hmac(&salted, b"Server Key");
    assert_eq!(
        hex::encode(&server_key),
        intermediate(vector, "ServerKey_hex")
    );

    let auth_message = format!(
        "{},{},{}",
        field(vector, "client_first_bare"),
        field(vector, "server_first"),
        field(vector, "client_final_without_proof")
    );
    assert_eq!(auth_message, intermediate(vector, "AuthMessage"));
    let client_signature = sha1_hmac(stored_key.as_ref(), auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&client_signature)
        .map(|(key, signature)| key ^ signature)
        .collect();
    let proof = crate::message::encode_base64(&proof);
    assert_eq!(
        format!("{},p={proof}", field(vector, "client_final_without_proof")),
        field(vector, "client_final")
    );
    let server_signature = sha1_hmac(&server_key, auth_message.as_bytes());
    assert_eq!(
        format!("v={}", crate::message::encode_base64(&server_signature)),
        field(vector, "server_final")
    );
}
