//! The reconciler against real git and directory registries and a real ledger.

use std::path::Path;

use crafting_table::ledger::{JobFilter, Ledger, NewJob, Source, Trigger};
use crafting_table::manifest::Kind;
use crafting_table::reconciler::{Action, reconcile_once};
use crafting_table::registry::Registry;
use crafting_table::registry::git::GitRegistry;

use crate::helpers::{Repo, project, recipe};

fn git_registry(repo: &Path, work: &Path) -> Registry {
    Registry::Git(GitRegistry {
        url: repo.display().to_string(),
        branch: "main".into(),
        mirror: work.join(".registry.git"),
        token: None,
        timeout: crafting_table::git::DEFAULT_NETWORK_TIMEOUT,
    })
}

fn spec_of(ledger: &Ledger, kind: Kind, name: &str) -> serde_json::Value {
    ledger.snapshot().unwrap()[&(kind, name.to_owned())]
        .spec
        .clone()
}

fn enqueue_test_job(ledger: &mut Ledger, project_name: &str) -> String {
    let snap = ledger.snapshot().unwrap();
    let p: crafting_table::manifest::ProjectSpec =
        serde_json::from_value(snap[&(Kind::Project, project_name.to_owned())].spec.clone())
            .unwrap();
    let recipes = snap
        .values()
        .filter(|o| o.kind == Kind::Recipe)
        .map(|o| {
            (
                o.name.clone(),
                serde_json::from_value(o.spec.clone()).unwrap(),
            )
        })
        .collect();
    let resolved = crafting_table::manifest::resolve::resolve(&p, ".", "test", &recipes).unwrap();
    let (job, coalesced) = ledger
        .enqueue_job(
            &NewJob {
                project: project_name.into(),
                subproject: ".".into(),
                recipe: "test".into(),
                trigger: Trigger::Api,
                schedule: None,
                git_ref: "main".into(),
                snapshot: serde_json::to_value(resolved).unwrap(),
            },
            1,
        )
        .unwrap();
    assert!(!coalesced);
    job.id
}

