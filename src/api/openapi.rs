//! `GET /openapi.json`: the API as an OpenAPI 3.0 document, built from
//! [`super::ROUTES`] so that a route cannot be served without being described (a
//! test checks both directions).

use axum::Json;
use serde_json::{Value, json};

fn err_ref() -> Value {
    json!({"$ref": "#/components/responses/Error"})
}

fn ok_obj(props: Value, required: &[&str]) -> Value {
    let mut req = vec!["ok"];
    req.extend_from_slice(required);
    let mut p = json!({"ok": {"type": "boolean", "enum": [true]}});
    if let (Some(dst), Value::Object(src)) = (p.as_object_mut(), props) {
        dst.extend(src);
    }
    json!({"type": "object", "required": req, "properties": p})
}

fn resp(code: &str, description: &str, schema: Value) -> (String, Value) {
    (
        code.to_owned(),
        json!({"description": description, "content": {"application/json": {"schema": schema}}}),
    )
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// Summary, responses, parameters, request body, and whether no bearer is needed.
type OpParts = (
    &'static str,
    Vec<(String, Value)>,
    Vec<Value>,
    Option<Value>,
    bool,
);

/// The operation object of one route.
fn operation(method: &str, path: &str) -> Value {
    let job = json!({"$ref": "#/components/schemas/Job"});
    let project = json!({"$ref": "#/components/schemas/Project"});
    let (summary, mut responses, params, request, public): OpParts = match (method, path) {
        ("get", "/healthz") => (
            "Liveness and runner stats (LAN, no bearer)",
            vec![resp(
                "200",
                "healthy",
                ok_obj(
                    json!({
                "status": {"type": "string"}, "version": {"type": "string"}, "workers": {"type": "integer"},
                "queued": {"type": "integer"}, "running": {"type": "integer"}, "uptime_secs": {"type": "integer"},
                "registry_revision": {"type": "string", "nullable": true},
                "ledger": {"type": "string", "enum": ["sqlite", "postgres"]},
                "leader": {"type": "string", "nullable": true},
                "runners": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string"}, "host": {"type": "string"},
                    "workers": {"type": "integer"}, "running": {"type": "integer"},
                    "lease_until": {"type": "string", "format": "date-time"}}}}}),
                    &["workers", "queued", "running"],
                ),
            )],
            vec![],
            None,
            true,
        ),
        ("get", "/metrics") => (
            "Prometheus metrics (LAN, no bearer)",
            vec![(
                "200".into(),
                json!({"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )],
            vec![],
            None,
            true,
        ),
        ("get", "/openapi.json") => (
            "This document",
            vec![(
                "200".into(),
                json!({"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}}),
            )],
            vec![],
            None,
            true,
        ),
        ("post", "/admin/tokens") => (
            "Mint a bearer (admin); shown once",
            vec![resp(
                "201",
                "minted",
                ok_obj(
                    json!({"name": {"type": "string"}, "bearer": {"type": "string"}, "is_admin": {"type": "boolean"}, "ip_cidrs": {"type": "array", "items": {"type": "string"}}}),
                    &["name", "bearer"],
                ),
            )],
            vec![],
            Some(body(
                json!({"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "is_admin": {"type": "boolean"}, "ip_cidrs": {"type": "array", "items": {"type": "string"}}}}),
            )),
            false,
        ),
        ("get", "/admin/tokens") => (
            "List tokens (admin)",
            vec![resp(
                "200",
                "tokens",
                ok_obj(
                    json!({"tokens": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}}),
                    &["tokens"],
                ),
            )],
            vec![],
            None,
            false,
        ),
        ("delete", "/admin/tokens/{name}") => (
            "Revoke a token (admin)",
            vec![resp(
                "200",
                "revoked",
                ok_obj(json!({"revoked": {"type": "string"}}), &[]),
            )],
            vec![path_param("name")],
            None,
            false,
        ),
        ("post", "/projects") => (
            "Register a project (the caller owns it)",
            vec![resp(
                "201",
                "registered",
                ok_obj(json!({"project": project}), &["project"]),
            )],
            vec![],
            Some(body(json!({"$ref": "#/components/schemas/ProjectBody"}))),
            false,
        ),
        ("get", "/projects") => (
            "Projects the caller may see",
            vec![resp(
                "200",
                "projects",
                ok_obj(
                    json!({"projects": {"type": "array", "items": project}}),
                    &["projects"],
                ),
            )],
            vec![],
            None,
            false,
        ),
        ("get", "/projects/{name}") => (
            "One project",
            vec![resp(
                "200",
                "project",
                ok_obj(json!({"project": project}), &["project"]),
            )],
            vec![path_param("name")],
            None,
            false,
        ),
        ("put", "/projects/{name}") => (
            "Replace an API project (registry projects: 409)",
            vec![resp(
                "200",
                "updated",
                ok_obj(json!({"project": project}), &["project"]),
            )],
            vec![path_param("name")],
            Some(body(json!({"$ref": "#/components/schemas/ProjectBody"}))),
            false,
        ),
        ("delete", "/projects/{name}") => (
            "Delete an API project with its jobs and findings (registry projects: 409)",
            vec![resp(
                "200",
                "deleted",
                ok_obj(json!({"deleted": {"type": "string"}}), &[]),
            )],
            vec![path_param("name")],
            None,
            false,
        ),
        ("post", "/projects/{name}/jobs") => (
            "Enqueue a run of one command",
            vec![
                resp(
                    "201",
                    "queued",
                    ok_obj(
                        json!({"job_id": {"type": "string"}, "job": job, "coalesced": {"type": "boolean"}, "message": {"type": "string"}}),
                        &["job_id", "job"],
                    ),
                ),
                resp(
                    "200",
                    "an identical job was already queued",
                    ok_obj(
                        json!({"job_id": {"type": "string"}, "job": job, "coalesced": {"type": "boolean"}, "message": {"type": "string"}}),
                        &["job_id", "job"],
                    ),
                ),
            ],
            vec![path_param("name")],
            Some(body(
                json!({"type": "object", "required": ["recipe"], "additionalProperties": false, "properties": {
                    "recipe": {"type": "string"}, "subproject": {"type": "string"}, "ref": {"type": "string"}}}),
            )),
            false,
        ),
        ("get", "/jobs") => (
            "Jobs the caller may see, newest first",
            vec![resp(
                "200",
                "a page of jobs",
                ok_obj(
                    json!({"jobs": {"type": "array", "items": job}, "next_cursor": {"type": "string", "nullable": true}}),
                    &["jobs"],
                ),
            )],
            vec![
                query_param("project", json!({"type": "string"}), "only this project"),
                query_param(
                    "status",
                    json!({"type": "string", "enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "error"]}),
                    "only this status",
                ),
                query_param(
                    "limit",
                    json!({"type": "integer", "minimum": 1, "maximum": 500}),
                    "page size (default 50)",
                ),
                query_param(
                    "cursor",
                    json!({"type": "string"}),
                    "next_cursor of the previous page",
                ),
            ],
            None,
            false,
        ),
        ("get", "/jobs/{id}") => (
            "A job and the last 200 lines of its log",
            vec![resp(
                "200",
                "job",
                ok_obj(
                    json!({"job": job, "log_tail": {"type": "array", "items": {"type": "string"}}}),
                    &["job", "log_tail"],
                ),
            )],
            vec![path_param("id")],
            None,
            false,
        ),
        ("get", "/jobs/{id}/log") => (
            "The full log, streamed; follow=1 streams until the job ends; offset/limit a byte window, tail the last lines",
            vec![(
                "200".into(),
                json!({"description": "log text", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )],
            vec![
                path_param("id"),
                query_param(
                    "follow",
                    json!({"type": "string", "enum": ["0", "1", "true", "false"]}),
                    "keep streaming until the job ends",
                ),
                query_param(
                    "offset",
                    json!({"type": "string", "pattern": "^[0-9]*$"}),
                    "first byte of a window",
                ),
                query_param(
                    "limit",
                    json!({"type": "string", "pattern": "^[0-9]*$"}),
                    "bytes in the window",
                ),
                query_param(
                    "tail",
                    json!({"type": "string", "pattern": "^[0-9]*$"}),
                    "the last N lines (at most 10,000)",
                ),
            ],
            None,
            false,
        ),
        ("get", "/jobs/{id}/findings") => (
            "Structured findings (JSON or SARIF 2.1.0)",
            vec![(
                "200".into(),
                json!({"description": "findings", "content": {
                    "application/json": {"schema": ok_obj(json!({"job_id": {"type": "string"}, "findings": {"type": "array", "items": {"$ref": "#/components/schemas/Finding"}}, "fixed": {"type": "array", "items": {"type": "string"}}}), &["findings"])},
                    "application/sarif+json": {"schema": {"type": "object", "required": ["version", "runs"]}}}}),
            )],
            vec![
                path_param("id"),
                query_param(
                    "format",
                    json!({"type": "string", "enum": ["json", "sarif"]}),
                    "json (default) or sarif",
                ),
                query_param(
                    "state",
                    json!({"type": "string", "enum": ["new", "unchanged"]}),
                    "only findings in this baseline state",
                ),
            ],
            None,
            false,
        ),
        ("post", "/jobs/{id}/cancel") => (
            "Cancel a queued or running job",
            vec![resp(
                "200",
                "cancelled or stopping",
                ok_obj(
                    json!({"job_id": {"type": "string"}, "status": {"type": "string", "enum": ["cancelled", "stopping"]}}),
                    &["status"],
                ),
            )],
            vec![path_param("id")],
            None,
            false,
        ),
        ("post", "/jobs/{id}/patches") => (
            "Start a patch attempt for one finding of the job (503 while the patch loop is off)",
            vec![resp(
                "202",
                "attempt started",
                ok_obj(
                    json!({"attempt": {"$ref": "#/components/schemas/PatchAttempt"}}),
                    &["attempt"],
                ),
            )],
            vec![path_param("id")],
            Some(body(
                json!({"type": "object", "required": ["finding_id"], "additionalProperties": false,
                "properties": {"finding_id": {"type": "integer"}}}),
            )),
            false,
        ),
        ("post", "/patches/{id}/cancel") => (
            "Cancel a patch attempt that has not ended",
            vec![resp(
                "200",
                "attempt cancelled",
                ok_obj(
                    json!({"attempt": {"$ref": "#/components/schemas/PatchAttempt"}}),
                    &["attempt"],
                ),
            )],
            vec![path_param("id")],
            None,
            false,
        ),
        ("get", "/patches") => (
            "Patch attempts the caller may see",
            vec![resp(
                "200",
                "attempts",
                ok_obj(
                    json!({"patches": {"type": "array", "items": {"$ref": "#/components/schemas/PatchAttempt"}}}),
                    &["patches"],
                ),
            )],
            vec![
                query_param("project", json!({"type": "string"}), "only this project"),
                query_param("status", json!({"type": "string"}), "only this status"),
                query_param(
                    "limit",
                    json!({"type": "integer", "minimum": 1, "maximum": 500}),
                    "at most this many",
                ),
            ],
            None,
            false,
        ),
        ("get", "/patches/{id}") => (
            "One patch attempt",
            vec![resp(
                "200",
                "attempt",
                ok_obj(
                    json!({"attempt": {"$ref": "#/components/schemas/PatchAttempt"}}),
                    &["attempt"],
                ),
            )],
            vec![path_param("id")],
            None,
            false,
        ),
        ("get", "/registry") => (
            "Registry source, revision and per-manifest status",
            vec![resp(
                "200",
                "status",
                ok_obj(
                    json!({"source": {"type": "string"}, "revision": {"type": "string", "nullable": true}, "in_progress": {"type": "boolean"}, "last_error": {"type": "string", "nullable": true},
                        "leader": {"type": "object", "nullable": true, "properties": {"name": {"type": "string"}, "since": {"type": "string", "format": "date-time"}}},
                        "manifests": {"type": "array", "items": {"type": "object"}}}),
                    &["manifests", "in_progress"],
                ),
            )],
            vec![],
            None,
            false,
        ),
        ("post", "/registry/reconcile") => (
            "Reconcile now (admin)",
            vec![resp(
                "200",
                "outcome",
                ok_obj(
                    json!({"revision": {"type": "string"}, "errors": {"type": "array", "items": {"type": "string"}}}),
                    &["revision"],
                ),
            )],
            vec![],
            None,
            false,
        ),
        ("post", "/hooks/registry") => (
            "Push webhook (Gitea or GitHub HMAC signature); 404 when no secret is configured",
            vec![resp(
                "202",
                "accepted",
                ok_obj(json!({"reconcile": {"type": "boolean"}}), &["reconcile"]),
            )],
            vec![],
            Some(
                json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}}),
            ),
            true,
        ),
        ("get", "/digests") => (
            "Digest runs, newest first (admin): date, recipient, status, message id, counts, error",
            vec![resp(
                "200",
                "digest runs",
                ok_obj(
                    json!({"digests": {"type": "array", "items": {"$ref": "#/components/schemas/Digest"}}, "sending": {"type": "boolean"}}),
                    &["digests", "sending"],
                ),
            )],
            vec![query_param(
                "limit",
                json!({"type": "string"}),
                "1 to 500 (default 50)",
            )],
            None,
            false,
        ),
        ("get", "/digests/{date}") => (
            "What the digests of a local date (YYYY-MM-DD) say, per unit; sends nothing (admin)",
            vec![resp(
                "200",
                "digests",
                ok_obj(
                    json!({"date": {"type": "string"}, "digests": {"type": "array", "items": {"type": "object"}}}),
                    &["date", "digests"],
                ),
            )],
            vec![path_param("date")],
            None,
            false,
        ),
        ("post", "/admin/digest/run-now") => (
            "Render and (unless dry_run) send the digests now (admin)",
            vec![resp(
                "200",
                "what was sent, skipped as already sent, or empty",
                ok_obj(
                    json!({"dry_run": {"type": "boolean"}, "sending": {"type": "boolean"}, "digests": {"type": "array", "items": {"type": "object", "properties": {
                        "recipient": {"type": "string"}, "date": {"type": "string"},
                        "status": {"type": "string", "enum": ["sent", "pending", "failed", "already_sent", "empty", "dry_run"]},
                        "message_id": {"type": "string"}, "content": {"type": "object"}}}}}),
                    &["digests"],
                ),
            )],
            vec![],
            Some(body(
                json!({"type": "object", "additionalProperties": false, "properties": {
                "dry_run": {"type": "boolean"},
                "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                "recipient": {"type": "string"}}}),
            )),
            false,
        ),
        ("post", "/admin/gc") => (
            "Apply retention now, or with dry_run show what it would prune (admin)",
            vec![resp(
                "200",
                "what was (or would be) pruned",
                ok_obj(
                    json!({"dry_run": {"type": "boolean"}, "pruned": {"type": "array", "items": {"type": "string"}},
                        "log_bytes": {"type": "integer"}, "kept_changed": {"type": "integer"},
                        "kept_for_patches": {"type": "integer"}, "retain_days": {"type": "integer"}, "retain_runs": {"type": "integer"}}),
                    &["dry_run", "pruned"],
                ),
            )],
            vec![],
            Some(body(
                json!({"type": "object", "additionalProperties": false, "properties": {"dry_run": {"type": "boolean"}}}),
            )),
            false,
        ),
        _ => ("", vec![], vec![], None, false),
    };
    responses.push(("default".into(), err_ref()));
    let mut op = json!({
        "summary": summary,
        "operationId": format!("{method}{}", path.replace(['/', '{', '}', '.'], "_")),
        "responses": responses.into_iter().collect::<serde_json::Map<String, Value>>(),
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(r) = request {
        op["requestBody"] = r;
    }
    if public {
        op["security"] = json!([]);
    }
    op
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path) in super::ROUTES {
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = operation(method, path);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "crafting-table",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Build, test and audit farm. Every request comes from a network in CRAFTING_LAN_CIDRS; most need `Authorization: Bearer ct_…`. Objects a token may not see are 404.",
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Digest": {"type": "object", "required": ["id", "date", "recipient", "status"], "properties": {
                    "id": {"type": "integer"}, "date": {"type": "string"}, "recipient": {"type": "string"},
                    "time": {"type": "string"}, "zone": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "sent", "failed", "dry_run", "empty"]},
                    "message_id": {"type": "string", "nullable": true}, "subject": {"type": "string", "nullable": true},
                    "counts": {"type": "object"}, "attempts": {"type": "integer"}, "error": {"type": "string", "nullable": true},
                    "window_start": {"type": "string"}, "window_end": {"type": "string"},
                    "created_at": {"type": "string"}, "sent_at": {"type": "string", "nullable": true}}},
                "Error": {"type": "object", "required": ["ok", "error"], "properties": {
                    "ok": {"type": "boolean", "enum": [false]},
                    "error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Job": {"type": "object", "required": ["id", "project", "subproject", "recipe", "status"], "properties": {
                    "id": {"type": "string"}, "project": {"type": "string"}, "subproject": {"type": "string"}, "recipe": {"type": "string"},
                    "trigger": {"type": "string", "enum": ["api", "schedule", "patch_verify"]}, "schedule": {"type": "string", "nullable": true},
                    "ref": {"type": "string"}, "sha": {"type": "string", "nullable": true},
                    "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "error"]},
                    "exit_code": {"type": "integer", "nullable": true}, "error": {"type": "string", "nullable": true},
                    "findings_count": {"type": "integer"}, "fixed": {"type": "array", "items": {"type": "string"}},
                    "recipe_snapshot": {"type": "object"},
                    "created_at": {"type": "string", "format": "date-time"}, "started_at": {"type": "string", "format": "date-time", "nullable": true},
                    "finished_at": {"type": "string", "format": "date-time", "nullable": true}, "duration_secs": {"type": "number", "nullable": true},
                    "runner": {"type": "string", "nullable": true}}},
                "Project": {"type": "object", "required": ["name", "git_url", "subprojects", "source"], "properties": {
                    "name": {"type": "string"}, "git_url": {"type": "string"}, "default_branch": {"type": "string"},
                    "languages": {"type": "array", "items": {"type": "string"}}, "owners": {"type": "array", "items": {"type": "string"}},
                    "subprojects": {"type": "array", "items": {"type": "object"}}, "source": {"type": "string", "enum": ["registry", "api"]},
                    "owner": {"type": "string", "nullable": true}, "manifest_file": {"type": "string", "nullable": true},
                    "retired": {"type": "boolean"}}},
                "ProjectBody": {"type": "object", "required": ["name", "git_url", "subprojects"], "description": "The Project manifest's spec plus `name`; unknown fields are rejected",
                    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}, "git_url": {"type": "string", "pattern": "^\\S+$"}, "default_branch": {"type": "string", "pattern": "^[^\\s-][^\\s]*$"},
                        "languages": {"type": "array", "items": {"type": "string"}},
                        "subprojects": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["path"], "properties": {
                            "path": {"type": "string"}, "language": {"type": "string"}, "extends": {"type": "string"},
                            "build": {"type": "string"}, "test": {"type": "string"}, "lint": {"type": "string"}, "audit": {"type": "string"},
                            "commands": {"type": "object", "additionalProperties": {"type": "string"}},
                            "timeout_secs": {"type": "integer", "minimum": 1, "maximum": 86400},
                            "env": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                        "notify": {"type": "object"}, "max_concurrent_jobs": {"type": "integer", "minimum": 1, "maximum": 64}}},
                "Finding": {"type": "object", "required": ["id", "job_id", "kind", "severity", "message", "fingerprint"], "properties": {
                    "id": {"type": "integer"}, "job_id": {"type": "string"}, "tool": {"type": "string"}, "kind": {"type": "string"},
                    "severity": {"type": "string"}, "file": {"type": "string", "nullable": true}, "line": {"type": "integer", "nullable": true},
                    "col": {"type": "integer", "nullable": true}, "code": {"type": "string", "nullable": true}, "message": {"type": "string"},
                    "suggested_fix": {"type": "string", "nullable": true}, "fingerprint": {"type": "string"},
                    "location_hash": {"type": "string", "nullable": true}, "baseline_state": {"type": "string", "nullable": true},
                    "raw_json": {"type": "string", "nullable": true}, "created_at": {"type": "string"}}},
                "Token": {"type": "object", "required": ["name", "is_admin"], "properties": {
                    "name": {"type": "string"}, "is_admin": {"type": "boolean"}, "ip_cidrs": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": "string"}, "revoked": {"type": "boolean"}, "revoked_at": {"type": "string", "nullable": true}}},
                "PatchAttempt": {"type": "object", "required": ["id", "project", "status", "finding", "job_id"], "properties": {
                    "id": {"type": "integer"}, "project": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "drafting", "applying", "verifying", "pushing", "pr_opened",
                        "model_error", "apply_failed", "verify_failed", "forge_error", "cancelled", "error", "skipped"]},
                    "reason": {"type": "string", "nullable": true}, "trigger": {"type": "string", "enum": ["auto", "manual"]},
                    "attempt_number": {"type": "integer"}, "finding": {"type": "object"}, "job_id": {"type": "string"},
                    "diff": {"type": "string", "nullable": true}, "explanation": {"type": "string", "nullable": true},
                    "confidence": {"type": "number", "nullable": true}, "verify_job_id": {"type": "string", "nullable": true},
                    "branch": {"type": "string", "nullable": true}, "pull_request": {"type": "object", "nullable": true}}},
            },
        },
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}
