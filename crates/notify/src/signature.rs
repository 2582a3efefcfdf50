//! The `Stepgate-Signature` header: an HMAC-SHA256 over the timestamp and
//! the body, in the form `t=<unix seconds>,v1=<64 lowercase hex digits>`.
//!
//! The signed message is the decimal timestamp, a full stop and the body
//! bytes, so a receiver that checks the timestamp against its clock also
//! rejects a captured request replayed later.

use aws_lc_rs::hmac;

use crate::Secret;

/// Name of the request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Stepgate-Signature";

/// Maximum length of a signature header that [`verify`] parses. A header
/// made by [`sign`] has at most 90 bytes (`t=`, 20 digits, `,v1=` and 64
/// hex digits), and the margin lets a duplicated element be reported as
/// such.
const MAX_HEADER_LEN: usize = 256;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// Reason a signature header was rejected. Messages never contain the
/// secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed signature header: {0}")]
    Malformed(String),
    #[error(
        "stale timestamp: t={timestamp} is {}, more than the tolerance of {tolerance} s",
        describe_skew(*timestamp, *now)
    )]
    Stale {
        timestamp: u64,
        now: u64,
        tolerance: u64,
    },
    #[error("signature mismatch: the body or the secret differs from the ones signed")]
    Mismatch,
}

fn describe_skew(timestamp: u64, now: u64) -> String {
    if timestamp <= now {
        format!("{} s in the past", now - timestamp)
    } else {
        format!("{} s in the future", timestamp - now)
    }
}

/// Signs `body` at `timestamp` (Unix seconds) and returns the header value
/// `t=<timestamp>,v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>." + body)>`.
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let tag = hmac::sign(&key(secret), &signed_message(timestamp, body));
    format!("t={timestamp},v1={}", hex::encode(tag.as_ref()))
}

/// Checks a header made by [`sign`] against `body`.
///
/// The header must be exactly the two elements `t=` and `v1=`, each once,
/// separated by a comma without spaces, with `t` in decimal digits and `v1`
/// in 64 lowercase hex digits. The timestamp must lie within `tolerance`
/// seconds of `now` in either direction. The tag is compared in constant
/// time.
pub fn verify(
    secret: &Secret,
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), VerifyError> {
    let parsed = parse_header(header)?;
    if parsed.timestamp.abs_diff(now) > tolerance {
        return Err(VerifyError::Stale {
            timestamp: parsed.timestamp,
            now,
            tolerance,
        });
    }
    hmac::verify(
        &key(secret),
        &signed_message(parsed.timestamp, body),
        &parsed.tag,
    )
    .map_err(|_| VerifyError::Mismatch)
}

fn key(secret: &Secret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.expose())
}

fn signed_message(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let prefix = format!("{timestamp}.");
    let mut message = Vec::with_capacity(prefix.len() + body.len());
    message.extend_from_slice(prefix.as_bytes());
    message.extend_from_slice(body);
    message
}

#[derive(Debug)]
struct ParsedHeader {
    timestamp: u64,
    tag: [u8; TAG_LEN],
}

fn parse_header(header: &str) -> Result<ParsedHeader, VerifyError> {
    let malformed = |message: String| VerifyError::Malformed(message);
    if header.len() > MAX_HEADER_LEN {
        return Err(malformed(format!(
            "{} bytes long, more than the maximum of {MAX_HEADER_LEN}",
            header.len()
        )));
    }
    let mut timestamp = None;
    let mut tag = None;
    for element in header.split(',') {
        let Some((name, value)) = element.split_once('=') else {
            return Err(malformed(format!(
                "element {:?} is not of the form name=value",
                element
            )));
        };
        match name {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("t= appears more than once".to_owned()));
                }
                timestamp = Some(parse_timestamp(value)?);
            }
            "v1" => {
                if tag.is_some() {
                    return Err(malformed("v1= appears more than once".to_owned()));
                }
                tag = Some(parse_tag(value)?);
            }
            other => {
                return Err(malformed(format!(
                    "unknown element {other:?}, expected only t= and v1="
                )));
            }
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("missing t=".to_owned()))?;
    let tag = tag.ok_or_else(|| malformed("missing v1=".to_owned()))?;
    Ok(ParsedHeader { timestamp, tag })
}

fn parse_timestamp(value: &str) -> Result<u64, VerifyError> {
    // `u64::from_str` alone would also accept a leading `+`.
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(VerifyError::Malformed(format!(
            "t={value:?} is not a decimal number of seconds"
        )));
    }
    value
        .parse()
        .map_err(|_| VerifyError::Malformed(format!("t={value} is larger than a 64-bit timestamp")))
}

