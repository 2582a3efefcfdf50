//! A signer whose private key stays inside a PKCS#11 token, and key
//! generation inside the token.

use std::path::Path;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384};
use stepgate_pop::PublicJwk;
use stepgate_pop::httpsig::SignatureAlgorithm;

use crate::keyfile::{ec_jwk, strip_leading_zeros};
use crate::{SignError, Signer};

/// DER encodings of the curve object identifiers in `CKA_EC_PARAMS`.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
/// The curve name `edwards25519` as a DER PrintableString, accepted in
/// place of the OID when reading keys.
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";

/// RSA modulus size of generated keys, in bits.
const RSA_BITS: u64 = 3072;
/// RSASSA-PSS salt length of `rsa-pss-sha512`, in bytes (RFC 9421 §3.3.1).
const PSS_SALT_LEN: u64 = 64;

/// A signer with a private key inside a PKCS#11 token. The key is found by
/// its `CKA_LABEL`, and its algorithm follows from its key type and curve.
/// RSA keys sign with `rsa-pss-sha512`.
pub struct Pkcs11Signer {
    session: Session,
    key: ObjectHandle,
    algorithm: SignatureAlgorithm,
    jwk: Value,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("algorithm", &self.algorithm.name())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Loads the PKCS#11 module at `module`, logs in to the token labelled
    /// `token_label` with the user PIN, and finds the private and public
    /// keys labelled `key_label`.
    pub fn open(
        module: &Path,
        token_label: &str,
        pin: &str,
        key_label: &str,
    ) -> Result<Pkcs11Signer, SignError> {
        let session = open_session(module, token_label, false)?;
        login(&session, token_label, pin)?;
        let key = find_one(&session, ObjectClass::PRIVATE_KEY, key_label)?.ok_or_else(|| {
            SignError::Pkcs11(format!(
                "no private key labelled {key_label:?} in token {token_label:?}; \
                 generate one with `stepgate hsm keygen` or check the label"
            ))
        })?;
        let algorithm = key_algorithm(&session, key)?;
        let jwk = read_public_jwk(&session, token_label, key_label, algorithm)?;
        Ok(Pkcs11Signer {
            session,
            key,
            algorithm,
            jwk,
        })
    }
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let (signature, expected_len) = match self.algorithm {
            SignatureAlgorithm::Ed25519 => {
                let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
                (self.session.sign(&mechanism, self.key, message), Some(64))
            }
            // CKM_ECDSA signs a digest computed by the caller and returns
            // `r || s`, each as long as the curve order.
            SignatureAlgorithm::EcdsaP256Sha256 => {
                let digest = Sha256::digest(message);
                (
                    self.session.sign(&Mechanism::Ecdsa, self.key, &digest),
                    Some(64),
                )
            }
            SignatureAlgorithm::EcdsaP384Sha384 => {
                let digest = Sha384::digest(message);
                (
                    self.session.sign(&Mechanism::Ecdsa, self.key, &digest),
                    Some(96),
                )
            }
            SignatureAlgorithm::RsaPssSha512 => {
                let mechanism = Mechanism::Sha512RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA512,
                    mgf: PkcsMgfType::MGF1_SHA512,
                    s_len: PSS_SALT_LEN.into(),
                });
                (self.session.sign(&mechanism, self.key, message), None)
            }
        };
        let signature = signature.map_err(|err| {
            SignError::Pkcs11(format!(
                "{} signing in the token failed: {err}",
                self.algorithm.name()
            ))
        })?;
        if let Some(expected_len) = expected_len
            && signature.len() != expected_len
        {
            return Err(SignError::Signing(format!(
                "the token returned a {}-byte {} signature, expected {expected_len} bytes",
                signature.len(),
                self.algorithm.name()
            )));
        }
        Ok(signature)
    }
}

