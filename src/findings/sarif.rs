//! Findings as SARIF 2.1.0: one run per tool, with rules, results, locations,
//! partial fingerprints and baseline states, so code-scanning tools and editors can
//! read a job's findings.

use std::collections::BTreeMap;

use crate::ledger::{Finding, Job};

fn level(severity: &str) -> &'static str {
    match severity {
        "error" | "high" | "critical" => "error",
        "warn" | "warning" | "medium" => "warning",
        _ => "note",
    }
}

/// The SARIF log of one job's findings.
pub fn render(job: &Job, findings: &[Finding]) -> serde_json::Value {
    let mut by_tool: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        let tool = if f.f.tool.is_empty() {
            "crafting-table"
        } else {
            f.f.tool.as_str()
        };
        by_tool.entry(tool).or_default().push(f);
    }
    let runs: Vec<serde_json::Value> = by_tool
        .into_iter()
        .map(|(tool, list)| {
            let mut rules: BTreeMap<String, &Finding> = BTreeMap::new();
            for f in &list {
                let id = rule_id(f);
                rules.entry(id).or_insert(f);
            }
            let rule_index: BTreeMap<&str, usize> =
                rules.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
            let results: Vec<serde_json::Value> = list
                .iter()
                .map(|f| {
                    let id = rule_id(f);
                    let mut r = serde_json::json!({
                        "ruleId": id,
                        "ruleIndex": rule_index.get(id.as_str()).copied().unwrap_or(0),
                        "level": level(&f.f.severity),
                        "message": {"text": if f.f.message.is_empty() { id.clone() } else { f.f.message.clone() }},
                        "partialFingerprints": {"craftingTable/v1": f.f.fingerprint},
                        "properties": {"kind": f.f.kind},
                    });
                    if let Some(h) = &f.f.location_hash {
                        r["partialFingerprints"]["primaryLocationLineHash"] = h.clone().into();
                    }
                    if let Some(b) = &f.f.baseline_state {
                        r["baselineState"] = b.clone().into();
                    }
                    if let Some(fix) = &f.f.suggested_fix {
                        r["properties"]["suggestedFix"] = fix.clone().into();
                    }
                    if let Some(file) = &f.f.file {
                        let mut region = serde_json::Map::new();
                        if let Some(l) = f.f.line.filter(|l| *l >= 1) {
                            region.insert("startLine".into(), l.into());
                            if let Some(c) = f.f.col.filter(|c| *c >= 1) {
                                region.insert("startColumn".into(), c.into());
                            }
                        }
                        let mut loc = serde_json::json!({
                            "physicalLocation": {
                                "artifactLocation": {"uri": file, "uriBaseId": "SRCROOT"},
                            }
                        });
                        if !region.is_empty() {
                            loc["physicalLocation"]["region"] = serde_json::Value::Object(region);
                        }
                        r["locations"] = serde_json::json!([loc]);
                    }
                    r
                })
                .collect();
            let rules: Vec<serde_json::Value> = rules
                .iter()
                .map(|(id, f)| {
                    serde_json::json!({
                        "id": id,
                        "shortDescription": {"text": format!("{} {}", f.f.kind, id)},
                        "properties": {"kind": f.f.kind},
                    })
                })
                .collect();
            serde_json::json!({
                "tool": {"driver": {"name": tool, "rules": rules}},
                "automationDetails": {"id": format!("{}/{}/{}/{}", job.project, job.subproject, job.recipe, job.id)},
                "versionControlProvenance": job.sha.as_ref().map(|sha| vec![serde_json::json!({
                    "repositoryUri": format!("crafting-table:{}", job.project),
                    "revisionId": sha,
                })]).unwrap_or_default(),
                "results": results,
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": runs,
    })
}

fn rule_id(f: &Finding) -> String {
    f.f.code
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| f.f.kind.clone())
}
