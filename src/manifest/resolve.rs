//! Resolving a command: which shell command a job of (project, subproject, command
//! name) runs, with which timeout, environment and language, after following the
//! subproject's `extends` chain of recipes.
//!
//! Pure: the specs in, a [`Resolved`] out. The runner stores the result on the job
//! (`recipe_snapshot_json`), so later edits of a recipe never change what a queued
//! or finished job says it ran.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::check::normalize_subproject_path;
use super::types::{ProjectSpec, RecipeSpec, Subproject};

/// Timeout of a command that neither its subproject nor any recipe sets.
pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// A command ready to run, as snapshotted on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// Subproject path, normalised (`.` for the root).
    pub subproject: String,
    /// The command name (`test`, `lint`, …).
    pub recipe: String,
    /// The shell command, run with `/bin/sh -c`.
    pub command: String,
    /// Seconds before the process group is killed.
    pub timeout_secs: u64,
    /// Environment variables added for the command.
    pub env: BTreeMap<String, String>,
    /// Language whose parsers read the output, if known.
    pub language: Option<String>,
    /// Recipes the values were inherited through, nearest first.
    pub extends: Vec<String>,
    /// Where the command itself came from: `subproject` or `recipe:<name>`.
    pub command_from: String,
    /// Whether the command may use the network in the job sandbox.
    #[serde(default = "yes")]
    pub network: bool,
    /// Names of the secrets the command receives (values are never stored).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How the job's worktree is prepared (`warm` unless a manifest says `fresh`).
    #[serde(default)]
    pub workspace: super::WorkspaceMode,
    /// A patch-verify job's change: the runner that claims it makes the commit in
    /// its own mirror when it lacks it (the patch loop's commit lives on one host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchCommit>,
}

/// A commit made from a diff, reproducibly: the same base, diff, message,
/// identity and time give the same commit id on every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchCommit {
    /// The commit the diff applies to.
    pub base: String,
    /// The commit id it makes.
    pub commit: String,
    /// The unified diff.
    pub diff: String,
    /// The commit message.
    pub message: String,
    /// Author and committer name.
    pub name: String,
    /// Author and committer e-mail.
    pub email: String,
    /// Author and committer time (seconds since the epoch, UTC).
    pub time: i64,
    /// The ref that keeps the commit in a mirror.
    pub keep_as: String,
}

fn yes() -> bool {
    true
}

/// Why a command could not be resolved; the message lists what would have worked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No subproject with that path.
    #[error("unknown subproject `{given}`; subprojects: {}", .known.join(", "))]
    UnknownSubproject {
        /// What was asked for.
        given: String,
        /// What exists.
        known: Vec<String>,
    },
    /// The subproject has no command of that name.
    #[error("subproject `{subproject}` has no command `{given}`; commands: {}", .known.join(", "))]
    UnknownCommand {
        /// The subproject.
        subproject: String,
        /// What was asked for.
        given: String,
        /// What exists.
        known: Vec<String>,
    },
    /// A recipe named in `extends` does not exist (any more).
    #[error("recipe `{0}` named in `extends` does not exist")]
    MissingRecipe(String),
}

/// The command names a subproject offers, sorted.
pub fn command_names(sp: &Subproject, recipes: &BTreeMap<String, RecipeSpec>) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut add = |build: &Option<String>,
                   test: &Option<String>,
                   lint: &Option<String>,
                   audit: &Option<String>,
                   commands: &BTreeMap<String, String>| {
        for (n, v) in [
            ("build", build),
            ("test", test),
            ("lint", lint),
            ("audit", audit),
        ] {
            if v.is_some() {
                names.insert(n.to_owned());
            }
        }
        names.extend(commands.keys().cloned());
    };
    add(&sp.build, &sp.test, &sp.lint, &sp.audit, &sp.commands);
    for r in chain(sp.extends.as_deref(), recipes).0 {
        add(&r.1.build, &r.1.test, &r.1.lint, &r.1.audit, &r.1.commands);
    }
    names.into_iter().collect()
}

