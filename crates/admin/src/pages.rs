//! Routes and handlers of the console. Each handler reads or changes state
//! only through the approval desk, on a blocking thread because the desk
//! uses SQLite.

use std::sync::Arc;

use askama::Template;
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use serde::Deserialize;
use stepgate_core::IdentityName;
use stepgate_engine::{ApprovalDesk, DeskError};
use stepgate_store::{ApprovalState, VoteError};

use crate::session::Session;
use crate::views::{
    ApprovalPage, ApprovalView, HistoryRow, Layout, MessagePage, QueuePage, SignInPage, VoteView,
};
use crate::{Peer, Shared, assets};

/// Largest form body accepted, in bytes. The longest field is a comment of
/// at most 1000 characters.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Pending approvals listed on the queue page.
const QUEUE_LIMIT: usize = 200;
/// Recent approvals read to find the decided ones shown below the queue.
const RECENT_LIMIT: usize = 60;
/// Decided approvals shown below the queue.
const DECIDED_SHOWN: usize = 15;
/// Audit records of the identity shown on an approval's page.
const HISTORY_LIMIT: usize = 20;
/// Lifetime of the sign-in form's pre-session cookie, in seconds.
const PRE_SESSION_SECS: u64 = 1800;
/// Maximum characters of an approver name written to logs from a failed
/// sign-in.
const MAX_LOGGED_NAME: usize = 64;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/approvals", get(queue))
        .route("/approvals/{id}", get(approval))
        .route("/approvals/{id}/decide", post(decide))
        .route("/static/htmx.min.js", get(assets::htmx))
        .route("/static/console.css", get(assets::stylesheet))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(shared)
}

/// Cookie names: with the `__Host-` prefix when cookies are `Secure`, so a
/// sibling host cannot set them.
struct CookieNames {
    session: &'static str,
    pre_session: &'static str,
}

impl CookieNames {
    fn new(secure: bool) -> Self {
        if secure {
            Self {
                session: "__Host-stepgate-session",
                pre_session: "__Host-stepgate-sign-in",
            }
        } else {
            Self {
                session: "stepgate-session",
                pre_session: "stepgate-sign-in",
            }
        }
    }
}

/// Builds a `Set-Cookie` value: host-only, `HttpOnly`, `SameSite=Strict`, and
/// `Secure` when configured. An empty value with max age 0 deletes it.
fn set_cookie(shared: &Shared, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if shared.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    // Names are constants and values are base64url or empty, so the header
    // value is always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Finds the value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "approvals page template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered.\n",
            )
                .into_response()
        }
    }
}

fn message(
    status: StatusCode,
    session: Option<&Session>,
    heading: &str,
    text: impl Into<String>,
) -> Response {
    let page = MessagePage {
        layout: Layout::new(
            heading,
            session.map(|session| session.approver.to_string()),
            session.map(Session::csrf).unwrap_or(""),
        ),
        heading: heading.to_owned(),
        message: text.into(),
    };
    render(status, &page)
}

/// Builds the response to a POST from another site, sent before routing.
pub(crate) fn cross_site_response() -> Response<axum::body::Body> {
    message(
        StatusCode::FORBIDDEN,
        None,
        "Request rejected",
        "This form was sent from another site, so it was not accepted. Open the approvals page directly and try again.",
    )
}

/// Runs `work` against the desk on a blocking thread.
async fn with_desk<T, F>(shared: &Shared, work: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&ApprovalDesk) -> T + Send + 'static,
{
    let desk = shared.desk.clone();
    tokio::task::spawn_blocking(move || work(&desk))
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "approvals page task failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Something went wrong",
                "The page could not be loaded. Try again.",
            )
        })
}

fn store_unavailable(session: &Session, err: &dyn std::fmt::Display) -> Response {
    tracing::error!(approver = %session.approver, error = %err, "approvals page cannot read the store");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(session),
        "Approvals unavailable",
        "The approvals could not be read from the store. Try again in a moment; the gateway log has the error.",
    )
}

/// A request with a live session. Requests without one are sent to the
/// sign-in page, whatever other credentials they carry.
struct SignedIn(Session);

