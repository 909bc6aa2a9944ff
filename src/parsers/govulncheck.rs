//! `govulncheck -json`: a stream of pretty-printed JSON messages — `config`,
//! `progress`, `osv` (the advisory) and `finding`.
//!
//! A `finding` whose first trace frame names a `function` means the vulnerable
//! symbol is actually called; one at module or package level only means it is
//! imported. Emits one `cve` per OSV id that is reached (code = the OSV id, e.g.
//! `GO-2023-1571`), located at the call site in the module's own code (the last
//! trace frame with a position), `suggested_fix` "bump <module> to <fixed_version>".

use std::collections::HashMap;

use serde_json::Value;

use super::{Parsed, RawFinding};

/// Whether `v` is a govulncheck message.
pub fn is_message(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 1
            && ["config", "progress", "osv", "finding", "SBOM"]
                .iter()
                .any(|k| o.contains_key(*k))
    })
}

/// Findings of one stream of messages.
pub fn from_messages(msgs: &[&Value], out: &mut Parsed) {
    let mut osv: HashMap<&str, &Value> = HashMap::new();
    for m in msgs {
        if let Some(id) = m["osv"]["id"].as_str() {
            osv.insert(id, &m["osv"]);
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for m in msgs {
        let f = &m["finding"];
        let Some(id) = f["osv"].as_str() else {
            continue;
        };
        let Some(trace) = f["trace"].as_array() else {
            out.skipped += 1;
            continue;
        };
        let reached = trace
            .first()
            .is_some_and(|t| t.get("function").and_then(Value::as_str).is_some());
        if !reached || seen.iter().any(|s| s == id) {
            continue;
        }
        seen.push(id.to_owned());
        let module = trace
            .first()
            .and_then(|t| t["module"].as_str())
            .unwrap_or("?");
        let version = trace
            .first()
            .and_then(|t| t["version"].as_str())
            .unwrap_or("");
        let call = trace
            .iter()
            .rev()
            .find(|t| t["position"]["filename"].is_string());
        let summary = osv
            .get(id)
            .and_then(|o| o["summary"].as_str())
            .unwrap_or("");
        let symbol = trace
            .first()
            .map(|t| {
                let r = t["receiver"]
                    .as_str()
                    .map(|r| format!("{r}."))
                    .unwrap_or_default();
                format!(
                    "{}.{r}{}",
                    t["package"].as_str().unwrap_or(module),
                    t["function"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        out.findings.push(RawFinding {
            tool: "govulncheck".into(),
            kind: "cve".into(),
            severity: "error".into(),
            file: call
                .and_then(|c| c["position"]["filename"].as_str())
                .map(str::to_owned),
            line: call.and_then(|c| c["position"]["line"].as_i64()),
            col: call.and_then(|c| c["position"]["column"].as_i64()),
            code: Some(id.to_owned()),
            message: format!("{module}@{version}: {summary} (calls {symbol})"),
            suggested_fix: f["fixed_version"]
                .as_str()
                .map(|v| format!("bump {module} to {v}")),
            raw_json: Some(f.to_string()),
        });
    }
}
