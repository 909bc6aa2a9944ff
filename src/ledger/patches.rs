//! Patch attempts in the ledger: one row per attempt of the patch loop, with the
//! finding's own fields copied in so that an attempt outlives any finding row.

use super::sql::{Param, Row, RowError, Value, args};
use super::{Ledger, LedgerError};

/// Where an attempt is in its life.
pub const ACTIVE_STATUSES: &[&str] = &["queued", "drafting", "applying", "verifying", "pushing"];

/// A patch attempt row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatchAttempt {
    /// Row id.
    pub id: i64,
    /// Project.
    pub project: String,
    /// The finding's fingerprint.
    pub fingerprint: String,
    /// 1, 2, 3…
    pub attempt_number: i64,
    /// `auto` or `manual`.
    pub trigger: String,
    /// `queued`, `drafting`, …, `pr_opened`, or an ending status.
    pub status: String,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// The job whose finding this is.
    pub job_id: String,
    /// The finding row (may be gone later).
    pub finding_id: Option<i64>,
    /// Subproject.
    pub subproject: String,
    /// Command name.
    pub recipe: String,
    /// The command line.
    pub command: String,
    /// The job's commit.
    pub sha: Option<String>,
    /// Tool.
    pub tool: String,
    /// Kind.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// Code.
    pub code: Option<String>,
    /// File.
    pub file: Option<String>,
    /// Line.
    pub line: Option<i64>,
    /// Column.
    pub col: Option<i64>,
    /// Message.
    pub message: String,
    /// The tool's fix.
    pub suggested_fix: Option<String>,
    /// `clawdforge` or `openai`.
    pub backend: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Characters of the prompt.
    pub prompt_chars: Option<i64>,
    /// The model's diff.
    pub diff: Option<String>,
    /// The model's explanation.
    pub explanation: Option<String>,
    /// The model's confidence (0..1).
    pub confidence: Option<f64>,
    /// The reply, when it could not be used (first 2,000 characters).
    pub model_reply: Option<String>,
    /// The patched commit.
    pub commit_sha: Option<String>,
    /// The verify job.
    pub verify_job_id: Option<String>,
    /// The forge branch.
    pub branch: Option<String>,
    /// Pull request number.
    pub pr_number: Option<i64>,
    /// Pull request URL.
    pub pr_url: Option<String>,
    /// Last known state of the pull request (`open`, `closed`, `merged`).
    pub pr_state: Option<String>,
    /// Created (ms).
    pub created_at: i64,
    /// Updated (ms).
    pub updated_at: i64,
    /// Ended (ms).
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, project_name, fingerprint, attempt_number, trigger, status, reason, job_id,
    finding_id, subproject, recipe, command, sha, tool, kind, severity, code, file, line, col, message,
    suggested_fix, backend, model, prompt_chars, diff, explanation, confidence, model_reply, commit_sha,
    verify_job_id, branch, pr_number, pr_url, pr_state, created_at, updated_at, finished_at";

fn from_row(r: &Row) -> Result<PatchAttempt, RowError> {
    Ok(PatchAttempt {
        id: r.get(0)?,
        project: r.get(1)?,
        fingerprint: r.get(2)?,
        attempt_number: r.get(3)?,
        trigger: r.get(4)?,
        status: r.get(5)?,
        reason: r.get(6)?,
        job_id: r.get(7)?,
        finding_id: r.get(8)?,
        subproject: r.get(9)?,
        recipe: r.get(10)?,
        command: r.get(11)?,
        sha: r.get(12)?,
        tool: r.get(13)?,
        kind: r.get(14)?,
        severity: r.get(15)?,
        code: r.get(16)?,
        file: r.get(17)?,
        line: r.get(18)?,
        col: r.get(19)?,
        message: r.get(20)?,
        suggested_fix: r.get(21)?,
        backend: r.get(22)?,
        model: r.get(23)?,
        prompt_chars: r.get(24)?,
        diff: r.get(25)?,
        explanation: r.get(26)?,
        confidence: r.get(27)?,
        model_reply: r.get(28)?,
        commit_sha: r.get(29)?,
        verify_job_id: r.get(30)?,
        branch: r.get(31)?,
        pr_number: r.get(32)?,
        pr_url: r.get(33)?,
        pr_state: r.get(34)?,
        created_at: r.get(35)?,
        updated_at: r.get(36)?,
        finished_at: r.get(37)?,
    })
}

