//! The runner: drains the ledger's job queue into a pool of workers.
//!
//! Expected flow for one job: claim (`queued → running`) → fetch the project's
//! mirror and add a worktree at the resolved sha → run the snapshotted command in
//! the subproject directory ([`process`]) → after-job hooks (findings, notify) →
//! remove the worktree → record the result.
//!
//! Guarantees:
//! - at most `workers` jobs run at once, at most `max_concurrent_jobs` per project,
//!   first come first served within those limits;
//! - a job of a retired (or deleted) project never runs;
//! - a hook's failure is logged and never changes the job's own result;
//! - at start-up, [`Runner::sweep`] fails every job a crash left `running` (exit
//!   code -1, a log line saying so), kills what is left of its process group, and
//!   removes its worktree.

pub mod process;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::ledger::{Job, JobStatus, Ledger, LedgerError, Source};
use crate::manifest::resolve::Resolved;
use crate::manifest::{Kind, ProjectSpec};
use crate::workspace::Workspace;

/// The line appended to the log of a job a crash left running.
pub const ORPHAN_LINE: &str = "runner restart, job orphaned";

/// What the runner needs to know.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Jobs that run at once.
    pub workers: usize,
    /// Directory of job logs.
    pub logs_dir: PathBuf,
    /// Bytes of output kept per job log.
    pub log_cap: u64,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// What a relative `git_url` is relative to (the registry directory).
    pub registry_base: PathBuf,
}

/// Called after each job with the job, its log file and its worktree (still
/// present). An error is logged; it never changes the job's result.
pub type AfterJob = Arc<dyn Fn(&Job, &Path, Option<&Path>) -> Result<(), String> + Send + Sync>;

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    /// No such job.
    NotFound,
    /// It had already ended with this status.
    AlreadyFinished(JobStatus),
    /// It was queued and is now cancelled.
    Cancelled,
    /// It is running; its process group is being stopped.
    Stopping,
}

/// A shared handle on the ledger for blocking calls.
pub type SharedLedger = Arc<Mutex<Ledger>>;

