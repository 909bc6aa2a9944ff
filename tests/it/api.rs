//! The HTTP API: the real server on 127.0.0.1:0, a real HTTP client, a real ledger
//! and runner.

use std::path::Path;
use std::time::{Duration, Instant};

use crafting_table::api;
use crafting_table::config::Config;
use crafting_table::events::FarmEvent;
use crafting_table::farm::{Farm, FarmOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::Repo;

pub struct App {
    pub tmp: tempfile::TempDir,
    pub _source: Repo,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub farm: Farm,
}

pub struct Opts {
    pub lan: &'static str,
    pub secret: Option<&'static str>,
    pub trusted_proxies: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            lan: "127.0.0.0/8",
            secret: None,
            trusted_proxies: "",
        }
    }
}

impl App {
    pub async fn spawn() -> App {
        App::spawn_with(Opts::default()).await
    }

    pub async fn spawn_with(opts: Opts) -> App {
        let tmp = tempfile::tempdir().unwrap();
        let source = Repo::new();
        source.write("README.md", "hi\n").commit("one");
        let reg = tmp.path().join("registry");
        std::fs::create_dir(&reg).unwrap();
        // The gate lives where sandboxed jobs can see it (their /tmp is private).
        let gates = tmp.path().join("gates");
        std::fs::create_dir(&gates).unwrap();
        let gate = gates.join("gate");
        std::fs::write(
            reg.join("team.yaml"),
            format!(
                "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: team-proj\nspec:\n  git_url: {src}\n  owners: [team-a]\n  max_concurrent_jobs: 4\n  subprojects:\n    - path: .\n      test: echo testing\n      lint: 'echo first; while [ ! -f {gate} ]; do sleep 0.05; done; echo second'\n      commands:\n        slow: sleep 600\n        typecheck: \"echo \x27src/a.ts(3,5): error TS2322: Type string is not number.\x27; exit 2\"\n",
                src = source.path.display(),
                gate = gate.display()
            ),
        )
        .unwrap();
        let data = tmp.path().join("data");
        let mut env: std::collections::HashMap<&str, String> = [
            ("CRAFTING_DATA_DIR", data.display().to_string()),
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_LAN_CIDRS", opts.lan.to_owned()),
            ("CRAFTING_TRUSTED_PROXIES", opts.trusted_proxies.to_owned()),
            ("CRAFTING_WORKERS", "4".to_owned()),
            ("CRAFTING_BIND", "127.0.0.1:0".to_owned()),
            ("CRAFTING_SANDBOX_WRITABLE", gates.display().to_string()),
        ]
        .into_iter()
        .chain(
            opts.secret
                .map(|s| ("CRAFTING_WEBHOOK_SECRET", s.to_owned())),
        )
        .collect();
        for (k, v) in crate::postgres::ledger_setting() {
            env.insert(k, v);
        }
        let lookup = move |k: &str| env.get(k).cloned();
        let cfg = Config::from_lookup(&lookup, None, 2).unwrap();
        let farm = Farm::start(
            cfg,
            FarmOptions {
                kill_grace: Duration::from_secs(2),
                ..FarmOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(farm.admin_minted);
        // The registry is applied before the test starts.
        farm.reconcile.run_now().await.unwrap();
        let admin = std::fs::read_to_string(farm.config.admin_bearer_path())
            .unwrap()
            .trim()
            .to_owned();
        let base = format!("http://{}", farm.addr);
        App {
            tmp,
            _source: source,
            base,
            admin,
            client: reqwest::Client::new(),
            farm,
        }
    }

    pub fn gate(&self) -> std::path::PathBuf {
        self.tmp.path().join("gates/gate")
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, path: &str, bearer: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(bearer), None).await
    }

    pub async fn post(&self, path: &str, bearer: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(bearer), Some(body)).await
    }

    pub async fn mint(&self, name: &str, is_admin: bool, cidrs: &[&str]) -> String {
        let (s, v) = self
            .post(
                "/admin/tokens",
                &self.admin,
                json!({"name": name, "is_admin": is_admin, "ip_cidrs": cidrs}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["bearer"].as_str().unwrap().to_owned()
    }

    /// Waits for the job's end (its `JobFinished` event, or a finished status
    /// already in the ledger) and returns `GET /jobs/{id}` as `bearer` sees it.
    pub async fn wait_job(&self, id: &str, bearer: &str) -> Value {
        let mut events = self.farm.events.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, v) = self.get(&format!("/jobs/{id}"), bearer).await;
            let status = v["job"]["status"].as_str().unwrap_or("").to_owned();
            if !["queued", "running", ""].contains(&status.as_str()) {
                return v;
            }
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => panic!("job never finished: {v}"),
                    Ok(Ok(e)) if !matches!(&*e, FarmEvent::JobFinished { job, .. } if job.id == id) =>
                    {
                        continue;
                    }
                    Ok(_) => break,
                }
            }
        }
    }
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

