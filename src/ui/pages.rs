//! The page templates (checked at compile time by `maud`: a typo is a build error,
//! every value is escaped).

use std::collections::BTreeMap;

use chrono::TimeZone;
use maud::{DOCTYPE, Markup, html};

use super::{Cell, FarmSummary, FindingsFilter, LogTail, ProjectRow, ProjectView, svg};
use crate::api::{Caller, rfc3339};
use crate::ledger::{
    Finding, Job, JobStatus, ManifestStatus, PatchAttempt, RegistryStatus, StatusKey,
};

fn layout(title: &str, caller: Option<&Caller>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · crafting-table" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "crafting-table" }
                    @if let Some(c) = caller {
                        nav aria-label="Main" {
                            a href="/ui/" { "Farm" }
                            a href="/ui/registry" { "Registry" }
                            a href="/ui/patches" { "Patches" }
                        }
                        form.logout method="post" action="/ui/logout" {
                            span.who { (c.name) @if c.is_admin { " (admin)" } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A status as a coloured label (text, not colour alone, carries the meaning).
fn status(s: JobStatus) -> Markup {
    html! { span class=(format!("status s-{}", s.as_str())) { (s.as_str().replace('_', " ")) } }
}

/// "3 min ago", for a time in the past.
pub fn age(now: i64, then: i64) -> String {
    let secs = (now - then).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// A time in UTC, turned into the viewer's own time zone by the page's script.
fn when(ms: i64) -> Markup {
    let iso = rfc3339(ms);
    let text = chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    html! { time datetime=(iso) data-local { (text) } }
}

fn duration(j: &Job) -> String {
    match (j.started_at, j.finished_at) {
        (Some(s), Some(f)) => format!("{:.1} s", (f - s) as f64 / 1000.0),
        (Some(_), None) => "running".to_owned(),
        _ => "—".to_owned(),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn job_link(j: &Job) -> Markup {
    html! { a href=(format!("/ui/jobs/{}", j.id)) { code { (j.id.get(..8).unwrap_or(&j.id)) } } }
}

/// The login form; `error` says why the last try failed.
pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            section.card.narrow {
                h1 { "Log in" }
                p { "Paste a bearer token minted by an admin (" code { "POST /admin/tokens" } "), or the admin bearer in " code { "data/admin-bearer.txt" } "." }
                @if let Some(e) = error {
                    p.error role="alert" { (e) }
                }
                form method="post" action="/ui/login" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// A page for an error status.
pub fn error_page(title: &str, code: u16, message: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            section.card.narrow {
                h1 { (code) " " (title) }
                p { (message) }
                p { a href="/ui/" { "Back to the farm" } }
            }
        },
    )
}

fn cell(project: &str, c: &Cell, now: i64) -> Markup {
    let label = if c.subproject == "." {
        c.command.clone()
    } else {
        format!("{}: {}", c.subproject, c.command)
    };
    html! {
        div.cell {
            div.cmd { (label) }
            @if let Some(j) = &c.last {
                div {
                    a href=(format!("/ui/jobs/{}", j.id)) { (status(j.status)) }
                }
                div.meta {
                    (age(now, j.finished_at.unwrap_or(j.created_at)))
                    " · " (j.findings_count) @if j.findings_count == 1 { " finding" } @else { " findings" }
                }
            } @else {
                div.meta { "never run" }
            }
            @if let Some(a) = &c.active {
                div.meta { a href=(format!("/ui/jobs/{}", a.id)) { (status(a.status)) } }
            }
            form.run method="post" action=(format!("/ui/projects/{project}/run")) {
                input type="hidden" name="subproject" value=(c.subproject);
                input type="hidden" name="recipe" value=(c.command);
                button type="submit" data-run=(format!("{project}/{}/{}", c.subproject, c.command))
                    aria-label=(format!("Run {label} of {project}")) { "Run" }
            }
        }
    }
}

fn cells(row: &ProjectRow, now: i64) -> Markup {
    html! {
        @if let Some(p) = &row.problem {
            p.error { (p) }
        } @else if row.cells.is_empty() {
            p.meta { "no commands" }
        } @else {
            div.cells { @for c in &row.cells { (cell(&row.name, c, now)) } }
        }
    }
}

/// The farm: one row per project with a cell per command.
pub fn farm(caller: &Caller, s: &FarmSummary, rows: &[ProjectRow], now: i64) -> Markup {
    layout(
        "Farm",
        Some(caller),
        html! {
            h1 { "Farm" }
            dl.summary {
                div { dt { "Queued" } dd #queued { (s.queued) } }
                div { dt { "Running" } dd #running { (s.running) " of " (s.workers) " workers" } }
                div { dt { "Registry" } dd { code { (s.revision.as_deref().map_or("—", short)) } } }
                div { dt { "Manifest errors" } dd {
                    @if s.manifest_errors > 0 {
                        a.error href="/ui/registry" { (s.manifest_errors) }
                    } @else { "0" }
                } }
            }
            @if rows.is_empty() {
                p { "No project this token may see." }
            } @else {
                table.grid #farm {
                    thead { tr { th scope="col" { "Project" } th scope="col" { "Commands: last run" } } }
                    tbody {
                        @for r in rows {
                            tr data-project=(r.name) {
                                th scope="row" { a href=(format!("/ui/projects/{}", r.name)) { (r.name) } }
                                td { (cells(r, now)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn jobs_table(jobs: &[Job], now: i64) -> Markup {
    html! {
        div.scroll {
            table.list {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Command" } th scope="col" { "Status" }
                    th scope="col" { "Sha" } th scope="col" { "Findings" } th scope="col" { "Duration" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for j in jobs {
                        tr {
                            td { (job_link(j)) }
                            td { (j.subproject) " " (j.recipe) }
                            td { (status(j.status)) }
                            td { code { (j.sha.as_deref().map_or("—", short)) } }
                            td { (j.findings_count) }
                            td { (duration(j)) }
                            td { (age(now, j.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// A schedule's next fire in its own time zone.
fn in_zone(ms: i64, zone: &str) -> String {
    let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
        return String::new();
    };
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default()
}

/// One project: its manifest, commands, schedules, findings trend and recent jobs.
pub fn project(caller: &Caller, v: &ProjectView, now: i64) -> Markup {
    let p = &v.project;
    let spec = &p.spec;
    layout(
        &p.name,
        Some(caller),
        html! {
            h1 { (p.name) }
            dl.summary {
                div { dt { "Source" } dd { (match p.source { crate::ledger::Source::Api => "API", crate::ledger::Source::Registry => "registry" }) } }
                @if let Some(f) = &p.manifest_file { div { dt { "Manifest" } dd { code { (f) } } } }
                @if let Some(r) = &p.manifest_revision { div { dt { "Revision" } dd { code { (short(r)) } } } }
                div { dt { "Repository" } dd { code { (spec["git_url"].as_str().unwrap_or("")) } } }
                div { dt { "Branch" } dd { code { (spec["default_branch"].as_str().unwrap_or("main")) } } }
            }
            h2 { "Commands" }
            @match &v.row { Some(r) => (cells(r, now)), None => p { "—" } }
            h2 { "Findings trend" }
            (svg::trend(&v.trend))
            @if !v.trend.is_empty() {
                details {
                    summary { "The numbers" }
                    div.scroll { table.list {
                        thead { tr { th scope="col" { "Run" } th scope="col" { "Command" } th scope="col" { "Open" } th scope="col" { "New" } th scope="col" { "Fixed" } } }
                        tbody { @for t in v.trend.iter().rev() { tr {
                            td { a href=(format!("/ui/jobs/{}", t.job_id)) { code { (t.job_id.get(..8).unwrap_or(&t.job_id)) } } }
                            td { (t.subproject) " " (t.recipe) } td { (t.open) } td { (t.new) } td { (t.fixed) }
                        } } }
                    } }
                }
            }
            h2 { "Schedules" }
            @if v.schedules.is_empty() {
                p.meta { "No schedule runs this project." }
            } @else {
                div.scroll { table.list #schedules {
                    thead { tr { th scope="col" { "Schedule" } th scope="col" { "Cron" } th scope="col" { "Command" } th scope="col" { "Next fire (its zone)" } th scope="col" { "Next fire (yours)" } } }
                    tbody { @for s in &v.schedules { tr {
                        td { (s.name) @if s.suspended { " (suspended)" } }
                        td { code { (s.cron) } " " (s.timezone) }
                        td { (s.recipe) }
                        @match s.next_fire_at {
                            Some(at) => { td { (in_zone(at, &s.timezone)) } td { (when(at)) } }
                            None => { td { "—" } td { "—" } }
                        }
                    } } }
                } }
            }
            h2 { "Recent jobs" }
            @if v.jobs.is_empty() { p.meta { "No jobs yet." } } @else { (jobs_table(&v.jobs, now)) }
        },
    )
}

fn kinds(findings: &[Finding]) -> Vec<String> {
    let mut k: Vec<String> = findings.iter().map(|f| f.f.kind.clone()).collect();
    k.sort();
    k.dedup();
    k
}

/// One job: its facts, its log (live while it runs), its findings.
pub fn job(
    caller: &Caller,
    j: &Job,
    log: &LogTail,
    findings: &[Finding],
    filter: &FindingsFilter,
    now: i64,
) -> Markup {
    let running = !j.status.is_terminal();
    let want_state = filter.state.as_deref().filter(|s| !s.is_empty());
    let want_kind = filter.kind.as_deref().filter(|s| !s.is_empty());
    let shown: Vec<&Finding> = findings
        .iter()
        .filter(|f| want_state.is_none_or(|s| f.f.baseline_state.as_deref() == Some(s)))
        .filter(|f| want_kind.is_none_or(|k| f.f.kind == k))
        .collect();
    let listed = &shown[..shown.len().min(super::PAGE_FINDINGS)];
    layout(
        &format!("Job {}", j.id.get(..8).unwrap_or(&j.id)),
        Some(caller),
        html! {
            h1 { "Job " code { (j.id.get(..8).unwrap_or(&j.id)) } }
            dl.summary {
                div { dt { "Status" } dd #status data-status=(j.status.as_str()) { (status(j.status))
                    @if let Some(c) = j.exit_code { " (exit " (c) ")" } } }
                div { dt { "Project" } dd { a href=(format!("/ui/projects/{}", j.project)) { (j.project) } } }
                div { dt { "Command" } dd { (j.subproject) " " (j.recipe) } }
                div { dt { "Ref" } dd { code { (j.git_ref) } } }
                div { dt { "Sha" } dd { code { (j.sha.as_deref().unwrap_or("—")) } } }
                div { dt { "Duration" } dd { (duration(j)) } }
                div { dt { "Created" } dd { (when(j.created_at)) " (" (age(now, j.created_at)) ")" } }
                div { dt { "Trigger" } dd { (j.trigger) @if let Some(s) = &j.schedule { " (" (s) ")" } } }
            }
            @if let Some(e) = &j.error { p.error { (e) } }
            div.actions {
                form method="post" action=(format!("/ui/jobs/{}/run-again", j.id)) {
                    button type="submit" #run-again { "Run again" }
                }
                @if running {
                    form method="post" action=(format!("/ui/jobs/{}/cancel", j.id)) {
                        button.danger type="submit" { "Cancel" }
                    }
                }
            }
            h2 { "Log" }
            p.meta {
                a href=(format!("/ui/jobs/{}/log.txt", j.id)) { "Whole log as text" }
                @if log.cut { " · showing the last " (log.lines.len()) " lines" }
                @if running {
                    " · " span #live-status role="status" { "The job is running: "
                        a href=(format!("/ui/jobs/{}", j.id)) { "reload" } " to see more." }
                }
            }
            pre #log tabindex="0" data-follow=[running.then(|| format!("/ui/jobs/{}/events?from={}", j.id, log.end))] {
                @for line in &log.lines { (line) }
            }
            h2 { "Findings" }
            @if findings.is_empty() {
                p.meta #no-findings { @if running { "None yet." } @else { "No findings." } }
            } @else {
                form.filters method="get" action=(format!("/ui/jobs/{}", j.id)) {
                    label { "State "
                        select name="state" {
                            option value="" selected[want_state.is_none()] { "any" }
                            option value="new" selected[want_state == Some("new")] { "new" }
                            option value="unchanged" selected[want_state == Some("unchanged")] { "unchanged" }
                        }
                    }
                    label { "Kind "
                        select name="kind" {
                            option value="" selected[want_kind.is_none()] { "any" }
                            @for k in kinds(findings) {
                                option value=(k) selected[want_kind == Some(k.as_str())] { (k) }
                            }
                        }
                    }
                    button type="submit" { "Filter" }
                }
                p.meta { (shown.len()) " of " (findings.len()) " findings"
                    @if listed.len() < shown.len() {
                        " · listing the first " (listed.len()) "; "
                        code { "GET /jobs/" (j.id) "/findings" } " has them all"
                    } }
                div.scroll { table.list #findings {
                    thead { tr {
                        th scope="col" { "Where" } th scope="col" { "Code" } th scope="col" { "Kind" }
                        th scope="col" { "Severity" } th scope="col" { "State" } th scope="col" { "Message" }
                        th scope="col" { "Suggested fix" }
                    } }
                    tbody { @for f in listed { tr data-code=[f.f.code.as_deref()] {
                        td { code { (f.f.file.as_deref().unwrap_or("—"))
                            @if let Some(l) = f.f.line { ":" (l) } } }
                        td { code { (f.f.code.as_deref().unwrap_or("")) } }
                        td { (f.f.kind) }
                        td { (f.f.severity) }
                        td { (f.f.baseline_state.as_deref().unwrap_or("—")) }
                        td.msg { (f.f.message) }
                        td.msg { (f.f.suggested_fix.as_deref().unwrap_or("")) }
                    } } }
                } }
            }
        },
    )
}

/// The registry: per-manifest status with errors at file:line:col.
pub fn registry(
    caller: &Caller,
    status: Option<&RegistryStatus>,
    manifests: &[ManifestStatus],
    times: &BTreeMap<StatusKey, i64>,
    in_progress: bool,
    now: i64,
) -> Markup {
    layout(
        "Registry",
        Some(caller),
        html! {
            h1 { "Registry" }
            @match status {
                None => p { "The registry has not been read yet." },
                Some(s) => {
                    dl.summary {
                        div { dt { "Source" } dd { code { (s.source) } } }
                        div { dt { "Revision" } dd { code { (s.revision.as_deref().map_or("—", short)) } } }
                        div { dt { "Last attempt" } dd { @match s.last_attempt_at { Some(t) => (age(now, t)), None => "—" } } }
                        div { dt { "Last success" } dd { @match s.last_success_at { Some(t) => (age(now, t)), None => "never" } } }
                        @if in_progress { div { dt { "Now" } dd { "reconciling" } } }
                    }
                    @if let Some(e) = &s.last_error { p.error { (e) } }
                }
            }
            @if manifests.is_empty() {
                p.meta { "No manifests." }
            } @else {
                div.scroll { table.list #manifests {
                    thead { tr {
                        th scope="col" { "File" } th scope="col" { "Object" } th scope="col" { "Status" }
                        th scope="col" { "Last attempt" } th scope="col" { "Last success" }
                        th scope="col" { "Status since" }
                    } }
                    tbody { @for m in manifests {
                        @let key = (m.file.clone(), m.kind.clone(), m.name.clone());
                        tr {
                            td { code { (m.file)
                                @if m.last_error.is_some() {
                                    @if let Some(l) = m.error_line { ":" (l) @if let Some(c) = m.error_col { ":" (c) } }
                                } } }
                            td { (m.kind) " " (m.name) }
                            td { @match &m.last_error {
                                Some(e) => span.error { "error: " (e) },
                                None => span.ok { "applied" },
                            } }
                            // Every reconcile reads every manifest: its last attempt is the
                            // registry's; a manifest without error succeeded with it, one in
                            // error last succeeded at the revision still applied.
                            td { @match status.and_then(|s| s.last_attempt_at) { Some(t) => (age(now, t)), None => "—" } }
                            td {
                                @if m.last_error.is_none() {
                                    @match status.and_then(|s| s.last_success_at) { Some(t) => (age(now, t)), None => "—" }
                                    " · "
                                }
                                @match &m.revision_applied {
                                    Some(r) => { "at " code { (short(r)) } },
                                    None => "never",
                                }
                            }
                            td { @match times.get(&key) { Some(t) => (age(now, *t)), None => "—" } }
                        }
                    } }
                } }
            }
        },
    )
}

/// The patch loop's attempts.
pub fn patches(caller: &Caller, list: &[PatchAttempt], on: bool, now: i64) -> Markup {
    layout(
        "Patches",
        Some(caller),
        html! {
            h1 { "Patches" }
            @if !on { p.meta { "The patch loop is off on this farm (see the README's patch loop settings)." } }
            @if list.is_empty() {
                p.meta { "No patch attempts." }
            } @else {
                @for p in list {
                    section.card.patch {
                        h2 { "#" (p.id) " " (p.project) " — " span class=(format!("status p-{}", p.status)) { (p.status) } }
                        p.meta {
                            (p.tool) " " code { (p.code.as_deref().unwrap_or("")) } " in "
                            code { (p.file.as_deref().unwrap_or("—")) @if let Some(l) = p.line { ":" (l) } }
                            " · job " a href=(format!("/ui/jobs/{}", p.job_id)) { code { (p.job_id.get(..8).unwrap_or(&p.job_id)) } }
                            @if let Some(v) = &p.verify_job_id { " · verify " a href=(format!("/ui/jobs/{v}")) { code { (v.get(..8).unwrap_or(v)) } } }
                            " · " (age(now, p.created_at))
                        }
                        @if let Some(r) = &p.reason { p { (r) } }
                        @if let Some(url) = p.pr_url.as_ref().filter(|u| u.starts_with("https://") || u.starts_with("http://")) {
                            p { "Pull request: " a href=(url) rel="noreferrer" { (url) } @if let Some(s) = &p.pr_state { " (" (s) ")" } }
                        }
                        @if let Some(d) = &p.diff {
                            details { summary { "Diff" } pre.diff { (d) } }
                        }
                    }
                }
            }
        },
    )
}
