//! `cargo audit --json`: one JSON report.
//!
//! Reads `{"database":…,"vulnerabilities":{"found":true,"list":[{"advisory":{"id":"RUSTSEC-2020-0071","title":…},"versions":{"patched":[">=0.2.23"]},"package":{"name":"time","version":"0.1.45"}}]},"warnings":{"unmaintained":[…],"yanked":[…]}}`
//! and emits one `cve` per vulnerability (code = advisory id, `suggested_fix`
//! "bump to <first patched version>") and one `advisory` per warning (unmaintained,
//! unsound, yanked, notice), all on `Cargo.lock`.

use serde_json::Value;

use super::{Parsed, RawFinding};

fn first_patched(v: &Value) -> Option<String> {
    let p = v["versions"]["patched"].as_array()?.first()?.as_str()?;
    let version = p.trim_start_matches(['>', '=', '^', '~', ' ']);
    let version = version.split([',', ' ']).next().unwrap_or(version);
    (!version.is_empty()).then(|| version.to_owned())
}

/// Whether `v` is a cargo-audit report.
pub fn is_report(v: &Value) -> bool {
    v.get("vulnerabilities")
        .is_some_and(|x| x.get("list").is_some())
        && v.get("database").is_some()
}

/// Findings of one report.
pub fn from_report(v: &Value, out: &mut Parsed) {
    for item in v["vulnerabilities"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let adv = &item["advisory"];
        let Some(id) = adv["id"].as_str() else {
            out.skipped += 1;
            continue;
        };
        let pkg = item["package"]["name"].as_str().unwrap_or("?");
        let ver = item["package"]["version"].as_str().unwrap_or("?");
        let title = adv["title"].as_str().unwrap_or("");
        let fix = first_patched(item);
        out.findings.push(RawFinding {
            tool: "cargo-audit".into(),
            kind: "cve".into(),
            severity: "error".into(),
            file: Some("Cargo.lock".into()),
            line: None,
            col: None,
            code: Some(id.to_owned()),
            message: format!("{pkg} {ver}: {title}"),
            suggested_fix: Some(match fix {
                Some(f) => format!("bump to {f}"),
                None => "no patched version; remove or replace the dependency".to_owned(),
            }),
            raw_json: Some(item.to_string()),
        });
    }
    if let Some(warnings) = v["warnings"].as_object() {
        for (kind, list) in warnings {
            for w in list.as_array().into_iter().flatten() {
                let pkg = w["package"]["name"].as_str().unwrap_or("?");
                let ver = w["package"]["version"].as_str().unwrap_or("?");
                let adv = &w["advisory"];
                let code = adv["id"]
                    .as_str()
                    .map_or_else(|| format!("{kind}:{pkg}@{ver}"), str::to_owned);
                let title = adv["title"].as_str().map_or_else(
                    || format!("{pkg} {ver} is {kind}"),
                    |t| format!("{pkg} {ver} ({kind}): {t}"),
                );
                out.findings.push(RawFinding {
                    tool: "cargo-audit".into(),
                    kind: "advisory".into(),
                    severity: "warn".into(),
                    file: Some("Cargo.lock".into()),
                    line: None,
                    col: None,
                    code: Some(code),
                    message: title,
                    suggested_fix: first_patched(w).map(|f| format!("bump to {f}")),
                    raw_json: Some(w.to_string()),
                });
            }
        }
    }
}
