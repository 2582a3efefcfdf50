//! A cache key for classification results: the SQL text with its numeric
//! constants replaced, so statements that differ only in numbers share one
//! classification.
//!
//! Only numbers are replaced. Strings stay, because a string can change the
//! class (`set_config('role', ...)` is a privilege change, `set_config(
//! 'search_path', ...)` is not). Numbers never change the class, the tables
//! or the functions of a statement, and pg_query's fingerprint ignores
//! constants, so a cached result is exactly what classifying the text
//! would give.
//!
//! The scan follows PostgreSQL's lexical structure closely enough to leave
//! digits inside strings, quoted identifiers, dollar-quoted bodies and
//! comments alone. Text it cannot scan (an unterminated quote or comment)
//! gets no key and is classified as it is.

/// Commands whose classification, fingerprint included, does not depend on
/// their numbers. Elsewhere a number can be part of the fingerprint, as
/// the count of `FETCH 5` is.
const CACHEABLE_COMMANDS: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/// Returns whether a classification may be reused for text with the same
/// key: every statement is a plain `SELECT`, `INSERT`, `UPDATE` or
/// `DELETE`.
pub fn is_cacheable(statements: &[crate::Statement]) -> bool {
    statements
        .iter()
        .all(|statement| CACHEABLE_COMMANDS.contains(&statement.command.as_str()))
}

/// Maximum length of text that gets a key. Longer text is classified every
/// time.
pub const MAX_KEY_INPUT_BYTES: usize = 4096;