/// Generates a key pair inside the token labelled `token_label` and returns
/// its public key as a JWK. The private key is a token object with
/// `CKA_SENSITIVE` true and `CKA_EXTRACTABLE` false, so the token never
/// reveals it. Both keys are labelled `key_label`, which must be unused.
pub fn generate_key(
    module: &Path,
    token_label: &str,
    pin: &str,
    key_label: &str,
    algorithm: SignatureAlgorithm,
) -> Result<Value, SignError> {
    if key_label.is_empty() {
        return Err(SignError::Pkcs11(
            "the key label is empty; name the key".to_owned(),
        ));
    }
    let session = open_session(module, token_label, true)?;
    login(&session, token_label, pin)?;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        if find_one(&session, class, key_label)?.is_some() {
            return Err(SignError::Pkcs11(format!(
                "token {token_label:?} already has a key labelled {key_label:?}; \
                 choose another label"
            )));
        }
    }

    let mut id = [0_u8; 16];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| SignError::Pkcs11("cannot draw a random key id".to_owned()))?;
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Label(key_label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    };
    let mut public_template = common(false);
    public_template.push(Attribute::Verify(true));
    let mut private_template = common(true);
    private_template.extend([
        Attribute::Sign(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ]);
    let mechanism = match algorithm {
        SignatureAlgorithm::Ed25519 => {
            public_template.push(Attribute::EcParams(ED25519_OID.to_vec()));
            Mechanism::EccEdwardsKeyPairGen
        }
        SignatureAlgorithm::EcdsaP256Sha256 => {
            public_template.push(Attribute::EcParams(P256_OID.to_vec()));
            Mechanism::EccKeyPairGen
        }
        SignatureAlgorithm::EcdsaP384Sha384 => {
            public_template.push(Attribute::EcParams(P384_OID.to_vec()));
            Mechanism::EccKeyPairGen
        }
        SignatureAlgorithm::RsaPssSha512 => {
            public_template.push(Attribute::ModulusBits(RSA_BITS.into()));
            public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (public, private) = session
        .generate_key_pair(&mechanism, &public_template, &private_template)
        .map_err(|err| {
            SignError::Pkcs11(format!(
                "generating a {} key pair in token {token_label:?} failed: {err}",
                algorithm.name()
            ))
        })?;

    if let Err(err) = check_private_key_protected(&session, private) {
        for handle in [private, public] {
            if let Err(destroy_err) = session.destroy_object(handle) {
                tracing::warn!(
                    key_label,
                    error = %destroy_err,
                    "cannot delete a generated key the token failed to protect"
                );
            }
        }
        return Err(err);
    }
    read_public_jwk(&session, token_label, key_label, algorithm)
}

/// Reads the public key labelled `key_label` from the token as a JWK. With
/// a PIN, logs in first, which tokens require for private objects.
pub fn public_jwk(
    module: &Path,
    token_label: &str,
    pin: Option<&str>,
    key_label: &str,
) -> Result<Value, SignError> {
    let session = open_session(module, token_label, false)?;
    if let Some(pin) = pin {
        login(&session, token_label, pin)?;
    }
    let algorithm = match find_one(&session, ObjectClass::PUBLIC_KEY, key_label)? {
        Some(public) => key_algorithm(&session, public)?,
        None => {
            let hint = if pin.is_none() {
                "; log in with the user PIN if the public key is a private object"
            } else {
                ""
            };
            return Err(SignError::Pkcs11(format!(
                "no public key labelled {key_label:?} in token {token_label:?}{hint}"
            )));
        }
    };
    read_public_jwk(&session, token_label, key_label, algorithm)
}

/// Loads the module, finds the token by label and opens a session on it.
fn open_session(module: &Path, token_label: &str, read_write: bool) -> Result<Session, SignError> {
    let context = Pkcs11::new(module).map_err(|err| {
        SignError::Pkcs11(format!(
            "cannot load PKCS#11 module {}: {err}",
            module.display()
        ))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another context in this process initialised the same module; it
        // stays usable.
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(err) => {
            return Err(SignError::Pkcs11(format!(
                "cannot initialise PKCS#11 module {}: {err}",
                module.display()
            )));
        }
    }
    let slots = context
        .get_slots_with_token()
        .map_err(|err| SignError::Pkcs11(format!("cannot list token slots: {err}")))?;
    let mut labels = Vec::new();
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|err| SignError::Pkcs11(format!("cannot read token information: {err}")))?;
        let label = info.label().trim_end().to_owned();
        if label == token_label {
            let session = if read_write {
                context.open_rw_session(slot)
            } else {
                context.open_ro_session(slot)
            };
            return session.map_err(|err| {
                SignError::Pkcs11(format!(
                    "cannot open a session on token {token_label:?}: {err}"
                ))
            });
        }
        labels.push(label);
    }
    Err(SignError::Pkcs11(format!(
        "no token labelled {token_label:?} in module {}; its tokens are: {}",
        module.display(),
        if labels.is_empty() {
            "none".to_owned()
        } else {
            format!("{labels:?}")
        }
    )))
}

/// Logs in as the normal user. Error messages never contain the PIN.
fn login(session: &Session, token_label: &str, pin: &str) -> Result<(), SignError> {
    match session.login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CryptokiError::Pkcs11(RvError::PinIncorrect, _)) => Err(SignError::Pkcs11(format!(
            "the user PIN for token {token_label:?} is incorrect"
        ))),
        Err(CryptokiError::Pkcs11(RvError::PinLocked, _)) => Err(SignError::Pkcs11(format!(
            "the user PIN for token {token_label:?} is locked; the security officer must reset it"
        ))),
        Err(err) => Err(SignError::Pkcs11(format!(
            "cannot log in to token {token_label:?}: {err}"
        ))),
    }
}

