//! Helpers shared by the integration tests.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod pcap;

use std::path::PathBuf;

use bytes::BytesMut;
use stepgate_pg::{BackendDecoder, BackendMessage, FrontendDecoder, FrontendMessage};

/// Ports the captured servers listened on.
pub const SERVER_PORTS: &[u16] = &[5432, 15432];

/// Reads a capture from `testdata/pg-wire` at the repository root.
pub fn capture(name: &str) -> Vec<pcap::Connection> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/pg-wire")
        .join(name);
    let file = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    pcap::read_connections(&file, SERVER_PORTS)
}

/// Decodes every frontend message in `buf`, checks that each one encodes
/// back to exactly the bytes it was decoded from, and fails on leftovers.
pub fn roundtrip_frontend(buf: &mut BytesMut) -> Vec<FrontendMessage> {
    let decoder = FrontendDecoder::default();
    let mut messages = Vec::new();
    while !buf.is_empty() {
        let before = buf.clone();
        let message = decoder
            .decode(buf)
            .unwrap_or_else(|error| panic!("frontend message {}: {error}", messages.len()))
            .unwrap_or_else(|| panic!("incomplete frontend message: {:02x?}", &buf[..]));
        let consumed = &before[..before.len() - buf.len()];
        let mut encoded = BytesMut::new();
        message.encode(&mut encoded).unwrap();
        assert_eq!(&encoded[..], consumed, "re-encoded {message:?}");
        messages.push(message);
    }
    messages
}

/// Like [`roundtrip_frontend`] for backend messages.
pub fn roundtrip_backend(buf: &mut BytesMut) -> Vec<BackendMessage> {
    let decoder = BackendDecoder::default();
    let mut messages = Vec::new();
    while !buf.is_empty() {
        let before = buf.clone();
        let message = decoder
            .decode(buf)
            .unwrap_or_else(|error| panic!("backend message {}: {error}", messages.len()))
            .unwrap_or_else(|| panic!("incomplete backend message: {:02x?}", &buf[..]));
        let consumed = &before[..before.len() - buf.len()];
        let mut encoded = BytesMut::new();
        message.encode(&mut encoded).unwrap();
        assert_eq!(&encoded[..], consumed, "re-encoded {message:?}");
        messages.push(message);
    }
    messages
}

/// Xorshift64 pseudo-random numbers for reproducible fuzz inputs.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Returns a number in `0..bound`; `bound` must be positive.
    pub fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(bound).unwrap()).unwrap()
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// Returns random bytes, fewer than `bound` of them.
    pub fn bytes_below(&mut self, bound: usize) -> Vec<u8> {
        let len = self.below(bound);
        self.bytes(len)
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}
