//! The patch loop: a finding → the model's diff → applied in a fresh worktree and
//! committed under a private ref → verified by re-running the same command as an
//! ordinary job (trigger `patch_verify`) → pushed to the forge → a pull request for
//! a person to review. It never merges.
//!
//! - [`prompt`] — pure: what the model sees.
//! - [`diff`] — pure: the checks a diff passes before it touches anything.
//! - [`model`] — clawdforge sessions and OpenAI-compatible chat completions.
//! - [`forge`] — Gitea's pull requests and the branch push.
//!
//! Attempts are rows of the ledger from the moment they are accepted; each step
//! updates its row, and an ended attempt never changes again. The model and the
//! forge are called without the ledger and without a runner worker: only the verify
//! job takes a worker, as any job.

pub mod diff;
pub mod forge;
pub mod model;
pub mod prompt;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::config::PatcherConfig;
use crate::enqueue::{Catalog, JobRequest, project_spec};
use crate::events::FarmEvent;
use crate::git::Git;
use crate::ledger::{Finding, Job, JobStatus, LedgerError, PatchAttempt, PatchUpdate, Trigger};
use crate::runner::Runner;
use forge::{Created, Forge};
use model::Model;

/// Why a trigger was refused (the API's answers).
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No such job, or the finding is not in it.
    #[error("{0}")]
    NotFound(String),
    /// The finding is not actionable.
    #[error("{0}")]
    NotActionable(String),
    /// Attempts used up, an open pull request, or a project limit.
    #[error("{0}")]
    Conflict(String),
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Why a finding cannot be patched, if it cannot: a `lint` or `test_fail` needs a
/// file and a line; a `cve` needs a known fixed version.
pub fn not_actionable(f: &Finding) -> Option<String> {
    match f.f.kind.as_str() {
        "lint" | "test_fail" => {
            if f.f.file.is_none() || f.f.line.is_none() {
                Some(format!(
                    "the {} finding has no file and line to change",
                    f.f.kind
                ))
            } else if f.f.file.as_deref().is_some_and(|p| p.starts_with('/')) {
                Some("the finding is outside the repository".to_owned())
            } else {
                None
            }
        }
        "cve" => {
            f.f.suggested_fix
                .is_none()
                .then(|| "the advisory names no fixed version".to_owned())
        }
        other => Some(format!("`{other}` findings are not patched automatically")),
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "error" => 0,
        "warn" => 1,
        _ => 2,
    }
}

/// The most severe actionable `new` finding of a job: CVEs first, then errors.
pub fn pick(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .filter(|f| f.f.baseline_state.as_deref() == Some("new") && not_actionable(f).is_none())
        .min_by_key(|f| (f.f.kind != "cve", severity_rank(&f.f.severity), f.id))
}

/// The branch of a finding on the forge.
pub fn branch_name(prefix: &str, project: &str, fingerprint: &str) -> String {
    format!("{prefix}{project}/{fingerprint}")
}

/// The private ref that keeps an attempt's commit in the mirror.
pub fn private_ref(attempt: i64) -> String {
    format!("refs/crafting-table/patches/{attempt}")
}

fn split_author(author: &str) -> (String, String) {
    match author.split_once('<') {
        Some((name, rest)) => (
            name.trim().to_owned(),
            rest.trim_end_matches('>').trim().to_owned(),
        ),
        None => (
            author.trim().to_owned(),
            "crafting-table@localhost".to_owned(),
        ),
    }
}

struct Inner {
    cfg: PatcherConfig,
    model: Model,
    forge: Forge,
    runner: Runner,
    git_timeout: Duration,
    busy: Mutex<HashSet<String>>,
    cancels: Mutex<HashMap<i64, watch::Sender<bool>>>,
}

