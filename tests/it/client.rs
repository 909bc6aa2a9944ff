//! The command-line client (`run`, `logs`, `jobs`, `findings`, `cancel`): the real
//! binary against a real farm on 127.0.0.1.

use std::time::Duration;

use crafting_table::farm::FarmOptions;
use serde_json::{Value, json};

use crate::helpers::Repo;
use crate::seams::{Client, start_with};

type Setup = crate::seams::OneProject;

async fn setup() -> Setup {
    crate::seams::OneProject::start(concat!(
        "      test: 'echo running the tests; echo the third one broke >&2; exit 3'\n",
        "      lint: \"echo \\\"src/a.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\\\"; exit 2\"\n",
        "      commands:\n        slow: 'sleep 30'\n",
    )).await
}

/// Runs the binary with the farm's address and `token`: (exit code, stdout, stderr).
async fn cli(s: &Setup, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .args(args)
        .env("CRAFTING_TABLE_BASE_URL", format!("http://{}", s.farm.addr))
        .env("CRAFTING_TABLE_TOKEN", token)
        .env_remove("CRAFTING_TABLE_TOKEN_FILE")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follow_exits_with_the_commands_code_and_prints_its_log() {
    let s = setup().await;
    let admin = s.api.bearer.clone();
    let (code, out, err) = cli(&s, &admin, &["run", "app", "test", "--follow"]).await;
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("running the tests"), "{out}");
    assert!(out.contains("the third one broke"), "{out}");
    assert!(err.contains("failed (exit 3)"), "{err}");

    // Without --follow: the job id, exit 0.
    let (code, out, _) = cli(&s, &admin, &["run", "app", "lint"]).await;
    assert_eq!(code, 0);
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 32, "{out}");

    // logs -f waits for the end; then the findings, as a table, JSON and SARIF.
    let (code, log, _) = cli(&s, &admin, &["logs", &id, "-f"]).await;
    assert_eq!(code, 0);
    assert!(log.contains("TS2322"), "{log}");
    let (code, table, _) = cli(&s, &admin, &["findings", &id]).await;
    assert_eq!(code, 0);
    assert!(table.starts_with("STATE"), "{table}");
    assert!(
        table.contains("src/a.ts:1") && table.contains("TS2322"),
        "{table}"
    );
    let (_, sarif, _) = cli(&s, &admin, &["findings", &id, "--format", "sarif"]).await;
    let sarif: Value = serde_json::from_str(&sarif).unwrap();
    let (_, api_sarif) = s
        .api
        .call("GET", &format!("/jobs/{id}/findings?format=sarif"), None)
        .await;
    assert_eq!(sarif, api_sarif, "the CLI prints the API's SARIF");
    assert_eq!(sarif["version"], "2.1.0");
    let (_, json, _) = cli(&s, &admin, &["findings", &id, "--json", "--state", "new"]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["findings"][0]["code"], "TS2322", "{json}");

    // jobs, as a table and as JSON.
    let (_, jobs, _) = cli(&s, &admin, &["jobs", "--project", "app"]).await;
    assert!(jobs.starts_with("ID"), "{jobs}");
    assert!(jobs.contains(&id), "{jobs}");
    let (_, jobs, _) = cli(&s, &admin, &["jobs", "--json", "--status", "failed"]).await;
    let jobs: Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs}");

    // Cancel: a running job stops and `run --follow` says 130.
    let (code, out, _) = cli(&s, &admin, &["run", "app", "slow", "--json"]).await;
    assert_eq!(code, 0);
    let slow: Value = serde_json::from_str(&out).unwrap();
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    let follow = {
        let farm_addr = s.farm.addr;
        let admin = admin.clone();
        let slow_id = slow_id.clone();
        tokio::spawn(async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"))
                .args(["logs", &slow_id, "-f"])
                .env("CRAFTING_TABLE_BASE_URL", format!("http://{farm_addr}"))
                .env("CRAFTING_TABLE_TOKEN", admin)
                .output()
                .await
                .unwrap()
        })
    };
    let (code, out, err) = cli(&s, &admin, &["cancel", &slow_id]).await;
    assert_eq!(code, 0, "{out}{err}");
    let followed = follow.await.unwrap();
    assert!(
        String::from_utf8_lossy(&followed.stdout).contains("cancelled"),
        "{followed:?}"
    );
    // Cancelling it again is the API's 409, exit 125.
    let (code, _, err) = cli(&s, &admin, &["cancel", &slow_id]).await;
    assert_eq!(code, 125);
    assert!(err.contains("already ended"), "{err}");
    s.farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_or_a_missing_farm_is_exit_125_with_a_message() {
    let s = setup().await;
    let (code, out, err) = cli(&s, "ct_not-a-token", &["run", "app", "test", "--follow"]).await;
    assert_eq!(code, 125, "{out}{err}");
    assert!(
        err.contains("unauthorized") || err.contains("token"),
        "{err}"
    );
    assert!(
        !err.contains("ct_not-a-token"),
        "the token is never printed: {err}"
    );
    let admin = s.api.bearer.clone();
    let (code, _, err) = cli(&s, &admin, &["run", "app", "nope"]).await;
    assert_eq!(code, 125);
    assert!(err.contains("no command `nope`"), "{err}");
    let (code, _, err) = cli(&s, &admin, &["logs", "0123"]).await;
    assert_eq!(code, 125);
    assert!(err.contains("not found") || err.contains("no job"), "{err}");
    let (code, _, _) = cli(&s, &admin, &["run", "--bogus"]).await;
    assert_eq!(code, 125, "bad arguments");
    s.farm.stop("test over").await;
    // The farm is gone: the address is named.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .args(["jobs"])
        .env("CRAFTING_TABLE_BASE_URL", "http://127.0.0.1:9")
        .env("CRAFTING_TABLE_TOKEN", "x")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the farm at http://127.0.0.1:9")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_the_farm_runs() {
    let s = setup().await;
    let (_, v) = s
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "test"})),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let data = s.farm.config.data_dir.clone();
    let dest = s._tmp.path().join("backup.sqlite3");
    let ledger = s.farm.config.ledger.clone();
    let run = || {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"));
        c.arg("backup")
            .arg(&dest)
            .env("CRAFTING_DATA_DIR", &data)
            .env_remove("CRAFTING_CONFIG");
        if let crafting_table::config::LedgerLocation::Postgres(url) = &ledger {
            c.env("CRAFTING_LEDGER", url);
        }
        c.output()
    };
    let out = run().await.unwrap();
    if let crafting_table::config::LedgerLocation::Postgres(_) = &ledger {
        // PostgreSQL has its own tools: the command says so and copies nothing.
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("pg_dump") && !dest.exists(), "{err}");
        s.farm.stop("test over").await;
        return;
    }
    assert!(out.status.success(), "{out:?}");
    let copy = crafting_table::ledger::Ledger::open_read_only(&dest).unwrap();
    assert_eq!(copy.integrity_check().unwrap(), Ok(()));
    assert!(
        copy.get_job(&id).unwrap().is_some(),
        "the copy holds the job"
    );
    // The farm kept running: it still answers and runs jobs.
    let (s2, _) = s.api.call("GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(s2, 200);
    // A second backup never overwrites the first.
    let out = run().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{out:?}"
    );
    s.farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_latest_runs_and_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new();
    repo.write("notes.txt", "TODO one\n").commit("one");
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      language: typescript\n      lint: {}\n",
            repo.path.display(),
            serde_json::to_string("awk '/TODO/ { printf \"src/a.ts(%d,1): error TS9999: %s\\n\", NR, $0 }' notes.txt; exit 1").unwrap()
        ),
    )
    .unwrap();
    let farm = start_with(
        &tmp.path().join("data"),
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_RETAIN_RUNS", "3".into()),
        ],
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    let mut ids = Vec::new();
    for run in 1..=10 {
        // The findings change at runs 1 (all new), 5 (one more) and 7 (one fixed).
        match run {
            5 => {
                repo.write("notes.txt", "TODO one\nTODO two\n")
                    .commit("two");
            }
            7 => {
                repo.write("notes.txt", "TODO two\n").commit("fixed one");
            }
            _ => {}
        }
        let mut events = farm.events.subscribe();
        let (_, v) = api
            .call(
                "POST",
                "/projects/app/jobs",
                Some(json!({"recipe": "lint"})),
            )
            .await;
        let id = v["job_id"].as_str().unwrap().to_owned();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .unwrap()
                .unwrap();
            if matches!(&*e, crafting_table::events::FarmEvent::JobFinished { job, .. } if job.id == id)
            {
                break;
            }
        }
        ids.push(id);
    }
    let kept_expected: Vec<&String> = [0usize, 4, 6, 7, 8, 9].iter().map(|i| &ids[*i]).collect();
    let (s, dry) = api
        .call("POST", "/admin/gc", Some(json!({"dry_run": true})))
        .await;
    assert_eq!(s, 200, "{dry}");
    let pruned: Vec<String> = serde_json::from_value(dry["pruned"].clone()).unwrap();
    let mut want: Vec<String> = ids
        .iter()
        .filter(|i| !kept_expected.contains(i))
        .cloned()
        .collect();
    let mut got = pruned.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{dry}");
    assert_eq!(dry["kept_changed"], 3, "{dry}");
    // A dry run changed nothing.
    let logs = farm.config.logs_dir();
    assert!(ids.iter().all(|i| logs.join(format!("{i}.log")).exists()));

    let (_, done) = api.call("POST", "/admin/gc", Some(json!({}))).await;
    assert_eq!(done["pruned"].as_array().unwrap().len(), 4, "{done}");
    for id in &ids {
        let exists = logs.join(format!("{id}.log")).exists();
        let (_, f) = api.call("GET", &format!("/jobs/{id}/findings"), None).await;
        let n = f["findings"].as_array().unwrap().len();
        let (s, _) = api.call("GET", &format!("/jobs/{id}"), None).await;
        assert_eq!(s, 200, "the job row stays");
        if kept_expected.contains(&id) {
            assert!(exists && n > 0, "{id} kept");
        } else {
            assert!(!exists && n == 0, "{id} pruned");
        }
    }
    // /metrics counts what is on disk.
    let metrics = reqwest::get(format!("http://{}/metrics", farm.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let on_disk: u64 = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        metrics.contains(&format!("crafting_log_bytes {on_disk}\n")),
        "{metrics}"
    );
    let rows: usize = {
        let mut n = 0;
        for id in &ids {
            let (_, f) = api.call("GET", &format!("/jobs/{id}/findings"), None).await;
            n += f["findings"].as_array().unwrap().len();
        }
        n
    };
    assert!(
        metrics.contains(&format!("crafting_findings_rows {rows}\n")),
        "{metrics}"
    );
    farm.stop("test over").await;
}