/// Runs `f` on the ledger in a blocking thread.
pub async fn with_ledger<T: Send + 'static>(
    ledger: &SharedLedger,
    f: impl FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    let ledger = ledger.clone();
    match tokio::task::spawn_blocking(move || {
        let mut guard = match ledger.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Running {
    project: String,
    cancel: watch::Sender<bool>,
    reason: Arc<Mutex<Option<String>>>,
}

struct Inner {
    cfg: RunnerConfig,
    ledger: SharedLedger,
    workspace: Workspace,
    wake: Notify,
    idle: Notify,
    running: Mutex<HashMap<String, Running>>,
    hooks: Mutex<Vec<AfterJob>>,
    stopping: AtomicBool,
}

/// The job runner; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Runner {
    /// A runner over `ledger` and `workspace`.
    pub fn new(cfg: RunnerConfig, ledger: SharedLedger, workspace: Workspace) -> Runner {
        Runner {
            inner: Arc::new(Inner {
                cfg,
                ledger,
                workspace,
                wake: Notify::new(),
                idle: Notify::new(),
                running: Mutex::default(),
                hooks: Mutex::default(),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// Adds an after-job hook.
    pub fn add_hook(&self, hook: AfterJob) {
        lock(&self.inner.hooks).push(hook);
    }

    /// Tells the dispatcher to look at the queue now (after an enqueue).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Ids of the jobs running in this process.
    pub fn running_ids(&self) -> Vec<String> {
        lock(&self.inner.running).keys().cloned().collect()
    }

    /// The configured worker count.
    pub fn workers(&self) -> usize {
        self.inner.cfg.workers
    }

    /// The workspace.
    pub fn workspace(&self) -> &Workspace {
        &self.inner.workspace
    }

    /// Fails every job a previous process left `running`. Returns how many.
    pub async fn sweep(&self) -> Result<usize, LedgerError> {
        let stale = with_ledger(&self.inner.ledger, |l| l.running_jobs()).await?;
        let mut n = 0;
        for job in stale {
            if lock(&self.inner.running).contains_key(&job.id) {
                continue;
            }
            if let (Some(pgid), Some(start)) = (job.pgid, job.pgid_start_time) {
                let killed = process::kill_orphaned_group(pgid as i32, start as u64);
                if killed > 0 {
                    tracing::warn!(job = %job.id, pgid, killed, "killed processes left by a crashed runner");
                }
            }
            let log = self.log_path(&job.id);
            process::append_log_line(&log, ORPHAN_LINE);
            if let Some(wt) = &job.worktree_path {
                let ws = self.inner.workspace.clone();
                let (project, wt) = (job.project.clone(), PathBuf::from(wt));
                let _ =
                    tokio::task::spawn_blocking(move || ws.remove_worktree(&project, &wt)).await;
            }
            let id = job.id.clone();
            let swept = with_ledger(&self.inner.ledger, move |l| {
                l.finish_job(
                    &id,
                    JobStatus::Failed,
                    Some(-1),
                    Some(ORPHAN_LINE),
                    now_ms(),
                )
            })
            .await?;
            if swept {
                n += 1;
                tracing::warn!(job = %job.id, project = %job.project, "{ORPHAN_LINE}");
            }
        }
        Ok(n)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.inner.cfg.logs_dir.join(format!("{id}.log"))
    }

    /// Cancels a job: a queued one at once, a running one by stopping its group.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<CancelResult, LedgerError> {
        if let Some(r) = lock(&self.inner.running).get(id) {
            *lock(&r.reason) = Some(reason.to_owned());
            let _ = r.cancel.send(true);
            return Ok(CancelResult::Stopping);
        }
        let (id2, reason2) = (id.to_owned(), reason.to_owned());
        let (job, cancelled) = with_ledger(&self.inner.ledger, move |l| {
            let done = l.cancel_queued_job(&id2, &reason2, now_ms())?;
            Ok((l.get_job(&id2)?, done))
        })
        .await?;
        Ok(match job {
            None => CancelResult::NotFound,
            Some(_) if cancelled => CancelResult::Cancelled,
            // Claimed between the two looks: it is starting; stop it once it runs.
            Some(j) if j.status == JobStatus::Running => {
                if let Some(r) = lock(&self.inner.running).get(id) {
                    *lock(&r.reason) = Some(reason.to_owned());
                    let _ = r.cancel.send(true);
                }
                CancelResult::Stopping
            }
            Some(j) => CancelResult::AlreadyFinished(j.status),
        })
    }

    /// Stops taking jobs, cancels every running one and waits for them to end.
    pub async fn shutdown(&self, reason: &str) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        for r in lock(&self.inner.running).values() {
            *lock(&r.reason) = Some(reason.to_owned());
            let _ = r.cancel.send(true);
        }
        let deadline = Instant::now() + self.inner.cfg.kill_grace + Duration::from_secs(10);
        while !lock(&self.inner.running).is_empty() && Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(200), self.inner.idle.notified()).await;
        }
    }

    /// The dispatcher loop: runs until [`Runner::shutdown`].
    pub async fn run(&self) -> Result<(), LedgerError> {
        while !self.inner.stopping.load(Ordering::SeqCst) {
            self.dispatch().await?;
            // Enqueues and job ends wake the loop; the timer is only a safety net.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.wake.notified()).await;
        }
        Ok(())
    }

    /// Starts as many queued jobs as the limits allow.
    pub async fn dispatch(&self) -> Result<(), LedgerError> {
        let free = self
            .inner
            .cfg
            .workers
            .saturating_sub(lock(&self.inner.running).len());
        if free == 0 || self.inner.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (queued, snapshot) = with_ledger(&self.inner.ledger, |l| {
            Ok((l.queued_jobs(1000)?, l.snapshot()?))
        })
        .await?;
        let mut per_project: HashMap<String, usize> = HashMap::new();
        for r in lock(&self.inner.running).values() {
            *per_project.entry(r.project.clone()).or_default() += 1;
        }
        let mut free = free;
        for job in queued {
            if free == 0 {
                break;
            }
            let stored = snapshot.get(&(Kind::Project, job.project.clone()));
            let project = stored.and_then(|s| {
                serde_json::from_value::<ProjectSpec>(s.spec.clone())
                    .ok()
                    .map(|p| (p, s.retired_at.is_some(), s.source))
            });
            let Some((project, retired, source)) = project else {
                self.refuse(&job, "project no longer exists").await?;
                continue;
            };
            if retired {
                self.refuse(&job, "project is retired: it was removed from the registry")
                    .await?;
                continue;
            }
            let cap = project.max_concurrent_jobs.max(1) as usize;
            let busy = per_project.get(&job.project).copied().unwrap_or(0);
            if busy >= cap {
                continue;
            }
            let log = self.log_path(&job.id);
            let (id, log_s) = (job.id.clone(), log.display().to_string());
            let claimed = with_ledger(&self.inner.ledger, move |l| {
                l.claim_job(&id, &log_s, now_ms())
            })
            .await?;
            if !claimed {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let reason = Arc::new(Mutex::new(None));
            lock(&self.inner.running).insert(
                job.id.clone(),
                Running {
                    project: job.project.clone(),
                    cancel: tx,
                    reason: reason.clone(),
                },
            );
            *per_project.entry(job.project.clone()).or_default() += 1;
            free -= 1;
            let me = self.clone();
            let url = resolve_git_url(&project.git_url, source, &self.inner.cfg.registry_base);
            tokio::spawn(async move {
                let id = job.id.clone();
                // Run the job in a task of its own: should it panic (a bug), the job
                // is recorded as a farm error and its worker slot is freed.
                let runner = me.clone();
                let ran =
                    tokio::spawn(async move { runner.run_job(job, url, rx, reason).await }).await;
                if let Err(e) = ran {
                    tracing::error!(job = %id, error = %e, "job task failed");
                    me.finish(
                        &id,
                        JobStatus::Error,
                        None,
                        Some("internal error in the runner; see the farm's log".to_owned()),
                    )
                    .await;
                }
                lock(&me.inner.running).remove(&id);
                me.inner.wake.notify_one();
                me.inner.idle.notify_waiters();
            });
        }
        Ok(())
    }

    async fn refuse(&self, job: &Job, why: &str) -> Result<(), LedgerError> {
        let (id, why) = (job.id.clone(), why.to_owned());
        with_ledger(&self.inner.ledger, move |l| {
            l.cancel_queued_job(&id, &why, now_ms()).map(|_| ())
        })
        .await
    }

    async fn finish(&self, id: &str, status: JobStatus, code: Option<i64>, error: Option<String>) {
        let id2 = id.to_owned();
        let r = with_ledger(&self.inner.ledger, move |l| {
            l.finish_job(&id2, status, code, error.as_deref(), now_ms())
        })
        .await;
        if let Err(e) = r {
            tracing::error!(job = %id, error = %e, "cannot record job result");
        }
    }

    async fn run_job(
        &self,
        job: Job,
        url: String,
        cancel: watch::Receiver<bool>,
        reason: Arc<Mutex<Option<String>>>,
    ) {
        let started = Instant::now();
        let log = self.log_path(&job.id);
        if let Err(e) = std::fs::create_dir_all(&self.inner.cfg.logs_dir) {
            tracing::error!(error = %e, "cannot create logs directory");
        }
        process::append_log_line(
            &log,
            &format!(
                "job {} · project {} · subproject {} · recipe {} · ref {}",
                job.id, job.project, job.subproject, job.recipe, job.git_ref
            ),
        );
        let resolved: Resolved = match serde_json::from_value(job.recipe_snapshot.clone()) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("job snapshot unreadable: {e}");
                process::append_log_line(&log, &msg);
                self.finish(&job.id, JobStatus::Error, None, Some(msg))
                    .await;
                return;
            }
        };
        // Fetch and check out.
        let ws = self.inner.workspace.clone();
        let (p, u, r, i) = (
            job.project.clone(),
            url.clone(),
            job.git_ref.clone(),
            job.id.clone(),
        );
        let checkout = tokio::task::spawn_blocking(move || ws.checkout(&p, &u, &r, &i)).await;
        let checkout = match checkout {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let msg = format!(
                    "cannot check out {} at `{}`: {}",
                    crate::registry::redact_url(&url),
                    job.git_ref,
                    e.message
                );
                process::append_log_line(&log, &msg);
                // The worktree may exist half-made.
                self.remove_worktree(
                    &job.project,
                    &self.inner.workspace.worktree_path(&job.project, &job.id),
                )
                .await;
                self.finish(&job.id, JobStatus::Error, None, Some(msg))
                    .await;
                return;
            }
            Err(e) => {
                self.finish(
                    &job.id,
                    JobStatus::Error,
                    None,
                    Some(format!("checkout task failed: {e}")),
                )
                .await;
                return;
            }
        };
        let (id, sha, wt) = (
            job.id.clone(),
            checkout.sha.clone(),
            checkout.worktree.display().to_string(),
        );
        let _ = with_ledger(&self.inner.ledger, move |l| {
            l.set_job_checkout(&id, &sha, &wt)
        })
        .await;
        process::append_log_line(
            &log,
            &format!(
                "checked out {} in {}",
                checkout.sha,
                checkout.worktree.display()
            ),
        );

        let cwd = if resolved.subproject == "." {
            checkout.worktree.clone()
        } else {
            checkout.worktree.join(&resolved.subproject)
        };
        let mut job_now = job.clone();
        job_now.sha = Some(checkout.sha.clone());
        let (status, code, error) = if !cwd.is_dir() {
            let msg = format!(
                "subproject directory `{}` does not exist at {}",
                resolved.subproject, checkout.sha
            );
            process::append_log_line(&log, &msg);
            (JobStatus::Error, None, Some(msg))
        } else {
            let mut env: BTreeMap<String, String> = resolved.env.clone();
            env.insert("CI".into(), "true".into());
            env.insert("CRAFTING_JOB_ID".into(), job.id.clone());
            env.insert("CRAFTING_PROJECT".into(), job.project.clone());
            env.insert("CRAFTING_RECIPE".into(), job.recipe.clone());
            env.insert("CRAFTING_SUBPROJECT".into(), resolved.subproject.clone());
            env.insert("CRAFTING_SHA".into(), checkout.sha.clone());
            let cache = self.inner.workspace.cache_dir(&job.project);
            let _ = std::fs::create_dir_all(&cache);
            env.insert("CRAFTING_CACHE_DIR".into(), cache.display().to_string());
            process::append_log_line(&log, &format!("$ {}", resolved.command));
            let spec = process::ProcessSpec {
                command: resolved.command.clone(),
                cwd,
                env,
                log_path: log.clone(),
                log_cap: self.inner.cfg.log_cap,
                timeout: Duration::from_secs(resolved.timeout_secs),
                kill_grace: self.inner.cfg.kill_grace,
            };
            let ledger = self.inner.ledger.clone();
            let id = job.id.clone();
            let outcome = process::run(&spec, cancel, move |pgid, start| {
                tokio::task::spawn_blocking(move || {
                    let l = lock(&ledger);
                    if let Err(e) = l.set_job_process(&id, i64::from(pgid), start as i64) {
                        tracing::error!(error = %e, "cannot record process group");
                    }
                });
            })
            .await;
            let secs = started.elapsed().as_secs_f64();
            match outcome {
                Err(e) => {
                    let msg = format!("cannot start /bin/sh: {e}");
                    process::append_log_line(&log, &msg);
                    (JobStatus::Error, None, Some(msg))
                }
                Ok(o) => match o.stop {
                    process::Stop::Exited(0) => {
                        process::append_log_line(&log, &format!("exit 0 after {secs:.1}s"));
                        (JobStatus::Succeeded, Some(0), None)
                    }
                    process::Stop::Exited(127) => {
                        let msg = missing_tool(&log).unwrap_or_else(|| {
                            "exit 127: a command was not found on this machine (the shell named it above)"
                                .to_owned()
                        });
                        process::append_log_line(&log, &msg);
                        (JobStatus::Failed, Some(127), Some(msg))
                    }
                    process::Stop::Exited(c) => {
                        process::append_log_line(&log, &format!("exit {c} after {secs:.1}s"));
                        let hint = missing_tool(&log);
                        if let Some(h) = &hint {
                            process::append_log_line(&log, h);
                        }
                        (JobStatus::Failed, Some(i64::from(c)), hint)
                    }
                    process::Stop::TimedOut => {
                        let msg = format!(
                            "timed out after {}s; process group stopped{}",
                            resolved.timeout_secs,
                            if o.killed {
                                " (SIGKILL after grace)"
                            } else {
                                ""
                            }
                        );
                        process::append_log_line(&log, &msg);
                        (JobStatus::TimedOut, None, Some(msg))
                    }
                    process::Stop::Cancelled => {
                        let why = lock(&reason)
                            .clone()
                            .unwrap_or_else(|| "cancelled".to_owned());
                        process::append_log_line(&log, &format!("cancelled: {why}"));
                        (JobStatus::Cancelled, None, Some(why))
                    }
                },
            }
        };
        job_now.status = status;
        job_now.exit_code = code;
        // Hooks see the job as it ended, with its worktree still there.
        let hooks: Vec<AfterJob> = lock(&self.inner.hooks).clone();
        if !hooks.is_empty() {
            let (j, l, w) = (job_now.clone(), log.clone(), checkout.worktree.clone());
            let r = tokio::task::spawn_blocking(move || {
                for h in hooks {
                    if let Err(e) = h(&j, &l, Some(&w)) {
                        tracing::warn!(job = %j.id, error = %e, "after-job hook failed");
                    }
                }
            })
            .await;
            if r.is_err() {
                tracing::error!(job = %job.id, "after-job hook panicked; job result unchanged");
            }
        }
        self.remove_worktree(&job.project, &checkout.worktree).await;
        self.finish(&job.id, status, code, error).await;
    }

    async fn remove_worktree(&self, project: &str, wt: &Path) {
        let ws = self.inner.workspace.clone();
        let (p, w) = (project.to_owned(), wt.to_owned());
        let _ = tokio::task::spawn_blocking(move || ws.remove_worktree(&p, &w)).await;
    }
}

