//! `stepgate approver ...` and `stepgate approvals ...`: the people who
//! approve, and their decisions from a terminal under the same rules as the
//! approvals page.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use stepgate_core::{Clock, IdentityName, SystemClock};
use stepgate_engine::{ApprovalDesk, admin_entry};
use stepgate_factors::totp::{Algorithm, TotpParams, TotpSecret, otpauth_uri};
use stepgate_store::{ApprovalRecord, ApprovalStore, ApproverRecord};

use crate::ListFormat;
use crate::admin::{actor, open_store};

#[derive(Subcommand, Debug)]
pub(crate) enum ApproverCommand {
    /// Add a person who approves requests. Prints the otpauth:// URI of the
    /// TOTP factor they sign in and decide with; it is shown only once.
    Add {
        name: String,
        /// Approver group to join; repeat for several. Default: the
        /// config's `approval.default_group`.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Issuer shown by authenticator apps.
        #[arg(long, default_value = "stepgate")]
        issuer: String,
    },
    /// List approvers and their groups.
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Remove an approver; their past decisions stay in the audit trail.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ApprovalsCommand {
    /// List pending approval requests (with --all, decided ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Show one approval request with its votes.
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Approve a pending request.
    Approve(DecideArgs),
    /// Deny a pending request.
    Deny(DecideArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct DecideArgs {
    id: String,
    /// The approver deciding.
    #[arg(long = "as", value_name = "APPROVER")]
    approver: String,
    /// The approver's current TOTP code.
    #[arg(long, value_name = "CODE")]
    totp: String,
    /// Why, for the requester and the audit trail.
    #[arg(long, default_value = "")]
    comment: String,
}

fn parse_name(name: &str, what: &str) -> anyhow::Result<IdentityName> {
    IdentityName::new(name).with_context(|| format!("invalid {what} name"))
}

fn check_group(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        stepgate_config::is_group_name(name),
        "invalid group name {name:?}: use 1 to 64 ASCII letters, digits, '-' and '_'"
    );
    Ok(())
}

pub(crate) fn approver(path: Option<&Path>, command: ApproverCommand) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(path)?;
    let store = open_store(&config)?;
    let now = SystemClock.now();
    match command {
        ApproverCommand::Add {
            name,
            groups,
            issuer,
        } => {
            let name = parse_name(&name, "approver")?;
            let groups = if groups.is_empty() {
                vec![config.approval.default_group.clone()]
            } else {
                groups
            };
            for group in &groups {
                check_group(group)?;
                let configured = *group == config.approval.default_group
                    || config
                        .approval
                        .groups
                        .iter()
                        .any(|known| &known.name == group);
                if !configured {
                    eprintln!(
                        "warning: group {group} has no [[approval.groups]] entry in {}, so it has a quorum of 1, no time window and no webhook",
                        config.source_name
                    );
                }
            }
            let algorithm = Algorithm::Sha1;
            let params = TotpParams::new(algorithm, 6, 30)?;
            let secret = TotpSecret::generate(algorithm)?;
            let record = ApproverRecord::new(
                name.clone(),
                secret.danger_bytes().to_vec(),
                algorithm.as_str().to_owned(),
                6,
                30,
                groups.clone(),
                now,
            );
            let detail = format!("approver add {name} (groups {})", groups.join(", "));
            store.add_approver(&record, admin_entry(now, &actor(), None, detail))?;
            println!("{}", otpauth_uri(&issuer, name.as_str(), &secret, &params));
            eprintln!(
                "added approver {name} in group {}; the URI above holds their sign-in secret and is shown only once",
                groups.join(", ")
            );
        }
        ApproverCommand::List { format } => {
            use std::fmt::Write as _;
            let approvers = store.approvers()?;
            let mut text = String::new();
            match format {
                ListFormat::Json => {
                    for approver in &approvers {
                        let line = serde_json::json!({
                            "name": approver.name.as_str(),
                            "groups": approver.groups,
                            "created_at": approver.created_at.to_rfc3339(),
                        });
                        let _ = writeln!(text, "{line}");
                    }
                }
                ListFormat::Table => {
                    let _ = writeln!(text, "{:<24} {:<30} CREATED", "NAME", "GROUPS");
                    for approver in &approvers {
                        let _ = writeln!(
                            text,
                            "{:<24} {:<30} {}",
                            approver.name.as_str(),
                            approver.groups.join(","),
                            approver.created_at.to_rfc3339()
                        );
                    }
                }
            }
            write_stdout(&text)?;
        }
        ApproverCommand::Remove { name } => {
            let name = parse_name(&name, "approver")?;
            let detail = format!("approver remove {name}");
            if !store.remove_approver(&name, admin_entry(now, &actor(), None, detail))? {
                anyhow::bail!(
                    "approver {name} not found: list approvers with `stepgate approver list`"
                );
            }
            eprintln!("removed approver {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds owners to a new identity, after checking each is an approver.
pub(crate) fn check_owners(
    store: &dyn ApprovalStore,
    owners: &[String],
) -> anyhow::Result<Vec<IdentityName>> {
    let mut names = Vec::with_capacity(owners.len());
    for owner in owners {
        let name = parse_name(owner, "owner")?;
        if store.approver(&name)?.is_none() {
            anyhow::bail!(
                "owner {name} is not an approver: add them first with `stepgate approver add {name}`"
            );
        }
        names.push(name);
    }
    Ok(names)
}

pub(crate) fn approvals(
    path: Option<&Path>,
    command: ApprovalsCommand,
) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(path)?;
    let store: Arc<dyn stepgate_store::Store> = Arc::new(open_store(&config)?);
    let desk = ApprovalDesk::new(store, Arc::new(SystemClock), config.approval.clone());
    match command {
        ApprovalsCommand::List { all, format } => {
            use std::fmt::Write as _;
            desk.expire_due()?;
            let approvals = desk.approvals(!all, 500)?;
            let mut text = String::new();
            match format {
                ListFormat::Json => {
                    for approval in &approvals {
                        let _ = writeln!(text, "{}", approval_json(approval));
                    }
                }
                ListFormat::Table => {
                    let _ = writeln!(
                        text,
                        "{:<28} {:<9} {:<20} {:<40} {:>4} {:>6} EXPIRES",
                        "ID", "STATE", "IDENTITY", "OPERATION", "RISK", "VOTES"
                    );
                    for approval in &approvals {
                        let operation = format!("{} {}", approval.method, approval.target);
                        let _ = writeln!(
                            text,
                            "{:<28} {:<9} {:<20} {:<40} {:>4} {:>6} {}",
                            approval.id,
                            approval.state.as_str(),
                            approval.identity.as_str(),
                            truncate(&operation.escape_debug().to_string(), 40),
                            approval.risk,
                            format!("{}/{}", approval.approvals(), approval.quorum),
                            approval.expires_at.to_rfc3339()
                        );
                    }
                    if approvals.is_empty() {
                        eprintln!("no {}approval requests", if all { "" } else { "pending " });
                    }
                }
            }
            write_stdout(&text)?;
        }
        ApprovalsCommand::Show { id, format } => {
            let approval = desk.approval(&id)?.with_context(|| {
                format!("approval {id} not found: list approvals with `stepgate approvals list`")
            })?;
            match format {
                ListFormat::Json => println!("{}", approval_json(&approval)),
                ListFormat::Table => print_approval(&approval, &desk)?,
            }
        }
        ApprovalsCommand::Approve(args) => return decide(&desk, args, true),
        ApprovalsCommand::Deny(args) => return decide(&desk, args, false),
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(desk: &ApprovalDesk, args: DecideArgs, approve: bool) -> anyhow::Result<ExitCode> {
    let approver = parse_name(&args.approver, "approver")?;
    let after = desk.decide(
        &args.id,
        &approver,
        approve,
        &args.comment,
        Some(&args.totp),
        true,
        "cli",
    )?;
    eprintln!(
        "{} approval {} as {approver}: now {} ({} of {} approvals)",
        if approve { "approved" } else { "denied" },
        after.id,
        after.state.as_str(),
        after.approvals(),
        after.quorum
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout; a reader that closed the pipe, such as `head`,
/// is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn approval_json(approval: &ApprovalRecord) -> serde_json::Value {
    let votes: Vec<serde_json::Value> = approval
        .votes
        .iter()
        .map(|vote| {
            serde_json::json!({
                "approver": vote.approver.as_str(),
                "decision": if vote.approve { "approve" } else { "deny" },
                "comment": vote.comment,
                "via": vote.via,
                "at": vote.at.to_rfc3339(),
            })
        })
        .collect();
    serde_json::json!({
        "id": approval.id,
        "state": approval.state.as_str(),
        "identity": approval.identity.as_str(),
        "method": approval.method,
        "host": approval.host,
        "target": approval.target,
        "body_preview": approval.body_preview,
        "action": approval.action,
        "zone": approval.zone,
        "client_addr": approval.client_addr,
        "risk": approval.risk,
        "reasons": approval.reasons,
        "policies": approval.policies,
        "group": approval.group,
        "quorum": approval.quorum,
        "approvals": approval.approvals(),
        "votes": votes,
        "operation_sha256": approval.operation,
        "body_sha256": approval.body_sha256,
        "body_bytes": approval.body_bytes,
        "created_at": approval.created_at.to_rfc3339(),
        "expires_at": approval.expires_at.to_rfc3339(),
        "valid_until": approval.valid_until.map(|at| at.to_rfc3339()),
        "used_at": approval.used_at.map(|at| at.to_rfc3339()),
    })
}

fn print_approval(approval: &ApprovalRecord, desk: &ApprovalDesk) -> anyhow::Result<()> {
    println!("approval   {}", approval.id);
    println!("state      {}", approval.state.as_str());
    println!("identity   {}", approval.identity);
    let owners = desk.owners(&approval.identity)?;
    if !owners.is_empty() {
        let owners: Vec<&str> = owners.iter().map(IdentityName::as_str).collect();
        println!("owners     {}", owners.join(", "));
    }
    println!("operation  {} {}", approval.method, approval.target);
    println!("host       {}", approval.host);
    match &approval.body_sha256 {
        Some(digest) => println!("body       {} bytes, sha256 {digest}", approval.body_bytes),
        None => println!("body       none"),
    }
    if let Some(preview) = &approval.body_preview {
        // Control characters would act on the terminal, so they are escaped.
        println!("body text  {}", preview.escape_debug());
    }
    println!("from       {}", approval.client_addr);
    println!("risk       {}", approval.risk);
    for reason in &approval.reasons {
        println!("  reason   {reason}");
    }
    println!(
        "group      {} (needs {} approval{})",
        approval.group,
        approval.quorum,
        if approval.quorum == 1 { "" } else { "s" }
    );
    println!("requested  {}", approval.created_at.to_rfc3339());
    println!("expires    {}", approval.expires_at.to_rfc3339());
    if let Some(until) = approval.valid_until {
        println!("usable to  {}", until.to_rfc3339());
    }
    for vote in &approval.votes {
        println!(
            "vote       {} {} via {} at {}{}",
            vote.approver,
            if vote.approve { "approved" } else { "denied" },
            vote.via,
            vote.at.to_rfc3339(),
            if vote.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", vote.comment)
            }
        );
    }
    Ok(())
}
