//! Keys generated inside a SoftHSM2 token sign requests that stepgate-pop
//! verifies, and the token never reveals the private keys.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` from the process environment, and the
//! workspace forbids changing the environment of a running test process.
//! So `softhsm_token_signs_requests` prepares a token in a temporary
//! directory and runs `in_softhsm_token` in a child process of this test
//! binary, with `SOFTHSM2_CONF` set from its start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use stepgate_pop::PublicJwk;
use stepgate_pop::httpsig::{
    SignatureAlgorithm, parse_signature_input, signature_bytes, verify_signature,
};
use stepgate_signer::{
    Pkcs11Signer, RequestToSign, SignOptions, Signer, build_signature_base, generate_key,
    key_thumbprint, public_jwk, sign_request,
};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "stepgate-test";
const PIN: &str = "48151623";
const SO_PIN: &str = "87654321";

/// Algorithms tried in the token, each with its own key label.
const ALGORITHMS: [(SignatureAlgorithm, &str); 4] = [
    (SignatureAlgorithm::EcdsaP256Sha256, "bot-p256"),
    (SignatureAlgorithm::Ed25519, "bot-ed25519"),
    (SignatureAlgorithm::EcdsaP384Sha384, "bot-p384"),
    (SignatureAlgorithm::RsaPssSha512, "bot-rsa"),
];

fn softhsm_installed() -> bool {
    let util = Command::new("softhsm2-util").arg("--version").output();
    Path::new(MODULE).exists() && util.is_ok_and(|output| output.status.success())
}

#[test]
fn softhsm_token_signs_requests() {
    if !softhsm_installed() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "SoftHSM2 is not installed ({MODULE} or softhsm2-util is missing), and CI is set; \
                 install it with: apt-get install softhsm2"
            );
        }
        eprintln!(
            "SKIPPED softhsm_token_signs_requests: SoftHSM2 is not installed \
             ({MODULE} or softhsm2-util is missing); install it with: apt-get install softhsm2"
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();

    let init = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--pin", PIN, "--so-pin", SO_PIN])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "softhsm2-util --init-token failed: {}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );

    let child = Command::new(std::env::current_exe().unwrap())
        .env("SOFTHSM2_CONF", &conf)
        .args(["--exact", "in_softhsm_token", "--ignored", "--nocapture"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(child.status.success(), "the test in the token failed");
    assert!(
        stdout.contains("1 passed"),
        "the child process ran no test: {stdout}"
    );
}

#[test]
#[ignore = "runs in a child process of softhsm_token_signs_requests, with SOFTHSM2_CONF set"]
fn in_softhsm_token() {
    let conf = std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from);
    assert!(
        conf.as_deref().is_some_and(Path::exists),
        "SOFTHSM2_CONF must name a SoftHSM2 configuration; run softhsm_token_signs_requests instead"
    );
    let module = Path::new(MODULE);

    for (algorithm, label) in ALGORITHMS {
        let name = algorithm.name();
        let generated = generate_key(module, TOKEN, PIN, label, algorithm)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(generated.get("d").is_none(), "{name}: {generated}");
        check_private_key_hidden(label, algorithm);

        let signer = Pkcs11Signer::open(module, TOKEN, PIN, label)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(signer.algorithm(), algorithm, "{name}");
        assert_eq!(signer.public_jwk(), generated, "{name}");
        assert_eq!(
            public_jwk(module, TOKEN, None, label).unwrap(),
            generated,
            "{name}: public key read without logging in"
        );

        let keyid = key_thumbprint(&signer).unwrap();
        sign_and_verify(&signer, &keyid);
        println!("{name}: generated in SoftHSM2, signed, verified");
    }

    check_errors(module);
}

/// Signs a request and verifies it with stepgate-pop, as the gateway would.
fn sign_and_verify(signer: &Pkcs11Signer, keyid: &str) {
    let name = signer.algorithm().name();
    let request = RequestToSign::parse(
        b"POST https://api.example.com/orders\ncontent-type: application/json\n\n{\"qty\": 3}",
    )
    .unwrap();
    let options = SignOptions {
        nonce: Some("ch_softhsm".to_owned()),
        ..SignOptions::new(keyid, 1_700_000_000)
    };
    let signed =
        sign_request(&request, &options, signer).unwrap_or_else(|err| panic!("{name}: {err}"));

    let base = build_signature_base(&request, &options).unwrap();
    let inputs = parse_signature_input(&signed.signature_input).unwrap();
    let signature = signature_bytes(&signed.signature, "stepgate").unwrap();
    let key = PublicJwk::from_json(&signer.public_jwk()).unwrap();
    verify_signature(&key, signer.algorithm(), &inputs[0], &base, &signature)
        .unwrap_or_else(|err| panic!("{name}: {err}"));

    let altered = base.replace("POST", "PUT");
    assert!(
        verify_signature(&key, signer.algorithm(), &inputs[0], &altered, &signature).is_err(),
        "{name}: an altered base verifies"
    );
}

/// Opens the token directly and checks that the private key is sensitive,
/// never extractable, and that its secret value cannot be read.
fn check_private_key_hidden(label: &str, algorithm: SignatureAlgorithm) {
    let name = algorithm.name();
    let context = Pkcs11::new(MODULE).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => panic!("initialising SoftHSM2: {err}"),
    }
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label() == TOKEN)
        .unwrap();
    let session = context.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN)))
        .or_else(|err| match err {
            CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _) => Ok(()),
            other => Err(other),
        })
        .unwrap();
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{name}");
    let key = found[0];

    let flags = session
        .get_attributes(
            key,
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    for expected in [
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
    ] {
        assert!(
            flags.contains(&expected),
            "{name}: {expected:?} not in {flags:?}"
        );
    }

    let secret = match algorithm {
        SignatureAlgorithm::RsaPssSha512 => AttributeType::PrivateExponent,
        _ => AttributeType::Value,
    };
    let info = session.get_attribute_info(key, &[secret]).unwrap();
    assert!(
        matches!(info[0], AttributeInfo::Sensitive),
        "{name}: {secret:?} is {:?}, expected Sensitive",
        info[0]
    );
    let read = session.get_attributes(key, &[secret]).unwrap();
    assert!(read.is_empty(), "{name}: the token returned {secret:?}");
}

/// Checks the errors for a wrong PIN, an unknown token, an unknown key and
/// a label that is already used.
fn check_errors(module: &Path) {
    let wrong_pin = "11112222";
    let err = Pkcs11Signer::open(module, TOKEN, wrong_pin, "bot-p256")
        .unwrap_err()
        .to_string();
    assert!(err.contains("user PIN"), "{err}");
    assert!(err.contains("incorrect"), "{err}");
    assert!(!err.contains(wrong_pin), "the error shows the PIN: {err}");

    let err = Pkcs11Signer::open(module, "no-such-token", PIN, "bot-p256")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no token labelled \"no-such-token\""), "{err}");
    assert!(err.contains(TOKEN), "the error lists the tokens: {err}");

    let err = Pkcs11Signer::open(module, TOKEN, PIN, "no-such-key")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no private key labelled \"no-such-key\""),
        "{err}"
    );

    let err = generate_key(
        module,
        TOKEN,
        PIN,
        "bot-p256",
        SignatureAlgorithm::EcdsaP256Sha256,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("already has a key labelled"), "{err}");

    let err = Pkcs11Signer::open(Path::new("/nonexistent/module.so"), TOKEN, PIN, "bot-p256")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot load PKCS#11 module"), "{err}");
}
