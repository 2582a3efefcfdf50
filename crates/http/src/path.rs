//! Request path normalisation, query redaction and route templates.
//!
//! The gateway checks zones against the output of [`normalize_path`] and sends
//! the same string upstream, so both sides see one spelling of each path.
//! Anything that another component could resolve differently (encoded
//! separators, dot segments, backslashes, repeated slashes) is rejected rather
//! than rewritten.

use thiserror::Error;

/// Reasons a request path is rejected by [`normalize_path`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum PathError {
    #[error("path {0:?} does not start with '/': send an absolute path")]
    NotAbsolute(String),
    #[error(
        "path contains malformed percent-encoding {0:?}: '%' must be followed by two hex digits"
    )]
    MalformedPercentEncoding(String),
    #[error("path contains an encoded slash {0:?}: send '/' only between segments")]
    EncodedSlash(String),
    #[error("path contains an encoded backslash {0:?}: remove it from the path")]
    EncodedBackslash(String),
    #[error("path contains a backslash '\\': use '/' between segments")]
    Backslash,
    #[error("path contains control character 0x{0:02X}: remove it from the path")]
    ControlCharacter(u8),
    #[error("path contains an encoded control character {0:?}: remove it from the path")]
    EncodedControlCharacter(String),
    #[error("path contains non-ASCII character {0:?}: percent-encode its UTF-8 bytes")]
    NonAscii(char),
    #[error("path contains a dot segment {0:?}: send the resolved path")]
    DotSegment(String),
    #[error("path contains an empty segment after {0:?}: remove the repeated '/'")]
    EmptySegment(String),
    #[error(
        "path contains ';' (raw or as %3B): path parameters are not accepted, move them to the query"
    )]
    Semicolon,
}

/// Normalises the path part of a request-target (without the query) into the
/// single form that zone checks and the upstream both see.
///
/// Percent-encoded unreserved characters (ALPHA, DIGIT, `-`, `.`, `_`, `~`)
/// are decoded and every other percent-encoding gets uppercase hex digits, as
/// RFC 3986 §6.2.2 describes. Printable ASCII characters that RFC 3986 does
/// not allow raw in a path (space, `"`, `#`, `<`, `>`, `?`, `[`, `]`, `^`,
/// `` ` ``, `{`, `|`, `}`) are percent-encoded, so the output is always a
/// valid RFC 3986 path. A trailing slash is kept.
///
/// # Errors
///
/// Returns a [`PathError`] when the path does not start with `/`, contains
/// malformed percent-encoding, an encoded `/` or `\`, a raw `\`, a raw or
/// encoded control character, a raw non-ASCII character, an empty segment
/// (`//`) or a dot segment. A segment counts as a dot segment when it is `.`
/// or `..` after decoding, and also when that name is followed by `;`
/// parameters (`..;x`), because some servers drop the parameters before they
/// resolve dot segments.
pub(crate) fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute(raw.to_owned()));
    }

    let bytes = raw.as_bytes();
    let mut normalized = String::with_capacity(raw.len());
    let mut pos = 0;
    while let Some(&byte) = bytes.get(pos) {
        match byte {
            b'%' => {
                push_percent_encoded(&mut normalized, raw, pos)?;
                pos += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            // Servers such as Tomcat drop `;` parameters before routing, so
            // `/admin;x/users` would reach `/admin/users` while the zone
            // check saw another path.
            b';' => return Err(PathError::Semicolon),
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter(byte)),
            0x80..=0xFF => {
                let character = raw
                    .get(pos..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                return Err(PathError::NonAscii(character));
            }
            b'/' => normalized.push('/'),
            _ if is_unreserved(byte) || is_allowed_raw(byte) => normalized.push(char::from(byte)),
            _ => push_encoding(&mut normalized, byte),
        }
        pos += 1;
    }

    check_segments(&normalized)?;
    Ok(normalized)
}

/// Replaces each query parameter value with `REDACTED` and keeps the names,
/// so audit records never contain query values.
///
/// Parameters are split on `&` and a name ends at the first `=`. A parameter
/// without `=` is kept as it is, because it has no value: `a=1&b=&c` becomes
/// `a=REDACTED&b=REDACTED&c`.
pub(crate) fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _)) => format!("{name}=REDACTED"),
            None => parameter.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Turns a normalised path into an operation template by replacing segments
