//! Retention: which runs lose their log and findings, and doing it.

use std::collections::HashSet;

use super::sql::args;
use super::{Ledger, LedgerError};

/// A run the retention rule would prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prunable {
    /// Job id.
    pub job_id: String,
    /// Its project.
    pub project: String,
    /// Its log file, if it had one.
    pub log_path: Option<String>,
}

/// What the retention rule decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Runs to prune.
    pub prune: Vec<Prunable>,
    /// Runs kept although old or beyond the count, because their findings changed.
    pub kept_changed: usize,
    /// Runs kept because a patch attempt still refers to them.
    pub kept_for_patches: usize,
}

impl Ledger {
    /// The runs to prune at `now`: older than `retain_days` or not among the latest
    /// `retain_runs` of their command (project, subproject, command) — but never the
    /// latest run of a command, a run whose findings changed (new or fixed), or a
    /// run an unfinished patch attempt or an open pull request refers to.
    pub fn prune_plan(
        &self,
        now: i64,
        retain_days: u64,
        retain_runs: u64,
    ) -> Result<PrunePlan, LedgerError> {
        let sql = self.sql();
        let changed: HashSet<String> = sql
            .query(
                "SELECT id FROM jobs WHERE pruned_at IS NULL AND fixed_json != '[]'
                 UNION SELECT DISTINCT job_id FROM findings WHERE baseline_state = 'new'",
                args![],
                |r| r.get(0),
            )?
            .into_iter()
            .collect();
        let protected: HashSet<String> = sql
            .query(
                "SELECT job_id FROM patch_attempts
                   WHERE finished_at IS NULL OR COALESCE(pr_state, '') = 'open'
                 UNION SELECT verify_job_id FROM patch_attempts
                   WHERE verify_job_id IS NOT NULL
                     AND (finished_at IS NULL OR COALESCE(pr_state, '') = 'open')",
                args![],
                |r| r.get(0),
            )?
            .into_iter()
            .collect();
        let cutoff = now.saturating_sub(
            i64::try_from(retain_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX),
        );
        let mut plan = PrunePlan::default();
        let mut group: Option<(String, String, String)> = None;
        let mut index: u64 = 0;
        sql.for_each(
            "SELECT id, project_name, subproject, recipe, finished_at, log_path FROM jobs
             WHERE finished_at IS NOT NULL AND pruned_at IS NULL
             ORDER BY project_name, subproject, recipe, finished_at DESC, created_at DESC, id DESC",
            args![],
            |r| {
                let id: String = r.get(0)?;
                let project: String = r.get(1)?;
                let key = (project.clone(), r.get(2)?, r.get(3)?);
                let finished: i64 = r.get(4)?;
                if group.as_ref() != Some(&key) {
                    group = Some(key);
                    index = 0;
                } else {
                    index += 1;
                }
                let expired = index >= retain_runs || finished < cutoff;
                if index == 0 || !expired {
                    return Ok(());
                }
                if changed.contains(&id) {
                    plan.kept_changed += 1;
                } else if protected.contains(&id) {
                    plan.kept_for_patches += 1;
                } else {
                    plan.prune.push(Prunable {
                        job_id: id,
                        project,
                        log_path: r.get(5)?,
                    });
                }
                Ok(())
            },
        )?;
        Ok(plan)
    }

    /// Marks runs pruned and deletes their findings, in one transaction. The caller
    /// deletes the log files after this commits.
    pub fn prune_runs(&mut self, ids: &[String], now: i64) -> Result<usize, LedgerError> {
        self.transaction(|sql| {
            let mut n = 0;
            for id in ids {
                sql.execute("DELETE FROM findings WHERE job_id = ?1", args![id])?;
                sql.execute("DELETE FROM job_log_chunks WHERE job_id = ?1", args![id])?;
                n += sql.execute(
                    "UPDATE jobs SET pruned_at = ?2 WHERE id = ?1 AND pruned_at IS NULL",
                    args![id, now],
                )?;
            }
            Ok(n)
        })
    }

    /// Rows of the findings table.
    pub fn findings_rows(&self) -> Result<i64, LedgerError> {
        self.sql()
            .query_one("SELECT COUNT(*) FROM findings", args![], |r| r.get(0))
    }

    /// Log files of runs pruned before (to remove any a crash left behind).
    pub fn pruned_logs(&self) -> Result<Vec<String>, LedgerError> {
        self.sql().query(
            "SELECT log_path FROM jobs WHERE pruned_at IS NOT NULL AND log_path IS NOT NULL",
            args![],
            |r| r.get(0),
        )
    }
}
