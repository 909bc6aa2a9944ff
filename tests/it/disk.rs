//! A full disk: the ledger's (SQLITE_FULL, tried with `PRAGMA max_page_count`) and
//! a job log's (ENOSPC, tried by pointing the log at `/dev/full`, which answers
//! every write with ENOSPC, so no tmpfs or root is needed).

use std::time::Duration;

use crafting_table::farm::FarmOptions;
use serde_json::json;

use crate::helpers::Repo;
use crate::seams::{Client, job_ended, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disks_stop_one_thing_not_the_farm() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new();
    repo.write("README.md", "x\n").commit("one");
    // The gate lives where sandboxed jobs can see it (their /tmp is private).
    let gates = tmp.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let gate = gates.join("gate");
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  max_concurrent_jobs: 1\n  subprojects:\n    - path: .\n      commands:\n        wait: 'while [ ! -f {} ]; do sleep 0.02; done'\n        talk: 'for i in 1 2 3 4 5; do echo line $i; sleep 0.05; done'\n        quiet: 'true'\n",
            repo.path.display(),
            gate.display()
        ),
    )
    .unwrap();
    let farm = start_with(
        &tmp.path().join("data"),
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_SANDBOX_WRITABLE", gates.display().to_string()),
        ],
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);

    // ENOSPC on a job's log: that job ends `error` with the reason; the farm goes on.
    let (_, first) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "wait"})),
        )
        .await;
    let (_, second) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "talk"})),
        )
        .await;
    let second = second["job_id"].as_str().unwrap().to_owned();
    std::os::unix::fs::symlink(
        "/dev/full",
        farm.config.logs_dir().join(format!("{second}.log")),
    )
    .unwrap();
    std::fs::write(&gate, "").unwrap();
    let first = first["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        job_ended(&farm, &api, &first).await["job"]["status"],
        "succeeded"
    );
    let v = job_ended(&farm, &api, &second).await;
    assert_eq!(v["job"]["status"], "error", "{v}");
    let why = v["job"]["error"].as_str().unwrap();
    assert!(
        why.contains("No space left on device") && why.contains("log"),
        "{why}"
    );
    let (_, third) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "quiet"})),
        )
        .await;
    let third = third["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        job_ended(&farm, &api, &third).await["job"]["status"],
        "succeeded"
    );

    // SQLITE_FULL: a write is a clear 503 and changes nothing; with space back, it works.
    let pages = farm
        .db
        .write_blocking(|l| {
            let n = l.page_count()?;
            l.set_max_page_count(n)
        })
        .unwrap();
    assert!(pages > 0);
    let big = json!({"name": "big", "git_url": repo.path.display().to_string(),
        "subprojects": [{"path": ".", "test": format!("echo {}", "x".repeat(300_000))}]});
    let (s, v) = api.call("POST", "/projects", Some(big.clone())).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "disk_full", "{v}");
    let (s, _) = api.call("GET", "/projects/big", None).await;
    assert_eq!(s, 404, "nothing was changed");
    let (s, health) = api.call("GET", "/healthz", None).await;
    assert_eq!(s, 200, "{health}");
    farm.db
        .write_blocking(|l| l.set_max_page_count(1 << 30))
        .unwrap();
    let (s, v) = api.call("POST", "/projects", Some(big)).await;
    assert_eq!(s, 201, "{v}");
    let (_, job) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "quiet"})),
        )
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        job_ended(&farm, &api, &id).await["job"]["status"],
        "succeeded"
    );
    farm.stop("test over").await;
}
