//! Both state machines of this crate against each other, and every way a
//! message can be malformed, tampered with or replayed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use stepgate_scram::{
    ChannelBinding, ClientChannelBinding, ClientExchange, Error, MAX_MESSAGE_LEN, Mechanism,
    ServerExchange, StoredCredential, advertised_mechanisms,
};

const PASSWORD: &str = "sgt_Zq8-x~Yv 3!pencil";

fn credential() -> StoredCredential {
    StoredCredential::generate(PASSWORD, 4096).unwrap()
}

fn binding() -> ChannelBinding {
    ChannelBinding::tls_server_end_point((0..32).collect()).unwrap()
}

fn server() -> ServerExchange {
    ServerExchange::new(Mechanism::ScramSha256, credential(), None).unwrap()
}

fn client() -> ClientExchange {
    ClientExchange::new(PASSWORD, ClientChannelBinding::NotSupported).unwrap()
}

/// Runs a client and a server until the server has seen the
/// client-first-message, and returns both with the server-first-message.
fn start(
    mut client: ClientExchange,
    mut server: ServerExchange,
) -> (ClientExchange, ServerExchange, String) {
    let client_first = client.client_first().unwrap();
    let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
    (client, server, server_first)
}

/// Returns a server that has sent its server-first-message, and the
/// client-final-message of a client with the right password.
fn server_awaiting_final() -> (ServerExchange, String) {
    let (mut client, server, server_first) = start(client(), server());
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    (server, client_final)
}

#[test]
fn round_trip_plain() {
    let (mut client, mut server, server_first) = start(client(), server());
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let server_final = server.handle_client_final(client_final.as_bytes()).unwrap();
    assert!(server.is_authenticated());
    client.handle_server_final(server_final.as_bytes()).unwrap();
}

#[test]
fn round_trip_plus() {
    let mut client = ClientExchange::negotiate(
        ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
        PASSWORD,
        Some(binding()),
    )
    .unwrap();
    assert_eq!(client.mechanism(), Mechanism::ScramSha256Plus);
    let mut server =
        ServerExchange::new(client.mechanism(), credential(), Some(binding())).unwrap();
    let client_first = client.client_first().unwrap();
    assert!(client_first.starts_with("p=tls-server-end-point,,n=,r="));
    let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let server_final = server.handle_client_final(client_final.as_bytes()).unwrap();
    client.handle_server_final(server_final.as_bytes()).unwrap();
}

#[test]
fn negotiate_picks_flag() {
    let client = ClientExchange::negotiate(["SCRAM-SHA-256"], PASSWORD, Some(binding())).unwrap();
    assert_eq!(client.mechanism(), Mechanism::ScramSha256);
    let mut client = client;
    assert!(client.client_first().unwrap().starts_with("y,,"));

    let mut client =
        ClientExchange::negotiate(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], PASSWORD, None).unwrap();
    assert_eq!(client.mechanism(), Mechanism::ScramSha256);
    assert!(client.client_first().unwrap().starts_with("n,,"));

    assert_eq!(
        ClientExchange::negotiate(["SCRAM-SHA-256-PLUS"], PASSWORD, None).unwrap_err(),
        Error::NoCommonMechanism
    );
    assert_eq!(
        ClientExchange::negotiate(["SCRAM-SHA-1", "PLAIN"], PASSWORD, Some(binding())).unwrap_err(),
        Error::NoCommonMechanism
    );
}

