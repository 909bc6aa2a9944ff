//! The plan: what the ledger must change to equal the registry. Pure.
//!
//! Expected flow: the registry's manifests are loaded ([`crate::manifest::load`]),
//! the ledger is read ([`crate::ledger::Ledger::snapshot`]), and [`plan`] compares
//! the two object by object.
//!
//! Guarantees:
//! - a valid manifest object that differs from the ledger (spec or file) is an
//!   update; one the ledger lacks, or holds retired, is a create;
//! - an active registry object that no manifest defines any more is retired —
//!   *unless* a rejected document names it, or it lived in a file that has an
//!   unreadable document: then the last good version is kept;
//! - an object the API registered is never changed; a manifest claiming its name is
//!   a conflict.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::ledger::{Snapshot, Source};
use crate::manifest::{Kind, Loaded};

/// What happens to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// New (or revived after retirement).
    Create,
    /// Changed; one line per difference.
    Update(Vec<String>),
    /// No manifest defines it any more.
    Retire,
    /// Equal on both sides.
    Unchanged,
    /// The API owns this name; the manifest is ignored.
    Conflict,
    /// Its manifest has errors; the last good version stays in force.
    KeptLastGood,
}

/// One object's line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// What happens.
    pub action: Action,
    /// Manifest file that defines it now (or last did).
    pub file: Option<String>,
    /// The spec to store (creates and updates).
    pub spec: Option<serde_json::Value>,
}

/// Every object's line, in apply order (recipes, projects, schedules, rules), then
/// by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The lines.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether applying it would change any object.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| {
            matches!(
                c.action,
                Action::Create | Action::Update(_) | Action::Retire
            )
        })
    }

    /// How many lines have an action matching `pred`.
    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.changes.iter().filter(|c| pred(&c.action)).count()
    }

    /// The plan as a person reads it, one object a line, details indented.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            let file = c
                .file
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default();
            match &c.action {
                Action::Create => {
                    let _ = writeln!(out, "+ {} {}{file}", c.kind, c.name);
                }
                Action::Update(diff) => {
                    let _ = writeln!(out, "~ {} {}{file}", c.kind, c.name);
                    for d in diff {
                        let _ = writeln!(out, "    {d}");
                    }
                }
                Action::Retire => {
                    let _ = writeln!(out, "- {} {} (retire; history kept){file}", c.kind, c.name);
                }
                Action::Conflict => {
                    let _ = writeln!(
                        out,
                        "! {} {}{file}: name registered through the API; the API's project is kept",
                        c.kind, c.name
                    );
                }
                Action::KeptLastGood => {
                    let _ = writeln!(
                        out,
                        "! {} {}{file}: manifest has errors; last good version stays in force",
                        c.kind, c.name
                    );
                }
                Action::Unchanged => {}
            }
        }
        let n = |f: fn(&Action) -> bool| self.count(f);
        let _ = writeln!(
            out,
            "{} to create, {} to update, {} to retire, {} unchanged",
            n(|a| matches!(a, Action::Create)),
            n(|a| matches!(a, Action::Update(_))),
            n(|a| matches!(a, Action::Retire)),
            n(|a| matches!(a, Action::Unchanged)),
        );
        out
    }
}

/// Compares the loaded registry with the ledger.
pub fn plan(desired: &Loaded, snapshot: &Snapshot) -> Plan {
    let mut changes = Vec::new();
    let mut defined: BTreeSet<(Kind, &str)> = BTreeSet::new();
    for obj in &desired.objects {
        let kind = obj.kind();
        defined.insert((kind, obj.name.as_str()));
        let spec = obj.spec.to_json();
        let action = match snapshot.get(&(kind, obj.name.clone())) {
            Some(stored) if stored.source == Source::Api => Action::Conflict,
            None => Action::Create,
            Some(stored) if stored.retired_at.is_some() => Action::Create,
            Some(stored) => {
                let mut diff = Vec::new();
                if stored.manifest_file.as_deref() != Some(obj.file.as_str()) {
                    diff.push(format!(
                        "moved: {} → {}",
                        stored.manifest_file.as_deref().unwrap_or("?"),
                        obj.file
                    ));
                }
                json_diff("spec", &stored.spec, &spec, &mut diff);
                if diff.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update(diff)
                }
            }
        };
        changes.push(Change {
            kind,
            name: obj.name.clone(),
            action,
            file: Some(obj.file.clone()),
            spec: Some(spec),
        });
    }
    // Rejected documents protect what they (may) define.
    let rejected_names: BTreeSet<(Kind, &str)> = desired
        .rejected
        .iter()
        .filter_map(|r| Some((r.kind?, r.name.as_deref()?)))
        .collect();
    let rejected_files: BTreeSet<&str> = desired
        .rejected
        .iter()
        .filter(|r| r.kind.is_none() || r.name.is_none())
        .map(|r| r.file.as_str())
        .collect();
    for ((kind, name), stored) in snapshot {
        if stored.source == Source::Api
            || stored.retired_at.is_some()
            || defined.contains(&(*kind, name.as_str()))
        {
            continue;
        }
        let protected = rejected_names.contains(&(*kind, name.as_str()))
            || stored
                .manifest_file
                .as_deref()
                .is_some_and(|f| rejected_files.contains(f));
        changes.push(Change {
            kind: *kind,
            name: name.clone(),
            action: if protected {
                Action::KeptLastGood
            } else {
                Action::Retire
            },
            file: stored.manifest_file.clone(),
            spec: None,
        });
    }
    let order = |k: Kind| Kind::ALL.iter().position(|x| *x == k).unwrap_or(usize::MAX);
    changes.sort_by(|a, b| (order(a.kind), &a.name).cmp(&(order(b.kind), &b.name)));
    Plan { changes }
}

/// One line per difference between two JSON values, with a dotted path.
fn json_diff(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => json_diff(&p, x, y, out),
                    (None, Some(y)) => out.push(format!("{p}: (unset) → {y}")),
                    (Some(x), None) => out.push(format!("{p}: {x} → (unset)")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}
