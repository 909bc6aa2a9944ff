//! The typed shape of the four manifest kinds.
//!
//! These structs are the single source of truth for the manifest format: serde reads
//! them from YAML (unknown fields are errors), schemars turns them into the JSON
//! Schemas committed under `schema/`, and the reconciler stores them as JSON.
//! Field names are snake_case, the same as in the HTTP API.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "crafting-table/v1";

/// `apiVersion: crafting-table/v1`, the only accepted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// Version 1 of the manifest format.
    #[serde(rename = "crafting-table/v1")]
    V1,
}

/// Identity of a manifest object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Name of the object: lowercase letters, digits and `-`, starting and ending with
    /// a letter or digit, at most 63 characters (a DNS label).
    pub name: String,
    /// Free text shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Arbitrary key/value labels, for people and tools; the farm does not read them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

macro_rules! kind_marker {
    ($name:ident, $lit:literal) => {
        #[doc = concat!("`kind: ", $lit, "`.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            #[doc = concat!("The `", $lit, "` kind.")]
            #[serde(rename = $lit)]
            Kind,
        }
    };
}
kind_marker!(ProjectKind, "Project");
kind_marker!(RecipeKind, "Recipe");
kind_marker!(ScheduleKind, "Schedule");
kind_marker!(NotifyRuleKind, "NotifyRule");

macro_rules! document {
    ($doc:ident, $kind:ident, $spec:ident, $what:literal) => {
        #[doc = concat!("A whole `", $what, "` manifest document.")]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $doc {
            /// Always `crafting-table/v1`.
            #[serde(rename = "apiVersion")]
            pub api_version: ApiVersion,
            #[doc = concat!("Always `", $what, "`.")]
            pub kind: $kind,
            /// Name and labels.
            pub metadata: Metadata,
            /// The object itself.
            pub spec: $spec,
        }
    };
}
document!(ProjectDoc, ProjectKind, ProjectSpec, "Project");
document!(RecipeDoc, RecipeKind, RecipeSpec, "Recipe");
document!(ScheduleDoc, ScheduleKind, ScheduleSpec, "Schedule");
document!(NotifyRuleDoc, NotifyRuleKind, NotifyRuleSpec, "NotifyRule");

/// A git repository the farm builds, tests and audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    /// Where to clone from: an `http(s)://`, `ssh://`, `git://` or `file://` URL,
    /// `user@host:path`, or a filesystem path relative to the registry root.
    pub git_url: String,
    /// Branch that jobs build when no `ref` is given.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Languages used in the repository (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Token names that may see and run this project; admin tokens see every project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Directories of the repository with their commands; at least one.
    pub subprojects: Vec<Subproject>,
    /// Who hears about this project's jobs, and whether fixes are drafted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<ProjectNotify>,
    /// The repository on the forge (Gitea) when its owner and name differ from
    /// `git_url`'s: where automatic fixes are pushed and proposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeRepo>,
    /// How many jobs of this project may run at once (1 to 64).
    #[serde(default = "default_max_concurrent_jobs")]
    pub max_concurrent_jobs: u32,
    /// While set, schedules do not fire for this project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<Suspend>,
    /// Serve `/badge/{project}/{command}.svg` without a token (for READMEs): the
    /// last status of each command becomes public on the farm's networks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_badges: bool,
}

fn default_branch() -> String {
    "main".to_owned()
}

fn default_max_concurrent_jobs() -> u32 {
    1
}

