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

/// Whether `v` is a cargo-deny JSON line (`--format json`, one object per line on
/// stderr: diagnostics and a summary).
pub fn is_cargo_deny(v: &Value) -> bool {
    (v["type"] == "diagnostic"
        && v["fields"]["code"].is_string()
        && v["fields"]["severity"].is_string()
        && v["fields"]["message"].is_string())
        || (v["type"] == "summary" && v["fields"]["bans"].is_object())
}

/// The finding of one cargo-deny diagnostic. Advisories become `cve` (a
/// vulnerability) or `advisory` (unmaintained, unsound, notice, yanked) with the
/// advisory id as code and the "Solution" note as the fix; bans, licenses and
/// sources become `lint` with cargo-deny's code and the crate, so each duplicate
/// or rejected licence keeps its own fingerprint.
pub fn from_cargo_deny(v: &Value, out: &mut Parsed) {
    if v["type"] != "diagnostic" {
        return;
    }
    let f = &v["fields"];
    let code = f["code"].as_str().unwrap_or("");
    let severity = match f["severity"].as_str().unwrap_or("") {
        "error" => "error",
        "warning" => "warn",
        _ => "info",
    };
    let krate = f["graphs"][0]["Krate"]["name"].as_str();
    let notes: Vec<&str> = f["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (kind, code, fix, file) = if let Some(id) = f["advisory"]["id"].as_str() {
        let kind = if code == "vulnerability" {
            "cve"
        } else {
            "advisory"
        };
        let fix = notes
            .iter()
            .find_map(|n| n.strip_prefix("Solution: "))
            .filter(|s| !s.starts_with("No safe upgrade"))
            .map(str::to_owned);
        (kind, id.to_owned(), fix, Some("Cargo.lock".to_owned()))
    } else {
        let code = match krate {
            Some(k) => format!("{code}:{k}"),
            None => code.to_owned(),
        };
        let file = if code.starts_with("license-not-encountered") {
            "deny.toml"
        } else {
            "Cargo.lock"
        };
        ("lint", code, None, Some(file.to_owned()))
    };
    let mut message = f["message"].as_str().unwrap_or("").to_owned();
    if kind != "lint"
        && let Some(k) = krate
    {
        let version = f["graphs"][0]["Krate"]["version"].as_str().unwrap_or("");
        message = format!("{k} {version}: {message}");
    }
    out.findings.push(RawFinding {
        tool: "cargo-deny".into(),
        kind: kind.into(),
        severity: severity.into(),
        file,
        line: None,
        col: None,
        code: Some(code),
        message,
        suggested_fix: fix,
        raw_json: raw(v),
    });
}

/// Whether `v` is a PHPStan JSON report (`--error-format=json`).
pub fn is_phpstan(v: &Value) -> bool {
    v["totals"]["file_errors"].is_i64() && v["files"].is_object()
}

/// Findings of a PHPStan report: `lint`, severity error, code = the identifier.
pub fn from_phpstan(v: &Value, out: &mut Parsed) {
    for (file, entry) in v["files"].as_object().into_iter().flatten() {
        for m in entry["messages"].as_array().into_iter().flatten() {
            out.findings.push(RawFinding {
                tool: "phpstan".into(),
                kind: "lint".into(),
                severity: "error".into(),
                file: Some(file.clone()),
                line: m["line"].as_i64(),
                col: None,
                code: m["identifier"].as_str().map(str::to_owned),
                message: m["message"].as_str().unwrap_or("").to_owned(),
                suggested_fix: m["tip"].as_str().map(str::to_owned),
                raw_json: raw(m),
            });
        }
    }
    for e in v["errors"].as_array().into_iter().flatten() {
        out.findings.push(RawFinding {
            tool: "phpstan".into(),
            kind: "lint".into(),
            severity: "error".into(),
            file: None,
            line: None,
            col: None,
            code: Some("phpstan".into()),
            message: e.as_str().unwrap_or("").to_owned(),
            suggested_fix: None,
            raw_json: raw(e),
        });
    }
}

/// Whether `v` is a bundler-audit JSON report (`bundle-audit check --format json`).
pub fn is_bundler_audit(v: &Value) -> bool {
    v["results"].is_array() && v["version"].is_string() && v["created_at"].is_string()
}

/// Findings of a bundler-audit report: each unpatched gem a `cve` (code = the
/// advisory id, severity from its criticality, the patched versions as the fix),
/// each insecure source a `lint`.
pub fn from_bundler_audit(v: &Value, out: &mut Parsed) {
    for r in v["results"].as_array().into_iter().flatten() {
        match r["type"].as_str() {
            Some("unpatched_gem") => {
                let a = &r["advisory"];
                let severity = match a["criticality"].as_str() {
                    Some("critical" | "high") => "error",
                    Some("low" | "none") => "info",
                    _ => "warn",
                };
                let patched: Vec<&str> = a["patched_versions"]
                    .as_array()
                    .map(|p| p.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.findings.push(RawFinding {
                    tool: "bundler-audit".into(),
                    kind: "cve".into(),
                    severity: severity.into(),
                    file: Some("Gemfile.lock".into()),
                    line: None,
                    col: None,
                    code: a["id"].as_str().map(str::to_owned),
                    message: format!(
                        "{} {}: {}",
                        r["gem"]["name"].as_str().unwrap_or("?"),
                        r["gem"]["version"].as_str().unwrap_or("?"),
                        a["title"].as_str().unwrap_or("")
                    ),
                    suggested_fix: (!patched.is_empty())
                        .then(|| format!("upgrade to {}", patched.join(" or "))),
                    raw_json: raw(r),
                });
            }
            Some("insecure_source") => out.findings.push(RawFinding {
                tool: "bundler-audit".into(),
                kind: "lint".into(),
                severity: "warn".into(),
                file: Some("Gemfile".into()),
                line: None,
                col: None,
                code: Some("insecure_source".into()),
                message: format!(
                    "insecure gem source {}",
                    r["source"].as_str().unwrap_or("?")
                ),
                suggested_fix: Some("use an https:// source".into()),
                raw_json: raw(r),
            }),
            _ => {}
        }
    }
}
