//! `eslint -f json`: a JSON array of files, each with its messages.
//!
//! Reads `[{"filePath":"/w/src/a.js","messages":[{"ruleId":"no-unused-vars","severity":2,"message":"…","line":1,"column":7,"fix":{…}}],"errorCount":1,…}]`
//! and emits one `lint` per message; severity 2 is `error`, 1 `warn`. A parse error
//! (`ruleId: null`, `fatal: true`) has code `parse-error`.

use serde_json::Value;

use super::{Parsed, RawFinding};

/// Whether `v` is an eslint report.
pub fn is_report(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        !a.is_empty()
            && a.iter()
                .all(|f| f.get("filePath").is_some() && f.get("messages").is_some())
    })
}

/// Findings of one report.
pub fn from_report(v: &Value, out: &mut Parsed) {
    for file in v.as_array().into_iter().flatten() {
        let path = file["filePath"].as_str().unwrap_or("");
        for m in file["messages"].as_array().into_iter().flatten() {
            let Some(message) = m["message"].as_str() else {
                out.skipped += 1;
                continue;
            };
            let code = match m["ruleId"].as_str() {
                Some(r) => r.to_owned(),
                None if m["fatal"] == true => "parse-error".to_owned(),
                None => "eslint".to_owned(),
            };
            out.findings.push(RawFinding {
                tool: "eslint".into(),
                kind: "lint".into(),
                severity: if m["severity"].as_i64() == Some(2) {
                    "error"
                } else {
                    "warn"
                }
                .into(),
                file: Some(path.to_owned()),
                line: m["line"].as_i64(),
                col: m["column"].as_i64(),
                code: Some(code),
                message: message.to_owned(),
                suggested_fix: m["suggestions"]
                    .as_array()
                    .and_then(|s| s.first())
                    .and_then(|s| s["desc"].as_str())
                    .map(str::to_owned)
                    .or_else(|| m.get("fix").map(|_| "eslint --fix can fix this".to_owned())),
                raw_json: Some(m.to_string()),
            });
        }
    }
}
