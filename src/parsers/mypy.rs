//! `mypy --output json`: one JSON object per line.
//!
//! Reads `{"file": "app.py", "line": 3, "column": 4, "message": "…", "hint": null, "code": "arg-type", "severity": "error"}`
//! and emits one `lint` per error. Notes (`severity: note`) that follow an error are
//! explanations of it, not diagnostics of their own: they are appended to its
//! message. mypy's JSON column is 0-based; findings use 1-based columns.

use serde_json::Value;

use super::{Parsed, RawFinding};

/// Whether `v` is a mypy JSON record.
pub fn is_record(v: &Value) -> bool {
    v.get("file").is_some()
        && v.get("severity").is_some()
        && v.get("message").is_some()
        && v.get("line").is_some()
}

/// Adds one record.
pub fn from_record(v: &Value, out: &mut Parsed) {
    let (Some(file), Some(message), Some(sev)) = (
        v["file"].as_str(),
        v["message"].as_str(),
        v["severity"].as_str(),
    ) else {
        out.skipped += 1;
        return;
    };
    let line = v["line"].as_i64();
    if sev == "note"
        && let Some(prev) = out.findings.last_mut()
        && prev.tool == "mypy"
        && prev.file.as_deref() == Some(file)
    {
        prev.message.push_str("\nnote: ");
        prev.message.push_str(message);
        return;
    }
    let col = v["column"].as_i64().map(|c| if c >= 0 { c + 1 } else { 1 });
    out.findings.push(RawFinding {
        tool: "mypy".into(),
        kind: "lint".into(),
        severity: match sev {
            "error" => "error",
            "warning" => "warn",
            _ => "info",
        }
        .into(),
        file: Some(file.to_owned()),
        line: line.filter(|l| *l >= 1),
        col,
        code: v["code"].as_str().map(str::to_owned),
        message: match v["hint"].as_str() {
            Some(h) if !h.is_empty() => format!("{message}\nhint: {h}"),
            _ => message.to_owned(),
        },
        suggested_fix: None,
        raw_json: Some(v.to_string()),
    });
}
