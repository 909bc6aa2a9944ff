//! `cargo clippy --message-format=json` (and `cargo build`/`check` with the same
//! flag): rustc and clippy diagnostics as cargo JSON messages.
//!
//! Reads lines like
//! `{"reason":"compiler-message","message":{"level":"warning","code":{"code":"clippy::needless_return"},"message":"unneeded `return` statement","spans":[{"file_name":"src/main.rs","line_start":3,"column_start":5,"is_primary":true}],"children":[…]}}`
//! and emits one `lint` finding per diagnostic: the primary span's file, line and
//! column; code `clippy::…` or `E0…`; severity from the level. Summary messages
//! ("N warnings emitted", "aborting due to…") have no span and are not findings.
//! The same diagnostic reported for several targets (lib and lib test) is one
//! finding.

use serde::Deserialize;

use super::{Parsed, RawFinding, clean_line};

#[derive(Deserialize)]
struct CargoMessage<'a> {
    reason: &'a str,
    #[serde(default)]
    message: Option<Diagnostic>,
}

#[derive(Deserialize)]
struct Diagnostic {
    message: String,
    #[serde(default)]
    code: Option<Code>,
    level: String,
    #[serde(default)]
    spans: Vec<Span>,
    #[serde(default)]
    children: Vec<Diagnostic>,
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

#[derive(Deserialize)]
struct Span {
    file_name: String,
    line_start: i64,
    column_start: i64,
    is_primary: bool,
    #[serde(default)]
    suggested_replacement: Option<String>,
}

fn severity(level: &str) -> Option<&'static str> {
    match level {
        "error" | "error: internal compiler error" => Some("error"),
        "warning" => Some("warn"),
        "note" | "help" => Some("info"),
        _ => None,
    }
}

/// Parses every cargo JSON message in `log`.
pub fn parse(log: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut seen = std::collections::HashSet::new();
    for raw in log.lines() {
        let line = clean_line(raw);
        let line = line.trim();
        if !line.starts_with('{') || !line.contains("\"reason\"") {
            continue;
        }
        let msg: CargoMessage<'_> = match serde_json::from_str(line) {
            Ok(m) => m,
            Err(_) => {
                out.skipped += 1;
                continue;
            }
        };
        if msg.reason != "compiler-message" {
            continue;
        }
        let Some(d) = msg.message else {
            out.skipped += 1;
            continue;
        };
        let Some(sev) = severity(&d.level) else {
            continue;
        };
        let Some(span) = d
            .spans
            .iter()
            .find(|s| s.is_primary)
            .or_else(|| d.spans.first())
        else {
            continue;
        };
        let fix = d.children.iter().find_map(|c| {
            let rep = c
                .spans
                .iter()
                .find_map(|s| s.suggested_replacement.as_deref())?;
            Some(if rep.is_empty() {
                c.message.clone()
            } else {
                format!("{}: `{rep}`", c.message)
            })
        });
        let finding = RawFinding {
            tool: if d
                .code
                .as_ref()
                .is_some_and(|c| c.code.starts_with("clippy::"))
            {
                "clippy".into()
            } else {
                "rustc".into()
            },
            kind: "lint".into(),
            severity: sev.into(),
            file: Some(span.file_name.clone()),
            line: Some(span.line_start),
            col: Some(span.column_start),
            code: d.code.as_ref().map(|c| c.code.clone()),
            message: d.message.clone(),
            suggested_fix: fix,
            raw_json: Some(line.to_owned()),
        };
        let key = (
            span.file_name.clone(),
            span.line_start,
            span.column_start,
            finding.code.clone(),
            d.message.clone(),
        );
        if seen.insert(key) {
            out.findings.push(finding);
        }
    }
    out
}
