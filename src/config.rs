//! Configuration: environment variables first, then an optional TOML file.
//!
//! Every setting has an environment variable `CRAFTING_<NAME>` and a TOML key
//! `<name>` (lowercase, without the prefix) in the file named by `CRAFTING_CONFIG`.
//! A value given in the environment wins over the file. Any bad value stops start-up
//! with one message that names the variable or key and what is wrong with it.
//!
//! [`Config::from_lookup`] is pure (a lookup function and the file's text in, a
//! config or an error out); [`Config::from_env`] is the thin I/O wrapper.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// Default networks allowed to connect at all.
pub const DEFAULT_LAN_CIDRS: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,::1/128";

/// Every setting's TOML key; its environment variable is `CRAFTING_` + the key in capitals.
const KEYS: &[&str] = &[
    "data_dir",
    "workspace_dir",
    "ledger",
    "registry",
    "registry_branch",
    "registry_token",
    "registry_poll_secs",
    "git_timeout_secs",
    "git_credentials",
    "bind",
    "lan_cidrs",
    "trusted_proxies",
    "workers",
    "runner_name",
    "lease_secs",
    "log_cap_bytes",
    "sandbox",
    "sandbox_writable",
    "sandbox_pass_env",
    "retain_days",
    "retain_runs",
    "warm_idle_secs",
    "ui_session_secs",
    "smtp_host",
    "smtp_port",
    "smtp_user",
    "smtp_pass",
    "smtp_from",
    "smtp_tls",
    "smtp_ca_file",
    "digest_time",
    "digest_timezone",
    "public_url",
    "webhook_secret",
    "clawdforge_url",
    "clawdforge_token",
    "gitea_url",
    "gitea_token",
    "patcher_max_attempts",
    "patcher_branch_prefix",
    "patcher_author",
    "patcher_context_lines",
    "patcher_max_open_prs",
    "patcher_max_per_day",
    "llm_url",
    "llm_model",
    "llm_token",
];

/// Where the registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// A directory of manifests, watched for changes.
    Dir(PathBuf),
    /// A git repository, mirrored and polled.
    Git(String),
}

impl RegistrySource {
    /// Reads `CRAFTING_REGISTRY`: URLs (`scheme://`, `user@host:path`) and paths ending
    /// in `.git` are git repositories; anything else is a directory.
    pub fn parse(value: &str) -> RegistrySource {
        if crate::git::is_remote_url(value) || value.trim_end_matches('/').ends_with(".git") {
            RegistrySource::Git(value.to_owned())
        } else {
            RegistrySource::Dir(PathBuf::from(value))
        }
    }
}

/// How SMTP connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a relay on the LAN).
    None,
    /// STARTTLS upgrade (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Digest delivery; present only when `CRAFTING_SMTP_HOST` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Relay host.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Login, if the relay wants one.
    pub user: Option<String>,
    /// Password for `user`.
    pub pass: Option<String>,
    /// `From:` address.
    pub from: String,
    /// Transport security.
    pub tls: SmtpTls,
    /// PEM file of extra root certificates (a relay with a private CA).
    pub ca_file: Option<PathBuf>,
}

/// The language model the patch loop asks for a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelBackend {
    /// clawdforge's session API.
    Clawdforge {
        /// Base URL.
        url: String,
        /// Bearer.
        token: String,
    },
    /// Any OpenAI-compatible `chat/completions` server.
    OpenAi {
        /// Base URL (e.g. `http://127.0.0.1:8080/v1`).
        url: String,
        /// Model name.
        model: String,
        /// Bearer, if the server wants one.
        token: Option<String>,
    },
}

/// Settings of the automatic patch loop; present only when a model backend and the
/// forge are both configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatcherConfig {
    /// The model backend (clawdforge wins when both are set).
    pub backend: ModelBackend,
    /// Gitea's web root.
    pub gitea_url: String,
    /// Gitea API token.
    pub gitea_token: String,
    /// Attempts per finding before giving up.
    pub max_attempts: u32,
    /// Prefix of the branches patches are pushed to.
    pub branch_prefix: String,
    /// Author of patch commits (`Name <email>`).
    pub author: String,
    /// Source lines shown to the model on each side of the finding.
    pub context_lines: u32,
    /// Open automatic pull requests per project at most.
    pub max_open_prs: u32,
    /// Attempts per project per day at most.
    pub max_per_day: u32,
}

