//! stepgate store
