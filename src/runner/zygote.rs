//! Long-lived sandboxes for warm worktrees.
//!
//! Making a bwrap sandbox costs several milliseconds (namespaces, a dozen mounts, a
//! pivot and their teardown), more than a no-op job itself. A warm worktree is used
//! by one job at a time, always with the same mounts, so the farm keeps one sandbox
//! per warm worktree alive between its jobs: inside it runs this binary's small
//! zygote (`crafting-table sandbox-zygote`), which starts each job's `/bin/sh -c`
//! on request and, when the command exits, kills everything left in the sandbox's
//! PID namespace and puts the sandbox's own file systems (the tmpfs mounts of
//! `/tmp`, `/dev` and the hidden directories) back as bwrap made them, never
//! crossing into a bound directory, before it answers. A job therefore sees what a
//! job in a fresh bwrap sees: the same mounts, its own environment (built, sent
//! with the request), no process and no temporary file of an earlier job. A
//! sandbox whose job left processes behind, or whose file systems could not be
//! put back, is not used again. Jobs of one worktree share the sandbox's IPC namespace and PID
//! numbering, both within one project, which already shares the worktree, its
//! cache and its home between jobs.
//!
//! Protocol over a `SOCK_SEQPACKET` socket pair (the zygote's end is its fd 3;
//! the farm's end has `SO_PASSCRED`, so each message carries its sender's pid as
//! the farm sees it):
//! - zygote → farm `R` once started;
//! - farm → zygote one request (JSON: command, cwd, environment) with the job's
//!   output pipe attached (`SCM_RIGHTS`);
//! - the job's shell → farm `S` just before its exec (the farm learns the shell's
//!   pid, its process group, from the message's credentials);
//! - zygote → farm `X` + exit status (4 bytes, 128 + signal when killed) +
//!   leftovers (1 byte: processes were still running) + clean (1 byte: the
//!   sandbox's file systems are as they were), or `E` + a message when the shell could not be started.
//!
//! The sandbox dies with the farm (bwrap's `--die-with-parent`); a zygote that
//! cannot be started or that dies mid-job is never reused, and a job that could
//! not be handed to one runs in a bwrap of its own.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// The zygote's end of the socket, in the zygote.
const ZYGOTE_FD: RawFd = 3;
/// The binary's own file, in the sandbox (bwrap runs `/proc/self/fd/4`).
const EXE_FD: RawFd = 4;
/// The zygote's first message (with the protocol's version).
const READY: &[u8] = b"R1";
/// How long the zygote tries to kill what a job left before it gives up on the
/// sandbox.
const CLEAR_DEADLINE: Duration = Duration::from_secs(10);
/// Largest request (command + environment); a larger one runs in its own bwrap.
const MAX_REQUEST: usize = 1 << 20;
/// How long a new zygote may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle sandboxes older than this are stopped.
const MAX_IDLE: Duration = Duration::from_secs(600);

/// One job's request to a zygote.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    command: String,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
}

/// A message read from the socket.
struct Message {
    bytes: Vec<u8>,
    /// The sender's pid in the reader's PID namespace (with `SO_PASSCRED`).
    pid: Option<i32>,
    /// A file descriptor passed with it.
    fd: Option<OwnedFd>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A `SOCK_SEQPACKET` pair, close-on-exec.
fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both are new descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size given.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sends one message, with `fd` attached when given.
fn send(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_* compute sizes and positions inside `control`, which is
        // larger than CMSG_SPACE of one descriptor.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(sock, &raw const msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message (`None` at end of stream).
fn recv(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<Message>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let r = unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let (mut pid, mut fd) = (None, None);
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of cmsghdrs;
    // CMSG_FIRSTHDR/NXTHDR stay inside it, and each payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let len = ((*cmsg).cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        let owned = OwnedFd::from_raw_fd(raw);
                        if fd.is_none() {
                            fd = Some(owned);
                        } // any further descriptor is closed as `owned` drops
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) => {
                    let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                    pid = Some(cred.pid);
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::other("message larger than the buffer"));
    }
    if n == 0 && pid.is_none() && fd.is_none() {
        return Ok(None);
    }
    Ok(Some(Message {
        bytes: buf[..n].to_vec(),
        pid,
        fd,
    }))
}

