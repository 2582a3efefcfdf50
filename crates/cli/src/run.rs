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

async fn serve(config: &stepgate_config::Config, engine: Arc<Engine>) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    if let Some(echo) = &config.echo {
        serve_echo(echo.listen, stopped.clone()).await?;
    }
    let gateway = Gateway::bind(config, engine.clone()).await?;
    tokio::spawn(maintain(engine, stopped.clone()));
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    gateway.serve(stopped).await;
    Ok(())
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
                let engine = engine.clone();
                match tokio::task::spawn_blocking(move || engine.flush()).await {
                    Ok(Err(err)) => tracing::error!(error = %err, "cannot save baselines, retrying later"),
                    Err(err) => tracing::error!(error = %err, "baseline flush task failed"),
                    Ok(Ok(_)) => {}
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
