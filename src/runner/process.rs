//! Running one command: its own session and process group, one log file for
//! stdout and stderr, a size cap, a timeout, cancellation, and a group kill that
//! leaves no process behind.
//!
//! Kill protocol (timeout, cancel, shutdown): SIGTERM to the whole group, wait up to
//! the grace period for every member to exit, then SIGKILL to the group. After a
//! normal exit, whatever the command left running in its group is killed too.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The shell command (`/bin/sh -c`).
    pub command: String,
    /// Working directory.
    pub cwd: PathBuf,
    /// Environment added to the farm's (minus its `CRAFTING_*` settings).
    pub env: BTreeMap<String, String>,
    /// Log file (appended).
    pub log_path: PathBuf,
    /// Bytes of command output kept in the log.
    pub log_cap: u64,
    /// Time allowed.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Run under bwrap with these arguments (the environment is then `env` alone;
    /// `--chdir cwd` is added).
    pub sandbox: Option<Vec<String>>,
    /// Run in the long-lived sandbox of this warm worktree (made with `sandbox`'s
    /// arguments) when one can take it.
    pub zygote: Option<(std::sync::Arc<super::zygote::Zygotes>, PathBuf)>,
    /// Values masked as `***` in the log.
    pub masked: Vec<String>,
    /// Woken after each write to the log (log followers wait on it).
    pub wrote: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// Why the command stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It exited by itself with this code (or 128 + signal).
    Exited(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// It was cancelled and killed.
    Cancelled,
    /// Its log could not be written (a full disk): it was stopped.
    LogFailed,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Why it stopped.
    pub stop: Stop,
    /// Whether the log was cut at the cap.
    pub truncated: bool,
    /// Bytes of output the command produced (kept or not).
    pub output_bytes: u64,
    /// Whether SIGKILL was needed after the grace period.
    pub killed: bool,
    /// Why the log could not be written, if it could not.
    pub log_error: Option<String>,
    /// Whether the command left processes behind (killed after it exited, or one
    /// outside its group still held its output).
    pub leftovers: bool,
}

