//! `tsc --noEmit`: text diagnostics.
//!
//! Reads `src/a.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.`
//! (and the `--pretty` form `src/a.ts:3:7 - error TS2322: …`) and emits one `lint`
//! per diagnostic, code `TS2322`. Indented continuation lines are added to the
//! message.

use super::{Parsed, RawFinding, clean_line};

fn parse_head(line: &str) -> Option<(String, i64, i64, String, String, String)> {
    // Plain: file(line,col): error TSnnnn: message
    // The location is the last parenthesis before "): " — directory names may hold
    // parentheses too (Next.js route groups: `app/(shop)/page.tsx(3,7): …`).
    if let Some(close) = line.find("): ")
        && let Some(open) = line[..close].rfind('(')
    {
        let file = &line[..open];
        let (l, c) = line[open + 1..close].split_once(',')?;
        let rest = &line[close + 3..];
        let (sev, rest) = rest.split_once(' ')?;
        let (code, msg) = rest.split_once(": ")?;
        if code.starts_with("TS") && !file.contains(' ') {
            return Some((
                file.to_owned(),
                l.parse().ok()?,
                c.parse().ok()?,
                sev.to_owned(),
                code.to_owned(),
                msg.to_owned(),
            ));
        }
    }
    // Pretty: file:line:col - error TSnnnn: message
    let (loc, rest) = line.split_once(" - ")?;
    let mut parts = loc.rsplitn(3, ':');
    let c = parts.next()?.parse().ok()?;
    let l = parts.next()?.parse().ok()?;
    let file = parts.next()?;
    let (sev, rest) = rest.split_once(' ')?;
    let (code, msg) = rest.split_once(": ")?;
    (code.starts_with("TS") && !file.contains(' ')).then(|| {
        (
            file.to_owned(),
            l,
            c,
            sev.to_owned(),
            code.to_owned(),
            msg.to_owned(),
        )
    })
}

/// Parses every tsc diagnostic in `log`.
pub fn parse(log: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut last_was_tsc = false;
    for raw in log.lines() {
        let line = clean_line(raw);
        if let Some((file, l, c, sev, code, msg)) = parse_head(&line) {
            if !matches!(sev.as_str(), "error" | "warning" | "message") {
                last_was_tsc = false;
                continue;
            }
            out.findings.push(RawFinding {
                tool: "tsc".into(),
                kind: "lint".into(),
                severity: if sev == "error" { "error" } else { "warn" }.into(),
                file: Some(file),
                line: Some(l),
                col: Some(c),
                code: Some(code),
                message: msg,
                suggested_fix: None,
                raw_json: None,
            });
            last_was_tsc = true;
        } else if last_was_tsc && line.starts_with("  ") && !line.trim().is_empty() {
            if let Some(f) = out.findings.last_mut() {
                f.message.push('\n');
                f.message.push_str(line.trim());
            }
        } else {
            last_was_tsc = false;
        }
    }
    out
}
