//! The one way a job comes to exist.
//!
//! The API, the scheduler and the patch loop's verify runs all turn "run command C
//! of project P (subproject S, ref R)" into a queued job here: the project is looked
//! up and its stored spec decoded ([`project_spec`], the only place that decodes
//! it), the command resolved through recipe inheritance into the snapshot the job
//! will run, the ref checked, and the job inserted — coalesced with an identical
//! job still queued. The branch, tag or sha is resolved to a commit by the runner
//! when it fetches (a fetch is network I/O and never happens under the ledger).

use std::collections::BTreeMap;

use crate::ledger::{Job, LedgerError, NewJob, Snapshot, Source, StoredObject, Trigger};
use crate::manifest::resolve::{ResolveError, resolve};
use crate::manifest::{Kind, ProjectSpec, RecipeSpec};

/// Why a job could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// No such project.
    #[error("no project `{0}`")]
    UnknownProject(String),
    /// The project was removed from the registry.
    #[error("project `{0}` is retired (removed from the registry); it runs nothing")]
    Retired(String),
    /// The stored spec does not decode (written by another version).
    #[error("stored spec of project `{0}` is unreadable: {1}")]
    Unreadable(String, String),
    /// Subproject or command not found, or a recipe it extends is missing.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The ref is not a valid branch, tag or commit name.
    #[error("ref `{0}` is not a valid branch, tag or commit name")]
    BadRef(String),
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// Project name.
    pub project: String,
    /// Subproject path (default: `.` when it exists, else the first).
    pub subproject: Option<String>,
    /// Command name (`test`, `lint`, any named command).
    pub recipe: String,
    /// Branch, tag or sha (default: the project's default branch).
    pub git_ref: Option<String>,
    /// What asks for it.
    pub trigger: Trigger,
    /// The schedule that fired it, if any.
    pub schedule: Option<String>,
}

/// Decodes a stored project's spec: the one place that does.
pub fn project_spec(o: &StoredObject) -> Result<ProjectSpec, EnqueueError> {
    serde_json::from_value(o.spec.clone())
        .map_err(|e| EnqueueError::Unreadable(o.name.clone(), e.to_string()))
}

/// The active recipes of a snapshot, decoded.
pub fn recipes(snapshot: &Snapshot) -> BTreeMap<String, RecipeSpec> {
    snapshot
        .values()
        .filter(|o| o.kind == Kind::Recipe && o.retired_at.is_none())
        .filter_map(|o| Some((o.name.clone(), serde_json::from_value(o.spec.clone()).ok()?)))
        .collect()
}

/// Projects and recipes as the ledger holds them, for resolving jobs.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    snapshot: Snapshot,
    recipes: BTreeMap<String, RecipeSpec>,
}

/// A project as the catalog decodes it.
#[derive(Debug, Clone)]
pub struct CatalogProject<'a> {
    /// The stored row.
    pub stored: &'a StoredObject,
    /// Its spec.
    pub spec: ProjectSpec,
}

impl CatalogProject<'_> {
    /// Whether it came from the registry (a relative `git_url` is then relative
    /// to the registry directory).
    pub fn from_registry(&self) -> bool {
        self.stored.source == Source::Registry
    }
}

impl Catalog {
    /// A catalog over a ledger snapshot.
    pub fn new(snapshot: Snapshot) -> Catalog {
        let recipes = recipes(&snapshot);
        Catalog { snapshot, recipes }
    }

    /// The snapshot it was built from.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// A project, retired or not.
    pub fn project(&self, name: &str) -> Result<CatalogProject<'_>, EnqueueError> {
        let stored = self
            .snapshot
            .get(&(Kind::Project, name.to_owned()))
            .ok_or_else(|| EnqueueError::UnknownProject(name.to_owned()))?;
        Ok(CatalogProject {
            stored,
            spec: project_spec(stored)?,
        })
    }

    /// Every active (not retired) project, decoded or with why it is unreadable.
    pub fn active_projects(
        &self,
    ) -> impl Iterator<Item = (&StoredObject, Result<ProjectSpec, EnqueueError>)> {
        self.snapshot
            .values()
            .filter(|o| o.kind == Kind::Project && o.retired_at.is_none())
            .map(|o| (o, project_spec(o)))
    }

    /// Resolves a request into the job to insert. Pure.
    pub fn new_job(&self, req: &JobRequest) -> Result<NewJob, EnqueueError> {
        let project = self.project(&req.project)?;
        if project.stored.retired_at.is_some() {
            return Err(EnqueueError::Retired(req.project.clone()));
        }
        let spec = &project.spec;
        let subproject = req
            .subproject
            .clone()
            .unwrap_or_else(|| default_subproject(spec));
        let resolved = resolve(spec, &subproject, &req.recipe, &self.recipes)?;
        let git_ref = req
            .git_ref
            .clone()
            .unwrap_or_else(|| spec.default_branch.clone());
        if !valid_ref(&git_ref) {
            return Err(EnqueueError::BadRef(git_ref));
        }
        Ok(NewJob {
            project: req.project.clone(),
            subproject: resolved.subproject.clone(),
            recipe: req.recipe.clone(),
            trigger: req.trigger,
            schedule: req.schedule.clone(),
            git_ref,
            snapshot: serde_json::to_value(&resolved).unwrap_or_default(),
        })
    }
}

/// The subproject a request without one runs in: `.` when the project has it,
/// else its first.
pub fn default_subproject(spec: &ProjectSpec) -> String {
    if spec
        .subprojects
        .iter()
        .any(|s| s.path == "." || s.path == "./")
    {
        ".".to_owned()
    } else {
        spec.subprojects
            .first()
            .map_or_else(|| ".".to_owned(), |s| s.path.clone())
    }
}

/// Whether `r` can name a branch, tag or commit (and cannot be taken for an
/// option by git).
pub fn valid_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && !r.starts_with('-')
        && !r.contains("..")
        && r.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"~^:?*[\\".contains(c))
}

/// The outcome of an enqueue: the job, and whether an identical queued job was
/// returned instead of a new one.
pub type Enqueued = (Job, bool);
