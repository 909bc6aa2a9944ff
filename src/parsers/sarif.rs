//! SARIF 2.1.0 logs printed by any tool (semgrep `--sarif`, CodeQL, …).
//!
//! Reads `{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"semgrep"}},"results":[{"ruleId":"…","level":"error","message":{"text":"…"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"src/a.py"},"region":{"startLine":3,"startColumn":5}}}]}]}]}`
//! and emits one `lint` per result (kind `cve` when the rule is tagged `security`
//! and names a CVE).

use serde_json::Value;

use super::{Parsed, RawFinding};

/// Whether `v` is a SARIF log.
pub fn is_log(v: &Value) -> bool {
    v["version"].as_str().is_some_and(|s| s.starts_with("2.1")) && v["runs"].is_array()
}

/// Findings of one log.
pub fn from_log(v: &Value, out: &mut Parsed) {
    for run in v["runs"].as_array().into_iter().flatten() {
        let tool = run["tool"]["driver"]["name"]
            .as_str()
            .unwrap_or("sarif")
            .to_owned();
        for r in run["results"].as_array().into_iter().flatten() {
            let message = r["message"]["text"]
                .as_str()
                .or_else(|| r["message"]["markdown"].as_str());
            let Some(message) = message else {
                out.skipped += 1;
                continue;
            };
            let rule = r["ruleId"]
                .as_str()
                .or_else(|| r["rule"]["id"].as_str())
                .map(str::to_owned);
            let loc = &r["locations"][0]["physicalLocation"];
            let file = loc["artifactLocation"]["uri"]
                .as_str()
                .map(|u| u.trim_start_matches("file://").to_owned());
            let cve = rule
                .as_deref()
                .is_some_and(|id| id.starts_with("CVE-") || id.starts_with("GHSA-"));
            out.findings.push(RawFinding {
                tool: tool.clone(),
                kind: if cve { "cve" } else { "lint" }.into(),
                severity: match r["level"].as_str().unwrap_or("warning") {
                    "error" => "error",
                    "warning" => "warn",
                    _ => "info",
                }
                .into(),
                file,
                line: loc["region"]["startLine"].as_i64(),
                col: loc["region"]["startColumn"].as_i64(),
                code: rule,
                message: message.to_owned(),
                suggested_fix: r["fixes"][0]["description"]["text"]
                    .as_str()
                    .map(str::to_owned),
                raw_json: Some(r.to_string()),
            });
        }
    }
}
