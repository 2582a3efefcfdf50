//! `stepgate run`: start the store, the audit writer, the engine and the
//! listeners; stop cleanly on SIGTERM or Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stepgate_core::SystemClock;
use stepgate_engine::{AuditWriter, Engine, Settings};
use stepgate_http::{Gateway, serve_echo};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::LogFormat;
use crate::admin::{load_geo, load_policy, open_store};

/// How often the gateway checks the store for administrative changes.
const RELOAD_INTERVAL: Duration = Duration::from_millis(500);
/// How often changed baselines are saved.
const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

pub(crate) fn run(config_path: Option<&Path>, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    init_tracing(log_format);
    let config = crate::load_config(config_path)?;
    let policy = load_policy(&config, config_path)?;
    let policies = policy.policy_count();
    let store = Arc::new(open_store(&config)?);
    let (sink, writer) = AuditWriter::start(store.clone(), config.audit.batch_size)
        .context("cannot start the audit writer")?;
    let geo = load_geo(&config, config_path)?;
    let mut engine = Engine::new(
        Settings::from_config(&config),
        policy,
        Arc::new(SystemClock),
        store.clone(),
        sink,
    )?;
    if let Some(geo) = geo {
        engine = engine.with_locator(Arc::new(geo));
    }
    if config.step_up.dpop_nonce {
        engine = engine.with_dpop_nonces(
            stepgate_pop::NonceIssuer::random().context("cannot create the DPoP nonce key")?,
        );
    }
    if config.step_up.grant_tokens
        && let Some(keys) = load_grant_keys(&config, config_path, true)?
    {
        tracing::info!(grant.kid = keys.key_id(), grant.public_jwk = %keys.public_jwk(), "grant tokens on");
        engine = engine.with_grant_keys(keys);
    }
    let desk = Arc::new(stepgate_engine::ApprovalDesk::new(
        store.clone(),
        Arc::new(SystemClock),
        config.approval.clone(),
    ));
    engine = engine.with_approvals(desk);
    let engine = Arc::new(engine);
    tracing::info!(
        config = %config.source_name,
        data_dir = %config.gateway.data_dir.display(),
        policies,
        "stepgate starting"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stepgate")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(&config, engine.clone()));
    runtime.shutdown_timeout(Duration::from_secs(2));

    if let Err(err) = engine.flush() {
        tracing::error!(error = %err, "cannot save baselines at shutdown");
    }
    drop(engine);
    writer.join();
    tracing::info!("stepgate stopped");
    result.map(|()| ExitCode::SUCCESS)
}

/// Runs `stepgate grant-key`: prints the grant-signing key's public JWK.
pub(crate) fn print_grant_key(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(config_path)?;
    crate::admin::open_store(&config)?;
    let keys = load_grant_keys(&config, config_path, true)?
        .context("no grant key could be loaded or created")?;
    println!("{}", keys.public_jwk());
    eprintln!("grant key {}", keys.key_id());
    Ok(ExitCode::SUCCESS)
}

/// Loads the key that signs grant tokens and the other replicas' public
/// keys. When the config names no key file, the key is `grant-key.pem` in
/// the data directory, created when `create` is set; without it and
/// without `create` there is nothing to load.
pub(crate) fn load_grant_keys(
    config: &stepgate_config::Config,
    config_path: Option<&Path>,
    create: bool,
) -> anyhow::Result<Option<stepgate_engine::GrantKeys>> {
    let base = config_path.and_then(Path::parent).unwrap_or(Path::new("."));
    let step_up = &config.step_up;
    let path = match &step_up.grant_key_file {
        Some(file) => base.join(file),
        None => {
            let path = config.gateway.data_dir.join("grant-key.pem");
            if !path.exists() && !create {
                return Ok(None);
            }
            if !path.exists() {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let pem = stepgate_engine::GrantKeys::generate_pem().map_err(anyhow::Error::msg)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot create grant key {}", path.display()))?;
                file.write_all(pem.as_bytes())
                    .with_context(|| format!("cannot write grant key {}", path.display()))?;
                tracing::info!(path = %path.display(), "created a grant-token signing key");
            }
            path
        }
    };
    let text = crate::admin::read_key_file(&path, "grant key (step_up.grant_key_file)")?;
    let mut trusted = Vec::new();
    for file in &step_up.grant_trusted_keys {
        let path = base.join(file);
        let text =
            crate::admin::read_key_file(&path, "trusted grant key (step_up.grant_trusted_keys)")?;
        let key = if text.trim_start().starts_with('{') {
            serde_json::from_str(&text)
                .map_err(|err| stepgate_pop::PopError::Malformed(err.to_string()))
                .and_then(|value| stepgate_pop::PublicJwk::from_json(&value))
        } else {
            stepgate_pop::public_key_from_pem(&text)
        }
        .map_err(|err| anyhow::anyhow!("trusted grant key {}: {err}", path.display()))?;
        trusted.push(key);
    }
    stepgate_engine::GrantKeys::from_pem(&text, trusted)
        .map(Some)
        .map_err(|err| {
            anyhow::anyhow!(
                "grant key {}: {err}; give an Ed25519 private key in PKCS#8 PEM (openssl genpkey -algorithm ed25519)",
                path.display()
            )
        })
}

async fn serve(config: &stepgate_config::Config, engine: Arc<Engine>) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    if let Some(echo) = &config.echo {
        serve_echo(echo.listen, stopped.clone()).await?;
    }
    let mut gateway = Gateway::bind(config, engine.clone()).await?;
    if let Some(postgres) = stepgate_pgproxy::PgGateway::bind(config, engine.clone()).await? {
        tokio::spawn(postgres.serve(stopped.clone()));
    }
    if let Some(pages) = approvals_page(config, &engine) {
        gateway = gateway.with_admin_pages(pages);
    }
    tokio::spawn(maintain(engine, stopped.clone()));
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    gateway.serve(stopped).await;
    Ok(())
}

