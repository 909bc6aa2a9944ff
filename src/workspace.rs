//! Workspace: one bare mirror per project and one fresh worktree per job.
//!
//! Layout under `$CRAFTING_WORKSPACE_DIR`:
//! - `<project>/.cache` — bare mirror of the project's repository;
//! - `<project>/<job-id>` — the job's worktree, detached at the resolved sha,
//!   removed when the job ends.
//!
//! Fetches into one project's mirror (and `gc`) are serialised by a per-project
//! lock; worktree adds and removals by another (git drops the mirror's
//! `worktrees/` directory when the last worktree goes, and an add reads every
//! other worktree's admin directory, which a concurrent add leaves half-made).
//! The job's command runs outside both. Blocking: call from
//! `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::git::{Git, GitError};

/// Manages mirrors and worktrees.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Per project: worktree adds, removals and prunes take it alone (gc's scans
    /// share it). git deletes the mirror's `worktrees/` directory when the last
    /// worktree goes, and an add fails reading a half-made admin directory of a
    /// concurrent add (found once fetches stopped spacing adds apart).
    trees: Arc<Mutex<HashMap<String, Arc<std::sync::RwLock<()>>>>>,
    /// Deadline of one fetch into a mirror.
    fetch_timeout: Duration,
    /// Git credentials for project remotes (`CRAFTING_GIT_CREDENTIALS`).
    credentials: Option<PathBuf>,
    /// Per project: when its last successful fetch started (ms, the caller's clock).
    fetched: Arc<Mutex<HashMap<String, i64>>>,
    /// Fetches made (for tests and benches).
    fetches: Arc<std::sync::atomic::AtomicU64>,
}

/// A checked-out job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The resolved commit.
    pub sha: String,
    /// The worktree directory.
    pub worktree: PathBuf,
}

impl Workspace {
    /// A workspace rooted at `root` (created on first use).
    pub fn new(root: PathBuf) -> Workspace {
        Workspace {
            root,
            locks: Arc::default(),
            trees: Arc::default(),
            fetch_timeout: crate::git::DEFAULT_NETWORK_TIMEOUT,
            credentials: None,
            fetched: Arc::default(),
            fetches: Arc::default(),
        }
    }

    /// How many fetches this workspace made.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The same workspace fetching with the credentials in `file`.
    pub fn with_credentials(mut self, file: Option<PathBuf>) -> Workspace {
        self.credentials = file;
        self
    }

    /// The same workspace with another deadline for fetches.
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Workspace {
        self.fetch_timeout = timeout;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn trees(&self, project: &str) -> Arc<std::sync::RwLock<()>> {
        let mut map = match self.trees.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(project.to_owned()).or_default().clone()
    }

    fn lock(&self, project: &str) -> Arc<Mutex<()>> {
        let mut map = match self.locks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(project.to_owned()).or_default().clone()
    }

    /// The bare mirror of `project`.
    pub fn mirror(&self, project: &str) -> PathBuf {
        self.root.join(project).join(".cache")
    }

    /// A directory kept between the project's jobs (build caches such as
    /// `CARGO_TARGET_DIR`), given to jobs as `CRAFTING_CACHE_DIR`.
    pub fn cache_dir(&self, project: &str) -> PathBuf {
        self.root.join(project).join(".shared")
    }

    /// Where the worktree of `job_id` goes.
    pub fn worktree_path(&self, project: &str, job_id: &str) -> PathBuf {
        self.root.join(project).join(job_id)
    }

    /// Fetches `url` into the project's mirror, resolves `git_ref` (branch, tag or
    /// sha) and adds a detached worktree for `job_id` at that commit.
    ///
    /// A fetch is skipped when it cannot tell anything new: the ref is a full sha
    /// the mirror already holds, or another job's fetch of this project started
    /// after this one asked (jobs enqueued together share one fetch).
    pub fn checkout(
        &self,
        project: &str,
        url: &str,
        git_ref: &str,
        job_id: &str,
    ) -> Result<Checkout, GitError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.checkout_since(project, url, git_ref, job_id, now, &|| {
            chrono::Utc::now().timestamp_millis()
        })
    }

