//! The job sandbox (bwrap): a job cannot read the farm's secrets, sees only its own
//! processes, has no network when told so, and still stops cleanly.

use std::time::Duration;

use crafting_table::events::FarmEvent;
use crafting_table::farm::{Farm, FarmOptions};
use serde_json::{Value, json};

use crate::helpers::Repo;
use crate::seams::{Client, run_to_end, start_with};

async fn run(farm: &Farm, api: &Client, project: &str, recipe: &str) -> (Value, String) {
    let job = run_to_end(farm, api, project, json!({"recipe": recipe})).await;
    let id = job["job"]["id"].as_str().unwrap();
    let log = std::fs::read_to_string(farm.config.logs_dir().join(format!("{id}.log"))).unwrap();
    (job, output(&log))
}

/// The command's own output: the log without the farm's lines.
fn output(log: &str) -> String {
    log.lines()
        .filter(|l| !l.starts_with("[crafting-table]"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_job_sees_only_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (app, other) = (Repo::new(), Repo::new());
    app.write("README.md", "app\n").commit("one");
    other
        .write("secret-source.txt", "other team's code\n")
        .commit("one");
    let serve_pid = std::process::id();
    let probe = |what: &str, path: String| {
        format!(
            "if cat {path} >/dev/null 2>&1; then echo LEAK:{what}; else echo denied:{what}; fi; "
        )
    };
    let peek = [
        probe("bearer", data.join("admin-bearer.txt").display().to_string()),
        probe("ledger", data.join("ledger.sqlite3").display().to_string()),
        probe("other-mirror", data.join("workspace/other/.cache/HEAD").display().to_string()),
        probe("environ", format!("/proc/{serve_pid}/environ")),
        "echo procs=$(ls /proc | grep -cE '^[0-9]+$'); echo home=$HOME; env | grep -c '^CRAFTING_SECRET_TEST' || true; echo done".to_owned(),
    ]
    .concat();
    let connect = format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)' && echo CONNECTED || echo no-network"
    );
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      commands:\n        peek: {}\n        offline: {}\n        online: {}\n        write: 'echo x > made.txt && echo wrote-worktree; echo y > $HOME/kept && echo wrote-home; echo z > /usr/evil 2>/dev/null && echo LEAK:usr || echo denied:usr'\n        slow: 'sleep 6543 & sleep 6543; wait'\n    - path: sub\n      network: false\n      commands:\n        offline: {}\n",
            app.path.display(),
            serde_json::to_string(&peek).unwrap(),
            serde_json::to_string(&connect).unwrap(),
            serde_json::to_string(&connect).unwrap(),
            serde_json::to_string(&connect).unwrap(),
        ),
    )
    .unwrap();
    std::fs::write(
        reg.join("other.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: other\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      test: 'true'\n",
            other.path.display()
        ),
    )
    .unwrap();
    app.write("sub/x", "x\n").commit("sub");
    let farm = start_with(
        &data,
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_SANDBOX", "required".into()),
        ],
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    run(&farm, &api, "other", "test").await; // the other project's mirror exists

    let (job, log) = run(&farm, &api, "app", "peek").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert!(!log.contains("LEAK"), "{log}");
    for what in ["bearer", "ledger", "other-mirror", "environ"] {
        assert!(log.contains(&format!("denied:{what}")), "{what}: {log}");
    }
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(procs <= 6, "only the job's own processes: {procs}\n{log}");
    assert!(log.contains("home=") && log.contains("/app/.home"), "{log}");

    let (_, log) = run(&farm, &api, "app", "write").await;
    assert!(
        log.contains("wrote-worktree") && log.contains("wrote-home"),
        "{log}"
    );
    assert!(log.contains("denied:usr"), "{log}");

    // network: false (on the `sub` subproject) cuts even loopback; the default keeps it.
    let (_, log) = run(&farm, &api, "app", "online").await;
    assert!(log.contains("CONNECTED"), "{log}");
    let mut events = farm.events.subscribe();
    let (_, v) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "offline", "subproject": "sub"})),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    loop {
        let e = events.recv().await.unwrap();
        if matches!(&*e, FarmEvent::JobFinished { job, .. } if job.id == id) {
            break;
        }
    }
    let log =
        output(&std::fs::read_to_string(farm.config.logs_dir().join(format!("{id}.log"))).unwrap());
    assert!(log.contains("no-network"), "{log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    drop(listener);

    // Cancel stops everything the job started, through the sandbox.
    let mut events = farm.events.subscribe();
    let (_, v) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "slow"})),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| c.windows(4).any(|w| w == b"6543"))
                    .unwrap_or(false)
            })
            .count()
    };
    while sleeping() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job's sleeps never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.call("POST", &format!("/jobs/{id}/cancel"), Some(json!({})))
        .await;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(&*e, FarmEvent::JobFinished { job, .. } if job.id == id) {
            break;
        }
    }
    assert_eq!(sleeping(), 0, "no process of the cancelled job survives");
    farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_command_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt as _;
    const SECRET: &str = "tok-9f8e7d6c5b4a";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("secrets.toml");
    std::fs::write(&file, format!("DEPLOY_KEY = \"{SECRET}\"\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let repo = Repo::new();
    repo.write("README.md", "x\n").commit("one");
    let show = "echo key=$DEPLOY_KEY; printf 'half=%s' \"$(echo $DEPLOY_KEY | cut -c1-5)\"; sleep 0.3; printf '%s\\n' \"$(echo $DEPLOY_KEY | cut -c6-)\"";
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n  name: deploys\nspec:\n  secrets: [DEPLOY_KEY]\n---\napiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      extends: deploys\n      commands:\n        show: {}\n    - path: other\n      secrets: [MISSING_ONE]\n      commands:\n        show: 'echo never'\n",
            repo.path.display(),
            serde_json::to_string(show).unwrap()
        ),
    )
    .unwrap();
    repo.write("other/x", "x\n").commit("other");
    let farm = start_with(
        &data,
        &[("CRAFTING_REGISTRY", reg.display().to_string())],
        FarmOptions {
            kill_grace: Duration::from_secs(2),
            ..FarmOptions::default()
        },
    )
    .await;
    let out = farm.reconcile.run_now().await.unwrap();
    assert_eq!(out.error_count(), 0, "{:?}", out.diagnostics);
    let api = Client::of(&farm);
    let (job, log) = run(&farm, &api, "app", "show").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert!(log.contains("key=***"), "{log}");
    assert!(log.contains("half=***"), "masked across two writes: {log}");
    assert_eq!(
        job["job"]["recipe_snapshot"]["secrets"],
        json!(["DEPLOY_KEY"])
    );

    // A missing secret fails the job before it starts, naming it.
    let mut events = farm.events.subscribe();
    let (_, v) = api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "show", "subproject": "other"})),
        )
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    loop {
        let e = events.recv().await.unwrap();
        if matches!(&*e, FarmEvent::JobFinished { job, .. } if job.id == id) {
            break;
        }
    }
    let (_, missing) = api.call("GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(missing["job"]["status"], "error", "{missing}");
    assert!(
        missing["job"]["error"]
            .as_str()
            .unwrap()
            .contains("`MISSING_ONE`"),
        "{missing}"
    );
    assert!(!missing["log_tail"].to_string().contains("never"));

    // The value is nowhere: not in any API answer, the ledger, its WAL or a log.
    let (_, jobs) = api.call("GET", "/jobs", None).await;
    assert!(!jobs.to_string().contains(SECRET));
    assert!(!job.to_string().contains(SECRET));
    farm.stop("test over").await;
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
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
    walk(&data, &mut files);
    for f in files.iter().filter(|f| !f.ends_with("secrets.toml")) {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in {}",
            f.display()
        );
    }
}