/// Builds the approvals page for the admin listener, when `[admin]` is
/// configured. Its cookies are `Secure` over HTTPS and on loopback
/// addresses, which browsers treat as secure contexts over plain HTTP.
fn approvals_page(
    config: &stepgate_config::Config,
    engine: &Engine,
) -> Option<stepgate_http::AdminPages> {
    let admin = config.admin.as_ref()?;
    let desk = engine.approvals()?.clone();
    let mut settings = stepgate_admin::ConsoleSettings::new(
        admin.tls.is_some() || admin.listen.ip().is_loopback(),
        Duration::from_secs(config.approval.session_secs),
    );
    settings.public_origin = config.approval.page_url.as_deref().and_then(origin_of);
    let console = stepgate_admin::Console::new(desk, settings);
    Some(Arc::new(move |request, peer| {
        let console = console.clone();
        Box::pin(async move { console.handle(request, peer).await })
    }))
}

/// Returns the origin (`scheme://host[:port]`) of a URL such as the configured
/// `approval.page_url`.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// Reloads credentials after administrative changes and saves baselines.
async fn maintain(engine: Arc<Engine>, mut stopped: watch::Receiver<bool>) {
    let mut reload = tokio::time::interval(RELOAD_INTERVAL);
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = reload.tick() => {
                let engine = engine.clone();
                match tokio::task::spawn_blocking(move || engine.reload_if_changed()).await {
                    Ok(Err(err)) => tracing::error!(error = %err, "cannot reload credentials, keeping the loaded ones"),
                    Err(err) => tracing::error!(error = %err, "credential reload task failed"),
                    Ok(Ok(_)) => {}
                }
            }
            _ = flush.tick() => {
                let flushing = engine.clone();
                match tokio::task::spawn_blocking(move || flushing.flush()).await {
                    Ok(Err(err)) => tracing::error!(error = %err, "cannot save baselines, retrying later"),
                    Err(err) => tracing::error!(error = %err, "baseline flush task failed"),
                    Ok(Ok(_)) => {}
                }
                if let Some(desk) = engine.approvals().cloned() {
                    match tokio::task::spawn_blocking(move || desk.expire_due()).await {
                        Ok(Err(err)) => tracing::error!(error = %err, "cannot expire approvals, retrying later"),
                        Err(err) => tracing::error!(error = %err, "approval expiry task failed"),
                        Ok(Ok(_)) => {}
                    }
                }
            }
            _ = stopped.changed() => break,
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("STEPGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origin_of_page_url() {
        assert_eq!(
            origin_of("https://stepgate.example.com/approvals").as_deref(),
            Some("https://stepgate.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:9091").as_deref(),
            Some("http://127.0.0.1:9091")
        );
        assert_eq!(origin_of("stepgate.example.com"), None);
        assert_eq!(origin_of("https:///x"), None);
    }
}
