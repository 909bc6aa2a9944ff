//! `crafting-table serve`: the API, the registry watcher and reconcile loop, the
//! scheduler, the runner pool and gc in one process.
//!
//! If any part stops, the process logs which and why and exits non-zero: there is
//! no half-alive farm. SIGINT/SIGTERM stop it cleanly: running jobs are cancelled
//! (and recorded as such), then the server drains.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::farm::{Farm, FarmOptions};
use crate::manifest::Kind;
use crate::reconciler::Outcome;
use crate::registry::Registry;

pub use crate::farm::{FarmError as ServeError, KILL_GRACE};

/// How long the banner waits for the first reconcile before saying it goes on in
/// the background.
const BANNER_WAIT: Duration = Duration::from_secs(3);

/// Runs the farm until a signal (Ok) or a part's failure (Err).
pub async fn run(cfg: Config) -> Result<(), ServeError> {
    let mut farm = Farm::start(cfg, FarmOptions::for_this_binary()).await?;
    if farm.swept > 0 {
        tracing::warn!(
            jobs = farm.swept,
            "jobs left running by a previous process were failed (exit -1)"
        );
    }
    // The API already answers; the banner waits a moment for the first reconcile
    // so that its line can say what was applied.
    let first_line = match farm.reconciled(BANNER_WAIT).await {
        Some(Ok(o)) => {
            for d in o.diagnostics.iter() {
                tracing::warn!("{d}");
            }
            summary_line(&o)
        }
        Some(Err(e)) => format!(
            "not applied yet: {e} (retrying in the background; the last applied state stays in force)"
        ),
        None if farm.bus.as_ref().is_some_and(|b| !b.is_leader()) => {
            let leader = farm.db.read(|l| l.leader()).await.ok().flatten();
            format!(
                "reconciled by the farm's leader, {} (this serve stands by to take over)",
                leader.map_or_else(|| "not elected yet".to_owned(), |(n, _)| n)
            )
        }
        None => "still reading the registry (in the background; GET /registry shows progress)"
            .to_owned(),
    };
    // The quickstart's project when the registry has it, else the project list.
    let has_quickstart = farm
        .db
        .read(|l| l.get_project("crafting-table"))
        .await
        .ok()
        .flatten()
        .is_some_and(|o| o.retired_at.is_none());
    print_banner(
        &farm.config,
        has_quickstart,
        farm.addr,
        farm.admin_minted,
        &farm.registry,
        &first_line,
        &farm.sandbox,
    );

    let result = tokio::select! {
        () = signal() => Ok(()),
        e = farm.stopped() => Err(e),
    };
    match &result {
        Ok(()) => tracing::info!("signal received: stopping running jobs, then exiting"),
        Err(e) => tracing::error!("{e}; stopping the farm"),
    }
    farm.stop("farm shutting down").await;
    result
}

/// `crafting-table runner`: claims and runs jobs of a PostgreSQL ledger until a
/// signal (Ok) or a part's failure (Err).
pub async fn run_runner(cfg: Config) -> Result<(), ServeError> {
    let workers = cfg.workers;
    let mut p = crate::farm::RunnerProcess::start(cfg, FarmOptions::for_this_binary()).await?;
    tracing::info!(
        name = %p.runner.name(),
        workers,
        swept = p.swept,
        sandbox = %p.sandbox,
        "runner started: claiming queued jobs"
    );
    println!(
        "crafting-table runner {} · {} workers · sandbox {}",
        p.runner.name(),
        workers,
        p.sandbox
    );
    let result = tokio::select! {
        () = signal() => Ok(()),
        e = p.stopped() => Err(e),
    };
    match &result {
        Ok(()) => tracing::info!("signal received: stopping running jobs, then exiting"),
        Err(e) => tracing::error!("{e}; stopping the runner"),
    }
    p.stop("runner shutting down").await;
    result
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
    has_quickstart: bool,
    addr: std::net::SocketAddr,
    minted: bool,
    registry: &Registry,
    first: &str,
    sandbox: &str,
) {
    let data_dir: &Path = &cfg.data_dir;
    let bearer = cfg.admin_bearer_path();
    // Bound to every address (0.0.0.0, as in the image): say one that answers here.
    let mut local = addr;
    if addr.ip().is_unspecified() {
        local.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{local}");
    let rel_bearer = cfg.admin_bearer_path();
    println!("crafting-table {} is running", env!("CARGO_PKG_VERSION"));
    println!("  api       {url}   (openapi: {url}/openapi.json)");
    println!("  pages     {url}/ui/   (log in with a bearer token)");
    if cfg.workspace_dir.starts_with(data_dir) {
        println!(
            "  data      {}  (ledger.sqlite3, logs/, workspace/)",
            data_dir.display()
        );
    } else {
        println!(
            "  data      {}  (ledger.sqlite3, logs/)",
            data_dir.display()
        );
        println!("  workspace {}", cfg.workspace_dir.display());
    }
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
    println!("  sandbox   {sandbox}");
    if has_quickstart {
        println!(
            "  try       curl -s -X POST {url}/projects/crafting-table/jobs -H \"Authorization: Bearer $(cat {})\" -H 'content-type: application/json' -d '{{\"recipe\":\"lint\"}}'",
            rel_bearer.display()
        );
    } else {
        println!(
            "  try       curl -s {url}/projects -H \"Authorization: Bearer $(cat {})\"",
            rel_bearer.display()
        );
    }
}
