//! Removal of hop-by-hop header fields before a message is forwarded.

use http::HeaderMap;
use http::header::{
    CONNECTION, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// Header fields that apply to a single connection, so a proxy removes them
/// before it forwards a message. `Keep-Alive` and `Proxy-Connection` are
/// legacy HTTP/1.0 fields that some clients still send.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Removes the hop-by-hop header fields in [`HOP_BY_HOP`] and every field
/// named in any `Connection` field line.
///
/// `Connection` lists are comma-separated and compared case-insensitively.
/// Entries that are not valid header names are ignored. A client can name any
/// field in `Connection`, including `Forwarded` and `X-Forwarded-For`, so
/// resolve the client address before calling this on a request.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();

    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use http::HeaderValue;
    use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn each_fixed_hop_by_hop_field_removed() {
        let fixed = [
            ("Connection", "close"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "Expires"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Proxy-Authenticate", "Basic realm=\"gw\""),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ];
        for (name, value) in fixed {
            let mut map = headers(&[(name, value), ("Content-Type", "text/plain")]);
            remove_hop_by_hop(&mut map);
            assert!(!map.contains_key(name), "{name} kept");
            assert!(
                map.contains_key(CONTENT_TYPE),
                "content-type removed with {name}"
            );
        }
    }

    #[test]
    fn connection_listed_fields_removed() {
        let mut map = headers(&[
            ("Connection", "X-Debug, x-trace-id"),
            ("X-Debug", "1"),
            ("X-Trace-Id", "abc"),
            ("X-Other", "kept"),
        ]);
        remove_hop_by_hop(&mut map);
        assert!(!map.contains_key("x-debug"));
        assert!(!map.contains_key("x-trace-id"));
        assert!(!map.contains_key(CONNECTION));
        assert_eq!(map.get("x-other").unwrap(), "kept");
    }

    #[test]
    fn connection_names_case_insensitive() {
        let mut map = headers(&[("Connection", "X-CUSTOM"), ("x-custom", "1")]);
        remove_hop_by_hop(&mut map);
        assert!(!map.contains_key("x-custom"));
    }

    #[test]
    fn all_connection_field_lines_read() {
        let mut map = headers(&[
            ("Connection", "x-first"),
            ("Connection", "x-second,x-third"),
            ("X-First", "1"),
            ("X-Second", "2"),
            ("X-Third", "3"),
        ]);
        remove_hop_by_hop(&mut map);
        assert!(!map.contains_key("x-first"));
        assert!(!map.contains_key("x-second"));
        assert!(!map.contains_key("x-third"));
    }

    #[test]
    fn repeated_listed_field_lines_all_removed() {
        let mut map = headers(&[("Connection", "x-a"), ("X-A", "1"), ("X-A", "2")]);
        remove_hop_by_hop(&mut map);
        assert!(!map.contains_key("x-a"));
    }

    #[test]
    fn invalid_connection_entries_ignored() {
        let mut map = headers(&[
            ("Connection", " , x-valid ,, bad name, bad\"quote, ,"),
            ("X-Valid", "1"),
            ("Host", "example.com"),
        ]);
        remove_hop_by_hop(&mut map);
        assert!(!map.contains_key("x-valid"));
        assert_eq!(map.get(HOST).unwrap(), "example.com");
    }

    #[test]
    fn non_ascii_connection_value_tolerated() {
        let mut map = HeaderMap::new();
        map.insert(
            CONNECTION,
            HeaderValue::from_bytes(b"x-a, \xff\xfe, x-b").unwrap(),
        );
        map.insert("x-a", HeaderValue::from_static("1"));
        map.insert("x-b", HeaderValue::from_static("2"));
        remove_hop_by_hop(&mut map);
        assert!(!map.contains_key("x-a"));
        assert!(!map.contains_key("x-b"));
    }

    #[test]
    fn end_to_end_fields_kept() {
        let mut map = headers(&[
            ("Host", "example.com"),
            ("Authorization", "Bearer t"),
            ("Cookie", "a=b"),
            ("Content-Length", "0"),
            ("Content-Type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.len(), 5);
        for name in [HOST, AUTHORIZATION, COOKIE, CONTENT_LENGTH, CONTENT_TYPE] {
            assert!(map.contains_key(&name), "{name} removed");
        }
    }

    #[test]
    fn empty_map_unchanged() {
        let mut map = HeaderMap::new();
        remove_hop_by_hop(&mut map);
        assert!(map.is_empty());
    }
}
