//! `ruff check --output-format=json`: a JSON array (pretty-printed) of diagnostics.
//!
//! Reads `[{"code":"F401","filename":"/w/app.py","location":{"row":1,"column":8},"message":"`os` imported but unused","fix":{"message":"Remove unused import: `os`"},"url":…}]`
//! and emits one `lint` per element; syntax errors (code `null`) are `error`s with
//! code `syntax-error`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Parsed, RawFinding};

/// One diagnostic, borrowed from the log where it can be.
#[derive(Deserialize)]
struct Diag<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    filename: Cow<'a, str>,
    location: Location,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow, default)]
    fix: Option<Fix<'a>>,
}

#[derive(Deserialize)]
struct Location {
    row: Option<i64>,
    column: Option<i64>,
}

#[derive(Deserialize)]
struct Fix<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// What [`scan`] found: the findings, and where each report is in the log (byte
/// ranges, from its `[` to after its `]`), so the general JSON scan skips them.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The reports' findings.
    pub parsed: Parsed,
    /// The reports' byte ranges.
    pub spans: Vec<std::ops::Range<usize>>,
}

/// Finds ruff reports — non-empty arrays starting at the beginning of a line whose
/// every element is a ruff diagnostic — without building a JSON tree: the array is
/// split into its elements' raw text, each element read into a borrowed struct,
/// and its raw JSON kept as it was printed (never re-serialised).
pub fn scan(log: &str) -> Scanned {
    let mut out = Scanned::default();
    let mut pos = 0;
    while pos < log.len() {
        let line_end = log[pos..].find('\n').map_or(log.len(), |i| pos + i);
        let line = &log[pos..line_end];
        let trimmed = line.trim_start_matches([' ', '\t']);
        let start = pos + (line.len() - trimmed.len());
        pos = line_end + 1;
        if !trimmed.starts_with('[') || trimmed.starts_with("[crafting-table]") {
            continue;
        }
        let mut stream =
            serde_json::Deserializer::from_str(&log[start..]).into_iter::<Vec<&RawValue>>();
        let Some(Ok(elements)) = stream.next() else {
            continue;
        };
        let end = start + stream.byte_offset();
        if elements.is_empty() {
            continue;
        }
        let mut found = Vec::with_capacity(elements.len());
        for raw in &elements {
            let Ok(d) = serde_json::from_str::<Diag<'_>>(raw.get()) else {
                break;
            };
            found.push(finding(d, raw.get()));
        }
        if found.len() != elements.len() {
            continue; // not a ruff report: the general scan reads it
        }
        out.parsed.findings.extend(found);
        out.spans.push(start..end);
        pos = log[end..].find('\n').map_or(log.len(), |i| end + i + 1);
    }
    out
}

fn finding(d: Diag<'_>, raw: &str) -> RawFinding {
    let severity = if d.code.is_none() { "error" } else { "warn" };
    RawFinding {
        tool: "ruff".into(),
        kind: "lint".into(),
        severity: severity.into(),
        file: Some(d.filename.into_owned()),
        line: d.location.row,
        col: d.location.column,
        code: Some(
            d.code
                .map_or_else(|| "syntax-error".to_owned(), Cow::into_owned),
        ),
        message: d.message.into_owned(),
        suggested_fix: d.fix.and_then(|f| f.message).map(Cow::into_owned),
        raw_json: Some(raw.to_owned()),
    }
}

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
