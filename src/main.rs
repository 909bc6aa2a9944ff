//! The `crafting-table` command: parses arguments and wires configuration to the
//! library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crafting_table::cli::{self, Request};
use crafting_table::config::{Config, RegistrySource};
use crafting_table::ledger::Ledger;
use crafting_table::manifest::{self, Kind};
use crafting_table::reconciler;
use crafting_table::registry::{self, Registry};

/// A self-hosted build, test and audit farm driven by a git registry of YAML manifests.
#[derive(Parser)]
#[command(name = "crafting-table", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the farm: API, registry watcher and reconciler, scheduler, runner, gc.
    ///
    /// Configuration comes from CRAFTING_* environment variables and the optional
    /// TOML file named by CRAFTING_CONFIG (see the README). Stops cleanly on SIGINT or
    /// SIGTERM; exits non-zero if any part of the farm stops.
    Serve,
    /// Run jobs for a farm whose ledger is PostgreSQL: no API, no registry; claims
    /// queued jobs (worker count and per-project caps as `serve`), runs them in
    /// the sandbox, stores logs and findings in the ledger.
    ///
    /// Needs CRAFTING_LEDGER=postgres://… and CRAFTING_RUNNER_NAME (unique in the
    /// farm, stable across restarts); leases last CRAFTING_LEASE_SECS (30). Stops
    /// cleanly on SIGINT or SIGTERM (running jobs are cancelled).
    Runner,
    /// Check every manifest under DIR and print each problem as path:line:col: message.
    ///
    /// Exits 0 when every manifest is valid, 1 when any is not.
    Validate {
        /// Registry directory (default: the configured registry, `./registry`).
        dir: Option<PathBuf>,
    },
    /// Show what a reconcile would change in the ledger, without changing it.
    ///
    /// Exits 0 when nothing would change, 2 when something would, 1 when manifests are
    /// invalid. Opens the ledger read-only: safe beside a running `serve`.
    Plan {
        /// Registry directory (default: the configured registry, directory or git).
        dir: Option<PathBuf>,
    },
    /// Write a consistent copy of the ledger to PATH while `serve` runs.
    ///
    /// Uses SQLite's online copy (`VACUUM INTO`): the farm keeps running and writing.
    /// PATH must not exist. Restore by stopping the farm and putting the copy in
    /// place of `$CRAFTING_DATA_DIR/ledger.sqlite3` (see the README, Operations).
    Backup {
        /// Where to write the copy.
        path: PathBuf,
    },
    /// Serve the farm's tools to an AI agent over MCP on stdin/stdout.
    ///
    /// Talks to a running farm over HTTP: CRAFTING_TABLE_BASE_URL (default
    /// http://127.0.0.1:8810) with the bearer CRAFTING_TABLE_TOKEN or the file
    /// CRAFTING_TABLE_TOKEN_FILE. Logs go to stderr; stdout carries the protocol only.
    Mcp,
    /// Run a project's command on the farm; with --follow, stream its log and exit
    /// with the job's own exit code.
    ///
    /// The farm is CRAFTING_TABLE_BASE_URL (default http://127.0.0.1:8810); the token
    /// is CRAFTING_TABLE_TOKEN, or the file CRAFTING_TABLE_TOKEN_FILE, or else
    /// ./data/admin-bearer.txt of a farm started in this directory.
    ///
    /// Exit codes with --follow: the command's own code when it exited (0 passed),
    /// 124 timed out, 130 cancelled, 126 the farm could not run it, 125 this command
    /// failed (bad token, API or network error, bad arguments). Without --follow:
    /// prints the job id and exits 0 (or 125).
    Run {
        /// Project name.
        project: String,
        /// Command (`test`, `lint`, `audit`, `build` or any named command).
        command: String,
        /// Subproject path (default: `.` when it exists, else the first).
        #[arg(long)]
        subproject: Option<String>,
        /// Branch, tag or sha (default: the project's default branch).
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Stream the log until the job ends and exit with its code.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's log (exit 125 when the command fails).
    Logs {
        /// Job id.
        job: String,
        /// Keep streaming until the job ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List jobs, newest first.
    Jobs {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Only this status (queued, running, succeeded, failed, timed_out,
        /// cancelled, error).
        #[arg(long)]
        status: Option<String>,
        /// How many (1 to 500).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A job's findings.
    Findings {
        /// Job id.
        job: String,
        /// Only `new` (or `unchanged`) findings.
        #[arg(long)]
        state: Option<String>,
        /// table, json or sarif (SARIF 2.1.0).
        #[arg(long, default_value = "table", value_parser = ["table", "json", "sarif"])]
        format: String,
        /// Same as --format json.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        job: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Internal: the program a warm worktree's long-lived sandbox runs (started by
    // the farm itself, with its socket on fd 3).
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("sandbox-zygote")) {
        let code = crafting_table::runner::zygote::zygote_main();
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // glibc gives every thread that allocates an arena of its own; the farm's
    // blocking threads (git, the ledger) would each keep one. Two are plenty.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS; // --help, --version
            }
            // The client subcommands keep 124–130 for the job: their own failures
            // are 125, as env(1) and timeout(1) do.
            let client = std::env::args().nth(1).is_some_and(|a| {
                ["run", "logs", "jobs", "findings", "cancel"].contains(&a.as_str())
            });
            return ExitCode::from(if client { cli::EXIT_CLIENT } else { 2 });
        }
    };
    match cli.command {
        Command::Serve => serve(false),
        Command::Runner => serve(true),
        Command::Validate { dir } => validate(dir),
        Command::Plan { dir } => plan(dir),
        Command::Mcp => mcp(),
        Command::Backup { path } => backup(&path),
        Command::Run {
            project,
            command,
            subproject,
            git_ref,
            follow,
            json,
        } => client(
            Request::Run {
                project,
                command,
                subproject,
                git_ref,
                follow,
            },
            json,
        ),
        Command::Logs { job, follow } => client(Request::Logs { job, follow }, false),
        Command::Jobs {
            project,
            status,
            limit,
            json,
        } => client(
            Request::Jobs {
                project,
                status,
                limit,
            },
            json,
        ),
        Command::Findings {
            job,
            state,
            format,
            json,
        } => client(Request::Findings { job, state, format }, json),
        Command::Cancel { job, json } => client(Request::Cancel { job }, json),
    }
}

fn backup(dest: &std::path::Path) -> ExitCode {
    let cfg = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let crafting_table::config::LedgerLocation::Postgres(_) = &cfg.ledger {
        eprintln!(
            "crafting-table: the ledger is the PostgreSQL database {:?}: back it up with pg_dump (nothing was copied)",
            cfg.ledger
        );
        return ExitCode::from(1);
    }
    let source = cfg.ledger_path();
    if !source.exists() {
        eprintln!("crafting-table: no ledger at {}", source.display());
        return ExitCode::from(1);
    }
    match Ledger::open_read_only(&source).and_then(|l| l.backup_to(dest)) {
        Ok(()) => {
            println!("ledger {} copied to {}", source.display(), dest.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crafting-table: backup failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn mcp() -> ExitCode {
    let client = match crafting_table::client::Settings::from_env()
        .and_then(crafting_table::client::Client::new)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crafting-table mcp: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crafting-table mcp: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(crafting_table::mcp::serve_stdio(client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crafting-table mcp: {e}");
            ExitCode::from(1)
        }
    }
}

fn client(req: Request, json: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crafting-table: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_CLIENT);
        }
    };
    ExitCode::from(rt.block_on(cli::execute(req, json)))
}

fn serve(runner: bool) -> ExitCode {
    let cfg = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Blocking work (ledger calls, git, file reads, each running job's log pump)
    // gets 8 threads plus two per worker: the ledger's few connections serialise
    // its calls anyway, and a burst of requests then waits in the runtime's queue
    // instead of each holding a thread of its own (and the memory it touches).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8 + 2 * cfg.workers)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crafting-table: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ran = if runner {
        rt.block_on(crafting_table::serve::run_runner(cfg))
    } else {
        rt.block_on(crafting_table::serve::run(cfg))
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crafting-table: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config() -> Result<Config, ExitCode> {
    Config::from_env().map_err(|e| {
        eprintln!("crafting-table: {e}");
        ExitCode::from(1)
    })
}

fn plan(dir: Option<PathBuf>) -> ExitCode {
    let cfg = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry = match dir {
        Some(d) => Registry::Dir(d),
        None => Registry::from_config(&cfg),
    };
    let fetched = match registry.fetch() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crafting-table: {e}");
            return ExitCode::from(1);
        }
    };
    let loaded = reconciler::load_fetched(&fetched);
    // The ledger as it is, read only: the SQLite file (absent before the first
    // `serve`), or the PostgreSQL database (migrated if it was empty).
    let (shown, opened) = match &cfg.ledger {
        crafting_table::config::LedgerLocation::Sqlite(path) => (
            path.display().to_string(),
            path.exists().then(|| Ledger::open_read_only(path)),
        ),
        crafting_table::config::LedgerLocation::Postgres(url) => (
            format!("{:?}", cfg.ledger),
            Some(Ledger::open_postgres(url)),
        ),
    };
    let exists = opened.is_some();
    let snapshot = match opened.map(|l| l.and_then(|l| l.snapshot())) {
        None => Default::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("crafting-table: {e}");
            return ExitCode::from(1);
        }
    };
    let the_plan = reconciler::plan(&loaded, &snapshot);
    println!(
        "registry {} at revision {} against ledger {shown}{}",
        registry.describe(),
        fetched.revision,
        if exists { "" } else { " (not created yet)" }
    );
    print!("{}", the_plan.render());
    if !loaded.is_clean() {
        for d in &loaded.diagnostics {
            println!("{d}");
        }
        println!(
            "{} manifest error(s): fix them before applying",
            loaded.error_count()
        );
        return ExitCode::from(1);
    }
    if the_plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn validate(dir: Option<PathBuf>) -> ExitCode {
    let dir = match dir {
        Some(d) => d,
        None => match load_config() {
            Err(code) => return code,
            Ok(cfg) => match cfg.registry {
                RegistrySource::Dir(d) => d,
                RegistrySource::Git(url) => {
                    eprintln!(
                        "crafting-table: the configured registry is a git repository ({url}); check out its branch and pass the directory: crafting-table validate DIR"
                    );
                    return ExitCode::from(1);
                }
            },
        },
    };
    let contents = match registry::dir::read(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "crafting-table: cannot read registry directory {}: {e}",
                dir.display()
            );
            return ExitCode::from(1);
        }
    };
    let files = contents.files.len() + contents.diagnostics.len();
    let mut loaded = manifest::load(&contents.files);
    loaded.diagnostics.extend(contents.diagnostics);
    for d in &mut loaded.diagnostics {
        d.file = dir.join(&d.file).display().to_string();
    }
    loaded
        .diagnostics
        .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    for d in &loaded.diagnostics {
        println!("{d}");
    }
    let errors = loaded.error_count();
    if errors == 0 {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .map(|k| (k, loaded.count(*k)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "{}: valid, {} objects in {files} file{} ({})",
            dir.display(),
            loaded.objects.len(),
            if files == 1 { "" } else { "s" },
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            }
        );
        ExitCode::SUCCESS
    } else {
        let bad_files = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == manifest::Severity::Error)
            .map(|d| d.file.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        println!(
            "{}: {errors} error{} in {bad_files} of {files} files",
            dir.display(),
            if errors == 1 { "" } else { "s" }
        );
        ExitCode::from(1)
    }
}
