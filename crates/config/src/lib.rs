//! stepgate config
