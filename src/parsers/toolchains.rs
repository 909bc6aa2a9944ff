//! JSON reports of the image's other toolchains:
//!
//! - ShellCheck `-f json1`: `{"comments": [{"file", "line", "column", "level",
//!   "code": 2086, "message", "fix"}]}` → `lint`, code `SC2086`; `error` → error,
//!   `warning` → warn, `info`/`style` → info; a `fix` becomes the suggested fix.
//! - RuboCop `-f json`: `{"metadata": {"rubocop_version"}, "files": [{"path",
//!   "offenses": [{"severity", "message", "cop_name", "correctable", "location":
//!   {"line", "column"}}]}]}` → `lint`, code = the cop; `fatal`/`error` → error,
//!   `warning` → warn, `convention`/`refactor`/`info` → info.
//! - staticcheck `-f json`: one object per line, `{"code", "severity", "location":
//!   {"file", "line", "column"}, "message"}` → `lint`, code = the check; checks
//!   `SA*` (bugs) and `U1000` (unused) are warnings, the style and simplification
//!   families (`S*`, `ST*`, `QF*`) info; `ignored` records are left out.

use serde_json::Value;

use super::{Parsed, RawFinding};

fn raw(v: &Value) -> Option<String> {
    Some(v.to_string())
}

/// Whether `v` is a ShellCheck json1 report.
pub fn is_shellcheck(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.len() == 1)
        && v["comments"].as_array().is_some_and(|c| {
            c.iter().all(|x| {
                x["file"].is_string()
                    && x["line"].is_i64()
                    && x["code"].is_i64()
                    && x["level"].is_string()
            })
        })
}

/// Findings of a ShellCheck json1 report.
pub fn from_shellcheck(v: &Value, out: &mut Parsed) {
    for c in v["comments"].as_array().into_iter().flatten() {
        let severity = match c["level"].as_str().unwrap_or("") {
            "error" => "error",
            "warning" => "warn",
            _ => "info",
        };
        let fix = c["fix"]["replacements"].as_array().map(|r| {
            r.iter()
                .map(|x| {
                    format!(
                        "replace line {} columns {}-{} with `{}`",
                        x["line"].as_i64().unwrap_or(0),
                        x["column"].as_i64().unwrap_or(0),
                        x["endColumn"].as_i64().unwrap_or(0),
                        x["replacement"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        out.findings.push(RawFinding {
            tool: "shellcheck".into(),
            kind: "lint".into(),
            severity: severity.into(),
            file: c["file"].as_str().map(str::to_owned),
            line: c["line"].as_i64(),
            col: c["column"].as_i64(),
            code: c["code"].as_i64().map(|n| format!("SC{n}")),
            message: c["message"].as_str().unwrap_or("").to_owned(),
            suggested_fix: fix.filter(|f| !f.is_empty()),
            raw_json: raw(c),
        });
    }
}

/// Whether `v` is a RuboCop JSON report.
pub fn is_rubocop(v: &Value) -> bool {
    v["metadata"]["rubocop_version"].is_string() && v["files"].is_array()
}

/// Findings of a RuboCop report.
pub fn from_rubocop(v: &Value, out: &mut Parsed) {
    for f in v["files"].as_array().into_iter().flatten() {
        let path = f["path"].as_str().map(str::to_owned);
        for o in f["offenses"].as_array().into_iter().flatten() {
            let severity = match o["severity"].as_str().unwrap_or("") {
                "fatal" | "error" => "error",
                "warning" => "warn",
                _ => "info",
            };
            let loc = &o["location"];
            out.findings.push(RawFinding {
                tool: "rubocop".into(),
                kind: "lint".into(),
                severity: severity.into(),
                file: path.clone(),
                line: loc["start_line"].as_i64().or_else(|| loc["line"].as_i64()),
                col: loc["start_column"]
                    .as_i64()
                    .or_else(|| loc["column"].as_i64()),
                code: o["cop_name"].as_str().map(str::to_owned),
                message: o["message"].as_str().unwrap_or("").to_owned(),
                suggested_fix: (o["correctable"].as_bool() == Some(true))
                    .then(|| "autocorrectable: rubocop -a".to_owned()),
                raw_json: raw(o),
            });
        }
    }
}

/// Whether `v` is one staticcheck record.
pub fn is_staticcheck(v: &Value) -> bool {
    v["code"].is_string()
        && v["severity"].is_string()
        && v["location"]["file"].is_string()
        && v["location"]["line"].is_i64()
        && v["message"].is_string()
}

/// The finding of one staticcheck record.
pub fn from_staticcheck(v: &Value, out: &mut Parsed) {
    if v["severity"] == "ignored" {
        return;
    }
    let code = v["code"].as_str().unwrap_or("");
    let severity = if code.starts_with("SA") || code == "U1000" || code == "compile" {
        "warn"
    } else {
        "info"
    };
    out.findings.push(RawFinding {
        tool: "staticcheck".into(),
        kind: "lint".into(),
        severity: severity.into(),
        file: v["location"]["file"].as_str().map(str::to_owned),
        line: v["location"]["line"].as_i64(),
        col: v["location"]["column"].as_i64(),
        code: Some(code.to_owned()),
        message: v["message"].as_str().unwrap_or("").trim_end().to_owned(),
        suggested_fix: None,
        raw_json: raw(v),
    });
}
