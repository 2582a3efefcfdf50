//! The approvals page in a real browser: the real binary keeps a bot's
//! request waiting, and headless Chromium, driven through chromedriver, signs an
//! approver in and approves or denies it on the admin listener.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium` and `chromium-driver`) and fails when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use support::{CurlResponse, Gateway, Upstream, curl, free_port, oathtool};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SESSION_COOKIE: &str = "__Host-stepgate-session";
/// Maximum wait for anything the browser or the gateway does.
const PATIENCE: Duration = Duration::from_secs(30);

const ZONE: &str = r#"
[[zones]]
name = "orders"
prefix = "/orders"
approval_for = ["write", "delete"]
"#;

/// A chromedriver process on a free loopback port, with its own Chromium
/// profile directory; both end with it.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the browser test needs Chromium and chromedriver \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    /// Opens a headless Chromium session.
    async fn browser(&self) -> Client {
        let options = serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", self.profile.path().display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), "chrome".into());
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        ClientBuilder::rustls()
            .expect("rustls client for chromedriver")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("chromedriver opens a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds an approver and returns the base32 secret of their TOTP factor.
fn add_approver(gateway: &Gateway, name: &str) -> String {
    let uri = gateway.cli_ok(&["approver", "add", name]);
    uri.trim()
        .split(['?', '&'])
        .find_map(|part| part.strip_prefix("secret="))
        .expect("otpauth URI has a secret")
        .to_owned()
}

/// Issues a token for identity `bot`; returns its Authorization header.
fn bot_auth(gateway: &Gateway) -> String {
    let token = gateway.cli_ok(&["token", "issue", "bot"]).trim().to_owned();
    format!("Authorization: Bearer {token}")
}

/// Sends the bot's DELETE /orders/7 in the background, held with
/// `Prefer: wait=N`.
fn held_delete(gateway: &Gateway, auth: &str, wait: u64) -> thread::JoinHandle<CurlResponse> {
    let url = gateway.url("/orders/7");
    let auth = auth.to_owned();
    thread::spawn(move || {
        curl(
            "127.0.0.2",
            &url,
            &[
                "-X",
                "DELETE",
                "-H",
                &auth,
                "-H",
                &format!("Prefer: wait={wait}"),
                // Overrides the helper's 20 s limit: the browser steps
                // can take longer on a busy machine.
                "--max-time",
                "90",
            ],
        )
    })
}

/// Waits until one approval is pending; returns it as `approvals list`
/// prints it.
fn wait_for_pending(gateway: &Gateway) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed: Vec<serde_json::Value> = gateway
            .cli_ok(&["approvals", "list", "--format", "json"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if let [approval] = listed.as_slice() {
            return approval.clone();
        }
        assert!(Instant::now() < deadline, "no pending approval: {listed:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn page_url(gateway: &Gateway, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", gateway.admin_port)
}

/// Waits until the page's text contains `text`; returns the text.
async fn wait_for_text(browser: &Client, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body = match browser.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains(text) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "page {} never showed {text:?}; it shows:\n{body}",
            browser.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_path(browser: &Client, path: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let url = browser.current_url().await.unwrap();
        if url.path() == path {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "browser stayed at {url}, expected path {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs `name` in through the sign-in form with a code from oathtool.
async fn sign_in(browser: &Client, gateway: &Gateway, name: &str, secret: &str) {
    browser.goto(&page_url(gateway, "/")).await.unwrap();
    wait_for_path(browser, "/sign-in").await;
    let field = browser.find(Locator::Id("name")).await.unwrap();
    field.send_keys(name).await.unwrap();
    let code = browser.find(Locator::Id("code")).await.unwrap();
    code.send_keys(&oathtool(secret)).await.unwrap();
    browser
        .find(Locator::Css(
            "form[action='/sign-in'] button[type='submit']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(browser, "/approvals").await;
    wait_for_text(browser, &format!("Signed in as {name}")).await;
}

/// Opens the pending approval from the queue with its button.
async fn open_from_queue(browser: &Client, id: &str) {
    browser
        .find(Locator::Css(&format!("a.button[href='/approvals/{id}']")))
        .await
        .expect("the queue links the pending approval")
        .click()
        .await
        .unwrap();
    wait_for_path(browser, &format!("/approvals/{id}")).await;
    wait_for_text(browser, "Why a person must decide").await;
}

async fn write_comment(browser: &Client, comment: &str) {
    browser
        .find(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys(comment)
        .await
        .unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no element {css}: {err}"))
        .click()
        .await
        .unwrap();
}

/// Builds a runtime for the WebDriver client; the gateway helpers block, so
/// they run outside it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `target/test-artefacts`, beside the directory Cargo gives integration
/// tests for scratch files.
fn artefact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .join("test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn browser_approves_held_request() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, ZONE);
    gateway.cli_ok(&["identity", "add", "bot"]);
    let auth = bot_auth(&gateway);
    let alice = add_approver(&gateway, "alice");
    gateway.start();
    // Reads teach the bot's baseline, so its first DELETE is a new
    // operation with a reason to show.
    gateway.learn(&auth);
    let learned = upstream.count();
    let held = held_delete(&gateway, &auth, 60);
    let pending = wait_for_pending(&gateway);
    let id = pending["id"].as_str().unwrap().to_owned();

    let driver = Driver::start();
    runtime().block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &gateway, "alice", &alice).await;

        // Chromium keeps the Secure, __Host- cookie on http://127.0.0.1
        // because it treats loopback as a secure context.
        let cookie = browser
            .get_named_cookie(SESSION_COOKIE)
            .await
            .expect("Chromium kept the session cookie");
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
        assert_eq!(cookie.path(), Some("/"));

        // htmx loaded under the page's CSP.
        let htmx = browser
            .execute("return typeof window.htmx;", Vec::new())
            .await
            .unwrap();
        assert_eq!(htmx, "object");

        let queue = wait_for_text(&browser, "DELETE /orders/7").await;
        assert!(queue.contains("bot"), "{queue}");
        assert!(queue.contains("Waiting for your decision"), "{queue}");
        assert!(queue.contains("0 of 1 approvals"), "{queue}");
        assert!(queue.contains("left to decide"), "{queue}");
        let reasons = pending["reasons"].as_array().unwrap();
        if reasons.is_empty() {
            assert!(queue.contains("Approval rule:"), "{queue}");
        }
        for reason in reasons {
            let reason = reason.as_str().unwrap();
            let detail = reason.split_once(": ").map_or(reason, |(_, detail)| detail);
            assert!(
                queue.contains(detail),
                "reason {reason:?} not shown:\n{queue}"
            );
        }
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        std::fs::write(artefact_dir().join("approvals-queue.png"), &png).unwrap();

        open_from_queue(&browser, &id).await;
        let detail = wait_for_text(&browser, "Recent activity of bot").await;
        assert!(detail.contains("approval request"), "{detail}");
        let png = browser.screenshot().await.unwrap();
        std::fs::write(artefact_dir().join("approvals-detail.png"), &png).unwrap();
        write_comment(&browser, "ticket OPS-1, checked with the bot's owner").await;
        click(&browser, "button.approve").await;
        wait_for_text(&browser, "You approved this request").await;
        browser.close().await.unwrap();
    });

    let response = held.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(upstream.count(), learned + 1);
    assert_eq!(upstream.last().method, "DELETE");
    let audit = gateway.audit();
    let vote = audit
        .iter()
        .find(|record| record["event"] == "approval_vote")
        .expect("vote recorded");
    assert_eq!(vote["actor"], "alice");
    assert_eq!(vote["decision"], "approve");
    let detail = vote["detail"].as_str().unwrap();
    assert!(detail.contains("via web"), "{detail}");
    assert!(detail.contains("ticket OPS-1"), "{detail}");
    let sign_in = audit
        .iter()
        .find(|record| record["event"] == "approver_sign_in")
        .expect("sign-in recorded");
    assert_eq!(sign_in["decision"], "allow");
}

#[test]
fn browser_denies_held_request() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, ZONE);
    gateway.cli_ok(&["identity", "add", "bot"]);
    let auth = bot_auth(&gateway);
    let alice = add_approver(&gateway, "alice");
    gateway.start();
    let held = held_delete(&gateway, &auth, 60);
    let id = wait_for_pending(&gateway)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let driver = Driver::start();
    runtime().block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &gateway, "alice", &alice).await;
        wait_for_text(&browser, "DELETE /orders/7").await;
        open_from_queue(&browser, &id).await;
        write_comment(&browser, "not during the freeze").await;
        click(&browser, "button.deny").await;
        wait_for_text(&browser, "You denied this request").await;
        wait_for_text(&browser, "Denied by alice").await;
        browser.close().await.unwrap();
    });

    let response = held.join().unwrap();
    assert_eq!(response.status, 403, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"], "approval_denied");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("denied by alice: not during the freeze"),
        "{message}"
    );
    assert_eq!(upstream.count(), 0);
}

#[test]
fn browser_owner_cannot_approve() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::new(upstream.addr, ZONE);
    let alice = add_approver(&gateway, "alice");
    let bob = add_approver(&gateway, "bob");
    gateway.cli_ok(&["identity", "add", "bot", "--owner", "alice"]);
    let auth = bot_auth(&gateway);
    gateway.start();
    let held = held_delete(&gateway, &auth, 60);
    let id = wait_for_pending(&gateway)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let driver = Driver::start();
    runtime().block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &gateway, "alice", &alice).await;
        wait_for_text(&browser, "DELETE /orders/7").await;
        open_from_queue(&browser, &id).await;
        let page = wait_for_text(&browser, "You own identity bot").await;
        assert!(page.contains("alice (owners cannot approve)"), "{page}");
        click(&browser, "button.approve").await;
        let page = wait_for_text(&browser, "Not recorded.").await;
        assert!(
            page.contains("owners never decide their own identities' requests"),
            "{page}"
        );
        assert!(page.contains("Waiting for a decision"), "{page}");
        let png = browser.screenshot().await.unwrap();
        std::fs::write(artefact_dir().join("approvals-owner-refused.png"), &png).unwrap();
        browser.close().await.unwrap();
    });

    // The refusal left the request pending for another approver.
    let listed = gateway.cli_ok(&["approvals", "list", "--format", "json"]);
    assert!(listed.contains(&id), "{listed}");
    gateway.cli_ok(&[
        "approvals",
        "approve",
        &id,
        "--as",
        "bob",
        "--totp",
        &oathtool(&bob),
    ]);
    let response = held.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let refused = gateway
        .audit()
        .into_iter()
        .find(|record| record["event"] == "approval_vote" && record["decision"] == "rejected")
        .expect("the refused decision is audited");
    assert_eq!(refused["actor"], "alice");
}
