//! The reconcile loop of the farm: one task that reconciles at start, when asked
//! (file event, webhook, API call) and when the last outcome says to look again.
//! Requests that arrive while a reconcile runs are answered by the next one:
//! concurrent triggers coalesce into one run. The fetch never holds the ledger
//! ([`super::reconcile`]), and [`Trigger::in_progress`] tells whether one runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Next, Outcome, ReconcileError, backoff, reconcile};
use crate::clock::SharedClock;
use crate::ledger::Db;
use crate::registry::Registry;

/// The result a waiting caller receives.
pub type RunResult = Result<Arc<Outcome>, String>;

type Request = Option<oneshot::Sender<RunResult>>;

/// The receiving end of a [`Trigger`], for [`run`].
pub type Requests = mpsc::UnboundedReceiver<Request>;

/// Asks the loop to reconcile, and tells whether it is reconciling.
#[derive(Clone, Debug)]
pub struct Trigger {
    tx: mpsc::UnboundedSender<Request>,
    in_progress: Arc<AtomicBool>,
}

impl Trigger {
    /// A trigger and the receiving end for [`run`].
    pub fn new() -> (Trigger, Requests) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Trigger {
                tx,
                in_progress: Arc::default(),
            },
            rx,
        )
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

    /// Whether a reconcile (fetch or apply) is running now.
    pub fn in_progress(&self) -> bool {
        self.in_progress.load(Ordering::SeqCst)
    }
}

/// What the loop needs.
pub struct LoopParts {
    /// The registry to read.
    pub registry: Registry,
    /// The ledger.
    pub db: Db,
    /// The clock that stamps the registry status.
    pub clock: SharedClock,
    /// How long to wait between reconciles when nothing asks.
    pub poll: Duration,
}

/// Runs reconciles forever: the first at once, then on requests, or after `poll`
/// (after a failure, after a backoff of at most `poll`). `on_applied` runs after
/// each successful one (metrics, the scheduler re-reading its schedules);
/// `on_failed` after each failed one.
pub async fn run(
    parts: LoopParts,
    trigger: Trigger,
    mut rx: Requests,
    on_applied: impl Fn(&Outcome) + Send + Sync,
    on_failed: impl Fn(&str) + Send + Sync,
) {
    let LoopParts {
        registry,
        db,
        clock,
        poll,
    } = parts;
    let mut failures: u32 = 0;
    let mut wait = Duration::ZERO;
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
        trigger.in_progress.store(true, Ordering::SeqCst);
        let result = reconcile(&registry, &db, &clock).await;
        trigger.in_progress.store(false, Ordering::SeqCst);
        let result: Result<Outcome, String> = match result {
            Ok(o) => Ok(o),
            Err(ReconcileError::Registry(e)) => Err(e.0),
            Err(ReconcileError::Ledger(e)) => Err(e.to_string()),
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
                on_failed(e);
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
