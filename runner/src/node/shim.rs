//! The per-instance shim: a small process, like podman's conmon, that outlives
//! the node agent and owns everything an instance needs while it runs.
//!
//! The agent forks a child that forks the shim (in a session of its own), then exits:
//! the shim is nobody's child in the agent (init, or the nearest subreaper,
//! reaps it), so killing the agent never touches it. The shim:
//! - becomes a child subreaper and runs `runc run --detach`, whose container
//!   init is then re-parented to the shim when runc exits, so the shim can
//!   `waitpid` it and keep its exit status;
//! - gives the container a pipe as stdout and stderr and copies it into
//!   `log`, moving it to `log.1` once it reaches the cap (so at most two caps
//!   of log are kept), so a container never blocks or dies on a full log
//!   whether or not an agent is there;
//! - holds inherited shared locks on the instance's cached layers, so no layer
//!   cache evicts a layer the overlay uses, even while no agent runs;
//! - on the container's end (end of file on the pipe: every process of its pid
//!   namespace is gone) writes the init's wait status to `exit` and exits.
//!
//! The agent learns the shim's pid and runc's status over a pipe, and waits
//! for the shim's exit with a pidfd (no polling), which works just as well for
//! a shim a previous agent started.
//!
//! Between `fork` and `execve` (or `_exit`) the children make raw,
//! async-signal-safe system calls only, on memory prepared before the fork: the
//! agent is multi-threaded.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the shim is given, prepared before forking.
pub(super) struct ShimArgs {
    /// `runc --root … run --detach --pid-file … --bundle … <container id>`.
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub log: CString,
    pub log_rotated: CString,
    pub log_cap: u64,
    pub exit_tmp: CString,
    pub exit: CString,
    /// Descriptors the shim keeps open for its whole life (layer locks).
    pub keep: Vec<RawFd>,
}

/// A started shim, and runc's exit status (0: the container runs).
pub(super) struct Spawned {
    pub pid: u32,
    pub start_time: u64,
    /// Opened before the shim could exit (it waits for that).
    pub pidfd: OwnedFd,
    pub runc_status: i32,
}

/// `prctl(PR_SET_CHILD_SUBREAPER)`.
const PR_SET_CHILD_SUBREAPER: libc::c_int = 36;
const READ_CHUNK: usize = 16 * 1024;

/// Fork the shim and wait (until `deadline`) for runc to have created and
/// started the container (or failed to).
pub(super) fn spawn(args: &ShimArgs, deadline: Duration) -> io::Result<Spawned> {
    let cloexec = rustix::pipe::PipeFlags::CLOEXEC;
    let (report_read, report_write) = rustix::pipe::pipe_with(cloexec)?;
    let (log_read, log_write) = rustix::pipe::pipe_with(cloexec)?;
    // Closed by the agent once it holds the shim's pidfd: a shim whose
    // container ends at once waits for that before exiting.
    let (ack_read, ack_write) = rustix::pipe::pipe_with(cloexec)?;
    let null = OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    );
    let argv: Vec<*const libc::c_char> = args
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = args
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let mut keep: Vec<RawFd> = args.keep.clone();
    keep.extend([
        report_write.as_raw_fd(),
        log_read.as_raw_fd(),
        log_write.as_raw_fd(),
        null.as_raw_fd(),
        ack_read.as_raw_fd(),
    ]);
    keep.sort_unstable();
    keep.dedup();
    let fds = ShimFds {
        report: report_write.as_raw_fd(),
        log_read: log_read.as_raw_fd(),
        log_write: log_write.as_raw_fd(),
        null: null.as_raw_fd(),
        ack: ack_read.as_raw_fd(),
    };

    // SAFETY: the child runs `intermediate`, which makes raw syscalls only on
    // memory prepared above, then `_exit`s or `execve`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe { intermediate(args, &argv, &envp, &keep, fds) }
    }
    drop((report_write, log_write, log_read, null, ack_read));
    let mut status = 0;
    // The intermediate child exits right after forking the shim.
    unsafe { libc::waitpid(pid, &mut status, 0) };

    let until = Instant::now() + deadline;
    let shim = read_u32(&report_read, until)
        .map_err(|e| io::Error::new(e.kind(), format!("the instance shim did not start: {e}")))?;
    let gone = || io::Error::other(format!("the instance shim {shim} died before runc ran"));
    let pidfd = rustix::process::Pid::from_raw(shim as i32)
        .ok_or_else(gone)
        .and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK)
                .map_err(io::Error::from)
        })?;
    let start_time = super::adopt::start_time(shim).ok_or_else(gone)?;
    let runc_status = match read_u32(&report_read, until) {
        Ok(status) => status as i32,
        Err(e) => {
            // Deadline: runc is stuck; kill the shim's session (runc with it).
            unsafe { libc::kill(-(shim as i32), libc::SIGKILL) };
            return Err(io::Error::new(
                e.kind(),
                format!("runc did not start the container within {deadline:?}: {e}"),
            ));
        }
    };
    drop(ack_write);
    Ok(Spawned {
        pid: shim,
        start_time,
        pidfd,
        runc_status: exit_code(runc_status),
    })
}

#[derive(Clone, Copy)]
struct ShimFds {
    report: RawFd,
    log_read: RawFd,
    log_write: RawFd,
    null: RawFd,
    ack: RawFd,
}

