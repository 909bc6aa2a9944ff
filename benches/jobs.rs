//! Per-job overhead of a no-op command (`true`) on a repository of ~1,000 files,
//! fresh and warm worktrees side by side, each against its floor — the same git
//! and shell work done by hand on a bare mirror:
//! - fresh: `git fetch` + `git worktree add --detach` + `sh -c true` +
//!   `git worktree remove` (jobs by branch, so the farm fetches too);
//! - warm: `git checkout --force --detach` + `git clean -ffdx` + `sh -c true` in a
//!   kept worktree (jobs by full sha, which needs no fetch).
//!
//! The four are interleaved round by round (this disk is slow to create files right
//! after deleting many, so back-to-back phases would measure the disk). Jobs run
//! with the job sandbox as `serve` sets it by default (bwrap when it works here,
//! kept running per warm worktree; `CRAFTING_BENCH_ZYGOTE=off`: one bwrap per job,
//! `CRAFTING_BENCH_SANDBOX=none`: no sandbox); a bwrap's own start-up cost is
//! measured alone against a bare `sh -c true`.
//! Then where a job's time goes (the runner's phases), and no-op jobs per second.
//!
//! Run: `cargo bench --bench jobs`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crafting_table::enqueue::{Catalog, JobRequest};
use crafting_table::ledger::{Ledger, Trigger};
use crafting_table::reconciler::reconcile_once;
use crafting_table::registry::Registry;
use crafting_table::runner::{PHASES, Runner, RunnerConfig, sandbox};
use crafting_table::workspace::Workspace;

