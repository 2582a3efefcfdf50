//! `stepgate sql classify` through the built binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn classify(input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["sql", "classify"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("stepgate failed to start: {error}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .unwrap_or_else(|error| panic!("writing stdin: {error}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("waiting for stepgate: {error}"))
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

#[test]
fn multi_statement_input_prints_one_line_each() {
    let sql = "BEGIN;\n\
               WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone;\n\
               SELECT lower(name) FROM sales.customers;\n\
               GRANT SELECT ON orders TO bot;\n\
               SELECT pg_terminate_backend(42);\n\
               COMMIT;\n";
    let output = classify(sql.as_bytes());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = lines(&output);
    assert_eq!(lines.len(), 6);

    let numbers: Vec<u64> = lines
        .iter()
        .filter_map(|line| line["statement"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    let classes: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["class"].as_str())
        .collect();
    assert_eq!(
        classes,
        [
            "transaction",
            "write",
            "read",
            "privilege",
            "function",
            "transaction"
        ]
    );
    assert_eq!(lines[1]["tables"], serde_json::json!(["public.orders"]));
    assert_eq!(
        lines[1]["functions"],
        serde_json::json!(["pg_catalog.count"])
    );
    assert_eq!(lines[2]["tables"], serde_json::json!(["sales.customers"]));
    assert_eq!(lines[3]["command"], "GRANT");
    assert_eq!(
        lines[4]["side_effect_functions"],
        serde_json::json!(["pg_terminate_backend"])
    );
    assert_eq!(lines[0]["fingerprint"].as_str().map(str::len), Some(16));
}

#[test]
fn output_starts_with_required_fields() {
    let output = classify(b"SELECT 1");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with(r#"{"statement":1,"class":"read","tables":[],"functions":[],"#),
        "{text}"
    );
}

#[test]
fn parse_error_names_statement_and_position() {
    let output = classify(b"SELECT 1;\nSELECT * FROM FROM t;\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "error: statement 2: syntax error at or near \"FROM\" at position 25 (line 2, column 15)"
    );
}

#[test]
fn empty_input_is_an_error() {
    let output = classify(b"  -- nothing here\n");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("contains no statement"), "{stderr}");
}

#[test]
fn invalid_utf8_is_an_error() {
    let output = classify(b"SELECT '\xff'");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not valid UTF-8"), "{stderr}");
}

#[test]
fn oversized_input_is_an_error() {
    let sql = format!("SELECT '{}'", "x".repeat(1024 * 1024));
    let output = classify(sql.as_bytes());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("over the limit of 1048576 bytes"),
        "{stderr}"
    );
}