impl FromRequestParts<Arc<Shared>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let names = CookieNames::new(shared.settings.secure_cookies);
        let id = cookie(&parts.headers, names.session);
        if let Some(session) = id.and_then(|id| shared.sessions.get(id)) {
            // A removed approver's sessions end at their next request.
            match shared.desk.store().approver(&session.approver) {
                Ok(Some(_)) => return Ok(SignedIn(session)),
                Ok(None) => {
                    tracing::info!(approver = %session.approver, "session of a removed approver ended");
                    if let Some(id) = id {
                        shared.sessions.remove(id);
                    }
                }
                Err(err) => return Err(store_unavailable(&session, &err)),
            }
        }
        if parts.headers.contains_key("hx-request") {
            // htmx follows redirects inside XMLHttpRequest, so the HX-Redirect
            // header makes it load the sign-in page as a whole page instead.
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            response
                .headers_mut()
                .insert("hx-redirect", HeaderValue::from_static("/sign-in"));
            return Err(response);
        }
        Err(see_other("/sign-in"))
    }
}

async fn root() -> Response {
    see_other("/approvals")
}

async fn not_found(headers: HeaderMap, State(shared): State<Arc<Shared>>) -> Response {
    let names = CookieNames::new(shared.settings.secure_cookies);
    let session = cookie(&headers, names.session).and_then(|id| shared.sessions.get(id));
    message(
        StatusCode::NOT_FOUND,
        session.as_ref(),
        "Page not found",
        "There is no page at this address. The approvals are at /approvals.",
    )
}

/// Renders the sign-in form with a token bound to a new pre-session
/// cookie.
fn sign_in_form(shared: &Shared, status: StatusCode, name: &str, error: Option<&str>) -> Response {
    let names = CookieNames::new(shared.settings.secure_cookies);
    let Ok(pre) = shared.sessions.new_pre_session() else {
        tracing::error!("cannot make a sign-in form token: the random generator failed");
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "Sign-in unavailable",
            "The sign-in form could not be made. Try again; the gateway log has the error.",
        );
    };
    let page = SignInPage {
        layout: Layout::new("Sign in", None, ""),
        csrf: shared.sessions.sign_in_token(&pre),
        name: name.to_owned(),
        error: error.map(str::to_owned),
    };
    let mut response = render(status, &page);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(shared, names.pre_session, &pre, PRE_SESSION_SECS),
    );
    response
}

async fn sign_in_page(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let names = CookieNames::new(shared.settings.secure_cookies);
    if cookie(&headers, names.session).is_some_and(|id| shared.sessions.get(id).is_some()) {
        return see_other("/approvals");
    }
    sign_in_form(&shared, StatusCode::OK, "", None)
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

/// The one message for every failed sign-in, so it never reveals whether
/// an approver of that name exists.
const SIGN_IN_FAILED: &str = "Sign-in failed. Check your approver name and enter the current code from your authenticator app. Each code works only once, so if you just used one, wait for the next.";

async fn sign_in(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let names = CookieNames::new(shared.settings.secure_cookies);
    let pre = cookie(&headers, names.pre_session).unwrap_or("");
    let name = form.name.trim().to_owned();
    if !shared.sessions.sign_in_token_matches(pre, &form.csrf) {
        tracing::warn!(peer = %peer, "approvals sign-in rejected: form token missing or wrong");
        return sign_in_form(
            &shared,
            StatusCode::FORBIDDEN,
            &name,
            Some(
                "The sign-in form expired or was not sent from this page. Enter your name and a new code again.",
            ),
        );
    }
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    let attempt = name.clone();
    let outcome = match with_desk(&shared, move |desk| desk.sign_in(&attempt, &code, "web")).await {
        Ok(outcome) => outcome,
        Err(response) => return response,
    };
    match outcome {
        Ok(approver) => start_session(&shared, approver, peer),
        Err(DeskError::Store(err)) => {
            tracing::error!(peer = %peer, error = %err, "approvals sign-in could not be checked");
            sign_in_form(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                &name,
                Some("The sign-in could not be checked. Try again in a moment."),
            )
        }
        Err(err) => {
            let logged: String = name.chars().take(MAX_LOGGED_NAME).collect();
            tracing::warn!(peer = %peer, approver = ?logged, reason = sign_in_failure(&err), "approvals sign-in failed");
            sign_in_form(
                &shared,
                StatusCode::UNAUTHORIZED,
                &name,
                Some(SIGN_IN_FAILED),
            )
        }
    }
}

/// Returns a short failure reason for the log. The page shows one message
/// for all of them.
fn sign_in_failure(err: &DeskError) -> &'static str {
    match err {
        DeskError::UnknownApprover(_) => "unknown approver",
        DeskError::WrongCode(_) => "wrong code",
        DeskError::ReplayedCode(_) => "replayed code",
        DeskError::Locked { .. } => "approver locked",
        _ => "rejected",
    }
}

