//! The farm's seams: a silent registry holds nobody up, an idle farm stays idle,
//! and the core never imports an edge.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crafting_table::config::Config;
use crafting_table::events::FarmEvent;
use crafting_table::farm::{Farm, FarmOptions};
use serde_json::{Value, json};

use crate::helpers::Repo;

async fn start(data: &Path, env: &[(&str, String)]) -> Farm {
    start_with(
        data,
        env,
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await
}

/// A farm from these settings (data directory, loopback port 0 and LAN added).
pub async fn start_with(data: &Path, env: &[(&str, String)], mut opts: FarmOptions) -> Farm {
    // As `serve`: warm worktrees keep a sandbox running the farm's binary.
    opts.sandbox_program
        .get_or_insert_with(|| env!("CARGO_BIN_EXE_crafting-table").into());
    let mut map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    map.insert("CRAFTING_DATA_DIR".into(), data.display().to_string());
    map.insert("CRAFTING_BIND".into(), "127.0.0.1:0".into());
    map.insert("CRAFTING_LAN_CIDRS".into(), "127.0.0.0/8".into());
    for (k, v) in crate::postgres::ledger_setting() {
        map.entry(k.to_owned()).or_insert(v);
    }
    let lookup = move |k: &str| map.get(k).cloned();
    let cfg = Config::from_lookup(&lookup, None, 2).unwrap();
    Farm::start(cfg, opts).await.unwrap()
}

/// A farm with one registry project `app`: a repository holding one TypeScript
/// file, one subproject `.` (TypeScript, 60 s timeout) whose command lines are
/// `commands` (YAML at the subproject's indentation).
pub struct OneProject {
    pub _tmp: tempfile::TempDir,
    pub _repo: Repo,
    pub farm: Farm,
    pub api: Client,
}

impl OneProject {
    pub async fn start(commands: &str) -> OneProject {
        OneProject::start_with(commands, "", &[]).await
    }

    /// With more of the project's spec (`spec_extra`, YAML at the spec's
    /// indentation) and more settings.
    pub async fn start_with(
        commands: &str,
        spec_extra: &str,
        env: &[(&str, String)],
    ) -> OneProject {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::new();
        repo.write("src/a.ts", "let x: number = 'one';\n")
            .commit("one");
        let reg = tmp.path().join("registry");
        std::fs::create_dir(&reg).unwrap();
        std::fs::write(
            reg.join("app.yaml"),
            format!(
                "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n{spec_extra}  subprojects:\n    - path: .\n      language: typescript\n      timeout_secs: 60\n{commands}",
                repo.path.display()
            ),
        )
        .unwrap();
        let mut settings = vec![("CRAFTING_REGISTRY", reg.display().to_string())];
        settings.extend(env.iter().cloned());
        let farm = start_with(
            &tmp.path().join("data"),
            &settings,
            FarmOptions {
                kill_grace: Duration::from_secs(2),
                ..FarmOptions::default()
            },
        )
        .await;
        farm.reconcile.run_now().await.unwrap();
        let api = Client::of(&farm);
        OneProject {
            _tmp: tmp,
            _repo: repo,
            farm,
            api,
        }
    }
}

/// The farm's API as its admin.
pub struct Client {
    pub base: String,
    pub bearer: String,
    http: reqwest::Client,
}

impl Client {
    pub fn of(farm: &Farm) -> Client {
        Client {
            base: format!("http://{}", farm.addr),
            bearer: std::fs::read_to_string(farm.config.admin_bearer_path())
                .unwrap()
                .trim()
                .to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A client of the API at `base` with `bearer`.
    pub fn at(base: String, bearer: String) -> Client {
        Client {
            base,
            bearer,
            http: reqwest::Client::new(),
        }
    }

    /// `GET path`, its body still to read.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.bearer)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` as text.
    pub async fn text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// Follows job `id`'s log until it holds `what` (at most a minute).
    pub async fn wait_log(&self, id: &str, what: &str) {
        let mut resp = self.get(&format!("/jobs/{id}/log?follow=1")).await;
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(chunk) = resp.chunk().await.unwrap() {
                seen.extend_from_slice(&chunk);
                if String::from_utf8_lossy(&seen).contains(what) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            found.ok(),
            Some(true),
            "job {id}'s log never showed {what:?}: {}",
            String::from_utf8_lossy(&seen)
        );
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// Waits for job `id`'s end (an ended status stored, re-checked on each farm event)
/// and returns `GET /jobs/{id}`.
pub async fn job_ended(farm: &Farm, api: &Client, id: &str) -> Value {
    let mut events = farm.events.subscribe();
    loop {
        let (_, v) = api.call("GET", &format!("/jobs/{id}"), None).await;
        if !["queued", "running"].contains(&v["job"]["status"].as_str().unwrap_or("")) {
            return v;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("the job ends");
    }
}

/// Enqueues `body` for `project` and waits for the job's end.
pub async fn run_to_end(farm: &Farm, api: &Client, project: &str, body: Value) -> Value {
    let (s, v) = api
        .call("POST", &format!("/projects/{project}/jobs"), Some(body))
        .await;
    assert!(s == 201 || s == 200, "{v}");
    job_ended(farm, api, v["job_id"].as_str().unwrap()).await
}

/// A "git server" that accepts connections and never says a word.
pub fn silent_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    (addr, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_registry_holds_nobody_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (addr, _server) = silent_server();
    let url = format!("http://{addr}/reg.git");
    let source = Repo::new();
    source.write("README.md", "hi\n").commit("one");
    let t0 = Instant::now();
    let farm = start(
        &tmp.path().join("data"),
        &[
            ("CRAFTING_REGISTRY", url.clone()),
            ("CRAFTING_REGISTRY_POLL_SECS", "3600".into()),
            ("CRAFTING_GIT_TIMEOUT_SECS", "8".into()),
        ],
    )
    .await;
    let api = Client::of(&farm);

    // The API answers while the first fetch hangs.
    let (status, health) = api.call("GET", "/healthz", None).await;
    assert_eq!(status, 200, "{health}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, reg) = api.call("GET", "/registry", None).await;
        if reg["in_progress"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no reconcile in progress: {reg}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A project registered through the API is created and its job runs to its end
    // while the registry fetch still hangs.
    let mut events = farm.events.subscribe();
    let (status, body) = api
        .call(
            "POST",
            "/projects",
            Some(
                json!({"name": "quick", "git_url": source.path.display().to_string(),
                "subprojects": [{"path": ".", "test": "echo ran", "timeout_secs": 60}]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/projects/quick/jobs",
            Some(json!({"recipe": "test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let finished = loop {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the job finished")
            .unwrap();
        if let FarmEvent::JobFinished { job, status, .. } = &*e
            && job.id == id
        {
            break *status;
        }
    };
    assert_eq!(finished.as_str(), "succeeded");
    let (_, reg) = api.call("GET", "/registry", None).await;
    assert_eq!(
        reg["in_progress"], true,
        "the fetch is still hanging after the job finished: {reg}"
    );

    // The fetch then fails on its deadline, naming the remote and the limit.
    let outcome = tokio::time::timeout(Duration::from_secs(60), farm.reconcile.run_now())
        .await
        .expect("the fetch ends on its deadline");
    let err = outcome.unwrap_err();
    assert!(t0.elapsed() >= Duration::from_secs(8), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("8s"), "{err}");
    let (_, reg) = api.call("GET", "/registry", None).await;
    let stored = reg["last_error"].as_str().unwrap_or_default();
    assert!(
        stored.contains(&addr.to_string()) && stored.contains("8s"),
        "{reg}"
    );
    farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_farm_stays_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    for (file, name) in [("a.yaml", "alpha"), ("b.yaml", "beta")] {
        std::fs::write(
            reg.join(file),
            format!(
                "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  git_url: /nowhere\n  subprojects:\n    - path: .\n      test: 'true'\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(reg.join("broken.yaml"), "kind: [\n").unwrap();
    let farm = start(
        &tmp.path().join("data"),
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_REGISTRY_POLL_SECS", "60".into()),
        ],
    )
    .await;
    let first = farm
        .reconciled(Duration::from_secs(30))
        .await
        .expect("first reconcile")
        .unwrap();
    assert_eq!(first.error_count(), 1);
    let times = |farm: &Farm| {
        tokio::task::block_in_place(|| {
            farm.db
                .read_blocking(|l| l.manifest_status_times().unwrap())
        })
    };
    let before = times(&farm);
    assert_eq!(before.len(), 3, "{before:?}");
    let reconciles = |farm: &Farm| farm.metrics.reconciles_ok.load(Ordering::SeqCst);
    let after_first = reconciles(&farm);

    // An idle reconcile (nothing new) rewrites no manifest status row.
    tokio::time::sleep(Duration::from_millis(5)).await;
    farm.reconcile.run_now().await.unwrap();
    assert_eq!(
        times(&farm),
        before,
        "an idle reconcile rewrote status rows"
    );

    // Ten idle seconds: reading the manifests does not wake the watcher, and a
    // 60 s poll allows no reconcile in that window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        reconciles(&farm),
        after_first + 1,
        "reconciles while idle (only the one asked for is allowed)"
    );

    // A real change is still seen by the watcher, and rewrites only its own row.
    let mut events = 0;
    std::fs::write(
        reg.join("b.yaml"),
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: beta\nspec:\n  git_url: /elsewhere\n  subprojects:\n    - path: .\n      test: 'true'\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reconciles(&farm) == after_first + 1 {
        assert!(Instant::now() < deadline, "the change was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
        events += 1;
    }
    assert!(events > 0);
    let after = times(&farm);
    let changed: Vec<&String> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0.0)
        .collect();
    assert_eq!(changed, ["b.yaml"]);
    farm.stop("test over").await;
}

/// Modules of the core: they never import an edge.
const CORE: &[&str] = &[
    "clock",
    "config",
    "enqueue",
    "events",
    "findings",
    "gc",
    "git",
    "ledger",
    "logfile",
    "manifest",
    "parsers",
    "reconciler",
    "registry",
    "runner",
    "scheduler",
    "workspace",
    "digest",
    "notify",
    "patcher",
];

/// Modules that serve people, and the wiring.
const EDGES: &[&str] = &["api", "mcp", "web", "ui", "client", "cli", "farm", "serve"];

/// Every `crate::<edge>` a source text refers to (also inside `use crate::{…}`).
fn edge_imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let code: String = text
        .lines()
        .map(|l| {
            let l = l.trim_start();
            if l.starts_with("//") {
                ""
            } else {
                l.split(" //").next().unwrap_or(l)
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            vec![
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ]
        };
        for n in names {
            if EDGES.contains(&n) {
                found.push(n.to_owned());
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_core_never_imports_an_edge() {
    // The detector itself.
    assert_eq!(edge_imports("use crate::api::tail_lines;"), ["api"]);
    assert_eq!(
        edge_imports("use crate::{ledger::Db, farm::Farm};"),
        ["farm"]
    );
    assert!(edge_imports("use crate::ledger::Db; // crate::api is an edge").is_empty());
    assert!(edge_imports("let x = crate::apiary::X;").is_empty());

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut offences = Vec::new();
    for module in CORE {
        let mut files = Vec::new();
        let single = src.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        }
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for edge in edge_imports(&text) {
                offences.push(format!("{} imports crate::{edge}", f.display()));
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} core files found");
    assert!(offences.is_empty(), "{offences:#?}");
    // Every top-level module is classified, so a new one cannot slip past.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .and_then(|m| m.strip_suffix(';'))
        {
            assert!(
                CORE.contains(&m) || EDGES.contains(&m),
                "module `{m}` is neither core nor edge: add it to this test and ARCHITECTURE.md"
            );
        }
    }
}