// ---------------------------------------------------------------------------
// The zygote (inside the sandbox)

/// `crafting-table sandbox-zygote`: serves job requests on fd 3 until the farm's
/// end closes. Returns the process's exit code.
pub fn zygote_main() -> i32 {
    // SAFETY: prctl with integer arguments has no memory effects.
    unsafe {
        // Orphans of a job become ours, so they can be reaped after the kill.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Jobs (same user) cannot ptrace us or read our memory.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::fcntl(ZYGOTE_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    close_other_fds();
    // The sandbox's own file systems (its tmpfs mounts, named by the farm), as
    // bwrap left them, and this process's own settings that a job could change
    // from outside (limits, priority): checked after each job.
    let scratch = Scratch::take(std::env::args_os().skip(2).map(PathBuf::from).collect());
    let attrs = Attrs::read();
    if send(ZYGOTE_FD, READY, None).is_err() {
        return 1;
    }
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let msg = match recv(ZYGOTE_FD, &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return 0, // the farm is gone
        };
        let reply = match (serde_json::from_slice::<Request>(&msg.bytes), msg.fd) {
            (Ok(req), Some(out)) => run_one(&req, out, &scratch, &attrs),
            (Err(e), _) => error_reply(&format!("bad request: {e}")),
            (Ok(_), None) => error_reply("bad request: no output descriptor"),
        };
        if send(ZYGOTE_FD, &reply, None).is_err() {
            return 0;
        }
    }
}

fn error_reply(msg: &str) -> Vec<u8> {
    let mut r = b"E".to_vec();
    r.extend_from_slice(msg.as_bytes());
    r
}

/// Closes every descriptor but 0, 1, 2 and the socket (the binary's own file and
/// anything bwrap passed along).
fn close_other_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && *fd != ZYGOTE_FD)
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor this process does not use afterwards (the
        // directory's own, already closed, only yields EBADF).
        unsafe {
            libc::close(fd);
        }
    }
}

/// Runs one command to its end, then clears the sandbox.
fn run_one(req: &Request, out: OwnedFd, scratch: &Scratch, attrs: &Attrs) -> Vec<u8> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let err = match out.try_clone() {
        Ok(e) => e,
        Err(e) => return error_reply(&format!("cannot duplicate the output: {e}")),
    };
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&req.command)
        .env_clear()
        .envs(&req.env)
        .env("PWD", &req.cwd)
        .current_dir(&req.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid and write are async-signal-safe; nothing shared is touched.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            // The farm learns this process's pid from the message's credentials.
            if libc::write(ZYGOTE_FD, b"S".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(cmd); // our copies of the output
    let status = match spawned {
        Ok(mut child) => child.wait(),
        Err(e) => {
            clear(scratch, attrs);
            return error_reply(&format!("cannot start /bin/sh: {e}"));
        }
    };
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 128 + libc::SIGKILL,
    };
    let (leftovers, clean) = clear(scratch, attrs);
    let mut r = b"X".to_vec();
    r.extend_from_slice(&code.to_le_bytes());
    r.push(u8::from(leftovers));
    r.push(u8::from(clean));
    r
}

