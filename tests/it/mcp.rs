//! MCP: rmcp's own client (not written here) against `/mcp` of a real farm, and
//! against `crafting-table mcp` on stdio. The official Python SDK drives the stdio
//! server in CI (`.ci/mcp-python.sh`).

use rmcp::RoleClient;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt as _, StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Value, json};

type Setup = crate::seams::OneProject;

async fn setup() -> Setup {
    crate::seams::OneProject::start(concat!(
        "      test: 'echo all good'\n",
        "      lint: \"echo \\\"src/a.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\\\"; exit 2\"\n",
    )).await
}

async fn http_client(s: &Setup, token: &str) -> RunningService<RoleClient, ()> {
    let cfg = StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", s.farm.addr))
        .auth_header(token.to_owned());
    ().serve(StreamableHttpClientTransport::from_config(cfg))
        .await
        .expect("MCP initialize")
}

async fn call(
    c: &RunningService<RoleClient, ()>,
    tool: &str,
    args: Value,
) -> (bool, Value, String) {
    let r = c
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().cloned().unwrap_or_default()),
        )
        .await
        .expect("a tool result");
    let text = r
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    (
        r.is_error.unwrap_or(false),
        r.structured_content.clone().unwrap_or(Value::Null),
        text,
    )
}

/// The same checks over any transport.
async fn exercise(c: &RunningService<RoleClient, ()>, other_token_job: &str) {
    let info = c.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("crafting-table")
    );
    let tools = c.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for want in [
        "list_projects",
        "get_project",
        "register_project",
        "run_job",
        "get_job",
        "get_job_log",
        "list_jobs",
        "get_findings",
        "cancel_job",
        "trigger_patch",
        "list_patches",
        "get_patch",
        "registry_status",
        "reconcile_registry",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let run = tools.iter().find(|t| t.name == "run_job").unwrap();
    let schema = serde_json::to_value(&*run.input_schema).unwrap();
    assert_eq!(schema["required"], json!(["project", "recipe"]), "{schema}");
    assert!(schema["properties"]["wait_secs"].is_object(), "{schema}");
    let ro = |n: &str| {
        tools
            .iter()
            .find(|t| t.name == n)
            .and_then(|t| t.annotations.as_ref())
            .and_then(|a| a.read_only_hint)
    };
    assert_eq!(ro("list_projects"), Some(true));
    assert_eq!(ro("run_job"), Some(false));
    let cancel = tools.iter().find(|t| t.name == "cancel_job").unwrap();
    assert_eq!(
        cancel.annotations.as_ref().and_then(|a| a.destructive_hint),
        Some(true)
    );

    let (err, projects, _) = call(c, "list_projects", json!({})).await;
    assert!(!err);
    assert_eq!(projects["projects"][0]["name"], "app", "{projects}");

    // run_job waits for the end: status, exit code, log tail.
    let (err, run, text) = call(
        c,
        "run_job",
        json!({"project": "app", "recipe": "lint", "wait_secs": 60}),
    )
    .await;
    assert!(!err, "{text}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["exit_code"], 2);
    assert!(
        run["log_tail"].as_str().unwrap().contains("TS2322"),
        "{run}"
    );
    assert_eq!(run["findings"]["total"], 1, "{run}");
    let job = run["job_id"].as_str().unwrap().to_owned();
    let (err, findings, _) = call(c, "get_findings", json!({"job_id": job, "state": "new"})).await;
    assert!(!err);
    assert_eq!(findings["findings"][0]["code"], "TS2322", "{findings}");
    assert_eq!(findings["findings"][0]["file"], "src/a.ts");
    let (err, log, _) = call(
        c,
        "get_job_log",
        json!({"job_id": job, "offset": 0, "limit_bytes": 40}),
    )
    .await;
    assert!(!err);
    assert!(log["text"].as_str().unwrap().len() <= 40, "{log}");
    assert!(log["log_size"].as_u64().unwrap() > 40, "{log}");

    // Another token's job is "not found", as over HTTP.
    let (err, _, text) = call(c, "get_job", json!({"job_id": other_token_job})).await;
    assert!(err, "{text}");
    assert!(text.contains("not_found"), "{text}");
    // Bad arguments name the argument.
    let (err, _, text) = call(c, "run_job", json!({"project": "app"})).await;
    assert!(err);
    assert!(text.contains("recipe"), "{text}");
    let (err, _, text) = call(
        c,
        "get_job_log",
        json!({"job_id": job, "tail_lines": "many"}),
    )
    .await;
    assert!(err);
    assert!(
        text.contains("tail_lines") || text.contains("invalid type"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_at_mcp_with_the_callers_token() {
    let s = setup().await;
    // A job only the admin may see.
    let (_, v) = s
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "test"})),
        )
        .await;
    let admin_job = v["job_id"].as_str().unwrap().to_owned();
    // A team token that owns nothing sees an empty farm.
    let (_, t) = s
        .api
        .call(
            "POST",
            "/admin/tokens",
            Some(json!({"name": "team-x", "is_admin": false, "ip_cidrs": []})),
        )
        .await;
    let team = t["bearer"].as_str().unwrap().to_owned();
    let c = http_client(&s, &team).await;
    let (err, projects, _) = call(&c, "list_projects", json!({})).await;
    assert!(!err);
    assert_eq!(projects["projects"], json!([]), "{projects}");
    let (err, _, text) = call(&c, "get_job", json!({"job_id": admin_job})).await;
    assert!(err && text.contains("not_found"), "{text}");
    let (err, _, text) = call(&c, "reconcile_registry", json!({})).await;
    assert!(err, "only admins reconcile: {text}");
    c.cancel().await.unwrap();

    // Without a token there is no session at all.
    let no_token = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", s.farm.addr)),
    );
    assert!(().serve(no_token).await.is_err(), "no bearer, no session");

    let team_client = http_client(&s, &team).await;
    let (err, reg, text) = call(
        &team_client,
        "register_project",
        json!({"name": "teamproj", "git_url": s._repo.path.display().to_string(),
               "subprojects": [{"path": ".", "test": "echo team"}]}),
    )
    .await;
    assert!(!err, "{text}");
    assert_eq!(reg["project"]["name"], "teamproj", "{reg}");
    let (_, run, _) = call(
        &team_client,
        "run_job",
        json!({"project": "teamproj", "recipe": "test", "wait_secs": 60}),
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let team_job = run["job_id"].as_str().unwrap().to_owned();
    team_client.cancel().await.unwrap();

    // The admin sees everything: the 404 check uses an id nobody has.
    let admin = http_client(&s, &s.api.bearer.clone()).await;
    exercise(&admin, "00000000000000000000000000000000").await;
    // The team sees its own job, and the admin's job is "not found".
    let team_client = http_client(&s, &team).await;
    let (err, _, text) = call(&team_client, "get_job", json!({"job_id": admin_job})).await;
    assert!(err && text.contains("not_found"), "{text}");
    let (err, _, _) = call(&team_client, "get_job", json!({"job_id": team_job})).await;
    assert!(!err);
    admin.cancel().await.unwrap();
    s.farm.stop("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_server_with_the_token_from_the_environment() {
    let s = setup().await;
    let (_, t) = s
        .api
        .call(
            "POST",
            "/admin/tokens",
            Some(json!({"name": "agent", "is_admin": false, "ip_cidrs": []})),
        )
        .await;
    let agent = t["bearer"].as_str().unwrap().to_owned();
    let (_, v) = s
        .api
        .call(
            "POST",
            "/projects/app/jobs",
            Some(json!({"recipe": "test"})),
        )
        .await;
    let admin_job = v["job_id"].as_str().unwrap().to_owned();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let err_file = stderr.reopen().unwrap();
    let admin = s.api.bearer.clone();
    let base = format!("http://{}", s.farm.addr);
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table")).configure(|c| {
        c.arg("mcp")
            .env("CRAFTING_TABLE_BASE_URL", &base)
            .env("CRAFTING_TABLE_TOKEN", &admin)
            .env("RUST_LOG", "debug");
    });
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::from(err_file))
        .spawn()
        .unwrap();
    let c = ().serve(transport).await.unwrap();
    // As admin everything is visible; the 404 check uses an id nobody has.
    exercise(&c, "00000000000000000000000000000000").await;
    c.cancel().await.unwrap();
    // The token never reaches the logs.
    let logged = std::fs::read_to_string(stderr.path()).unwrap();
    assert!(
        logged.contains("ListTools"),
        "the server's debug log was captured"
    );
    assert!(!logged.contains(&admin), "the bearer was logged");

    // A farm that is gone and a bad token are tool errors, not a crash.
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table")).configure(|c| {
        c.arg("mcp")
            .env("CRAFTING_TABLE_BASE_URL", &base)
            .env("CRAFTING_TABLE_TOKEN", "ct_wrong");
    });
    let c = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let (err, _, text) = call(&c, "list_projects", json!({})).await;
    assert!(err && text.contains("unauthorized"), "{text}");
    c.cancel().await.unwrap();
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crafting-table")).configure(|c| {
        c.arg("mcp")
            .env("CRAFTING_TABLE_BASE_URL", "http://127.0.0.1:9")
            .env("CRAFTING_TABLE_TOKEN", &agent);
    });
    let c = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let (err, _, text) = call(&c, "list_jobs", json!({})).await;
    assert!(err && text.contains("cannot reach the farm"), "{text}");
    c.cancel().await.unwrap();
    let _ = admin_job;
    s.farm.stop("test over").await;
}
