//! Several processes, one farm: runner processes and their leases, which runner
//! runs a job, cancel requests a job's runner acts on, job logs kept in the ledger
//! (with PostgreSQL, so any host reads them), the farm's leader, and the
//! notifications that tell the other processes what happened.

use super::jobs::{JOB_COLUMNS, Job, job_from_row};
use super::sql::{Row, RowError, args};
use super::{Ledger, LedgerError, note};

/// A runner process as registered in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRecord {
    /// Its unique, stable name (`CRAFTING_RUNNER_NAME`).
    pub name: String,
    /// `serve` (a farm process with workers) or `runner`.
    pub kind: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: i64,
    /// The process's start time (clock ticks since boot): tells a reused pid apart.
    pub pid_start: i64,
    /// Jobs it runs at once.
    pub workers: i64,
    /// When it registered (ms).
    pub started_at: i64,
    /// Until when its lease holds (ms).
    pub lease_until: i64,
    /// When it stopped cleanly (ms), if it did.
    pub stopped_at: Option<i64>,
}

impl RunnerRecord {
    /// Whether its lease holds at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.stopped_at.is_none() && self.lease_until > now
    }
}

fn runner_from_row(r: &Row) -> Result<RunnerRecord, RowError> {
    Ok(RunnerRecord {
        name: r.get(0)?,
        kind: r.get(1)?,
        host: r.get(2)?,
        pid: r.get(3)?,
        pid_start: r.get(4)?,
        workers: r.get(5)?,
        started_at: r.get(6)?,
        lease_until: r.get(7)?,
        stopped_at: r.get(8)?,
    })
}

const RUNNER_COLUMNS: &str =
    "name, kind, host, pid, pid_start, workers, started_at, lease_until, stopped_at";

/// What a lease renewal tells a runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Whether the runner still holds its name (another process may have taken
    /// it over after its lease expired).
    pub held: bool,
    /// Its jobs the ledger still has running (a job missing here was ended by
    /// someone else: the runner must stop it and write nothing more for it).
    pub running: Vec<String>,
    /// Cancel requests for its jobs: (job, reason).
    pub cancels: Vec<(String, String)>,
}

/// A notification one process sent the others (with PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What happened: `queued`, `started`, `finished`, `cancel`, `log`,
    /// `reconcile`, `reconciled`.
    pub kind: String,
    /// The process it happened in ([`super::Db::origin`]).
    pub origin: String,
    /// The job (or request) it concerns.
    pub id: String,
}

impl Note {
    /// Reads a notification's text; `None` for text this farm did not send.
    pub fn parse(text: &str) -> Option<Note> {
        let mut parts = text.splitn(3, ' ');
        Some(Note {
            kind: parts.next()?.to_owned(),
            origin: parts.next()?.to_owned(),
            id: parts.next()?.to_owned(),
        })
    }
}

impl Ledger {
    /// Sends a notification from this process (nothing with SQLite).
    pub fn notify(&self, kind: &str, id: &str) -> Result<(), LedgerError> {
        self.sql().notify(&note(&self.origin, kind, id))
    }

