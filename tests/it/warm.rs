//! Warm worktrees: kept between a project's jobs, reset to exactly the commit;
//! never shared, never reused after a job that ended abnormally.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use crafting_table::ledger::JobStatus;

use crate::helpers::git;
use crate::runner::Farm;

/// Prints every path of the worktree (`.git` aside) with its kind, mode, link
/// target or content hash, and the checked-out commit: two trees print the same
/// iff a job sees the same files.
const FINGERPRINT: &str = r#"cd "$(git rev-parse --show-toplevel)" && git rev-parse HEAD && git status --porcelain --ignored --untracked-files=all && find . -path ./.git -prune -o -print | LC_ALL=C sort | while IFS= read -r f; do if [ -L "$f" ]; then echo "$f L $(readlink "$f")"; elif [ -f "$f" ]; then echo "$f F $(stat -c %a "$f") $(sha1sum < "$f" | cut -c1-12)"; else echo "$f D"; fi; done"#;

/// Everything a job could leave in its worktree: untracked and ignored files, a
/// modified and a deleted tracked file, a changed mode, a replaced symlink, a
/// staged file and a commit on the detached HEAD. (Without git's automatic
/// maintenance: git 2.47 detaches it into the background, where it would count as
/// a process the job left behind — and rightly get the tree discarded.)
const DIRTY: &str = "echo junk > untracked.txt && mkdir -p build/deep && echo o > build/deep/out.o && echo more >> README.md && rm keep.txt && chmod -x run.sh && rm link && ln -s /etc/hostname link && mkdir newdir && echo n > newdir/f && echo staged > staged.txt && git add staged.txt && git -c user.name=j -c user.email=j@x -c maintenance.auto=false commit -qm job-commit";

/// A change a check of sizes and modification times would miss: a file edited
/// in place to the same size, its modification time set back to the very
/// nanosecond (only its ctime tells).
const SUBTLE: &str = "r=$(mktemp) && touch -r keep.txt \"$r\" && printf 'keeq\\n' > keep.txt && touch -r \"$r\" keep.txt && rm \"$r\"";

/// A change only git's index shows.
const STAGE: &str = "git update-index --chmod=-x run.sh";

fn projects() -> Vec<String> {
    let cmds = format!(
        "        dirty: {}\n        print: {}\n        subtle: {}\n        stage: {}\n        noop: 'true'\n",
        serde_json::to_string(DIRTY).unwrap(),
        serde_json::to_string(FINGERPRINT).unwrap(),
        serde_json::to_string(SUBTLE).unwrap(),
        serde_json::to_string(STAGE).unwrap()
    );
    let project = |name: &str, extra: &str| {
        format!(
            "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  git_url: \"@SOURCE@\"\n  max_concurrent_jobs: 1\n  subprojects:\n    - path: .\n{extra}      timeout_secs: 60\n      commands:\n{cmds}"
        )
    };
    vec![
        project("app", ""),
        project("quiet", ""),
        project("ref", "      workspace: fresh\n"),
    ]
}

