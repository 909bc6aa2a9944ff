//! Configuration: every default, environment over file, and each bad value's message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crafting_table::config::{Config, ConfigError, RegistrySource, SmtpTls};

fn cfg(env: &[(&str, &str)], file: Option<&str>) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let lookup = move |k: &str| map.get(k).cloned();
    Config::from_lookup(&lookup, file.map(|t| ("ct.toml", t)), 4)
}

#[track_caller]
fn err(env: &[(&str, &str)], file: Option<&str>) -> String {
    match cfg(env, file) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let c = cfg(&[], None).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.workspace_dir, PathBuf::from("./data/workspace"));
    assert_eq!(c.registry, RegistrySource::Dir(PathBuf::from("./registry")));
    assert_eq!(c.registry_branch, "main");
    assert_eq!(c.registry_token, None);
    assert_eq!(c.registry_poll_secs, 60);
    assert_eq!(c.bind, "127.0.0.1:8810".parse::<SocketAddr>().unwrap());
    let cidrs: Vec<String> = c.lan_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        cidrs,
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "127.0.0.0/8",
            "::1/128"
        ]
    );
    assert_eq!(c.workers, 4, "number of CPUs");
    assert_eq!(c.log_cap_bytes, 64 * 1024 * 1024);
    assert_eq!(c.smtp, None, "digest sending off");
    assert_eq!(c.webhook_secret, None, "webhook off");
    assert_eq!(c.patcher, None, "patcher off");
    assert_eq!(c.ledger_path(), PathBuf::from("./data/ledger.sqlite3"));
    assert_eq!(
        c.admin_bearer_path(),
        PathBuf::from("./data/admin-bearer.txt")
    );
}

