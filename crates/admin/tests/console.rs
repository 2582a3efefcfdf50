//! The approvals page in process: a Console over a real SQLite store and
//! approval desk, driven with the requests a browser sends, on a manual
//! clock so TOTP codes and session expiry are exact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use stepgate_admin::{Console, ConsoleSettings};
use stepgate_audit::{Entry, Event};
use stepgate_config::ApprovalConfig;
use stepgate_core::{Identity, IdentityName, ManualClock, Timestamp};
use stepgate_engine::ApprovalDesk;
use stepgate_factors::totp::{self, Algorithm, TotpParams, TotpSecret};
use stepgate_store::{
    ApprovalRecord, ApprovalState, ApprovalStore, ApproverRecord, SqliteStore, Store,
};

/// 2023-11-14 22:13:20 UTC, a Tuesday.
const START_SECS: i64 = 1_700_000_000;
const HOST: &str = "console.test:9091";
const ORIGIN: &str = "http://console.test:9091";
const SESSION_COOKIE: &str = "__Host-stepgate-session";
const PEER: &str = "127.0.0.1:50000";

fn name(text: &str) -> IdentityName {
    IdentityName::new(text).unwrap()
}

fn admin_entry(detail: &str) -> Entry {
    let mut entry = Entry::new(Event::Admin, Timestamp::from_secs(START_SECS));
    entry.detail = Some(detail.to_owned());
    entry
}

/// A console over a fresh store, with its clock and approvers' secrets.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: ManualClock,
    console: Arc<Console>,
    secrets: HashMap<String, TotpSecret>,
}

impl Fixture {
    fn new() -> Self {
        Self::with(ApprovalConfig::default(), true)
    }

    fn with(config: ApprovalConfig, secure_cookies: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let clock = ManualClock::new(Timestamp::from_secs(START_SECS));
        let desk = Arc::new(ApprovalDesk::new(
            store.clone(),
            Arc::new(clock.clone()),
            config,
        ));
        let mut settings = ConsoleSettings::new(secure_cookies, Duration::from_secs(600));
        settings.clock = Arc::new(clock.clone());
        Self {
            _dir: dir,
            store,
            clock,
            console: Console::new(desk, settings),
            secrets: HashMap::new(),
        }
    }

    fn add_approver(&mut self, approver: &str, groups: &[&str]) {
        let secret = TotpSecret::generate(Algorithm::Sha1).unwrap();
        let record = ApproverRecord::new(
            name(approver),
            secret.danger_bytes().to_vec(),
            "SHA1".to_owned(),
            6,
            30,
            groups.iter().map(|group| (*group).to_owned()).collect(),
            Timestamp::from_secs(START_SECS),
        );
        self.store
            .add_approver(&record, admin_entry("approver add"))
            .unwrap();
        self.secrets.insert(approver.to_owned(), secret);
    }

    fn add_identity(&self, identity: &str) {
        let record = Identity {
            name: name(identity),
            disabled: false,
            created_at: Timestamp::from_secs(START_SECS),
        };
        self.store
            .add_identity(&record, admin_entry("identity add"))
            .unwrap();
    }

    fn add_owner(&self, identity: &str, approver: &str) {
        self.store
            .add_owner(&name(identity), &name(approver), admin_entry("owner add"))
            .unwrap();
    }

