//! `stepgate replay`: the engine's scoring and policy over recorded events.

use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use stepgate_engine::Settings;
use stepgate_replay::{Format, Labels, Replayer, StepUps, discover, read_file};

use crate::admin::{load_geo, load_policy};

/// Events between two looks at the clock for the progress line.
const PROGRESS_EVERY: u64 = 16_384;

pub(crate) struct ReplayArgs<'a> {
    pub(crate) format: Format,
    pub(crate) labels: Option<&'a Path>,
    pub(crate) summary: Option<&'a Path>,
    pub(crate) step_ups: StepUps,
    pub(crate) paths: &'a [PathBuf],
}

pub(crate) fn replay(config_path: Option<&Path>, args: ReplayArgs<'_>) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(config_path)?;
    let policy = load_policy(&config, config_path)?;
    let geo = load_geo(&config, config_path)?;
    // Fail before the run, not after it, when the summary cannot be written.
    if let Some(path) = args.summary {
        std::fs::write(path, b"")
            .with_context(|| format!("cannot write summary file {}", path.display()))?;
    }
    let found = discover(args.paths, args.format).map_err(|(path, err)| {
        anyhow::anyhow!(
            "cannot read {}: {err}; pass files or directories of recorded events",
            path.display()
        )
    })?;
    let stdout = std::io::stdout().lock();
    let mut replayer = Replayer::new(
        Settings::from_config(&config),
        policy,
        BufWriter::with_capacity(256 * 1024, stdout),
    );
    if let Some(geo) = geo {
        replayer = replayer.with_locator(Arc::new(geo));
    }
    if args.step_ups == StepUps::Labels && args.labels.is_none() {
        anyhow::bail!("--step-ups labels needs --labels FILE, the labels it follows");
    }
    replayer = replayer.with_step_ups(args.step_ups);
    if let Some(path) = args.labels {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open labels file {}", path.display()))?;
        let labels = Labels::read(BufReader::new(file))
            .map_err(|err| anyhow::anyhow!("labels file {}: {err}", path.display()))?;
        replayer = replayer.with_labels(labels);
    }

    for skip in found.skipped {
        replayer.skip(skip);
    }
    if found.files.is_empty() {
        eprintln!(
            "replay: no event files under the given paths (files ending in .json, .jsonl, .ndjson, .log or .gz)"
        );
    }
    let started = Instant::now();
    let mut progress = Progress::new(started);
    let mut write_error = None;
    for file in &found.files {
        let mut skips = Vec::new();
        read_file(
            file,
            args.format,
            &mut |event| {
                if write_error.is_none()
                    && let Err(err) = replayer.push(event)
                {
                    write_error = Some(err);
                }
                progress.tick(replayer.report().read);
            },
            &mut |skip| skips.push(skip),
        );
        for skip in skips {
            if skip.not_a_request {
                replayer.ignore();
            } else {
                replayer.skip(skip);
            }
        }
        if let Some(err) = write_error.take() {
            return output_failed(err);
        }
    }
    let report = match replayer.finish() {
        Ok((_, report)) => report,
        Err(err) => return output_failed(err),
    };
    let elapsed = started.elapsed().as_secs_f64();
    eprint!("{}", report.render(elapsed));
    if let Some(path) = args.summary {
        let mut json = serde_json::to_value(&report)?;
        json["seconds"] = serde_json::json!(elapsed);
        json["events_per_second"] =
            serde_json::json!(report.decisions.events as f64 / elapsed.max(1e-9));
        let json = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write summary file {}", path.display()))?;
    }
    Ok(if report.has_skips() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Ends the run when standard output cannot be written. A closed pipe (as
/// with `| head`) is a normal end for a command-line filter.
fn output_failed(err: std::io::Error) -> anyhow::Result<ExitCode> {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(ExitCode::SUCCESS);
    }
    Err(err).context("cannot write decisions to standard output")
}

/// A progress line on standard error every few seconds of a long run.
struct Progress {
    started: Instant,
    last: Instant,
    enabled: bool,
    seen: u64,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last: started,
            enabled: match std::env::var("STEPGATE_PROGRESS") {
                Ok(value) => !matches!(value.as_str(), "" | "0" | "false" | "no"),
                Err(_) => std::io::stderr().is_terminal(),
            },
            seen: 0,
        }
    }

    fn tick(&mut self, read: u64) {
        self.seen += 1;
        if !self.enabled || !self.seen.is_multiple_of(PROGRESS_EVERY) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last) < Duration::from_secs(2) {
            return;
        }
        self.last = now;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        eprintln!(
            "replay: {read} events read in {elapsed:.0} s ({:.0} events/s)",
            read as f64 / elapsed
        );
    }
}