/// Kills and reaps every other process of the sandbox (we are its PID 1), then
/// puts its scratch file systems back as they were and checks that nothing of
/// the job is left in its IPC namespace or in our own settings. Returns
/// (something was still running, the sandbox is as it was).
fn clear(scratch: &Scratch, attrs: &Attrs) -> (bool, bool) {
    // Children that ended by themselves are not leftovers: reap them first.
    // SAFETY: waitpid with a null status pointer only reaps.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    let mut leftovers = false;
    let deadline = Instant::now() + CLEAR_DEADLINE;
    loop {
        // SAFETY: kill(-1) from PID 1 signals every other process of the
        // namespace: the job's leftovers (and their zombies).
        let hit = unsafe { libc::kill(-1, libc::SIGKILL) } == 0;
        // SAFETY: waitpid with a null status pointer only reaps.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        if !hit {
            break;
        }
        leftovers = true;
        if Instant::now() >= deadline {
            // Something cannot die (uninterruptible sleep): never reuse this.
            return (true, false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let clean = scratch.restore() && no_ipc_objects() && Attrs::read() == *attrs;
    (leftovers, clean)
}

/// Whether the sandbox's IPC namespace holds no System V shared memory,
/// semaphore set or message queue (a job's would outlive it).
fn no_ipc_objects() -> bool {
    ["shm", "sem", "msg"].iter().all(|k| {
        std::fs::read_to_string(format!("/proc/sysvipc/{k}"))
            .is_ok_and(|t| t.lines().skip(1).all(|l| l.trim().is_empty()))
    })
}

/// This process's settings another process of the same user can change from
/// outside (`prlimit`, `renice`, `taskset`, `chrt`, `ionice`); the job's shell
/// would inherit them.
#[derive(Debug, PartialEq, Eq)]
struct Attrs {
    limits: Vec<(u64, u64)>,
    nice: i32,
    affinity: Vec<u8>,
    policy: i32,
    priority: i32,
    ioprio: i64,
}

impl Attrs {
    fn read() -> Attrs {
        // Linux has 16 (RLIMIT_CPU .. RLIMIT_RTTIME).
        let limits = (0..16)
            .map(|r| {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes one rlimit into `l`.
                unsafe { libc::getrlimit(r as _, &raw mut l) };
                (l.rlim_cur, l.rlim_max)
            })
            .collect();
        // SAFETY: plain queries of this process's own settings into local
        // buffers of the sizes given.
        unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set);
            let affinity = std::slice::from_raw_parts(
                (&raw const set).cast::<u8>(),
                std::mem::size_of::<libc::cpu_set_t>(),
            )
            .to_vec();
            let policy = libc::sched_getscheduler(0);
            let mut param: libc::sched_param = std::mem::zeroed();
            libc::sched_getparam(0, &raw mut param);
            // IOPRIO_WHO_PROCESS = 1
            let ioprio = libc::syscall(libc::SYS_ioprio_get, 1, 0);
            Attrs {
                limits,
                nice,
                affinity,
                policy,
                priority: param.sched_priority,
                ioprio,
            }
        }
    }
}

/// The sandbox's writable tmpfs mounts (`/tmp`, `/dev`, the hidden directories)
/// as bwrap made them: every path on them (a mount inside is not theirs) with
/// its mode. A job may write there; after it, whatever it added goes and modes
/// are put back.
struct Scratch {
    roots: Vec<(PathBuf, u64)>,
    skeleton: HashMap<PathBuf, u32>,
    /// Where each symbolic link of the skeleton points.
    links: HashMap<PathBuf, PathBuf>,
}

/// Whether `p` is the root of a tmpfs mount (another file system than its
/// parent's, and a tmpfs): only such a root is the sandbox's own to put back.
fn tmpfs_root(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let (Ok(m), Some(parent)) = (std::fs::symlink_metadata(p), p.parent()) else {
        return false;
    };
    let Ok(pm) = std::fs::metadata(parent) else {
        return false;
    };
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct for a NUL-terminated path.
    let fs_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &raw mut st) != 0 {
            return false;
        }
        st.f_type as i64
    };
    m.is_dir() && m.dev() != pm.dev() && fs_type == TMPFS_MAGIC
}

impl Scratch {
    fn take(roots: Vec<PathBuf>) -> Scratch {
        use std::os::unix::fs::MetadataExt;
        let mut s = Scratch {
            roots: Vec::new(),
            skeleton: HashMap::new(),
            links: HashMap::new(),
        };
        for root in roots {
            // A root named through a symbolic link (a data directory reached by
            // one) is where the link leads.
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            if !tmpfs_root(&root) {
                continue; // not (or no longer) the sandbox's own tmpfs
            }
            let Ok(m) = std::fs::symlink_metadata(&root) else {
                continue;
            };
            s.skeleton.insert(root.clone(), m.mode());
            s.record(&root, m.dev());
            s.roots.push((root, m.dev()));
        }
        s
    }