#[test]
fn advertised_mechanisms_depend_on_tls() {
    assert_eq!(advertised_mechanisms(None), [Mechanism::ScramSha256]);
    let names: Vec<&str> = advertised_mechanisms(Some(&binding()))
        .iter()
        .map(|mechanism| mechanism.name())
        .collect();
    assert_eq!(names, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    assert_eq!(
        Mechanism::from_name("SCRAM-SHA-256-PLUS"),
        Some(Mechanism::ScramSha256Plus)
    );
    assert_eq!(Mechanism::from_name("scram-sha-256"), None);
}

#[test]
fn plus_without_binding_is_unavailable() {
    let error = ServerExchange::new(Mechanism::ScramSha256Plus, credential(), None).unwrap_err();
    assert!(matches!(error, Error::MechanismUnavailable(..)));
}

#[test]
fn wrong_password_fails_on_both_sides() {
    let wrong = ClientExchange::new("sgt_other", ClientChannelBinding::NotSupported).unwrap();
    let (mut client, mut server, server_first) = start(wrong, server());
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let error = server
        .handle_client_final(client_final.as_bytes())
        .unwrap_err();
    assert_eq!(error, Error::InvalidProof);
    assert!(!server.is_authenticated());
    assert_eq!(
        client.handle_server_final(error.server_final_message().as_bytes()),
        Err(Error::ServerRejected("invalid-proof".into()))
    );
}

#[test]
fn tampered_proof_is_rejected() {
    for index in [0, 15, 31] {
        let (mut server, client_final) = server_awaiting_final();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let mut tampered = base64_decode(proof);
        tampered[index] ^= 0x01;
        let message = format!("{without_proof},p={}", base64_encode(&tampered));
        assert_eq!(
            server.handle_client_final(message.as_bytes()),
            Err(Error::InvalidProof),
            "bit flipped in byte {index}"
        );
    }

    // A proof of the wrong length is malformed, not merely invalid.
    let (mut server, client_final) = server_awaiting_final();
    let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
    let mut short = base64_decode(proof);
    short.pop();
    let message = format!("{without_proof},p={}", base64_encode(&short));
    assert!(matches!(
        server.handle_client_final(message.as_bytes()),
        Err(Error::Malformed(_))
    ));
}

/// Turns the nonce of a client-final-message into a wrong one.
type NonceChange = fn(&str) -> String;

#[test]
fn wrong_nonce_is_rejected() {
    let changes: [(&str, NonceChange); 3] = [
        ("suffix added", |nonce| format!("{nonce}x")),
        ("client part only", |nonce| nonce[..24].to_owned()),
        ("last character changed", |nonce| {
            let mut changed = nonce[..nonce.len() - 1].to_owned();
            changed.push(if nonce.ends_with('A') { 'B' } else { 'A' });
            changed
        }),
    ];
    for (case, change) in changes {
        let (mut server, client_final) = server_awaiting_final();
        let (_, after_r) = client_final.split_once(",r=").unwrap();
        let (nonce, _) = after_r.split_once(',').unwrap();
        let changed = client_final.replacen(nonce, &change(nonce), 1);
        assert_eq!(
            server.handle_client_final(changed.as_bytes()),
            Err(Error::NonceMismatch),
            "{case}"
        );
    }
}

#[test]
fn replayed_client_final_is_rejected() {
    let (mut client, mut server, server_first) = start(client(), server());
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    server.handle_client_final(client_final.as_bytes()).unwrap();

    // A second time on the same exchange.
    assert!(matches!(
        server.handle_client_final(client_final.as_bytes()),
        Err(Error::InvalidState(_))
    ));

    // On a new exchange with the same client-first-message: the server picks
    // a new nonce, so the recorded client-final-message no longer matches.
    let mut replay = ClientExchange::new(PASSWORD, ClientChannelBinding::NotSupported).unwrap();
    let _ = replay.client_first().unwrap();
    let mut fresh = server_for_replay(&client_final);
    assert_eq!(
        fresh.handle_client_final(client_final.as_bytes()),
        Err(Error::NonceMismatch)
    );
}

/// Starts a server exchange with the client-first-message that the recorded
/// client-final-message belongs to.
fn server_for_replay(client_final: &str) -> ServerExchange {
    let (_, after_r) = client_final.split_once(",r=").unwrap();
    let (nonce, _) = after_r.split_once(',').unwrap();
    // The client nonce is the first 24 characters: 18 random bytes in base64.
    let client_first = format!("n,,n=,r={}", &nonce[..24]);
    let mut server = server();
    server.handle_client_first(client_first.as_bytes()).unwrap();
    server
}

#[test]
fn client_first_twice_is_rejected() {
    let (_, mut server, _) = start(client(), server());
    assert!(matches!(
        server.handle_client_first(b"n,,n=,r=abcdef"),
        Err(Error::InvalidState(_))
    ));

    let mut client = client();
    client.client_first().unwrap();
    assert!(matches!(client.client_first(), Err(Error::InvalidState(_))));
}

#[test]
fn final_before_first_is_rejected() {
    let mut server = server();
    assert!(matches!(
        server.handle_client_final(b"c=biws,r=abc,p=AAAA"),
        Err(Error::InvalidState(_))
    ));
}

#[test]
fn error_ends_server_exchange() {
    let (mut server, client_final) = server_awaiting_final();
    assert!(server.handle_client_final(b"garbage").is_err());
    assert!(matches!(
        server.handle_client_final(client_final.as_bytes()),
        Err(Error::InvalidState(_))
    ));
    assert!(!server.is_authenticated());
}

#[test]
fn channel_binding_mismatch() {
    // The client sent `n` but claims `y` in c=.
    let (mut server, client_final) = server_awaiting_final();
    let changed = client_final.replacen("c=biws", "c=eSws", 1);
    assert_eq!(
        server.handle_client_final(changed.as_bytes()),
        Err(Error::ChannelBindingMismatch)
    );

    // A PLUS client bound to another certificate.
    let other = ChannelBinding::tls_server_end_point(vec![7; 32]).unwrap();
    let client =
        ClientExchange::new(PASSWORD, ClientChannelBinding::TlsServerEndPoint(other)).unwrap();
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding())).unwrap();
    let (mut client, mut server, server_first) = start(client, server);
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    assert_eq!(
        server.handle_client_final(client_final.as_bytes()),
        Err(Error::ChannelBindingMismatch)
    );
}