/// Finds the object of `class` labelled `label`. More than one is an error,
/// because the caller could not tell which key it signs with.
fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, SignError> {
    let template = [
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(|err| SignError::Pkcs11(format!("cannot search the token: {err}")))?;
    match found.as_slice() {
        [] => Ok(None),
        [handle] => Ok(Some(*handle)),
        _ => Err(SignError::Pkcs11(format!(
            "{} objects of class {class} are labelled {label:?}; give the key a unique label",
            found.len()
        ))),
    }
}

/// Reads the attributes of `object` that are present and readable.
fn attributes(
    session: &Session,
    object: ObjectHandle,
    types: &[AttributeType],
) -> Result<Vec<Attribute>, SignError> {
    session
        .get_attributes(object, types)
        .map_err(|err| SignError::Pkcs11(format!("cannot read key attributes: {err}")))
}

/// Derives the signature algorithm from a key's `CKA_KEY_TYPE` and, for
/// elliptic-curve keys, `CKA_EC_PARAMS`.
fn key_algorithm(session: &Session, key: ObjectHandle) -> Result<SignatureAlgorithm, SignError> {
    let found = attributes(
        session,
        key,
        &[AttributeType::KeyType, AttributeType::EcParams],
    )?;
    let mut key_type = None;
    let mut params = None;
    for attribute in found {
        match attribute {
            Attribute::KeyType(value) => key_type = Some(value),
            Attribute::EcParams(value) => params = Some(value),
            _ => {}
        }
    }
    let Some(key_type) = key_type else {
        return Err(SignError::Pkcs11("the key has no CKA_KEY_TYPE".to_owned()));
    };
    if key_type == KeyType::RSA {
        return Ok(SignatureAlgorithm::RsaPssSha512);
    }
    if key_type != KeyType::EC && key_type != KeyType::EC_EDWARDS {
        return Err(SignError::Pkcs11(format!(
            "key type {key_type} is not supported; use an EC, Edwards-curve or RSA key"
        )));
    }
    match params.as_deref() {
        Some(P256_OID) => Ok(SignatureAlgorithm::EcdsaP256Sha256),
        Some(P384_OID) => Ok(SignatureAlgorithm::EcdsaP384Sha384),
        Some(ED25519_OID | ED25519_NAME) => Ok(SignatureAlgorithm::Ed25519),
        Some(_) => Err(SignError::Pkcs11(
            "the key's curve is not supported; use P-256, P-384 or Ed25519".to_owned(),
        )),
        None => Err(SignError::Pkcs11(
            "the elliptic-curve key has no readable CKA_EC_PARAMS".to_owned(),
        )),
    }
}

/// Reads the public key object labelled `key_label` as a JWK and checks
/// that stepgate-pop accepts it.
fn read_public_jwk(
    session: &Session,
    token_label: &str,
    key_label: &str,
    algorithm: SignatureAlgorithm,
) -> Result<Value, SignError> {
    let public = find_one(session, ObjectClass::PUBLIC_KEY, key_label)?.ok_or_else(|| {
        SignError::Pkcs11(format!(
            "no public key labelled {key_label:?} in token {token_label:?}; \
             the signer needs it to build the key's JWK"
        ))
    })?;
    let jwk = match algorithm {
        SignatureAlgorithm::RsaPssSha512 => {
            let found = attributes(
                session,
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let mut n = None;
            let mut e = None;
            for attribute in found {
                match attribute {
                    Attribute::Modulus(value) => n = Some(value),
                    Attribute::PublicExponent(value) => e = Some(value),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err(SignError::Pkcs11(
                    "the RSA public key has no readable CKA_MODULUS or CKA_PUBLIC_EXPONENT"
                        .to_owned(),
                ));
            };
            json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&n)),
                "e": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&e)),
            })
        }
        ec => {
            let found = attributes(session, public, &[AttributeType::EcPoint])?;
            let Some(Attribute::EcPoint(encoded)) = found.into_iter().next() else {
                return Err(SignError::Pkcs11(
                    "the public key has no readable CKA_EC_POINT".to_owned(),
                ));
            };
            let (point_len, curve) = match ec {
                SignatureAlgorithm::Ed25519 => (32, None),
                SignatureAlgorithm::EcdsaP256Sha256 => (65, Some("P-256")),
                _ => (97, Some("P-384")),
            };
            let point = unwrap_ec_point(&encoded, point_len)?;
            match curve {
                None => json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(point),
                }),
                Some(curve) => {
                    if point.first() != Some(&0x04) {
                        return Err(SignError::Pkcs11(
                            "the token's EC point is not in uncompressed form".to_owned(),
                        ));
                    }
                    ec_jwk(curve, point)
                }
            }
        }
    };
    PublicJwk::from_json(&jwk)?;
    Ok(jwk)
}

