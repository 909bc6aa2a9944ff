//! Digests in the ledger: when each unit fires, and every message with its state.

use super::jobs::{JOB_COLUMNS, job_from_row};
use super::sql::{Row, RowError, Sql, args};
use super::{Job, Ledger, LedgerError, PatchAttempt};

/// Where a digest message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestStatus {
    /// To be sent (or being retried after a transient failure).
    Pending,
    /// Accepted by the relay.
    Sent,
    /// Refused for good (5xx), with the server's reply.
    Failed,
    /// Rendered, not sent (asked for, or no SMTP relay configured).
    DryRun,
    /// Nothing to say; nothing sent.
    Empty,
}

impl DigestStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestStatus::Pending => "pending",
            DigestStatus::Sent => "sent",
            DigestStatus::Failed => "failed",
            DigestStatus::DryRun => "dry_run",
            DigestStatus::Empty => "empty",
        }
    }

    fn parse(s: &str) -> DigestStatus {
        match s {
            "pending" => DigestStatus::Pending,
            "sent" => DigestStatus::Sent,
            "failed" => DigestStatus::Failed,
            "dry_run" => DigestStatus::DryRun,
            _ => DigestStatus::Empty,
        }
    }
}

/// A digest message to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDigest {
    /// Recipient address.
    pub recipient: String,
    /// `HH:MM` of the unit.
    pub time: String,
    /// Time zone of the unit.
    pub zone: String,
    /// Local date (`YYYY-MM-DD`) in `zone`.
    pub date: String,
    /// Initial status.
    pub status: DigestStatus,
    /// `Message-ID` (without angle brackets).
    pub message_id: String,
    /// Subject line.
    pub subject: String,
    /// `text/plain` body.
    pub body_text: String,
    /// `text/html` body.
    pub body_html: String,
    /// What the digest says, as JSON.
    pub content: serde_json::Value,
    /// Counts for listings.
    pub counts: serde_json::Value,
    /// Jobs that ended after this (ms)…
    pub window_start: i64,
    /// …and at or before this are covered.
    pub window_end: i64,
}

/// A recorded digest.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestRow {
    /// Row id.
    pub id: i64,
    /// Recipient address.
    pub recipient: String,
    /// `HH:MM` of the unit.
    pub time: String,
    /// Time zone of the unit.
    pub zone: String,
    /// Local date.
    pub date: String,
    /// Status.
    pub status: DigestStatus,
    /// `Message-ID`.
    pub message_id: Option<String>,
    /// Subject line.
    pub subject: Option<String>,
    /// Counts.
    pub counts: serde_json::Value,
    /// Window start (ms).
    pub window_start: i64,
    /// Window end (ms).
    pub window_end: i64,
    /// Send attempts so far.
    pub attempts: i64,
    /// The last error.
    pub error: Option<String>,
    /// Recorded (ms).
    pub created_at: i64,
    /// Accepted by the relay (ms).
    pub sent_at: Option<i64>,
}

/// A pending digest with its bodies, for the sender.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingDigest {
    /// The row.
    pub row: DigestRow,
    /// `text/plain` body.
    pub body_text: String,
    /// `text/html` body.
    pub body_html: String,
}

const DIGEST_COLUMNS: &str =
    "id, recipient, time, zone, date, status, message_id, subject, counts_json,
    window_start, window_end, attempts, error, created_at, sent_at";

fn digest_from_row(r: &Row) -> Result<DigestRow, RowError> {
    Ok(DigestRow {
        id: r.get(0)?,
        recipient: r.get(1)?,
        time: r.get(2)?,
        zone: r.get(3)?,
        date: r.get(4)?,
        status: DigestStatus::parse(&r.get::<String>(5)?),
        message_id: r.get(6)?,
        subject: r.get(7)?,
        counts: serde_json::from_str(&r.get::<String>(8)?).unwrap_or_default(),
        window_start: r.get(9)?,
        window_end: r.get(10)?,
        attempts: r.get(11)?,
        error: r.get(12)?,
        created_at: r.get(13)?,
        sent_at: r.get(14)?,
    })
}

