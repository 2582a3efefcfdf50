//! RFC 4648 base32 with the standard alphabet `A`-`Z`, `2`-`7`.
//!
//! [`encode`] writes uppercase symbols without `=` padding, the form used in
//! `otpauth://` URIs. [`decode`] accepts what people type or paste: lowercase
//! letters, spaces anywhere and optional trailing `=` padding.

use thiserror::Error;
use zeroize::Zeroizing;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Error returned by [`decode`].
///
/// Positions count characters (not bytes) from 0, spaces included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A character outside the base32 alphabet, other than a space or `=`.
    #[error(
        "invalid base32 character {character:?} at position {position} (counting from 0): \
         expected A-Z, a-z, 2-7, spaces or trailing '=' padding"
    )]
    InvalidCharacter { character: char, position: usize },

    /// A base32 symbol after `=` padding.
    #[error(
        "invalid base32 character {character:?} at position {position} (counting from 0): \
         only '=' or spaces may follow '=' padding"
    )]
    DataAfterPadding { character: char, position: usize },

    /// A symbol count that no byte string encodes to.
    #[error(
        "invalid base32 length: {symbols} symbols leave {remainder} in the last group of 8, \
         but only 0, 2, 4, 5 or 7 can occur, so a symbol is missing or extra"
    )]
    InvalidLength { symbols: usize, remainder: usize },
}

/// Encodes `bytes` as uppercase base32 without `=` padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(symbol((buffer >> bits) & 0x1f));
        }
        // Keep only the bits that are not yet encoded, so the shift above
        // never pushes data out of the 16-bit buffer.
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        // The last symbol takes the remaining bits, padded with zero bits.
        out.push(symbol((buffer << (5 - bits)) & 0x1f));
    }
    out
}

/// Decodes base32 text into bytes.
///
/// Letters may be in either case, spaces anywhere are ignored and trailing `=`
/// padding is optional. Any other character is rejected with its position.
/// Unused bits in the last symbol are ignored.
///
/// The output buffer is allocated once and zeroed if decoding fails, because
/// the input is often a secret key.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    let mut symbols: usize = 0;
    let mut in_padding = false;

    for (position, character) in text.chars().enumerate() {
        if character == ' ' {
            continue;
        }
        if character == '=' {
            in_padding = true;
            continue;
        }
        let Some(value) = symbol_value(character) else {
            return Err(DecodeError::InvalidCharacter {
                character,
                position,
            });
        };
        if in_padding {
            return Err(DecodeError::DataAfterPadding {
                character,
                position,
            });
        }
        symbols += 1;
        buffer = (buffer << 5) | u16::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }

    // A final group of 8 symbols encodes 5 bytes, and 1, 2, 3 or 4 trailing
    // bytes encode to 2, 4, 5 or 7 symbols. Other remainders would drop bits.
    let remainder = symbols % 8;
    if matches!(remainder, 1 | 3 | 6) {
        return Err(DecodeError::InvalidLength { symbols, remainder });
    }
    Ok(std::mem::take(&mut *out))
}

fn symbol(value: u16) -> char {
    char::from(ALPHABET[usize::from(value)])
}

fn symbol_value(character: char) -> Option<u8> {
    match character {
        'A'..='Z' => Some(character as u8 - b'A'),
        'a'..='z' => Some(character as u8 - b'a'),
        '2'..='7' => Some(character as u8 - b'2' + 26),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::Rng;

    /// RFC 4648 section 10 test vectors, padded as printed in the RFC.
    const RFC4648_VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "MY======"),
        ("fo", "MZXQ===="),
        ("foo", "MZXW6==="),
        ("foob", "MZXW6YQ="),
        ("fooba", "MZXW6YTB"),
        ("foobar", "MZXW6YTBOI======"),
    ];

    #[test]
    fn encodes_rfc4648_vectors_without_padding() {
        for (plain, padded) in RFC4648_VECTORS {
            assert_eq!(
                encode(plain.as_bytes()),
                padded.trim_end_matches('='),
                "{plain:?}"
            );
        }
    }

    #[test]
    fn decodes_padded_and_unpadded_rfc4648_vectors() {
        for (plain, padded) in RFC4648_VECTORS {
            assert_eq!(decode(padded).unwrap(), plain.as_bytes(), "{padded:?}");
            let unpadded = padded.trim_end_matches('=');
            assert_eq!(decode(unpadded).unwrap(), plain.as_bytes(), "{unpadded:?}");
        }
    }

    #[test]
    fn decode_accepts_lowercase_and_spaces() {
        assert_eq!(decode("mzxw 6ytb oi").unwrap(), b"foobar");
        assert_eq!(decode(" MzXw6YtBoI ====== ").unwrap(), b"foobar");
    }

    #[test]
    fn round_trips_random_byte_strings() {
        let mut rng = rand::rng();
        for len in 0..=80 {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            let encoded = encode(&bytes);
            assert!(!encoded.contains('='), "{encoded}");
            assert_eq!(decode(&encoded).unwrap(), bytes, "length {len}");
            assert_eq!(
                decode(&encoded.to_lowercase()).unwrap(),
                bytes,
                "length {len}"
            );
        }
    }

    #[test]
    fn rejects_characters_outside_alphabet_with_position() {
        let cases = [
            ("MZ1W", '1', 2),
            ("MZXW8", '8', 4),
            ("MZ-XW", '-', 2),
            ("MZ\tXW", '\t', 2),
            ("MZ XW\n", '\n', 5),
            ("éMZ", 'é', 0),
            ("MZXé", 'é', 3),
        ];
        for (text, character, position) in cases {
            assert_eq!(
                decode(text),
                Err(DecodeError::InvalidCharacter {
                    character,
                    position
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn error_message_names_character_and_position() {
        let message = decode("MZ1W").unwrap_err().to_string();
        assert!(message.contains("'1'"), "{message}");
        assert!(message.contains("position 2"), "{message}");
    }

    #[test]
    fn rejects_data_after_padding() {
        assert_eq!(
            decode("MY==MY"),
            Err(DecodeError::DataAfterPadding {
                character: 'M',
                position: 4
            })
        );
    }

    #[test]
    fn rejects_impossible_symbol_counts() {
        for (text, symbols) in [("M", 1), ("MZX", 3), ("MZXW6Y", 6), ("MZXW6YTBO", 9)] {
            assert_eq!(
                decode(text),
                Err(DecodeError::InvalidLength {
                    symbols,
                    remainder: symbols % 8
                }),
                "{text:?}"
            );
        }
    }
}
