//! The web pages under `/ui/` and the public badges under `/badge/`: server-rendered
//! HTML (templates checked at compile time by `maud`), every asset embedded, a
//! little JavaScript only for the live log and local times.
//!
//! A page shows what its session's token sees over the API: the same visibility
//! helpers decide (an object the token may not see is a 404 page). Sessions are a
//! random cookie stored hashed in the ledger, expiring, and ended with their token.
//! State-changing forms are refused unless the browser says the request came from
//! this origin (`Sec-Fetch-Site`, else `Origin`).

mod pages;
mod svg;

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::api::{
    ApiError, AppState, Caller, ClientAddr, enqueue_error, hash_bearer, mint_bearer, token_allows,
    visible_job, visible_project,
};
use crate::enqueue::JobRequest;
use crate::ledger::{ActiveJob, Job, JobStatus, LedgerError, Trigger};
use crate::runner::CancelResult;

/// The session cookie's name.
pub const COOKIE: &str = "ct_session";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// Every route of the pages and badges: (method, path), as [`routes`] serves them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/ui"),
    ("get", "/ui/"),
    ("get", "/ui/login"),
    ("post", "/ui/login"),
    ("post", "/ui/logout"),
    ("get", "/ui/projects/{name}"),
    ("post", "/ui/projects/{name}/run"),
    ("get", "/ui/jobs/{id}"),
    ("get", "/ui/jobs/{id}/log.txt"),
    ("get", "/ui/jobs/{id}/events"),
    ("post", "/ui/jobs/{id}/run-again"),
    ("post", "/ui/jobs/{id}/cancel"),
    ("get", "/ui/registry"),
    ("get", "/ui/patches"),
    ("get", "/ui/assets/app.css"),
    ("get", "/ui/assets/app.js"),
    ("get", "/ui/{*rest}"),
    ("post", "/ui/{*rest}"),
    ("get", "/badge/{project}/{file}"),
];

/// The routes of the pages and badges (the caller adds the LAN check).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(farm))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/projects/{name}", get(project))
        .route("/ui/projects/{name}/run", post(run))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/log.txt", get(job_log))
        .route("/ui/jobs/{id}/events", get(job_events))
        .route("/ui/jobs/{id}/run-again", post(run_again))
        .route("/ui/jobs/{id}/cancel", post(cancel))
        .route("/ui/registry", get(registry))
        .route("/ui/patches", get(patches))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/assets/app.js", get(js))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .route("/badge/{project}/{file}", get(badge))
        .method_not_allowed_fallback(|| async {
            UiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this page does not accept that method",
            )
        })
}

/// What a page answers when it cannot: an HTML page with the status.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::new(e.status(), e.message())
    }
}

impl From<LedgerError> for UiError {
    fn from(e: LedgerError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        page_response(
            self.status,
            pages::error_page(&title, self.status.as_u16(), &self.message),
        )
    }
}

/// A bug must not reach a browser as a dropped connection.
pub fn panic_page(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a page handler panicked; answered 500");
    UiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the farm's log",
    )
    .into_response()
}

/// An HTML page with the headers every page carries: never cached, never framed,
/// scripts and styles from this origin only.
fn page_response(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        markup.into_string(),
    )
        .into_response()
}

