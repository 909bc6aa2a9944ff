//! Farm-level routes: health, metrics, tokens, the registry and its webhook.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::auth::{Admin, Caller, hash_bearer, mint_bearer};
use super::jobs::rfc3339;
use super::{ApiError, ApiJson, AppState, ok};
use crate::ledger::JobStatus;

/// `GET /healthz`: no bearer, LAN only.
pub async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let shared = state.db.is_postgres();
    let (counts, status, runners, busy, leader) = state
        .db
        .read(move |l| {
            Ok(if shared {
                (
                    l.job_counts()?,
                    l.registry_status()?,
                    l.runners()?,
                    l.running_by_runner()?,
                    l.leader()?,
                )
            } else {
                (
                    l.job_counts()?,
                    l.registry_status()?,
                    Vec::new(),
                    Vec::new(),
                    None,
                )
            })
        })
        .await?;
    let count = |s: JobStatus| counts.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
    let now = state.now_ms();
    let runners: Vec<serde_json::Value> = runners
        .iter()
        .filter(|r| r.is_live(now))
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "kind": r.kind,
                "host": r.host,
                "workers": r.workers,
                "running": busy.iter().find(|(n, _)| *n == r.name).map_or(0, |(_, c)| *c),
                "lease_until": rfc3339(r.lease_until),
            })
        })
        .collect();
    Ok(ok(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "ledger": if shared { "postgres" } else { "sqlite" },
        "workers": state.runner.workers(),
        "runners": runners,
        "leader": leader.map(|(name, _)| name),
        "queued": count(JobStatus::Queued),
        "running": count(JobStatus::Running),
        "uptime_secs": state.started.elapsed().as_secs(),
        "registry_revision": status.and_then(|s| s.revision),
    })))
}

/// Prometheus text, one metric family at a time.
#[derive(Default)]
struct Prom(String);

