//! Workspace: one bare mirror per project, and worktrees for jobs — warm ones kept
//! between jobs, or a fresh one per job.
//!
//! Layout under `$CRAFTING_WORKSPACE_DIR`:
//! - `<project>/.cache` — bare mirror of the project's repository;
//! - `<project>/.warm/<name>` — warm worktrees: after a job that ended normally
//!   (exited, nothing left running) its worktree goes back to the project's idle
//!   pool, and the next job moves it to its sha with a forced detached checkout
//!   and `git clean -ffdx`, so it sees exactly the commit, as in a fresh worktree.
//!   A worktree whose job was cancelled, timed out, failed to log or left
//!   processes behind is removed instead, as is one idle for longer than
//!   `CRAFTING_WARM_IDLE_SECS` (by gc) and any the pool does not know (a previous
//!   process's);
//! - `<project>/<job-id>` — a fresh worktree (`workspace: fresh`), detached at the
//!   resolved sha, removed when the job ends.
//!
//! Fetches into one project's mirror (and `gc`) are serialised by a per-project
//! lock; worktree adds and removals by another (git drops the mirror's
//! `worktrees/` directory when the last worktree goes, and an add reads every
//! other worktree's admin directory, which a concurrent add leaves half-made).
//! The job's command runs outside both. Blocking: call from
//! `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::git::{Git, GitError};
pub use crate::manifest::WorkspaceMode;

/// An idle warm worktree.
#[derive(Debug)]
struct Idle {
    wt: PathBuf,
    since: Instant,
    /// The commit it holds, when it was reset and cleaned after its job (nothing
    /// but that commit's files): the next job at that commit needs no git at all.
    clean_at: Option<String>,
}

/// Warm worktrees: idle ones per project (with the instant they became idle) and
/// the ones a job holds. A path is in at most one of the two.
#[derive(Debug, Default)]
struct Pool {
    idle: HashMap<String, Vec<Idle>>,
    busy: HashSet<PathBuf>,
    reused: u64,
    discarded: u64,
    /// What each warm tree looked like when it was last known clean.
    stamps: HashMap<PathBuf, stamp::TreeStamp>,
    /// Resets after a job that the tree's stamp made unnecessary.
    resets_skipped: u64,
}

/// A warm tree's stamp: every entry's inode, type and permissions, size and
/// times (and the worktree's git index and HEAD), in one walk without git. Equal
/// stamps before and after a job mean the job changed nothing there: a change to
/// a file's content or metadata moves its ctime, which no program can set back,
/// and a new or removed entry changes the list. A stamp is only taken when every
/// ctime is well in the past, so a change made within the same clock tick as the
/// stamped state cannot hide (git's "racily clean" rule, the same way round).
mod stamp {
    use std::os::unix::fs::MetadataExt as _;
    use std::path::{Path, PathBuf};

    /// How recent a ctime must not be for the stamp to vouch for it (well above
    /// any filesystem's timestamp granularity).
    const RACY_NS: i128 = 100_000_000;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Entry {
        rel: PathBuf,
        ino: u64,
        mode: u32,
        size: u64,
        mtime: i128,
        ctime: i128,
        /// For the git index and HEAD, which every reset rewrites: their content.
        sha256: Option<[u8; 32]>,
    }

    /// The stamp of a clean tree.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TreeStamp(Vec<Entry>);

    fn entry(rel: PathBuf, m: &std::fs::Metadata) -> Entry {
        Entry {
            rel,
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            sha256: None,
        }
    }

    fn content(rel: PathBuf, path: &Path) -> Option<Entry> {
        use sha2::Digest as _;
        let bytes = std::fs::read(path).ok()?;
        Some(Entry {
            rel,
            ino: 0,
            mode: 0,
            size: bytes.len() as u64,
            mtime: 0,
            ctime: 0,
            sha256: Some(sha2::Sha256::digest(&bytes).into()),
        })
    }