/// The whole configuration of one farm process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Ledger, admin bearer file, job logs.
    pub data_dir: PathBuf,
    /// Where the ledger lives.
    pub ledger: LedgerLocation,
    /// Bare mirrors and per-job worktrees.
    pub workspace_dir: PathBuf,
    /// Where manifests come from.
    pub registry: RegistrySource,
    /// Branch of a git registry.
    pub registry_branch: String,
    /// Token for an `http(s)://` git registry.
    pub registry_token: Option<String>,
    /// Seconds between polls of a git registry.
    pub registry_poll_secs: u64,
    /// Overall deadline of one git fetch or clone, in seconds (ssh included).
    pub git_timeout_secs: u64,
    /// A mode-600 file of git credentials for project remotes (credential-store
    /// format).
    pub git_credentials: Option<PathBuf>,
    /// API listen address.
    pub bind: SocketAddr,
    /// Networks allowed to connect at all.
    pub lan_cidrs: Vec<IpNet>,
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Jobs that run at once (0: none in this process, with PostgreSQL only).
    pub workers: usize,
    /// This process's runner name (`CRAFTING_RUNNER_NAME`): needed with
    /// PostgreSQL by a process that runs jobs, unique in the farm, stable across
    /// restarts.
    pub runner_name: Option<String>,
    /// Seconds a running job's lease lasts without renewal (PostgreSQL).
    pub lease_secs: u64,
    /// Largest job log kept, in bytes; the rest is cut with a marker line.
    pub log_cap_bytes: u64,
    /// `none`, `bwrap` (use it when it works here) or `required` (refuse to start
    /// without it).
    pub sandbox: String,
    /// Extra writable paths inside the sandbox.
    pub sandbox_writable: Vec<PathBuf>,
    /// Names of environment variables passed into the sandbox.
    pub sandbox_pass_env: Vec<String>,
    /// Runs older than this many days lose their log and findings (see retention).
    pub retain_days: u64,
    /// Runs beyond the latest this many of their command lose their log and findings.
    pub retain_runs: u64,
    /// Seconds an idle warm worktree is kept before gc removes it.
    pub warm_idle_secs: u64,
    /// Seconds a web-page session lasts after its login.
    pub ui_session_secs: u64,
    /// Digest delivery, when configured.
    pub smtp: Option<SmtpConfig>,
    /// Default digest time (`HH:MM`) of projects' own `notify` blocks.
    pub digest_time: String,
    /// Time zone of `digest_time`.
    pub digest_timezone: String,
    /// Base URL of the API as people reach it, for links in messages (default: the
    /// address the API listens on).
    pub public_url: Option<String>,
    /// HMAC secret of `/hooks/registry`, when configured.
    pub webhook_secret: Option<String>,
    /// The patch loop, when configured.
    pub patcher: Option<PatcherConfig>,
    /// When the patch loop is off: the settings that would turn it on.
    pub patcher_missing: Vec<String>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
}

/// A configuration problem, naming the variable or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Env(String),
    File { path: String, key: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "{var}"),
            Origin::File { path, key } => write!(f, "{path}: key `{key}`"),
        }
    }
}

struct Raw {
    value: String,
    origin: Origin,
}

struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: Option<(String, toml::Table)>,
}

impl Sources<'_> {
    fn get(&self, key: &str) -> Result<Option<Raw>, ConfigError> {
        let var = format!("CRAFTING_{}", key.to_uppercase());
        if let Some(v) = (self.env)(&var) {
            return Ok(Some(Raw {
                value: v,
                origin: Origin::Env(var),
            }));
        }
        let Some((path, table)) = &self.file else {
            return Ok(None);
        };
        let Some(v) = table.get(key) else {
            return Ok(None);
        };
        let origin = Origin::File {
            path: path.clone(),
            key: key.to_owned(),
        };
        let value = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => parts.push(s.clone()),
                        _ => {
                            return Err(ConfigError(format!(
                                "{origin}: expected a list of strings"
                            )));
                        }
                    }
                }
                parts.join(",")
            }
            other => {
                return Err(ConfigError(format!(
                    "{origin}: expected a string, whole number or list, found a {}",
                    other.type_str()
                )));
            }
        };
        Ok(Some(Raw { value, origin }))
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(key)?.map(|r| r.value).filter(|v| !v.is_empty()))
    }

    fn parsed<T>(
        &self,
        key: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(key)? {
            None => Ok(default),
            Some(raw) => parse(raw.value.trim())
                .map_err(|why| ConfigError(format!("{}: `{}` {why}", raw.origin, raw.value))),
        }
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err("is not a positive whole number".to_owned()),
    }
}