    /// Registers `me`. When the name is held by another process whose lease is
    /// alive, changes nothing and returns that holder — unless `gone(holder)` says
    /// it is dead (a process of this host that no longer exists).
    pub fn register_runner(
        &mut self,
        me: &RunnerRecord,
        now: i64,
        gone: &dyn Fn(&RunnerRecord) -> bool,
    ) -> Result<Option<RunnerRecord>, LedgerError> {
        self.transaction(|sql| {
            let held = sql.query_opt(
                &format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE name = ?1"),
                args![me.name],
                runner_from_row,
            )?;
            if let Some(h) = held
                && h.is_live(now)
                && !gone(&h)
            {
                return Ok(Some(h));
            }
            sql.execute(
                "INSERT INTO runners (name, kind, host, pid, pid_start, workers, started_at,
                   lease_until, stopped_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)
                 ON CONFLICT (name) DO UPDATE SET kind = ?2, host = ?3, pid = ?4,
                   pid_start = ?5, workers = ?6, started_at = ?7, lease_until = ?8,
                   stopped_at = NULL",
                args![
                    me.name,
                    me.kind,
                    me.host,
                    me.pid,
                    me.pid_start,
                    me.workers,
                    me.started_at,
                    me.lease_until
                ],
            )?;
            Ok(None)
        })
    }

    /// Renews the lease of runner `name` (pid `pid`) and of every job it runs until
    /// `lease_until`; says which of its jobs still run and which are asked to stop.
    pub fn renew_runner(
        &mut self,
        name: &str,
        pid: i64,
        lease_until: i64,
    ) -> Result<Renewal, LedgerError> {
        self.transaction(|sql| {
            let held = sql.execute(
                "UPDATE runners SET lease_until = ?3
                 WHERE name = ?1 AND pid = ?2 AND stopped_at IS NULL",
                args![name, pid, lease_until],
            )? == 1;
            if !held {
                return Ok(Renewal::default());
            }
            sql.execute(
                "UPDATE jobs SET lease_until = ?2 WHERE runner = ?1 AND status = 'running'",
                args![name, lease_until],
            )?;
            let rows = sql.query(
                "SELECT id, cancel_requested FROM jobs WHERE runner = ?1 AND status = 'running'",
                args![name],
                |r| Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?)),
            )?;
            let mut out = Renewal {
                held,
                ..Renewal::default()
            };
            for (id, cancel) in rows {
                if let Some(why) = cancel {
                    out.cancels.push((id.clone(), why));
                }
                out.running.push(id);
            }
            Ok(out)
        })
    }

    /// Records that runner `name` stopped cleanly.
    pub fn stop_runner(&self, name: &str, pid: i64, now: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "UPDATE runners SET stopped_at = ?3 WHERE name = ?1 AND pid = ?2",
                args![name, pid, now],
            )
            .map(|_| ())
    }

    /// Every registered runner, by name.
    pub fn runners(&self) -> Result<Vec<RunnerRecord>, LedgerError> {
        self.sql().query(
            &format!("SELECT {RUNNER_COLUMNS} FROM runners ORDER BY name"),
            args![],
            runner_from_row,
        )
    }

    /// Running jobs per runner name.
    pub fn running_by_runner(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        self.sql().query(
            "SELECT runner, COUNT(*) FROM jobs WHERE status = 'running' AND runner IS NOT NULL
             GROUP BY runner",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Running jobs whose lease ran out before `now`: their runner is gone.
    pub fn expired_jobs(&self, now: i64) -> Result<Vec<Job>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE status = 'running' AND lease_until IS NOT NULL AND lease_until < ?1"
            ),
            args![now],
            job_from_row,
        )
    }

    /// Running jobs of runner `name`.
    pub fn running_jobs_of(&self, name: &str) -> Result<Vec<Job>, LedgerError> {
        self.sql().query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND runner = ?1
                 ORDER BY started_at"
            ),
            args![name],
            job_from_row,
        )
    }

    /// Fails a job whose runner was lost (its lease ran out before `now`) with the
    /// error `line`, adding `log_line` (a whole line) to its log in the ledger.
    /// `false` when it had ended or its lease was renewed meanwhile.
    pub fn orphan_job(
        &mut self,
        id: &str,
        line: &str,
        log_line: &str,
        now: i64,
    ) -> Result<bool, LedgerError> {
        let origin = self.origin.clone();
        self.transaction(|sql| {
            let n = sql.execute(
                "UPDATE jobs SET status = 'failed', exit_code = -1, error = ?2, finished_at = ?3,
                   lease_until = NULL
                 WHERE id = ?1 AND status = 'running' AND lease_until < ?3",
                args![id, line, now],
            )?;
            if n == 0 {
                return Ok(false);
            }
            append_chunk(sql, id, log_line.as_bytes())?;
            sql.notify(&note(&origin, "finished", id))?;
            Ok(true)
        })
    }

    /// Moves a queued job to running on runner `runner` with a lease until
    /// `lease_until`, when fewer than `cap` jobs of its project run farm-wide.
    /// `false` when it was no longer queued or the project is at its cap.
    pub fn claim_job_as(
        &mut self,
        id: &str,
        log_path: &str,
        now: i64,
        runner: &str,
        lease_until: Option<i64>,
        cap: usize,
    ) -> Result<bool, LedgerError> {
        let origin = self.origin.clone();
        self.transaction(|sql| {
            let busy: i64 = sql.query_one(
                "SELECT COUNT(*) FROM jobs WHERE status = 'running'
                 AND project_name = (SELECT project_name FROM jobs WHERE id = ?1)",
                args![id],
                |r| r.get(0),
            )?;
            if busy >= cap as i64 {
                return Ok(false);
            }
            let n = sql.execute(
                "UPDATE jobs SET status = 'running', started_at = ?2, log_path = ?3, runner = ?4,
                   lease_until = ?5
                 WHERE id = ?1 AND status = 'queued'",
                args![id, now, log_path, runner, lease_until],
            )?;
            if n == 1 {
                sql.notify(&note(&origin, "started", id))?;
            }
            Ok(n == 1)
        })
    }

    /// Asks the runner of a running job to stop it; `false` when it does not run.
    pub fn request_cancel(&self, id: &str, reason: &str) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "UPDATE jobs SET cancel_requested = ?2 WHERE id = ?1 AND status = 'running'",
            args![id, reason],
        )?;
        if n == 1 {
            self.notify("cancel", id)?;
        }
        Ok(n == 1)
    }

    /// Why a job's cancel was asked, if it was.
    pub fn cancel_request(&self, id: &str) -> Result<Option<String>, LedgerError> {
        self.sql()
            .query_opt(
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                args![id],
                |r| r.get::<Option<String>>(0),
            )
            .map(Option::flatten)
    }

    /// Stores the bytes of a job's log that start at byte `start` (again: a no-op).
    pub fn append_log(&self, id: &str, start: u64, data: &[u8]) -> Result<(), LedgerError> {
        let sql = self.sql();
        sql.execute(
            "INSERT INTO job_log_chunks (job_id, start_at, end_at, data) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (job_id, start_at) DO NOTHING",
            args![
                id,
                start as i64,
                (start + data.len() as u64) as i64,
                data.to_vec()
            ],
        )?;
        self.notify("log", id)
    }

    /// Bytes of a job's log stored in the ledger.
    pub fn log_size(&self, id: &str) -> Result<u64, LedgerError> {
        self.sql()
            .query_one(
                "SELECT CAST(COALESCE(MAX(end_at), 0) AS BIGINT) FROM job_log_chunks
                 WHERE job_id = ?1",
                args![id],
                |r| r.get::<i64>(0),
            )
            .map(|n| n.max(0) as u64)
    }

    /// Up to `max` bytes of a job's log stored in the ledger, from byte `offset`.
    pub fn log_read(&self, id: &str, offset: u64, max: u64) -> Result<Vec<u8>, LedgerError> {
        let end = offset.saturating_add(max);
        let chunks = self.sql().query(
            "SELECT start_at, data FROM job_log_chunks
             WHERE job_id = ?1 AND end_at > ?2 AND start_at < ?3 ORDER BY start_at",
            args![id, offset as i64, end.min(i64::MAX as u64) as i64],
            |r| Ok((r.get::<i64>(0)?, r.get::<Vec<u8>>(1)?)),
        )?;
        let mut out = Vec::new();
        let mut at = offset;
        for (start, data) in chunks {
            let start = start.max(0) as u64;
            if start > at {
                break; // a gap: not stored yet
            }
            let from = (at - start) as usize;
            let to = data.len().min((end - start) as usize);
            if from < to {
                out.extend_from_slice(&data[from..to]);
                at = start + to as u64;
            }
        }
        Ok(out)
    }

    /// Asks the leader to reconcile the registry (from a process that does not
    /// lead); returns the request's id, which the answer's notification carries.
    pub fn ask_reconcile(&self, asked_by: &str, now: i64) -> Result<i64, LedgerError> {
        let id: i64 = self.sql().query_one(
            "INSERT INTO reconcile_requests (asked_by, asked_at) VALUES (?1, ?2) RETURNING id",
            args![asked_by, now],
            |r| r.get(0),
        )?;
        self.notify("reconcile", &id.to_string())?;
        Ok(id)
    }

    /// Requests not answered yet, asked after `since` (ms).
    pub fn pending_reconciles(&self, since: i64) -> Result<Vec<i64>, LedgerError> {
        self.sql().query(
            "SELECT id FROM reconcile_requests WHERE done_at IS NULL AND asked_at >= ?1 ORDER BY id",
            args![since],
            |r| r.get(0),
        )
    }

    /// The leader's answer to request `id`: the outcome as the API shows it.
    pub fn answer_reconcile(&self, id: i64, outcome: &str, now: i64) -> Result<(), LedgerError> {
        self.sql().execute(
            "UPDATE reconcile_requests SET done_at = ?2, outcome_json = ?3 WHERE id = ?1",
            args![id, now, outcome],
        )?;
        self.notify("reconciled", &id.to_string())
    }

    /// The answer to request `id`, once there is one.
    pub fn reconcile_answer(&self, id: i64) -> Result<Option<String>, LedgerError> {
        self.sql()
            .query_opt(
                "SELECT outcome_json FROM reconcile_requests WHERE id = ?1",
                args![id],
                |r| r.get::<Option<String>>(0),
            )
            .map(Option::flatten)
    }

    /// Records `name` as the farm's leader.
    pub fn set_leader(&self, name: &str, now: i64) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "INSERT INTO farm_leader (id, name, since) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET name = ?1, since = ?2",
                args![name, now],
            )
            .map(|_| ())
    }

    /// The farm's leader and since when (ms), if one was ever recorded.
    pub fn leader(&self) -> Result<Option<(String, i64)>, LedgerError> {
        self.sql().query_opt(
            "SELECT name, since FROM farm_leader WHERE id = 1",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

/// Appends `line` after the log's last stored byte, on a line of its own.
fn append_chunk(sql: &super::sql::Sql<'_>, id: &str, line: &[u8]) -> Result<(), LedgerError> {
    let last = sql.query_opt(
        "SELECT end_at, data FROM job_log_chunks WHERE job_id = ?1 ORDER BY start_at DESC LIMIT 1",
        args![id],
        |r| Ok((r.get::<i64>(0)?, r.get::<Vec<u8>>(1)?)),
    )?;
    let (start, ends_line) = last.map_or((0, true), |(end, d)| (end, d.ends_with(b"\n")));
    let mut data = if ends_line {
        Vec::new()
    } else {
        b"\n".to_vec()
    };
    data.extend_from_slice(line);
    sql.execute(
        "INSERT INTO job_log_chunks (job_id, start_at, end_at, data) VALUES (?1, ?2, ?3, ?4)",
        args![id, start, start + data.len() as i64, data],
    )
    .map(|_| ())
}
