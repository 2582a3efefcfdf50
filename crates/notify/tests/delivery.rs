//! Deliveries to webhook receivers on 127.0.0.1: signatures, the body the
//! receiver parses, retries, give-ups, timeouts, refused connections and
//! TLS with a CA made in the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use http::Uri;
use serde_json::Value;
use stepgate_notify::{
    Attempt, DELIVERY_HEADER, Deliverer, Endpoint, Notification, NotificationKind, NotifyError,
    Outcome, RetryPolicy, SIGNATURE_HEADER, Secret,
};
use support::{Receiver, Reply, Silent, closed_port, make_pki};

const SECRET: &[u8] = b"whsec-delivery-test-0123456789";

fn secret() -> Secret {
    Secret::new(SECRET.to_vec())
}

/// Retries after a few milliseconds, so tests do not wait for real
/// backoff delays.
fn fast_policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(15),
        timeout: Duration::from_secs(10),
    }
}

fn notification() -> Notification {
    Notification {
        kind: NotificationKind::Requested,
        approval_id: "ap_0123456789".to_owned(),
        identity: "ci-deployer".to_owned(),
        method: "DELETE".to_owned(),
        target: "/orders/42".to_owned(),
        risk: 81,
        reasons: vec![
            "new_network: 10.0.0.0/24".to_owned(),
            "sensitive_zone: admin".to_owned(),
        ],
        requested_at: "2026-05-01T11:50:00Z".to_owned(),
        expires_at: "2026-05-01T12:00:00Z".to_owned(),
        group: "ops".to_owned(),
        quorum: 2,
        decided_by: Vec::new(),
        link: "https://gate.example/approvals/ap_0123456789".to_owned(),
    }
}

fn endpoint(url: &str) -> Endpoint {
    Endpoint::new("ops", url, secret()).unwrap()
}

fn deliverer(policy: RetryPolicy) -> Deliverer {
    // The http tests need no roots; the https tests pass their own CA.
    Deliverer::new(policy, None).unwrap()
}

/// Delivers and returns the outcome with every reported attempt.
async fn deliver(
    deliverer: &Deliverer,
    endpoint: &Endpoint,
    notification: &Notification,
) -> (Outcome, Vec<Attempt>) {
    let mut attempts = Vec::new();
    let outcome = deliverer
        .deliver(endpoint, notification, &mut |attempt: &Attempt| {
            attempts.push(attempt.clone())
        })
        .await;
    (outcome, attempts)
}

fn retry_delays(attempts: &[Attempt]) -> Vec<Option<Duration>> {
    attempts.iter().map(|attempt| attempt.retry_in).collect()
}

#[tokio::test]
async fn http_delivery_signed_and_parsed() {
    let receiver = Receiver::http(secret(), vec![Reply::status(204)]).await;
    let endpoint = endpoint(&receiver.url("http", "/hooks/ops?channel=approvals"));
    let (outcome, attempts) = deliver(&deliverer(fast_policy(3)), &endpoint, &notification()).await;

    assert_eq!(
        outcome,
        Outcome::Delivered {
            attempts: 1,
            status: 204
        }
    );
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.group, "ops");
    assert_eq!(attempt.approval_id, "ap_0123456789");
    assert_eq!(attempt.number, 1);
    assert_eq!(attempt.result, Ok(204));
    assert_eq!(attempt.retry_in, None);

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.signature, Ok(()));
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/hooks/ops?channel=approvals");
    assert_eq!(request.header("host"), receiver.addr.to_string());
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("user-agent"),
        format!("stepgate/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header(DELIVERY_HEADER), attempt.delivery_id);
    assert!(request.header(SIGNATURE_HEADER).starts_with("t="));
    assert_eq!(
        request.header("content-length"),
        request.body.len().to_string()
    );
}

