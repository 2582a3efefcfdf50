//! Client address resolution behind trusted reverse proxies, from the
//! `Forwarded` header (RFC 7239) or `X-Forwarded-For`.
//!
//! Each proxy appends the address it received a connection from to the right
//! of the list, and anything a client sends arrives on the left. Only the
//! entries appended by proxies that the gateway trusts can be believed, so the
//! list is read from the right and reading stops at the first hop that is not
//! a trusted proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::FORWARDED;
use ipnet::{IpNet, Ipv4Net};
use thiserror::Error;

/// Networks whose addresses are reverse proxies that the gateway trusts to
/// append truthful `Forwarded` or `X-Forwarded-For` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Builds the set. Networks written in IPv4-mapped IPv6 form with a prefix
    /// of at least /96 (such as `::ffff:10.0.0.0/104`) are stored as the
    /// IPv4 network they map (`10.0.0.0/8`).
    pub(crate) fn new(networks: Vec<IpNet>) -> Self {
        Self(networks.into_iter().map(unmap_network).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks whether `addr` is inside a trusted network. An IPv4-mapped IPv6
    /// address (`::ffff:a.b.c.d`) matches the IPv4 networks as `a.b.c.d`.
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        let canonical = addr.to_canonical();
        self.0
            .iter()
            .any(|network| network.contains(&canonical) || network.contains(&addr))
    }
}

/// A node identifier from a `for` or `by` parameter (RFC 7239 §6). A port, if
/// present, is validated and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Ip(IpAddr),
    /// The literal `unknown`: the proxy did not know or did not reveal the node.
    Unknown,
    /// An obfuscated identifier, including its leading `_` (`_hidden`).
    Obfuscated(String),
}

/// One comma-separated element of a `Forwarded` header: the parameters that a
/// single proxy added. Extension parameters are accepted and not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ForwardedElement {
    pub(crate) for_node: Option<Node>,
    pub(crate) by: Option<Node>,
    pub(crate) host: Option<String>,
    pub(crate) proto: Option<String>,
}

/// Reasons a `Forwarded` header does not follow the RFC 7239 grammar.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum ForwardedError {
    #[error("forwarded pair {0:?} has an unterminated quoted-string: close it with '\"'")]
    UnterminatedQuote(String),
    #[error("forwarded pair {0:?} is invalid: expected token=token or token=\"quoted-string\"")]
    InvalidPair(String),
    #[error("forwarded element repeats parameter {0:?}: send each parameter once per element")]
    DuplicateParameter(String),
    #[error(
        "forwarded node {0:?} is invalid: expected an IPv4 address, a quoted \"[IPv6]\" \
         address, \"unknown\" or an \"_\" obfuscated identifier, each with an optional port"
    )]
    InvalidNode(String),
}

/// Parses `Forwarded` field lines (RFC 7239 §4) in the order received into
/// one element per comma-separated entry.
///
/// Parameter names are case-insensitive, values are tokens or quoted-strings
/// with backslash escapes, and whitespace around `,` and `;` is ignored.
/// Empty list entries are skipped, as RFC 9110 §5.6.1 requires of recipients.
///
/// # Errors
///
/// Returns the first [`ForwardedError`] found: a pair that is not
/// `token=value`, an unterminated quoted-string, a parameter repeated within
/// one element, or a `for` or `by` value that is not a node (RFC 7239 §6).
pub(crate) fn parse_forwarded(values: &[&str]) -> Result<Vec<ForwardedElement>, ForwardedError> {
    values.iter().flat_map(|line| parse_line(line)).collect()
}

