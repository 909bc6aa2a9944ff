//! Manifest objects in the ledger: recipes, projects, schedules and notify rules,
//! the registry status and the per-manifest status.

use std::collections::BTreeMap;

use super::sql::{Row, RowError, Sql, args};
use super::{Ledger, LedgerError};
use crate::manifest::Kind;

/// Who owns an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Defined by a manifest; the reconciler owns it.
    Registry,
    /// Registered through `POST /projects`; the reconciler never touches it.
    Api,
}

/// An object as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// The spec as canonical JSON.
    pub spec: serde_json::Value,
    /// Registry or API.
    pub source: Source,
    /// The manifest file it came from (registry objects).
    pub manifest_file: Option<String>,
    /// The registry revision at which this version was applied.
    pub manifest_revision: Option<String>,
    /// The API token that registered it (API projects).
    pub owner_token: Option<String>,
    /// When it was retired, if it is (ms).
    pub retired_at: Option<i64>,
}

/// Every object in the ledger, keyed by kind and name.
pub type Snapshot = BTreeMap<(Kind, String), StoredObject>;

/// One change the reconciler asks the ledger to make.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectWrite {
    /// Create, update or revive a registry object.
    Upsert {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
        /// New spec.
        spec: serde_json::Value,
        /// Manifest file.
        file: String,
    },
    /// Mark a registry object retired (kept, with its history).
    Retire {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
    },
}

/// Status of one manifest object (or of an unreadable document: kind/name empty).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestStatus {
    /// File.
    pub file: String,
    /// Kind, or empty when unreadable.
    pub kind: String,
    /// Name, or empty when unreadable.
    pub name: String,
    /// Registry revision of the version in force.
    pub revision_applied: Option<String>,
    /// Error of the last reconcile, if any.
    pub last_error: Option<String>,
    /// Line of that error.
    pub error_line: Option<i64>,
    /// Column of that error.
    pub error_col: Option<i64>,
}

/// The registry status row.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RegistryStatus {
    /// Where manifests come from.
    pub source: String,
    /// Revision last applied.
    pub revision: Option<String>,
    /// Last attempt (ms).
    pub last_attempt_at: Option<i64>,
    /// Last attempt that applied (ms).
    pub last_success_at: Option<i64>,
    /// How long the last attempt took.
    pub duration_ms: Option<i64>,
    /// Why the last attempt failed or was partial.
    pub last_error: Option<String>,
    /// Objects per kind and error count, as JSON.
    pub counts: serde_json::Value,
}

/// Everything one reconcile writes, applied in one transaction.
#[derive(Debug, Clone)]
pub struct ReconcileRecord {
    /// Object changes.
    pub writes: Vec<ObjectWrite>,
    /// The full per-manifest status after this reconcile.
    pub statuses: Vec<ManifestStatus>,
    /// The registry status after this reconcile.
    pub registry: RegistryStatus,
    /// Registry revision being applied.
    pub revision: String,
    /// Now (ms).
    pub now: i64,
}

fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::Project => "projects",
        Kind::Recipe => "recipes",
        Kind::Schedule => "schedules",
        Kind::NotifyRule => "notify_rules",
    }
}

