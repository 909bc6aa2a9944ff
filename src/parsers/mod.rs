//! Parsers: tool output → findings. Pure: a language, the command name, the exit
//! code and the log text in; findings out. One file per tool format.
//!
//! Resolution follows the original system: the parsers of the subproject's language
//! run (each decides from the command name and the log's content whether the output
//! is its format), then, when none produced anything and the command failed, the
//! generic parser reports one `recipe_fail`.
//!
//! Logs are mixed — progress lines, warnings, farm lines — so every parser takes what
//! is its own and ignores the rest; a corrupt or truncated record is counted in
//! `skipped`, never a panic and never an invented finding.

pub mod cargo_audit;
pub mod cargo_test;
pub mod clippy;
pub mod eslint;
pub mod generic;
pub mod go_vet;
pub mod govulncheck;
pub mod json_scan;
pub mod lines;
pub mod mypy;
pub mod pip_audit;
pub mod pytest;
pub mod ruff;
pub mod sarif;
pub mod toolchains;
pub mod tsc;

/// A finding as a parser sees it, before paths are normalised and fingerprints are
/// computed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RawFinding {
    /// The tool that reported it.
    pub tool: String,
    /// `lint`, `cve`, `advisory`, `test_fail`, `recipe_fail`.
    pub kind: String,
    /// `error`, `warn` or `info`.
    pub severity: String,
    /// Path as the tool printed it.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<i64>,
    /// 1-based column.
    pub col: Option<i64>,
    /// Rule, advisory id or test name.
    pub code: Option<String>,
    /// What the tool said.
    pub message: String,
    /// A fix, when the tool gives one.
    pub suggested_fix: Option<String>,
    /// The tool's own record (JSON text), when it has one.
    pub raw_json: Option<String>,
}

/// What the parsers made of one log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Findings, in log order, without duplicates.
    pub findings: Vec<RawFinding>,
    /// Records that looked like the tool's but could not be read.
    pub skipped: usize,
    /// Whether a specific parser recognised the log as its tool's output (a clean
    /// report included): the generic line parser then stays out.
    pub claimed: bool,
}

/// What a parser gets.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Subproject language, lowercase (`rust`, `python`, …), if known.
    pub language: Option<&'a str>,
    /// The command name (`lint`, `audit`, `test`, …).
    pub recipe: &'a str,
    /// Exit code, when the command exited by itself.
    pub exit_code: Option<i64>,
    /// Whether the job timed out.
    pub timed_out: bool,
    /// The log text.
    pub log: &'a str,
    /// The files of the job's commit, for the generic line parser (which reports
    /// nothing without them).
    pub tracked: Option<&'a lines::Tracked>,
}

/// Languages whose parsers exist; any other language (or none) tries them all, each
/// recognising its own output.
pub const LANGUAGES: [&str; 5] = ["rust", "python", "go", "typescript", "javascript"];