/// Warm worktrees keep one sandbox between jobs: the next job in it finds no
/// process, temporary file or scratch-directory change of the previous one; a job
/// that leaves processes behind, or ends its sandbox, gets a new one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_sandbox_carries_nothing_from_one_job_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = Repo::new();
    repo.write("README.md", "x\n").commit("one");
    // Each job names its sandbox by its PID namespace and when its PID 1 started
    // (the kernel reuses a namespace's number once it is gone).
    let ns = "echo ns=$(readlink /proc/self/ns/pid)@$(cut -d' ' -f22 /proc/1/stat); ";
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    let d = data.display();
    let litter = format!(
        "echo a > /tmp/left && mkdir -p /tmp/d/e && echo b > /dev/shm/left && echo c > /dev/junk && echo d > {d}/junk && chmod 700 /tmp && echo littered"
    );
    let look = format!(
        "echo tmp=$(ls -A /tmp | tr '\\n' ,) shm=$(ls -A /dev/shm | wc -l) dev=$(ls -A /dev | wc -l) data=$(ls -A {d} | tr '\\n' ,) mode=$(stat -c %a /tmp); echo procs=$(ls /proc | grep -cE '^[0-9]+$')"
    );
    let commands = [
        ("litter", litter.as_str()),
        ("look", look.as_str()),
        ("daemon", "setsid sleep 7654 >/dev/null 2>&1 & echo left"),
        ("three", "exit 3"),
        ("freeze", "kill -STOP $PPID; echo froze"),
        (
            "suicide",
            "kill -9 $PPID; kill -TERM $PPID; pkill -f 'sandbox-zygot[e]'; echo survived",
        ),
        ("shm", "ipcmk -M 4096 >/dev/null && echo made"),
        (
            "limit",
            "prlimit --pid $PPID --nofile=64:64 && echo lowered",
        ),
        ("nap", "echo napping; sleep 7777"),
    ];
    let mut yaml = String::new();
    for (name, cmd) in commands {
        yaml += &format!(
            "        {name}: {}\n",
            serde_json::to_string(&format!("{ns}{cmd}")).unwrap()
        );
    }
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      commands:\n{yaml}    - path: sub\n      timeout_secs: 1\n      commands:\n        stubborn: {}\n",
            repo.path.display(),
            serde_json::to_string(&format!("{ns}trap '' TERM; sleep 6789; echo outlived")).unwrap(),
        ),
    )
    .unwrap();
    repo.write("sub/x", "x\n").commit("sub");
    let farm = start_with(
        &data,
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_SANDBOX", "required".into()),
            ("CRAFTING_WORKERS", "1".into()),
        ],
        FarmOptions {
            kill_grace: Duration::from_millis(500),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    let ns_of = |log: &str| -> String {
        log.lines()
            .find_map(|l| l.strip_prefix("ns="))
            .unwrap_or_else(|| panic!("no ns line: {log}"))
            .to_owned()
    };
    let step = async |recipe: &str| {
        let (job, log) = run(&farm, &api, "app", recipe).await;
        farm.runner.workspace().settled().await;
        (job, log)
    };

    // What a new sandbox looks like, then a job that writes everywhere it may.
    let (_, log) = step("look").await;
    let first = ns_of(&log);
    let seen = |log: &str| -> String {
        log.lines()
            .find(|l| l.starts_with("tmp="))
            .unwrap_or_else(|| panic!("no look line: {log}"))
            .to_owned()
    };
    let fresh = seen(&log);
    assert!(
        fresh.contains("shm=0 ") && fresh.contains("data=workspace, "),
        "{fresh}"
    );
    assert_eq!(farm.runner.idle_sandboxes(), 1, "kept for the next job");
    let (job, log) = step("litter").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert!(log.contains("littered"), "{log}");
    assert_eq!(ns_of(&log), first, "the same sandbox: {log}");
    let (_, log) = step("look").await;
    assert_eq!(ns_of(&log), first, "the same sandbox: {log}");
    assert_eq!(seen(&log), fresh, "nothing of the previous job");
    let procs: usize = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("procs="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        procs <= 6,
        "only the job's own processes and the sandbox's two: {log}"
    );

    // Exit codes come through.
    let (job, log) = step("three").await;
    assert_eq!(job["job"]["status"], "failed", "{log}");
    assert_eq!(job["job"]["exit_code"], 3, "{log}");
    assert_eq!(ns_of(&log), first, "{log}");

    // A job that stops its sandbox's zygote does not hang on it.
    let (job, log) = step("freeze").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert_eq!(ns_of(&log), first, "{log}");
    let (_, log) = step("look").await;
    assert_eq!(ns_of(&log), first, "{log}");

    // A process left behind is killed when its job ends; the sandbox is not kept.
    let (job, log) = step("daemon").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert_eq!(ns_of(&log), first, "{log}");
    let alive = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| c.windows(4).any(|w| w == b"7654"))
                    .unwrap_or(false)
            })
            .count()
    };
    assert_eq!(alive(), 0, "the job's leftover is gone");
    assert_eq!(farm.runner.idle_sandboxes(), 0, "not kept after leftovers");
    let (_, log) = step("look").await;
    let second = ns_of(&log);
    assert_ne!(second, first, "a new sandbox: {log}");

    // A command that ignores SIGTERM past its timeout is killed, and all it started.
    let job = run_to_end(
        &farm,
        &api,
        "app",
        json!({"recipe": "stubborn", "subproject": "sub"}),
    )
    .await;
    let id = job["job"]["id"].as_str().unwrap();
    let log = std::fs::read_to_string(farm.config.logs_dir().join(format!("{id}.log"))).unwrap();
    farm.runner.workspace().settled().await;
    assert_eq!(job["job"]["status"], "timed_out", "{log}");
    assert!(log.contains("SIGKILL after grace"), "{log}");
    assert!(!output(&log).contains("outlived"), "{log}");
    let sleeping = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.windows(4).any(|w| w == b"6789"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(sleeping, 0, "nothing of the timed-out job survives");

    // A job cannot signal its sandbox's program (it is the sandbox's PID 1).
    let (_, log) = step("look").await;
    let current = ns_of(&log);
    let (job, log) = step("suicide").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert!(log.contains("survived"), "{log}");
    assert_eq!(ns_of(&log), current, "{log}");
    let (_, log) = step("look").await;
    assert_eq!(ns_of(&log), current, "{log}");

    // What a job leaves in the IPC namespace, or changes in the sandbox
    // program's own limits, retires the sandbox.
    for changes in ["shm", "limit"] {
        let (job, log) = step(changes).await;
        assert_eq!(job["job"]["status"], "succeeded", "{log}");
        let before = ns_of(&log);
        assert_eq!(farm.runner.idle_sandboxes(), 0, "{changes}: not kept");
        let (_, log) = step("look").await;
        assert_ne!(ns_of(&log), before, "{changes}: a new sandbox");
        assert_eq!(seen(&log), fresh, "{log}");
    }

    // A sandbox killed from outside mid-job ends the job; the next gets a new one.
    let (_, log) = step("look").await;
    let before = ns_of(&log);
    let (_, v) = api
        .call("POST", "/projects/app/jobs", Some(json!({"recipe": "nap"})))
        .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    api.wait_log(&id, "napping").await;
    let marker = data.display().to_string();
    let zygote = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).into_owned();
            (cmd.contains("sandbox-zygote") && cmd.contains(&marker))
                .then(|| e.file_name().to_str()?.parse::<i32>().ok())
                .flatten()
        })
        .expect("the nap's sandbox");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(zygote, libc::SIGKILL) };
    let job = crate::seams::job_ended(&farm, &api, &id).await;
    let log = std::fs::read_to_string(farm.config.logs_dir().join(format!("{id}.log"))).unwrap();
    assert_eq!(job["job"]["status"], "failed", "{log}");
    assert!(log.contains("the job's sandbox ended"), "{log}");
    farm.runner.workspace().settled().await;
    let (job, log) = step("look").await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert_ne!(ns_of(&log), before, "{log}");
    assert_eq!(seen(&log), fresh, "{log}");
    let runner = farm.runner.clone();
    farm.stop("test over").await;
    assert_eq!(runner.idle_sandboxes(), 0, "stopped with the farm");
}

