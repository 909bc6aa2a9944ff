//! The job sandbox: each command under `bwrap` (bubblewrap) with its own PID and
//! IPC namespaces and a fresh `/proc` (the farm's processes and their environments
//! are invisible), the host file system read-only, the farm's data directory and
//! workspace hidden except the job's own worktree (at its host path), its git admin
//! directory, the project's mirror (read-only), cache and home, a private `/tmp`,
//! and an environment built rather than inherited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How jobs are isolated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Commands run as the farm's user with the farm's view (`CRAFTING_SANDBOX=none`).
    #[default]
    None,
    /// Commands run under bwrap.
    Bwrap(Settings),
}

/// What the sandbox hides and lets through, for every job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// Directories hidden entirely (the data directory, the workspace).
    pub hide_dirs: Vec<PathBuf>,
    /// Files hidden (the configuration file).
    pub hide_files: Vec<PathBuf>,
    /// Extra writable paths (`CRAFTING_SANDBOX_WRITABLE`).
    pub writable: Vec<PathBuf>,
    /// Names of the farm's environment variables passed on
    /// (`CRAFTING_SANDBOX_PASS_ENV`).
    pub pass_env: Vec<String>,
    /// The crafting-table binary, run as the long-lived sandbox of each warm
    /// worktree (see `zygote`); `None`: one bwrap per job.
    pub zygote: Option<PathBuf>,
}

/// One job's mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMounts {
    /// The worktree (read-write, at its host path).
    pub worktree: PathBuf,
    /// The project's mirror (read-only).
    pub mirror: PathBuf,
    /// The project's cache directory (read-write).
    pub cache: PathBuf,
    /// The project's home directory (read-write, kept between jobs).
    pub home: PathBuf,
    /// Whether the job may use the network.
    pub network: bool,
}

/// The worktree's git admin directory inside the mirror (from its `.git` file).
pub fn admin_dir(worktree: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(worktree.join(".git")).ok()?;
    let dir = text.trim().strip_prefix("gitdir:")?.trim();
    Some(PathBuf::from(dir))
}

/// Variables naming a toolchain root that defaults to a directory of `HOME`.
const USER_TOOL_ROOTS: &[(&str, &str)] = &[("RUSTUP_HOME", ".rustup"), ("PYENV_ROOT", ".pyenv")];

/// The environment of a sandboxed command: built, never inherited.
pub fn environment(
    settings: &Settings,
    home: &Path,
    job_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
    );
    env.insert(
        "LANG".to_owned(),
        std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".to_owned()),
    );
    if let Ok(tz) = std::env::var("TZ") {
        env.insert("TZ".to_owned(), tz);
    }
    env.insert("HOME".to_owned(), home.display().to_string());
    // Toolchains the farm's user installed under its own home (rustup, pyenv) stay
    // usable, read-only, although the job gets another `HOME`.
    let farm_home = std::env::var_os("HOME").map(PathBuf::from);
    for (name, dir) in USER_TOOL_ROOTS {
        let root = std::env::var_os(name)
            .map(PathBuf::from)
            .or_else(|| farm_home.as_ref().map(|h| h.join(dir)))
            .filter(|p| p.is_dir());
        if let Some(root) = root {
            env.insert((*name).to_owned(), root.display().to_string());
        }
    }
    for name in &settings.pass_env {
        if name.starts_with("CRAFTING_") {
            continue; // never a farm setting
        }
        if let Ok(v) = std::env::var(name) {
            env.insert(name.clone(), v);
        }
    }
    env.extend(job_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The namespaces and base mounts of every sandbox: own PID and IPC namespaces,
/// the host read-only, fresh `/dev` and `/proc`, a private `/tmp`.
const BASE: &[&str] = &[
    "--die-with-parent",
    "--unshare-pid",
    "--unshare-ipc",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
];

/// The `bwrap` arguments before `--chdir` and the command.
pub fn bwrap_args(settings: &Settings, job: &JobMounts) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    let mut a: Vec<String> = BASE.iter().map(|x| (*x).to_owned()).collect();
    if !job.network {
        a.push("--unshare-net".into());
    }
    for d in &settings.hide_dirs {
        a.extend(["--tmpfs".into(), s(d)]);
    }
    for f in &settings.hide_files {
        a.extend(["--ro-bind".into(), "/dev/null".into(), s(f)]);
    }
    a.extend(["--ro-bind".into(), s(&job.mirror), s(&job.mirror)]);
    for rw in [&job.worktree, &job.cache, &job.home] {
        a.extend(["--bind".into(), s(rw), s(rw)]);
    }
    if let Some(admin) = admin_dir(&job.worktree) {
        a.extend(["--bind".into(), s(&admin), s(&admin)]);
    }
    for w in &settings.writable {
        if w.exists() {
            a.extend(["--bind".into(), s(w), s(w)]);
        }
    }
    a
}

/// Whether bwrap works here: runs `true` in the sandbox's namespaces.
pub fn probe() -> Result<(), String> {
    let out = std::process::Command::new("bwrap")
        .args(BASE)
        .args(["/bin/sh", "-c", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bwrap ({e}): install bubblewrap"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "bwrap cannot make the sandbox here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
