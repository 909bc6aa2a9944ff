//! Semantic checks that serde cannot express: names, references between objects,
//! cron expressions, time zones, paths, ranges and addresses.
//!
//! Each check points its diagnostic at the value it is about, using the position
//! tree of the document the object came from.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};

use super::types::{
    DigestTime, Emails, ProjectSpec, RecipeSpec, ScheduleSpec, Selector, Subproject, Suspend,
};
use super::yaml::{Node, Seg};
use super::{Diagnostic, Kind, Severity, Spec};

/// Longest accepted timeout: one day.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest accepted `max_concurrent_jobs`.
pub const MAX_CONCURRENT_JOBS: u32 = 64;

/// An object as the checks see it: where it came from and what it says.
pub(super) struct Candidate<'a> {
    pub file: &'a str,
    pub tree: &'a Node,
    pub name: &'a str,
    pub spec: &'a Spec,
}

/// Collects diagnostics for one object, positioned through its tree.
struct Sink<'a, 'd> {
    file: &'a str,
    tree: &'a Node,
    out: &'d mut Vec<Diagnostic>,
    errors: usize,
}

impl Sink<'_, '_> {
    fn at(&mut self, severity: Severity, path: &[Seg<'_>], message: String) {
        let pos = self.tree.locate(path).pos;
        if severity == Severity::Error {
            self.errors += 1;
        }
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line: pos.line,
            col: pos.col,
            severity,
            message,
        });
    }

    fn error(&mut self, path: &[Seg<'_>], message: String) {
        self.at(Severity::Error, path, message);
    }
}

/// Whether `name` is a DNS label: 1 to 63 of `a-z`, `0-9`, `-`, not starting or
/// ending with `-`.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `name` can name a command (`test`, `lint-strict`, `bench_all`).
pub fn is_valid_command_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn is_valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Checks an e-mail address loosely: one `@`, a local part and a domain of DNS labels.
pub fn is_valid_email(addr: &str) -> bool {
    let Some((local, domain)) = addr.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local
            .chars()
            .any(|c| c.is_whitespace() || "@<>(),;:\"[]\\".contains(c))
        && !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Normalises a subproject path (`./a//b/` → `a/b`, `.` → `.`), or says why it is not
/// acceptable.
pub fn normalize_subproject_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("subproject path is empty: use `.` for the repository root".to_owned());
    }
    if path.starts_with('/') {
        return Err(format!(
            "subproject path `{path}` is absolute: give it relative to the repository root"
        ));
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(format!(
            "subproject path `{path}` contains a backslash or NUL: use `/` between directories"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("subproject path `{path}` leaves the repository"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        Ok(".".to_owned())
    } else {
        Ok(parts.join("/"))
    }
}

/// Parses a five-field cron expression the way the scheduler will.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && fields != 5 {
        return Err(format!(
            "cron `{expr}` has {fields} fields; expected 5 (minute hour day-of-month month day-of-week)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| {
            let why = e.to_string();
            format!("cron `{expr}` is not valid: {}", why.trim_end_matches('.'))
        })
}

/// Parses an IANA time zone name.
pub fn parse_timezone(tz: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(tz).map_err(|_| {
        format!(
            "time zone `{tz}` is not an IANA time zone name (e.g. `America/Los_Angeles`, `UTC`)"
        )
    })
}

/// Whether a git URL looks usable: a known scheme, scp-like `user@host:path`, or a path.
fn check_git_url(url: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err("git_url is empty".to_owned());
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("git_url `{url}` contains whitespace"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "http" | "https" | "ssh" | "git" | "file") {
            return Err(format!(
                "git_url scheme `{scheme}` is not supported: use http, https, ssh, git or file"
            ));
        }
        if rest.is_empty() {
            return Err(format!("git_url `{url}` has nothing after `{scheme}://`"));
        }
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(format!(
                "git_url `{}` carries a credential: a token in a manifest is a token in a repository. Put `{scheme}://user:token@host` in the file named by CRAFTING_GIT_CREDENTIALS (git's credential-store format) and write the URL without it",
                crate::git::redact_url(url)
            ));
        }
    }
    Ok(())
}

