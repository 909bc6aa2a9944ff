//! The binary as a user runs it: `crafting-table serve` as a child process.
//!
//! - the README's first ten minutes: a copy of this repository, the default
//!   registry, the lint job through HTTP, real clippy findings, SIGTERM;
//! - a crash: SIGKILL while a job runs, restart, the job swept, its processes gone,
//!   queued jobs run, the ledger intact.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::git;

struct Farm {
    child: Option<Child>,
    base: String,
    bearer: String,
    stdout: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Farm {
    /// Starts `serve` in `dir` with `env`, waits until `/healthz` answers.
    fn start(dir: &Path, data: &Path, env: &[(&str, &str)]) -> Farm {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crafting-table"));
        cmd.arg("serve")
            .current_dir(dir)
            .env("CRAFTING_DATA_DIR", data)
            .env("CRAFTING_BIND", format!("127.0.0.1:{port}"))
            .env_remove("CRAFTING_CONFIG")
            .env_remove("CRAFTING_REGISTRY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        // The banner ends with the `try` line: read until then.
        let out = child.stdout.take().unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(out);
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap();
            assert!(n > 0, "serve exited before printing its banner: {lines:?}");
            let done = line.trim_start().starts_with("try");
            lines.push(line.trim_end().to_owned());
            if done {
                break;
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        let bearer = std::fs::read_to_string(data.join("admin-bearer.txt"))
            .unwrap()
            .trim()
            .to_owned();
        Farm {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            bearer,
            stdout: lines,
        }
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

impl Drop for Farm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn call(f: &Farm, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.parse().unwrap(), format!("{}{path}", f.base))
        .bearer_auth(&f.bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_status(f: &Farm, id: &str, pred: impl Fn(&str) -> bool, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, v) = call(f, "GET", &format!("/jobs/{id}"), None).await;
        if pred(v["job"]["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "job {id} stuck: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A clone of this repository on branch `main`, as a newcomer's checkout.
fn clone_self(into: &Path) -> PathBuf {
    let dest = into.join("crafting-table");
    let src = env!("CARGO_MANIFEST_DIR");
    git(
        into,
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            src,
            dest.to_str().unwrap(),
        ],
    );
    git(&dest, &["checkout", "--quiet", "-B", "main"]);
    dest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_ten_minutes_from_clone_to_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = clone_self(tmp.path());
    let data = repo.join("data");
    let mut farm = Farm::start(&repo, &data, &[]);
    let banner = farm.stdout.join("\n");
    assert!(
        banner.contains("crafting-table.yaml") || banner.contains("4 objects"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("{}/admin-bearer.txt", data.display())),
        "{banner}"
    );
    assert!(banner.contains("revision "), "{banner}");

    // The printed curl line's request, made the same way.
    let (s, v) = call(
        &farm,
        "POST",
        "/projects/crafting-table/jobs",
        Some(json!({"recipe": "lint"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    let done = wait_status(
        &farm,
        &id,
        |s| !["queued", "running"].contains(&s),
        Duration::from_secs(1200),
    )
    .await;
    assert_eq!(done["job"]["status"], "succeeded", "{done}");
    let n = done["job"]["findings_count"].as_i64().unwrap();
    assert!(n > 0, "pedantic lints give findings: {done}");
    let (_, f) = call(&farm, "GET", &format!("/jobs/{id}/findings"), None).await;
    let findings = f["findings"].as_array().unwrap();
    assert_eq!(findings.len() as i64, n);
    let others: Vec<&Value> = findings
        .iter()
        .filter(|x| x["kind"] != "lint" || x["tool"] != "clippy")
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    assert!(
        findings
            .iter()
            .all(|x| x["file"].as_str().is_some_and(|p| !p.starts_with('/'))),
        "paths relative to the repository"
    );
    assert!(findings.iter().any(|x| {
        x["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("clippy::"))
    }));
    let (_, sarif) = call(
        &farm,
        "GET",
        &format!("/jobs/{id}/findings?format=sarif"),
        None,
    )
    .await;
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(
        sarif["runs"][0]["results"].as_array().unwrap().len() as i64,
        n
    );
    // .ci/run validates this real output against the official SARIF schema.
    if let Some(out) = std::env::var_os("CRAFTING_SARIF_OUT") {
        std::fs::write(out, serde_json::to_vec_pretty(&sarif).unwrap()).unwrap();
    }

    let status = farm.signal(libc::SIGTERM);
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// Host pids of live processes whose command line is exactly `argv`.
fn pids_with(argv: &str) -> Vec<i32> {
    let want: Vec<u8> = argv.split(' ').flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let alive =
                crafting_table::runner::process::proc_info(pid).is_some_and(|p| p.state != 'Z');
            (alive && cmdline == want).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_job_is_swept_on_restart() {
    // In the sandbox (the default) the job's processes die with the farm; without
    // it they outlive the crash and the restart sweep kills them. Either way the
    // job ends failed, swept, and nothing of it survives.
    crash_mid_job(None, 4711).await;
    crash_mid_job(Some("none"), 4712).await;
}

async fn crash_mid_job(sandbox: Option<&str>, secs: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let src = crate::helpers::Repo::new();
    src.write("README.md", "x\n").commit("one");
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    let marker = format!("sleep {secs}");
    std::fs::write(
        reg.join("p.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      commands:\n        hang: '{marker} & {marker}; wait'\n        quick: echo quick done\n",
            src.path.display(),
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let reg_s = reg.display().to_string();
    let mut env = vec![
        ("CRAFTING_REGISTRY", reg_s.as_str()),
        ("CRAFTING_WORKERS", "1"),
    ];
    if let Some(mode) = sandbox {
        env.push(("CRAFTING_SANDBOX", mode));
    }
    let mut farm = Farm::start(tmp.path(), &data, &env);
    let (_, v) = call(
        &farm,
        "POST",
        "/projects/app/jobs",
        Some(json!({"recipe": "hang"})),
    )
    .await;
    let hang = v["job_id"].as_str().unwrap().to_owned();
    let (_, v) = call(
        &farm,
        "POST",
        "/projects/app/jobs",
        Some(json!({"recipe": "quick"})),
    )
    .await;
    let quick = v["job_id"].as_str().unwrap().to_owned();
    // Wait until the hanging job's two sleeps exist, then kill the farm hard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pids = loop {
        let p = pids_with(&marker);
        if p.len() == 2 {
            break p;
        }
        assert!(Instant::now() < deadline, "job never started: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = farm.signal(libc::SIGKILL);
    assert!(!status.success());
    if sandbox == Some("none") {
        for pid in &pids {
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "the job's process {pid} outlived the crash"
            );
        }
    }

    let farm = Farm::start(tmp.path(), &data, &env);
    let v = wait_status(&farm, &hang, |s| s != "running", Duration::from_secs(30)).await;
    assert_eq!(v["job"]["status"], "failed");
    assert_eq!(v["job"]["exit_code"], -1);
    assert_eq!(
        v["log_tail"].as_array().unwrap().last().unwrap(),
        "[crafting-table] runner restart, job orphaned"
    );
    assert_eq!(
        pids_with(&marker),
        Vec::<i32>::new(),
        "a process of the orphaned job survived the restart ({sandbox:?})"
    );
    let v = wait_status(
        &farm,
        &quick,
        |s| !["queued", "running"].contains(&s),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        v["job"]["status"], "succeeded",
        "queued jobs run after the restart: {v}"
    );
    let wt = data.join("workspace/app").join(&hang);
    assert!(!wt.exists(), "the orphan's worktree was removed");
    drop(farm);
    let ledger = crafting_table::ledger::Ledger::open(&data.join("ledger.sqlite3")).unwrap();
    assert_eq!(ledger.integrity_check().unwrap(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_registry_changes_are_applied_by_the_watcher() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    let data = tmp.path().join("data");
    let reg_s = reg.display().to_string();
    // A long poll interval: only file events can explain a quick reconcile.
    let env = [
        ("CRAFTING_REGISTRY", reg_s.as_str()),
        ("CRAFTING_REGISTRY_POLL_SECS", "3600"),
    ];
    let farm = Farm::start(tmp.path(), &data, &env);
    let project = |name: &str, test: &str| {
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  git_url: /srv/{name}.git\n  subprojects:\n    - path: .\n      test: {test}\n"
        )
    };
    async fn wait_for(f: &Farm, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = call(f, "GET", "/projects", None).await;
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "never saw {what}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let find = |v: &Value, name: &str| -> Option<Value> {
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    };

    std::fs::write(reg.join("app.yaml"), project("app", "make test")).unwrap();
    wait_for(&farm, "app created", |v| find(v, "app").is_some()).await;

    std::fs::write(reg.join("app.yaml"), project("app", "make check")).unwrap();
    wait_for(&farm, "app updated", |v| {
        find(v, "app").is_some_and(|p| p["subprojects"][0]["test"] == "make check")
    })
    .await;

    // A broken edit keeps the last good version and reports the error.
    std::fs::write(reg.join("app.yaml"), "apiVersion: [\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(&farm, "GET", "/registry", None).await;
        if v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["error"].is_object())
        {
            break;
        }
        assert!(Instant::now() < deadline, "error never reported: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = call(&farm, "GET", "/projects", None).await;
    assert_eq!(
        find(&v, "app").unwrap()["retired"],
        false,
        "last good version in force"
    );

    std::fs::remove_file(reg.join("app.yaml")).unwrap();
    wait_for(&farm, "app retired", |v| {
        find(v, "app").is_some_and(|p| p["retired"] == true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_the_model_thinks_ends_the_attempt_as_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("forge");
    std::fs::create_dir_all(root.join("team")).unwrap();
    let work = crate::helpers::Repo::new();
    work.write("src/app.ts", "const a = 1;\n// TODO remove this\n")
        .commit("one");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.path.to_str().unwrap(),
            root.join("team/demo.git").to_str().unwrap(),
        ],
    );
    let gitea = crate::patcher::Gitea::start(&root);
    // A model that accepts the connection and never answers.
    let (model, _held) = crate::seams::silent_server();
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("demo.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  git_url: {}\n  forge: {{owner: team, repo: demo}}\n  subprojects:\n    - path: .\n      language: typescript\n      lint: {}\n      test: 'true'\n",
            root.join("team/demo.git").display(),
            serde_json::to_string("awk '/TODO/ { printf \"src/app.ts(%d,1): error TS9999: todo\\n\", NR }' src/app.ts; exit 1").unwrap()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let (reg_s, gitea_url, model_url) = (
        reg.display().to_string(),
        gitea.url(),
        format!("http://{model}"),
    );
    let env = [
        ("CRAFTING_REGISTRY", reg_s.as_str()),
        ("CRAFTING_GITEA_URL", gitea_url.as_str()),
        ("CRAFTING_GITEA_TOKEN", crate::patcher::GITEA_TOKEN),
        ("CRAFTING_CLAWDFORGE_URL", model_url.as_str()),
        ("CRAFTING_CLAWDFORGE_TOKEN", "cf-token"),
    ];
    let mut farm = Farm::start(tmp.path(), &data, &env);
    let (_, v) = call(
        &farm,
        "POST",
        "/projects/demo/jobs",
        Some(json!({"recipe": "lint"})),
    )
    .await;
    let job = v["job_id"].as_str().unwrap().to_owned();
    wait_status(&farm, &job, |s| s == "failed", Duration::from_secs(60)).await;
    let (_, f) = call(&farm, "GET", &format!("/jobs/{job}/findings"), None).await;
    let finding = f["findings"][0]["id"].as_i64().unwrap();
    let (s, a) = call(
        &farm,
        "POST",
        &format!("/jobs/{job}/patches"),
        Some(json!({"finding_id": finding})),
    )
    .await;
    assert_eq!(s, 202, "{a}");
    let id = a["attempt"]["id"].as_i64().unwrap();
    // Wait until the model call is in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, p) = call(&farm, "GET", &format!("/patches/{id}"), None).await;
        if p["attempt"]["status"] == "drafting" && !p["attempt"]["prompt_chars"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "{p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    farm.signal(libc::SIGKILL);

    let farm = Farm::start(tmp.path(), &data, &env);
    let (_, p) = call(&farm, "GET", &format!("/patches/{id}"), None).await;
    assert_eq!(p["attempt"]["status"], "error", "{p}");
    assert!(
        p["attempt"]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted during the attempt"),
        "{p}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(data.join("workspace/demo"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("patch-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The farm runs jobs.
    let (_, v) = call(
        &farm,
        "POST",
        "/projects/demo/jobs",
        Some(json!({"recipe": "test"})),
    )
    .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let done = wait_status(&farm, &id, |s| s == "succeeded", Duration::from_secs(60)).await;
    assert_eq!(done["job"]["status"], "succeeded");
}
