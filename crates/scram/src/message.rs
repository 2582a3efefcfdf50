//! Parsing and building of the four SCRAM messages (RFC 5802 section 7).
//!
//! Parsing is strict: attributes must come in the grammar's order, each
//! known attribute once. Optional extensions (any other attribute letter)
//! may follow the mandatory attributes, as the grammar allows, and are
//! ignored as RFC 5802 requires, but they must still be well formed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{Error, MAX_MESSAGE_LEN};

/// Checks the size limit and UTF-8 encoding of a received message.
pub(crate) fn decode(message: &[u8]) -> Result<&str, Error> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::MessageTooLong {
            len: message.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let text = std::str::from_utf8(message).map_err(|_| Error::Malformed("not valid UTF-8"))?;
    if text.contains('\0') {
        return Err(Error::Malformed("contains a NUL character"));
    }
    Ok(text)
}

/// Iterates over the comma-separated `attr=value` parts of a message.
pub(crate) struct Attributes<'a> {
    parts: std::iter::Peekable<std::str::Split<'a, char>>,
}

impl<'a> Attributes<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Attributes {
            parts: text.split(',').peekable(),
        }
    }

    /// Returns the attribute letter of the next part without consuming it.
    pub(crate) fn peek_name(&mut self) -> Option<u8> {
        self.parts
            .peek()
            .and_then(|part| part.as_bytes().first().copied())
    }

    pub(crate) fn is_empty(&mut self) -> bool {
        self.parts.peek().is_none()
    }

    /// Consumes the next part, which must be the attribute `name`, and
    /// returns its value. The value may be empty; callers check its grammar.
    pub(crate) fn expect(&mut self, name: u8, missing: &'static str) -> Result<&'a str, Error> {
        let part = self.parts.next().ok_or(Error::Malformed(missing))?;
        match part.as_bytes() {
            [first, b'=', ..] if *first == name => Ok(part.get(2..).unwrap_or_default()),
            _ => Err(Error::Malformed(missing)),
        }
    }

    /// Consumes the next part as an optional extension: a letter other than
    /// those in `known`, `=`, and a non-empty value.
    pub(crate) fn skip_extension(&mut self, known: &[u8]) -> Result<(), Error> {
        let part = self
            .parts
            .next()
            .ok_or(Error::Malformed("missing attribute"))?;
        match part.as_bytes() {
            [name, b'=', _, ..] if name.is_ascii_alphabetic() => {
                if known.contains(name) {
                    Err(Error::Malformed("attribute repeated or out of order"))
                } else {
                    Ok(())
                }
            }
            [name, b'='] if name.is_ascii_alphabetic() => {
                Err(Error::Malformed("extension attribute with an empty value"))
            }
            _ => Err(Error::Malformed(
                "part is not an attribute of the form x=value",
            )),
        }
    }
}

/// Checks a nonce: one or more printable ASCII characters other than ','.
/// Splitting on ',' already removed commas.
pub(crate) fn check_nonce(nonce: &str) -> Result<(), Error> {
    if nonce.is_empty() {
        return Err(Error::Malformed("empty nonce"));
    }
    if !nonce.bytes().all(|byte| (0x21..=0x7e).contains(&byte)) {
        return Err(Error::Malformed(
            "nonce has a character outside printable ASCII",
        ));
    }
    Ok(())
}