fn html(markup: maud::Markup) -> Response {
    page_response(StatusCode::OK, markup)
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A browser's cross-site request is refused: `Sec-Fetch-Site` must say
/// `same-origin`, or (older browsers) `Origin` must be this host. A request with
/// neither comes from a script, not a page another site showed, and is let through.
fn same_origin(headers: &HeaderMap) -> Result<(), UiError> {
    let refused = || {
        UiError::new(
            StatusCode::FORBIDDEN,
            "refused: this form was not sent from the farm's own pages",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        return if site.as_bytes() == b"same-origin" {
            Ok(())
        } else {
            Err(refused())
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        return if !host.is_empty() && authority.eq_ignore_ascii_case(host) {
            Ok(())
        } else {
            Err(refused())
        };
    }
    Ok(())
}

/// A logged-in page visitor: the token behind the session cookie.
pub struct Session {
    caller: Caller,
}

/// Without a live session, a page answers 303 to the login form.
pub struct ToLogin;

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        see_other("/ui/login")
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(ToLogin.into_response());
        };
        let hash = hash_bearer(&id);
        let now = state.now_ms();
        let token = state
            .db
            .read(move |l| l.session_token(&hash, now))
            .await
            .map_err(|e| UiError::from(e).into_response())?;
        match token {
            Some(t) if token_allows(&t, parts.extensions.get::<ClientAddr>()) => Ok(Session {
                caller: Caller {
                    name: t.name,
                    is_admin: t.is_admin,
                },
            }),
            _ => Err(ToLogin.into_response()),
        }
    }
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(_session: Session) -> UiError {
    UiError::new(StatusCode::NOT_FOUND, "no such page")
}

// ---------------------------------------------------------------- login, logout

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form() -> Response {
    html(pages::login(None))
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let refuse = |msg: &str| page_response(StatusCode::UNAUTHORIZED, pages::login(Some(msg)));
    let Ok(Form(form)) = form else {
        return Ok(refuse("send the form field `token` (a bearer token)"));
    };
    let bearer = form.token.trim().to_owned();
    if bearer.is_empty() {
        return Ok(refuse("enter a bearer token"));
    }
    let hash = hash_bearer(&bearer);
    let Some(token) = state.db.read(move |l| l.token_by_hash(&hash)).await? else {
        return Ok(refuse("unknown or revoked token"));
    };
    let client = client.map(|c| c.0);
    if !token_allows(&token, client.as_ref()) {
        return Ok(refuse("this token may not be used from this address"));
    }
    let id = mint_bearer().map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let (hash, name) = (hash_bearer(&id), token.name.clone());
    let now = state.now_ms();
    let secs = state.config.ui_session_secs;
    let expires = now.saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    if !state
        .db
        .write(move |l| l.create_session(&hash, &name, now, expires))
        .await?
    {
        return Ok(refuse("unknown or revoked token"));
    }
    let secure = if client.is_some_and(|c| c.tls) {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={secs}{secure}");
    let mut resp = see_other("/ui/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, UiError> {
    same_origin(&headers)?;
    if let Some(id) = cookie(&headers, COOKIE) {
        let hash = hash_bearer(&id);
        state.db.write(move |l| l.end_session(&hash)).await?;
    }
    let mut resp = see_other("/ui/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ct_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

// ---------------------------------------------------------------- pages

/// One command of a subproject with its last run and any active job.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Subproject path.
    pub subproject: String,
    /// Command name.
    pub command: String,
    /// The newest finished job.
    pub last: Option<Job>,
    /// A queued or running job, the newest.
    pub active: Option<ActiveJob>,
}

/// A project as the farm grid shows it.
#[derive(Debug, Clone)]
pub struct ProjectRow {
    /// Name.
    pub name: String,
    /// Its commands.
    pub cells: Vec<Cell>,
    /// Why its commands cannot be listed, if they cannot.
    pub problem: Option<String>,
}

/// The top of the farm page.
#[derive(Debug, Clone, Default)]
pub struct FarmSummary {
    /// Queued jobs (of projects the token sees).
    pub queued: usize,
    /// Running jobs (of projects the token sees).
    pub running: usize,
    /// Workers.
    pub workers: usize,
    /// Registry revision.
    pub revision: Option<String>,
    /// Manifests with errors.
    pub manifest_errors: usize,
}

/// The grid rows of `projects` (all the caller may see when `None`).
fn project_rows(
    l: &crate::ledger::Ledger,
    caller: &Caller,
    only: Option<&str>,
) -> Result<(Vec<ProjectRow>, Vec<ActiveJob>), LedgerError> {
    let snapshot = l.snapshot()?;
    let recipes = crate::enqueue::recipes(&snapshot);
    let active = l.active_jobs()?;
    // The newest active job of each command.
    let mut newest: std::collections::HashMap<(&str, &str, &str), &ActiveJob> =
        std::collections::HashMap::new();
    for j in &active {
        let key = (j.project.as_str(), j.subproject.as_str(), j.recipe.as_str());
        if newest.get(&key).is_none_or(|n| n.created_at < j.created_at) {
            newest.insert(key, j);
        }
    }
    let mut rows = Vec::new();
    for o in snapshot.values() {
        if o.kind != crate::manifest::Kind::Project
            || o.retired_at.is_some()
            || !caller.can_see(o)
            || only.is_some_and(|n| n != o.name)
        {
            continue;
        }
        let spec = match crate::enqueue::project_spec(o) {
            Ok(s) => s,
            Err(e) => {
                rows.push(ProjectRow {
                    name: o.name.clone(),
                    cells: Vec::new(),
                    problem: Some(e.to_string()),
                });
                continue;
            }
        };
        let mut cells = Vec::new();
        for sp in &spec.subprojects {
            for command in crate::manifest::resolve::command_names(sp, &recipes) {
                let last = l.last_finished_job(&o.name, &sp.path, &command)?;
                let now_active = newest
                    .get(&(o.name.as_str(), sp.path.as_str(), command.as_str()))
                    .map(|j| (*j).clone());
                cells.push(Cell {
                    subproject: sp.path.clone(),
                    command,
                    last,
                    active: now_active,
                });
            }
        }
        rows.push(ProjectRow {
            name: o.name.clone(),
            cells,
            problem: None,
        });
    }
    let visible: std::collections::HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let active = active
        .iter()
        .filter(|j| caller.is_admin || visible.contains(j.project.as_str()))
        .cloned()
        .collect();
    Ok((rows, active))
}

async fn farm(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    let caller = s.caller.clone();
    let (rows, active, status, errors) = state
        .db
        .read(move |l| {
            let (rows, active) = project_rows(l, &caller, None)?;
            let status = l.registry_status()?;
            let errors = l
                .manifest_statuses()?
                .iter()
                .filter(|m| m.last_error.is_some())
                .count();
            Ok((rows, active, status, errors))
        })
        .await?;
    let summary = FarmSummary {
        queued: active
            .iter()
            .filter(|j| j.status == JobStatus::Queued)
            .count(),
        running: active
            .iter()
            .filter(|j| j.status == JobStatus::Running)
            .count(),
        workers: state.runner.workers(),
        revision: status.and_then(|s| s.revision),
        manifest_errors: errors,
    };
    Ok(html(pages::farm(
        &s.caller,
        &summary,
        &rows,
        state.now_ms(),
    )))
}

/// A schedule of a project, with its next fire.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    /// Name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// The command it runs.
    pub recipe: String,
    /// Next fire (ms), when known.
    pub next_fire_at: Option<i64>,
    /// Whether it is suspended.
    pub suspended: bool,
}

/// Everything the project page shows.
#[derive(Debug, Clone)]
pub struct ProjectView {
    /// The stored project.
    pub project: crate::ledger::StoredObject,
    /// Its grid row.
    pub row: Option<ProjectRow>,
    /// Its schedules.
    pub schedules: Vec<ScheduleView>,
    /// Recent jobs, newest first.
    pub jobs: Vec<Job>,
    /// Findings per finished run, oldest first.
    pub trend: Vec<crate::ledger::TrendPoint>,
}

async fn project(
    State(state): State<AppState>,
    s: Session,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    let project = visible_project(&state, &s.caller, &name).await?;
    let caller = s.caller.clone();
    let view = state
        .db
        .read(move |l| {
            let (mut rows, _) = project_rows(l, &caller, Some(&project.name))?;
            let schedules = l
                .active_schedules()?
                .into_iter()
                .filter_map(|row| {
                    let spec: crate::manifest::ScheduleSpec =
                        serde_json::from_value(row.spec).ok()?;
                    spec.projects.matches(&project.name).then(|| ScheduleView {
                        name: row.name,
                        cron: spec.cron,
                        timezone: spec.timezone,
                        recipe: spec.recipe,
                        next_fire_at: row.next_fire_at,
                        suspended: spec.suspend.is_some(),
                    })
                })
                .collect();
            let jobs = l.list_jobs(&crate::ledger::JobFilter {
                project: Some(project.name.clone()),
                limit: 25,
                ..Default::default()
            })?;
            let trend = l.findings_trend(&project.name, 40)?;
            Ok(ProjectView {
                row: rows.pop(),
                project,
                schedules,
                jobs,
                trend,
            })
        })
        .await?;
    Ok(html(pages::project(&s.caller, &view, state.now_ms())))
}

/// Filters of the job page's findings table.
#[derive(Debug, Default, Deserialize)]
pub struct FindingsFilter {
    /// `new` or `unchanged`.
    #[serde(default)]
    pub state: Option<String>,
    /// A finding kind.
    #[serde(default)]
    pub kind: Option<String>,
}

/// Lines of log the job page shows, at most (its script then follows the rest).
const PAGE_LOG_LINES: usize = 2000;

/// Bytes of the log's end the job page reads for those lines.
const PAGE_LOG_BYTES: u64 = 256 * 1024;

/// Most findings the job page lists (the API and SARIF give all of them).
pub const PAGE_FINDINGS: usize = 500;

/// The end of a job's log as the page shows it.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    /// Its last lines (each with its line end, when it has one).
    pub lines: Vec<String>,
    /// Whether earlier output is not shown.
    pub cut: bool,
    /// The byte offset the shown text ends at: the live log continues from there.
    pub end: u64,
}

fn log_tail(start: u64, bytes: &[u8]) -> LogTail {
    let end = start + bytes.len() as u64;
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut cut = false;
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial first line
        cut = true;
    }
    if lines.len() > PAGE_LOG_LINES {
        lines.drain(..lines.len() - PAGE_LOG_LINES);
        cut = true;
    }
    LogTail {
        lines: lines.into_iter().map(str::to_owned).collect(),
        cut,
        end,
    }
}

async fn job(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    filter: Result<Query<FindingsFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let filter = filter.map(|q| q.0).unwrap_or_default();
    let job = visible_job(&state, &s.caller, &id).await?;
    let jid = job.id.clone();
    let findings = state.db.read(move |l| l.findings_of_job(&jid)).await?;
    let (start, bytes) = state.logs.tail_window(&job.id, PAGE_LOG_BYTES).await;
    let log = log_tail(start, &bytes);
    Ok(html(pages::job(
        &s.caller,
        &job,
        &log,
        &findings,
        &filter,
        state.now_ms(),
    )))
}

async fn job_log(
    State(state): State<AppState>,
    s: Session,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let job = visible_job(&state, &s.caller, &id).await?;
    let size = state.logs.size(&job.id).await;
    let body = axum::body::Body::from(state.logs.read(&job.id, 0, size).await);
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}

/// Takes the text off the front of `carry`: every complete character (bytes that
/// are not UTF-8 become U+FFFD), keeping only an unfinished character at its end
/// for the next chunk. With `last`, nothing is kept.
pub fn take_text(carry: &mut Vec<u8>, last: bool) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good));
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &bad[n..];
                    }
                    None if last => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &[];
                        break;
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let kept = rest.len();
    carry.drain(..carry.len() - kept);
    out
}