/// Resolves the address of the client that sent a request, for a connection
/// from `peer`.
///
/// If `trusted` is empty or `peer` is not in it, returns `peer` without
/// reading any header. Otherwise the hop list comes from all `Forwarded` field
/// lines (the `for` of each element) when that header is present, and from all
/// `X-Forwarded-For` field lines when it is not. The list is walked from the
/// right, with `peer` as the starting point:
/// - a trusted proxy's address is skipped, and becomes the current answer,
/// - the first address that is not a trusted proxy is returned as the client,
/// - an element that is malformed, has no `for`, or names an `unknown` or
///   obfuscated node ends the walk, because nothing to its left can be
///   believed, and the current answer (the leftmost trusted hop reached, or
///   `peer`) is returned,
/// - when every hop is trusted, the leftmost one is returned.
///
/// A malformed element only hides the elements to its left and, when it
/// contains an unterminated quoted-string, the rest of its field line.
/// `peer` is returned unchanged, so an IPv4-mapped IPv6 peer stays in IPv6
/// form.
pub(crate) fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }

    let hops = if headers.contains_key(FORWARDED) {
        forwarded_hops(headers)
    } else {
        x_forwarded_for_hops(headers)
    };

    let mut nearest_trusted = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(addr) if trusted.contains(*addr) => nearest_trusted = *addr,
            Some(addr) => return *addr,
            None => {
                tracing::debug!(
                    client.addr = %nearest_trusted,
                    "unusable forwarded hop, using the nearest trusted hop"
                );
                break;
            }
        }
    }
    nearest_trusted
}

/// Returns the `for` address of each `Forwarded` element, or `None` for an
/// element that cannot name a client address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let Ok(line) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in parse_line(line) {
            let addr = match element {
                Ok(ForwardedElement {
                    for_node: Some(Node::Ip(addr)),
                    ..
                }) => Some(addr),
                _ => None,
            };
            hops.push(addr);
        }
    }
    hops
}

/// Returns each `X-Forwarded-For` entry as an address, or `None` for an entry
/// that is not one.
fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(line) = value.to_str() else {
            hops.push(None);
            continue;
        };
        let entries = line.split(',').map(trim_whitespace);
        hops.extend(entries.filter(|entry| !entry.is_empty()).map(parse_x_forwarded_for_entry));
    }
    hops
}

/// Parses one `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally
/// bracketed when IPv6, optionally followed by `:port`.
fn parse_x_forwarded_for_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let addr = inside.parse::<Ipv6Addr>().ok()?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port))
            .then_some(IpAddr::V6(addr));
    }
    let (host, port) = entry.split_once(':')?;
    let addr = host.parse::<Ipv4Addr>().ok()?;
    is_port(port).then_some(IpAddr::V4(addr))
}

/// Parses one field line into its elements. An element that fails to parse
/// becomes an `Err` in place, so the elements to its right stay usable.
fn parse_line(line: &str) -> Vec<Result<ForwardedElement, ForwardedError>> {
    split_outside_quotes(line, ',')
        .into_iter()
        .map(trim_whitespace)
        .filter(|element| !element.is_empty())
        .map(parse_element)
        .collect()
}

fn parse_element(element: &str) -> Result<ForwardedElement, ForwardedError> {
    let mut parsed = ForwardedElement::default();
    let mut seen: Vec<String> = Vec::new();

    for pair in split_outside_quotes(element, ';') {
        let pair = trim_whitespace(pair);
        if pair.is_empty() {
            continue;
        }

        let invalid = || ForwardedError::InvalidPair(pair.to_owned());
        let (name, raw_value) = pair.split_once('=').ok_or_else(invalid)?;
        if !is_token(name) {
            return Err(invalid());
        }
        let value = parse_value(pair, raw_value)?;

        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return Err(ForwardedError::DuplicateParameter(name));
        }
        match name.as_str() {
            "for" => parsed.for_node = Some(parse_node(&value)?),
            "by" => parsed.by = Some(parse_node(&value)?),
            "host" => parsed.host = Some(value),
            "proto" => parsed.proto = Some(value),
            _ => {}
        }
        seen.push(name);
    }
    Ok(parsed)
}