impl Prom {
    /// Starts a family: its `HELP` and `TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Prom {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample: the name with its labels, and the value.
    fn sample(&mut self, series: &str, value: impl std::fmt::Display) -> &mut Prom {
        let _ = writeln!(self.0, "{series} {value}");
        self
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (counts, durations) = state
        .db
        .read(|l| Ok((l.job_counts()?, l.job_duration_stats()?)))
        .await?;
    let count = |s: JobStatus| counts.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
    let mut p = Prom::default();
    p.family("crafting_jobs", "gauge", "Jobs in the ledger, by status.");
    for s in JobStatus::ALL {
        p.sample(
            &format!("crafting_jobs{{status=\"{}\"}}", s.as_str()),
            count(s),
        );
    }
    p.family(
        "crafting_queue_depth",
        "gauge",
        "Jobs waiting for a worker.",
    )
    .sample("crafting_queue_depth", count(JobStatus::Queued));
    p.family(
        "crafting_job_duration_seconds",
        "summary",
        "Run time of finished jobs, by status.",
    );
    for (s, n, sum_ms) in &durations {
        let label = format!("{{status=\"{}\"}}", s.as_str());
        p.sample(
            &format!("crafting_job_duration_seconds_sum{label}"),
            format!("{:.3}", *sum_ms as f64 / 1000.0),
        )
        .sample(&format!("crafting_job_duration_seconds_count{label}"), n);
    }
    let logs_dir = state.config.logs_dir();
    let log_bytes = tokio::task::spawn_blocking(move || crate::gc::dir_bytes(&logs_dir))
        .await
        .unwrap_or(0);
    let findings_rows = state.db.read(|l| l.findings_rows()).await?;
    p.family("crafting_log_bytes", "gauge", "Bytes of job logs on disk.")
        .sample("crafting_log_bytes", log_bytes);
    p.family(
        "crafting_findings_rows",
        "gauge",
        "Findings stored in the ledger.",
    )
    .sample("crafting_findings_rows", findings_rows);
    let warm = state.runner.workspace().pool_stats();
    p.family(
        "crafting_warm_worktrees",
        "gauge",
        "Warm worktrees kept between jobs, by state.",
    )
    .sample("crafting_warm_worktrees{state=\"idle\"}", warm.idle)
    .sample("crafting_warm_worktrees{state=\"busy\"}", warm.busy);
    p.family(
        "crafting_warm_worktrees_reused_total",
        "counter",
        "Jobs that ran in a reused warm worktree.",
    )
    .sample("crafting_warm_worktrees_reused_total", warm.reused);
    p.family(
        "crafting_warm_worktrees_discarded_total",
        "counter",
        "Warm worktrees removed instead of reused (abnormal end, reset failed, idle past CRAFTING_WARM_IDLE_SECS).",
    )
    .sample("crafting_warm_worktrees_discarded_total", warm.discarded);
    p.family(
        "crafting_job_sandboxes_kept",
        "gauge",
        "Sandboxes of idle warm worktrees kept running for their next job.",
    )
    .sample("crafting_job_sandboxes_kept", state.runner.idle_sandboxes());
    let phases = state.runner.phase_stats();
    p.family(
        "crafting_job_phase_seconds",
        "summary",
        "Where jobs spend their time, by phase (checkout, record, spawn, command, hooks, release, finish).",
    );
    for (name, sum) in crate::runner::PHASES.iter().zip(phases.sum_secs) {
        let label = format!("{{phase=\"{name}\"}}");
        p.sample(
            &format!("crafting_job_phase_seconds_sum{label}"),
            format!("{sum:.6}"),
        )
        .sample(
            &format!("crafting_job_phase_seconds_count{label}"),
            phases.jobs,
        );
    }
    let m = &state.metrics;
    p.family(
        "crafting_reconciles_total",
        "counter",
        "Registry reconciles, by result.",
    )
    .sample(
        "crafting_reconciles_total{result=\"ok\"}",
        m.reconciles_ok.load(Ordering::Relaxed),
    )
    .sample(
        "crafting_reconciles_total{result=\"error\"}",
        m.reconciles_failed.load(Ordering::Relaxed),
    );
    p.family(
        "crafting_reconcile_duration_seconds",
        "gauge",
        "Duration of the last reconcile.",
    )
    .sample(
        "crafting_reconcile_duration_seconds",
        format!(
            "{:.6}",
            m.last_reconcile_us.load(Ordering::Relaxed) as f64 / 1e6
        ),
    );
    p.family(
        "crafting_manifest_errors",
        "gauge",
        "Manifest errors in the last reconcile.",
    )
    .sample(
        "crafting_manifest_errors",
        m.manifest_errors.load(Ordering::Relaxed),
    );
    p.family("crafting_workers", "gauge", "Configured concurrent jobs.")
        .sample("crafting_workers", state.runner.workers());
    p.family(
        "crafting_uptime_seconds",
        "gauge",
        "Seconds since the farm started.",
    )
    .sample("crafting_uptime_seconds", state.started.elapsed().as_secs());
    let out = p.0;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// Body of `POST /admin/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    name: String,
    #[serde(default)]
    is_admin: bool,
    #[serde(default)]
    ip_cidrs: Vec<String>,
}

fn valid_token_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `POST /admin/tokens`: the bearer is in this response and nowhere else, ever.
pub async fn mint_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<MintBody>,
) -> Result<impl IntoResponse, ApiError> {
    if !valid_token_name(&body.name) {
        return Err(ApiError::invalid(format!(
            "name `{}` must be 1 to 64 letters, digits, `-`, `_` or `.`",
            body.name
        )));
    }
    let mut cidrs = Vec::new();
    for c in &body.ip_cidrs {
        let net = c
            .parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| ApiError::invalid(format!("ip_cidrs: `{c}` is not a CIDR network")))?;
        cidrs.push(net.to_string());
    }
    let bearer = mint_bearer()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    let hash = hash_bearer(&bearer);
    let (name, is_admin, c2) = (body.name.clone(), body.is_admin, cidrs.clone());
    let now = state.now_ms();
    let inserted = state
        .db
        .write(move |l| l.insert_token(&name, &hash, is_admin, &c2, now))
        .await?;
    if !inserted {
        return Err(ApiError::conflict(format!(
            "a token named `{}` exists (or existed)",
            body.name
        )));
    }
    tracing::info!(by = %admin.name, token = %body.name, is_admin = body.is_admin, "token minted");
    Ok((
        StatusCode::CREATED,
        ok(serde_json::json!({
            "name": body.name,
            "bearer": bearer,
            "is_admin": body.is_admin,
            "ip_cidrs": cidrs,
        })),
    ))
}

