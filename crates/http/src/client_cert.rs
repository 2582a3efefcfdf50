//! Reading the fields request handling needs from a verified client
//! certificate: thumbprint, subject, subject alternative names and
//! validity.

use std::fmt::Write as _;
use std::net::IpAddr;

use stepgate_core::{ClientCertificate, Timestamp};
use x509_parser::der_parser::asn1_rs::ToDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, X509Error};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Parses a DER certificate into a [`ClientCertificate`].
pub(crate) fn client_certificate(der: Vec<u8>) -> Result<ClientCertificate, X509Error> {
    let (_, certificate) = X509Certificate::from_der(&der).map_err(|err| match err {
        x509_parser::nom::Err::Error(err) | x509_parser::nom::Err::Failure(err) => err,
        x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    })?;
    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    let mut emails = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Some(extension) = certificate.subject_alternative_name()? {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns_names.push((*name).to_owned()),
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::RFC822Name(email) => emails.push((*email).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(addr) = ip_address(bytes) {
                        ip_addresses.push(addr.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let validity = certificate.validity();
    let subject = rfc4514(certificate.subject());
    let not_before = Timestamp::from_secs(validity.not_before.timestamp());
    let not_after = Timestamp::from_secs(validity.not_after.timestamp());
    Ok(ClientCertificate {
        thumbprint_sha256: ClientCertificate::thumbprint(&der),
        der,
        subject,
        dns_names,
        uris,
        emails,
        ip_addresses,
        not_before,
        not_after,
    })
}

/// Converts an iPAddress name, 4 or 16 octets (RFC 5280 §4.2.1.6); `None`
/// for any other length.
fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Formats a distinguished name as RFC 4514 §2 does: the last RDN first,
/// RDNs separated by ',', multi-valued RDNs joined by '+'.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut text = String::new();
    for (i, rdn) in name
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            text.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                text.push('+');
            }
            push_attribute(&mut text, attribute);
        }
    }
    text
}

/// Short names RFC 4514 §3 requires implementations to recognise.
const SHORT_NAMES: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// Appends `type=value`. A type without a short name is written as its
/// dotted OID, with its value as '#' and the hex of its DER encoding
/// (RFC 4514 §2.4). A value that is not a string is written as hex too.
fn push_attribute(text: &mut String, attribute: &AttributeTypeAndValue<'_>) {
    let oid = attribute.attr_type().to_id_string();
    let short = SHORT_NAMES
        .iter()
        .find(|(id, _)| *id == oid)
        .map(|(_, short)| *short);
    match (short, attribute.as_str()) {
        (Some(short), Ok(value)) => {
            text.push_str(short);
            text.push('=');
            escape_value(text, value);
        }
        (short, _) => {
            text.push_str(short.unwrap_or(&oid));
            text.push_str("=#");
            let encoded = attribute.attr_value().to_der_vec().unwrap_or_default();
            for byte in encoded {
                let _ = write!(text, "{byte:02x}");
            }
        }
    }
}

/// Escapes a string value as RFC 4514 §2.4 requires.
fn escape_value(text: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                text.push('\\');
                text.push(c);
            }
            '#' if i == 0 => text.push_str("\\#"),
            ' ' if i == 0 || i == last => text.push_str("\\ "),
            '\0' => text.push_str("\\00"),
            c => text.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape_value;

    fn escaped(value: &str) -> String {
        let mut text = String::new();
        escape_value(&mut text, value);
        text
    }

    #[test]
    fn special_characters_escaped() {
        assert_eq!(escaped("Sue, Grabbit and Runn"), "Sue\\, Grabbit and Runn");
        assert_eq!(escaped("a+b;c<d>e\"f\\g"), "a\\+b\\;c\\<d\\>e\\\"f\\\\g");
        assert_eq!(escaped("#1"), "\\#1");
        assert_eq!(escaped("a#1"), "a#1");
        assert_eq!(escaped(" padded "), "\\ padded\\ ");
        assert_eq!(escaped("nul\0"), "nul\\00");
        assert_eq!(escaped(""), "");
    }
}
