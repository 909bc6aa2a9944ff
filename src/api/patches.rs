//! `POST /jobs/{id}/patches`, `/patches…`: the patch loop's attempts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::jobs::{rfc3339, visible_job};
use super::{ApiError, ApiJson, ApiQuery, AppState, ok};
use crate::ledger::PatchAttempt;
use crate::patcher::TriggerError;

/// A patch attempt as the API shows it.
#[derive(Debug, Serialize)]
pub struct PatchJson {
    id: i64,
    project: String,
    status: String,
    reason: Option<String>,
    trigger: String,
    attempt_number: i64,
    finding: serde_json::Value,
    job_id: String,
    backend: Option<String>,
    model: Option<String>,
    prompt_chars: Option<i64>,
    diff: Option<String>,
    explanation: Option<String>,
    confidence: Option<f64>,
    model_reply: Option<String>,
    commit_sha: Option<String>,
    verify_job_id: Option<String>,
    branch: Option<String>,
    pull_request: Option<serde_json::Value>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

impl From<&PatchAttempt> for PatchJson {
    fn from(p: &PatchAttempt) -> Self {
        PatchJson {
            id: p.id,
            project: p.project.clone(),
            status: p.status.clone(),
            reason: p.reason.clone(),
            trigger: p.trigger.clone(),
            attempt_number: p.attempt_number,
            finding: serde_json::json!({
                "id": p.finding_id, "fingerprint": p.fingerprint, "tool": p.tool, "kind": p.kind,
                "severity": p.severity, "code": p.code, "file": p.file, "line": p.line, "col": p.col,
                "message": p.message, "suggested_fix": p.suggested_fix,
                "subproject": p.subproject, "recipe": p.recipe, "command": p.command, "sha": p.sha,
            }),
            job_id: p.job_id.clone(),
            backend: p.backend.clone(),
            model: p.model.clone(),
            prompt_chars: p.prompt_chars,
            diff: p.diff.clone(),
            explanation: p.explanation.clone(),
            confidence: p.confidence,
            model_reply: p.model_reply.clone(),
            commit_sha: p.commit_sha.clone(),
            verify_job_id: p.verify_job_id.clone(),
            branch: p.branch.clone(),
            pull_request: p
                .pr_number
                .map(|n| serde_json::json!({"number": n, "url": p.pr_url, "state": p.pr_state})),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            finished_at: p.finished_at.map(rfc3339),
        }
    }
}

/// Body of `POST /jobs/{id}/patches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The finding to fix (from `GET /jobs/{id}/findings`).
    pub finding_id: i64,
}

/// `POST /jobs/{id}/patches`.
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(raw): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    // 404 before anything else says what the body lacks.
    let job = visible_job(&state, &caller, &id).await?;
    let body: TriggerBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::invalid(format!("body: {e} (send {{\"finding_id\": N}})")))?;
    let Some(patcher) = &state.patcher else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "patcher_disabled",
            format!(
                "the patch loop is off: set {}",
                state.config.patcher_missing.join(", ")
            ),
        ));
    };
    match patcher.trigger(&job.id, body.finding_id, true).await {
        Ok(a) => Ok((
            StatusCode::ACCEPTED,
            ok(serde_json::json!({"attempt": PatchJson::from(&a)})),
        )
            .into_response()),
        Err(TriggerError::NotFound(m)) => Err(ApiError::not_found(m)),
        Err(TriggerError::NotActionable(m)) => Err(ApiError::invalid(format!(
            "finding {} is not actionable: {m}",
            body.finding_id
        ))),
        Err(TriggerError::Conflict(m)) => Err(ApiError::conflict(m)),
        Err(TriggerError::Ledger(e)) => Err(e.into()),
    }
}

/// Query of `GET /patches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    project: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

/// `GET /patches`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = super::jobs::parse_limit(q.limit.as_deref(), 50)?;
    let c = caller.clone();
    let patches = state
        .db
        .read(move |l| {
            let visible = c.visible_projects(l)?;
            l.list_patches(
                visible.as_deref(),
                q.project.as_deref().filter(|p| !p.is_empty()),
                q.status.as_deref().filter(|s| !s.is_empty()),
                limit,
            )
        })
        .await?;
    let list: Vec<PatchJson> = patches.iter().map(PatchJson::from).collect();
    Ok(ok(serde_json::json!({"patches": list})))
}

async fn visible_patch(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<PatchAttempt, ApiError> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no patch attempt `{id}`")))?;
    let c = caller.clone();
    let found = state
        .db
        .read(move |l| {
            let Some((p, project)) = l.get_patch(n)? else {
                return Ok(None);
            };
            Ok(c.can_see_named(l, &project)?.then_some(p))
        })
        .await?;
    found.ok_or_else(|| ApiError::not_found(format!("no patch attempt `{id}`")))
}

/// `GET /patches/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let p = visible_patch(&state, &caller, &id).await?;
    Ok(ok(serde_json::json!({"attempt": PatchJson::from(&p)})))
}

/// `POST /patches/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let p = visible_patch(&state, &caller, &id).await?;
    if p.finished_at.is_some() {
        return Err(ApiError::conflict(format!(
            "patch attempt {id} already ended ({})",
            p.status
        )));
    }
    let Some(patcher) = &state.patcher else {
        return Err(ApiError::conflict("the patch loop is off"));
    };
    match patcher.cancel(p.id, &caller.name).await? {
        Some(a) => Ok(ok(serde_json::json!({"attempt": PatchJson::from(&a)}))),
        None => Err(ApiError::conflict(format!(
            "patch attempt {id} already ended"
        ))),
    }
}
