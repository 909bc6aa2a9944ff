//! Findings: from a finished job's log to stored findings.
//!
//! After each job the runner calls the hook [`install`] registers: the log goes
//! through [`crate::parsers`], each finding's path is made relative to the
//! repository root, it gets its fingerprint and a `location_hash` (from the flagged
//! source line, read from the worktree before it is removed), and it is compared
//! with the previous finished run of the same (project, subproject, recipe):
//! `new` or `unchanged`, plus the list of fingerprints that were `fixed`.
//!
//! Fingerprinting, path normalisation, the baseline comparison and SARIF rendering
//! are pure.

pub mod sarif;

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::ledger::Db;
use crate::ledger::{Finding, Job, JobStatus, NewFinding};
use crate::parsers::{self, RawFinding};
use crate::runner::Runner;

/// Makes a tool's path relative to the repository root. `worktree` is the job's
/// checkout, `subproject` the directory the command ran in (relative), `exists`
/// answers whether a repository-relative path exists.
pub fn normalize_path(
    file: &str,
    worktree: &str,
    subproject: &str,
    exists: &dyn Fn(&str) -> bool,
) -> String {
    let clean = |p: &str| -> String {
        let mut parts: Vec<&str> = Vec::new();
        for c in p.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        parts.join("/")
    };
    let root = worktree.trim_end_matches('/');
    if let Some(rest) = file.strip_prefix(root).filter(|r| r.starts_with('/')) {
        return clean(rest);
    }
    if file.starts_with('/') {
        // Outside the checkout (a dependency in the cargo registry, a system header).
        return file.to_owned();
    }
    let rel = clean(file);
    if subproject == "." || subproject.is_empty() {
        return rel;
    }
    let under = clean(&format!("{subproject}/{file}"));
    if exists(&under) || !exists(&rel) {
        under
    } else {
        rel
    }
}

/// A hash of the flagged line's text (whitespace-normalised) with the kind and
/// code: it survives lines being inserted above the finding.
pub fn location_hash(kind: &str, code: Option<&str>, line_text: &str) -> String {
    let norm: String = line_text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = format!("{kind}|{}|{norm}", code.unwrap_or(""));
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Marks each finding `new` or `unchanged` against the previous run's findings and
/// returns the fingerprints that disappeared (`fixed`).
///
/// Where a finding has a location hash (the text of its line), that decides: the
/// same text flagged the same way is the same finding even if it moved, and a
/// different text on the same line is a different one. Without a location hash
/// (a lockfile advisory, a test name) the fingerprint decides.
pub fn compare(current: &mut [NewFinding], previous: Option<&[Finding]>) -> Vec<String> {
    let Some(previous) = previous else {
        for f in current.iter_mut() {
            f.baseline_state = Some("new".into());
        }
        return Vec::new();
    };
    let prev_fp: HashSet<&str> = previous
        .iter()
        .filter(|f| f.f.location_hash.is_none())
        .map(|f| f.f.fingerprint.as_str())
        .collect();
    let prev_loc: HashSet<&str> = previous
        .iter()
        .filter_map(|f| f.f.location_hash.as_deref())
        .collect();
    let cur_fp: HashSet<String> = current
        .iter()
        .filter(|f| f.location_hash.is_none())
        .map(|f| f.fingerprint.clone())
        .collect();
    let cur_loc: HashSet<String> = current
        .iter()
        .filter_map(|f| f.location_hash.clone())
        .collect();
    for f in current.iter_mut() {
        let seen = match &f.location_hash {
            Some(h) => prev_loc.contains(h.as_str()),
            None => prev_fp.contains(f.fingerprint.as_str()),
        };
        f.baseline_state = Some(if seen { "unchanged" } else { "new" }.into());
    }
    let mut fixed: Vec<String> = previous
        .iter()
        .filter(|p| match &p.f.location_hash {
            Some(h) => !cur_loc.contains(h),
            None => !cur_fp.contains(&p.f.fingerprint),
        })
        .map(|p| p.f.fingerprint.clone())
        .collect();
    fixed.sort();
    fixed.dedup();
    fixed
}

/// Turns a parser's findings into storable ones for a job checked out in
/// `worktree` (read for location hashes).
pub fn prepare(raw: Vec<RawFinding>, worktree: Option<&Path>, subproject: &str) -> Vec<NewFinding> {
    let wt = worktree
        .map(|w| w.display().to_string())
        .unwrap_or_default();
    let exists = |rel: &str| worktree.is_some_and(|w| w.join(rel).exists());
    let mut cache: std::collections::HashMap<String, Option<Vec<String>>> = Default::default();
    raw.into_iter()
        .map(|r| {
            let file = r
                .file
                .as_deref()
                .map(|f| normalize_path(f, &wt, subproject, &exists));
            let fingerprint = fingerprint(&r.kind, file.as_deref(), r.line, r.code.as_deref());
            let location_hash = match (&file, r.line, worktree) {
                (Some(f), Some(line), Some(w)) if line >= 1 && !f.starts_with('/') => {
                    let lines = cache.entry(f.clone()).or_insert_with(|| {
                        std::fs::read_to_string(w.join(f))
                            .ok()
                            .map(|t| t.lines().map(str::to_owned).collect())
                    });
                    lines
                        .as_ref()
                        .and_then(|l| l.get(usize::try_from(line - 1).ok()?))
                        .map(|text| location_hash(&r.kind, r.code.as_deref(), text))
                }
                _ => None,
            };
            NewFinding {
                tool: r.tool,
                kind: r.kind,
                severity: r.severity,
                file,
                line: r.line,
                col: r.col,
                code: r.code,
                message: r.message,
                suggested_fix: r.suggested_fix,
                fingerprint,
                location_hash,
                baseline_state: None,
                raw_json: r.raw_json,
            }
        })
        .collect()
}

/// The files tracked at the worktree's commit (`git ls-files`), for the generic
/// line parser.
pub fn tracked_files(worktree: &Path, subproject: &str) -> Option<parsers::lines::Tracked> {
    let out = crate::git::Git::new()
        .run(Some(worktree), ["ls-files", "-z"])
        .ok()?;
    let files = out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parsers::lines::Tracked {
        files,
        worktree: worktree
            .display()
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
        subproject: subproject.to_owned(),
    })
}

