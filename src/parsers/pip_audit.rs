//! `pip-audit -f json`: one JSON report.
//!
//! Reads `{"dependencies":[{"name":"jinja2","version":"2.10","vulns":[{"id":"PYSEC-2019-217","fix_versions":["2.10.1"],"aliases":["CVE-2019-10906"],"description":"…"}]}],"fixes":[]}`
//! and emits one `cve` per (package, vulnerability), with `suggested_fix` "bump to
//! <first fix version>".

use serde_json::Value;

use super::{Parsed, RawFinding};

/// Whether `v` is a pip-audit report.
pub fn is_report(v: &Value) -> bool {
    v.get("dependencies").and_then(Value::as_array).is_some()
        && v["dependencies"]
            .as_array()
            .is_some_and(|d| d.iter().all(|x| x.get("name").is_some()))
}

/// Findings of one report.
pub fn from_report(v: &Value, out: &mut Parsed) {
    for dep in v["dependencies"].as_array().into_iter().flatten() {
        let name = dep["name"].as_str().unwrap_or("?");
        let version = dep["version"].as_str().unwrap_or("?");
        for vuln in dep["vulns"].as_array().into_iter().flatten() {
            let Some(id) = vuln["id"].as_str() else {
                out.skipped += 1;
                continue;
            };
            let desc = vuln["description"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let aliases: Vec<&str> = vuln["aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut message = format!("{name} {version}: {id}");
            if !aliases.is_empty() {
                message += &format!(" ({})", aliases.join(", "));
            }
            if !desc.is_empty() {
                message += &format!(": {desc}");
            }
            let fix = vuln["fix_versions"]
                .as_array()
                .and_then(|f| f.first())
                .and_then(Value::as_str);
            out.findings.push(RawFinding {
                tool: "pip-audit".into(),
                kind: "cve".into(),
                severity: "error".into(),
                file: None,
                line: None,
                col: None,
                code: Some(id.to_owned()),
                message,
                suggested_fix: Some(match fix {
                    Some(f) => format!("bump to {f}"),
                    None => "no fixed version published".to_owned(),
                }),
                raw_json: Some(
                    serde_json::json!({"name": name, "version": version, "vuln": vuln}).to_string(),
                ),
            });
        }
    }
}