/// Decodes a `saslname`: `=2C` stands for ',' and `=3D` for '='; any other
/// '=' is invalid. PostgreSQL clients send an empty name (`n=,`), which is
/// accepted though RFC 5802 requires at least one character.
pub(crate) fn decode_saslname(name: &str) -> Result<String, Error> {
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(index) = rest.find('=') {
        decoded.push_str(rest.get(..index).unwrap_or_default());
        let escape = rest.get(index..index + 3);
        match escape {
            Some("=2C") => decoded.push(','),
            Some("=3D") => decoded.push('='),
            _ => {
                return Err(Error::InvalidUsername("'=' must be followed by 2C or 3D"));
            }
        }
        rest = rest.get(index + 3..).unwrap_or_default();
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// Encodes a user name as a `saslname`.
pub(crate) fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Decodes standard base64 with padding, rejecting non-canonical trailing
/// bits.
pub(crate) fn decode_base64(text: &str, error: &'static str) -> Result<Vec<u8>, Error> {
    STANDARD.decode(text).map_err(|_| Error::Malformed(error))
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Parses a positive decimal `u32` without sign or leading zeros, the
/// `posit-number` of the grammar.
pub(crate) fn parse_positive_number(text: &str) -> Option<u32> {
    let first = *text.as_bytes().first()?;
    if !(b'1'..=b'9').contains(&first) || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The parsed GS2 header at the start of a client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports channel binding but believes the server
    /// does not.
    SupportedNotUsed,
    /// `p=<cb-name>`: the client uses channel binding of this type.
    Binding(String),
}

/// Splits a client-first-message into its GS2 header flag, the header
/// itself (including both commas) and the client-first-message-bare.
pub(crate) fn split_gs2_header(message: &str) -> Result<(Gs2Flag, &str, &str), Error> {
    let (flag, rest) = message
        .split_once(',')
        .ok_or(Error::Malformed("missing GS2 header"))?;
    let flag = match flag {
        "n" => Gs2Flag::NotSupported,
        "y" => Gs2Flag::SupportedNotUsed,
        _ => {
            let name = flag.strip_prefix("p=").ok_or(Error::Malformed(
                "GS2 channel binding flag is not n, y or p=",
            ))?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-');
            if !valid {
                return Err(Error::Malformed("invalid channel binding type name"));
            }
            Gs2Flag::Binding(name.to_owned())
        }
    };
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(Error::Malformed("GS2 header is not terminated by ','"))?;
    if !authzid.is_empty() {
        let name = authzid.strip_prefix("a=").ok_or(Error::Malformed(
            "GS2 authorization identity does not start with a=",
        ))?;
        decode_saslname(name)?;
        return Err(Error::AuthzidNotSupported);
    }
    let header_len = message.len() - bare.len();
    let header = message
        .get(..header_len)
        .ok_or(Error::Malformed("missing GS2 header"))?;
    Ok((flag, header, bare))
}

/// The attributes of a client-first-message-bare.
pub(crate) struct ClientFirstBare<'a> {
    pub(crate) nonce: &'a str,
}

pub(crate) fn parse_client_first_bare(bare: &str) -> Result<ClientFirstBare<'_>, Error> {
    let mut attributes = Attributes::new(bare);
    if attributes.peek_name() == Some(b'm') {
        return Err(Error::ExtensionsNotSupported);
    }
    let username = attributes.expect(b'n', "missing user name attribute n=")?;
    decode_saslname(username)?;
    let nonce = attributes.expect(b'r', "missing nonce attribute r=")?;
    check_nonce(nonce)?;
    while !attributes.is_empty() {
        attributes.skip_extension(b"mnr")?;
    }
    Ok(ClientFirstBare { nonce })
}

/// The attributes of a server-first-message.
pub(crate) struct ServerFirst<'a> {
    pub(crate) nonce: &'a str,
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u32,
}

pub(crate) fn parse_server_first(message: &str) -> Result<ServerFirst<'_>, Error> {
    let mut attributes = Attributes::new(message);
    if attributes.peek_name() == Some(b'm') {
        return Err(Error::ExtensionsNotSupported);
    }
    let nonce = attributes.expect(b'r', "missing nonce attribute r=")?;
    check_nonce(nonce)?;
    let salt = attributes.expect(b's', "missing salt attribute s=")?;
    let salt = decode_base64(salt, "salt is not valid base64")?;
    if salt.is_empty() {
        return Err(Error::Malformed("empty salt"));
    }
    let iterations = attributes.expect(b'i', "missing iteration count attribute i=")?;
    let iterations = parse_positive_number(iterations).ok_or(Error::Malformed(
        "iteration count is not a positive 32-bit number",
    ))?;
    while !attributes.is_empty() {
        attributes.skip_extension(b"mrsi")?;
    }
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// The attributes of a client-final-message.
pub(crate) struct ClientFinal<'a> {
    /// The raw base64 `c=` value.
    pub(crate) channel_binding: &'a str,
    pub(crate) nonce: &'a str,
    /// client-final-message-without-proof, which enters the AuthMessage.
    pub(crate) without_proof: &'a str,
    pub(crate) proof: Vec<u8>,
}

