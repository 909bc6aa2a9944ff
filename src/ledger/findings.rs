//! Findings in the ledger.

use super::sql::{Row, RowError, args};
use super::{Ledger, LedgerError};

/// A finding to store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewFinding {
    /// The tool that reported it (`clippy`, `ruff`, `cargo-audit`, …).
    pub tool: String,
    /// `lint`, `cve`, `test_fail`, `recipe_fail`, `advisory`.
    pub kind: String,
    /// `error`, `warn`, `info`.
    pub severity: String,
    /// File relative to the repository root.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<i64>,
    /// 1-based column.
    pub col: Option<i64>,
    /// Rule, advisory id or test name.
    pub code: Option<String>,
    /// What the tool said.
    pub message: String,
    /// A fix, when the tool knows one.
    pub suggested_fix: Option<String>,
    /// 16-hex hash over `kind|file|line|code`.
    pub fingerprint: String,
    /// Hash of the flagged source line(s), to follow a finding that moved.
    pub location_hash: Option<String>,
    /// `new` or `unchanged` against the previous run.
    pub baseline_state: Option<String>,
    /// The tool's own record, as JSON text.
    pub raw_json: Option<String>,
}

/// A stored finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Row id.
    pub id: i64,
    /// Job it belongs to.
    pub job_id: String,
    /// Everything else.
    #[serde(flatten)]
    pub f: NewFinding,
    /// Stored (ms).
    pub created_at: i64,
}

const FINDING_COLUMNS: &str =
    "id, job_id, tool, kind, severity, file, line, col, code, message, suggested_fix,
    fingerprint, location_hash, baseline_state, raw_json, created_at";

fn finding_from_row(r: &Row) -> Result<Finding, RowError> {
    Ok(Finding {
        id: r.get(0)?,
        job_id: r.get(1)?,
        f: NewFinding {
            tool: r.get(2)?,
            kind: r.get(3)?,
            severity: r.get(4)?,
            file: r.get(5)?,
            line: r.get(6)?,
            col: r.get(7)?,
            code: r.get(8)?,
            message: r.get(9)?,
            suggested_fix: r.get(10)?,
            fingerprint: r.get(11)?,
            location_hash: r.get(12)?,
            baseline_state: r.get(13)?,
            raw_json: r.get(14)?,
        },
        created_at: r.get(15)?,
    })
}

impl Ledger {
    /// Stores a job's findings and its `fixed` list, and sets `findings_count`, in
    /// one transaction (replacing any findings stored for it before).
    pub fn store_findings(
        &mut self,
        job_id: &str,
        findings: &[NewFinding],
        fixed: &[String],
        now: i64,
    ) -> Result<(), LedgerError> {
        self.transaction(|sql| {
            sql.execute("DELETE FROM findings WHERE job_id = ?1", args![job_id])?;
            for f in findings {
                sql.execute(
                    "INSERT INTO findings (job_id, tool, kind, severity, file, line, col, code, message,
                       suggested_fix, fingerprint, location_hash, baseline_state, raw_json, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    args![
                        job_id,
                        f.tool,
                        f.kind,
                        f.severity,
                        f.file,
                        f.line,
                        f.col,
                        f.code,
                        f.message,
                        f.suggested_fix,
                        f.fingerprint,
                        f.location_hash,
                        f.baseline_state,
                        f.raw_json,
                        now
                    ],
                )?;
            }
            let fixed = serde_json::to_string(fixed).unwrap_or_else(|_| "[]".into());
            sql.execute(
                "UPDATE jobs SET findings_count = ?2, fixed_json = ?3 WHERE id = ?1",
                args![job_id, findings.len(), fixed],
            )?;
            Ok(())
        })
    }

    /// A job's findings, in stored order.
    pub fn findings_of_job(&self, job_id: &str) -> Result<Vec<Finding>, LedgerError> {
        self.sql().query(
            &format!("SELECT {FINDING_COLUMNS} FROM findings WHERE job_id = ?1 ORDER BY id"),
            args![job_id],
            finding_from_row,
        )
    }

    /// How many of a job's findings are `new` against the previous run.
    pub fn new_findings_count(&self, job_id: &str) -> Result<i64, LedgerError> {
        self.sql().query_one(
            "SELECT COUNT(*) FROM findings WHERE job_id = ?1 AND baseline_state = 'new'",
            args![job_id],
            |r| r.get(0),
        )
    }

    /// One finding by id.
    pub fn get_finding(&self, id: i64) -> Result<Option<Finding>, LedgerError> {
        self.sql().query_opt(
            &format!("SELECT {FINDING_COLUMNS} FROM findings WHERE id = ?1"),
            args![id],
            finding_from_row,
        )
    }

    /// The latest finished job of (project, subproject, recipe) before `job_id` that
    /// counts as a baseline (the patch loop's verify jobs never do).
    pub fn previous_run(
        &self,
        project: &str,
        subproject: &str,
        recipe: &str,
        before_job: &str,
    ) -> Result<Option<String>, LedgerError> {
        self.sql().query_opt(
            "SELECT id FROM jobs WHERE project_name = ?1 AND subproject = ?2 AND recipe = ?3
               AND id != ?4 AND status IN ('succeeded', 'failed')
               AND trigger != 'patch_verify'
               AND created_at <= (SELECT created_at FROM jobs WHERE id = ?4)
             ORDER BY finished_at DESC, created_at DESC LIMIT 1",
            args![project, subproject, recipe, before_job],
            |r| r.get(0),
        )
    }
}
