//! The farm as MCP tools, for agents: `crafting-table mcp` serves them on stdio
//! against a farm reached over HTTP, and `serve` serves them over Streamable HTTP at
//! `/mcp`, where each call runs with the caller's own bearer and address through
//! the API's checks (a token sees over MCP exactly what it sees over HTTP).
//!
//! **Architecture Invariant:** the tools depend only on [`crate::client`]: never on
//! the ledger, the runner or any other core module's internals.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};

/// Longest `wait_secs` of `run_job`.
pub const MAX_WAIT_SECS: u64 = 3600;
/// Lines of log `run_job` and `get_job` return.
pub const TAIL_LINES: u64 = 50;
/// Most bytes `get_job_log` returns in one call.
pub const MAX_LOG_WINDOW: u64 = 256 * 1024;

/// How a tool call finds its client.
#[derive(Clone)]
pub enum Source {
    /// One client for every call (stdio: the settings of the process).
    Fixed(Client),
    /// The farm's own router, as the HTTP request's bearer and peer (`/mcp`).
    PerRequest(axum::Router),
}

/// The MCP server.
#[derive(Clone)]
pub struct FarmTools {
    source: Arc<Source>,
}

type Out = Result<Json<Value>, String>;

fn failed(e: ClientError) -> String {
    match e {
        ClientError::Api { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

fn strip_ok(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("ok");
    }
    v
}

/// Arguments naming a project.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProjectArg {
    /// Project name.
    pub name: String,
}

/// A subproject of a project to register.
#[derive(Debug, Deserialize, JsonSchema, serde::Serialize)]
pub struct SubprojectArg {
    /// Directory in the repository (`.` for the root).
    pub path: String,
    /// Language (`rust`, `python`, `go`, `typescript`, …): picks the parsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
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
    /// Other named commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<std::collections::BTreeMap<String, String>>,
    /// Seconds before a command is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Arguments of `register_project`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RegisterArgs {
    /// Project name (lowercase letters, digits, `-`).
    pub name: String,
    /// Where to clone from (http(s), ssh, git URL, or a path on the farm's host).
    pub git_url: String,
    /// Branch built when no ref is given (default `main`).
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Languages of the repository.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// Directories with their commands; at least one.
    pub subprojects: Vec<SubprojectArg>,
}

/// Arguments of `run_job`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunArgs {
    /// Project name.
    pub project: String,
    /// Command: `build`, `test`, `lint`, `audit` or a named command.
    pub recipe: String,
    /// Subproject path (default: `.` when it exists, else the first).
    #[serde(default)]
    pub subproject: Option<String>,
    /// Branch, tag or commit (default: the project's default branch).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Wait up to this many seconds for the job to end (0: return at once; at most
    /// 3600).
    #[serde(default)]
    pub wait_secs: Option<u64>,
}

/// Arguments naming a job.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobArg {
    /// Job id.
    pub job_id: String,
}

/// Arguments of `get_job_log`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct LogArgs {
    /// Job id.
    pub job_id: String,
    /// The last N lines (at most 10,000); or give `offset`/`limit_bytes`.
    #[serde(default)]
    pub tail_lines: Option<u64>,
    /// First byte of a window (default 0).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Bytes in the window (default and at most 262144).
    #[serde(default)]
    pub limit_bytes: Option<u64>,
}

/// Arguments of `list_jobs`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListJobsArgs {
    /// Only this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Only this status: queued, running, succeeded, failed, timed_out, cancelled,
    /// error.
    #[serde(default)]
    pub status: Option<String>,
    /// How many, newest first (1 to 500; default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Arguments of `get_findings`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FindingsArgs {
    /// Job id.
    pub job_id: String,
    /// Only `new` or `unchanged` findings.
    #[serde(default)]
    pub state: Option<String>,
    /// Only this kind: `lint`, `cve`, `advisory`, `test_fail`, `recipe_fail`.
    #[serde(default)]
    pub kind: Option<String>,
    /// At most this many (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Arguments of `trigger_patch`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PatchArgs {
    /// Job the finding belongs to.
    pub job_id: String,
    /// The finding's id (from `get_findings`).
    pub finding_id: i64,
}

/// Arguments of `list_patches`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListPatchesArgs {
    /// Only this project.
    #[serde(default)]
    pub project: Option<String>,
    /// Only this status.
    #[serde(default)]
    pub status: Option<String>,
    /// How many (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Arguments naming a patch attempt.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PatchIdArg {
    /// Patch attempt id.
    pub patch_id: String,
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoArgs {}

fn bearer_of(parts: &axum::http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
}

#[tool_router]
impl FarmTools {
    /// Tools over `source`.
    pub fn new(source: Source) -> FarmTools {
        FarmTools {
            source: Arc::new(source),
        }
    }