/// `GET /admin/tokens`.
pub async fn list_tokens(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let tokens = state.db.read(|l| l.list_tokens()).await?;
    let list: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "is_admin": t.is_admin,
                "ip_cidrs": t.ip_cidrs,
                "created_at": rfc3339(t.created_at),
                "revoked": t.revoked_at.is_some(),
                "revoked_at": t.revoked_at.map(rfc3339),
            })
        })
        .collect();
    Ok(ok(serde_json::json!({"tokens": list})))
}

/// `DELETE /admin/tokens/{name}`: the token fails on its very next request.
pub async fn revoke_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let (n, now) = (name.clone(), state.now_ms());
    if !state.db.write(move |l| l.revoke_token(&n, now)).await? {
        return Err(ApiError::not_found(format!("no live token `{name}`")));
    }
    Ok(ok(serde_json::json!({"revoked": name})))
}

/// `GET /registry`.
pub async fn registry(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let (status, manifests, leader) = state
        .db
        .read(|l| Ok((l.registry_status()?, l.manifest_statuses()?, l.leader()?)))
        .await?;
    let status = status.unwrap_or_default();
    // With SQLite this process is the whole farm; with PostgreSQL the leader is
    // the `serve` that reconciles.
    let leader = match &state.bus {
        None => None,
        Some(_) => {
            leader.map(|(name, since)| serde_json::json!({"name": name, "since": rfc3339(since)}))
        }
    };
    let manifests: Vec<serde_json::Value> = manifests
        .iter()
        .map(|m| {
            serde_json::json!({
                "file": m.file,
                "kind": if m.kind.is_empty() { None } else { Some(&m.kind) },
                "name": if m.name.is_empty() { None } else { Some(&m.name) },
                "revision_applied": m.revision_applied,
                "error": m.last_error.as_ref().map(|e| serde_json::json!({
                    "message": e, "line": m.error_line, "col": m.error_col,
                })),
            })
        })
        .collect();
    Ok(ok(serde_json::json!({
        "source": status.source,
        "revision": status.revision,
        "last_attempt_at": status.last_attempt_at.map(rfc3339),
        "last_success_at": status.last_success_at.map(rfc3339),
        "duration_ms": status.duration_ms,
        "last_error": status.last_error,
        "counts": status.counts,
        "in_progress": state.reconcile.in_progress(),
        "leader": leader,
        "manifests": manifests,
    })))
}

/// How long a process that does not lead waits for the leader to answer a
/// reconcile it handed over.
pub const HANDOFF_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// What `POST /registry/reconcile` answers for a reconcile's result: `Ok` the
/// outcome, `Err` why the registry could not be read.
pub fn reconcile_body(
    r: &crate::reconciler::looped::RunResult,
) -> Result<serde_json::Value, String> {
    match r {
        Ok(o) => Ok(serde_json::json!({
            "revision": o.revision,
            "created": o.plan.count(|a| matches!(a, crate::reconciler::Action::Create)),
            "updated": o.plan.count(|a| matches!(a, crate::reconciler::Action::Update(_))),
            "retired": o.plan.count(|a| matches!(a, crate::reconciler::Action::Retire)),
            "unchanged": o.plan.count(|a| matches!(a, crate::reconciler::Action::Unchanged)),
            "errors": o.diagnostics.iter()
                .filter(|d| d.severity == crate::manifest::Severity::Error)
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        })),
        Err(e) => Err(e.clone()),
    }
}

/// `POST /registry/reconcile` (admin): reconciles now and answers with the outcome
/// (in a process that does not lead, the leader reconciles and this one answers
/// with its outcome).
pub async fn reconcile_now(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let body = match &state.bus {
        Some(bus) if !bus.is_leader() => handoff(&state, bus, true).await?,
        _ => reconcile_body(&state.reconcile.run_now().await),
    };
    match body {
        Ok(v) => Ok(ok(v)),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "registry_unreachable",
            e,
        )),
    }
}