    /// Stores a pending approval of `identity` for `DELETE target`.
    fn add_approval(&self, id: &str, identity: &str, target: &str, quorum: u32) {
        let now = self.clock_now();
        let record = ApprovalRecord {
            id: id.to_owned(),
            identity: name(identity),
            operation: "ab".repeat(32),
            method: "DELETE".to_owned(),
            host: "api.example".to_owned(),
            target: target.to_owned(),
            body_sha256: None,
            body_preview: Some("{\"reason\": \"<b>cleanup</b>\"}".to_owned()),
            body_bytes: 0,
            action: "delete".to_owned(),
            zone: Some("orders".to_owned()),
            client_addr: "10.1.0.7".to_owned(),
            risk: 82,
            reasons: vec![
                "new_network: first request from network 10.1.0.0/24".to_owned(),
                "unusual_hour: rarely active at Tue 22".to_owned(),
            ],
            policies: vec!["zone-approval".to_owned()],
            group: "approvers".to_owned(),
            quorum,
            state: ApprovalState::Pending,
            created_at: now,
            expires_at: now.saturating_add(Duration::from_secs(900)),
            valid_until: None,
            decided_at: None,
            used_at: None,
            notified_at: None,
            votes: Vec::new(),
        };
        let mut entry = Entry::new(Event::ApprovalRequest, now);
        entry.identity = Some(identity.to_owned());
        entry.method = Some("DELETE".to_owned());
        entry.path = Some(target.to_owned());
        entry.decision = Some("step_up".to_owned());
        entry.risk = Some(82);
        self.store.create_approval(&record, entry).unwrap();
    }

    fn clock_now(&self) -> Timestamp {
        stepgate_core::Clock::now(&self.clock)
    }

    /// Computes the approver's TOTP code at the clock's time.
    fn code(&self, approver: &str) -> String {
        let params = TotpParams::new(Algorithm::Sha1, 6, 30).unwrap();
        let secs = u64::try_from(self.clock_now().as_secs()).unwrap();
        totp::code_at(&self.secrets[approver], &params, secs)
    }

    /// Moves the clock to the next TOTP step, so a new code is valid.
    fn next_step(&self) {
        self.clock.advance(Duration::from_secs(30));
    }

    fn browser(&self) -> Browser {
        Browser {
            console: self.console.clone(),
            cookies: HashMap::new(),
        }
    }

    fn approval(&self, id: &str) -> ApprovalRecord {
        self.store.approval(id).unwrap().unwrap()
    }

    /// Reads every audit record, parsed.
    fn audit(&self) -> Vec<Entry> {
        let mut entries = Vec::new();
        self.store
            .scan_audit(&mut |_, record, _| {
                entries.push(serde_json::from_str::<Entry>(record).unwrap());
                true
            })
            .unwrap();
        entries
    }

    /// Signs `approver` in through the form; returns their browser.
    async fn signed_in(&self, approver: &str) -> Browser {
        let mut browser = self.browser();
        let page = browser.sign_in(approver, &self.code(approver)).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        browser
    }
}

/// A response as the test reads it.
struct Page {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    }

    /// Returns the value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("page has a csrf field") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }
}

/// A browser: keeps cookies and sends the headers Chromium sends.
struct Browser {
    console: Arc<Console>,
    cookies: HashMap<String, String>,
}

