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
        scram: None,
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

#[test]
fn identity_scram_salt_is_kept() {
    let (_dir, store) = open();
    let bot = add_bot(&store);
    let first = store.identity_scram_salt(&bot, &[1; 16]).unwrap();
    assert_eq!(first, [1; 16]);
    let second = store.identity_scram_salt(&bot, &[2; 16]).unwrap();
    assert_eq!(second, [1; 16]);
    let ghost = IdentityName::new("ghost").unwrap();
    let err = store.identity_scram_salt(&ghost, &[3; 16]).unwrap_err();
    assert!(matches!(err, StoreError::IdentityNotFound(_)), "{err}");
}

mod approvals {
    use std::time::Duration;

    use super::*;
    use crate::{ApprovalRecord, ApprovalState, ApprovalStore, ApproverRecord, Vote, VoteError};

    fn name(text: &str) -> IdentityName {
        IdentityName::new(text).unwrap()
    }

    fn add_approver(store: &SqliteStore, approver: &str) {
        let record = ApproverRecord::new(
            name(approver),
            vec![7; 20],
            "SHA1".into(),
            6,
            30,
            vec!["approvers".into()],
            Timestamp::from_secs(1),
        );
        store.add_approver(&record, admin("approver add")).unwrap();
    }

    fn request(id: &str, quorum: u32) -> ApprovalRecord {
        ApprovalRecord {
            id: id.into(),
            identity: name("bot"),
            operation: "ab".repeat(32),
            method: "DELETE".into(),
            host: "api.example".into(),
            target: "/orders/1".into(),
            body_sha256: None,
            body_preview: None,
            body_bytes: 0,
            action: "delete".into(),
            zone: Some("orders".into()),
            client_addr: "127.0.0.2".into(),
            risk: 40,
            reasons: vec!["new_network: 127.0.0.0/24".into()],
            policies: vec!["zone-approval".into()],
            group: "approvers".into(),
            quorum,
            state: ApprovalState::Pending,
            created_at: Timestamp::from_secs(100),
            expires_at: Timestamp::from_secs(200),
            valid_until: None,
            decided_at: None,
            used_at: None,
            notified_at: None,
            votes: Vec::new(),
        }
    }

    fn vote(approver: &str, approve: bool, at: i64) -> Vote {
        Vote {
            approver: name(approver),
            approve,
            comment: "checked with the team".into(),
            via: "cli".into(),
            at: Timestamp::from_secs(at),
        }
    }

    fn setup() -> (tempfile::TempDir, SqliteStore) {
        let (dir, store) = open();
        add_bot(&store);
        add_approver(&store, "alice");
        add_approver(&store, "bob");
        (dir, store)
    }

    #[test]
    fn approval_round_trips() {
        let (_dir, store) = setup();
        let created = request("ap_1", 1);
        store.create_approval(&created, admin("approval")).unwrap();
        assert_eq!(store.approval("ap_1").unwrap(), Some(created.clone()));
        let pending = store
            .pending_approval(&name("bot"), &created.operation, Timestamp::from_secs(150))
            .unwrap();
        assert_eq!(pending.map(|found| found.id), Some("ap_1".to_owned()));
        let after_expiry = store
            .pending_approval(&name("bot"), &created.operation, Timestamp::from_secs(200))
            .unwrap();
        assert!(after_expiry.is_none());
        assert_eq!(store.approvals(true, 10).unwrap().len(), 1);
    }

    #[test]
    fn quorum_of_two_needs_distinct_approvers() {
        let (_dir, store) = setup();
        store
            .create_approval(&request("ap_2", 2), admin("approval"))
            .unwrap();
        let valid = Duration::from_secs(60);
        let first = store
            .vote("ap_2", &vote("alice", true, 110), valid, admin("vote"))
            .unwrap();
        assert_eq!(first.state, ApprovalState::Pending);
        let again = store.vote("ap_2", &vote("alice", true, 111), valid, admin("vote"));
        assert!(
            matches!(again, Err(VoteError::AlreadyVoted { .. })),
            "{again:?}"
        );
        let second = store
            .vote("ap_2", &vote("bob", true, 120), valid, admin("vote"))
            .unwrap();
        assert_eq!(second.state, ApprovalState::Approved);
        assert_eq!(second.valid_until, Some(Timestamp::from_secs(180)));
        assert_eq!(second.votes.len(), 2);
    }