/// that look like identifiers, so `/orders/8812` and `/orders/17` both become
/// `/orders/{n}`.
///
/// The first matching rule wins:
/// - all ASCII digits becomes `{n}`,
/// - a UUID (8-4-4-4-12 hex digits, any case) becomes `{uuid}`,
/// - 16 or more hex digits becomes `{hex}`,
/// - any other segment of 20 or more characters that contains both an ASCII
///   letter and an ASCII digit outside percent-encodings becomes `{id}`.
///
/// The `{id}` rule also matches long slugs that contain a digit, such as
/// `annual-report-2024-q1`.
///
/// Other segments are kept. The input should come from [`normalize_path`],
/// which percent-encodes `{` and `}`, so a placeholder never collides with a
/// literal segment.
pub(crate) fn route_template(path: &str) -> String {
    path.split('/')
        .map(template_segment)
        .collect::<Vec<_>>()
        .join("/")
}

fn template_segment(segment: &str) -> &str {
    if !segment.is_empty() && segment.bytes().all(|byte| byte.is_ascii_digit()) {
        "{n}"
    } else if is_uuid(segment) {
        "{uuid}"
    } else if segment.len() >= 16 && segment.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        "{hex}"
    } else if segment.len() >= 20 && mixes_letters_and_digits(segment) {
        "{id}"
    } else {
        segment
    }
}

fn is_uuid(segment: &str) -> bool {
    segment.len() == 36
        && segment.bytes().enumerate().all(|(index, byte)| {
            if matches!(index, 8 | 13 | 18 | 23) {
                byte == b'-'
            } else {
                byte.is_ascii_hexdigit()
            }
        })
}

/// Checks for an ASCII letter and an ASCII digit, skipping `%XX` triplets so
/// that the hex of an encoded non-ASCII word does not count.
fn mixes_letters_and_digits(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut has_letter = false;
    let mut has_digit = false;
    let mut pos = 0;
    while let Some(&byte) = bytes.get(pos) {
        if byte == b'%' {
            pos += 3;
            continue;
        }
        has_letter |= byte.is_ascii_alphabetic();
        has_digit |= byte.is_ascii_digit();
        pos += 1;
    }
    has_letter && has_digit
}

/// Decodes the percent-encoding that starts at `pos` in `raw` and appends its
/// normal form to `normalized`.
fn push_percent_encoded(normalized: &mut String, raw: &str, pos: usize) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let high = bytes.get(pos + 1).copied().and_then(hex_value);
    let low = bytes.get(pos + 2).copied().and_then(hex_value);
    let (Some(high), Some(low)) = (high, low) else {
        let received: String = raw.get(pos..).unwrap_or("%").chars().take(3).collect();
        return Err(PathError::MalformedPercentEncoding(received));
    };

    // Both digits are ASCII, so this slice is on character boundaries.
    let received = raw.get(pos..pos + 3).unwrap_or_default().to_owned();
    let decoded = high << 4 | low;
    match decoded {
        b'/' => return Err(PathError::EncodedSlash(received)),
        b'\\' => return Err(PathError::EncodedBackslash(received)),
        b';' => return Err(PathError::Semicolon),
        0x00..=0x1F | 0x7F => return Err(PathError::EncodedControlCharacter(received)),
        _ if is_unreserved(decoded) => normalized.push(char::from(decoded)),
        _ => push_encoding(normalized, decoded),
    }
    Ok(())
}

