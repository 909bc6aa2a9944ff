//! Crash soak: a real `serve` driven by concurrent clients (short real commands,
//! some failing, some timing out, some cancelled; registry changes; signed webhook
//! calls) and killed with SIGKILL at random moments, restarted each time. After
//! every restart and at the end it checks the promises and prints:
//! kills, jobs acknowledged, lost, duplicated, stuck, orphans, leaked worktrees —
//! the last five must be 0 (exit 1 otherwise).
//!
//! Run: `cargo run --example soak -- [KILLS] [path of the crafting-table binary]`
//! (`.ci/run` runs 20 kills against the debug build).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crafting_table::ledger::{JobFilter, JobStatus, Ledger};
use serde_json::json;

const MARK: &str = "61234"; // in every long-running command: `sleep 61234`
const SECRET: &str = "soak-webhook-secret";

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "soak")
        .env("GIT_AUTHOR_EMAIL", "soak@example.com")
        .env("GIT_COMMITTER_NAME", "soak")
        .env("GIT_COMMITTER_EMAIL", "soak@example.com")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "git {args:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18810)
}

struct Serve {
    child: Child,
    base: String,
}

fn start(bin: &Path, data: &Path, reg: &Path) -> Serve {
    let port = free_port();
    let child = Command::new(bin)
        .arg("serve")
        .env("CRAFTING_DATA_DIR", data)
        .env("CRAFTING_REGISTRY", reg)
        .env("CRAFTING_BIND", format!("127.0.0.1:{port}"))
        .env("CRAFTING_WORKERS", "2")
        .env("CRAFTING_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_healthy(base: &str) {
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if c.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("serve did not answer within 30 s");
}

fn sign(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One client: enqueues, cancels, touches the registry, calls the webhook.
async fn client(base: String, bearer: String, reg: PathBuf, acked: Arc<Mutex<HashSet<String>>>) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let recipes = ["ok", "fail", "slow", "timeout", "hang"];
    let mut mine: Vec<String> = Vec::new();
    loop {
        let r = rand_u64();
        match r % 10 {
            0 if !mine.is_empty() => {
                let id = &mine[(r as usize / 10) % mine.len()];
                let _ = c
                    .post(format!("{base}/jobs/{id}/cancel"))
                    .bearer_auth(&bearer)
                    .send()
                    .await;
            }
            1 => {
                // A registry change: the watcher reconciles.
                let _ = std::fs::write(
                    reg.join("note.yaml"),
                    format!(
                        "# touched {r}\napiVersion: crafting-table/v1\nkind: Recipe\nmetadata: {{name: note}}\nspec:\n  test: 'true'\n"
                    ),
                );
            }
            2 => {
                let body = json!({"ref": "refs/heads/main"}).to_string();
                let _ = c
                    .post(format!("{base}/hooks/registry"))
                    .header("X-Gitea-Signature", sign(body.as_bytes()))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
            }
            _ => {
                let recipe = recipes[(r as usize / 10) % recipes.len()];
                let resp = c
                    .post(format!("{base}/projects/soak/jobs"))
                    .bearer_auth(&bearer)
                    .json(&json!({"recipe": recipe}))
                    .send()
                    .await;
                if let Ok(resp) = resp
                    && resp.status().as_u16() == 201
                    && let Ok(v) = resp.json::<serde_json::Value>().await
                    && let Some(id) = v["job_id"].as_str()
                {
                    acked.lock().expect("lock").insert(id.to_owned());
                    mine.push(id.to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + rand_u64() % 40)).await;
    }
}

/// Processes of jobs (`sleep 61234`) with the job id from their environment.
fn marked_processes() -> Vec<(i32, Option<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !cmd.windows(MARK.len()).any(|w| w == MARK.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            continue; // a zombie holds nothing
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let job = env
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("CRAFTING_JOB_ID=").map(str::to_owned));
        out.push((pid, job));
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    lost: usize,
    duplicated: usize,
    stuck: usize,
    orphans: usize,
    leaked: usize,
}

/// Checks the promises against the ledger and the machine. `settled`: no job may
/// be running (the end), else running jobs must belong to the live process.
fn check(data: &Path, acked: &HashSet<String>, live_since: i64, settled: bool) -> Counts {
    let mut c = Counts::default();
    let ledger = Ledger::open_read_only(&data.join("ledger.sqlite3")).expect("ledger opens");
    assert_eq!(
        ledger.integrity_check().expect("integrity"),
        Ok(()),
        "PRAGMA integrity_check"
    );
    let jobs = ledger
        .list_jobs(&JobFilter {
            limit: 1_000_000,
            ..JobFilter::default()
        })
        .expect("jobs");
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &jobs {
        *seen.entry(j.id.as_str()).or_default() += 1;
    }
    c.lost = acked
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .count();
    c.duplicated = seen.values().filter(|n| **n > 1).count();
    let running: HashSet<&str> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Running)
        .map(|j| j.id.as_str())
        .collect();
    c.stuck = jobs
        .iter()
        .filter(|j| {
            (j.status == JobStatus::Running && (settled || j.started_at.unwrap_or(0) < live_since))
                || (settled && j.status == JobStatus::Queued)
        })
        .count();
    let orphans: Vec<(i32, Option<String>)> = marked_processes()
        .into_iter()
        .filter(|(_, job)| job.as_deref().is_none_or(|j| !running.contains(j)))
        .collect();
    for (pid, job) in &orphans {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let status = job.as_deref().map(|j| {
            jobs.iter()
                .find(|x| x.id == j)
                .map(|x| format!("{:?} pgid={:?}", x.status, x.pgid))
                .unwrap_or_else(|| "not in the ledger".to_owned())
        });
        eprintln!(
            "orphan pid {pid} job {job:?} ({status:?}) stat [{}] cmd [{cmd}]",
            stat.trim()
        );
    }
    c.orphans = orphans.len();
    let ws = data.join("workspace/soak");
    c.leaked = std::fs::read_dir(&ws)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !running.contains(n.as_str()))
        .count();
    // Every schedule fire is recorded once (the key), and ran its jobs once.
    let fires = ledger.schedule_fires("every-minute").expect("fires");
    let times: HashSet<i64> = fires.iter().map(|f| f.0).collect();
    c.duplicated += fires.len() - times.len();
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kills: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let bin = PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "target/debug/crafting-table".to_owned()),
    );
    let bin = std::fs::canonicalize(&bin).expect("the crafting-table binary (build it first)");
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("README.md"), "soak\n").expect("write");
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "one"]);
    let reg = tmp.path().join("registry");
    std::fs::create_dir_all(&reg).expect("mkdir");
    std::fs::write(
        reg.join("soak.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: soak\nspec:\n  git_url: {}\n  max_concurrent_jobs: 2\n  subprojects:\n    - path: .\n      timeout_secs: 1\n      commands:\n        ok: 'echo ok'\n        fail: 'echo failing; exit 3'\n        slow: 'sleep 0.3; echo done'\n        timeout: 'sleep {MARK}'\n        hang: 'sleep {MARK} & sleep {MARK}; wait'\n---\napiVersion: crafting-table/v1\nkind: Schedule\nmetadata:\n  name: every-minute\nspec:\n  cron: '* * * * *'\n  timezone: UTC\n  projects: [soak]\n  recipe: ok\n",
            src.display()
        ),
    )
    .expect("write");
    let data = tmp.path().join("data");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let started = Instant::now();
    let mut worst = Counts::default();
    let mut add = |c: &Counts| {
        worst.lost = worst.lost.max(c.lost);
        worst.duplicated = worst.duplicated.max(c.duplicated);
        worst.stuck = worst.stuck.max(c.stuck);
        worst.orphans = worst.orphans.max(c.orphans);
        worst.leaked = worst.leaked.max(c.leaked);
    };
    for round in 0..=kills {
        // Jobs this process starts have started_at >= this; anything older still
        // `running` after its start-up sweep is stuck.
        let live_since = chrono::Utc::now().timestamp_millis();
        let serve = start(&bin, &data, &reg);
        wait_healthy(&serve.base).await;
        // The restart swept what the kill left: check before new work starts.
        if round > 0 {
            let snapshot = acked.lock().expect("lock").clone();
            let c = check(&data, &snapshot, live_since, false);
            add(&c);
            if c.lost + c.duplicated + c.stuck + c.orphans + c.leaked > 0 {
                eprintln!("after restart {round}: {c:?}");
            }
        }
        let bearer = std::fs::read_to_string(data.join("admin-bearer.txt"))
            .expect("bearer")
            .trim()
            .to_owned();
        let clients: Vec<_> = (0..3)
            .map(|_| {
                tokio::spawn(client(
                    serve.base.clone(),
                    bearer.clone(),
                    reg.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + rand_u64() % 1300)).await;
        let mut child = serve.child;
        if round < kills {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
        } else {
            for c in &clients {
                c.abort();
            }
            // The end: let the queue drain, then stop cleanly.
            let base = serve.base.clone();
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let m = http.get(format!("{base}/metrics")).send().await.ok();
                let text = match m {
                    Some(r) => r.text().await.unwrap_or_default(),
                    None => String::new(),
                };
                let busy = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("crafting_jobs{status=\"queued\"}")
                            || l.starts_with("crafting_jobs{status=\"running\"}")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>();
                if busy == 0 || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for c in clients {
            c.abort();
        }
        let _ = child.wait();
    }
    let snapshot = acked.lock().expect("lock").clone();
    let end = check(&data, &snapshot, i64::MAX, true);
    add(&end);
    println!(
        "crash soak: {kills} kills in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("  jobs acknowledged   {}", snapshot.len());
    println!("  lost                {}", worst.lost);
    println!("  duplicated          {}", worst.duplicated);
    println!("  stuck               {}", worst.stuck);
    println!("  orphans             {}", worst.orphans);
    println!("  leaked worktrees    {}", worst.leaked);
    if worst.lost + worst.duplicated + worst.stuck + worst.orphans + worst.leaked > 0 {
        std::process::exit(1);
    }
}