/// Runs every semantic check; returns, per candidate, its diagnostics (an object
/// with any error diagnostic is rejected).
pub(super) fn check_all(cands: &[Candidate<'_>]) -> Vec<Vec<Diagnostic>> {
    let mut per: Vec<Vec<Diagnostic>> = vec![Vec::new(); cands.len()];

    // Names and duplicates across the whole registry.
    let mut seen: BTreeMap<(Kind, &str), Vec<usize>> = BTreeMap::new();
    for (i, c) in cands.iter().enumerate() {
        seen.entry((c.spec.kind(), c.name)).or_default().push(i);
    }
    for ((kind, name), idxs) in &seen {
        if idxs.len() < 2 {
            continue;
        }
        for &i in idxs {
            let others: Vec<String> = idxs
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| {
                    let p = cands[j]
                        .tree
                        .locate(&[Seg::Key("metadata"), Seg::Key("name")])
                        .pos;
                    format!("{}:{}:{}", cands[j].file, p.line, p.col)
                })
                .collect();
            let mut sink = sink_for(&cands[i], &mut per[i]);
            sink.error(
                &[Seg::Key("metadata"), Seg::Key("name")],
                format!(
                    "duplicate {kind} `{name}`: also defined at {}",
                    others.join(", ")
                ),
            );
        }
    }

    let recipes: BTreeMap<&str, &RecipeSpec> = cands
        .iter()
        .filter_map(|c| match c.spec {
            Spec::Recipe(r) => Some((c.name, r)),
            _ => None,
        })
        .collect();
    let projects: BTreeSet<&str> = cands
        .iter()
        .filter(|c| matches!(c.spec, Spec::Project(_)))
        .map(|c| c.name)
        .collect();

    for (c, out) in cands.iter().zip(per.iter_mut()) {
        let mut sink = sink_for(c, out);
        if !is_valid_name(c.name) {
            sink.error(
                &[Seg::Key("metadata"), Seg::Key("name")],
                format!(
                    "metadata.name `{}` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
                    c.name
                ),
            );
        }
        match c.spec {
            Spec::Project(p) => check_project(p, &recipes, &mut sink),
            Spec::Recipe(r) => check_recipe(c.name, r, &recipes, &mut sink),
            Spec::Schedule(s) => check_schedule(s, &projects, &mut sink),
            Spec::NotifyRule(n) => {
                check_selector(&n.projects, "projects", &projects, &mut sink);
                if let Some(e) = &n.email {
                    check_emails(e, &[Seg::Key("spec"), Seg::Key("email")], &mut sink);
                }
                if let Some(w) = &n.webhook {
                    check_webhook(w, &mut sink);
                }
                if n.email.is_none() && n.webhook.is_none() {
                    sink.error(
                        &[Seg::Key("spec")],
                        "a NotifyRule needs `email`, `webhook` or both: it notifies nobody"
                            .to_owned(),
                    );
                }
                check_digest(&n.digest, &mut sink);
            }
        }
    }
    per
}

fn sink_for<'a, 'd>(c: &Candidate<'a>, out: &'d mut Vec<Diagnostic>) -> Sink<'a, 'd> {
    Sink {
        file: c.file,
        tree: c.tree,
        out,
        errors: 0,
    }
}

/// The fields shared by subprojects and recipes.
struct CommandSet<'s> {
    build: &'s Option<String>,
    test: &'s Option<String>,
    lint: &'s Option<String>,
    audit: &'s Option<String>,
    commands: &'s BTreeMap<String, String>,
    timeout_secs: Option<u64>,
    env: &'s BTreeMap<String, String>,
    secrets: &'s [String],
}

impl<'s> From<&'s Subproject> for CommandSet<'s> {
    fn from(s: &'s Subproject) -> Self {
        CommandSet {
            build: &s.build,
            test: &s.test,
            lint: &s.lint,
            audit: &s.audit,
            commands: &s.commands,
            timeout_secs: s.timeout_secs,
            env: &s.env,
            secrets: &s.secrets,
        }
    }
}

