//! Feeds random bytes and mutated captures through both decoders and the
//! startup state machine with fixed seeds. Nothing may panic, and every
//! message that decodes must encode back to exactly the bytes it came from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::XorShift;
use stepgate_pg::startup::{ServerStartup, StartupConfig, StartupStep};
use stepgate_pg::{BackendDecoder, FrontendDecoder, StartupPacket};

const ITERATIONS: usize = 3000;

const CAPTURES: &[&str] = &[
    "psql-login.pcap",
    "psql-select-now.pcap",
    "psql-login-wrong.pcap",
    "psql-login-no-sslrequest.pcap",
    "psql-aws-ssl-disable.pcap",
    "psql-aws-ssl-require.pcap",
    "psql-create-insert-select-delete-drop.pcap",
    "psql-insert-fail-drop-fail.pcap",
    "bad-startup-message-1.pcap",
    "bad-backend-message-1.pcap",
    "mysql-on-port-5432.pcap",
];

/// Client and server byte streams of every capture.
fn corpus() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for name in CAPTURES {
        for connection in common::capture(name) {
            clients.push(connection.client_to_server);
            servers.push(connection.server_to_client);
        }
    }
    (clients, servers)
}

/// Applies one to four random edits: flipped bits, overwritten bytes,
/// insertions, deletions, small numbers written over possible length words,
/// and truncation.
fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes = rng.bytes_below(16);
            continue;
        }
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.byte(),
            2 => {
                let insert = rng.bytes_below(8);
                bytes.splice(at..at, insert);
            }
            3 => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at..end);
            }
            4 => {
                let value = i32::try_from(rng.below(64)).unwrap() - 8;
                let end = (at + 4).min(bytes.len());
                let word = value.to_be_bytes();
                bytes[at..end].copy_from_slice(&word[..end - at]);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn random_input(rng: &mut XorShift) -> Vec<u8> {
    let mut bytes = Vec::new();
    if rng.chance(2) {
        // A plausible header makes the decoder look past the first byte.
        bytes.push(
            *b"QPBDESHCXdcfpFRKZTDIEN123ntsGHWAVv"
                .get(rng.below(34))
                .unwrap(),
        );
        let length = i32::try_from(rng.below(40)).unwrap();
        bytes.extend_from_slice(&length.to_be_bytes());
    }
    bytes.extend(rng.bytes_below(120));
    bytes
}

/// Appends `input` to a buffer in random chunks and runs `step` after each
/// chunk until it reports that decoding stopped.
fn feed_in_chunks(rng: &mut XorShift, input: &[u8], mut step: impl FnMut(&mut BytesMut) -> bool) {
    let mut buf = BytesMut::new();
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + 1 + rng.below(64)).min(input.len());
        buf.extend_from_slice(&input[offset..end]);
        offset = end;
        if !step(&mut buf) {
            return;
        }
    }
}

/// Returns the number of packets and messages decoded.
fn run_frontend(rng: &mut XorShift, decoder: FrontendDecoder, input: &[u8]) -> usize {
    let mut in_startup = true;
    let mut decoded = 0;
    feed_in_chunks(rng, input, |buf| {
        loop {
            let before = buf.clone();
            let mut encoded = BytesMut::new();
            if in_startup {
                match decoder.decode_startup(buf) {
                    Ok(Some(packet)) => {
                        in_startup = matches!(
                            packet,
                            StartupPacket::SslRequest | StartupPacket::GssEncRequest
                        );
                        packet.encode(&mut encoded).unwrap();
                    }
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            } else {
                match decoder.decode(buf) {
                    Ok(Some(message)) => message.encode(&mut encoded).unwrap(),
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            }
            assert_eq!(&encoded[..], &before[..before.len() - buf.len()]);
            decoded += 1;
        }
    });
    decoded
}

/// Returns the number of messages decoded.
fn run_backend(rng: &mut XorShift, decoder: BackendDecoder, input: &[u8]) -> usize {
    let mut decoded = 0;
    feed_in_chunks(rng, input, |buf| {
        loop {
            let before = buf.clone();
            match decoder.decode(buf) {
                Ok(Some(message)) => {
                    let mut encoded = BytesMut::new();
                    message.encode(&mut encoded).unwrap();
                    assert_eq!(&encoded[..], &before[..before.len() - buf.len()]);
                    decoded += 1;
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    });
    decoded
}

fn run_startup(rng: &mut XorShift, tls_available: bool, input: &[u8]) {
    let mut startup = ServerStartup::new(StartupConfig {
        tls_available,
        ..StartupConfig::default()
    });
    let mut output = BytesMut::new();
    feed_in_chunks(rng, input, |buf| {
        startup.feed(buf);
        buf.clear();
        match startup.advance(&mut output) {
            Ok(StartupStep::NeedMore) => true,
            Ok(StartupStep::StartTls(upgrade)) => startup.tls_established(upgrade).is_ok(),
            Ok(_) | Err(_) => false,
        }
    });
}

fn decoders(rng: &mut XorShift) -> (FrontendDecoder, BackendDecoder) {
    // A small maximum now and then exercises the length limit.
    let max = if rng.chance(4) { 64 } else { 64 * 1024 * 1024 };
    (FrontendDecoder::new(max), BackendDecoder::new(max))
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift::new(0xf022_0001);
    for _ in 0..ITERATIONS {
        let input = random_input(&mut rng);
        let (frontend, backend) = decoders(&mut rng);
        run_frontend(&mut rng, frontend, &input);
        run_backend(&mut rng, backend, &input);
        let tls_available = rng.chance(2);
        run_startup(&mut rng, tls_available, &input);
    }
}

#[test]
fn mutated_captures_never_panic() {
    let (clients, servers) = corpus();
    let mut rng = XorShift::new(0xf022_0002);
    let mut decoded = 0;
    for _ in 0..ITERATIONS {
        let (frontend, backend) = decoders(&mut rng);
        let pick = rng.below(clients.len());
        let client = mutate(&mut rng, &clients[pick]);
        decoded += run_frontend(&mut rng, frontend, &client);
        let tls_available = rng.chance(2);
        run_startup(&mut rng, tls_available, &client);
        let pick = rng.below(servers.len());
        let server = mutate(&mut rng, &servers[pick]);
        decoded += run_backend(&mut rng, backend, &server);
    }
    // Most edits leave the messages before them intact.
    assert!(decoded > ITERATIONS * 2, "only {decoded} messages decoded");
}

/// Unmutated captures, read in random chunks, decode the same number of
/// messages each time and round-trip all of them.
#[test]
fn captures_in_random_chunks() {
    let (clients, servers) = corpus();
    let mut rng = XorShift::new(0xf022_0003);
    let count_all = |rng: &mut XorShift| {
        let mut counts = Vec::new();
        for client in &clients {
            counts.push(run_frontend(rng, FrontendDecoder::default(), client));
        }
        for server in &servers {
            counts.push(run_backend(rng, BackendDecoder::default(), server));
        }
        counts
    };
    let expected = count_all(&mut rng);
    for _ in 0..20 {
        assert_eq!(count_all(&mut rng), expected);
    }
}
