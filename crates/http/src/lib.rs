//! stepgate http