/// Where the live log starts: `?from=` (the offset the page's text ends at).
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Byte offset.
    #[serde(default)]
    pub from: Option<String>,
}

fn sse_log(text: String, offset: u64) -> Event {
    Event::default()
        .event("log")
        .id(offset.to_string())
        .data(serde_json::Value::from(text).to_string())
}

/// Server-Sent Events of a job's log: `log` events (JSON strings of text, each
/// with the byte offset it reaches as its id) from `?from=` — or, when the browser
/// reconnects, from its `Last-Event-ID` — fed as the log grows, then one `end`
/// event with the job's status.
async fn job_events(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let job = visible_job(&state, &s.caller, &id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from = resume
        .or_else(|| query.ok().and_then(|q| q.0.from))
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                UiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("`{v}` is not a byte offset of the log"),
                )
            })
        })
        .transpose()?
        .unwrap_or(0);
    let chunks = crate::api::follow(&state, &job, from).await?;
    let (db, jid) = (state.db.clone(), job.id.clone());
    // Bytes read but not yet sent (an unfinished character), and the offset read to.
    let carry = std::sync::Arc::new(std::sync::Mutex::new((Vec::<u8>::new(), from)));
    let tail = carry.clone();
    let log = chunks.filter_map(move |chunk| {
        let carry = carry.clone();
        async move {
            let chunk = chunk.ok()?;
            let mut c = carry.lock().ok()?;
            c.0.extend_from_slice(&chunk);
            c.1 += chunk.len() as u64;
            let text = take_text(&mut c.0, false);
            let reached = c.1 - c.0.len() as u64;
            (!text.is_empty()).then(|| Ok::<_, Infallible>(sse_log(text, reached)))
        }
    });
    let end = futures_util::stream::once(async move {
        let mut events = Vec::new();
        if let Ok(mut c) = tail.lock() {
            let text = take_text(&mut c.0, true);
            if !text.is_empty() {
                events.push(Ok(sse_log(text, c.1)));
            }
        }
        let status = db
            .read(move |l| l.get_job(&jid))
            .await
            .ok()
            .flatten()
            .map_or("unknown", |j| j.status.as_str());
        events.push(Ok::<_, Infallible>(
            Event::default()
                .event("end")
                .data(serde_json::Value::from(status).to_string()),
        ));
        futures_util::stream::iter(events)
    })
    .flatten();
    let mut resp = Sse::new(log.chain(end))
        .keep_alive(KeepAlive::default())
        .into_response();
    // A proxy must pass each event on at once (nginx buffers otherwise).
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// The form of the Run buttons.
#[derive(Debug, Deserialize)]
struct RunForm {
    subproject: String,
    recipe: String,
}

