//! The runner with real git repositories and real processes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crafting_table::enqueue::{Catalog, JobRequest};
use crafting_table::events::{Events, FarmEvent};
use crafting_table::ledger::{Db, Job, JobStatus, Ledger, Trigger};
use crafting_table::manifest::resolve::PatchCommit;
use crafting_table::reconciler::reconcile_once;
use crafting_table::registry::Registry;
use crafting_table::runner::{CancelResult, Runner, RunnerConfig, process};
use crafting_table::workspace::Workspace;

use crate::helpers::Repo;

pub struct Farm {
    pub tmp: tempfile::TempDir,
    pub _source: Repo,
    pub db: Db,
    pub runner: Runner,
}

/// Subproject YAML lines for a project named `name` whose commands are `cmds`.
pub fn project_yaml(
    name: &str,
    source: &Path,
    cap: u32,
    subprojects: &[(&str, &[(&str, &str)])],
    timeout: u64,
) -> String {
    let mut s = format!(
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  git_url: {}\n  max_concurrent_jobs: {cap}\n  subprojects:\n",
        source.display()
    );
    for (path, cmds) in subprojects {
        s += &format!("    - path: {path}\n      timeout_secs: {timeout}\n      commands:\n");
        for (n, c) in *cmds {
            s += &format!("        {n}: {}\n", serde_json::to_string(c).unwrap());
        }
    }
    s
}

impl Farm {
    pub fn new(projects: &[String], workers: usize, log_cap: u64) -> Farm {
        let tmp = tempfile::tempdir().unwrap();
        let source = Repo::new();
        source
            .write("README.md", "hello\n")
            .write("sub/dir/file.txt", "x\n");
        source.commit("initial");
        let reg = tmp.path().join("registry");
        std::fs::create_dir(&reg).unwrap();
        for (i, p) in projects.iter().enumerate() {
            std::fs::write(
                reg.join(format!("p{i}.yaml")),
                p.replace("@SOURCE@", &source.path.display().to_string()),
            )
            .unwrap();
        }
        let mut ledger = Ledger::open(&tmp.path().join("data/ledger.sqlite3")).unwrap();
        let out = reconcile_once(&Registry::Dir(reg.clone()), &mut ledger, 0).unwrap();
        assert_eq!(out.error_count(), 0, "{:?}", out.diagnostics);
        let db = Db::with_writer(ledger, 2).unwrap();
        let runner = Runner::new(
            RunnerConfig {
                workers,
                logs_dir: tmp.path().join("data/logs"),
                log_cap,
                kill_grace: Duration::from_secs(2),
                registry_base: reg,
                sandbox: Default::default(),
                secrets_file: None,
                name: "local".to_owned(),
                lease: None,
            },
            db.clone(),
            Workspace::new(tmp.path().join("data/workspace")),
            crafting_table::clock::system(),
            Events::new(),
        );
        Farm {
            tmp,
            _source: source,
            db,
            runner,
        }
    }

