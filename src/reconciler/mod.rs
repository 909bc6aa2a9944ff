//! The reconciler: keeps the ledger equal to the registry.
//!
//! One reconcile is fetch → [`crate::manifest::load`] (both without the ledger:
//! [`read_registry`]) → [`Ledger::snapshot`] → [`plan::plan`] →
//! [`Ledger::apply_reconcile`], the last step in one SQLite transaction
//! ([`apply_read`]). [`reconcile`] is that for the farm; the loop ([`looped`]) waits
//! for a trigger (file event, webhook, API call) or its timer, whichever comes
//! first.

pub mod looped;
pub mod plan;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use plan::{Action, Change, Plan, plan};

use crate::clock::SharedClock;
use crate::ledger::{
    Db, Ledger, LedgerError, ManifestStatus, ObjectWrite, ReconcileRecord, RegistryStatus,
};
use crate::manifest::{self, Diagnostic, Kind, Loaded, Severity};
use crate::registry::{Fetched, Registry, RegistryError};

/// When to reconcile again, decided by the outcome of the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look again after this long (a git registry's poll interval, or backoff).
    After(Duration),
}

/// Why a reconcile did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The registry could not be read; the last applied state stays in force.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What one reconcile did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Revision applied.
    pub revision: String,
    /// The plan that was applied.
    pub plan: Plan,
    /// Every diagnostic of the registry (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// Active objects per kind after applying.
    pub counts: BTreeMap<Kind, usize>,
    /// How long it took.
    pub duration: Duration,
}

impl Outcome {
    /// Number of error diagnostics.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Backoff after `failures` consecutive failed attempts: 5 s doubling to 5 min.
pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(300))
}

/// Loads the fetched registry, with unreadable files counted as errors.
pub fn load_fetched(fetched: &Fetched) -> Loaded {
    let mut loaded = manifest::load(&fetched.files);
    for d in &fetched.unreadable {
        loaded.rejected.push(manifest::Rejected {
            file: d.file.clone(),
            kind: None,
            name: None,
            errors: vec![d.clone()],
        });
        loaded.diagnostics.push(d.clone());
    }
    loaded
}