#[tokio::test]
async fn receiver_reads_slack_teams_and_structured_fields() {
    let receiver = Receiver::http(secret(), vec![Reply::status(200)]).await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let notification = Notification {
        target: "/orders/<https://evil.example|click>?notify=@channel".to_owned(),
        ..notification()
    };
    let (outcome, _) = deliver(&deliverer(fast_policy(1)), &endpoint, &notification).await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");

    let body = receiver.received()[0].json();
    // Teams reads only `text`, so it names every fact and the link.
    let text = body["text"].as_str().unwrap();
    for expected in [
        "Approval requested",
        "`ci-deployer`",
        "`DELETE /orders/&lt;https://evil.example|click&gt;?notify=@channel`",
        "risk 81/100",
        "`new_network: 10.0.0.0/24`",
        "`sensitive_zone: admin`",
        "Group `ops` must give 2 approvals before 2026-05-01T12:00:00Z",
        "`ap_0123456789`",
        "https://gate.example/approvals/ap_0123456789",
    ] {
        assert!(text.contains(expected), "text lacks {expected:?}: {text}");
    }
    assert!(!text.contains("<https://evil"), "{text}");

    let blocks = body["blocks"].as_array().unwrap();
    let kinds: Vec<&str> = blocks
        .iter()
        .map(|block| block["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["header", "section", "section", "context", "actions"]
    );
    let buttons = blocks[4]["elements"].as_array().unwrap();
    assert_eq!(buttons.len(), 1);
    assert_eq!(buttons[0]["type"], "button");
    assert_eq!(buttons[0]["text"]["text"], "Review in stepgate");
    assert_eq!(
        buttons[0]["url"],
        "https://gate.example/approvals/ap_0123456789"
    );

    let stepgate = &body["stepgate"];
    assert_eq!(stepgate["event"], "approval.requested");
    assert_eq!(stepgate["approval_id"], "ap_0123456789");
    assert_eq!(stepgate["identity"], "ci-deployer");
    assert_eq!(stepgate["method"], "DELETE");
    assert_eq!(
        stepgate["target"],
        "/orders/<https://evil.example|click>?notify=@channel"
    );
    assert_eq!(stepgate["risk"], 81);
    assert_eq!(stepgate["reasons"].as_array().unwrap().len(), 2);
    assert_eq!(stepgate["requested_at"], "2026-05-01T11:50:00Z");
    assert_eq!(stepgate["expires_at"], "2026-05-01T12:00:00Z");
    assert_eq!(stepgate["group"], "ops");
    assert_eq!(stepgate["quorum"], 2);
    assert_eq!(stepgate["decided_by"], Value::Array(Vec::new()));
    assert_eq!(
        stepgate["link"],
        "https://gate.example/approvals/ap_0123456789"
    );
}

#[tokio::test]
async fn retried_after_500_with_same_delivery_id() {
    let receiver = Receiver::http(
        secret(),
        vec![Reply::status(500), Reply::status(502), Reply::status(200)],
    )
    .await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let (outcome, attempts) = deliver(&deliverer(fast_policy(5)), &endpoint, &notification()).await;

    assert_eq!(
        outcome,
        Outcome::Delivered {
            attempts: 3,
            status: 200
        }
    );
    let results: Vec<_> = attempts
        .iter()
        .map(|attempt| attempt.result.clone())
        .collect();
    assert_eq!(results, [Ok(500), Ok(502), Ok(200)]);
    let numbers: Vec<u32> = attempts.iter().map(|attempt| attempt.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    // 10 ms, then 20 ms capped at the 15 ms maximum.
    assert_eq!(
        retry_delays(&attempts),
        [
            Some(Duration::from_millis(10)),
            Some(Duration::from_millis(15)),
            None
        ]
    );

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let ids: HashSet<&str> = received
        .iter()
        .map(|request| request.header(DELIVERY_HEADER))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids.contains(attempts[0].delivery_id.as_str()));
    for attempt in &attempts {
        assert_eq!(attempt.delivery_id, attempts[0].delivery_id);
    }
    for request in &received {
        assert_eq!(request.signature, Ok(()));
        assert_eq!(request.body, received[0].body);
    }
}

#[tokio::test]
async fn retry_after_honoured_and_capped() {
    let receiver = Receiver::http(
        secret(),
        vec![
            Reply::retry_after(429, "0"),
            Reply::retry_after(503, "30"),
            Reply::status(200),
        ],
    )
    .await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let policy = RetryPolicy {
        first_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(50),
        ..fast_policy(5)
    };
    let (outcome, attempts) = deliver(&deliverer(policy), &endpoint, &notification()).await;

    assert_eq!(
        outcome,
        Outcome::Delivered {
            attempts: 3,
            status: 200
        }
    );
    // Retry-After: 0 replaces the 40 ms backoff, and Retry-After: 30 is
    // capped at the 50 ms maximum delay.
    assert_eq!(
        retry_delays(&attempts),
        [Some(Duration::ZERO), Some(Duration::from_millis(50)), None]
    );
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn gives_up_after_attempts() {
    let receiver = Receiver::http(secret(), vec![Reply::status(503)]).await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let (outcome, attempts) = deliver(&deliverer(fast_policy(3)), &endpoint, &notification()).await;

    assert_eq!(
        outcome,
        Outcome::GaveUp {
            attempts: 3,
            last: "HTTP status 503".to_owned()
        }
    );
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2].retry_in, None);
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn request_timeout_retried_then_given_up() {
    let silent = Silent::start().await;
    let endpoint = endpoint(&format!("http://{}/hook", silent.addr));
    let policy = RetryPolicy {
        timeout: Duration::from_millis(200),
        ..fast_policy(2)
    };
    let (outcome, attempts) = deliver(&deliverer(policy), &endpoint, &notification()).await;

    assert_eq!(
        outcome,
        Outcome::GaveUp {
            attempts: 2,
            last: "timed out after 200 ms".to_owned()
        }
    );
    for attempt in &attempts {
        assert_eq!(attempt.result, Err("timed out after 200 ms".to_owned()));
    }
    assert_eq!(
        retry_delays(&attempts),
        [Some(Duration::from_millis(10)), None]
    );
}

#[tokio::test]
async fn bad_request_not_retried() {
    let receiver = Receiver::http(secret(), vec![Reply::status(400), Reply::status(200)]).await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let (outcome, attempts) = deliver(&deliverer(fast_policy(5)), &endpoint, &notification()).await;

    assert_eq!(outcome, Outcome::Rejected { status: 400 });
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].result, Ok(400));
    assert_eq!(attempts[0].retry_in, None);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn wrong_secret_rejected_by_receiver() {
    let receiver = Receiver::http(secret(), vec![Reply::status(200)]).await;
    let endpoint = Endpoint::new(
        "ops",
        &receiver.url("http", "/hook"),
        Secret::new(b"whsec-not-the-receivers-secret".to_vec()),
    )
    .unwrap();
    let (outcome, _) = deliver(&deliverer(fast_policy(3)), &endpoint, &notification()).await;

    assert_eq!(outcome, Outcome::Rejected { status: 401 });
    let received = receiver.received();
    assert_eq!(
        received[0].signature,
        Err(stepgate_notify::VerifyError::Mismatch)
    );
}