fn parse_tag(value: &str) -> Result<[u8; TAG_LEN], VerifyError> {
    let lowercase_hex = value
        .bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if value.len() != 2 * TAG_LEN || !lowercase_hex {
        return Err(VerifyError::Malformed(format!(
            "v1 must be {} lowercase hex digits, found {} characters{}",
            2 * TAG_LEN,
            value.chars().count(),
            if lowercase_hex {
                ""
            } else {
                " with other characters than 0-9 and a-f"
            }
        )));
    }
    let mut tag = [0u8; TAG_LEN];
    hex::decode_to_slice(value, &mut tag)
        .map_err(|err| VerifyError::Malformed(format!("v1 is not valid hex: {err}")))?;
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const NOW: u64 = 1_767_225_600;

    fn secret() -> Secret {
        Secret::new(b"whsec-test-0123456789abcdef".to_vec())
    }

    #[test]
    fn sign_verify_round_trip() {
        let body = br#"{"text":"hello"}"#;
        let header = sign(&secret(), NOW, body);
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(header.len(), format!("t={NOW},v1=").len() + 64);
        assert_eq!(verify(&secret(), &header, body, NOW, 300), Ok(()));
    }

    #[test]
    fn sign_verify_empty_body() {
        let header = sign(&secret(), NOW, b"");
        assert_eq!(verify(&secret(), &header, b"", NOW, 0), Ok(()));
    }

    #[test]
    fn tampered_body_mismatch() {
        let header = sign(&secret(), NOW, b"{\"risk\":80}");
        assert_eq!(
            verify(&secret(), &header, b"{\"risk\":10}", NOW, 300),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn wrong_secret_mismatch() {
        let header = sign(&secret(), NOW, b"body");
        let other = Secret::new(b"whsec-other-0123456789abcdef".to_vec());
        assert_eq!(
            verify(&other, &header, b"body", NOW, 300),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn tampered_timestamp_mismatch() {
        let header = sign(&secret(), NOW, b"body");
        let moved = header.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(
            verify(&secret(), &moved, b"body", NOW, 300),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stale_timestamp_rejected() {
        let header = sign(&secret(), NOW - 301, b"body");
        let err = verify(&secret(), &header, b"body", NOW, 300).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Stale {
                timestamp: NOW - 301,
                now: NOW,
                tolerance: 300
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "stale timestamp: t={} is 301 s in the past, more than the tolerance of 300 s",
                NOW - 301
            )
        );
    }

    #[test]
    fn future_timestamp_rejected() {
        let header = sign(&secret(), NOW + 301, b"body");
        let err = verify(&secret(), &header, b"body", NOW, 300).unwrap_err();
        assert!(matches!(err, VerifyError::Stale { .. }));
        assert!(err.to_string().contains("301 s in the future"), "{err}");
    }

    #[test]
    fn timestamp_at_tolerance_accepted() {
        let past = sign(&secret(), NOW - 300, b"body");
        let future = sign(&secret(), NOW + 300, b"body");
        assert_eq!(verify(&secret(), &past, b"body", NOW, 300), Ok(()));
        assert_eq!(verify(&secret(), &future, b"body", NOW, 300), Ok(()));
    }

    #[test]
    fn timestamp_near_u64_limits() {
        let header = sign(&secret(), u64::MAX, b"body");
        assert!(matches!(
            verify(&secret(), &header, b"body", 0, 300),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(verify(&secret(), &header, b"body", u64::MAX, 0), Ok(()));
    }

    #[test]
    fn malformed_headers_rejected() {
        let valid = sign(&secret(), NOW, b"body");
        let tag = valid.split_once(",v1=").unwrap().1.to_owned();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "not of the form name=value"),
            (format!("t={NOW}"), "missing v1="),
            (format!("v1={tag}"), "missing t="),
            (format!("t={NOW},"), "not of the form name=value"),
            (format!("t={NOW};v1={tag}"), "not a decimal number"),
            (format!("t={NOW}, v1={tag}"), "unknown element \" v1\""),
            (
                format!("t={NOW},v1={tag},v1={tag}"),
                "v1= appears more than once",
            ),
            (
                format!("t={NOW},t={NOW},v1={tag}"),
                "t= appears more than once",
            ),
            (format!("t={NOW},v1={tag},v0=abc"), "unknown element \"v0\""),
            (format!("t=+{NOW},v1={tag}"), "not a decimal number"),
            (format!("t=-1,v1={tag}"), "not a decimal number"),
            (format!("t=,v1={tag}"), "not a decimal number"),
            (
                format!("t=99999999999999999999,v1={tag}"),
                "larger than a 64-bit",
            ),
            (format!("t={NOW},v1={}", &tag[..62]), "found 62 characters"),
            (format!("t={NOW},v1={tag}00"), "found 66 characters"),
            (
                format!("t={NOW},v1={}", tag.to_uppercase()),
                "other characters than 0-9 and a-f",
            ),
            (format!("t={NOW},v1={}zz", &tag[..62]), "other characters"),
            (format!("t={NOW},v1={}é", &tag[..62]), "other characters"),
            (
                "t=1,v1=".to_owned() + &"a".repeat(10_000),
                "10007 bytes long",
            ),
        ];
        for (header, expected) in cases {
            let err = verify(&secret(), &header, b"body", NOW, 300).unwrap_err();
            assert!(
                matches!(err, VerifyError::Malformed(_)),
                "{header:?} gave {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(expected),
                "{header:?} gave {message:?}, expected it to contain {expected:?}"
            );
        }
    }

    #[test]
    fn huge_header_message_is_short() {
        let header = "x".repeat(1 << 20);
        let err = verify(&secret(), &header, b"body", NOW, 300).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn errors_never_contain_secret() {
        let secret = secret();
        let header = sign(&secret, NOW - 1000, b"body");
        let errors = [
            verify(&secret, &header, b"body", NOW, 300).unwrap_err(),
            verify(&secret, &sign(&secret, NOW, b"x"), b"body", NOW, 300).unwrap_err(),
            verify(&secret, "t=1", b"body", NOW, 300).unwrap_err(),
        ];
        for err in errors {
            let text = format!("{err} {err:?}");
            assert!(!text.contains("whsec"), "{text}");
        }
    }

    /// Computes the HMAC with Python's `hmac` module, an implementation
    /// independent of aws-lc-rs.
    fn python_hmac_sha256(key: &[u8], message: &[u8]) -> String {
        let script = "import hmac, hashlib, sys\n\
                      key = bytes.fromhex(sys.argv[1])\n\
                      message = bytes.fromhex(sys.argv[2])\n\
                      print(hmac.new(key, message, hashlib.sha256).hexdigest())";
        let output = Command::new("python3")
            .args(["-c", script, &hex::encode(key), &hex::encode(message)])
            .output()
            .expect("python3 must be installed to run this test");
        assert!(
            output.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Computes the HMAC with the `openssl dgst` command.
    fn openssl_hmac_sha256(key: &str, message: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", key, "-r"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl must be installed to run this test");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        // `-r` prints "<hex> *stdin".
        let text = String::from_utf8(output.stdout).unwrap();
        text.split_whitespace().next().unwrap().to_owned()
    }

    #[test]
    fn hmac_matches_python() {
        let key = b"whsec-python-check";
        let body = "{\"text\":\"Approval requested: `DELETE /orders/42` é\"}".as_bytes();
        let timestamp = 1_700_000_000;
        let header = sign(&Secret::new(key.to_vec()), timestamp, body);
        let mut message = b"1700000000.".to_vec();
        message.extend_from_slice(body);
        let expected = python_hmac_sha256(key, &message);
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn hmac_matches_openssl() {
        let key = "whsec-openssl-check";
        let body = b"{\"approval_id\":\"ap_1\"}\n";
        let header = sign(&Secret::new(key.as_bytes().to_vec()), 42, body);
        let mut message = b"42.".to_vec();
        message.extend_from_slice(body);
        let expected = openssl_hmac_sha256(key, &message);
        assert_eq!(header, format!("t=42,v1={expected}"));
    }

    #[test]
    fn hmac_fixed_vector() {
        // Printed by Python 3.11:
        // hmac.new(b"key", b"0.", hashlib.sha256).hexdigest()
        let expected = "85841b4efc3cd7776c3c8f9b7cca9e281c550e5d19889d78e9e669c6337f000d";
        let header = sign(&Secret::new(b"key".to_vec()), 0, b"");
        assert_eq!(header, format!("t=0,v1={expected}"));
        assert_eq!(
            verify(&Secret::new(b"key".to_vec()), &header, b"", 0, 0),
            Ok(())
        );
    }
}
