//! `/projects`: register, list, read, update and delete projects. Registry projects
//! are read-only here; API projects behave as in the original system.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::auth::Caller;
use super::{ApiError, ApiJson, AppState, ok};
use crate::ledger::{JobFilter, JobStatus, Source, StoredObject};
use crate::manifest::{self, Kind, SourceFile};

/// A project as the API shows it: the spec's fields plus where it came from.
pub fn project_json(p: &StoredObject) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("name".into(), p.name.clone().into());
    if let serde_json::Value::Object(spec) = &p.spec {
        for (k, v) in spec {
            obj.insert(k.clone(), v.clone());
        }
    }
    for (k, default) in [
        ("default_branch", serde_json::json!("main")),
        ("languages", serde_json::json!([])),
        ("owners", serde_json::json!([])),
        ("max_concurrent_jobs", serde_json::json!(1)),
    ] {
        obj.entry(k).or_insert(default);
    }
    obj.insert(
        "source".into(),
        match p.source {
            Source::Api => "api",
            Source::Registry => "registry",
        }
        .into(),
    );
    obj.insert("owner".into(), p.owner_token.clone().into());
    obj.insert("manifest_file".into(), p.manifest_file.clone().into());
    obj.insert(
        "manifest_revision".into(),
        p.manifest_revision.clone().into(),
    );
    obj.insert("retired".into(), p.retired_at.is_some().into());
    obj.insert(
        "retired_at".into(),
        p.retired_at.map(super::jobs::rfc3339).into(),
    );
    serde_json::Value::Object(obj)
}

/// Validates a project body with the same rules as a manifest. Returns the spec as
/// canonical JSON.
fn validate(
    name: &str,
    spec: serde_json::Value,
    recipes: &[StoredObject],
) -> Result<serde_json::Value, ApiError> {
    let doc = serde_json::json!({
        "apiVersion": manifest::API_VERSION,
        "kind": "Project",
        "metadata": {"name": name},
        "spec": spec,
    });
    let mut files = vec![SourceFile {
        path: "body".into(),
        text: serde_json::to_string_pretty(&doc).unwrap_or_default(),
    }];
    // The registry's recipes, so `extends` can name them.
    let recipe_docs: Vec<String> = recipes
        .iter()
        .map(|r| {
            serde_json::json!({
                "apiVersion": manifest::API_VERSION, "kind": "Recipe",
                "metadata": {"name": r.name}, "spec": r.spec,
            })
            .to_string()
        })
        .collect();
    if !recipe_docs.is_empty() {
        files.push(SourceFile {
            path: "recipes".into(),
            text: recipe_docs.join("\n---\n"),
        });
    }
    let loaded = manifest::load(&files);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.file == "body" && d.severity == manifest::Severity::Error)
        .map(|d| d.message.clone())
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors.join("; ")));
    }
    loaded
        .objects
        .into_iter()
        .find(|o| o.file == "body")
        .map(|o| o.spec.to_json())
        .ok_or_else(|| ApiError::invalid("the project body is not valid"))
}

/// Splits `{"name": ..., rest}`.
fn split_name(body: serde_json::Value) -> Result<(Option<String>, serde_json::Value), ApiError> {
    let serde_json::Value::Object(mut map) = body else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    let name = match map.remove("name") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::invalid("name: must be a string")),
    };
    Ok((name, serde_json::Value::Object(map)))
}

fn registry_conflict(p: &StoredObject) -> ApiError {
    ApiError::conflict(format!(
        "project `{}` is defined by the registry in {}; change it there (the API cannot modify registry projects)",
        p.name,
        p.manifest_file.as_deref().unwrap_or("a manifest")
    ))
}

async fn recipes(state: &AppState) -> Result<Vec<StoredObject>, ApiError> {
    Ok(state
        .db
        .read(|l| l.snapshot())
        .await?
        .into_values()
        .filter(|o| o.kind == Kind::Recipe && o.retired_at.is_none())
        .collect())
}

