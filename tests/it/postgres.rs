//! The ledger on PostgreSQL behaves as on SQLite: one tour of the ledger's
//! operations, run on a SQLite file and on a fresh database of a real PostgreSQL
//! server (`CRAFTING_TEST_POSTGRES`, a URL of a role that may create databases;
//! `.ci/run` starts Debian's server on loopback and sets it). Without the variable
//! the PostgreSQL half says it was skipped, unless `CRAFTING_PG_TESTS=required`.

use crafting_table::ledger::{JobFilter, JobStatus, Ledger, NewFinding, NewJob, Trigger};
use serde_json::json;

/// The server to test against, if any.
pub fn server() -> Option<String> {
    let url = std::env::var("CRAFTING_TEST_POSTGRES").ok();
    if url.is_none() {
        assert!(
            std::env::var("CRAFTING_PG_TESTS").as_deref() != Ok("required"),
            "CRAFTING_PG_TESTS=required but CRAFTING_TEST_POSTGRES is not set"
        );
        eprintln!("PostgreSQL tests SKIPPED: set CRAFTING_TEST_POSTGRES=postgres://… to run them");
    }
    url
}

/// The settings of a farm under test: with `CRAFTING_TEST_LEDGER=postgres` (how
/// `.ci/run` runs the API tests a second time), a fresh PostgreSQL database and a
/// runner name; else nothing (the SQLite file in the data directory).
pub fn ledger_setting() -> Vec<(&'static str, String)> {
    if std::env::var("CRAFTING_TEST_LEDGER").as_deref() != Ok("postgres") {
        return Vec::new();
    }
    let base = std::env::var("CRAFTING_TEST_POSTGRES")
        .expect("CRAFTING_TEST_LEDGER=postgres needs CRAFTING_TEST_POSTGRES");
    // Off the test's async threads: the blocking client runs its own runtime.
    let url = std::thread::spawn(move || fresh_database(&base))
        .join()
        .expect("a fresh database");
    vec![
        ("CRAFTING_LEDGER", url),
        ("CRAFTING_RUNNER_NAME", "test-serve".to_owned()),
    ]
}

