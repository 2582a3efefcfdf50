//! The SCRAM client of the `postgres-protocol` crate (the one `tokio-postgres`
//! uses) against this crate's server, in process: an independent
//! implementation of the client side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use postgres_protocol::authentication::sasl::{ChannelBinding as PgBinding, ScramSha256};
use stepgate_scram::{
    ChannelBinding, Error, Mechanism, ServerExchange, StoredCredential, advertised_mechanisms,
};

const PASSWORD: &str = "sgt_4f1c2b9e8d7a6f5e4d3c2b1a0f9e8d7c";

fn credential() -> StoredCredential {
    StoredCredential::generate(PASSWORD, 4096).unwrap()
}

fn binding() -> ChannelBinding {
    ChannelBinding::tls_server_end_point(vec![0x5a; 32]).unwrap()
}

/// Runs the exchange until the server's verdict on the client-final-message
/// and, when the server accepts, lets the client check the server-final
/// message.
fn run(
    mut server: ServerExchange,
    client_password: &str,
    client_binding: PgBinding,
) -> Result<(), Error> {
    let mut client = ScramSha256::new(client_password.as_bytes(), client_binding);
    let server_first = server.handle_client_first(client.message())?;
    client.update(server_first.as_bytes()).unwrap();
    let server_final = server.handle_client_final(client.message())?;
    client
        .finish(server_final.as_bytes())
        .expect("postgres-protocol rejected the server signature");
    assert!(server.is_authenticated());
    Ok(())
}

#[test]
fn plain_exchange_succeeds() {
    let server = ServerExchange::new(Mechanism::ScramSha256, credential(), None).unwrap();
    run(server, PASSWORD, PgBinding::unsupported()).unwrap();
}

#[test]
fn plain_exchange_without_tls_accepts_y_flag() {
    // ChannelBinding::unrequested sends `y`: the client could bind, but the
    // server did not offer it. Without TLS that is true, so it is accepted.
    let server = ServerExchange::new(Mechanism::ScramSha256, credential(), None).unwrap();
    run(server, PASSWORD, PgBinding::unrequested()).unwrap();
}

#[test]
fn plus_exchange_succeeds() {
    let binding = binding();
    assert_eq!(
        advertised_mechanisms(Some(&binding)),
        [Mechanism::ScramSha256Plus, Mechanism::ScramSha256]
    );
    let hash = binding.certificate_hash().to_vec();
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding)).unwrap();
    run(server, PASSWORD, PgBinding::tls_server_end_point(hash)).unwrap();
}

#[test]
fn plus_with_real_certificate_hash() {
    let certificate = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/scram/certs/rsa-sha512.der"
    ))
    .unwrap();
    let binding = ChannelBinding::from_certificate(&certificate).unwrap();
    assert_eq!(binding.certificate_hash().len(), 64);
    let hash = binding.certificate_hash().to_vec();
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding)).unwrap();
    run(server, PASSWORD, PgBinding::tls_server_end_point(hash)).unwrap();
}

#[test]
fn wrong_password_is_invalid_proof() {
    let server = ServerExchange::new(Mechanism::ScramSha256, credential(), None).unwrap();
    let error = run(server, "sgt_wrong", PgBinding::unsupported()).unwrap_err();
    assert_eq!(error, Error::InvalidProof);
    assert_eq!(error.server_final_message(), "e=invalid-proof");
}

#[test]
fn plus_wrong_password_is_invalid_proof() {
    let binding = binding();
    let hash = binding.certificate_hash().to_vec();
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding)).unwrap();
    let error = run(server, "sgt_wrong", PgBinding::tls_server_end_point(hash)).unwrap_err();
    assert_eq!(error, Error::InvalidProof);
}

#[test]
fn plus_with_other_certificate_hash_fails() {
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding())).unwrap();
    let error = run(
        server,
        PASSWORD,
        PgBinding::tls_server_end_point(vec![0xa5; 32]),
    )
    .unwrap_err();
    assert_eq!(error, Error::ChannelBindingMismatch);
    assert_eq!(
        error.server_final_message(),
        "e=channel-bindings-dont-match"
    );
}

#[test]
fn y_flag_is_rejected_when_plus_is_offered() {
    let server =
        ServerExchange::new(Mechanism::ScramSha256, credential(), Some(binding())).unwrap();
    let error = run(server, PASSWORD, PgBinding::unrequested()).unwrap_err();
    assert_eq!(error, Error::ServerSupportsChannelBinding);
    assert_eq!(
        error.server_final_message(),
        "e=server-does-support-channel-binding"
    );
}

#[test]
fn n_flag_is_accepted_when_plus_is_offered() {
    // A client without TLS support may still pick SCRAM-SHA-256; only `y`
    // signals a downgrade.
    let server =
        ServerExchange::new(Mechanism::ScramSha256, credential(), Some(binding())).unwrap();
    run(server, PASSWORD, PgBinding::unsupported()).unwrap();
}

#[test]
fn p_flag_without_tls_is_rejected() {
    let server = ServerExchange::new(Mechanism::ScramSha256, credential(), None).unwrap();
    let error = run(
        server,
        PASSWORD,
        PgBinding::tls_server_end_point(vec![0x5a; 32]),
    )
    .unwrap_err();
    assert_eq!(error, Error::ChannelBindingNotSupported);
    assert_eq!(
        error.server_final_message(),
        "e=channel-binding-not-supported"
    );
}

#[test]
fn plus_mechanism_without_binding_flag_fails() {
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding())).unwrap();
    let error = run(server, PASSWORD, PgBinding::unsupported()).unwrap_err();
    assert_eq!(error, Error::ChannelBindingRequired);
}

#[test]
fn unknown_user_fails_like_wrong_password() {
    let server = ServerExchange::for_unknown_user(
        Mechanism::ScramSha256,
        "nobody",
        b"mock secret",
        4096,
        None,
    )
    .unwrap();
    let error = run(server, PASSWORD, PgBinding::unsupported()).unwrap_err();
    assert_eq!(error, Error::InvalidProof);
}