fn api_project(name: &str, repo: &Path) -> Value {
    json!({"name": name, "git_url": repo.display().to_string(), "languages": ["python"],
           "subprojects": [{"path": ".", "language": "python", "test": "echo ok", "lint": "echo lint", "timeout_secs": 60}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_auth_and_errors() {
    let app = App::spawn().await;
    let (s, v) = app.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["ok"].clone(), v["workers"].clone(), v["queued"].clone()),
        (json!(true), json!(4), json!(0))
    );
    assert!(v["registry_revision"].is_string());

    let (s, v) = app.call("GET", "/projects", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (s, _) = app.call("GET", "/projects", Some("ct_nope"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .get(format!("{}/projects", app.base))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let (s, v) = app.get("/no/such/route", &app.admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (s, v) = app.call("PATCH", "/projects", Some(&app.admin), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&v, "method_not_allowed");

    // Malformed JSON, wrong types, unknown fields, wrong content type, too large.
    let resp = app
        .client
        .post(format!("{}/projects", app.base))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_error(&resp.json().await.unwrap(), "bad_request");
    let (s, v) = app
        .post("/admin/tokens", &app.admin, json!({"name": 5}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&v, "invalid");
    let (s, v) = app
        .post(
            "/admin/tokens",
            &app.admin,
            json!({"name": "x", "admin": true}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `admin`"),
        "{v}"
    );
    let resp = app
        .client
        .post(format!("{}/admin/tokens", app.base))
        .bearer_auth(&app.admin)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"name": "x".repeat(2 * 1024 * 1024)});
    let (s, v) = app.post("/projects", &app.admin, big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, "too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_mint_list_revoke_and_networks() {
    let app = App::spawn().await;
    let alice = app.mint("alice", false, &[]).await;
    assert!(alice.starts_with("ct_") && alice.len() == 67, "{alice}");
    let (s, v) = app
        .post("/admin/tokens", &app.admin, json!({"name": "alice"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "conflict");
    let (s, v) = app
        .post(
            "/admin/tokens",
            &app.admin,
            json!({"name": "bob", "ip_cidrs": ["10.0.0.0/33"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = app
        .post("/admin/tokens", &app.admin, json!({"name": "bad name!"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let (s, v) = app.get("/admin/tokens", &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice"]);
    assert!(!v.to_string().contains("ct_"), "no bearer in listings");

    // Non-admins cannot touch tokens.
    let (s, v) = app.get("/admin/tokens", &alice).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "admin_only");

    // A token limited to another network fails from here.
    let far = app.mint("far", false, &["10.9.0.0/16"]).await;
    let (s, _) = app.get("/projects", &far).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let near = app.mint("near", false, &["127.0.0.1"]).await;
    assert_eq!(app.get("/projects", &near).await.0, StatusCode::OK);

    // Revoked: fails on the very next request.
    assert_eq!(app.get("/projects", &alice).await.0, StatusCode::OK);
    let (s, _) = app
        .call("DELETE", "/admin/tokens/alice", Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get("/projects", &alice).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = app
        .call("DELETE", "/admin/tokens/alice", Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");

    // The data directory never holds a bearer in plain text.
    let bearers = [alice, far, near];
    let mut files = vec![app.tmp.path().join("data")];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if p.file_name().is_some_and(|n| n != "admin-bearer.txt") {
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for b in &bearers {
                assert!(!text.contains(b.as_str()), "{} holds a bearer", p.display());
            }
            assert!(
                !text.contains(app.admin.as_str()),
                "{} holds the admin bearer",
                p.display()
            );
        }
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(app.tmp.path().join("data/admin-bearer.txt"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_allowlist_refuses_before_auth() {
    let app = App::spawn_with(Opts {
        lan: "10.0.0.0/8",
        ..Opts::default()
    })
    .await;
    let (s, v) = app.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "not_on_lan");
    let (s, _) = app.get("/projects", &app.admin).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The web pages, their assets and the badges are behind the same check.
    for (method, path) in crafting_table::ui::ROUTES {
        let path = path
            .replace("{name}", "app")
            .replace("{id}", "x")
            .replace("{*rest}", "anything")
            .replace("{project}", "app")
            .replace("{file}", "test.svg");
        let r = app
            .client
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{path}", app.base),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    // A forwarding header from a peer that is not a trusted proxy changes nothing.
    let s = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-forwarded-for", "10.1.2.3")
        .header("forwarded", "for=10.1.2.3")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_forward_the_client_address() {
    // The test's loopback peer plays a reverse proxy; clients are on 10/8.
    let app = App::spawn_with(Opts {
        lan: "10.0.0.0/8,127.0.0.1/32",
        trusted_proxies: "127.0.0.1/32,192.168.77.0/24",
        ..Opts::default()
    })
    .await;
    let status = |headers: Vec<(&'static str, &'static str)>, bearer: Option<String>| {
        let mut req = app.client.get(format!("{}/projects", app.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let admin = || Some(app.admin.clone());
    // No header: the proxy itself is the client (and it is on the allowlist).
    assert_eq!(status(vec![], admin()).await.0, StatusCode::OK);
    // The forwarded client decides the allowlist, not the proxy.
    let (s, v) = status(vec![("x-forwarded-for", "8.8.8.8")], admin()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error(&v, "not_on_lan");
    assert_eq!(
        status(vec![("x-forwarded-for", "10.1.2.3")], admin())
            .await
            .0,
        StatusCode::OK
    );
    // Rightmost untrusted hop: a client cannot hide behind a LAN address it wrote
    // itself; trusted hops (another proxy) are skipped.
    let (s, _) = status(vec![("x-forwarded-for", "10.1.2.3, 8.8.8.8")], admin()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        status(
            vec![("x-forwarded-for", "8.8.8.8, 10.1.2.3, 192.168.77.5")],
            admin()
        )
        .await
        .0,
        StatusCode::OK
    );
    // RFC 7239 `Forwarded` wins over X-Forwarded-For, with ports and IPv6 forms.
    assert_eq!(
        status(
            vec![
                ("forwarded", "for=\"10.1.2.3:4711\";proto=https"),
                ("x-forwarded-for", "8.8.8.8")
            ],
            admin()
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, _) = status(vec![("forwarded", "for=\"[2001:db8::1]:80\"")], admin()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A hop that is not an address is refused, naming the header.
    let (s, v) = status(vec![("forwarded", "for=unknown")], admin()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Forwarded"),
        "{v}"
    );
    // Per-token networks see the forwarded client too.
    let bob = app.mint("bob", false, &["10.9.0.0/16"]).await;
    assert_eq!(
        status(vec![("x-forwarded-for", "10.9.1.1")], Some(bob.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        status(vec![("x-forwarded-for", "10.1.2.3")], Some(bob.clone()))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(vec![], Some(bob)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_crud_visibility_and_gitops_rule() {
    let app = App::spawn().await;
    let repo = Repo::new();
    repo.write("a.txt", "a\n").commit("a");
    let alice = app.mint("alice", false, &[]).await;
    let bob = app.mint("bob", false, &[]).await;
    let team = app.mint("team-a", false, &[]).await;

    let (s, v) = app
        .post("/projects", &alice, api_project("alice-app", &repo.path))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["project"]["source"], "api");
    assert_eq!(v["project"]["owner"], "alice");
    assert_eq!(v["project"]["default_branch"], "main");

    // Validation uses the manifest rules.
    let mut bad = api_project("bad-app", &repo.path);
    bad["subprojects"][0]["path"] = json!("../escape");
    let (s, v) = app.post("/projects", &alice, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("leaves the repository"),
        "{v}"
    );
    let mut typo = api_project("typo-app", &repo.path);
    typo["subprojects"][0]["tset"] = json!("x");
    let (s, v) = app.post("/projects", &alice, typo).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `tset`"),
        "{v}"
    );
    let (s, _) = app.post("/projects", &alice, json!({"git_url": "x"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // The registry owns its names.
    let (s, v) = app
        .post("/projects", &alice, api_project("team-proj", &repo.path))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team.yaml"),
        "{v}"
    );
    let (s, _) = app
        .post("/projects", &bob, api_project("alice-app", &repo.path))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Visibility.
    let names = |v: &Value| -> Vec<String> {
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&app.get("/projects", &alice).await.1), ["alice-app"]);
    assert!(names(&app.get("/projects", &bob).await.1).is_empty());
    assert_eq!(
        names(&app.get("/projects", &team).await.1),
        ["team-proj"],
        "registry owners see it"
    );
    let mut all = names(&app.get("/projects", &app.admin).await.1);
    all.sort();
    assert_eq!(all, ["alice-app", "team-proj"]);
    let (s, v) = app.get("/projects/alice-app", &bob).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "404, never 403");
    assert_error(&v, "not_found");
    let (s, v) = app.get("/projects/team-proj", &team).await;
    assert_eq!(
        (s, v["project"]["manifest_file"].clone()),
        (StatusCode::OK, json!("team.yaml"))
    );

    // Update: API projects yes, registry projects 409 naming the file.
    let mut upd = api_project("alice-app", &repo.path);
    upd["default_branch"] = json!("trunk");
    let (s, v) = app
        .call("PUT", "/projects/alice-app", Some(&alice), Some(upd))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["project"]["default_branch"], "trunk");
    let (s, _) = app
        .call(
            "PUT",
            "/projects/alice-app",
            Some(&bob),
            Some(api_project("alice-app", &repo.path)),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app
        .call(
            "PUT",
            "/projects/team-proj",
            Some(&team),
            Some(api_project("team-proj", &repo.path)),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team.yaml"),
        "{v}"
    );
    let (s, v) = app
        .call("DELETE", "/projects/team-proj", Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team.yaml"),
        "{v}"
    );

    // Delete cascades to jobs.
    let mut upd = api_project("alice-app", &repo.path);
    upd["default_branch"] = json!("main");
    app.call("PUT", "/projects/alice-app", Some(&alice), Some(upd))
        .await;
    let (s, v) = app
        .post(
            "/projects/alice-app/jobs",
            &alice,
            json!({"recipe": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let job = v["job_id"].as_str().unwrap().to_owned();
    app.wait_job(&job, &alice).await;
    let (s, _) = app
        .call("DELETE", "/projects/alice-app", Some(&bob), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call("DELETE", "/projects/alice-app", Some(&alice), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/jobs/{job}"), &app.admin).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/projects/alice-app", &alice).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueue_list_detail_cancel_and_cross_token() {
    let app = App::spawn().await;
    let team = app.mint("team-a", false, &[]).await;
    let other = app.mint("other", false, &[]).await;

    let (s, v) = app
        .post("/projects/team-proj/jobs", &team, json!({"recipe": "tset"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["error"]["message"],
        "subproject `.` has no command `tset`; commands: lint, slow, test, typecheck"
    );
    let (s, v) = app
        .post(
            "/projects/team-proj/jobs",
            &team,
            json!({"recipe": "test", "subproject": "sdk"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        v["error"]["message"],
        "unknown subproject `sdk`; subprojects: ."
    );
    let (s, _) = app
        .post(
            "/projects/team-proj/jobs",
            &team,
            json!({"recipe": "test", "ref": "--upload-pack=x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .post(
            "/projects/team-proj/jobs",
            &other,
            json!({"recipe": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not visible: 404");

    let (s, v) = app
        .post("/projects/team-proj/jobs", &team, json!({"recipe": "test"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_job(&id, &team).await;
    assert_eq!(done["job"]["status"], "succeeded", "{done}");
    assert_eq!(done["job"]["exit_code"], 0);
    assert!(
        done["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "testing"),
        "{done}"
    );
    let (s, log) = app.get(&format!("/jobs/{id}/log"), &team).await;
    assert_eq!(s, StatusCode::OK);
    assert!(log.as_str().unwrap().contains("testing\n"));

    // Every object route is 404 for a token that may not see it.
    for path in [
        format!("/jobs/{id}"),
        format!("/jobs/{id}/log"),
        format!("/jobs/{id}/findings"),
    ] {
        let (s, v) = app.get(&path, &other).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_error(&v, "not_found");
    }
    for path in [format!("/jobs/{id}/cancel"), format!("/jobs/{id}/patches")] {
        let (s, _) = app.post(&path, &other, json!({})).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, v) = app.get("/jobs", &other).await;
    assert_eq!(
        (s, v["jobs"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );

    // Patches: 503 while the patch loop is off; lists empty.
    let (s, v) = app
        .post(
            &format!("/jobs/{id}/patches"),
            &team,
            json!({"finding_id": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&v, "patcher_disabled");
    let (s, v) = app.get("/patches", &team).await;
    assert_eq!((s, v["patches"].clone()), (StatusCode::OK, json!([])));
    assert_eq!(app.get("/patches/1", &team).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/patches/abc", &team).await.0,
        StatusCode::NOT_FOUND
    );

    // Cancel: a running job stops; a finished one is 409.
    let (_, v) = app
        .post("/projects/team-proj/jobs", &team, json!({"recipe": "slow"}))
        .await;
    let slow = v["job_id"].as_str().unwrap().to_owned();
    loop {
        let (_, v) = app.get(&format!("/jobs/{slow}"), &team).await;
        if v["job"]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = app
        .post(&format!("/jobs/{slow}/cancel"), &team, json!({}))
        .await;
    assert_eq!(
        (s, v["status"].clone()),
        (StatusCode::OK, json!("stopping")),
        "{v}"
    );
    let done = app.wait_job(&slow, &team).await;
    assert_eq!(done["job"]["status"], "cancelled");
    assert_eq!(done["job"]["error"], "cancelled by team-a");
    let (s, v) = app
        .post(&format!("/jobs/{slow}/cancel"), &team, json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_listing_filters_pages_and_bad_queries() {
    let app = App::spawn().await;
    let mut ids = Vec::new();
    for r in ["test", "lint", "slow"] {
        let (_, v) = app
            .post("/projects/team-proj/jobs", &app.admin, json!({"recipe": r}))
            .await;
        ids.push(v["job_id"].as_str().unwrap().to_owned());
    }
    // Coalescing: the same job while it is still queued (cancel it first to keep it
    // from starting is not possible here, so enqueue a fresh one twice quickly).
    let (s1, v1) = app
        .post(
            "/projects/team-proj/jobs",
            &app.admin,
            json!({"recipe": "test", "ref": "main"}),
        )
        .await;
    let (s2, v2) = app
        .post(
            "/projects/team-proj/jobs",
            &app.admin,
            json!({"recipe": "test", "ref": "main"}),
        )
        .await;
    if v2["coalesced"] == true {
        assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
        assert_eq!(v1["job_id"], v2["job_id"]);
    }
    let (s, v) = app.get("/jobs?limit=2", &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    let page1 = v["jobs"].as_array().unwrap().clone();
    assert_eq!(page1.len(), 2);
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let (_, v) = app
        .get(&format!("/jobs?limit=2&cursor={cursor}"), &app.admin)
        .await;
    let page2 = v["jobs"].as_array().unwrap();
    assert!(!page2.is_empty());
    assert!(
        page2.iter().all(|j| !page1.contains(j)),
        "pages do not overlap"
    );
    let (_, v) = app
        .get(
            "/jobs?project=team-proj&status=queued&limit=500",
            &app.admin,
        )
        .await;
    assert!(
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "queued")
    );
    for bad in [
        "/jobs?limit=0",
        "/jobs?limit=501",
        "/jobs?limit=abc",
        "/jobs?status=done",
        "/jobs?cursor=zzz",
        "/jobs?colour=red",
        "/jobs/x/findings?format=xml",
        "/jobs/x/log?follow=maybe",
    ] {
        let (s, v) = app.get(bad, &app.admin).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_error(&v, "bad_request");
    }
    // Let the gated lint job finish and stop the slow one before the test ends.
    std::fs::write(app.gate(), "").unwrap();
    app.post(&format!("/jobs/{}/cancel", ids[2]), &app.admin, json!({}))
        .await;
    for id in &ids {
        app.wait_job(id, &app.admin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_follow_streams_until_the_job_ends() {
    let app = App::spawn().await;
    let (_, v) = app
        .post(
            "/projects/team-proj/jobs",
            &app.admin,
            json!({"recipe": "lint"}),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let mut resp = app
        .client
        .get(format!("{}/jobs/{id}/log?follow=1", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut seen = String::new();
    while !seen.contains("\nfirst\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("\nsecond\n"));
    // Written after the request started:
    std::fs::write(app.gate(), "").unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\nsecond\n"), "{seen}");
    assert!(
        seen.contains("[crafting-table] exit 0 after"),
        "the stream ends with the job: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_routes_and_webhook_signatures() {
    use hmac::Mac;
    let secret = "s3cret";
    let app = App::spawn_with(Opts {
        secret: Some(secret),
        ..Opts::default()
    })
    .await;
    let team = app.mint("team-a", false, &[]).await;
    let (s, v) = app.get("/registry", &team).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["manifests"][0]["file"], "team.yaml");
    assert!(v["source"].as_str().unwrap().starts_with("dir:"));
    let (s, _) = app.post("/registry/reconcile", &team, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app.post("/registry/reconcile", &app.admin, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["unchanged"], 1);

    let body = br#"{"ref":"refs/heads/main","after":"abc"}"#.to_vec();
    let sign = |b: &[u8]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(b);
        m.finalize()
            .into_bytes()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let hook = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut r = app
            .client
            .post(format!("{}/hooks/registry", app.base))
            .body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let good = sign(&body);
    let (_, before) = app.get("/registry", &team).await;
    assert_eq!(
        hook(vec![("X-Gitea-Signature", good.clone())], body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    // The signed push made the reconcile loop run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, now) = app.get("/registry", &team).await;
        if now["last_attempt_at"] != before["last_attempt_at"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook did not trigger a reconcile"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hook(
            vec![("X-Hub-Signature-256", format!("sha256={good}"))],
            body.clone()
        )
        .await
        .unwrap()
        .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        hook(vec![("X-Gitea-Signature", "00".repeat(32))], body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        hook(vec![], body.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A replayed signature on another body.
    let other = br#"{"ref":"refs/heads/main","after":"def"}"#.to_vec();
    let resp = hook(vec![("X-Gitea-Signature", good)], other)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_error(&resp.json().await.unwrap(), "bad_signature");

    // Without a secret the endpoint does not exist.
    let plain = App::spawn().await;
    let resp = plain
        .client
        .post(format!("{}/hooks/registry", plain.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route_and_metrics_render() {
    let app = App::spawn().await;
    let (s, doc) = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in api::ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} missing from openapi.json"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, api::ROUTES.len());
    // And every documented route is served (not the router's fallback).
    for (method, path) in api::ROUTES {
        let concrete = path.replace("{name}", "x").replace("{id}", "x");
        let (s, v) = app
            .call(
                &method.to_uppercase(),
                &concrete,
                Some(&app.admin),
                Some(json!({})),
            )
            .await;
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED && v["error"]["message"] != "no such route",
            "{method} {path}: {s} {v}"
        );
    }
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("crafting_jobs{status=\"queued\"} 0"),
        "{text}"
    );
    assert!(text.contains("crafting_queue_depth 0"));
    assert!(text.contains("# TYPE crafting_reconciles_total counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_json_state_filter_and_sarif() {
    let app = App::spawn().await;
    let (_, v) = app
        .post(
            "/projects/team-proj/jobs",
            &app.admin,
            json!({"recipe": "typecheck"}),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_job(&id, &app.admin).await;
    assert_eq!(
        (
            done["job"]["status"].clone(),
            done["job"]["findings_count"].clone()
        ),
        (json!("failed"), json!(1)),
        "{done}"
    );
    let (s, v) = app.get(&format!("/jobs/{id}/findings"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    let f = &v["findings"][0];
    assert_eq!(
        (
            f["tool"].clone(),
            f["kind"].clone(),
            f["file"].clone(),
            f["line"].clone(),
            f["code"].clone()
        ),
        (
            json!("tsc"),
            json!("lint"),
            json!("src/a.ts"),
            json!(3),
            json!("TS2322")
        )
    );
    assert_eq!(f["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(f["baseline_state"], "new");
    assert_eq!(v["fixed"], json!([]));
    let (_, v) = app
        .get(&format!("/jobs/{id}/findings?state=new"), &app.admin)
        .await;
    assert_eq!(v["findings"].as_array().unwrap().len(), 1);
    let (_, v) = app
        .get(&format!("/jobs/{id}/findings?state=unchanged"), &app.admin)
        .await;
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    let resp = app
        .client
        .get(format!("{}/jobs/{id}/findings?format=sarif", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/sarif+json");
    let sarif: Value = resp.json().await.unwrap();
    let r = &sarif["runs"][0];
    assert_eq!(r["tool"]["driver"]["name"], "tsc");
    assert_eq!(r["results"][0]["ruleId"], "TS2322");
    assert_eq!(r["results"][0]["level"], "error");
    assert_eq!(r["results"][0]["baselineState"], "new");
    assert_eq!(
        r["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"],
        3
    );
    // A second run of the same commit: the finding is unchanged.
    let (_, v) = app
        .post(
            "/projects/team-proj/jobs",
            &app.admin,
            json!({"recipe": "typecheck"}),
        )
        .await;
    let id2 = v["job_id"].as_str().unwrap().to_owned();
    app.wait_job(&id2, &app.admin).await;
    let (_, v) = app
        .get(&format!("/jobs/{id2}/findings?state=unchanged"), &app.admin)
        .await;
    assert_eq!(v["findings"].as_array().unwrap().len(), 1, "{v}");
}