/// Read 4 bytes (native endian) before `until`.
fn read_u32(fd: &OwnedFd, until: Instant) -> io::Result<u32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().max(1) as libc::c_int) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready == 0 {
            continue;
        }
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the shim ended early",
                ))
            }
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(u32::from_ne_bytes(buf))
}

/// A wait status as an exit code: the code, or 128 + the signal.
pub(super) fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        status
    }
}

/// The forked child: fork the shim and exit.
///
/// # Safety
/// Only in a child just forked from the agent.
unsafe fn intermediate(
    args: &ShimArgs,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    keep: &[RawFd],
    fds: ShimFds,
) -> ! {
    unsafe {
        reset_signals();
        let pid = libc::fork();
        if pid != 0 {
            libc::_exit(if pid < 0 { 1 } else { 0 });
        }
        shim(args, argv, envp, keep, fds)
    }
}

/// Every signal back to its default action, none blocked: the agent's
/// handlers (Tokio's write to descriptors this process no longer has) must
/// never run here.
unsafe fn reset_signals() {
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Close every descriptor not in `keep` (sorted).
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut first: u32 = 0;
    for &fd in keep {
        let fd = fd as u32;
        if fd > first {
            unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0u32) };
        }
        first = fd + 1;
    }
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

unsafe fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if *unsafe { libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

unsafe fn open_log(path: &CString, truncate: bool) -> RawFd {
    let flags = libc::O_WRONLY
        | libc::O_CREAT
        | libc::O_APPEND
        | libc::O_CLOEXEC
        | if truncate { libc::O_TRUNC } else { 0 };
    unsafe { libc::open(path.as_ptr(), flags, 0o600) }
}

/// The shim itself (see the module documentation).
unsafe fn shim(
    args: &ShimArgs,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    keep: &[RawFd],
    fds: ShimFds,
) -> ! {
    unsafe {
        close_all_but(keep);
        // Its own session and process group (`kill(-pid)` reaches runc too).
        libc::setsid();
        libc::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // The agent may be gone when the shim reports: no SIGPIPE for that.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::chdir(c"/".as_ptr());
        let me = libc::getpid() as u32;
        write_all(fds.report, &me.to_ne_bytes());

        let runc = libc::fork();
        if runc == 0 {
            libc::dup2(fds.null, 0);
            libc::dup2(fds.log_write, 1);
            libc::dup2(fds.log_write, 2);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        libc::close(fds.log_write);
        libc::close(fds.null);
        let mut runc_status: libc::c_int = 127 << 8;
        while runc > 0 && libc::waitpid(runc, &mut runc_status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        write_all(fds.report, &(runc_status as u32).to_ne_bytes());
        libc::close(fds.report);

        // Copy the container's output until every writer is gone.
        let mut log = open_log(&args.log, false);
        let mut size: u64 = 0;
        let mut stat: libc::stat = std::mem::zeroed();
        if log >= 0 && libc::fstat(log, &mut stat) == 0 {
            size = stat.st_size as u64;
        }
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let n = libc::read(fds.log_read, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            if log >= 0 {
                write_all(log, &buf[..n as usize]);
            }
            size += n as u64;
            if size >= args.log_cap {
                libc::close(log);
                libc::rename(args.log.as_ptr(), args.log_rotated.as_ptr());
                log = open_log(&args.log, true);
                size = 0;
            }
        }
        // The container's init was re-parented here when runc exited: its
        // status is the instance's (runc's own when it never started one).
        let mut status = runc_status;
        let mut first = true;
        loop {
            let mut st: libc::c_int = 0;
            let r = libc::waitpid(-1, &mut st, 0);
            if r > 0 {
                if first {
                    status = st;
                    first = false;
                }
                continue;
            }
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break;
        }
        let mut text = [0u8; 16];
        let len = format_i32(status, &mut text);
        let out = libc::open(
            args.exit_tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        );
        if out >= 0 {
            write_all(out, &text[..len]);
            libc::close(out);
            libc::rename(args.exit_tmp.as_ptr(), args.exit.as_ptr());
        }
        // Until the agent that started it holds its pidfd (or is gone).
        let mut byte = [0u8; 1];
        while libc::read(fds.ack, byte.as_mut_ptr().cast(), 1) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        libc::_exit(0)
    }
}

/// Decimal text of `n` followed by a newline, without allocating.
fn format_i32(n: i32, out: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 12];
    let mut value = i64::from(n).unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let mut at = 0;
    if n < 0 {
        out[0] = b'-';
        at = 1;
    }
    for i in (0..len).rev() {
        out[at] = digits[i];
        at += 1;
    }
    out[at] = b'\n';
    at + 1
}

/// The instance's exit code from the shim's `exit` file, once the shim is
/// gone (`None`: the shim was killed before it could write it).
pub(super) fn read_exit(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("exit")).ok()?;
    text.trim().parse().ok().map(exit_code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_wait_statuses() {
        let mut out = [0u8; 16];
        for n in [0, 7, 256, 9, -1, i32::MAX, i32::MIN] {
            let len = super::format_i32(n, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), format!("{n}\n"));
        }
    }

    #[test]
    fn wait_statuses_become_exit_codes() {
        assert_eq!(super::exit_code(3 << 8), 3);
        assert_eq!(super::exit_code(9), 137);
        assert_eq!(super::exit_code(0), 0);
    }
}