    fn record(&mut self, dir: &Path, dev: u64) {
        use std::os::unix::fs::MetadataExt;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.dev() != dev {
                continue; // a mount: not ours
            }
            self.skeleton.insert(p.clone(), m.mode());
            if m.is_symlink()
                && let Ok(target) = std::fs::read_link(&p)
            {
                self.links.insert(p.clone(), target);
            }
            if m.is_dir() {
                self.record(&p, dev);
            }
        }
    }

    /// Removes what is not in the skeleton, puts modes back; whether all is as
    /// it was.
    fn restore(&self) -> bool {
        let mut ok = true;
        for (root, dev) in &self.roots {
            ok &= self.restore_dir(root, *dev);
        }
        // Everything bwrap made is still there, of the same kind, and its links
        // point where they did.
        ok && self.skeleton.iter().all(|(p, mode)| {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.mode() & libc::S_IFMT == mode & libc::S_IFMT)
        }) && self
            .links
            .iter()
            .all(|(p, target)| std::fs::read_link(p).is_ok_and(|t| t == *target))
    }

    fn restore_dir(&self, dir: &Path, dev: u64) -> bool {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut ok = true;
        if let Some(mode) = self.skeleton.get(dir)
            && let Ok(m) = std::fs::symlink_metadata(dir)
            && m.is_dir()
            && m.mode() != *mode
        {
            ok &= std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode)).is_ok();
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.dev() != dev {
                continue; // a mount (a bound directory or device)
            }
            match self.skeleton.get(&p) {
                Some(mode) if m.is_dir() && mode & libc::S_IFMT == libc::S_IFDIR => {
                    ok &= self.restore_dir(&p, dev);
                }
                Some(mode) if m.mode() & libc::S_IFMT == mode & libc::S_IFMT => {}
                _ => ok &= remove_tree(&p, dev),
            }
        }
        ok
    }
}

/// Removes `p` and, for a directory, everything in it, never crossing into
/// another file system.
fn remove_tree(p: &Path, dev: u64) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return true; // already gone
    };
    if m.dev() != dev {
        return false;
    }
    if !m.is_dir() {
        return std::fs::remove_file(p).is_ok();
    }
    // A directory the job made unreadable is still ours to empty.
    if m.mode() & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
    }
    let mut ok = true;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        ok &= remove_tree(&e.path(), dev);
    }
    ok && std::fs::remove_dir(p).is_ok()
}

// ---------------------------------------------------------------------------
// The farm's side

/// A running zygote.
struct Zygote {
    /// What it was made for: the bwrap arguments and the identity of every
    /// directory they bind (a worktree removed and made again is another one).
    key: Vec<String>,
    sock: AsyncFd<OwnedFd>,
    /// bwrap (killed when dropped, and the sandbox with it).
    _child: tokio::process::Child,
    idle_since: Instant,
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote").field("key", &self.key).finish()
    }
}

/// The farm's idle zygotes, one per warm worktree at most.
#[derive(Debug)]
pub struct Zygotes {
    /// The binary, opened once (an upgrade in place does not change what the
    /// farm's sandboxes run).
    exe: Option<std::fs::File>,
    idle: Mutex<HashMap<PathBuf, Zygote>>,
    /// Idle zygotes kept at most (the oldest go first).
    cap: usize,
    /// After a zygote could not be started, jobs use one bwrap each until then.
    retry_at: Mutex<Option<Instant>>,
}

/// How long jobs use a bwrap each after a zygote could not be started.
const RETRY_AFTER: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The key of a sandbox made with `args`: the arguments and, for each that names
/// an existing path, its device and inode.
fn key_of(args: &[String]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut key = args.to_vec();
    for a in args {
        if a.starts_with('/')
            && let Ok(m) = std::fs::metadata(a)
        {
            key.push(format!("{}:{}", m.dev(), m.ino()));
        }
    }
    key
}