    /// Runs `f` on the ledger's write connection.
    pub fn ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        self.db.write_blocking(f)
    }

    /// Enqueues through the farm's own resolution (as the API does), without
    /// waking the dispatcher.
    pub fn enqueue(&self, project: &str, subproject: &str, command: &str) -> (String, bool) {
        self.ledger(|l| {
            let new = Catalog::new(l.snapshot().unwrap())
                .new_job(&JobRequest {
                    project: project.into(),
                    subproject: Some(subproject.into()),
                    recipe: command.into(),
                    git_ref: Some("main".into()),
                    trigger: Trigger::Api,
                    schedule: None,
                })
                .unwrap();
            let (job, coalesced) = l
                .enqueue_job(&new, chrono::Utc::now().timestamp_millis())
                .unwrap();
            (job.id, coalesced)
        })
    }

    /// Enqueues `command` of the root subproject at `git_ref` (a branch, tag or
    /// sha), without waking the dispatcher.
    pub fn enqueue_ref(&self, project: &str, command: &str, git_ref: &str) -> String {
        self.ledger(|l| {
            let new = Catalog::new(l.snapshot().unwrap())
                .new_job(&JobRequest {
                    project: project.into(),
                    subproject: None,
                    recipe: command.into(),
                    git_ref: Some(git_ref.into()),
                    trigger: Trigger::Api,
                    schedule: None,
                })
                .unwrap();
            l.enqueue_job(&new, chrono::Utc::now().timestamp_millis())
                .unwrap()
                .0
                .id
        })
    }

    pub fn job(&self, id: &str) -> Job {
        self.ledger(|l| l.get_job(id).unwrap().unwrap())
    }

    /// Waits (bounded) until `pred` holds for the job: re-checks the ledger on each
    /// farm event, and every 50 ms for what no event announces (a process group
    /// being recorded).
    pub async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Job) -> bool) -> Job {
        let mut events = self.runner.events().subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let j = self.job(id);
            if pred(&j) {
                return j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never became {what}: {j:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
        }
    }

    /// Waits for the `JobFinished` event of `id` (subscribe before it can finish).
    pub async fn finished_event(
        events: &mut tokio::sync::broadcast::Receiver<Arc<FarmEvent>>,
        id: &str,
    ) -> Arc<FarmEvent> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let e = tokio::time::timeout_at(deadline, events.recv())
                .await
                .unwrap_or_else(|_| panic!("no JobFinished event for {id}"))
                .unwrap();
            if matches!(&*e, FarmEvent::JobFinished { job, .. } if job.id == id) {
                return e;
            }
        }
    }

    pub async fn finished(&self, id: &str) -> Job {
        self.wait_for(id, "finished", |j| j.status.is_terminal())
            .await
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join(format!("data/logs/{id}.log")))
            .unwrap_or_default()
    }

    pub fn worktrees(&self, project: &str) -> Vec<String> {
        let dir = self.tmp.path().join("data/workspace").join(project);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.retain(|n| !n.starts_with('.'));
        v
    }

    /// The work tree of the project's source repository.
    pub fn source_path(&self) -> std::path::PathBuf {
        self._source.path.clone()
    }

    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let r = self.runner.clone();
        tokio::spawn(async move {
            r.run().await.unwrap();
        })
    }
}

/// Returns once the wall clock's millisecond (the unit of enqueue and fetch
/// times) has moved on: what comes after happens strictly later.
fn next_millisecond() {
    let now = chrono::Utc::now().timestamp_millis();
    while chrono::Utc::now().timestamp_millis() <= now {
        std::hint::spin_loop();
    }
}