/// Hands a reconcile to the leader through the ledger; with `wait`, waits for its
/// answer (a 503 naming the leader after [`HANDOFF_DEADLINE`]).
async fn handoff(
    state: &AppState,
    bus: &crate::ledger::bus::Bus,
    wait: bool,
) -> Result<Result<serde_json::Value, String>, ApiError> {
    use crate::ledger::bus::BusEvent;
    let mut notes = bus.subscribe();
    let (me, now) = (state.db.origin().to_owned(), state.now_ms());
    let id = state.db.write(move |l| l.ask_reconcile(&me, now)).await?;
    if !wait {
        return Ok(Ok(serde_json::Value::Null));
    }
    let deadline = tokio::time::Instant::now() + HANDOFF_DEADLINE;
    let key = id.to_string();
    loop {
        let answer = state.db.read(move |l| l.reconcile_answer(id)).await?;
        if let Some(text) = answer {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Ok(match v.get("error").and_then(|e| e.as_str()) {
                Some(e) => Err(e.to_owned()),
                None => Ok(v),
            });
        }
        // Woken by the leader's answer; the bound covers a missed notification.
        let woke = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
            async {
                loop {
                    match notes.recv().await {
                        Ok(e) if matches!(&*e, BusEvent::Note(n) if n.kind == "reconciled" && n.id == key) => {
                            return;
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            },
        )
        .await;
        if woke.is_err() && tokio::time::Instant::now() >= deadline {
            let leader = state.db.read(|l| l.leader()).await?.map(|(n, _)| n);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "leader_unavailable",
                format!(
                    "this process does not lead the farm and the leader ({}) did not answer within {}s",
                    leader.as_deref().unwrap_or("none elected yet"),
                    HANDOFF_DEADLINE.as_secs()
                ),
            ));
        }
    }
}

/// Checks a Gitea (`X-Gitea-Signature`: hex) or GitHub (`X-Hub-Signature-256`:
/// `sha256=` + hex) HMAC-SHA256 of `body`, in constant time.
pub fn verify_signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .or_else(|| {
            headers
                .get("x-gitea-signature")
                .and_then(|v| v.to_str().ok())
        });
    let Some(sig) = sig else { return false };
    let Some(bytes) = decode_hex(sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `POST /hooks/registry`: a signed push webhook starts a reconcile.
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let Some(secret) = state.config.webhook_secret.as_deref() else {
        return Err(ApiError::not_found(
            "no such route (set CRAFTING_WEBHOOK_SECRET to enable the registry webhook)",
        ));
    };
    if !verify_signature(secret, &headers, &body) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Gitea-Signature / X-Hub-Signature-256",
        ));
    }
    // A push to another branch of the registry repository changes nothing here.
    let pushed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["ref"].as_str().map(str::to_owned));
    if let Some(r) = pushed
        && r.starts_with("refs/heads/")
        && r != format!("refs/heads/{}", state.config.registry_branch)
    {
        return Ok((
            StatusCode::ACCEPTED,
            ok(
                serde_json::json!({"reconcile": false, "reason": format!("push to {r}, not the registry branch")}),
            ),
        ));
    }
    match &state.bus {
        Some(bus) if !bus.is_leader() => {
            let _ = handoff(&state, bus, false).await?;
        }
        _ => state.reconcile.kick(),
    }
    Ok((
        StatusCode::ACCEPTED,
        ok(serde_json::json!({"reconcile": true})),
    ))
}

/// Body of `POST /admin/gc`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    /// Show what would be pruned, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /admin/gc`: applies (or, with `dry_run`, shows) retention now.
pub async fn gc(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<GcBody>,
) -> Result<impl IntoResponse, ApiError> {
    let retention = crate::gc::Retention {
        days: state.config.retain_days,
        runs: state.config.retain_runs,
    };
    let report = crate::gc::prune(&state.runner, retention, body.dry_run).await?;
    Ok(ok(serde_json::json!({
        "dry_run": report.dry_run,
        "pruned": report.pruned,
        "log_bytes": report.log_bytes,
        "kept_changed": report.kept_changed,
        "kept_for_patches": report.kept_for_patches,
        "retain_days": retention.days,
        "retain_runs": retention.runs,
    })))
}
