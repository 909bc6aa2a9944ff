//! Running the `git` command.
//!
//! The farm drives the user's own `git` rather than a library: worktrees, credential
//! helpers, protocols and configuration then behave exactly as they do by hand. Every
//! call here is blocking; async callers wrap it in `spawn_blocking`.
//!
//! Calls never prompt (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode), and every
//! call has an overall deadline: [`Git::timeout`] (`CRAFTING_GIT_TIMEOUT_SECS` for
//! fetches and clones, [`LOCAL_TIMEOUT`] for local work). git runs in a process
//! group of its own, so a deadline kills it with its helpers (`git-remote-http`,
//! `ssh`) and fails that one call with a message that says so.
//!
//! The URL helpers live here too: whether a string is a remote URL, a URL with its
//! credentials redacted, and a project's `git_url` resolved against the registry.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Deadline of local git work (worktree add/remove, rev-parse, cat-file, gc).
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Default deadline of fetches and clones (`CRAFTING_GIT_TIMEOUT_SECS`).
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(600);

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
#[derive(Debug, Clone)]
pub struct Git {
    /// Extra HTTP header for fetches (e.g. `Authorization: Basic …`), passed through
    /// the environment so it never shows in a process listing.
    pub http_header: Option<String>,
    /// Overall deadline of one call; the git process group is killed when it
    /// passes.
    pub timeout: Duration,
    /// A credential-store file (`https://user:token@host` per line) answered by a
    /// helper that only reads it: git never rewrites or erases a line of it.
    pub credentials: Option<std::path::PathBuf>,
    /// Extra environment variables (a commit's fixed identity and dates).
    pub env: Vec<(String, String)>,
}

impl Default for Git {
    fn default() -> Self {
        Git {
            http_header: None,
            timeout: LOCAL_TIMEOUT,
            credentials: None,
            env: Vec::new(),
        }
    }
}

impl Git {
    /// A plain git with no credentials and the local deadline.
    pub fn new() -> Git {
        Git::default()
    }

    /// The same git answering credential questions from `file` (read only).
    pub fn with_credentials(mut self, file: Option<&Path>) -> Git {
        self.credentials = file.map(Path::to_owned);
        self
    }

    /// The same git with `key=value` in its environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Git {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The same git with another deadline (fetches: the configured network one).
    pub fn with_timeout(mut self, timeout: Duration) -> Git {
        self.timeout = timeout;
        self
    }

    /// A git that sends `token` as HTTP basic auth (`oauth2:<token>`), which Gitea,
    /// GitLab and GitHub accept for git over HTTPS.
    pub fn with_token(token: &str) -> Git {
        Git::with_basic("oauth2", token)
    }

    /// A git that sends `user:password` as HTTP basic auth.
    pub fn with_basic(user: &str, password: &str) -> Git {
        use base64::Engine as _;
        let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Git {
            http_header: Some(format!("Authorization: Basic {cred}")),
            ..Git::default()
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
        .stdin(Stdio::null())
        // A group of its own: a deadline kills git with its transport helpers.
        .process_group(0);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            // Never ask for a password or a host key; notice a dead peer.
            cmd.env(
                "GIT_SSH_COMMAND",
                "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
            );
        }
        // Configuration through the environment, never argv: a header with a
        // token, and the read-only credential helper.
        let mut config: Vec<(&str, String)> = Vec::new();
        if let Some(h) = &self.http_header {
            config.push(("http.extraHeader", h.clone()));
        }
        if let Some(file) = &self.credentials {
            let quoted = file.display().to_string().replace('\'', "'\\''");
            // An empty value first resets helpers from other configuration; ours
            // answers `get` only, so git can never store or erase a line.
            config.push(("credential.helper", String::new()));
            config.push((
                "credential.helper",
                format!(
                    "!f() {{ test \"$1\" = get || exit 0; git credential-store --file='{quoted}' get; }}; f"
                ),
            ));
        }
        if !config.is_empty() {
            cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
            for (i, (k, v)) in config.iter().enumerate() {
                cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                    .env(format!("GIT_CONFIG_VALUE_{i}"), v);
            }
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
            .map(|a| redact_url(&a.as_ref().to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let child = self
            .command(dir, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| GitError {
                args: shown.clone(),
                message: format!("cannot run git: {e}"),
            })?;
        let watchdog = Watchdog::arm(&child, self.timeout);
        let out = child.wait_with_output();
        let timed_out = watchdog.disarm();
        let out = out.map_err(|e| GitError {
            args: shown.clone(),
            message: format!("cannot wait for git: {e}"),
        })?;
        if timed_out {
            return Err(GitError {
                args: shown,
                message: self.timeout_message(),
            });
        }
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(GitError {
                args: shown,
                message: last_lines(&out.stderr, out.status.code()),
            })
        }
    }

    fn timeout_message(&self) -> String {
        format!(
            "did not finish within {}s and was stopped (the limit is CRAFTING_GIT_TIMEOUT_SECS for fetches, {}s for local work)",
            self.timeout.as_secs(),
            LOCAL_TIMEOUT.as_secs()
        )
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
        let watchdog = Watchdog::arm(&child, self.timeout);
        let read = self.read_batch(&mut child, ids, &err);
        if read.is_err() {
            let _ = child.kill();
        }
        let _ = child.wait();
        if watchdog.disarm() {
            return Err(err(self.timeout_message()));
        }
        read
    }

    fn read_batch(
        &self,
        child: &mut Child,
        ids: &[String],
        err: &dyn Fn(String) -> GitError,
    ) -> Result<Vec<Vec<u8>>, GitError> {
        use std::io::{BufRead, BufReader, Read, Write};
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
        Ok(blobs)
    }
}

/// Kills a git process group whose call outlives its deadline.
struct Watchdog {
    done: std::sync::mpsc::Sender<()>,
    fired: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn arm(child: &Child, timeout: Duration) -> Watchdog {
        let pgid = child.id() as i32;
        let (done, rx) = std::sync::mpsc::channel::<()>();
        let fired = std::thread::spawn(move || match rx.recv_timeout(timeout) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: kill has no memory effects; the group is git's own
                // (process_group(0)) and its leader is not reaped yet.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                true
            }
            _ => false,
        });
        Watchdog { done, fired }
    }

    /// Stops the watchdog; `true` when the deadline had passed and git was killed.
    fn disarm(self) -> bool {
        let _ = self.done.send(());
        self.fired.join().unwrap_or(false)
    }
}

/// Whether `s` names a remote repository (`scheme://…` or scp-like
/// `user@host:path`) rather than a local path.
pub fn is_remote_url(s: &str) -> bool {
    s.contains("://")
        || s.split_once(':')
            .is_some_and(|(h, _)| h.contains('@') && !h.contains('/'))
}

/// A URL with any password or token replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.split_once('@')
        && !cred.contains('/')
    {
        let user = cred.split(':').next().unwrap_or("");
        return if cred.contains(':') {
            format!("{scheme}://{user}:***@{host}")
        } else {
            format!("{scheme}://***@{host}")
        };
    }
    url.to_owned()
}

/// A project's `git_url` as git can use it: a relative path of a registry project is
/// taken relative to the registry directory.
pub fn resolve_git_url(url: &str, from_registry: bool, registry_base: &Path) -> String {
    if is_remote_url(url) || Path::new(url).is_absolute() || !from_registry {
        return url.to_owned();
    }
    let joined = registry_base.join(url);
    std::fs::canonicalize(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
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
