//! `/digests…` and `/admin/digest/run-now`.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::jobs::rfc3339;
use super::{ApiError, ApiJson, ApiQuery, AppState, ok};
use crate::ledger::DigestRow;

/// A digest run as the API lists it.
#[derive(Debug, Serialize)]
pub struct DigestJson {
    id: i64,
    date: String,
    recipient: String,
    time: String,
    zone: String,
    status: &'static str,
    message_id: Option<String>,
    subject: Option<String>,
    counts: serde_json::Value,
    attempts: i64,
    error: Option<String>,
    window_start: String,
    window_end: String,
    created_at: String,
    sent_at: Option<String>,
}

impl From<&DigestRow> for DigestJson {
    fn from(r: &DigestRow) -> Self {
        DigestJson {
            id: r.id,
            date: r.date.clone(),
            recipient: r.recipient.clone(),
            time: r.time.clone(),
            zone: r.zone.clone(),
            status: r.status.as_str(),
            message_id: r.message_id.clone(),
            subject: r.subject.clone(),
            counts: r.counts.clone(),
            attempts: r.attempts,
            error: r.error.clone(),
            window_start: rfc3339(r.window_start),
            window_end: rfc3339(r.window_end),
            created_at: rfc3339(r.created_at),
            sent_at: r.sent_at.map(rfc3339),
        }
    }
}

fn parse_date(s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| ApiError::bad_request(format!("date `{s}` is not a date: use YYYY-MM-DD")))
}

/// Query of `GET /digests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<String>,
}

/// `GET /digests` (admin: digests name every recipient).
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = super::jobs::parse_limit(q.limit.as_deref(), 50)?;
    let rows = state.db.read(move |l| l.list_digests(limit)).await?;
    let list: Vec<DigestJson> = rows.iter().map(DigestJson::from).collect();
    Ok(ok(serde_json::json!({
        "digests": list,
        "sending": state.digests.sending_enabled(),
    })))
}

/// `GET /digests/{date}`: what the digests of that local date say, sending nothing.
pub async fn preview(
    State(state): State<AppState>,
    _admin: Admin,
    Path(date): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let day = parse_date(&date)?;
    let digests = state.digests.preview(day).await?;
    Ok(ok(serde_json::json!({"date": date, "digests": digests})))
}

/// Body of `POST /admin/digest/run-now`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunNowBody {
    /// Render only.
    #[serde(default)]
    pub dry_run: bool,
    /// Local date (default: today in each unit's zone).
    #[serde(default)]
    pub date: Option<String>,
    /// One recipient only.
    #[serde(default)]
    pub recipient: Option<String>,
}

/// `POST /admin/digest/run-now`.
pub async fn run_now(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<RunNowBody>,
) -> Result<impl IntoResponse, ApiError> {
    let date = body.date.as_deref().map(parse_date).transpose()?;
    let items = state
        .digests
        .run_now(date, body.recipient.clone(), body.dry_run)
        .await?;
    Ok(ok(serde_json::json!({
        "dry_run": body.dry_run || !state.digests.sending_enabled(),
        "sending": state.digests.sending_enabled(),
        "digests": items,
    })))
}
