//! The ledger's schema, as numbered migrations.
//!
//! Migration `n` (1-based) moves a ledger from `PRAGMA user_version = n - 1` to `n`.
//! Each runs in its own transaction together with the version bump, so a crash
//! leaves the ledger at a whole version. Never edit a migration that has shipped:
//! add the next one.
//!
//! Times are INTEGER milliseconds since the Unix epoch (UTC).

/// Every migration, in order.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

const V1: &str = r#"
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- SHA-256 of the bearer, hex; the bearer itself is never stored.
    token_hash  TEXT NOT NULL UNIQUE,
    is_admin    INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    ip_cidrs    TEXT NOT NULL DEFAULT '[]',     -- JSON array of CIDR strings
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE recipes (
    name              TEXT PRIMARY KEY,
    spec_json         TEXT NOT NULL,
    manifest_file     TEXT NOT NULL,
    manifest_revision TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    retired_at        INTEGER
);

CREATE TABLE projects (
    name              TEXT PRIMARY KEY,
    source            TEXT NOT NULL CHECK (source IN ('registry', 'api')),
    spec_json         TEXT NOT NULL,
    -- The token that registered it (source = api).
    owner_token       TEXT,
    -- Where it came from (source = registry).
    manifest_file     TEXT,
    manifest_revision TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    retired_at        INTEGER,
    CHECK (source = 'api' OR (manifest_file IS NOT NULL AND manifest_revision IS NOT NULL))
);

CREATE TABLE schedules (
    name              TEXT PRIMARY KEY,
    spec_json         TEXT NOT NULL,
    manifest_file     TEXT NOT NULL,
    manifest_revision TEXT NOT NULL,
    -- Next fire computed from cron + timezone, persisted so restarts agree.
    next_fire_at      INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    retired_at        INTEGER
);

CREATE TABLE schedule_fires (
    id             INTEGER PRIMARY KEY,
    schedule_name  TEXT NOT NULL REFERENCES schedules(name) ON DELETE CASCADE,
    fire_time      INTEGER NOT NULL,
    fired_at       INTEGER NOT NULL,
    jobs_enqueued  INTEGER NOT NULL DEFAULT 0,
    note           TEXT,
    UNIQUE (schedule_name, fire_time)
);

CREATE TABLE notify_rules (
    name              TEXT PRIMARY KEY,
    spec_json         TEXT NOT NULL,
    manifest_file     TEXT NOT NULL,
    manifest_revision TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    retired_at        INTEGER
);

-- One row: the state of the registry as last seen.
CREATE TABLE registry_status (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    source           TEXT NOT NULL,
    revision         TEXT,
    last_attempt_at  INTEGER,
    last_success_at  INTEGER,
    duration_ms      INTEGER,
    last_error       TEXT,
    counts_json      TEXT NOT NULL DEFAULT '{}'
);

-- One row per manifest object (or per unreadable file, with kind/name '').
CREATE TABLE manifest_status (
    file              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    name              TEXT NOT NULL,
    revision_applied  TEXT,
    last_error        TEXT,
    error_line        INTEGER,
    error_col         INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (file, kind, name)
);

CREATE TABLE jobs (
    id                    TEXT PRIMARY KEY,
    project_name          TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    subproject            TEXT NOT NULL,
    recipe                TEXT NOT NULL,
    trigger               TEXT NOT NULL CHECK (trigger IN ('api', 'schedule', 'patch_verify')),
    schedule_name         TEXT,
    git_ref               TEXT NOT NULL,
    sha                   TEXT,
    status                TEXT NOT NULL CHECK (status IN
                            ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'error')),
    exit_code             INTEGER,
    error                 TEXT,
    recipe_snapshot_json  TEXT NOT NULL,
    log_path              TEXT,
    -- Process group of the running command and the leader's start time (from
    -- /proc/<pid>/stat), so a restart never kills a reused pid.
    pgid                  INTEGER,
    pgid_start_time       INTEGER,
    worktree_path         TEXT,
    findings_count        INTEGER NOT NULL DEFAULT 0,
    fixed_json            TEXT NOT NULL DEFAULT '[]',
    created_at            INTEGER NOT NULL,
    started_at            INTEGER,
    finished_at           INTEGER
);
CREATE INDEX jobs_by_created ON jobs (created_at, id);
CREATE INDEX jobs_by_status ON jobs (status, created_at, id);
CREATE INDEX jobs_by_project ON jobs (project_name, created_at, id);
CREATE INDEX jobs_by_schedule ON jobs (schedule_name, status);
CREATE INDEX jobs_by_run_key ON jobs (project_name, subproject, recipe, finished_at);

