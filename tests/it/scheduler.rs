//! The scheduler with an injected clock: exact fires, no double fire across a
//! restart, one catch-up after downtime, DST, concurrency policies, suspend.

use chrono::{DateTime, TimeZone, Utc};
use crafting_table::ledger::{JobStatus, Ledger};
use crafting_table::reconciler::reconcile_once;
use crafting_table::registry::Registry;
use crafting_table::scheduler::tick;

use crate::helpers::{project, recipe, schedule};

struct Farm {
    dir: tempfile::TempDir,
    ledger: Ledger,
}

impl Farm {
    /// A directory registry with projects `app` and `tool` and the given schedule.
    fn new(schedule_yaml: &str) -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("registry");
        std::fs::create_dir(&reg).unwrap();
        std::fs::write(reg.join("r.yaml"), recipe("rust-default", "cargo test")).unwrap();
        std::fs::write(reg.join("app.yaml"), project("app", "rust-default")).unwrap();
        std::fs::write(reg.join("tool.yaml"), project("tool", "rust-default")).unwrap();
        std::fs::write(reg.join("s.yaml"), schedule_yaml).unwrap();
        let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
        let out = reconcile_once(&Registry::Dir(reg), &mut ledger, 0).unwrap();
        assert_eq!(out.error_count(), 0, "{:?}", out.diagnostics);
        Farm { dir, ledger }
    }

    fn tick(&mut self, at: DateTime<Utc>) -> Vec<(i64, usize, Option<String>)> {
        tick(&mut self.ledger, at)
            .unwrap()
            .fired
            .into_iter()
            .map(|f| (f.fire_time, f.jobs.len(), f.note))
            .collect()
    }

    fn reopen(&mut self) {
        self.ledger = Ledger::open(&self.dir.path().join("ledger.sqlite3")).unwrap();
    }
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[test]
fn fires_once_per_occurrence_and_not_again_after_restart() {
    let mut f = Farm::new(&schedule("nightly", "0 2 * * *", "UTC", "[app]", ""));
    assert!(
        f.tick(utc(2026, 1, 1, 0, 0)).is_empty(),
        "first tick only computes the next fire"
    );
    assert!(f.tick(utc(2026, 1, 1, 1, 59)).is_empty());
    assert_eq!(
        f.tick(utc(2026, 1, 1, 2, 0)),
        [(ms(utc(2026, 1, 1, 2, 0)), 1, None)]
    );
    assert!(
        f.tick(utc(2026, 1, 1, 2, 0)).is_empty(),
        "same instant again"
    );
    assert!(f.tick(utc(2026, 1, 1, 2, 1)).is_empty());
    // A restart: a new process opens the same ledger and ticks at the same time.
    f.reopen();
    assert!(
        f.tick(utc(2026, 1, 1, 2, 1)).is_empty(),
        "no double fire after restart"
    );
    assert_eq!(f.tick(utc(2026, 1, 2, 2, 0)).len(), 1);
    assert_eq!(f.ledger.schedule_fires("nightly").unwrap().len(), 2);
}

#[test]
fn duplicate_fire_is_refused_even_if_next_fire_was_stale() {
    let mut f = Farm::new(&schedule("nightly", "0 2 * * *", "UTC", "[app]", ""));
    f.tick(utc(2026, 1, 1, 0, 0));
    assert_eq!(f.tick(utc(2026, 1, 1, 2, 0)).len(), 1);
    // Simulate a crash that left next_fire_at behind: the fire key still holds.
    f.ledger
        .set_next_fire("nightly", Some(ms(utc(2026, 1, 1, 2, 0))))
        .unwrap();
    assert!(f.tick(utc(2026, 1, 1, 2, 30)).is_empty());
    assert_eq!(f.ledger.schedule_fires("nightly").unwrap().len(), 1);
}