fn start_session(shared: &Shared, approver: IdentityName, peer: std::net::SocketAddr) -> Response {
    let names = CookieNames::new(shared.settings.secure_cookies);
    let Ok((id, _)) = shared.sessions.create(approver.clone()) else {
        tracing::error!(approver = %approver, "cannot start a session: the random generator failed");
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "Sign-in unavailable",
            "The session could not be started. Try again; the gateway log has the error.",
        );
    };
    tracing::info!(approver = %approver, peer = %peer, "approver signed in to the approvals page");
    let mut response = see_other("/approvals");
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            shared,
            names.session,
            &id,
            shared.settings.session_ttl.as_secs(),
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(shared, names.pre_session, "", 0),
    );
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn csrf_rejected(session: &Session, peer: std::net::SocketAddr, path: &str) -> Response {
    tracing::warn!(approver = %session.approver, peer = %peer, path, "approvals page rejected a form: CSRF token missing or wrong");
    message(
        StatusCode::FORBIDDEN,
        Some(session),
        "Form expired",
        "This form was not accepted because its security token is missing or out of date. Reload the page and try again.",
    )
}

async fn sign_out(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return csrf_rejected(&session, peer, "/sign-out");
    }
    let names = CookieNames::new(shared.settings.secure_cookies);
    if let Some(id) = cookie(&headers, names.session) {
        shared.sessions.remove(id);
    }
    tracing::info!(approver = %session.approver, peer = %peer, "approver signed out of the approvals page");
    let mut response = see_other("/sign-in");
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&shared, names.session, "", 0),
    );
    response
}

async fn queue(State(shared): State<Arc<Shared>>, SignedIn(session): SignedIn) -> Response {
    let listed = with_desk(&shared, |desk| {
        let pending = desk.approvals(true, QUEUE_LIMIT)?;
        let recent = desk.approvals(false, RECENT_LIMIT)?;
        Ok::<_, stepgate_store::StoreError>((pending, recent))
    })
    .await;
    let (pending, recent) = match listed {
        Ok(Ok(listed)) => listed,
        Ok(Err(err)) => return store_unavailable(&session, &err),
        Err(response) => return response,
    };
    let now = shared.settings.clock.now();
    let mut pending = pending;
    // The request that expires first is the most urgent, so it comes first.
    pending.sort_by_key(|record| record.expires_at);
    let waiting = pending
        .iter()
        .map(|record| ApprovalView::new(record, now))
        .filter(|view| view.open)
        .collect();
    let decided = recent
        .iter()
        .map(|record| ApprovalView::new(record, now))
        .filter(|view| !view.open)
        .take(DECIDED_SHOWN)
        .collect();
    let page = QueuePage {
        layout: Layout::new(
            "Approvals",
            Some(session.approver.to_string()),
            session.csrf(),
        ),
        pending: waiting,
        decided,
    };
    render(StatusCode::OK, &page)
}

async fn approval(
    State(shared): State<Arc<Shared>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    approval_page(&shared, &session, &id, StatusCode::OK, None, String::new()).await
}

/// Renders approval `id` with its identity's history and owners, and the
/// decision form while it is open.
async fn approval_page(
    shared: &Shared,
    session: &Session,
    id: &str,
    status: StatusCode,
    error: Option<String>,
    comment: String,
) -> Response {
    let wanted = id.to_owned();
    let loaded = with_desk(shared, move |desk| {
        let Some(record) = desk.approval(&wanted)? else {
            return Ok(None);
        };
        let history = desk.history(&record.identity, HISTORY_LIMIT)?;
        let owners = desk.owners(&record.identity)?;
        Ok::<_, stepgate_store::StoreError>(Some((record, history, owners)))
    })
    .await;
    let (record, history, owners) = match loaded {
        Ok(Ok(Some(loaded))) => loaded,
        Ok(Ok(None)) => {
            return message(
                StatusCode::NOT_FOUND,
                Some(session),
                "Approval not found",
                format!(
                    "There is no approval request {id}. It may have been removed; the queue lists every open request."
                ),
            );
        }
        Ok(Err(err)) => return store_unavailable(session, &err),
        Err(response) => return response,
    };
    let now = shared.settings.clock.now();
    let view = ApprovalView::new(&record, now);
    let page = ApprovalPage {
        layout: Layout::new(
            format!("{} {} by {}", view.method, view.target, view.identity),
            Some(session.approver.to_string()),
            session.csrf(),
        ),
        viewer_is_owner: owners.contains(&session.approver),
        viewer_vote: record
            .votes
            .iter()
            .find(|vote| vote.approver == session.approver)
            .map(VoteView::new),
        owners: owners.iter().map(ToString::to_string).collect(),
        history: history.iter().map(HistoryRow::new).collect(),
        csrf: session.csrf().to_owned(),
        code_required: shared.desk.config().totp_on_decision,
        approval: view,
        error,
        comment,
    };
    render(status, &page)
}