#[test]
fn workspace_follows_data_dir() {
    let c = cfg(&[("CRAFTING_DATA_DIR", "/srv/ct")], None).unwrap();
    assert_eq!(c.workspace_dir, PathBuf::from("/srv/ct/workspace"));
    let c = cfg(
        &[
            ("CRAFTING_DATA_DIR", "/srv/ct"),
            ("CRAFTING_WORKSPACE_DIR", "/fast/ws"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.workspace_dir, PathBuf::from("/fast/ws"));
}

#[test]
fn every_variable_is_read() {
    let c = cfg(
        &[
            ("CRAFTING_REGISTRY", "https://gitea.lan/ops/registry.git"),
            ("CRAFTING_REGISTRY_BRANCH", "prod"),
            ("CRAFTING_REGISTRY_TOKEN", "t0k"),
            ("CRAFTING_REGISTRY_POLL_SECS", "15"),
            ("CRAFTING_BIND", "[::1]:9000"),
            ("CRAFTING_LAN_CIDRS", "10.1.0.0/16, 127.0.0.1"),
            ("CRAFTING_WORKERS", "8"),
            ("CRAFTING_LOG_CAP_BYTES", "1048576"),
            ("CRAFTING_SMTP_HOST", "mail.lan"),
            ("CRAFTING_SMTP_USER", "ct"),
            ("CRAFTING_SMTP_PASS", "pw"),
            ("CRAFTING_SMTP_FROM", "ct@lan.example"),
            ("CRAFTING_SMTP_TLS", "1"),
            ("CRAFTING_WEBHOOK_SECRET", "s3cret"),
            ("CRAFTING_CLAWDFORGE_URL", "http://cf.lan:8800"),
            ("CRAFTING_CLAWDFORGE_TOKEN", "cf_x"),
            ("CRAFTING_GITEA_URL", "http://gitea.lan:3001"),
            ("CRAFTING_GITEA_TOKEN", "g"),
            ("CRAFTING_PATCHER_MAX_ATTEMPTS", "5"),
            ("CRAFTING_PATCHER_BRANCH_PREFIX", "bot/"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        c.registry,
        RegistrySource::Git("https://gitea.lan/ops/registry.git".into())
    );
    assert_eq!(c.registry_branch, "prod");
    assert_eq!(c.registry_token.as_deref(), Some("t0k"));
    assert_eq!(c.registry_poll_secs, 15);
    assert_eq!(c.bind, "[::1]:9000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.lan_cidrs.len(), 2);
    assert_eq!(
        c.lan_cidrs[1].to_string(),
        "127.0.0.1/32",
        "a bare address is one host"
    );
    assert_eq!(c.workers, 8);
    assert_eq!(c.log_cap_bytes, 1_048_576);
    let smtp = c.smtp.unwrap();
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.tls),
        ("mail.lan", 587, SmtpTls::StartTls)
    );
    assert_eq!(
        (smtp.user.as_deref(), smtp.pass.as_deref()),
        (Some("ct"), Some("pw"))
    );
    assert_eq!(smtp.from, "ct@lan.example");
    assert_eq!(c.webhook_secret.as_deref(), Some("s3cret"));
    let p = c.patcher.unwrap();
    assert_eq!((p.max_attempts, p.branch_prefix.as_str()), (5, "bot/"));
    assert_eq!(p.gitea_url, "http://gitea.lan:3001");
    assert_eq!(
        p.backend,
        crafting_table::config::ModelBackend::Clawdforge {
            url: "http://cf.lan:8800".into(),
            token: "cf_x".into()
        }
    );
    assert_eq!(
        (p.context_lines, p.max_open_prs, p.max_per_day),
        (20, 5, 10)
    );
}

#[test]
fn registry_kinds() {
    for (value, git) in [
        ("./registry", false),
        ("/srv/registry", false),
        ("file:///srv/registry.git", true),
        ("/srv/registry.git", true),
        ("git@gitea.lan:ops/registry.git", true),
        ("ssh://git@gitea.lan/ops/registry", true),
        ("http://gitea.lan/ops/registry", true),
    ] {
        let c = cfg(&[("CRAFTING_REGISTRY", value)], None).unwrap();
        assert_eq!(matches!(c.registry, RegistrySource::Git(_)), git, "{value}");
    }
}

#[test]
fn patcher_needs_all_four() {
    let c = cfg(
        &[
            ("CRAFTING_CLAWDFORGE_URL", "http://cf"),
            ("CRAFTING_GITEA_URL", "http://g"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.patcher, None);
    assert_eq!(c.patcher_missing.len(), 2, "{:?}", c.patcher_missing);
    assert!(c.patcher_missing[0].contains("CRAFTING_LLM_URL"));
    assert_eq!(c.patcher_missing[1], "CRAFTING_GITEA_TOKEN");
    // An OpenAI-compatible server and the forge turn it on.
    let c = cfg(
        &[
            ("CRAFTING_LLM_URL", "http://127.0.0.1:8080/v1/"),
            ("CRAFTING_LLM_MODEL", "qwen2.5-coder"),
            ("CRAFTING_GITEA_URL", "http://g"),
            ("CRAFTING_GITEA_TOKEN", "t"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        c.patcher.unwrap().backend,
        crafting_table::config::ModelBackend::OpenAi {
            url: "http://127.0.0.1:8080/v1".into(),
            model: "qwen2.5-coder".into(),
            token: None
        }
    );
}

#[test]
fn file_values_and_env_precedence() {
    let file = "data_dir = \"/var/lib/ct\"\nworkers = 3\nlan_cidrs = [\"10.0.0.0/8\", \"::1/128\"]\nbind = \"0.0.0.0:8811\"\n";
    let c = cfg(&[("CRAFTING_WORKERS", "6")], Some(file)).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/ct"));
    assert_eq!(c.workers, 6, "environment wins over the file");
    assert_eq!(c.lan_cidrs.len(), 2);
    assert_eq!(c.bind.port(), 8811);
    assert_eq!(c.config_file, Some(PathBuf::from("ct.toml")));
}

#[test]
fn bad_values_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "CRAFTING_LAN_CIDRS",
            "10.0.0.0/33",
            "CRAFTING_LAN_CIDRS: `10.0.0.0/33` has `10.0.0.0/33`, which is not a CIDR network (e.g. 10.0.0.0/8)",
        ),
        (
            "CRAFTING_LAN_CIDRS",
            "10.0.0.0/8,lan",
            "CRAFTING_LAN_CIDRS: `10.0.0.0/8,lan` has `lan`, which is not a CIDR network (e.g. 10.0.0.0/8)",
        ),
        (
            "CRAFTING_LAN_CIDRS",
            " , ",
            "CRAFTING_LAN_CIDRS: ` , ` lists no network: nothing could connect",
        ),
        (
            "CRAFTING_BIND",
            "8810",
            "CRAFTING_BIND: `8810` is not an address with a port (e.g. 127.0.0.1:8810 or [::1]:8810)",
        ),
        (
            "CRAFTING_BIND",
            "127.0.0.1:99999",
            "CRAFTING_BIND: `127.0.0.1:99999` is not an address with a port (e.g. 127.0.0.1:8810 or [::1]:8810)",
        ),
        (
            "CRAFTING_WORKERS",
            "0",
            "CRAFTING_WORKERS: `0` would run no job at all: 0 is only for a farm on PostgreSQL whose jobs run in `crafting-table runner` processes (CRAFTING_LEDGER=postgres://…)",
        ),
        (
            "CRAFTING_WORKERS",
            "four",
            "CRAFTING_WORKERS: `four` is not a whole number from 0 to 1024",
        ),
        (
            "CRAFTING_RUNNER_NAME",
            "no spaces",
            "CRAFTING_RUNNER_NAME: `no spaces` is not a runner name: 1 to 64 letters, digits, `-`, `_` or `.`",
        ),
        (
            "CRAFTING_LEASE_SECS",
            "1",
            "CRAFTING_LEASE_SECS: `1` is not between 3 and 3600 seconds",
        ),
        (
            "CRAFTING_WORKERS",
            "5000",
            "CRAFTING_WORKERS: `5000` is more than 1024 workers",
        ),
        (
            "CRAFTING_REGISTRY_POLL_SECS",
            "-1",
            "CRAFTING_REGISTRY_POLL_SECS: `-1` is not a positive whole number",
        ),
        (
            "CRAFTING_LOG_CAP_BYTES",
            "64M",
            "CRAFTING_LOG_CAP_BYTES: `64M` is not a positive whole number",
        ),
        (
            "CRAFTING_SMTP_PORT",
            "0",
            "CRAFTING_SMTP_PORT: `0` is not a port number (1 to 65535)",
        ),
        (
            "CRAFTING_SMTP_PORT",
            "70000",
            "CRAFTING_SMTP_PORT: `70000` is not a port number (1 to 65535)",
        ),
        (
            "CRAFTING_SMTP_TLS",
            "maybe",
            "CRAFTING_SMTP_TLS: `maybe` is not one of: 0, 1, none, starttls, tls",
        ),
        (
            "CRAFTING_PATCHER_MAX_ATTEMPTS",
            "0",
            "CRAFTING_PATCHER_MAX_ATTEMPTS: `0` is not a positive whole number",
        ),
    ];
    for (var, value, want) in cases {
        assert_eq!(err(&[(var, value)], None), *want);
    }
}

#[test]
fn smtp_host_without_from() {
    assert_eq!(
        err(&[("CRAFTING_SMTP_HOST", "mail.lan")], None),
        "CRAFTING_SMTP_FROM: not set, but CRAFTING_SMTP_HOST is: the digest needs a From address"
    );
}

#[test]
fn bad_file_values_name_the_key() {
    assert_eq!(
        err(&[], Some("workers = 0\n")),
        "ct.toml: key `workers`: `0` would run no job at all: 0 is only for a farm on PostgreSQL whose jobs run in `crafting-table runner` processes (CRAFTING_LEDGER=postgres://…)"
    );
    assert_eq!(
        err(&[], Some("bind = true\n")),
        "ct.toml: key `bind`: `true` is not an address with a port (e.g. 127.0.0.1:8810 or [::1]:8810)"
    );
    assert_eq!(
        err(&[], Some("lan_cidrs = [1, 2]\n")),
        "ct.toml: key `lan_cidrs`: expected a list of strings"
    );
    assert_eq!(
        err(&[], Some("workers = 1.5\n")),
        "ct.toml: key `workers`: expected a string, whole number or list, found a float"
    );
}

#[test]
fn unknown_file_key() {
    let e = err(&[], Some("data_dir = \"/x\"\nworker = 2\n"));
    assert!(
        e.starts_with("ct.toml: unknown key `worker`; known keys: data_dir, workspace_dir,"),
        "{e}"
    );
}

#[test]
fn unparsable_file() {
    let e = err(&[], Some("data_dir = \"/x\"\nworkers = = 2\n"));
    assert!(e.starts_with("ct.toml:2: not valid TOML: "), "{e}");
}

#[test]
fn unreadable_config_file_stops_the_binary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crafting-table"))
        .arg("validate")
        .env("CRAFTING_CONFIG", "/nonexistent/crafting-table.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CRAFTING_CONFIG: cannot read `/nonexistent/crafting-table.toml`: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn runners_on_postgres() {
    let c = cfg(
        &[
            ("CRAFTING_LEDGER", "postgres://farm@db.lan/farm"),
            ("CRAFTING_WORKERS", "0"),
            ("CRAFTING_RUNNER_NAME", "build-01.lan"),
            ("CRAFTING_LEASE_SECS", "12"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(c.workers, 0, "0 workers: jobs run in runner processes");
    assert_eq!(c.runner_name.as_deref(), Some("build-01.lan"));
    assert_eq!(c.lease_secs, 12);
    let d = cfg(&[], None).unwrap();
    assert_eq!((d.runner_name, d.lease_secs), (None, 30));
}
