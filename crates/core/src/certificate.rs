//! The client certificate a TLS connection presented and the gateway
//! verified, in the form passed to request handling (RFC 8705 mutual-TLS
//! client authentication).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::Timestamp;

/// The end-entity certificate of a client, verified against the listener's
/// client CAs during the TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// DER encoding of the certificate.
    pub der: Vec<u8>,
    /// SHA-256 of `der` in base64url without padding: the `x5t#S256`
    /// confirmation value of RFC 8705 §3.1.
    pub thumbprint_sha256: String,
    /// Subject distinguished name as an RFC 4514 string, such as
    /// `CN=ci-bot,O=Example`.
    pub subject: String,
    /// DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// URIs of the subject alternative name extension, such as SPIFFE IDs.
    pub uris: Vec<String>,
    /// Email addresses (rfc822Name) of the subject alternative name
    /// extension.
    pub emails: Vec<String>,
    /// IP addresses of the subject alternative name extension, in the
    /// text form of [`std::net::IpAddr`].
    pub ip_addresses: Vec<String>,
    /// Start of the validity period.
    pub not_before: Timestamp,
    /// End of the validity period.
    pub not_after: Timestamp,
}

impl ClientCertificate {
    /// Computes the `x5t#S256` thumbprint of a DER certificate: SHA-256,
    /// base64url without padding.
    pub fn thumbprint(der: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(der))
    }
}

#[cfg(test)]
mod tests {
    use super::ClientCertificate;

    #[test]
    fn thumbprint_is_base64url_sha256() {
        // The same value as `printf abc | openssl dgst -sha256 -binary | basenc --base64url`,
        // without the padding.
        assert_eq!(
            ClientCertificate::thumbprint(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