pub(crate) fn parse_client_final(message: &str) -> Result<ClientFinal<'_>, Error> {
    let (without_proof, proof) = message
        .rsplit_once(",p=")
        .ok_or(Error::Malformed("missing proof attribute p= at the end"))?;
    let mut attributes = Attributes::new(without_proof);
    let channel_binding = attributes.expect(b'c', "missing channel binding attribute c=")?;
    if channel_binding.is_empty() {
        return Err(Error::Malformed("empty channel binding attribute c="));
    }
    let nonce = attributes.expect(b'r', "missing nonce attribute r=")?;
    check_nonce(nonce)?;
    while !attributes.is_empty() {
        attributes.skip_extension(b"crp")?;
    }
    if proof.is_empty() {
        return Err(Error::Malformed("empty proof attribute p="));
    }
    let proof = decode_base64(proof, "proof is not valid base64")?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// A parsed server-final-message.
pub(crate) enum ServerFinal {
    Verifier(Vec<u8>),
    Error(String),
}

pub(crate) fn parse_server_final(message: &str) -> Result<ServerFinal, Error> {
    let mut attributes = Attributes::new(message);
    let result = match attributes.peek_name() {
        Some(b'e') => {
            let value = attributes.expect(b'e', "missing e= or v=")?;
            if value.is_empty() {
                return Err(Error::Malformed("empty server error e="));
            }
            ServerFinal::Error(value.to_owned())
        }
        _ => {
            let verifier = attributes.expect(b'v', "missing verifier attribute v= or error e=")?;
            if verifier.is_empty() {
                return Err(Error::Malformed("empty verifier attribute v="));
            }
            ServerFinal::Verifier(decode_base64(verifier, "verifier is not valid base64")?)
        }
    };
    while !attributes.is_empty() {
        attributes.skip_extension(b"ev")?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_escapes_round_trip() {
        let name = "a,b=c";
        let encoded = encode_saslname(name);
        assert_eq!(encoded, "a=2Cb=3Dc");
        assert_eq!(decode_saslname(&encoded).unwrap(), name);
    }

    #[test]
    fn saslname_rejects_bad_escapes() {
        for name in ["=", "a=2", "=2c", "=41", "x=3"] {
            assert_eq!(
                decode_saslname(name),
                Err(Error::InvalidUsername("'=' must be followed by 2C or 3D")),
                "{name}"
            );
        }
    }

    #[test]
    fn positive_number_grammar() {
        assert_eq!(parse_positive_number("4096"), Some(4096));
        assert_eq!(parse_positive_number("4294967295"), Some(u32::MAX));
        for text in ["", "0", "04096", "+1", "-1", "1a", "4294967296", " 1"] {
            assert_eq!(parse_positive_number(text), None, "{text:?}");
        }
    }

    #[test]
    fn gs2_header_flags() {
        let (flag, header, bare) = split_gs2_header("n,,n=,r=abc").unwrap();
        assert_eq!(flag, Gs2Flag::NotSupported);
        assert_eq!(header, "n,,");
        assert_eq!(bare, "n=,r=abc");

        let (flag, header, _) = split_gs2_header("y,,n=,r=abc").unwrap();
        assert_eq!(flag, Gs2Flag::SupportedNotUsed);
        assert_eq!(header, "y,,");

        let (flag, header, _) = split_gs2_header("p=tls-server-end-point,,n=,r=a").unwrap();
        assert_eq!(flag, Gs2Flag::Binding("tls-server-end-point".into()));
        assert_eq!(header, "p=tls-server-end-point,,");
    }

    #[test]
    fn gs2_header_rejects_bad_input() {
        assert_eq!(
            split_gs2_header("n,a=admin,n=,r=abc").unwrap_err(),
            Error::AuthzidNotSupported
        );
        for message in [
            "",
            "n",
            "n,",
            "x,,n=,r=a",
            "p=,,n=,r=a",
            "p=a b,,n=,r=a",
            "n,b=x,n=",
        ] {
            assert!(
                matches!(split_gs2_header(message), Err(Error::Malformed(_))),
                "{message:?}"
            );
        }
    }
}