impl<'s> From<&'s RecipeSpec> for CommandSet<'s> {
    fn from(s: &'s RecipeSpec) -> Self {
        CommandSet {
            build: &s.build,
            test: &s.test,
            lint: &s.lint,
            audit: &s.audit,
            commands: &s.commands,
            timeout_secs: s.timeout_secs,
            env: &s.env,
            secrets: &s.secrets,
        }
    }
}

impl CommandSet<'_> {
    fn is_empty(&self) -> bool {
        self.build.is_none()
            && self.test.is_none()
            && self.lint.is_none()
            && self.audit.is_none()
            && self.commands.is_empty()
    }
}

fn check_command_set<'p>(set: &CommandSet<'p>, base: &[Seg<'p>], sink: &mut Sink<'_, '_>) {
    let with = |extra: &[Seg<'p>]| -> Vec<Seg<'p>> {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    for (field, value) in [
        ("build", set.build),
        ("test", set.test),
        ("lint", set.lint),
        ("audit", set.audit),
    ] {
        if let Some(cmd) = value
            && cmd.trim().is_empty()
        {
            sink.error(
                &with(&[Seg::Key(field)]),
                format!("command `{field}` is empty"),
            );
        }
    }
    for (name, cmd) in set.commands {
        let mut p = with(&[Seg::Key("commands")]);
        let key_path = {
            let mut q = p.clone();
            q.push(Seg::KeyName(name));
            q
        };
        if matches!(name.as_str(), "build" | "test" | "lint" | "audit") {
            sink.error(
                &key_path,
                format!(
                    "command `{name}` belongs in its own field `{name}:`, not under `commands`"
                ),
            );
        } else if !is_valid_command_name(name) {
            sink.error(
                &key_path,
                format!(
                    "command name `{name}` is not valid: use lowercase letters, digits, `-` and `_`, starting with a letter"
                ),
            );
        }
        if cmd.trim().is_empty() {
            p.push(Seg::Key(name));
            sink.error(&p, format!("command `{name}` is empty"));
        }
    }
    if let Some(t) = set.timeout_secs
        && !(1..=MAX_TIMEOUT_SECS).contains(&t)
    {
        sink.error(
            &with(&[Seg::Key("timeout_secs")]),
            format!("timeout_secs {t} is out of range: use 1 to {MAX_TIMEOUT_SECS} seconds"),
        );
    }
    for (i, name) in set.secrets.iter().enumerate() {
        if !is_valid_env_name(name) {
            let mut p = with(&[Seg::Key("secrets")]);
            p.push(Seg::Index(i));
            sink.error(
                &p,
                format!("secret name `{name}` is not valid: use letters, digits and `_`, not starting with a digit"),
            );
        }
    }
    for name in set.env.keys() {
        if !is_valid_env_name(name) {
            let mut p = with(&[Seg::Key("env")]);
            p.push(Seg::KeyName(name));
            sink.error(
                &p,
                format!(
                    "environment variable name `{name}` is not valid: use letters, digits and `_`, not starting with a digit"
                ),
            );
        }
    }
}

fn check_project(p: &ProjectSpec, recipes: &BTreeMap<&str, &RecipeSpec>, sink: &mut Sink<'_, '_>) {
    if let Err(msg) = check_git_url(&p.git_url) {
        sink.error(&[Seg::Key("spec"), Seg::Key("git_url")], msg);
    }
    if p.default_branch.trim().is_empty() || p.default_branch.chars().any(char::is_whitespace) {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("default_branch")],
            format!("default_branch `{}` is not a branch name", p.default_branch),
        );
    }
    if let Some(f) = &p.forge {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && s != "."
                && s != ".."
        };
        for (key, value) in [("owner", &f.owner), ("repo", &f.repo)] {
            if !ok(value) {
                sink.error(
                    &[Seg::Key("spec"), Seg::Key("forge"), Seg::Key(key)],
                    format!(
                        "forge.{key} `{value}` is not a Gitea name: letters, digits, `-`, `_` and `.`"
                    ),
                );
            }
        }
    }
    if !(1..=MAX_CONCURRENT_JOBS).contains(&p.max_concurrent_jobs) {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("max_concurrent_jobs")],
            format!(
                "max_concurrent_jobs {} is out of range: use 1 to {MAX_CONCURRENT_JOBS}",
                p.max_concurrent_jobs
            ),
        );
    }
    for (i, owner) in p.owners.iter().enumerate() {
        if owner.trim().is_empty() || owner.chars().any(char::is_whitespace) {
            sink.error(
                &[Seg::Key("spec"), Seg::Key("owners"), Seg::Index(i)],
                format!("owner `{owner}` is not a token name"),
            );
        }
    }
    if p.subprojects.is_empty() {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("subprojects")],
            "a project needs at least one subproject (use `path: .` for the repository root)"
                .to_owned(),
        );
    }
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for (i, sp) in p.subprojects.iter().enumerate() {
        let base = [Seg::Key("spec"), Seg::Key("subprojects"), Seg::Index(i)];
        let at = |field: &'static str| [base[0], base[1], base[2], Seg::Key(field)];
        match normalize_subproject_path(&sp.path) {
            Err(msg) => sink.error(&at("path"), msg),
            Ok(norm) => {
                if let Some(first) = paths.insert(norm.clone(), i) {
                    sink.error(
                        &at("path"),
                        format!("subproject path `{norm}` is already used by subprojects[{first}]"),
                    );
                }
            }
        }
        let mut inherited = false;
        if let Some(name) = &sp.extends {
            if recipes.contains_key(name.as_str()) {
                inherited = true;
            } else {
                sink.error(&at("extends"), unknown_recipe(name, recipes));
            }
        }
        let set = CommandSet::from(sp);
        check_command_set(&set, &base, sink);
        if set.is_empty() && !inherited && sp.extends.is_none() {
            sink.error(
                &base,
                format!(
                    "subproject `{}` has no commands: set build, test, lint, audit or commands, or `extends` a recipe",
                    sp.path
                ),
            );
        }
    }
    if let Some(n) = &p.notify
        && let Some(e) = &n.email
    {
        check_emails(
            e,
            &[Seg::Key("spec"), Seg::Key("notify"), Seg::Key("email")],
            sink,
        );
    }
    if let Some(s) = &p.suspend {
        check_suspend(s, sink);
    }
}

