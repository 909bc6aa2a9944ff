//! The one place that builds a farm: configuration in, running parts out.
//!
//! `serve` and the tests call [`Farm::start`], so tests run what users run. Each
//! part is a named task — the HTTP API, the reconcile loop, the scheduler, the
//! runner, gc — and the registry watcher runs beside them. The API answers as soon
//! as `start` returns; the first reconcile runs in the background (`GET /registry`
//! says `"in_progress": true` meanwhile), so a slow registry delays nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::api::{AppState, Metrics};
use crate::clock::{self, SharedClock};
use crate::config::{Config, RegistrySource};
use crate::events::Events;
use crate::ledger::Db;
use crate::notify::digest::DigestSettings;
use crate::notify::mail::Mailer;
use crate::notify::service::Digests;
use crate::notify::webhook::SecretLookup;
use crate::reconciler::Outcome;
use crate::reconciler::looped::{self, LoopParts, RunResult, Trigger};
use crate::registry::Registry;
use crate::registry::watch::{Watcher, watch_dir};
use crate::runner::{Runner, RunnerConfig};
use crate::workspace::Workspace;

/// Grace between SIGTERM and SIGKILL for job process groups.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// Read-only ledger connections for the API.
pub const READERS: usize = 4;

/// Why the farm could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// Start-up failed.
    #[error("{0}")]
    Startup(String),
    /// A part of the farm stopped.
    #[error("{part} stopped: {why}")]
    PartDied {
        /// Which part.
        part: &'static str,
        /// Why.
        why: String,
    },
}

/// What may differ between `serve` and a test.
#[derive(Clone)]
pub struct FarmOptions {
    /// The clock (the system's in `serve`).
    pub clock: SharedClock,
    /// Grace between SIGTERM and SIGKILL of a job's group.
    pub kill_grace: Duration,
    /// Reads secrets named by manifests (webhook keys): the process environment in
    /// `serve`.
    pub secrets: SecretLookup,
    /// The crafting-table binary, kept running inside each warm worktree's
    /// sandbox to start its jobs (`serve` and `runner`: themselves). `None`: one
    /// bwrap per job.
    pub sandbox_program: Option<PathBuf>,
}

impl Default for FarmOptions {
    fn default() -> Self {
        FarmOptions {
            clock: clock::system(),
            kill_grace: KILL_GRACE,
            secrets: Arc::new(|name: &str| std::env::var(name).ok()),
            sandbox_program: None,
        }
    }
}

impl FarmOptions {
    /// The options of the `crafting-table` command itself: the system clock and
    /// environment, and this binary as the sandboxes' program.
    pub fn for_this_binary() -> FarmOptions {
        FarmOptions {
            sandbox_program: std::env::current_exe().ok(),
            ..FarmOptions::default()
        }
    }
}

impl std::fmt::Debug for FarmOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmOptions")
            .field("clock", &self.clock)
            .field("kill_grace", &self.kill_grace)
            .field("sandbox_program", &self.sandbox_program)
            .finish_non_exhaustive()
    }
}