    /// Visits the tree depth first, each directory's entries by name, then the
    /// worktree's index and HEAD; stops when `f` says so. `None`: unreadable.
    fn walk(wt: &Path, f: &mut dyn FnMut(Entry) -> bool) -> Option<bool> {
        fn dir(root: &Path, rel: &Path, f: &mut dyn FnMut(Entry) -> bool) -> Option<bool> {
            let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(root.join(rel))
                .ok()?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .ok()?;
            names.sort();
            for name in names {
                let r = rel.join(&name);
                let m = std::fs::symlink_metadata(root.join(&r)).ok()?;
                let is_dir = m.file_type().is_dir();
                if !f(entry(r.clone(), &m)) {
                    return Some(false);
                }
                if is_dir && !dir(root, &r, f)? {
                    return Some(false);
                }
            }
            Some(true)
        }
        let m = std::fs::symlink_metadata(wt).ok()?;
        if !f(entry(PathBuf::new(), &m)) {
            return Some(false);
        }
        if !dir(wt, Path::new(""), f)? {
            return Some(false);
        }
        let admin = crate::runner::sandbox::admin_dir(wt)?;
        for name in ["index", "HEAD"] {
            let e = content(
                PathBuf::from(format!(".git-admin/{name}")),
                &admin.join(name),
            )?;
            if !f(e) {
                return Some(false);
            }
        }
        Some(true)
    }

    /// The stamp of `wt` now, unless something in it changed too recently to be
    /// vouched for.
    pub fn take(wt: &Path) -> Option<TreeStamp> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos() as i128;
        let mut entries = Vec::new();
        walk(wt, &mut |e| {
            let fresh = e.sha256.is_none() && (e.ctime > now - RACY_NS || e.mtime > now - RACY_NS);
            entries.push(e);
            !fresh
        })?
        .then_some(TreeStamp(entries))
    }

    /// Whether `wt` still looks exactly as stamped (stops at the first change).
    pub fn unchanged(wt: &Path, stamp: &TreeStamp) -> bool {
        let mut expected = stamp.0.iter();
        let walked = walk(wt, &mut |e| expected.next() == Some(&e));
        walked == Some(true) && expected.next().is_none()
    }
}

/// What taking a warm worktree gave.
enum Warm {
    /// A worktree at the commit (its sha).
    Reused(PathBuf, String),
    /// No idle worktree of the project.
    NoIdle,
    /// The mirror does not hold the commit (fetch first).
    Missing,
}

/// Counters of the warm pool, for `/metrics` and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Warm worktrees waiting for a job.
    pub idle: usize,
    /// Warm worktrees a job holds.
    pub busy: usize,
    /// Jobs that got a warm worktree instead of a new one.
    pub reused: u64,
    /// Warm worktrees removed instead of reused (job ended abnormally, could not
    /// be reset, idle too long, or unknown).
    pub discarded: u64,
    /// Resets after a job skipped because the tree was provably untouched.
    pub resets_skipped: u64,
}

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
    /// Warm worktrees.
    pool: Arc<Mutex<Pool>>,
    /// Woken whenever a warm worktree is tidied and handed to the pool.
    tidied: Arc<tokio::sync::Notify>,
}

