//! Manifests: the YAML documents of the registry, read into typed objects.
//!
//! Pure code: [`load`] takes file names and their text and returns the objects that
//! passed every check plus one [`Diagnostic`] per problem, all of them, each with the
//! file, line and column it is about. It never touches the filesystem; the
//! `registry` module finds the files and the reconciler decides what the result means
//! for the ledger.
//!
//! A document goes through three stages:
//! 1. the event parser builds a position tree ([`yaml`]) and reports syntax errors;
//! 2. serde reads the document into the struct of its `kind` ([`types`]); unknown
//!    fields, wrong types and missing fields are errors at the position serde gives;
//! 3. [`check`] runs the rules that span fields and documents (names, references,
//!    cron, time zones, paths, ranges, addresses).

pub mod check;
pub mod resolve;
pub mod schema;
pub mod types;
pub mod yaml;

use std::fmt;

use serde::de::DeserializeOwned;

pub use types::*;
use yaml::{Node, NodeValue, Pos};

/// One manifest file handed to [`load`].
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path shown in diagnostics (usually relative to the working directory).
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The object it is about is not applied.
    Error,
    /// Worth knowing; nothing is rejected.
    Warning,
}

/// A problem found in a manifest, at a position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// File the problem is in.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one sentence, without a trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            ),
            Severity::Warning => write!(
                f,
                "{}:{}:{}: warning: {}",
                self.file, self.line, self.col, self.message
            ),
        }
    }
}

/// The four kinds of manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    /// A git repository to build.
    Project,
    /// A reusable command set.
    Recipe,
    /// A cron-driven run.
    Schedule,
    /// Digest recipients.
    NotifyRule,
}

impl Kind {
    /// Every kind, in the order objects are applied.
    pub const ALL: [Kind; 4] = [
        Kind::Recipe,
        Kind::Project,
        Kind::Schedule,
        Kind::NotifyRule,
    ];

    /// The `kind:` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Project => "Project",
            Kind::Recipe => "Recipe",
            Kind::Schedule => "Schedule",
            Kind::NotifyRule => "NotifyRule",
        }
    }

    /// Reads a `kind:` value.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec of an object, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// A `Project`'s spec.
    Project(ProjectSpec),
    /// A `Recipe`'s spec.
    Recipe(RecipeSpec),
    /// A `Schedule`'s spec.
    Schedule(ScheduleSpec),
    /// A `NotifyRule`'s spec.
    NotifyRule(NotifyRuleSpec),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Project(_) => Kind::Project,
            Spec::Recipe(_) => Kind::Recipe,
            Spec::Schedule(_) => Kind::Schedule,
            Spec::NotifyRule(_) => Kind::NotifyRule,
        }
    }

    /// The spec as canonical JSON (what the ledger stores and the reconciler compares).
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Spec::Project(s) => serde_json::to_value(s),
            Spec::Recipe(s) => serde_json::to_value(s),
            Spec::Schedule(s) => serde_json::to_value(s),
            Spec::NotifyRule(s) => serde_json::to_value(s),
        };
        // These types are plain data with string keys; serialising them cannot fail.
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// An object that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `metadata.name`.
    pub name: String,
    /// The whole metadata block.
    pub metadata: Metadata,
    /// The typed spec.
    pub spec: Spec,
    /// File it came from.
    pub file: String,
    /// Where its document starts.
    pub line: usize,
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
}

/// A document that was rejected, with whatever identity could be read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// File the document is in.
    pub file: String,
    /// Its kind, when `kind:` was readable.
    pub kind: Option<Kind>,
    /// Its name, when `metadata.name` was readable.
    pub name: Option<String>,
    /// The errors that rejected it (the first one is the one shown in status).
    pub errors: Vec<Diagnostic>,
}

/// What [`load`] found.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Objects that passed every check, in file order.
    pub objects: Vec<Object>,
    /// Every problem found, errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents (or whole files) that were not applied because of an error.
    pub rejected: Vec<Rejected>,
}

impl Loaded {
    /// Number of error diagnostics.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Whether nothing was rejected.
    pub fn is_clean(&self) -> bool {
        self.error_count() == 0
    }

    /// How many accepted objects there are of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.objects.iter().filter(|o| o.kind() == kind).count()
    }
}

/// A document that serde read, not yet checked.
struct Parsed {
    file_idx: usize,
    tree: Node,
    metadata: Metadata,
    spec: Spec,
}

