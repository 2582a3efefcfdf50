//! `stepgate sql classify`: classifies the SQL statements on standard input.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use stepgate_sql::{Class, Classifier, DEFAULT_MAX_INPUT_BYTES};

/// One output line: the fields a reader needs first, then the rest.
#[derive(Serialize)]
struct Line<'a> {
    statement: usize,
    class: Class,
    tables: &'a [String],
    functions: &'a [String],
    command: &'a str,
    fingerprint: &'a str,
    side_effect_functions: &'a [String],
}

/// Reads SQL from standard input and prints one JSON line per statement.
pub(crate) fn classify() -> anyhow::Result<ExitCode> {
    // Read one byte past the limit to tell an oversized input from one
    // that fits exactly, without holding more than that in memory.
    let limit = u64::try_from(DEFAULT_MAX_INPUT_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .context("cannot read SQL from standard input")?;
    if bytes.len() > DEFAULT_MAX_INPUT_BYTES {
        anyhow::bail!(
            "SQL on standard input is over the limit of {DEFAULT_MAX_INPUT_BYTES} bytes; \
             split it into smaller inputs"
        );
    }
    let sql = String::from_utf8(bytes).map_err(|error| {
        anyhow::anyhow!(
            "standard input is not valid UTF-8 (invalid byte at offset {})",
            error.utf8_error().valid_up_to()
        )
    })?;

    let statements = Classifier::default().classify(&sql)?;
    let mut out = std::io::stdout().lock();
    for (index, statement) in statements.iter().enumerate() {
        let line = Line {
            statement: index + 1,
            class: statement.class,
            tables: &statement.tables,
            functions: &statement.functions,
            command: &statement.command,
            fingerprint: &statement.fingerprint,
            side_effect_functions: &statement.side_effect_functions,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