/// One directory of a project and the commands that run in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subproject {
    /// Directory relative to the repository root (`.` for the root); may not leave it.
    pub path: String,
    /// Language whose parsers read this subproject's job output (e.g. `rust`, `python`).
    /// Inherited from the recipe named in `extends` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Name of a `Recipe` whose commands, timeout and env this subproject inherits;
    /// anything set here overrides the recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Build command, run with `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Test command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Lint command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint: Option<String>,
    /// Audit command (dependency vulnerabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
    /// Any other named command, e.g. `bench: cargo bench`; a job's `recipe` names one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, String>,
    /// Seconds a command may run before its whole process group is killed (1 to 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Whether the commands may use the network inside the job sandbox (default
    /// true: builds fetch dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    /// `warm` (default): the job runs in a worktree kept from an earlier job of the
    /// project, reset to exactly the commit (forced checkout, `git clean -ffdx`);
    /// `fresh`: a new worktree for every job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceMode>,
    /// Names of secrets the commands receive as environment variables (values from
    /// `CRAFTING_SECRET_<NAME>` or the data directory's `secrets.toml`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Extra environment variables for the commands.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// How a job's worktree is prepared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceMode {
    /// A worktree kept between the project's jobs, reset to the job's commit.
    #[default]
    Warm,
    /// A new worktree for every job, removed after it.
    Fresh,
}

/// A reusable set of commands for a language that subprojects `extends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    /// Language of the projects that use this recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Another `Recipe` this one builds on; its values are overridden by this one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Build command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Test command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Lint command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint: Option<String>,
    /// Audit command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
    /// Any other named command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, String>,
    /// Default timeout of the commands, in seconds (1 to 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Whether the commands may use the network inside the job sandbox (default
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    /// `warm` (default) or `fresh`: how the commands' worktrees are prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceMode>,
    /// Names of secrets the commands receive (inherited by subprojects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Environment variables for the commands.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// Run one named command of matching projects on a cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five-field cron expression (minute hour day-of-month month day-of-week).
    pub cron: String,
    /// IANA time zone the cron expression is read in (e.g. `America/Los_Angeles`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Project names, or `"*"` for every active project.
    pub projects: Selector,
    /// Subproject paths, or `all`.
    #[serde(default = "Selector::all")]
    pub subprojects: Selector,
    /// The command to run (`audit`, `test`, …); subprojects without it are skipped.
    pub recipe: String,
    /// What to do when the previous run of this schedule is still queued or running.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// While set, the schedule does not fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<Suspend>,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// A set of names: `"*"`/`all` for everything, or an explicit list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `"*"` or `all`.
    All,
    /// The listed names only.
    Names(Vec<String>),
}

impl Selector {
    /// The selector that matches everything.
    pub fn all() -> Self {
        Selector::All
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Names(names) => names.iter().any(|n| n == name || n == "*"),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selector::All => s.serialize_str("*"),
            Selector::Names(names) => names.serialize(s),
        }
    }
}

impl JsonSchema for Selector {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Selector".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`\"*\"` or `all` for everything, or a list of names.",
            "anyOf": [
                {"type": "string", "enum": ["*", "all"]},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// Overlap policy of a schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// Skip the fire while the previous run is queued or running.
    #[default]
    Forbid,
    /// Run both.
    Allow,
    /// Cancel the previous run, then start the new one.
    Replace,
}

/// Pause firing, with who and why; `until` resumes by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Suspend {
    /// Why it is suspended, shown in the API.
    pub reason: String,
    /// Who suspended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// RFC 3339 instant after which it resumes by itself (e.g. `2026-12-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// One address or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Emails {
    /// A single address.
    One(String),
    /// Several addresses.
    Many(Vec<String>),
}

/// A repository on the forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgeRepo {
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
}

/// Notification settings inside a `Project`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectNotify {
    /// Recipients of this project's digest section; none means the project is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Emails>,
    /// Events that are reported; empty means `audit_fail`, `cve_found`, `patch_drafted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<NotifyEvent>,
    /// Draft, verify and open pull requests for actionable findings.
    #[serde(default)]
    pub auto_patch: bool,
}

/// Events that notifications and the digest report.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A passing audit job.
    AuditPass,
    /// A failing audit job.
    AuditFail,
    /// A failing test job.
    TestFail,
    /// A lint job with warning-severity findings.
    LintWarn,
    /// Any job whose findings include a `cve`.
    CveFound,
    /// An automatic patch was drafted.
    PatchDrafted,
    /// Every job of the project.
    NightlySummary,
}