fn unknown_recipe(name: &str, recipes: &BTreeMap<&str, &RecipeSpec>) -> String {
    if recipes.is_empty() {
        format!("recipe `{name}` does not exist: no Recipe is defined in this registry")
    } else {
        let known: Vec<&str> = recipes.keys().copied().collect();
        format!(
            "recipe `{name}` does not exist; defined recipes: {}",
            known.join(", ")
        )
    }
}

fn check_recipe(
    name: &str,
    r: &RecipeSpec,
    recipes: &BTreeMap<&str, &RecipeSpec>,
    sink: &mut Sink<'_, '_>,
) {
    check_command_set(&CommandSet::from(r), &[Seg::Key("spec")], sink);
    let Some(parent) = &r.extends else { return };
    if !recipes.contains_key(parent.as_str()) {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("extends")],
            unknown_recipe(parent, recipes),
        );
        return;
    }
    // Follow the chain; a cycle through this recipe is an error here.
    let mut chain = vec![name.to_owned()];
    let mut cur = Some(parent.clone());
    while let Some(next) = cur {
        if chain.contains(&next) {
            chain.push(next.clone());
            if next == name {
                sink.error(
                    &[Seg::Key("spec"), Seg::Key("extends")],
                    format!("recipe `{name}` extends itself: {}", chain.join(" → ")),
                );
            }
            return;
        }
        chain.push(next.clone());
        cur = recipes.get(next.as_str()).and_then(|r| r.extends.clone());
    }
}