fn insert(sql: &Sql<'_>, d: &NewDigest, now: i64) -> Result<Option<i64>, LedgerError> {
    sql.query_opt(
        "INSERT INTO digests (recipient, time, zone, date, status, message_id, subject, body_text,
           body_html, content_json, counts_json, window_start, window_end, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
         ON CONFLICT DO NOTHING
         RETURNING id",
        args![
            d.recipient,
            d.time,
            d.zone,
            d.date,
            d.status.as_str(),
            d.message_id,
            d.subject,
            d.body_text,
            d.body_html,
            d.content.to_string(),
            d.counts.to_string(),
            d.window_start,
            d.window_end,
            now
        ],
        |r| r.get(0),
    )
}

impl Ledger {
    /// Records a digest. Returns its id, or `None` when a pending or sent digest of
    /// the same (recipient, time, zone, date) already holds the day's slot.
    pub fn insert_digest(&mut self, d: &NewDigest, now: i64) -> Result<Option<i64>, LedgerError> {
        self.transaction(|sql| insert(sql, d, now))
    }

    /// Records that unit `key` fired for `fire_time`, sets its next fire and records
    /// its digest, in one transaction. Returns `None` (changing nothing) when that
    /// fire was recorded before; else whether the digest took the day's slot.
    pub fn fire_digest(
        &mut self,
        key: &str,
        fire_time: i64,
        next_fire_at: i64,
        digest: Option<&NewDigest>,
        now: i64,
    ) -> Result<Option<bool>, LedgerError> {
        self.transaction(|sql| {
            let fresh = sql.execute(
                "INSERT INTO digest_fires (unit_key, fire_time, fired_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                args![key, fire_time, now],
            )?;
            if fresh == 0 {
                return Ok(None);
            }
            sql.execute(
                "INSERT INTO digest_units (unit_key, next_fire_at) VALUES (?1, ?2)
                 ON CONFLICT (unit_key) DO UPDATE SET next_fire_at = excluded.next_fire_at",
                args![key, next_fire_at],
            )?;
            let took = match digest {
                Some(d) => insert(sql, d, now)?.is_some(),
                None => false,
            };
            Ok(Some(took))
        })
    }

    /// The next fire of unit `key`: `None` if the unit was never seen.
    pub fn digest_unit_next(&self, key: &str) -> Result<Option<i64>, LedgerError> {
        let next = self.sql().query_opt(
            "SELECT next_fire_at FROM digest_units WHERE unit_key = ?1",
            args![key],
            |r| r.get::<Option<i64>>(0),
        )?;
        Ok(next.flatten())
    }

