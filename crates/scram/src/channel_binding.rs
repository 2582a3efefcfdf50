//! The `tls-server-end-point` channel binding of RFC 5929 section 4.

use aws_lc_rs::digest;
use x509_parser::signature_algorithm::SignatureAlgorithm;

use crate::Error;
use crate::message;

/// Name of the channel binding type, as it appears in `p=` of the GS2 header.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// GS2 header that a SCRAM-SHA-256-PLUS client sends.
pub(crate) const PLUS_GS2_HEADER: &str = "p=tls-server-end-point,,";

/// The `tls-server-end-point` channel binding data of one TLS connection:
/// the hash of the server certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBinding {
    certificate_hash: Vec<u8>,
}

impl ChannelBinding {
    /// Wraps a hash that [`tls_server_end_point`] computed, or one that a TLS
    /// library returned for the connection. An empty hash is rejected.
    pub fn tls_server_end_point(certificate_hash: Vec<u8>) -> Result<Self, Error> {
        if certificate_hash.is_empty() {
            return Err(Error::MechanismUnavailable(
                "SCRAM-SHA-256-PLUS",
                "the tls-server-end-point hash is empty",
            ));
        }
        Ok(ChannelBinding { certificate_hash })
    }

    /// Computes the binding from the server certificate in DER form.
    pub fn from_certificate(certificate_der: &[u8]) -> Result<Self, Error> {
        Self::tls_server_end_point(tls_server_end_point(certificate_der)?)
    }

    /// Hash of the server certificate.
    pub fn certificate_hash(&self) -> &[u8] {
        &self.certificate_hash
    }

    /// Returns the `c=` value of a client-final-message that uses this
    /// binding: base64 of the GS2 header followed by the certificate hash.
    pub(crate) fn attribute_value(&self) -> String {
        let mut input = PLUS_GS2_HEADER.as_bytes().to_vec();
        input.extend_from_slice(&self.certificate_hash);
        message::encode_base64(&input)
    }
}

/// Computes the RFC 5929 `tls-server-end-point` hash of a DER certificate.
///
/// The hash function is the one of the certificate's signature algorithm,
/// except that MD5 and SHA-1 are replaced by SHA-256. RSA PKCS #1 v1.5,
/// RSASSA-PSS (hash taken from its parameters), ECDSA and DSA signatures are
/// recognised. Ed25519, Ed448 and unknown algorithms fail with
/// [`Error::UnsupportedCertificateSignature`], because RFC 5929 defines the
/// binding only for algorithms with a single hash function.
pub fn tls_server_end_point(certificate_der: &[u8]) -> Result<Vec<u8>, Error> {
    let (rest, certificate) = x509_parser::parse_x509_certificate(certificate_der)
        .map_err(|error| Error::InvalidCertificate(error.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::InvalidCertificate(format!(
            "{} bytes follow the certificate",
            rest.len()
        )));
    }
    let algorithm = &certificate.signature_algorithm;
    let oid = algorithm.algorithm.to_id_string();
    let hash = match signature_hash(&oid) {
        Some(hash) => hash,
        None if oid == RSASSA_PSS => {
            let Ok(SignatureAlgorithm::RSASSA_PSS(parameters)) =
                SignatureAlgorithm::try_from(algorithm)
            else {
                return Err(Error::InvalidCertificate(
                    "invalid RSASSA-PSS signature parameters".to_owned(),
                ));
            };
            digest_hash(&parameters.hash_algorithm_oid().to_id_string())
                .ok_or(Error::UnsupportedCertificateSignature(oid))?
        }
        None => return Err(Error::UnsupportedCertificateSignature(oid)),
    };
    Ok(digest::digest(hash, certificate_der).as_ref().to_vec())
}

const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// Maps a signature algorithm OID to the tls-server-end-point hash.
fn signature_hash(oid: &str) -> Option<&'static digest::Algorithm> {
    let hash = match oid {
        // md5WithRSAEncryption, sha1WithRSAEncryption, ecdsa-with-SHA1 and
        // dsa-with-sha1 use SHA-256, as RFC 5929 requires for MD5 and SHA-1.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.10045.4.1"
        | "1.2.840.10040.4.3" => &digest::SHA256,
        // sha224WithRSAEncryption, ecdsa-with-SHA224, dsa-with-sha224.
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" | "2.16.840.1.101.3.4.3.1" => {
            &digest::SHA224
        }
        // sha256WithRSAEncryption, ecdsa-with-SHA256, dsa-with-sha256.
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" | "2.16.840.1.101.3.4.3.2" => {
            &digest::SHA256
        }
        // sha384WithRSAEncryption, ecdsa-with-SHA384.
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
        // sha512WithRSAEncryption, ecdsa-with-SHA512.
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
        _ => return None,
    };
    Some(hash)
}

/// Maps a hash algorithm OID (as in RSASSA-PSS parameters) to the
/// tls-server-end-point hash.
fn digest_hash(oid: &str) -> Option<&'static digest::Algorithm> {
    let hash = match oid {
        // MD5 and SHA-1 are replaced by SHA-256.
        "1.2.840.113549.2.5" | "1.3.14.3.2.26" => &digest::SHA256,
        "2.16.840.1.101.3.4.2.4" => &digest::SHA224,
        "2.16.840.1.101.3.4.2.1" => &digest::SHA256,
        "2.16.840.1.101.3.4.2.2" => &digest::SHA384,
        "2.16.840.1.101.3.4.2.3" => &digest::SHA512,
        _ => return None,
    };
    Some(hash)
}