/// The sandbox's own tmpfs mounts (`--tmpfs`, `--dev`) that no later mount
/// covers: a writable bind of the same directory or of one above it would make
/// the path the host's, which is never the zygote's to put back.
fn scratch_roots(args: &[String]) -> Vec<String> {
    const MOUNTS: &[&str] = &["--bind", "--ro-bind", "--dev-bind", "--tmpfs", "--dev"];
    let mut roots = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a != "--tmpfs" && a != "--dev" {
            continue;
        }
        let Some(root) = args.get(i + 1) else {
            continue;
        };
        let covered = args[i + 2..].iter().enumerate().any(|(j, b)| {
            let dest = match b.as_str() {
                "--tmpfs" | "--dev" => args.get(i + 2 + j + 1),
                m if MOUNTS.contains(&m) => args.get(i + 2 + j + 2),
                _ => None,
            };
            dest.is_some_and(|d| Path::new(root).starts_with(d))
        });
        if !covered {
            roots.push(root.clone());
        }
    }
    roots
}

/// A job started in a zygote.
pub struct Started {
    zygote: Zygote,
    worktree: PathBuf,
    /// The shell's pid (its process group) as the farm sees it.
    pub pid: i32,
    /// Becomes readable when the shell has exited.
    exited: Option<OwnedFd>,
}

impl Started {
    /// Whether the job's shell has exited (then its pid may already be another
    /// process's: never signal its group).
    pub fn shell_exited(&self) -> bool {
        let Some(fd) = &self.exited else {
            // Not watchable: it had exited before it could be.
            return true;
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads one pollfd and writes its revents; no wait.
        unsafe { libc::poll(&raw mut p, 1, 0) > 0 }
    }
}

/// A pidfd of `pid` (`None` when it is gone already, or pidfds are missing:
/// then the farm cannot tell, and treats the shell as possibly gone).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How a job in a zygote ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Exit status (128 + signal when killed).
    pub code: i32,
    /// Processes were still running when the command exited.
    pub leftovers: bool,
    /// The shell could not exec the command (it never ran).
    pub spawn_error: Option<String>,
}

/// Why a job could not be handed to a zygote.
#[derive(Debug)]
pub enum NotStarted {
    /// No zygote could take it: run it in a bwrap of its own (nothing ran).
    Fallback(String),
    /// The zygote could not start the shell (as a spawn failure).
    Spawn(io::Error),
}

