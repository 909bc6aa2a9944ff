//! `pytest` output: the short test summary (`FAILED path::test - message`, `ERROR
//! path::test - message`), the `--tb=line` lines (`/abs/tests/test_x.py:12:
//! AssertionError`) that locate them, and JUnit XML when the log contains it
//! (`<testcase classname=… name=… file=… line=…><failure message=…>`).
//!
//! Emits one `test_fail` per failed or erroring test (code = the node id).

use super::{Parsed, RawFinding, clean_line};

fn finding(nodeid: &str, message: String, file: Option<String>, line: Option<i64>) -> RawFinding {
    RawFinding {
        tool: "pytest".into(),
        kind: "test_fail".into(),
        severity: "error".into(),
        file,
        line,
        col: None,
        code: Some(nodeid.to_owned()),
        message,
        suggested_fix: None,
        raw_json: None,
    }
}

fn xml_attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Parses failed tests from `log`.
pub fn parse(log: &str) -> Parsed {
    let mut out = Parsed::default();
    // --tb=line: "path:line: message" per failure, in order.
    let mut tb: Vec<(String, i64)> = Vec::new();
    let mut summary: Vec<(String, String, bool)> = Vec::new();
    for raw in log.lines() {
        let line = clean_line(raw);
        for prefix in ["FAILED ", "ERROR "] {
            let Some(rest) = line.strip_prefix(prefix) else {
                continue;
            };
            // A parametrized id may hold " - " and spaces inside its brackets.
            let first_dash = rest.find(" - ").unwrap_or(rest.len());
            let split_from = match (rest.find('['), rest.find("::")) {
                (Some(b), Some(c)) if b > c && b < first_dash => {
                    rest[b..].find(']').map_or(0, |e| b + e)
                }
                _ => 0,
            };
            let (node, msg) = match rest[split_from..].find(" - ") {
                Some(i) => (&rest[..split_from + i], &rest[split_from + i + 3..]),
                None => (rest, ""),
            };
            let node = node.trim();
            let path_part = node.split("::").next().unwrap_or(node);
            if !(node.contains("::") || node.ends_with(".py")) || path_part.contains(' ') {
                continue;
            }
            if !summary.iter().any(|(n, _, _)| n == node) {
                let msg = if msg.is_empty() {
                    format!("{} {node}", prefix.trim().to_lowercase())
                } else {
                    msg.to_owned()
                };
                summary.push((node.to_owned(), msg, prefix == "FAILED "));
            }
        }
        if let Some((path, rest)) = line.split_once(".py:") {
            let path = format!("{path}.py");
            if let Some((n, _)) = rest.split_once(": ")
                && let Ok(n) = n.parse::<i64>()
                && !path.contains(' ')
            {
                tb.push((path, n));
            }
        }
    }
    // --tb=line prints one location per failure, in the order the summary lists the
    // FAILED tests (setup errors have none).
    let mut tb = tb.into_iter();
    for (node, msg, failed) in summary {
        let file = node
            .split("::")
            .next()
            .map(str::to_owned)
            .filter(|f| f.ends_with(".py"));
        let line = if failed {
            tb.next()
                .filter(|(p, _)| file.as_ref().is_some_and(|f| p.ends_with(f.as_str())))
                .map(|(_, l)| l)
        } else {
            None
        };
        out.findings.push(finding(&node, msg, file, line));
    }
    // JUnit XML in the log.
    let mut rest = log;
    while let Some(i) = rest.find("<testcase ") {
        let after = &rest[i..];
        let Some(end) = after.find('>') else { break };
        let tag = &after[..=end];
        let body_end = if tag.ends_with("/>") {
            end + 1
        } else {
            after.find("</testcase>").unwrap_or(end + 1)
        };
        let body = &after[..body_end];
        if let Some(kind) = ["<failure", "<error"].iter().find(|k| body.contains(**k)) {
            let name = xml_attr(tag, "name").unwrap_or_default();
            let class = xml_attr(tag, "classname").unwrap_or_default();
            let file = xml_attr(tag, "file");
            let line = xml_attr(tag, "line")
                .and_then(|l| l.parse::<i64>().ok())
                .map(|l| l + 1);
            // pytest's JUnit XML names the module (`tests.test_app`), not the file.
            let file = file.or_else(|| {
                let module = class.split("::").next().unwrap_or(&class);
                (!module.is_empty()).then(|| format!("{}.py", module.replace('.', "/")))
            });
            let node = match &file {
                Some(f) => format!("{f}::{name}"),
                None => format!("{class}::{name}"),
            };
            let ftag_start = body.find(kind).unwrap_or(0);
            let ftag = &body[ftag_start
                ..body[ftag_start..]
                    .find('>')
                    .map_or(body.len(), |e| ftag_start + e + 1)];
            let msg = xml_attr(ftag, "message").unwrap_or_else(|| format!("test `{name}` failed"));
            let known = out.findings.iter().any(|f| {
                f.code
                    .as_deref()
                    .is_some_and(|c| c == node || c.ends_with(&format!("::{name}")))
            });
            if !known {
                out.findings.push(finding(&node, msg, file, line));
            }
        }
        rest = &after[body_end.max(1)..];
    }
    out
}
