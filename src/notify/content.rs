//! What one digest says: per project, the jobs whose events the recipient
//! subscribed to, the findings that are new or fixed since the previous digest, and
//! the pull requests the patch loop opened. Read from the ledger; no I/O besides.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::events::{JobOutcome, job_events};
use super::units::Unit;
use crate::ledger::{Finding, Job, JobStatus, Ledger, LedgerError, Snapshot, Trigger};
use crate::manifest::{Kind, NotifyEvent};

/// A digest's content, ready to render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestContent {
    /// Recipient address.
    pub recipient: String,
    /// `HH:MM` of the unit.
    pub time: String,
    /// The unit's time zone.
    pub zone: String,
    /// Local date in `zone`.
    pub date: String,
    /// Jobs that ended after this…
    pub window_start: String,
    /// …and at or before this (RFC 3339, UTC).
    pub window_end: String,
    /// The same window in the unit's zone, for people.
    pub window_local: String,
    /// One section per project with something to say.
    pub projects: Vec<ProjectSection>,
    /// Whether the recipient wants a message on a quiet day.
    pub quiet_day_wanted: bool,
    /// Links point here.
    pub public_url: String,
}

impl DigestContent {
    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }

    /// Counts for listings.
    pub fn counts(&self) -> serde_json::Value {
        let sum =
            |f: &dyn Fn(&ProjectSection) -> usize| -> usize { self.projects.iter().map(f).sum() };
        serde_json::json!({
            "projects": self.projects.len(),
            "jobs": sum(&|p| p.jobs.len()),
            "new": sum(&|p| p.new_findings.len()),
            "fixed": sum(&|p| p.fixed_findings.len()),
            "cves": sum(&|p| p.new_findings.iter().filter(|f| f.kind == "cve").count()),
            "pull_requests": sum(&|p| p.pull_requests.len()),
        })
    }
}

/// One project's part of a digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectSection {
    /// Project name.
    pub project: String,
    /// Jobs whose events matched, oldest first.
    pub jobs: Vec<JobEntry>,
    /// Findings new since the previous digest; CVEs first.
    pub new_findings: Vec<FindingEntry>,
    /// Findings of the previous digest's runs that are gone.
    pub fixed_findings: Vec<FindingEntry>,
    /// Findings still there (a count only).
    pub unchanged: usize,
    /// Pull requests the patch loop opened.
    pub pull_requests: Vec<PullRequestEntry>,
}

/// A job in a digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEntry {
    /// Job id.
    pub id: String,
    /// Command.
    pub recipe: String,
    /// Subproject.
    pub subproject: String,
    /// Commit.
    pub sha: Option<String>,
    /// How it ended.
    pub status: String,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Seconds it ran.
    pub duration_secs: Option<f64>,
    /// The subscribed events it raised.
    pub events: Vec<NotifyEvent>,
    /// Its page in the API.
    pub url: String,
}

/// A finding in a digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingEntry {
    /// `cve`, `lint`, …
    pub kind: String,
    /// `error`, `warn`, `info`.
    pub severity: String,
    /// Tool.
    pub tool: String,
    /// Command that reported it.
    pub recipe: String,
    /// Subproject.
    pub subproject: String,
    /// File.
    pub file: Option<String>,
    /// Line.
    pub line: Option<i64>,
    /// Rule or advisory id.
    pub code: Option<String>,
    /// What the tool said.
    pub message: String,
    /// The fix, when known (a CVE's fixed version).
    pub suggested_fix: Option<String>,
    /// Fingerprint.
    pub fingerprint: String,
}

/// A pull request in a digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullRequestEntry {
    /// Patch attempt id.
    pub attempt: i64,
    /// Its URL.
    pub url: Option<String>,
    /// Its branch.
    pub branch: Option<String>,
}