/// The patch loop; cheap to clone.
#[derive(Clone)]
pub struct Patcher {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// How one attempt ended.
struct Ending {
    status: &'static str,
    reason: String,
    update: PatchUpdate,
}

impl Ending {
    fn new(status: &'static str, reason: impl Into<String>) -> Ending {
        Ending {
            status,
            reason: reason.into(),
            update: PatchUpdate::default(),
        }
    }
}

impl Patcher {
    /// A patch loop over the runner's ledger, workspace and events.
    pub fn new(
        cfg: PatcherConfig,
        runner: Runner,
        git_timeout: Duration,
    ) -> Result<Patcher, String> {
        let model = Model::new(cfg.backend.clone())?;
        let forge = Forge::new(&cfg.gitea_url, &cfg.gitea_token)?;
        Ok(Patcher {
            inner: Arc::new(Inner {
                cfg,
                model,
                forge,
                runner,
                git_timeout,
                busy: Mutex::default(),
                cancels: Mutex::default(),
            }),
        })
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let (backend, model) = self.inner.model.describe();
        format!(
            "patch loop on: model {backend} ({model}), forge {}",
            self.inner.forge.url()
        )
    }

    fn now(&self) -> i64 {
        self.inner.runner.clock().now_ms()
    }

    /// Ends every attempt a previous process left running (status `error`) and
    /// removes its worktree. Returns how many.
    pub async fn sweep(&self) -> Result<usize, LedgerError> {
        let active = self.inner.runner.db().read(|l| l.active_patches()).await?;
        let mut n = 0;
        for p in active {
            let ws = self.inner.runner.workspace().clone();
            let (project, name) = (p.project.clone(), format!("patch-{}", p.id));
            let _ = tokio::task::spawn_blocking(move || {
                let wt = ws.root().join(&project).join(&name);
                if wt.exists() {
                    ws.remove_worktree(&project, &wt);
                }
            })
            .await;
            let now = self.now();
            let update = PatchUpdate {
                status: Some("error".into()),
                reason: Some(format!(
                    "the farm restarted during the attempt (it was {})",
                    p.status
                )),
                finished: true,
                ..PatchUpdate::default()
            };
            if self
                .inner
                .runner
                .db()
                .write(move |l| l.update_patch(p.id, &update, now))
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Refreshes the state of the project's open pull requests from the forge.
    async fn refresh_pulls(&self, project: &str, owner_repo: Option<&(String, String)>) {
        let Some((owner, repo)) = owner_repo else {
            return;
        };
        let p = project.to_owned();
        let Ok(open) = self
            .inner
            .runner
            .db()
            .read(move |l| l.open_pull_requests(&p))
            .await
        else {
            return;
        };
        if open.is_empty() {
            return;
        }
        let pulls = match self.inner.forge.pulls(owner, repo, "all").await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(project, error = %e, "cannot refresh pull request states");
                return;
            }
        };
        for a in open {
            if let Some(pr) = pulls.iter().find(|p| Some(p.number) == a.pr_number)
                && pr.state != "open"
            {
                let (id, state, now) = (a.id, pr.state.clone(), self.now());
                let _ = self
                    .inner
                    .runner
                    .db()
                    .write(move |l| l.set_pr_state(id, &state, now))
                    .await;
            }
        }
    }

