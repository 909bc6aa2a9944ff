//! API latency with a large ledger: 100,000 jobs and 1,000,000 findings, generated
//! straight into SQLite, then the real `crafting-table serve` binary on loopback and
//! a closed-loop load of 16 concurrent clients per endpoint. Prints p50/p99 and
//! requests per second for `GET /jobs?limit=50`, `GET /jobs/{id}` and
//! `GET /jobs/{id}/findings`, and the resident memory of `serve` at rest.
//!
//! Run: `cargo bench --bench api`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JOBS: usize = 100_000;
const FINDINGS_PER_JOB: usize = 10;
const CLIENTS: usize = 16;
const SECONDS: u64 = 5;

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

fn generate(data: &std::path::Path) {
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
        for i in 0..JOBS {
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

async fn load(base: &str, bearer: &str, paths: &[String]) -> (f64, f64, f64, usize) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, bearer) = (client.clone(), base.to_owned(), bearer.to_owned());
        let paths = paths.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .bearer_auth(&bearer)
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

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(tmp.path().join("registry")).expect("mkdir");
    let t = Instant::now();
    generate(&data);
    println!(
        "generated {JOBS} jobs and {} findings in {:.1} s",
        JOBS * FINDINGS_PER_JOB,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
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
    let ids: Vec<String> = (0..JOBS)
        .step_by(997)
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
        let (p50, p99, rps, n) = rt.block_on(load(&base, &bearer, paths));
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
