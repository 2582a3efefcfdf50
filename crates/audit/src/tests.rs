use stepgate_core::{Signal, SignalKind, Timestamp};

use super::*;

fn sealed_chain(count: u64) -> Vec<Sealed> {
    let mut chain = Chain::default();
    (0..count)
        .map(|i| {
            let mut entry =
                Entry::new(Event::Allow, Timestamp::from_secs(1_700_000_000 + i as i64));
            entry.identity = Some("ci-bot".into());
            entry.signals = vec![Signal {
                kind: SignalKind::NewNetwork,
                weight: 40,
                reason: format!("reason {i}"),
                evidence: [(
                    "value".to_owned(),
                    serde_json::json!(format!("10.0.{i}.0/24")),
                )]
                .into_iter()
                .collect(),
            }];
            chain.seal(entry).unwrap()
        })
        .collect()
}

fn rows(sealed: &[Sealed]) -> Vec<(u64, &str, &str)> {
    sealed
        .iter()
        .map(|s| (s.seq, s.canonical.as_str(), s.hash.as_str()))
        .collect()
}

#[test]
fn intact_chain_verifies() {
    let sealed = sealed_chain(5);
    let verified = verify(rows(&sealed)).unwrap();
    assert_eq!(verified.records, 5);
    assert_eq!(verified.last_hash, sealed[4].hash);
}

#[test]
fn first_record_links_to_genesis() {
    let sealed = sealed_chain(2);
    let first: Record = serde_json::from_str(&sealed[0].canonical).unwrap();
    assert_eq!(first.prev_hash, GENESIS_HASH);
    let second: Record = serde_json::from_str(&sealed[1].canonical).unwrap();
    assert_eq!(second.prev_hash, sha256_hex(sealed[0].canonical.as_bytes()));
}

#[test]
fn altered_byte_names_record() {
    let mut sealed = sealed_chain(5);
    sealed[2].canonical = sealed[2].canonical.replace("reason 2", "reason 7");
    assert_eq!(
        verify(rows(&sealed)).unwrap_err(),
        ChainError::HashMismatch { seq: 3 }
    );
}

#[test]
fn rehashed_record_breaks_next_link() {
    let mut sealed = sealed_chain(5);
    sealed[2].canonical = sealed[2].canonical.replace("reason 2", "reason 7");
    sealed[2].hash = sha256_hex(sealed[2].canonical.as_bytes());
    assert_eq!(
        verify(rows(&sealed)).unwrap_err(),
        ChainError::BrokenLink {
            seq: 4,
            previous: 3
        }
    );
}

#[test]
fn removed_record_detected() {
    let mut sealed = sealed_chain(5);
    sealed.remove(1);
    assert_eq!(
        verify(rows(&sealed)).unwrap_err(),
        ChainError::Gap {
            seq: 3,
            expected: 2
        }
    );
}

#[test]
fn non_canonical_whitespace_detected() {
    let mut sealed = sealed_chain(2);
    sealed[1].canonical = sealed[1].canonical.replacen(',', ", ", 1);
    sealed[1].hash = sha256_hex(sealed[1].canonical.as_bytes());
    assert_eq!(
        verify(rows(&sealed)).unwrap_err(),
        ChainError::HashMismatch { seq: 2 }
    );
}

#[test]
fn chain_continues_after_restart() {
    let sealed = sealed_chain(3);
    let mut chain = Chain::after(3, sealed[2].hash.clone());
    let next = chain
        .seal(Entry::new(Event::Deny, Timestamp::from_secs(5)))
        .unwrap();
    let mut all = sealed.clone();
    all.push(next);
    assert_eq!(verify(rows(&all)).unwrap().records, 4);
}
