//! `go vet -json`: per package, a pretty-printed JSON object keyed by package path
//! and analyzer, after a `# package` line.
//!
//! Reads
//! `{"example.com/m": {"printf": [{"posn": "/w/m/main.go:7:2", "message": "fmt.Printf format %d has arg s of wrong type string"}]}}`
//! and emits one `lint` per diagnostic, code = the analyzer name. A package that
//! failed to type-check appears as `{"pkg": {"error": "…"}}` … as an `error`.

use serde_json::Value;

use super::{Parsed, RawFinding};

fn split_posn(p: &str) -> (String, Option<i64>, Option<i64>) {
    let mut parts = p.rsplitn(3, ':');
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    match (
        c,
        b.and_then(|b| b.parse().ok()),
        a.and_then(|a| a.parse().ok()),
    ) {
        (Some(file), Some(line), Some(col)) => (file.to_owned(), Some(line), Some(col)),
        _ => match (b, a.and_then(|a| a.parse().ok())) {
            (Some(file), Some(line)) => (
                format!("{}{file}", c.map(|c| format!("{c}:")).unwrap_or_default()),
                Some(line),
                None,
            ),
            _ => (p.to_owned(), None, None),
        },
    }
}

/// Whether `v` is a go vet report: packages → analyzers → diagnostics with `posn`.
pub fn is_report(v: &Value) -> bool {
    let Some(pkgs) = v.as_object() else {
        return false;
    };
    !pkgs.is_empty()
        && pkgs.values().all(|analyzers| {
            analyzers.as_object().is_some_and(|a| {
                a.iter().all(|(name, diags)| {
                    diags
                        .as_array()
                        .is_some_and(|d| d.iter().all(|x| x.get("posn").is_some()))
                        || (name == "error" && diags.is_string())
                })
            })
        })
}

/// Findings of one report.
pub fn from_report(v: &Value, out: &mut Parsed) {
    for (pkg, analyzers) in v.as_object().into_iter().flatten() {
        for (analyzer, diags) in analyzers.as_object().into_iter().flatten() {
            if let Some(err) = diags.as_str() {
                out.findings.push(RawFinding {
                    tool: "go-vet".into(),
                    kind: "lint".into(),
                    severity: "error".into(),
                    file: None,
                    line: None,
                    col: None,
                    code: Some("typecheck".into()),
                    message: format!("{pkg}: {err}"),
                    suggested_fix: None,
                    raw_json: Some(diags.to_string()),
                });
                continue;
            }
            for d in diags.as_array().into_iter().flatten() {
                let (Some(posn), Some(message)) = (d["posn"].as_str(), d["message"].as_str())
                else {
                    out.skipped += 1;
                    continue;
                };
                let (file, line, col) = split_posn(posn);
                let fix = d["suggested_fixes"]
                    .as_array()
                    .and_then(|f| f.first())
                    .and_then(|f| f["message"].as_str())
                    .map(str::to_owned);
                out.findings.push(RawFinding {
                    tool: "go-vet".into(),
                    kind: "lint".into(),
                    severity: "warn".into(),
                    file: Some(file),
                    line,
                    col,
                    code: Some(analyzer.clone()),
                    message: message.to_owned(),
                    suggested_fix: fix,
                    raw_json: Some(d.to_string()),
                });
            }
        }
    }
}