/// Enqueues a job of a command (as `POST /projects/{name}/jobs` would) and sends
/// the browser to its page.
async fn enqueue(
    state: &AppState,
    project: String,
    subproject: String,
    recipe: String,
    git_ref: Option<String>,
) -> Result<Response, UiError> {
    let request = JobRequest {
        project,
        subproject: Some(subproject),
        recipe,
        git_ref,
        trigger: Trigger::Api,
        schedule: None,
    };
    match state.runner.enqueue(request).await {
        Ok((job, _)) => Ok(see_other(&format!("/ui/jobs/{}", job.id))),
        Err(e) => Err(enqueue_error(e).into()),
    }
}

async fn run(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<RunForm>, FormRejection>,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let project = visible_project(&state, &s.caller, &name).await?;
    let Ok(Form(form)) = form else {
        return Err(UiError::new(
            StatusCode::BAD_REQUEST,
            "send the form fields `subproject` and `recipe`",
        ));
    };
    enqueue(&state, project.name, form.subproject, form.recipe, None).await
}

async fn run_again(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let job = visible_job(&state, &s.caller, &id).await?;
    enqueue(
        &state,
        job.project,
        job.subproject,
        job.recipe,
        Some(job.git_ref),
    )
    .await
}

async fn cancel(
    State(state): State<AppState>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let job = visible_job(&state, &s.caller, &id).await?;
    let reason = format!("cancelled by {}", s.caller.name);
    match state.runner.cancel(&job.id, &reason).await? {
        CancelResult::NotFound => Err(UiError::new(StatusCode::NOT_FOUND, "no such job")),
        CancelResult::AlreadyFinished(_) | CancelResult::Cancelled | CancelResult::Stopping => {
            Ok(see_other(&format!("/ui/jobs/{}", job.id)))
        }
    }
}

