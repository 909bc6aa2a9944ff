//! API latency with a large ledger: 100,000 jobs and 1,000,000 findings, generated
//! straight into SQLite, then the real `crafting-table serve` binary on loopback:
//! - a closed-loop load of 16 concurrent clients per endpoint (p50/p99, req/s);
//! - an open-loop load at a fixed 1,000 requests/s per endpoint, latency counted
//!   from when each request was due (so a stalled server cannot hide its queue);
//!   for `GET /jobs?limit=50`, `GET /jobs/{id}` and `GET /jobs/{id}/findings`;
//! - resident memory of `serve` at rest.
//!
//! Then a second `serve` on a one-file repository: a no-op job from `POST` to the
//! end of its followed log (p50/p90, sequential), and memory after many no-op jobs
//! (`CRAFTING_BENCH_JOBS`, default 10,000; `CRAFTING_BENCH_SMAPS=1` also lists the
//! mappings that hold the most resident memory then).
//!
//! Run: `cargo bench --bench api`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FINDINGS_PER_JOB: usize = 10;
const CLIENTS: usize = 16;
const SECONDS: u64 = 5;
const OPEN_RATE: u64 = 1000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `RssAnon` and `RssFile` of `pid`, in MiB, as text.
fn rss_parts(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    format!(
        "anonymous {:.1} MiB, file-backed {:.1} MiB",
        field("RssAnon:"),
        field("RssFile:") + field("RssShmem:")
    )
}

fn generate(data: &std::path::Path, jobs: usize) {
    // Create and migrate through the library, then bulk-load.
    let ledger =
        crafting_table::ledger::Ledger::open(&data.join("ledger.sqlite3")).expect("ledger");
    drop(ledger);
    let mut c = rusqlite::Connection::open(data.join("ledger.sqlite3")).expect("open");
    let tx = c.transaction().expect("tx");
    tx.execute(
        "INSERT INTO projects (name, source, spec_json, owner_token, created_at, updated_at)
         VALUES ('big', 'api', '{\"git_url\":\"/srv/big.git\",\"subprojects\":[{\"path\":\".\",\"test\":\"true\"}]}', 'admin', 0, 0)",
        [],
    )
    .expect("project");
    {
        let mut job = tx
            .prepare(
                "INSERT INTO jobs (id, project_name, subproject, recipe, trigger, git_ref, sha, status, exit_code,
                   recipe_snapshot_json, findings_count, created_at, started_at, finished_at)
                 VALUES (?1, 'big', '.', 'lint', 'api', 'main', 'abc', 'failed', 1, '{}', ?2, ?3, ?3, ?3 + 1000)",
            )
            .expect("prepare");
        let mut finding = tx
            .prepare(
                "INSERT INTO findings (job_id, tool, kind, severity, file, line, col, code, message, fingerprint,
                   location_hash, baseline_state, created_at)
                 VALUES (?1, 'clippy', 'lint', 'warn', ?2, ?3, 5, 'clippy::needless_return',
                   'unneeded `return` statement', ?4, ?4, 'unchanged', ?5)",
            )
            .expect("prepare");
        for i in 0..jobs {
            let id = format!("{i:032x}");
            let t = 1_700_000_000_000i64 + i as i64 * 1000;
            job.execute(rusqlite::params![id, FINDINGS_PER_JOB as i64, t])
                .expect("job");
            for k in 0..FINDINGS_PER_JOB {
                finding
                    .execute(rusqlite::params![
                        id,
                        format!("src/m{k}.rs"),
                        (i % 500) as i64 + 1,
                        format!("{:016x}", i * 31 + k),
                        t
                    ])
                    .expect("finding");
            }
        }
    }
    tx.commit().expect("commit");
}

/// How a request authenticates: an `Authorization` bearer or a page's session cookie.
#[derive(Clone)]
struct Auth(&'static str, String);

impl Auth {
    fn bearer(b: &str) -> Auth {
        Auth("authorization", format!("Bearer {b}"))
    }
}

async fn load(base: &str, auth: &Auth, paths: &[String]) -> (f64, f64, f64, usize) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, auth) = (client.clone(), base.to_owned(), auth.clone());
        let paths = paths.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .header(auth.0, &auth.1)
                    .send()
                    .await
                    .expect("send");
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await.expect("body");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                i += CLIENTS;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_by(f64::total_cmp);
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (
        p(0.5),
        p(0.99),
        all.len() as f64 / SECONDS as f64,
        all.len(),
    )
}

/// Sends `OPEN_RATE` requests per second for `SECONDS`, each on its own task at
/// its due time; latency is from the due time to the end of the response body.
async fn open_loop(base: &str, bearer: &str, paths: &[String]) -> (f64, f64, f64, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let total = (OPEN_RATE * SECONDS) as usize;
    let every = Duration::from_secs(1) / OPEN_RATE as u32;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + every * i as u32;
        let (client, url, bearer) = (
            client.clone(),
            format!("{base}{}", paths[i % paths.len()]),
            bearer.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let r = client
                .get(url)
                .bearer_auth(&bearer)
                .send()
                .await
                .expect("send");
            assert!(r.status().is_success(), "{}", r.status());
            let _ = r.bytes().await.expect("body");
            due.elapsed().as_secs_f64() * 1e3
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.push(t.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99), all.len() as f64 / secs, all.len())
}

