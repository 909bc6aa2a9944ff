//! The SQLite ledger: migrations, reopening, refusing newer files, WAL, constraints.

use crafting_table::ledger::{Ledger, LedgerError, latest_version};

fn raw(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update(None, "foreign_keys", "ON").unwrap();
    c
}

#[test]
fn migrates_an_empty_file_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/ledger.sqlite3");
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), latest_version());
    let tables = ledger.table_names().unwrap();
    for t in [
        "tokens",
        "projects",
        "recipes",
        "schedules",
        "schedule_fires",
        "notify_rules",
        "registry_status",
        "manifest_status",
        "jobs",
        "findings",
        "patch_attempts",
        "digests",
        "digest_units",
        "digest_fires",
        "ui_sessions",
    ] {
        assert!(
            tables.iter().any(|n| n == t),
            "table {t} missing from {tables:?}"
        );
    }
    assert!(!tables.iter().any(|n| n == "digest_runs"), "V2 drops it");
    drop(ledger);
    let again = Ledger::open(&path).unwrap();
    assert_eq!(again.schema_version().unwrap(), latest_version());
    assert_eq!(again.integrity_check().unwrap(), Ok(()));
}

#[test]
fn wal_and_pragmas_are_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.journal_mode().unwrap(), "wal");
    // WAL is persistent: a plain connection sees it too.
    let c = raw(&path);
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn refuses_a_newer_ledger_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 999;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Ledger::open(&path).unwrap_err();
    assert!(
        matches!(err, LedgerError::TooNew { found: 999, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("schema version 999, newer than this binary's"),
        "{msg}"
    );
    assert!(
        msg.contains("upgrade crafting-table (the file was not modified)"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "file bytes unchanged"
    );
    assert!(
        !dir.path().join("ledger.sqlite3-wal").exists(),
        "no WAL created"
    );
    assert!(Ledger::open_read_only(&path).is_err());
}

#[test]
fn duplicate_fire_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let ledger = Ledger::open(&path).unwrap();
    raw(&path)
        .execute(
            "INSERT INTO schedules (name, spec_json, manifest_file, manifest_revision, created_at, updated_at)
             VALUES ('nightly', '{}', 'r.yaml', 'rev1', 0, 0)",
            [],
        )
        .unwrap();
    assert!(ledger.record_schedule_fire("nightly", 1_000, 5).unwrap());
    assert!(
        !ledger.record_schedule_fire("nightly", 1_000, 6).unwrap(),
        "second record of the same fire"
    );
    assert!(ledger.record_schedule_fire("nightly", 2_000, 7).unwrap());
    assert_eq!(ledger.last_schedule_fire("nightly").unwrap(), Some(2_000));
    assert_eq!(ledger.last_schedule_fire("other").unwrap(), None);
    // The constraint itself, not only the helper, refuses a duplicate.
    let e = raw(&path)
        .execute(
            "INSERT INTO schedule_fires (schedule_name, fire_time, fired_at) VALUES ('nightly', 1000, 9)",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("UNIQUE constraint failed"), "{e}");
    // A fire for a schedule that does not exist violates the foreign key.
    assert!(ledger.record_schedule_fire("ghost", 1, 1).is_err());
}

#[test]
fn other_constraints_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let _ledger = Ledger::open(&path).unwrap();
    let c = raw(&path);
    // A registry project must say where it came from.
    assert!(c
        .execute(
            "INSERT INTO projects (name, source, spec_json, created_at, updated_at) VALUES ('p', 'registry', '{}', 0, 0)",
            [],
        )
        .is_err());
    assert!(c
        .execute(
            "INSERT INTO projects (name, source, spec_json, created_at, updated_at) VALUES ('p', 'elsewhere', '{}', 0, 0)",
            [],
        )
        .is_err());
    c.execute(
        "INSERT INTO projects (name, source, spec_json, owner_token, created_at, updated_at) VALUES ('p', 'api', '{}', 'alice', 0, 0)",
        [],
    )
    .unwrap();
    c.execute(
        "INSERT INTO jobs (id, project_name, subproject, recipe, trigger, git_ref, status, recipe_snapshot_json, created_at)
         VALUES ('j1', 'p', '.', 'test', 'api', 'main', 'queued', '{}', 0)",
        [],
    )
    .unwrap();
    assert!(c
        .execute(
            "INSERT INTO jobs (id, project_name, subproject, recipe, trigger, git_ref, status, recipe_snapshot_json, created_at)
             VALUES ('j2', 'p', '.', 'test', 'api', 'main', 'weird', '{}', 0)",
            [],
        )
        .is_err(), "unknown job status");
    c.execute(
        "INSERT INTO findings (id, job_id, kind, severity, message, fingerprint, created_at) VALUES (1, 'j1', 'lint', 'warn', 'm', 'ffff', 0)",
        [],
    )
    .unwrap();
    let patch = "INSERT INTO patch_attempts (project_name, fingerprint, attempt_number, trigger, status, job_id, finding_id, subproject, recipe, kind, created_at, updated_at) VALUES ('p', 'ffff', 1, 'manual', 'queued', 'j1', 1, '.', 'lint', 'lint', 0, 0)";
    c.execute(patch, []).unwrap();
    assert!(
        c.execute(patch, []).is_err(),
        "duplicate (project, fingerprint, attempt_number)"
    );
    assert!(
        c.execute(
            &patch
                .replace("'queued'", "'drafted'")
                .replace(", 1, 'manual'", ", 2, 'manual'"),
            []
        )
        .is_err(),
        "unknown attempt status"
    );
    // Deleting an API project cascades to its jobs and findings; patch attempts
    // stay (they outlive findings and any retention).
    c.execute("DELETE FROM projects WHERE name = 'p'", [])
        .unwrap();
    let left: i64 = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM findings)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    let kept: i64 = c
        .query_row("SELECT COUNT(*) FROM patch_attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 1);
}

#[test]
fn open_read_only_does_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.sqlite3");
    assert!(Ledger::open_read_only(&path).is_err());
    assert!(!path.exists());
}

#[test]
fn web_sessions_expire_and_end_with_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("l.sqlite3")).unwrap();
    assert!(
        ledger
            .insert_token("team", "h-team", false, &[], 0)
            .unwrap()
    );
    assert!(ledger.create_session("s1", "team", 1_000, 2_000).unwrap());
    assert_eq!(
        ledger.session_token("s1", 1_999).unwrap().unwrap().name,
        "team"
    );
    assert!(
        ledger.session_token("s1", 2_000).unwrap().is_none(),
        "expired"
    );
    assert!(ledger.session_token("nope", 1_500).unwrap().is_none());
    // A later login forgets expired sessions; none for an unknown token.
    assert!(ledger.create_session("s2", "team", 2_500, 9_000).unwrap());
    assert!(!ledger.create_session("s3", "ghost", 2_500, 9_000).unwrap());
    assert!(ledger.end_session("s2").unwrap());
    assert!(!ledger.end_session("s2").unwrap());
    // Revoking the token ends its sessions, and no new one starts.
    assert!(ledger.create_session("s4", "team", 3_000, 9_000).unwrap());
    assert!(ledger.revoke_token("team", 3_100).unwrap());
    assert!(ledger.session_token("s4", 3_200).unwrap().is_none());
    assert!(!ledger.create_session("s5", "team", 3_300, 9_000).unwrap());
}