/// `POST /projects`.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (name, spec) = split_name(body)?;
    let name = name.ok_or_else(|| ApiError::invalid("name: required"))?;
    let n = name.clone();
    if let Some(existing) = state.db.read(move |l| l.get_project(&n)).await? {
        return Err(match existing.source {
            Source::Registry => registry_conflict(&existing),
            Source::Api if caller.can_see(&existing) => {
                ApiError::conflict(format!("project `{name}` already exists"))
            }
            // Not the caller's: still a conflict (the name is taken), without details.
            Source::Api => ApiError::conflict(format!("project name `{name}` is taken")),
        });
    }
    let spec = validate(&name, spec, &recipes(&state).await?)?;
    let (n, s, owner, now) = (
        name.clone(),
        spec.clone(),
        caller.name.clone(),
        state.now_ms(),
    );
    let inserted = state
        .db
        .write(move |l| l.insert_api_project(&n, &s, &owner, now))
        .await?;
    if !inserted {
        return Err(ApiError::conflict(format!(
            "project name `{name}` is taken"
        )));
    }
    let n = name.clone();
    let p = state
        .db
        .read(move |l| l.get_project(&n))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project `{name}` vanished")))?;
    Ok((
        StatusCode::CREATED,
        ok(serde_json::json!({"project": project_json(&p)})),
    ))
}

/// `GET /projects`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let snap = state.db.read(|l| l.snapshot()).await?;
    let projects: Vec<serde_json::Value> = snap
        .values()
        .filter(|o| o.kind == Kind::Project && caller.can_see(o))
        .map(project_json)
        .collect();
    Ok(ok(serde_json::json!({"projects": projects})))
}

/// Loads a project the caller may see, or 404.
pub async fn visible_project(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<StoredObject, ApiError> {
    let n = name.to_owned();
    match state.db.read(move |l| l.get_project(&n)).await? {
        Some(p) if caller.can_see(&p) => Ok(p),
        _ => Err(ApiError::not_found(format!("no project `{name}`"))),
    }
}

/// `GET /projects/{name}`.
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let p = visible_project(&state, &caller, &name).await?;
    Ok(ok(serde_json::json!({"project": project_json(&p)})))
}

/// `PUT /projects/{name}`.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<impl IntoResponse, ApiError> {
    let p = visible_project(&state, &caller, &name).await?;
    if p.source == Source::Registry {
        return Err(registry_conflict(&p));
    }
    let (body_name, spec) = split_name(body)?;
    if body_name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::invalid(
            "name: a project cannot be renamed; it must match the path",
        ));
    }
    let spec = validate(&name, spec, &recipes(&state).await?)?;
    let (n, s, now) = (name.clone(), spec, state.now_ms());
    state
        .db
        .write(move |l| l.update_api_project(&n, &s, now))
        .await?;
    let p = visible_project(&state, &caller, &name).await?;
    Ok(ok(serde_json::json!({"project": project_json(&p)})))
}

/// `DELETE /projects/{name}`: cancels its jobs, then removes it with its jobs and
/// findings.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let p = visible_project(&state, &caller, &name).await?;
    if p.source == Source::Registry {
        return Err(registry_conflict(&p));
    }
    for status in [JobStatus::Queued, JobStatus::Running] {
        let f = JobFilter {
            project: Some(name.clone()),
            status: Some(status),
            limit: 10_000,
            ..JobFilter::default()
        };
        let jobs = state.db.read(move |l| l.list_jobs(&f)).await?;
        for j in jobs {
            state.runner.cancel(&j.id, "project deleted").await?;
        }
    }
    // Running jobs end within the kill grace; wait for them before deleting rows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let f = JobFilter {
            project: Some(name.clone()),
            status: Some(JobStatus::Running),
            limit: 1,
            ..JobFilter::default()
        };
        let running = state.db.read(move |l| l.list_jobs(&f)).await?;
        if running.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let n = name.clone();
    state.db.write(move |l| l.delete_api_project(&n)).await?;
    Ok(ok(serde_json::json!({"deleted": name})))
}
