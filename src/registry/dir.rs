//! A registry that is a directory on disk.
//!
//! Every `*.yaml` and `*.yml` file below the root is a manifest file; hidden files
//! and directories (`.git`, editor swap files) are skipped, symbolic links to
//! directories are not followed (no loops), and the files come back sorted so that
//! every run sees the same order.

use std::path::{Path, PathBuf};

use crate::manifest::{Diagnostic, Severity, SourceFile};

/// The manifest files found under a directory, and the files that could not be read.
#[derive(Debug, Default)]
pub struct DirContents {
    /// Files read, with paths relative to the root.
    pub files: Vec<SourceFile>,
    /// One error per file that could not be read (not UTF-8, permission denied).
    pub diagnostics: Vec<Diagnostic>,
}

/// Whether `path` names a manifest file.
pub fn is_manifest_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
}

/// Reads every manifest file under `root`. Fails only when `root` itself cannot be
/// listed; a file that cannot be read becomes a diagnostic.
pub fn read(root: &Path) -> std::io::Result<DirContents> {
    let mut paths = Vec::new();
    walk(root, &mut paths, true)?;
    paths.sort();
    let mut out = DirContents::default();
    for path in paths {
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => out.files.push(SourceFile { path: shown, text }),
                Err(e) => {
                    let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                    let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
                    let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                    out.diagnostics.push(Diagnostic {
                        file: shown,
                        line,
                        col,
                        severity: Severity::Error,
                        message: "file is not UTF-8 text".to_owned(),
                    });
                }
            },
            Err(e) => out.diagnostics.push(Diagnostic {
                file: shown,
                line: 1,
                col: 1,
                severity: Severity::Error,
                message: format!("cannot read file: {e}"),
            }),
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, is_root: bool) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // Below the root, an unreadable directory is skipped rather than fatal.
        Err(e) if !is_root => {
            tracing::warn!(dir = %dir.display(), error = %e, "skipping unreadable directory");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&path, out, false)?;
        } else if (ft.is_file() || (ft.is_symlink() && path.is_file())) && is_manifest_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}
