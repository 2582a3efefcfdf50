//! Administrative commands: identities, tokens, factors, policies, audit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use stepgate_config::Config;
use stepgate_core::{
    ApiToken, Clock, Identity, IdentityName, SignalKind, SystemClock, Timestamp, TokenId,
};
use stepgate_engine::admin_entry;
use stepgate_factors::totp::{Algorithm, TotpParams, TotpSecret, otpauth_uri};
use stepgate_policy::Policy;
use stepgate_risk::ANY_VALUE;
use stepgate_store::{AcceptedSignal, ApprovalStore, SqliteStore, Store, TokenRecord, TotpRecord};

use crate::{
    AuditCommand, BaselineCommand, CertificateMatch, EnrollCommand, IdentityCommand, ListFormat,
    PolicyCommand, RemoveCommand, TokenCommand, load_config,
};

/// Opens the store named by the configuration, creating the data directory.
pub(crate) fn open_store(config: &Config) -> anyhow::Result<SqliteStore> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.gateway.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        // The directory contains TOTP secrets, so only its owner may enter it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "cannot restrict permissions of data directory {}",
                    dir.display()
                )
            },
        )?;
    }
    Ok(SqliteStore::open(dir)?)
}

/// Loads the policy named by `[policy] file`, relative to the config file's
/// directory, or the built-in default.
pub(crate) fn load_policy(config: &Config, config_path: Option<&Path>) -> anyhow::Result<Policy> {
    let Some(file) = &config.policy.file else {
        return Ok(Policy::default_policy()?);
    };
    let base = config_path.and_then(Path::parent).unwrap_or(Path::new("."));
    let path = base.join(file);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read policy file {} (policy.file = {:?})",
            path.display(),
            file
        )
    })?;
    let policy = Policy::new(&text, &path.display().to_string())?;
    for group in policy.approval_groups() {
        let known = group == config.approval.default_group
            || config
                .approval
                .groups
                .iter()
                .any(|known| known.name == group);
        anyhow::ensure!(
            known,
            "policy {}: @approval_group({group:?}) names no [[approval.groups]] entry; add one or use the default group {:?}",
            path.display(),
            config.approval.default_group
        );
    }
    Ok(policy)
}

/// Opens the GeoIP databases the config names, relative to the config
/// file's directory; `None` when `[geoip]` configures nothing.
pub(crate) fn load_geo(
    config: &Config,
    config_path: Option<&Path>,
) -> anyhow::Result<Option<stepgate_geo::Geo>> {
    let geoip = &config.geoip;
    if !geoip.is_configured() {
        return Ok(None);
    }
    let base = config_path.and_then(Path::parent).unwrap_or(Path::new("."));
    let sources = stepgate_geo::GeoSources {
        asn_db: geoip.asn_db.as_ref().map(|file| base.join(file)),
        city_db: geoip.city_db.as_ref().map(|file| base.join(file)),
        anonymous_db: geoip.anonymous_db.as_ref().map(|file| base.join(file)),
        hosting_networks: geoip.hosting_nets.clone(),
    };
    Ok(Some(stepgate_geo::Geo::open(&sources)?))
}

/// Who made an administrative change: the operating-system user.
/// Derives what SCRAM-SHA-256 needs to check `token` as the PostgreSQL
/// password of `identity`, with the identity's salt (created on its first
/// token) and PostgreSQL's default of 4096 iterations.
fn scram_credential(
    store: &SqliteStore,
    identity: &IdentityName,
    token: &str,
) -> anyhow::Result<String> {
    let failed = |err: stepgate_scram::Error| {
        anyhow::anyhow!("cannot derive the token's SCRAM credential: {err}")
    };
    // A credential with a fresh random salt, kept when the identity has no
    // salt yet.
    let fresh =
        stepgate_scram::StoredCredential::generate(token, stepgate_scram::DEFAULT_ITERATIONS)
            .map_err(failed)?;
    let salt = store.identity_scram_salt(identity, fresh.salt())?;
    if salt == fresh.salt() {
        return Ok(fresh.format());
    }
    let credential =
        stepgate_scram::StoredCredential::derive(token, &salt, stepgate_scram::DEFAULT_ITERATIONS)
            .map_err(failed)?;
    Ok(credential.format())
}