    /// [`Workspace::checkout`] for a job enqueued at `asked` (ms): a fetch of the
    /// project that started at or after `asked` is shared instead of repeated.
    /// `now` reads the same clock.
    pub fn checkout_since(
        &self,
        project: &str,
        url: &str,
        git_ref: &str,
        job_id: &str,
        asked: i64,
        now: &dyn Fn() -> i64,
    ) -> Result<Checkout, GitError> {
        let git = Git::new();
        let mirror = self.mirror(project);
        // Fetches (and the mirror's creation) are serialised per project; adding a
        // worktree is not: git locks each new worktree while it is created.
        let sha = {
            let lock = self.lock(project);
            let _guard = match lock.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if !mirror.join("HEAD").exists() {
                std::fs::create_dir_all(&mirror).map_err(|e| io_err("create mirror", &e))?;
                git.run(Some(&mirror), ["init", "--bare", "--quiet"])?;
            }
            let full_sha = git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit());
            if full_sha && let Ok(sha) = resolve_ref(&git, &mirror, git_ref) {
                sha
            } else {
                let fresh = match self.fetched.lock() {
                    Ok(m) => m.get(project).is_some_and(|t| *t > asked),
                    Err(_) => false,
                };
                if !fresh {
                    let started = now();
                    self.fetch(&git, &mirror, url)?;
                    if let Ok(mut m) = self.fetched.lock() {
                        m.insert(project.to_owned(), started);
                    }
                }
                resolve_ref(&git, &mirror, git_ref)?
            }
        };
        let worktree = self.worktree_path(project, job_id);
        if worktree.exists() {
            // A leftover from a crash with the same id cannot happen with fresh ids,
            // but never build on top of unknown files.
            let _ = self.remove(&git, project, &worktree);
        }
        let wt = worktree.display().to_string();
        let trees = self.trees(project);
        // Alone: a concurrent add leaves a half-made admin directory that git
        // reads (and fails on) while it adds another worktree.
        let _alone = match trees.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        git.run(
            Some(&mirror),
            [
                "worktree",
                "add",
                "--detach",
                "--quiet",
                wt.as_str(),
                sha.as_str(),
            ],
        )?;
        Ok(Checkout { sha, worktree })
    }

    fn fetch(&self, git: &Git, mirror: &Path, url: &str) -> Result<(), GitError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        git.clone()
            .with_timeout(self.fetch_timeout)
            .with_credentials(self.credentials.as_deref())
            .run(
                Some(mirror),
                [
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--force",
                    "--",
                    url,
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .map(|_| ())
    }

    /// Adds a worktree named `name` detached at `sha`, which the mirror already
    /// holds (no fetch): the patch loop's scratch tree.
    pub fn add_detached(&self, project: &str, name: &str, sha: &str) -> Result<PathBuf, GitError> {
        let git = Git::new();
        let mirror = self.mirror(project);
        let worktree = self.root.join(project).join(name);
        if worktree.exists() {
            let _ = self.remove(&git, project, &worktree);
        }
        let wt = worktree.display().to_string();
        let trees = self.trees(project);
        // Alone: a concurrent add leaves a half-made admin directory that git
        // reads (and fails on) while it adds another worktree.
        let _alone = match trees.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        git.run(
            Some(&mirror),
            ["worktree", "add", "--detach", "--quiet", wt.as_str(), sha],
        )?;
        Ok(worktree)
    }

    /// Removes a job's worktree (and its registration in the mirror). Never fails:
    /// problems are logged, and a directory left behind is removed by hand.
    pub fn remove_worktree(&self, project: &str, worktree: &Path) {
        if let Err(e) = self.remove(&Git::new(), project, worktree) {
            tracing::warn!(worktree = %worktree.display(), error = %e, "worktree removal");
        }
    }

    fn remove(&self, git: &Git, project: &str, worktree: &Path) -> Result<(), GitError> {
        let mirror = self.mirror(project);
        let trees = self.trees(project);
        let _alone = match trees.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let wt = worktree.display().to_string();
        let r = if mirror.exists() {
            git.run(
                Some(&mirror),
                ["worktree", "remove", "--force", "--force", wt.as_str()],
            )
            .map(|_| ())
        } else {
            Ok(())
        };
        if worktree.exists() {
            let _ = std::fs::remove_dir_all(worktree);
        }
        if mirror.exists() {
            let _ = git.run(Some(&mirror), ["worktree", "prune"]);
        }
        r
    }

    /// Garbage collection: removes worktree directories older than `max_age` that
    /// are not in `active` (job ids still running), and runs `git gc` on mirrors
    /// that were not fetched for `idle` or longer. Returns (worktrees removed,
    /// mirrors collected).
    pub fn gc(&self, active: &[String], max_age: Duration, idle: Duration) -> (usize, usize) {
        let now = SystemTime::now();
        let age = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default()
        };
        let (mut removed, mut collected) = (0, 0);
        let Ok(projects) = std::fs::read_dir(&self.root) else {
            return (0, 0);
        };
        for p in projects.flatten() {
            let Some(project) = p.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if project.starts_with('.') || !p.path().is_dir() {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(p.path()) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || active.contains(&name) {
                        continue;
                    }
                    if e.path().is_dir() && age(&e.path()) >= max_age {
                        self.remove_worktree(&project, &e.path());
                        removed += 1;
                    }
                }
            }
            let mirror = self.mirror(&project);
            // FETCH_HEAD is rewritten by every fetch: its age is the mirror's idle time.
            if mirror.exists() && age(&mirror.join("FETCH_HEAD")) >= idle {
                let lock = self.lock(&project);
                let _guard = match lock.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let trees = self.trees(&project);
                let _alone = match trees.write() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                if Git::new()
                    .run(Some(&mirror), ["gc", "--quiet", "--prune=now"])
                    .is_ok()
                {
                    collected += 1;
                }
            }
        }
        (removed, collected)
    }
}

fn io_err(what: &str, e: &std::io::Error) -> GitError {
    GitError {
        args: what.to_owned(),
        message: e.to_string(),
    }
}

/// Resolves a branch, tag or commit of the mirror to a full sha.
fn resolve_ref(git: &Git, mirror: &Path, r: &str) -> Result<String, GitError> {
    if r.starts_with('-') || r.is_empty() {
        return Err(GitError {
            args: format!("rev-parse {r}"),
            message: "not a branch, tag or commit".to_owned(),
        });
    }
    for candidate in [
        format!("refs/remotes/origin/{r}"),
        format!("refs/tags/{r}"),
        r.to_owned(),
    ] {
        if let Ok(sha) = git.text(
            Some(mirror),
            [
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{candidate}^{{commit}}"),
            ],
        ) && !sha.is_empty()
        {
            return Ok(sha);
        }
    }
    Err(GitError {
        args: format!("rev-parse {r}"),
        message: format!("`{r}` is not a branch, tag or commit of the repository"),
    })
}