impl Zygotes {
    /// Zygotes running `exe` (the crafting-table binary), keeping at most `cap`
    /// idle.
    pub fn new(exe: &Path, cap: usize) -> Zygotes {
        let exe = match std::fs::File::open(exe) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(exe = %exe.display(), error = %e, "cannot open the sandbox program; each job gets a bwrap of its own");
                None
            }
        };
        Zygotes {
            exe,
            idle: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            retry_at: Mutex::new(None),
        }
    }

    /// Idle zygotes (for tests and `/metrics`).
    pub fn idle(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Stops every idle zygote.
    pub fn clear(&self) {
        lock(&self.idle).clear();
    }

    /// Stops idle zygotes older than `max_idle` (at most ten minutes) or whose
    /// worktree is gone.
    pub fn trim(&self, max_idle: Duration) {
        let max_idle = max_idle.min(MAX_IDLE);
        lock(&self.idle).retain(|wt, z| z.idle_since.elapsed() < max_idle && wt.is_dir());
    }

    /// Starts `command` in the zygote of `worktree` (made with the bwrap `args`,
    /// started now if there is none or its mounts changed), its output on `out`.
    /// Dropping the future before it returns stops that zygote (and anything it
    /// started).
    pub async fn start(
        &self,
        worktree: &Path,
        args: &[String],
        command: &str,
        cwd: &Path,
        env: &BTreeMap<String, String>,
        out: &OwnedFd,
    ) -> Result<Started, NotStarted> {
        if lock(&self.retry_at).is_some_and(|t| Instant::now() < t) {
            return Err(NotStarted::Fallback(
                "kept sandboxes unavailable for now".into(),
            ));
        }
        let request = serde_json::to_vec(&Request {
            command: command.to_owned(),
            cwd: cwd.to_owned(),
            env: env.clone(),
        })
        .map_err(|e| NotStarted::Fallback(e.to_string()))?;
        if request.len() > MAX_REQUEST {
            return Err(NotStarted::Fallback("request too large".into()));
        }
        let key = key_of(args);
        let found = lock(&self.idle).remove(worktree);
        let zygote = match found {
            Some(z) if z.key == key => z,
            _ => match self.spawn(args, key).await {
                Ok(z) => {
                    lock(&self.retry_at).take();
                    z
                }
                Err(e) => {
                    let first = lock(&self.retry_at)
                        .replace(Instant::now() + RETRY_AFTER)
                        .is_none();
                    if first {
                        tracing::warn!(
                            error = %e,
                            "cannot keep a sandbox per warm worktree; jobs get a bwrap each (retried in a minute)"
                        );
                    }
                    return Err(NotStarted::Fallback(e.to_string()));
                }
            },
        };
        if let Err(e) = send(zygote.sock.as_raw_fd(), &request, Some(out.as_raw_fd())) {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                // Too large for the socket: only this job goes elsewhere.
                self.put_back(worktree.to_owned(), zygote);
            }
            return Err(NotStarted::Fallback(format!("zygote: {e}")));
        }
        match read(&zygote.sock).await {
            Ok(Some(m)) if m.bytes == b"S" => match m.pid {
                Some(pid) if pid > 0 => Ok(Started {
                    zygote,
                    worktree: worktree.to_owned(),
                    pid,
                    exited: pidfd(pid),
                }),
                _ => Err(NotStarted::Fallback("no pid from the job's shell".into())),
            },
            Ok(Some(m)) if m.bytes.first() == Some(&b'E') => {
                let why = String::from_utf8_lossy(&m.bytes[1..]).into_owned();
                // Only this command could not start; the zygote answered, so
                // its sandbox is as clean as after any job, but its own state
                // (out of descriptors, of processes) may be why: not kept.
                Err(NotStarted::Spawn(io::Error::other(why)))
            }
            // Gone (or talking nonsense) before the shell started: nothing ran.
            Ok(_) | Err(_) => Err(NotStarted::Fallback("zygote ended".into())),
        }
    }

    async fn spawn(&self, args: &[String], key: Vec<String>) -> io::Result<Zygote> {
        use std::os::fd::IntoRawFd;
        let exe = match &self.exe {
            Some(f) => f.try_clone()?,
            None => return Err(io::Error::other("no sandbox program")),
        };
        let (mine, theirs) = socket_pair()?;
        set_int_opt(mine.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        // Room for a large request; the kernel caps it at its limit.
        let _ = set_int_opt(mine.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        let (theirs_raw, exe_raw) = (theirs.as_raw_fd(), exe.as_raw_fd());
        let mut cmd = tokio::process::Command::new("bwrap");
        // The zygote is the sandbox's PID 1: signals from the jobs (`kill -1`,
        // `pkill`, SIGSTOP) do not reach it, and its exit ends the sandbox.
        cmd.arg("--as-pid-1")
            .args(args)
            .arg(format!("/proc/self/fd/{EXE_FD}"))
            .arg("sandbox-zygote")
            .args(scratch_roots(args))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: fcntl, dup2 and setsid are async-signal-safe; the closure only
        // moves descriptors into place (dup2 leaves the copies without
        // close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                // Copies above both targets first, so neither dup2 clobbers the
                // other's source.
                let sock = cvt(libc::fcntl(theirs_raw, libc::F_DUPFD_CLOEXEC, 10))?;
                let exe = cvt(libc::fcntl(exe_raw, libc::F_DUPFD_CLOEXEC, 10))?;
                cvt(libc::dup2(sock, ZYGOTE_FD))?;
                cvt(libc::dup2(exe, EXE_FD))?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(cmd);
        drop(theirs);
        drop(exe);
        let raw = mine.into_raw_fd();
        // SAFETY: `raw` was just released from its OwnedFd.
        let mine = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fcntl on an owned descriptor.
        unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        // SAFETY: the OwnedFd stays open and unchanged for the AsyncFd's life.
        let sock = unsafe { AsyncFd::register(mine) }?;
        match tokio::time::timeout(START_TIMEOUT, read(&sock)).await {
            Ok(Ok(Some(m))) if m.bytes == READY => Ok(Zygote {
                key,
                sock,
                _child: child,
                idle_since: Instant::now(),
            }),
            Ok(Ok(Some(_))) => Err(io::Error::other(
                "the sandbox program speaks another protocol",
            )),
            Ok(Ok(None)) => Err(io::Error::other("the zygote ended before it was ready")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("the zygote did not start in time")),
        }
    }

    /// Waits for the job started in `started` to end. With `keep`, the zygote
    /// goes back to the idle set when it can take another job; otherwise it is
    /// stopped. `Err` when the zygote died (the sandbox and everything in it are
    /// gone). Cancel-safe: nothing is consumed until the answer is complete.
    pub async fn wait(&self, started: &mut Option<Started>, keep: bool) -> io::Result<Ended> {
        let Some(s) = started.as_ref() else {
            return Err(io::Error::other("no job"));
        };
        let m = read(&s.zygote.sock).await;
        let Some(s) = started.take() else {
            return Err(io::Error::other("no job"));
        };
        match m {
            Ok(Some(m)) if m.bytes.len() == 7 && m.bytes[0] == b'X' => {
                let code = i32::from_le_bytes([m.bytes[1], m.bytes[2], m.bytes[3], m.bytes[4]]);
                let (leftovers, clean) = (m.bytes[5] != 0, m.bytes[6] != 0);
                if keep && clean && !leftovers {
                    self.put_back(s.worktree, s.zygote);
                }
                Ok(Ended {
                    code,
                    leftovers,
                    spawn_error: None,
                })
            }
            // The shell said it was about to exec, then could not.
            Ok(Some(m)) if m.bytes.first() == Some(&b'E') => Ok(Ended {
                code: 127,
                leftovers: false,
                spawn_error: Some(String::from_utf8_lossy(&m.bytes[1..]).into_owned()),
            }),
            Ok(_) => Err(io::Error::other("the job's sandbox ended")),
            Err(e) => Err(e),
        }
    }

    fn put_back(&self, worktree: PathBuf, mut z: Zygote) {
        z.idle_since = Instant::now();
        let mut idle = lock(&self.idle);
        idle.insert(worktree, z);
        idle.retain(|_, z| z.idle_since.elapsed() < MAX_IDLE);
        while idle.len() > self.cap {
            let oldest = idle
                .iter()
                .min_by_key(|(_, z)| z.idle_since)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    idle.remove(&k);
                }
                None => break,
            }
        }
    }
}

/// Reads one message from the farm's end.
async fn read(sock: &AsyncFd<OwnedFd>) -> io::Result<Option<Message>> {
    let mut buf = [0u8; 4096];
    loop {
        let mut guard = sock.readable().await?;
        match guard.try_io(|s| recv(s.as_raw_fd(), &mut buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scratch_roots;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_tmpfs_under_a_later_bind_is_not_the_sandboxs_to_clear() {
        let a = args(&[
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/srv/ct/data",
            "--bind",
            "/srv/ct/data/workspace/p/.warm/0",
            "/srv/ct/data/workspace/p/.warm/0",
            "--bind",
            "/srv",
            "/srv",
            "--chdir",
            "/x",
        ]);
        // `/srv` bound writable over the hidden data directory: the host's now.
        assert_eq!(scratch_roots(&a), ["/dev", "/tmp"]);
        let a = args(&["--tmpfs", "/tmp", "--bind", "/tmp", "/tmp"]);
        assert!(scratch_roots(&a).is_empty());
        let a = args(&[
            "--tmpfs", "/tmp", "--bind", "/tmpx", "/tmpx", "--tmpfs", "/tmp/a",
        ]);
        assert_eq!(scratch_roots(&a), ["/tmp", "/tmp/a"]);
    }
}
