//! stepgate engine
