use std::sync::Arc;
use std::thread;

use stepgate_audit::{Entry, Event};
use stepgate_core::{ApiToken, Identity, IdentityName, Timestamp};

use super::*;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

fn admin(detail: &str) -> Entry {
    let mut entry = Entry::new(Event::Admin, Timestamp::from_secs(1));
    entry.detail = Some(detail.to_owned());
    entry
}

fn add_bot(store: &SqliteStore) -> IdentityName {
    let name = IdentityName::new("bot").unwrap();
    let identity = Identity {
        name: name.clone(),
        disabled: false,
        created_at: Timestamp::from_secs(1),
    };
    store
        .add_identity(&identity, admin("identity add bot"))
        .unwrap();
    name
}

fn audit_rows(store: &SqliteStore) -> Vec<(u64, String, String)> {
    let mut rows = Vec::new();
    store
        .scan_audit(&mut |seq, record, hash| {
            rows.push((seq, record.to_owned(), hash.to_owned()));
            true
        })
        .unwrap();
    rows
}

#[test]
fn admin_changes_are_audited_and_raise_revision() {
    let (_dir, store) = open();
    assert_eq!(store.revision().unwrap(), 0);
    let name = add_bot(&store);
    let token = ApiToken::generate();
    let record = TokenRecord {
        id: token.id().clone(),
        identity: name.clone(),
        hash: token.hash(),
        created_at: Timestamp::from_secs(2),
        revoked_at: None,
    };
    store.add_token(&record, admin("token issue")).unwrap();
    assert_eq!(store.revision().unwrap(), 2);
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.identities.len(), 1);
    assert_eq!(snapshot.tokens, vec![record]);
    let rows = audit_rows(&store);
    assert_eq!(rows.len(), 2);
    let verified =
        stepgate_audit::verify(rows.iter().map(|(s, r, h)| (*s, r.as_str(), h.as_str()))).unwrap();
    assert_eq!(verified.records, 2);
}

#[test]
fn failed_change_writes_no_audit() {
    let (_dir, store) = open();
    add_bot(&store);
    let duplicate = Identity {
        name: IdentityName::new("bot").unwrap(),
        disabled: false,
        created_at: Timestamp::from_secs(1),
    };
    let err = store.add_identity(&duplicate, admin("again")).unwrap_err();
    assert!(matches!(err, StoreError::IdentityExists(_)));
    assert_eq!(audit_rows(&store).len(), 1);
    let missing = IdentityName::new("ghost").unwrap();
    let err = store
        .set_identity_disabled(&missing, true, admin("x"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity ghost not found: list identities with `stepgate identity list`"
    );
}

#[test]
fn totp_step_advances_once() {
    let (_dir, store) = open();
    let name = add_bot(&store);
    let factor = TotpRecord::new(
        name.clone(),
        vec![1; 20],
        "SHA1".into(),
        6,
        30,
        Timestamp::from_secs(3),
    );
    store.enroll_totp(&factor, admin("enroll")).unwrap();
    assert!(store.advance_totp_step(&name, 100).unwrap());
    assert!(!store.advance_totp_step(&name, 100).unwrap());
    assert!(!store.advance_totp_step(&name, 99).unwrap());
    assert!(store.advance_totp_step(&name, 101).unwrap());
    assert_eq!(store.snapshot().unwrap().totp[0].last_step, Some(101));
}

#[test]
fn concurrent_step_advance_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let name = add_bot(&store);
    let factor = TotpRecord::new(
        name.clone(),
        vec![1; 20],
        "SHA1".into(),
        6,
        30,
        Timestamp::from_secs(3),
    );
    store.enroll_totp(&factor, admin("enroll")).unwrap();
    // A second connection to the same file stands in for a second process.
    let other = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            let name = name.clone();
            thread::spawn(move || store.advance_totp_step(&name, 500).unwrap())
        })
        .collect();
    let winners = handles
        .into_iter()
        .filter(|_| true)
        .map(|h| h.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1);
}

#[test]
fn totp_debug_hides_secret() {
    let factor = TotpRecord::new(
        IdentityName::new("bot").unwrap(),
        b"supersecretbytes".to_vec(),
        "SHA1".into(),
        6,
        30,
        Timestamp(0),
    );
    assert!(!format!("{factor:?}").contains("supersecret"));
}

#[test]
fn audit_chain_spans_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).unwrap();
    let second = SqliteStore::open(dir.path()).unwrap();
    first.append_audit(vec![admin("a"), admin("b")]).unwrap();
    second.append_audit(vec![admin("c")]).unwrap();
    first.append_audit(vec![admin("d")]).unwrap();
    let rows = audit_rows(&first);
    let verified =
        stepgate_audit::verify(rows.iter().map(|(s, r, h)| (*s, r.as_str(), h.as_str()))).unwrap();
    assert_eq!(verified.records, 4);
}

#[test]
fn baselines_round_trip() {
    let (_dir, store) = open();
    let name = IdentityName::new("bot").unwrap();
    store
        .save_baselines(&[(name.clone(), stepgate_risk::Baseline::default())])
        .unwrap();
    assert_eq!(store.load_baselines().unwrap().len(), 1);
}
