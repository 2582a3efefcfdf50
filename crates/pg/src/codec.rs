//! Field-level reading and writing shared by both directions, and the
//! framing of typed messages.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, Direction, EncodeError, Framing, TypeByte};

/// Length word plus type byte.
const HEADER_BYTES: usize = 5;

/// Splits one typed message (type byte, Int32 length, body) off the front of
/// `buf`. Returns `Ok(None)` until the whole message has arrived. The type
/// byte is checked as soon as it arrives and the length as soon as its four
/// bytes arrive, so an unknown type or an oversized length fails before the
/// body is waited for.
pub(crate) fn split_message(
    buf: &mut BytesMut,
    direction: Direction,
    is_known: fn(u8) -> bool,
    max_message_bytes: usize,
) -> Result<Option<(u8, Bytes)>, DecodeError> {
    let Some(&type_byte) = buf.first() else {
        return Ok(None);
    };
    if !is_known(type_byte) {
        return Err(DecodeError::UnknownMessageType {
            direction,
            type_byte: TypeByte(type_byte),
        });
    }
    let Some(length) = peek_length(buf, 1) else {
        return Ok(None);
    };
    let framing = Framing::Message(TypeByte(type_byte));
    let length = check_length(framing, length, 4, max_message_bytes)?;
    // `length` is at most `max_message_bytes`, a usize, so adding the type
    // byte can only overflow for a max of usize::MAX.
    let total = length.checked_add(1).ok_or(DecodeError::TooLong {
        framing,
        length,
        max: max_message_bytes,
    })?;
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(HEADER_BYTES);
    Ok(Some((type_byte, frame)))
}

/// Reads the big-endian Int32 at `offset`, if the buffer reaches that far.
pub(crate) fn peek_length(buf: &[u8], offset: usize) -> Option<i32> {
    let end = offset.checked_add(4)?;
    let bytes: [u8; 4] = buf.get(offset..end)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// Checks a length word against its minimum and the configured maximum and
/// returns it as a usize.
pub(crate) fn check_length(
    framing: Framing,
    length: i32,
    min: usize,
    max: usize,
) -> Result<usize, DecodeError> {
    let too_small = DecodeError::LengthTooSmall {
        framing,
        length,
        min,
    };
    let length = usize::try_from(length).map_err(|_| too_small.clone())?;
    if length < min {
        return Err(too_small);
    }
    if length > max {
        return Err(DecodeError::TooLong {
            framing,
            length,
            max,
        });
    }
    Ok(length)
}

/// A cursor over one message body. Every read checks the remaining length
/// first and names the message and field in its error.
pub(crate) struct Reader {
    body: Bytes,
    message: &'static str,
}

impl Reader {
    pub(crate) fn new(message: &'static str, body: Bytes) -> Self {
        Reader { body, message }
    }

    fn need(&self, field: &'static str, needed: usize) -> Result<(), DecodeError> {
        if self.body.len() < needed {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                needed,
                remaining: self.body.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(field, 1)?;
        Ok(self.body.get_u8())
    }

    pub(crate) fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        self.need(field, 1)?;
        Ok(self.body.get_i8())
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.need(field, 2)?;
        Ok(self.body.get_i16())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(field, 2)?;
        Ok(self.body.get_u16())
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.need(field, 4)?;
        Ok(self.body.get_i32())
    }

    /// Reads an Int32 that carries an object identifier, which PostgreSQL
    /// treats as unsigned.
    pub(crate) fn oid(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(field, 4)?;
        Ok(self.body.get_u32())
    }

    pub(crate) fn bytes(&mut self, field: &'static str, len: usize) -> Result<Bytes, DecodeError> {
        self.need(field, len)?;
        Ok(self.body.split_to(len))
    }

    /// Takes every remaining byte.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.body.split_to(self.body.len())
    }

    /// Reads a NUL-terminated UTF-8 string and consumes the terminator.
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let Some(end) = self.body.iter().position(|&byte| byte == 0) else {
            return Err(DecodeError::MissingNul {
                message: self.message,
                field,
            });
        };
        let raw = self.body.split_to(end);
        self.body.advance(1);
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
        })
    }

    /// Reads an Int16 count of elements that take at least `min_element_bytes`
    /// each, and checks that the body can hold them before anything is
    /// allocated for them.
    pub(crate) fn count16(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let value = self.i16(field)?;
        self.check_count(field, i32::from(value), min_element_bytes)
    }

    /// Reads a 16-bit count that PostgreSQL treats as unsigned: the number
    /// of parameters, parameter types and format codes in Parse, Bind,
    /// FunctionCall and ParameterDescription. libpq sends up to 65535
    /// parameters, so reading these as signed would reject valid messages.
    pub(crate) fn count_u16(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = usize::from(self.u16(field)?);
        self.need(field, count.saturating_mul(min_element_bytes))?;
        Ok(count)
    }

    /// Like [`Reader::count16`] for an Int32 count.
    pub(crate) fn count32(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let value = self.i32(field)?;
        self.check_count(field, value, min_element_bytes)
    }

    fn check_count(
        &self,
        field: &'static str,
        value: i32,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = usize::try_from(value).map_err(|_| DecodeError::NegativeCount {
            message: self.message,
            field,
            value,
        })?;
        let needed = count.saturating_mul(min_element_bytes);
        self.need(field, needed)?;
        Ok(count)
    }

    /// Reads an Int32 length followed by that many bytes; length -1 is NULL.
    pub(crate) fn nullable(&mut self, field: &'static str) -> Result<Option<Bytes>, DecodeError> {
        let length = self.i32(field)?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| DecodeError::NegativeLength {
            message: self.message,
            field,
            value: length,
        })?;
        self.bytes(field, length).map(Some)
    }

    /// Fails if any byte is left after the last field.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                count: self.body.len(),
            })
        }
    }
}