CREATE TABLE findings (
    id              INTEGER PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    tool            TEXT NOT NULL DEFAULT '',
    kind            TEXT NOT NULL,
    severity        TEXT NOT NULL,
    file            TEXT,
    line            INTEGER,
    col             INTEGER,
    code            TEXT,
    message         TEXT NOT NULL,
    suggested_fix   TEXT,
    fingerprint     TEXT NOT NULL,
    location_hash   TEXT,
    baseline_state  TEXT CHECK (baseline_state IN ('new', 'unchanged')),
    raw_json        TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX findings_by_job ON findings (job_id);
CREATE INDEX findings_by_fingerprint ON findings (fingerprint);

CREATE TABLE patch_attempts (
    id              INTEGER PRIMARY KEY,
    finding_id      INTEGER NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
    job_id          TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt_number  INTEGER NOT NULL CHECK (attempt_number >= 1),
    status          TEXT NOT NULL,
    branch          TEXT,
    pr_url          TEXT,
    diff            TEXT,
    explanation     TEXT,
    confidence      REAL,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (finding_id, attempt_number)
);

CREATE TABLE digest_runs (
    id            INTEGER PRIMARY KEY,
    date          TEXT NOT NULL,          -- YYYY-MM-DD in the digest's time zone
    project_name  TEXT NOT NULL,
    status        TEXT NOT NULL,
    recipients    TEXT NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    UNIQUE (date, project_name)
);
"#;

/// The digest: units fire like schedules, one row per message. `digest_runs` of V1
/// (the original's `UNIQUE(date, project_name)`, which collides when two rules
/// cover one project) was never written and goes.
const V2: &str = r#"
DROP TABLE digest_runs;

-- A digest unit is (recipient, time, zone); its key is "recipient|HH:MM|zone".
CREATE TABLE digest_units (
    unit_key      TEXT PRIMARY KEY,
    next_fire_at  INTEGER
);

CREATE TABLE digest_fires (
    unit_key   TEXT NOT NULL,
    fire_time  INTEGER NOT NULL,
    fired_at   INTEGER NOT NULL,
    PRIMARY KEY (unit_key, fire_time)
);

CREATE TABLE digests (
    id               INTEGER PRIMARY KEY,
    recipient        TEXT NOT NULL,
    time             TEXT NOT NULL,       -- HH:MM
    zone             TEXT NOT NULL,       -- IANA
    date             TEXT NOT NULL,       -- YYYY-MM-DD in `zone`
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dry_run', 'empty')),
    message_id       TEXT,
    subject          TEXT,
    body_text        TEXT,
    body_html        TEXT,
    content_json     TEXT NOT NULL DEFAULT '{}',
    counts_json      TEXT NOT NULL DEFAULT '{}',
    window_start     INTEGER NOT NULL,
    window_end       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
-- One message per unit and local date: only what is (being) sent takes the slot;
-- dry runs and empty runs are recorded beside it.
CREATE UNIQUE INDEX digests_one_per_day ON digests (recipient, time, zone, date)
    WHERE status IN ('pending', 'sent');
CREATE INDEX digests_due ON digests (status, next_attempt_at);
CREATE INDEX digests_by_unit ON digests (recipient, time, zone, status, window_end);
CREATE INDEX jobs_by_finish ON jobs (project_name, finished_at);
"#;

/// Patch attempts in the patch loop's shape: keyed by project and fingerprint, the
/// finding's own fields copied in (an attempt outlives the finding row), no cascade
/// from findings or jobs, and the `error` status. V1's table was never written.
const V3: &str = r#"
DROP TABLE patch_attempts;
CREATE TABLE patch_attempts (
    id              INTEGER PRIMARY KEY,
    project_name    TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    attempt_number  INTEGER NOT NULL CHECK (attempt_number >= 1),
    trigger         TEXT NOT NULL CHECK (trigger IN ('auto', 'manual')),
    status          TEXT NOT NULL CHECK (status IN ('queued', 'drafting', 'applying', 'verifying',
                      'pushing', 'pr_opened', 'model_error', 'apply_failed', 'verify_failed',
                      'forge_error', 'cancelled', 'error', 'skipped')),
    reason          TEXT,
    job_id          TEXT NOT NULL,
    finding_id      INTEGER,
    subproject      TEXT NOT NULL,
    recipe          TEXT NOT NULL,
    command         TEXT NOT NULL DEFAULT '',
    sha             TEXT,
    tool            TEXT NOT NULL DEFAULT '',
    kind            TEXT NOT NULL,
    severity        TEXT NOT NULL DEFAULT '',
    code            TEXT,
    file            TEXT,
    line            INTEGER,
    col             INTEGER,
    message         TEXT NOT NULL DEFAULT '',
    suggested_fix   TEXT,
    backend         TEXT,
    model           TEXT,
    prompt_chars    INTEGER,
    diff            TEXT,
    explanation     TEXT,
    confidence      REAL,
    model_reply     TEXT,
    commit_sha      TEXT,
    verify_job_id   TEXT,
    branch          TEXT,
    pr_number       INTEGER,
    pr_url          TEXT,
    pr_state        TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    UNIQUE (project_name, fingerprint, attempt_number)
);
CREATE INDEX patch_attempts_by_project ON patch_attempts (project_name, created_at);
CREATE INDEX patch_attempts_by_status ON patch_attempts (status);
"#;

/// Retention: a pruned run keeps its job row (history counts stay) but loses its
/// log and findings; `pruned_at` says when.
const V4: &str = r#"
ALTER TABLE jobs ADD COLUMN pruned_at INTEGER;
CREATE INDEX jobs_by_command ON jobs (project_name, subproject, recipe, finished_at);
"#;

/// Web-page sessions: the cookie's value is stored hashed; a session belongs to a
/// token and ends with it (revoked, or expired).
const V5: &str = r#"
CREATE TABLE ui_sessions (
    id_hash     TEXT PRIMARY KEY,
    token_name  TEXT NOT NULL REFERENCES tokens (name),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);
"#;

/// Several processes, one farm: which runner runs a job and until when its lease
/// holds, a cancel request its runner acts on, the runners themselves, and job
/// logs kept in the ledger (with PostgreSQL, so every host reads them).
const V6: &str = r#"
ALTER TABLE jobs ADD COLUMN runner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE jobs ADD COLUMN cancel_requested TEXT;
CREATE INDEX jobs_by_runner ON jobs (runner, status);
CREATE TABLE runners (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    pid_start   INTEGER NOT NULL,
    workers     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    stopped_at  INTEGER
);
CREATE TABLE job_log_chunks (
    job_id      TEXT NOT NULL,
    start_at    INTEGER NOT NULL,
    end_at      INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (job_id, start_at)
);
CREATE TABLE farm_leader (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    name        TEXT NOT NULL,
    since       INTEGER NOT NULL
);
CREATE TABLE reconcile_requests (
    id          INTEGER PRIMARY KEY,
    asked_by    TEXT NOT NULL,
    asked_at    INTEGER NOT NULL,
    done_at     INTEGER,
    outcome_json TEXT
);
"#;