/// What changes in an attempt as it goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchUpdate {
    /// New status.
    pub status: Option<String>,
    /// Reason.
    pub reason: Option<String>,
    /// Backend and model.
    pub backend: Option<(String, String)>,
    /// Prompt size.
    pub prompt_chars: Option<i64>,
    /// The model's answer.
    pub draft: Option<(String, String, Option<f64>)>,
    /// An unusable reply.
    pub model_reply: Option<String>,
    /// Patched commit.
    pub commit_sha: Option<String>,
    /// Verify job.
    pub verify_job_id: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Pull request (number, url, state).
    pub pr: Option<(i64, String, String)>,
    /// Whether the attempt ended.
    pub finished: bool,
}

impl Ledger {
    /// Records a new attempt (its number = 1 + the finding's earlier attempts).
    /// Returns `None` when a concurrent insert took that number.
    pub fn insert_patch(
        &mut self,
        p: &PatchAttempt,
        now: i64,
    ) -> Result<Option<PatchAttempt>, LedgerError> {
        let id = self.transaction(|sql| {
            let number: i64 = sql.query_one(
                "SELECT COALESCE(MAX(attempt_number), 0) + 1 FROM patch_attempts
                 WHERE project_name = ?1 AND fingerprint = ?2",
                args![p.project, p.fingerprint],
                |r| r.get(0),
            )?;
            sql.query_opt(
                "INSERT INTO patch_attempts (project_name, fingerprint, attempt_number, trigger, status,
                   reason, job_id, finding_id, subproject, recipe, command, sha, tool, kind, severity,
                   code, file, line, col, message, suggested_fix, created_at, updated_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                   ?18, ?19, ?20, ?21, ?22, ?22, ?23)
                 ON CONFLICT DO NOTHING
                 RETURNING id",
                args![
                    p.project,
                    p.fingerprint,
                    number,
                    p.trigger,
                    p.status,
                    p.reason,
                    p.job_id,
                    p.finding_id,
                    p.subproject,
                    p.recipe,
                    p.command,
                    p.sha,
                    p.tool,
                    p.kind,
                    p.severity,
                    p.code,
                    p.file,
                    p.line,
                    p.col,
                    p.message,
                    p.suggested_fix,
                    now,
                    p.finished_at
                ],
                |r| r.get::<i64>(0),
            )
        })?;
        match id {
            Some(id) => self.patch(id),
            None => Ok(None),
        }
    }

    /// One attempt.
    pub fn patch(&self, id: i64) -> Result<Option<PatchAttempt>, LedgerError> {
        self.sql().query_opt(
            &format!("SELECT {COLUMNS} FROM patch_attempts WHERE id = ?1"),
            args![id],
            from_row,
        )
    }

    /// One attempt and its project (for visibility checks).
    pub fn get_patch(&self, id: i64) -> Result<Option<(PatchAttempt, String)>, LedgerError> {
        Ok(self.patch(id)?.map(|p| {
            let project = p.project.clone();
            (p, project)
        }))
    }

    /// Applies an update to an attempt; an ended attempt is never changed again.
    /// Returns the attempt after the update (`None` if it had already ended).
    pub fn update_patch(
        &self,
        id: i64,
        u: &PatchUpdate,
        now: i64,
    ) -> Result<Option<PatchAttempt>, LedgerError> {
        let (backend, model) = u.backend.clone().unzip();
        let (diff, explanation, confidence) = match &u.draft {
            Some((d, e, c)) => (Some(d.clone()), Some(e.clone()), *c),
            None => (None, None, None),
        };
        let (pr_number, pr_url, pr_state) = match &u.pr {
            Some((n, url, state)) => (Some(*n), Some(url.clone()), Some(state.clone())),
            None => (None, None, None),
        };
        let n = self.sql().execute(
            "UPDATE patch_attempts SET
               status = COALESCE(?2, status), reason = COALESCE(?3, reason),
               backend = COALESCE(?4, backend), model = COALESCE(?5, model),
               prompt_chars = COALESCE(?6, prompt_chars), diff = COALESCE(?7, diff),
               explanation = COALESCE(?8, explanation), confidence = COALESCE(?9, confidence),
               model_reply = COALESCE(?10, model_reply), commit_sha = COALESCE(?11, commit_sha),
               verify_job_id = COALESCE(?12, verify_job_id), branch = COALESCE(?13, branch),
               pr_number = COALESCE(?14, pr_number), pr_url = COALESCE(?15, pr_url),
               pr_state = COALESCE(?16, pr_state), updated_at = ?17,
               finished_at = CASE WHEN ?18 = 1 THEN ?17 ELSE finished_at END
             WHERE id = ?1 AND finished_at IS NULL",
            args![
                id,
                u.status,
                u.reason,
                backend,
                model,
                u.prompt_chars,
                diff,
                explanation,
                confidence,
                u.model_reply,
                u.commit_sha,
                u.verify_job_id,
                u.branch,
                pr_number,
                pr_url,
                pr_state,
                now,
                u.finished
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.patch(id)
    }

    /// Sets the last known state of an attempt's pull request (also after it ended).
    pub fn set_pr_state(&self, id: i64, state: &str, now: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE patch_attempts SET pr_state = ?2, updated_at = ?3 WHERE id = ?1",
                args![id, state, now],
            )
            .map(|_| ())
    }

    /// Attempts newest first, optionally of some projects, one project and a status.
    pub fn list_patches(
        &self,
        visible_projects: Option<&[String]>,
        project: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PatchAttempt>, LedgerError> {
        let sql = self.sql();
        let mut text = format!("SELECT {COLUMNS} FROM patch_attempts WHERE 1=1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(v) = visible_projects {
            args.push(serde_json::to_string(v).unwrap_or_default().value());
            text += &format!(" AND {}", sql.in_json_list("project_name", args.len()));
        }
        if let Some(p) = project {
            args.push(p.value());
            text += &format!(" AND project_name = ?{}", args.len());
        }
        if let Some(st) = status {
            args.push(st.value());
            text += &format!(" AND status = ?{}", args.len());
        }
        args.push(limit.value());
        text += &format!(" ORDER BY id DESC LIMIT ?{}", args.len());
        let refs: Vec<&dyn Param> = args.iter().map(|v| v as &dyn Param).collect();
        sql.query(&text, &refs, from_row)
    }

    /// Every attempt of one finding (project + fingerprint), oldest first.
    pub fn patches_of_finding(
        &self,
        project: &str,
        fingerprint: &str,
    ) -> Result<Vec<PatchAttempt>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {COLUMNS} FROM patch_attempts WHERE project_name = ?1 AND fingerprint = ?2
                 ORDER BY attempt_number"
            ),
            args![project, fingerprint],
            from_row,
        )
    }

    /// Attempts of a project whose pull request is (as last known) open.
    pub fn open_pull_requests(&self, project: &str) -> Result<Vec<PatchAttempt>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {COLUMNS} FROM patch_attempts WHERE project_name = ?1
                   AND pr_number IS NOT NULL AND COALESCE(pr_state, 'open') = 'open' ORDER BY id"
            ),
            args![project],
            from_row,
        )
    }

    /// Attempts of a project created since `since` (ms), skipped ones left out.
    pub fn patches_since(&self, project: &str, since: i64) -> Result<i64, LedgerError> {
        self.sql().query_one(
            "SELECT COUNT(*) FROM patch_attempts WHERE project_name = ?1 AND created_at >= ?2
               AND status != 'skipped'",
            args![project, since],
            |r| r.get(0),
        )
    }

    /// Attempts that had not ended (for the restart sweep and the one-at-a-time rule).
    pub fn active_patches(&self) -> Result<Vec<PatchAttempt>, LedgerError> {
        self.sql().query(
            &format!("SELECT {COLUMNS} FROM patch_attempts WHERE finished_at IS NULL ORDER BY id"),
            args![],
            from_row,
        )
    }
}