/// A running farm.
pub struct Farm {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The configuration (data directory made absolute).
    pub config: Arc<Config>,
    /// The ledger handle.
    pub db: Db,
    /// The runner.
    pub runner: Runner,
    /// The farm's events.
    pub events: Events,
    /// The digest service.
    pub digests: Digests,
    /// Asks the reconcile loop to run.
    pub reconcile: Trigger,
    /// Counters of `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The registry it reconciles.
    pub registry: Registry,
    /// Whether this start minted the admin bearer.
    pub admin_minted: bool,
    /// Jobs a previous process left running that start-up failed.
    pub swept: usize,
    /// How jobs are isolated, in words (the banner's `sandbox` line).
    pub sandbox: String,
    /// With PostgreSQL, the bus to the farm's other processes (and the election).
    pub bus: Option<crate::ledger::bus::Bus>,
    tasks: Vec<(&'static str, JoinHandle<String>)>,
    shutdown: Arc<Notify>,
    _watcher: Option<Watcher>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// The host's name (the runners table says where each runner runs).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// The runner of a process that runs jobs (`serve` or `runner`): its sandbox
/// (and the words the banner uses for it), its workspace, its name and leases.
pub fn build_runner(
    cfg: &Config,
    db: &Db,
    clock: SharedClock,
    events: &Events,
    opts: &FarmOptions,
) -> Result<(Runner, String), FarmError> {
    let kill_grace = opts.kill_grace;
    let startup =
        |what: &str, e: &dyn std::fmt::Display| FarmError::Startup(format!("{what}: {e}"));
    let registry_base = match &cfg.registry {
        RegistrySource::Dir(d) => absolute(d),
        RegistrySource::Git(_) => cfg.data_dir.clone(),
    };
    let shared = matches!(cfg.ledger, crate::config::LedgerLocation::Postgres(_));
    let name = match (&cfg.runner_name, shared) {
        (Some(n), _) => n.clone(),
        (None, false) => "local".to_owned(),
        (None, true) if cfg.workers == 0 => "none".to_owned(),
        (None, true) => {
            return Err(FarmError::Startup(
                "CRAFTING_RUNNER_NAME: needed with a PostgreSQL ledger by a process that runs jobs (a name unique in the farm and stable across restarts, e.g. the host's name); or set CRAFTING_WORKERS=0".to_owned(),
            ));
        }
    };
    let git_credentials = match &cfg.git_credentials {
        None => None,
        Some(p) => {
            use std::os::unix::fs::PermissionsExt as _;
            let p = absolute(p);
            let meta = std::fs::metadata(&p).map_err(|e| {
                startup(
                    &format!("CRAFTING_GIT_CREDENTIALS: cannot read {}", p.display()),
                    &e,
                )
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(FarmError::Startup(format!(
                    "CRAFTING_GIT_CREDENTIALS: {} is readable by others (mode {:o}): chmod 600 it",
                    p.display(),
                    meta.permissions().mode() & 0o777
                )));
            }
            Some(p)
        }
    };
    let mut sandbox_words =
        "bwrap (own PID, IPC and mount namespaces; data directory hidden)".to_owned();
    let sandbox = match cfg.sandbox.as_str() {
        "none" => {
            sandbox_words = "off (CRAFTING_SANDBOX=none)".to_owned();
            tracing::info!(
                "job sandbox off (CRAFTING_SANDBOX=none): commands run as the farm's user and see what it sees"
            );
            crate::runner::sandbox::Mode::None
        }
        wanted => match crate::runner::sandbox::probe() {
            Ok(()) => {
                let mut hide_dirs = vec![cfg.data_dir.clone()];
                if !cfg.workspace_dir.starts_with(&cfg.data_dir) {
                    hide_dirs.push(cfg.workspace_dir.clone());
                }
                tracing::info!(
                    "job sandbox on: bwrap, own PID and IPC namespaces, the data directory hidden, a built environment"
                );
                crate::runner::sandbox::Mode::Bwrap(crate::runner::sandbox::Settings {
                    hide_dirs,
                    hide_files: cfg.config_file.iter().map(|p| absolute(p)).collect(),
                    writable: cfg.sandbox_writable.clone(),
                    pass_env: cfg.sandbox_pass_env.clone(),
                    zygote: opts.sandbox_program.clone(),
                })
            }
            Err(why) if wanted == "required" => {
                return Err(startup("job sandbox (CRAFTING_SANDBOX=required)", &why));
            }
            Err(why) => {
                tracing::warn!("job sandbox unavailable, commands run unsandboxed: {why}");
                sandbox_words = format!("UNAVAILABLE, jobs run unsandboxed: {why}");
                crate::runner::sandbox::Mode::None
            }
        },
    };
    let runner = Runner::new(
        RunnerConfig {
            workers: cfg.workers,
            logs_dir: cfg.logs_dir(),
            log_cap: cfg.log_cap_bytes,
            kill_grace,
            registry_base,
            sandbox,
            secrets_file: Some(cfg.data_dir.join("secrets.toml")),
            name,
            lease: shared.then(|| Duration::from_secs(cfg.lease_secs)),
        },
        db.clone(),
        Workspace::new(cfg.workspace_dir.clone())
            .with_fetch_timeout(cfg.git_timeout())
            .with_credentials(git_credentials),
        clock.clone(),
        events.clone(),
    );

    Ok((runner, sandbox_words))
}

/// A `crafting-table runner` process: no API, no once-per-farm loops; it claims
/// queued jobs from the PostgreSQL ledger and runs them.
pub struct RunnerProcess {
    /// The runner.
    pub runner: Runner,
    /// Jobs a previous run of this runner left running that start-up failed.
    pub swept: usize,
    /// How jobs are isolated, in words.
    pub sandbox: String,
    tasks: Vec<(&'static str, JoinHandle<String>)>,
}

impl RunnerProcess {
    /// Connects, registers the runner's name (refused while another live process
    /// holds it), sweeps what a previous run of it left, and starts claiming jobs.
    pub async fn start(mut cfg: Config, opts: FarmOptions) -> Result<RunnerProcess, FarmError> {
        let startup =
            |what: &str, e: &dyn std::fmt::Display| FarmError::Startup(format!("{what}: {e}"));
        let crate::config::LedgerLocation::Postgres(url) = cfg.ledger.clone() else {
            return Err(FarmError::Startup(
                "CRAFTING_LEDGER: a runner takes its jobs from a PostgreSQL ledger (postgres://…); with SQLite, `serve` runs the jobs itself".to_owned(),
            ));
        };
        if cfg.runner_name.is_none() {
            return Err(FarmError::Startup(
                "CRAFTING_RUNNER_NAME: a runner needs a name, unique in the farm and stable across restarts (e.g. the host's name)".to_owned(),
            ));
        }
        if cfg.workers == 0 {
            return Err(FarmError::Startup(
                "CRAFTING_WORKERS: a runner with 0 workers would run nothing".to_owned(),
            ));
        }
        cfg.data_dir = absolute(&cfg.data_dir);
        cfg.workspace_dir = absolute(&cfg.workspace_dir);
        for (dir, what) in [
            (cfg.logs_dir(), "logs directory"),
            (cfg.workspace_dir.clone(), "workspace"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| startup(&format!("cannot create {what} {}", dir.display()), &e))?;
        }
        let u = url.clone();
        let db = tokio::task::spawn_blocking(move || Db::open_postgres(&u, 2))
            .await
            .map_err(|e| startup("ledger", &e))?
            .map_err(|e| startup("ledger", &e))?;
        let clock = opts.clock.clone();
        let events = Events::new();
        let (runner, sandbox) = build_runner(&cfg, &db, clock.clone(), &events, &opts)?;
        register(&runner, "runner", cfg.workers, &clock).await?;
        let swept = runner
            .sweep()
            .await
            .map_err(|e| startup("restart sweep", &e))?;
        clean_leftovers(&runner).await;
        crate::findings::install(&runner);
        let bus = crate::ledger::bus::Bus::start(&url, None, Duration::from_secs(1))
            .await
            .map_err(|e| startup("the farm's bus", &e))?;
        let mut tasks: Vec<(&'static str, JoinHandle<String>)> = Vec::new();
        tasks.push(("bus", tokio::spawn(bridge(bus, runner.clone()))));
        tasks.push(("leases", {
            let r = runner.clone();
            tokio::spawn(async move { r.keep_leases().await })
        }));
        tasks.push(("runner", tokio::spawn(dispatch(runner.clone()))));
        tasks.push((
            "gc",
            tokio::spawn(crate::gc::run(
                runner.clone(),
                None,
                Duration::from_secs(cfg.warm_idle_secs),
            )),
        ));
        Ok(RunnerProcess {
            runner,
            swept,
            sandbox,
            tasks,
        })
    }

    /// Resolves when a part stops (which it never should): names it and why.
    pub async fn stopped(&mut self) -> FarmError {
        first_stopped(&mut self.tasks).await
    }

    /// Stops: running jobs are cancelled (and recorded), the name is released.
    pub async fn stop(self, reason: &str) {
        self.runner.shutdown(reason).await;
        release_name(&self.runner).await;
        for (_, h) in self.tasks {
            h.abort();
        }
    }
}

/// Removes the worktrees a previous process left in this one's workspace (before
/// any job runs here, none is anybody's).
async fn clean_leftovers(runner: &Runner) {
    let ws = runner.workspace().clone();
    let n = tokio::task::spawn_blocking(move || ws.clean_leftovers())
        .await
        .unwrap_or(0);
    if n > 0 {
        tracing::info!(
            worktrees = n,
            "worktrees left by a previous process removed"
        );
    }
}

/// Marks this process's runner name stopped (a clean exit frees it at once).
async fn release_name(runner: &Runner) {
    if runner.lease().is_none() {
        return;
    }
    let (name, pid, now) = (
        runner.name().to_owned(),
        i64::from(std::process::id()),
        runner.clock().now_ms(),
    );
    if let Err(e) = runner
        .db()
        .write(move |l| l.stop_runner(&name, pid, now))
        .await
    {
        tracing::warn!(error = %e, "cannot record the runner's stop");
    }
}

/// The first of `tasks` to stop: which and why.
async fn first_stopped(tasks: &mut [(&'static str, JoinHandle<String>)]) -> FarmError {
    let handles = tasks.iter_mut().map(|(part, h)| {
        let part = *part;
        Box::pin(async move { (part, h.await) })
    });
    let ((part, r), _, _) = futures_util::future::select_all(handles).await;
    FarmError::PartDied {
        part,
        why: match r {
            Ok(why) => why,
            Err(e) if e.is_panic() => "it panicked (see the log above)".to_owned(),
            Err(e) => e.to_string(),
        },
    }
}

/// The runner's dispatcher, as a part of the process.
async fn dispatch(runner: Runner) -> String {
    match runner.run().await {
        Ok(()) => "the runner stopped".to_owned(),
        Err(e) => format!("the runner failed: {e}"),
    }
}

/// Acts on the other processes' notifications (see [`Runner::on_note`]).
pub async fn bridge(bus: crate::ledger::bus::Bus, runner: Runner) -> String {
    use crate::ledger::bus::BusEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) => match &*e {
                BusEvent::Note(n) => runner.on_note(n).await,
                BusEvent::Resync => runner.wake(),
            },
            Err(RecvError::Lagged(_)) => runner.wake(),
            Err(RecvError::Closed) => return "the farm's bus closed".to_owned(),
        }
    }
}

/// Waits to be elected leader, then runs the once-per-farm loops `lead` starts;
/// returns (stopping the farm) when the lead is lost or one of them stops.
async fn lead_when_elected(
    bus: crate::ledger::bus::Bus,
    lead: impl FnOnce() -> Vec<(&'static str, JoinHandle<String>)>,
) -> String {
    use crate::ledger::bus::Leading;
    let mut leading = bus.leading();
    while *leading.borrow_and_update() != Leading::Yes {
        if leading.changed().await.is_err() {
            return "the farm's bus stopped".to_owned();
        }
    }
    let tasks = lead();
    let handles = tasks.into_iter().map(|(part, h)| {
        Box::pin(async move {
            match h.await {
                Ok(why) => format!("{part} stopped: {why}"),
                Err(e) => format!("{part} stopped: {e}"),
            }
        })
    });
    let mut parts = futures_util::future::select_all(handles);
    loop {
        tokio::select! {
            (why, _, _) = &mut parts => return why,
            r = leading.changed() => {
                if r.is_err() || *leading.borrow() != Leading::Yes {
                    return "lost the farm's leadership (its ledger connection dropped): restart to stand by".to_owned();
                }
            }
        }
    }
}

/// The leader's loop that reconciles for the processes that do not lead: each
/// request handed over through the ledger is answered with the outcome (requests
/// that arrive while one runs share the next run, as local ones do).
async fn answer_handoffs(bus: crate::ledger::bus::Bus, db: Db, trigger: Trigger) -> String {
    use crate::ledger::bus::BusEvent;
    let mut notes = bus.subscribe();
    // Requests asked in the last minute, before this process led.
    let since = crate::clock::system().now_ms() - 60_000;
    let mut pending: Vec<i64> = db
        .read(move |l| l.pending_reconciles(since))
        .await
        .unwrap_or_default();
    loop {
        if pending.is_empty() {
            match notes.recv().await {
                Ok(e) => {
                    if let BusEvent::Note(n) = &*e
                        && n.kind == "reconcile"
                        && let Ok(id) = n.id.parse()
                    {
                        pending.push(id);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    pending = db
                        .read(move |l| l.pending_reconciles(since))
                        .await
                        .unwrap_or_default();
                }
                Err(_) => return "the farm's bus closed".to_owned(),
            }
            continue;
        }
        let result = trigger.run_now().await;
        let text = match crate::api::reconcile_body(&result) {
            Ok(v) => v.to_string(),
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        };
        let now = crate::clock::system().now_ms();
        for id in std::mem::take(&mut pending) {
            let t = text.clone();
            if let Err(e) = db.write(move |l| l.answer_reconcile(id, &t, now)).await {
                tracing::warn!(error = %e, "cannot answer a handed-over reconcile");
            }
        }
    }
}

/// The leader's loop that fails the jobs of runners whose lease ran out.
async fn expire_leases(runner: Runner) -> String {
    let every = runner.lease().map_or(Duration::from_secs(10), |l| {
        (l / 3).max(Duration::from_secs(1))
    });
    loop {
        if let Err(e) = runner.expire_leases().await {
            tracing::warn!(error = %e, "cannot check the runners' leases");
        }
        tokio::time::sleep(every).await;
    }
}

/// Registers the process's runner name in a shared ledger: refused while another
/// live process holds it.
pub async fn register(
    runner: &Runner,
    kind: &str,
    workers: usize,
    clock: &SharedClock,
) -> Result<(), FarmError> {
    let host = host_name();
    let pid = std::process::id();
    let pid_start = crate::runner::process::proc_info(pid as i32).map_or(0, |p| p.start_time);
    let now = clock.now_ms();
    let me = crate::ledger::RunnerRecord {
        name: runner.name().to_owned(),
        kind: kind.to_owned(),
        host: host.clone(),
        pid: i64::from(pid),
        pid_start: pid_start as i64,
        workers: workers as i64,
        started_at: now,
        lease_until: now + runner.lease().map_or(0, |l| l.as_millis() as i64),
        stopped_at: None,
    };
    let held = runner
        .db()
        .write(move |l| {
            l.register_runner(&me, now, &|h| {
                // A holder on this host whose process is gone (or is another
                // process now) is a previous run of this runner.
                h.host == host
                    && crate::runner::process::proc_info(h.pid as i32)
                        .is_none_or(|p| p.start_time as i64 != h.pid_start)
            })
        })
        .await
        .map_err(|e| FarmError::Startup(format!("runner registration: {e}")))?;
    match held {
        None => Ok(()),
        Some(h) => Err(FarmError::Startup(format!(
            "CRAFTING_RUNNER_NAME: the name `{}` is held by a live process ({} pid {} on {}, lease until {}): give each runner its own name",
            h.name,
            h.kind,
            h.pid,
            h.host,
            crate::api::rfc3339(h.lease_until)
        ))),
    }
}

impl Farm {
    /// Opens the ledger, sweeps what a crash left, binds the API and starts every
    /// part. Returns once the API accepts connections.
    pub async fn start(mut cfg: Config, opts: FarmOptions) -> Result<Farm, FarmError> {
        let startup =
            |what: &str, e: &dyn std::fmt::Display| FarmError::Startup(format!("{what}: {e}"));
        cfg.data_dir = absolute(&cfg.data_dir);
        cfg.workspace_dir = absolute(&cfg.workspace_dir);
        for (dir, what) in [
            (cfg.data_dir.clone(), "data directory"),
            (cfg.logs_dir(), "logs directory"),
            (cfg.workspace_dir.clone(), "workspace"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| startup(&format!("cannot create {what} {}", dir.display()), &e))?;
        }
        let clock = opts.clock.clone();
        let location = cfg.ledger.clone();
        let db = tokio::task::spawn_blocking(move || match location {
            crate::config::LedgerLocation::Sqlite(path) => Db::open(&path, READERS),
            crate::config::LedgerLocation::Postgres(url) => Db::open_postgres(&url, READERS),
        })
        .await
        .map_err(|e| startup("ledger", &e))?
        .map_err(|e| startup("ledger", &e))?;
        let (bearer_path, now) = (cfg.admin_bearer_path(), clock.now_ms());
        let admin_minted = db
            .write(move |l| Ok(crate::api::ensure_admin_token(l, &bearer_path, now)))
            .await
            .map_err(|e| startup("admin token", &e))?
            .map_err(|e| startup("admin token", &e))?;
        let registry = Registry::from_config(&cfg);

        // The watcher starts before the first reconcile: a change made while that
        // runs (or right after) still triggers the next one.
        let (trigger, requests) = Trigger::new();
        let watcher = match &cfg.registry {
            RegistrySource::Dir(d) => {
                Some(watch_dir(d, trigger.clone()).map_err(|e| startup("registry watcher", &e))?)
            }
            RegistrySource::Git(_) => None,
        };

        let events = Events::new();
        let (runner, sandbox_words) = build_runner(&cfg, &db, clock.clone(), &events, &opts)?;
        let ledger_url = match &cfg.ledger {
            crate::config::LedgerLocation::Postgres(url) => Some(url.clone()),
            crate::config::LedgerLocation::Sqlite(_) => None,
        };
        if ledger_url.is_some() && cfg.workers > 0 {
            register(&runner, "serve", cfg.workers, &clock).await?;
        }
        let swept = runner
            .sweep()
            .await
            .map_err(|e| startup("restart sweep", &e))?;
        if swept > 0 {
            tracing::warn!(
                jobs = swept,
                "jobs left running by a previous process were failed (exit -1)"
            );
        }
        clean_leftovers(&runner).await;
        crate::findings::install(&runner);
        let patcher = match &cfg.patcher {
            None => {
                tracing::info!(
                    "patch loop off: set {} to turn it on",
                    cfg.patcher_missing.join(", ")
                );
                None
            }
            Some(pc) => {
                let p = crate::patcher::Patcher::new(pc.clone(), runner.clone(), cfg.git_timeout())
                    .map_err(|e| startup("patch loop", &e))?;
                tracing::info!("{}", p.describe());
                let swept = p.sweep().await.map_err(|e| startup("patch sweep", &e))?;
                if swept > 0 {
                    tracing::warn!(
                        attempts = swept,
                        "patch attempts left running by a previous process were ended (error)"
                    );
                }
                Some(p)
            }
        };

        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .map_err(|e| startup(&format!("cannot listen on {}", cfg.bind), &e))?;
        let addr = listener.local_addr().map_err(|e| startup("listener", &e))?;

        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let mailer = match &cfg.smtp {
            None => {
                tracing::info!(
                    "digest disabled — CRAFTING_SMTP_HOST not set (dry runs still work)"
                );
                None
            }
            Some(smtp) => Some(Mailer::new(smtp).map_err(|e| startup("smtp", &e))?),
        };
        let digests = Digests::new(
            db.clone(),
            clock.clone(),
            DigestSettings {
                default_time: cfg.digest_time.clone(),
                default_zone: cfg.digest_timezone.clone(),
                public_url: public_url.clone(),
                smtp_enabled: mailer.is_some(),
            },
            mailer,
        );

        // With PostgreSQL: the bus to the other processes, and the election.
        let bus = match &ledger_url {
            None => None,
            Some(url) => {
                let name = cfg.runner_name.clone().unwrap_or_else(|| {
                    format!("serve on {} pid {}", host_name(), std::process::id())
                });
                Some(
                    crate::ledger::bus::Bus::start(url, Some(name), Duration::from_secs(1))
                        .await
                        .map_err(|e| startup("the farm's bus", &e))?,
                )
            }
        };
        let metrics = Arc::new(Metrics::default());
        let config = Arc::new(cfg);
        let state = AppState {
            bus: bus.clone(),
            db: db.clone(),
            config: config.clone(),
            runner: runner.clone(),
            events: events.clone(),
            digests: digests.clone(),
            patcher: patcher.clone(),
            clock: clock.clone(),
            reconcile: trigger.clone(),
            started: Instant::now(),
            metrics: metrics.clone(),
            logs: if ledger_url.is_some() {
                crate::logfile::LogStore::Ledger(db.clone())
            } else {
                crate::logfile::LogStore::Files(config.logs_dir())
            },
        };

        let mut tasks: Vec<(&'static str, JoinHandle<String>)> = Vec::new();
        tasks.push(("runner", tokio::spawn(dispatch(runner.clone()))));
        let retention = crate::gc::Retention {
            days: config.retain_days,
            runs: config.retain_runs,
        };
        tasks.push((
            "gc",
            tokio::spawn(crate::gc::run(
                runner.clone(),
                ledger_url.is_none().then_some(retention),
                Duration::from_secs(config.warm_idle_secs),
            )),
        ));
        // The loops that run once per farm: in the process that leads it (with
        // PostgreSQL, the one holding the leader's lock; with SQLite, this one).
        let lead = {
            let (db, events, runner, config, metrics, trigger, digests, patcher) = (
                db.clone(),
                events.clone(),
                runner.clone(),
                config.clone(),
                metrics.clone(),
                trigger.clone(),
                digests.clone(),
                patcher.clone(),
            );
            let secrets = opts.secrets.clone();
            let registry = registry.clone();
            let shared = ledger_url.is_some();
            let lead_bus = bus.clone();
            move || {
                let mut tasks: Vec<(&'static str, JoinHandle<String>)> = Vec::new();
                let schedule_wake = Arc::new(Notify::new());
                tasks.push(("reconciler", {
                    let parts = LoopParts {
                        registry: registry.clone(),
                        db: db.clone(),
                        clock: clock.clone(),
                        poll: Duration::from_secs(config.registry_poll_secs),
                    };
                    let (ok_metrics, failed_metrics) = (metrics.clone(), metrics.clone());
                    let (wake, trigger) = (schedule_wake.clone(), trigger.clone());
                    tokio::spawn(async move {
                        looped::run(
                            parts,
                            trigger,
                            requests,
                            move |o: &Outcome| {
                                ok_metrics.reconciles_ok.fetch_add(1, Ordering::Relaxed);
                                ok_metrics
                                    .last_reconcile_us
                                    .store(o.duration.as_micros() as u64, Ordering::Relaxed);
                                ok_metrics
                                    .manifest_errors
                                    .store(o.error_count() as u64, Ordering::Relaxed);
                                wake.notify_one();
                            },
                            move |_| {
                                failed_metrics
                                    .reconciles_failed
                                    .fetch_add(1, Ordering::Relaxed);
                            },
                        )
                        .await;
                        "the reconcile loop ended".to_owned()
                    })
                }));
                tasks.push(("scheduler", {
                    let (runner, wake) = (runner.clone(), schedule_wake.clone());
                    tokio::spawn(async move { crate::scheduler::run(runner, wake).await })
                }));
                tasks.push(("digest", tokio::spawn(digests.clone().run_fires())));
                if let Some(p) = &patcher {
                    tasks.push(("patcher", tokio::spawn(p.clone().run_auto())));
                }
                tasks.push(("mailer", tokio::spawn(digests.clone().run_sender())));
                tasks.push((
                    "webhooks",
                    tokio::spawn(crate::notify::webhook::run(
                        db.clone(),
                        events.clone(),
                        secrets.clone(),
                        public_url,
                    )),
                ));
                if let Some(b) = &lead_bus {
                    tasks.push((
                        "handoff",
                        tokio::spawn(answer_handoffs(b.clone(), db.clone(), trigger.clone())),
                    ));
                }
                if shared {
                    tasks.push(("leases", tokio::spawn(expire_leases(runner.clone()))));
                    tasks.push((
                        "retention",
                        tokio::spawn(crate::gc::retain(runner.clone(), retention)),
                    ));
                }
                tasks
            }
        };
        match bus.clone() {
            None => tasks.extend(lead()),
            Some(b) => {
                tasks.push(("bus", tokio::spawn(bridge(b.clone(), runner.clone()))));
                tasks.push(("leader", tokio::spawn(lead_when_elected(b, lead))));
                if config.workers > 0 {
                    let r = runner.clone();
                    tasks.push(("leases", tokio::spawn(async move { r.keep_leases().await })));
                }
            }
        }
        let shutdown = Arc::new(Notify::new());
        tasks.push(("api", {
            let s = shutdown.clone();
            tokio::spawn(async move {
                match crate::api::serve(listener, state, async move { s.notified().await }).await {
                    Ok(()) => "the HTTP server stopped".to_owned(),
                    Err(e) => format!("the HTTP server failed: {e}"),
                }
            })
        }));

        Ok(Farm {
            bus,
            sandbox: sandbox_words,
            addr,
            config,
            db,
            runner,
            events,
            digests,
            reconcile: trigger,
            metrics,
            registry,
            admin_minted,
            swept,
            tasks,
            shutdown,
            _watcher: watcher,
        })
    }

    /// Waits up to `within` for a reconcile to finish (the first one, right after
    /// start) and returns its outcome, or `None` if it is still running.
    pub async fn reconciled(&self, within: Duration) -> Option<RunResult> {
        tokio::time::timeout(within, self.reconcile.run_now())
            .await
            .ok()
    }

    /// Resolves when a part stops (which it never should): names it and why.
    pub async fn stopped(&mut self) -> FarmError {
        first_stopped(&mut self.tasks).await
    }

    /// Stops the farm: running jobs are cancelled (and recorded), the API drains,
    /// every part ends.
    pub async fn stop(self, reason: &str) {
        self.runner.shutdown(reason).await;
        release_name(&self.runner).await;
        self.shutdown.notify_waiters();
        for (part, h) in self.tasks {
            if part == "api" && !h.is_finished() {
                // Let the server finish the responses it is writing.
                let abort = h.abort_handle();
                if tokio::time::timeout(Duration::from_secs(5), h)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            } else {
                h.abort();
            }
        }
    }
}
