//! The prompt the model sees: the finding, the source lines around it, the project's
//! language and the command that found it, and the answer format. Pure.
//!
//! It never holds a token, a bearer, a remote URL, or any file but the finding's own
//! (for a `cve`, the lockfile or manifest that pins the package).

use std::fmt::Write as _;

/// What the prompt is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptInput<'a> {
    /// Tool that reported the finding.
    pub tool: &'a str,
    /// `lint`, `cve`, `test_fail`, …
    pub kind: &'a str,
    /// Rule or advisory id.
    pub code: Option<&'a str>,
    /// What the tool said.
    pub message: &'a str,
    /// File relative to the repository root.
    pub file: &'a str,
    /// 1-based line.
    pub line: Option<i64>,
    /// 1-based column.
    pub col: Option<i64>,
    /// The tool's own fix, if it has one.
    pub suggested_fix: Option<&'a str>,
    /// The project's language.
    pub language: Option<&'a str>,
    /// Subproject directory.
    pub subproject: &'a str,
    /// The exact command that produced the finding.
    pub command: &'a str,
    /// `(first line number, lines)` of the source window.
    pub window: (usize, Vec<String>),
}

/// The lines of `text` within `context` lines of `line` (1-based; the whole file's
/// head when the line is unknown), with the number of the first.
pub fn source_window(text: &str, line: Option<i64>, context: usize) -> (usize, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let center = line
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| *l >= 1)
        .unwrap_or(1);
    let first = center.saturating_sub(context).max(1);
    let last = (center + context).min(lines.len());
    let window = if first <= last {
        lines[first - 1..last]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    } else {
        Vec::new()
    };
    (first, window)
}

/// The system message: the rules of the answer.
pub const SYSTEM: &str = "You fix one finding of a code analysis tool in a git repository. Answer with one JSON object and nothing else: {\"diff\": \"<a unified diff against the repository root, paths a/<file> and b/<file>>\", \"explanation\": \"<one paragraph>\", \"confidence\": <a number from 0 to 1>}. Change as little as possible: only what removes this finding, without new warnings. Never touch files under .git/, never use absolute paths or ../.";

/// The user message.
pub fn build(p: &PromptInput<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Fix this finding.");
    let _ = writeln!(s);
    let _ = writeln!(s, "tool: {}", p.tool);
    let _ = writeln!(s, "kind: {}", p.kind);
    if let Some(c) = p.code {
        let _ = writeln!(s, "code: {c}");
    }
    let _ = writeln!(s, "message: {}", p.message);
    let _ = write!(s, "location: {}", p.file);
    if let Some(l) = p.line {
        let _ = write!(s, ":{l}");
        if let Some(c) = p.col {
            let _ = write!(s, ":{c}");
        }
    }
    let _ = writeln!(s);
    if let Some(f) = p.suggested_fix {
        let _ = writeln!(s, "the tool suggests: {f}");
    }
    let _ = writeln!(s, "language: {}", p.language.unwrap_or("unknown"));
    let _ = writeln!(
        s,
        "found by running, in the repository's `{}` directory: {}",
        p.subproject, p.command
    );
    let _ = writeln!(s);
    let (first, lines) = &p.window;
    let _ = writeln!(
        s,
        "{} lines {}-{} (numbered):",
        p.file,
        first,
        first + lines.len().saturating_sub(1)
    );
    let width = (first + lines.len()).to_string().len();
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(s, "{:>width$} | {l}", first + i);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Answer with the JSON object only; the diff must apply with `git apply` at the repository root."
    );
    s
}