impl Ledger {
    /// Reads every object of every kind.
    pub fn snapshot(&self) -> Result<Snapshot, LedgerError> {
        let mut out = Snapshot::new();
        for kind in Kind::ALL {
            let sql = if kind == Kind::Project {
                "SELECT name, spec_json, source, manifest_file, manifest_revision, owner_token, retired_at FROM projects"
                    .to_owned()
            } else {
                format!(
                    "SELECT name, spec_json, 'registry', manifest_file, manifest_revision, NULL, retired_at FROM {}",
                    table(kind)
                )
            };
            let rows = self.sql().query(&sql, args![], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<Option<String>>(3)?,
                    r.get::<Option<String>>(4)?,
                    r.get::<Option<String>>(5)?,
                    r.get::<Option<i64>>(6)?,
                ))
            })?;
            for (name, spec, source, file, rev, owner, retired) in rows {
                let spec = serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null);
                out.insert(
                    (kind, name.clone()),
                    StoredObject {
                        kind,
                        name,
                        spec,
                        source: if source == "api" {
                            Source::Api
                        } else {
                            Source::Registry
                        },
                        manifest_file: file,
                        manifest_revision: rev,
                        owner_token: owner,
                        retired_at: retired,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Applies one reconcile: object writes, manifest statuses and the registry
    /// status, all or nothing.
    pub fn apply_reconcile(&mut self, rec: &ReconcileRecord) -> Result<(), LedgerError> {
        self.transaction(|sql| {
            for w in &rec.writes {
                match w {
                    ObjectWrite::Upsert {
                        kind,
                        name,
                        spec,
                        file,
                    } => {
                        let spec = spec.to_string();
                        if *kind == Kind::Project {
                            // Never overwrite an API project, whatever the caller says.
                            sql.execute(
                                "INSERT INTO projects (name, source, spec_json, manifest_file, manifest_revision, created_at, updated_at)
                                 VALUES (?1, 'registry', ?2, ?3, ?4, ?5, ?5)
                                 ON CONFLICT (name) DO UPDATE SET
                                   spec_json = excluded.spec_json, manifest_file = excluded.manifest_file,
                                   manifest_revision = excluded.manifest_revision, updated_at = excluded.updated_at,
                                   retired_at = NULL
                                 WHERE projects.source = 'registry'",
                                args![name, spec, file, rec.revision, rec.now],
                            )?;
                        } else {
                            let extra = if *kind == Kind::Schedule {
                                // A changed schedule gets its next fire computed afresh.
                                // (Qualified: PostgreSQL finds a bare name ambiguous here.)
                                ", next_fire_at = CASE WHEN schedules.spec_json = excluded.spec_json
                                   THEN schedules.next_fire_at ELSE NULL END"
                            } else {
                                ""
                            };
                            sql.execute(
                                &format!(
                                    "INSERT INTO {t} (name, spec_json, manifest_file, manifest_revision, created_at, updated_at)
                                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                                     ON CONFLICT (name) DO UPDATE SET
                                       manifest_file = excluded.manifest_file,
                                       manifest_revision = excluded.manifest_revision,
                                       updated_at = excluded.updated_at, retired_at = NULL{extra},
                                       spec_json = excluded.spec_json",
                                    t = table(*kind)
                                ),
                                args![name, spec, file, rec.revision, rec.now],
                            )?;
                        }
                    }
                    ObjectWrite::Retire { kind, name } => {
                        let only_registry = if *kind == Kind::Project {
                            " AND source = 'registry'"
                        } else {
                            ""
                        };
                        sql.execute(
                            &format!(
                                "UPDATE {} SET retired_at = ?2, updated_at = ?2 WHERE name = ?1 AND retired_at IS NULL{only_registry}",
                                table(*kind)
                            ),
                            args![name, rec.now],
                        )?;
                    }
                }
            }
            write_statuses(sql, &rec.statuses, rec.now)?;
            write_registry_status(sql, &rec.registry)
        })
    }

    /// When each manifest status row was last written (ms), by file, kind and name.
    pub fn manifest_status_times(&self) -> Result<Vec<(StatusKey, i64)>, LedgerError> {
        self.sql().query(
            "SELECT file, kind, name, updated_at FROM manifest_status ORDER BY file, kind, name",
            args![],
            |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)),
        )
    }

    /// Records a reconcile attempt that could not read the registry at all (fetch
    /// error, missing directory): everything applied before stays in force.
    pub fn record_registry_failure(
        &self,
        source: &str,
        error: &str,
        now: i64,
        duration_ms: i64,
    ) -> Result<(), LedgerError> {
        self.sql()
            .execute(
                "INSERT INTO registry_status (id, source, last_attempt_at, duration_ms, last_error)
                 VALUES (1, ?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                   last_attempt_at = excluded.last_attempt_at, duration_ms = excluded.duration_ms,
                   last_error = excluded.last_error",
                args![source, now, duration_ms, error],
            )
            .map(|_| ())
    }

    /// The registry status, if a reconcile was ever attempted.
    pub fn registry_status(&self) -> Result<Option<RegistryStatus>, LedgerError> {
        self.sql().query_opt(
            "SELECT source, revision, last_attempt_at, last_success_at, duration_ms, last_error, counts_json
             FROM registry_status WHERE id = 1",
            args![],
            |r| {
                Ok(RegistryStatus {
                    source: r.get(0)?,
                    revision: r.get(1)?,
                    last_attempt_at: r.get(2)?,
                    last_success_at: r.get(3)?,
                    duration_ms: r.get(4)?,
                    last_error: r.get(5)?,
                    counts: serde_json::from_str(&r.get::<String>(6)?)
                        .unwrap_or(serde_json::Value::Null),
                })
            },
        )
    }

    /// Every manifest status row, by file, kind and name.
    pub fn manifest_statuses(&self) -> Result<Vec<ManifestStatus>, LedgerError> {
        self.sql().query(
            "SELECT file, kind, name, revision_applied, last_error, error_line, error_col
             FROM manifest_status ORDER BY file, kind, name",
            args![],
            manifest_status_from_row,
        )
    }

    /// Registers a project through the API (`source = api`).
    pub fn insert_api_project(
        &self,
        name: &str,
        spec: &serde_json::Value,
        owner_token: &str,
        now: i64,
    ) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "INSERT INTO projects (name, source, spec_json, owner_token, created_at, updated_at)
             VALUES (?1, 'api', ?2, ?3, ?4, ?4) ON CONFLICT (name) DO NOTHING",
            args![name, spec.to_string(), owner_token, now],
        )?;
        Ok(n == 1)
    }
}