/// A process of the group, read from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Process group.
    pub pgrp: i32,
    /// State letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after it.
    let close = text.rfind(')')?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); pgrp is field 5, starttime field 22.
    Some(ProcInfo {
        pid,
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Every live (non-zombie) process whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        .collect()
}

/// Whether no live process is left in group `pgid`: no process at all (a signal
/// 0 finds none, no /proc scan), or only zombies.
fn group_empty(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    let none = unsafe { libc::killpg(pgid, 0) } == -1
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    none || group_members(pgid).is_empty()
}

fn killpg(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: killpg has no memory effects; a stale group only yields ESRCH.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// Kills every process of group `pgid` that started at or after `since` (clock
/// ticks), so a pid reused by an unrelated process is never hit. Repeats briefly
/// while members remain (a process may be forking as the group is killed). Returns
/// how many were signalled.
pub fn kill_orphaned_group(pgid: i32, since: u64) -> usize {
    if pgid <= 1 {
        return 0;
    }
    let mut signalled = 0;
    for _ in 0..50 {
        let members = group_members(pgid);
        // The leader's pid may have been reused by something else that is not ours.
        if let Some(leader) = members.iter().find(|p| p.pid == pgid)
            && leader.start_time != since
        {
            return signalled;
        }
        let ours: Vec<&ProcInfo> = members.iter().filter(|p| p.start_time >= since).collect();
        if ours.is_empty() {
            break;
        }
        for p in &ours {
            // SAFETY: kill has no memory effects; a vanished pid only yields ESRCH.
            unsafe {
                libc::kill(p.pid, libc::SIGKILL);
            }
        }
        signalled += ours.len();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signalled
}

/// The job a live process belongs to, by the `CRAFTING_JOB_ID` in its environment
/// (set for every job, sandboxed or not, and inherited by what it starts).
fn job_of(pid: i32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"CRAFTING_JOB_ID="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// Kills every live process whose environment names one of `jobs`: what a runner
/// killed before it could record its job's process group left behind. Repeats
/// briefly while some remain (one may be forking). Returns how many were signalled.
pub fn kill_by_job_id(jobs: &std::collections::HashSet<String>) -> usize {
    if jobs.is_empty() {
        return 0;
    }
    let me = std::process::id() as i32;
    let mut signalled = 0;
    for _ in 0..50 {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return signalled;
        };
        let found: Vec<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me)
            .filter(|pid| proc_info(*pid).is_some_and(|p| p.state != 'Z' && p.state != 'X'))
            .filter(|pid| job_of(*pid).is_some_and(|j| jobs.contains(&j)))
            .collect();
        if found.is_empty() {
            break;
        }
        for pid in &found {
            // SAFETY: kill has no memory effects; a vanished pid only yields ESRCH.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        signalled += found.len();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signalled
}

/// Copies the pipe to the log until every writer is gone, keeping at most `cap`
/// bytes. Returns (bytes read, truncated).
fn pump(
    mut reader: std::io::PipeReader,
    log_path: &Path,
    cap: u64,
    mut masker: super::mask::Masker,
    failed: watch::Sender<Option<String>>,
    wrote: Option<std::sync::Arc<tokio::sync::Notify>>,
) -> (u64, bool) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path);
    let mut file = match file {
        // Unbuffered: each chunk read from the pipe is in the file at once, so a
        // follower of the log sees output as it happens.
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(log = %log_path.display(), error = %e, "cannot open job log");
            None
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let (mut total, mut kept, mut truncated) = (0u64, 0u64, false);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        total += n as u64;
        let data = masker.feed(&buf[..n]);
        if let Some(f) = file.as_mut()
            && let Err(e) = write_capped(f, &data, cap, &mut kept, &mut truncated)
        {
            // A full disk: stop writing (the job is stopped), keep draining.
            tracing::error!(log = %log_path.display(), error = %e, "cannot write job log");
            failed.send_replace(Some(e.to_string()));
            file = None;
        }
        if let Some(w) = &wrote {
            w.notify_waiters();
        }
    }
    let rest = masker.finish();
    if let Some(f) = file.as_mut()
        && !rest.is_empty()
        && let Err(e) = write_capped(f, &rest, cap, &mut kept, &mut truncated)
    {
        failed.send_replace(Some(e.to_string()));
    }
    (total, truncated)
}

/// Writes what fits under the cap; the first time it does not, the marker line.
fn write_capped(
    f: &mut std::fs::File,
    data: &[u8],
    cap: u64,
    kept: &mut u64,
    truncated: &mut bool,
) -> std::io::Result<()> {
    let n = data.len();
    let room = cap.saturating_sub(*kept);
    let take = (n as u64).min(room) as usize;
    if take > 0 {
        f.write_all(&data[..take])?;
        *kept += take as u64;
    }
    if take < n && !*truncated {
        *truncated = true;
        write!(
            f,
            "\n[crafting-table] log truncated at {cap} bytes (CRAFTING_LOG_CAP_BYTES); the job continues, its further output is discarded\n"
        )?;
    }
    Ok(())
}

/// Runs the command. `on_start` receives the process group id and the leader's
/// start time as soon as it exists (to be recorded for the restart sweep).
pub async fn run(
    spec: &ProcessSpec,
    mut cancel: watch::Receiver<bool>,
    on_start: impl FnOnce(i32, u64),
) -> std::io::Result<Outcome> {
    let (reader, mut writer) = std::io::pipe()?;
    if let (Some(args), Some((zygotes, worktree))) = (&spec.sandbox, &spec.zygote) {
        let out = std::os::fd::OwnedFd::from(writer);
        // Waiting for the zygote is the job's time too: a timeout or cancel
        // stops it (dropping the start stops that zygote and what it started).
        let start = zygotes.start(worktree, args, &spec.command, &spec.cwd, &spec.env, &out);
        let started = tokio::select! {
            r = start => r,
            () = tokio::time::sleep(spec.timeout) => return Ok(never_ran(Stop::TimedOut)),
            () = cancelled(&mut cancel) => return Ok(never_ran(Stop::Cancelled)),
        };
        match started {
            Ok(started) => {
                drop(out);
                return in_zygote(spec, cancel, on_start, zygotes, started, reader).await;
            }
            Err(super::zygote::NotStarted::Spawn(e)) => return Err(e),
            Err(super::zygote::NotStarted::Fallback(why)) => {
                tracing::debug!(%why, "job runs in a bwrap of its own");
                writer = std::io::PipeWriter::from(out);
            }
        }
    }
    let mut cmd = match &spec.sandbox {
        Some(args) => {
            let mut c = tokio::process::Command::new("bwrap");
            c.args(args).arg("--chdir").arg(&spec.cwd).arg("/bin/sh");
            // Built, not inherited.
            c.env_clear();
            c
        }
        None => {
            let mut c = tokio::process::Command::new("/bin/sh");
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("CRAFTING_") {
                    c.env_remove(&k);
                }
            }
            c
        }
    };
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .kill_on_drop(false);
    cmd.envs(&spec.env);
    // SAFETY: setsid is async-signal-safe; the closure touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // The parent's copies of the write end are gone with `cmd`.
    drop(cmd);
    let pid = child.id().map_or(0, |p| p as i32);
    let start_time = proc_info(pid).map_or(0, |p| p.start_time);
    on_start(pid, start_time);
    let (pump_task, mut failed) = start_pump(spec, reader);

    let stop = tokio::select! {
        status = child.wait() => {
            let status = status?;
            use std::os::unix::process::ExitStatusExt;
            Stop::Exited(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        () = tokio::time::sleep(spec.timeout) => Stop::TimedOut,
        () = cancelled(&mut cancel) => Stop::Cancelled,
        () = log_failed(&mut failed) => Stop::LogFailed,
    };
    let mut killed = false;
    let mut leftovers = false;
    // Whether the group is known to be empty (one scan of /proc spared).
    let mut empty = false;
    match stop {
        Stop::Exited(_) => {
            // Whatever the command left behind in its group goes too. In the
            // sandbox the group is bwrap's own processes, and its PID namespace
            // (with anything the command left in it) ends with bwrap.
            if group_empty(pid) {
                empty = true;
            } else {
                leftovers = spec.sandbox.is_none();
                killpg(pid, libc::SIGKILL);
            }
        }
        Stop::TimedOut | Stop::Cancelled | Stop::LogFailed => {
            killpg(pid, libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + spec.kill_grace;
            let mut leader_done = false;
            loop {
                if !leader_done && let Ok(Some(_)) = child.try_wait() {
                    leader_done = true;
                }
                if leader_done && group_empty(pid) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    killpg(pid, libc::SIGKILL);
                    killed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.wait().await;
        }
    }
    // Wait for the members to be gone so the pipe closes and the log is complete.
    for _ in 0..100 {
        if empty || group_empty(pid) {
            break;
        }
        killpg(pid, libc::SIGKILL);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(finish(spec, pump_task, &failed, stop, killed, leftovers).await)
}

type PumpTask = tokio::task::JoinHandle<(u64, bool)>;

/// Starts copying the command's output to its log.
fn start_pump(
    spec: &ProcessSpec,
    reader: std::io::PipeReader,
) -> (PumpTask, watch::Receiver<Option<String>>) {
    let log_path = spec.log_path.clone();
    let cap = spec.log_cap;
    let masker = super::mask::Masker::new(spec.masked.clone());
    let (failed_tx, failed) = watch::channel(None::<String>);
    let wrote = spec.wrote.clone();
    let task =
        tokio::task::spawn_blocking(move || pump(reader, &log_path, cap, masker, failed_tx, wrote));
    (task, failed)
}

/// The outcome, once the log is complete.
async fn finish(
    spec: &ProcessSpec,
    pump_task: PumpTask,
    failed: &watch::Receiver<Option<String>>,
    stop: Stop,
    killed: bool,
    mut leftovers: bool,
) -> Outcome {
    let (output_bytes, truncated) = end_pump(spec, pump_task, &mut leftovers).await;
    let log_error = failed.borrow().clone();
    Outcome {
        stop,
        truncated,
        output_bytes,
        killed,
        log_error,
        leftovers,
    }
}

/// Waits for the log to be complete: (bytes read, truncated).
async fn end_pump(spec: &ProcessSpec, task: PumpTask, leftovers: &mut bool) -> (u64, bool) {
    // A process that left the group (its own `setsid`) may still hold the pipe; do
    // not let it hold the job hostage.
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(r) => r.unwrap_or((0, false)),
        Err(_) => {
            *leftovers = true;
            crate::logfile::append_line(
                &spec.log_path,
                "a process outside the job's group still holds its output open; the log may be incomplete",
            );
            (0, false)
        }
    }
}

/// Waits for a cancel.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    while cancel.changed().await.is_ok() {
        if *cancel.borrow() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// Waits for the log to fail.
async fn log_failed(failed: &mut watch::Receiver<Option<String>>) {
    while failed.changed().await.is_ok() {
        if failed.borrow().is_some() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// The outcome of a command stopped before it started.
fn never_ran(stop: Stop) -> Outcome {
    Outcome {
        stop,
        truncated: false,
        output_bytes: 0,
        killed: false,
        log_error: None,
        leftovers: false,
    }
}

/// The rest of [`run`] for a command a zygote started: the zygote reports its
/// exit once everything else in the sandbox is dead; timeouts and cancels signal
/// the shell's group as for any command, while the shell lives (once it has
/// exited the zygote is already clearing the rest, and its pid may be reused).
async fn in_zygote(
    spec: &ProcessSpec,
    mut cancel: watch::Receiver<bool>,
    on_start: impl FnOnce(i32, u64),
    zygotes: &super::zygote::Zygotes,
    started: super::zygote::Started,
    reader: std::io::PipeReader,
) -> std::io::Result<Outcome> {
    let pid = started.pid;
    on_start(pid, proc_info(pid).map_or(0, |p| p.start_time));
    let (pump_task, mut failed) = start_pump(spec, reader);
    let mut started = Some(started);
    let mut ended = None;
    let mut stop = tokio::select! {
        r = zygotes.wait(&mut started, true) => {
            let e = sandbox_end(spec, r);
            let code = e.code;
            ended = Some(e);
            Stop::Exited(code)
        }
        () = tokio::time::sleep(spec.timeout) => Stop::TimedOut,
        () = cancelled(&mut cancel) => Stop::Cancelled,
        () = log_failed(&mut failed) => Stop::LogFailed,
    };
    let mut killed = false;
    if ended.is_none() {
        let alive =
            |s: &Option<super::zygote::Started>| s.as_ref().is_some_and(|s| !s.shell_exited());
        if alive(&started) {
            killpg(pid, libc::SIGTERM);
            match tokio::time::timeout(spec.kill_grace, zygotes.wait(&mut started, false)).await {
                Ok(r) => ended = Some(sandbox_end(spec, r)),
                Err(_) => {
                    if alive(&started) {
                        killpg(pid, libc::SIGKILL);
                        killed = true;
                    }
                }
            }
        } else if stop != Stop::LogFailed {
            // It had exited just then: its own end is the truth.
            let r = tokio::time::timeout(Duration::from_secs(15), zygotes.wait(&mut started, true))
                .await;
            if let Ok(r) = r {
                let e = sandbox_end(spec, r);
                stop = Stop::Exited(e.code);
                ended = Some(e);
            }
        }
        if ended.is_none() {
            match tokio::time::timeout(Duration::from_secs(15), zygotes.wait(&mut started, false))
                .await
            {
                Ok(r) => ended = Some(sandbox_end(spec, r)),
                // Stuck: dropping it kills the sandbox and all in it.
                Err(_) => drop(started.take()),
            }
        }
    }
    let leftovers = ended.as_ref().is_none_or(|e| e.leftovers);
    let outcome = finish(spec, pump_task, &failed, stop, killed, leftovers).await;
    match ended.and_then(|e| e.spawn_error) {
        Some(why) => Err(std::io::Error::other(why)),
        None => Ok(outcome),
    }
}

/// How the zygote said the command ended; a zygote that died took the sandbox
/// (and the command) with it.
fn sandbox_end(
    spec: &ProcessSpec,
    r: std::io::Result<super::zygote::Ended>,
) -> super::zygote::Ended {
    r.unwrap_or_else(|e| {
        crate::logfile::append_line(&spec.log_path, &format!("the job's sandbox ended: {e}"));
        super::zygote::Ended {
            code: 128 + libc::SIGKILL,
            leftovers: true,
            spawn_error: None,
        }
    })
}