/// Checks the rule shared by Bind and FunctionCall: zero format codes (all
/// text), one (applies to all values) or one per value.
pub(crate) fn format_count_matches(formats: usize, values: usize) -> bool {
    formats <= 1 || formats == values
}

/// Writes one message body. Created by [`encode_frame`], which fills in the
/// length word once the body is written.
pub(crate) struct Writer<'a> {
    buf: &'a mut BytesMut,
    message: &'static str,
}

impl Writer<'_> {
    pub(crate) fn u8(&mut self, value: u8) {
        self.buf.put_u8(value);
    }

    pub(crate) fn i8(&mut self, value: i8) {
        self.buf.put_i8(value);
    }

    pub(crate) fn i16(&mut self, value: i16) {
        self.buf.put_i16(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.buf.put_u16(value);
    }

    pub(crate) fn i32(&mut self, value: i32) {
        self.buf.put_i32(value);
    }

    pub(crate) fn oid(&mut self, value: u32) {
        self.buf.put_u32(value);
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.buf.put_slice(value);
    }

    /// Writes a string and its NUL terminator. A NUL inside the string is an
    /// error because the reader would split the string there.
    pub(crate) fn cstr(&mut self, field: &'static str, value: &str) -> Result<(), EncodeError> {
        if value.as_bytes().contains(&0) {
            return Err(EncodeError::NulInString {
                message: self.message,
                field,
            });
        }
        self.buf.put_slice(value.as_bytes());
        self.buf.put_u8(0);
        Ok(())
    }

    /// Writes a string that must not be empty because an empty string ends
    /// the list it belongs to.
    pub(crate) fn nonempty_cstr(
        &mut self,
        field: &'static str,
        value: &str,
    ) -> Result<(), EncodeError> {
        if value.is_empty() {
            return Err(EncodeError::EmptyString {
                message: self.message,
                field,
            });
        }
        self.cstr(field, value)
    }

    pub(crate) fn count16(&mut self, field: &'static str, count: usize) -> Result<(), EncodeError> {
        let value = i16::try_from(count).map_err(|_| EncodeError::TooManyElements {
            message: self.message,
            field,
            count,
            max: usize::from(i16::MAX.unsigned_abs()),
        })?;
        self.buf.put_i16(value);
        Ok(())
    }

    /// Writes a count that PostgreSQL reads as unsigned 16-bit; see
    /// [`Reader::count_u16`].
    pub(crate) fn count_u16(
        &mut self,
        field: &'static str,
        count: usize,
    ) -> Result<(), EncodeError> {
        let value = u16::try_from(count).map_err(|_| EncodeError::TooManyElements {
            message: self.message,
            field,
            count,
            max: usize::from(u16::MAX),
        })?;
        self.buf.put_u16(value);
        Ok(())
    }

    pub(crate) fn count32(&mut self, field: &'static str, count: usize) -> Result<(), EncodeError> {
        let value = i32::try_from(count).map_err(|_| EncodeError::TooManyElements {
            message: self.message,
            field,
            count,
            max: i32_max(),
        })?;
        self.buf.put_i32(value);
        Ok(())
    }

    /// Writes an Int32 length and the bytes, or -1 for NULL.
    pub(crate) fn nullable(&mut self, value: Option<&Bytes>) -> Result<(), EncodeError> {
        match value {
            None => self.buf.put_i32(-1),
            Some(bytes) => {
                let length = i32::try_from(bytes.len()).map_err(|_| EncodeError::TooLong {
                    message: self.message,
                    length: bytes.len(),
                    max: i32_max(),
                })?;
                self.buf.put_i32(length);
                self.buf.put_slice(bytes);
            }
        }
        Ok(())
    }

    pub(crate) fn check_formats(&self, formats: usize, values: usize) -> Result<(), EncodeError> {
        if format_count_matches(formats, values) {
            Ok(())
        } else {
            Err(EncodeError::FormatCountMismatch {
                message: self.message,
                formats,
                values,
            })
        }
    }

    pub(crate) fn invalid(&self, field: &'static str, value: i64) -> EncodeError {
        EncodeError::InvalidValue {
            message: self.message,
            field,
            value,
        }
    }
}

fn i32_max() -> usize {
    usize::try_from(i32::MAX).unwrap_or(usize::MAX)
}

/// Appends one frame to `buf`: the type byte if given, an Int32 length that
/// counts itself and the body, then the body that `write_body` produces. On
/// any error `buf` is truncated back to its previous length, so a failed
/// encode never leaves a partial frame behind.
pub(crate) fn encode_frame(
    buf: &mut BytesMut,
    type_byte: Option<u8>,
    message: &'static str,
    write_body: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = write_frame(buf, type_byte, message, write_body);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn write_frame(
    buf: &mut BytesMut,
    type_byte: Option<u8>,
    message: &'static str,
    write_body: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    if let Some(type_byte) = type_byte {
        buf.put_u8(type_byte);
    }
    let length_at = buf.len();
    buf.put_i32(0);
    write_body(&mut Writer {
        buf: &mut *buf,
        message,
    })?;
    let length = buf.len() - length_at;
    let length_word = i32::try_from(length).map_err(|_| EncodeError::TooLong {
        message,
        length,
        max: i32_max(),
    })?;
    buf[length_at..length_at + 4].copy_from_slice(&length_word.to_be_bytes());
    Ok(())
}
