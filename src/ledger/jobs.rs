//! Jobs in the ledger: the queue the scheduler and the API fill and the runner
//! drains, and the record of every run.

use super::sql::{Param, Row, RowError, Sql, Value, args};
use super::{Ledger, LedgerError};

/// Where a job is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Its command runs.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero (or was orphaned by a restart: exit code -1).
    Failed,
    /// Killed after its timeout.
    TimedOut,
    /// Cancelled before or while running.
    Cancelled,
    /// The farm could not run it (unreachable remote, missing subproject directory…).
    Error,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Cancelled,
        JobStatus::Error,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Error => "error",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `POST /projects/{name}/jobs`.
    Api,
    /// A schedule fired.
    Schedule,
    /// The patcher's verify run.
    PatchVerify,
}

impl Trigger {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Schedule => "schedule",
            Trigger::PatchVerify => "patch_verify",
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Project name.
    pub project: String,
    /// Subproject path, normalised.
    pub subproject: String,
    /// Command name.
    pub recipe: String,
    /// What started it.
    pub trigger: Trigger,
    /// The schedule that fired it, if any.
    pub schedule: Option<String>,
    /// Branch, tag or sha to build.
    pub git_ref: String,
    /// The resolved command as JSON ([`crate::manifest::resolve::Resolved`]).
    pub snapshot: serde_json::Value,
}

/// A job row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Project name.
    pub project: String,
    /// Subproject path.
    pub subproject: String,
    /// Command name.
    pub recipe: String,
    /// What started it.
    pub trigger: String,
    /// Schedule that fired it.
    pub schedule: Option<String>,
    /// Requested ref.
    pub git_ref: String,
    /// Resolved commit.
    pub sha: Option<String>,
    /// Status.
    pub status: JobStatus,
    /// Exit code of the command.
    pub exit_code: Option<i64>,
    /// Why the farm could not run it, or how it was stopped.
    pub error: Option<String>,
    /// The command as resolved at enqueue time.
    pub recipe_snapshot: serde_json::Value,
    /// Log file.
    pub log_path: Option<String>,
    /// Process group of the running command.
    pub pgid: Option<i64>,
    /// Start time of the group leader (clock ticks since boot).
    pub pgid_start_time: Option<i64>,
    /// Worktree the job ran in.
    pub worktree_path: Option<String>,
    /// Number of findings.
    pub findings_count: i64,
    /// Fingerprints that disappeared since the previous run.
    pub fixed: serde_json::Value,
    /// Enqueued (ms).
    pub created_at: i64,
    /// Started (ms).
    pub started_at: Option<i64>,
    /// Finished (ms).
    pub finished_at: Option<i64>,
    /// The runner process that ran (or runs) it.
    pub runner: Option<String>,
}

pub(super) const JOB_COLUMNS: &str =
    "id, project_name, subproject, recipe, trigger, schedule_name, git_ref, sha, status,
    exit_code, error, recipe_snapshot_json, log_path, pgid, pgid_start_time, worktree_path,
    findings_count, fixed_json, created_at, started_at, finished_at, runner";

pub(super) fn job_from_row(r: &Row) -> Result<Job, RowError> {
    let status: String = r.get(8)?;
    Ok(Job {
        id: r.get(0)?,
        project: r.get(1)?,
        subproject: r.get(2)?,
        recipe: r.get(3)?,
        trigger: r.get(4)?,
        schedule: r.get(5)?,
        git_ref: r.get(6)?,
        sha: r.get(7)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Error),
        exit_code: r.get(9)?,
        error: r.get(10)?,
        recipe_snapshot: serde_json::from_str(&r.get::<String>(11)?).unwrap_or_default(),
        log_path: r.get(12)?,
        pgid: r.get(13)?,
        pgid_start_time: r.get(14)?,
        worktree_path: r.get(15)?,
        findings_count: r.get(16)?,
        fixed: serde_json::from_str(&r.get::<String>(17)?).unwrap_or_default(),
        created_at: r.get(18)?,
        started_at: r.get(19)?,
        finished_at: r.get(20)?,
        runner: r.get(21)?,
    })
}

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only projects in this list (`None`: every project).
    pub visible_projects: Option<Vec<String>>,
    /// Only jobs created before this `(created_at, id)` (the page cursor).
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: usize,
}

impl Ledger {
    /// Enqueues a job; when an identical job (project, subproject, recipe, ref) is
    /// still queued, returns that one instead and `true`.
    pub fn enqueue_job(&mut self, new: &NewJob, now: i64) -> Result<(Job, bool), LedgerError> {
        let origin = self.origin.clone();
        self.transaction(|sql| enqueue_in(sql, &origin, new, now))
    }