impl NotifyEvent {
    /// The events used when a rule lists none.
    pub const DEFAULT: [NotifyEvent; 3] = [
        NotifyEvent::AuditFail,
        NotifyEvent::CveFound,
        NotifyEvent::PatchDrafted,
    ];

    /// The name manifests and JSON use for this event.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::AuditPass => "audit_pass",
            NotifyEvent::AuditFail => "audit_fail",
            NotifyEvent::TestFail => "test_fail",
            NotifyEvent::LintWarn => "lint_warn",
            NotifyEvent::CveFound => "cve_found",
            NotifyEvent::PatchDrafted => "patch_drafted",
            NotifyEvent::NightlySummary => "nightly_summary",
        }
    }
}

/// Who gets the daily digest for which projects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyRuleSpec {
    /// Project names, or `"*"`.
    pub projects: Selector,
    /// Recipients of the daily digest. A rule needs `email`, `webhook` or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Emails>,
    /// Where matching events are POSTed at once, signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// Events reported; empty means `audit_fail`, `cve_found`, `patch_drafted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<NotifyEvent>,
    /// When the digest is sent.
    #[serde(default)]
    pub digest: DigestTime,
}

/// An endpoint that hears matching events at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Name of an environment variable of the farm holding the HMAC-SHA256 key; the
    /// body's signature goes in `X-Crafting-Signature-256: sha256=<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// Local time of day and time zone of a daily digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestTime {
    /// `HH:MM`, 24-hour clock.
    #[serde(default = "default_digest_time")]
    pub time: String,
    /// IANA time zone.
    #[serde(default = "default_digest_timezone")]
    pub timezone: String,
}

impl Default for DigestTime {
    fn default() -> Self {
        DigestTime {
            time: default_digest_time(),
            timezone: default_digest_timezone(),
        }
    }
}

fn default_digest_time() -> String {
    "06:00".to_owned()
}

fn default_digest_timezone() -> String {
    "America/Los_Angeles".to_owned()
}

/// Reads "a string or a list of strings" with a clear error, raised while the value
/// is being read so that it keeps its position (serde's untagged enums lose both).
struct StringOrList {
    expecting: &'static str,
    /// Checks a single string; `Err` is the message.
    check_one: fn(&str) -> Result<(), String>,
}

impl<'de> serde::de::Visitor<'de> for StringOrList {
    type Value = Result<String, Vec<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        (self.check_one)(v).map_err(E::custom)?;
        Ok(Ok(v.to_owned()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            out.push(item);
        }
        Ok(Err(out))
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = StringOrList {
            expecting: "\"*\", `all` or a list of names",
            check_one: |s| {
                if s == "*" || s == "all" {
                    Ok(())
                } else {
                    Err(format!(
                        "`{s}` is not a selector: use \"*\", `all` or a list such as [{s}]"
                    ))
                }
            },
        };
        Ok(match d.deserialize_any(visitor)? {
            Ok(_) => Selector::All,
            Err(names) => Selector::Names(names),
        })
    }
}

impl<'de> Deserialize<'de> for Emails {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = StringOrList {
            expecting: "an e-mail address or a list of them",
            check_one: |_| Ok(()),
        };
        Ok(match d.deserialize_any(visitor)? {
            Ok(one) => Emails::One(one),
            Err(many) => Emails::Many(many),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::NotifyEvent;

    #[test]
    fn notify_event_names_match_their_serde_names() {
        let all = [
            NotifyEvent::AuditPass,
            NotifyEvent::AuditFail,
            NotifyEvent::TestFail,
            NotifyEvent::LintWarn,
            NotifyEvent::CveFound,
            NotifyEvent::PatchDrafted,
            NotifyEvent::NightlySummary,
        ];
        for e in all {
            assert_eq!(
                serde_json::to_value(e).ok(),
                Some(serde_json::Value::String(e.as_str().to_owned()))
            );
        }
    }
}
