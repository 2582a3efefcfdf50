//! stepgate audit