#[tokio::test]
async fn large_response_body_ignored() {
    let reply = Reply {
        body_len: 1024 * 1024,
        ..Reply::status(200)
    };
    let receiver = Receiver::http(secret(), vec![reply]).await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let (outcome, _) = deliver(&deliverer(fast_policy(1)), &endpoint, &notification()).await;
    assert_eq!(
        outcome,
        Outcome::Delivered {
            attempts: 1,
            status: 200
        }
    );
}

#[tokio::test]
async fn connection_refused_reason() {
    let port = closed_port().await;
    let endpoint = endpoint(&format!("http://127.0.0.1:{port}/hook"));
    let (outcome, attempts) = deliver(&deliverer(fast_policy(2)), &endpoint, &notification()).await;

    let reason = format!("connect to 127.0.0.1:{port} failed: connection refused");
    assert_eq!(
        outcome,
        Outcome::GaveUp {
            attempts: 2,
            last: reason.clone()
        }
    );
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].result, Err(reason));
    assert_eq!(attempts[0].retry_in, Some(Duration::from_millis(10)));
}

#[tokio::test]
async fn delivery_ids_differ_between_deliveries() {
    let receiver = Receiver::http(secret(), vec![Reply::status(200)]).await;
    let endpoint = endpoint(&receiver.url("http", "/hook"));
    let deliverer = deliverer(fast_policy(1));
    deliver(&deliverer, &endpoint, &notification()).await;
    deliver(&deliverer, &endpoint, &notification()).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_ne!(
        received[0].header(DELIVERY_HEADER),
        received[1].header(DELIVERY_HEADER)
    );
}

#[tokio::test]
async fn https_with_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "trusted");
    let receiver = Receiver::https(secret(), vec![Reply::status(200)], &pki).await;
    let endpoint = endpoint(&format!(
        "https://localhost:{}/hooks/ops",
        receiver.addr.port()
    ));
    let deliverer = Deliverer::new(fast_policy(1), Some(&pki.ca)).unwrap();
    deliverer.check(&endpoint).unwrap();
    let (outcome, attempts) = deliver(&deliverer, &endpoint, &notification()).await;

    assert_eq!(
        outcome,
        Outcome::Delivered {
            attempts: 1,
            status: 200
        },
        "{attempts:?}"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.signature, Ok(()));
    assert_eq!(request.server_name.as_deref(), Some("localhost"));
    assert_eq!(request.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(
        request.header("host"),
        format!("localhost:{}", receiver.addr.port())
    );
    assert_eq!(request.target, "/hooks/ops");
    assert_eq!(request.json()["stepgate"]["approval_id"], "ap_0123456789");
}

#[tokio::test]
async fn https_ip_address_url() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "ip");
    let receiver = Receiver::https(secret(), vec![Reply::status(200)], &pki).await;
    let endpoint = endpoint(&receiver.url("https", "/hook"));
    let deliverer = Deliverer::new(fast_policy(1), Some(&pki.ca)).unwrap();
    let (outcome, attempts) = deliver(&deliverer, &endpoint, &notification()).await;

    assert!(
        matches!(outcome, Outcome::Delivered { status: 200, .. }),
        "{outcome:?} {attempts:?}"
    );
    // TLS sends no SNI for an IP address.
    assert_eq!(receiver.received()[0].server_name, None);
}

