//! The patch loop end to end: a real farm, real git (the forge's repository served
//! by `git http-backend` with token auth, in a stand-in that implements Gitea's
//! pull-request operations as its Swagger documents them), real tools, and a model
//! stand-in for each backend (clawdforge sessions, OpenAI-compatible chat).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use crafting_table::events::FarmEvent;
use crafting_table::farm::{Farm, FarmOptions};
use serde_json::{Value, json};

use crate::helpers::{Repo, git};
use crate::seams::{Client, start_with};

pub const GITEA_TOKEN: &str = "gitea-secret-7f3a9c";
const MODEL_TOKEN: &str = "model-secret-51d0e2";

/// The Gitea stand-in (tests/fixtures/gitea_standin.py).
pub struct Gitea {
    child: std::process::Child,
    port: u16,
    root: PathBuf,
}

impl Gitea {
    pub fn start(root: &Path) -> Gitea {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gitea_standin.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(GITEA_TOKEN)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the Gitea stand-in");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Gitea {
            child,
            port: line.trim().parse().unwrap(),
            root: root.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let c = reqwest::Client::new();
        let r = if path == "/_control/requests" {
            c.get(format!("{}{path}", self.url())).send().await
        } else {
            c.post(format!("{}{path}", self.url()))
                .json(&body)
                .send()
                .await
        };
        r.unwrap().json().await.unwrap_or(Value::Null)
    }

    fn bare(&self) -> PathBuf {
        self.root.join("team/demo.git")
    }
}

impl Drop for Gitea {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Reply = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the model stand-in saw.
#[derive(Default)]
struct Seen {
    prompts: Vec<String>,
    opened: Vec<String>,
    deleted: Vec<String>,
    auth: Vec<String>,
}

#[derive(Clone)]
struct ModelState {
    reply: Arc<Mutex<Reply>>,
    seen: Arc<Mutex<Seen>>,
}

/// A model stand-in speaking both protocols of the spec.
async fn model_standin(reply: Reply) -> (String, ModelState) {
    let state = ModelState {
        reply: Arc::new(Mutex::new(reply)),
        seen: Arc::default(),
    };
    async fn open(
        State(s): State<ModelState>,
        h: HeaderMap,
        body: String,
    ) -> (StatusCode, axum::Json<Value>) {
        let mut seen = s.seen.lock().unwrap();
        seen.auth.push(
            h.get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        );
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["purpose"], "crafting-table patch");
        let id = format!("s{}", seen.opened.len() + 1);
        seen.opened.push(id.clone());
        (StatusCode::CREATED, axum::Json(json!({"id": id})))
    }
    async fn turn(
        State(s): State<ModelState>,
        UrlPath(_id): UrlPath<String>,
        body: String,
    ) -> String {
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let prompt = v["message"].as_str().unwrap_or("").to_owned();
        s.seen.lock().unwrap().prompts.push(prompt.clone());
        let f = s.reply.lock().unwrap().clone();
        f(&prompt)
    }
    async fn close(State(s): State<ModelState>, UrlPath(id): UrlPath<String>) -> StatusCode {
        s.seen.lock().unwrap().deleted.push(id);
        StatusCode::NO_CONTENT
    }
    async fn chat(State(s): State<ModelState>, h: HeaderMap, body: String) -> axum::Json<Value> {
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["temperature"], 0);
        assert_eq!(v["response_format"]["type"], "json_object");
        let prompt = v["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        {
            let mut seen = s.seen.lock().unwrap();
            seen.auth.push(
                h.get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
            );
            seen.prompts.push(prompt.clone());
        }
        let f = s.reply.lock().unwrap().clone();
        axum::Json(json!({"choices": [{"message": {"role": "assistant", "content": f(&prompt)}}]}))
    }
    let app = axum::Router::new()
        .route("/sessions", post(open))
        .route("/sessions/{id}/turns", post(turn))
        .route("/sessions/{id}", delete(close))
        .route("/v1/chat/completions", post(chat))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

