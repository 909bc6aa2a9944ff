//! `/projects/{name}/jobs`, `/jobs…` and `/patches…`.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{TimeZone, Utc};
use serde::Deserialize;

use super::auth::Caller;
use super::projects::visible_project;
use super::{ApiError, ApiJson, ApiQuery, AppState, now_ms, ok, to_json};
use crate::ledger::{Job, JobFilter, JobStatus, NewJob, Trigger};
use crate::manifest::resolve::{ResolveError, resolve};
use crate::manifest::{Kind, ProjectSpec, RecipeSpec};
use crate::runner::{CancelResult, with_ledger};

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

fn valid_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && !r.starts_with('-')
        && !r.contains("..")
        && r.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"~^:?*[\\".contains(c))
}

/// `POST /projects/{name}/jobs`.
pub async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<EnqueueBody>,
) -> Result<Response, ApiError> {
    let stored = visible_project(&state, &caller, &name).await?;
    if stored.retired_at.is_some() {
        return Err(ApiError::conflict(format!(
            "project `{name}` is retired (removed from the registry); it runs nothing"
        )));
    }
    let project: ProjectSpec = serde_json::from_value(stored.spec.clone())
        .map_err(|e| ApiError::conflict(format!("stored project spec unreadable: {e}")))?;
    let snap = with_ledger(state.read(), |l| l.snapshot()).await?;
    let recipes: std::collections::BTreeMap<String, RecipeSpec> = snap
        .values()
        .filter(|o| o.kind == Kind::Recipe && o.retired_at.is_none())
        .filter_map(|o| Some((o.name.clone(), serde_json::from_value(o.spec.clone()).ok()?)))
        .collect();
    let subproject = body.subproject.clone().unwrap_or_else(|| {
        if project
            .subprojects
            .iter()
            .any(|s| s.path == "." || s.path == "./")
        {
            ".".to_owned()
        } else {
            project
                .subprojects
                .first()
                .map_or_else(|| ".".to_owned(), |s| s.path.clone())
        }
    });
    let resolved = resolve(&project, &subproject, &body.recipe, &recipes).map_err(|e| match e {
        ResolveError::UnknownSubproject { .. } | ResolveError::UnknownCommand { .. } => {
            ApiError::not_found(e.to_string())
        }
        ResolveError::MissingRecipe(_) => ApiError::conflict(e.to_string()),
    })?;
    let git_ref = body
        .git_ref
        .clone()
        .unwrap_or_else(|| project.default_branch.clone());
    if !valid_ref(&git_ref) {
        return Err(ApiError::invalid(format!(
            "ref `{git_ref}` is not a valid branch, tag or commit name"
        )));
    }
    let new = NewJob {
        project: name.clone(),
        subproject: resolved.subproject.clone(),
        recipe: body.recipe.clone(),
        trigger: Trigger::Api,
        schedule: None,
        git_ref,
        snapshot: to_json(&resolved),
    };
    let (job, coalesced) =
        with_ledger(&state.ledger, move |l| l.enqueue_job(&new, now_ms())).await?;
    state.runner.wake();
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

fn parse_limit(s: Option<&str>, default: usize) -> Result<usize, ApiError> {
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
    let jobs = with_ledger(state.read(), move |l| {
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
    let found = with_ledger(state.read(), move |l| {
        let Some(job) = l.get_job(&i)? else {
            return Ok(None);
        };
        let visible = match l.get_project(&job.project)? {
            Some(p) => c.can_see(&p),
            None => c.is_admin,
        };
        Ok(visible.then_some(job))
    })
    .await?;
    found.ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))
}

/// The last `n` lines of a file, reading at most its last 256 KiB.
pub fn tail_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial first line
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// `GET /jobs/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    let tail = match &job.log_path {
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            tokio::task::spawn_blocking(move || tail_lines(&p, LOG_TAIL_LINES))
                .await
                .unwrap_or_default()
        }
        None => Vec::new(),
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
}

/// `GET /jobs/{id}/log`: the log file, streamed; with `follow=1`, kept open and fed
/// until the job ends.
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
    let job = visible_job(&state, &caller, &id).await?;
    let path = state.config.logs_dir().join(format!("{}.log", job.id));
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    if !follow {
        return match tokio::fs::File::open(&path).await {
            Ok(f) => Ok((
                headers,
                Body::from_stream(tokio_util::io::ReaderStream::new(f)),
            )
                .into_response()),
            Err(_) => Ok((headers, Body::empty()).into_response()),
        };
    }
    let ledger = state.ledger.clone();
    let job_id = job.id.clone();
    let stream = futures_util::stream::unfold((0u64, false), move |(offset, done)| {
        let path = path.clone();
        let ledger = ledger.clone();
        let job_id = job_id.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let chunk = read_from(&path, offset).await;
                if !chunk.is_empty() {
                    let n = chunk.len() as u64;
                    return Some((Ok::<_, std::io::Error>(chunk), (offset + n, false)));
                }
                let j = job_id.clone();
                let finished = with_ledger(&ledger, move |l| l.get_job(&j))
                    .await
                    .ok()
                    .flatten()
                    .is_none_or(|j| j.status.is_terminal());
                if finished {
                    // One last read: the final lines land just before the status.
                    let rest = read_from(&path, offset).await;
                    return if rest.is_empty() {
                        None
                    } else {
                        let n = rest.len() as u64;
                        Some((Ok(rest), (offset + n, true)))
                    };
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

async fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(mut f) = std::fs::File::open(&path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let _ = f.by_ref().take(1 << 20).read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap_or_default()
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
    let mut rows = with_ledger(state.read(), move |l| l.findings_of_job(&jid)).await?;
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
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|f| {
            let mut v = to_json(f);
            v["created_at"] = rfc3339(f.created_at).into();
            v
        })
        .collect();
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

/// `POST /jobs/{id}/patches`: 503 until the patch loop is configured and built.
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    visible_job(&state, &caller, &id).await?;
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "patcher_disabled",
        if state.config.patcher.is_some() {
            "the patch loop is configured but not part of this build yet"
        } else {
            "the patch loop is off: set CRAFTING_CLAWDFORGE_URL, CRAFTING_CLAWDFORGE_TOKEN, CRAFTING_GITEA_URL and CRAFTING_GITEA_TOKEN"
        },
    ))
}

/// Query of `GET /patches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchQuery {
    project: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

/// `GET /patches`.
pub async fn list_patches(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PatchQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), 50)?;
    let c = caller.clone();
    let patches = with_ledger(state.read(), move |l| {
        let visible = c.visible_projects(l)?;
        l.list_patches(
            visible.as_deref(),
            q.project.as_deref(),
            q.status.as_deref(),
            limit,
        )
    })
    .await?;
    let list: Vec<serde_json::Value> = patches.iter().map(to_json).collect();
    Ok(ok(serde_json::json!({"patches": list})))
}

/// `GET /patches/{id}`.
pub async fn patch_detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no patch attempt `{id}`")))?;
    let c = caller.clone();
    let found = with_ledger(state.read(), move |l| {
        let Some((p, project)) = l.get_patch(n)? else {
            return Ok(None);
        };
        let visible = match l.get_project(&project)? {
            Some(pr) => c.can_see(&pr),
            None => c.is_admin,
        };
        Ok(visible.then_some(p))
    })
    .await?;
    let p = found.ok_or_else(|| ApiError::not_found(format!("no patch attempt `{id}`")))?;
    Ok(ok(serde_json::json!({"attempt": to_json(&p)})))
}