    /// Sets the next fire of unit `key`.
    pub fn set_digest_unit_next(&self, key: &str, next: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "INSERT INTO digest_units (unit_key, next_fire_at) VALUES (?1, ?2)
                 ON CONFLICT (unit_key) DO UPDATE SET next_fire_at = excluded.next_fire_at",
                args![key, next],
            )
            .map(|_| ())
    }

    /// Fires recorded for unit `key` (ms), oldest first.
    pub fn digest_fires(&self, key: &str) -> Result<Vec<i64>, LedgerError> {
        self.sql().query(
            "SELECT fire_time FROM digest_fires WHERE unit_key = ?1 ORDER BY fire_time",
            args![key],
            |r| r.get(0),
        )
    }

    /// The pending or sent digest holding a day's slot, if any.
    pub fn digest_in_slot(
        &self,
        recipient: &str,
        time: &str,
        zone: &str,
        date: &str,
    ) -> Result<Option<DigestRow>, LedgerError> {
        self.sql().query_opt(
            &format!(
                "SELECT {DIGEST_COLUMNS} FROM digests WHERE recipient = ?1 AND time = ?2
                 AND zone = ?3 AND date = ?4 AND status IN ('pending', 'sent')"
            ),
            args![recipient, time, zone, date],
            digest_from_row,
        )
    }

    /// Where the unit's previous sent (or pending) digest stopped, if it has one.
    pub fn last_digest_window_end(
        &self,
        recipient: &str,
        time: &str,
        zone: &str,
        before: i64,
    ) -> Result<Option<i64>, LedgerError> {
        self.sql().query_one(
            "SELECT MAX(window_end) FROM digests WHERE recipient = ?1 AND time = ?2 AND zone = ?3
               AND status IN ('pending', 'sent') AND window_end < ?4",
            args![recipient, time, zone, before],
            |r| r.get::<Option<i64>>(0),
        )
    }

    /// Digests newest first.
    pub fn list_digests(&self, limit: usize) -> Result<Vec<DigestRow>, LedgerError> {
        self.sql().query(
            &format!("SELECT {DIGEST_COLUMNS} FROM digests ORDER BY id DESC LIMIT ?1"),
            args![limit],
            digest_from_row,
        )
    }

    /// One digest.
    pub fn get_digest(&self, id: i64) -> Result<Option<DigestRow>, LedgerError> {
        self.sql().query_opt(
            &format!("SELECT {DIGEST_COLUMNS} FROM digests WHERE id = ?1"),
            args![id],
            digest_from_row,
        )
    }

    /// Pending digests whose next attempt is due at `now`, oldest first.
    pub fn due_digests(&self, now: i64, limit: usize) -> Result<Vec<OutgoingDigest>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {DIGEST_COLUMNS}, body_text, body_html FROM digests
                 WHERE status = 'pending' AND COALESCE(next_attempt_at, 0) <= ?1
                 ORDER BY id LIMIT ?2"
            ),
            args![now, limit],
            |r| {
                Ok(OutgoingDigest {
                    row: digest_from_row(r)?,
                    body_text: r.get::<Option<String>>(15)?.unwrap_or_default(),
                    body_html: r.get::<Option<String>>(16)?.unwrap_or_default(),
                })
            },
        )
    }

    /// The earliest next attempt of any pending digest (ms).
    pub fn next_digest_attempt(&self) -> Result<Option<i64>, LedgerError> {
        self.sql().query_one(
            "SELECT MIN(COALESCE(next_attempt_at, 0)) FROM digests WHERE status = 'pending'",
            args![],
            |r| r.get::<Option<i64>>(0),
        )
    }

    /// Marks a pending digest sent.
    pub fn mark_digest_sent(&self, id: i64, now: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE digests SET status = 'sent', sent_at = ?2, attempts = attempts + 1,
                   next_attempt_at = NULL, error = NULL WHERE id = ?1 AND status = 'pending'",
                args![id, now],
            )
            .map(|_| ())
    }

    /// Records a transient failure: the digest stays pending until `next_at`.
    pub fn mark_digest_retry(&self, id: i64, error: &str, next_at: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE digests SET attempts = attempts + 1, error = ?2, next_attempt_at = ?3
                 WHERE id = ?1 AND status = 'pending'",
                args![id, error, next_at],
            )
            .map(|_| ())
    }

    /// Marks a digest refused for good.
    pub fn mark_digest_failed(&self, id: i64, error: &str) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE digests SET status = 'failed', attempts = attempts + 1, error = ?2,
                   next_attempt_at = NULL WHERE id = ?1 AND status = 'pending'",
                args![id, error],
            )
            .map(|_| ())
    }

    /// Jobs of `project` that ended in `(after, until]`, oldest first.
    pub fn jobs_finished_between(
        &self,
        project: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<Job>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE project_name = ?1
                   AND finished_at > ?2 AND finished_at <= ?3 ORDER BY finished_at, id"
            ),
            args![project, after, until],
            job_from_row,
        )
    }

    /// The last run of a command (succeeded or failed: a run whose findings count)
    /// that ended at or before `at`.
    pub fn last_run_at_or_before(
        &self,
        project: &str,
        subproject: &str,
        recipe: &str,
        at: i64,
    ) -> Result<Option<Job>, LedgerError> {
        self.sql().query_opt(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE project_name = ?1 AND subproject = ?2
                   AND recipe = ?3 AND status IN ('succeeded', 'failed')
                   AND trigger != 'patch_verify' AND finished_at <= ?4
                 ORDER BY finished_at DESC, id DESC LIMIT 1"
            ),
            args![project, subproject, recipe, at],
            job_from_row,
        )
    }

    /// Patch attempts of `project` that opened a pull request in `(after, until]`.
    pub fn pull_requests_between(
        &self,
        project: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<PatchAttempt>, LedgerError> {
        let ids: Vec<i64> = self.sql().query(
            "SELECT id FROM patch_attempts
             WHERE project_name = ?1 AND status = 'pr_opened'
               AND finished_at > ?2 AND finished_at <= ?3 ORDER BY id",
            args![project, after, until],
            |r| r.get(0),
        )?;
        let mut out = Vec::new();
        for id in ids {
            if let Some((p, _)) = self.get_patch(id)? {
                out.push(p);
            }
        }
        Ok(out)
    }
}