#[test]
fn git_registry_lifecycle() {
    let reg = Repo::new();
    reg.write("recipes.yaml", &recipe("rust-default", "cargo test"))
        .write("projects/app.yaml", &project("app", "rust-default"))
        .write("projects/tool.yaml", &project("tool", "rust-default"));
    let rev1 = reg.commit("initial");
    let work = tempfile::tempdir().unwrap();
    let registry = git_registry(&reg.path, work.path());
    let mut ledger = Ledger::open(&work.path().join("ledger.sqlite3")).unwrap();

    // Commit manifests → the ledger matches.
    let out = reconcile_once(&registry, &mut ledger, 1_000).unwrap();
    assert_eq!(out.revision, rev1);
    assert_eq!(out.plan.count(|a| matches!(a, Action::Create)), 3);
    let snap = ledger.snapshot().unwrap();
    assert_eq!(snap.len(), 3);
    let app = &snap[&(Kind::Project, "app".into())];
    assert_eq!(app.source, Source::Registry);
    assert_eq!(app.manifest_file.as_deref(), Some("projects/app.yaml"));
    assert_eq!(app.manifest_revision.as_deref(), Some(rev1.as_str()));
    let status = ledger.registry_status().unwrap().unwrap();
    assert_eq!(status.revision.as_deref(), Some(rev1.as_str()));
    assert_eq!(status.last_error, None);
    assert_eq!(status.counts["Project"], 2);

    // Reconciling the same revision again changes nothing.
    let again = reconcile_once(&registry, &mut ledger, 1_500).unwrap();
    assert!(!again.plan.has_changes());

    // Change a recipe → the recipe is updated; an earlier job keeps its snapshot.
    let job = enqueue_test_job(&mut ledger, "app");
    reg.write("recipes.yaml", &recipe("rust-default", "cargo nextest run"));
    let rev2 = reg.commit("nextest");
    let out = reconcile_once(&registry, &mut ledger, 2_000).unwrap();
    let updates: Vec<_> = out
        .plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Update(_)))
        .collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].kind, Kind::Recipe);
    let Action::Update(diff) = &updates[0].action else {
        unreachable!()
    };
    assert_eq!(diff, &["spec.test: \"cargo test\" → \"cargo nextest run\""]);
    assert_eq!(
        spec_of(&ledger, Kind::Recipe, "rust-default")["test"],
        "cargo nextest run"
    );
    let old = ledger.get_job(&job).unwrap().unwrap();
    assert_eq!(
        old.recipe_snapshot["command"], "cargo test",
        "snapshot is not retconned"
    );
    let new_job = enqueue_test_job(&mut ledger, "tool");
    assert_eq!(
        ledger.get_job(&new_job).unwrap().unwrap().recipe_snapshot["command"],
        "cargo nextest run"
    );
    assert_eq!(
        ledger.snapshot().unwrap()[&(Kind::Recipe, "rust-default".into())]
            .manifest_revision
            .as_deref(),
        Some(rev2.as_str())
    );

    // Commit a broken manifest → error with line/col, previous object still active.
    reg.write(
        "projects/app.yaml",
        &project("app", "rust-default").replace(
            "    - path: .\n",
            "    - path: .\n      timeout_secs: soon\n",
        ),
    );
    let rev3 = reg.commit("break app");
    let out = reconcile_once(&registry, &mut ledger, 3_000).unwrap();
    assert_eq!(out.revision, rev3);
    assert_eq!(out.error_count(), 1);
    let kept: Vec<_> = out
        .plan
        .changes
        .iter()
        .filter(|c| c.action == Action::KeptLastGood)
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", out.plan);
    let app = &ledger.snapshot().unwrap()[&(Kind::Project, "app".into())];
    assert_eq!(app.retired_at, None);
    assert_eq!(
        app.manifest_revision.as_deref(),
        Some(rev1.as_str()),
        "last good version in force"
    );
    let statuses = ledger.manifest_statuses().unwrap();
    let bad = statuses.iter().find(|s| s.name == "app").unwrap();
    assert_eq!(bad.file, "projects/app.yaml");
    assert_eq!(bad.kind, "Project");
    assert_eq!((bad.error_line, bad.error_col), (Some(9), Some(21)));
    assert!(
        bad.last_error
            .as_deref()
            .unwrap()
            .contains("timeout_secs: invalid type"),
        "{bad:?}"
    );
    assert_eq!(bad.revision_applied.as_deref(), Some(rev1.as_str()));
    let status = ledger.registry_status().unwrap().unwrap();
    assert!(status.last_error.unwrap().starts_with("1 manifest error"));

    // A file that does not even parse protects what it defined, too.
    reg.write("projects/app.yaml", "apiVersion: [\n");
    reg.commit("garbage");
    let out = reconcile_once(&registry, &mut ledger, 3_500).unwrap();
    assert!(
        out.plan
            .changes
            .iter()
            .any(|c| c.name == "app" && c.action == Action::KeptLastGood)
    );
    assert_eq!(
        ledger.snapshot().unwrap()[&(Kind::Project, "app".into())].retired_at,
        None
    );

    // Delete a file → its object is retired; its jobs stay readable.
    reg.remove("projects/app.yaml");
    reg.commit("drop app");
    let out = reconcile_once(&registry, &mut ledger, 4_000).unwrap();
    assert!(
        out.plan
            .changes
            .iter()
            .any(|c| c.name == "app" && c.action == Action::Retire)
    );
    assert_eq!(
        ledger.snapshot().unwrap()[&(Kind::Project, "app".into())].retired_at,
        Some(4_000)
    );
    assert!(ledger.get_job(&job).unwrap().is_some());
    let jobs = ledger
        .list_jobs(&JobFilter {
            project: Some("app".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(jobs.len(), 1);

    // Bring it back → revived.
    reg.write("projects/app.yaml", &project("app", "rust-default"));
    reg.commit("restore app");
    let out = reconcile_once(&registry, &mut ledger, 5_000).unwrap();
    assert!(
        out.plan
            .changes
            .iter()
            .any(|c| c.name == "app" && c.action == Action::Create)
    );
    assert_eq!(
        ledger.snapshot().unwrap()[&(Kind::Project, "app".into())].retired_at,
        None
    );
    assert_eq!(ledger.integrity_check().unwrap(), Ok(()));
}

#[test]
fn api_projects_are_never_touched() {
    let reg = Repo::new();
    reg.write("r.yaml", &recipe("rust-default", "cargo test"))
        .write("p.yaml", &project("shared-name", "rust-default"));
    reg.commit("claims an API name");
    let work = tempfile::tempdir().unwrap();
    let registry = git_registry(&reg.path, work.path());
    let mut ledger = Ledger::open(&work.path().join("ledger.sqlite3")).unwrap();
    let api_spec = serde_json::json!({"git_url": "/srv/api.git", "subprojects": [{"path": ".", "test": "make"}]});
    assert!(
        ledger
            .insert_api_project("shared-name", &api_spec, "alice", 1)
            .unwrap()
    );
    assert!(
        ledger
            .insert_api_project("api-only", &api_spec, "alice", 1)
            .unwrap()
    );

    let out = reconcile_once(&registry, &mut ledger, 10).unwrap();
    let conflict = out
        .plan
        .changes
        .iter()
        .find(|c| c.name == "shared-name")
        .unwrap();
    assert_eq!(conflict.action, Action::Conflict);
    let snap = ledger.snapshot().unwrap();
    let shared = &snap[&(Kind::Project, "shared-name".into())];
    assert_eq!(shared.source, Source::Api);
    assert_eq!(shared.spec, api_spec, "the API's project is kept");
    let api_only = &snap[&(Kind::Project, "api-only".into())];
    assert_eq!(
        api_only.retired_at, None,
        "absent from the registry, but not the registry's to retire"
    );
    let st = ledger.manifest_statuses().unwrap();
    let s = st.iter().find(|s| s.name == "shared-name").unwrap();
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .contains("registered through the API"),
        "{s:?}"
    );
}

#[test]
fn unreachable_remote_keeps_state_and_recovers() {
    let reg = Repo::new();
    reg.write("r.yaml", &recipe("rust-default", "cargo test"))
        .write("p.yaml", &project("app", "rust-default"));
    let rev = reg.commit("one");
    let work = tempfile::tempdir().unwrap();
    let registry = git_registry(&reg.path, work.path());
    let mut ledger = Ledger::open(&work.path().join("ledger.sqlite3")).unwrap();
    reconcile_once(&registry, &mut ledger, 10).unwrap();

    let moved = reg.path.with_file_name("gone");
    std::fs::rename(&reg.path, &moved).unwrap();
    let err = reconcile_once(&registry, &mut ledger, 20).unwrap_err();
    assert!(err.to_string().starts_with("cannot fetch "), "{err}");
    let status = ledger.registry_status().unwrap().unwrap();
    assert_eq!(status.last_attempt_at, Some(20));
    assert_eq!(status.last_success_at, Some(10));
    assert_eq!(status.revision.as_deref(), Some(rev.as_str()));
    assert!(status.last_error.unwrap().starts_with("cannot fetch "));
    let snap = ledger.snapshot().unwrap();
    assert!(
        snap.values().all(|o| o.retired_at.is_none()),
        "nothing retired"
    );

    std::fs::rename(&moved, &reg.path).unwrap();
    let out = reconcile_once(&registry, &mut ledger, 30).unwrap();
    assert!(!out.plan.has_changes());
    let status = ledger.registry_status().unwrap().unwrap();
    assert_eq!(
        (status.last_success_at, status.last_error),
        (Some(30), None)
    );
}

#[test]
fn directory_registry_revision_follows_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        recipe("rust-default", "cargo test"),
    )
    .unwrap();
    let registry = Registry::Dir(dir.path().to_owned());
    let a = registry.fetch().unwrap().revision;
    assert_eq!(
        registry.fetch().unwrap().revision,
        a,
        "same content, same revision"
    );
    std::fs::write(
        dir.path().join("r.yaml"),
        recipe("rust-default", "cargo nextest run"),
    )
    .unwrap();
    assert_ne!(registry.fetch().unwrap().revision, a);
    assert_eq!(a.len(), 16);
}