fn reply_with(diff: &str) -> Reply {
    let body =
        json!({"diff": diff, "explanation": "Removes what the tool flagged.", "confidence": 0.9})
            .to_string();
    Arc::new(move |_| body.clone())
}

/// A TypeScript "checker" that flags every line with TODO, as tsc prints errors.
const TODO_CHECK: &str = "awk '/TODO/ { printf \"src/app.ts(%d,%d): error TS9999: %s\\n\", NR, index($0, \"TODO\"), $0 }' src/app.ts; if grep -q TODO src/app.ts; then exit 1; fi";

const APP_TS: &str = "const a = 1;\n// TODO remove this\nconst b = 2;\n";

const FIX_TS: &str = "--- a/src/app.ts\n+++ b/src/app.ts\n@@ -1,3 +1,2 @@\n const a = 1;\n-// TODO remove this\n const b = 2;\n";

struct PatchFarm {
    _tmp: tempfile::TempDir,
    gitea: Gitea,
    model: ModelState,
    farm: Farm,
    api: Client,
    work: Repo,
}

enum Backend {
    Clawdforge,
    OpenAi,
}

async fn setup(
    backend: Backend,
    files: &[(&str, &str)],
    command: &str,
    language: &str,
    auto: bool,
    reply: Reply,
) -> PatchFarm {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("forge");
    std::fs::create_dir_all(root.join("team")).unwrap();
    let work = Repo::new();
    for (p, t) in files {
        work.write(p, t);
    }
    work.commit("initial");
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
    let gitea = Gitea::start(&root);
    let (model_url, model) = model_standin(reply).await;
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("demo.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  git_url: {}\n  forge: {{owner: team, repo: demo}}\n  notify:\n    auto_patch: {auto}\n  subprojects:\n    - path: .\n      language: {language}\n      timeout_secs: 300\n      lint: {}\n",
            gitea.bare().display(),
            serde_json::to_string(command).unwrap()
        ),
    )
    .unwrap();
    let mut env = vec![
        ("CRAFTING_REGISTRY", reg.display().to_string()),
        ("CRAFTING_GITEA_URL", gitea.url()),
        ("CRAFTING_GITEA_TOKEN", GITEA_TOKEN.to_owned()),
    ];
    match backend {
        Backend::Clawdforge => {
            env.push(("CRAFTING_CLAWDFORGE_URL", model_url.clone()));
            env.push(("CRAFTING_CLAWDFORGE_TOKEN", MODEL_TOKEN.to_owned()));
        }
        Backend::OpenAi => {
            env.push(("CRAFTING_LLM_URL", format!("{model_url}/v1")));
            env.push(("CRAFTING_LLM_MODEL", "coder-7b".to_owned()));
            env.push(("CRAFTING_LLM_TOKEN", MODEL_TOKEN.to_owned()));
        }
    }
    let farm = start_with(
        &tmp.path().join("data"),
        &env,
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    let out = farm.reconcile.run_now().await.unwrap();
    assert_eq!(out.error_count(), 0, "{:?}", out.diagnostics);
    let api = Client::of(&farm);
    PatchFarm {
        _tmp: tmp,
        gitea,
        model,
        farm,
        api,
        work,
    }
}

