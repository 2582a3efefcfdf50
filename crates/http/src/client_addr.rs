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
/// Empty list entries are skipped, as RFC 9110 requires of list recipients.
///
/// # Errors
///
/// Returns the first [`ForwardedError`] found: a pair that is not
/// `token=value`, an unterminated quoted-string, a parameter repeated within
/// one element, or a `for` or `by` value that is not a node (RFC 7239 §6).
// The request path parses element by element in `forwarded_hops`; this
// whole-header parser serves the RFC 7239 example tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn parse_forwarded(values: &[&str]) -> Result<Vec<ForwardedElement>, ForwardedError> {
    values.iter().flat_map(|line| parse_line(line)).collect()
}

/// Resolves the address of the client that sent a request, for a connection
/// from `peer`.
///
/// If `trusted` is empty or `peer` is not in it, returns `peer` without
/// reading any header. Otherwise the hop list comes from all `Forwarded` field
/// lines (the `for` of each element) when that header is present, and from all
/// `X-Forwarded-For` field lines when it is not. The walk starts at `peer`
/// and reads the list from the right:
/// - a trusted proxy's address is skipped and becomes the nearest trusted hop,
/// - the first address that is not a trusted proxy is returned as the client,
/// - an element that is malformed, has no `for`, or names an `unknown` or
///   obfuscated node ends the walk, because nothing to its left can be
///   believed, and the nearest trusted hop reached so far (at first `peer`)
///   is returned,
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
        hops.extend(
            entries
                .filter(|entry| !entry.is_empty())
                .map(parse_x_forwarded_for_entry),
        );
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

/// Parses a pair's value, an RFC 9110 token or quoted-string, into
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
    match v6
        .prefix_len()
        .checked_sub(96)
        .map(|prefix| Ipv4Net::new(v4, prefix))
    {
        Some(Ok(mapped)) => IpNet::V4(mapped),
        _ => network,
    }
}

