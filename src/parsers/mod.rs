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

pub mod clippy;
pub mod generic;

/// A finding as a parser sees it, before paths are normalised and fingerprints are
/// computed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
}

/// Runs the parsers for `input` and the generic fallback.
pub fn parse(input: &Input<'_>) -> Parsed {
    let mut out = Parsed::default();
    let lang = input.language.map(str::to_ascii_lowercase);
    if let Some("rust") = lang.as_deref() {
        out.merge(clippy::parse(input.log));
    }
    if out.findings.is_empty() {
        out.findings.extend(generic::parse(input));
    }
    out
}

impl Parsed {
    fn merge(&mut self, other: Parsed) {
        for f in other.findings {
            if !self.findings.contains(&f) {
                self.findings.push(f);
            }
        }
        self.skipped += other.skipped;
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