impl PatchFarm {
    /// Runs the lint job and returns (job id, findings).
    async fn lint(&self) -> (String, Vec<Value>) {
        let mut events = self.farm.events.subscribe();
        let (s, v) = self
            .api
            .call(
                "POST",
                "/projects/demo/jobs",
                Some(json!({"recipe": "lint"})),
            )
            .await;
        assert!(s == 201 || s == 200, "{v}");
        let id = v["job_id"].as_str().unwrap().to_owned();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(120), events.recv())
                .await
                .expect("job finished")
                .unwrap();
            if matches!(&*e, FarmEvent::JobFinished { job, .. } if job.id == id) {
                break;
            }
        }
        let (_, f) = self
            .api
            .call("GET", &format!("/jobs/{id}/findings"), None)
            .await;
        (id, f["findings"].as_array().cloned().unwrap_or_default())
    }

    /// Starts an attempt and waits for its end; returns `GET /patches/{id}`.
    async fn patch(&self, job: &str, finding: i64) -> (u16, Value) {
        let mut events = self.farm.events.subscribe();
        let (s, v) = self
            .api
            .call(
                "POST",
                &format!("/jobs/{job}/patches"),
                Some(json!({"finding_id": finding})),
            )
            .await;
        if s != 202 {
            return (s, v);
        }
        let id = v["attempt"]["id"].as_i64().unwrap();
        self.wait_attempt(id, &mut events).await
    }

    async fn wait_attempt(
        &self,
        id: i64,
        events: &mut tokio::sync::broadcast::Receiver<Arc<FarmEvent>>,
    ) -> (u16, Value) {
        loop {
            let (_, now) = self.api.call("GET", &format!("/patches/{id}"), None).await;
            if !now["attempt"]["finished_at"].is_null() {
                return (202, now);
            }
            let e = tokio::time::timeout(Duration::from_secs(180), events.recv())
                .await
                .expect("the attempt ended");
            let _ = e;
        }
    }

    fn forge_git(&self, args: &[&str]) -> String {
        let bare = self.gitea.bare();
        let mut full = vec!["--git-dir", bare.to_str().unwrap()];
        full.extend_from_slice(args);
        git(Path::new("/"), &full)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clippy_finding_to_pull_request_with_clawdforge() {
    let main_rs = "use std::collections::HashMap;\n\nfn main() {\n    println!(\"hi\");\n}\n";
    let fix = "--- a/src/main.rs\n+++ b/src/main.rs\n@@ -1,5 +1,3 @@\n-use std::collections::HashMap;\n-\n fn main() {\n     println!(\"hi\");\n }\n";
    let pf = setup(
        Backend::Clawdforge,
        &[
            ("Cargo.toml", "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n"),
            ("src/main.rs", main_rs),
        ],
        "CARGO_TARGET_DIR=\"$CRAFTING_CACHE_DIR/target\" cargo clippy --quiet --message-format=json",
        "rust",
        false,
        reply_with(fix),
    )
    .await;
    let (job, findings) = pf.lint().await;
    let target = findings
        .iter()
        .find(|f| f["code"] == "unused_imports")
        .unwrap_or_else(|| panic!("the real tool found the unused import: {findings:?}"));
    assert_eq!(target["file"], "src/main.rs");
    let mut opened = pf.farm.events.subscribe();
    let (s, a) = pf.patch(&job, target["id"].as_i64().unwrap()).await;
    assert_eq!(s, 202, "{a}");
    let a = &a["attempt"];
    assert_eq!(a["status"], "pr_opened", "{a}");
    assert_eq!(a["backend"], "clawdforge");
    let branch = format!(
        "crafting-table/auto/demo/{}",
        target["fingerprint"].as_str().unwrap()
    );
    assert_eq!(a["branch"], branch.as_str());
    assert_eq!(a["pull_request"]["number"], 1, "{a}");
    assert_eq!(a["pull_request"]["state"], "open");

    // The patches page shows the attempt: status, the diff, the pull request.
    let cookie = crate::ui::login(&pf.api.base, &pf.api.bearer).await;
    let (status, _, html) = crate::ui::page(&pf.api.base, &cookie, "/ui/patches").await;
    assert_eq!(status, 200);
    for want in [
        "pr_opened",
        a["pull_request"]["url"].as_str().unwrap(),
        "println!(&quot;hi&quot;)",
        a["verify_job_id"].as_str().unwrap(),
    ] {
        assert!(html.contains(want), "{want} in {html}");
    }

    // The branch on the forge holds exactly that change.
    let changed = pf.forge_git(&["diff", "--name-only", "main", &branch]);
    assert_eq!(changed, "src/main.rs");
    let patched = pf.forge_git(&["show", &format!("{branch}:src/main.rs")]);
    assert_eq!(patched, "fn main() {\n    println!(\"hi\");\n}");
    let parent = pf.forge_git(&["rev-parse", &format!("{branch}^")]);
    assert_eq!(parent, pf.forge_git(&["rev-parse", "main"]));

    // The verify job ran the same command, as an ordinary job, and found nothing new.
    let verify = a["verify_job_id"].as_str().unwrap();
    let (_, vj) = pf.api.call("GET", &format!("/jobs/{verify}"), None).await;
    assert_eq!(vj["job"]["status"], "succeeded", "{vj}");
    assert_eq!(vj["job"]["trigger"], "patch_verify");
    assert_eq!(
        vj["job"]["findings_count"],
        findings.len() as i64 - 1,
        "{vj}"
    );
    let (_, listed) = pf.api.call("GET", "/jobs?limit=10", None).await;
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == verify)
    );

    // The pull request as Gitea received it.
    let reqs = pf.gitea.control("/_control/requests", Value::Null).await;
    let created: Vec<&Value> = reqs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(created.len(), 1, "{reqs}");
    let body = &created[0]["body"];
    assert_eq!(body["head"], branch.as_str());
    assert_eq!(body["base"], "main");
    assert_eq!(
        body["title"], "fix(rustc): unused_imports in src/main.rs",
        "{body}"
    );
    let text = body["body"].as_str().unwrap();
    assert!(text.contains(&job) && text.contains(verify), "{text}");
    assert!(text.contains("Removes what the tool flagged."), "{text}");
    assert_eq!(created[0]["authorization_scheme"], "token");

    // The session was closed; the event was published.
    {
        let seen = pf.model.seen.lock().unwrap();
        assert_eq!(seen.opened, ["s1"]);
        assert_eq!(seen.deleted, ["s1"]);
        assert!(seen.prompts[0].contains("use std::collections::HashMap;"));
        assert!(seen.prompts[0].contains("unused_imports"));
        assert_eq!(seen.auth[0], format!("Bearer {MODEL_TOKEN}"));
    }
    let mut saw = false;
    while let Ok(e) = opened.try_recv() {
        saw |= matches!(&*e, FarmEvent::PullRequestOpened { project, .. } if project == "demo");
    }
    assert!(saw, "PullRequestOpened was published");

    // The next ordinary run still reports the finding (the verify job is no baseline).
    let (_, again) = pf.lint().await;
    let same = again
        .iter()
        .find(|f| f["fingerprint"] == target["fingerprint"])
        .unwrap();
    assert_eq!(same["baseline_state"], "unchanged", "{same}");

    // A second try while its pull request is open: 409 naming it.
    let (s, v) = pf.patch(&job, target["id"].as_i64().unwrap()).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("/pulls/1"),
        "{v}"
    );
    secrets_absent(&pf);
    pf.farm.stop("test over").await;
}

