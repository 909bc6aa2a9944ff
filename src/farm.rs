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
}

impl Default for FarmOptions {
    fn default() -> Self {
        FarmOptions {
            clock: clock::system(),
            kill_grace: KILL_GRACE,
            secrets: Arc::new(|name: &str| std::env::var(name).ok()),
        }
    }
}

impl std::fmt::Debug for FarmOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmOptions")
            .field("clock", &self.clock)
            .field("kill_grace", &self.kill_grace)
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
    tasks: Vec<(&'static str, JoinHandle<String>)>,
    shutdown: Arc<Notify>,
    _watcher: Option<Watcher>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
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
        let registry_base = match &cfg.registry {
            RegistrySource::Dir(d) => absolute(d),
            RegistrySource::Git(_) => cfg.data_dir.clone(),
        };

        // The watcher starts before the first reconcile: a change made while that
        // runs (or right after) still triggers the next one.
        let (trigger, requests) = Trigger::new();
        let watcher = match &cfg.registry {
            RegistrySource::Dir(d) => {
                Some(watch_dir(d, trigger.clone()).map_err(|e| startup("registry watcher", &e))?)
            }
            RegistrySource::Git(_) => None,
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
        let events = Events::new();
        let runner = Runner::new(
            RunnerConfig {
                workers: cfg.workers,
                logs_dir: cfg.logs_dir(),
                log_cap: cfg.log_cap_bytes,
                kill_grace: opts.kill_grace,
                registry_base,
                sandbox,
                secrets_file: Some(cfg.data_dir.join("secrets.toml")),
            },
            db.clone(),
            Workspace::new(cfg.workspace_dir.clone())
                .with_fetch_timeout(cfg.git_timeout())
                .with_credentials(git_credentials),
            clock.clone(),
            events.clone(),
        );
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

        let metrics = Arc::new(Metrics::default());
        let config = Arc::new(cfg);
        let state = AppState {
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
        };

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
        tasks.push(("runner", {
            let r = runner.clone();
            tokio::spawn(async move {
                match r.run().await {
                    Ok(()) => "the runner stopped".to_owned(),
                    Err(e) => format!("the runner failed: {e}"),
                }
            })
        }));
        tasks.push((
            "gc",
            tokio::spawn(crate::gc::run(
                runner.clone(),
                crate::gc::Retention {
                    days: config.retain_days,
                    runs: config.retain_runs,
                },
                Duration::from_secs(config.warm_idle_secs),
            )),
        ));
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
                opts.secrets.clone(),
                public_url,
            )),
        ));
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
        let handles = self.tasks.iter_mut().map(|(part, h)| {
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

    /// Stops the farm: running jobs are cancelled (and recorded), the API drains,
    /// every part ends.
    pub async fn stop(self, reason: &str) {
        self.runner.shutdown(reason).await;
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