/// Rejects empty segments other than the one after a trailing slash, and dot
/// segments, on the decoded path.
fn check_segments(normalized: &str) -> Result<(), PathError> {
    let segment_count = normalized.split('/').count();
    let mut start = 0;
    // The first item of the split is the empty string before the leading '/'.
    for (index, segment) in normalized.split('/').enumerate() {
        let is_last = index + 1 == segment_count;
        if index > 0 && segment.is_empty() && !is_last {
            let before = normalized.get(..start).unwrap_or_default().to_owned();
            return Err(PathError::EmptySegment(before));
        }

        let name = segment.split_once(';').map_or(segment, |(name, _)| name);
        if name == "." || name == ".." {
            return Err(PathError::DotSegment(segment.to_owned()));
        }
        start += segment.len() + 1;
    }
    Ok(())
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 sub-delims plus ':' and '@', the other characters that a path
/// segment may contain raw.
fn is_allowed_raw(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

fn push_encoding(normalized: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    normalized.push('%');
    for nibble in [byte >> 4, byte & 0x0F] {
        let digit = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
        normalized.push(char::from(digit));
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn rejected(error: PathError) -> Result<String, PathError> {
        Err(error)
    }

    fn accepted(path: &str) -> Result<String, PathError> {
        Ok(path.to_owned())
    }

    #[test]
    fn normalize_path_table() {
        use PathError::*;

        let cases = [
            ("/", accepted("/")),
            ("/reports/daily", accepted("/reports/daily")),
            ("/reports/daily/", accepted("/reports/daily/")),
            ("/%72eports/daily", accepted("/reports/daily")),
            ("/%41%7a%30%2D%2e%5F%7E", accepted("/Az0-._~")),
            ("/caf%C3%A9", accepted("/caf%C3%A9")),
            ("/caf%c3%a9", accepted("/caf%C3%A9")),
            ("/a%3db%3Dc", accepted("/a%3Db%3Dc")),
            ("/a%3bb", rejected(Semicolon)),
            ("/a%20b", accepted("/a%20b")),
            ("/100%25", accepted("/100%25")),
            ("/a%252Fb", accepted("/a%252Fb")),
            ("/a%252e%252e/b", accepted("/a%252e%252e/b")),
            ("/a:b@c!$&'()*+,=", accepted("/a:b@c!$&'()*+,=")),
            ("/a:b@c;=", rejected(Semicolon)),
            ("/admin;a/users", rejected(Semicolon)),
            ("/admin%3b/users", rejected(Semicolon)),
            ("/a b", accepted("/a%20b")),
            (
                "/a{b}|c^`\"<>[]#",
                accepted("/a%7Bb%7D%7Cc%5E%60%22%3C%3E%5B%5D%23"),
            ),
            ("/...", accepted("/...")),
            ("/.hidden/a..b", accepted("/.hidden/a..b")),
            ("/a;.", rejected(Semicolon)),
            ("", rejected(NotAbsolute(String::new()))),
            ("reports", rejected(NotAbsolute("reports".into()))),
            ("*", rejected(NotAbsolute("*".into()))),
            ("/a%", rejected(MalformedPercentEncoding("%".into()))),
            ("/a%4", rejected(MalformedPercentEncoding("%4".into()))),
            ("/a%zz", rejected(MalformedPercentEncoding("%zz".into()))),
            ("/a%4g/b", rejected(MalformedPercentEncoding("%4g".into()))),
            ("/a%é", rejected(MalformedPercentEncoding("%é".into()))),
            ("/a%2fb", rejected(EncodedSlash("%2f".into()))),
            ("/a%2Fb", rejected(EncodedSlash("%2F".into()))),
            ("/a%5cb", rejected(EncodedBackslash("%5c".into()))),
            ("/a\\b", rejected(Backslash)),
            ("/a%00", rejected(EncodedControlCharacter("%00".into()))),
            ("/a%0d%0a", rejected(EncodedControlCharacter("%0d".into()))),
            ("/a%7F", rejected(EncodedControlCharacter("%7F".into()))),
            ("/a\0b", rejected(ControlCharacter(0))),
            ("/a\tb", rejected(ControlCharacter(b'\t'))),
            ("/a\x7Fb", rejected(ControlCharacter(0x7F))),
            ("/café", rejected(NonAscii('é'))),
            ("/a/../b", rejected(DotSegment("..".into()))),
            ("/a/./b", rejected(DotSegment(".".into()))),
            ("/a/..", rejected(DotSegment("..".into()))),
            ("/a/.", rejected(DotSegment(".".into()))),
            ("/a/%2e%2e/b", rejected(DotSegment("..".into()))),
            ("/a/.%2E/b", rejected(DotSegment("..".into()))),
            ("/a/%2E/b", rejected(DotSegment(".".into()))),
            ("/a/..;x/b", rejected(Semicolon)),
            ("/a/.;/b", rejected(Semicolon)),
            ("//reports", rejected(EmptySegment("/".into()))),
            ("//", rejected(EmptySegment("/".into()))),
            ("/a//b", rejected(EmptySegment("/a/".into()))),
            ("/a/b//", rejected(EmptySegment("/a/b/".into()))),
        ];

        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw), expected, "input {raw:?}");
        }
    }

    #[test]
    fn normalize_path_is_idempotent() {
        for raw in ["/%72eports/daily", "/caf%c3%a9", "/a b", "/a{b}", "/100%25"] {
            let once = normalize_path(raw).unwrap();
            assert_eq!(normalize_path(&once).unwrap(), once, "input {raw:?}");
        }
    }

    #[test]
    fn path_error_messages_name_the_part() {
        let dot = normalize_path("/a/../b").unwrap_err().to_string();
        assert_eq!(
            dot,
            "path contains a dot segment \"..\": send the resolved path"
        );

        let slash = normalize_path("/a%2fb").unwrap_err().to_string();
        assert!(slash.contains("\"%2f\""), "{slash}");

        let control = normalize_path("/a\0").unwrap_err().to_string();
        assert!(control.contains("0x00"), "{control}");

        let empty = normalize_path("/a//b").unwrap_err().to_string();
        assert!(empty.contains("\"/a/\""), "{empty}");
    }

    #[test]
    fn path_error_messages_are_lowercase_without_period() {
        let errors = [
            PathError::NotAbsolute("x".into()),
            PathError::MalformedPercentEncoding("%".into()),
            PathError::EncodedSlash("%2F".into()),
            PathError::EncodedBackslash("%5C".into()),
            PathError::Backslash,
            PathError::ControlCharacter(0),
            PathError::EncodedControlCharacter("%00".into()),
            PathError::NonAscii('é'),
            PathError::DotSegment("..".into()),
            PathError::EmptySegment("/".into()),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with("path "), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    #[test]
    fn redact_query_keeps_names_only() {
        assert_eq!(redact_query("a=1&b=&c"), "a=REDACTED&b=REDACTED&c");
        assert_eq!(redact_query("token=s3cr3t"), "token=REDACTED");
        assert_eq!(redact_query("x=a=b"), "x=REDACTED");
        assert_eq!(redact_query("a=1&&b=2"), "a=REDACTED&&b=REDACTED");
        assert_eq!(redact_query("=1"), "=REDACTED");
        assert_eq!(redact_query(""), "");
    }

    #[test]
    fn redact_query_output_contains_no_values() {
        let redacted = redact_query("user=alice&pass=hunter2&flag");
        assert!(!redacted.contains("alice"), "{redacted}");
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert_eq!(redacted, "user=REDACTED&pass=REDACTED&flag");
    }

    #[test]
    fn route_template_replaces_identifiers() {
        let cases = [
            ("/", "/"),
            ("/orders/8812", "/orders/{n}"),
            ("/orders/17", "/orders/{n}"),
            ("/orders/17/", "/orders/{n}/"),
            ("/orders/8812/items/3", "/orders/{n}/items/{n}"),
            (
                "/users/123e4567-e89b-12d3-a456-426614174000",
                "/users/{uuid}",
            ),
            (
                "/users/123E4567-E89B-12D3-A456-426614174000",
                "/users/{uuid}",
            ),
            ("/blobs/0123456789abcdef", "/blobs/{hex}"),
            ("/blobs/DEADBEEFDEADBEEF00", "/blobs/{hex}"),
            ("/blobs/0123456789abcde", "/blobs/0123456789abcde"),
            ("/t/eyJhbGciOiJIUzI1NiJ9", "/t/{id}"),
            ("/t/abcdefghij012345678", "/t/abcdefghij012345678"),
            (
                "/reports/quarterly-financial-summary",
                "/reports/quarterly-financial-summary",
            ),
            (
                "/w/%E6%97%A5%E6%9C%AC%E8%AA%9E",
                "/w/%E6%97%A5%E6%9C%AC%E8%AA%9E",
            ),
            ("/reports/daily", "/reports/daily"),
            ("/reports/annual-report-2024-q1", "/reports/{id}"),
            ("/v2/items", "/v2/items"),
        ];
        for (path, expected) in cases {
            assert_eq!(route_template(path), expected, "input {path:?}");
        }
    }

    #[test]
    fn route_template_digits_win_over_hex() {
        assert_eq!(route_template("/n/12345678901234567890"), "/n/{n}");
    }
}