    fn client(&self, ctx: &RequestContext<RoleServer>) -> Result<Client, String> {
        match &*self.source {
            Source::Fixed(c) => Ok(c.clone()),
            Source::PerRequest(router) => {
                let parts = ctx
                    .extensions
                    .get::<axum::http::request::Parts>()
                    .ok_or("no HTTP request behind this call")?;
                // The client as the API's front door saw it (behind a trusted
                // proxy, the forwarded address), so the tool calls are checked
                // against the same networks.
                let peer = parts
                    .extensions
                    .get::<crate::api::ClientAddr>()
                    .map(|c| std::net::SocketAddr::new(c.ip, 0))
                    .or_else(|| {
                        parts
                            .extensions
                            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                            .map(|c| c.0)
                    })
                    .ok_or("no peer address behind this call")?;
                Ok(Client::local(router.clone(), peer, bearer_of(parts)))
            }
        }
    }

    #[tool(
        description = "List the projects this token may see, with their subprojects and commands.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_projects(&self, ctx: RequestContext<RoleServer>) -> Out {
        let c = self.client(&ctx)?;
        Ok(Json(strip_ok(c.list_projects().await.map_err(failed)?)))
    }

    #[tool(
        description = "Show one project: git URL, default branch, subprojects with their commands, where it is defined.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_project(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ProjectArg>,
    ) -> Out {
        let c = self.client(&ctx)?;
        Ok(Json(strip_ok(
            c.get_project(&a.name).await.map_err(failed)?,
        )))
    }

    #[tool(
        description = "Register a repository as a project owned by this token (projects in the registry are changed by committing manifests instead).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn register_project(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<RegisterArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let mut body = json!({"name": a.name, "git_url": a.git_url, "subprojects": a.subprojects});
        if let Some(b) = a.default_branch {
            body["default_branch"] = b.into();
        }
        if let Some(l) = a.languages {
            body["languages"] = l.into();
        }
        Ok(Json(strip_ok(
            c.register_project(&body).await.map_err(failed)?,
        )))
    }

    #[tool(
        description = "Run a project's command (build, test, lint, audit or a named one) as a job; with wait_secs, wait for its end and return status, exit code, findings counts and the log tail.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn run_job(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<RunArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let wait = a.wait_secs.unwrap_or(0);
        if wait > MAX_WAIT_SECS {
            return Err(format!("wait_secs: {wait} is more than {MAX_WAIT_SECS}"));
        }
        let job = c
            .run(
                &a.project,
                &a.recipe,
                a.subproject.as_deref(),
                a.git_ref.as_deref(),
            )
            .await
            .map_err(failed)?;
        let job = if wait > 0 {
            c.wait(&job.id, Duration::from_secs(wait))
                .await
                .map_err(failed)?
        } else {
            job
        };
        let raw = c.job_raw(&job.id).await.map_err(failed)?;
        let tail = c.log_tail(&job.id, TAIL_LINES).await.map_err(failed)?;
        let findings = if job.is_finished() {
            let f = c.findings(&job.id, None).await.map_err(failed)?;
            let list = f["findings"].as_array().cloned().unwrap_or_default();
            json!({
                "total": list.len(),
                "new": list.iter().filter(|x| x["baseline_state"] == "new").count(),
                "fixed": f["fixed"].as_array().map_or(0, Vec::len),
            })
        } else {
            Value::Null
        };
        Ok(Json(json!({
            "job_id": job.id,
            "finished": job.is_finished(),
            "status": job.status,
            "exit_code": job.exit_code,
            "error": job.error,
            "findings": findings,
            "job": raw["job"],
            "log_tail": tail.text,
        })))
    }

    #[tool(
        description = "Show one job: status, exit code, commit, timings, findings count, and the last lines of its log.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_job(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<JobArg>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let raw = c.job_raw(&a.job_id).await.map_err(failed)?;
        let tail = c.log_tail(&a.job_id, TAIL_LINES).await.map_err(failed)?;
        Ok(Json(
            json!({"job": raw["job"], "log_tail": tail.text, "log_size": tail.size}),
        ))
    }

    #[tool(
        description = "Read part of a job's log: the last tail_lines lines, or limit_bytes bytes from offset (never the whole of a huge log; log_size says how much there is).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_job_log(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<LogArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let window = match (a.tail_lines, a.offset, a.limit_bytes) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("tail_lines cannot be combined with offset or limit_bytes".to_owned());
            }
            (Some(n), None, None) => c.log_tail(&a.job_id, n.min(10_000)).await,
            (None, off, lim) => {
                let lim = lim.unwrap_or(MAX_LOG_WINDOW).min(MAX_LOG_WINDOW);
                c.log_bytes(&a.job_id, off.unwrap_or(0), lim).await
            }
        }
        .map_err(failed)?;
        Ok(Json(
            json!({"job_id": a.job_id, "log_size": window.size, "text": window.text}),
        ))
    }

    #[tool(
        description = "List jobs newest first, optionally of one project and one status.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_jobs(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ListJobsArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let v = c
            .jobs_raw(
                a.project.as_deref(),
                a.status.as_deref(),
                Some(a.limit.unwrap_or(20)),
                None,
            )
            .await
            .map_err(failed)?;
        Ok(Json(strip_ok(v)))
    }

    #[tool(
        description = "The structured findings of a job (file, line, code, message, fix, new/unchanged), and what was fixed since the previous run.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_findings(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<FindingsArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let v = c
            .findings(&a.job_id, a.state.as_deref())
            .await
            .map_err(failed)?;
        let mut list = v["findings"].as_array().cloned().unwrap_or_default();
        if let Some(k) = &a.kind {
            list.retain(|f| f["kind"] == k.as_str());
        }
        let total = list.len();
        list.truncate(a.limit.unwrap_or(100));
        for f in &mut list {
            if let Value::Object(m) = f {
                m.remove("raw_json");
            }
        }
        Ok(Json(json!({
            "job_id": a.job_id,
            "total": total,
            "findings": list,
            "fixed": v["fixed"],
        })))
    }

    #[tool(
        description = "Cancel a queued job, or stop a running one (its processes are stopped).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_job(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<JobArg>,
    ) -> Out {
        let c = self.client(&ctx)?;
        Ok(Json(strip_ok(c.cancel(&a.job_id).await.map_err(failed)?)))
    }

    #[tool(
        description = "Ask the patch loop to draft, verify and propose (as a pull request) a fix for one finding of a job.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn trigger_patch(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<PatchArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let v = c
            .trigger_patch(&a.job_id, &json!({"finding_id": a.finding_id}))
            .await
            .map_err(failed)?;
        Ok(Json(strip_ok(v)))
    }

    #[tool(
        description = "List automatic fix attempts (newest first) with their status and pull request.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_patches(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ListPatchesArgs>,
    ) -> Out {
        let c = self.client(&ctx)?;
        let v = c
            .patches(
                a.project.as_deref(),
                a.status.as_deref(),
                Some(a.limit.unwrap_or(20)),
            )
            .await
            .map_err(failed)?;
        Ok(Json(strip_ok(v)))
    }

    #[tool(
        description = "Show one fix attempt: the finding, the diff, the verify job and the pull request.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_patch(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<PatchIdArg>,
    ) -> Out {
        let c = self.client(&ctx)?;
        Ok(Json(strip_ok(c.patch(&a.patch_id).await.map_err(failed)?)))
    }

    #[tool(
        description = "The registry's state: source, applied revision, whether a reconcile runs, and each manifest's errors with file, line and column.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn registry_status(&self, ctx: RequestContext<RoleServer>) -> Out {
        let c = self.client(&ctx)?;
        Ok(Json(strip_ok(c.registry().await.map_err(failed)?)))
    }

    #[tool(
        description = "Re-read the registry now and apply it (admin token only); answers with what was created, updated and retired.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn reconcile_registry(&self, ctx: RequestContext<RoleServer>) -> Out {
        let c = self.client(&ctx)?;
        Ok(Json(strip_ok(c.reconcile().await.map_err(failed)?)))
    }
}

