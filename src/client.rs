//! A typed client of the farm's HTTP API, for the MCP server, the command-line
//! subcommands (`run`, `logs`, `jobs`, `findings`, `cancel`) and tests.
//!
//! It speaks only HTTP: it never opens the ledger or touches the runner, so it works
//! against a farm on another host exactly as against a local one. Errors keep the
//! API's code and message (a 404 stays "not found").

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Default farm address.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8810";

/// What went wrong talking to the farm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's machine code (`not_found`, `unauthorized`, …).
        code: String,
        /// The API's message.
        message: String,
    },
    /// The farm could not be reached.
    #[error("cannot reach the farm at {base}: {why}")]
    Unreachable {
        /// Base URL.
        base: String,
        /// Why.
        why: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from the farm: {0}")]
    Protocol(String),
    /// The settings are wrong.
    #[error("{0}")]
    Settings(String),
}

impl ClientError {
    /// Whether the API said "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A job as the API shows it (the fields a client acts on; the rest stays in the
/// raw JSON).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Project.
    pub project: String,
    /// Subproject.
    #[serde(default)]
    pub subproject: String,
    /// Command.
    #[serde(default)]
    pub recipe: String,
    /// `queued`, `running`, `succeeded`, `failed`, `timed_out`, `cancelled`, `error`.
    pub status: String,
    /// Exit code of the command.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Why the farm could not run it, or how it was stopped.
    #[serde(default)]
    pub error: Option<String>,
    /// Commit.
    #[serde(default)]
    pub sha: Option<String>,
    /// Findings.
    #[serde(default)]
    pub findings_count: i64,
    /// Seconds it ran.
    #[serde(default)]
    pub duration_secs: Option<f64>,
    /// Enqueued (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// The runner process that ran it.
    #[serde(default)]
    pub runner: Option<String>,
}

impl JobView {
    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "running")
    }
}

/// Where the farm is and who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL, without a trailing `/`.
    pub base_url: String,
    /// Bearer token.
    pub token: Option<String>,
}

