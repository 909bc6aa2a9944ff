//! Per-job overhead of a no-op recipe (`true`) on a repository of ~1,000 files,
//! against the floor: the same git and shell work done by hand (`git worktree add
//! --detach` + `sh -c true` + `git worktree remove`) on a bare mirror. Farm and floor
//! runs are interleaved (this disk is slow to create files right after deleting
//! many, so back-to-back phases would measure the disk). Then no-op jobs per second
//! with the default worker count.
//!
//! Run: `cargo bench --bench jobs`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crafting_table::enqueue::{Catalog, JobRequest};
use crafting_table::ledger::{Ledger, Trigger};
use crafting_table::reconciler::reconcile_once;
use crafting_table::registry::Registry;
use crafting_table::runner::{Runner, RunnerConfig};
use crafting_table::workspace::Workspace;

const ROUNDS: usize = 15;
const THROUGHPUT_JOBS: usize = 60;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.com")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.com")
        .output()
        .expect("git")
        .status
        .success();
    assert!(ok, "git {args:?}");
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    for i in 0..1000 {
        let d = repo.join(format!("src/m{}", i % 40));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(20),
        )
        .expect("write");
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "1000 files"]);

    let reg = tmp.path().join("registry");
    std::fs::create_dir_all(&reg).expect("mkdir");
    let mut cmds = String::new();
    for i in 0..THROUGHPUT_JOBS.max(ROUNDS) {
        cmds += &format!("        n{i}: 'true'\n");
    }
    std::fs::write(
        reg.join("p.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata: {{name: bench}}\nspec:\n  git_url: {}\n  max_concurrent_jobs: 64\n  subprojects:\n    - path: .\n      commands:\n{cmds}",
            repo.display()
        ),
    )
    .expect("write");
    let mut ledger = Ledger::open(&tmp.path().join("data/ledger.sqlite3")).expect("ledger");
    reconcile_once(&Registry::Dir(reg.clone()), &mut ledger, 0).expect("reconcile");
    let db = crafting_table::ledger::Db::with_writer(ledger, 2).expect("readers");
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runner = Runner::new(
        RunnerConfig {
            workers,
            logs_dir: tmp.path().join("data/logs"),
            log_cap: 1 << 20,
            kill_grace: Duration::from_secs(10),
            registry_base: reg,
            sandbox: Default::default(),
            secrets_file: None,
        },
        db.clone(),
        Workspace::new(tmp.path().join("data/workspace")),
        crafting_table::clock::system(),
        crafting_table::events::Events::new(),
    );
    crafting_table::findings::install(&runner);
    let r = runner.clone();
    rt.spawn(async move { r.run().await });

    let enqueue = |cmd: &str| -> String {
        db.write_blocking(|l| {
            let new = Catalog::new(l.snapshot().expect("snapshot"))
                .new_job(&JobRequest {
                    project: "bench".into(),
                    subproject: Some(".".into()),
                    recipe: cmd.into(),
                    git_ref: Some("main".into()),
                    trigger: Trigger::Api,
                    schedule: None,
                })
                .expect("resolve");
            let (job, _) = l
                .enqueue_job(&new, chrono::Utc::now().timestamp_millis())
                .expect("enqueue");
            job.id
        })
    };
    let finished = |id: &str| {
        db.read_blocking(|l| l.get_job(id).expect("get"))
            .is_some_and(|j| j.status.is_terminal())
    };

    // The floor's mirror: a bare clone, as the farm keeps one.
    let mirror = tmp.path().join("floor.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().expect("utf8"),
            mirror.to_str().expect("utf8"),
        ],
    );
    let sha = String::from_utf8(
        Command::new("git")
            .current_dir(&repo)
            .args(["rev-parse", "HEAD"])
            .output()
            .expect("git")
            .stdout,
    )
    .expect("utf8")
    .trim()
    .to_owned();

    // Warm-up: the first farm job creates the mirror.
    let id = enqueue("n0");
    runner.wake();
    while !finished(&id) {
        std::thread::sleep(Duration::from_millis(2));
    }

    let (mut farm, mut floor) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let t = Instant::now();
        let id = enqueue(&format!("n{}", i % THROUGHPUT_JOBS.max(ROUNDS)));
        runner.wake();
        while !finished(&id) {
            std::thread::sleep(Duration::from_millis(1));
        }
        farm.push(t.elapsed().as_secs_f64() * 1e3);

        let wt = tmp.path().join(format!("floor-wt-{i}"));
        let t = Instant::now();
        git(
            &mirror,
            &[
                "fetch",
                "-q",
                repo.to_str().expect("utf8"),
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        );
        git(
            &mirror,
            &[
                "worktree",
                "add",
                "-q",
                "--detach",
                wt.to_str().expect("utf8"),
                &sha,
            ],
        );
        assert!(
            Command::new("sh")
                .args(["-c", "true"])
                .current_dir(&wt)
                .status()
                .expect("sh")
                .success()
        );
        git(
            &mirror,
            &["worktree", "remove", "--force", wt.to_str().expect("utf8")],
        );
        floor.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (f50, f90) = (
        percentile(&mut farm.clone(), 0.5),
        percentile(&mut farm, 0.9),
    );
    let (h50, h90) = (
        percentile(&mut floor.clone(), 0.5),
        percentile(&mut floor, 0.9),
    );
    println!("no-op job on a 1,000-file repository ({ROUNDS} interleaved rounds)");
    println!(
        "  farm  (enqueue → finished)                     p50 {f50:>7.1} ms   p90 {f90:>7.1} ms"
    );
    println!(
        "  floor (fetch + worktree add + sh + remove)     p50 {h50:>7.1} ms   p90 {h90:>7.1} ms"
    );
    println!(
        "  ratio farm/floor (p50)                         {:.2}x",
        f50 / h50
    );

    let t = Instant::now();
    let ids: Vec<String> = (0..THROUGHPUT_JOBS)
        .map(|i| enqueue(&format!("n{i}")))
        .collect();
    runner.wake();
    for id in &ids {
        while !finished(id) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // Where the time goes: run time (claim → finished) per job.
    let mut run_ms: Vec<f64> = ids
        .iter()
        .filter_map(|id| {
            let j = db.read_blocking(|l| l.get_job(id).expect("get"))?;
            Some((j.finished_at? - j.started_at?) as f64)
        })
        .collect();
    println!(
        "  per job, claim → finished: p50 {:.0} ms, p90 {:.0} ms",
        percentile(&mut run_ms.clone(), 0.5),
        percentile(&mut run_ms, 0.9)
    );
    println!(
        "throughput: {THROUGHPUT_JOBS} no-op jobs with {workers} workers in {secs:.2} s = {:.1} jobs/s",
        THROUGHPUT_JOBS as f64 / secs
    );
    rt.block_on(runner.shutdown("bench done"));
}
