//! Farm events: one broadcast channel that says what happened, after it was
//! committed to the ledger.
//!
//! The runner publishes a job's `Queued`, `Started` and `Finished`; the patch loop
//! publishes the end of each attempt (a pull request opened, or why not). Notifications, the patch loop, log followers
//! and tests subscribe instead of polling the ledger. A subscriber that falls more
//! than [`CAPACITY`] events behind is told how many it missed
//! ([`tokio::sync::broadcast::error::RecvError::Lagged`]) and should re-read the
//! ledger: the ledger is the truth, events are the wake-up.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::ledger::{Job, JobStatus};

/// Events kept for a slow subscriber before it is told it lagged.
pub const CAPACITY: usize = 1024;

/// Findings of a finished job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FindingCounts {
    /// Findings of the run.
    pub total: i64,
    /// Of those, not in the previous run of the same command.
    pub new: i64,
    /// Findings of the previous run that are gone.
    pub fixed: i64,
}

/// Something that happened in the farm.
#[derive(Debug, Clone, PartialEq)]
pub enum FarmEvent {
    /// A job was enqueued (not sent for a coalesced request).
    JobQueued {
        /// The job as stored.
        job: Job,
    },
    /// A worker claimed the job; its command is about to run.
    JobStarted {
        /// The job as stored.
        job: Job,
    },
    /// The job ended and its result and findings are stored.
    JobFinished {
        /// The job as stored at its end.
        job: Job,
        /// How it ended.
        status: JobStatus,
        /// The command's exit code, when it exited.
        exit_code: Option<i64>,
        /// Its findings.
        findings: FindingCounts,
    },
    /// The patch loop opened (or reused) a pull request for a finding.
    PullRequestOpened {
        /// The attempt.
        attempt: i64,
        /// Its project.
        project: String,
        /// The pull request's URL.
        url: String,
    },
    /// A patch attempt ended without a pull request.
    PatchEnded {
        /// The attempt.
        attempt: i64,
        /// Its project.
        project: String,
        /// Its final status.
        status: String,
    },
}

impl FarmEvent {
    /// The event of an ended patch attempt: its pull request, or its end.
    pub fn patch_ended(a: &crate::ledger::PatchAttempt) -> FarmEvent {
        match (&a.status[..], &a.pr_url) {
            ("pr_opened", Some(url)) => FarmEvent::PullRequestOpened {
                attempt: a.id,
                project: a.project.clone(),
                url: url.clone(),
            },
            _ => FarmEvent::PatchEnded {
                attempt: a.id,
                project: a.project.clone(),
                status: a.status.clone(),
            },
        }
    }

    /// The job the event is about, if it is about a job.
    pub fn job(&self) -> Option<&Job> {
        match self {
            FarmEvent::JobQueued { job }
            | FarmEvent::JobStarted { job }
            | FarmEvent::JobFinished { job, .. } => Some(job),
            FarmEvent::PullRequestOpened { .. } | FarmEvent::PatchEnded { .. } => None,
        }
    }
}

/// The farm's event channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<FarmEvent>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// A channel with no subscribers yet.
    pub fn new() -> Events {
        let (tx, _) = broadcast::channel(CAPACITY);
        Events { tx }
    }

    /// Publishes an event (after its change was committed). Nobody listening is
    /// fine.
    ///
    /// A job's event carries its row without the recipe snapshot (read the ledger
    /// for that): the channel keeps its last [`CAPACITY`] events until they are
    /// overwritten, and with every snapshot that would be megabytes held for good.
    pub fn publish(&self, mut event: FarmEvent) {
        if let FarmEvent::JobQueued { job }
        | FarmEvent::JobStarted { job }
        | FarmEvent::JobFinished { job, .. } = &mut event
        {
            job.recipe_snapshot = serde_json::Value::Null;
        }
        let _ = self.tx.send(Arc::new(event));
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FarmEvent>> {
        self.tx.subscribe()
    }
}
