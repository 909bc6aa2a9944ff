//! The scheduler: turns `Schedule` objects into fires and jobs.
//!
//! For each active schedule the next fire time is computed with croner in the
//! schedule's IANA time zone (so `0 2 * * *` stays at 02:00 local across DST
//! changes) and persisted. A [`tick`] at time `now` fires every schedule whose next
//! fire is due — once, for the latest occurrence not after `now`, however many were
//! missed while the farm was down — and records it under the unique
//! `(schedule, fire_time)` key in the same transaction that enqueues its jobs, so a
//! restart or an overlapping tick can never fire it twice.
//!
//! The clock is a parameter: tests drive [`tick`] with any `now`.

use chrono::{DateTime, TimeZone, Utc};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::enqueue::{Catalog, JobRequest};
use crate::ledger::{Fire, Job, JobStatus, Ledger, LedgerError, NewJob, Snapshot, Trigger};
use crate::manifest::check::{normalize_subproject_path, parse_cron, parse_timezone};
use crate::manifest::{Concurrency, ScheduleSpec, Suspend};
use crate::runner::Runner;

/// What one fire did.
#[derive(Debug, Clone, PartialEq)]
pub struct FireReport {
    /// Schedule name.
    pub schedule: String,
    /// The occurrence fired (ms).
    pub fire_time: i64,
    /// Jobs enqueued (or coalesced with an identical queued job).
    pub jobs: Vec<Job>,
    /// Why jobs were skipped, if any were.
    pub note: Option<String>,
}

/// What a tick did and what the caller must do next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    /// Fires recorded by this tick.
    pub fired: Vec<FireReport>,
    /// Running jobs to cancel (`concurrency: replace`); the runner does that.
    pub cancel_running: Vec<String>,
    /// The earliest next fire of any schedule (ms), to sleep until.
    pub next_wake: Option<i64>,
}

/// Whether a `suspend` block is in force at `now`.
pub fn is_suspended(s: Option<&Suspend>, now: DateTime<Utc>) -> bool {
    match s {
        None => false,
        Some(s) => match s.until.as_deref().map(DateTime::parse_from_rfc3339) {
            None => true,
            Some(Ok(until)) => until > now,
            // Validation rejects a bad `until`; if one got here, stay suspended.
            Some(Err(_)) => true,
        },
    }
}

