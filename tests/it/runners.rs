//! Several processes, one farm, on a real PostgreSQL server: `serve` with no
//! workers and `crafting-table runner` processes, as separate binaries.
//!
//! - two runners drain one queue: every job succeeds once, both runners work,
//!   per-project caps hold at every moment (the commands stamp their own start
//!   and end), logs are readable and followable through the API;
//! - a runner killed with SIGKILL mid-job: the leader fails its job with the
//!   orphan line within two lease periods, the other runner goes on, the killed
//!   one restarts under its name and runs jobs again;
//! - two `serve` processes: one leads (reconciles, also for the other; fires a
//!   schedule once); killing it hands the lead to the other.
//!
//! Skipped (saying so) without `CRAFTING_TEST_POSTGRES`, unless
//! `CRAFTING_PG_TESTS=required`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A farm process (`serve` or `runner`) as a child.
struct Proc {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` for `serve`.
    base: String,
}

impl Proc {
    /// Starts `crafting-table <what>` with `env`; returns once it printed the line
    /// starting with `ready` (the banner's `try` line, the runner's first line).
    fn start(what: &str, data: &Path, env: &[(&str, String)], ready: &str) -> Proc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crafting-table"));
        cmd.arg(what)
            .current_dir(data.parent().unwrap())
            .env("CRAFTING_DATA_DIR", data)
            .env("CRAFTING_BIND", format!("127.0.0.1:{port}"))
            .env_remove("CRAFTING_CONFIG")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap();
            assert!(n > 0, "{what} exited before it was ready: {seen:?}");
            let done = line.trim_start().starts_with(ready);
            seen.push(line);
            if done {
                break;
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        Proc {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn serve(data: &Path, env: &[(&str, String)]) -> Proc {
        Proc::start("serve", data, env, "try")
    }

    fn runner(data: &Path, env: &[(&str, String)], name: &str) -> Proc {
        let mut env = env.to_vec();
        env.push(("CRAFTING_RUNNER_NAME", name.to_owned()));
        Proc::start("runner", data, &env, "crafting-table runner")
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The API of one `serve`, with what these tests ask of it.
struct Api(crate::seams::Client);

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.0.call(method, path, body).await
    }

    async fn text(&self, path: &str) -> String {
        self.0.text(path).await
    }

    /// Follows job `id`'s log (as the API host reads it, woken by the runner's
    /// stores) until it holds `what`.
    async fn wait_log(&self, id: &str, what: &str) {
        self.0.wait_log(id, what).await;
    }

    /// Waits for job `id`'s end (following its log, which ends with the job) and
    /// returns `GET /jobs/{id}`.
    async fn wait_end(&self, id: &str, limit: Duration) -> Value {
        let followed =
            tokio::time::timeout(limit, self.text(&format!("/jobs/{id}/log?follow=1"))).await;
        let v = self.job(id).await;
        assert!(
            followed.is_ok(),
            "job {id} did not end within {limit:?}: {v}"
        );
        v
    }

    async fn enqueue(&self, project: &str, recipe: &str) -> String {
        let (code, v) = self
            .call(
                "POST",
                &format!("/projects/{project}/jobs"),
                Some(json!({"recipe": recipe})),
            )
            .await;
        assert_eq!(code, 201, "{v}");
        v["job_id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        self.call("GET", &format!("/jobs/{id}"), None).await.1
    }
}

/// A registry with projects `p1` (at most 2 jobs at once) and `p2` (1), each
/// with commands `c0`..`c{n-1}` that stamp their start and end in `stamps`, and
/// `hang` and `talk`.
fn registry(root: &Path, stamps: &Path, n: usize) -> (PathBuf, crate::helpers::Repo) {
    let repo = crate::helpers::Repo::new();
    repo.write("README.md", "x\n").commit("one");
    let reg = root.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    for (project, cap) in [("p1", 2), ("p2", 1)] {
        let mut commands = String::new();
        for i in 0..n {
            commands += &format!(
                "        c{i}: 'echo \"start {project} $CRAFTING_JOB_ID $(date +%s%N)\" >> {s}; echo hello from $CRAFTING_JOB_ID; sleep 0.2; echo \"end {project} $CRAFTING_JOB_ID $(date +%s%N)\" >> {s}'\n",
                s = stamps.display()
            );
        }
        commands += "        hang: 'echo hanging; sleep 4733'\n";
        commands += "        talk: 'echo first line; sleep 1; echo second line'\n";
        std::fs::write(
            reg.join(format!("{project}.yaml")),
            format!(
                "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {project}\nspec:\n  git_url: {}\n  max_concurrent_jobs: {cap}\n  subprojects:\n    - path: .\n      commands:\n{commands}",
                repo.path.display()
            ),
        )
        .unwrap();
    }
    // A command whose secret reaches its output split across two writes.
    std::fs::write(
        reg.join("p3.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: p3\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      secrets: [TOKEN]\n      commands:\n        leak: 'printf \"before tok\"; sleep 0.5; printf \"en-s3cret after\\\\n\"'\n",
            repo.path.display()
        ),
    )
    .unwrap();
    (reg, repo)
}

struct Setup {
    _tmp: tempfile::TempDir,
    _repo: crate::helpers::Repo,
    root: PathBuf,
    env: Vec<(&'static str, String)>,
    stamps: PathBuf,
}

fn setup(lease_secs: u32) -> Option<Setup> {
    let base = crate::postgres::server()?;
    let url = std::thread::spawn(move || crate::postgres::fresh_database(&base))
        .join()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let shared = root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let stamps = shared.join("stamps");
    let (reg, repo) = registry(&root, &stamps, 20);
    let env = vec![
        ("CRAFTING_LEDGER", url),
        ("CRAFTING_REGISTRY", reg.display().to_string()),
        ("CRAFTING_LEASE_SECS", lease_secs.to_string()),
        ("CRAFTING_SANDBOX_WRITABLE", shared.display().to_string()),
        ("CRAFTING_LAN_CIDRS", "127.0.0.0/8".to_owned()),
        ("CRAFTING_SECRET_TOKEN", "token-s3cret".to_owned()),
    ];
    Some(Setup {
        _tmp: tmp,
        _repo: repo,
        root,
        env,
        stamps,
    })
}

impl Setup {
    fn with(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    fn api(&self, serve: &Proc, data: &str) -> Api {
        let bearer = std::fs::read_to_string(self.root.join(data).join("admin-bearer.txt"))
            .unwrap()
            .trim()
            .to_owned();
        Api(crate::seams::Client::at(serve.base.clone(), bearer))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_drain_one_queue() {
    let Some(s) = setup(30) else { return };
    let serve = Proc::serve(&s.root.join("serve"), &s.with(&[("CRAFTING_WORKERS", "0")]));
    let api = s.api(&serve, "serve");
    let env = s.with(&[("CRAFTING_WORKERS", "2")]);
    let _r1 = Proc::runner(&s.root.join("r1"), &env, "r1");
    let _r2 = Proc::runner(&s.root.join("r2"), &env, "r2");
    let (_, health) = api.call("GET", "/healthz", None).await;
    assert_eq!(health["workers"], 0, "{health}");
    let names: HashSet<&str> = health["runners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, HashSet::from(["r1", "r2"]), "{health}");

    let mut ids = Vec::new();
    for i in 0..20 {
        for p in ["p1", "p2"] {
            ids.push(api.enqueue(p, &format!("c{i}")).await);
        }
    }
    let mut by_runner: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let v = api.wait_end(id, Duration::from_secs(180)).await;
        assert_eq!(v["job"]["status"], "succeeded", "{v}");
        *by_runner
            .entry(v["job"]["runner"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        by_runner.keys().map(String::as_str).collect::<Vec<_>>(),
        ["r1", "r2"],
        "both runners ran jobs: {by_runner:?}"
    );

    // Each job ran once; per project, never more at once than its cap.
    let stamps = std::fs::read_to_string(&s.stamps).unwrap();
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut events: Vec<(u128, i32, String)> = Vec::new();
    for line in stamps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let at: u128 = f[3].parse().unwrap();
        if f[0] == "start" {
            *starts.entry(f[2].to_owned()).or_default() += 1;
            events.push((at, 1, f[1].to_owned()));
        } else {
            events.push((at, -1, f[1].to_owned()));
        }
    }
    assert_eq!(starts.len(), 40, "every job ran");
    assert!(
        starts.values().all(|n| *n == 1),
        "no job ran twice: {starts:?}"
    );
    events.sort();
    let mut now: HashMap<String, i32> = HashMap::new();
    for (at, d, project) in &events {
        let n = now.entry(project.clone()).or_default();
        *n += d;
        let cap = if project == "p1" { 2 } else { 1 };
        assert!(*n <= cap, "{project} ran {n} jobs at once at {at}");
    }

    // A log is readable from the API host, whichever runner wrote it.
    let log = api.text(&format!("/jobs/{}/log", ids[0])).await;
    assert!(log.contains(&format!("hello from {}", ids[0])), "{log}");
    assert!(log.contains("exit 0"), "{log}");
    // And followable while it is written.
    let talk = api.enqueue("p2", "talk").await;
    let followed = api.text(&format!("/jobs/{talk}/log?follow=1")).await;
    assert!(
        followed.contains("first line") && followed.contains("second line"),
        "{followed}"
    );
    assert!(followed.trim_end().ends_with("after 1.0s") || followed.contains("exit 0"));
    let v = api.job(&talk).await;
    assert_eq!(v["job"]["status"], "succeeded", "{v}");

    // A secret is masked before any of it is stored, even split across writes
    // that the runner stores as they come.
    let leak = api.enqueue("p3", "leak").await;
    let followed = api.text(&format!("/jobs/{leak}/log?follow=1")).await;
    let output: Vec<&str> = followed
        .lines()
        .filter(|l| !l.starts_with("[crafting-table]"))
        .collect();
    assert_eq!(output, ["before *** after"], "{followed}");
    assert!(!followed.contains("token-s3cret"), "{followed}");

    // A cancel asked of the API host stops the job on its runner's host.
    let hang = api.enqueue("p1", "hang").await;
    api.wait_log(&hang, "hanging\n").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_of(&hang).is_empty() {
        assert!(Instant::now() < deadline, "the job's command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, v) = api
        .call("POST", &format!("/jobs/{hang}/cancel"), None)
        .await;
    assert_eq!((code, v["status"].as_str()), (200, Some("stopping")), "{v}");
    let v = api.wait_end(&hang, Duration::from_secs(30)).await;
    assert_eq!(v["job"]["status"], "cancelled", "{v}");
    assert_eq!(v["job"]["error"], "cancelled by admin", "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_of(&hang).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cancelled job's processes survived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live processes of job `id` on this host (bwrap and everything inside it carry
/// the job's id in their environment): tests running side by side never mix.
fn pids_of(id: &str) -> Vec<i32> {
    let marker = format!("CRAFTING_JOB_ID={id}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && !zombie
            && env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_loses_its_job_and_comes_back() {
    let lease = 3;
    let Some(s) = setup(lease) else { return };
    let serve = Proc::serve(&s.root.join("serve"), &s.with(&[("CRAFTING_WORKERS", "0")]));
    let api = s.api(&serve, "serve");
    let env = s.with(&[("CRAFTING_WORKERS", "1")]);
    let mut runners = HashMap::new();
    runners.insert("r1", Proc::runner(&s.root.join("r1"), &env, "r1"));
    runners.insert("r2", Proc::runner(&s.root.join("r2"), &env, "r2"));

    let hang = api.enqueue("p1", "hang").await;
    api.wait_log(&hang, "hanging\n").await;
    let v = api.job(&hang).await;
    let victim = v["job"]["runner"].as_str().unwrap().to_owned();
    let other = if victim == "r1" { "r2" } else { "r1" };
    // Wait for the command itself, then kill its runner hard.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_of(&hang).is_empty() {
        assert!(Instant::now() < deadline, "the job's command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_at = Instant::now();
    let mut proc = runners.remove(victim.as_str()).unwrap();
    let pid = proc.pid();
    assert!(!proc.signal(libc::SIGKILL).success());

    // The other runner keeps working meanwhile.
    let quick = api.enqueue("p2", "c0").await;
    let v = api.wait_end(&quick, Duration::from_secs(60)).await;
    assert_eq!(
        (v["job"]["status"].as_str(), v["job"]["runner"].as_str()),
        (Some("succeeded"), Some(other)),
        "{v}"
    );

    let v = api
        .wait_end(&hang, Duration::from_secs(4 * u64::from(lease) + 10))
        .await;
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs(2 * u64::from(lease) + 2),
        "orphaned after {took:?}, more than two lease periods"
    );
    assert_eq!(v["job"]["status"], "failed", "{v}");
    assert_eq!(v["job"]["exit_code"], -1, "{v}");
    assert_eq!(
        v["log_tail"].as_array().unwrap().last().unwrap(),
        &format!("[crafting-table] runner {victim} lost, job orphaned")
    );
    // In the sandbox the job's processes died with their runner.
    assert_eq!(pids_of(&hang), Vec::<i32>::new(), "runner pid {pid}");

    // Restarted under its name, the killed runner removes what the crash left
    // in its workspace and works again.
    let left = s.root.join(&victim).join("workspace/p1/.warm").join(&hang);
    assert!(
        left.is_dir(),
        "the crash left the job's tree: {}",
        left.display()
    );
    drop(runners.remove(other));
    let _back = Proc::runner(&s.root.join(&victim), &env, &victim);
    assert!(
        !left.exists(),
        "the restarted runner removed {}",
        left.display()
    );
    let again = api.enqueue("p1", "c1").await;
    let v = api.wait_end(&again, Duration::from_secs(60)).await;
    assert_eq!(
        (v["job"]["status"].as_str(), v["job"]["runner"].as_str()),
        (Some("succeeded"), Some(victim.as_str())),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_back_before_its_lease_ran_out_sweeps_its_own_jobs() {
    // A long lease: the leader would wait 30 s; the runner itself is quicker.
    let Some(s) = setup(30) else { return };
    let serve = Proc::serve(&s.root.join("serve"), &s.with(&[("CRAFTING_WORKERS", "0")]));
    let api = s.api(&serve, "serve");
    let env = s.with(&[("CRAFTING_WORKERS", "1")]);
    let mut r1 = Proc::runner(&s.root.join("r1"), &env, "r1");
    let hang = api.enqueue("p1", "hang").await;
    // Its output reaches the API host while it runs (the runner stores it).
    api.wait_log(&hang, "hanging\n").await;
    assert!(!r1.signal(libc::SIGKILL).success());
    let back = Instant::now();
    let _r1 = Proc::runner(&s.root.join("r1"), &env, "r1");
    let v = api.wait_end(&hang, Duration::from_secs(20)).await;
    assert!(
        back.elapsed() < Duration::from_secs(20),
        "swept by the runner itself"
    );
    assert_eq!(
        (v["job"]["status"].as_str(), v["job"]["exit_code"].as_i64()),
        (Some("failed"), Some(-1)),
        "{v}"
    );
    assert_eq!(
        v["log_tail"].as_array().unwrap().last().unwrap(),
        "[crafting-table] runner restart, job orphaned"
    );
    assert!(
        v["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "hanging"),
        "the log written before the crash is kept: {v}"
    );
    // Nothing of the job outlives the sweep on its host.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_of(&hang).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the orphan's processes survived the sweep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it runs jobs again.
    let again = api.enqueue("p2", "c0").await;
    let v = api.wait_end(&again, Duration::from_secs(60)).await;
    assert_eq!(v["job"]["status"], "succeeded", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_name_is_held_by_one_live_process() {
    let Some(s) = setup(30) else { return };
    let env = s.with(&[("CRAFTING_WORKERS", "1")]);
    let _r1 = Proc::runner(&s.root.join("r1"), &env, "twin");
    let out = Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("runner")
        .env("CRAFTING_DATA_DIR", s.root.join("r2"))
        .env("CRAFTING_RUNNER_NAME", "twin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the name `twin` is held by a live process"),
        "{err}"
    );
    // Without PostgreSQL there is nothing to take jobs from.
    let out = Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("runner")
        .env("CRAFTING_DATA_DIR", s.root.join("r3"))
        .env("CRAFTING_RUNNER_NAME", "solo")
        .env_remove("CRAFTING_LEDGER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CRAFTING_LEDGER: a runner takes its jobs from a PostgreSQL ledger"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fires_schedules_and_hands_over() {
    let Some(s) = setup(30) else { return };
    std::fs::write(
        s.root.join("registry/every-minute.yaml"),
        "apiVersion: crafting-table/v1\nkind: Schedule\nmetadata:\n  name: every-minute\nspec:\n  cron: '* * * * *'\n  timezone: UTC\n  projects: [p2]\n  recipe: c0\n",
    )
    .unwrap();
    let env = s.with(&[("CRAFTING_WORKERS", "0")]);
    let mut first = Proc::serve(&s.root.join("s1"), &env);
    let api1 = s.api(&first, "s1");
    // The first one leads (it was alone).
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let (_, h) = api1.call("GET", "/healthz", None).await;
        if let Some(l) = h["leader"].as_str() {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no leader: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let second = Proc::serve(&s.root.join("s2"), &env);
    let _runner = Proc::runner(
        &s.root.join("r1"),
        &s.with(&[("CRAFTING_WORKERS", "1")]),
        "r1",
    );
    let api2 = Api(crate::seams::Client::at(
        second.base.clone(),
        api1.0.bearer.clone(),
    ));
    let (_, h) = api2.call("GET", "/healthz", None).await;
    assert_eq!(h["leader"].as_str(), Some(leader.as_str()), "{h}");
    // A reconcile asked of the one that does not lead is run by the leader.
    let (code, v) = api2.call("POST", "/registry/reconcile", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["unchanged"], 4, "{v}");
    let (_, v) = api2.call("GET", "/registry", None).await;
    assert_eq!(v["leader"]["name"].as_str(), Some(leader.as_str()), "{v}");

    // The schedule's next fire runs once, though two processes know it.
    let scheduled = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["schedule"] == "every-minute")
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(75);
    let fired = loop {
        let (_, v) = api2.call("GET", "/jobs?limit=50", None).await;
        let ids = scheduled(&v);
        if !ids.is_empty() {
            break ids;
        }
        assert!(Instant::now() < deadline, "the schedule never fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v = api2.wait_end(&fired[0], Duration::from_secs(60)).await;
    assert_eq!(v["job"]["status"], "succeeded", "{v}");
    let (_, v) = api1.call("GET", "/jobs?limit=50", None).await;
    assert_eq!(scheduled(&v), fired, "one fire, one job");

    // Killing the leader hands the lead to the other.
    assert!(!first.signal(libc::SIGKILL).success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, h) = api2.call("GET", "/healthz", None).await;
        if h["leader"].as_str().is_some_and(|l| l != leader) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lead was not handed over: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new leader reconciles itself.
    let (code, v) = api2.call("POST", "/registry/reconcile", None).await;
    assert_eq!(code, 200, "{v}");
}

/// `url` with `user` instead of its role.
fn as_role(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cut_off_from_the_ledger_stops_its_job_and_writes_nothing_more() {
    let lease = 3;
    let Some(s) = setup(lease) else { return };
    let serve = Proc::serve(&s.root.join("serve"), &s.with(&[("CRAFTING_WORKERS", "0")]));
    let api = s.api(&serve, "serve");
    // The runner logs in as a role of its own, so the test can cut it off alone.
    let url = s
        .env
        .iter()
        .find(|(k, _)| *k == "CRAFTING_LEDGER")
        .unwrap()
        .1
        .clone();
    let role = format!("cut_{}", uuid::Uuid::new_v4().simple());
    let admin_url = url.clone();
    let sql = move |q: String| {
        let u = admin_url.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&u, postgres::NoTls).unwrap();
            c.batch_execute(&q).unwrap();
        })
        .join()
        .unwrap();
    };
    sql(format!(
        "CREATE ROLE {role} LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}; GRANT ALL ON SCHEMA public TO {role}"
    ));
    let mut env = s.with(&[("CRAFTING_WORKERS", "1")]);
    for (k, v) in &mut env {
        if *k == "CRAFTING_LEDGER" {
            *v = as_role(&url, &role);
        }
    }
    let _runner = Proc::runner(&s.root.join("r1"), &env, "r1");
    let hang = api.enqueue("p1", "hang").await;
    api.wait_log(&hang, "hanging\n").await;
    // Cut it off: no new connection, the open ones ended.
    sql(format!(
        "ALTER ROLE {role} NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ));
    let v = api
        .wait_end(&hang, Duration::from_secs(4 * u64::from(lease) + 10))
        .await;
    assert_eq!(
        (v["job"]["status"].as_str(), v["job"]["exit_code"].as_i64()),
        (Some("failed"), Some(-1)),
        "{v}"
    );
    // The runner stopped its job on its own (it could not renew its lease).
    let deadline = Instant::now() + Duration::from_secs(4 * u64::from(lease));
    while !pids_of(&hang).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cut-off runner kept its job running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back in touch, it writes nothing more for that job, and works again.
    sql(format!("ALTER ROLE {role} LOGIN"));
    let again = api.enqueue("p2", "c0").await;
    let w = api.wait_end(&again, Duration::from_secs(60)).await;
    assert_eq!(
        (w["job"]["status"].as_str(), w["job"]["runner"].as_str()),
        (Some("succeeded"), Some("r1")),
        "{w}"
    );
    let after = api.job(&hang).await;
    assert_eq!(after["job"], v["job"], "the job's record did not change");
    assert_eq!(
        after["log_tail"].as_array().unwrap().last().unwrap(),
        "[crafting-table] runner r1 lost, job orphaned",
        "nothing was written after the leader's line"
    );
}