/// Names the tool a failed command could not find, from the end of its log:
/// `sh: 1: ruff: not found` or cargo's `error: no such command: `audit``.
pub fn missing_tool(log: &Path) -> Option<String> {
    let tail = crate::api::tail_lines(log, 50);
    for line in tail.iter().rev() {
        if let Some(rest) = line.split("no such command: `").nth(1)
            && let Some(cmd) = rest.split('`').next()
        {
            return Some(format!(
                "command not found: `cargo {cmd}` is not installed on this machine (e.g. `cargo install cargo-{cmd} --locked`)"
            ));
        }
        let l = line.trim_end();
        if let Some(before) = l
            .strip_suffix(": not found")
            .or_else(|| l.strip_suffix(": command not found"))
        {
            let cmd = before.rsplit(": ").next().unwrap_or(before).trim();
            if !cmd.is_empty() && !cmd.contains(' ') {
                return Some(format!(
                    "command not found: `{cmd}` is not installed on this machine (or not on PATH)"
                ));
            }
        }
    }
    None
}

/// A project's `git_url` as git can use it: a relative path of a registry project is
/// taken relative to the registry directory.
pub fn resolve_git_url(url: &str, source: Source, registry_base: &Path) -> String {
    let is_url = url.contains("://")
        || url
            .split_once(':')
            .is_some_and(|(h, _)| h.contains('@') && !h.contains('/'));
    if is_url || Path::new(url).is_absolute() || source == Source::Api {
        return url.to_owned();
    }
    let joined = registry_base.join(url);
    std::fs::canonicalize(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
}
