//! Registry sources: where the manifests come from.
//!
//! This module does the I/O that [`crate::manifest`] must not: it finds the manifest
//! files of a registry — a directory ([`dir`]) or a branch of a git repository
//! ([`git`]) — and reads their text, with the revision they were read at. Manifest
//! paths are relative to the registry root, whatever the source.

pub mod dir;
pub mod git;
pub mod watch;

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::{Config, RegistrySource};
use crate::git::redact_url;
use crate::manifest::{Diagnostic, SourceFile};

/// The manifest files of one revision of the registry.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Directory: a content hash of the manifest set. Git: the commit sha.
    pub revision: String,
    /// Manifest files, paths relative to the registry root, sorted.
    pub files: Vec<SourceFile>,
    /// Files that could not be read (not UTF-8, permission denied).
    pub unreadable: Vec<Diagnostic>,
}

/// Why a registry could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(pub String);

/// A configured registry source.
#[derive(Debug, Clone)]
pub enum Registry {
    /// A directory of manifests.
    Dir(PathBuf),
    /// A branch of a git repository, mirrored locally.
    Git(git::GitRegistry),
}

impl Registry {
    /// The registry the configuration names.
    pub fn from_config(cfg: &Config) -> Registry {
        match &cfg.registry {
            RegistrySource::Dir(d) => Registry::Dir(d.clone()),
            RegistrySource::Git(url) => Registry::Git(git::GitRegistry {
                url: url.clone(),
                branch: cfg.registry_branch.clone(),
                mirror: cfg.workspace_dir.join(".registry.git"),
                token: cfg.registry_token.clone(),
                timeout: cfg.git_timeout(),
            }),
        }
    }

    /// A one-line description for status and logs (never includes a token).
    pub fn describe(&self) -> String {
        match self {
            Registry::Dir(d) => format!("dir:{}", d.display()),
            Registry::Git(g) => format!("git:{}#{}", redact_url(&g.url), g.branch),
        }
    }

    /// Reads the current revision (fetching first, for git). Blocking.
    pub fn fetch(&self) -> Result<Fetched, RegistryError> {
        match self {
            Registry::Dir(d) => {
                let c = dir::read(d).map_err(|e| {
                    RegistryError(format!(
                        "cannot read registry directory {}: {e}",
                        d.display()
                    ))
                })?;
                Ok(Fetched {
                    revision: content_hash(&c.files),
                    files: c.files,
                    unreadable: c.diagnostics,
                })
            }
            Registry::Git(g) => g.fetch(),
        }
    }
}

/// A short hash of a manifest set: paths and contents, in order.
pub fn content_hash(files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.text.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