#[test]
fn one_catch_up_after_downtime() {
    let mut f = Farm::new(&schedule("nightly", "0 2 * * *", "UTC", "[app]", ""));
    f.tick(utc(2026, 1, 1, 0, 0));
    assert_eq!(f.tick(utc(2026, 1, 1, 2, 0)).len(), 1);
    // Down from Jan 1 03:00 to Jan 5 12:00: four occurrences missed, one runs.
    f.reopen();
    let fired = f.tick(utc(2026, 1, 5, 12, 0));
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].0,
        ms(utc(2026, 1, 5, 2, 0)),
        "the latest missed occurrence"
    );
    assert!(f.tick(utc(2026, 1, 5, 12, 1)).is_empty());
    assert_eq!(f.tick(utc(2026, 1, 6, 2, 0)).len(), 1);
}

/// Ticks every 10 minutes over `[from, to)` and returns the fire times.
fn sweep(f: &mut Farm, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<i64> {
    let mut t = from;
    let mut fires = Vec::new();
    while t < to {
        fires.extend(f.tick(t).into_iter().map(|x| x.0));
        t += chrono::Duration::minutes(10);
    }
    fires
}

#[test]
fn dst_spring_forward_2026_fires_once_at_three_local() {
    // 2026-03-08: 02:00 PST does not exist in Los Angeles; clocks jump to 03:00 PDT.
    let mut f = Farm::new(&schedule(
        "nightly",
        "0 2 * * *",
        "America/Los_Angeles",
        "'*'",
        "",
    ));
    let fires = sweep(&mut f, utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 12, 0));
    let la = chrono_tz::America::Los_Angeles;
    let local: Vec<String> = fires
        .iter()
        .map(|t| {
            Utc.timestamp_millis_opt(*t)
                .unwrap()
                .with_timezone(&la)
                .to_rfc3339()
        })
        .collect();
    assert_eq!(
        local,
        ["2026-03-08T03:00:00-07:00", "2026-03-09T02:00:00-07:00"]
    );
}

#[test]
fn dst_fall_back_2026_fires_once() {
    // 2026-11-01: 01:00-02:00 happens twice; 02:00 PST happens once.
    let mut f = Farm::new(&schedule(
        "nightly",
        "0 2 * * *",
        "America/Los_Angeles",
        "'*'",
        "",
    ));
    let fires = sweep(&mut f, utc(2026, 10, 31, 12, 0), utc(2026, 11, 2, 12, 0));
    assert_eq!(
        fires,
        [ms(utc(2026, 11, 1, 10, 0)), ms(utc(2026, 11, 2, 10, 0))]
    );
    // And a job inside the repeated hour runs once, not twice.
    let mut g = Farm::new(&schedule(
        "early",
        "30 1 * * *",
        "America/Los_Angeles",
        "'*'",
        "",
    ));
    let fires = sweep(&mut g, utc(2026, 10, 31, 12, 0), utc(2026, 11, 1, 12, 0));
    assert_eq!(fires, [ms(utc(2026, 11, 1, 8, 30))]);
}

#[test]
fn star_selects_every_project_and_jobs_carry_the_schedule() {
    let mut f = Farm::new(&schedule("nightly", "0 2 * * *", "UTC", "'*'", ""));
    f.tick(utc(2026, 1, 1, 0, 0));
    let report = tick(&mut f.ledger, utc(2026, 1, 1, 2, 0)).unwrap();
    let jobs = &report.fired[0].jobs;
    let mut projects: Vec<&str> = jobs.iter().map(|j| j.project.as_str()).collect();
    projects.sort_unstable();
    assert_eq!(projects, ["app", "tool"]);
    for j in jobs {
        assert_eq!(j.trigger, "schedule");
        assert_eq!(j.schedule.as_deref(), Some("nightly"));
        assert_eq!(j.recipe, "audit");
        assert_eq!(j.recipe_snapshot["command"], "cargo audit --json");
        assert_eq!(j.status, JobStatus::Queued);
    }
}

#[test]
fn forbid_skips_while_previous_run_is_active() {
    let mut f = Farm::new(&schedule(
        "nightly",
        "0 * * * *",
        "UTC",
        "[app]",
        "  concurrency: forbid\n",
    ));
    f.tick(utc(2026, 1, 1, 0, 30));
    assert_eq!(f.tick(utc(2026, 1, 1, 1, 0))[0].1, 1);
    let fired = f.tick(utc(2026, 1, 1, 2, 0));
    assert_eq!(fired.len(), 1, "the fire is recorded");
    assert_eq!(fired[0].1, 0, "but runs nothing");
    assert_eq!(
        fired[0].2.as_deref(),
        Some("skipped: previous run still queued or running (1 job)")
    );
}

