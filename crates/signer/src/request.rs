//! The request a client is about to send, read from a text description.

use crate::SignError;

/// An HTTP request to sign: what the client will send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestToSign {
    /// Request method, such as `POST`, exactly as it will be sent.
    pub method: String,
    /// Absolute `http` or `https` URL the request goes to.
    pub url: String,
    /// Header fields in order, names as written.
    pub headers: Vec<(String, String)>,
    /// Request content; empty for a request without one.
    pub body: Vec<u8>,
}

/// The parts of an absolute URL that RFC 9421 derived components use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UrlParts<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
}

/// Splits an absolute `http` or `https` URL. The error names the problem
/// and how to write the URL instead.
pub(crate) fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    let example = "write an absolute URL such as https://api.example.com/orders?id=7";
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "URL {url:?} contains the character {c:?}; percent-encode it"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("URL {url:?} is not absolute; {example}"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "URL {url:?} has the scheme {scheme:?}; use http or https"
        ));
    }
    if let Some((_, fragment)) = rest.split_once('#') {
        return Err(format!(
            "URL {url:?} has the fragment #{fragment}, which a client never sends; remove it"
        ));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.is_empty() {
        return Err(format!("URL {url:?} has no host; {example}"));
    }
    if authority.contains('@') {
        return Err(format!(
            "URL {url:?} contains user information before @; remove it and send credentials in a header"
        ));
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    Ok(UrlParts {
        scheme,
        authority,
        path,
        query,
    })
}

/// Returns whether `name` is a token (RFC 9110 §5.6.2), as method and
/// field names must be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits off the first line of `text` and returns it without its line end
/// (`\n` or `\r\n`), with the rest after the line end.
fn next_line(text: &[u8]) -> (&[u8], Option<&[u8]>) {
    match text.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = &text[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (line, Some(&text[end + 1..]))
        }
        None => (text, None),
    }
}

fn line_error(number: usize, message: impl std::fmt::Display) -> SignError {
    SignError::InvalidRequest(format!("line {number}: {message}"))
}

impl RequestToSign {
    /// Parses a request description: a first line `METHOD URL`, then
    /// `Name: value` header lines, an empty line and the body. The body is
    /// every byte after the empty line. Without an empty line, or with
    /// nothing after it, the request has no body. Lines end in `\n` or
    /// `\r\n`.
    pub fn parse(text: &[u8]) -> Result<RequestToSign, SignError> {
        let (first, mut rest) = next_line(text);
        let first = std::str::from_utf8(first)
            .map_err(|_| line_error(1, "is not UTF-8 text; write METHOD URL"))?;
        let (method, url) = parse_request_line(first)?;

        let mut headers = Vec::new();
        let mut body = Vec::new();
        let mut number = 1;
        while let Some(remaining) = rest {
            number += 1;
            let (line, after) = next_line(remaining);
            rest = after;
            if line.is_empty() {
                body = after.unwrap_or_default().to_vec();
                break;
            }
            headers.push(parse_header_line(number, line)?);
        }

        let request = RequestToSign {
            method,
            url,
            headers,
            body,
        };
        request.validate()?;
        Ok(request)
    }

    /// Checks the method, URL and header fields, which may have been set in
    /// code, and returns the URL's parts.
    pub(crate) fn validate(&self) -> Result<UrlParts<'_>, SignError> {
        if !is_token(&self.method) {
            return Err(SignError::InvalidRequest(format!(
                "method {:?} is not an HTTP token; use a method such as GET or POST",
                self.method
            )));
        }
        let parts = split_url(&self.url).map_err(SignError::InvalidRequest)?;
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(SignError::InvalidRequest(format!(
                    "header name {name:?} is not an HTTP token"
                )));
            }
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(SignError::InvalidRequest(format!(
                    "header {name} contains a control character"
                )));
            }
            // A Host header that names another authority than the URL
            // would make the gateway derive `@authority` from a value the
            // signer did not use.
            if name.eq_ignore_ascii_case("host") && !value.eq_ignore_ascii_case(parts.authority) {
                return Err(SignError::InvalidRequest(format!(
                    "the Host header {value:?} differs from the URL's authority {:?}; \
                     remove the Host header, because the URL sets it",
                    parts.authority
                )));
            }
        }
        Ok(parts)
    }
}

fn parse_request_line(line: &str) -> Result<(String, String), SignError> {
    let expected = "write METHOD URL, such as POST https://api.example.com/orders";
    let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    match words.as_slice() {
        [] => Err(line_error(1, format!("is empty; {expected}"))),
        [method, url] => {
            if !is_token(method) {
                return Err(line_error(
                    1,
                    format!("method {method:?} is not an HTTP token; {expected}"),
                ));
            }
            split_url(url).map_err(|message| line_error(1, message))?;
            Ok(((*method).to_owned(), (*url).to_owned()))
        }
        [_, _, version] if version.starts_with("HTTP/") => Err(line_error(
            1,
            format!("remove the HTTP version {version}; {expected}"),
        )),
        [_] => Err(line_error(1, format!("{line:?} has no URL; {expected}"))),
        _ => Err(line_error(
            1,
            format!("{line:?} has more than two words; {expected}"),
        )),
    }
}

fn parse_header_line(number: usize, line: &[u8]) -> Result<(String, String), SignError> {
    let expected = "write a header as Name: value, and an empty line before the body";
    let line = std::str::from_utf8(line)
        .map_err(|_| line_error(number, format!("is not UTF-8 text; {expected}")))?;
    if line.starts_with([' ', '\t']) {
        return Err(line_error(
            number,
            "starts with white space, which would continue the previous header \
             (obsolete line folding); join it to that header's line",
        ));
    }
    let Some((name, value)) = line.split_once(':') else {
        return Err(line_error(
            number,
            format!("{line:?} has no colon; {expected}"),
        ));
    };
    if !is_token(name) {
        return Err(line_error(
            number,
            format!("header name {name:?} is not an HTTP token; {expected}"),
        ));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(line_error(
            number,
            format!("the value of header {name} contains a control character"),
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}