fn plan_cmd(dir: &Path, data: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("plan")
        .arg(dir)
        .env("CRAFTING_DATA_DIR", data)
        .env_remove("CRAFTING_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn plan_command_exit_codes_and_output() {
    let reg = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        reg.path().join("r.yaml"),
        recipe("rust-default", "cargo test"),
    )
    .unwrap();
    std::fs::write(reg.path().join("p.yaml"), project("app", "rust-default")).unwrap();

    let (code, out) = plan_cmd(reg.path(), data.path());
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("+ Recipe rust-default (r.yaml)\n+ Project app (p.yaml)\n"),
        "{out}"
    );
    assert!(
        out.contains("2 to create, 0 to update, 0 to retire, 0 unchanged"),
        "{out}"
    );
    assert!(
        !data.path().join("ledger.sqlite3").exists(),
        "plan never creates the ledger"
    );

    let mut ledger = Ledger::open(&data.path().join("ledger.sqlite3")).unwrap();
    reconcile_once(&Registry::Dir(reg.path().to_owned()), &mut ledger, 1).unwrap();
    let (code, out) = plan_cmd(reg.path(), data.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("0 to create, 0 to update, 0 to retire, 2 unchanged\n"),
        "{out}"
    );

    std::fs::write(
        reg.path().join("r.yaml"),
        recipe("rust-default", "cargo nextest run"),
    )
    .unwrap();
    std::fs::remove_file(reg.path().join("p.yaml")).unwrap();
    let (code, out) = plan_cmd(reg.path(), data.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("~ Recipe rust-default (r.yaml)\n    spec.test: \"cargo test\" → \"cargo nextest run\"\n"), "{out}");
    assert!(
        out.contains("- Project app (retire; history kept) (p.yaml)"),
        "{out}"
    );
    // plan changed nothing.
    assert_eq!(
        ledger.snapshot().unwrap()[&(Kind::Recipe, "rust-default".into())].spec["test"],
        "cargo test"
    );

    std::fs::write(
        reg.path().join("bad.yaml"),
        "kind: Recipe\nmetadata: {name: x}\nspec: {}\nextra: 1\n",
    )
    .unwrap();
    let (code, out) = plan_cmd(reg.path(), data.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml:"), "{out}");
}