/// Processes one finished job: parse, prepare, compare, store.
pub fn process_job(
    db: &Db,
    job: &Job,
    log_path: &Path,
    worktree: Option<&Path>,
    now_ms: i64,
) -> Result<usize, String> {
    if matches!(job.status, JobStatus::Cancelled | JobStatus::Error) {
        return Ok(0);
    }
    // Logs are capped when written; the bound here only guards against a log that
    // is not a regular file.
    let bytes =
        crate::logfile::read_all(log_path, 1 << 32).map_err(|e| format!("cannot read log: {e}"))?;
    let log = String::from_utf8_lossy(&bytes);
    let language = job.recipe_snapshot["language"].as_str();
    // The tracked files feed only the line parser: a log with no output of the
    // command at all (a no-op) needs no `git ls-files`.
    let has_output = log
        .lines()
        .any(|l| !l.starts_with("[crafting-table]") && !l.trim().is_empty());
    let tracked = worktree
        .filter(|_| has_output)
        .and_then(|w| tracked_files(w, &job.subproject));
    let parsed = parsers::parse(&parsers::Input {
        language,
        recipe: &job.recipe,
        exit_code: job.exit_code,
        timed_out: job.status == JobStatus::TimedOut,
        log: &log,
        tracked: tracked.as_ref(),
    });
    if parsed.skipped > 0 {
        tracing::info!(job = %job.id, skipped = parsed.skipped, "unreadable tool records skipped");
    }
    let mut findings = prepare(parsed.findings, worktree, &job.subproject);
    db.write_blocking(|l| {
        let previous = l
            .previous_run(&job.project, &job.subproject, &job.recipe, &job.id)
            .map_err(|e| e.to_string())?;
        let prev_findings = match &previous {
            Some(id) => Some(l.findings_of_job(id).map_err(|e| e.to_string())?),
            None => None,
        };
        let fixed = compare(&mut findings, prev_findings.as_deref());
        let n = findings.len();
        l.store_findings(&job.id, &findings, &fixed, now_ms)
            .map_err(|e| e.to_string())?;
        Ok(n)
    })
}

/// Registers the findings pipeline as an after-job hook of `runner`.
pub fn install(runner: &Runner) {
    let (db, clock) = (runner.db().clone(), runner.clock().clone());
    runner.add_hook(std::sync::Arc::new(move |job, log, worktree| {
        process_job(&db, job, log, worktree, clock.now_ms()).map(|_| ())
    }));
}

/// The original system's fingerprint: 16 hex characters of SHA-256 over
/// `kind|file|line|code` — not the message, whose wording drifts between tool
/// versions.
pub fn fingerprint(
    kind: &str,
    file: Option<&str>,
    line: Option<i64>,
    code: Option<&str>,
) -> String {
    let text = format!(
        "{kind}|{}|{}|{}",
        file.unwrap_or(""),
        line.map(|l| l.to_string()).unwrap_or_default(),
        code.unwrap_or("")
    );
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_16_hex_and_ignores_nothing_but_message() {
        let a = fingerprint("lint", Some("src/app.py"), Some(3), Some("F401"));
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            a,
            fingerprint("lint", Some("src/app.py"), Some(3), Some("F401"))
        );
        assert_ne!(
            a,
            fingerprint("lint", Some("src/app.py"), Some(4), Some("F401"))
        );
        assert_ne!(
            a,
            fingerprint("cve", Some("src/app.py"), Some(3), Some("F401"))
        );
    }
}
