//! The `Content-Digest` field (RFC 9530): the digest of a message body,
//! which a signature covers so that the body cannot change after signing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sfv::{BareItem, Dictionary, Item, ListEntry, Parser};
use sha2::{Digest, Sha256, Sha512};

use crate::PopError;

/// Returns the `Content-Digest` value of `body` with SHA-256.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Checks a `Content-Digest` value against the body received. Every
/// `sha-256` and `sha-512` member must match; other algorithms are ignored,
/// and a value without either, or with a member named twice, is rejected.
pub fn verify_content_digest(value: &str, body: &[u8]) -> Result<(), PopError> {
    // A repeated member would let the last one decide here while another
    // reader trusts the first.
    crate::httpsig::reject_duplicate_keys(value)?;
    let dictionary: Dictionary = Parser::new(value).parse().map_err(|err| {
        PopError::Malformed(format!(
            "Content-Digest is not a structured dictionary: {err}"
        ))
    })?;
    let mut checked = 0;
    for (algorithm, entry) in &dictionary {
        let ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(digest),
            ..
        }) = entry
        else {
            return Err(PopError::Malformed(format!(
                "Content-Digest {} is not a byte sequence",
                algorithm.as_str()
            )));
        };
        let expected = match algorithm.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        if *digest != expected {
            return Err(PopError::DigestMismatch(format!(
                "Content-Digest {} does not match the body received",
                algorithm.as_str()
            )));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(PopError::Unsupported(
            "Content-Digest has no sha-256 or sha-512 member".to_owned(),
        ));
    }
    Ok(())
}
