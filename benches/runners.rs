//! Throughput of several processes on one PostgreSQL ledger: no-op jobs (`true`)
//! per second drained by 1, 2 and 4 `crafting-table runner` processes (2 workers
//! each) behind one `serve` with no workers, beside one `serve` on SQLite with 2
//! workers (the single-process farm). All real binaries, on this machine.
//!
//! The queue is filled first; the figure is jobs over the time from the first
//! job's start to the last one's end, as the ledger recorded them.
//!
//! Needs a PostgreSQL server whose role may create databases:
//! `CRAFTING_TEST_POSTGRES=postgres://…` (`eval "$(bash .ci/postgres.sh start)"`
//! starts one on loopback). Without it only the SQLite figure is printed.
//!
//! Run: `cargo bench --bench runners` (`CRAFTING_BENCH_JOBS`, default 200).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM: a clean stop frees the runner's name.
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Starts `crafting-table <what>`, returning once it printed a line starting with
/// `ready`.
fn start(what: &str, data: &Path, env: &[(&str, String)], ready: &str) -> Proc {
    std::fs::create_dir_all(data).expect("data directory");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crafting-table"));
    cmd.arg(what)
        .current_dir(data.parent().expect("a parent"))
        .env("CRAFTING_DATA_DIR", data)
        .env_remove("CRAFTING_CONFIG")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "{what} exited"
        );
        if line.trim_start().starts_with(ready) {
            break;
        }
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    Proc(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port")
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@b")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@b")
        .status()
        .expect("git")
        .success();
    assert!(ok, "git {args:?}");
}

/// A one-file repository and a registry with project `p` of `n` no-op commands.
fn registry(root: &Path, n: usize) -> PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).expect("repo");
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "x\n").expect("write");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    let reg = root.join("registry");
    std::fs::create_dir_all(&reg).expect("registry");
    let mut commands = String::new();
    for i in 0..n {
        commands += &format!("        c{i}: 'true'\n");
    }
    std::fs::write(
        reg.join("p.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: p\nspec:\n  git_url: {}\n  max_concurrent_jobs: 64\n  subprojects:\n    - path: .\n      commands:\n{commands}",
            repo.display()
        ),
    )
    .expect("manifest");
    reg
}

struct Api {
    base: String,
    bearer: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn new(port: u16, data: &Path) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            bearer: std::fs::read_to_string(data.join("admin-bearer.txt"))
                .expect("bearer")
                .trim()
                .to_owned(),
            http: reqwest::blocking::Client::new(),
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.bearer)
            .send()
            .and_then(|r| r.json())
            .expect("GET")
    }

    fn enqueue_all(&self, n: usize) {
        for i in 0..n {
            let r = self
                .http
                .post(format!("{}/projects/p/jobs", self.base))
                .bearer_auth(&self.bearer)
                .json(&serde_json::json!({"recipe": format!("c{i}")}))
                .send()
                .expect("POST");
            assert_eq!(r.status().as_u16(), 201);
        }
    }

    /// Waits until nothing is queued or running; then jobs/s from the first start
    /// to the last end, and how many jobs each runner ran.
    fn drained(&self, n: usize) -> (f64, Vec<(String, usize)>) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let h = self.get("/healthz");
            if h["queued"] == 0 && h["running"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "not drained: {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut jobs = Vec::new();
        let mut before: Option<String> = None;
        while jobs.len() < n {
            let path = match &before {
                None => "/jobs?limit=200".to_owned(),
                Some(c) => format!("/jobs?limit=200&cursor={c}"),
            };
            let v = self.get(&path);
            let page = v["jobs"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            jobs.extend(page);
            match v["next_cursor"].as_str() {
                Some(c) => before = Some(c.to_owned()),
                None => break,
            }
        }
        let t = |s: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(s.as_str().unwrap_or(""))
                .map(|d| d.timestamp_millis())
                .unwrap_or(0)
        };
        let first = jobs.iter().map(|j| t(&j["started_at"])).min().unwrap_or(0);
        let last = jobs.iter().map(|j| t(&j["finished_at"])).max().unwrap_or(0);
        let ok = jobs.iter().filter(|j| j["status"] == "succeeded").count();
        assert_eq!(ok, n, "every job succeeded");
        let mut per: std::collections::BTreeMap<String, usize> = Default::default();
        for j in &jobs {
            *per.entry(j["runner"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        (
            n as f64 / ((last - first).max(1) as f64 / 1000.0),
            per.into_iter().collect(),
        )
    }
}

fn main() {
    let n: usize = std::env::var("CRAFTING_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().expect("tmp");
    let reg = registry(tmp.path(), n);
    let base_env = vec![
        ("CRAFTING_REGISTRY", reg.display().to_string()),
        ("CRAFTING_LAN_CIDRS", "127.0.0.0/8".to_owned()),
    ];
    println!("no-op jobs (`true`, sandbox at its default), {n} distinct commands queued first");

    // The single-process farm on SQLite.
    {
        let data = tmp.path().join("sqlite");
        let port = free_port();
        let mut env = base_env.clone();
        env.push(("CRAFTING_BIND", format!("127.0.0.1:{port}")));
        env.push(("CRAFTING_WORKERS", "2".to_owned()));
        let _serve = start("serve", &data, &env, "try");
        let api = Api::new(port, &data);
        api.enqueue_all(n);
        let (rate, _) = api.drained(n);
        println!("  SQLite, one serve with 2 workers:         {rate:6.1} jobs/s");
    }

    let Ok(server) = std::env::var("CRAFTING_TEST_POSTGRES") else {
        println!("  PostgreSQL runners: SKIPPED (set CRAFTING_TEST_POSTGRES=postgres://…)");
        return;
    };
    for runners in [1usize, 2, 4] {
        let url = fresh_database(&server);
        let root = tmp.path().join(format!("pg{runners}"));
        let data = root.join("serve");
        let port = free_port();
        let mut env = base_env.clone();
        env.push(("CRAFTING_LEDGER", url));
        let mut serve_env = env.clone();
        serve_env.push(("CRAFTING_BIND", format!("127.0.0.1:{port}")));
        serve_env.push(("CRAFTING_WORKERS", "0".to_owned()));
        let _serve = start("serve", &data, &serve_env, "try");
        let api = Api::new(port, &data);
        api.enqueue_all(n);
        let mut procs = Vec::new();
        for r in 0..runners {
            let mut e = env.clone();
            e.push(("CRAFTING_WORKERS", "2".to_owned()));
            e.push(("CRAFTING_RUNNER_NAME", format!("r{r}")));
            procs.push(start(
                "runner",
                &root.join(format!("r{r}")),
                &e,
                "crafting-table runner",
            ));
        }
        let (rate, per) = api.drained(n);
        let per: Vec<String> = per.iter().map(|(r, c)| format!("{r} {c}")).collect();
        println!(
            "  PostgreSQL, {runners} runner(s) × 2 workers:      {rate:6.1} jobs/s  ({})",
            per.join(", ")
        );
    }
}

/// A new database on `server`; its URL.
fn fresh_database(server: &str) -> String {
    let name = format!("bench_{}", std::process::id() as u64 * 1000 + rand_suffix());
    let mut admin = postgres::Client::connect(server, postgres::NoTls).expect("server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let (head, query) = server.split_once('?').unwrap_or((server, ""));
    let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
    if query.is_empty() {
        format!("{root}/{name}")
    } else {
        format!("{root}/{name}?{query}")
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_micros()))
}