async fn registry(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    let (status, manifests, times) = state
        .db
        .read(|l| {
            Ok((
                l.registry_status()?,
                l.manifest_statuses()?,
                l.manifest_status_times()?,
            ))
        })
        .await?;
    let times: BTreeMap<_, _> = times.into_iter().collect();
    Ok(html(pages::registry(
        &s.caller,
        status.as_ref(),
        &manifests,
        &times,
        state.reconcile.in_progress(),
        state.now_ms(),
    )))
}

async fn patches(State(state): State<AppState>, s: Session) -> Result<Response, UiError> {
    let caller = s.caller.clone();
    let list = state
        .db
        .read(move |l| {
            let visible = caller.visible_projects(l)?;
            l.list_patches(visible.as_deref(), None, None, 200)
        })
        .await?;
    Ok(html(pages::patches(
        &s.caller,
        &list,
        state.patcher.is_some(),
        state.now_ms(),
    )))
}

// ---------------------------------------------------------------- badges

async fn badge(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, UiError> {
    let missing = || UiError::new(StatusCode::NOT_FOUND, "no badge here");
    let command = file.strip_suffix(".svg").ok_or_else(missing)?.to_owned();
    let n = name.clone();
    let found = state
        .db
        .read(move |l| {
            let Some(p) = l.get_project(&n)? else {
                return Ok(None);
            };
            if p.retired_at.is_some() || p.spec["public_badges"].as_bool() != Some(true) {
                return Ok(None);
            }
            let Ok(spec) = crate::enqueue::project_spec(&p) else {
                return Ok(None);
            };
            let recipes = crate::enqueue::recipes(&l.snapshot()?);
            let mut newest: Option<Job> = None;
            let mut known = false;
            for sp in &spec.subprojects {
                if !crate::manifest::resolve::command_names(sp, &recipes).contains(&command) {
                    continue;
                }
                known = true;
                if let Some(j) = l.last_finished_job(&p.name, &sp.path, &command)?
                    && newest
                        .as_ref()
                        .is_none_or(|n| j.finished_at > n.finished_at)
                {
                    newest = Some(j);
                }
            }
            Ok(known.then_some((command, newest)))
        })
        .await?;
    let (command, last) = found.ok_or_else(missing)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache, max-age=0"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
        ],
        svg::badge(&command, last.map(|j| j.status)),
    )
        .into_response())
}
