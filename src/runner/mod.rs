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

pub mod mask;
pub mod process;
pub mod sandbox;
pub mod secrets;
pub mod zygote;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::clock::SharedClock;
use crate::enqueue::{Catalog, EnqueueError, Enqueued, JobRequest};
use crate::events::{Events, FarmEvent, FindingCounts};
use crate::ledger::{Db, Job, JobStatus, LedgerError, Trigger};
use crate::logfile;
use crate::manifest::resolve::Resolved;
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
    /// How commands are isolated.
    pub sandbox: sandbox::Mode,
    /// The `secrets.toml` of the data directory (read when a job asks for a
    /// secret `CRAFTING_SECRET_<NAME>` does not give).
    pub secrets_file: Option<PathBuf>,
    /// The name jobs record as their runner (`CRAFTING_RUNNER_NAME`; `local` for a
    /// farm alone on its SQLite ledger).
    pub name: String,
    /// With a ledger several processes share: how long a job's lease lasts
    /// without renewal (`CRAFTING_LEASE_SECS`). The runner renews its jobs' leases
    /// three times per period, keeps its logs in the ledger, and sweeps only its
    /// own jobs at start.
    pub lease: Option<Duration>,
}

/// The line the leader appends to the log of a job whose runner lost its lease.
pub fn lost_line(runner: &str) -> String {
    format!("runner {runner} lost, job orphaned")
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

struct Running {
    project: String,
    wrote: Arc<tokio::sync::Notify>,
    cancel: watch::Sender<bool>,
    reason: Arc<Mutex<Option<String>>>,
    /// Set when the runner lost the job's lease: it is stopped and nothing more
    /// is written for it.
    lost: Arc<AtomicBool>,
}

/// The phases of a job the runner times, in order: fetch and check out, record the
/// checkout, start the process, the command itself, after-job hooks (findings),
/// hand the worktree back, record the end (before `JobFinished` is published).
pub const PHASES: [&str; 7] = [
    "checkout", "record", "spawn", "command", "hooks", "release", "finish",
];

/// Seconds spent per phase ([`PHASES`]): totals since start, and the last jobs'.
#[derive(Debug, Default, Clone)]
pub struct PhaseStats {
    /// Jobs timed.
    pub jobs: u64,
    /// Seconds per phase over all of them.
    pub sum_secs: [f64; 7],
    /// The last (up to 1,024) jobs' phases, oldest first.
    pub recent: std::collections::VecDeque<[f64; 7]>,
}

/// Returns the allocator's free memory to the OS (glibc keeps freed memory in its
/// arenas otherwise: a farm's RSS would be its busiest moment's for months).
fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory that is already free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Times consecutive phases of one job.
struct Laps {
    t: [f64; 7],
    mark: Instant,
}

impl Laps {
    fn new() -> Laps {
        Laps {
            t: [0.0; 7],
            mark: Instant::now(),
        }
    }

    /// Phase `i` ended now.
    fn lap(&mut self, i: usize) {
        self.lap_at(i, Instant::now());
    }

    /// Phase `i` ended at `at`.
    fn lap_at(&mut self, i: usize, at: Instant) {
        self.t[i] = at.saturating_duration_since(self.mark).as_secs_f64();
        self.mark = at;
    }
}

struct Inner {
    phases: Mutex<PhaseStats>,
    cfg: RunnerConfig,
    db: Db,
    clock: SharedClock,
    events: Events,
    workspace: Workspace,
    wake: Notify,
    idle: Notify,
    running: Mutex<HashMap<String, Running>>,
    /// Wake-ups of followers of jobs that run in another process (woken by the
    /// ledger's notifications).
    remote_wakes: Mutex<HashMap<String, std::sync::Weak<tokio::sync::Notify>>>,
    hooks: Mutex<Vec<AfterJob>>,
    stopping: AtomicBool,
    /// Long-lived sandboxes of warm worktrees (with the sandbox on and a zygote
    /// program given).
    zygotes: Option<Arc<zygote::Zygotes>>,
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
    /// A runner over the ledger and `workspace`, stamping times with `clock` and
    /// publishing what its jobs do on `events`.
    pub fn new(
        cfg: RunnerConfig,
        db: Db,
        workspace: Workspace,
        clock: SharedClock,
        events: Events,
    ) -> Runner {
        let zygotes = match &cfg.sandbox {
            sandbox::Mode::Bwrap(sandbox::Settings {
                zygote: Some(exe), ..
            }) => Some(Arc::new(zygote::Zygotes::new(exe, 2 * cfg.workers.max(1)))),
            _ => None,
        };
        Runner {
            inner: Arc::new(Inner {
                zygotes,
                cfg,
                db,
                clock,
                events,
                workspace,
                wake: Notify::new(),
                idle: Notify::new(),
                running: Mutex::default(),
                remote_wakes: Mutex::default(),
                hooks: Mutex::default(),
                stopping: AtomicBool::new(false),
                phases: Mutex::default(),
            }),
        }
    }

    /// The ledger handle.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The farm's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The farm's event channel.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Enqueues a job: the one path the API, the scheduler's callers and the patch
    /// loop use. Publishes `JobQueued` (unless coalesced) and wakes the dispatcher.
    pub async fn enqueue(&self, req: JobRequest) -> Result<Enqueued, EnqueueError> {
        self.enqueue_with_patch(req, None).await
    }

    /// [`Runner::enqueue`] for a patch-verify job, carrying the change it verifies.
    pub async fn enqueue_with_patch(
        &self,
        req: JobRequest,
        patch: Option<crate::manifest::resolve::PatchCommit>,
    ) -> Result<Enqueued, EnqueueError> {
        let snapshot = self.inner.db.read(|l| l.snapshot()).await?;
        let mut new = Catalog::new(snapshot).new_job(&req)?;
        if let Some(p) = patch
            && let (Some(obj), Ok(v)) = (new.snapshot.as_object_mut(), serde_json::to_value(p))
        {
            obj.insert("patch".to_owned(), v);
        }
        let now = self.now_ms();
        let (job, coalesced) = self
            .inner
            .db
            .write(move |l| l.enqueue_job(&new, now))
            .await?;
        if !coalesced {
            self.inner
                .events
                .publish(FarmEvent::JobQueued { job: job.clone() });
        }
        self.wake();
        Ok((job, coalesced))
    }

    /// Publishes `JobQueued` for jobs another path inserted (a schedule's fire) and
    /// wakes the dispatcher.
    pub fn announce_queued(&self, jobs: &[Job]) {
        for job in jobs {
            self.inner
                .events
                .publish(FarmEvent::JobQueued { job: job.clone() });
        }
        if !jobs.is_empty() {
            self.wake();
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

    /// A notification woken after each write to a running job's log: its own
    /// writes when it runs here, else (with a shared ledger) the ledger's word that
    /// its runner stored more of it. `None` when neither can come.
    pub fn log_written(&self, id: &str) -> Option<Arc<tokio::sync::Notify>> {
        if let Some(r) = lock(&self.inner.running).get(id) {
            return Some(r.wrote.clone());
        }
        if !self.inner.db.is_postgres() {
            return None;
        }
        let mut wakes = lock(&self.inner.remote_wakes);
        wakes.retain(|_, w| w.strong_count() > 0);
        if let Some(n) = wakes.get(id).and_then(std::sync::Weak::upgrade) {
            return Some(n);
        }
        let n = Arc::new(tokio::sync::Notify::new());
        wakes.insert(id.to_owned(), Arc::downgrade(&n));
        Some(n)
    }

    /// The lease period, with a shared ledger.
    pub fn lease(&self) -> Option<Duration> {
        self.inner.cfg.lease
    }

    /// This runner's name.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// Acts on what another process of the farm did (with a shared ledger):
    /// wakes the dispatcher for new or ended jobs, followers for new log bytes,
    /// stops a job of ours whose cancel was asked, and publishes the other
    /// processes' job events on this one's channel.
    pub async fn on_note(&self, note: &crate::ledger::Note) {
        if note.origin == self.inner.db.origin() {
            return;
        }
        match note.kind.as_str() {
            "log" => {
                if let Some(n) = lock(&self.inner.remote_wakes)
                    .get(&note.id)
                    .and_then(std::sync::Weak::upgrade)
                {
                    n.notify_waiters();
                }
            }
            "cancel" if lock(&self.inner.running).contains_key(&note.id) => {
                let id = note.id.clone();
                let why = self
                    .inner
                    .db
                    .read(move |l| l.cancel_request(&id))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "cancelled".to_owned());
                self.stop_local(&note.id, &why);
            }
            "patch" => {
                let Ok(id) = note.id.parse::<i64>() else {
                    return;
                };
                if let Ok(Some((a, _))) = self.inner.db.read(move |l| l.get_patch(id)).await
                    && a.finished_at.is_some()
                {
                    self.inner.events.publish(FarmEvent::patch_ended(&a));
                }
            }
            "queued" | "started" | "finished" => {
                let id = note.id.clone();
                let Ok(Some(job)) = self.inner.db.read(move |l| l.get_job(&id)).await else {
                    return;
                };
                match note.kind.as_str() {
                    "queued" => self.inner.events.publish(FarmEvent::JobQueued { job }),
                    "started" => self.inner.events.publish(FarmEvent::JobStarted { job }),
                    _ => {
                        if let Some(n) = lock(&self.inner.remote_wakes)
                            .get(&note.id)
                            .and_then(std::sync::Weak::upgrade)
                        {
                            n.notify_waiters();
                        }
                        self.publish_finished(job).await;
                    }
                }
                self.wake();
            }
            _ => {}
        }
    }

    /// Stops a job running here (its end is recorded as cancelled with `why`).
    fn stop_local(&self, id: &str, why: &str) -> bool {
        match lock(&self.inner.running).get(id) {
            Some(r) => {
                *lock(&r.reason) = Some(why.to_owned());
                let _ = r.cancel.send(true);
                true
            }
            None => false,
        }
    }

    /// Renews this runner's leases every third of the lease period (with a shared
    /// ledger; returns at once otherwise). A job the ledger no longer has running
    /// here (the leader failed it after the lease ran out) is stopped and nothing
    /// more is written for it; so is every job when renewals fail for a whole
    /// period. Cancel requests from other processes are acted on here too.
    pub async fn keep_leases(&self) -> String {
        let Some(lease) = self.inner.cfg.lease else {
            return std::future::pending().await;
        };
        let pid = i64::from(std::process::id());
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            let (name, until) = (self.inner.cfg.name.clone(), self.lease_until());
            let Some(until) = until else { continue };
            match self
                .inner
                .db
                .write(move |l| l.renew_runner(&name, pid, until))
                .await
            {
                Ok(r) if r.held => {
                    last_ok = Instant::now();
                    let mine: Vec<String> = lock(&self.inner.running).keys().cloned().collect();
                    for id in mine {
                        if !r.running.contains(&id) {
                            self.lose(&id, "its lease was lost: the farm failed it meanwhile");
                        }
                    }
                    for (id, why) in r.cancels {
                        self.stop_local(&id, &why);
                    }
                }
                Ok(_) => {
                    return format!(
                        "the runner name {} was taken over by another process",
                        self.inner.cfg.name
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the runner's leases");
                    if last_ok.elapsed() >= lease {
                        let mine: Vec<String> = lock(&self.inner.running).keys().cloned().collect();
                        for id in mine {
                            self.lose(&id, "its lease could not be renewed");
                        }
                    }
                }
            }
        }
    }

    /// Stops a job whose lease is gone; nothing more is written for it.
    fn lose(&self, id: &str, why: &str) {
        if let Some(r) = lock(&self.inner.running).get(id) {
            if !r.lost.swap(true, Ordering::SeqCst) {
                tracing::warn!(job = %id, "stopping the job: {why}");
            }
            *lock(&r.reason) = Some(why.to_owned());
            let _ = r.cancel.send(true);
        }
    }

    /// Until when a lease taken or renewed now lasts (`None` without leases).
    fn lease_until(&self) -> Option<i64> {
        self.inner
            .cfg
            .lease
            .map(|l| self.now_ms() + l.as_millis() as i64)
    }

    /// The leader's part: fails every job whose runner's lease ran out, with the
    /// line saying which runner was lost. Returns how many.
    pub async fn expire_leases(&self) -> Result<usize, LedgerError> {
        let now = self.now_ms();
        let expired = self.inner.db.read(move |l| l.expired_jobs(now)).await?;
        let mut n = 0;
        for job in expired {
            let line = lost_line(job.runner.as_deref().unwrap_or("(unknown)"));
            let log_line = format!("{}{line}\n", logfile::FARM_PREFIX);
            let (id, now) = (job.id.clone(), self.now_ms());
            let done = self
                .inner
                .db
                .write(move |l| {
                    Ok(if l.orphan_job(&id, &line, &log_line, now)? {
                        l.get_job(&id)?
                    } else {
                        None
                    })
                })
                .await?;
            if let Some(j) = done {
                tracing::warn!(job = %j.id, runner = ?j.runner, "job orphaned: its runner's lease ran out");
                n += 1;
                self.publish_finished(j).await;
                self.wake();
            }
        }
        Ok(n)
    }

    /// Where jobs spent their time ([`PHASES`]).
    pub fn phase_stats(&self) -> PhaseStats {
        lock(&self.inner.phases).clone()
    }

    fn record_phases(&self, t: [f64; 7]) {
        let mut p = lock(&self.inner.phases);
        p.jobs += 1;
        for (sum, x) in p.sum_secs.iter_mut().zip(t) {
            *sum += x;
        }
        if p.recent.len() == 1024 {
            p.recent.pop_front();
        }
        p.recent.push_back(t);
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
        let name = self.inner.cfg.name.clone();
        let shared = self.inner.cfg.lease.is_some();
        let stale = self
            .inner
            .db
            .read(move |l| {
                if shared {
                    l.running_jobs_of(&name)
                } else {
                    l.running_jobs()
                }
            })
            .await?;
        let stale: Vec<_> = {
            let running = lock(&self.inner.running);
            stale
                .into_iter()
                .filter(|j| !running.contains_key(&j.id))
                .collect()
        };
        // A runner killed between starting a command and recording its process
        // group leaves processes the recorded group cannot find: find them by the
        // job id in their environment (found by the crash soak).
        let ids: std::collections::HashSet<String> = stale.iter().map(|j| j.id.clone()).collect();
        let killed = tokio::task::spawn_blocking(move || process::kill_by_job_id(&ids))
            .await
            .unwrap_or(0);
        if killed > 0 {
            tracing::warn!(
                killed,
                "killed processes left by a crashed runner (found by job id)"
            );
        }
        let mut n = 0;
        for job in stale {
            if let (Some(pgid), Some(start)) = (job.pgid, job.pgid_start_time) {
                let killed = process::kill_orphaned_group(pgid as i32, start as u64);
                if killed > 0 {
                    tracing::warn!(job = %job.id, pgid, killed, "killed processes left by a crashed runner");
                }
            }
            let log = self.log_path(&job.id);
            logfile::append_line(&log, ORPHAN_LINE);
            if shared {
                self.ship_log(&job.id, &log).await;
            }
            // The recorded worktree, or the one a crash mid-checkout left before it
            // could be recorded (found by the crash soak).
            let ws = self.inner.workspace.clone();
            let wt = job
                .worktree_path
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| ws.worktree_path(&job.project, &job.id));
            if wt.exists() {
                let project = job.project.clone();
                let _ =
                    tokio::task::spawn_blocking(move || ws.remove_worktree(&project, &wt)).await;
            }
            let id = job.id.clone();
            let now = self.now_ms();
            let swept = self
                .inner
                .db
                .write(move |l| {
                    l.finish_job(&id, JobStatus::Failed, Some(-1), Some(ORPHAN_LINE), now)
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
        logfile::path(&self.inner.cfg.logs_dir, id)
    }

    /// Cancels a job: a queued one at once, a running one by stopping its group.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<CancelResult, LedgerError> {
        if self.stop_local(id, reason) {
            return Ok(CancelResult::Stopping);
        }
        let (id2, reason2, now) = (id.to_owned(), reason.to_owned(), self.now_ms());
        let (job, cancelled) = self
            .inner
            .db
            .write(move |l| {
                let done = l.cancel_queued_job(&id2, &reason2, now)?;
                Ok((l.get_job(&id2)?, done))
            })
            .await?;
        if cancelled && let Some(j) = &job {
            self.publish_finished(j.clone()).await;
        }
        Ok(match job {
            None => CancelResult::NotFound,
            Some(_) if cancelled => CancelResult::Cancelled,
            // Claimed between the two looks: it is starting; stop it once it runs.
            Some(j) if j.status == JobStatus::Running => {
                if !self.stop_local(id, reason) {
                    // It runs in another process: ask its runner, through the ledger.
                    let (id2, reason2) = (id.to_owned(), reason.to_owned());
                    self.inner
                        .db
                        .write(move |l| l.request_cancel(&id2, &reason2))
                        .await?;
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
        if let Some(z) = &self.inner.zygotes {
            z.clear();
        }
    }

    /// Long-lived sandboxes waiting for their worktree's next job.
    pub fn idle_sandboxes(&self) -> usize {
        self.inner.zygotes.as_ref().map_or(0, |z| z.idle())
    }

    /// Stops kept sandboxes idle for longer than `max_idle` or whose worktree
    /// is gone.
    pub fn trim_sandboxes(&self, max_idle: Duration) {
        if let Some(z) = &self.inner.zygotes {
            z.trim(max_idle);
        }
    }

    /// The dispatcher loop: runs until [`Runner::shutdown`].
    pub async fn run(&self) -> Result<(), LedgerError> {
        let mut failing = false;
        while !self.inner.stopping.load(Ordering::SeqCst) {
            match self.dispatch().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the ledger answers again: claiming jobs");
                    }
                    failing = false;
                }
                // A ledger out of reach (a database restart, a network cut) is
                // waited out: the jobs stay queued meanwhile.
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot look at the queue; trying again every second");
                    }
                    failing = true;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
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
        let (queued, snapshot) = self
            .inner
            .db
            .read(|l| Ok((l.queued_jobs(1000)?, l.snapshot()?)))
            .await?;
        let catalog = Catalog::new(snapshot);
        let mut per_project: HashMap<String, usize> = HashMap::new();
        for r in lock(&self.inner.running).values() {
            *per_project.entry(r.project.clone()).or_default() += 1;
        }
        let mut free = free;
        for job in queued {
            if free == 0 {
                break;
            }
            let project = match catalog.project(&job.project) {
                Ok(p) => p,
                Err(e @ EnqueueError::Unreadable(..)) => {
                    self.refuse(&job, &e.to_string()).await?;
                    continue;
                }
                Err(_) => {
                    self.refuse(&job, "project no longer exists").await?;
                    continue;
                }
            };
            if project.stored.retired_at.is_some() {
                self.refuse(&job, "project is retired: it was removed from the registry")
                    .await?;
                continue;
            }
            let cap = project.spec.max_concurrent_jobs.max(1) as usize;
            let busy = per_project.get(&job.project).copied().unwrap_or(0);
            if busy >= cap {
                continue;
            }
            let log = self.log_path(&job.id);
            let (id, log_s, now) = (job.id.clone(), log.display().to_string(), self.now_ms());
            let (name, until) = (self.inner.cfg.name.clone(), self.lease_until());
            let claimed = self
                .inner
                .db
                .write(move |l| {
                    if l.claim_job_as(&id, &log_s, now, &name, until, cap)? {
                        l.get_job(&id)
                    } else {
                        Ok(None)
                    }
                })
                .await?;
            let Some(job) = claimed else {
                continue;
            };
            self.inner
                .events
                .publish(FarmEvent::JobStarted { job: job.clone() });
            let (tx, rx) = watch::channel(false);
            let reason = Arc::new(Mutex::new(None));
            let lost = Arc::new(AtomicBool::new(false));
            lock(&self.inner.running).insert(
                job.id.clone(),
                Running {
                    project: job.project.clone(),
                    wrote: Arc::default(),
                    cancel: tx,
                    reason: reason.clone(),
                    lost: lost.clone(),
                },
            );
            *per_project.entry(job.project.clone()).or_default() += 1;
            free -= 1;
            let me = self.clone();
            let url = crate::git::resolve_git_url(
                &project.spec.git_url,
                project.from_registry(),
                &self.inner.cfg.registry_base,
            );
            tokio::spawn(async move {
                let id = job.id.clone();
                // Run the job in a task of its own: should it panic (a bug), the job
                // is recorded as a farm error and its worker slot is freed.
                let runner = me.clone();
                let ran =
                    tokio::spawn(async move { runner.run_job(job, url, rx, reason, lost).await })
                        .await;
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
                let idle = {
                    let mut running = lock(&me.inner.running);
                    running.remove(&id);
                    running.is_empty()
                };
                me.inner.wake.notify_one();
                me.inner.idle.notify_waiters();
                if idle {
                    // Nothing runs: give what finished jobs freed, and the
                    // ledger connections' caches, back to the OS.
                    let db = me.inner.db.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        db.shrink_memory_blocking();
                        trim_allocator();
                    })
                    .await;
                }
            });
        }
        Ok(())
    }

    async fn refuse(&self, job: &Job, why: &str) -> Result<(), LedgerError> {
        let (id, why, now) = (job.id.clone(), why.to_owned(), self.now_ms());
        let refused = self
            .inner
            .db
            .write(move |l| {
                Ok(if l.cancel_queued_job(&id, &why, now)? {
                    l.get_job(&id)?
                } else {
                    None
                })
            })
            .await?;
        if let Some(j) = refused {
            self.publish_finished(j).await;
        }
        Ok(())
    }

    /// Records a job's end, then publishes `JobFinished` with its findings.
    async fn finish(&self, id: &str, status: JobStatus, code: Option<i64>, error: Option<String>) {
        if self.inner.cfg.lease.is_some() {
            self.ship_log(id, &self.log_path(id)).await;
        }
        if let Some(job) = self.record_end(id, status, code, error).await {
            self.publish_finished(job).await;
        }
    }

    /// Records a job's end; the job as stored, to publish.
    async fn record_end(
        &self,
        id: &str,
        status: JobStatus,
        code: Option<i64>,
        error: Option<String>,
    ) -> Option<Job> {
        // A full disk is waited out (a minute at most here; the restart sweep
        // settles what is still running after that).
        let mut r;
        let mut waited = 0;
        loop {
            let (id2, now, error) = (id.to_owned(), self.now_ms(), error.clone());
            r = self
                .inner
                .db
                .write(move |l| {
                    l.finish_job(&id2, status, code, error.as_deref(), now)?;
                    l.get_job(&id2)
                })
                .await;
            match &r {
                Err(e) if e.is_full() && waited < 60 => {
                    if waited == 0 {
                        tracing::error!(job = %id, "the ledger's disk is full; waiting to record the job's end");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    waited += 1;
                }
                _ => break,
            }
        }
        match r {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot record job result");
                None
            }
        }
    }

    async fn publish_finished(&self, job: Job) {
        let id = job.id.clone();
        let new = self
            .inner
            .db
            .read(move |l| l.new_findings_count(&id))
            .await
            .unwrap_or(0);
        let findings = FindingCounts {
            total: job.findings_count,
            new,
            fixed: job.fixed.as_array().map_or(0, |a| a.len() as i64),
        };
        self.inner.events.publish(FarmEvent::JobFinished {
            status: job.status,
            exit_code: job.exit_code,
            findings,
            job,
        });
    }

    /// Stores in the ledger what the job's log file holds beyond what is stored
    /// (with a shared ledger, where other hosts read logs). Returns the size
    /// stored. The file holds masked output only: a secret split across writes is
    /// held back by the masker until decided, so no chunk carries part of one.
    async fn ship_log(&self, id: &str, log: &Path) -> u64 {
        let (id, log, db) = (id.to_owned(), log.to_owned(), self.inner.db.clone());
        tokio::task::spawn_blocking(move || {
            let mut at = match db.read_blocking(|l| l.log_size(&id)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "cannot read the stored log's size");
                    return 0;
                }
            };
            loop {
                let data = logfile::read_from(&log, at, 1 << 20);
                if data.is_empty() {
                    return at;
                }
                if let Err(e) = db.write_blocking(|l| l.append_log(&id, at, &data)) {
                    tracing::warn!(job = %id, error = %e, "cannot store the job's log");
                    return at;
                }
                at += data.len() as u64;
            }
        })
        .await
        .unwrap_or(0)
    }

    /// Ships the log as it grows (woken by the job's writes, at most ten times a
    /// second) until `done` is set; the caller ships the rest.
    fn ship_while_running(
        &self,
        id: &str,
        log: &Path,
        done: watch::Receiver<bool>,
        lost: Arc<AtomicBool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.cfg.lease?;
        let wrote = self.log_written(id)?;
        let (me, id, log) = (self.clone(), id.to_owned(), log.to_owned());
        let mut done = done;
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = wrote.notified() => {}
                    _ = done.changed() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if lost.load(Ordering::SeqCst) {
                    // The job is no longer this runner's: nothing more of it.
                    return;
                }
                me.ship_log(&id, &log).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    }

    async fn run_job(
        &self,
        job: Job,
        url: String,
        cancel: watch::Receiver<bool>,
        reason: Arc<Mutex<Option<String>>>,
        lost: Arc<AtomicBool>,
    ) {
        let started = Instant::now();
        let log = self.log_path(&job.id);
        let (ship_done, ship_rx) = watch::channel(false);
        let shipper = self.ship_while_running(&job.id, &log, ship_rx, lost.clone());
        if let Err(e) = std::fs::create_dir_all(&self.inner.cfg.logs_dir) {
            tracing::error!(error = %e, "cannot create logs directory");
        }
        logfile::append_line(
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
                logfile::append_line(&log, &msg);
                self.finish(&job.id, JobStatus::Error, None, Some(msg))
                    .await;
                return;
            }
        };
        // A patch-verify job whose commit this host's mirror lacks: make it.
        if let Some(patch) = resolved.patch.clone() {
            let ws = self.inner.workspace.clone();
            let (p, u, id) = (job.project.clone(), url.clone(), job.id.clone());
            let made = tokio::task::spawn_blocking(move || -> Result<(), String> {
                if ws.has_commit(&p, &patch.commit) {
                    return Ok(());
                }
                match ws.ensure_commit(&p, &u, &patch.base) {
                    Ok(true) => {}
                    Ok(false) => return Err(format!("the base commit {} is not in the project's repository", patch.base)),
                    Err(e) => return Err(format!("cannot fetch the base commit {}: {}", patch.base, e.message)),
                }
                let made = ws.make_patch_commit(&p, &format!("verify-{id}"), &patch)?;
                if made == patch.commit {
                    Ok(())
                } else {
                    Err(format!(
                        "the change made commit {made}, not {} (the patch loop's); not verifying another commit",
                        patch.commit
                    ))
                }
            })
            .await
            .unwrap_or_else(|e| Err(format!("making the patch's commit failed: {e}")));
            match made {
                Ok(()) => logfile::append_line(
                    &log,
                    &format!(
                        "the patch's commit {} is in this host's mirror",
                        &resolved.patch.as_ref().map_or("", |p| p.commit.as_str())
                    ),
                ),
                Err(msg) => {
                    logfile::append_line(&log, &msg);
                    self.finish(&job.id, JobStatus::Error, None, Some(msg))
                        .await;
                    return;
                }
            }
        }
        // Fetch and check out.
        let ws = self.inner.workspace.clone();
        let (p, u, r, i) = (
            job.project.clone(),
            url.clone(),
            job.git_ref.clone(),
            job.id.clone(),
        );
        let (asked, clock) = (job.created_at, self.inner.clock.clone());
        let mode = resolved.workspace;
        let mut laps = Laps::new();
        let checkout = tokio::task::spawn_blocking(move || {
            ws.checkout_since(&p, &u, &r, &i, mode, asked, &|| clock.now_ms())
        })
        .await;
        let checkout = match checkout {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let msg = format!(
                    "cannot check out {} at `{}`: {}",
                    crate::git::redact_url(&url),
                    job.git_ref,
                    e.message
                );
                logfile::append_line(&log, &msg);
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
        laps.lap(0);
        let (id, sha, wt) = (
            job.id.clone(),
            checkout.sha.clone(),
            checkout.worktree.display().to_string(),
        );
        let _ = self
            .inner
            .db
            .write(move |l| l.set_job_checkout(&id, &sha, &wt))
            .await;
        laps.lap(1);
        logfile::append_line(
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
        // Whether the worktree may serve the next job: only after a command that
        // exited by itself and left nothing running.
        let mut reusable = false;
        let (status, code, error) = if !cwd.is_dir() {
            let msg = format!(
                "subproject directory `{}` does not exist at {}",
                resolved.subproject, checkout.sha
            );
            logfile::append_line(&log, &msg);
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
            // Secrets: never for the patch loop's verify jobs (code a model wrote).
            let mut masked = Vec::new();
            if !resolved.secrets.is_empty() && job.trigger != Trigger::PatchVerify.as_str() {
                match secrets::values(&resolved.secrets, self.inner.cfg.secrets_file.as_deref()) {
                    Ok(values) => {
                        for (k, v) in values {
                            masked.push(v.clone());
                            env.insert(k, v);
                        }
                    }
                    Err(msg) => {
                        logfile::append_line(&log, &msg);
                        // Nothing ran in it: it stays warm.
                        self.release(&job.project, &checkout, true).await;
                        self.finish(&job.id, JobStatus::Error, None, Some(msg))
                            .await;
                        return;
                    }
                }
            }
            logfile::append_line(&log, &format!("$ {}", resolved.command));
            let (env, sandbox) = match &self.inner.cfg.sandbox {
                sandbox::Mode::None => (env, None),
                sandbox::Mode::Bwrap(settings) => {
                    let home = self.inner.workspace.root().join(&job.project).join(".home");
                    let _ = std::fs::create_dir_all(&home);
                    let mounts = sandbox::JobMounts {
                        worktree: checkout.worktree.clone(),
                        mirror: self.inner.workspace.mirror(&job.project),
                        cache: cache.clone(),
                        home: home.clone(),
                        network: resolved.network,
                    };
                    let args = sandbox::bwrap_args(settings, &mounts);
                    (sandbox::environment(settings, &home, &env), Some(args))
                }
            };
            let spec = process::ProcessSpec {
                command: resolved.command.clone(),
                cwd,
                env,
                log_path: log.clone(),
                log_cap: self.inner.cfg.log_cap,
                timeout: Duration::from_secs(resolved.timeout_secs),
                kill_grace: self.inner.cfg.kill_grace,
                zygote: match (&sandbox, &self.inner.zygotes) {
                    (Some(_), Some(z)) if checkout.warm => {
                        Some((z.clone(), checkout.worktree.clone()))
                    }
                    _ => None,
                },
                sandbox,
                masked,
                wrote: self.log_written(&job.id),
            };
            let db = self.inner.db.clone();
            let id = job.id.clone();
            let spawned = Arc::new(Mutex::new(None::<Instant>));
            let spawned2 = spawned.clone();
            let outcome = process::run(&spec, cancel, move |pgid, start| {
                *lock(&spawned2) = Some(Instant::now());
                tokio::task::spawn_blocking(move || {
                    db.write_blocking(|l| {
                        if let Err(e) = l.set_job_process(&id, i64::from(pgid), start as i64) {
                            tracing::error!(error = %e, "cannot record process group");
                        }
                    })
                });
            })
            .await;
            let secs = started.elapsed().as_secs_f64();
            if let Some(at) = *lock(&spawned) {
                laps.lap_at(2, at);
                laps.lap(3);
            }
            if let Ok(o) = &outcome {
                reusable = matches!(o.stop, process::Stop::Exited(_))
                    && !o.leftovers
                    && o.log_error.is_none();
            }
            match outcome {
                Err(e) => {
                    let msg = format!("cannot start /bin/sh: {e}");
                    logfile::append_line(&log, &msg);
                    (JobStatus::Error, None, Some(msg))
                }
                Ok(o) => match o.stop {
                    process::Stop::Exited(0) => {
                        logfile::append_line(&log, &format!("exit 0 after {secs:.1}s"));
                        (JobStatus::Succeeded, Some(0), None)
                    }
                    process::Stop::Exited(127) => {
                        let msg = logfile::missing_tool(&log).unwrap_or_else(|| {
                            "exit 127: a command was not found on this machine (the shell named it above)"
                                .to_owned()
                        });
                        logfile::append_line(&log, &msg);
                        (JobStatus::Failed, Some(127), Some(msg))
                    }
                    process::Stop::Exited(c) => {
                        logfile::append_line(&log, &format!("exit {c} after {secs:.1}s"));
                        let hint = logfile::missing_tool(&log);
                        if let Some(h) = &hint {
                            logfile::append_line(&log, h);
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
                        logfile::append_line(&log, &msg);
                        (JobStatus::TimedOut, None, Some(msg))
                    }
                    process::Stop::LogFailed => {
                        let msg = format!(
                            "the job's log could not be written ({}); the job was stopped and the farm goes on",
                            o.log_error.as_deref().unwrap_or("write failed")
                        );
                        logfile::append_line(&log, &msg);
                        (JobStatus::Error, None, Some(msg))
                    }
                    process::Stop::Cancelled => {
                        let why = lock(&reason)
                            .clone()
                            .unwrap_or_else(|| "cancelled".to_owned());
                        logfile::append_line(&log, &format!("cancelled: {why}"));
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
        laps.lap(4);
        let ws = self.inner.workspace.clone();
        let (p, c) = (job.project.clone(), checkout.clone());
        let tidy = tokio::task::spawn_blocking(move || ws.release_later(&p, &c, reusable))
            .await
            .unwrap_or(false);
        laps.lap(5);
        let _ = ship_done.send(true);
        if let Some(s) = shipper {
            let _ = s.await;
        }
        if lost.load(Ordering::SeqCst) {
            // The farm failed it when its lease ran out: write nothing more.
            logfile::append_line(&log, "stopped: this runner lost the job's lease");
            return;
        }
        if self.inner.cfg.lease.is_some() {
            self.ship_log(&job.id, &log).await;
        }
        let ended = self.record_end(&job.id, status, code, error).await;
        laps.lap(6);
        self.record_phases(laps.t);
        if let Some(j) = ended {
            self.publish_finished(j).await;
        }
        // A reusable warm tree is reset for the next job after this one's end is
        // out, so the job's own time does not include it.
        if tidy {
            let ws = self.inner.workspace.clone();
            let (p, w) = (job.project.clone(), checkout.worktree.clone());
            let _ = tokio::task::spawn_blocking(move || ws.tidy(&p, &w)).await;
        }
    }

    async fn release(&self, project: &str, checkout: &crate::workspace::Checkout, reusable: bool) {
        let ws = self.inner.workspace.clone();
        let (p, c) = (project.to_owned(), checkout.clone());
        let _ = tokio::task::spawn_blocking(move || ws.release(&p, &c, reusable)).await;
    }

    async fn remove_worktree(&self, project: &str, wt: &Path) {
        let ws = self.inner.workspace.clone();
        let (p, w) = (project.to_owned(), wt.to_owned());
        let _ = tokio::task::spawn_blocking(move || ws.remove_worktree(&p, &w)).await;
    }
}
