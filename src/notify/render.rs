//! A digest as an e-mail: subject, `text/plain` and `text/html`. Pure.

use std::fmt::Write as _;

use super::content::{DigestContent, FindingEntry, ProjectSection};

/// A rendered digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// `text/plain` body.
    pub text: String,
    /// `text/html` body.
    pub html: String,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The subject line: the date and what changed.
pub fn subject(c: &DigestContent) -> String {
    let counts = c.counts();
    let n = |k: &str| counts[k].as_u64().unwrap_or(0) as usize;
    if c.is_empty() {
        return format!("crafting-table digest {}: nothing new", c.date);
    }
    let mut parts = Vec::new();
    if n("cves") > 0 {
        parts.push(plural(n("cves"), "new CVE", "new CVEs"));
    }
    parts.push(format!("{} new", n("new")));
    parts.push(format!("{} fixed", n("fixed")));
    if n("pull_requests") > 0 {
        parts.push(plural(n("pull_requests"), "pull request", "pull requests"));
    }
    format!(
        "crafting-table digest {}: {} ({})",
        c.date,
        parts.join(", "),
        plural(c.projects.len(), "project", "projects")
    )
}

fn finding_line(f: &FindingEntry) -> String {
    let mut s = format!("[{}/{}]", f.kind, f.severity);
    if let Some(code) = &f.code {
        let _ = write!(s, " {code}");
    }
    let _ = write!(s, " {}", f.message.lines().next().unwrap_or(""));
    match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let _ = write!(s, " ({file}:{line})");
        }
        (Some(file), None) => {
            let _ = write!(s, " ({file})");
        }
        _ => {}
    }
    if let Some(fix) = &f.suggested_fix {
        let _ = write!(s, " — fix: {fix}");
    }
    let _ = write!(s, " [{} {}]", f.recipe, f.subproject);
    s
}

fn short_sha(sha: Option<&str>) -> &str {
    sha.map_or("-", |s| &s[..s.len().min(10)])
}

fn text_section(out: &mut String, p: &ProjectSection) {
    let _ = writeln!(out, "== {} ==", p.project);
    if !p.jobs.is_empty() {
        let _ = writeln!(out, "Jobs:");
        for j in &p.jobs {
            let events: Vec<&str> = j.events.iter().map(|e| e.as_str()).collect();
            let _ = writeln!(
                out,
                "  {} {} in {} at {}: {}{}{}  [{}]\n    {}",
                j.recipe,
                j.id.get(..8).unwrap_or(&j.id),
                j.subproject,
                short_sha(j.sha.as_deref()),
                j.status,
                j.exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default(),
                j.duration_secs
                    .map(|d| format!(", {d:.1}s"))
                    .unwrap_or_default(),
                events.join(", "),
                j.url
            );
        }
    }
    if !p.new_findings.is_empty() {
        let _ = writeln!(out, "New findings ({}):", p.new_findings.len());
        for f in &p.new_findings {
            let _ = writeln!(out, "  + {}", finding_line(f));
        }
    }
    if !p.fixed_findings.is_empty() {
        let _ = writeln!(out, "Fixed ({}):", p.fixed_findings.len());
        for f in &p.fixed_findings {
            let _ = writeln!(out, "  - {}", finding_line(f));
        }
    }
    if p.unchanged > 0 {
        let _ = writeln!(out, "Unchanged: {}", p.unchanged);
    }
    if !p.pull_requests.is_empty() {
        let _ = writeln!(out, "Pull requests opened:");
        for pr in &p.pull_requests {
            let _ = writeln!(
                out,
                "  {} ({})",
                pr.url.as_deref().unwrap_or("-"),
                pr.branch.as_deref().unwrap_or("-")
            );
        }
    }
    out.push('\n');
}

/// The `text/plain` body.
pub fn text(c: &DigestContent) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "crafting-table digest for {} ({} {})",
        c.date, c.time, c.zone
    );
    let _ = writeln!(out, "Jobs that ended from {}.\n", c.window_local);
    if c.is_empty() {
        let _ = writeln!(
            out,
            "Nothing new: no subscribed event, no new or fixed finding."
        );
    }
    for p in &c.projects {
        text_section(&mut out, p);
    }
    let _ = writeln!(
        out,
        "-- \nSent by crafting-table for {}. Jobs: {}/jobs",
        c.recipient, c.public_url
    );
    out
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_findings(out: &mut String, title: &str, list: &[FindingEntry], mark: &str) {
    if list.is_empty() {
        return;
    }
    let _ = write!(out, "<h3>{} ({})</h3>\n<ul>\n", escape(title), list.len());
    for f in list {
        let _ = writeln!(out, "<li>{mark} {}</li>", escape(&finding_line(f)));
    }
    out.push_str("</ul>\n");
}

/// The `text/html` body.
pub fn html(c: &DigestContent) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n",
        escape(&subject(c))
    );
    let _ = writeln!(
        out,
        "<h1>crafting-table digest for {} ({} {})</h1>\n<p>Jobs that ended from {}.</p>",
        escape(&c.date),
        escape(&c.time),
        escape(&c.zone),
        escape(&c.window_local)
    );
    if c.is_empty() {
        out.push_str("<p>Nothing new: no subscribed event, no new or fixed finding.</p>\n");
    }
    for p in &c.projects {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&p.project));
        if !p.jobs.is_empty() {
            out.push_str("<table>\n<tr><th>command</th><th>subproject</th><th>sha</th><th>status</th><th>duration</th><th>events</th></tr>\n");
            for j in &p.jobs {
                let events: Vec<&str> = j.events.iter().map(|e| e.as_str()).collect();
                let _ = writeln!(
                    out,
                    "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&j.url),
                    escape(&j.recipe),
                    escape(&j.subproject),
                    escape(short_sha(j.sha.as_deref())),
                    escape(&j.status),
                    j.exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default(),
                    j.duration_secs
                        .map(|d| format!("{d:.1}s"))
                        .unwrap_or_default(),
                    escape(&events.join(", "))
                );
            }
            out.push_str("</table>\n");
        }
        html_findings(&mut out, "New findings", &p.new_findings, "+");
        html_findings(&mut out, "Fixed", &p.fixed_findings, "&minus;");
        if p.unchanged > 0 {
            let _ = writeln!(out, "<p>Unchanged: {}</p>", p.unchanged);
        }
        if !p.pull_requests.is_empty() {
            out.push_str("<h3>Pull requests opened</h3>\n<ul>\n");
            for pr in &p.pull_requests {
                let url = pr.url.as_deref().unwrap_or("-");
                let _ = writeln!(
                    out,
                    "<li><a href=\"{}\">{}</a> ({})</li>",
                    escape(url),
                    escape(url),
                    escape(pr.branch.as_deref().unwrap_or("-"))
                );
            }
            out.push_str("</ul>\n");
        }
    }
    let _ = writeln!(
        out,
        "<p style=\"color:#666\">Sent by crafting-table for {}.</p>\n</body></html>",
        escape(&c.recipient)
    );
    out
}

/// Subject and both bodies.
pub fn render(c: &DigestContent) -> Rendered {
    Rendered {
        subject: subject(c),
        text: text(c),
        html: html(c),
    }
}
