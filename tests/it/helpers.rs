//! Shared helpers: real git repositories in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir`, panicking with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository with a `main` branch in a temporary directory.
pub struct Repo {
    /// Keeps the directory alive.
    pub _tmp: tempfile::TempDir,
    /// The work tree.
    pub path: PathBuf,
}

impl Repo {
    /// An empty repository on branch `main`.
    pub fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        git(&path, &["init", "--quiet", "--initial-branch=main"]);
        Repo { _tmp: tmp, path }
    }

    /// Writes a file (creating directories).
    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
        self
    }

    /// Removes a file.
    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path.join(rel)).unwrap();
        self
    }

    /// Commits everything; returns the new sha.
    pub fn commit(&self, msg: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(
            &self.path,
            &["commit", "--quiet", "--allow-empty", "-m", msg],
        );
        git(&self.path, &["rev-parse", "HEAD"])
    }
}

/// A Recipe manifest.
pub fn recipe(name: &str, test: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Recipe\nmetadata:\n  name: {name}\nspec:\n  language: rust\n  test: {test}\n  audit: cargo audit --json\n"
    )
}

/// A Project manifest whose one subproject extends `recipe`.
pub fn project(name: &str, recipe: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n  git_url: ../{name}\n  subprojects:\n    - path: .\n      extends: {recipe}\n"
    )
}

/// A Schedule manifest.
pub fn schedule(name: &str, cron: &str, tz: &str, projects: &str, extra: &str) -> String {
    format!(
        "apiVersion: crafting-table/v1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  cron: '{cron}'\n  timezone: {tz}\n  projects: {projects}\n  recipe: audit\n{extra}"
    )
}

/// Sets a job's status directly in the ledger file (to stage a worker's claim).
pub fn set_job_status(data_dir: &Path, id: &str, status: &str) {
    let c = rusqlite::Connection::open(data_dir.join("ledger.sqlite3")).unwrap();
    c.execute(
        "UPDATE jobs SET status = ?2 WHERE id = ?1",
        rusqlite::params![id, status],
    )
    .unwrap();
}
