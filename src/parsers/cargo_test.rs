//! `cargo test`: libtest's human output and its JSON format.
//!
//! Human: each `test path::name ... FAILED` line is one `test_fail` (code = the test
//! name); when the failure's `---- path::name stdout ----` section says
//! `panicked at src/x.rs:12:5:`, that is its location and the next line its message.
//! JSON (`--format json`): each `{"type":"test","event":"failed","name":…}` record.

use std::collections::HashMap;

use serde_json::Value;

use super::{Parsed, RawFinding, clean_line};

fn finding(
    name: &str,
    message: String,
    loc: Option<(String, i64, i64)>,
    raw: Option<String>,
) -> RawFinding {
    RawFinding {
        tool: "cargo-test".into(),
        kind: "test_fail".into(),
        severity: "error".into(),
        file: loc.as_ref().map(|l| l.0.clone()),
        line: loc.as_ref().map(|l| l.1),
        col: loc.as_ref().map(|l| l.2),
        code: Some(name.to_owned()),
        message,
        suggested_fix: None,
        raw_json: raw,
    }
}

fn panic_location(text: &str) -> Option<((String, i64, i64), String)> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let Some(rest) = l.split("panicked at ").nth(1) else {
            continue;
        };
        let rest = rest.trim_end_matches(':');
        // Old format: `panicked at 'msg', src/x.rs:1:2`; new: `panicked at src/x.rs:1:2:`.
        let (loc, msg) = match rest.rsplit_once("', ") {
            Some((m, loc)) => (loc, Some(m.trim_start_matches('\'').to_owned())),
            None => (rest, None),
        };
        let mut parts = loc.rsplitn(3, ':');
        let col = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?.to_owned();
        let msg = msg
            .or_else(|| lines.next().map(str::to_owned))
            .unwrap_or_default();
        return Some(((file, line, col), msg));
    }
    None
}

/// Parses failed tests from `log`.
pub fn parse(log: &str, json: &[Value]) -> Parsed {
    let mut out = Parsed::default();
    // JSON format.
    for v in json {
        if v["type"] == "test" && v["event"] == "failed" {
            let Some(name) = v["name"].as_str() else {
                continue;
            };
            let stdout = v["stdout"].as_str().unwrap_or("");
            let (loc, msg) = match panic_location(stdout) {
                Some((l, m)) => (Some(l), m),
                None => (None, format!("test `{name}` failed")),
            };
            out.findings
                .push(finding(name, msg, loc, Some(v.to_string())));
        }
    }
    // Human format: the stdout sections first, then the result lines.
    let mut sections: HashMap<String, String> = HashMap::new();
    let mut current: Option<(String, String)> = None;
    let mut failed: Vec<String> = Vec::new();
    for raw in log.lines() {
        let line = clean_line(raw);
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            if let Some((n, t)) = current.take() {
                sections.insert(n, t);
            }
            current = Some((name.to_owned(), String::new()));
            continue;
        }
        if (line.starts_with("failures:") || line.starts_with("test result:"))
            && let Some((n, t)) = current.take()
        {
            sections.insert(n, t);
        }
        if let Some((_, text)) = current.as_mut() {
            text.push_str(&line);
            text.push('\n');
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
            && !failed.iter().any(|f| f == name)
        {
            failed.push(name.to_owned());
        }
    }
    if let Some((n, t)) = current.take() {
        sections.insert(n, t);
    }
    for name in failed {
        if out
            .findings
            .iter()
            .any(|f| f.code.as_deref() == Some(name.as_str()))
        {
            continue;
        }
        let (loc, msg) = match sections.get(&name).and_then(|s| panic_location(s)) {
            Some((l, m)) => (Some(l), m),
            None => (None, format!("test `{name}` failed")),
        };
        out.findings.push(finding(&name, msg, loc, None));
    }
    out
}
