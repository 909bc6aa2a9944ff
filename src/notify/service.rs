//! The digest in the farm: one loop fires units when their time comes, another
//! sends pending digests, retrying transient failures with backoff (pending
//! digests survive restarts); run-now and the preview for the API.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::sync::{Mutex, Notify};

use super::content::DigestContent;
use super::digest::{self, DigestSettings, RunNowItem};
use super::mail::{Mailer, SendError};
use crate::clock::SharedClock;
use crate::ledger::{Db, DigestStatus, LedgerError, OutgoingDigest};

/// Longest wait between two send attempts of one digest.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Backoff after `attempts` failed attempts: 2 s doubling, at most [`MAX_BACKOFF`].
pub fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 20)).unwrap_or(20);
    Duration::from_secs(2u64.saturating_pow(exp)).min(MAX_BACKOFF)
}

/// The digest service; cheap to clone.
#[derive(Clone)]
pub struct Digests {
    db: Db,
    clock: SharedClock,
    settings: Arc<DigestSettings>,
    mailer: Option<Arc<Mailer>>,
    wake: Arc<Notify>,
    sending: Arc<Mutex<()>>,
}

impl Digests {
    /// A service over the ledger; `mailer` is `None` when no relay is configured.
    pub fn new(
        db: Db,
        clock: SharedClock,
        settings: DigestSettings,
        mailer: Option<Mailer>,
    ) -> Digests {
        Digests {
            db,
            clock,
            settings: Arc::new(settings),
            mailer: mailer.map(Arc::new),
            wake: Arc::default(),
            sending: Arc::default(),
        }
    }

    /// Whether messages are sent (an SMTP relay is configured).
    pub fn sending_enabled(&self) -> bool {
        self.mailer.is_some()
    }

    /// The settings.
    pub fn settings(&self) -> &DigestSettings {
        &self.settings
    }

    /// Fires units when their time comes; forever.
    pub async fn run_fires(self) -> String {
        loop {
            let (settings, now) = (self.settings.clone(), self.clock.now());
            let sleep = match self
                .db
                .write(move |l| digest::tick(l, &settings, now))
                .await
            {
                Ok(r) => {
                    if r.pending > 0 {
                        self.wake.notify_one();
                    }
                    let now = self.clock.now_ms();
                    r.next_wake
                        .map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)))
                        .unwrap_or(Duration::from_secs(60))
                        .clamp(Duration::from_millis(200), Duration::from_secs(60))
                }
                Err(e) => {
                    tracing::error!(error = %e, "digest tick failed; retrying");
                    Duration::from_secs(10)
                }
            };
            tokio::time::sleep(sleep).await;
        }
    }

    /// Sends pending digests as they come due; forever.
    pub async fn run_sender(self) -> String {
        loop {
            self.send_due().await;
            let next = self.db.read(|l| l.next_digest_attempt()).await;
            let now = self.clock.now_ms();
            let sleep = match next {
                Ok(Some(t)) => Duration::from_millis(u64::try_from(t - now).unwrap_or(0))
                    .clamp(Duration::from_millis(100), Duration::from_secs(60)),
                _ => Duration::from_secs(60),
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Sends every digest that is due now. Returns how many were accepted.
    pub async fn send_due(&self) -> usize {
        let Some(_) = &self.mailer else { return 0 };
        let now = self.clock.now_ms();
        let due = match self.db.read(move |l| l.due_digests(now, 50)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read pending digests");
                return 0;
            }
        };
        let mut sent = 0;
        for d in due {
            if self.send_one(d.row.id).await == Some(DigestStatus::Sent) {
                sent += 1;
            }
        }
        sent
    }

    /// Sends one pending digest now (once: a concurrent sender waits and then
    /// finds it no longer pending). Returns its status afterwards.
    pub async fn send_one(&self, id: i64) -> Option<DigestStatus> {
        let mailer = self.mailer.clone()?;
        let _one_at_a_time = self.sending.lock().await;
        let out: Option<OutgoingDigest> = self
            .db
            .read(move |l| {
                Ok(l.due_digests(i64::MAX, 10_000)?
                    .into_iter()
                    .find(|d| d.row.id == id))
            })
            .await
            .ok()
            .flatten();
        let Some(out) = out else {
            return self
                .db
                .read(move |l| l.get_digest(id))
                .await
                .ok()
                .flatten()
                .map(|r| r.status);
        };
        let result = mailer.send(&out).await;
        let now = self.clock.now_ms();
        let attempts = out.row.attempts + 1;
        let (status, write) = match result {
            Ok(()) => {
                tracing::info!(to = %out.row.recipient, date = %out.row.date, "digest sent");
                (
                    DigestStatus::Sent,
                    self.db.write(move |l| l.mark_digest_sent(id, now)).await,
                )
            }
            Err(SendError::Permanent(msg)) => {
                tracing::error!(to = %out.row.recipient, error = %msg, "digest refused for good");
                (
                    DigestStatus::Failed,
                    self.db.write(move |l| l.mark_digest_failed(id, &msg)).await,
                )
            }
            Err(SendError::Transient(msg)) => {
                let wait = backoff(attempts);
                tracing::warn!(to = %out.row.recipient, error = %msg, retry_in_secs = wait.as_secs(), "digest not sent; will retry");
                let next = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                (
                    DigestStatus::Pending,
                    self.db
                        .write(move |l| l.mark_digest_retry(id, &msg, next))
                        .await,
                )
            }
        };
        if let Err(e) = write {
            tracing::error!(error = %e, "cannot record digest result");
        }
        if status == DigestStatus::Pending {
            // The sender loop takes the retry from here.
            self.wake.notify_one();
        }
        Some(status)
    }

    /// `run-now`: renders and (unless `dry_run`) sends the digests of `date`.
    pub async fn run_now(
        &self,
        date: Option<NaiveDate>,
        recipient: Option<String>,
        dry_run: bool,
    ) -> Result<Vec<RunNowItem>, LedgerError> {
        let (settings, now) = (self.settings.clone(), self.clock.now());
        let mut items = self
            .db
            .write(move |l| digest::run_now(l, &settings, now, date, recipient.as_deref(), dry_run))
            .await?;
        for item in &mut items {
            if item.status != "queued" {
                continue;
            }
            let Some(id) = item.digest_id else { continue };
            let status = self.send_one(id).await;
            item.status = status.map_or("pending", DigestStatus::as_str).to_owned();
            if status != Some(DigestStatus::Sent) {
                item.error = self
                    .db
                    .read(move |l| l.get_digest(id))
                    .await?
                    .and_then(|r| r.error);
            }
        }
        Ok(items)
    }

    /// The digests of `date` as they would be sent, recording nothing.
    pub async fn preview(&self, date: NaiveDate) -> Result<Vec<DigestContent>, LedgerError> {
        let (settings, now) = (self.settings.clone(), self.clock.now());
        self.db
            .read(move |l| digest::preview(l, &settings, now, date))
            .await
    }
}
