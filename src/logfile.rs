//! Job logs on disk: where a job's log lives, the farm's own lines in it, and the
//! reads the API and the runner make of it.
//!
//! A log is `<logs_dir>/<job-id>.log`: the command's stdout and stderr as they
//! came, interleaved, capped by the runner, with the farm's lines
//! (`[crafting-table] …`) appended on lines of their own.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What starts every line the farm writes into a job's log.
pub const FARM_PREFIX: &str = "[crafting-table] ";

/// The log file of job `id`.
pub fn path(logs_dir: &Path, id: &str) -> PathBuf {
    logs_dir.join(format!("{id}.log"))
}

/// Appends one farm line (`[crafting-table] …`) to a log file, on a line of its
/// own even when the command's output did not end with a newline.
pub fn append_line(path: &Path, line: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .and_then(|mut f| {
            let len = f.metadata()?.len();
            let mut last = [b'\n'];
            if len > 0 {
                f.seek(SeekFrom::Start(len - 1))?;
                f.read_exact(&mut last)?;
            }
            let sep = if last[0] == b'\n' { "" } else { "\n" };
            writeln!(f, "{sep}{FARM_PREFIX}{line}")
        });
    if let Err(e) = r {
        tracing::warn!(log = %path.display(), error = %e, "cannot append to job log");
    }
}

/// Opens a log for reading if it is a regular file (never a device that reads
/// forever).
pub fn open_regular(path: &Path) -> Option<std::fs::File> {
    let f = std::fs::File::open(path).ok()?;
    f.metadata().ok().filter(|m| m.is_file())?;
    Some(f)
}

/// The whole of a log, at most `max` bytes (empty when it is not a regular file).
pub fn read_all(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(f) = open_regular(path) {
        f.take(max).read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// How much of a log's end its last lines are looked for in.
const TAIL_WINDOW: u64 = 256 * 1024;

/// The last `n` lines of a file, reading at most its last 256 KiB. A missing file
/// has no lines.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let (start, buf) = tail_window(path, TAIL_WINDOW);
    last_lines(start, &buf, n)
}

/// The last `n` lines of a window of a log that starts at byte `start` (a first
/// line cut by the window is dropped).
fn last_lines(start: u64, buf: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // a partial first line
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// The file's last bytes, at most `max`, up to its size now: `(start, bytes)`, the
/// bytes being the file from offset `start` to `start + bytes.len()`. A missing
/// file is `(0, [])`. Blocking.
pub fn tail_window(path: &Path, max: u64) -> (u64, Vec<u8>) {
    let Some(mut f) = open_regular(path) else {
        return (0, Vec::new());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (0, Vec::new());
    }
    let mut buf = Vec::new();
    let _ = Read::by_ref(&mut f).take(len - start).read_to_end(&mut buf);
    (start, buf)
}

/// Up to `max` bytes of a file from `offset` (empty when there is nothing new or
/// no file). Blocking.
pub fn read_from(path: &Path, offset: u64, max: u64) -> Vec<u8> {
    let Some(mut f) = open_regular(path) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = Read::by_ref(&mut f).take(max).read_to_end(&mut buf);
    buf
}

/// Names the tool a failed command could not find, from the end of its log:
/// `sh: 1: ruff: not found` or cargo's `error: no such command: `audit``.
pub fn missing_tool(log: &Path) -> Option<String> {
    let tail = tail_lines(log, 50);
    for line in tail.iter().rev() {
        if let Some(rest) = line.split("no such command: `").nth(1)
            && let Some(cmd) = rest.split('`').next()
        {
            return Some(format!(
                "command not found: `cargo {cmd}` is not installed on this machine (e.g. `cargo install cargo-{cmd} --locked`)"
            ));
        }
        let l = line.trim_end();
        if let Some(before) = l
            .strip_suffix(": not found")
            .or_else(|| l.strip_suffix(": command not found"))
        {
            let cmd = before.rsplit(": ").next().unwrap_or(before).trim();
            if !cmd.is_empty() && !cmd.contains(' ') {
                return Some(format!(
                    "command not found: `{cmd}` is not installed on this machine (or not on PATH)"
                ));
            }
        }
    }
    None
}

/// Where a job's log is read: its file on this host (a farm alone on its SQLite
/// ledger), or the ledger (PostgreSQL: the job may run on another host, whose
/// runner stores its log there as it grows).
#[derive(Clone, Debug)]
pub enum LogStore {
    /// Files in the logs directory.
    Files(std::path::PathBuf),
    /// Chunks in the ledger.
    Ledger(crate::ledger::Db),
}

impl LogStore {
    /// The log's size in bytes now.
    pub async fn size(&self, id: &str) -> u64 {
        match self {
            LogStore::Files(dir) => tokio::fs::metadata(path(dir, id))
                .await
                .ok()
                .filter(std::fs::Metadata::is_file)
                .map_or(0, |m| m.len()),
            LogStore::Ledger(db) => {
                let id = id.to_owned();
                db.read(move |l| l.log_size(&id)).await.unwrap_or(0)
            }
        }
    }

    /// Up to `max` bytes from `offset`.
    pub async fn read(&self, id: &str, offset: u64, max: u64) -> Vec<u8> {
        match self {
            LogStore::Files(dir) => {
                let p = path(dir, id);
                tokio::task::spawn_blocking(move || read_from(&p, offset, max))
                    .await
                    .unwrap_or_default()
            }
            LogStore::Ledger(db) => {
                let id = id.to_owned();
                db.read(move |l| l.log_read(&id, offset, max))
                    .await
                    .unwrap_or_default()
            }
        }
    }

    /// The last bytes, at most `max`: `(start, bytes)` as [`tail_window`].
    pub async fn tail_window(&self, id: &str, max: u64) -> (u64, Vec<u8>) {
        match self {
            LogStore::Files(dir) => {
                let p = path(dir, id);
                tokio::task::spawn_blocking(move || tail_window(&p, max))
                    .await
                    .unwrap_or_default()
            }
            LogStore::Ledger(_) => {
                let size = self.size(id).await;
                let start = size.saturating_sub(max);
                (start, self.read(id, start, size - start).await)
            }
        }
    }

    /// The last `n` lines, looked for in the last 256 KiB.
    pub async fn tail_lines(&self, id: &str, n: usize) -> Vec<String> {
        let (start, buf) = self.tail_window(id, TAIL_WINDOW).await;
        last_lines(start, &buf, n)
    }
}