/// A sandbox program that does not start (here: not the farm's binary) costs
/// nothing but the kept sandboxes: every job gets a bwrap of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_in_a_bwrap_each_when_no_sandbox_can_be_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = Repo::new();
    repo.write("README.md", "x\n").commit("one");
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      commands:\n        ns: 'head -c 5 /proc/1/cmdline; echo; ls /proc | grep -cE \"^[0-9]+$\"'\n",
            repo.path.display()
        ),
    )
    .unwrap();
    let farm = start_with(
        &data,
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_SANDBOX", "required".into()),
        ],
        FarmOptions {
            sandbox_program: Some("/bin/false".into()),
            ..FarmOptions::default()
        },
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    for _ in 0..3 {
        let (job, log) = run(&farm, &api, "app", "ns").await;
        assert_eq!(job["job"]["status"], "succeeded", "{log}");
        let mut lines = log.lines();
        // PID 1 is bwrap's own init, as in a sandbox made for the job.
        assert_eq!(lines.next(), Some("bwrap"), "{log}");
        let procs: usize = lines.next().unwrap().trim().parse().unwrap();
        assert!(procs <= 5, "bwrap's init and the job's own: {log}");
        farm.runner.workspace().settled().await;
    }
    assert_eq!(farm.runner.idle_sandboxes(), 0);
    farm.stop("test over").await;
}

