//! The farm's command-line client: `run`, `logs`, `jobs`, `findings`, `cancel` over
//! [`crate::client`], as `flux` and `argocd` have theirs.
//!
//! Exit codes follow `timeout(1)` and `env(1)`: `run --follow` exits with the job's
//! own exit code when its command exited, 124 when it timed out, 130 when it was
//! cancelled, 126 when the farm could not run it (`error`, or -1 after a restart);
//! 125 when this command itself failed (bad token, API or network error).

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, ClientError, JobView, Settings};

/// This command failed (as `env`'s 125).
pub const EXIT_CLIENT: u8 = 125;
/// The farm could not run the job.
pub const EXIT_NOT_RUN: u8 = 126;
/// The job timed out.
pub const EXIT_TIMED_OUT: u8 = 124;
/// The job was cancelled.
pub const EXIT_CANCELLED: u8 = 130;

/// What a subcommand asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Enqueue a command.
    Run {
        /// Project.
        project: String,
        /// Command.
        command: String,
        /// Subproject.
        subproject: Option<String>,
        /// Ref.
        git_ref: Option<String>,
        /// Stream the log and exit with the job's code.
        follow: bool,
    },
    /// Print a job's log.
    Logs {
        /// Job id.
        job: String,
        /// Until it ends.
        follow: bool,
    },
    /// List jobs.
    Jobs {
        /// Project.
        project: Option<String>,
        /// Status.
        status: Option<String>,
        /// How many.
        limit: usize,
    },
    /// A job's findings.
    Findings {
        /// Job id.
        job: String,
        /// `new` or `unchanged`.
        state: Option<String>,
        /// `table`, `json` or `sarif`.
        format: String,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        job: String,
    },
}

/// The exit code for a finished job, as `timeout(1)` would give it.
pub fn exit_code_of(job: &JobView) -> u8 {
    match job.status.as_str() {
        "succeeded" => 0,
        "failed" => match job.exit_code {
            Some(c) if (0..=255).contains(&c) => c as u8,
            _ => EXIT_NOT_RUN,
        },
        "timed_out" => EXIT_TIMED_OUT,
        "cancelled" => EXIT_CANCELLED,
        _ => EXIT_NOT_RUN,
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn job_rows(jobs: &[JobView]) -> String {
    let mut rows = vec![vec![
        "ID".to_owned(),
        "PROJECT".into(),
        "SUBPROJECT".into(),
        "COMMAND".into(),
        "STATUS".into(),
        "EXIT".into(),
        "FINDINGS".into(),
        "CREATED".into(),
    ]];
    for j in jobs {
        rows.push(vec![
            j.id.clone(),
            j.project.clone(),
            j.subproject.clone(),
            j.recipe.clone(),
            j.status.clone(),
            j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            j.findings_count.to_string(),
            j.created_at.clone(),
        ]);
    }
    table(&rows)
}

fn finding_rows(findings: &[Value]) -> String {
    let s = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows = vec![vec![
        "STATE".to_owned(),
        "KIND".into(),
        "SEVERITY".into(),
        "LOCATION".into(),
        "CODE".into(),
        "MESSAGE".into(),
    ]];
    for f in findings {
        let loc = match (s(&f["file"]), s(&f["line"])) {
            (file, line) if !line.is_empty() => format!("{file}:{line}"),
            (file, _) => file,
        };
        rows.push(vec![
            s(&f["baseline_state"]),
            s(&f["kind"]),
            s(&f["severity"]),
            loc,
            s(&f["code"]),
            s(&f["message"])
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(100)
                .collect(),
        ]);
    }
    table(&rows)
}

fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".to_owned())
    );
}

/// Runs one subcommand; returns the process exit code.
pub async fn execute(req: Request, json: bool) -> u8 {
    let client = match Settings::from_env().and_then(Client::new) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crafting-table: {e}");
            return EXIT_CLIENT;
        }
    };
    match execute_with(&client, req, json).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crafting-table: {e}");
            EXIT_CLIENT
        }
    }
}

/// Runs one subcommand against `client`.
pub async fn execute_with(client: &Client, req: Request, json: bool) -> Result<u8, ClientError> {
    match req {
        Request::Run {
            project,
            command,
            subproject,
            git_ref,
            follow,
        } => {
            let job = client
                .run(
                    &project,
                    &command,
                    subproject.as_deref(),
                    git_ref.as_deref(),
                )
                .await?;
            if !follow {
                if json {
                    print_json(&client.job_raw(&job.id).await?["job"]);
                } else {
                    println!("{}", job.id);
                }
                return Ok(0);
            }
            eprintln!("crafting-table: job {} queued; following its log", job.id);
            stream(client, &job.id, true).await?;
            // The stream ends with the job; its status is recorded just before.
            let done = client.wait(&job.id, Duration::from_secs(30)).await?;
            if json {
                print_json(&client.job_raw(&job.id).await?["job"]);
            } else {
                eprintln!(
                    "crafting-table: job {} {}{}",
                    done.id,
                    done.status,
                    done.exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default()
                );
            }
            Ok(exit_code_of(&done))
        }
        Request::Logs { job, follow } => {
            stream(client, &job, follow).await?;
            Ok(0)
        }
        Request::Jobs {
            project,
            status,
            limit,
        } => {
            if json {
                print_json(
                    &client
                        .jobs_raw(project.as_deref(), status.as_deref(), Some(limit), None)
                        .await?["jobs"],
                );
            } else {
                let jobs = client
                    .jobs(project.as_deref(), status.as_deref(), Some(limit))
                    .await?;
                print!("{}", job_rows(&jobs));
            }
            Ok(0)
        }
        Request::Findings { job, state, format } => {
            match format.as_str() {
                "sarif" => print_json(&client.sarif(&job).await?),
                "json" => print_json(&client.findings(&job, state.as_deref()).await?),
                _ if json => print_json(&client.findings(&job, state.as_deref()).await?),
                _ => {
                    let v = client.findings(&job, state.as_deref()).await?;
                    let list = v["findings"].as_array().cloned().unwrap_or_default();
                    print!("{}", finding_rows(&list));
                    let fixed = v["fixed"].as_array().map_or(0, Vec::len);
                    eprintln!(
                        "{} finding(s), {fixed} fixed since the previous run",
                        list.len()
                    );
                }
            }
            Ok(0)
        }
        Request::Cancel { job } => {
            let v = client.cancel(&job).await?;
            if json {
                print_json(&v);
            } else {
                println!("{} {}", job, v["status"].as_str().unwrap_or(""));
            }
            Ok(0)
        }
    }
}

async fn stream(client: &Client, id: &str, follow: bool) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    client
        .stream_log(id, follow, |chunk| {
            let _ = out.write_all(chunk);
            let _ = out.flush();
        })
        .await
}
