//! The `stepgate` binary: argument parsing and runtime setup. Each command
//! lives in its own module; the work happens in the library crates.

mod admin;
mod approvals;
mod replay;
mod run;
mod sign;
mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use stepgate_config::Config;

/// stepgate: a risk-adaptive step-up gateway for non-human identities.
#[derive(Parser, Debug)]
#[command(name = "stepgate", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults apply.
    #[arg(long, global = true, env = "STEPGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway until SIGTERM or Ctrl-C.
    Run {
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate the configuration and its policy file, then exit.
    CheckConfig,
    /// Manage identities.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the people who approve held requests.
    #[command(subcommand)]
    Approver(approvals::ApproverCommand),
    /// List, show, approve and deny requests held for approval.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Enrol step-up factors.
    #[command(subcommand)]
    Factor(FactorCommand),
    /// Work with Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify and export the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show baselines and accept signals as normal for an identity.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Run the risk engine and policy over recorded events, in time order,
    /// and print one JSON decision per event; a summary goes to stderr.
    Replay {
        /// Input format: CloudTrail files (plain or gzipped, a `Records`
        /// document or one event per line) or stepgate's JSON lines
        /// (its own audit export or the generic schema in the docs).
        #[arg(long, value_enum)]
        format: ReplayFormat,
        /// Lines of `event_id,label` (label `attack` or `normal`); prints
        /// detection figures.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
        /// Also write the summary as JSON to this file.
        #[arg(long, value_name = "FILE")]
        summary: Option<PathBuf>,
        /// Outcome assumed for step-ups, because no client responds to a
        /// challenge in a replay: `fail` (challenged events teach nothing),
        /// `pass` (they teach the baseline) or `labels` (events labelled
        /// normal pass, attacks fail).
        #[arg(long, value_enum, default_value_t = StepUpsArg::Fail)]
        step_ups: StepUpsArg,
        /// Files or directories of recorded events.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Print the public JWK of the key that signs grant tokens, for other
    /// replicas' `step_up.grant_trusted_keys`. Creates `grant-key.pem` in
    /// the data directory when the config names no key file.
    GrantKey,
    /// Sign a request (RFC 9421) to answer a signature step-up.
    Sign(sign::SignArgs),
    /// Create and read keys in a PKCS#11 token.
    #[command(subcommand)]
    Hsm(sign::HsmCommand),
    /// Inspect SQL statements the way the PostgreSQL gateway will.
    #[command(subcommand)]
    Sql(SqlCommand),
}

#[derive(Subcommand, Debug)]
enum SqlCommand {
    /// Read SQL from standard input and print one JSON line per statement:
    /// its number, class (read, write, ddl, privilege, transaction, utility,
    /// function), tables and functions.
    Classify,
}

#[derive(Subcommand, Debug)]
enum BaselineCommand {
    /// Accept a signal as normal for an identity. VALUE is the `value` in
    /// the signal's evidence (a network, operation, client...); without it,
    /// every occurrence of the signal is accepted.
    Accept {
        identity: String,
        /// Signal name, such as new_network or new_operation.
        signal: String,
        value: Option<String>,
    },
    /// Take back an acceptance made with `baseline accept`.
    Revoke {
        identity: String,
        signal: String,
        value: Option<String>,
    },
    /// Print an identity's learned baseline and accepted signals as JSON.
    Show { identity: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StepUpsArg {
    Fail,
    Pass,
    Labels,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReplayFormat {
    Cloudtrail,
    Jsonl,
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// Add an identity.
    Add {
        name: String,
        /// Approver who owns the identity and so never approves its
        /// requests; repeat for several.
        #[arg(long = "owner", value_name = "APPROVER")]
        owners: Vec<String>,
    },
    /// List identities.
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Disable an identity: its tokens stop working at once.
    Disable { name: String },
    /// Enable a disabled identity again.
    Enable { name: String },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issue a token for an identity and print it once on stdout.
    Issue { identity: String },
    /// Revoke a token by its id (see `token list`).
    Revoke { id: String },
    /// List tokens (ids only, never secrets).
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

#[derive(Subcommand, Debug)]
enum FactorCommand {
    /// Enrol a factor for an identity.
    #[command(subcommand)]
    Enroll(EnrollCommand),
    /// Remove a factor from an identity.
    #[command(subcommand)]
    Remove(RemoveCommand),
    /// List an identity's factors: TOTP, DPoP key, signing keys and
    /// certificate bindings, with their validity windows. Never shows
    /// secrets.
    List {
        identity: String,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

/// Certificate selector of a binding; exactly one option is given.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct CertificateMatch {
    /// A PEM certificate; binds its SHA-256 thumbprint (`x5t#S256`).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The base64url SHA-256 thumbprint of the certificate (`x5t#S256`).
    #[arg(long, value_name = "X5T")]
    thumbprint: Option<String>,
    /// The certificate subject as an RFC 4514 string, such as
    /// `CN=ci-bot,O=Example`.
    #[arg(long, value_name = "DN")]
    subject: Option<String>,
    /// A subject alternative name with its type: `dns:NAME`, `uri:URI`
    /// (such as a SPIFFE id), `email:ADDRESS` or `ip:ADDRESS`.
    #[arg(long, value_name = "NAME")]
    san: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RemoveCommand {
    /// Remove one message-signing key, for example the old key after a
    /// rotation.
    Signature {
        identity: String,
        /// The key id printed at enrolment.
        #[arg(long, value_name = "ID")]
        key_id: String,
    },
    /// Remove one certificate binding.
    Certificate {
        identity: String,
        #[command(flatten)]
        matching: CertificateMatch,
    },
}

#[derive(Subcommand, Debug)]
enum EnrollCommand {
    /// Enrol (or replace) a TOTP factor and print its otpauth:// URI.
    Totp {
        identity: String,
        /// HMAC algorithm: sha1, sha256 or sha512.
        #[arg(long, default_value = "sha1")]
        algorithm: String,
        /// Code length, 6 to 8.
        #[arg(long, default_value_t = 6)]
        digits: u32,
        /// Time step in seconds.
        #[arg(long, default_value_t = 30)]
        period: u64,
        /// Issuer shown by authenticator apps.
        #[arg(long, default_value = "stepgate")]
        issuer: String,
    },
    /// Bind (or replace) a DPoP key (RFC 9449), so that a DPoP proof signed
    /// by it meets a step-up. Prints the key's RFC 7638 thumbprint.
    Dpop {
        identity: String,
        /// The public key as a JWK (JSON); `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        jwk: PathBuf,
        /// Bind the identity's tokens to the key: every request must then
        /// use `Authorization: DPoP` with a proof, and the token alone as
        /// `Bearer` is refused.
        #[arg(long)]
        require: bool,
        /// The key is valid from this RFC 3339 time on.
        #[arg(long, value_name = "TIME")]
        not_before: Option<String>,
        /// The key is valid until this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        not_after: Option<String>,
    },
    /// Bind client certificates (RFC 8705) to the identity: a request on a
    /// TLS connection with a matching certificate proves the certificate
    /// factor without a retry. A certificate must also pass the listener's
    /// `client_ca_file` check.
    Certificate {
        identity: String,
        #[command(flatten)]
        matching: CertificateMatch,
        /// Refuse the identity's token on any connection without a
        /// matching certificate.
        #[arg(long)]
        require: bool,
        /// The binding is valid from this RFC 3339 time on.
        #[arg(long, value_name = "TIME")]
        not_before: Option<String>,
        /// The binding is valid until this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        not_after: Option<String>,
    },
    /// Enrol a public key that signs HTTP messages (RFC 9421) for the
    /// identity, such as a key inside an HSM. The algorithm follows from
    /// the key: ed25519, ecdsa-p256-sha256, ecdsa-p384-sha384 or
    /// rsa-pss-sha512. An identity may have several keys, so a new one can
    /// be enrolled before the old one is removed. Prints the key id.
    Signature {
        identity: String,
        /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`) or JWK;
        /// `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The `keyid` signatures name; the key's RFC 7638 thumbprint when
        /// not given.
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
        /// The key is valid from this RFC 3339 time on.
        #[arg(long, value_name = "TIME")]
        not_before: Option<String>,
        /// The key is valid until this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        not_after: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate a Cedar policy file against stepgate's schema.
    Check { file: PathBuf },
    /// Print the built-in default policy.
    Default,
    /// Print the schema policies are validated against.
    Schema,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the whole hash chain; names the first broken record.
    Verify,
    /// Print audit records.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExportFormat {
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { log_format } => run::run(cli.config.as_deref(), log_format),
        Command::CheckConfig => admin::check_config(cli.config.as_deref()),
        Command::Identity(command) => admin::identity(cli.config.as_deref(), command),
        Command::Token(command) => admin::token(cli.config.as_deref(), command),
        Command::Approver(command) => approvals::approver(cli.config.as_deref(), command),
        Command::Approvals(command) => approvals::approvals(cli.config.as_deref(), command),
        Command::Factor(FactorCommand::Enroll(command)) => {
            admin::enroll(cli.config.as_deref(), command)
        }
        Command::Factor(FactorCommand::List { identity, format }) => {
            admin::list_factors(cli.config.as_deref(), &identity, format)
        }
        Command::Factor(FactorCommand::Remove(command)) => {
            admin::remove_factor(cli.config.as_deref(), command)
        }
        Command::Policy(command) => admin::policy(command),
        Command::GrantKey => run::print_grant_key(cli.config.as_deref()),
        Command::Sign(args) => sign::sign(args),
        Command::Hsm(command) => sign::hsm(command),
        Command::Sql(SqlCommand::Classify) => sql::classify(),
        Command::Audit(command) => admin::audit(cli.config.as_deref(), command),
        Command::Baseline(command) => admin::baseline(cli.config.as_deref(), command),
        Command::Replay {
            format,
            labels,
            summary,
            step_ups,
            paths,
        } => replay::replay(
            cli.config.as_deref(),
            replay::ReplayArgs {
                format: match format {
                    ReplayFormat::Cloudtrail => stepgate_replay::Format::CloudTrail,
                    ReplayFormat::Jsonl => stepgate_replay::Format::Jsonl,
                },
                labels: labels.as_deref(),
                summary: summary.as_deref(),
                step_ups: match step_ups {
                    StepUpsArg::Fail => stepgate_replay::StepUps::Fail,
                    StepUpsArg::Pass => stepgate_replay::StepUps::Pass,
                    StepUpsArg::Labels => stepgate_replay::StepUps::Labels,
                },
                paths: &paths,
            },
        ),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration file, or the embedded defaults without one.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    };
    Ok(config)
}

/// Joins an error and its causes with `: `, leaving out a cause whose text
/// the message already contains (many errors repeat their source).
fn error_chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[test]
    fn repeated_causes_are_left_out() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io).context("cannot read a.pem: no such file");
        assert_eq!(error_chain(&err), "cannot read a.pem: no such file");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io).context("cannot read a.pem");
        assert_eq!(error_chain(&err), "cannot read a.pem: no such file");
    }
}