/// Neither token appears anywhere in the data directory or in a prompt.
fn secrets_absent(pf: &PatchFarm) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&pf._tmp.path().join("data"), &mut files);
    assert!(files.len() > 3);
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for secret in [GITEA_TOKEN, MODEL_TOKEN] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {}",
                f.display()
            );
        }
    }
    for p in &pf.model.seen.lock().unwrap().prompts {
        assert!(!p.contains(GITEA_TOKEN) && !p.contains(MODEL_TOKEN), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_backend_fenced_reply_and_every_failure_status() {
    let fenced = format!(
        "Here is the fix:\n```json\n{}\n```",
        json!({"diff": FIX_TS, "explanation": "Drop the TODO.", "confidence": 0.7})
    );
    let fenced: Reply = Arc::new(move |_| fenced.clone());
    let pf = setup(
        Backend::OpenAi,
        &[("src/app.ts", APP_TS)],
        TODO_CHECK,
        "typescript",
        false,
        reply_with(FIX_TS),
    )
    .await;
    let (job, findings) = pf.lint().await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    let finding = findings[0]["id"].as_i64().unwrap();
    let set = |r: Reply| *pf.model.reply.lock().unwrap() = r;

    // Prose: model_error, the reply kept.
    set(Arc::new(|_| {
        "You should delete the TODO comment on line 2.".to_owned()
    }));
    let (_, a) = pf.patch(&job, finding).await;
    assert_eq!(a["attempt"]["status"], "model_error", "{a}");
    assert!(
        a["attempt"]["model_reply"]
            .as_str()
            .unwrap()
            .contains("delete the TODO")
    );

    // A diff that does not apply.
    set(reply_with(
        "--- a/src/app.ts\n+++ b/src/app.ts\n@@ -1,2 +1,1 @@\n-nothing like this\n-at all\n+x\n",
    ));
    let (_, a) = pf.patch(&job, finding).await;
    assert_eq!(a["attempt"]["status"], "apply_failed", "{a}");
    assert!(
        a["attempt"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not apply"),
        "{a}"
    );

    // A reply wrapped in a fenced block is accepted: the third attempt opens a PR.
    set(fenced);
    let (s, a) = pf.patch(&job, finding).await;
    assert_eq!(s, 202, "third attempt: {a}");
    assert_eq!(a["attempt"]["status"], "pr_opened", "{a}");
    assert_eq!(a["attempt"]["backend"], "openai");
    assert_eq!(a["attempt"]["model"], "coder-7b");
    assert_eq!(a["attempt"]["explanation"], "Drop the TODO.");
    assert_eq!(
        pf.model.seen.lock().unwrap().auth[0],
        format!("Bearer {MODEL_TOKEN}")
    );
    // The finding had its three attempts: the fourth is 409, listing them.
    let (s, v) = pf.patch(&job, finding).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 attempts"),
        "{v}"
    );
    pf.farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_new_findings_forge_errors_and_reuse() {
    let pf = setup(
        Backend::OpenAi,
        &[
            ("src/app.ts", APP_TS),
            ("src/other.ts", "const c = 3;\n// TODO also\n"),
        ],
        TODO_CHECK,
        "typescript",
        false,
        reply_with("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-root\n+evil\n"),
    )
    .await;
    let (job, findings) = pf.lint().await;
    let finding = findings[0]["id"].as_i64().unwrap();
    let before = pf.forge_git(&["for-each-ref", "--format=%(refname)"]);

    // `../`: apply_failed, nothing written.
    let (_, a) = pf.patch(&job, finding).await;
    assert_eq!(a["attempt"]["status"], "apply_failed", "{a}");
    assert!(
        a["attempt"]["reason"].as_str().unwrap().contains(".."),
        "{a}"
    );
    // Removes the target but adds a new TODO: verify_failed, nothing pushed.
    *pf.model.reply.lock().unwrap() = reply_with(
        "--- a/src/app.ts\n+++ b/src/app.ts\n@@ -1,3 +1,3 @@\n const a = 1;\n-// TODO remove this\n const b = 2;\n+// TODO later\n",
    );
    let (_, a) = pf.patch(&job, finding).await;
    assert_eq!(a["attempt"]["status"], "verify_failed", "{a}");
    assert!(
        a["attempt"]["reason"]
            .as_str()
            .unwrap()
            .contains("introduced 1 new finding"),
        "{a}"
    );
    assert_eq!(
        pf.forge_git(&["for-each-ref", "--format=%(refname)"]),
        before,
        "nothing pushed"
    );
    // The forge answers 500: forge_error, with Gitea's message.
    let (_, f2) = pf
        .api
        .call("GET", &format!("/jobs/{job}/findings"), None)
        .await;
    let _ = f2;
    pf.gitea.control("/_control/fail-next", json!({})).await;
    *pf.model.reply.lock().unwrap() = reply_with(FIX_TS);
    let (_, a) = pf.patch(&job, finding).await;
    assert_eq!(a["attempt"]["status"], "forge_error", "{a}");
    assert!(
        a["attempt"]["reason"].as_str().unwrap().contains("500"),
        "{a}"
    );
    pf.farm.stop("test over").await;

    // A pull request someone opened for the branch already: reused, not duplicated.
    let pf = setup(
        Backend::Clawdforge,
        &[("src/app.ts", APP_TS)],
        TODO_CHECK,
        "typescript",
        false,
        reply_with(FIX_TS),
    )
    .await;
    let (job, findings) = pf.lint().await;
    let fp = findings[0]["fingerprint"].as_str().unwrap();
    let branch = format!("crafting-table/auto/demo/{fp}");
    pf.forge_git(&["branch", &branch, "main"]);
    let made = pf
        .gitea
        .control(
            "/_control/open/team/demo",
            json!({"head": branch, "base": "main", "title": "by hand"}),
        )
        .await;
    assert_eq!(made["number"], 1, "{made}");
    let (_, a) = pf.patch(&job, findings[0]["id"].as_i64().unwrap()).await;
    assert_eq!(a["attempt"]["status"], "pr_opened", "{a}");
    assert_eq!(a["attempt"]["pull_request"]["number"], 1, "reused: {a}");
    let reqs = pf.gitea.control("/_control/requests", Value::Null).await;
    assert!(
        !reqs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "POST"),
        "no second pull request: {reqs}"
    );
    // Closed by a person: no longer open; the finding is not retried automatically,
    // a manual trigger may.
    pf.gitea
        .control("/_control/close/team/demo/1", json!({}))
        .await;
    let (s, a) = pf.patch(&job, findings[0]["id"].as_i64().unwrap()).await;
    assert_eq!(s, 202, "{a}");
    assert_eq!(a["attempt"]["status"], "pr_opened", "{a}");
    assert_eq!(a["attempt"]["pull_request"]["number"], 2, "{a}");
    secrets_absent(&pf);
    pf.farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_patch_starts_by_itself_only_when_asked() {
    let off = setup(
        Backend::Clawdforge,
        &[("src/app.ts", APP_TS)],
        TODO_CHECK,
        "typescript",
        false,
        reply_with(FIX_TS),
    )
    .await;
    off.lint().await;
    let on = setup(
        Backend::Clawdforge,
        &[("src/app.ts", APP_TS)],
        TODO_CHECK,
        "typescript",
        true,
        reply_with(FIX_TS),
    )
    .await;
    let mut events = on.farm.events.subscribe();
    on.lint().await;
    let url = loop {
        let e = tokio::time::timeout(Duration::from_secs(180), events.recv())
            .await
            .expect("an automatic attempt ended")
            .unwrap();
        match &*e {
            FarmEvent::PullRequestOpened { url, .. } => break url.clone(),
            FarmEvent::PatchEnded { status, .. } => panic!("automatic attempt ended {status}"),
            _ => {}
        }
    };
    assert!(url.contains("/team/demo/pulls/1"), "{url}");
    let (_, list) = on.api.call("GET", "/patches?project=demo", None).await;
    let attempts = list["patches"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{list}");
    assert_eq!(attempts[0]["trigger"], "auto");
    // The verify job started nothing: still one attempt after it finished.
    let (_, none) = off.api.call("GET", "/patches", None).await;
    assert_eq!(none["patches"], json!([]), "auto_patch off: nothing");
    let _ = &on.work;
    off.farm.stop("test over").await;
    on.farm.stop("test over").await;
}