impl Browser {
    async fn send(&mut self, request: http::request::Builder, body: String) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut request = request.header("host", HOST);
        if !cookie.is_empty() {
            request = request.header("cookie", cookie);
        }
        let request: Request<Full<Bytes>> = request.body(Full::new(Bytes::from(body))).unwrap();
        let peer: SocketAddr = PEER.parse().unwrap();
        let response: Response<Bytes> = self.console.handle(request, peer).await;
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: String::from_utf8(response.body().to_vec()).unwrap(),
        };
        for set in page.set_cookies() {
            let pair = set.split(';').next().unwrap();
            let (key, value) = pair.split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(key);
            } else {
                self.cookies.insert(key.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path), String::new()).await
    }

    /// Sends a same-origin form POST, as a browser sends it.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(
            path,
            fields,
            &[("origin", ORIGIN), ("sec-fetch-site", "same-origin")],
        )
        .await
    }

    async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request =
            Request::post(path).header("content-type", "application/x-www-form-urlencoded");
        for (key, value) in headers {
            request = request.header(*key, *value);
        }
        self.send(request, form_body(fields)).await
    }

    async fn sign_in(&mut self, approver: &str, code: &str) -> Page {
        let form = self.get("/sign-in").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.post(
            "/sign-in",
            &[("name", approver), ("code", code), ("csrf", &csrf)],
        )
        .await
    }

    /// Opens approval `id` and posts a decision with the page's token.
    async fn decide(&mut self, id: &str, decision: &str, comment: &str, code: &str) -> Page {
        let page = self.get(&format!("/approvals/{id}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let csrf = page.csrf();
        self.post(
            &format!("/approvals/{id}/decide"),
            &[
                ("csrf", &csrf),
                ("decision", decision),
                ("comment", comment),
                ("code", code),
            ],
        )
        .await
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A fixture with approvers alice and bob, identity ci-bot owned by
/// carol, and one pending approval `ap_one` of ci-bot.
fn standard() -> Fixture {
    let mut fixture = Fixture::new();
    fixture.add_approver("alice", &["approvers"]);
    fixture.add_approver("bob", &["approvers"]);
    fixture.add_approver("carol", &["approvers"]);
    fixture.add_identity("ci-bot");
    fixture.add_owner("ci-bot", "carol");
    fixture.add_approval("ap_one", "ci-bot", "/orders/7", 1);
    fixture
}

#[tokio::test]
async fn sign_in_sets_session_cookie() {
    let fixture = standard();
    let mut browser = fixture.browser();
    let page = browser.sign_in("alice", &fixture.code("alice")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/approvals"));
    let session = page
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with(&format!("{SESSION_COOKIE}=")))
        .expect("session cookie set")
        .to_owned();
    assert!(session.contains("; HttpOnly"), "{session}");
    assert!(session.contains("; SameSite=Strict"), "{session}");
    assert!(session.contains("; Secure"), "{session}");
    assert!(session.contains("; Path=/"), "{session}");
    assert!(session.contains("; Max-Age=600"), "{session}");
    assert!(!session.contains("Domain"), "{session}");
    let id = session
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1;
    assert!(id.len() >= 43, "session id too short: {id}");

    let queue = browser.get("/approvals").await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(queue.body.contains("Signed in as <strong>alice</strong>"));
    assert!(queue.body.contains("ci-bot"));
    let sign_ins: Vec<Entry> = fixture
        .audit()
        .into_iter()
        .filter(|entry| entry.event == Some(Event::ApproverSignIn))
        .collect();
    assert_eq!(sign_ins.len(), 1);
    assert_eq!(sign_ins[0].actor.as_deref(), Some("alice"));
    assert_eq!(sign_ins[0].decision.as_deref(), Some("allow"));
}

#[tokio::test]
async fn plain_http_cookies_without_secure() {
    let mut fixture = Fixture::with(ApprovalConfig::default(), false);
    fixture.add_approver("alice", &["approvers"]);
    let mut browser = fixture.browser();
    let form = browser.get("/sign-in").await;
    let pre = form.set_cookies()[0].to_owned();
    assert!(pre.starts_with("stepgate-sign-in="), "{pre}");
    assert!(!pre.contains("Secure"), "{pre}");
    let page = browser.sign_in("alice", &fixture.code("alice")).await;
    let session = page
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with("stepgate-session="))
        .expect("session cookie set")
        .to_owned();
    assert!(!session.contains("Secure"), "{session}");
    assert!(session.contains("; HttpOnly; SameSite=Strict"), "{session}");
    assert_eq!(browser.get("/approvals").await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_code_and_unknown_name_fail_alike() {
    let fixture = standard();
    let code = fixture.code("alice");
    let wrong = if code == "000000" { "111111" } else { "000000" };

    let mut browser = fixture.browser();
    let wrong_code = browser.sign_in("alice", wrong).await;
    let mut stranger = fixture.browser();
    let unknown = stranger.sign_in("mallory", &code).await;

    for page in [&wrong_code, &unknown] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Sign-in failed."), "{}", page.body);
        assert!(!page.body.contains("not found"));
        assert!(
            !page
                .set_cookies()
                .iter()
                .any(|cookie| cookie.starts_with(SESSION_COOKIE))
        );
    }
    let message = |page: &Page| {
        let start = page.body.find("alert-error").unwrap();
        page.body[start..start + 200].to_owned()
    };
    assert_eq!(message(&wrong_code), message(&unknown));
    assert_eq!(
        browser.get("/approvals").await.header("location"),
        Some("/sign-in")
    );

    let failures: Vec<Entry> = fixture
        .audit()
        .into_iter()
        .filter(|entry| {
            entry.event == Some(Event::ApproverSignIn) && entry.decision.as_deref() == Some("deny")
        })
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|entry| {
        !entry.detail.as_deref().unwrap_or("").contains(&code)
            && !entry.detail.as_deref().unwrap_or("").contains(wrong)
    }));
}

#[tokio::test]
async fn replayed_code_rejected() {
    let fixture = standard();
    let code = fixture.code("alice");
    let mut first = fixture.browser();
    assert_eq!(
        first.sign_in("alice", &code).await.status,
        StatusCode::SEE_OTHER
    );
    let mut second = fixture.browser();
    let page = second.sign_in("alice", &code).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Sign-in failed."));
    fixture.next_step();
    let page = second.sign_in("alice", &fixture.code("alice")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_needs_pre_session_token() {
    let fixture = standard();
    let code = fixture.code("alice");
    let mut browser = fixture.browser();
    let form = browser.get("/sign-in").await;
    let csrf = form.csrf();

    let mut other = fixture.browser();
    let page = other
        .post(
            "/sign-in",
            &[("name", "alice"), ("code", &code), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "token of another browser"
    );

    let page = browser
        .post("/sign-in", &[("name", "alice"), ("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "missing token");
    assert!(page.body.contains("sign-in form expired"));

    // The code was never checked, so it still works.
    let page = browser.sign_in("alice", &code).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn csrf_missing_or_wrong_rejected() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    let page = browser.get("/approvals/ap_one").await;
    let csrf = page.csrf();

    let missing = browser
        .post("/approvals/ap_one/decide", &[("decision", "approve")])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("security token"));
    let mut wrong = csrf.clone();
    wrong.replace_range(0..1, if csrf.starts_with('A') { "B" } else { "A" });
    let wrong = browser
        .post(
            "/approvals/ap_one/decide",
            &[("decision", "approve"), ("csrf", &wrong)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let sign_out = browser.post("/sign-out", &[("csrf", "x")]).await;
    assert_eq!(sign_out.status, StatusCode::FORBIDDEN);
    assert!(fixture.approval("ap_one").votes.is_empty());

    // Another session's token is no good either.
    let mut bob = fixture.signed_in("bob").await;
    let theirs = bob
        .post(
            "/approvals/ap_one/decide",
            &[("decision", "approve"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    assert!(fixture.approval("ap_one").votes.is_empty());
}

#[tokio::test]
async fn cross_site_post_rejected() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    let csrf = browser.get("/approvals/ap_one").await.csrf();
    let fields = [("decision", "approve"), ("csrf", csrf.as_str())];

    let cases: [&[(&str, &str)]; 4] = [
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site"), ("origin", ORIGIN)],
    ];
    for headers in cases {
        let page = browser
            .post_with("/approvals/ap_one/decide", &fields, headers)
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(page.body.contains("sent from another site"), "{headers:?}");
    }
    let sign_in = fixture
        .browser()
        .post_with("/sign-in", &[], &[("origin", "https://evil.example")])
        .await;
    assert_eq!(sign_in.status, StatusCode::FORBIDDEN);
    assert!(fixture.approval("ap_one").votes.is_empty());

    // A client that sends neither header still needs the token, which it has.
    let page = browser
        .post_with("/approvals/ap_one/decide", &fields, &[])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(fixture.approval("ap_one").state, ApprovalState::Approved);
}

#[tokio::test]
async fn bearer_token_gets_no_data() {
    let fixture = standard();
    for path in ["/approvals", "/approvals/ap_one", "/anything"] {
        let mut bot = fixture.browser();
        let page = bot
            .send(
                Request::get(path).header("authorization", "Bearer sg_live_abcdef"),
                String::new(),
            )
            .await;
        if path == "/anything" {
            assert_eq!(page.status, StatusCode::NOT_FOUND);
        } else {
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(page.header("location"), Some("/sign-in"), "{path}");
        }
        assert!(!page.body.contains("ci-bot"), "{path}");
        assert!(!page.body.contains("/orders/7"), "{path}");
    }
    let mut bot = fixture.browser();
    let page = bot
        .post_with(
            "/approvals/ap_one/decide",
            &[("decision", "approve")],
            &[("authorization", "Bearer sg_live_abcdef")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/sign-in"));
    assert!(fixture.approval("ap_one").votes.is_empty());

    let htmx = bot
        .send(
            Request::get("/approvals").header("hx-request", "true"),
            String::new(),
        )
        .await;
    assert_eq!(htmx.status, StatusCode::UNAUTHORIZED);
    assert_eq!(htmx.header("hx-redirect"), Some("/sign-in"));
    assert!(!htmx.body.contains("ci-bot"));
}

#[tokio::test]
async fn session_expires_after_ttl() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    fixture.clock.advance(Duration::from_secs(599));
    assert_eq!(browser.get("/approvals").await.status, StatusCode::OK);
    fixture.clock.advance(Duration::from_secs(1));
    let page = browser.get("/approvals").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/sign-in"));
}

#[tokio::test]
async fn sign_out_ends_session() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    let cookie = browser.cookies[SESSION_COOKIE].clone();
    let csrf = browser.get("/approvals").await.csrf();
    let page = browser.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/sign-in"));
    assert!(!browser.cookies.contains_key(SESSION_COOKIE));
    // The old cookie value no longer opens a session.
    browser.cookies.insert(SESSION_COOKIE.to_owned(), cookie);
    assert_eq!(
        browser.get("/approvals").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn approve_from_page() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    let page = browser
        .decide("ap_one", "approve", "ticket OPS-1", "")
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.header("location"), Some("/approvals/ap_one"));
    let record = fixture.approval("ap_one");
    assert_eq!(record.state, ApprovalState::Approved);
    assert_eq!(record.votes[0].approver.as_str(), "alice");
    assert_eq!(record.votes[0].comment, "ticket OPS-1");
    assert_eq!(record.votes[0].via, "web");

    let page = browser.get("/approvals/ap_one").await;
    assert!(page.body.contains("You approved this request"));
    assert!(page.body.contains("Approved by alice"));
    assert!(
        !page.body.contains("value=\"approve\""),
        "no form once decided"
    );
    let queue = browser.get("/approvals").await;
    assert!(queue.body.contains("Recently decided"));
    assert!(queue.body.contains("Nothing is waiting for a decision"));
}

#[tokio::test]
async fn deny_from_page() {
    let fixture = standard();
    let mut browser = fixture.signed_in("bob").await;
    let page = browser
        .decide("ap_one", "deny", "not during the freeze", "")
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let record = fixture.approval("ap_one");
    assert_eq!(record.state, ApprovalState::Denied);
    assert_eq!(record.votes[0].comment, "not during the freeze");
    let page = browser.get("/approvals/ap_one").await;
    assert!(page.body.contains("Denied by bob"));
}

#[tokio::test]
async fn self_approval_rejected() {
    let mut fixture = standard();
    fixture.add_identity("dave");
    fixture.add_approver("dave", &["approvers"]);
    fixture.add_approval("ap_self", "dave", "/orders/9", 1);
    let mut browser = fixture.signed_in("dave").await;
    let page = browser.decide("ap_self", "approve", "", "").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("You cannot decide this request because your own identity made it"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Not recorded."));
    assert_eq!(fixture.approval("ap_self").state, ApprovalState::Pending);
}

#[tokio::test]
async fn owner_approval_rejected() {
    let fixture = standard();
    let mut browser = fixture.signed_in("carol").await;
    let page = browser.get("/approvals/ap_one").await;
    assert!(
        page.body
            .contains("You own identity ci-bot, so the gateway will not accept your decision")
    );
    let page = browser.decide("ap_one", "approve", "", "").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains(
            "You own identity ci-bot, and owners never decide their own identities&#39; requests"
        ),
        "{}",
        page.body
    );
    assert_eq!(fixture.approval("ap_one").state, ApprovalState::Pending);
    assert!(fixture.approval("ap_one").votes.is_empty());
}

#[tokio::test]
async fn other_group_rejected() {
    let mut fixture = standard();
    fixture.add_approver("erin", &["dba"]);
    let mut browser = fixture.signed_in("erin").await;
    let page = browser.decide("ap_one", "approve", "", "").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("You are not in approver group approvers, which decides this request")
    );
}

#[tokio::test]
async fn decided_request_conflicts() {
    let fixture = standard();
    let mut alice = fixture.signed_in("alice").await;
    let mut bob = fixture.signed_in("bob").await;
    let bob_page = bob.get("/approvals/ap_one").await;
    assert_eq!(
        alice.decide("ap_one", "deny", "", "").await.status,
        StatusCode::SEE_OTHER
    );
    let page = bob
        .post(
            "/approvals/ap_one/decide",
            &[("csrf", &bob_page.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("This request is already denied"));
}

#[tokio::test]
async fn expired_request_conflicts() {
    let fixture = standard();
    let mut alice = fixture.signed_in("alice").await;
    let page = alice.get("/approvals/ap_one").await;
    let csrf = page.csrf();
    fixture.clock.advance(Duration::from_secs(901));
    let page = alice
        .post(
            "/approvals/ap_one/decide",
            &[("csrf", &csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "session also expired");
    let mut alice = fixture.signed_in("alice").await;
    let page = alice.get("/approvals/ap_one").await;
    assert!(page.body.contains("Expired without a decision"));
    let page = alice
        .post(
            "/approvals/ap_one/decide",
            &[("csrf", &page.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(
        page.body
            .contains("This request expired before it was decided")
    );
}

#[tokio::test]
async fn quorum_of_two_counts_votes() {
    let fixture = standard();
    fixture.add_approval("ap_two", "ci-bot", "/orders/8", 2);
    let mut alice = fixture.signed_in("alice").await;
    let queue = alice.get("/approvals").await;
    assert!(queue.body.contains("0 of 2 approvals"), "{}", queue.body);
    assert_eq!(
        alice.decide("ap_two", "approve", "", "").await.status,
        StatusCode::SEE_OTHER
    );
    let queue = alice.get("/approvals").await;
    assert!(queue.body.contains("1 of 2 approvals"), "{}", queue.body);
    let page = alice.get("/approvals/ap_two").await;
    assert!(page.body.contains("1 of 2 approvals"));
    assert!(page.body.contains("Waiting for a decision"));

    let again = alice
        .post(
            "/approvals/ap_two/decide",
            &[("csrf", &page.csrf()), ("decision", "approve")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("You already decided this request"));

    let mut bob = fixture.signed_in("bob").await;
    assert_eq!(
        bob.decide("ap_two", "approve", "", "").await.status,
        StatusCode::SEE_OTHER
    );
    let page = bob.get("/approvals/ap_two").await;
    assert!(page.body.contains("2 of 2 approvals"));
    assert!(page.body.contains("Approved by alice and bob"));
    assert_eq!(fixture.approval("ap_two").state, ApprovalState::Approved);
}

#[tokio::test]
async fn hostile_target_escaped() {
    let fixture = standard();
    fixture.add_approval(
        "ap_xss",
        "ci-bot",
        "/orders/<script>alert(1)</script>?q=\"'&x",
        1,
    );
    let mut browser = fixture.signed_in("alice").await;
    for path in ["/approvals", "/approvals/ap_xss"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("<script>alert(1)"), "{path}");
        assert!(
            page.body
                .contains("/orders/&#60;script&#62;alert(1)&#60;/script&#62;")
                || page
                    .body
                    .contains("/orders/&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("?q=\"'"), "{path}");
    }
    // The body preview is shown escaped on the detail page.
    let page = browser.get("/approvals/ap_xss").await;
    assert!(!page.body.contains("<b>cleanup</b>"));
    assert!(
        page.body.contains("&#60;b&#62;cleanup") || page.body.contains("&lt;b&gt;cleanup"),
        "{}",
        page.body
    );
    assert!(page.body.contains("api.example"));
    // A hostile comment is escaped in the votes table too.
    browser
        .decide("ap_xss", "deny", "<img src=x onerror=alert(1)>", "")
        .await;
    let page = browser.get("/approvals/ap_xss").await;
    assert!(!page.body.contains("<img src=x"));
}

#[tokio::test]
async fn detail_shows_history_and_owners() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    let page = browser.get("/approvals/ap_one").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Recent activity of ci-bot"));
    assert!(page.body.contains("approval request"), "history row");
    assert!(page.body.contains("carol (owners cannot approve)"));
    assert!(
        page.body
            .contains("New network:</strong> first request from network 10.1.0.0/24")
    );
    assert!(page.body.contains("Critical risk"));
    assert!(page.body.contains("15 min left to decide"));
    assert!(
        page.body
            .contains("Approve<span>let ci-bot run this request once")
    );
    assert!(page.body.contains("Deny<span>"));
    assert!(
        !page.body.contains("name=\"code\""),
        "no code field by default"
    );

    let missing = browser.get("/approvals/ap_nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing
            .body
            .contains("There is no approval request ap_nothing")
    );
}

#[tokio::test]
async fn code_on_decision_when_configured() {
    let config = ApprovalConfig {
        totp_on_decision: true,
        ..ApprovalConfig::default()
    };
    let mut fixture = Fixture::with(config, true);
    fixture.add_approver("alice", &["approvers"]);
    fixture.add_identity("ci-bot");
    fixture.add_approval("ap_one", "ci-bot", "/orders/7", 1);
    let mut browser = fixture.signed_in("alice").await;
    let page = browser.get("/approvals/ap_one").await;
    assert!(page.body.contains("name=\"code\""));

    let page = browser.decide("ap_one", "approve", "", "").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("Enter the current code from your authenticator app")
    );
    // The sign-in code was used; the same step's code is a replay.
    let page = browser
        .decide("ap_one", "approve", "", &fixture.code("alice"))
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("already used"), "{}", page.body);
    fixture.next_step();
    let page = browser
        .decide("ap_one", "approve", "", &fixture.code("alice"))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(fixture.approval("ap_one").state, ApprovalState::Approved);
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    for path in [
        "/sign-in",
        "/approvals",
        "/approvals/ap_one",
        "/nowhere",
        "/static/htmx.min.js",
        "/static/console.css",
    ] {
        let page = browser.get(path).await;
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            page.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            page.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        let cache = page.header("cache-control").unwrap_or_default();
        if path.starts_with("/static/") {
            assert!(cache.contains("max-age=31536000"), "{path}: {cache}");
        } else {
            assert_eq!(cache, "no-store", "{path}");
        }
    }
    let htmx = browser.get("/static/htmx.min.js").await;
    assert_eq!(htmx.status, StatusCode::OK);
    assert_eq!(
        htmx.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(htmx.body.starts_with("var htmx="));
    let root = browser.get("/").await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.header("location"), Some("/approvals"));
}

#[tokio::test]
async fn pages_have_no_inline_script_or_style() {
    let fixture = standard();
    let mut browser = fixture.signed_in("alice").await;
    for path in ["/sign-in", "/approvals", "/approvals/ap_one"] {
        let page = browser.get(path).await;
        assert!(!page.body.contains("style="), "{path}");
        assert!(!page.body.contains("<style"), "{path}");
        for (index, _) in page.body.match_indices("<script") {
            let tag = &page.body[index..index + page.body[index..].find('>').unwrap()];
            assert!(
                tag.contains(" src=\"/static/"),
                "{path}: inline script {tag}"
            );
        }
        for handler in ["onclick=", "onload=", "onsubmit=", "onerror="] {
            assert!(!page.body.contains(handler), "{path}: {handler}");
        }
    }
}
