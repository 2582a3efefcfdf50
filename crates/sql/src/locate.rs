//! Finds the location of a parse error and the statement that contains it.
//!
//! NOTE: pg_query 18.1 returns only the parser's message, not its cursor
//! position, so the position is recovered by parsing prefixes of the input:
//! PostgreSQL's LALR parser reports a syntax error at the first token that
//! cannot continue a valid prefix, so a prefix that ends before that token
//! parses or fails "at end of input", and any prefix that contains it fails
//! at that token.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pg_query::protobuf::Token;

/// Maximum number of statement-ending semicolons tried, from the error
/// backwards, when counting the statements before an error. A semicolon
/// inside a `BEGIN ATOMIC` body does not end a statement, so a prefix ending
/// there fails to parse and the next one back is tried.
const MAX_SEMICOLON_TRIES: usize = 32;

/// Returns the byte offset at which the parser reports `message` for
/// `text`, or `None` when it cannot be found.
pub(crate) fn error_offset(text: &str, message: &str) -> Option<usize> {
    if message.contains("at end of input") {
        return Some(text.len());
    }
    let Some(tokens) = token_spans(text) else {
        return lexer_error_offset(text, message);
    };
    // Binary search for the first token whose prefix fails before its end.
    let (mut low, mut high) = (0, tokens.len());
    while low < high {
        let middle = low + (high - low) / 2;
        let (_, end) = tokens[middle];
        if fails_before_end(text.get(..end)?) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    tokens.get(low).map(|(start, _)| *start)
}

/// Returns the 1-based number of the statement that contains `offset`.
pub(crate) fn statement_number(text: &str, offset: usize) -> usize {
    let Some(prefix) = text.get(..offset) else {
        return 1;
    };
    let Some(scan) = guarded(|| pg_query::scan(prefix)).and_then(Result::ok) else {
        return 1;
    };
    let semicolons = scan
        .tokens
        .iter()
        .filter(|token| token.token == Token::Ascii59 as i32)
        .filter_map(|token| usize::try_from(token.end).ok())
        .rev()
        .take(MAX_SEMICOLON_TRIES);
    for end in semicolons {
        let Some(before) = text.get(..end) else {
            continue;
        };
        if let Some(Ok(parsed)) = guarded(|| pg_query::parse(before, 0)) {
            return parsed.protobuf.stmts.len() + 1;
        }
    }
    1
}

/// Returns the (start, end) byte offsets of every token of `text`, or
/// `None` when the scanner rejects it.
fn token_spans(text: &str) -> Option<Vec<(usize, usize)>> {
    let scan = guarded(|| pg_query::scan(text))?.ok()?;
    scan.tokens
        .iter()
        .map(|token| {
            Some((
                usize::try_from(token.start).ok()?,
                usize::try_from(token.end).ok()?,
            ))
        })
        .collect()
}

fn fails_before_end(prefix: &str) -> bool {
    match guarded(|| pg_query::parse(prefix, 0)) {
        Some(Err(pg_query::Error::Parse(message))) => !message.contains("at end of input"),
        Some(Err(_)) => true,
        Some(Ok(_)) => false,
        None => true,
    }
}

/// Locates a scanner error such as an unterminated quoted string, whose
/// message quotes the input from the bad token to the end: `... at or near
/// "'abc"`.
fn lexer_error_offset(text: &str, message: &str) -> Option<usize> {
    let near = message.split_once("at or near \"")?.1.strip_suffix('"')?;
    text.ends_with(near).then(|| text.len() - near.len())
}

/// Runs a pg_query call, turning a panic inside it into `None`. pg_query
/// builds helper lists after parsing with code that panics on tree shapes
/// the PostgreSQL grammar does not produce, so a bug there must not take
/// down the caller.
pub(crate) fn guarded<T>(call: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(call)).ok()
}
