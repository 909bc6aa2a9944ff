//! The reconcile loop of `serve`: one task that reconciles when asked (file event,
//! webhook, API call) or when the last outcome says to look again. Requests that
//! arrive while a reconcile runs are answered by the next one: concurrent triggers
//! coalesce into one run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Next, Outcome, ReconcileError, backoff, reconcile_once};
use crate::registry::Registry;
use crate::runner::{SharedLedger, with_ledger};

/// The result a waiting caller receives.
pub type RunResult = Result<Arc<Outcome>, String>;

/// Asks the loop to reconcile.
#[derive(Clone, Debug)]
pub struct Trigger {
    tx: mpsc::UnboundedSender<Option<oneshot::Sender<RunResult>>>,
}

impl Trigger {
    /// A trigger and the receiving end for [`run`].
    pub fn new() -> (
        Trigger,
        mpsc::UnboundedReceiver<Option<oneshot::Sender<RunResult>>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Trigger { tx }, rx)
    }

    /// Requests a reconcile without waiting for it.
    pub fn kick(&self) {
        let _ = self.tx.send(None);
    }

    /// Requests a reconcile and waits for its outcome.
    pub async fn run_now(&self) -> RunResult {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Some(tx))
            .map_err(|_| "the reconcile loop is not running".to_owned())?;
        rx.await
            .map_err(|_| "the reconcile loop stopped".to_owned())?
    }
}

/// Runs reconciles forever. `poll` is how long to wait between reconciles when
/// nothing asks (a git registry's poll interval), and also before the first one
/// (`serve` reconciles once itself before starting the loop); `on_applied` runs
/// after each successful one (the scheduler re-reads its schedules).
pub async fn run(
    registry: Registry,
    ledger: SharedLedger,
    mut rx: mpsc::UnboundedReceiver<Option<oneshot::Sender<RunResult>>>,
    poll: Duration,
    on_applied: impl Fn(&Outcome) + Send + Sync,
) {
    let mut failures: u32 = 0;
    let mut wait = poll;
    loop {
        let mut waiters = Vec::new();
        // Wait for a request or the timer; then take every request already queued.
        tokio::select! {
            msg = rx.recv() => match msg {
                None => return,
                Some(w) => waiters.extend(w),
            },
            () = tokio::time::sleep(wait) => {}
        }
        while let Ok(w) = rx.try_recv() {
            waiters.extend(w);
        }
        let reg = registry.clone();
        let result = with_ledger(&ledger, move |l| {
            Ok(reconcile_once(
                &reg,
                l,
                chrono::Utc::now().timestamp_millis(),
            ))
        })
        .await;
        let result: Result<Outcome, String> = match result {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(ReconcileError::Registry(e))) => Err(e.0),
            Ok(Err(ReconcileError::Ledger(e))) | Err(e) => Err(e.to_string()),
        };
        let next = match &result {
            Ok(o) => {
                failures = 0;
                if o.plan.has_changes() || o.error_count() > 0 {
                    tracing::info!(
                        revision = %o.revision,
                        created = o.plan.count(|a| matches!(a, super::Action::Create)),
                        updated = o.plan.count(|a| matches!(a, super::Action::Update(_))),
                        retired = o.plan.count(|a| matches!(a, super::Action::Retire)),
                        errors = o.error_count(),
                        "registry reconciled"
                    );
                }
                for d in o
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == crate::manifest::Severity::Error)
                {
                    tracing::warn!("{d}");
                }
                on_applied(o);
                Next::After(poll)
            }
            Err(e) => {
                failures += 1;
                let b = backoff(failures);
                tracing::warn!(error = %e, retry_in_secs = b.as_secs(), "registry reconcile failed; last applied state stays in force");
                Next::After(b.min(poll.max(Duration::from_secs(5))))
            }
        };
        let Next::After(d) = next;
        wait = d;
        let shared: RunResult = result.map(Arc::new);
        for w in waiters {
            let _ = w.send(shared.clone());
        }
    }
}
