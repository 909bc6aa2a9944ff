//! `/projects/{name}/jobs`, `/jobs…` and `/patches…`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::projects::visible_project;
use super::{ApiError, ApiJson, ApiQuery, AppState, ok};
use crate::enqueue::{EnqueueError, JobRequest};
use crate::events::FarmEvent;
use crate::ledger::{Finding, Job, JobFilter, JobStatus, Trigger};
use crate::manifest::resolve::ResolveError;
use crate::runner::CancelResult;

/// Lines of log returned with a job.
pub const LOG_TAIL_LINES: usize = 200;

/// Milliseconds as an RFC 3339 UTC time.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A job as the API shows it.
pub fn job_json(j: &Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id,
        "project": j.project,
        "subproject": j.subproject,
        "recipe": j.recipe,
        "trigger": j.trigger,
        "schedule": j.schedule,
        "ref": j.git_ref,
        "sha": j.sha,
        "status": j.status,
        "exit_code": j.exit_code,
        "error": j.error,
        "findings_count": j.findings_count,
        "fixed": j.fixed,
        "recipe_snapshot": j.recipe_snapshot,
        "created_at": rfc3339(j.created_at),
        "started_at": j.started_at.map(rfc3339),
        "finished_at": j.finished_at.map(rfc3339),
        "duration_secs": match (j.started_at, j.finished_at) {
            (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
            _ => None,
        },
        "runner": j.runner,
    })
}

/// Body of `POST /projects/{name}/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// The command to run (`test`, `lint`, …).
    pub recipe: String,
    /// Subproject path (default: `.` when it exists, else the first).
    #[serde(default)]
    pub subproject: Option<String>,
    /// Branch, tag or sha (default: the project's default branch).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

/// `POST /projects/{name}/jobs`.
pub async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<EnqueueBody>,
) -> Result<Response, ApiError> {
    visible_project(&state, &caller, &name).await?;
    let request = JobRequest {
        project: name.clone(),
        subproject: body.subproject,
        recipe: body.recipe,
        git_ref: body.git_ref,
        trigger: Trigger::Api,
        schedule: None,
    };
    let (job, coalesced) = state.runner.enqueue(request).await.map_err(enqueue_error)?;
    let status = if coalesced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = ok(serde_json::json!({
        "job_id": job.id,
        "job": job_json(&job),
        "coalesced": coalesced,
        "message": if coalesced {
            "an identical job is already queued; returning it"
        } else {
            "queued"
        },
    }));
    Ok((status, body).into_response())
}

/// The answer to a job that cannot be enqueued.
pub fn enqueue_error(e: EnqueueError) -> ApiError {
    match e {
        EnqueueError::UnknownProject(_) => ApiError::not_found(e.to_string()),
        EnqueueError::Resolve(
            ResolveError::UnknownSubproject { .. } | ResolveError::UnknownCommand { .. },
        ) => ApiError::not_found(e.to_string()),
        EnqueueError::Resolve(ResolveError::MissingRecipe(_))
        | EnqueueError::Retired(_)
        | EnqueueError::Unreadable(..) => ApiError::conflict(e.to_string()),
        EnqueueError::BadRef(_) => ApiError::invalid(e.to_string()),
        EnqueueError::Ledger(e) => ApiError::from(e),
    }
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    project: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Most jobs one page returns.
pub const MAX_PAGE: usize = 500;

pub(super) fn parse_limit(s: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match s {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit `{v}` must be a whole number from 1 to {MAX_PAGE}"
            ))),
        },
    }
}

fn parse_status(s: Option<&str>) -> Result<Option<JobStatus>, ApiError> {
    match s {
        None | Some("") => Ok(None),
        Some(v) => JobStatus::parse(v).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status `{v}` is not one of: queued, running, succeeded, failed, timed_out, cancelled, error"
            ))
        }),
    }
}

