//! Garbage collection, once an hour: stale worktrees (not of a running job, older
//! than a day) are removed, mirrors idle for a week are `git gc`-ed, and retention
//! prunes old runs: their logs and findings go, their job rows stay (`pruned_at`).

use std::time::Duration;

use crate::ledger::LedgerError;
use crate::runner::Runner;

/// How often gc runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// How long runs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Runs older than this are pruned…
    pub days: u64,
    /// …and so are runs beyond the latest this many of their command.
    pub runs: u64,
}

/// What retention did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Whether anything was changed.
    pub dry_run: bool,
    /// Runs pruned.
    pub pruned: Vec<String>,
    /// Bytes of logs removed.
    pub log_bytes: u64,
    /// Runs kept because their findings changed.
    pub kept_changed: usize,
    /// Runs kept because a patch attempt refers to them.
    pub kept_for_patches: usize,
}

/// Applies the retention rule (see [`crate::ledger::Ledger::prune_plan`]).
pub async fn prune(
    runner: &Runner,
    retention: Retention,
    dry_run: bool,
) -> Result<PruneReport, LedgerError> {
    let now = runner.clock().now_ms();
    let plan = runner
        .db()
        .read(move |l| l.prune_plan(now, retention.days, retention.runs))
        .await?;
    let mut report = PruneReport {
        dry_run,
        pruned: plan.prune.iter().map(|p| p.job_id.clone()).collect(),
        log_bytes: 0,
        kept_changed: plan.kept_changed,
        kept_for_patches: plan.kept_for_patches,
    };
    let logs: Vec<String> = plan
        .prune
        .iter()
        .filter_map(|p| p.log_path.clone())
        .collect();
    report.log_bytes = logs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if dry_run || report.pruned.is_empty() {
        return Ok(report);
    }
    let ids = report.pruned.clone();
    runner.db().write(move |l| l.prune_runs(&ids, now)).await?;
    // After the commit: a crash between the two leaves files that the next run
    // removes (they belong to pruned runs).
    let leftovers = runner.db().read(|l| l.pruned_logs()).await?;
    tokio::task::spawn_blocking(move || {
        for p in logs.iter().chain(leftovers.iter()) {
            let _ = std::fs::remove_file(p);
        }
    })
    .await
    .ok();
    tracing::info!(
        runs = report.pruned.len(),
        log_bytes = report.log_bytes,
        "retention pruned old runs"
    );
    Ok(report)
}

/// Runs gc every [`INTERVAL`], and the warm-worktree sweep every quarter of
/// `warm_idle` (between 1 s and 5 min), forever. Retention runs with it when given
/// (a process that shares its ledger leaves it to the leader: [`retain`]).
pub async fn run(runner: Runner, retention: Option<Retention>, warm_idle: Duration) -> String {
    let start = tokio::time::Instant::now();
    let mut full = tokio::time::interval_at(start + INTERVAL, INTERVAL);
    let warm_every = (warm_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
    let mut warm = tokio::time::interval_at(start + warm_every, warm_every);
    warm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = full.tick() => {}
            _ = warm.tick() => {
                let ws = runner.workspace().clone();
                let removed = tokio::task::spawn_blocking(move || ws.gc_warm(warm_idle))
                    .await
                    .unwrap_or(0);
                if removed > 0 {
                    tracing::info!(removed, "idle warm worktrees removed");
                }
                runner.trim_sandboxes(warm_idle);
                continue;
            }
        }
        let ws = runner.workspace().clone();
        let active = runner.running_ids();
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
        if let Some(retention) = retention
            && let Err(e) = prune(&runner, retention, false).await
        {
            tracing::error!(error = %e, "retention failed; retrying at the next gc");
        }
    }
}

/// Retention alone, every [`INTERVAL`]: the leader's loop in a farm of several
/// processes.
pub async fn retain(runner: Runner, retention: Retention) -> String {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    loop {
        every.tick().await;
        if let Err(e) = prune(&runner, retention, false).await {
            tracing::error!(error = %e, "retention failed; retrying at the next gc");
        }
    }
}

/// Bytes of the files in `dir` (the job logs), for `/metrics`.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