/// The time window and date one digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Exclusive start (ms).
    pub start: i64,
    /// Inclusive end (ms).
    pub end: i64,
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn local(ms: i64, zone: &str) -> String {
    let t: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

fn entry(f: &Finding, job: &Job) -> FindingEntry {
    FindingEntry {
        kind: f.f.kind.clone(),
        severity: f.f.severity.clone(),
        tool: f.f.tool.clone(),
        recipe: job.recipe.clone(),
        subproject: job.subproject.clone(),
        file: f.f.file.clone(),
        line: f.f.line,
        code: f.f.code.clone(),
        message: f.f.message.clone(),
        suggested_fix: f.f.suggested_fix.clone(),
        fingerprint: f.f.fingerprint.clone(),
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "error" => 0,
        "warn" => 1,
        _ => 2,
    }
}

fn sort_findings(v: &mut [FindingEntry]) {
    v.sort_by(|a, b| {
        (
            a.kind != "cve",
            severity_rank(&a.severity),
            &a.file,
            a.line,
            &a.code,
        )
            .cmp(&(
                b.kind != "cve",
                severity_rank(&b.severity),
                &b.file,
                b.line,
                &b.code,
            ))
    });
}

/// Whether a subscriber of `events` wants to hear that a finding of `kind`,
/// reported by command `recipe`, was fixed: when it would have heard of it.
fn cares_about(events: &BTreeSet<NotifyEvent>, recipe: &str, kind: &str) -> bool {
    events.contains(&NotifyEvent::NightlySummary)
        || (kind == "cve" && events.contains(&NotifyEvent::CveFound))
        || (recipe == "audit" && events.contains(&NotifyEvent::AuditFail))
        || (recipe == "test" && events.contains(&NotifyEvent::TestFail))
        || (recipe == "lint" && events.contains(&NotifyEvent::LintWarn))
}

/// One distinct finding per fingerprint.
fn by_fingerprint(findings: Vec<Finding>) -> BTreeMap<String, Finding> {
    let mut m = BTreeMap::new();
    for f in findings {
        m.entry(f.f.fingerprint.clone()).or_insert(f);
    }
    m
}

/// Builds what `unit`'s digest for `date` says about the jobs that ended in
/// `window`. SQL reads only.
pub fn build(
    ledger: &Ledger,
    snapshot: &Snapshot,
    unit: &Unit,
    date: &str,
    window: Window,
    public_url: &str,
) -> Result<DigestContent, LedgerError> {
    let mut sections = Vec::new();
    let projects = snapshot
        .values()
        .filter(|o| o.kind == Kind::Project && o.retired_at.is_none());
    for project in projects {
        let wanted = unit.events_for(&project.name);
        if wanted.is_empty() {
            continue;
        }
        if let Some(s) = section(ledger, &project.name, &wanted, window, public_url)? {
            sections.push(s);
        }
    }
    Ok(DigestContent {
        recipient: unit.recipient.clone(),
        time: unit.time.clone(),
        zone: unit.zone.clone(),
        date: date.to_owned(),
        window_start: rfc3339(window.start),
        window_end: rfc3339(window.end),
        window_local: format!(
            "{} to {}",
            local(window.start, &unit.zone),
            local(window.end, &unit.zone)
        ),
        projects: sections,
        quiet_day_wanted: unit.wants_quiet_days(),
        public_url: public_url.to_owned(),
    })
}

fn section(
    ledger: &Ledger,
    project: &str,
    wanted: &BTreeSet<NotifyEvent>,
    window: Window,
    public_url: &str,
) -> Result<Option<ProjectSection>, LedgerError> {
    let jobs: Vec<Job> = ledger
        .jobs_finished_between(project, window.start, window.end)?
        .into_iter()
        // The patch loop's verify runs are reported as its pull requests.
        .filter(|j| j.trigger != Trigger::PatchVerify.as_str())
        .collect();
    let mut entries = Vec::new();
    // Per command: whether a job matched, and its last run that counts.
    let mut commands: BTreeMap<(String, String), (bool, Option<Job>)> = BTreeMap::new();
    for job in &jobs {
        let findings = ledger.findings_of_job(&job.id)?;
        let outcome = JobOutcome {
            recipe: &job.recipe,
            status: job.status,
            has_cve: findings.iter().any(|f| f.f.kind == "cve"),
            has_warning: findings
                .iter()
                .any(|f| matches!(f.f.severity.as_str(), "warn" | "error")),
        };
        let matched: Vec<NotifyEvent> = job_events(&outcome)
            .into_iter()
            .filter(|e| wanted.contains(e))
            .collect();
        let slot = commands
            .entry((job.subproject.clone(), job.recipe.clone()))
            .or_insert((false, None));
        if matches!(job.status, JobStatus::Succeeded | JobStatus::Failed) {
            slot.1 = Some(job.clone());
        }
        if matched.is_empty() {
            continue;
        }
        slot.0 = true;
        entries.push(JobEntry {
            id: job.id.clone(),
            recipe: job.recipe.clone(),
            subproject: job.subproject.clone(),
            sha: job.sha.clone(),
            status: job.status.as_str().to_owned(),
            exit_code: job.exit_code,
            duration_secs: match (job.started_at, job.finished_at) {
                (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
                _ => None,
            },
            events: matched,
            url: format!("{public_url}/jobs/{}", job.id),
        });
    }
    let (mut new, mut fixed, mut unchanged) = (Vec::new(), Vec::new(), 0);
    for ((subproject, recipe), (matched, latest)) in &commands {
        let Some(latest) = latest else { continue };
        let now = by_fingerprint(ledger.findings_of_job(&latest.id)?);
        let before =
            match ledger.last_run_at_or_before(project, subproject, recipe, window.start)? {
                Some(b) => by_fingerprint(ledger.findings_of_job(&b.id)?),
                None => BTreeMap::new(),
            };
        for (fp, f) in &now {
            if before.contains_key(fp) {
                unchanged += 1;
            } else if *matched {
                new.push(entry(f, latest));
            }
        }
        for (fp, f) in &before {
            if !now.contains_key(fp) && (*matched || cares_about(wanted, recipe, &f.f.kind)) {
                fixed.push(entry(f, latest));
            }
        }
    }
    sort_findings(&mut new);
    sort_findings(&mut fixed);
    let pull_requests = if wanted.contains(&NotifyEvent::PatchDrafted)
        || wanted.contains(&NotifyEvent::NightlySummary)
    {
        ledger
            .pull_requests_between(project, window.start, window.end)?
            .into_iter()
            .map(|p| PullRequestEntry {
                attempt: p.id,
                url: p.pr_url,
                branch: p.branch,
            })
            .collect()
    } else {
        Vec::new()
    };
    if entries.is_empty() && new.is_empty() && fixed.is_empty() && pull_requests.is_empty() {
        return Ok(None);
    }
    Ok(Some(ProjectSection {
        project: project.to_owned(),
        jobs: entries,
        new_findings: new,
        fixed_findings: fixed,
        unchanged,
        pull_requests,
    }))
}