    #[test]
    fn one_denial_closes_request() {
        let (_dir, store) = setup();
        store
            .create_approval(&request("ap_3", 2), admin("approval"))
            .unwrap();
        let valid = Duration::from_secs(60);
        let denied = store
            .vote("ap_3", &vote("bob", false, 110), valid, admin("vote"))
            .unwrap();
        assert_eq!(denied.state, ApprovalState::Denied);
        let late = store.vote("ap_3", &vote("alice", true, 111), valid, admin("vote"));
        assert!(
            matches!(
                late,
                Err(VoteError::Closed {
                    state: "denied",
                    ..
                })
            ),
            "{late:?}"
        );
        let unknown = store.vote("ap_x", &vote("alice", true, 111), valid, admin("vote"));
        assert!(
            matches!(unknown, Err(VoteError::NotFound(_))),
            "{unknown:?}"
        );
    }

    #[test]
    fn vote_after_expiry_is_rejected() {
        let (_dir, store) = setup();
        store
            .create_approval(&request("ap_4", 1), admin("approval"))
            .unwrap();
        let late = store.vote(
            "ap_4",
            &vote("alice", true, 200),
            Duration::from_secs(60),
            admin("vote"),
        );
        assert!(
            matches!(
                late,
                Err(VoteError::Closed {
                    state: "expired",
                    ..
                })
            ),
            "{late:?}"
        );
    }

    #[test]
    fn approval_changes_raise_revision() {
        let (_dir, store) = setup();
        let start = store.approvals_revision().unwrap();
        store
            .create_approval(&request("ap_8", 1), admin("approval"))
            .unwrap();
        let created = store.approvals_revision().unwrap();
        assert!(created > start);
        store
            .vote(
                "ap_8",
                &vote("alice", true, 110),
                Duration::from_secs(60),
                admin("vote"),
            )
            .unwrap();
        assert!(store.approvals_revision().unwrap() > created);
    }

    #[test]
    fn approver_lockout_is_stored() {
        let (_dir, store) = setup();
        let alice = name("alice");
        let lockout = Duration::from_secs(300);
        for _ in 0..4 {
            let locked = store
                .record_approver_failure(&alice, Timestamp::from_secs(10), 5, lockout)
                .unwrap();
            assert_eq!(locked, None);
        }
        let locked = store
            .record_approver_failure(&alice, Timestamp::from_secs(10), 5, lockout)
            .unwrap();
        assert_eq!(locked, Some(Timestamp::from_secs(310)));
        let record = store.approver(&alice).unwrap().unwrap();
        assert_eq!(record.locked_until, Some(Timestamp::from_secs(310)));
        assert_eq!(record.failures, 0);
        store
            .record_approver_failure(&alice, Timestamp::from_secs(11), 5, lockout)
            .unwrap();
        store.clear_approver_failures(&alice).unwrap();
        assert_eq!(store.approver(&alice).unwrap().unwrap().failures, 0);
    }

    #[test]
    fn released_approval_is_usable_again() {
        let (_dir, store) = setup();
        store
            .create_approval(&request("ap_9", 1), admin("approval"))
            .unwrap();
        store
            .vote(
                "ap_9",
                &vote("alice", true, 110),
                Duration::from_secs(60),
                admin("vote"),
            )
            .unwrap();
        assert!(
            store
                .use_approval("ap_9", Timestamp::from_secs(120))
                .unwrap()
        );
        assert!(store.release_approval("ap_9").unwrap());
        assert!(!store.release_approval("ap_9").unwrap());
        assert!(
            store
                .use_approval("ap_9", Timestamp::from_secs(121))
                .unwrap()
        );
        store
            .mark_notified("ap_9", Timestamp::from_secs(130))
            .unwrap();
        store
            .mark_notified("ap_9", Timestamp::from_secs(140))
            .unwrap();
        let record = store.approval("ap_9").unwrap().unwrap();
        assert_eq!(record.notified_at, Some(Timestamp::from_secs(130)));
        assert_eq!(
            store
                .pending_count(&name("bot"), Timestamp::from_secs(150))
                .unwrap(),
            0
        );
    }