    /// One job by id.
    pub fn get_job(&self, id: &str) -> Result<Option<Job>, LedgerError> {
        self.sql().query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            args![id],
            job_from_row,
        )
    }

    /// Jobs newest first, filtered.
    pub fn list_jobs(&self, f: &JobFilter) -> Result<Vec<Job>, LedgerError> {
        let db = self.sql();
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(p) = &f.project {
            args.push(p.value());
            sql += &format!(" AND project_name = ?{}", args.len());
        }
        if let Some(s) = f.status {
            args.push(s.as_str().value());
            sql += &format!(" AND status = ?{}", args.len());
        }
        if let Some(list) = &f.visible_projects {
            args.push(serde_json::to_string(list).unwrap_or_default().value());
            sql += &format!(" AND {}", db.in_json_list("project_name", args.len()));
        }
        if let Some((at, id)) = &f.before {
            args.push(at.value());
            args.push(id.value());
            sql += &format!(
                " AND (created_at < ?{a} OR (created_at = ?{a} AND id < ?{b}))",
                a = args.len() - 1,
                b = args.len()
            );
        }
        args.push(f.limit.value());
        sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT ?{}", args.len());
        let refs: Vec<&dyn Param> = args.iter().map(|v| v as &dyn Param).collect();
        db.query(&sql, &refs, job_from_row)
    }

    /// Queued or running jobs fired by `schedule`.
    pub fn active_jobs_of_schedule(&self, schedule: &str) -> Result<Vec<Job>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE schedule_name = ?1 AND status IN ('queued', 'running')"
            ),
            args![schedule],
            job_from_row,
        )
    }

    /// Number of jobs in each status.
    pub fn job_counts(&self) -> Result<Vec<(JobStatus, i64)>, LedgerError> {
        let rows = self.sql().query(
            "SELECT status, COUNT(*) FROM jobs GROUP BY status",
            args![],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n)| Some((JobStatus::parse(&s)?, n)))
            .collect())
    }

    /// Cancels a job that is still queued; `false` when it was not queued.
    pub fn cancel_queued_job(&self, id: &str, reason: &str, now: i64) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "UPDATE jobs SET status = 'cancelled', error = ?2, finished_at = ?3
             WHERE id = ?1 AND status = 'queued'",
            args![id, reason, now],
        )?;
        if n == 1 {
            self.sql()
                .notify(&super::note(&self.origin, "finished", id))?;
        }
        Ok(n == 1)
    }
}

/// Enqueues inside an open transaction (see [`Ledger::enqueue_job`]).
pub(super) fn enqueue_in(
    sql: &Sql<'_>,
    origin: &str,
    new: &NewJob,
    now: i64,
) -> Result<(Job, bool), LedgerError> {
    let existing = sql.query_opt(
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'queued' AND project_name = ?1
             AND subproject = ?2 AND recipe = ?3 AND git_ref = ?4 ORDER BY created_at LIMIT 1"
        ),
        args![new.project, new.subproject, new.recipe, new.git_ref],
        job_from_row,
    )?;
    if let Some(job) = existing {
        return Ok((job, true));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let job = sql.query_one(
        &format!(
            "INSERT INTO jobs (id, project_name, subproject, recipe, trigger, schedule_name, git_ref,
               status, recipe_snapshot_json, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9)
             RETURNING {JOB_COLUMNS}"
        ),
        args![
            id,
            new.project,
            new.subproject,
            new.recipe,
            new.trigger.as_str(),
            new.schedule,
            new.git_ref,
            new.snapshot.to_string(),
            now
        ],
        job_from_row,
    )?;
    sql.notify(&super::note(origin, "queued", &job.id))?;
    Ok((job, false))
}

impl Ledger {
    /// Queued jobs, oldest first.
    pub fn queued_jobs(&self, limit: usize) -> Result<Vec<Job>, LedgerError> {
        self.jobs_where(
            "status = 'queued' ORDER BY created_at, id LIMIT ?1",
            args![limit],
        )
    }

    /// Running jobs.
    pub fn running_jobs(&self) -> Result<Vec<Job>, LedgerError> {
        self.jobs_where("status = 'running' ORDER BY started_at", args![])
    }

    fn jobs_where(&self, clause: &str, args: &[&dyn Param]) -> Result<Vec<Job>, LedgerError> {
        self.sql().query(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {clause}"),
            args,
            job_from_row,
        )
    }

    /// Moves a queued job to running; `false` when it was no longer queued (a
    /// cancel won the race).
    pub fn claim_job(&self, id: &str, log_path: &str, now: i64) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "UPDATE jobs SET status = 'running', started_at = ?2, log_path = ?3
             WHERE id = ?1 AND status = 'queued'",
            args![id, now, log_path],
        )?;
        Ok(n == 1)
    }

    /// Records the checked-out commit and worktree of a running job.
    pub fn set_job_checkout(&self, id: &str, sha: &str, worktree: &str) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE jobs SET sha = ?2, worktree_path = ?3 WHERE id = ?1",
                args![id, sha, worktree],
            )
            .map(|_| ())
    }

    /// Records the process group of a running job and its leader's start time.
    pub fn set_job_process(&self, id: &str, pgid: i64, start_time: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE jobs SET pgid = ?2, pgid_start_time = ?3 WHERE id = ?1",
                args![id, pgid, start_time],
            )
            .map(|_| ())
    }

    /// Ends a running job; `false` when it was not running.
    pub fn finish_job(
        &self,
        id: &str,
        status: JobStatus,
        exit_code: Option<i64>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "UPDATE jobs SET status = ?2, exit_code = ?3, error = ?4, finished_at = ?5,
               lease_until = NULL
             WHERE id = ?1 AND status = 'running'",
            args![id, status.as_str(), exit_code, error, now],
        )?;
        if n == 1 {
            self.sql()
                .notify(&super::note(&self.origin, "finished", id))?;
        }
        Ok(n == 1)
    }
}

impl Ledger {
    /// For finished jobs, by status: (status, count, total run time in ms).
    pub fn job_duration_stats(&self) -> Result<Vec<(JobStatus, i64, i64)>, LedgerError> {
        let rows = self.sql().query(
            "SELECT status, COUNT(*), CAST(COALESCE(SUM(finished_at - started_at), 0) AS BIGINT) FROM jobs
             WHERE finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY status",
            args![],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, n, sum)| Some((JobStatus::parse(&s)?, n, sum)))
            .collect())
    }
}