/// Returns the point of a `CKA_EC_POINT` value. PKCS#11 wraps it in a DER
/// OCTET STRING, but some tokens return the bare point, which is accepted
/// when its length is `point_len`.
fn unwrap_ec_point(encoded: &[u8], point_len: usize) -> Result<&[u8], SignError> {
    if encoded.len() == point_len {
        return Ok(encoded);
    }
    let content = match encoded {
        [0x04, len, rest @ ..] if *len < 0x80 => Some((usize::from(*len), rest)),
        [0x04, 0x81, len, rest @ ..] => Some((usize::from(*len), rest)),
        _ => None,
    };
    match content {
        Some((len, rest)) if len == rest.len() && len == point_len => Ok(rest),
        _ => Err(SignError::Pkcs11(format!(
            "CKA_EC_POINT is neither a DER OCTET STRING of {point_len} bytes nor a bare point"
        ))),
    }
}

/// Checks that the token marked a new private key sensitive and not
/// extractable, as requested.
fn check_private_key_protected(session: &Session, private: ObjectHandle) -> Result<(), SignError> {
    let found = attributes(
        session,
        private,
        &[AttributeType::Sensitive, AttributeType::Extractable],
    )?;
    let mut sensitive = None;
    let mut extractable = None;
    for attribute in found {
        match attribute {
            Attribute::Sensitive(value) => sensitive = Some(value),
            Attribute::Extractable(value) => extractable = Some(value),
            _ => {}
        }
    }
    if sensitive != Some(true) || extractable != Some(false) {
        return Err(SignError::Pkcs11(format!(
            "the token did not protect the new private key \
             (CKA_SENSITIVE {sensitive:?}, CKA_EXTRACTABLE {extractable:?}); the key was deleted"
        )));
    }
    Ok(())
}
