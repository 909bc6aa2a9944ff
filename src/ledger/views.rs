//! Read-only summaries for the web pages: the last run of each command and a
//! project's findings trend. Indexed lookups only, so a page stays fast on a
//! ledger of a million jobs.

use super::jobs::{JOB_COLUMNS, Job, JobStatus, job_from_row};
use super::sql::args;
use super::{Ledger, LedgerError};

/// One finished run of a project, as its findings trend shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendPoint {
    /// The job.
    pub job_id: String,
    /// Its command.
    pub recipe: String,
    /// Its subproject.
    pub subproject: String,
    /// When it finished (ms).
    pub finished_at: i64,
    /// Findings open in the whole project after this run (each command's latest).
    pub open: i64,
    /// Findings of this run that the previous run of its command did not have.
    pub new: i64,
    /// Findings of the previous run that this one no longer reports.
    pub fixed: i64,
}

/// A queued or running job, as the farm grid shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveJob {
    /// Job id.
    pub id: String,
    /// Project.
    pub project: String,
    /// Subproject.
    pub subproject: String,
    /// Command.
    pub recipe: String,
    /// `queued` or `running`.
    pub status: JobStatus,
    /// Enqueued (ms).
    pub created_at: i64,
}

/// Runs read per point shown, so the project's sums start primed.
const PRIME: usize = 5;

impl Ledger {
    /// The newest finished job of one command, if it ever ran (a patch's verify
    /// run, on a branch of the patcher's, is not the command's own result).
    pub fn last_finished_job(
        &self,
        project: &str,
        subproject: &str,
        recipe: &str,
    ) -> Result<Option<Job>, LedgerError> {
        self.sql().query_opt(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE project_name = ?1 AND subproject = ?2 AND recipe = ?3
                   AND finished_at IS NOT NULL AND trigger != 'patch_verify'
                 ORDER BY finished_at DESC LIMIT 1"
            ),
            args![project, subproject, recipe],
            job_from_row,
        )
    }

    /// The newest `limit` finished runs of `project`, oldest first. `open` after a
    /// run is the project's whole count: the sum over its commands of each one's
    /// latest run at that moment (runs before the window prime the sums).
    pub fn findings_trend(
        &self,
        project: &str,
        limit: usize,
    ) -> Result<Vec<TrendPoint>, LedgerError> {
        let mut runs = self.sql().query(
            "SELECT id, recipe, subproject, finished_at, findings_count, fixed_json
             FROM jobs
             WHERE project_name = ?1 AND finished_at IS NOT NULL
               AND status IN ('succeeded', 'failed') AND trigger != 'patch_verify'
             ORDER BY finished_at DESC LIMIT ?2",
            args![project, limit * PRIME],
            |r| {
                let fixed: String = r.get(5)?;
                Ok(TrendPoint {
                    job_id: r.get(0)?,
                    recipe: r.get(1)?,
                    subproject: r.get(2)?,
                    finished_at: r.get(3)?,
                    open: r.get(4)?,
                    fixed: serde_json::from_str::<serde_json::Value>(&fixed)
                        .ok()
                        .and_then(|v| v.as_array().map(|a| a.len() as i64))
                        .unwrap_or(0),
                    new: 0,
                })
            },
        )?;
        runs.reverse();
        let mut latest: std::collections::HashMap<(String, String), i64> =
            std::collections::HashMap::new();
        for p in &mut runs {
            latest.insert((p.subproject.clone(), p.recipe.clone()), p.open);
            p.open = latest.values().sum();
        }
        let skip = runs.len().saturating_sub(limit);
        let mut shown = runs.split_off(skip);
        // New findings only for the runs shown (the priming runs need none).
        for p in &mut shown {
            p.new = self.new_findings_count(&p.job_id)?;
        }
        Ok(shown)
    }

    /// The queued and running jobs, briefly (no snapshot or log fields).
    pub fn active_jobs(&self) -> Result<Vec<ActiveJob>, LedgerError> {
        self.sql().query(
            "SELECT id, project_name, subproject, recipe, status, created_at FROM jobs
             WHERE status IN ('queued', 'running')",
            args![],
            |r| {
                let status: String = r.get(4)?;
                Ok(ActiveJob {
                    id: r.get(0)?,
                    project: r.get(1)?,
                    subproject: r.get(2)?,
                    recipe: r.get(3)?,
                    status: JobStatus::parse(&status).unwrap_or(JobStatus::Queued),
                    created_at: r.get(5)?,
                })
            },
        )
    }
}