fn parse_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let net = part
            .parse::<IpNet>()
            .or_else(|_| part.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("has `{part}`, which is not a CIDR network (e.g. 10.0.0.0/8)"))?;
        out.push(net);
    }
    if out.is_empty() {
        return Err("lists no network: nothing could connect".to_owned());
    }
    Ok(out)
}

fn parse_tls(s: &str) -> Result<SmtpTls, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "none" => Ok(SmtpTls::None),
        "1" | "true" | "yes" | "on" | "starttls" => Ok(SmtpTls::StartTls),
        "tls" | "smtps" | "implicit" => Ok(SmtpTls::Tls),
        _ => Err("is not one of: 0, 1, none, starttls, tls".to_owned()),
    }
}

impl Config {
    /// Reads the configuration from the process environment and, when
    /// `CRAFTING_CONFIG` names one, the TOML file.
    pub fn from_env() -> Result<Config, ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        let file = match env("CRAFTING_CONFIG").filter(|p| !p.is_empty()) {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError(format!("CRAFTING_CONFIG: cannot read `{path}`: {e}"))
                })?;
                Some((path, text))
            }
        };
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Config::from_lookup(
            &env,
            file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
            cpus,
        )
    }

    /// Builds the configuration from a variable lookup and the config file's path and
    /// text. `cpus` is the default worker count.
    pub fn from_lookup(
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<(&str, &str)>,
        cpus: usize,
    ) -> Result<Config, ConfigError> {
        let file = match file {
            None => None,
            Some((path, text)) => {
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                    let msg = e.message().trim_end_matches('.').to_owned();
                    let at = e
                        .span()
                        .map(|span| {
                            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                            format!(":{line}")
                        })
                        .unwrap_or_default();
                    ConfigError(format!("{path}{at}: not valid TOML: {msg}"))
                })?;
                if let Some(bad) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
                    return Err(ConfigError(format!(
                        "{path}: unknown key `{bad}`; known keys: {}",
                        KEYS.join(", ")
                    )));
                }
                Some((path.to_owned(), table))
            }
        };
        let src = Sources { env, file };

        let data_dir = PathBuf::from(src.string("data_dir")?.unwrap_or_else(|| "./data".into()));
        let ledger = src.parsed(
            "ledger",
            LedgerLocation::Sqlite(data_dir.join("ledger.sqlite3")),
            LedgerLocation::parse,
        )?;
        let workspace_dir = src
            .string("workspace_dir")?
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("workspace"));
        let registry = RegistrySource::parse(
            &src.string("registry")?
                .unwrap_or_else(|| "./registry".into()),
        );
        let registry_branch = src
            .string("registry_branch")?
            .unwrap_or_else(|| "main".into());
        let registry_token = src.string("registry_token")?;
        let registry_poll_secs = src.parsed("registry_poll_secs", 60u64, positive)?;
        let git_credentials = src.string("git_credentials")?.map(PathBuf::from);
        let git_timeout_secs = src.parsed(
            "git_timeout_secs",
            crate::git::DEFAULT_NETWORK_TIMEOUT.as_secs(),
            positive,
        )?;
        let bind = src.parsed("bind", SocketAddr::from(([127, 0, 0, 1], 8810)), |s| {
            s.parse::<SocketAddr>().map_err(|_| {
                "is not an address with a port (e.g. 127.0.0.1:8810 or [::1]:8810)".into()
            })
        })?;
        let lan_cidrs = src.parsed(
            "lan_cidrs",
            parse_cidrs(DEFAULT_LAN_CIDRS).unwrap_or_default(),
            parse_cidrs,
        )?;
        let trusted_proxies = src.parsed("trusted_proxies", Vec::new(), |s| {
            if s.trim().is_empty() {
                Ok(Vec::new())
            } else {
                parse_cidrs(s)
            }
        })?;
        let shared = matches!(ledger, LedgerLocation::Postgres(_));
        let workers = src.parsed("workers", cpus.max(1), |s| {
            let n: usize = s
                .parse()
                .map_err(|_| "is not a whole number from 0 to 1024".to_owned())?;
            if n > 1024 {
                return Err("is more than 1024 workers".to_owned());
            }
            if n == 0 && !shared {
                return Err(
                    "would run no job at all: 0 is only for a farm on PostgreSQL whose jobs run in `crafting-table runner` processes (CRAFTING_LEDGER=postgres://…)"
                        .to_owned(),
                );
            }
            Ok(n)
        })?;
        let runner_name = src.parsed("runner_name", None, |s| {
            if s.is_empty()
                || s.len() > 64
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(
                    "is not a runner name: 1 to 64 letters, digits, `-`, `_` or `.`".to_owned(),
                );
            }
            Ok(Some(s.to_owned()))
        })?;
        let lease_secs = src.parsed("lease_secs", 30u64, |s| {
            let n: u64 = positive(s)?;
            if !(3..=3600).contains(&n) {
                return Err("is not between 3 and 3600 seconds".to_owned());
            }
            Ok(n)
        })?;
        let log_cap_bytes = src.parsed("log_cap_bytes", 64 * 1024 * 1024, positive)?;
        let sandbox = src.parsed("sandbox", "bwrap".to_owned(), |s| match s {
            "none" | "bwrap" | "required" => Ok(s.to_owned()),
            _ => Err("is not one of none, bwrap, required".to_owned()),
        })?;
        let list = |s: &str| -> Vec<String> {
            s.split([',', ':'])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let sandbox_writable = src.parsed("sandbox_writable", Vec::new(), |s| {
            let paths: Vec<PathBuf> = list(s).into_iter().map(PathBuf::from).collect();
            match paths.iter().find(|p| !p.is_absolute()) {
                Some(p) => Err(format!("`{}` is not an absolute path", p.display())),
                None => Ok(paths),
            }
        })?;
        let sandbox_pass_env = src.parsed("sandbox_pass_env", Vec::new(), |s| Ok(list(s)))?;
        let retain_days = src.parsed("retain_days", 90u64, positive)?;
        let retain_runs = src.parsed("retain_runs", 100u64, positive)?;
        let warm_idle_secs = src.parsed("warm_idle_secs", 3600u64, positive)?;
        let ui_session_secs = src.parsed("ui_session_secs", 43_200u64, positive)?;

        let smtp_tls = src.parsed("smtp_tls", SmtpTls::None, parse_tls)?;
        let smtp_port = src.parsed(
            "smtp_port",
            match smtp_tls {
                SmtpTls::None => 25,
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
            },
            |s| positive::<u16>(s).map_err(|_| "is not a port number (1 to 65535)".into()),
        )?;
        let smtp = match src.string("smtp_host")? {
            None => None,
            Some(host) => {
                let from = src.string("smtp_from")?.ok_or_else(|| {
                    ConfigError(
                        "CRAFTING_SMTP_FROM: not set, but CRAFTING_SMTP_HOST is: the digest needs a From address"
                            .into(),
                    )
                })?;
                Some(SmtpConfig {
                    host,
                    port: smtp_port,
                    user: src.string("smtp_user")?,
                    pass: src.string("smtp_pass")?,
                    from,
                    tls: smtp_tls,
                    ca_file: src.string("smtp_ca_file")?.map(PathBuf::from),
                })
            }
        };
        let digest_time = src.parsed("digest_time", "06:00".to_owned(), |s| {
            crate::manifest::check::parse_hhmm(s)
                .map(|_| s.to_owned())
                .ok_or_else(|| "is not a time of day: use HH:MM, 24-hour clock".to_owned())
        })?;
        let digest_timezone =
            src.parsed("digest_timezone", "America/Los_Angeles".to_owned(), |s| {
                crate::manifest::check::parse_timezone(s)
                    .map(|_| s.to_owned())
                    .map_err(|_| "is not an IANA time zone (e.g. Europe/Berlin)".to_owned())
            })?;
        let public_url = src.parsed("public_url", None, |s| {
            if (s.starts_with("http://") || s.starts_with("https://")) && !s.contains(' ') {
                Ok(Some(s.trim_end_matches('/').to_owned()))
            } else {
                Err("is not an http:// or https:// URL".to_owned())
            }
        })?;

        let webhook_secret = src.string("webhook_secret")?;
        let max_attempts = src.parsed("patcher_max_attempts", 3u32, positive)?;
        let branch_prefix = src
            .string("patcher_branch_prefix")?
            .unwrap_or_else(|| "crafting-table/auto/".into());
        let backend = match (
            src.string("clawdforge_url")?,
            src.string("clawdforge_token")?,
            src.string("llm_url")?,
            src.string("llm_model")?,
        ) {
            (Some(url), Some(token), llm_url, _) => {
                if llm_url.is_some() {
                    tracing::info!(
                        "both clawdforge and an OpenAI-compatible model are configured: clawdforge wins"
                    );
                }
                Some(ModelBackend::Clawdforge {
                    url: url.trim_end_matches('/').to_owned(),
                    token,
                })
            }
            (_, _, Some(url), Some(model)) => Some(ModelBackend::OpenAi {
                url: url.trim_end_matches('/').to_owned(),
                model,
                token: src.string("llm_token")?,
            }),
            _ => None,
        };
        let gitea = (src.string("gitea_url")?, src.string("gitea_token")?);
        let mut patcher_missing = Vec::new();
        if backend.is_none() {
            patcher_missing.push(
                "a model: CRAFTING_CLAWDFORGE_URL + CRAFTING_CLAWDFORGE_TOKEN, or CRAFTING_LLM_URL + CRAFTING_LLM_MODEL"
                    .to_owned(),
            );
        }
        if gitea.0.is_none() {
            patcher_missing.push("CRAFTING_GITEA_URL".to_owned());
        }
        if gitea.1.is_none() {
            patcher_missing.push("CRAFTING_GITEA_TOKEN".to_owned());
        }
        let author = src
            .string("patcher_author")?
            .unwrap_or_else(|| "crafting-table <crafting-table@localhost>".into());
        let context_lines = src.parsed("patcher_context_lines", 20u32, positive)?;
        let max_open_prs = src.parsed("patcher_max_open_prs", 5u32, positive)?;
        let max_per_day = src.parsed("patcher_max_per_day", 10u32, positive)?;
        let patcher = match (backend, gitea) {
            (Some(backend), (Some(gitea_url), Some(gitea_token))) => Some(PatcherConfig {
                backend,
                gitea_url: gitea_url.trim_end_matches('/').to_owned(),
                gitea_token,
                max_attempts,
                branch_prefix,
                author,
                context_lines,
                max_open_prs,
                max_per_day,
            }),
            _ => None,
        };

        Ok(Config {
            data_dir,
            ledger,
            workspace_dir,
            registry,
            registry_branch,
            registry_token,
            registry_poll_secs,
            git_timeout_secs,
            git_credentials,
            bind,
            lan_cidrs,
            trusted_proxies,
            workers,
            runner_name,
            lease_secs,
            log_cap_bytes,
            sandbox,
            sandbox_writable,
            sandbox_pass_env,
            retain_days,
            retain_runs,
            warm_idle_secs,
            ui_session_secs,
            smtp,
            digest_time,
            digest_timezone,
            public_url,
            webhook_secret,
            patcher,
            patcher_missing,
            config_file: src.file.as_ref().map(|(p, _)| PathBuf::from(p)),
        })
    }

    /// Path of the SQLite ledger (with `CRAFTING_LEDGER=sqlite:PATH`, that path).
    pub fn ledger_path(&self) -> PathBuf {
        match &self.ledger {
            LedgerLocation::Sqlite(p) => p.clone(),
            LedgerLocation::Postgres(_) => self.data_dir.join("ledger.sqlite3"),
        }
    }

    /// Path of the file the first admin bearer is written to.
    pub fn admin_bearer_path(&self) -> PathBuf {
        self.data_dir.join("admin-bearer.txt")
    }

    /// Directory of job logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The deadline of one git fetch or clone.
    pub fn git_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.git_timeout_secs)
    }
}

/// Where the ledger lives (`CRAFTING_LEDGER`).
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// A SQLite file (the default: `$CRAFTING_DATA_DIR/ledger.sqlite3`).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its connection URL.
    Postgres(String),
}

impl std::fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerLocation::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            // Never the password.
            LedgerLocation::Postgres(url) => {
                let shown = url
                    .parse::<tokio_postgres::Config>()
                    .map(|c| crate::ledger::display_postgres_url(&c))
                    .unwrap_or_else(|_| "postgres://…".to_owned());
                f.write_str(&shown)
            }
        }
    }
}

impl LedgerLocation {
    fn parse(s: &str) -> Result<LedgerLocation, String> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a path (sqlite:/var/lib/farm/ledger.sqlite3)".into());
            }
            return Ok(LedgerLocation::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return s
                .parse::<tokio_postgres::Config>()
                .map(|_| LedgerLocation::Postgres(s.to_owned()))
                .map_err(|e| format!("is not a PostgreSQL URL: {e}"));
        }
        Err("must be sqlite:PATH or a postgres:// URL".into())
    }
}