/// `GET /jobs`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), 50)?;
    let status = parse_status(q.status.as_deref())?;
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            let parsed = c
                .split_once('.')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                .filter(|(_, id)| !id.is_empty() && id.chars().all(|ch| ch.is_ascii_hexdigit()));
            Some(parsed.ok_or_else(|| {
                ApiError::bad_request(format!("cursor `{c}` is not a cursor from a previous page"))
            })?)
        }
    };
    let c = caller.clone();
    let project = q.project.clone().filter(|p| !p.is_empty());
    let jobs = state
        .db
        .read(move |l| {
            let visible = c.visible_projects(l)?;
            l.list_jobs(&JobFilter {
                project,
                status,
                visible_projects: visible,
                before,
                limit: limit + 1,
            })
        })
        .await?;
    let more = jobs.len() > limit;
    let page = &jobs[..jobs.len().min(limit)];
    let next_cursor = if more {
        page.last().map(|j| format!("{}.{}", j.created_at, j.id))
    } else {
        None
    };
    Ok(ok(serde_json::json!({
        "jobs": page.iter().map(job_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

/// Loads a job whose project the caller may see, or 404.
pub async fn visible_job(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    let i = id.to_owned();
    let c = caller.clone();
    let found = state
        .db
        .read(move |l| {
            let Some(job) = l.get_job(&i)? else {
                return Ok(None);
            };
            Ok(c.can_see_named(l, &job.project)?.then_some(job))
        })
        .await?;
    found.ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))
}

/// `GET /jobs/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    let tail = if job.log_path.is_some() {
        state.logs.tail_lines(&job.id, LOG_TAIL_LINES).await
    } else {
        Vec::new()
    };
    Ok(ok(
        serde_json::json!({"job": job_json(&job), "log_tail": tail}),
    ))
}

/// Query of `GET /jobs/{id}/log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    follow: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
    tail: Option<String>,
}

fn parse_count(name: &str, v: Option<&str>) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "{name} `{s}` must be a whole number of bytes or lines"
            ))
        }),
    }
}

/// Most lines `?tail=` returns.
pub const MAX_TAIL_LINES: u64 = 10_000;

/// `GET /jobs/{id}/log`: the log file, streamed; with `follow=1`, kept open and fed
/// until the job ends; `?offset=&limit=` a window of bytes, `?tail=N` the last N
/// lines. `X-Log-Size` carries the file's size, for paging.
pub async fn log(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let follow = match q.follow.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "follow `{v}` must be 1 or 0"
            )));
        }
    };
    let offset = parse_count("offset", q.offset.as_deref())?;
    let limit = parse_count("limit", q.limit.as_deref())?;
    let tail = parse_count("tail", q.tail.as_deref())?;
    if follow && (offset.is_some() || limit.is_some() || tail.is_some()) {
        return Err(ApiError::bad_request(
            "follow=1 streams the whole log: it takes no offset, limit or tail",
        ));
    }
    if tail.is_some() && (offset.is_some() || limit.is_some()) {
        return Err(ApiError::bad_request(
            "tail takes the last lines: use it without offset and limit",
        ));
    }
    let job = visible_job(&state, &caller, &id).await?;
    let size = state.logs.size(&job.id).await;
    let size_header = (
        header::HeaderName::from_static("x-log-size"),
        header::HeaderValue::from(size),
    );
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    if let Some(n) = tail {
        let n = n.min(MAX_TAIL_LINES) as usize;
        let lines = state.logs.tail_lines(&job.id, n).await;
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        return Ok((headers, [size_header], text).into_response());
    }
    if offset.is_some() || limit.is_some() {
        let (off, max) = (offset.unwrap_or(0), limit.unwrap_or(u64::MAX));
        let bytes = state.logs.read(&job.id, off, max).await;
        return Ok((headers, [size_header], bytes).into_response());
    }
    if !follow {
        // The log as it is now, in pieces of 1 MiB.
        let (logs, id) = (state.logs.clone(), job.id.clone());
        let pieces = futures_util::stream::unfold(0u64, move |at| {
            let (logs, id) = (logs.clone(), id.clone());
            async move {
                if at >= size {
                    return None;
                }
                let piece = logs.read(&id, at, (size - at).min(1 << 20)).await;
                if piece.is_empty() {
                    return None;
                }
                let next = at + piece.len() as u64;
                Some((Ok::<_, std::io::Error>(piece), next))
            }
        });
        return Ok((headers, [size_header], Body::from_stream(pieces)).into_response());
    }
    let stream = self::follow(&state, &job, 0).await?;
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// A job's log from byte `offset`, fed as it grows until the job ends: the source
/// of `?follow=1` (from the start) and of the web page's live log.
pub async fn follow(
    state: &AppState,
    job: &Job,
    offset: u64,
) -> Result<impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + use<>, ApiError> {
    // Subscribe before looking at the job: its end cannot slip between the two.
    let events = state.events.subscribe();
    let job_id = job.id.clone();
    let (id2, db) = (job.id.clone(), state.db.clone());
    let ended = db
        .read(move |l| l.get_job(&id2))
        .await?
        .is_none_or(|j| j.status.is_terminal());
    Ok(futures_util::stream::unfold(
        Follow {
            logs: state.logs.clone(),
            offset,
            ended,
            events,
            wrote: state.runner.log_written(&job_id),
            job_id,
        },
        |mut f| async move {
            loop {
                let chunk = f.logs.read(&f.job_id, f.offset, 1 << 20).await;
                if !chunk.is_empty() {
                    f.offset += chunk.len() as u64;
                    return Some((Ok::<_, std::io::Error>(chunk), f));
                }
                if f.ended {
                    // The final lines land before the job's end is published.
                    return None;
                }
                // Woken by the job's next write; the bound covers a write that
                // landed between the read above and the wait.
                f.ended = f.wait_for_end(Duration::from_millis(200)).await;
            }
        },
    ))
}

