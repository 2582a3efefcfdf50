//! Client-side commands: `sign` makes the RFC 9421 signature headers of a
//! step-up response, and `hsm` creates and reads keys in a PKCS#11 token.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use stepgate_signer::{
    DEFAULT_LABEL, KeyFileSigner, Pkcs11Signer, RequestToSign, SignOptions, SignatureAlgorithm,
    Signer, key_thumbprint, sign_request,
};
use zeroize::Zeroizing;

/// Environment variable that contains the token's user PIN by default.
const DEFAULT_PIN_ENV: &str = "STEPGATE_PKCS11_PIN";

/// Arguments of `stepgate sign`.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("key")
        .required(true)
        .args(["key_file", "pkcs11_module"])
))]
pub(crate) struct SignArgs {
    /// Unencrypted PKCS#8 PEM private key (Ed25519, P-256, P-384 or RSA).
    #[arg(long, value_name = "PEM")]
    key_file: Option<PathBuf>,
    /// PKCS#11 module (shared library) of the token that contains the key,
    /// such as /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "PATH", requires_all = ["token", "key_label"])]
    pkcs11_module: Option<PathBuf>,
    /// Label of the PKCS#11 token.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    token: Option<String>,
    /// Label (CKA_LABEL) of the key in the token.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    key_label: Option<String>,
    /// Environment variable that contains the token's user PIN.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PIN_ENV)]
    pin_env: String,
    /// Key id sent as the `keyid` parameter; by default the key's RFC 7638
    /// JWK thumbprint.
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// Challenge id from the step-up challenge (`ch_...`). It is sent as
    /// the `nonce` parameter and in a `Stepgate-Challenge` header.
    #[arg(long, value_name = "ID")]
    challenge: Option<String>,
    /// Signature label.
    #[arg(long, value_name = "LABEL", default_value = DEFAULT_LABEL)]
    label: String,
    /// Covered component, repeated for each one, such as `@method` or
    /// `content-type`. By default: @method, @target-uri, @authority, and
    /// content-digest when the request has a body.
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Creation time sent as `created`, in Unix seconds; by default now.
    #[arg(long, value_name = "UNIX")]
    created: Option<i64>,
    /// Lifetime of the signature in seconds, sent as `expires`.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    expires_in: Option<u32>,
    /// Request description: a line `METHOD URL`, header lines, an empty
    /// line and the body. `-` or no value reads standard input.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
}

/// A key in a PKCS#11 token, as the `hsm` commands name it.
#[derive(clap::Args, Debug)]
pub(crate) struct TokenKeyArgs {
    /// PKCS#11 module (shared library), such as
    /// /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "PATH")]
    pkcs11_module: PathBuf,
    /// Label of the PKCS#11 token.
    #[arg(long, value_name = "LABEL")]
    token: String,
    /// Label (CKA_LABEL) of the key in the token.
    #[arg(long, value_name = "LABEL")]
    key_label: String,
    /// Environment variable that contains the token's user PIN.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PIN_ENV)]
    pin_env: String,
}

/// Arguments of `stepgate hsm keygen`.
#[derive(clap::Args, Debug)]
pub(crate) struct KeygenArgs {
    #[command(flatten)]
    key: TokenKeyArgs,
    /// Signature algorithm of the new key (RFC 9421 §3.3).
    #[arg(long, value_enum, default_value_t = AlgorithmArg::EcdsaP256Sha256)]
    algorithm: AlgorithmArg,
}

/// `stepgate hsm` subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum HsmCommand {
    /// Generate a key pair inside a PKCS#11 token and print its public key
    /// as a JWK, one line of JSON for `factor enroll signature --key`. The
    /// private key is sensitive and not extractable.
    Keygen(KeygenArgs),
    /// Print the public key of a key pair in a PKCS#11 token as a JWK. Logs
    /// in only when the PIN variable is set.
    PublicKey(TokenKeyArgs),
}

/// Signature algorithms, named as in RFC 9421 §3.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AlgorithmArg {
    #[value(name = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    #[value(name = "ed25519")]
    Ed25519,
    #[value(name = "ecdsa-p384-sha384")]
    EcdsaP384Sha384,
    #[value(name = "rsa-pss-sha512")]
    RsaPssSha512,
}