    #[test]
    fn approval_is_used_once() {
        let (_dir, store) = setup();
        store
            .create_approval(&request("ap_5", 1), admin("approval"))
            .unwrap();
        store
            .vote(
                "ap_5",
                &vote("alice", true, 110),
                Duration::from_secs(60),
                admin("vote"),
            )
            .unwrap();
        assert!(
            store
                .use_approval("ap_5", Timestamp::from_secs(120))
                .unwrap()
        );
        assert!(
            !store
                .use_approval("ap_5", Timestamp::from_secs(121))
                .unwrap()
        );
        let used = store.approval("ap_5").unwrap().unwrap();
        assert_eq!(used.state, ApprovalState::Used);
        assert_eq!(used.used_at, Some(Timestamp::from_secs(120)));
    }

    #[test]
    fn unused_approval_expires() {
        let (_dir, store) = setup();
        store
            .create_approval(&request("ap_6", 1), admin("approval"))
            .unwrap();
        store
            .create_approval(&request("ap_7", 1), admin("approval"))
            .unwrap();
        store
            .vote(
                "ap_6",
                &vote("alice", true, 110),
                Duration::from_secs(60),
                admin("vote"),
            )
            .unwrap();
        assert!(
            !store
                .use_approval("ap_6", Timestamp::from_secs(170))
                .unwrap()
        );
        let before = audit_rows(&store).len();
        let expired = store
            .expire_approvals(Timestamp::from_secs(200), &|approval| admin(&approval.id))
            .unwrap();
        let ids: Vec<&str> = expired
            .iter()
            .map(|approval| approval.id.as_str())
            .collect();
        assert_eq!(ids, ["ap_6", "ap_7"]);
        assert_eq!(audit_rows(&store).len(), before + 2);
        assert_eq!(
            store.approval("ap_7").unwrap().unwrap().state,
            ApprovalState::Expired
        );
        let again = store
            .expire_approvals(Timestamp::from_secs(300), &|approval| admin(&approval.id))
            .unwrap();
        assert!(again.is_empty());
    }

    #[test]
    fn owners_must_be_approvers() {
        let (_dir, store) = setup();
        store
            .add_owner(&name("bot"), &name("alice"), admin("owner"))
            .unwrap();
        assert_eq!(store.owners(&name("bot")).unwrap(), [name("alice")]);
        let err = store
            .add_owner(&name("bot"), &name("mallory"), admin("owner"))
            .unwrap_err();
        assert!(matches!(err, StoreError::ApproverNotFound(_)), "{err}");
        let err = store
            .add_owner(&name("ghost"), &name("alice"), admin("owner"))
            .unwrap_err();
        assert!(matches!(err, StoreError::IdentityNotFound(_)), "{err}");
    }

    #[test]
    fn approver_secret_stays_redacted() {
        let (_dir, store) = setup();
        let approver = store.approver(&name("alice")).unwrap().unwrap();
        assert_eq!(approver.groups, ["approvers"]);
        assert!(!format!("{approver:?}").contains("7, 7"));
        let err = store
            .add_approver(
                &ApproverRecord::new(
                    name("alice"),
                    vec![1; 20],
                    "SHA1".into(),
                    6,
                    30,
                    vec![],
                    Timestamp::from_secs(2),
                ),
                admin("again"),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::ApproverExists(_)), "{err}");
        assert!(store.advance_approver_step(&name("alice"), 10).unwrap());
        assert!(!store.advance_approver_step(&name("alice"), 10).unwrap());
    }

    #[test]
    fn recent_audit_filters_identity() {
        let (_dir, store) = setup();
        let mut entry = Entry::new(Event::Allow, Timestamp::from_secs(5));
        entry.identity = Some("bot".into());
        store.append_audit(vec![entry.clone(), entry]).unwrap();
        let mut other = Entry::new(Event::Allow, Timestamp::from_secs(6));
        other.identity = Some("other".into());
        store.append_audit(vec![other]).unwrap();
        let records = store.recent_audit(&name("bot"), 10).unwrap();
        assert_eq!(records.len(), 2);
        assert!(
            records
                .iter()
                .all(|record| record.contains("\"identity\":\"bot\""))
        );
    }
}