/// Removes optional whitespace (SP and HTAB) from both ends.
fn trim_whitespace(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// RFC 9110 token: one or more tchar.
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

/// RFC 9110 qdtext: HTAB, SP, visible ASCII other than `"` and `\`, and
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
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use http::HeaderValue;
    use serde_json::Value;

    use super::*;

    const RFC7239_EXAMPLES: &str = include_str!("../testdata/rfc7239-forwarded.json");

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|net| net.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let pairs: Vec<_> = lines.iter().map(|line| ("forwarded", *line)).collect();
        headers(&pairs)
    }

    fn x_forwarded_for(lines: &[&str]) -> HeaderMap {
        let pairs: Vec<_> = lines
            .iter()
            .map(|line| ("x-forwarded-for", *line))
            .collect();
        headers(&pairs)
    }

    fn for_ip(addr: &str) -> ForwardedElement {
        ForwardedElement {
            for_node: Some(Node::Ip(ip(addr))),
            ..ForwardedElement::default()
        }
    }

    /// Builds the expected node from an example's text without using the
    /// parser under test.
    fn expected_node(text: &str) -> Node {
        if text == "unknown" {
            Node::Unknown
        } else if text.starts_with('_') {
            Node::Obfuscated(text.to_owned())
        } else if let Some(rest) = text.strip_prefix('[') {
            let (inside, _) = rest.split_once(']').unwrap();
            Node::Ip(IpAddr::V6(inside.parse().unwrap()))
        } else {
            let name = text.split(':').next().unwrap();
            Node::Ip(IpAddr::V4(name.parse().unwrap()))
        }
    }

    fn expected_elements(parsed: &Value) -> Vec<ForwardedElement> {
        let text =
            |element: &Value, key: &str| element.get(key).map(|v| v.as_str().unwrap().to_owned());
        parsed
            .as_array()
            .unwrap()
            .iter()
            .map(|element| ForwardedElement {
                for_node: text(element, "for").map(|node| expected_node(&node)),
                by: text(element, "by").map(|node| expected_node(&node)),
                host: text(element, "host"),
                proto: text(element, "proto"),
            })
            .collect()
    }

    fn field_value<'a>(line: &'a str, name: &str) -> &'a str {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(": "))
            .unwrap_or_else(|| panic!("{line:?} is not a {name} field line"))
    }

    fn str_list(value: &Value) -> Vec<&str> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap())
            .collect()
    }

    #[test]
    fn rfc7239_examples_parse() {
        let document: Value = serde_json::from_str(RFC7239_EXAMPLES).unwrap();
        let examples = document["examples"].as_array().unwrap();
        assert_eq!(examples.len(), 9);

        let mut checked = 0;
        for example in examples {
            let section = example["section"].as_str().unwrap();

            if let (Some(header), Some(parsed)) = (example.get("header"), example.get("parsed")) {
                let value = field_value(header.as_str().unwrap(), "Forwarded");
                let elements = parse_forwarded(&[value]);
                assert_eq!(elements, Ok(expected_elements(parsed)), "section {section}");
                checked += 1;
            } else if let Some(nodes) = example.get("node_values") {
                for node in str_list(nodes) {
                    let element = format!("for={node};by={node}");
                    let parsed = parse_forwarded(&[&element]).unwrap();
                    let unquoted = node.trim_matches('"');
                    let expected = expected_node(unquoted);
                    assert_eq!(
                        parsed[0].for_node,
                        Some(expected.clone()),
                        "section {section}"
                    );
                    assert_eq!(parsed[0].by, Some(expected), "section {section}");

                    // A node with a port or an IPv6 address must be quoted.
                    let bare = format!("for={unquoted}");
                    let result = parse_forwarded(&[&bare]);
                    assert!(
                        matches!(result, Err(ForwardedError::InvalidPair(_))),
                        "section {section}: {bare:?} gave {result:?}"
                    );
                }
                checked += 1;
            } else if let Some(forms) = example.get("equivalent_forms") {
                let expected = expected_elements(&example["parsed"]);
                for form in forms.as_array().unwrap() {
                    let lines: Vec<&str> = str_list(form)
                        .into_iter()
                        .map(|line| field_value(line, "Forwarded"))
                        .collect();
                    assert_eq!(
                        parse_forwarded(&lines),
                        Ok(expected.clone()),
                        "section {section}"
                    );
                }
                checked += 1;
            } else if let Some(xff) = example.get("x_forwarded_for") {
                let xff = field_value(xff.as_str().unwrap(), "X-Forwarded-For");
                let becomes = field_value(example["becomes"].as_str().unwrap(), "Forwarded");
                let from_xff = x_forwarded_for_hops(&x_forwarded_for(&[xff]));
                let from_forwarded = forwarded_hops(&forwarded(&[becomes]));
                assert_eq!(from_xff, from_forwarded, "section {section}");
                assert_eq!(from_xff.len(), 2, "section {section}");
                assert!(from_xff.iter().all(Option::is_some), "section {section}");
                checked += 1;
            } else if let Some(hop1) = example.get("hop1_to_hop2") {
                let hop1 = field_value(hop1.as_str().unwrap(), "Forwarded");
                assert_eq!(parse_forwarded(&[hop1]), Ok(vec![for_ip("192.0.2.43")]));

                let hop2 = field_value(example["hop2_to_origin"].as_str().unwrap(), "Forwarded");
                let second = ForwardedElement {
                    for_node: Some(Node::Ip(ip("198.51.100.17"))),
                    by: Some(Node::Ip(ip("203.0.113.60"))),
                    host: Some("example.com".to_owned()),
                    proto: Some("http".to_owned()),
                };
                let expected = vec![for_ip("192.0.2.43"), second];
                assert_eq!(parse_forwarded(&[hop2]), Ok(expected), "section {section}");
                checked += 1;
            } else {
                panic!("example in section {section} has no known shape");
            }
        }
        assert_eq!(checked, examples.len());
    }

    #[test]
    fn rfc7239_chain_resolves_client() {
        let document: Value = serde_json::from_str(RFC7239_EXAMPLES).unwrap();
        let example = document["examples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|example| example.get("hop2_to_origin").is_some())
            .unwrap();
        let line = field_value(example["hop2_to_origin"].as_str().unwrap(), "Forwarded");
        let map = forwarded(&[line]);
        let peer = ip("203.0.113.60");

        let both = trusted(&["203.0.113.60/32", "198.51.100.17/32"]);
        assert_eq!(client_addr(peer, &map, &both), ip("192.0.2.43"));

        let nearest_only = trusted(&["203.0.113.60/32"]);
        assert_eq!(client_addr(peer, &map, &nearest_only), ip("198.51.100.17"));
    }

    #[test]
    fn rfc7239_x_forwarded_for_conversion_resolves_alike() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.1/32"]);
        let from_xff = x_forwarded_for(&["192.0.2.43, 2001:db8:cafe::17"]);
        let from_forwarded = forwarded(&["for=192.0.2.43, for=\"[2001:db8:cafe::17]\""]);
        assert_eq!(
            client_addr(peer, &from_xff, &proxies),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_addr(peer, &from_forwarded, &proxies),
            ip("2001:db8:cafe::17")
        );
    }

    #[test]
    fn untrusted_peer_headers_ignored() {
        let peer = ip("203.0.113.5");
        let proxies = trusted(&["127.0.0.1/32"]);
        let forged_xff = x_forwarded_for(&["10.0.0.1"]);
        let forged_forwarded = forwarded(&["for=10.0.0.1"]);
        assert_eq!(client_addr(peer, &forged_xff, &proxies), peer);
        assert_eq!(client_addr(peer, &forged_forwarded, &proxies), peer);
    }

    #[test]
    fn empty_trust_list_returns_peer() {
        let peer = ip("127.0.0.1");
        let map = x_forwarded_for(&["10.0.0.1"]);
        assert_eq!(client_addr(peer, &map, &TrustedProxies::default()), peer);
        assert!(TrustedProxies::new(Vec::new()).is_empty());
    }

    #[test]
    fn trusted_loopback_hop_skipped() {
        let peer = ip("127.0.0.1");
        let map = x_forwarded_for(&["10.0.0.1, 127.0.0.1"]);
        assert_eq!(
            client_addr(peer, &map, &trusted(&["127.0.0.1/32"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn spoofed_leftmost_entries_ignored() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.1/32"]);
        let xff = x_forwarded_for(&["1.1.1.1, 10.0.0.9"]);
        assert_eq!(client_addr(peer, &xff, &proxies), ip("10.0.0.9"));

        let fwd = forwarded(&["for=1.1.1.1, for=10.0.0.9"]);
        assert_eq!(client_addr(peer, &fwd, &proxies), ip("10.0.0.9"));
    }

    #[test]
    fn spoofed_trusted_address_not_believed_past_client() {
        // The client claims to be a trusted proxy, but the untrusted hop that
        // the real proxy appended ends the walk first.
        let peer = ip("127.0.0.1");
        let map = x_forwarded_for(&["127.0.0.2, 10.0.0.9"]);
        let proxies = trusted(&["127.0.0.0/8"]);
        assert_eq!(client_addr(peer, &map, &proxies), ip("10.0.0.9"));
    }

    #[test]
    fn garbage_header_returns_peer() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let cases = [
            x_forwarded_for(&["garbage"]),
            x_forwarded_for(&["1.1.1.1, not-an-ip"]),
            x_forwarded_for(&["1.1.1.1:99999999"]),
            x_forwarded_for(&["[2001:db8::1"]),
            forwarded(&["nonsense"]),
            forwarded(&["for=\"1.1.1.1"]),
            forwarded(&["for=1.1.1.1, for=unknown"]),
            forwarded(&["for=1.1.1.1, for=_hidden"]),
            forwarded(&["for=1.1.1.1, by=127.0.0.2"]),
            forwarded(&["for=1.1.1.1, for=1.2.3.4;for=5.6.7.8"]),
        ];
        for map in cases {
            assert_eq!(client_addr(peer, &map, &proxies), peer, "{map:?}");
        }
    }

    #[test]
    fn garbage_hop_returns_last_trusted_hop() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let xff = x_forwarded_for(&["1.1.1.1, garbage, 127.0.0.2"]);
        assert_eq!(client_addr(peer, &xff, &proxies), ip("127.0.0.2"));

        let unknown = forwarded(&["for=1.1.1.1, for=unknown, for=127.0.0.3"]);
        assert_eq!(client_addr(peer, &unknown, &proxies), ip("127.0.0.3"));

        let obfuscated = forwarded(&["for=1.1.1.1, for=_SEVKISEK, for=127.0.0.4"]);
        assert_eq!(client_addr(peer, &obfuscated, &proxies), ip("127.0.0.4"));
    }

    #[test]
    fn malformed_element_hides_only_its_left() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let same_line = forwarded(&["for=1.1.1.1, for=[bad, for=10.0.0.5"]);
        assert_eq!(client_addr(peer, &same_line, &proxies), ip("10.0.0.5"));

        let earlier_line = forwarded(&["for=\"1.1.1.1", "for=10.0.0.6"]);
        assert_eq!(client_addr(peer, &earlier_line, &proxies), ip("10.0.0.6"));
    }

    #[test]
    fn open_quote_swallows_appended_element() {
        // A client that leaves a quote open hides what a proxy appends to the
        // same line, so the walk stops at the peer instead of guessing.
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let map = forwarded(&["for=6.6.6.6;host=\"x, for=10.0.0.7"]);
        assert_eq!(client_addr(peer, &map, &proxies), peer);

        let ipv6 = forwarded(&["for=6.6.6.6;host=\", for=\"[2001:db8::7]\""]);
        assert_eq!(client_addr(peer, &ipv6, &proxies), peer);
    }

    #[test]
    fn non_ascii_line_is_unusable_hop() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let mut map = HeaderMap::new();
        map.append(FORWARDED, HeaderValue::from_static("for=1.1.1.1"));
        map.append(FORWARDED, HeaderValue::from_bytes(b"for=\"\xff\"").unwrap());
        assert_eq!(client_addr(peer, &map, &proxies), peer);

        map.append(FORWARDED, HeaderValue::from_static("for=10.0.0.8"));
        assert_eq!(client_addr(peer, &map, &proxies), ip("10.0.0.8"));
    }

    #[test]
    fn all_hops_trusted_returns_leftmost() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let map = x_forwarded_for(&["127.0.0.3, 127.0.0.2"]);
        assert_eq!(client_addr(peer, &map, &proxies), ip("127.0.0.3"));
    }

    #[test]
    fn no_forwarding_header_returns_peer() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        assert_eq!(client_addr(peer, &HeaderMap::new(), &proxies), peer);
        assert_eq!(client_addr(peer, &forwarded(&[""]), &proxies), peer);
    }

    #[test]
    fn forwarded_preferred_over_x_forwarded_for() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.1/32"]);
        let map = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.2"),
        ]);
        assert_eq!(client_addr(peer, &map, &proxies), ip("10.0.0.2"));
    }

    #[test]
    fn all_field_lines_read_in_order() {
        let peer = ip("127.0.0.1");
        let proxies = trusted(&["127.0.0.0/8"]);
        let xff = x_forwarded_for(&["10.0.0.1", "127.0.0.2, 127.0.0.3"]);
        assert_eq!(client_addr(peer, &xff, &proxies), ip("10.0.0.1"));

        let fwd = forwarded(&["for=10.0.0.1", "for=127.0.0.2", "for=127.0.0.3"]);
        assert_eq!(client_addr(peer, &fwd, &proxies), ip("10.0.0.1"));
    }

    #[test]
    fn x_forwarded_for_entry_forms() {
        let cases = [
            ("192.0.2.1", Some("192.0.2.1")),
            ("192.0.2.1:8080", Some("192.0.2.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:192.0.2.1", Some("::ffff:192.0.2.1")),
            ("unknown", None),
            ("example.com", None),
            ("192.0.2.1:", None),
            ("192.0.2.1:port", None),
            ("[2001:db8::1]443", None),
            ("[192.0.2.1]", None),
            ("01.2.3.4", None),
        ];
        for (entry, expected) in cases {
            assert_eq!(
                parse_x_forwarded_for_entry(entry),
                expected.map(ip),
                "entry {entry:?}"
            );
        }
    }

    #[test]
    fn x_forwarded_for_skips_empty_entries() {
        let hops = x_forwarded_for_hops(&x_forwarded_for(&[" 10.0.0.1 ,, 10.0.0.2 ,"]));
        assert_eq!(hops, vec![Some(ip("10.0.0.1")), Some(ip("10.0.0.2"))]);
    }

    #[test]
    fn ipv6_peer_and_hops() {
        let peer = ip("::1");
        let proxies = trusted(&["::1/128", "fd00::/8"]);
        let xff = x_forwarded_for(&["2001:db8::9, [fd00::2]:8443"]);
        assert_eq!(client_addr(peer, &xff, &proxies), ip("2001:db8::9"));

        let fwd = forwarded(&["for=\"[2001:db8::9]:1234\", for=\"[fd00::2]\""]);
        assert_eq!(client_addr(peer, &fwd, &proxies), ip("2001:db8::9"));

        let untrusted_v6_peer = ip("2001:db8::66");
        assert_eq!(
            client_addr(untrusted_v6_peer, &xff, &proxies),
            untrusted_v6_peer
        );
    }

    #[test]
    fn ipv4_mapped_peer_matches_ipv4_network() {
        let proxies = trusted(&["127.0.0.0/8"]);
        let mapped = ip("::ffff:127.0.0.1");
        assert!(proxies.contains(mapped));
        assert!(!proxies.contains(ip("::1")));

        let map = x_forwarded_for(&["10.0.0.1"]);
        assert_eq!(client_addr(mapped, &map, &proxies), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_network_matches_ipv4_address() {
        let proxies = trusted(&["::ffff:10.0.0.0/104"]);
        assert!(proxies.contains(ip("10.1.2.3")));
        assert!(proxies.contains(ip("::ffff:10.1.2.3")));
        assert!(!proxies.contains(ip("11.0.0.1")));

        let everything_v6 = trusted(&["::/0"]);
        assert!(everything_v6.contains(ip("::ffff:10.1.2.3")));
        assert!(!everything_v6.contains(ip("10.1.2.3")));
    }

    #[test]
    fn duplicate_parameters_rejected() {
        let cases = [
            ("for=192.0.2.1;for=192.0.2.2", "for"),
            ("for=192.0.2.1;FOR=192.0.2.2", "for"),
            ("proto=http;by=192.0.2.9;Proto=https", "proto"),
            ("host=a;host=\"a\"", "host"),
            ("ext=1;EXT=2", "ext"),
        ];
        for (line, name) in cases {
            let expected = Err(ForwardedError::DuplicateParameter(name.to_owned()));
            assert_eq!(parse_forwarded(&[line]), expected, "line {line:?}");
        }
    }

    #[test]
    fn same_parameter_in_separate_elements_allowed() {
        let parsed = parse_forwarded(&["for=192.0.2.1, for=192.0.2.2"]).unwrap();
        assert_eq!(parsed, vec![for_ip("192.0.2.1"), for_ip("192.0.2.2")]);
    }

    #[test]
    fn invalid_pairs_rejected() {
        let cases = [
            "for",
            "=192.0.2.1",
            "for =192.0.2.1",
            "for= 192.0.2.1",
            "f(r=192.0.2.1",
            "for=\"192.0.2.1\"x",
            "host=a b",
            "host=\"a\\\u{1}\"",
            "host=\"a\u{7f}\"",
        ];
        for line in cases {
            let result = parse_forwarded(&[line]);
            assert!(
                matches!(result, Err(ForwardedError::InvalidPair(_))),
                "line {line:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn unterminated_quote_rejected() {
        for line in ["for=\"192.0.2.1", "host=\"a\\\"", "host=\"a\\"] {
            let result = parse_forwarded(&[line]);
            assert!(
                matches!(result, Err(ForwardedError::UnterminatedQuote(_))),
                "line {line:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn invalid_nodes_rejected() {
        let cases = [
            "for=example.com",
            "for=\"[192.0.2.1]\"",
            "for=\"[2001:db8::1\"",
            "for=\"[2001:db8::1]x\"",
            "for=\"[2001:db8::1]:\"",
            "for=\"192.0.2.1:123456\"",
            "for=\"192.0.2.1:_\"",
            "for=\"192.0.2.1:8a\"",
            "for=_",
            "for=_a*b",
            "for=\"\"",
            "for=192.0.2.256",
            "for=\"[fe80::1%25eth0]\"",
            "by=unknownx",
        ];
        for line in cases {
            let result = parse_forwarded(&[line]);
            assert!(
                matches!(result, Err(ForwardedError::InvalidNode(_))),
                "line {line:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn node_forms_accepted() {
        let cases = [
            ("for=192.0.2.1", Node::Ip(ip("192.0.2.1"))),
            ("for=\"192.0.2.1:80\"", Node::Ip(ip("192.0.2.1"))),
            ("for=\"192.0.2.1:_port\"", Node::Ip(ip("192.0.2.1"))),
            ("for=\"[::1]:_p.1-x\"", Node::Ip(ip("::1"))),
            (
                "for=\"[::ffff:192.0.2.1]\"",
                Node::Ip(ip("::ffff:192.0.2.1")),
            ),
            ("for=unknown", Node::Unknown),
            ("for=UNKNOWN", Node::Unknown),
            ("for=\"unknown:80\"", Node::Unknown),
            ("for=_a.b-c_9", Node::Obfuscated("_a.b-c_9".to_owned())),
            ("for=\"_gazonk:_p\"", Node::Obfuscated("_gazonk".to_owned())),
        ];
        for (line, expected) in cases {
            let parsed = parse_forwarded(&[line]).unwrap();
            assert_eq!(parsed[0].for_node, Some(expected), "line {line:?}");
        }
    }

    #[test]
    fn quoted_string_escapes_removed() {
        let parsed = parse_forwarded(&["host=\"ex\\\"am\\ple:8080\";proto=\"https\""]).unwrap();
        assert_eq!(parsed[0].host.as_deref(), Some("ex\"ample:8080"));
        assert_eq!(parsed[0].proto.as_deref(), Some("https"));
    }

    #[test]
    fn quoted_separators_stay_in_value() {
        let parsed = parse_forwarded(&["host=\"a,b;c\";for=192.0.2.1, for=192.0.2.2"]).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].host.as_deref(), Some("a,b;c"));
        assert_eq!(parsed[0].for_node, Some(Node::Ip(ip("192.0.2.1"))));
    }

    #[test]
    fn whitespace_and_empty_entries_tolerated() {
        let parsed =
            parse_forwarded(&[" for=192.0.2.1 ;\tproto=http ; ,, ; ,for=192.0.2.2 "]).unwrap();
        let first = ForwardedElement {
            proto: Some("http".to_owned()),
            ..for_ip("192.0.2.1")
        };
        let expected = vec![first, ForwardedElement::default(), for_ip("192.0.2.2")];
        assert_eq!(parsed, expected);
        assert_eq!(parse_forwarded(&[]), Ok(Vec::new()));
        assert_eq!(parse_forwarded(&["", " , "]), Ok(Vec::new()));
    }

    #[test]
    fn extension_parameters_ignored() {
        let parsed = parse_forwarded(&["for=192.0.2.1;secret=\"x y\";via=a"]).unwrap();
        assert_eq!(parsed, vec![for_ip("192.0.2.1")]);
    }

    #[test]
    fn forwarded_error_messages_lowercase_without_period() {
        let errors = [
            parse_forwarded(&["for=\"x"]).unwrap_err(),
            parse_forwarded(&["for"]).unwrap_err(),
            parse_forwarded(&["for=_a;for=_b"]).unwrap_err(),
            parse_forwarded(&["for=example.com"]).unwrap_err(),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with("forwarded "), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
        let node = parse_forwarded(&["for=example.com"])
            .unwrap_err()
            .to_string();
        assert!(node.contains("\"example.com\""), "{node}");
    }
}
