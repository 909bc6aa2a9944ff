//! The HTTP API: the original system's paths and JSON shapes plus the GitOps
//! additions. Handlers translate between the wire and the library; they own their
//! wire types, so internal renames never change the API silently.
//!
//! Every error is `{"ok": false, "error": {"code", "message"}}` — malformed JSON,
//! wrong types, unknown fields, bad query values, unknown routes and methods
//! included. Objects a token may not see are 404, never 403.

mod admin;
pub use admin::reconcile_body;
mod auth;
pub use auth::{Caller, ClientAddr, client_addr, token_allows};
mod digests;
mod jobs;
pub use jobs::{enqueue_error, follow, rfc3339, visible_job};
pub mod openapi;
mod patches;
pub use patches::PatchJson;
mod projects;
pub use projects::visible_project;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use admin::verify_signature;
pub use auth::{ensure_admin_token, hash_bearer, mint_bearer};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::events::Events;
use crate::ledger::{Db, LedgerError};
use crate::reconciler::looped::Trigger;
use crate::runner::Runner;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The ledger: one writer shared with the runner, and read-only connections
    /// that handlers read through (with WAL, reads never wait for writes).
    pub db: Db,
    /// The configuration.
    pub config: Arc<Config>,
    /// The runner (enqueue, cancel, stats).
    pub runner: Runner,
    /// The farm's events (log followers wait on a job's end here).
    pub events: Events,
    /// The digest service (run-now, preview).
    pub digests: crate::notify::service::Digests,
    /// The patch loop, when configured.
    pub patcher: Option<crate::patcher::Patcher>,
    /// The farm's clock.
    pub clock: SharedClock,
    /// Asks the reconcile loop to run, and tells whether one runs.
    pub reconcile: Trigger,
    /// Process start, for uptime.
    pub started: Instant,
    /// Reconcile figures for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Where job logs are read.
    pub logs: crate::logfile::LogStore,
    /// With PostgreSQL, the bus to the farm's other processes (and whether this
    /// one leads); `None` for a farm alone on SQLite.
    pub bus: Option<crate::ledger::bus::Bus>,
}

impl AppState {
    /// Milliseconds now, by the farm's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Counters the API exposes in `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconciles that applied.
    pub reconciles_ok: std::sync::atomic::AtomicU64,
    /// Reconciles that failed to read the registry.
    pub reconciles_failed: std::sync::atomic::AtomicU64,
    /// Duration of the last reconcile, in microseconds.
    pub last_reconcile_us: std::sync::atomic::AtomicU64,
    /// Manifest errors in the last reconcile.
    pub manifest_errors: std::sync::atomic::AtomicU64,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a status, a machine code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404 for anything the caller may not see or that does not exist.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 400 with a message.
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
    }

    /// 422 with a message.
    pub fn invalid(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", msg)
    }

    /// 409 with a message.
    pub fn conflict(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", msg)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        if e.is_full() {
            tracing::error!(error = %e, "the ledger's disk is full");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "disk_full",
                "the ledger's disk is full: nothing was changed; the farm goes on by itself once space is freed",
            );
        }
        tracing::error!(error = %e, "ledger error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the farm's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "ok": false,
            "error": {"code": self.code, "message": self.message},
        });
        (self.status, Json(body)).into_response()
    }
}

/// JSON body extractor whose rejections are JSON errors (400 malformed, 413 too
/// large, 415 wrong content type, 422 wrong types or unknown fields).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let status = rej.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        _ => "bad_request",
    };
    let msg = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body is larger than {BODY_LIMIT} bytes"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "send the body as JSON with `content-type: application/json`".to_owned()
        }
        _ => rej.body_text(),
    };
    ApiError::new(status, code, msg)
}

/// Query extractor whose rejections are JSON 400s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> ApiError {
    ApiError::bad_request(rej.body_text())
}

/// `{"ok": true, ...}` with the given fields.
pub fn ok(fields: serde_json::Value) -> Json<serde_json::Value> {
    let mut obj = serde_json::Map::new();
    obj.insert("ok".into(), true.into());
    if let serde_json::Value::Object(m) = fields {
        obj.extend(m);
    }
    Json(serde_json::Value::Object(obj))
}

/// Serialises a value into JSON, mapping the (impossible) failure to a 500.
pub fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Every route: (method, path) as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/admin/tokens"),
    ("get", "/admin/tokens"),
    ("delete", "/admin/tokens/{name}"),
    ("post", "/projects"),
    ("get", "/projects"),
    ("get", "/projects/{name}"),
    ("put", "/projects/{name}"),
    ("delete", "/projects/{name}"),
    ("post", "/projects/{name}/jobs"),
    ("get", "/jobs"),
    ("get", "/jobs/{id}"),
    ("get", "/jobs/{id}/log"),
    ("get", "/jobs/{id}/findings"),
    ("post", "/jobs/{id}/cancel"),
    ("post", "/jobs/{id}/patches"),
    ("get", "/patches"),
    ("get", "/patches/{id}"),
    ("post", "/patches/{id}/cancel"),
    ("get", "/registry"),
    ("post", "/registry/reconcile"),
    ("post", "/hooks/registry"),
    ("get", "/digests"),
    ("get", "/digests/{date}"),
    ("post", "/admin/digest/run-now"),
    ("post", "/admin/gc"),
];

/// The router with every route, the LAN check, the body limit and JSON fallbacks.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route(
            "/admin/tokens",
            post(admin::mint_token).get(admin::list_tokens),
        )
        .route("/admin/tokens/{name}", delete(admin::revoke_token))
        .route("/projects", post(projects::create).get(projects::list))
        .route(
            "/projects/{name}",
            get(projects::detail)
                .put(projects::update)
                .delete(projects::remove),
        )
        .route("/projects/{name}/jobs", post(jobs::enqueue))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::detail))
        .route("/jobs/{id}/log", get(jobs::log))
        .route("/jobs/{id}/findings", get(jobs::findings))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/patches", post(patches::trigger))
        .route("/patches", get(patches::list))
        .route("/patches/{id}", get(patches::detail))
        .route("/patches/{id}/cancel", post(patches::cancel))
        .route("/registry", get(admin::registry))
        .route("/registry/reconcile", post(admin::reconcile_now))
        .route("/hooks/registry", post(admin::webhook))
        .route("/digests", get(digests::list))
        .route("/digests/{date}", get(digests::preview))
        .route("/admin/digest/run-now", post(digests::run_now))
        .route("/admin/gc", post(admin::gc))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        });
    let app = api
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A bug must not reach the client as a dropped connection: answer 500 JSON.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::lan_only,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state.clone());
    // MCP over Streamable HTTP: same bearer tokens and networks, and every tool call
    // goes through the routes above as the caller.
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::http_service(app.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::mcp_caller,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::lan_only,
        ));
    // The web pages and badges: behind the same LAN check, their own HTML errors.
    let ui = crate::ui::routes()
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::ui::panic_page,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::lan_only,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    mcp.merge(ui).merge(app)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the farm's log",
    )
    .into_response()
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // No Nagle: a streamed response's last chunk (a followed log's end) must not
    // wait for the client's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
