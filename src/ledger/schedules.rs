//! Schedule state in the ledger: next fire times and the fire log.

use rusqlite::params;

use super::jobs::{Job, NewJob, enqueue_in};
use super::{Ledger, LedgerError, sql_error};

/// An active schedule as the scheduler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    /// Name.
    pub name: String,
    /// Spec JSON.
    pub spec: serde_json::Value,
    /// Next fire (ms), once computed.
    pub next_fire_at: Option<i64>,
}

/// One fire to record, with what it enqueues.
#[derive(Debug, Clone)]
pub struct Fire<'a> {
    /// Schedule name.
    pub schedule: &'a str,
    /// The cron occurrence being fired (ms).
    pub fire_time: i64,
    /// Next fire after this one (ms).
    pub next_fire_at: i64,
    /// Jobs to enqueue.
    pub jobs: &'a [NewJob],
    /// Queued jobs to cancel first (`concurrency: replace`).
    pub cancel_queued: &'a [String],
    /// Why nothing, or not everything, was enqueued.
    pub note: Option<String>,
}

impl Ledger {
    /// Every schedule that is not retired.
    pub fn active_schedules(&self) -> Result<Vec<ScheduleRow>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, spec_json, next_fire_at FROM schedules WHERE retired_at IS NULL ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ScheduleRow {
                    name: r.get(0)?,
                    spec: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
                    next_fire_at: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Sets when `schedule` fires next.
    pub fn set_next_fire(&self, schedule: &str, at: Option<i64>) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE schedules SET next_fire_at = ?2 WHERE name = ?1",
                params![schedule, at],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records a fire, cancels and enqueues its jobs and moves the next fire time,
    /// all in one transaction. Returns `None`, changing nothing, when this fire was
    /// already recorded (a restart or an overlapping tick).
    pub fn fire_schedule(
        &mut self,
        fire: &Fire<'_>,
        now: i64,
    ) -> Result<Option<Vec<Job>>, LedgerError> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let inserted = tx
            .execute(
                "INSERT INTO schedule_fires (schedule_name, fire_time, fired_at, jobs_enqueued, note)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (schedule_name, fire_time) DO NOTHING",
                params![fire.schedule, fire.fire_time, now, fire.jobs.len() as i64, fire.note],
            )
            .map_err(err)?;
        tx.execute(
            "UPDATE schedules SET next_fire_at = ?2 WHERE name = ?1",
            params![fire.schedule, fire.next_fire_at],
        )
        .map_err(err)?;
        if inserted == 0 {
            tx.commit().map_err(err)?;
            return Ok(None);
        }
        for id in fire.cancel_queued {
            tx.execute(
                "UPDATE jobs SET status = 'cancelled', error = ?2, finished_at = ?3
                 WHERE id = ?1 AND status = 'queued'",
                params![
                    id,
                    format!("replaced by a newer fire of schedule {}", fire.schedule),
                    now
                ],
            )
            .map_err(err)?;
        }
        let mut jobs = Vec::new();
        for j in fire.jobs {
            jobs.push(enqueue_in(&tx, j, now).map_err(err)?.0);
        }
        tx.commit().map_err(err)?;
        Ok(Some(jobs))
    }

    /// The fires of `schedule`, newest first: (fire time, jobs enqueued, note).
    pub fn schedule_fires(
        &self,
        schedule: &str,
    ) -> Result<Vec<(i64, i64, Option<String>)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT fire_time, jobs_enqueued, note FROM schedule_fires WHERE schedule_name = ?1
                 ORDER BY fire_time DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![schedule], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}