/// A git smart-HTTP server (tests/fixtures/git_http.py) that wants a token.
struct GitHttp {
    child: std::process::Child,
    port: u16,
}

impl GitHttp {
    fn start(root: &Path, token: &str) -> GitHttp {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/git_http.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(token)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the git HTTP server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        GitHttp {
            child,
            port: line.trim().parse().unwrap(),
        }
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn http_git_registry_with_token() {
    let reg = Repo::new();
    reg.write("r.yaml", &recipe("rust-default", "cargo test"))
        .write("p.yaml", &project("app", "rust-default"));
    let rev = reg.commit("one");
    let served = tempfile::tempdir().unwrap();
    crate::helpers::git(
        served.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            reg.path.to_str().unwrap(),
            "registry.git",
        ],
    );
    let token = "s3cr3t-t0ken";
    let server = GitHttp::start(served.path(), token);
    let url = format!("http://127.0.0.1:{}/registry.git", server.port);
    let work = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&work.path().join("ledger.sqlite3")).unwrap();

    // Without the token: refused, recorded, nothing applied; no secret in the record.
    let anonymous = Registry::Git(GitRegistry {
        url: url.clone(),
        branch: "main".into(),
        mirror: work.path().join("anon.git"),
        token: None,
        timeout: crafting_table::git::DEFAULT_NETWORK_TIMEOUT,
    });
    let err = reconcile_once(&anonymous, &mut ledger, 1).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot fetch http://127.0.0.1:"),
        "{err}"
    );
    assert!(ledger.snapshot().unwrap().is_empty());

    let wrong = Registry::Git(GitRegistry {
        url: url.clone(),
        branch: "main".into(),
        mirror: work.path().join("wrong.git"),
        token: Some("not-it".into()),
        timeout: crafting_table::git::DEFAULT_NETWORK_TIMEOUT,
    });
    assert!(reconcile_once(&wrong, &mut ledger, 2).is_err());

    let authed = Registry::Git(GitRegistry {
        url,
        branch: "main".into(),
        mirror: work.path().join(".registry.git"),
        token: Some(token.into()),
        timeout: crafting_table::git::DEFAULT_NETWORK_TIMEOUT,
    });
    let out = reconcile_once(&authed, &mut ledger, 3).unwrap();
    assert_eq!(out.revision, rev);
    assert_eq!(ledger.snapshot().unwrap().len(), 2);
    let status = ledger.registry_status().unwrap().unwrap();
    assert!(!status.source.contains(token));
    let mirror_config = std::fs::read_to_string(work.path().join(".registry.git/config")).unwrap();
    assert!(
        !mirror_config.contains(token),
        "the token is never written to disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_project_with_the_credentials_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let src = Repo::new();
    src.write("README.md", "private\n").commit("one");
    let served = tempfile::tempdir().unwrap();
    crate::helpers::git(
        served.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            src.path.to_str().unwrap(),
            "app.git",
        ],
    );
    let token = "pr1vate-t0ken";
    let server = GitHttp::start(served.path(), token);
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: http://127.0.0.1:{}/app.git\n  subprojects:\n    - path: .\n      test: 'cat README.md'\n",
            server.port
        ),
    )
    .unwrap();
    let creds = tmp.path().join("git-credentials");
    let write_creds = |secret: &str| {
        std::fs::write(
            &creds,
            format!("http://crafting-table:{secret}@127.0.0.1:{}\n", server.port),
        )
        .unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let run = |data: &'static str, with_creds: bool| {
        let (reg, creds, tmp) = (reg.clone(), creds.clone(), tmp.path().to_owned());
        async move {
            let mut env = vec![("CRAFTING_REGISTRY", reg.display().to_string())];
            if with_creds {
                env.push(("CRAFTING_GIT_CREDENTIALS", creds.display().to_string()));
            }
            let farm = crate::seams::start_with(
                &tmp.join(data),
                &env,
                crafting_table::farm::FarmOptions::default(),
            )
            .await;
            farm.reconcile.run_now().await.unwrap();
            let api = crate::seams::Client::of(&farm);
            let mut events = farm.events.subscribe();
            let (_, v) = api
                .call(
                    "POST",
                    "/projects/app/jobs",
                    Some(serde_json::json!({"recipe": "test"})),
                )
                .await;
            let id = v["job_id"].as_str().unwrap().to_owned();
            loop {
                let e = events.recv().await.unwrap();
                if matches!(&*e, crafting_table::events::FarmEvent::JobFinished { job, .. } if job.id == id)
                {
                    break;
                }
            }
            let (_, job) = api.call("GET", &format!("/jobs/{id}"), None).await;
            farm.stop("test over").await;
            job
        }
    };
    write_creds(token);
    let before = std::fs::read(&creds).unwrap();
    let ok = run("data-ok", true).await;
    assert_eq!(ok["job"]["status"], "succeeded", "{ok}");
    assert!(
        ok["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "private"),
        "{ok}"
    );
    assert_eq!(
        std::fs::read(&creds).unwrap(),
        before,
        "the file is unchanged after a success"
    );

    // Without the file: the fetch fails, saying so, without a prompt.
    let none = run("data-none", false).await;
    assert_eq!(none["job"]["status"], "error", "{none}");
    assert!(
        none["job"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot check out"),
        "{none}"
    );

    // A wrong token: 401, and the file is still byte for byte what it was.
    write_creds("wrong-token");
    let before = std::fs::read(&creds).unwrap();
    let bad = run("data-bad", true).await;
    assert_eq!(bad["job"]["status"], "error", "{bad}");
    assert_eq!(
        std::fs::read(&creds).unwrap(),
        before,
        "the file is unchanged after a 401"
    );

    // A credentials file others can read is refused at start-up.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lookup = {
        let (reg, creds, data) = (reg.clone(), creds.clone(), tmp.path().join("data-loose"));
        move |k: &str| match k {
            "CRAFTING_REGISTRY" => Some(reg.display().to_string()),
            "CRAFTING_GIT_CREDENTIALS" => Some(creds.display().to_string()),
            "CRAFTING_DATA_DIR" => Some(data.display().to_string()),
            "CRAFTING_BIND" => Some("127.0.0.1:0".to_owned()),
            _ => None,
        }
    };
    let cfg = crafting_table::config::Config::from_lookup(&lookup, None, 2).unwrap();
    let err = crafting_table::farm::Farm::start(cfg, crafting_table::farm::FarmOptions::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}