/// Builds what the ledger must record for a plan.
pub fn record_for(
    source: &str,
    fetched_revision: &str,
    loaded: &Loaded,
    plan: &Plan,
    snapshot: &crate::ledger::Snapshot,
    now_ms: i64,
    duration: Duration,
) -> ReconcileRecord {
    let mut writes = Vec::new();
    let mut statuses = Vec::new();
    for c in &plan.changes {
        let previous_rev = snapshot
            .get(&(c.kind, c.name.clone()))
            .and_then(|s| s.manifest_revision.clone());
        match &c.action {
            Action::Create | Action::Update(_) => {
                if let (Some(spec), Some(file)) = (&c.spec, &c.file) {
                    writes.push(ObjectWrite::Upsert {
                        kind: c.kind,
                        name: c.name.clone(),
                        spec: spec.clone(),
                        file: file.clone(),
                    });
                    statuses.push(status(
                        file,
                        c.kind.as_str(),
                        &c.name,
                        Some(fetched_revision.to_owned()),
                        None,
                    ));
                }
            }
            Action::Unchanged => {
                if let Some(file) = &c.file {
                    statuses.push(status(file, c.kind.as_str(), &c.name, previous_rev, None));
                }
            }
            Action::Conflict => {
                if let Some(file) = &c.file {
                    let mut s = status(file, c.kind.as_str(), &c.name, None, None);
                    s.last_error = Some(format!(
                        "{} `{}` is registered through the API; the API's object is kept and this manifest is ignored",
                        c.kind, c.name
                    ));
                    statuses.push(s);
                }
            }
            Action::Retire => writes.push(ObjectWrite::Retire {
                kind: c.kind,
                name: c.name.clone(),
            }),
            Action::KeptLastGood => {}
        }
    }
    for r in &loaded.rejected {
        let previous_rev = match (r.kind, &r.name) {
            (Some(k), Some(n)) => snapshot
                .get(&(k, n.clone()))
                .filter(|s| s.retired_at.is_none())
                .and_then(|s| s.manifest_revision.clone()),
            _ => None,
        };
        statuses.push(status(
            &r.file,
            r.kind.map_or("", Kind::as_str),
            r.name.as_deref().unwrap_or(""),
            previous_rev,
            r.errors.first(),
        ));
    }
    let mut counts = serde_json::Map::new();
    for kind in Kind::ALL {
        counts.insert(kind.as_str().to_owned(), loaded.count(kind).into());
    }
    counts.insert("errors".to_owned(), loaded.error_count().into());
    let last_error = match loaded.error_count() {
        0 => None,
        n => Some(format!(
            "{n} manifest error{}; the last good version of each affected object stays in force",
            if n == 1 { "" } else { "s" }
        )),
    };
    ReconcileRecord {
        writes,
        statuses,
        registry: RegistryStatus {
            source: source.to_owned(),
            revision: Some(fetched_revision.to_owned()),
            last_attempt_at: Some(now_ms),
            last_success_at: Some(now_ms),
            duration_ms: Some(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
            last_error,
            counts: serde_json::Value::Object(counts),
        },
        revision: fetched_revision.to_owned(),
        now: now_ms,
    }
}

fn status(
    file: &str,
    kind: &str,
    name: &str,
    revision_applied: Option<String>,
    error: Option<&Diagnostic>,
) -> ManifestStatus {
    ManifestStatus {
        file: file.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        revision_applied,
        last_error: error.map(|d| d.message.clone()),
        error_line: error.map(|d| d.line as i64),
        error_col: error.map(|d| d.col as i64),
    }
}

/// Reconciles once: reads the registry and applies it to the ledger. Blocking,
/// and it holds `ledger` through the fetch: for tools and tests. The farm uses
/// [`reconcile`], which fetches before it takes the ledger.
///
/// A registry that cannot be read is recorded in the registry status and returned
/// as an error; nothing else in the ledger changes.
pub fn reconcile_once(
    registry: &Registry,
    ledger: &mut Ledger,
    now_ms: i64,
) -> Result<Outcome, ReconcileError> {
    let started = Instant::now();
    let read = read_registry(registry);
    apply_read(&registry.describe(), read, ledger, now_ms, started)
}

/// What reading the registry gave: the loaded manifests at a revision, or why it
/// could not be read.
pub type Read = Result<(Fetched, Loaded), RegistryError>;

/// Fetches and parses the registry. Blocking; touches no ledger.
pub fn read_registry(registry: &Registry) -> Read {
    let fetched = registry.fetch()?;
    let loaded = load_fetched(&fetched);
    Ok((fetched, loaded))
}

/// Applies what [`read_registry`] gave to the ledger: SQL only.
pub fn apply_read(
    source: &str,
    read: Read,
    ledger: &mut Ledger,
    now_ms: i64,
    started: Instant,
) -> Result<Outcome, ReconcileError> {
    let (fetched, loaded) = match read {
        Ok(r) => r,
        Err(e) => {
            let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            ledger.record_registry_failure(source, &e.0, now_ms, ms)?;
            return Err(e.into());
        }
    };
    let snapshot = ledger.snapshot()?;
    let the_plan = plan(&loaded, &snapshot);
    let record = record_for(
        source,
        &fetched.revision,
        &loaded,
        &the_plan,
        &snapshot,
        now_ms,
        started.elapsed(),
    );
    ledger.apply_reconcile(&record)?;
    let counts = Kind::ALL.iter().map(|k| (*k, loaded.count(*k))).collect();
    Ok(Outcome {
        revision: fetched.revision,
        plan: the_plan,
        diagnostics: loaded.diagnostics,
        counts,
        duration: started.elapsed(),
    })
}

/// Reconciles once for the farm: the registry is fetched and parsed on a blocking
/// thread without the ledger (a slow or silent remote holds nobody up), then the
/// result is applied on the write connection.
pub async fn reconcile(
    registry: &Registry,
    db: &Db,
    clock: &SharedClock,
) -> Result<Outcome, ReconcileError> {
    let started = Instant::now();
    let reg = registry.clone();
    let read = match tokio::task::spawn_blocking(move || read_registry(&reg)).await {
        Ok(r) => r,
        Err(e) => Err(RegistryError(format!("registry read failed: {e}"))),
    };
    let source = registry.describe();
    let now = clock.now_ms();
    db.write(move |l| Ok(apply_read(&source, read, l, now, started)))
        .await?
}