fn one(name: &str, cmds: &[(&str, &str)], timeout: u64) -> Vec<String> {
    vec![project_yaml(
        name,
        Path::new("@SOURCE@"),
        1,
        &[(".", cmds)],
        timeout,
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_failure_not_found() {
    let f = Farm::new(
        &one(
            "app",
            &[
                (
                    "ok",
                    "echo hello from $CRAFTING_PROJECT $CRAFTING_RECIPE CI=$CI; cat README.md",
                ),
                ("bad", "echo about to fail >&2; exit 3"),
                ("missing", "definitely-not-a-command --flag"),
                ("cargo-missing", "cargo no-such-subcommand-here --json"),
            ],
            60,
        ),
        2,
        1 << 20,
    );
    let _loop = f.start();
    let (ok, _) = f.enqueue("app", ".", "ok");
    let (bad, _) = f.enqueue("app", ".", "bad");
    let (missing, _) = f.enqueue("app", ".", "missing");
    f.runner.wake();

    let j = f.finished(&ok).await;
    assert_eq!((j.status, j.exit_code), (JobStatus::Succeeded, Some(0)));
    assert_eq!(j.sha.as_deref().map(str::len), Some(40));
    let log = f.log(&ok);
    assert!(log.contains("hello from app ok CI=true\nhello\n"), "{log}");
    assert!(log.contains("[crafting-table] exit 0 after"), "{log}");

    let j = f.finished(&bad).await;
    assert_eq!((j.status, j.exit_code), (JobStatus::Failed, Some(3)));
    assert!(
        f.log(&bad).contains("about to fail\n"),
        "stderr goes to the same log"
    );

    let j = f.finished(&missing).await;
    assert_eq!((j.status, j.exit_code), (JobStatus::Failed, Some(127)));
    let log = f.log(&missing);
    assert!(log.contains("definitely-not-a-command: not found"), "{log}");
    assert!(
        log.contains("[crafting-table] command not found: `definitely-not-a-command` is not installed on this machine"),
        "{log}"
    );
    assert_eq!(
        j.error.as_deref(),
        Some(
            "command not found: `definitely-not-a-command` is not installed on this machine (or not on PATH)"
        )
    );

    let (audit, _) = f.enqueue("app", ".", "cargo-missing");
    f.runner.wake();
    let j = f.finished(&audit).await;
    assert_eq!(
        j.status,
        JobStatus::Failed,
        "a missing tool is a normal failed job"
    );
    assert_eq!(
        j.error.as_deref(),
        Some(
            "command not found: `cargo no-such-subcommand-here` is not installed on this machine (e.g. `cargo install cargo-no-such-subcommand-here --locked`)"
        )
    );
    assert!(
        f.worktrees("app").is_empty(),
        "worktrees removed: {:?}",
        f.worktrees("app")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subproject_directory_missing_is_a_farm_error() {
    let p = project_yaml(
        "app",
        Path::new("@SOURCE@"),
        1,
        &[("no/such/dir", &[("t", "true")])],
        60,
    );
    let f = Farm::new(&[p], 1, 1 << 20);
    let _loop = f.start();
    let (id, _) = f.enqueue("app", "no/such/dir", "t");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Error);
    assert!(
        j.error
            .unwrap()
            .starts_with("subproject directory `no/such/dir` does not exist at ")
    );
    assert!(f.worktrees("app").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subproject_runs_in_its_directory() {
    let p = project_yaml(
        "app",
        Path::new("@SOURCE@"),
        1,
        &[(
            "sub/dir",
            &[("t", "cat file.txt; echo $CRAFTING_SUBPROJECT")],
        )],
        60,
    );
    let f = Farm::new(&[p], 1, 1 << 20);
    let _loop = f.start();
    let (id, _) = f.enqueue("app", "sub/dir", "t");
    f.runner.wake();
    assert_eq!(f.finished(&id).await.status, JobStatus::Succeeded);
    assert!(f.log(&id).contains("x\nsub/dir\n"));
}

fn assert_group_gone(pgid: i64) {
    let left = process::group_members(pgid as i32);
    assert!(
        left.is_empty(),
        "processes of group {pgid} survive: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_group() {
    let f = Farm::new(
        &one(
            "app",
            &[("slow", "sh -c 'sleep 600 & sleep 600 & wait'")],
            1,
        ),
        1,
        1 << 20,
    );
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "slow");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::TimedOut);
    assert!(
        j.error
            .as_deref()
            .unwrap()
            .starts_with("timed out after 1s"),
        "{j:?}"
    );
    assert_group_gone(j.pgid.unwrap());
    assert!(f.worktrees("app").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_ignoring_process_dies_by_sigkill() {
    let f = Farm::new(
        &one(
            "app",
            &[("stubborn", "trap '' TERM; sleep 600 & sleep 600; wait")],
            1,
        ),
        1,
        1 << 20,
    );
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "stubborn");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::TimedOut);
    assert!(
        j.error
            .as_deref()
            .unwrap()
            .contains("(SIGKILL after grace)"),
        "{j:?}"
    );
    assert_group_gone(j.pgid.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running() {
    let f = Farm::new(
        &one(
            "app",
            &[("long", "echo started; sleep 600"), ("other", "true")],
            600,
        ),
        1,
        1 << 20,
    );
    // Not dispatching yet: the job stays queued.
    let (queued, _) = f.enqueue("app", ".", "other");
    assert_eq!(
        f.runner.cancel(&queued, "not needed").await.unwrap(),
        CancelResult::Cancelled
    );
    let j = f.job(&queued);
    assert_eq!(
        (j.status, j.error.as_deref()),
        (JobStatus::Cancelled, Some("not needed"))
    );
    assert_eq!(
        f.runner.cancel(&queued, "again").await.unwrap(),
        CancelResult::AlreadyFinished(JobStatus::Cancelled)
    );
    assert_eq!(
        f.runner.cancel("nope", "x").await.unwrap(),
        CancelResult::NotFound
    );

    let _loop = f.start();
    let (running, _) = f.enqueue("app", ".", "long");
    f.runner.wake();
    let j = f
        .wait_for(&running, "running with a process", |j| {
            j.pgid.is_some() && f.log(&j.id).contains("started")
        })
        .await;
    assert_eq!(
        f.runner.cancel(&running, "operator request").await.unwrap(),
        CancelResult::Stopping
    );
    let done = f.finished(&running).await;
    assert_eq!(
        (done.status, done.error.as_deref()),
        (JobStatus::Cancelled, Some("operator request"))
    );
    assert_group_gone(j.pgid.unwrap());
    assert!(
        f.log(&running)
            .contains("[crafting-table] cancelled: operator request")
    );
    assert!(f.worktrees("app").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_coalescing_under_twenty_jobs() {
    // Every job holds its worker until the test opens its own gate: the test, not
    // timing, decides when each job ends, so the caps are checked at every step.
    let gates = tempfile::tempdir().unwrap();
    let cmd = format!(
        "g={}/$CRAFTING_JOB_ID; while [ ! -f $g ]; do sleep 0.01; done",
        gates.path().display()
    );
    let names: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
    let cmds: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), cmd.as_str())).collect();
    let a = project_yaml("alpha", Path::new("@SOURCE@"), 2, &[(".", &cmds)], 60);
    let b = project_yaml("beta", Path::new("@SOURCE@"), 1, &[(".", &cmds)], 60);
    let f = Farm::new(&[a, b], 3, 1 << 20);
    let mut ids = Vec::new();
    for n in &names {
        ids.push(f.enqueue("alpha", ".", n).0);
        ids.push(f.enqueue("beta", ".", n).0);
    }
    // An identical job to one still queued is the same job.
    let (again, coalesced) = f.enqueue("alpha", ".", "j0");
    assert!(coalesced);
    assert_eq!(again, ids[0]);

    let mut events = f.runner.events().subscribe();
    let _loop = f.start();
    f.runner.wake();
    let (mut alpha_left, mut beta_left) = (10usize, 10usize);
    let mut order: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while alpha_left + beta_left > 0 {
        // The runner fills every slot the caps allow: 2 of alpha, 1 of beta, and
        // never more than the 3 workers.
        let want = (alpha_left.min(2), beta_left.min(1));
        let running = loop {
            let running: Vec<Job> = f.ledger(|l| {
                l.list_jobs(&crafting_table::ledger::JobFilter {
                    status: Some(JobStatus::Running),
                    limit: 100,
                    ..Default::default()
                })
                .unwrap()
            });
            let count = |p: &str| running.iter().filter(|j| j.project == p).count();
            let (a, b) = (count("alpha"), count("beta"));
            assert!(a <= 2 && b <= 1, "caps exceeded: alpha {a}, beta {b}");
            if (a, b) == want {
                break running;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached {want:?}: alpha {a}, beta {b}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
        };
        // Release the oldest running job and wait for its end.
        let job = running
            .iter()
            .min_by_key(|j| (j.started_at, j.id.clone()))
            .unwrap()
            .clone();
        std::fs::write(gates.path().join(&job.id), "").unwrap();
        let done = f.finished(&job.id).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{}", f.log(&job.id));
        if job.project == "alpha" {
            alpha_left -= 1;
        } else {
            beta_left -= 1;
        }
        order.push(job.id);
    }
    assert_eq!(order.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_log_is_capped_and_job_finishes() {
    // 300 MiB of output against a 1 MiB cap.
    let f = Farm::new(
        &one(
            "app",
            &[(
                "noisy",
                "head -c 314572800 /dev/zero | tr '\\0' 'x'; echo; echo done",
            )],
            120,
        ),
        1,
        1 << 20,
    );
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "noisy");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Succeeded);
    let size = std::fs::metadata(f.tmp.path().join(format!("data/logs/{id}.log")))
        .unwrap()
        .len();
    assert!(size < (1 << 20) + 4096, "log is {size} bytes");
    let log = f.log(&id);
    assert!(
        log.contains("[crafting-table] log truncated at 1048576 bytes"),
        "marker present"
    );
    assert!(log.ends_with("exit 0 after ") || log.contains("[crafting-table] exit 0 after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_does_not_change_the_result() {
    let f = Farm::new(&one("app", &[("ok", "true")], 60), 1, 1 << 20);
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let s = seen.clone();
    f.runner.add_hook(Arc::new(move |job, _log, wt| {
        s.lock().unwrap().push((
            job.id.clone(),
            wt.is_some_and(|w| w.join("README.md").exists()),
        ));
        Err("parser exploded".to_owned())
    }));
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "ok");
    f.runner.wake();
    assert_eq!(f.finished(&id).await.status, JobStatus::Succeeded);
    assert_eq!(
        *seen.lock().unwrap(),
        [(id, true)],
        "hook saw the worktree before removal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_is_a_farm_error() {
    let p = "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: /nonexistent/repo.git\n  subprojects:\n    - path: .\n      test: 'true'\n".to_owned();
    let f = Farm::new(&[p], 1, 1 << 20);
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "test");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Error);
    assert!(
        j.error
            .unwrap()
            .starts_with("cannot check out /nonexistent/repo.git at `main`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_fails_orphans_and_kills_their_group() {
    let f = Farm::new(&one("app", &[("ok", "true")], 60), 1, 1 << 20);
    let (id, _) = f.enqueue("app", ".", "ok");
    // Stage what a crash leaves: a running job with a live process group.
    let mut child = std::process::Command::new("setsid")
        .args(["sh", "-c", "sleep 600 & sleep 600; wait"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // As after a crash: the leader and both background sleeps exist.
    let start = loop {
        if let Some(p) = process::proc_info(pid).filter(|p| p.pgrp == pid)
            && process::group_members(pid).len() == 3
        {
            break p.start_time;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    {
        f.ledger(|l| {
            assert!(l.claim_job(&id, "x", 1).unwrap());
            l.set_job_process(&id, pid.into(), start as i64).unwrap();
        });
    }
    assert_eq!(f.runner.sweep().await.unwrap(), 1);
    let _ = child.wait();
    let j = f.job(&id);
    assert_eq!(
        (j.status, j.exit_code, j.error.as_deref()),
        (
            JobStatus::Failed,
            Some(-1),
            Some("runner restart, job orphaned")
        )
    );
    assert!(
        f.log(&id)
            .ends_with("[crafting-table] runner restart, job orphaned\n")
    );
    assert_group_gone(pid.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_kills_a_job_whose_group_was_never_recorded() {
    // A runner killed right after starting a command, before it recorded the
    // process group: the sweep finds the processes by the job id in their
    // environment (and leaves a process of another job alone).
    let f = Farm::new(&one("app", &[("ok", "true")], 60), 1, 1 << 20);
    let (id, _) = f.enqueue("app", ".", "ok");
    // Each group says when its two children exist (forked before the echo).
    let spawn = |job: &str| {
        let mut c = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 600 & sleep 600 & echo ready; wait"])
            .env("CRAFTING_JOB_ID", job)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n");
        c
    };
    let mut ours = spawn(&id);
    let mut other = spawn("another-job");
    let (a, b) = (ours.id() as i32, other.id() as i32);
    assert_eq!(process::group_members(a).len(), 3);
    f.ledger(|l| assert!(l.claim_job(&id, "x", 1).unwrap()));
    assert_eq!(f.runner.sweep().await.unwrap(), 1);
    let _ = ours.wait();
    assert_group_gone(a.into());
    assert_eq!(
        process::group_members(b).len(),
        3,
        "another job's processes live on"
    );
    let leader = process::proc_info(b).unwrap().start_time;
    process::kill_orphaned_group(b, leader);
    let _ = other.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_never_kills_a_reused_pid() {
    let f = Farm::new(&one("app", &[("ok", "true")], 60), 1, 1 << 20);
    let (id, _) = f.enqueue("app", ".", "ok");
    let mut child = std::process::Command::new("setsid")
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let real = loop {
        if let Some(p) = process::proc_info(pid).filter(|p| p.pgrp == pid) {
            break p.start_time;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    {
        f.ledger(|l| {
            l.claim_job(&id, "x", 1).unwrap();
            // The recorded start time differs: this pid now belongs to someone else.
            l.set_job_process(&id, pid.into(), real as i64 - 1).unwrap();
        });
    }
    f.runner.sweep().await.unwrap();
    assert!(
        process::proc_info(pid).is_some_and(|p| p.state != 'Z'),
        "unrelated process left alone"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_prunes_stale_worktrees_and_collects_idle_mirrors() {
    let f = Farm::new(&one("app", &[("ok", "true")], 60), 1, 1 << 20);
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "ok");
    f.runner.wake();
    assert_eq!(f.finished(&id).await.status, JobStatus::Succeeded);
    let ws = f.runner.workspace().clone();
    // A worktree left behind (as by a crash before the sweep existed), and one that
    // belongs to a running job.
    let stale = ws.worktree_path("app", "stale-job");
    let busy = ws.worktree_path("app", "busy-job");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::create_dir_all(&busy).unwrap();
    let mirror = ws.mirror("app");
    assert!(mirror.join("FETCH_HEAD").exists());

    // Young enough: nothing happens.
    let (removed, collected) = ws.gc(&[], Duration::from_secs(3600), Duration::from_secs(3600));
    assert_eq!((removed, collected), (0, 0));
    assert!(stale.exists());

    // Old enough: the stale worktree goes, the running job's stays, the mirror is gc'd.
    let (removed, collected) = ws.gc(&["busy-job".to_owned()], Duration::ZERO, Duration::ZERO);
    assert_eq!((removed, collected), (1, 1));
    assert!(!stale.exists());
    assert!(busy.exists());
    assert!(mirror.join("HEAD").exists(), "the mirror itself is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_queued_started_finished_in_order() {
    let f = Farm::new(
        &one("app", &[("bad", "echo oops; exit 3"), ("ok", "true")], 60),
        1,
        1 << 20,
    );
    let mut events = f.runner.events().subscribe();
    let _loop = f.start();
    let request = |recipe: &str| JobRequest {
        project: "app".into(),
        subproject: None,
        recipe: recipe.into(),
        git_ref: None,
        trigger: Trigger::Api,
        schedule: None,
    };
    let (job, coalesced) = f.runner.enqueue(request("bad")).await.unwrap();
    assert!(!coalesced);
    let finished = Farm::finished_event(&mut events, &job.id).await;
    let FarmEvent::JobFinished {
        job: ended,
        status,
        exit_code,
        findings,
    } = &*finished
    else {
        unreachable!()
    };
    assert_eq!((*status, *exit_code), (JobStatus::Failed, Some(3)));
    assert_eq!(ended.status, JobStatus::Failed);
    assert_eq!(findings.total, ended.findings_count);
    // The job is in the ledger as the event says, before the event was sent.
    assert_eq!(f.job(&job.id).status, JobStatus::Failed);

    // Every event of a second job, in order; none is published for a coalesced
    // enqueue.
    let (mut events, mut waiter) = (f.runner.events().subscribe(), f.runner.events().subscribe());
    let (second, _) = f.runner.enqueue(request("ok")).await.unwrap();
    Farm::finished_event(&mut waiter, &second.id).await;
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.job().is_some_and(|j| j.id == second.id) {
            kinds.push(match &*e {
                FarmEvent::JobQueued { .. } => "queued",
                FarmEvent::JobStarted { .. } => "started",
                FarmEvent::JobFinished { .. } => "finished",
                _ => "other",
            });
        }
    }
    assert_eq!(kinds, ["queued", "started", "finished"]);

    // Unknown commands and refs are refused by the one enqueue path.
    let err = f.runner.enqueue(request("nope")).await.unwrap_err();
    assert!(err.to_string().contains("no command `nope`"), "{err}");
    let mut bad_ref = request("ok");
    bad_ref.git_ref = Some("--upload-pack=x".into());
    let err = f.runner.enqueue(bad_ref).await.unwrap_err();
    assert!(err.to_string().contains("not a valid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_are_shared_and_skipped_for_known_commits() {
    let f = Farm::new(
        &[project_yaml(
            "app",
            Path::new("@SOURCE@"),
            3,
            &[(".", &[("a", "true"), ("b", "true"), ("c", "true")])],
            60,
        )],
        3,
        1 << 20,
    );
    // Three jobs enqueued together, before any fetch: one fetch serves them all.
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|c| f.enqueue("app", ".", c).0)
        .collect();
    // Their fetch starts after they were enqueued.
    next_millisecond();
    let _loop = f.start();
    f.runner.wake();
    for id in &ids {
        let j = f.finished(id).await;
        assert_eq!(
            j.status,
            JobStatus::Succeeded,
            "{:?}\n{}",
            j.error,
            f.log(id)
        );
    }
    assert_eq!(f.runner.workspace().fetch_count(), 1, "one shared fetch");
    // A job for a full sha the mirror holds does not fetch at all.
    let sha = f.job(&ids[0]).sha.unwrap();
    let id = f.enqueue_ref("app", "a", &sha);
    f.runner.wake();
    let done = f.finished(&id).await;
    assert_eq!(done.sha.as_deref(), Some(sha.as_str()));
    assert_eq!(
        f.runner.workspace().fetch_count(),
        1,
        "no fetch for a known sha"
    );
    // A branch job enqueued now fetches again (the last fetch is older than it).
    next_millisecond();
    let (id, _) = f.enqueue("app", ".", "b");
    f.runner.wake();
    f.finished(&id).await;
    assert_eq!(f.runner.workspace().fetch_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_job_makes_its_commit_on_a_host_that_lacks_it() {
    // The patch loop made a commit from a diff in its own mirror (here: another
    // workspace); this runner's mirror never saw it. The job carries the change:
    // the runner makes the same commit and runs the command at it.
    let f = Farm::new(
        &one(
            "app",
            &[("check", "cat README.md; git log -1 --format=%s")],
            60,
        ),
        1,
        1 << 20,
    );
    let source = f.source_path();
    let base = crate::helpers::git(&source, &["rev-parse", "HEAD"]);
    let base = base.trim().to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Workspace::new(elsewhere.path().to_owned());
    let url = source.display().to_string();
    assert!(other.ensure_commit("app", &url, &base).unwrap());
    let mut patch = PatchCommit {
        base: base.clone(),
        commit: String::new(),
        diff: "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-hello\n+hello, patched\n".into(),
        message: "fix: greet\n\nDrafted for a test.".into(),
        name: "Patch Bot".into(),
        email: "bot@farm.lan".into(),
        time: 1_790_000_000,
        keep_as: "refs/crafting-table/patches/7".into(),
    };
    patch.commit = other.make_patch_commit("app", "patch-7", &patch).unwrap();
    assert!(!f.runner.workspace().has_commit("app", &patch.commit));

    let (job, _) = f
        .runner
        .enqueue_with_patch(
            JobRequest {
                project: "app".into(),
                subproject: None,
                recipe: "check".into(),
                git_ref: Some(patch.commit.clone()),
                trigger: Trigger::PatchVerify,
                schedule: None,
            },
            Some(patch.clone()),
        )
        .await
        .unwrap();
    let _run = f.start();
    let j = f.finished(&job.id).await;
    let log = f.log(&job.id);
    assert_eq!(j.status, JobStatus::Succeeded, "{log}");
    assert_eq!(j.sha.as_deref(), Some(patch.commit.as_str()), "{log}");
    assert!(log.contains("hello, patched\nfix: greet\n"), "{log}");

    // A change that makes another commit (here: another time) is refused, not
    // verified in place of the loop's.
    let mut forged = patch.clone();
    forged.time += 1;
    forged.keep_as = "refs/crafting-table/patches/8".into();
    let (job, _) = f
        .runner
        .enqueue_with_patch(
            JobRequest {
                project: "app".into(),
                subproject: None,
                recipe: "check".into(),
                git_ref: Some("0123456789abcdef0123456789abcdef01234567".into()),
                trigger: Trigger::PatchVerify,
                schedule: None,
            },
            Some(PatchCommit {
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                ..forged
            }),
        )
        .await
        .unwrap();
    f.runner.wake();
    let j = f.finished(&job.id).await;
    assert_eq!(j.status, JobStatus::Error);
    assert!(
        j.error
            .as_deref()
            .unwrap_or("")
            .contains("not verifying another commit"),
        "{j:?}"
    );
}
