//! The `crafting-table` command: parses arguments and wires configuration to the
//! library. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crafting_table::config::{Config, RegistrySource};
use crafting_table::manifest::{self, Kind};
use crafting_table::registry;

/// A self-hosted build, test and audit farm driven by a git registry of YAML manifests.
#[derive(Parser)]
#[command(name = "crafting-table", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every manifest under DIR and print each problem as path:line:col: message.
    ///
    /// Exits 0 when every manifest is valid, 1 when any is not.
    Validate {
        /// Registry directory (default: the configured registry, `./registry`).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { dir } => validate(dir),
    }
}

fn validate(dir: Option<PathBuf>) -> ExitCode {
    let dir = match dir {
        Some(d) => d,
        None => match Config::from_env() {
            Err(e) => {
                eprintln!("crafting-table: {e}");
                return ExitCode::from(1);
            }
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
