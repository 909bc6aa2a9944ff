//! Schedule state in the ledger: next fire times and the fire log.

use super::jobs::{Job, NewJob, enqueue_in};
use super::sql::args;
use super::{Ledger, LedgerError};

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
        self.sql().query(
            "SELECT name, spec_json, next_fire_at FROM schedules WHERE retired_at IS NULL ORDER BY name",
            args![],
            |r| {
                Ok(ScheduleRow {
                    name: r.get(0)?,
                    spec: serde_json::from_str(&r.get::<String>(1)?).unwrap_or_default(),
                    next_fire_at: r.get(2)?,
                })
            },
        )
    }

    /// Sets when `schedule` fires next.
    pub fn set_next_fire(&self, schedule: &str, at: Option<i64>) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE schedules SET next_fire_at = ?2 WHERE name = ?1",
                args![schedule, at],
            )
            .map(|_| ())
    }

    /// Records a fire, cancels and enqueues its jobs and moves the next fire time,
    /// all in one transaction. Returns `None`, changing nothing, when this fire was
    /// already recorded (a restart or an overlapping tick).
    pub fn fire_schedule(
        &mut self,
        fire: &Fire<'_>,
        now: i64,
    ) -> Result<Option<Vec<Job>>, LedgerError> {
        let origin = self.origin().to_owned();
        self.transaction(|sql| {
            let inserted = sql.execute(
                "INSERT INTO schedule_fires (schedule_name, fire_time, fired_at, jobs_enqueued, note)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (schedule_name, fire_time) DO NOTHING",
                args![
                    fire.schedule,
                    fire.fire_time,
                    now,
                    fire.jobs.len() as i64,
                    fire.note
                ],
            )?;
            sql.execute(
                "UPDATE schedules SET next_fire_at = ?2 WHERE name = ?1",
                args![fire.schedule, fire.next_fire_at],
            )?;
            if inserted == 0 {
                return Ok(None);
            }
            for id in fire.cancel_queued {
                sql.execute(
                    "UPDATE jobs SET status = 'cancelled', error = ?2, finished_at = ?3
                     WHERE id = ?1 AND status = 'queued'",
                    args![
                        id,
                        format!("replaced by a newer fire of schedule {}", fire.schedule),
                        now
                    ],
                )?;
            }
            let mut jobs = Vec::new();
            for j in fire.jobs {
                jobs.push(enqueue_in(sql, &origin, j, now)?.0);
            }
            Ok(Some(jobs))
        })
    }

    /// The fires of `schedule`, newest first: (fire time, jobs enqueued, note).
    pub fn schedule_fires(
        &self,
        schedule: &str,
    ) -> Result<Vec<(i64, i64, Option<String>)>, LedgerError> {
        self.sql().query(
            "SELECT fire_time, jobs_enqueued, note FROM schedule_fires WHERE schedule_name = ?1
             ORDER BY fire_time DESC",
            args![schedule],
            |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<i64>(1)?,
                    r.get::<Option<String>>(2)?,
                ))
            },
        )
    }
}