const ROUNDS: usize = 21;
const THROUGHPUT_JOBS: usize = 100;

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

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn sh_true(cwd: &Path, bwrap: Option<&[String]>) {
    let mut c = match bwrap {
        Some(args) => {
            let mut c = Command::new("bwrap");
            c.args(args).arg("--chdir").arg(cwd).arg("/bin/sh");
            c
        }
        None => Command::new("sh"),
    };
    assert!(
        c.args(["-c", "true"])
            .current_dir(cwd)
            .status()
            .expect("sh")
            .success()
    );
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
    for (name, extra) in [("warm", ""), ("fresh", "      workspace: fresh\n")] {
        std::fs::write(
            reg.join(format!("{name}.yaml")),
            format!(
                "apiVersion: crafting-table/v1\nkind: Project\nmetadata: {{name: {name}}}\nspec:\n  git_url: {}\n  max_concurrent_jobs: 64\n  subprojects:\n    - path: .\n{extra}      commands:\n{cmds}",
                repo.display()
            ),
        )
        .expect("write");
    }
    let data = tmp.path().join("data");
    let mut ledger = Ledger::open(&data.join("ledger.sqlite3")).expect("ledger");
    reconcile_once(&Registry::Dir(reg.clone()), &mut ledger, 0).expect("reconcile");
    let db = crafting_table::ledger::Db::with_writer(ledger, 2).expect("readers");
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    // The sandbox as `serve` sets it by default.
    let off = std::env::var("CRAFTING_BENCH_SANDBOX").as_deref() == Ok("none");
    let kept_sandbox = !off && std::env::var("CRAFTING_BENCH_ZYGOTE").as_deref() != Ok("off");
    let (mode, sandbox_note) = match sandbox::probe().and_then(|()| {
        if off {
            Err("CRAFTING_BENCH_SANDBOX=none".to_owned())
        } else {
            Ok(())
        }
    }) {
        Ok(()) => (
            sandbox::Mode::Bwrap(sandbox::Settings {
                hide_dirs: vec![data.clone()],
                // As `serve`: warm worktrees keep a sandbox between jobs, unless
                // CRAFTING_BENCH_ZYGOTE=off.
                zygote: kept_sandbox.then(|| PathBuf::from(env!("CARGO_BIN_EXE_crafting-table"))),
                ..Default::default()
            }),
            if kept_sandbox {
                "bwrap (the default), kept per warm worktree".to_owned()
            } else {
                "bwrap, one per job (CRAFTING_BENCH_ZYGOTE=off)".to_owned()
            },
        ),
        Err(why) => (sandbox::Mode::None, format!("none: {why}")),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runner = Runner::new(
        RunnerConfig {
            workers,
            logs_dir: data.join("logs"),
            log_cap: 1 << 20,
            kill_grace: Duration::from_secs(10),
            registry_base: reg,
            sandbox: mode.clone(),
            secrets_file: None,
            name: "local".to_owned(),
            lease: None,
        },
        db.clone(),
        Workspace::new(data.join("workspace")),
        crafting_table::clock::system(),
        crafting_table::events::Events::new(),
    );
    crafting_table::findings::install(&runner);
    let r = runner.clone();
    rt.spawn(async move { r.run().await });

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
    let enqueue = |project: &str, cmd: &str, git_ref: &str| -> String {
        db.write_blocking(|l| {
            let new = Catalog::new(l.snapshot().expect("snapshot"))
                .new_job(&JobRequest {
                    project: project.into(),
                    subproject: Some(".".into()),
                    recipe: cmd.into(),
                    git_ref: Some(git_ref.into()),
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
    let events = runner.events().clone();
    // Enqueue, wake, and wait for the job's `JobFinished` event.
    let run_one = |project: &str, cmd: &str, git_ref: &str| {
        let mut rx = events.subscribe();
        let id = enqueue(project, cmd, git_ref);
        runner.wake();
        rt.block_on(async {
            loop {
                let e = rx.recv().await.expect("events");
                if matches!(&*e, crafting_table::events::FarmEvent::JobFinished { job, .. } if job.id == id)
                {
                    break;
                }
            }
        });
    };

    // The floors' mirror (a bare clone, as the farm keeps one) and warm worktree.
    let mirror = tmp.path().join("floor.git");
    let repo_s = repo.to_str().expect("utf8");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            repo_s,
            mirror.to_str().expect("utf8"),
        ],
    );
    let kept = tmp.path().join("floor-warm");
    git(
        &mirror,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            kept.to_str().expect("utf8"),
            &sha,
        ],
    );
    // The sandbox's arguments for a job in the kept floor worktree.
    let bwrap_args: Option<Vec<String>> = match &mode {
        sandbox::Mode::Bwrap(settings) => {
            let home = tmp.path().join("home");
            std::fs::create_dir_all(&home).expect("mkdir");
            Some(sandbox::bwrap_args(
                settings,
                &sandbox::JobMounts {
                    worktree: kept.clone(),
                    mirror: mirror.clone(),
                    cache: home.clone(),
                    home,
                    network: true,
                },
            ))
        }
        sandbox::Mode::None => None,
    };

    // Warm-up: the first jobs create the mirrors and the warm worktree.
    run_one("warm", "n0", "main");
    run_one("fresh", "n0", "main");

    let phases_before = runner.phase_stats().recent.len();
    let (mut farm_fresh, mut floor_fresh, mut farm_warm, mut floor_warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sh_plain, mut sh_bwrap) = (Vec::new(), Vec::new());
    let mut fresh_phases = Vec::new();
    let mut warm_phases = Vec::new();
    for i in 0..ROUNDS {
        let cmd = format!("n{}", i % THROUGHPUT_JOBS.max(ROUNDS));
        let t = Instant::now();
        run_one("fresh", &cmd, "main");
        farm_fresh.push(ms(t));
        fresh_phases.push(
            runner
                .phase_stats()
                .recent
                .back()
                .copied()
                .unwrap_or_default(),
        );

        let wt: PathBuf = tmp.path().join(format!("floor-wt-{i}"));
        let wt_s = wt.to_str().expect("utf8");
        let t = Instant::now();
        git(
            &mirror,
            &["fetch", "-q", repo_s, "+refs/heads/*:refs/remotes/origin/*"],
        );
        git(&mirror, &["worktree", "add", "-q", "--detach", wt_s, &sha]);
        sh_true(&wt, None);
        git(&mirror, &["worktree", "remove", "--force", wt_s]);
        floor_fresh.push(ms(t));

        let t = Instant::now();
        run_one("warm", &cmd, &sha);
        farm_warm.push(ms(t));
        warm_phases.push(
            runner
                .phase_stats()
                .recent
                .back()
                .copied()
                .unwrap_or_default(),
        );

        let t = Instant::now();
        git(&kept, &["checkout", "--force", "--detach", "--quiet", &sha]);
        git(&kept, &["clean", "-ffdxq"]);
        sh_true(&kept, None);
        floor_warm.push(ms(t));

        let t = Instant::now();
        sh_true(&kept, None);
        sh_plain.push(ms(t));
        if let Some(args) = &bwrap_args {
            let t = Instant::now();
            sh_true(&kept, Some(args));
            sh_bwrap.push(ms(t));
        }
    }
    assert_eq!(
        runner.phase_stats().recent.len(),
        phases_before + 2 * ROUNDS,
        "every job timed"
    );
    let stats = runner.workspace().pool_stats();

    println!(
        "no-op job on a 1,000-file repository ({ROUNDS} interleaved rounds; sandbox: {sandbox_note})"
    );
    let row = |what: &str, v: &[f64]| {
        println!(
            "  {what:<52} p50 {:>7.1} ms   p90 {:>7.1} ms",
            percentile(v, 0.5),
            percentile(v, 0.9)
        );
    };
    row(
        "fresh: farm (enqueue → JobFinished, by branch)",
        &farm_fresh,
    );
    row(
        "fresh: floor (fetch + worktree add + sh + remove)",
        &floor_fresh,
    );
    println!(
        "  {:<52} {:.2}x",
        "fresh: farm/floor (p50)",
        percentile(&farm_fresh, 0.5) / percentile(&floor_fresh, 0.5)
    );
    row("warm:  farm (enqueue → JobFinished, by sha)", &farm_warm);
    row("warm:  floor (checkout -f + clean -ffdx + sh)", &floor_warm);
    println!(
        "  {:<52} {:.2}x",
        "warm:  farm/floor (p50)",
        percentile(&farm_warm, 0.5) / percentile(&floor_warm, 0.5)
    );
    println!(
        "  warm worktrees: {} reused, {} discarded, {} idle, {} resets skipped (untouched)",
        stats.reused, stats.discarded, stats.idle, stats.resets_skipped
    );
    row("sh -c true", &sh_plain);
    if !sh_bwrap.is_empty() {
        row("bwrap … sh -c true (the job sandbox)", &sh_bwrap);
        let cost = percentile(&sh_bwrap, 0.5) - percentile(&sh_plain, 0.5);
        println!(
            "  {:<52} {cost:.1} ms per job",
            "sandbox start-up cost (p50 difference)"
        );
        if kept_sandbox {
            println!(
                "  warm jobs start in their worktree's kept sandbox: that cost is paid once per worktree"
            );
        } else {
            println!(
                "  {:<52} {:.2}x",
                "warm:  farm without that cost / floor (p50)",
                (percentile(&farm_warm, 0.5) - cost) / percentile(&floor_warm, 0.5)
            );
        }
    }
    for (what, samples) in [("fresh", &fresh_phases), ("warm", &warm_phases)] {
        let cells: Vec<String> = PHASES
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let v: Vec<f64> = samples.iter().map(|p| p[k] * 1e3).collect();
                format!("{name} {:.1}", percentile(&v, 0.5))
            })
            .collect();
        println!("  phases, {what:<5} p50 ms: {}", cells.join(" · "));
    }

    // Throughput: distinct no-op commands (nothing coalesces), warm, by sha.
    let mut rx = events.subscribe();
    let t = Instant::now();
    let ids: std::collections::HashSet<String> = (0..THROUGHPUT_JOBS)
        .map(|i| enqueue("warm", &format!("n{i}"), &sha))
        .collect();
    runner.wake();
    rt.block_on(async {
        let mut left = ids.len();
        while left > 0 {
            let e = rx.recv().await.expect("events");
            if matches!(&*e, crafting_table::events::FarmEvent::JobFinished { job, .. } if ids.contains(&job.id))
            {
                left -= 1;
            }
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let skipped = runner.workspace().pool_stats().resets_skipped - stats.resets_skipped;
    println!(
        "throughput: {THROUGHPUT_JOBS} warm no-op jobs with {workers} workers in {secs:.2} s = {:.1} jobs/s ({skipped} resets skipped)",
        THROUGHPUT_JOBS as f64 / secs
    );
    rt.block_on(runner.shutdown("bench done"));
}