/// Runs the parsers for `input` and the generic fallback.
pub fn parse(input: &Input<'_>) -> Parsed {
    // For the text formats, a last line without its newline was cut (a capped log,
    // a killed tool) and is not trusted. JSON formats need no such rule: a cut
    // document does not parse.
    let text_log = match input.log.rfind('\n') {
        Some(i) => &input.log[..=i],
        None => "",
    };
    let mut out = Parsed::default();
    let lang = input.language.map(str::to_ascii_lowercase);
    let lang = lang.as_deref().filter(|l| LANGUAGES.contains(l));
    let all = lang.is_none();
    let rust = all || lang == Some("rust");
    let python = all || lang == Some("python");
    let go = all || lang == Some("go");
    let ts = all || matches!(lang, Some("typescript" | "javascript"));

    // ruff's report (often the bulk of a Python lint log) is read by a scan of its
    // own that builds no JSON tree; the general scan below skips it.
    let ruff_reports = if python {
        ruff::scan(input.log)
    } else {
        ruff::Scanned::default()
    };
    let (values, _) = json_scan::values_where(input.log, &ruff_reports.spans, |first| {
        // The first line of a JSON value some parser reads; clippy's lines are
        // read by the clippy parser itself.
        !first.contains("\"reason\":\"compiler-message\"")
    });
    let mut govuln: Vec<&serde_json::Value> = Vec::new();
    let mut found = Parsed::default();
    let known = |v: &serde_json::Value| {
        sarif::is_log(v)
            || (rust && cargo_audit::is_report(v))
            || (python && (pip_audit::is_report(v) || mypy::is_record(v) || ruff::is_report(v)))
            || (ts && eslint::is_report(v))
            || (go && (govulncheck::is_message(v) || go_vet::is_report(v)))
            || toolchains::is_shellcheck(v)
            || toolchains::is_rubocop(v)
            || (rust && toolchains::is_cargo_deny(v))
            || toolchains::is_phpstan(v)
            || toolchains::is_bundler_audit(v)
            || (go && toolchains::is_staticcheck(v))
    };
    let mut claimed = !ruff_reports.spans.is_empty() || values.iter().any(known);
    found.merge(ruff_reports.parsed);
    for v in &values {
        if sarif::is_log(v) {
            sarif::from_log(v, &mut found);
        } else if rust && cargo_audit::is_report(v) {
            cargo_audit::from_report(v, &mut found);
        } else if python && pip_audit::is_report(v) {
            pip_audit::from_report(v, &mut found);
        } else if python && mypy::is_record(v) {
            mypy::from_record(v, &mut found);
        } else if ts && eslint::is_report(v) {
            eslint::from_report(v, &mut found);
        } else if python && ruff::is_report(v) {
            ruff::from_report(v, &mut found);
        } else if go && govulncheck::is_message(v) {
            govuln.push(v);
        } else if go && go_vet::is_report(v) {
            go_vet::from_report(v, &mut found);
        } else if toolchains::is_shellcheck(v) {
            toolchains::from_shellcheck(v, &mut found);
        } else if toolchains::is_rubocop(v) {
            toolchains::from_rubocop(v, &mut found);
        } else if rust && toolchains::is_cargo_deny(v) {
            toolchains::from_cargo_deny(v, &mut found);
        } else if toolchains::is_phpstan(v) {
            toolchains::from_phpstan(v, &mut found);
        } else if toolchains::is_bundler_audit(v) {
            toolchains::from_bundler_audit(v, &mut found);
        } else if go && toolchains::is_staticcheck(v) {
            toolchains::from_staticcheck(v, &mut found);
        }
    }
    if !govuln.is_empty() {
        govulncheck::from_messages(&govuln, &mut found);
    }
    out.merge(found);
    if rust {
        out.merge(clippy::parse(input.log));
        out.merge(cargo_test::parse(text_log, &values));
    }
    if python {
        out.merge(pytest::parse(text_log));
    }
    if ts {
        out.merge(tsc::parse(text_log));
    }
    claimed |= !out.findings.is_empty() || text_claims(text_log, rust, python, ts);
    if !claimed && let Some(tracked) = input.tracked {
        out.merge(lines::parse(text_log, tracked));
    }
    out.claimed = claimed;
    if out.findings.is_empty() {
        out.findings.extend(generic::parse(input));
    }
    out
}

/// Whether a text format's own summary is in the log (a clean run of its tool).
fn text_claims(log: &str, rust: bool, python: bool, ts: bool) -> bool {
    log.lines().any(|raw| {
        let l = clean_line(raw);
        let l = l.trim();
        (rust
            && (l.starts_with("test result: ")
                || l.contains("\"reason\":\"compiler-message\"")
                || l.contains("\"reason\":\"build-finished\"")))
            || (python
                && l.starts_with('=')
                && l.ends_with('=')
                && (l.contains(" passed") || l.contains(" failed") || l.contains("no tests ran"))
                && l.contains(" in "))
            || (ts && l.starts_with("Found ") && (l.contains(" error") || l.contains(" errors")))
    })
}

impl Parsed {
    fn merge(&mut self, other: Parsed) {
        self.skipped += other.skipped;
        if self.findings.is_empty() {
            self.findings = other.findings;
            return;
        }
        let hash = |f: &RawFinding| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            f.hash(&mut h);
            h.finish()
        };
        let mut seen: std::collections::HashSet<u64> = self.findings.iter().map(hash).collect();
        for f in other.findings {
            if seen.insert(hash(&f)) {
                self.findings.push(f);
            }
        }
    }
}

/// Removes ANSI colour sequences and a trailing `\r` from a log line.
pub fn clean_line(line: &str) -> std::borrow::Cow<'_, str> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if !line.contains('\u{1b}') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}