/// Returns the cache key of `sql`, or `None` when the text is too long or
/// cannot be scanned.
pub fn cache_key(sql: &str) -> Option<String> {
    if sql.len() > MAX_KEY_INPUT_BYTES {
        return None;
    }
    let bytes = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let previous = i.checked_sub(1).map(|j| bytes[j]);
        let start = i;
        match byte {
            b'\'' => {
                let escapes = previous.is_some_and(|p| p == b'e' || p == b'E')
                    && i.checked_sub(2)
                        .is_none_or(|j| !is_identifier_byte(bytes[j]));
                i = end_of_string(bytes, i + 1, escapes)?;
            }
            b'"' => i = end_of_quoted_identifier(bytes, i + 1)?,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |offset| i + offset + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = end_of_comment(bytes, i + 2)?,
            b'$' if previous.is_none_or(|p| !is_identifier_byte(p)) => {
                i = end_of_dollar(bytes, i)?;
            }
            b'0'..=b'9' if previous.is_none_or(|p| !is_identifier_byte(p)) => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                key.push('0');
                continue;
            }
            _ => {
                // Whole UTF-8 characters, so the key stays valid text.
                i += utf8_len(byte);
            }
        }
        key.push_str(sql.get(start..i)?);
    }
    Some(key)
}

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Returns the index after the closing quote of a string whose body
/// starts at `i`. `''` is a quote inside the string, and with `escapes`
/// (an `E'...'` string) a backslash escapes the next byte.
fn end_of_string(bytes: &[u8], mut i: usize, escapes: bool) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn end_of_quoted_identifier(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b'"' if bytes.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Returns the index after a block comment whose body starts at `i`;
/// block comments nest.
fn end_of_comment(bytes: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 1;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    None
}

/// Returns the index after a parameter (`$1`) or a dollar-quoted string
/// (`$$...$$`, `$tag$...$tag$`) that starts at `i`.
fn end_of_dollar(bytes: &[u8], i: usize) -> Option<usize> {
    let rest = &bytes[i + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 {
        return Some(i + 1 + digits);
    }
    let tag_len = rest
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        .count();
    if rest.get(tag_len) != Some(&b'$') {
        // A lone `$` is not valid SQL, so the parser reports it.
        return None;
    }
    let tag = &bytes[i..i + tag_len + 2];
    let body = i + tag.len();
    let close = bytes[body..]
        .windows(tag.len())
        .position(|window| window == tag)?;
    Some(body + close + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_replaced() {
        assert_eq!(
            cache_key("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;").unwrap(),
            "SELECT abalance FROM pgbench_accounts WHERE aid = 0;"
        );
        assert_eq!(
            cache_key("UPDATE t SET x = x + -2877.5e3 LIMIT 10").unwrap(),
            "UPDATE t SET x = x + -0 LIMIT 0"
        );
    }

    #[test]
    fn same_shape_gives_the_same_key() {
        assert_eq!(
            cache_key("SELECT * FROM t WHERE id = 1"),
            cache_key("SELECT * FROM t WHERE id = 99999")
        );
    }

    #[test]
    fn digits_in_names_strings_and_comments_stay() {
        for sql in [
            "SELECT * FROM orders2 WHERE c1 = 'a1'",
            "DELETE FROM \"1\"",
            "SELECT set_config('role', 'admin1', false)",
            "SELECT $1, $2 -- note 5\n",
            "SELECT /* 1 /* 2 */ 3 */ x",
            "DO $body$ BEGIN PERFORM 1; END $body$",
            "SELECT E'it\\'s 5'",
            "SELECT 'it''s 5'",
        ] {
            let key = cache_key(sql).unwrap();
            assert_eq!(key, sql, "{sql}");
        }
    }

    #[test]
    fn fetch_is_not_cacheable() {
        let statements = crate::classify("FETCH 5 FROM c").unwrap();
        assert!(!is_cacheable(&statements));
    }

    #[test]
    fn other_names_give_other_keys() {
        assert_ne!(
            cache_key("DELETE FROM \"1\""),
            cache_key("DELETE FROM \"2\"")
        );
        assert_ne!(
            cache_key("SELECT set_config('role', 'a', false)"),
            cache_key("SELECT set_config('search_path', 'a', false)")
        );
    }

    #[test]
    fn unscannable_text_gets_no_key() {
        for sql in [
            "SELECT 'open",
            "SELECT \"open",
            "SELECT /* open",
            "SELECT $tag$ open",
            "SELECT $",
        ] {
            assert_eq!(cache_key(sql), None, "{sql}");
        }
        assert_eq!(cache_key(&"x".repeat(MAX_KEY_INPUT_BYTES + 1)), None);
    }

    #[test]
    fn cached_results_match_classifying_the_text() {
        let classifier = crate::Classifier::default();
        let pairs = [
            (
                "SELECT * FROM t WHERE id = 1",
                "SELECT * FROM t WHERE id = 2",
            ),
            (
                "UPDATE t SET x = 5 WHERE id = 7",
                "UPDATE t SET x = 6 WHERE id = 8",
            ),
            ("SELECT pg_sleep(1)", "SELECT pg_sleep(2)"),
            (
                "SELECT x::varchar(10) FROM t ORDER BY 1 LIMIT 5 OFFSET 2",
                "SELECT x::varchar(20) FROM t ORDER BY 2 LIMIT 6 OFFSET 3",
            ),
            (
                "SELECT sum(x) OVER (ROWS 5 PRECEDING) FROM t FETCH FIRST 3 ROWS ONLY",
                "SELECT sum(x) OVER (ROWS 6 PRECEDING) FROM t FETCH FIRST 4 ROWS ONLY",
            ),
            (
                "INSERT INTO h VALUES (7, 1, 48213, -2877, CURRENT_TIMESTAMP)",
                "INSERT INTO h VALUES (8, 2, 1, -12, CURRENT_TIMESTAMP)",
            ),
            (
                "DELETE FROM t WHERE id IN (1, 2)",
                "DELETE FROM t WHERE id IN (3, 4)",
            ),
        ];
        for (first, second) in pairs {
            assert_eq!(cache_key(first), cache_key(second));
            assert!(
                is_cacheable(&classifier.classify(first).unwrap()),
                "{first}"
            );
            assert_eq!(
                classifier.classify(first).unwrap(),
                classifier.classify(second).unwrap(),
                "{first} / {second}"
            );
        }
    }
}