pub(crate) fn actor() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|user| format!("cli:{user}"))
        .unwrap_or_else(|_| "cli".to_owned())
}

fn parse_name(name: &str) -> anyhow::Result<IdentityName> {
    Ok(IdentityName::new(name)?)
}

pub(crate) fn check_config(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let policy = load_policy(&config, path)?;
    let geo = load_geo(&config, path)?;
    config.check_tls_files()?;
    stepgate_http::check_webhooks(&config)?;
    stepgate_pgproxy::check(&config)?;
    if config.step_up.grant_tokens
        && let Some(keys) = crate::run::load_grant_keys(&config, path, false)?
    {
        eprintln!("grant tokens are signed with key {}", keys.key_id());
    }
    let tls: Vec<&str> = config
        .tls_tables()
        .iter()
        .map(|(table, _)| *table)
        .collect();
    println!(
        "config {} is valid: {} routes, {} zones, {} policies, GeoIP {}, TLS {}",
        config.source_name,
        config.routes.len(),
        config.zones.len(),
        policy.policy_count(),
        if geo.is_some() { "on" } else { "off" },
        if tls.is_empty() {
            "off".to_owned()
        } else {
            format!("on ({})", tls.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn identity(path: Option<&Path>, command: IdentityCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    match command {
        IdentityCommand::Add { name, owners } => {
            let name = parse_name(&name)?;
            let owners = crate::approvals::check_owners(&store, &owners)?;
            let identity = Identity {
                name: name.clone(),
                disabled: false,
                created_at: now,
            };
            store.add_identity(
                &identity,
                admin_entry(now, &actor(), Some(&name), format!("identity add {name}")),
            )?;
            for owner in &owners {
                store.add_owner(
                    &name,
                    owner,
                    admin_entry(
                        now,
                        &actor(),
                        Some(&name),
                        format!("identity {name} owned by approver {owner}"),
                    ),
                )?;
            }
            eprintln!("added identity {name}");
        }
        IdentityCommand::Disable { name } => {
            let name = parse_name(&name)?;
            store.set_identity_disabled(
                &name,
                true,
                admin_entry(
                    now,
                    &actor(),
                    Some(&name),
                    format!("identity disable {name}"),
                ),
            )?;
            eprintln!("disabled identity {name}");
        }
        IdentityCommand::Enable { name } => {
            let name = parse_name(&name)?;
            store.set_identity_disabled(
                &name,
                false,
                admin_entry(
                    now,
                    &actor(),
                    Some(&name),
                    format!("identity enable {name}"),
                ),
            )?;
            eprintln!("enabled identity {name}");
        }
        IdentityCommand::List { format } => {
            let snapshot = store.snapshot()?;
            let rows: Vec<_> = snapshot
                .identities
                .iter()
                .map(|identity| {
                    let tokens = snapshot
                        .tokens
                        .iter()
                        .filter(|token| {
                            token.identity == identity.name && token.revoked_at.is_none()
                        })
                        .count();
                    let factors = factor_kinds(&snapshot, &identity.name);
                    (identity, tokens, factors)
                })
                .collect();
            if format == ListFormat::Json {
                for (identity, tokens, factors) in rows {
                    println!(
                        "{}",
                        json!({
                            "name": identity.name.as_str(),
                            "status": if identity.disabled { "disabled" } else { "active" },
                            "created_at": identity.created_at.to_rfc3339(),
                            "active_tokens": tokens,
                            "factors": factors,
                        })
                    );
                }
            } else {
                println!(
                    "{:<32} {:<9} {:<25} {:>6} FACTORS",
                    "NAME", "STATUS", "CREATED", "TOKENS"
                );
                for (identity, tokens, factors) in rows {
                    let factors = if factors.is_empty() {
                        "-".to_owned()
                    } else {
                        factors.join(",")
                    };
                    println!(
                        "{:<32} {:<9} {:<25} {:>6} {}",
                        identity.name,
                        if identity.disabled {
                            "disabled"
                        } else {
                            "active"
                        },
                        identity.created_at.to_rfc3339(),
                        tokens,
                        factors
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn token(path: Option<&Path>, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    match command {
        TokenCommand::Issue { identity } => {
            let name = parse_name(&identity)?;
            let token = ApiToken::generate();
            let scram = scram_credential(&store, &name, token.danger_expose())?;
            let record = TokenRecord {
                id: token.id().clone(),
                identity: name.clone(),
                hash: token.hash(),
                created_at: now,
                revoked_at: None,
                scram: Some(scram),
            };
            let detail = format!("token issue {} for {name}", token.id());
            store.add_token(&record, admin_entry(now, &actor(), Some(&name), detail))?;
            // The token goes to stdout alone, so `$(stepgate token issue x)` captures it.
            println!("{}", token.danger_expose());
            eprintln!(
                "issued token {} for identity {name}; it is shown only once",
                token.id()
            );
        }
        TokenCommand::Revoke { id } => {
            let snapshot = store.snapshot()?;
            let Some(record) = snapshot.tokens.iter().find(|token| token.id.as_str() == id) else {
                bail!("token {id:?} not found: list tokens with `stepgate token list`");
            };
            let detail = format!("token revoke {id}");
            store.revoke_token(
                &TokenId::new(id.clone()),
                now,
                admin_entry(now, &actor(), Some(&record.identity), detail),
            )?;
            eprintln!("revoked token {id}");
        }
        TokenCommand::List { format } => {
            let snapshot = store.snapshot()?;
            if format == ListFormat::Table {
                println!("{:<14} {:<32} {:<25} STATUS", "ID", "IDENTITY", "CREATED");
            }
            for token in &snapshot.tokens {
                let status = match token.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".to_owned(),
                };
                if format == ListFormat::Json {
                    println!(
                        "{}",
                        json!({
                            "id": token.id.as_str(),
                            "identity": token.identity.as_str(),
                            "created_at": token.created_at.to_rfc3339(),
                            "revoked_at": token.revoked_at.map(|at| at.to_rfc3339()),
                        })
                    );
                } else {
                    println!(
                        "{:<14} {:<32} {:<25} {status}",
                        token.id,
                        token.identity,
                        token.created_at.to_rfc3339()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn enroll(path: Option<&Path>, command: EnrollCommand) -> anyhow::Result<ExitCode> {
    let (identity, algorithm, digits, period, issuer) = match command {
        EnrollCommand::Totp {
            identity,
            algorithm,
            digits,
            period,
            issuer,
        } => (identity, algorithm, digits, period, issuer),
        EnrollCommand::Dpop {
            identity,
            jwk,
            require,
            not_before,
            not_after,
        } => {
            let window = parse_window(not_before.as_deref(), not_after.as_deref())?;
            return enroll_dpop(path, &identity, &jwk, require, window);
        }
        EnrollCommand::Certificate {
            identity,
            matching,
            require,
            not_before,
            not_after,
        } => {
            let window = parse_window(not_before.as_deref(), not_after.as_deref())?;
            return bind_certificate(path, &identity, &matching, require, window);
        }
        EnrollCommand::Signature {
            identity,
            key,
            key_id,
            not_before,
            not_after,
        } => {
            let window = parse_window(not_before.as_deref(), not_after.as_deref())?;
            return enroll_signature(path, &identity, &key, key_id, window);
        }
    };
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    let name = parse_name(&identity)?;
    let algorithm: Algorithm = algorithm.parse()?;
    let params = TotpParams::new(algorithm, digits, period)?;
    let secret = TotpSecret::generate(algorithm)?;
    let record = TotpRecord::new(
        name.clone(),
        secret.danger_bytes().to_vec(),
        algorithm.as_str().to_owned(),
        digits,
        period,
        now,
    );
    let detail = format!(
        "factor enroll totp for {name} ({}, {digits} digits, {period} s)",
        algorithm.as_str()
    );
    store.enroll_totp(&record, admin_entry(now, &actor(), Some(&name), detail))?;
    println!("{}", otpauth_uri(&issuer, name.as_str(), &secret, &params));
    eprintln!(
        "enrolled TOTP for identity {name}; the URI above holds the secret and is shown only once"
    );
    Ok(ExitCode::SUCCESS)
}

fn enroll_dpop(
    path: Option<&Path>,
    identity: &str,
    jwk_path: &Path,
    required: bool,
    (not_before, not_after): (Option<Timestamp>, Option<Timestamp>),
) -> anyhow::Result<ExitCode> {
    let text = read_key_file(jwk_path, "JWK")?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON; give the public key as a JWK such as {{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":...,\"y\":...}}",
            jwk_path.display()
        )
    })?;
    let jwk = stepgate_pop::PublicJwk::from_json(&value)
        .map_err(|err| anyhow::anyhow!("{}: {err}", jwk_path.display()))?;
    let thumbprint = jwk.thumbprint();
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    let name = parse_name(identity)?;
    let record = stepgate_store::DpopKeyRecord {
        identity: name.clone(),
        thumbprint: thumbprint.clone(),
        jwk: value.to_string(),
        created_at: now,
        required,
        not_before,
        not_after,
    };
    let mode = if required {
        ", required on every request"
    } else {
        ""
    };
    let detail = format!("factor enroll dpop for {name} (jkt {thumbprint}{mode})");
    store.enroll_dpop(&record, admin_entry(now, &actor(), Some(&name), detail))?;
    println!("{thumbprint}");
    eprintln!("bound DPoP key {thumbprint} to identity {name}");
    Ok(ExitCode::SUCCESS)
}

/// Returns the kinds of factor an identity has enrolled, weakest first.
fn factor_kinds(snapshot: &stepgate_store::Snapshot, name: &IdentityName) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    if snapshot.totp.iter().any(|factor| &factor.identity == name) {
        kinds.push("totp");
    }
    if snapshot.dpop.iter().any(|key| &key.identity == name) {
        kinds.push("dpop");
    }
    if snapshot
        .certificates
        .iter()
        .any(|binding| &binding.identity == name)
    {
        kinds.push("certificate");
    }
    if snapshot
        .signature_keys
        .iter()
        .any(|key| &key.identity == name)
    {
        kinds.push("signature");
    }
    kinds
}

/// Fails with "not found" when the store has no identity `name`.
fn require_identity(store: &SqliteStore, name: &IdentityName) -> anyhow::Result<()> {
    if store
        .snapshot()?
        .identities
        .iter()
        .any(|identity| &identity.name == name)
    {
        Ok(())
    } else {
        bail!("identity {name} not found; `stepgate identity list` shows the identities")
    }
}

/// Prints an identity's factors, one JSON object or table row each.
pub(crate) fn list_factors(
    path: Option<&Path>,
    identity: &str,
    format: ListFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let name = parse_name(identity)?;
    require_identity(&store, &name)?;
    let snapshot = store.snapshot()?;
    let time = |at: Option<Timestamp>| at.map(|at| at.to_rfc3339());
    let mut rows = Vec::new();
    for factor in snapshot.totp.iter().filter(|f| f.identity == name) {
        rows.push(json!({
            "factor": "totp",
            "key": format!("{}, {} digits, {} s", factor.algorithm, factor.digits, factor.period),
            "created_at": factor.created_at.to_rfc3339(),
            "locked_until": time(factor.locked_until),
        }));
    }
    for key in snapshot.dpop.iter().filter(|k| k.identity == name) {
        rows.push(json!({
            "factor": "dpop",
            "key": key.thumbprint,
            "required": key.required,
            "created_at": key.created_at.to_rfc3339(),
            "not_before": time(key.not_before),
            "not_after": time(key.not_after),
        }));
    }
    for binding in snapshot.certificates.iter().filter(|b| b.identity == name) {
        rows.push(json!({
            "factor": "certificate",
            "key": format!("{} {}", binding.rule, binding.value),
            "required": binding.required,
            "created_at": binding.created_at.to_rfc3339(),
            "not_before": time(binding.not_before),
            "not_after": time(binding.not_after),
        }));
    }
    for key in snapshot
        .signature_keys
        .iter()
        .filter(|k| k.identity == name)
    {
        rows.push(json!({
            "factor": "signature",
            "key": key.key_id,
            "algorithm": key.algorithm,
            "created_at": key.created_at.to_rfc3339(),
            "not_before": time(key.not_before),
            "not_after": time(key.not_after),
        }));
    }
    if format == ListFormat::Json {
        for row in rows {
            println!("{row}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12} {:<25} {:<25} KEY",
        "FACTOR", "NOT BEFORE", "NOT AFTER"
    );
    for row in rows {
        let text = |field: &str| row[field].as_str().unwrap_or("-").to_owned();
        println!(
            "{:<12} {:<25} {:<25} {}",
            text("factor"),
            text("not_before"),
            text("not_after"),
            text("key")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Largest key or certificate file read, in bytes.
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a key or certificate file of at most 1 MiB, or standard input for
/// `-`.
pub(crate) fn read_key_file(path: &Path, what: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read the {what} from standard input"))?
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_KEY_FILE_BYTES + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read {what} file {}", path.display()))?
    };
    if read as u64 > MAX_KEY_FILE_BYTES {
        bail!(
            "{what} file {} is larger than {MAX_KEY_FILE_BYTES} bytes; give the key or certificate alone",
            path.display()
        );
    }
    Ok(text)
}

fn enroll_signature(
    path: Option<&Path>,
    identity: &str,
    key_path: &Path,
    key_id: Option<String>,
    (not_before, not_after): (Option<Timestamp>, Option<Timestamp>),
) -> anyhow::Result<ExitCode> {
    let text = read_key_file(key_path, "public key")?;
    let key = if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", key_path.display()))?;
        stepgate_pop::PublicJwk::from_json(&value)
    } else {
        stepgate_pop::public_key_from_pem(&text)
    }
    .map_err(|err| {
        anyhow::anyhow!(
            "{}: {err}; give the public key as PEM (-----BEGIN PUBLIC KEY-----) or as a JWK",
            key_path.display()
        )
    })?;
    let algorithm = stepgate_pop::SignatureAlgorithm::for_key(&key);
    let key_id = match key_id {
        // A keyid travels as a structured-field string, which carries
        // printable ASCII only; quotes and backslashes would need escapes.
        Some(id)
            if id.is_empty()
                || id.len() > 256
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            bail!(
                "--key-id {id:?} must be 1 to 256 visible ASCII characters without spaces, quotes or backslashes"
            )
        }
        Some(id) => id,
        None => key.thumbprint(),
    };
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    let name = parse_name(identity)?;
    let record = stepgate_store::SignatureKeyRecord {
        identity: name.clone(),
        key_id: key_id.clone(),
        algorithm: algorithm.name().to_owned(),
        jwk: public_jwk_json(&key).to_string(),
        created_at: now,
        not_before,
        not_after,
    };
    let detail = format!(
        "factor enroll signature for {name} (key {key_id}, {}, jkt {})",
        algorithm.name(),
        key.thumbprint()
    );
    store.enroll_signature_key(&record, admin_entry(now, &actor(), Some(&name), detail))?;
    println!("{key_id}");
    eprintln!(
        "enrolled signing key {key_id} ({}) for identity {name}",
        algorithm.name()
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the JWK of a key's public members.
fn public_jwk_json(key: &stepgate_pop::PublicJwk) -> serde_json::Value {
    match key {
        stepgate_pop::PublicJwk::Ec { curve, x, y, .. } => {
            let crv = match curve {
                stepgate_pop::Curve::P256 => "P-256",
                stepgate_pop::Curve::P384 => "P-384",
            };
            json!({"kty": "EC", "crv": crv, "x": x, "y": y})
        }
        stepgate_pop::PublicJwk::Ed25519 { x, .. } => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": x})
        }
        stepgate_pop::PublicJwk::Rsa { n_text, e_text, .. } => {
            json!({"kty": "RSA", "n": n_text, "e": e_text})
        }
    }
}

/// Reads a certificate binding's rule and value from the command line.
fn certificate_rule(matching: &CertificateMatch) -> anyhow::Result<(&'static str, String)> {
    if let Some(file) = &matching.cert {
        let text = read_key_file(file, "certificate")?;
        let der = CertificateDer::from_pem_slice(text.as_bytes()).map_err(|err| {
            anyhow::anyhow!(
                "{} has no valid -----BEGIN CERTIFICATE----- block ({err})",
                file.display()
            )
        })?;
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).map_err(|err| {
            anyhow::anyhow!(
                "{} is not a valid X.509 certificate ({err})",
                file.display()
            )
        })?;
        if certificate
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|constraints| constraints.value.ca)
        {
            bail!(
                "{} is a CA certificate; bind the client's own certificate instead",
                file.display()
            );
        }
        return Ok((
            "x5t#S256",
            stepgate_core::ClientCertificate::thumbprint(&der),
        ));
    }
    if let Some(thumbprint) = &matching.thumbprint {
        let valid = thumbprint.len() == 43
            && thumbprint
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            bail!(
                "--thumbprint {thumbprint:?} is not a base64url SHA-256 thumbprint (43 characters); compute it with: openssl x509 -in CERT -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '='"
            );
        }
        return Ok(("x5t#S256", thumbprint.clone()));
    }
    if let Some(subject) = &matching.subject {
        if !subject.contains('=') || subject.contains(" = ") || subject.trim() != subject {
            bail!(
                "--subject {subject:?} is not an RFC 4514 name as the gateway compares it, such as CN=deploy-bot,O=Example; print a certificate's with: openssl x509 -noout -subject -nameopt RFC2253 -in CERT"
            );
        }
        return Ok(("subject", subject.clone()));
    }
    if let Some(san) = &matching.san {
        let typed = san.split_once(':').and_then(|(kind, name)| {
            let kind = kind.to_ascii_lowercase();
            match kind.as_str() {
                "dns" | "uri" | "email" if !name.is_empty() => Some(format!("{kind}:{name}")),
                // Written as the gateway prints addresses, so `::0001` matches `::1`.
                "ip" => name
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(|addr| format!("ip:{addr}")),
                _ => None,
            }
        });
        let Some(typed) = typed else {
            bail!(
                "--san {san:?} does not name its type; write dns:NAME, uri:URI, email:ADDRESS or ip:ADDRESS, such as uri:spiffe://example.com/deploy-bot"
            );
        };
        return Ok(("san", typed));
    }
    bail!("name the certificate with --cert, --thumbprint, --subject or --san")
}

fn bind_certificate(
    path: Option<&Path>,
    identity: &str,
    matching: &CertificateMatch,
    required: bool,
    (not_before, not_after): (Option<Timestamp>, Option<Timestamp>),
) -> anyhow::Result<ExitCode> {
    let (rule, value) = certificate_rule(matching)?;
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    let name = parse_name(identity)?;
    let record = stepgate_store::CertificateBindingRecord {
        identity: name.clone(),
        rule: rule.to_owned(),
        value: value.clone(),
        required,
        created_at: now,
        not_before,
        not_after,
    };
    let mode = if required {
        ", required on every request"
    } else {
        ""
    };
    let verifies_clients = config
        .gateway
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_auth != stepgate_config::ClientAuth::None);
    if !verifies_clients {
        eprintln!(
            "warning: the gateway listener does not verify client certificates ([gateway.tls] client_auth); until it does, this binding never matches{}",
            if required {
                " and every request of the identity is rejected"
            } else {
                ""
            }
        );
    }
    let detail = format!("factor enroll certificate for {name} ({rule} {value}{mode})");
    store.bind_certificate(&record, admin_entry(now, &actor(), Some(&name), detail))?;
    println!("{rule} {value}");
    eprintln!("bound certificates with {rule} {value} to identity {name}");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn remove_factor(
    path: Option<&Path>,
    command: RemoveCommand,
) -> anyhow::Result<ExitCode> {
    let (identity, key_id) = match command {
        RemoveCommand::Signature { identity, key_id } => (identity, key_id),
        RemoveCommand::Certificate { identity, matching } => {
            let (rule, value) = certificate_rule(&matching)?;
            let config = load_config(path)?;
            let store = open_store(&config)?;
            let now = SystemClock.now();
            let name = parse_name(&identity)?;
            let detail = format!("factor remove certificate for {name} ({rule} {value})");
            let entry = admin_entry(now, &actor(), Some(&name), detail);
            if !store.unbind_certificate(&name, rule, &value, entry)? {
                require_identity(&store, &name)?;
                bail!("identity {name} has no certificate binding {rule} {value}");
            }
            eprintln!("removed certificate binding {rule} {value} of identity {name}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    let name = parse_name(&identity)?;
    let detail = format!("factor remove signature for {name} (key {key_id})");
    if store.remove_signature_key(
        &name,
        &key_id,
        admin_entry(now, &actor(), Some(&name), detail),
    )? {
        eprintln!("removed signing key {key_id} of identity {name}");
        Ok(ExitCode::SUCCESS)
    } else {
        require_identity(&store, &name)?;
        bail!(
            "identity {name} has no signing key {key_id}; `stepgate factor list {name}` lists its keys"
        )
    }
}

pub(crate) fn policy(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read policy file {}", file.display()))?;
            let policy = Policy::new(&text, &file.display().to_string())?;
            println!(
                "policy {} is valid: {} policies",
                file.display(),
                policy.policy_count()
            );
        }
        PolicyCommand::Default => print!("{}", stepgate_policy::DEFAULT_POLICY),
        PolicyCommand::Schema => print!("{}", stepgate_policy::SCHEMA),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn audit(path: Option<&Path>, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let store = open_store(&config)?;
    match command {
        AuditCommand::Verify => {
            let mut rows: Vec<(u64, String, String)> = Vec::new();
            store.scan_audit(&mut |seq, record, hash| {
                rows.push((seq, record.to_owned(), hash.to_owned()));
                true
            })?;
            match stepgate_audit::verify(
                rows.iter()
                    .map(|(seq, record, hash)| (*seq, record.as_str(), hash.as_str())),
            ) {
                Ok(verified) => {
                    println!(
                        "audit trail intact: {} records, last hash {}",
                        verified.records,
                        if verified.records == 0 {
                            "-"
                        } else {
                            verified.last_hash.as_str()
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    println!("audit trail broken: {err}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Export { format: _ } => {
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut write_error = None;
            store.scan_audit(&mut |_, record, _| match writeln!(out, "{record}") {
                Ok(()) => true,
                Err(err) => {
                    write_error = Some(err);
                    false
                }
            })?;
            if let Some(err) =
                write_error.filter(|err| err.kind() != std::io::ErrorKind::BrokenPipe)
            {
                return Err(err.into());
            }
            out.flush().ok();
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn baseline(path: Option<&Path>, command: BaselineCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    match command {
        BaselineCommand::Accept {
            identity,
            signal,
            value,
        } => {
            let name = parse_name(&identity)?;
            let kind = parse_signal(&signal)?;
            let value = value.unwrap_or_else(|| ANY_VALUE.to_owned());
            let value = stepgate_risk::accept_value(kind, &value)
                .map_err(|err| anyhow::anyhow!("signal {}: {err}", kind.name()))?;
            let detail = format!("accept signal {} for value {value:?}", kind.name());
            store.accept_signal(
                &AcceptedSignal {
                    identity: name.clone(),
                    signal: kind.name().to_owned(),
                    value: value.clone(),
                    accepted_at: now,
                },
                admin_entry(now, &actor(), Some(&name), detail),
            )?;
            println!(
                "signal {} accepted as normal for {name} (value {value}); a running gateway applies it within a second",
                kind.name()
            );
        }
        BaselineCommand::Revoke {
            identity,
            signal,
            value,
        } => {
            let name = parse_name(&identity)?;
            let kind = parse_signal(&signal)?;
            let value = value.unwrap_or_else(|| ANY_VALUE.to_owned());
            let detail = format!(
                "revoke acceptance of signal {} for value {value:?}",
                kind.name()
            );
            let removed = store.revoke_acceptance(
                &name,
                kind.name(),
                &value,
                admin_entry(now, &actor(), Some(&name), detail),
            )?;
            if !removed {
                bail!(
                    "signal {} was not accepted for {name} with value {value:?}; see `stepgate baseline show {name}`",
                    kind.name()
                );
            }
            println!(
                "acceptance of signal {} for {name} (value {value}) revoked",
                kind.name()
            );
        }
        BaselineCommand::Show { identity } => {
            let name = parse_name(&identity)?;
            let snapshot = store.snapshot()?;
            if !snapshot.identities.iter().any(|known| known.name == name) {
                bail!("unknown identity {name}; list identities with `stepgate identity list`");
            }
            let baseline = store
                .load_baselines()?
                .into_iter()
                .find(|(owner, _)| *owner == name)
                .map(|(_, baseline)| baseline);
            let accepted: Vec<_> = snapshot
                .accepted
                .iter()
                .filter(|accepted| accepted.identity == name)
                .map(|accepted| {
                    json!({
                        "signal": accepted.signal,
                        "value": accepted.value,
                        "accepted_at": accepted.accepted_at.to_rfc3339(),
                    })
                })
                .collect();
            let shown = json!({
                "identity": name.as_str(),
                "baseline": baseline,
                "accepted": accepted,
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_signal(name: &str) -> anyhow::Result<SignalKind> {
    SignalKind::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = SignalKind::ALL.iter().map(|kind| kind.name()).collect();
        anyhow::anyhow!("unknown signal {name:?}; use one of: {}", names.join(", "))
    })
}

/// Reads `--not-before` and `--not-after`, rejecting a window that ends
/// before it starts.
fn parse_window(
    not_before: Option<&str>,
    not_after: Option<&str>,
) -> anyhow::Result<(Option<Timestamp>, Option<Timestamp>)> {
    let from = parse_time("--not-before", not_before)?;
    let until = parse_time("--not-after", not_after)?;
    if let (Some(from), Some(until)) = (from, until)
        && from > until
    {
        bail!("--not-before is after --not-after; the window would never be valid");
    }
    Ok((from, until))
}

fn parse_time(flag: &str, text: Option<&str>) -> anyhow::Result<Option<Timestamp>> {
    text.map(|text| {
        Timestamp::parse_rfc3339(text).ok_or_else(|| {
            anyhow::anyhow!(
                "{flag} {text:?} is not an RFC 3339 time; write it as 2027-01-31T00:00:00Z"
            )
        })
    })
    .transpose()
}
