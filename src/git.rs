//! Running the `git` command.
//!
//! The farm drives the user's own `git` rather than a library: worktrees, credential
//! helpers, protocols and configuration then behave exactly as they do by hand. Every
//! call here is blocking; async callers wrap it in `spawn_blocking`.
//!
//! Calls never prompt (`GIT_TERMINAL_PROMPT=0`), never read the user's global or
//! system configuration for behaviour that would change results, and a network
//! transfer that stalls is abandoned by git's own low-speed limit.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

/// A git command that failed, with what it printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("git {args}: {message}")]
pub struct GitError {
    /// The arguments, with any secret left out.
    pub args: String,
    /// The last lines git printed on stderr, or why it could not start.
    pub message: String,
}

/// Options shared by every call.
#[derive(Debug, Clone, Default)]
pub struct Git {
    /// Extra HTTP header for fetches (e.g. `Authorization: Basic …`), passed through
    /// the environment so it never shows in a process listing.
    pub http_header: Option<String>,
}

impl Git {
    /// A plain git with no credentials.
    pub fn new() -> Git {
        Git::default()
    }

    /// A git that sends `token` as HTTP basic auth (`oauth2:<token>`), which Gitea,
    /// GitLab and GitHub accept for git over HTTPS.
    pub fn with_token(token: &str) -> Git {
        use base64::Engine as _;
        let cred = base64::engine::general_purpose::STANDARD.encode(format!("oauth2:{token}"));
        Git {
            http_header: Some(format!("Authorization: Basic {cred}")),
        }
    }

    fn command<I, S>(&self, dir: Option<&Path>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        cmd.args([
            "-c",
            "http.lowSpeedLimit=1000",
            "-c",
            "http.lowSpeedTime=60",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null());
        if let Some(h) = &self.http_header {
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", h);
        }
        cmd
    }

    /// Runs git in `dir` and returns its stdout.
    pub fn run<I, S>(&self, dir: Option<&Path>, args: I) -> Result<Vec<u8>, GitError>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let shown = args
            .clone()
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let out = self.command(dir, args).output().map_err(|e| GitError {
            args: shown.clone(),
            message: format!("cannot run git: {e}"),
        })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(GitError {
                args: shown,
                message: last_lines(&out.stderr, out.status.code()),
            })
        }
    }

    /// Runs git in `dir` and returns its stdout as trimmed text.
    pub fn text<I, S>(&self, dir: Option<&Path>, args: I) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        self.run(dir, args)
            .map(|o| String::from_utf8_lossy(&o).trim().to_owned())
    }

    /// Reads many blobs at once with `git cat-file --batch`; returns their contents
    /// in the order asked.
    pub fn read_blobs(&self, repo: &Path, ids: &[String]) -> Result<Vec<Vec<u8>>, GitError> {
        use std::io::{BufRead, BufReader, Read, Write};
        let err = |message: String| GitError {
            args: "cat-file --batch".to_owned(),
            message,
        };
        let mut child = self
            .command(Some(repo), ["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run git: {e}")))?;
        let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin".into()))?;
        let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
        // Write from another thread so a large answer cannot dead-lock the pipes.
        let writer = std::thread::spawn(move || {
            let r = stdin.write_all(input.as_bytes());
            drop(stdin);
            r
        });
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
        let mut reader = BufReader::new(stdout);
        let mut blobs = Vec::with_capacity(ids.len());
        for id in ids {
            let mut header = String::new();
            reader
                .read_line(&mut header)
                .map_err(|e| err(e.to_string()))?;
            let parts: Vec<&str> = header.split_whitespace().collect();
            let size: usize = match parts.as_slice() {
                [_, "blob", size] => size
                    .parse()
                    .map_err(|_| err(format!("bad header {header:?}")))?,
                _ => {
                    return Err(err(format!(
                        "object {id} is not a readable blob: {}",
                        header.trim()
                    )));
                }
            };
            let mut buf = vec![0; size + 1];
            reader
                .read_exact(&mut buf)
                .map_err(|e| err(e.to_string()))?;
            buf.pop();
            blobs.push(buf);
        }
        let _ = writer.join();
        let _ = child.wait();
        Ok(blobs)
    }
}

fn last_lines(stderr: &[u8], code: Option<i32>) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        format!(
            "exited with {}",
            code.map_or("a signal".to_owned(), |c| c.to_string())
        )
    } else {
        tail
    }
}
