//! Password checks in place of SASLprep; the crate documentation explains
//! the choice.

use crate::Error;

/// Checks that `password` is non-empty printable ASCII and returns its bytes,
/// which are then the SASLprep output that PostgreSQL also computes.
pub(crate) fn prepare(password: &str) -> Result<&[u8], Error> {
    if password.is_empty() {
        return Err(Error::UnsupportedPassword("the password is empty"));
    }
    if !password.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
        return Err(Error::UnsupportedPassword(
            "only printable ASCII characters (0x20 to 0x7E) are supported, \
             because SASLprep of other characters is not implemented",
        ));
    }
    Ok(password.as_bytes())
}