/// Reads and checks every manifest document of `files`.
pub fn load(files: &[SourceFile]) -> Loaded {
    let mut out = Loaded::default();
    let mut parsed: Vec<Parsed> = Vec::new();
    for (file_idx, file) in files.iter().enumerate() {
        let trees = match yaml::parse_documents(&file.text) {
            Ok(t) => t,
            Err(e) => {
                out.diagnostics.push(Diagnostic {
                    file: file.path.clone(),
                    line: e.pos.line,
                    col: e.pos.col,
                    severity: Severity::Error,
                    message: format!("invalid YAML: {}", e.message),
                });
                let diag = out.diagnostics.last().cloned();
                out.rejected.push(Rejected {
                    file: file.path.clone(),
                    kind: None,
                    name: None,
                    errors: diag.into_iter().collect(),
                });
                continue;
            }
        };
        let docs = serde_yaml::Deserializer::from_str(&file.text);
        // Both parsers see the same stream; empty documents are skipped by both sides
        // of the pairing below.
        let mut serde_docs = docs.into_iter();
        for tree in trees {
            let de = serde_docs.next();
            if tree.is_null() {
                continue;
            }
            match read_document(&file.path, &tree, de) {
                Ok((metadata, spec)) => parsed.push(Parsed {
                    file_idx,
                    tree,
                    metadata,
                    spec,
                }),
                Err(err) => {
                    let (diag, mut rejected) = *err;
                    rejected.errors.push(diag.clone());
                    out.diagnostics.push(diag);
                    out.rejected.push(rejected);
                }
            }
        }
    }

    let cands: Vec<check::Candidate<'_>> = parsed
        .iter()
        .map(|p| check::Candidate {
            file: &files[p.file_idx].path,
            tree: &p.tree,
            name: &p.metadata.name,
            spec: &p.spec,
        })
        .collect();
    let per = check::check_all(&cands);
    for (p, diags) in parsed.into_iter().zip(per) {
        let file = files[p.file_idx].path.clone();
        let errors: Vec<Diagnostic> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .cloned()
            .collect();
        out.diagnostics.extend(diags);
        if errors.is_empty() {
            out.objects.push(Object {
                name: p.metadata.name.clone(),
                line: p.tree.pos.line,
                metadata: p.metadata,
                spec: p.spec,
                file,
            });
        } else {
            out.rejected.push(Rejected {
                file,
                kind: Some(p.spec.kind()),
                name: Some(p.metadata.name),
                errors,
            });
        }
    }
    out.diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.col, &a.message).cmp(&(&b.file, b.line, b.col, &b.message))
    });
    out.diagnostics.dedup();
    out
}

type DocError = Box<(Diagnostic, Rejected)>;

fn read_document(
    file: &str,
    tree: &Node,
    de: Option<serde_yaml::Deserializer<'_>>,
) -> Result<(Metadata, Spec), DocError> {
    let name = tree
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .map(str::to_owned);
    let fail = |pos: Pos, kind: Option<Kind>, message: String| -> DocError {
        Box::new((
            Diagnostic {
                file: file.to_owned(),
                line: pos.line,
                col: pos.col,
                severity: Severity::Error,
                message,
            },
            Rejected {
                file: file.to_owned(),
                kind,
                name: name.clone(),
                errors: Vec::new(),
            },
        ))
    };
    if !matches!(tree.value, NodeValue::Map(_)) {
        return Err(fail(
            tree.pos,
            None,
            "a manifest document must be a mapping with apiVersion, kind, metadata and spec"
                .to_owned(),
        ));
    }
    if let Some((key, pos, first)) = yaml::duplicate_keys(tree).into_iter().next() {
        let kind = tree
            .get("kind")
            .and_then(Node::as_str)
            .and_then(Kind::parse);
        return Err(fail(
            pos,
            kind,
            format!("duplicate key `{key}` (first set at line {})", first.line),
        ));
    }
    let kind = match tree.get("kind") {
        None => return Err(fail(tree.pos, None, "missing field `kind`".to_owned())),
        Some(node) => match node.as_str().and_then(Kind::parse) {
            Some(k) => k,
            None => {
                let shown = node.as_str().unwrap_or("(not a string)");
                return Err(fail(
                    node.pos,
                    None,
                    format!(
                        "unknown kind `{shown}`, expected one of Project, Recipe, Schedule, NotifyRule"
                    ),
                ));
            }
        },
    };
    let Some(de) = de else {
        return Err(fail(
            tree.pos,
            Some(kind),
            "document could not be read".to_owned(),
        ));
    };
    let typed = |e: serde_yaml::Error| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                col: l.column(),
            })
            .unwrap_or(tree.pos);
        fail(pos, Some(kind), serde_message(&e))
    };
    fn read<T: DeserializeOwned>(de: serde_yaml::Deserializer<'_>) -> Result<T, serde_yaml::Error> {
        T::deserialize(de)
    }
    let (metadata, spec) = match kind {
        Kind::Project => read::<ProjectDoc>(de)
            .map(|d| (d.metadata, Spec::Project(d.spec)))
            .map_err(typed)?,
        Kind::Recipe => read::<RecipeDoc>(de)
            .map(|d| (d.metadata, Spec::Recipe(d.spec)))
            .map_err(typed)?,
        Kind::Schedule => read::<ScheduleDoc>(de)
            .map(|d| (d.metadata, Spec::Schedule(d.spec)))
            .map_err(typed)?,
        Kind::NotifyRule => read::<NotifyRuleDoc>(de)
            .map(|d| (d.metadata, Spec::NotifyRule(d.spec)))
            .map_err(typed)?,
    };
    Ok((metadata, spec))
}

/// serde_yaml's message without the trailing "at line N column M", which the
/// diagnostic already shows in front.
fn serde_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) if text[i..].contains(" column ") => text[..i].to_owned(),
        _ => text,
    }
}
