//! The workspace garbage collector's loop: once an hour, stale worktrees (not of a
//! running job, older than a day) are removed and mirrors idle for a week are
//! `git gc`-ed.

use std::time::Duration;

use crate::runner::Runner;

/// How often gc runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Runs gc every [`INTERVAL`], forever.
pub async fn run(runner: Runner) -> String {
    loop {
        tokio::time::sleep(INTERVAL).await;
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
    }
}