    /// Starts an attempt for finding `finding_id` of job `job_id` (`manual`: asked
    /// through the API; else automatic). A refused automatic attempt is recorded as
    /// `skipped` and returned as such.
    pub async fn trigger(
        &self,
        job_id: &str,
        finding_id: i64,
        manual: bool,
    ) -> Result<PatchAttempt, TriggerError> {
        let db = self.inner.runner.db().clone();
        let jid = job_id.to_owned();
        let (job, finding, snapshot) = db
            .read(move |l| Ok((l.get_job(&jid)?, l.get_finding(finding_id)?, l.snapshot()?)))
            .await?;
        let job = job.ok_or_else(|| TriggerError::NotFound(format!("no job `{job_id}`")))?;
        let finding = finding.filter(|f| f.job_id == job.id).ok_or_else(|| {
            TriggerError::NotFound(format!("job `{job_id}` has no finding {finding_id}"))
        })?;
        if let Some(why) = not_actionable(&finding) {
            return Err(TriggerError::NotActionable(why));
        }
        let catalog = Catalog::new(snapshot);
        let project = catalog
            .project(&job.project)
            .map_err(|e| TriggerError::NotFound(e.to_string()))?;
        let owner_repo = self
            .inner
            .forge
            .repo_of(&project.spec.git_url, project.spec.forge.as_ref());
        self.refresh_pulls(&job.project, owner_repo.as_ref()).await;

        let (p, fp) = (job.project.clone(), finding.f.fingerprint.clone());
        let since = self.now() - 24 * 3600 * 1000;
        let (earlier, open, today) = db
            .read(move |l| {
                Ok((
                    l.patches_of_finding(&p, &fp)?,
                    l.open_pull_requests(&p)?,
                    l.patches_since(&p, since)?,
                ))
            })
            .await?;
        let counted: Vec<&PatchAttempt> =
            earlier.iter().filter(|a| a.status != "skipped").collect();
        let refusal = if counted.len() as u32 >= self.inner.cfg.max_attempts {
            Some(format!(
                "this finding had its {} attempts: {}",
                self.inner.cfg.max_attempts,
                counted
                    .iter()
                    .map(|a| format!("#{} {}", a.id, a.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else if let Some(a) = open.iter().find(|a| a.fingerprint == finding.f.fingerprint) {
            Some(format!(
                "pull request {} is open for this finding",
                a.pr_url.as_deref().unwrap_or("(unknown URL)")
            ))
        } else if !manual
            && earlier
                .iter()
                .any(|a| a.pr_state.as_deref() == Some("closed"))
        {
            Some(
                "its pull request was closed without merging: not attempted again automatically"
                    .to_owned(),
            )
        } else if open.len() as u32 >= self.inner.cfg.max_open_prs {
            Some(format!(
                "the project has {} open pull requests (limit CRAFTING_PATCHER_MAX_OPEN_PRS = {})",
                open.len(),
                self.inner.cfg.max_open_prs
            ))
        } else if today as u32 >= self.inner.cfg.max_per_day {
            Some(format!(
                "the project had {today} attempts in the last 24 hours (limit CRAFTING_PATCHER_MAX_PER_DAY = {})",
                self.inner.cfg.max_per_day
            ))
        } else if !manual && lock(&self.inner.busy).contains(&job.project) {
            Some("another attempt of this project is running".to_owned())
        } else {
            None
        };
        let command = job.recipe_snapshot["command"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut row = PatchAttempt {
            project: job.project.clone(),
            fingerprint: finding.f.fingerprint.clone(),
            trigger: if manual { "manual" } else { "auto" }.to_owned(),
            status: "queued".to_owned(),
            job_id: job.id.clone(),
            finding_id: Some(finding.id),
            subproject: job.subproject.clone(),
            recipe: job.recipe.clone(),
            command,
            sha: job.sha.clone(),
            tool: finding.f.tool.clone(),
            kind: finding.f.kind.clone(),
            severity: finding.f.severity.clone(),
            code: finding.f.code.clone(),
            file: finding.f.file.clone(),
            line: finding.f.line,
            col: finding.f.col,
            message: finding.f.message.clone(),
            suggested_fix: finding.f.suggested_fix.clone(),
            ..PatchAttempt::default()
        };
        if let Some(why) = refusal {
            if manual {
                return Err(TriggerError::Conflict(why));
            }
            row.status = "skipped".to_owned();
            row.reason = Some(why);
            row.finished_at = Some(self.now());
        }
        let now = self.now();
        let inserted = db
            .write(move |l| l.insert_patch(&row, now))
            .await?
            .ok_or_else(|| {
                TriggerError::Conflict("another attempt was recorded at the same moment".into())
            })?;
        if inserted.status == "queued" {
            lock(&self.inner.busy).insert(inserted.project.clone());
            let (tx, rx) = watch::channel(false);
            lock(&self.inner.cancels).insert(inserted.id, tx);
            let me = self.clone();
            let attempt = inserted.clone();
            let spec = project.spec.clone();
            let from_registry = project.from_registry();
            tokio::spawn(async move {
                let id = attempt.id;
                let project = attempt.project.clone();
                let me2 = me.clone();
                let ran = tokio::spawn(async move {
                    me2.run(attempt, spec, from_registry, owner_repo, rx).await
                })
                .await;
                if ran.is_err() {
                    me.end(
                        id,
                        &project,
                        Ending::new(
                            "error",
                            "internal error in the patch loop; see the farm's log",
                        ),
                    )
                    .await;
                }
                lock(&me.inner.busy).remove(&project);
                lock(&me.inner.cancels).remove(&id);
            });
        }
        Ok(inserted)
    }

    /// Cancels an attempt that has not ended.
    pub async fn cancel(&self, id: i64, by: &str) -> Result<Option<PatchAttempt>, LedgerError> {
        if let Some(tx) = lock(&self.inner.cancels).get(&id) {
            let _ = tx.send(true);
        }
        let db = self.inner.runner.db().clone();
        let attempt = db.read(move |l| l.patch(id)).await?;
        if let Some(v) = attempt.as_ref().and_then(|a| a.verify_job_id.clone()) {
            let _ = self
                .inner
                .runner
                .cancel(&v, "its patch attempt was cancelled")
                .await;
        }
        let now = self.now();
        let update = PatchUpdate {
            status: Some("cancelled".into()),
            reason: Some(format!("cancelled by {by}")),
            finished: true,
            ..PatchUpdate::default()
        };
        let ended = db
            .write(move |l| {
                let a = l.update_patch(id, &update, now)?;
                if a.is_some() {
                    l.notify("patch", &id.to_string())?;
                }
                Ok(a)
            })
            .await?;
        if let Some(a) = &ended {
            self.inner
                .runner
                .events()
                .publish(FarmEvent::patch_ended(a));
        }
        Ok(ended)
    }

    async fn step(&self, id: i64, update: PatchUpdate) -> bool {
        let now = self.now();
        matches!(
            self.inner
                .runner
                .db()
                .write(move |l| l.update_patch(id, &update, now))
                .await,
            Ok(Some(_))
        )
    }

    async fn end(&self, id: i64, project: &str, ending: Ending) {
        let mut u = ending.update;
        u.status = Some(ending.status.to_owned());
        if !ending.reason.is_empty() {
            u.reason = Some(ending.reason.clone());
        }
        u.finished = true;
        let now = self.now();
        let ended = self
            .inner
            .runner
            .db()
            .write(move |l| {
                let a = l.update_patch(id, &u, now)?;
                if a.is_some() {
                    // Other processes of the farm hear it too.
                    l.notify("patch", &id.to_string())?;
                }
                Ok(a)
            })
            .await;
        if let Ok(Some(a)) = ended {
            tracing::info!(attempt = id, project, status = %a.status, reason = %ending.reason, "patch attempt ended");
            self.inner
                .runner
                .events()
                .publish(FarmEvent::patch_ended(&a));
        }
    }

    async fn run(
        &self,
        a: PatchAttempt,
        spec: crate::manifest::ProjectSpec,
        from_registry: bool,
        owner_repo: Option<(String, String)>,
        cancel: watch::Receiver<bool>,
    ) {
        let (id, project) = (a.id, a.project.clone());
        let ending = self
            .attempt(&a, &spec, from_registry, owner_repo, cancel)
            .await;
        // Whatever happened, no scratch worktree stays behind.
        let ws = self.inner.runner.workspace().clone();
        let (p, name) = (project.clone(), format!("patch-{id}"));
        let _ = tokio::task::spawn_blocking(move || {
            let wt = ws.root().join(&p).join(&name);
            if wt.exists() {
                ws.remove_worktree(&p, &wt);
            }
        })
        .await;
        self.end(id, &project, ending).await;
    }

    async fn attempt(
        &self,
        a: &PatchAttempt,
        spec: &crate::manifest::ProjectSpec,
        _from_registry: bool,
        owner_repo: Option<(String, String)>,
        cancel: watch::Receiver<bool>,
    ) -> Ending {
        let cancelled = || *cancel.borrow();
        let Some(sha) = a.sha.clone() else {
            return Ending::new("error", "the finding's job has no commit");
        };
        let Some(file) = a.file.clone() else {
            return Ending::new("error", "the finding has no file");
        };
        let mirror = self.inner.runner.workspace().mirror(&a.project);

        // Drafting: the source window from the job's commit, the prompt, the model.
        let (backend, model_name) = self.inner.model.describe();
        self.step(
            a.id,
            PatchUpdate {
                status: Some("drafting".into()),
                backend: Some((backend, model_name)),
                ..PatchUpdate::default()
            },
        )
        .await;
        let (m, spec_path) = (mirror.clone(), format!("{sha}:{file}"));
        let source = tokio::task::spawn_blocking(move || {
            Git::new().run(Some(&m), ["cat-file", "-p", spec_path.as_str()])
        })
        .await;
        let source = match source {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Err(e)) => {
                return Ending::new(
                    "error",
                    format!("cannot read {file} at {sha}: {}", e.message),
                );
            }
            Err(_) => return Ending::new("error", "reading the source failed"),
        };
        let language = spec
            .subprojects
            .iter()
            .find(|s| {
                crate::manifest::check::normalize_subproject_path(&s.path)
                    .ok()
                    .as_deref()
                    == Some(a.subproject.as_str())
            })
            .and_then(|s| s.language.clone());
        let text = prompt::build(&prompt::PromptInput {
            tool: &a.tool,
            kind: &a.kind,
            code: a.code.as_deref(),
            message: &a.message,
            file: &file,
            line: a.line,
            col: a.col,
            suggested_fix: a.suggested_fix.as_deref(),
            language: language.as_deref(),
            subproject: &a.subproject,
            command: &a.command,
            window: prompt::source_window(&source, a.line, self.inner.cfg.context_lines as usize),
        });
        self.step(
            a.id,
            PatchUpdate {
                prompt_chars: Some(text.chars().count() as i64),
                ..PatchUpdate::default()
            },
        )
        .await;
        let metadata = json!({"project": a.project, "attempt": a.id, "finding": a.fingerprint});
        let draft = match self
            .inner
            .model
            .draft(prompt::SYSTEM, &text, &metadata)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                let mut end = Ending::new("model_error", e.reason);
                end.update.model_reply = e.reply;
                return end;
            }
        };
        let mut recorded = PatchUpdate {
            draft: Some((
                draft.diff.clone(),
                draft.explanation.clone(),
                draft.confidence,
            )),
            ..PatchUpdate::default()
        };
        if cancelled() {
            return Ending::new("cancelled", "cancelled");
        }

        // Applying: checks, a fresh worktree at the job's commit, git apply, commit.
        recorded.status = Some("applying".into());
        self.step(a.id, recorded).await;
        if let Err(why) = diff::check(&draft.diff) {
            return Ending::new("apply_failed", why);
        }
        let ws = self.inner.runner.workspace().clone();
        let (author, email) = split_author(&self.inner.cfg.author);
        let message = format!(
            "fix({}): {} in {}\n\nDrafted by crafting-table's patch loop for finding {} ({}).",
            a.tool,
            a.code.as_deref().unwrap_or(&a.kind),
            file,
            a.fingerprint,
            a.message.lines().next().unwrap_or("")
        );
        let mut patch = crate::manifest::resolve::PatchCommit {
            base: sha.clone(),
            commit: String::new(),
            diff: draft.diff.clone(),
            message,
            name: author,
            email,
            time: self.inner.runner.clock().now_ms() / 1000,
            keep_as: private_ref(a.id),
        };
        let (p, name, made) = (a.project.clone(), format!("patch-{}", a.id), patch.clone());
        let applied =
            tokio::task::spawn_blocking(move || ws.make_patch_commit(&p, &name, &made)).await;
        let commit = match applied {
            Ok(Ok(c)) => c,
            Ok(Err(why)) => return Ending::new("apply_failed", why),
            Err(_) => return Ending::new("error", "applying the diff failed"),
        };
        if cancelled() {
            return Ending::new("cancelled", "cancelled");
        }

        // Verifying: the same command of the same subproject, as an ordinary job.
        let mut events = self.inner.runner.events().subscribe();
        // The job carries the change: a runner on another host, whose mirror
        // lacks the commit, makes it again from the same inputs.
        patch.commit = commit.clone();
        let verify = self
            .inner
            .runner
            .enqueue_with_patch(
                JobRequest {
                    project: a.project.clone(),
                    subproject: Some(a.subproject.clone()),
                    recipe: a.recipe.clone(),
                    git_ref: Some(commit.clone()),
                    trigger: Trigger::PatchVerify,
                    schedule: None,
                },
                Some(patch),
            )
            .await;
        let verify = match verify {
            Ok((j, _)) => j,
            Err(e) => return Ending::new("error", format!("cannot start the verify job: {e}")),
        };
        self.step(
            a.id,
            PatchUpdate {
                status: Some("verifying".into()),
                commit_sha: Some(commit.clone()),
                verify_job_id: Some(verify.id.clone()),
                ..PatchUpdate::default()
            },
        )
        .await;
        let verified = self.wait_job(&verify.id, &mut events).await;
        let Some(verified) = verified else {
            return Ending::new("error", "the verify job's result is unknown");
        };
        if cancelled() || verified.status == JobStatus::Cancelled {
            return Ending::new("cancelled", "cancelled");
        }
        let (orig_id, ver_id) = (a.job_id.clone(), verified.id.clone());
        let compared = self
            .inner
            .runner
            .db()
            .read(move |l| {
                Ok((
                    l.get_job(&orig_id)?,
                    l.findings_of_job(&orig_id)?,
                    l.findings_of_job(&ver_id)?,
                ))
            })
            .await;
        let Ok((Some(original), before, after)) = compared else {
            return Ending::new("error", "cannot read the findings to compare");
        };
        if let Err(why) = accept(&a.fingerprint, &original, &before, &verified, &after) {
            return Ending::new("verify_failed", why);
        }

        // Pushing: the branch on the forge, then the pull request.
        self.step(
            a.id,
            PatchUpdate {
                status: Some("pushing".into()),
                ..PatchUpdate::default()
            },
        )
        .await;
        let Some((owner, repo)) = owner_repo else {
            return Ending::new(
                "forge_error",
                format!(
                    "project `{}` is not on the forge at {}: add `forge: {{owner, repo}}` to its manifest",
                    a.project,
                    self.inner.forge.url()
                ),
            );
        };
        let branch = branch_name(&self.inner.cfg.branch_prefix, &a.project, &a.fingerprint);
        self.step(
            a.id,
            PatchUpdate {
                branch: Some(branch.clone()),
                ..PatchUpdate::default()
            },
        )
        .await;
        let (forge, timeout) = (self.inner.forge.clone(), self.inner.git_timeout);
        let (m, c, o, r, b) = (
            mirror.clone(),
            commit.clone(),
            owner.clone(),
            repo.clone(),
            branch.clone(),
        );
        let pushed =
            tokio::task::spawn_blocking(move || forge.push(timeout, &m, &c, &o, &r, &b)).await;
        match pushed {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Ending::new("forge_error", why),
            Err(_) => return Ending::new("error", "the push failed"),
        }
        let pull = match self
            .find_or_open(
                a,
                &owner,
                &repo,
                &branch,
                &spec.default_branch,
                &draft,
                &verified,
            )
            .await
        {
            Ok(p) => p,
            Err(why) => return Ending::new("forge_error", why),
        };
        let mut done = Ending::new("pr_opened", "");
        done.update.pr = Some((pull.number, pull.url, pull.state));
        done
    }

    async fn wait_job(
        &self,
        id: &str,
        events: &mut tokio::sync::broadcast::Receiver<Arc<FarmEvent>>,
    ) -> Option<Job> {
        loop {
            let i = id.to_owned();
            let now = self
                .inner
                .runner
                .db()
                .read(move |l| l.get_job(&i))
                .await
                .ok()??;
            if now.status.is_terminal() {
                return Some(now);
            }
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                _ => continue,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn find_or_open(
        &self,
        a: &PatchAttempt,
        owner: &str,
        repo: &str,
        branch: &str,
        base: &str,
        draft: &model::Draft,
        verified: &Job,
    ) -> Result<forge::Pull, String> {
        let forge = &self.inner.forge;
        let open = forge.pulls(owner, repo, "open").await?;
        if let Some(p) = open.into_iter().find(|p| p.head == branch) {
            return Ok(p);
        }
        let title = format!(
            "fix({}): {} in {}",
            a.tool,
            a.code.as_deref().unwrap_or(&a.kind),
            a.file.as_deref().unwrap_or("?")
        );
        let body = format!(
            "Automatic fix drafted and verified by crafting-table. It was not reviewed by a person: please review before merging.\n\n\
             **Finding** `{}` ({} {}): {}\n\nat `{}{}` — fingerprint `{}`\n\n\
             **Model's explanation** (confidence {}):\n\n{}\n\n\
             **Original job** `{}`: `{}` in `{}`\n\
             **Verify job** `{}`: the same command on this branch ended `{}`; the finding is gone and no new finding appeared.\n",
            a.code.as_deref().unwrap_or(&a.kind),
            a.tool,
            a.severity,
            a.message.lines().next().unwrap_or(""),
            a.file.as_deref().unwrap_or("?"),
            a.line.map(|l| format!(":{l}")).unwrap_or_default(),
            a.fingerprint,
            draft
                .confidence
                .map_or_else(|| "not given".to_owned(), |c| format!("{c:.2}")),
            draft.explanation,
            a.job_id,
            a.command,
            a.subproject,
            verified.id,
            verified.status.as_str(),
        );
        match forge
            .create_pull(owner, repo, branch, base, &title, &body)
            .await?
        {
            Created::New(p) => Ok(p),
            Created::Exists => forge
                .pulls(owner, repo, "open")
                .await?
                .into_iter()
                .find(|p| p.head == branch)
                .ok_or_else(|| {
                    "Gitea said a pull request exists for the branch, but lists none".to_owned()
                }),
        }
    }

    /// Starts automatic attempts after finished ordinary jobs of projects with
    /// `notify.auto_patch: true`; forever.
    pub async fn run_auto(self) -> String {
        let mut events = self.inner.runner.events().subscribe();
        loop {
            let e = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the patch loop fell behind the farm's events");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return "the event channel closed".to_owned();
                }
            };
            let FarmEvent::JobFinished { job, .. } = &*e else {
                continue;
            };
            // A verify job starts nothing.
            if job.trigger == Trigger::PatchVerify.as_str()
                || !matches!(job.status, JobStatus::Succeeded | JobStatus::Failed)
            {
                continue;
            }
            let (id, project) = (job.id.clone(), job.project.clone());
            let looked = self
                .inner
                .runner
                .db()
                .read(move |l| Ok((l.get_project(&project)?, l.findings_of_job(&id)?)))
                .await;
            let Ok((Some(stored), findings)) = looked else {
                continue;
            };
            let auto = project_spec(&stored)
                .ok()
                .and_then(|s| s.notify)
                .is_some_and(|n| n.auto_patch);
            if !auto {
                continue;
            }
            let Some(target) = pick(&findings) else {
                continue;
            };
            match self.trigger(&job.id, target.id, false).await {
                Ok(a) if a.status == "skipped" => {
                    tracing::info!(project = %a.project, reason = a.reason.as_deref().unwrap_or(""), "automatic patch attempt skipped");
                }
                Ok(a) => {
                    tracing::info!(project = %a.project, attempt = a.id, "automatic patch attempt started")
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "automatic patch attempt not started")
                }
            }
        }
    }
}

/// The acceptance rule: the target fingerprint is gone from the verify job's
/// findings, the verify job has no finding the original lacked (by fingerprint, or
/// by location hash for a finding that only moved), and its exit status is not
/// worse.
pub fn accept(
    target: &str,
    original: &Job,
    before: &[Finding],
    verify: &Job,
    after: &[Finding],
) -> Result<(), String> {
    if verify.status != JobStatus::Succeeded && verify.status != JobStatus::Failed {
        return Err(format!(
            "the verify job ended {}{}",
            verify.status.as_str(),
            verify
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if after.iter().any(|f| f.f.fingerprint == target) {
        return Err("target still present".to_owned());
    }
    let known_fp: HashSet<&str> = before.iter().map(|f| f.f.fingerprint.as_str()).collect();
    let known_loc: HashSet<&str> = before
        .iter()
        .filter_map(|f| f.f.location_hash.as_deref())
        .collect();
    let introduced: Vec<String> = after
        .iter()
        .filter(|f| {
            !known_fp.contains(f.f.fingerprint.as_str())
                && !f
                    .f
                    .location_hash
                    .as_deref()
                    .is_some_and(|h| known_loc.contains(h))
        })
        .map(|f| {
            format!(
                "{} {}{}",
                f.f.code.as_deref().unwrap_or(&f.f.kind),
                f.f.file.as_deref().unwrap_or(""),
                f.f.line.map(|l| format!(":{l}")).unwrap_or_default()
            )
        })
        .collect();
    if !introduced.is_empty() {
        return Err(format!(
            "introduced {} new finding{}: {}",
            introduced.len(),
            if introduced.len() == 1 { "" } else { "s" },
            introduced.join(", ")
        ));
    }
    let code = |j: &Job| j.exit_code.unwrap_or(-1);
    if original.status == JobStatus::Succeeded && verify.status != JobStatus::Succeeded {
        return Err(format!("exit {} → {}", code(original), code(verify)));
    }
    Ok(())
}