impl From<AlgorithmArg> for SignatureAlgorithm {
    fn from(algorithm: AlgorithmArg) -> SignatureAlgorithm {
        match algorithm {
            AlgorithmArg::EcdsaP256Sha256 => SignatureAlgorithm::EcdsaP256Sha256,
            AlgorithmArg::Ed25519 => SignatureAlgorithm::Ed25519,
            AlgorithmArg::EcdsaP384Sha384 => SignatureAlgorithm::EcdsaP384Sha384,
            AlgorithmArg::RsaPssSha512 => SignatureAlgorithm::RsaPssSha512,
        }
    }
}

/// Runs `stepgate sign`: prints `Stepgate-Challenge`, `Content-Digest`,
/// `Signature-Input` and `Signature` header lines on standard output.
pub(crate) fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    write_signed_headers(&args, &mut stdout)?;
    stdout.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a `stepgate hsm` subcommand.
pub(crate) fn hsm(command: HsmCommand) -> anyhow::Result<ExitCode> {
    match command {
        HsmCommand::Keygen(args) => hsm_keygen(&args),
        HsmCommand::PublicKey(args) => hsm_public_key(&args),
    }
}

/// Runs `stepgate hsm keygen`: prints the new key's public JWK.
pub(crate) fn hsm_keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = &args.key;
    let pin = required_pin(&key.pin_env)?;
    let algorithm = SignatureAlgorithm::from(args.algorithm);
    let jwk = stepgate_signer::generate_key(
        &key.pkcs11_module,
        &key.token,
        &pin,
        &key.key_label,
        algorithm,
    )?;
    println!("{}", serde_json::to_string(&jwk)?);
    eprintln!(
        "generated {} key {:?} in token {:?}; enrol the JWK above with \
         `stepgate factor enroll signature IDENTITY --key FILE`",
        algorithm.name(),
        key.key_label,
        key.token
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `stepgate hsm public-key`: prints the key's public JWK.
pub(crate) fn hsm_public_key(args: &TokenKeyArgs) -> anyhow::Result<ExitCode> {
    let pin = optional_pin(&args.pin_env)?;
    let jwk = stepgate_signer::public_jwk(
        &args.pkcs11_module,
        &args.token,
        pin.as_deref().map(String::as_str),
        &args.key_label,
    )?;
    println!("{}", serde_json::to_string(&jwk)?);
    Ok(ExitCode::SUCCESS)
}

/// Signs the request that `args` names and writes the header lines to
/// `out`.
fn write_signed_headers(args: &SignArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let text = read_request(args.request.as_deref())?;
    let request = RequestToSign::parse(&text)?;
    let signer = open_signer(args)?;

    let keyid = match &args.key_id {
        Some(id) => id.clone(),
        None => key_thumbprint(signer.as_ref())?,
    };
    let created = match args.created {
        Some(created) => created,
        None => unix_now()?,
    };
    let expires = args
        .expires_in
        .map(|secs| {
            created
                .checked_add(i64::from(secs))
                .context("--created plus --expires-in is out of range")
        })
        .transpose()?;
    let options = SignOptions {
        label: args.label.clone(),
        components: (!args.components.is_empty()).then(|| args.components.clone()),
        nonce: args.challenge.clone(),
        created,
        expires,
        keyid,
    };
    let signed = sign_request(&request, &options, signer.as_ref())?;

    let mut lines = String::new();
    if let Some(challenge) = &args.challenge {
        lines.push_str(&format!("Stepgate-Challenge: {challenge}\n"));
    }
    lines.push_str(&signed.header_lines());
    out.write_all(lines.as_bytes())
        .context("cannot write the header lines")?;
    Ok(())
}

/// Reads the request description from `path`, or from standard input for
/// `None` and `-`.
fn read_request(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(path) if path != Path::new("-") => std::fs::read(path)
            .with_context(|| format!("cannot read request file {}", path.display())),
        _ => {
            let mut text = Vec::new();
            std::io::stdin()
                .read_to_end(&mut text)
                .context("cannot read the request from standard input")?;
            Ok(text)
        }
    }
}

fn open_signer(args: &SignArgs) -> anyhow::Result<Box<dyn Signer>> {
    if let Some(path) = &args.key_file {
        return Ok(Box::new(KeyFileSigner::from_file(path)?));
    }
    let (Some(module), Some(token), Some(key_label)) =
        (&args.pkcs11_module, &args.token, &args.key_label)
    else {
        bail!("give --key-file PEM, or --pkcs11-module PATH with --token and --key-label");
    };
    let pin = required_pin(&args.pin_env)?;
    Ok(Box::new(Pkcs11Signer::open(
        module, token, &pin, key_label,
    )?))
}

