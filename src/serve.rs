//! `crafting-table serve`: the API, the registry watcher and reconcile loop, the
//! scheduler, the runner pool and gc in one process.
//!
//! If any part stops, the process logs which and why and exits non-zero: there is
//! no half-alive farm. SIGINT/SIGTERM stop it cleanly: running jobs are cancelled
//! (and recorded as such), then the server drains.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::api::{AppState, Metrics};
use crate::config::{Config, RegistrySource};
use crate::ledger::Ledger;
use crate::manifest::Kind;
use crate::reconciler::looped::{self, Trigger};
use crate::reconciler::{Outcome, reconcile_once};
use crate::registry::Registry;
use crate::runner::{Runner, RunnerConfig, SharedLedger, with_ledger};
use crate::workspace::Workspace;

/// Grace between SIGTERM and SIGKILL for job process groups.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Runs the farm until a signal (Ok) or a part's failure (Err).
pub async fn run(cfg: Config) -> Result<(), ServeError> {
    let startup =
        |what: &str, e: &dyn std::fmt::Display| ServeError::Startup(format!("{what}: {e}"));
    let data_dir = absolute(&cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| startup(&format!("cannot create {}", data_dir.display()), &e))?;
    std::fs::create_dir_all(cfg.logs_dir())
        .map_err(|e| startup("cannot create logs directory", &e))?;
    std::fs::create_dir_all(&cfg.workspace_dir)
        .map_err(|e| startup("cannot create workspace", &e))?;
    let ledger = Ledger::open(&cfg.ledger_path()).map_err(|e| startup("ledger", &e))?;
    let minted = crate::api::ensure_admin_token(&ledger, &cfg.admin_bearer_path())
        .map_err(|e| startup("admin token", &e))?;
    let ledger: SharedLedger = Arc::new(Mutex::new(ledger));
    let registry = Registry::from_config(&cfg);
    let registry_base = match &cfg.registry {
        RegistrySource::Dir(d) => absolute(d),
        RegistrySource::Git(_) => data_dir.clone(),
    };

    // The watcher starts before the first reconcile: a change made while that runs
    // (or right after) still triggers the next one.
    let (trigger, trigger_rx) = Trigger::new();
    let watcher = match &cfg.registry {
        RegistrySource::Dir(d) => {
            Some(watch_dir(d, trigger.clone()).map_err(|e| startup("registry watcher", &e))?)
        }
        RegistrySource::Git(_) => None,
    };

    // First reconcile before anything runs, so the first jobs see the registry.
    let reg = registry.clone();
    let first = with_ledger(&ledger, move |l| {
        Ok(reconcile_once(
            &reg,
            l,
            chrono::Utc::now().timestamp_millis(),
        ))
    })
    .await;
    let first_line = match first {
        Ok(Ok(o)) => {
            for d in o.diagnostics.iter() {
                tracing::warn!("{d}");
            }
            summary_line(&o)
        }
        Ok(Err(e)) => format!(
            "not applied yet: {e} (retrying in the background; the last applied state stays in force)"
        ),
        Err(e) => return Err(startup("ledger", &e)),
    };

    let runner = Runner::new(
        RunnerConfig {
            workers: cfg.workers,
            logs_dir: cfg.logs_dir(),
            log_cap: cfg.log_cap_bytes,
            kill_grace: KILL_GRACE,
            registry_base,
        },
        ledger.clone(),
        Workspace::new(absolute(&cfg.workspace_dir)),
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
    crate::findings::install(&runner, ledger.clone());

    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| startup(&format!("cannot listen on {}", cfg.bind), &e))?;
    let addr = listener.local_addr().map_err(|e| startup("listener", &e))?;

    let metrics = Arc::new(Metrics::default());
    let cfg = Arc::new(cfg);
    let readers = crate::api::Readers::open(&cfg.ledger_path(), 4)
        .map_err(|e| startup("ledger readers", &e))?;
    let state = AppState {
        ledger: ledger.clone(),
        readers,
        config: cfg.clone(),
        runner: runner.clone(),
        reconcile: trigger.clone(),
        started: Instant::now(),
        metrics: metrics.clone(),
    };

    print_banner(&cfg, &data_dir, addr, minted, &registry, &first_line);

    // Parts of the farm.
    let schedule_wake = Arc::new(Notify::new());
    let reconcile_task = {
        let (ledger, metrics, wake) = (ledger.clone(), metrics.clone(), schedule_wake.clone());
        let registry = registry.clone();
        let poll = Duration::from_secs(cfg.registry_poll_secs);
        tokio::spawn(async move {
            looped::run(registry, ledger, trigger_rx, poll, move |o: &Outcome| {
                metrics.reconciles_ok.fetch_add(1, Ordering::Relaxed);
                metrics
                    .last_reconcile_us
                    .store(o.duration.as_micros() as u64, Ordering::Relaxed);
                metrics
                    .manifest_errors
                    .store(o.error_count() as u64, Ordering::Relaxed);
                wake.notify_one();
            })
            .await;
            "the reconcile loop ended".to_owned()
        })
    };
    let scheduler_task = {
        let (ledger, runner, wake) = (ledger.clone(), runner.clone(), schedule_wake.clone());
        tokio::spawn(async move { scheduler_loop(ledger, runner, wake).await })
    };
    let runner_task = {
        let r = runner.clone();
        tokio::spawn(async move {
            match r.run().await {
                Ok(()) => "the runner stopped".to_owned(),
                Err(e) => format!("the runner failed: {e}"),
            }
        })
    };
    let gc_task = {
        let r = runner.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let ws = r.workspace().clone();
                let active = r.running_ids();
                let (removed, collected) = tokio::task::spawn_blocking(move || {
                    ws.gc(
                        &active,
                        Duration::from_secs(24 * 3600),
                        Duration::from_secs(7 * 24 * 3600),
                    )
                })
                .await
                .unwrap_or((0, 0));
                if removed + collected > 0 {
                    tracing::info!(removed, collected, "workspace gc");
                }
            }
        })
    };
    let shutdown = Arc::new(Notify::new());
    let server_task = {
        let s = shutdown.clone();
        tokio::spawn(async move {
            match crate::api::serve(listener, state, async move { s.notified().await }).await {
                Ok(()) => "the HTTP server stopped".to_owned(),
                Err(e) => format!("the HTTP server failed: {e}"),
            }
        })
    };

    let result = tokio::select! {
        () = signal() => Ok(()),
        r = reconcile_task => Err(died("reconciler", r)),
        r = scheduler_task => Err(died("scheduler", r)),
        r = runner_task => Err(died("runner", r)),
        r = gc_task => Err(died("gc", r.map(|()| "gc ended".to_owned()))),
        r = server_task => Err(died("api", r)),
    };
    match &result {
        Ok(()) => tracing::info!("signal received: stopping running jobs, then exiting"),
        Err(e) => tracing::error!("{e}; stopping the farm"),
    }
    runner.shutdown("farm shutting down").await;
    shutdown.notify_waiters();
    drop(watcher);
    result
}