#[tokio::test]
async fn https_untrusted_certificate_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = make_pki(dir.path(), "server");
    let other_pki = make_pki(dir.path(), "other");
    let receiver = Receiver::https(secret(), vec![Reply::status(200)], &server_pki).await;
    let endpoint = endpoint(&receiver.url("https", "/hook"));
    let deliverer = Deliverer::new(fast_policy(2), Some(&other_pki.ca)).unwrap();
    let (outcome, attempts) = deliver(&deliverer, &endpoint, &notification()).await;

    let Outcome::GaveUp { attempts: 2, last } = &outcome else {
        panic!("expected GaveUp after 2 attempts, got {outcome:?}");
    };
    let prefix = format!("TLS handshake with {} failed: ", receiver.addr);
    assert!(last.starts_with(&prefix), "{last}");
    assert!(last.contains("invalid peer certificate"), "{last}");
    assert!(last.contains("UnknownIssuer"), "{last}");
    assert_eq!(attempts[0].result, Err(last.clone()));
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn invalid_endpoint_not_sent() {
    let deliverer = deliverer(fast_policy(3));
    let cases = [
        ("http://admin:hunter2@127.0.0.1:9/hook", "user information"),
        ("ftp://127.0.0.1/hook", "must be http or https"),
        ("/hook?token=abc", "no scheme"),
    ];
    for (url, expected) in cases {
        let endpoint = Endpoint {
            group: "ops".to_owned(),
            url: Uri::from_static(url),
            secret: secret(),
        };
        assert!(deliverer.check(&endpoint).is_err(), "{url}");
        let (outcome, attempts) = deliver(&deliverer, &endpoint, &notification()).await;
        let Outcome::NotSent { reason } = &outcome else {
            panic!("{url}: expected NotSent, got {outcome:?}");
        };
        assert!(reason.contains(expected), "{url}: {reason}");
        assert!(!reason.contains("hunter2"), "{reason}");
        assert!(!reason.contains("token"), "{reason}");
        assert!(attempts.is_empty(), "{url}");
    }
}

#[tokio::test]
async fn short_secret_not_sent() {
    let endpoint = Endpoint {
        group: "ops".to_owned(),
        url: Uri::from_static("http://127.0.0.1:9/hook"),
        secret: Secret::new(b"short".to_vec()),
    };
    let (outcome, attempts) = deliver(&deliverer(fast_policy(1)), &endpoint, &notification()).await;
    let Outcome::NotSent { reason } = outcome else {
        panic!("expected NotSent");
    };
    assert!(reason.contains("at least 16"), "{reason}");
    assert!(attempts.is_empty());
}

#[test]
fn missing_ca_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-ca.pem");
    let err = Deliverer::new(RetryPolicy::default(), Some(&path)).unwrap_err();
    let NotifyError::CaFile { path: named, .. } = &err else {
        panic!("expected CaFile, got {err:?}");
    };
    assert_eq!(Path::new(named), path);
    assert!(err.to_string().contains("no-such-ca.pem"), "{err}");
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_group_and_approval_without_secrets() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // The test runtime runs on this thread, so the subscriber receives the
    // delivery's events.
    let _guard = tracing::subscriber::set_default(subscriber);

    let receiver = Receiver::http(secret(), vec![Reply::status(500)]).await;
    let endpoint = endpoint(&receiver.url("http", "/services/T1/B2/path-token?token=query-token"));
    let (outcome, _) = deliver(&deliverer(fast_policy(2)), &endpoint, &notification()).await;
    assert!(matches!(outcome, Outcome::GaveUp { .. }), "{outcome:?}");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("webhook delivery failed, retrying"), "{text}");
    assert!(
        text.contains("webhook delivery failed, giving up"),
        "{text}"
    );
    assert!(text.contains("webhook.group=\"ops\""), "{text}");
    assert!(text.contains("approval.id=\"ap_0123456789\""), "{text}");
    assert!(text.contains("HTTP status 500"), "{text}");
    assert!(!text.contains("whsec"), "{text}");
    assert!(!text.contains("path-token"), "{text}");
    assert!(!text.contains("query-token"), "{text}");
}

#[test]
fn deliver_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let deliverer = deliverer(RetryPolicy::default());
    let endpoint = endpoint("http://127.0.0.1:9/hook");
    let notification = notification();
    let mut report = |_: &Attempt| {};
    // Built but never polled: the check is that it compiles.
    let future = deliverer.deliver(&endpoint, &notification, &mut report);
    assert_send(&future);
}