#[derive(Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    code: String,
}

async fn decide(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return csrf_rejected(&session, peer, "/approvals/{id}/decide");
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return approval_page(
                &shared,
                &session,
                &id,
                StatusCode::BAD_REQUEST,
                Some("Choose Approve or Deny.".to_owned()),
                form.comment,
            )
            .await;
        }
    };
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    let approver = session.approver.clone();
    let comment = form.comment.clone();
    let wanted = id.clone();
    let outcome = with_desk(&shared, move |desk| {
        let code = (!code.is_empty()).then_some(code.as_str());
        desk.decide(&wanted, &approver, approve, &comment, code, false, "web")
    })
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(response) => return response,
    };
    match outcome {
        Ok(record) => {
            tracing::info!(
                approval.id = %id,
                approver = %session.approver,
                peer = %peer,
                approve,
                state = record.state.as_str(),
                "decision recorded from the approvals page"
            );
            see_other(&format!("/approvals/{id}"))
        }
        Err(err) => {
            let (status, text) = decision_error(&err);
            if status.is_server_error() {
                tracing::error!(approval.id = %id, approver = %session.approver, error = %err, "decision could not be recorded");
            } else {
                tracing::info!(approval.id = %id, approver = %session.approver, error = %err, "decision rejected on the approvals page");
            }
            approval_page(&shared, &session, &id, status, Some(text), form.comment).await
        }
    }
}

/// Maps a decision the desk rejected to a status and plain words.
fn decision_error(err: &DeskError) -> (StatusCode, String) {
    match err {
        DeskError::OwnRequest { .. } => (
            StatusCode::FORBIDDEN,
            "You cannot decide this request because your own identity made it. Ask another approver.".to_owned(),
        ),
        DeskError::Owner { identity, .. } => (
            StatusCode::FORBIDDEN,
            format!("You own identity {identity}, and owners never decide their own identities' requests. Ask another approver of the group to decide."),
        ),
        DeskError::NotInGroup { group, .. } => (
            StatusCode::FORBIDDEN,
            format!("You are not in approver group {group}, which decides this request. Ask a member of {group}."),
        ),
        DeskError::OutsideWindow { group, window, .. } => (
            StatusCode::FORBIDDEN,
            format!("Approver group {group} may decide only {window}. Wait for that window, or ask a member of another group."),
        ),
        DeskError::CodeRequired(_) => (
            StatusCode::FORBIDDEN,
            "Enter the current code from your authenticator app: every decision needs one.".to_owned(),
        ),
        DeskError::WrongCode(_) => (
            StatusCode::FORBIDDEN,
            "The authenticator code is wrong. Enter the current code and try again.".to_owned(),
        ),
        DeskError::ReplayedCode(_) => (
            StatusCode::FORBIDDEN,
            "That authenticator code was already used. Wait for the next code and try again.".to_owned(),
        ),
        DeskError::Locked { until, .. } => (
            StatusCode::FORBIDDEN,
            format!(
                "Too many wrong codes: your decisions are blocked until {}.",
                crate::views::clock_text(*until)
            ),
        ),
        DeskError::UnknownApprover(name) => (
            StatusCode::FORBIDDEN,
            format!("Approver {name} no longer exists, so the decision was not recorded. Sign out."),
        ),
        DeskError::NotFound(id) | DeskError::Vote(VoteError::NotFound(id)) => (
            StatusCode::NOT_FOUND,
            format!("There is no approval request {id}."),
        ),
        DeskError::Vote(VoteError::Closed { state, .. }) => (
            StatusCode::CONFLICT,
            match ApprovalState::parse(state) {
                Some(ApprovalState::Expired) => {
                    "This request expired before it was decided, so it can no longer be approved or denied.".to_owned()
                }
                _ => format!("This request is already {state}, so it can no longer be approved or denied."),
            },
        ),
        DeskError::Vote(VoteError::AlreadyVoted { .. }) => (
            StatusCode::CONFLICT,
            "You already decided this request. When it needs more approvals, other approvers must give them.".to_owned(),
        ),
        DeskError::Vote(VoteError::Store(_)) | DeskError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The decision could not be saved. Try again in a moment.".to_owned(),
        ),
    }
}