/// A checked-out job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The resolved commit.
    pub sha: String,
    /// The worktree directory.
    pub worktree: PathBuf,
    /// Whether it is a warm worktree (goes back to the pool via
    /// [`Workspace::release`]).
    pub warm: bool,
    /// Whether an idle warm worktree was reused (no `worktree add`).
    pub reused: bool,
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
            pool: Arc::default(),
            tidied: Arc::default(),
        }
    }

    /// Waits until no warm worktree is held by a job or being tidied (how tests
    /// and benches see the pool at rest after a job's end).
    pub async fn settled(&self) {
        loop {
            let woken = self.tidied.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.pool().busy.is_empty() {
                return;
            }
            woken.await;
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        match self.pool.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The warm pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        let p = self.pool();
        PoolStats {
            idle: p.idle.values().map(Vec::len).sum(),
            busy: p.busy.len(),
            reused: p.reused,
            discarded: p.discarded,
            resets_skipped: p.resets_skipped,
        }
    }

    /// Where the project's warm worktrees live.
    pub fn warm_dir(&self, project: &str) -> PathBuf {
        self.root.join(project).join(".warm")
    }

    /// Hands a job's worktree back: a warm one whose job ended normally
    /// (`reusable`) goes to the idle pool, anything else is removed.
    pub fn release(&self, project: &str, checkout: &Checkout, reusable: bool) {
        if checkout.warm {
            let mut p = self.pool();
            p.busy.remove(&checkout.worktree);
            if reusable && checkout.worktree.is_dir() {
                p.idle.entry(project.to_owned()).or_default().push(Idle {
                    wt: checkout.worktree.clone(),
                    since: Instant::now(),
                    clean_at: None,
                });
                return;
            }
            p.discarded += 1;
        }
        self.remove_worktree(project, &checkout.worktree);
    }

    /// As [`Workspace::release`], except that a reusable warm worktree stays the
    /// job's until [`Workspace::tidy`] (which the caller runs once the job's end
    /// is recorded, off the job's own time). Returns whether to tidy.
    pub fn release_later(&self, project: &str, checkout: &Checkout, reusable: bool) -> bool {
        if checkout.warm && reusable && checkout.worktree.is_dir() {
            return true;
        }
        self.release(project, checkout, reusable);
        false
    }

    /// Resets a released warm worktree to its commit (`git reset --hard`, `git
    /// clean -ffdx`) and makes it idle, remembering that it is clean; one that
    /// cannot be reset is removed.
    pub fn tidy(&self, project: &str, wt: &Path) {
        let git = Git::new();
        // Untouched since it was last clean (the tree's stamp says so): nothing
        // to reset. Otherwise reset, and stamp the clean tree for next time.
        let stamped = self.pool().stamps.remove(wt);
        let untouched = stamped.as_ref().is_some_and(|st| stamp::unchanged(wt, st));
        let reset = untouched
            || (git.run(Some(wt), ["reset", "--hard", "--quiet"]).is_ok()
                && git.run(Some(wt), ["clean", "-ffdxq"]).is_ok());
        let fresh_stamp = if untouched {
            stamped
        } else if reset {
            stamp::take(wt)
        } else {
            None
        };
        let head = crate::runner::sandbox::admin_dir(wt)
            .and_then(|admin| std::fs::read_to_string(admin.join("HEAD")).ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| h.len() == 40 && h.chars().all(|c| c.is_ascii_hexdigit()));
        let mut p = self.pool();
        p.busy.remove(wt);
        if untouched {
            p.resets_skipped += 1;
        }
        if let Some(st) = fresh_stamp {
            p.stamps.insert(wt.to_owned(), st);
        }
        if reset {
            p.idle.entry(project.to_owned()).or_default().push(Idle {
                wt: wt.to_owned(),
                since: Instant::now(),
                clean_at: head,
            });
            drop(p);
            self.tidied.notify_waiters();
            return;
        }
        p.discarded += 1;
        drop(p);
        tracing::warn!(worktree = %wt.display(), "warm worktree could not be reset after its job; removed");
        self.remove_worktree(project, wt);
        self.tidied.notify_waiters();
    }

    /// Takes an idle warm worktree of `project` and moves it to `sha`: a forced
    /// detached checkout, then `git clean -ffdx`. One that cannot be reset (or
    /// whose `.git` link a job changed) is removed and the next one tried. A
    /// commit the mirror does not hold leaves the worktree idle and untouched
    /// ([`Warm::Missing`]). Returns the commit checked out.
    fn reuse_warm(&self, git: &Git, project: &str, sha: &str) -> Warm {
        loop {
            let (wt, clean_at) = {
                let mut p = self.pool();
                let list = p.idle.get_mut(project);
                // A tree already clean at this commit first, then any clean one.
                let pick = list.and_then(|v| {
                    let at = v
                        .iter()
                        .rposition(|i| i.clean_at.as_deref() == Some(sha))
                        .or_else(|| v.iter().rposition(|i| i.clean_at.is_some()))
                        .unwrap_or(v.len().saturating_sub(1));
                    (at < v.len()).then(|| v.remove(at))
                });
                let Some(idle) = pick else {
                    return Warm::NoIdle;
                };
                p.busy.insert(idle.wt.clone());
                (idle.wt, idle.clean_at)
            };
            let admin = self
                .mirror(project)
                .join("worktrees")
                .join(wt.file_name().unwrap_or_default());
            // git writes the admin directory's real path: a workspace reached
            // through a symbolic link names the same directory another way.
            let linked = crate::runner::sandbox::admin_dir(&wt).is_some_and(|d| {
                d == admin
                    || std::fs::canonicalize(&d)
                        .is_ok_and(|d| std::fs::canonicalize(&admin).is_ok_and(|a| a == d))
            });
            // Reset and cleaned at this very commit after its last job: as it is.
            if linked && clean_at.as_deref() == Some(sha) {
                self.pool().reused += 1;
                return Warm::Reused(wt, sha.to_owned());
            }
            // Moved to another commit: its stamp no longer describes it.
            self.pool().stamps.remove(&wt);
            let checked_out = linked
                && git
                    .run(
                        Some(&wt),
                        ["checkout", "--force", "--detach", "--quiet", sha],
                    )
                    .is_ok();
            if linked && !checked_out && !self.holds_commit(git, project, sha) {
                // Not the tree's fault: give it back untouched (git checks the
                // commit before it changes anything).
                let mut p = self.pool();
                p.busy.remove(&wt);
                p.idle.entry(project.to_owned()).or_default().push(Idle {
                    wt,
                    since: Instant::now(),
                    clean_at,
                });
                return Warm::Missing;
            }
            // The commit HEAD now names (a tag's sha peels to its commit).
            let head = std::fs::read_to_string(admin.join("HEAD"))
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| h.len() == 40 && h.chars().all(|c| c.is_ascii_hexdigit()));
            // A tree cleaned after its job holds nothing but tracked files, so the
            // checkout alone gives exactly the new commit.
            let reset = checked_out
                && (clean_at.is_some() || git.run(Some(&wt), ["clean", "-ffdxq"]).is_ok());
            if reset && let Some(head) = head {
                self.pool().reused += 1;
                return Warm::Reused(wt, head);
            }
            tracing::warn!(worktree = %wt.display(), "warm worktree could not be reset; removed");
            {
                let mut p = self.pool();
                p.busy.remove(&wt);
                p.discarded += 1;
            }
            self.remove_worktree(project, &wt);
        }
    }

    /// Whether the project's mirror holds `sha` as a commit.
    fn holds_commit(&self, git: &Git, project: &str, sha: &str) -> bool {
        git.run(
            Some(&self.mirror(project)),
            ["cat-file", "-e", &format!("{sha}^{{commit}}")],
        )
        .is_ok()
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
        mode: WorkspaceMode,
    ) -> Result<Checkout, GitError> {
        let now = chrono::Utc::now().timestamp_millis();
        self.checkout_since(project, url, git_ref, job_id, mode, now, &|| {
            chrono::Utc::now().timestamp_millis()
        })
    }

    /// [`Workspace::checkout`] for a job enqueued at `asked` (ms): a fetch of the
    /// project that started at or after `asked` is shared instead of repeated.
    /// `now` reads the same clock.
    #[allow(clippy::too_many_arguments)]
    pub fn checkout_since(
        &self,
        project: &str,
        url: &str,
        git_ref: &str,
        job_id: &str,
        mode: WorkspaceMode,
        asked: i64,
        now: &dyn Fn() -> i64,
    ) -> Result<Checkout, GitError> {
        let git = Git::new();
        let mirror = self.mirror(project);
        let warm = mode == WorkspaceMode::Warm;
        let full_sha = git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit());
        // A full sha and an idle warm tree: the checkout itself tells whether the
        // mirror holds the commit (no `rev-parse`, no fetch lock).
        if warm && full_sha {
            match self.reuse_warm(&git, project, &git_ref.to_ascii_lowercase()) {
                Warm::Reused(worktree, sha) => {
                    return Ok(Checkout {
                        sha,
                        worktree,
                        warm,
                        reused: true,
                    });
                }
                Warm::NoIdle | Warm::Missing => {}
            }
        }
        // Fetches (and the mirror's creation) are serialised per project; adding a
        // worktree is not: git locks each new worktree while it is created.
        let sha = {
            let lock = self.lock(project);
            let _guard = match lock.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            init_mirror(&git, &mirror)?;
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
        if warm && let Warm::Reused(worktree, head) = self.reuse_warm(&git, project, &sha) {
            return Ok(Checkout {
                sha: head,
                worktree,
                warm,
                reused: true,
            });
        }
        let worktree = if warm {
            let w = self.warm_dir(project).join(job_id);
            self.pool().busy.insert(w.clone());
            w
        } else {
            self.worktree_path(project, job_id)
        };
        if worktree.exists() {
            // A leftover from a crash with the same id cannot happen with fresh ids,
            // but never build on top of unknown files.
            let _ = self.remove(&git, project, &worktree);
        }
        let added = self.add(&git, project, &worktree, &sha);
        if let Err(e) = added {
            if warm {
                self.pool().busy.remove(&worktree);
            }
            // Never leave a half-made worktree behind.
            let _ = self.remove(&git, project, &worktree);
            return Err(e);
        }
        Ok(Checkout {
            sha,
            worktree,
            warm,
            reused: false,
        })
    }

    /// `git worktree add --detach`, alone among the project's worktree changes: a
    /// concurrent add leaves a half-made admin directory that git reads (and fails
    /// on) while it adds another worktree.
    fn add(&self, git: &Git, project: &str, worktree: &Path, sha: &str) -> Result<(), GitError> {
        let mirror = self.mirror(project);
        if let Some(parent) = worktree.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("create worktree parent", &e))?;
        }
        let wt = worktree.display().to_string();
        let trees = self.trees(project);
        let _alone = match trees.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        git.run(
            Some(&mirror),
            ["worktree", "add", "--detach", "--quiet", wt.as_str(), sha],
        )
        .map(|_| ())
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

    /// Makes `patch`'s commit in the project's mirror (which must hold its base)
    /// in a scratch worktree named `scratch`, keeps it under `patch.keep_as`, and
    /// returns its id: `patch.commit` when made from the same inputs. The patch
    /// loop makes it first; a runner on another host makes it again for the
    /// verify job.
    pub fn make_patch_commit(
        &self,
        project: &str,
        scratch: &str,
        patch: &crate::manifest::resolve::PatchCommit,
    ) -> Result<String, String> {
        let wt = self
            .add_detached(project, scratch, &patch.base)
            .map_err(|e| format!("cannot make a worktree at {}: {}", patch.base, e.message))?;
        let made = (|| {
            let patch_file = wt.with_extension("diff");
            std::fs::write(&patch_file, patch.diff.as_bytes())
                .map_err(|e| format!("cannot write the diff: {e}"))?;
            let pf = patch_file.display().to_string();
            let r = Git::new()
                .run(
                    Some(&wt),
                    ["apply", "--index", "--whitespace=nowarn", pf.as_str()],
                )
                .map_err(|e| format!("the diff does not apply: {}", e.message));
            let _ = std::fs::remove_file(&patch_file);
            r?;
            let date = format!("@{} +0000", patch.time);
            let git = Git::new()
                .with_env("GIT_AUTHOR_NAME", &patch.name)
                .with_env("GIT_AUTHOR_EMAIL", &patch.email)
                .with_env("GIT_AUTHOR_DATE", &date)
                .with_env("GIT_COMMITTER_NAME", &patch.name)
                .with_env("GIT_COMMITTER_EMAIL", &patch.email)
                .with_env("GIT_COMMITTER_DATE", &date);
            git.run(
                Some(&wt),
                [
                    "-c",
                    "commit.gpgSign=false",
                    "commit",
                    "--quiet",
                    "--no-verify",
                    "--cleanup=verbatim",
                    "-m",
                    patch.message.as_str(),
                ],
            )
            .map_err(|e| format!("cannot commit the change: {}", e.message))?;
            let commit = git
                .text(Some(&wt), ["rev-parse", "HEAD"])
                .map_err(|e| format!("cannot read the commit: {}", e.message))?;
            git.run(
                Some(&self.mirror(project)),
                ["update-ref", patch.keep_as.as_str(), commit.as_str()],
            )
            .map_err(|e| format!("cannot keep the commit: {}", e.message))?;
            Ok(commit)
        })();
        self.remove_worktree(project, &wt);
        made
    }

    /// Whether the project's mirror holds commit `sha`, fetching `url` once when it
    /// does not (a runner's mirror may lack a base another host saw).
    pub fn ensure_commit(&self, project: &str, url: &str, sha: &str) -> Result<bool, GitError> {
        let git = Git::new();
        let mirror = self.mirror(project);
        let lock = self.lock(project);
        let _guard = match lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        init_mirror(&git, &mirror)?;
        if resolve_ref(&git, &mirror, sha).is_ok() {
            return Ok(true);
        }
        self.fetch(&git, &mirror, url)?;
        Ok(resolve_ref(&git, &mirror, sha).is_ok())
    }

    /// Whether the project's mirror holds commit `sha` (no fetch).
    pub fn has_commit(&self, project: &str, sha: &str) -> bool {
        let mirror = self.mirror(project);
        mirror.join("HEAD").exists() && resolve_ref(&Git::new(), &mirror, sha).is_ok()
    }

    /// Adds a worktree named `name` detached at `sha`, which the mirror already
    /// holds (no fetch): the patch loop's scratch tree.
    pub fn add_detached(&self, project: &str, name: &str, sha: &str) -> Result<PathBuf, GitError> {
        let git = Git::new();
        let worktree = self.root.join(project).join(name);
        if worktree.exists() {
            let _ = self.remove(&git, project, &worktree);
        }
        self.add(&git, project, &worktree, sha)?;
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
        self.pool().stamps.remove(worktree);
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

    /// Removes warm worktrees idle for `max_idle` or longer, and warm worktree
    /// directories the pool does not know (a previous process's). Returns how many.
    pub fn gc_warm(&self, max_idle: Duration) -> usize {
        let mut stale: Vec<(String, PathBuf)> = Vec::new();
        {
            let mut p = self.pool();
            for (project, list) in &mut p.idle {
                list.retain(|i| {
                    let old = i.since.elapsed() >= max_idle;
                    if old {
                        stale.push((project.clone(), i.wt.clone()));
                    }
                    !old
                });
            }
        }
        let Ok(projects) = std::fs::read_dir(&self.root) else {
            return self.drop_stale(stale);
        };
        for project in projects.flatten() {
            let Some(name) = project.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(self.warm_dir(&name)) else {
                continue;
            };
            // Adds hold this lock and mark their path busy first: a directory
            // seen here that the pool does not know is nobody's.
            let trees = self.trees(&name);
            let _alone = match trees.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let p = self.pool();
            let known = |wt: &Path| {
                p.busy.contains(wt)
                    || p.idle
                        .get(&name)
                        .is_some_and(|v| v.iter().any(|i| i.wt == wt))
            };
            for e in entries.flatten() {
                if !known(&e.path()) && !stale.iter().any(|(_, w)| *w == e.path()) {
                    stale.push((name.clone(), e.path()));
                }
            }
        }
        self.drop_stale(stale)
    }

    fn drop_stale(&self, stale: Vec<(String, PathBuf)>) -> usize {
        let n = stale.len();
        self.pool().discarded += n as u64;
        for (project, wt) in stale {
            self.remove_worktree(&project, &wt);
        }
        n
    }

    /// Removes every worktree a previous process of this workspace left (warm or
    /// not): at start-up, before any job runs here, none of them is anybody's.
    /// Returns how many.
    pub fn clean_leftovers(&self) -> usize {
        let warm = self.gc_warm(Duration::ZERO);
        let (other, _) = self.gc(&[], Duration::ZERO, Duration::MAX);
        warm + other
    }

    /// Garbage collection: removes worktree directories older than `max_age` that
    /// are not in `active` (job ids still running), and runs `git gc` on mirrors
    /// that were not fetched for `idle` or longer. Returns (worktrees removed,
    /// mirrors collected). Warm worktrees are [`Workspace::gc_warm`]'s.
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
/// Makes the project's bare mirror when it does not exist yet.
fn init_mirror(git: &Git, mirror: &Path) -> Result<(), GitError> {
    if !mirror.join("HEAD").exists() {
        std::fs::create_dir_all(mirror).map_err(|e| io_err("create mirror", &e))?;
        git.run(Some(mirror), ["init", "--bare", "--quiet"])?;
    }
    Ok(())
}

fn resolve_ref(git: &Git, mirror: &Path, r: &str) -> Result<String, GitError> {
    if r.starts_with('-') || r.is_empty() {
        return Err(GitError {
            args: format!("rev-parse {r}"),
            message: "not a branch, tag or commit".to_owned(),
        });
    }
    // A full sha is tried as itself first (one `rev-parse` instead of three).
    let full_sha = r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit());
    let mut candidates = vec![
        format!("refs/remotes/origin/{r}"),
        format!("refs/tags/{r}"),
        r.to_owned(),
    ];
    if full_sha {
        candidates.rotate_right(1);
    }
    for candidate in candidates {
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