#[test]
fn plus_binding_without_hash_in_c_is_mismatch() {
    // A PLUS client that puts only the GS2 header in c=.
    let client =
        ClientExchange::new(PASSWORD, ClientChannelBinding::TlsServerEndPoint(binding())).unwrap();
    let server =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding())).unwrap();
    let (mut client, mut server, server_first) = start(client, server);
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let (c, _) = client_final.split_once(',').unwrap();
    let header_only = client_final.replacen(
        c,
        &format!("c={}", base64_encode(b"p=tls-server-end-point,,")),
        1,
    );
    assert_eq!(
        server.handle_client_final(header_only.as_bytes()),
        Err(Error::ChannelBindingMismatch)
    );
}

#[test]
fn downgrade_y_flag_rejected() {
    let client = ClientExchange::new(PASSWORD, ClientChannelBinding::NotOffered).unwrap();
    let mut server =
        ServerExchange::new(Mechanism::ScramSha256, credential(), Some(binding())).unwrap();
    let mut client = client;
    let client_first = client.client_first().unwrap();
    let error = server
        .handle_client_first(client_first.as_bytes())
        .unwrap_err();
    assert_eq!(error, Error::ServerSupportsChannelBinding);
    assert_eq!(
        error.server_final_message(),
        "e=server-does-support-channel-binding"
    );
}