/// Reads the user PIN from the environment variable `name`.
fn required_pin(name: &str) -> anyhow::Result<Zeroizing<String>> {
    optional_pin(name)?.with_context(|| {
        format!(
            "environment variable {name} is not set; put the token's user PIN in it, \
             or name another variable with --pin-env"
        )
    })
}

/// Reads the user PIN from the environment variable `name`, if it is set.
fn optional_pin(name: &str) -> anyhow::Result<Option<Zeroizing<String>>> {
    match std::env::var(name) {
        Ok(pin) if pin.is_empty() => {
            bail!("environment variable {name} is empty; put the PIN in it")
        }
        Ok(pin) => Ok(Some(Zeroizing::new(pin))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("environment variable {name} is not valid Unicode")
        }
    }
}

fn unix_now() -> anyhow::Result<i64> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    i64::try_from(secs).context("the system clock is out of range")
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use clap::Parser;
    use stepgate_pop::PublicJwk;
    use stepgate_pop::httpsig::{
        Message, parse_signature_input, signature_base, signature_bytes, verify_signature,
    };

    use super::*;

    #[derive(clap::Parser)]
    struct SignCli {
        #[command(flatten)]
        args: SignArgs,
    }

    fn write_key(dir: &Path) -> PathBuf {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der.as_ref())
        );
        let path = dir.join("key.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn header<'a>(lines: &'a str, name: &str) -> &'a str {
        lines
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {lines}"))
    }

    #[test]
    fn sign_command_headers_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = write_key(dir.path());
        let request = dir.path().join("request.txt");
        std::fs::write(
            &request,
            "POST https://api.example.com/orders\ncontent-type: application/json\n\n{\"qty\": 1}",
        )
        .unwrap();
        let cli = SignCli::try_parse_from([
            "sign",
            "--key-file",
            key.to_str().unwrap(),
            "--challenge",
            "ch_abc123",
            "--created",
            "1700000000",
            "--expires-in",
            "300",
            "--request",
            request.to_str().unwrap(),
        ])
        .unwrap();
        let mut out = Vec::new();
        write_signed_headers(&cli.args, &mut out).unwrap();
        let lines = String::from_utf8(out).unwrap();

        assert_eq!(header(&lines, "Stepgate-Challenge"), "ch_abc123");
        let digest = header(&lines, "Content-Digest");
        assert_eq!(digest, stepgate_signer::content_digest(b"{\"qty\": 1}"));
        let signer = KeyFileSigner::from_file(&key).unwrap();
        let thumbprint = key_thumbprint(&signer).unwrap();
        let input_value = header(&lines, "Signature-Input");
        assert!(
            input_value.ends_with(&format!(
                ";created=1700000000;expires=1700000300;keyid=\"{thumbprint}\";nonce=\"ch_abc123\""
            )),
            "{input_value}"
        );

        let fields = [
            ("content-type", "application/json"),
            ("Content-Digest", digest),
        ];
        let message = Message {
            method: Some("POST"),
            scheme: "https",
            authority: "api.example.com",
            path: "/orders",
            query: None,
            status: None,
            fields: &fields,
        };
        let inputs = parse_signature_input(input_value).unwrap();
        let base = signature_base(&message, &inputs[0]).unwrap();
        let signature = signature_bytes(header(&lines, "Signature"), "stepgate").unwrap();
        let jwk = PublicJwk::from_json(&signer.public_jwk()).unwrap();
        verify_signature(
            &jwk,
            SignatureAlgorithm::EcdsaP256Sha256,
            &inputs[0],
            &base,
            &signature,
        )
        .unwrap();
    }

    #[test]
    fn sign_command_argument_errors() {
        assert!(SignCli::try_parse_from(["sign"]).is_err());
        assert!(
            SignCli::try_parse_from(["sign", "--key-file", "k", "--pkcs11-module", "m"]).is_err()
        );
        assert!(SignCli::try_parse_from(["sign", "--pkcs11-module", "m", "--token", "t"]).is_err());
        assert!(SignCli::try_parse_from(["sign", "--key-file", "k", "--expires-in", "0"]).is_err());
    }

    #[test]
    fn missing_pin_variable() {
        let name = "STEPGATE_TEST_PIN_THAT_IS_NEVER_SET";
        let err = required_pin(name).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains("--pin-env"), "{err}");
    }
}