#[tool_handler]
impl ServerHandler for FarmTools {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::default();
        info.capabilities = ServerCapabilities::builder().enable_tools().build();
        info.server_info.name = "crafting-table".to_owned();
        info.server_info.version = env!("CARGO_PKG_VERSION").to_owned();
        info.instructions = Some(
            "A build, test and audit farm. list_projects shows what you may run; run_job with wait_secs runs a command and returns its result; get_findings gives structured findings; get_job_log reads logs in windows.".to_owned(),
        );
        info
    }
}

/// Serves the tools on stdin/stdout until the client goes away. Logs go to stderr.
pub async fn serve_stdio(client: Client) -> Result<(), String> {
    use rmcp::ServiceExt as _;
    let server = FarmTools::new(Source::Fixed(client))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP start-up failed: {e}"))?;
    server
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| format!("MCP server stopped: {e}"))
}

/// The Streamable HTTP service for `/mcp`, calling `api` in-process.
pub fn http_service(
    api: axum::Router,
) -> rmcp::transport::StreamableHttpService<
    FarmTools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    // Every call needs a bearer token and comes from an allowed network (the API's
    // checks, in front of this service): the Host check that protects a
    // token-less local server from DNS rebinding would only refuse LAN clients.
    let config = rmcp::transport::StreamableHttpServerConfig::default().disable_allowed_hosts();
    rmcp::transport::StreamableHttpService::new(
        move || Ok(FarmTools::new(Source::PerRequest(api.clone()))),
        Arc::default(),
        config,
    )
}