fn manifest_status_from_row(r: &Row) -> Result<ManifestStatus, RowError> {
    Ok(ManifestStatus {
        file: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        revision_applied: r.get(3)?,
        last_error: r.get(4)?,
        error_line: r.get(5)?,
        error_col: r.get(6)?,
    })
}

fn write_registry_status(sql: &Sql<'_>, s: &RegistryStatus) -> Result<(), LedgerError> {
    sql.execute(
        "INSERT INTO registry_status (id, source, revision, last_attempt_at, last_success_at, duration_ms, last_error, counts_json)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET source = excluded.source, revision = excluded.revision,
           last_attempt_at = excluded.last_attempt_at, last_success_at = excluded.last_success_at,
           duration_ms = excluded.duration_ms, last_error = excluded.last_error,
           counts_json = excluded.counts_json",
        args![
            s.source,
            s.revision,
            s.last_attempt_at,
            s.last_success_at,
            s.duration_ms,
            s.last_error,
            s.counts.to_string()
        ],
    )
    .map(|_| ())
}

impl Ledger {
    /// One project by name.
    pub fn get_project(&self, name: &str) -> Result<Option<StoredObject>, LedgerError> {
        self.sql().query_opt(
            "SELECT name, spec_json, source, manifest_file, manifest_revision, owner_token, retired_at
             FROM projects WHERE name = ?1",
            args![name],
            |r| {
                Ok(StoredObject {
                    kind: Kind::Project,
                    name: r.get(0)?,
                    spec: serde_json::from_str(&r.get::<String>(1)?).unwrap_or_default(),
                    source: if r.get::<String>(2)? == "api" {
                        Source::Api
                    } else {
                        Source::Registry
                    },
                    manifest_file: r.get(3)?,
                    manifest_revision: r.get(4)?,
                    owner_token: r.get(5)?,
                    retired_at: r.get(6)?,
                })
            },
        )
    }

    /// Replaces the spec of an API project; `false` when there is no such project.
    pub fn update_api_project(
        &self,
        name: &str,
        spec: &serde_json::Value,
        now: i64,
    ) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "UPDATE projects SET spec_json = ?2, updated_at = ?3 WHERE name = ?1 AND source = 'api'",
            args![name, spec.to_string(), now],
        )?;
        Ok(n == 1)
    }

    /// Deletes an API project with its jobs, findings and patch attempts.
    pub fn delete_api_project(&self, name: &str) -> Result<bool, LedgerError> {
        let n = self.sql().execute(
            "DELETE FROM projects WHERE name = ?1 AND source = 'api'",
            args![name],
        )?;
        Ok(n == 1)
    }
}

/// A manifest status row's key: file, kind, name.
pub type StatusKey = (String, String, String);

/// Makes the manifest status rows equal to `statuses`, writing only the rows that
/// changed: an idle reconcile leaves every row (and its `updated_at`) as it was.
/// Several errors of one (file, kind, name) are joined on one row.
fn write_statuses(sql: &Sql<'_>, statuses: &[ManifestStatus], now: i64) -> Result<(), LedgerError> {
    type Key = StatusKey;
    let mut wanted: BTreeMap<Key, ManifestStatus> = BTreeMap::new();
    for s in statuses {
        let key = (s.file.clone(), s.kind.clone(), s.name.clone());
        match wanted.get_mut(&key) {
            Some(prev) => {
                if let Some(e) = &s.last_error {
                    prev.last_error = Some(match &prev.last_error {
                        Some(p) => format!("{p}\n{e}"),
                        None => e.clone(),
                    });
                }
            }
            None => {
                wanted.insert(key, s.clone());
            }
        }
    }
    let existing: BTreeMap<Key, ManifestStatus> = sql
        .query(
            "SELECT file, kind, name, revision_applied, last_error, error_line, error_col FROM manifest_status",
            args![],
            manifest_status_from_row,
        )?
        .into_iter()
        .map(|row| ((row.file.clone(), row.kind.clone(), row.name.clone()), row))
        .collect();
    for key in existing.keys().filter(|k| !wanted.contains_key(*k)) {
        sql.execute(
            "DELETE FROM manifest_status WHERE file = ?1 AND kind = ?2 AND name = ?3",
            args![key.0, key.1, key.2],
        )?;
    }
    for (key, s) in &wanted {
        if existing.get(key) == Some(s) {
            continue;
        }
        sql.execute(
            "INSERT INTO manifest_status (file, kind, name, revision_applied, last_error, error_line, error_col, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (file, kind, name) DO UPDATE SET
               revision_applied = excluded.revision_applied, last_error = excluded.last_error,
               error_line = excluded.error_line, error_col = excluded.error_col,
               updated_at = excluded.updated_at",
            args![
                s.file,
                s.kind,
                s.name,
                s.revision_applied,
                s.last_error,
                s.error_line,
                s.error_col,
                now
            ],
        )?;
    }
    Ok(())
}