#[test]
fn replace_cancels_the_previous_run() {
    let mut f = Farm::new(&schedule(
        "nightly",
        "0 * * * *",
        "UTC",
        "[app]",
        "  concurrency: replace\n",
    ));
    f.tick(utc(2026, 1, 1, 0, 30));
    let first = tick(&mut f.ledger, utc(2026, 1, 1, 1, 0)).unwrap().fired[0].jobs[0]
        .id
        .clone();
    let report = tick(&mut f.ledger, utc(2026, 1, 1, 2, 0)).unwrap();
    assert_eq!(report.fired[0].jobs.len(), 1);
    assert_ne!(report.fired[0].jobs[0].id, first);
    let old = f.ledger.get_job(&first).unwrap().unwrap();
    assert_eq!(old.status, JobStatus::Cancelled);
    assert!(old.error.unwrap().contains("replaced by a newer fire"));
    assert!(report.cancel_running.is_empty(), "it was only queued");
}

#[test]
fn allow_runs_both() {
    let mut f = Farm::new(&schedule(
        "nightly",
        "0 * * * *",
        "UTC",
        "[app]",
        "  concurrency: allow\n",
    ));
    f.tick(utc(2026, 1, 1, 0, 30));
    let first = tick(&mut f.ledger, utc(2026, 1, 1, 1, 0)).unwrap().fired[0].jobs[0]
        .id
        .clone();
    // The first run has started (a worker claimed it).
    crate::helpers::set_job_status(f.dir.path(), &first, "running");
    let report = tick(&mut f.ledger, utc(2026, 1, 1, 2, 0)).unwrap();
    assert_eq!(report.fired[0].jobs.len(), 1);
    assert_ne!(report.fired[0].jobs[0].id, first);
    assert_eq!(
        f.ledger.get_job(&first).unwrap().unwrap().status,
        JobStatus::Running
    );
}

#[test]
fn suspend_until_resumes_by_itself() {
    let extra = "  suspend:\n    reason: registry migration\n    by: ops\n    until: '2026-01-03T00:00:00Z'\n";
    let mut f = Farm::new(&schedule("nightly", "0 2 * * *", "UTC", "[app]", extra));
    f.tick(utc(2026, 1, 1, 0, 0));
    let fired = f.tick(utc(2026, 1, 1, 2, 0));
    assert_eq!(
        fired,
        [(
            ms(utc(2026, 1, 1, 2, 0)),
            0,
            Some("skipped: schedule suspended: registry migration".into())
        )]
    );
    assert_eq!(f.tick(utc(2026, 1, 2, 2, 0))[0].1, 0);
    assert_eq!(
        f.tick(utc(2026, 1, 3, 2, 0))[0].1,
        1,
        "resumed after `until`"
    );
}

#[test]
fn suspended_project_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(reg.join("r.yaml"), recipe("rust-default", "cargo test")).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "{}  suspend: {{reason: frozen}}\n",
            project("app", "rust-default")
        ),
    )
    .unwrap();
    std::fs::write(
        reg.join("s.yaml"),
        schedule("nightly", "0 2 * * *", "UTC", "[app]", ""),
    )
    .unwrap();
    let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite3")).unwrap();
    reconcile_once(&Registry::Dir(reg), &mut ledger, 0).unwrap();
    tick(&mut ledger, utc(2026, 1, 1, 0, 0)).unwrap();
    let r = tick(&mut ledger, utc(2026, 1, 1, 2, 0)).unwrap();
    assert_eq!(r.fired[0].jobs.len(), 0);
    assert_eq!(
        r.fired[0].note.as_deref(),
        Some("project app suspended: frozen")
    );
}

#[test]
fn next_wake_is_the_earliest_next_fire() {
    let mut f = Farm::new(&schedule("nightly", "0 2 * * *", "UTC", "[app]", ""));
    let r = tick(&mut f.ledger, utc(2026, 1, 1, 0, 0)).unwrap();
    assert_eq!(r.next_wake, Some(ms(utc(2026, 1, 1, 2, 0))));
}
