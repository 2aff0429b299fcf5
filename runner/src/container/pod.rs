//! Pods: one network namespace shared by several containers, so a job's steps
//! reach its service containers (a database, a cache) on `localhost`, while
//! the pod as a whole stays cut off from the host's network like `none`.
//!
//! The namespace is created by a forked child that unshares its network
//! namespace, brings loopback up and lets unprivileged ports start at 0 (so
//! container root in a user namespace can listen on port 80, as in Docker); the
//! engine then bind-mounts `/proc/<child>/ns/net` onto `pods/<id>/netns` (what
//! `ip netns add` does) and the child exits. Containers join it with
//! [`Network::Pod`](super::Network::Pod). Dropping the [`Pod`] unmounts the file,
//! which frees the namespace once its last container is gone.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::mount::UnmountFlags;

use super::Network;

/// A shared network namespace; removed when dropped.
pub struct Pod {
    dir: PathBuf,
    netns: PathBuf,
}

impl Pod {
    /// Create a pod under `dir` (which must not exist yet).
    pub(crate) fn create(dir: PathBuf) -> io::Result<Pod> {
        std::fs::create_dir_all(&dir)?;
        let netns = dir.join("netns");
        std::fs::File::create(&netns)?;
        let pod = Pod { dir, netns };
        bind_new_netns(&pod.netns)?;
        Ok(pod)
    }

    /// What a container of this pod is given as its network.
    pub fn network(&self) -> Network {
        Network::Pod(self.netns.clone())
    }

    pub fn netns_path(&self) -> &Path {
        &self.netns
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Make a network namespace with loopback only and bind it onto `file` (an
/// existing empty file), which then keeps it alive until unmounted, whatever
/// happens to this process: deployed instances outlive the node agent.
pub(crate) fn bind_new_netns(file: &Path) -> io::Result<()> {
    let holder = spawn_namespace_holder()?;
    let mounted = rustix::mount::mount_bind(format!("/proc/{}/ns/net", holder.pid), file);
    holder.release();
    Ok(mounted?)
}

/// Unmount and remove a pod directory (also for reaping a crashed engine's).
pub(crate) fn remove(dir: &Path) {
    let _ = rustix::mount::unmount(dir.join("netns"), UnmountFlags::DETACH);
    let _ = std::fs::remove_dir_all(dir);
}

/// A forked child sitting in a fresh network namespace until released.
struct Holder {
    pid: i32,
    release: rustix::fd::OwnedFd,
}

impl Holder {
    fn release(self) {
        let _ = rustix::io::write(&self.release, b"x");
        let mut status = 0;
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

fn spawn_namespace_holder() -> io::Result<Holder> {
    let cloexec = rustix::pipe::PipeFlags::CLOEXEC;
    let (parent_read, child_write) = rustix::pipe::pipe_with(cloexec)?;
    let (child_read, parent_write) = rustix::pipe::pipe_with(cloexec)?;
    let knob = c"/proc/sys/net/ipv4/ip_unprivileged_port_start";
    // SAFETY: the child makes raw, async-signal-safe syscalls only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            // Ends when the runner does: its read sees end of file then.
            super::userns::close_fds_except([child_read.as_raw_fd(), child_write.as_raw_fd()]);
            let mut status: u8 = 0;
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                status = 1;
            } else {
                // Loopback up.
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let mut req: libc::ifreq = std::mem::zeroed();
                req.ifr_name[0] = b'l' as libc::c_char;
                req.ifr_name[1] = b'o' as libc::c_char;
                if sock < 0 || libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 || {
                    req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                    libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) != 0
                } {
                    status = 2;
                }
                // Unprivileged ports from 0, as Docker sets for its containers.
                let fd = libc::open(knob.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                    status = status.max(3);
                }
            }
            libc::write(child_write.as_raw_fd(), [status].as_ptr().cast(), 1);
            let mut buf = [0u8; 1];
            libc::read(child_read.as_raw_fd(), buf.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop((child_write, child_read));
    let holder = Holder {
        pid,
        release: parent_write,
    };
    let mut status = [0u8; 1];
    let got = rustix::io::read(&parent_read, &mut status)?;
    let failure = match (got, status[0]) {
        (1, 0) => None,
        (1, 1) => Some("unshare(CLONE_NEWNET) failed"),
        (1, 2) => Some("bringing up loopback failed"),
        (1, _) => Some("setting ip_unprivileged_port_start failed"),
        _ => Some("the namespace helper died"),
    };
    if let Some(what) = failure {
        holder.release();
        return Err(io::Error::other(format!("creating a pod network: {what}")));
    }
    Ok(holder)
}