fn died(part: &'static str, r: Result<String, tokio::task::JoinError>) -> ServeError {
    ServeError::PartDied {
        part,
        why: match r {
            Ok(why) => why,
            Err(e) if e.is_panic() => "it panicked (see the log above)".to_owned(),
            Err(e) => e.to_string(),
        },
    }
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn summary_line(o: &Outcome) -> String {
    let counts: Vec<String> = Kind::ALL
        .iter()
        .filter_map(|k| {
            o.counts
                .get(k)
                .filter(|n| **n > 0)
                .map(|n| format!("{n} {k}"))
        })
        .collect();
    let total: usize = o.counts.values().sum();
    format!(
        "revision {} applied: {total} objects ({}), {} manifest error(s)",
        o.revision,
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        },
        o.error_count()
    )
}

fn print_banner(
    cfg: &Config,
    data_dir: &Path,
    addr: std::net::SocketAddr,
    minted: bool,
    registry: &Registry,
    first: &str,
) {
    let bearer = absolute(&cfg.admin_bearer_path());
    let url = format!("http://{addr}");
    let rel_bearer = cfg.admin_bearer_path();
    println!("crafting-table {} is running", env!("CARGO_PKG_VERSION"));
    println!("  api       {url}   (openapi: {url}/openapi.json)");
    println!(
        "  data      {}  (ledger.sqlite3, logs/, workspace/)",
        data_dir.display()
    );
    println!(
        "  bearer    {}{}",
        bearer.display(),
        if minted {
            "  (admin token created now)"
        } else {
            ""
        }
    );
    println!("  registry  {}  {first}", registry.describe());
    println!(
        "  try       curl -s -X POST {url}/projects/crafting-table/jobs -H \"Authorization: Bearer $(cat {})\" -H 'content-type: application/json' -d '{{\"recipe\":\"lint\"}}'",
        rel_bearer.display()
    );
}

/// Watches a registry directory and kicks a reconcile after changes settle.
fn watch_dir(dir: &Path, trigger: Trigger) -> Result<impl Drop + use<>, String> {
    use notify::RecursiveMode;
    use notify_debouncer_full::new_debouncer;
    let mut debouncer = new_debouncer(
        Duration::from_millis(300),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| match res {
            Ok(events) if !events.is_empty() => trigger.kick(),
            Ok(_) => {}
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "registry watcher");
                }
            }
        },
    )
    .map_err(|e| e.to_string())?;
    debouncer
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(debouncer)
}

/// Fires due schedules; sleeps until the next fire, a reconcile, or a minute.
async fn scheduler_loop(ledger: SharedLedger, runner: Runner, wake: Arc<Notify>) -> String {
    loop {
        let report = with_ledger(&ledger, |l| crate::scheduler::tick(l, chrono::Utc::now())).await;
        let sleep = match report {
            Ok(r) => {
                if r.fired.iter().any(|f| !f.jobs.is_empty()) {
                    runner.wake();
                }
                for id in &r.cancel_running {
                    let _ = runner
                        .cancel(id, "replaced by a newer fire of its schedule")
                        .await;
                }
                let now = chrono::Utc::now().timestamp_millis();
                r.next_wake
                    .map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)))
                    .unwrap_or(Duration::from_secs(60))
                    .clamp(Duration::from_millis(200), Duration::from_secs(60))
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduler tick failed; retrying");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
        }
    }
}