/// A new, empty database on the server at `base`; returns its URL.
pub fn fresh_database(base: &str) -> String {
    let name = format!("ct_{}", uuid::Uuid::new_v4().simple());
    let mut admin = postgres::Client::connect(base, postgres::NoTls).expect("the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let root = head
        .rsplit_once('/')
        .filter(|(h, _)| h.contains("://") && !h.ends_with('/'))
        .map_or(head, |(h, _)| h);
    format!("{root}/{name}{query}")
}

fn job(project: &str, recipe: &str, git_ref: &str) -> NewJob {
    NewJob {
        project: project.into(),
        subproject: ".".into(),
        recipe: recipe.into(),
        trigger: Trigger::Api,
        schedule: None,
        git_ref: git_ref.into(),
        snapshot: json!({"command": "true"}),
    }
}

fn finding(fp: &str, state: &str) -> NewFinding {
    NewFinding {
        tool: "clippy".into(),
        kind: "lint".into(),
        severity: "warn".into(),
        file: Some("src/lib.rs".into()),
        line: Some(3),
        col: Some(5),
        code: Some("clippy::needless_return".into()),
        message: "unneeded `return` statement".into(),
        suggested_fix: None,
        fingerprint: fp.into(),
        location_hash: None,
        baseline_state: Some(state.into()),
        raw_json: Some("{}".into()),
    }
}

/// The same operations and answers on either engine.
fn tour(l: &mut Ledger) {
    assert_eq!(
        l.schema_version().unwrap(),
        crafting_table::ledger::latest_version()
    );
    let tables = l.table_names().unwrap();
    for t in [
        "tokens",
        "projects",
        "jobs",
        "findings",
        "ui_sessions",
        "digests",
    ] {
        assert!(tables.iter().any(|n| n == t), "{t} in {tables:?}");
    }
    assert_eq!(l.integrity_check().unwrap(), Ok(()));

    // Tokens and web sessions.
    assert!(l.insert_token("admin", "h-admin", true, &[], 1).unwrap());
    assert!(!l.insert_token("admin", "h-other", false, &[], 2).unwrap());
    assert!(
        l.insert_token("team", "h-team", false, &["10.0.0.0/8".into()], 3)
            .unwrap()
    );
    let t = l.token_by_hash("h-team").unwrap().unwrap();
    assert_eq!(
        (t.is_admin, t.ip_cidrs.clone()),
        (false, vec!["10.0.0.0/8".to_owned()])
    );
    assert_eq!(l.token_count().unwrap(), 2);
    assert!(l.create_session("s", "team", 10, 20).unwrap());
    assert_eq!(l.session_token("s", 15).unwrap().unwrap().name, "team");
    assert!(l.session_token("s", 20).unwrap().is_none());

    // Projects.
    let spec = json!({"git_url": "/srv/app.git", "subprojects": [{"path": ".", "test": "true"}]});
    assert!(l.insert_api_project("app", &spec, "team", 5).unwrap());
    assert!(!l.insert_api_project("app", &spec, "team", 6).unwrap());
    assert_eq!(l.get_project("app").unwrap().unwrap().spec, spec);
    assert_eq!(l.snapshot().unwrap().len(), 1);

    // Jobs: enqueue coalesces, claim, finish, list with the visibility filter.
    let (a, coalesced) = l.enqueue_job(&job("app", "test", "main"), 100).unwrap();
    assert!(!coalesced);
    assert_eq!(a.status, JobStatus::Queued);
    let (again, coalesced) = l.enqueue_job(&job("app", "test", "main"), 101).unwrap();
    assert!(coalesced);
    assert_eq!(again.id, a.id);
    let (b, _) = l.enqueue_job(&job("app", "lint", "main"), 102).unwrap();
    assert_eq!(l.queued_jobs(10).unwrap().len(), 2);
    assert_eq!(l.active_jobs().unwrap().len(), 2);
    assert!(l.claim_job(&a.id, "/logs/a.log", 200).unwrap());
    assert!(!l.claim_job(&a.id, "/logs/a.log", 201).unwrap());
    l.set_job_checkout(&a.id, "abc123", "/wt/a").unwrap();
    l.set_job_process(&a.id, 4242, 99).unwrap();
    assert_eq!(l.running_jobs().unwrap()[0].pgid, Some(4242));
    assert!(
        l.finish_job(&a.id, JobStatus::Failed, Some(1), None, 1_200)
            .unwrap()
    );
    assert!(l.cancel_queued_job(&b.id, "not needed", 300).unwrap());
    let got = l.get_job(&a.id).unwrap().unwrap();
    assert_eq!(
        (
            got.status,
            got.exit_code,
            got.sha.as_deref(),
            got.finished_at
        ),
        (JobStatus::Failed, Some(1), Some("abc123"), Some(1_200))
    );
    let all = JobFilter {
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(l.list_jobs(&all).unwrap().len(), 2);
    let hidden = JobFilter {
        visible_projects: Some(vec!["other".into()]),
        ..all.clone()
    };
    assert!(l.list_jobs(&hidden).unwrap().is_empty());
    let shown = JobFilter {
        visible_projects: Some(vec!["app".into(), "other".into()]),
        status: Some(JobStatus::Failed),
        ..all.clone()
    };
    assert_eq!(l.list_jobs(&shown).unwrap()[0].id, a.id);
    let mut counts = l.job_counts().unwrap();
    counts.sort();
    let mut want = vec![(JobStatus::Failed, 1), (JobStatus::Cancelled, 1)];
    want.sort();
    assert_eq!(counts, want);
    assert!(
        l.job_duration_stats()
            .unwrap()
            .contains(&(JobStatus::Failed, 1, 1_000))
    );

    // Findings, the baseline and the page views.
    l.store_findings(
        &a.id,
        &[finding("f1", "new"), finding("f2", "unchanged")],
        &[],
        1_300,
    )
    .unwrap();
    assert_eq!(l.findings_of_job(&a.id).unwrap().len(), 2);
    assert_eq!(l.new_findings_count(&a.id).unwrap(), 1);
    let first = l.findings_of_job(&a.id).unwrap()[0].clone();
    assert_eq!(
        l.get_finding(first.id).unwrap().unwrap().f.fingerprint,
        "f1"
    );
    assert_eq!(l.get_job(&a.id).unwrap().unwrap().findings_count, 2);
    let (c, _) = l.enqueue_job(&job("app", "test", "main"), 2_000).unwrap();
    assert!(l.claim_job(&c.id, "/logs/c.log", 2_001).unwrap());
    assert!(
        l.finish_job(&c.id, JobStatus::Succeeded, Some(0), None, 2_500)
            .unwrap()
    );
    assert_eq!(
        l.previous_run("app", ".", "test", &c.id)
            .unwrap()
            .as_deref(),
        Some(a.id.as_str())
    );
    l.store_findings(&c.id, &[finding("f2", "unchanged")], &["f1".into()], 2_600)
        .unwrap();
    let trend = l.findings_trend("app", 10).unwrap();
    assert_eq!(
        trend
            .iter()
            .map(|p| (p.open, p.new, p.fixed))
            .collect::<Vec<_>>(),
        vec![(2, 1, 0), (1, 0, 1)]
    );
    assert_eq!(
        l.last_finished_job("app", ".", "test").unwrap().unwrap().id,
        c.id
    );

    // A digest takes its day's slot once; the id comes back from the insert.
    let digest = crafting_table::ledger::NewDigest {
        recipient: "ops@example.com".into(),
        time: "07:00".into(),
        zone: "UTC".into(),
        date: "2026-11-26".into(),
        status: crafting_table::ledger::DigestStatus::Pending,
        message_id: "<m1@farm>".into(),
        subject: "digest".into(),
        body_text: "text".into(),
        body_html: "<p>html</p>".into(),
        content: json!({}),
        counts: json!({}),
        window_start: 0,
        window_end: 10,
    };
    let id = l.insert_digest(&digest, 3_000).unwrap().unwrap();
    assert_eq!(l.insert_digest(&digest, 3_001).unwrap(), None);
    assert_eq!(l.due_digests(3_002, 10).unwrap()[0].row.id, id);
    l.mark_digest_sent(id, 3_003).unwrap();
    assert!(l.due_digests(3_004, 10).unwrap().is_empty());
    assert_eq!(l.last_schedule_fire("never").unwrap(), None);

    // Patch attempts list with and without filters.
    assert!(l.list_patches(None, None, None, 10).unwrap().is_empty());
    assert!(
        l.list_patches(
            Some(&["app".to_owned()]),
            Some("app"),
            Some("pr_opened"),
            10
        )
        .unwrap()
        .is_empty()
    );

    // Retention keeps the latest run of each command.
    let plan = l.prune_plan(1_000_000_000, 1, 1).unwrap();
    assert!(plan.prune.iter().all(|p| p.job_id != c.id), "{plan:?}");

    // Revoking the token ends its session; the ledger still answers.
    assert!(l.revoke_token("team", 30).unwrap());
    assert!(l.session_token("s", 15).unwrap().is_none());
}

#[test]
fn the_ledger_tour_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    assert!(!l.is_postgres());
    tour(&mut l);
}

#[test]
fn the_ledger_tour_on_postgres() {
    let Some(base) = server() else {
        return;
    };
    let url = fresh_database(&base);
    let mut l = Ledger::open_postgres(&url).unwrap();
    assert!(l.is_postgres());
    tour(&mut l);
    // The server drops the connection (a restart, a network cut): the statement
    // that meets it fails and says so, and the next one reconnects.
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let killed: i64 = admin
        .query_one(
            // (With a timeout it returns once the backend has exited.)
            "SELECT COUNT(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let first = l.token_count();
    if let Err(e) = &first {
        assert!(e.to_string().contains("ledger postgres://"), "{e}");
    }
    assert_eq!(l.token_count().unwrap(), 2, "reconnected");
    // A second connection finds the schema migrated and the data there.
    let again = Ledger::open_postgres(&url).unwrap();
    assert_eq!(again.token_count().unwrap(), 2);
    // SQLite-only operations say what to do instead.
    let e = again
        .backup_to(std::path::Path::new("/tmp/never"))
        .unwrap_err();
    assert!(e.to_string().contains("pg_dump"), "{e}");
    // The address is shown without its password.
    assert!(!format!("{:?}", again).contains("secret"));
}

#[test]
fn plan_reads_a_postgres_ledger() {
    let Some(base) = server() else {
        return;
    };
    let url = fresh_database(&base);
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    std::fs::write(
        reg.join("r.yaml"),
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n  name: quick\nspec:\n  test: 'true'\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("plan")
        .current_dir(tmp.path())
        .env("CRAFTING_REGISTRY", &reg)
        .env("CRAFTING_LEDGER", &url)
        .env("CRAFTING_DATA_DIR", tmp.path().join("data"))
        .env_remove("CRAFTING_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "something to create: {out:?}");
    assert!(
        text.contains("against ledger postgres://postgres@") && !text.contains("not created"),
        "{text}"
    );
    assert!(text.contains("quick"), "the recipe is planned: {text}");
    assert!(
        !tmp.path().join("data/ledger.sqlite3").exists(),
        "no SQLite file was made"
    );
}
