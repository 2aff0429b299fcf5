//! User namespaces: container root is an unprivileged host uid.
//!
//! runc creates the container's user namespace from the mappings in the runtime
//! spec. The image's files, though, are owned by host root in the layer cache
//! (shared by every container), and would look like `nobody` inside. Rather than
//! copy and chown each layer per mapping, every lower layer is given to overlayfs
//! as an *idmapped mount* (Linux 5.19+): a view of the cached directory in which
//! host uid N appears as `host_base + N`, exactly what the container's mapping
//! turns back into N. The cache itself is never written.
//!
//! The idmapped mounts need a user namespace with the same mapping to point at;
//! [`Mapping::namespace`] makes one (a forked child unshares, the parent writes
//! its maps and keeps `/proc/<child>/ns/user` open) once per engine and mapping.
//!
//! Bind mounts the caller asks for are *not* idmapped: a file the container writes
//! there belongs to the mapped uid on the host (never to host root), so a
//! writable workspace must be owned by [`Mapping::host_root`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::mount::{MoveMountFlags, OpenTreeFlags};

/// Container ids `0..size` are host ids `host_base..host_base + size`, for users
/// and groups alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub host_base: u32,
    pub size: u32,
}

impl Default for Mapping {
    /// 65536 ids from host uid 100000: the usual first `/etc/subuid` range.
    fn default() -> Self {
        Mapping {
            host_base: 100_000,
            size: 65_536,
        }
    }
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

impl Mapping {
    /// The host uid (and gid) container root runs as.
    pub fn host_root(&self) -> u32 {
        self.host_base
    }

    /// `/proc/<pid>/uid_map` text.
    fn map_text(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }

    /// A user namespace with this mapping, held open by the returned fd.
    pub fn namespace(&self) -> io::Result<OwnedFd> {
        let cloexec = rustix::pipe::PipeFlags::CLOEXEC;
        let (parent_read, child_write) = rustix::pipe::pipe_with(cloexec)?;
        let (child_read, parent_write) = rustix::pipe::pipe_with(cloexec)?;
        // SAFETY: the child only makes raw syscalls (unshare, write, read, _exit),
        // which are async-signal-safe, so forking a multi-threaded process is fine.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            unsafe {
                close_fds_except([child_read.as_raw_fd(), child_write.as_raw_fd()]);
                let ok: u8 = (libc::unshare(libc::CLONE_NEWUSER) == 0).into();
                libc::write(child_write.as_raw_fd(), [ok].as_ptr().cast(), 1);
                let mut buf = [0u8; 1];
                libc::read(child_read.as_raw_fd(), buf.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        drop((child_write, child_read));
        let result = (|| {
            let mut ok = [0u8; 1];
            if rustix::io::read(&parent_read, &mut ok)? != 1 || ok[0] != 1 {
                return Err(io::Error::other(
                    "unshare(CLONE_NEWUSER) failed: user namespaces are unavailable here",
                ));
            }
            std::fs::write(format!("/proc/{pid}/uid_map"), self.map_text())?;
            std::fs::write(format!("/proc/{pid}/gid_map"), self.map_text())?;
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
            Ok(OwnedFd::from(ns))
        })();
        // Lets the child exit (it also exits at end of file, if this process
        // dies first).
        let _ = rustix::io::write(&parent_write, b"x");
        drop(parent_write);
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        result
    }
}

/// For a child forked (without exec) from this multi-threaded process: close
/// every descriptor but `keep`. The child then holds no copy of the parent's
/// pipes and sockets: its read of the parent's pipe ends when the parent dies,
/// and it cannot keep the runner guard's pipe open (which would stop the guard
/// from reaping a killed runner's containers). Only raw syscalls, so it is
/// async-signal-safe.
///
/// # Safety
/// Call only in a forked child, before it does anything else.
pub(crate) unsafe fn close_fds_except(keep: [std::os::fd::RawFd; 2]) {
    let (low, high) = (keep[0].min(keep[1]) as i64, keep[0].max(keep[1]) as i64);
    for (first, last) in [
        (0, low - 1),
        (low + 1, high - 1),
        (high + 1, i64::from(u32::MAX)),
    ] {
        if first <= last {
            // SAFETY: close_range only closes descriptors of this process.
            unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
        }
    }
}

/// Mount an idmapped, read-only view of `source` at `target` (an existing
/// empty directory), mapped through the user namespace `userns`.
pub fn idmapped_mount(source: &Path, target: &Path, userns: &OwnedFd) -> io::Result<()> {
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = CString::default();
    // SAFETY: a valid fd, an empty C string, and a `struct mount_attr` of the
    // size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "idmapping {} (needs Linux 5.19+ and a filesystem that supports idmapped mounts): {e}",
                source.display()
            ),
        ));
    }
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forked child keeps only the descriptors it is given: not the
    /// parent's other files, pipes or standard streams.
    #[test]
    fn a_forked_helper_keeps_only_its_own_descriptors() {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let (other_read, other_write) = rustix::pipe::pipe().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let others = [
            0,
            2,
            read.as_raw_fd(),
            other_read.as_raw_fd(),
            other_write.as_raw_fd(),
            file.as_raw_fd(),
        ];
        // SAFETY: the child makes raw syscalls only, then exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe {
                close_fds_except([write.as_raw_fd(), write.as_raw_fd()]);
                let closed = others
                    .iter()
                    .filter(|fd| libc::fcntl(**fd, libc::F_GETFD) == -1)
                    .count() as u8;
                let kept = (libc::fcntl(write.as_raw_fd(), libc::F_GETFD) != -1) as u8;
                libc::write(write.as_raw_fd(), [closed, kept].as_ptr().cast(), 2);
                libc::_exit(0);
            }
        }
        drop(write);
        let mut got = [0u8; 2];
        let n = rustix::io::read(&read, &mut got).unwrap();
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!((n, got), (2, [others.len() as u8, 1]));
    }
}
