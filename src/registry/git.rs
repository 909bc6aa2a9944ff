//! A registry that is a branch of a git repository.
//!
//! The repository is fetched into a bare mirror under the workspace
//! (`.registry.git`); the manifests are read straight from the fetched commit's tree
//! with `git ls-tree` and one `git cat-file --batch`, so no working copy exists to
//! drift. The revision is the commit sha.

use std::path::{Path, PathBuf};

use super::{Fetched, RegistryError};
use crate::git::{Git, redact_url};
use crate::manifest::{Diagnostic, Severity, SourceFile};

/// Where the registry lives and where it is mirrored.
#[derive(Debug, Clone)]
pub struct GitRegistry {
    /// Remote URL or path.
    pub url: String,
    /// Branch holding the manifests.
    pub branch: String,
    /// Local bare mirror.
    pub mirror: PathBuf,
    /// HTTP token, if any.
    pub token: Option<String>,
    /// Deadline of one fetch.
    pub timeout: std::time::Duration,
}

impl GitRegistry {
    fn git(&self) -> Git {
        match &self.token {
            Some(t) => Git::with_token(t),
            None => Git::new(),
        }
        .with_timeout(self.timeout)
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> RegistryError {
        // git prints the URL it was given; keep tokens out of stored errors.
        let msg = e.to_string().replace(&self.url, &redact_url(&self.url));
        RegistryError(format!("{what} {}: {msg}", redact_url(&self.url)))
    }

    /// Fetches the branch and reads its manifests. Blocking.
    pub fn fetch(&self) -> Result<Fetched, RegistryError> {
        let git = self.git();
        if !self.mirror.join("HEAD").exists() {
            std::fs::create_dir_all(&self.mirror)
                .map_err(|e| self.err("cannot create mirror for", e))?;
            git.run(Some(&self.mirror), ["init", "--bare", "--quiet"])
                .map_err(|e| self.err("cannot init mirror for", e))?;
        }
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        let refspec = format!("+refs/heads/{}:{tracking}", self.branch);
        git.run(
            Some(&self.mirror),
            [
                "fetch",
                "--quiet",
                "--no-tags",
                "--",
                self.url.as_str(),
                refspec.as_str(),
            ],
        )
        .map_err(|e| self.err("cannot fetch", e))?;
        let sha = git
            .text(
                Some(&self.mirror),
                ["rev-parse", "--verify", &format!("{tracking}^{{commit}}")],
            )
            .map_err(|e| self.err("cannot resolve branch of", e))?;
        let (files, unreadable) = read_tree(&git, &self.mirror, &sha)
            .map_err(|e| self.err("cannot read manifests of", e))?;
        Ok(Fetched {
            revision: sha,
            files,
            unreadable,
        })
    }
}

/// Reads every manifest file of commit `sha` in repository `repo`.
pub fn read_tree(
    git: &Git,
    repo: &Path,
    sha: &str,
) -> Result<(Vec<SourceFile>, Vec<Diagnostic>), crate::git::GitError> {
    let listing = git.run(Some(repo), ["ls-tree", "-r", "-z", "--full-tree", sha])?;
    let mut paths = Vec::new();
    let mut ids = Vec::new();
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        // "<mode> SP <type> SP <id> TAB <path>"
        let Some(tab) = entry.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let meta = String::from_utf8_lossy(&entry[..tab]);
        let path = String::from_utf8_lossy(&entry[tab + 1..]).into_owned();
        let fields: Vec<&str> = meta.split(' ').collect();
        if fields.len() != 3 || fields[1] != "blob" {
            continue;
        }
        let hidden = path.split('/').any(|c| c.starts_with('.'));
        if hidden || !super::dir::is_manifest_file(Path::new(&path)) {
            continue;
        }
        paths.push(path);
        ids.push(fields[2].to_owned());
    }
    let blobs = git.read_blobs(repo, &ids)?;
    let mut files = Vec::new();
    let mut bad = Vec::new();
    for (path, bytes) in paths.into_iter().zip(blobs) {
        match String::from_utf8(bytes) {
            Ok(text) => files.push(SourceFile { path, text }),
            Err(_) => bad.push(Diagnostic {
                file: path,
                line: 1,
                col: 1,
                severity: Severity::Error,
                message: "file is not UTF-8 text".to_owned(),
            }),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, bad))
}