#[test]
fn client_first_rejections() {
    let cases: &[(&str, Error)] = &[
        ("p=tls-unique,,n=,r=abc", Error::ChannelBindingNotSupported),
        ("n,a=admin,n=,r=abc", Error::AuthzidNotSupported),
        ("n,,m=ext,n=,r=abc", Error::ExtensionsNotSupported),
        (
            "n,,n=a=3Xb,r=abc",
            Error::InvalidUsername("'=' must be followed by 2C or 3D"),
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(
            server().handle_client_first(message.as_bytes()).as_ref(),
            Err(expected),
            "{message}"
        );
    }

    let mut with_tls =
        ServerExchange::new(Mechanism::ScramSha256Plus, credential(), Some(binding())).unwrap();
    assert_eq!(
        with_tls.handle_client_first(b"p=tls-unique,,n=,r=abc"),
        Err(Error::UnsupportedChannelBindingType("tls-unique".into()))
    );
    let mut plain_with_tls =
        ServerExchange::new(Mechanism::ScramSha256, credential(), Some(binding())).unwrap();
    assert_eq!(
        plain_with_tls.handle_client_first(b"p=tls-server-end-point,,n=,r=abc"),
        Err(Error::ChannelBindingUnexpected)
    );
}

#[test]
fn malformed_client_first() {
    let cases = [
        "",
        "n",
        "n,",
        "n,,",
        "q,,n=,r=abc",
        "N,,n=,r=abc",
        "n,,r=abc",
        "n,,n=,",
        "n,,n=,r=",
        "n,,n=,r=ab c",
        "n,,n=,r=abc\u{e9}",
        "n,,n=,r=abc,r=def",
        "n,,n=,r=abc,n=x",
        "n,,n=,r=abc,x=",
        "n,,n=,r=abc,x",
        "n,,n=,r=abc,",
        "n,,n=,r=abc,1=v",
        "n,,r=abc,n=",
        "n,,n=,s=abc",
        "n,,n=,r=a\0bc",
        "n,,nn=,r=abc",
    ];
    for message in cases {
        let result = server().handle_client_first(message.as_bytes());
        assert!(
            matches!(result, Err(Error::Malformed(_))),
            "{message:?} gave {result:?}"
        );
        assert_eq!(
            result.unwrap_err().server_error_value(),
            "invalid-encoding",
            "{message:?}"
        );
    }
    let invalid_utf8 = b"n,,n=,r=abc\xff";
    assert!(matches!(
        server().handle_client_first(invalid_utf8),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn client_first_extension_is_ignored() {
    let mut server = server();
    let server_first = server
        .handle_client_first(b"n,,n=bot,r=clientnonce,x=extension")
        .unwrap();
    assert!(server_first.starts_with("r=clientnonce"));
}

#[test]
fn malformed_client_final() {
    let (_, good) = server_awaiting_final();
    let (c, rest) = good.split_once(',').unwrap();
    let (r, p) = rest.split_once(',').unwrap();
    let cases = vec![
        String::new(),
        format!("{r},{c},{p}"),
        format!("{c},{p}"),
        format!("{r},{p}"),
        format!("{c},{r}"),
        format!("{c},{r},{p},x=y"),
        format!("{c},{r},{p},{p}"),
        format!("{c},{c},{r},{p}"),
        format!("c=,{r},{p}"),
        format!("{c},{r},p="),
        format!("{c},{r},p=!!!!"),
        format!("{c},{r},x=,{p}"),
        format!("{c},{r},{r},{p}"),
        format!("{c},{r},,{p}"),
        format!("{c}, {r},{p}"),
    ];
    for message in cases {
        let (mut server, _) = server_awaiting_final();
        let result = server.handle_client_final(message.as_bytes());
        assert!(
            matches!(result, Err(Error::Malformed(_))),
            "{message:?} gave {result:?}"
        );
    }

    // A well-formed extension before the proof is accepted and enters the
    // AuthMessage, so the client's proof (computed without it) fails.
    let (mut server, good) = server_awaiting_final();
    let (without_proof, proof) = good.rsplit_once(",p=").unwrap();
    let message = format!("{without_proof},x=ext,p={proof}");
    assert_eq!(
        server.handle_client_final(message.as_bytes()),
        Err(Error::InvalidProof)
    );
}

#[test]
fn huge_messages_are_rejected() {
    let huge = format!("n,,n=,r={}", "a".repeat(MAX_MESSAGE_LEN));
    assert_eq!(
        server().handle_client_first(huge.as_bytes()),
        Err(Error::MessageTooLong {
            len: huge.len(),
            max: MAX_MESSAGE_LEN
        })
    );
    let just_fits = format!("n,,n=,r={}", "a".repeat(MAX_MESSAGE_LEN - 8));
    assert_eq!(just_fits.len(), MAX_MESSAGE_LEN);
    assert!(server().handle_client_first(just_fits.as_bytes()).is_ok());

    let (mut server, _) = server_awaiting_final();
    let huge_final = vec![b'c'; 1 << 20];
    assert!(matches!(
        server.handle_client_final(&huge_final),
        Err(Error::MessageTooLong { .. })
    ));

    let mut client = client();
    client.client_first().unwrap();
    assert!(matches!(
        client.handle_server_first(&huge_final),
        Err(Error::MessageTooLong { .. })
    ));
}

#[test]
fn server_first_rejections() {
    let salt = "c2FsdHNhbHRzYWx0";
    let cases: Vec<(String, Error)> = vec![
        (
            "r=other{nonce}x,s={salt},i=4096".into(),
            Error::NonceMismatch,
        ),
        ("r={nonce},s={salt},i=4096".into(), Error::NonceMismatch),
        (
            "r={nonce}x,s={salt},i=4095".into(),
            Error::IterationCount {
                iterations: 4095,
                min: 4096,
                max: 100_000,
            },
        ),
        (
            "r={nonce}x,s={salt},i=100001".into(),
            Error::IterationCount {
                iterations: 100_001,
                min: 4096,
                max: 100_000,
            },
        ),
        (
            "m=x,r={nonce}x,s={salt},i=4096".into(),
            Error::ExtensionsNotSupported,
        ),
    ];
    for (template, expected) in cases {
        let (mut client, message) = client_and_server_first(&template, salt);
        assert_eq!(
            client.handle_server_first(message.as_bytes()),
            Err(expected),
            "{message}"
        );
    }

    let malformed = [
        "r={nonce}x,s=,i=4096",
        "r={nonce}x,s=!!,i=4096",
        "r={nonce}x,s={salt},i=0",
        "r={nonce}x,s={salt},i=04096",
        "r={nonce}x,s={salt},i=-1",
        "r={nonce}x,s={salt},i=99999999999",
        "r={nonce}x,s={salt}",
        "r={nonce}x,i=4096,s={salt}",
        "s={salt},r={nonce}x,i=4096",
        "r={nonce}x,s={salt},i=4096,i=4096",
        "r={nonce}x,s={salt},i=4096,",
        "r={nonce}x y,s={salt},i=4096",
    ];
    for template in malformed {
        let (mut client, message) = client_and_server_first(template, salt);
        let result = client.handle_server_first(message.as_bytes());
        assert!(
            matches!(result, Err(Error::Malformed(_))),
            "{message:?} gave {result:?}"
        );
    }

    // A well-formed extension is ignored.
    let (mut client, message) =
        client_and_server_first("r={nonce}x,s={salt},i=4096,z=extension", salt);
    assert!(client.handle_server_first(message.as_bytes()).is_ok());
}

/// Returns a client that sent its client-first-message and a
/// server-first-message built from `template`, with `{nonce}` replaced by
/// the client's nonce and `{salt}` by `salt`.
fn client_and_server_first(template: &str, salt: &str) -> (ClientExchange, String) {
    let mut client = client().with_iteration_limits(4096, 100_000);
    let client_first = client.client_first().unwrap();
    let nonce = client_first.strip_prefix("n,,n=,r=").unwrap();
    let message = template.replace("{nonce}", nonce).replace("{salt}", salt);
    (client, message)
}

#[test]
fn wrong_server_signature_is_rejected() {
    let (mut client, mut server, server_first) = start(client(), server());
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let server_final = server.handle_client_final(client_final.as_bytes()).unwrap();
    let mut signature = base64_decode(server_final.strip_prefix("v=").unwrap());
    signature[0] ^= 0x80;
    assert_eq!(
        client.handle_server_final(format!("v={}", base64_encode(&signature)).as_bytes()),
        Err(Error::InvalidServerSignature)
    );
}

#[test]
fn server_that_lacks_keys_is_detected() {
    // A server with a credential for another password accepts nothing, but
    // even a server that skipped proof checking could not produce the right
    // signature without the ServerKey.
    let (mut client, mut server, server_first) = start(client(), server());
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let _ = server.handle_client_final(client_final.as_bytes()).unwrap();
    let forged = format!("v={}", base64_encode(&[0; 32]));
    assert_eq!(
        client.handle_server_final(forged.as_bytes()),
        Err(Error::InvalidServerSignature)
    );
}

#[test]
fn malformed_server_final() {
    for message in ["", "v=", "v=!!", "x=abc", "e=", "v=AAAA,v=AAAA", "e=x,e=y"] {
        let (mut client, mut server, server_first) = start(client(), server());
        let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
        server.handle_client_final(client_final.as_bytes()).unwrap();
        let result = client.handle_server_final(message.as_bytes());
        assert!(
            matches!(result, Err(Error::Malformed(_))),
            "{message:?} gave {result:?}"
        );
    }
}

#[test]
fn client_low_iterations_for_tests() {
    let credential = StoredCredential::generate(PASSWORD, 1).unwrap();
    let mut server = ServerExchange::new(Mechanism::ScramSha256, credential, None).unwrap();
    let mut client = client();
    let client_first = client.client_first().unwrap();
    let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
    assert!(matches!(
        client.handle_server_first(server_first.as_bytes()),
        Err(Error::IterationCount { iterations: 1, .. })
    ));

    let credential = StoredCredential::generate(PASSWORD, 1).unwrap();
    let mut server = ServerExchange::new(Mechanism::ScramSha256, credential, None).unwrap();
    let mut client = self::client().with_iteration_limits(1, 4096);
    let client_first = client.client_first().unwrap();
    let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let server_final = server.handle_client_final(client_final.as_bytes()).unwrap();
    client.handle_server_final(server_final.as_bytes()).unwrap();
}

#[test]
fn passwords_outside_printable_ascii_are_rejected() {
    for password in [
        "",
        "p\u{e4}ssword",
        "tab\there",
        "new\nline",
        "del\u{7f}",
        "\u{2163}",
    ] {
        let client = ClientExchange::new(password, ClientChannelBinding::NotSupported);
        assert!(
            matches!(client, Err(Error::UnsupportedPassword(_))),
            "{password:?}"
        );
        assert!(
            matches!(
                StoredCredential::derive(password, b"salt", 4096),
                Err(Error::UnsupportedPassword(_))
            ),
            "{password:?}"
        );
    }
    // Every printable ASCII character, including space, is accepted.
    let all: String = (0x20u8..=0x7e).map(char::from).collect();
    let credential = StoredCredential::derive(&all, b"salt", 4096).unwrap();
    assert!(credential.verify_password(&all));
}

#[test]
fn debug_output_has_no_secrets() {
    let credential = credential();
    let text = credential.format();
    let debug = format!("{credential:?}");
    let (_, keys) = text.rsplit_once('$').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    assert!(!debug.contains(stored_key), "{debug}");
    assert!(!debug.contains(server_key), "{debug}");
    assert!(debug.contains("4096"), "{debug}");

    let mut client = client();
    let mut server = ServerExchange::new(Mechanism::ScramSha256, credential, None).unwrap();
    let client_first = client.client_first().unwrap();
    let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let proof = client_final.rsplit_once(",p=").unwrap().1;
    for debug in [format!("{client:?}"), format!("{server:?}")] {
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(!debug.contains(proof), "{debug}");
        assert!(!debug.contains(stored_key), "{debug}");
    }
    let error = server
        .handle_client_final(b"c=biws,r=x,p=AAAA")
        .unwrap_err();
    assert!(!error.to_string().contains(proof));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Deterministic xorshift generator, so a failure reproduces.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// Flips, inserts, deletes or truncates bytes of a valid message.
    fn mutate(&mut self, message: &[u8]) -> Vec<u8> {
        let mut bytes = message.to_vec();
        for _ in 0..=self.below(3) {
            let position = self.below(bytes.len() + 1);
            let interesting = [b',', b'=', 0, 0xff, b'p', b'r', b'n', b'y', b'a', b'm'];
            match self.below(4) {
                0 if position < bytes.len() => bytes[position] ^= 1 << self.below(8),
                1 => bytes.insert(position, interesting[self.below(interesting.len())]),
                2 if position < bytes.len() => {
                    bytes.remove(position);
                }
                _ => bytes.truncate(position),
            }
        }
        bytes
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut mutator = Mutator(0x5eed_1234_abcd_ef01);
    for _ in 0..200 {
        let mut client = client();
        let mut server = server();
        let client_first = client.client_first().unwrap();
        let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
        let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
        let server_final = server.handle_client_final(client_final.as_bytes()).unwrap();

        let _ = self::server().handle_client_first(&mutator.mutate(client_first.as_bytes()));

        let (mut waiting_server, valid_final) = server_awaiting_final();
        let _ = waiting_server.handle_client_final(&mutator.mutate(valid_final.as_bytes()));

        let mut waiting_client = self::client();
        let first = waiting_client.client_first().unwrap();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap();
        let valid_first = format!("r={nonce}xyz,s=c2FsdA==,i=4096");
        let _ = waiting_client.handle_server_first(&mutator.mutate(valid_first.as_bytes()));

        let mut finishing_client = self::client();
        let first = finishing_client.client_first().unwrap();
        let mut finishing_server = self::server();
        let reply = finishing_server
            .handle_client_first(first.as_bytes())
            .unwrap();
        finishing_client
            .handle_server_first(reply.as_bytes())
            .unwrap();
        let _ = finishing_client.handle_server_final(&mutator.mutate(server_final.as_bytes()));
    }
}

#[test]
fn any_token_of_identity_passes() {
    let salt = [7u8; 16];
    let first = StoredCredential::derive("sgt_first-token", &salt, 4096).unwrap();
    let second = StoredCredential::derive("sgt_second-token", &salt, 4096).unwrap();
    let third = StoredCredential::derive("sgt_third-token", &salt, 4096).unwrap();
    for (password, expected) in [("sgt_first-token", 0), ("sgt_third-token", 2)] {
        let server = ServerExchange::new(Mechanism::ScramSha256, first.clone(), None)
            .unwrap()
            .with_alternatives(vec![second.clone(), third.clone()])
            .unwrap();
        let client = ClientExchange::new(password, ClientChannelBinding::NotSupported).unwrap();
        let (mut client, mut server, server_first) = start(client, server);
        let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
        let server_final = server.handle_client_final(client_final.as_bytes()).unwrap();
        assert!(server.is_authenticated());
        assert_eq!(server.matched_credential(), Some(expected));
        // The server signs with the matched credential's key.
        client.handle_server_final(server_final.as_bytes()).unwrap();
    }

    let server = ServerExchange::new(Mechanism::ScramSha256, first.clone(), None)
        .unwrap()
        .with_alternatives(vec![second.clone()])
        .unwrap();
    let client =
        ClientExchange::new("sgt_other-token", ClientChannelBinding::NotSupported).unwrap();
    let (mut client, mut server, server_first) = start(client, server);
    let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
    let err = server
        .handle_client_final(client_final.as_bytes())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidProof), "{err:?}");
    assert_eq!(server.matched_credential(), None);
}

#[test]
fn alternatives_must_share_salt() {
    let first = StoredCredential::derive("sgt_first-token", &[7u8; 16], 4096).unwrap();
    let other_salt = StoredCredential::derive("sgt_second-token", &[8u8; 16], 4096).unwrap();
    let other_count = StoredCredential::derive("sgt_second-token", &[7u8; 16], 8192).unwrap();
    for alternative in [other_salt, other_count] {
        let result = ServerExchange::new(Mechanism::ScramSha256, first.clone(), None)
            .unwrap()
            .with_alternatives(vec![alternative]);
        assert!(matches!(result, Err(Error::InvalidCredential(_))));
    }
}