fn main() {
    if std::env::var("CRAFTING_BENCH_ONLY").as_deref() == Ok("jobs") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        no_op_jobs(&rt);
        return;
    }
    // Ledger sizes: 100,000 jobs unless CRAFTING_BENCH_LEDGER_JOBS lists others
    // (e.g. 10000,100000,1000000 for the README's scaling table).
    let sizes: Vec<usize> = std::env::var("CRAFTING_BENCH_LEDGER_JOBS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for jobs in sizes {
        ledger_load(&rt, jobs);
    }
    no_op_jobs(&rt);
}

/// The API on a generated ledger of `jobs` jobs with ten findings each.
fn ledger_load(rt: &tokio::runtime::Runtime, jobs: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(tmp.path().join("registry")).expect("mkdir");
    let t = Instant::now();
    generate(&data, jobs);
    println!(
        "generated {jobs} jobs and {} findings in {:.1} s",
        jobs * FINDINGS_PER_JOB,
        t.elapsed().as_secs_f64()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("serve")
        .current_dir(tmp.path())
        .env("CRAFTING_DATA_DIR", &data)
        .env("CRAFTING_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    rt.block_on(async {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(child.id());
    // The generated ledger had no tokens: serve minted the admin bearer.
    let bearer = std::fs::read_to_string(data.join("admin-bearer.txt"))
        .expect("bearer")
        .trim()
        .to_owned();
    let ids: Vec<String> = (0..jobs)
        .step_by((jobs / 100).max(1))
        .map(|i| format!("{i:032x}"))
        .collect();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("GET /jobs?limit=50", vec!["/jobs?limit=50".to_owned()]),
        (
            "GET /jobs/{id}",
            ids.iter().map(|i| format!("/jobs/{i}")).collect(),
        ),
        (
            "GET /jobs/{id}/findings",
            ids.iter().map(|i| format!("/jobs/{i}/findings")).collect(),
        ),
    ];
    println!(
        "serve on loopback, {CLIENTS} concurrent clients, {SECONDS} s each; idle RSS {:.1} MiB",
        idle as f64 / 1024.0
    );
    for (name, paths) in &cases {
        let (p50, p99, rps, n) = rt.block_on(load(&base, &Auth::bearer(&bearer), paths));
        println!(
            "  {name:<26} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   {rps:>8.0} req/s   ({n} requests)"
        );
    }
    // The web pages, logged in with a session cookie.
    let cookie = rt.block_on(async {
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .post(format!("{base}/ui/login"))
            .form(&[("token", bearer.as_str())])
            .send()
            .await
            .expect("login");
        let c = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        c.split(';').next().unwrap_or_default().to_owned()
    });
    let pages: Vec<(&str, Vec<String>)> = vec![
        ("page /ui/", vec!["/ui/".to_owned()]),
        ("page /ui/projects/big", vec!["/ui/projects/big".to_owned()]),
        (
            "page /ui/jobs/{id}",
            ids.iter().map(|i| format!("/ui/jobs/{i}")).collect(),
        ),
    ];
    for (name, paths) in &pages {
        let (p50, p99, rps, n) = rt.block_on(load(&base, &Auth("cookie", cookie.clone()), paths));
        println!(
            "  {name:<26} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   {rps:>8.0} req/s   ({n} requests)"
        );
    }
    println!(
        "open loop, {OPEN_RATE} requests/s offered, {SECONDS} s each (latency from the due time)"
    );
    for (name, paths) in &cases {
        let (p50, p99, rps, n) = rt.block_on(open_loop(&base, &bearer, paths));
        println!(
            "  {name:<26} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   {rps:>8.0} req/s   ({n} requests)"
        );
    }
    println!(
        "RSS after load {:.1} MiB",
        rss_kib(child.id()) as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The mappings of `pid` holding the most resident memory (where it went).
fn print_smaps(pid: u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            name = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            if name.is_empty() {
                name = "[anon]".to_owned();
            }
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            maps.push((kb, name.clone()));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    println!("  largest resident mappings:");
    for (kb, name) in maps.iter().take(12) {
        println!("    {kb:>7} kB  {name}");
    }
}

/// `serve` with one project on a one-file repository: POST → end of the followed
/// log of a no-op job, then memory after many jobs.
fn no_op_jobs(rt: &tokio::runtime::Runtime) {
    let many: usize = std::env::var("CRAFTING_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let git = |args: &[&str]| {
        assert!(
            Command::new("git")
                .current_dir(&repo)
                .args(args)
                .env("GIT_AUTHOR_NAME", "b")
                .env("GIT_AUTHOR_EMAIL", "b@example.com")
                .env("GIT_COMMITTER_NAME", "b")
                .env("GIT_COMMITTER_EMAIL", "b@example.com")
                .output()
                .expect("git")
                .status
                .success()
        );
    };
    git(&["init", "-q", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "one file\n").expect("write");
    git(&["add", "-A"]);
    git(&["commit", "-qm", "one"]);
    let reg = tmp.path().join("registry");
    std::fs::create_dir_all(&reg).expect("mkdir");
    let cmds: String = (0..100)
        .map(|i| format!("        n{i}: 'true'\n"))
        .collect();
    std::fs::write(
        reg.join("p.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata: {{name: one}}\nspec:\n  git_url: {}\n  max_concurrent_jobs: 64\n  subprojects:\n    - path: .\n      commands:\n{cmds}",
            repo.display()
        ),
    )
    .expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("serve")
        .current_dir(tmp.path())
        .env("CRAFTING_DATA_DIR", &data)
        .env("CRAFTING_REGISTRY", &reg)
        .env("CRAFTING_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    // The banner's last line comes after the first reconcile.
    let mut banner = String::new();
    {
        use std::io::BufRead as _;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            banner += &line;
            if line.trim_start().starts_with("try") {
                break;
            }
        }
        std::thread::spawn(move || for _ in out.lines() {});
    }
    let sandbox = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("sandbox"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let base = format!("http://127.0.0.1:{port}");
    let bearer = std::fs::read_to_string(data.join("admin-bearer.txt"))
        .expect("bearer")
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let run_ref = |cmd: String, git_ref: String| {
        let (client, base, bearer) = (client.clone(), base.clone(), bearer.clone());
        async move {
            let v: serde_json::Value = client
                .post(format!("{base}/projects/one/jobs"))
                .bearer_auth(&bearer)
                .json(&serde_json::json!({"recipe": cmd, "ref": git_ref}))
                .send()
                .await
                .expect("post")
                .json()
                .await
                .expect("json");
            let id = v["job_id"].as_str().expect("job_id").to_owned();
            let _ = client
                .get(format!("{base}/jobs/{id}/log?follow=1"))
                .bearer_auth(&bearer)
                .send()
                .await
                .expect("follow")
                .bytes()
                .await;
            id
        }
    };
    let run = |cmd: String| run_ref(cmd, "main".to_owned());
    let mut lat = Vec::new();
    rt.block_on(async {
        run("n0".into()).await; // the mirror and the warm worktree
        for i in 0..200 {
            let t = Instant::now();
            run(format!("n{}", i % 100)).await;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    });
    // The same by full sha: no fetch is needed.
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
    let mut by_sha = Vec::new();
    rt.block_on(async {
        for i in 0..200 {
            let t = Instant::now();
            run_ref(format!("n{}", i % 100), sha.clone()).await;
            by_sha.push(t.elapsed().as_secs_f64() * 1e3);
        }
    });
    println!(
        "no-op job on a one-file repository, POST → end of its followed log ({} sequential each; sandbox: {sandbox})",
        lat.len()
    );
    for (what, v) in [
        ("by branch (fetches)", &mut lat),
        ("by full sha (no fetch)", &mut by_sha),
    ] {
        v.sort_by(f64::total_cmp);
        let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        println!(
            "  {what:<24} p50 {:>7.1} ms   p90 {:>7.1} ms",
            p(0.5),
            p(0.9)
        );
    }
    // Where those jobs' time went, from the farm's own phase counters.
    let metrics = rt.block_on(async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    });
    let value = |name: &str, phase: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{phase=\"{phase}\"}} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let cells: Vec<String> = crafting_table::runner::PHASES
        .iter()
        .map(|ph| {
            let n = value("crafting_job_phase_seconds_count", ph).max(1.0);
            format!(
                "{ph} {:.1}",
                value("crafting_job_phase_seconds_sum", ph) / n * 1e3
            )
        })
        .collect();
    println!("  phases, mean ms: {}", cells.join(" · "));
    let rest = rss_kib(child.id());
    // Many jobs, 100 at a time (distinct commands: nothing coalesces).
    let t = Instant::now();
    rt.block_on(async {
        for b in 0..many.div_ceil(100) {
            let n = 100.min(many - b * 100);
            let batch: Vec<_> = (0..n).map(|i| tokio::spawn(run(format!("n{i}")))).collect();
            for h in batch {
                h.await.expect("job");
            }
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let busy = (rss_kib(child.id()), rss_parts(child.id()));
    // At rest again: idle blocking threads end after 10 s.
    std::thread::sleep(Duration::from_secs(15));
    println!(
        "  {many} no-op jobs in {secs:.1} s ({:.1} jobs/s); serve RSS at rest {:.1} MiB, right after them {:.1} MiB ({}), at rest 15 s later {:.1} MiB ({})",
        many as f64 / secs,
        rest as f64 / 1024.0,
        busy.0 as f64 / 1024.0,
        busy.1,
        rss_kib(child.id()) as f64 / 1024.0,
        rss_parts(child.id())
    );
    if std::env::var_os("CRAFTING_BENCH_SMAPS").is_some() {
        print_smaps(child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
}