/// The recipes reached from `first` through `extends`, nearest first; stops at a
/// missing recipe (returned as the second value) or a cycle.
fn chain<'r>(
    first: Option<&str>,
    recipes: &'r BTreeMap<String, RecipeSpec>,
) -> (Vec<(&'r str, &'r RecipeSpec)>, Option<String>) {
    let mut out: Vec<(&str, &RecipeSpec)> = Vec::new();
    let mut next = first.map(str::to_owned);
    while let Some(name) = next {
        if out.iter().any(|(n, _)| *n == name) {
            break;
        }
        match recipes.get_key_value(&name) {
            Some((k, r)) => {
                out.push((k.as_str(), r));
                next = r.extends.clone();
            }
            None => return (out, Some(name)),
        }
    }
    (out, None)
}

fn command_of<'a>(
    build: &'a Option<String>,
    test: &'a Option<String>,
    lint: &'a Option<String>,
    audit: &'a Option<String>,
    commands: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<&'a String> {
    match name {
        "build" => build.as_ref(),
        "test" => test.as_ref(),
        "lint" => lint.as_ref(),
        "audit" => audit.as_ref(),
        other => commands.get(other),
    }
}

/// Finds the subproject `path` of a project (paths compared after normalising).
pub fn find_subproject<'p>(project: &'p ProjectSpec, path: &str) -> Option<&'p Subproject> {
    let want = normalize_subproject_path(path).ok()?;
    project
        .subprojects
        .iter()
        .find(|sp| normalize_subproject_path(&sp.path).ok().as_deref() == Some(want.as_str()))
}

/// Resolves command `name` of subproject `path` of `project`.
pub fn resolve(
    project: &ProjectSpec,
    path: &str,
    name: &str,
    recipes: &BTreeMap<String, RecipeSpec>,
) -> Result<Resolved, ResolveError> {
    let sp = find_subproject(project, path).ok_or_else(|| ResolveError::UnknownSubproject {
        given: path.to_owned(),
        known: project.subprojects.iter().map(|s| s.path.clone()).collect(),
    })?;
    let (recipe_chain, missing) = chain(sp.extends.as_deref(), recipes);
    if let Some(m) = missing {
        return Err(ResolveError::MissingRecipe(m));
    }
    let own = command_of(&sp.build, &sp.test, &sp.lint, &sp.audit, &sp.commands, name);
    let (command, command_from) = match own {
        Some(c) => (c.clone(), "subproject".to_owned()),
        None => recipe_chain
            .iter()
            .find_map(|(rn, r)| {
                command_of(&r.build, &r.test, &r.lint, &r.audit, &r.commands, name)
                    .map(|c| (c.clone(), format!("recipe:{rn}")))
            })
            .ok_or_else(|| ResolveError::UnknownCommand {
                subproject: sp.path.clone(),
                given: name.to_owned(),
                known: command_names(sp, recipes),
            })?,
    };
    let timeout_secs = sp
        .timeout_secs
        .or_else(|| recipe_chain.iter().find_map(|(_, r)| r.timeout_secs))
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    let network = sp
        .network
        .or_else(|| recipe_chain.iter().find_map(|(_, r)| r.network))
        .unwrap_or(true);
    let workspace = sp
        .workspace
        .or_else(|| recipe_chain.iter().find_map(|(_, r)| r.workspace))
        .unwrap_or_default();
    let language = sp
        .language
        .clone()
        .or_else(|| recipe_chain.iter().find_map(|(_, r)| r.language.clone()));
    // Farthest recipe first, so nearer ones and the subproject override it.
    let mut env = BTreeMap::new();
    for (_, r) in recipe_chain.iter().rev() {
        env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    env.extend(sp.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Resolved {
        patch: None,
        subproject: normalize_subproject_path(&sp.path).unwrap_or_else(|_| sp.path.clone()),
        recipe: name.to_owned(),
        command,
        timeout_secs,
        env,
        language,
        extends: recipe_chain.iter().map(|(n, _)| (*n).to_owned()).collect(),
        command_from,
        network,
        workspace,
        secrets: {
            let mut names: Vec<String> = recipe_chain
                .iter()
                .flat_map(|(_, r)| r.secrets.iter().cloned())
                .chain(sp.secrets.iter().cloned())
                .collect();
            names.sort();
            names.dedup();
            names
        },
    })
}