/// Adds the files the dirty job disturbs to the source and commits.
fn seed(root: &Path) {
    std::fs::write(root.join(".gitignore"), "build/\n").unwrap();
    std::fs::write(root.join("keep.txt"), "keep\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("keep.txt", root.join("link")).unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "seed"]);
}

async fn run(f: &Farm, project: &str, cmd: &str) -> (String, String) {
    let (id, _) = f.enqueue(project, ".", cmd);
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Succeeded, "{cmd}: {}", f.log(&id));
    let out: String = f
        .log(&id)
        .lines()
        .filter(|l| !l.starts_with("[crafting-table]"))
        .map(|l| format!("{l}\n"))
        .collect();
    (j.worktree_path.unwrap_or_default(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_worktree_shows_exactly_the_commit() {
    let f = Farm::new(&projects(), 1, 1 << 20);
    seed(&f.source_path());
    let _loop = f.start();

    let (first, _) = run(&f, "app", "dirty").await;
    assert!(first.contains("/app/.warm/"), "{first}");
    let (again, warm) = run(&f, "app", "print").await;
    assert_eq!(
        again,
        first,
        "the next job reuses the warm worktree: {:?}",
        f.runner.workspace().pool_stats()
    );
    let (fresh_wt, fresh) = run(&f, "ref", "print").await;
    assert!(!fresh_wt.contains(".warm"), "{fresh_wt}");
    assert!(
        !warm.contains("untracked") && !warm.contains("build"),
        "{warm}"
    );
    assert_eq!(warm, fresh, "warm and fresh trees differ");
    assert!(
        !Path::new(&fresh_wt).exists(),
        "a fresh worktree goes after its job"
    );

    // The source moves on (a changed, a deleted, a new file, a new mode): the warm
    // tree follows the new commit (fetched, as the sha is new).
    let src = f.source_path();
    std::fs::write(src.join("README.md"), "changed\n").unwrap();
    std::fs::remove_file(src.join("sub/dir/file.txt")).unwrap();
    std::fs::write(src.join("added.txt"), "new\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "two"]);
    run(&f, "app", "dirty").await;
    let (again, warm) = run(&f, "app", "print").await;
    assert_eq!(again, first, "{:?}", f.runner.workspace().pool_stats());
    let (_, fresh) = run(&f, "ref", "print").await;
    assert_eq!(
        warm, fresh,
        "warm and fresh trees differ at the second commit"
    );
    let head = git(&src, &["rev-parse", "HEAD"]);
    assert!(warm.starts_with(head.trim()), "{warm}");
    f.runner.workspace().settled().await;
    let stats = f.runner.workspace().pool_stats();
    assert_eq!((stats.idle, stats.busy), (1, 0), "{stats:?}");
    assert_eq!(stats.reused, 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abnormal_ends_discard_the_worktree() {
    let cmds: &[(&str, &str)] = &[
        ("ok", "true"),
        ("slow", "sleep 30"),
        ("stray", "sleep 4321 & echo left"),
        ("fail", "exit 3"),
    ];
    let f = Farm::new(
        &[crate::runner::project_yaml(
            "app",
            Path::new("@SOURCE@"),
            1,
            &[(".", cmds)],
            2,
        )],
        1,
        1 << 20,
    );
    let _loop = f.start();
    let ws = f.runner.workspace().clone();
    let (id, _) = f.enqueue("app", ".", "ok");
    f.runner.wake();
    let mut last = f.finished(&id).await.worktree_path.unwrap();
    let mut seen = vec![last.clone()];
    // A failing command exited by itself: its worktree stays warm.
    let (id, _) = f.enqueue("app", ".", "fail");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.worktree_path.as_deref(), Some(last.as_str()));
    // Timed out, left a process behind, cancelled: each worktree is removed and
    // the next job gets a new one.
    for how in ["timeout", "stray", "cancel"] {
        let cmd = if how == "stray" { "stray" } else { "slow" };
        let (id, _) = f.enqueue("app", ".", cmd);
        f.runner.wake();
        if how == "cancel" {
            f.wait_for(&id, "running", |j| j.pgid.is_some()).await;
            f.runner.cancel(&id, "test").await.unwrap();
        }
        let j = f.finished(&id).await;
        assert_eq!(j.worktree_path.as_deref(), Some(last.as_str()), "{how}");
        assert!(
            !Path::new(&last).exists(),
            "{how}: the worktree was removed"
        );
        let (id, _) = f.enqueue("app", ".", "ok");
        f.runner.wake();
        let next = f.finished(&id).await.worktree_path.unwrap();
        assert!(
            !seen.contains(&next),
            "{how}: a discarded worktree was reused"
        );
        seen.push(next.clone());
        last = next;
    }
    ws.settled().await;
    let stats = ws.pool_stats();
    assert_eq!(stats.discarded, 3, "{stats:?}");

    // gc: an idle worktree younger than the limit stays; a directory the pool does
    // not know (a previous process's) goes; past the limit the idle one goes too.
    let unknown = ws.warm_dir("app").join("from-a-crash");
    std::fs::create_dir_all(&unknown).unwrap();
    assert_eq!(ws.gc_warm(Duration::from_secs(3600)), 1);
    assert!(!unknown.exists() && Path::new(&last).exists());
    assert_eq!(ws.gc_warm(Duration::ZERO), 1);
    assert!(!Path::new(&last).exists());
    assert_eq!(ws.pool_stats().idle, 0);
    let (id, _) = f.enqueue("app", ".", "ok");
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Succeeded);
    assert!(!seen.contains(&j.worktree_path.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_never_share_a_worktree() {
    // Each job marks its tree, waits until the round's four jobs all run (a gate
    // directory outside the trees), and fails if it sees another job's mark.
    let gates = tempfile::tempdir().unwrap();
    let hold = format!(
        "touch \"$CRAFTING_JOB_ID.mark\" {g}/$CRAFTING_JOB_ID; n=$(ls {g} | wc -l); t=$(( (n + 3) / 4 * 4 )); i=0; while [ \"$(ls {g} | wc -l)\" -lt $t ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; m=$(ls ./*.mark | wc -l); echo marks=$m; [ \"$m\" = 1 ]",
        g = gates.path().display()
    );
    let cmds: Vec<(String, String)> = (0..4).map(|i| (format!("c{i}"), hold.to_owned())).collect();
    let cmds: Vec<(&str, &str)> = cmds.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let f = Farm::new(
        &[crate::runner::project_yaml(
            "app",
            Path::new("@SOURCE@"),
            4,
            &[(".", &cmds)],
            60,
        )],
        4,
        1 << 20,
    );
    let _loop = f.start();
    for round in 0..3 {
        let ids: Vec<String> = (0..4)
            .map(|i| f.enqueue("app", ".", &format!("c{i}")).0)
            .collect();
        f.runner.wake();
        let mut trees = Vec::new();
        for id in &ids {
            let j = f.finished(id).await;
            assert_eq!(
                j.status,
                JobStatus::Succeeded,
                "round {round}: {}",
                f.log(id)
            );
            trees.push(j.worktree_path.unwrap());
        }
        trees.sort();
        trees.dedup();
        // Jobs of one round overlap in time: four trees, all different.
        assert_eq!(trees.len(), 4, "round {round}: {trees:?}");
    }
    f.runner.workspace().settled().await;
    let stats = f.runner.workspace().pool_stats();
    assert_eq!(stats.idle, 4, "{stats:?}");
    assert!(stats.reused >= 8, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_an_unfetched_sha_fetches_and_keeps_its_warm_tree() {
    let f = Farm::new(
        &[crate::runner::project_yaml(
            "app",
            Path::new("@SOURCE@"),
            1,
            &[(".", &[("head", "git rev-parse HEAD; cat new.txt || true")])],
            60,
        )],
        1,
        1 << 20,
    );
    let _loop = f.start();
    let (id, _) = f.enqueue("app", ".", "head");
    f.runner.wake();
    let first = f.finished(&id).await.worktree_path.unwrap();
    let fetches = f.runner.workspace().fetch_count();
    // A commit the mirror has never seen, asked for by its full sha.
    let src = f.source_path();
    std::fs::write(src.join("new.txt"), "brand new\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "new"]);
    let sha = git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    let id = f.enqueue_ref("app", "head", &sha.to_ascii_uppercase());
    f.runner.wake();
    let j = f.finished(&id).await;
    assert_eq!(j.status, JobStatus::Succeeded, "{}", f.log(&id));
    assert_eq!(
        j.sha.as_deref(),
        Some(sha.as_str()),
        "the sha it ran, as git spells it"
    );
    assert_eq!(
        j.worktree_path.as_deref(),
        Some(first.as_str()),
        "the warm tree was kept"
    );
    assert_eq!(f.runner.workspace().fetch_count(), fetches + 1, "one fetch");
    let log = f.log(&id);
    assert!(log.contains(&sha) && log.contains("brand new"), "{log}");
    // By branch again: the same tree serves it, nothing is discarded.
    let (id, _) = f.enqueue("app", ".", "head");
    f.runner.wake();
    f.finished(&id).await;
    assert_eq!(f.runner.workspace().pool_stats().discarded, 0);
}

/// Runs no-op jobs in the warm tree of `quiet` until one of them left it trusted
/// and the next skipped its reset (the stamp vouches only for changes older than
/// a clock tick or so). Returns the count of skipped resets.
async fn until_a_reset_is_skipped(f: &Farm) -> u64 {
    let before = f.runner.workspace().pool_stats().resets_skipped;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        run(f, "quiet", "noop").await;
        f.runner.workspace().settled().await;
        let now = f.runner.workspace().pool_stats().resets_skipped;
        if now > before {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reset was ever skipped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_tree_skips_its_reset_and_a_touched_one_never_does() {
    let f = Farm::new(&projects(), 1, 1 << 20);
    seed(&f.source_path());
    let _loop = f.start();
    let (_, reference) = run(&f, "ref", "print").await;
    for change in ["subtle", "stage", "dirty"] {
        let skipped = until_a_reset_is_skipped(&f).await;
        // The tree is trusted now; the change must still be found and undone.
        let (wt, _) = run(&f, "quiet", change).await;
        f.runner.workspace().settled().await;
        assert_eq!(
            f.runner.workspace().pool_stats().resets_skipped,
            skipped,
            "{change}: a changed tree was not reset"
        );
        let (again, seen) = run(&f, "quiet", "print").await;
        assert_eq!(again, wt, "{change}: the same warm tree");
        assert_eq!(seen, reference, "{change}: the next job saw the change");
        f.runner.workspace().settled().await;
    }
}