/// A data directory reached through a symbolic link is hidden by a tmpfs all the
/// same, and a kept sandbox puts that tmpfs back after each job too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_data_directory_behind_a_link_is_put_back_too() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("real")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
    let data = tmp.path().join("link").join("data");
    let repo = Repo::new();
    repo.write("README.md", "x\n").commit("one");
    let reg = tmp.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    let d = data.display();
    let id = "echo id=$(readlink /proc/self/ns/pid)@$(cut -d' ' -f22 /proc/1/stat)";
    std::fs::write(
        reg.join("app.yaml"),
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: app\nspec:\n  git_url: {}\n  subprojects:\n    - path: .\n      commands:\n        litter: {}\n        look: {}\n",
            repo.path.display(),
            serde_json::to_string(&format!("{id}; echo x > {d}/junk && echo littered")).unwrap(),
            serde_json::to_string(&format!("{id}; echo data=$(ls -A {d} | tr '\\n' ,)")).unwrap(),
        ),
    )
    .unwrap();
    let farm = start_with(
        &data,
        &[
            ("CRAFTING_REGISTRY", reg.display().to_string()),
            ("CRAFTING_SANDBOX", "required".into()),
            ("CRAFTING_WORKERS", "1".into()),
        ],
        FarmOptions::default(),
    )
    .await;
    farm.reconcile.run_now().await.unwrap();
    let api = Client::of(&farm);
    let line = |log: &str, key: &str| -> String {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key}: {log}"))
            .to_owned()
    };
    let (_, before) = run(&farm, &api, "app", "look").await;
    farm.runner.workspace().settled().await;
    assert_eq!(line(&before, "data="), "workspace,", "hidden: {before}");
    let (job, log) = run(&farm, &api, "app", "litter").await;
    farm.runner.workspace().settled().await;
    assert_eq!(job["job"]["status"], "succeeded", "{log}");
    assert_eq!(
        line(&log, "id="),
        line(&before, "id="),
        "one sandbox: {log}"
    );
    let (_, after) = run(&farm, &api, "app", "look").await;
    assert_eq!(
        line(&after, "id="),
        line(&before, "id="),
        "still kept: {after}"
    );
    assert_eq!(
        line(&after, "data="),
        "workspace,",
        "the junk is gone: {after}"
    );
    assert!(!data.join("junk").exists(), "never on the host");
    farm.stop("test over").await;
}