impl Settings {
    /// From `CRAFTING_TABLE_BASE_URL` and `CRAFTING_TABLE_TOKEN` (or
    /// `CRAFTING_TABLE_TOKEN_FILE`); without either, the admin bearer file of a farm
    /// in this directory (`$CRAFTING_DATA_DIR/admin-bearer.txt`, default
    /// `./data/admin-bearer.txt`) when it exists.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ClientError> {
        let base_url = get("CRAFTING_TABLE_BASE_URL")
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ClientError::Settings(format!(
                "CRAFTING_TABLE_BASE_URL: `{base_url}` is not an http:// or https:// URL"
            )));
        }
        let token = match (
            get("CRAFTING_TABLE_TOKEN"),
            get("CRAFTING_TABLE_TOKEN_FILE"),
        ) {
            (Some(t), _) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            (_, Some(f)) if !f.trim().is_empty() => Some(
                std::fs::read_to_string(f.trim())
                    .map_err(|e| {
                        ClientError::Settings(format!(
                            "CRAFTING_TABLE_TOKEN_FILE: cannot read {f}: {e}"
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            _ => {
                let dir = get("CRAFTING_DATA_DIR").unwrap_or_else(|| "./data".to_owned());
                std::fs::read_to_string(std::path::Path::new(&dir).join("admin-bearer.txt"))
                    .ok()
                    .map(|t| t.trim().to_owned())
            }
        };
        Ok(Settings {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// From the process environment.
    pub fn from_env() -> Result<Settings, ClientError> {
        Settings::from_lookup(&|k| std::env::var(k).ok())
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How requests reach the farm.
#[derive(Clone)]
enum Transport {
    /// Over the network.
    Http(reqwest::Client),
    /// Straight into the farm's own router, as if from `peer` (the MCP endpoint of
    /// `serve`: the caller's address and bearer go through the same checks).
    Local {
        router: axum::Router,
        peer: std::net::SocketAddr,
    },
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    settings: Settings,
    transport: Transport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.settings.base_url)
            .finish_non_exhaustive()
    }
}

type HttpResponse = axum::http::Response<axum::body::Body>;

/// A window of a job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWindow {
    /// The text.
    pub text: String,
    /// The whole log's size in bytes.
    pub size: u64,
}

impl Client {
    /// A client for `settings`.
    pub fn new(settings: Settings) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Settings(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            settings,
            transport: Transport::Http(http),
        })
    }

    /// A client that calls `router` in-process, as `token` from `peer`.
    pub fn local(
        router: axum::Router,
        peer: std::net::SocketAddr,
        token: Option<String>,
    ) -> Client {
        Client {
            settings: Settings {
                base_url: "http://farm.local".to_owned(),
                token,
            },
            transport: Transport::Local { router, peer },
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> ClientError {
        // reqwest's message names the URL, which holds no secret (the token goes in
        // a header).
        ClientError::Unreachable {
            base: self.settings.base_url.clone(),
            why: why.to_string(),
        }
    }

    /// Sends one request; any HTTP status is returned as it came.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<HttpResponse, ClientError> {
        match &self.transport {
            Transport::Http(http) => {
                let mut r = http.request(method, format!("{}{path}", self.settings.base_url));
                if let Some(t) = &self.settings.token {
                    r = r.bearer_auth(t);
                }
                if let Some(b) = body {
                    r = r.json(b);
                }
                let resp = r.send().await.map_err(|e| self.unreachable(e))?;
                let resp: axum::http::Response<reqwest::Body> = resp.into();
                Ok(resp.map(axum::body::Body::new))
            }
            Transport::Local { router, peer } => {
                use tower::ServiceExt as _;
                let mut b = axum::http::Request::builder().method(method).uri(path);
                if let Some(t) = &self.settings.token {
                    b = b.header(axum::http::header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let payload = match body {
                    Some(v) => {
                        b = b.header(axum::http::header::CONTENT_TYPE, "application/json");
                        axum::body::Body::from(v.to_string())
                    }
                    None => axum::body::Body::empty(),
                };
                let mut req = b
                    .body(payload)
                    .map_err(|e| ClientError::Protocol(format!("{path}: {e}")))?;
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(*peer));
                router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| self.unreachable(e))
            }
        }
    }

    async fn error_of(resp: HttpResponse) -> ClientError {
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v["error"]["code"].is_string() => ClientError::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            },
            _ => ClientError::Api {
                status,
                code: "http".to_owned(),
                message: text.chars().take(300).collect(),
            },
        }
    }

    async fn ok_body(&self, resp: HttpResponse) -> Result<HttpResponse, ClientError> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Client::error_of(resp).await)
        }
    }

    /// Sends a request and returns the JSON body of a success.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, path, body).await?;
        let resp = self.ok_body(resp).await?;
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("{path}: {e}")))
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(reqwest::Method::POST, path, Some(body)).await
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.get("/healthz").await
    }

    /// Projects the token may see.
    pub async fn list_projects(&self) -> Result<Value, ClientError> {
        self.get("/projects").await
    }

    /// One project.
    pub async fn get_project(&self, name: &str) -> Result<Value, ClientError> {
        self.get(&format!("/projects/{}", encode(name))).await
    }

    /// Registers a project (`{"name", "git_url", "subprojects", …}`).
    pub async fn register_project(&self, body: &Value) -> Result<Value, ClientError> {
        self.post("/projects", body).await
    }

    /// Enqueues a command; returns the job.
    pub async fn run(
        &self,
        project: &str,
        recipe: &str,
        subproject: Option<&str>,
        git_ref: Option<&str>,
    ) -> Result<JobView, ClientError> {
        let mut body = serde_json::json!({"recipe": recipe});
        if let Some(s) = subproject {
            body["subproject"] = s.into();
        }
        if let Some(r) = git_ref {
            body["ref"] = r.into();
        }
        let v = self
            .post(&format!("/projects/{}/jobs", encode(project)), &body)
            .await?;
        job_of(&v["job"])
    }

    /// One job with its log tail (`{"job", "log_tail"}`).
    pub async fn job_raw(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/jobs/{}", encode(id))).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        job_of(&self.job_raw(id).await?["job"])
    }

    /// Jobs, newest first.
    pub async fn jobs(
        &self,
        project: Option<&str>,
        status: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<JobView>, ClientError> {
        let v = self.jobs_raw(project, status, limit, None).await?;
        v["jobs"]
            .as_array()
            .ok_or_else(|| ClientError::Protocol("no `jobs` list".into()))?
            .iter()
            .map(job_of)
            .collect()
    }

    /// `GET /jobs` as JSON.
    pub async fn jobs_raw(
        &self,
        project: Option<&str>,
        status: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut q = Vec::new();
        if let Some(p) = project {
            q.push(format!("project={}", encode(p)));
        }
        if let Some(s) = status {
            q.push(format!("status={}", encode(s)));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={}", encode(c)));
        }
        let path = if q.is_empty() {
            "/jobs".to_owned()
        } else {
            format!("/jobs?{}", q.join("&"))
        };
        self.get(&path).await
    }

    async fn text(&self, path: &str) -> Result<LogWindow, ClientError> {
        let resp = self.send(reqwest::Method::GET, path, None).await?;
        let resp = self.ok_body(resp).await?;
        let size = resp
            .headers()
            .get("x-log-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(LogWindow {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            size,
        })
    }

    /// A byte window of a job's log.
    pub async fn log_bytes(
        &self,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<LogWindow, ClientError> {
        self.text(&format!(
            "/jobs/{}/log?offset={offset}&limit={limit}",
            encode(id)
        ))
        .await
    }

    /// The last `lines` lines of a job's log.
    pub async fn log_tail(&self, id: &str, lines: u64) -> Result<LogWindow, ClientError> {
        self.text(&format!("/jobs/{}/log?tail={lines}", encode(id)))
            .await
    }

    /// Streams a job's log to `sink` (with `follow`, until the job ends).
    pub async fn stream_log(
        &self,
        id: &str,
        follow: bool,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let path = format!(
            "/jobs/{}/log{}",
            encode(id),
            if follow { "?follow=1" } else { "" }
        );
        use futures_util::StreamExt as _;
        let resp = self.send(reqwest::Method::GET, &path, None).await?;
        let resp = self.ok_body(resp).await?;
        let mut stream = resp.into_body().into_data_stream();
        while let Some(chunk) = stream.next().await {
            sink(&chunk.map_err(|e| self.unreachable(e))?);
        }
        Ok(())
    }

    /// A job's findings (`state`: `new` or `unchanged`), as the API returns them.
    pub async fn findings(&self, id: &str, state: Option<&str>) -> Result<Value, ClientError> {
        let q = state
            .map(|s| format!("?state={}", encode(s)))
            .unwrap_or_default();
        self.get(&format!("/jobs/{}/findings{q}", encode(id))).await
    }

    /// A job's findings as SARIF 2.1.0.
    pub async fn sarif(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/jobs/{}/findings?format=sarif", encode(id)))
            .await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<Value, ClientError> {
        self.post(
            &format!("/jobs/{}/cancel", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Starts a patch attempt for a job's finding.
    pub async fn trigger_patch(&self, id: &str, body: &Value) -> Result<Value, ClientError> {
        self.post(&format!("/jobs/{}/patches", encode(id)), body)
            .await
    }

    /// Patch attempts.
    pub async fn patches(
        &self,
        project: Option<&str>,
        status: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Value, ClientError> {
        let mut q = Vec::new();
        if let Some(p) = project {
            q.push(format!("project={}", encode(p)));
        }
        if let Some(s) = status {
            q.push(format!("status={}", encode(s)));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = if q.is_empty() {
            "/patches".to_owned()
        } else {
            format!("/patches?{}", q.join("&"))
        };
        self.get(&path).await
    }

    /// One patch attempt.
    pub async fn patch(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/patches/{}", encode(id))).await
    }

    /// The registry's status.
    pub async fn registry(&self) -> Result<Value, ClientError> {
        self.get("/registry").await
    }

    /// Reconciles now (admin).
    pub async fn reconcile(&self) -> Result<Value, ClientError> {
        self.post("/registry/reconcile", &serde_json::json!({}))
            .await
    }

    /// Waits until the job ends or `within` passes (following its log, which the
    /// farm closes when the job ends); returns the job as it is then.
    pub async fn wait(&self, id: &str, within: Duration) -> Result<JobView, ClientError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let job = self.job(id).await?;
            if job.is_finished() {
                return Ok(job);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(job);
            }
            // The follow stream ends when the job does; the bound keeps a hung
            // connection from outliving the wait.
            let _ = tokio::time::timeout(left, self.stream_log(id, true, |_| {})).await;
        }
    }
}

fn job_of(v: &Value) -> Result<JobView, ClientError> {
    serde_json::from_value(v.clone()).map_err(|e| ClientError::Protocol(format!("job: {e}")))
}