/// A log being followed.
struct Follow {
    logs: crate::logfile::LogStore,
    offset: u64,
    ended: bool,
    events: tokio::sync::broadcast::Receiver<std::sync::Arc<FarmEvent>>,
    job_id: String,
    /// Woken by the job's own writes (while it runs in this process).
    wrote: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl Follow {
    /// Waits for new output (the job's own write), its end, or `d` at most;
    /// `true` once it ended.
    async fn wait_for_end(&mut self, d: Duration) -> bool {
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + d;
        let wrote = self.wrote.clone();
        let written = async move {
            match wrote {
                Some(n) => n.notified().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(written);
        loop {
            let next = tokio::select! {
                () = &mut written => return false,
                r = tokio::time::timeout_at(deadline, self.events.recv()) => r,
            };
            match next {
                Err(_) => return false,
                Ok(Ok(e)) => {
                    if let FarmEvent::JobFinished { job, .. } = &*e
                        && job.id == self.job_id
                    {
                        return true;
                    }
                }
                // Missed events (or the farm stopping): the job may have ended
                // unseen; stop after the output that is there.
                Ok(Err(RecvError::Lagged(_) | RecvError::Closed)) => return true,
            }
        }
    }
}

/// Query of `GET /jobs/{id}/findings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsQuery {
    format: Option<String>,
    state: Option<String>,
}

/// `GET /jobs/{id}/findings`.
pub async fn findings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FindingsQuery>,
) -> Result<Response, ApiError> {
    let sarif = match q.format.as_deref() {
        None | Some("" | "json") => false,
        Some("sarif") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "format `{v}` must be json or sarif"
            )));
        }
    };
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(s @ ("new" | "unchanged")) => Some(s.to_owned()),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "state `{v}` must be new or unchanged"
            )));
        }
    };
    let job = visible_job(&state, &caller, &id).await?;
    let jid = job.id.clone();
    let mut rows = state.db.read(move |l| l.findings_of_job(&jid)).await?;
    if let Some(w) = &wanted {
        rows.retain(|f| f.f.baseline_state.as_deref() == Some(w.as_str()));
    }
    if sarif {
        let doc = crate::findings::sarif::render(&job, &rows);
        return Ok((
            [(header::CONTENT_TYPE, "application/sarif+json")],
            axum::Json(doc),
        )
            .into_response());
    }
    let list: Vec<FindingJson> = rows.iter().map(FindingJson::from).collect();
    Ok(
        ok(serde_json::json!({"job_id": job.id, "findings": list, "fixed": job.fixed}))
            .into_response(),
    )
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    let reason = format!("cancelled by {}", caller.name);
    match state.runner.cancel(&job.id, &reason).await? {
        CancelResult::NotFound => Err(ApiError::not_found(format!("no job `{id}`"))),
        CancelResult::AlreadyFinished(s) => Err(ApiError::conflict(format!(
            "job `{id}` already ended ({})",
            s.as_str()
        ))),
        CancelResult::Cancelled => Ok(ok(serde_json::json!({"job_id": id, "status": "cancelled"}))),
        CancelResult::Stopping => Ok(ok(serde_json::json!({"job_id": id, "status": "stopping"}))),
    }
}

/// A finding as the API shows it.
#[derive(Debug, Serialize)]
pub struct FindingJson {
    id: i64,
    job_id: String,
    tool: String,
    kind: String,
    severity: String,
    file: Option<String>,
    line: Option<i64>,
    col: Option<i64>,
    code: Option<String>,
    message: String,
    suggested_fix: Option<String>,
    fingerprint: String,
    location_hash: Option<String>,
    baseline_state: Option<String>,
    raw_json: Option<String>,
    created_at: String,
}

impl From<&Finding> for FindingJson {
    fn from(f: &Finding) -> Self {
        FindingJson {
            id: f.id,
            job_id: f.job_id.clone(),
            tool: f.f.tool.clone(),
            kind: f.f.kind.clone(),
            severity: f.f.severity.clone(),
            file: f.f.file.clone(),
            line: f.f.line,
            col: f.f.col,
            code: f.f.code.clone(),
            message: f.f.message.clone(),
            suggested_fix: f.f.suggested_fix.clone(),
            fingerprint: f.f.fingerprint.clone(),
            location_hash: f.f.location_hash.clone(),
            baseline_state: f.f.baseline_state.clone(),
            raw_json: f.f.raw_json.clone(),
            created_at: rfc3339(f.created_at),
        }
    }
}
