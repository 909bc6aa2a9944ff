//! `ruff check --output-format=json`: a JSON array (pretty-printed) of diagnostics.
//!
//! Reads `[{"code":"F401","filename":"/w/app.py","location":{"row":1,"column":8},"message":"`os` imported but unused","fix":{"message":"Remove unused import: `os`"},"url":…}]`
//! and emits one `lint` per element; syntax errors (code `null`) are `error`s with
//! code `syntax-error`.

use serde_json::Value;

use super::{Parsed, RawFinding};

/// Whether `v` is a ruff report (an array of ruff diagnostics; `[]` counts).
pub fn is_report(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(|d| {
            d.get("filename").is_some() && d.get("location").is_some() && d.get("code").is_some()
        })
    })
}

/// Findings of one report.
pub fn from_report(v: &Value, out: &mut Parsed) {
    for d in v.as_array().into_iter().flatten() {
        let (Some(file), Some(message)) = (d["filename"].as_str(), d["message"].as_str()) else {
            out.skipped += 1;
            continue;
        };
        let code = d["code"].as_str().map(str::to_owned);
        let severity = if code.is_none() { "error" } else { "warn" };
        out.findings.push(RawFinding {
            tool: "ruff".into(),
            kind: "lint".into(),
            severity: severity.into(),
            file: Some(file.to_owned()),
            line: d["location"]["row"].as_i64(),
            col: d["location"]["column"].as_i64(),
            code: Some(code.unwrap_or_else(|| "syntax-error".to_owned())),
            message: message.to_owned(),
            suggested_fix: d["fix"]["message"].as_str().map(str::to_owned),
            raw_json: Some(d.to_string()),
        });
    }
}