/// Parses a pair's value, a token or a quoted-string (RFC 9110 §5.6.4), into
/// its text with quotes and escapes removed.
fn parse_value(pair: &str, raw_value: &str) -> Result<String, ForwardedError> {
    let invalid = || ForwardedError::InvalidPair(pair.to_owned());
    let Some(quoted) = raw_value.strip_prefix('"') else {
        return if is_token(raw_value) {
            Ok(raw_value.to_owned())
        } else {
            Err(invalid())
        };
    };

    let mut text = String::with_capacity(quoted.len());
    let mut characters = quoted.chars();
    while let Some(character) = characters.next() {
        match character {
            '"' => {
                return if characters.as_str().is_empty() {
                    Ok(text)
                } else {
                    Err(invalid())
                };
            }
            '\\' => match characters.next() {
                Some(escaped) if is_quoted_text(escaped) || escaped == '"' || escaped == '\\' => {
                    text.push(escaped);
                }
                Some(_) => return Err(invalid()),
                None => break,
            },
            _ if is_quoted_text(character) => text.push(character),
            _ => return Err(invalid()),
        }
    }
    Err(ForwardedError::UnterminatedQuote(pair.to_owned()))
}

/// Parses a node (RFC 7239 §6): `IPv4`, `[IPv6]`, `unknown` or `_obfuscated`,
/// each with an optional `:port` that is a number or `_obfuscated`.
fn parse_node(value: &str) -> Result<Node, ForwardedError> {
    let invalid = || ForwardedError::InvalidNode(value.to_owned());

    let (name, port) = if value.starts_with('[') {
        let (bracketed, after) = value.split_once(']').ok_or_else(invalid)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
        };
        (bracketed, port)
    } else {
        match value.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        }
    };
    if port.is_some_and(|port| !is_port(port) && !is_obfuscated(port)) {
        return Err(invalid());
    }

    if let Some(inside) = name.strip_prefix('[') {
        let addr = inside.parse::<Ipv6Addr>().map_err(|_| invalid())?;
        Ok(Node::Ip(IpAddr::V6(addr)))
    } else if name.eq_ignore_ascii_case("unknown") {
        Ok(Node::Unknown)
    } else if is_obfuscated(name) {
        Ok(Node::Obfuscated(name.to_owned()))
    } else {
        let addr = name.parse::<Ipv4Addr>().map_err(|_| invalid())?;
        Ok(Node::Ip(IpAddr::V4(addr)))
    }
}

/// Splits `text` at each `separator` that is outside a quoted-string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;

    for (index, character) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if character == '\\' && in_quotes {
            escaped = true;
        } else if character == '"' {
            in_quotes = !in_quotes;
        } else if character == separator && !in_quotes {
            parts.push(text.get(start..index).unwrap_or_default());
            start = index + separator.len_utf8();
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    parts
}

/// Turns an IPv4-mapped IPv6 network of prefix /96 or longer into the IPv4
/// network it maps.
fn unmap_network(network: IpNet) -> IpNet {
    let IpNet::V6(v6) = network else {
        return network;
    };
    let Some(v4) = v6.network().to_ipv4_mapped() else {
        return network;
    };
    match v6.prefix_len().checked_sub(96).map(|prefix| Ipv4Net::new(v4, prefix)) {
        Some(Ok(mapped)) => IpNet::V4(mapped),
        _ => network,
    }
}

/// Removes optional whitespace (SP and HTAB) from both ends.
fn trim_whitespace(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// RFC 9110 §5.6.2 token: one or more tchar.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|byte| {
            byte.is_ascii_alphanumeric()
                || matches!(
                    byte,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// RFC 9110 §5.6.4 qdtext: HTAB, SP, visible ASCII other than `"` and `\`, and
/// obs-text (any non-ASCII character).
fn is_quoted_text(character: char) -> bool {
    matches!(character, '\t' | ' ' | '!' | '#'..='[' | ']'..='~') || !character.is_ascii()
}

/// RFC 7239 §6 port: one to five digits.
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// RFC 7239 §6.3 obfuscated identifier: `_` then one or more of ALPHA, DIGIT,
/// `.`, `_` or `-`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
