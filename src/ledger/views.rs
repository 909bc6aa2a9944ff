//! Read-only summaries for the web pages: the last run of each command and a
//! project's findings trend. Indexed lookups only, so a page stays fast on a
//! ledger of a million jobs.

use rusqlite::{OptionalExtension, params};

use super::jobs::{JOB_COLUMNS, Job, job_from_row};
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
    /// Of those, how many the previous run of its command did not have.
    pub new: i64,
    /// Findings of the previous run that this one no longer reports.
    pub fixed: i64,
}

/// Runs read per point shown, so the project's sums start primed.
const PRIME: usize = 5;

impl Ledger {
    /// The newest finished job of one command, if it ever ran.
    pub fn last_finished_job(
        &self,
        project: &str,
        subproject: &str,
        recipe: &str,
    ) -> Result<Option<Job>, LedgerError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_by_command
                     WHERE project_name = ?1 AND subproject = ?2 AND recipe = ?3
                       AND finished_at IS NOT NULL
                     ORDER BY finished_at DESC LIMIT 1"
                ),
                params![project, subproject, recipe],
                job_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` finished runs of `project`, oldest first. `open` after a
    /// run is the project's whole count: the sum over its commands of each one's
    /// latest run at that moment (runs before the window prime the sums).
    pub fn findings_trend(
        &self,
        project: &str,
        limit: usize,
    ) -> Result<Vec<TrendPoint>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT j.id, j.recipe, j.subproject, j.finished_at, j.findings_count, j.fixed_json,
                        (SELECT COUNT(*) FROM findings f
                          WHERE f.job_id = j.id AND f.baseline_state = 'new')
                 FROM jobs j INDEXED BY jobs_by_finish
                 WHERE j.project_name = ?1 AND j.finished_at IS NOT NULL
                 ORDER BY j.finished_at DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![project, (limit * PRIME) as i64], |r| {
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
                    new: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut runs: Vec<TrendPoint> = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        runs.reverse();
        let mut latest: std::collections::HashMap<(String, String), i64> =
            std::collections::HashMap::new();
        for p in &mut runs {
            latest.insert((p.subproject.clone(), p.recipe.clone()), p.open);
            p.open = latest.values().sum();
        }
        let skip = runs.len().saturating_sub(limit);
        Ok(runs.split_off(skip))
    }
}