/// The first occurrence of `spec` strictly after `after`, in ms.
pub fn next_after(spec: &ScheduleSpec, after: DateTime<Utc>) -> Option<i64> {
    let cron = parse_cron(&spec.cron).ok()?;
    let tz = parse_timezone(&spec.timezone).ok()?;
    let local = after.with_timezone(&tz);
    cron.find_next_occurrence(&local, false)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// The latest occurrence of `spec` at or before `at`, in ms.
pub fn latest_at_or_before(spec: &ScheduleSpec, at: DateTime<Utc>) -> Option<i64> {
    let cron = parse_cron(&spec.cron).ok()?;
    let tz = parse_timezone(&spec.timezone).ok()?;
    let local = at.with_timezone(&tz);
    cron.find_previous_occurrence(&local, true)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The jobs one fire of `spec` enqueues, and notes on what was skipped.
pub fn jobs_for(
    schedule: &str,
    spec: &ScheduleSpec,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> (Vec<NewJob>, Vec<String>) {
    let catalog = Catalog::new(snapshot.clone());
    let mut jobs = Vec::new();
    let mut notes = Vec::new();
    for (o, project) in catalog.active_projects() {
        if !spec.projects.matches(&o.name) {
            continue;
        }
        let project = match project {
            Ok(p) => p,
            Err(e) => {
                notes.push(e.to_string());
                continue;
            }
        };
        if is_suspended(project.suspend.as_ref(), now) {
            let why = project.suspend.as_ref().map_or("", |s| s.reason.as_str());
            notes.push(format!("project {} suspended: {why}", o.name));
            continue;
        }
        for sp in &project.subprojects {
            let Ok(path) = normalize_subproject_path(&sp.path) else {
                continue;
            };
            let selected = match &spec.subprojects {
                crate::manifest::Selector::All => true,
                crate::manifest::Selector::Names(list) => list
                    .iter()
                    .any(|p| normalize_subproject_path(p).ok().as_deref() == Some(path.as_str())),
            };
            if !selected {
                continue;
            }
            // Subprojects without this command are skipped quietly: `audit` on a
            // docs subproject is not an error.
            let request = JobRequest {
                project: o.name.clone(),
                subproject: Some(path),
                recipe: spec.recipe.clone(),
                git_ref: None,
                trigger: Trigger::Schedule,
                schedule: Some(schedule.to_owned()),
            };
            if let Ok(job) = catalog.new_job(&request) {
                jobs.push(job);
            }
        }
    }
    (jobs, notes)
}

/// Fires every due schedule at `now`. Blocking (ledger calls).
pub fn tick(ledger: &mut Ledger, now: DateTime<Utc>) -> Result<TickReport, LedgerError> {
    let now_ms = now.timestamp_millis();
    let mut report = TickReport::default();
    let rows = ledger.active_schedules()?;
    let mut snapshot: Option<Snapshot> = None;
    for row in rows {
        let Ok(spec) = serde_json::from_value::<ScheduleSpec>(row.spec.clone()) else {
            tracing::warn!(schedule = %row.name, "stored schedule spec unreadable; skipped");
            continue;
        };
        let Some(next_after_now) = next_after(&spec, now) else {
            tracing::warn!(schedule = %row.name, cron = %spec.cron, "no next occurrence; skipped");
            continue;
        };
        let due = match row.next_fire_at {
            None => {
                // New or changed schedule: it starts with the next occurrence.
                ledger.set_next_fire(&row.name, Some(next_after_now))?;
                None
            }
            Some(next) if next > now_ms => None,
            Some(_) => latest_at_or_before(&spec, now),
        };
        let Some(fire_time) = due else {
            let next = row
                .next_fire_at
                .filter(|n| *n > now_ms)
                .unwrap_or(next_after_now);
            report.next_wake = Some(report.next_wake.map_or(next, |w: i64| w.min(next)));
            continue;
        };
        report.next_wake = Some(
            report
                .next_wake
                .map_or(next_after_now, |w| w.min(next_after_now)),
        );

        let mut jobs = Vec::new();
        let mut cancel_queued = Vec::new();
        let mut notes = Vec::new();
        if is_suspended(spec.suspend.as_ref(), now) {
            let why = spec.suspend.as_ref().map_or("", |s| s.reason.as_str());
            notes.push(format!("skipped: schedule suspended: {why}"));
        } else {
            let active = ledger.active_jobs_of_schedule(&row.name)?;
            let proceed = match spec.concurrency {
                Concurrency::Allow => true,
                Concurrency::Forbid if active.is_empty() => true,
                Concurrency::Forbid => {
                    notes.push(format!(
                        "skipped: previous run still queued or running ({} job{})",
                        active.len(),
                        if active.len() == 1 { "" } else { "s" }
                    ));
                    false
                }
                Concurrency::Replace => {
                    for j in &active {
                        match j.status {
                            JobStatus::Queued => cancel_queued.push(j.id.clone()),
                            _ => report.cancel_running.push(j.id.clone()),
                        }
                    }
                    if !active.is_empty() {
                        notes.push(format!("replaced {} active job(s)", active.len()));
                    }
                    true
                }
            };
            if proceed {
                if snapshot.is_none() {
                    snapshot = Some(ledger.snapshot()?);
                }
                if let Some(snap) = &snapshot {
                    let (j, n) = jobs_for(&row.name, &spec, snap, now);
                    jobs = j;
                    notes.extend(n);
                }
            }
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        let fire = Fire {
            schedule: &row.name,
            fire_time,
            next_fire_at: next_after_now,
            jobs: &jobs,
            cancel_queued: &cancel_queued,
            note: note.clone(),
        };
        match ledger.fire_schedule(&fire, now_ms)? {
            None => {
                tracing::debug!(schedule = %row.name, fire_time, "fire already recorded");
            }
            Some(jobs) => {
                tracing::info!(
                    schedule = %row.name,
                    fire_time = %ms_to_utc(fire_time),
                    jobs = jobs.len(),
                    note = note.as_deref().unwrap_or(""),
                    "schedule fired"
                );
                report.fired.push(FireReport {
                    schedule: row.name.clone(),
                    fire_time,
                    jobs,
                    note,
                });
            }
        }
    }
    Ok(report)
}

/// The scheduler's loop in the farm: ticks at the next fire, after each applied
/// reconcile (`wake`), and at least once a minute; announces the jobs it enqueued
/// and asks the runner to cancel what `concurrency: replace` replaced.
pub async fn run(runner: Runner, wake: Arc<Notify>) -> String {
    loop {
        let now = runner.clock().now();
        let report = runner.db().write(move |l| tick(l, now)).await;
        let sleep = match report {
            Ok(r) => {
                for f in &r.fired {
                    runner.announce_queued(&f.jobs);
                }
                for id in &r.cancel_running {
                    let _ = runner
                        .cancel(id, "replaced by a newer fire of its schedule")
                        .await;
                }
                let now = runner.clock().now_ms();
                r.next_wake
                    .map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)))
                    .unwrap_or(Duration::from_secs(60))
                    .clamp(Duration::from_millis(200), Duration::from_secs(60))
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduler tick failed; retrying");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
        }
    }
}