fn check_schedule(s: &ScheduleSpec, projects: &BTreeSet<&str>, sink: &mut Sink<'_, '_>) {
    if let Err(msg) = parse_cron(&s.cron) {
        sink.error(&[Seg::Key("spec"), Seg::Key("cron")], msg);
    }
    if let Err(msg) = parse_timezone(&s.timezone) {
        sink.error(&[Seg::Key("spec"), Seg::Key("timezone")], msg);
    }
    if !is_valid_command_name(&s.recipe) {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("recipe")],
            format!(
                "recipe `{}` is not a command name: use the name of a command such as `audit` or `test`",
                s.recipe
            ),
        );
    }
    check_selector(&s.projects, "projects", projects, sink);
    if let Selector::Names(paths) = &s.subprojects {
        if paths.is_empty() {
            sink.error(
                &[Seg::Key("spec"), Seg::Key("subprojects")],
                "subprojects selects nothing: list paths or use `all`".to_owned(),
            );
        }
        for (i, path) in paths.iter().enumerate() {
            if let Err(msg) = normalize_subproject_path(path) {
                sink.error(
                    &[Seg::Key("spec"), Seg::Key("subprojects"), Seg::Index(i)],
                    msg,
                );
            }
        }
    }
    if let Some(sus) = &s.suspend {
        check_suspend(sus, sink);
    }
}

fn check_selector(
    sel: &Selector,
    field: &'static str,
    projects: &BTreeSet<&str>,
    sink: &mut Sink<'_, '_>,
) {
    let Selector::Names(names) = sel else { return };
    if names.is_empty() {
        sink.error(
            &[Seg::Key("spec"), Seg::Key(field)],
            format!("{field} selects nothing: list project names or use \"*\""),
        );
    }
    for (i, name) in names.iter().enumerate() {
        let path = [Seg::Key("spec"), Seg::Key(field), Seg::Index(i)];
        if name == "*" {
            continue;
        }
        if !is_valid_name(name) {
            sink.error(&path, format!("`{name}` is not a valid project name"));
        } else if !projects.contains(name.as_str()) {
            sink.at(
                Severity::Warning,
                &path,
                format!("project `{name}` is not defined in this registry (fine if it is registered through the API)"),
            );
        }
    }
}

fn check_webhook(w: &crate::manifest::Webhook, sink: &mut Sink<'_, '_>) {
    let url = w.url.trim();
    let ok = ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    }) && !url.contains(char::is_whitespace);
    if !ok {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("webhook"), Seg::Key("url")],
            format!("webhook.url `{}` is not an http:// or https:// URL", w.url),
        );
    }
    if let Some(name) = &w.secret_env
        && !is_valid_env_name(name)
    {
        sink.error(
            &[
                Seg::Key("spec"),
                Seg::Key("webhook"),
                Seg::Key("secret_env"),
            ],
            format!("webhook.secret_env `{name}` is not an environment variable name"),
        );
    }
}

fn check_emails(e: &Emails, path: &[Seg<'_>], sink: &mut Sink<'_, '_>) {
    match e {
        Emails::One(addr) => {
            if !is_valid_email(addr) {
                sink.error(path, format!("`{addr}` is not an e-mail address"));
            }
        }
        Emails::Many(list) => {
            for (i, addr) in list.iter().enumerate() {
                if !is_valid_email(addr) {
                    let mut p = path.to_vec();
                    p.push(Seg::Index(i));
                    sink.error(&p, format!("`{addr}` is not an e-mail address"));
                }
            }
        }
    }
}

fn check_suspend(s: &Suspend, sink: &mut Sink<'_, '_>) {
    if s.reason.trim().is_empty() {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("suspend"), Seg::Key("reason")],
            "suspend.reason is empty: say why it is suspended".to_owned(),
        );
    }
    if let Some(until) = &s.until
        && chrono::DateTime::parse_from_rfc3339(until).is_err()
    {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("suspend"), Seg::Key("until")],
            format!("suspend.until `{until}` is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)"),
        );
    }
}

fn check_digest(d: &DigestTime, sink: &mut Sink<'_, '_>) {
    if parse_hhmm(&d.time).is_none() {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("digest"), Seg::Key("time")],
            format!(
                "digest.time `{}` is not a time of day: use HH:MM, 24-hour clock",
                d.time
            ),
        );
    }
    if let Err(msg) = parse_timezone(&d.timezone) {
        sink.error(
            &[Seg::Key("spec"), Seg::Key("digest"), Seg::Key("timezone")],
            msg,
        );
    }
}

/// Parses `HH:MM` on a 24-hour clock.
pub fn parse_hhmm(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some((h, m))
}
