//! Opening a file under a directory without ever leaving it: the one way the
//! builder and the runner read a file a repository (or an image) controls.
//!
//! A checkout is untrusted: any of its paths may be a symlink to `/etc/shadow`
//! or to the runner's credentials, and the runner reads as root. So a path is
//! never handed to `open(2)` whole. It is resolved by the kernel relative to a
//! directory descriptor with `openat2(2)`:
//!
//! - [`Links::Refuse`] (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): `..` and
//!   absolute paths are refused before any system call, and a symlink anywhere
//!   on the way, the file itself included, is an error naming it. For the
//!   files that steer a build (`Containerfile`, `.dockerignore`) and for paths
//!   already resolved symlink-free (a `COPY` source's real path).
//! - [`Links::InRoot`] (`RESOLVE_IN_ROOT`): symlinks are followed as if the
//!   directory were `/`, so an absolute target or a `..` stays inside it. For
//!   an image's root filesystem (`/etc/passwd` of the image, not the host's).
//!
//! Without `openat2` (kernels before 5.6, or a seccomp filter refusing it)
//! the same rules are applied by a walk of `*at` calls, one component at a
//! time from the directory descriptor, never following a symlink with the
//! kernel (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`); the walk also names the
//! symlink when `openat2` only says "there was one". Either way the check and
//! the open are one operation on descriptors: swapping a directory for a
//! symlink at the wrong moment makes the open fail, never escape.
//!
//! The file is opened `O_NONBLOCK` and must be of the kind asked for, so a
//! fifo planted in place of a `Containerfile` is an error, not a hang.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Symlinks followed (in [`Links::InRoot`]) before the path is called a loop.
const MAX_LINKS: usize = 40;
/// `openat2` answers EAGAIN when a rename elsewhere raced with a `..`; try
/// again this many times.
const AGAIN: usize = 8;

/// What to do with a symlink on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Any symlink is an error, and so is `..` or an absolute path.
    Refuse,
    /// Followed with the directory as `/` (`..` stops at it).
    InRoot,
}

/// The kind of thing to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    File,
    Dir,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `..` or an absolute path where symlinks are refused.
    #[error("{path}: leaves the directory it is read from; refused")]
    Outside { path: String },
    /// `link` (a prefix of `path`, or `path` itself) is a symlink.
    #[error("{}", symlink_message(.path, .link))]
    Symlink { path: String, link: String },
    #[error("{path}: not a regular file")]
    NotFile { path: String },
    #[error("{path}: not a directory")]
    NotDir { path: String },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn symlink_message(path: &str, link: &str) -> String {
    if path == link {
        format!("{path}: is a symlink; refused (it must be a file in the directory itself)")
    } else {
        format!("{path}: {link} is a symlink; refused (no symlink may be on the way)")
    }
}

impl OpenError {
    /// Nothing at the path (the caller may try another name).
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpenError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Open `rel` under the directory `root` (itself trusted: opened as given).
pub fn open(root: &Path, rel: &str, links: Links, want: Want) -> Result<File, OpenError> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| OpenError::Io {
        path: root.display().to_string(),
        source: e.into(),
    })?;
    open_at(dir.as_fd(), rel, links, want)
}

/// The regular file `rel` under `root`, no symlink on the way.
pub fn open_file(root: &Path, rel: &str) -> Result<File, OpenError> {
    open(root, rel, Links::Refuse, Want::File)
}

/// The regular file at the absolute `path`, with no symlink in any of its
/// components (for paths made canonical and resolved by hand before).
pub fn open_canonical(path: &Path) -> Result<File, OpenError> {
    let rel = path.strip_prefix("/").map_err(|_| OpenError::Outside {
        path: path.display().to_string(),
    })?;
    let rel = rel.to_str().ok_or_else(|| OpenError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other("the path is not UTF-8"),
    })?;
    open(Path::new("/"), rel, Links::Refuse, Want::File)
}

/// The text of the regular file `rel` under `root` (see [`open`]), refused
/// when longer than `limit` bytes or not UTF-8.
pub fn read_to_string(
    root: &Path,
    rel: &str,
    links: Links,
    limit: u64,
) -> Result<String, OpenError> {
    let file = open(root, rel, links, Want::File)?;
    let io = |source| OpenError::Io {
        path: rel.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(OpenError::TooLarge {
            path: rel.to_owned(),
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// [`open`] from a directory descriptor.
pub fn open_at(
    root: BorrowedFd<'_>,
    rel: &str,
    links: Links,
    want: Want,
) -> Result<File, OpenError> {
    let parts = components(rel, links)?;
    let flags = oflags();
    let resolve = match links {
        Links::Refuse => {
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
        }
        Links::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    };
    let joined = if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    };
    let mut tries = 0;
    let opened = loop {
        match rustix::fs::openat2(root, joined.as_str(), flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < AGAIN => tries += 1,
            other => break other,
        }
    };
    let fd = match opened {
        Ok(fd) => fd,
        // No openat2 here: the walk does the same.
        // No openat2 here (an old kernel, or a seccomp filter): the walk
        // does the same.
        Err(Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::TOOBIG) => {
            walk(root, rel, parts, links)?
        }
        Err(Errno::LOOP) if links == Links::Refuse => {
            // The walk names the symlink; if it finds none now, it raced.
            return match walk(root, rel, parts, links) {
                Err(e) => Err(e),
                Ok(_) => Err(OpenError::Symlink {
                    path: rel.to_owned(),
                    link: rel.to_owned(),
                }),
            };
        }
        Err(Errno::XDEV) => {
            return Err(OpenError::Outside {
                path: rel.to_owned(),
            })
        }
        Err(e) => return Err(errno(rel, e)),
    };
    checked(fd, rel, want)
}

/// The same for files and directories: what was opened is checked after
/// (`checked`), so both ways say "not a directory" alike.
fn oflags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

fn errno(path: &str, e: Errno) -> OpenError {
    OpenError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// `rel`'s components, `.` and empty ones dropped; `..` and a leading `/`
/// refused unless symlinks are followed in the root.
fn components(rel: &str, links: Links) -> Result<Vec<String>, OpenError> {
    if links == Links::Refuse && rel.starts_with('/') {
        return Err(OpenError::Outside {
            path: rel.to_owned(),
        });
    }
    let mut parts = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." if links == Links::Refuse => {
                return Err(OpenError::Outside {
                    path: rel.to_owned(),
                })
            }
            part => parts.push(part.to_owned()),
        }
    }
    Ok(parts)
}

/// The opened descriptor, if it is what was wanted.
fn checked(fd: OwnedFd, rel: &str, want: Want) -> Result<File, OpenError> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| errno(rel, e))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    match (want, kind) {
        (Want::File, FileType::RegularFile) | (Want::Dir, FileType::Directory) => {
            Ok(File::from(fd))
        }
        (Want::File, _) => Err(OpenError::NotFile {
            path: rel.to_owned(),
        }),
        (Want::Dir, _) => Err(OpenError::NotDir {
            path: rel.to_owned(),
        }),
    }
}

/// The same resolution as `openat2` would do, one component at a time from
/// `root`: each directory is opened `O_PATH | O_NOFOLLOW | O_DIRECTORY` from
/// the previous one, the last component `O_NOFOLLOW`, and a symlink is
/// either refused or (in the root) read with `readlinkat` and its target's
/// components resolved in turn, an absolute one from `root` again.
fn walk(
    root: BorrowedFd<'_>,
    rel: &str,
    parts: Vec<String>,
    links: Links,
) -> Result<OwnedFd, OpenError> {
    let io = |e: Errno| errno(rel, e);
    let reopen = |dir: BorrowedFd<'_>| {
        rustix::fs::openat(
            dir,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)
    };
    // The directories walked through: `..` goes back one, never above root.
    let mut stack: Vec<OwnedFd> = vec![reopen(root)?];
    // The path as walked so far, for naming a refused symlink.
    let mut walked: Vec<String> = Vec::new();
    let mut todo: VecDeque<String> = parts.into();
    let mut followed = 0;
    while let Some(part) = todo.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                if links == Links::Refuse {
                    return Err(OpenError::Outside {
                        path: rel.to_owned(),
                    });
                }
                if stack.len() > 1 {
                    stack.pop();
                    walked.pop();
                }
                continue;
            }
            _ => {}
        }
        let last = todo.iter().all(|p| p.is_empty() || p == ".");
        let dir = stack.last().expect("the root stays").as_fd();
        let stat = rustix::fs::statat(dir, part.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
        walked.push(part.clone());
        if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
            if links == Links::Refuse {
                return Err(OpenError::Symlink {
                    path: rel.to_owned(),
                    link: walked.join("/"),
                });
            }
            followed += 1;
            if followed > MAX_LINKS {
                return Err(io(Errno::LOOP));
            }
            let target = rustix::fs::readlinkat(dir, part.as_str(), Vec::new()).map_err(io)?;
            let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
            walked.pop();
            if target.starts_with('/') {
                stack.truncate(1);
                walked.clear();
            }
            for t in target.split('/').rev() {
                todo.push_front(t.to_owned());
            }
            continue;
        }
        if last {
            let fd = rustix::fs::openat(
                dir,
                part.as_str(),
                oflags() | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| match e {
                // Became a symlink since the stat: refused all the same.
                Errno::LOOP => OpenError::Symlink {
                    path: rel.to_owned(),
                    link: walked.join("/"),
                },
                e => io(e),
            })?;
            return Ok(fd);
        }
        let next = rustix::fs::openat(
            dir,
            part.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        stack.push(next);
    }
    // Nothing named below the last directory: that directory itself.
    let dir = stack.last().expect("the root stays").as_fd();
    rustix::fs::openat(dir, ".", oflags(), Mode::empty()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Open `rel` both ways, `openat2` and the walk, which must agree.
    fn both(root: &Path, rel: &str, links: Links, want: Want) -> Result<String, String> {
        let dir = File::open(root).unwrap();
        let by_kernel = open_at(dir.as_fd(), rel, links, want);
        let by_walk = components(rel, links)
            .and_then(|parts| walk(dir.as_fd(), rel, parts, links))
            .and_then(|fd| checked(fd, rel, want));
        let show = |r: Result<File, OpenError>| match r {
            Ok(mut f) if want == Want::File => {
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                Ok(s)
            }
            Ok(_) => Ok("<dir>".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let (a, b) = (show(by_kernel), show(by_walk));
        assert_eq!(a, b, "openat2 and the walk disagree on {rel:?}");
        a
    }

    /// `top/root` holding files and symlinks of every sort, and
    /// `top/outside` beside it.
    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("file"), "inside").unwrap();
        std::fs::write(root.join("sub/deeper/f"), "deep").unwrap();
        std::fs::write(top.path().join("outside"), "SECRET").unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "image passwd").unwrap();
        symlink("../outside", root.join("up")).unwrap();
        symlink(top.path().join("outside"), root.join("absolute")).unwrap();
        symlink("/etc/passwd", root.join("passwd")).unwrap();
        symlink("file", root.join("alias")).unwrap();
        symlink("sub", root.join("subdir")).unwrap();
        symlink("..", root.join("sub/parent")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        (top, root)
    }

    #[test]
    fn a_plain_file_and_directory_open() {
        let (_top, root) = tree();
        assert_eq!(
            both(&root, "file", Links::Refuse, Want::File),
            Ok("inside".into())
        );
        assert_eq!(
            both(&root, "./sub//deeper/f", Links::Refuse, Want::File),
            Ok("deep".into())
        );
        assert_eq!(
            both(&root, "sub", Links::Refuse, Want::Dir),
            Ok("<dir>".into())
        );
        assert_eq!(
            both(&root, "", Links::Refuse, Want::Dir),
            Ok("<dir>".into())
        );
        let err = both(&root, "missing", Links::Refuse, Want::File).unwrap_err();
        assert!(err.starts_with("missing: "), "{err}");
        assert!(open_file(&root, "missing").unwrap_err().is_not_found());
        assert_eq!(
            both(&root, "sub", Links::Refuse, Want::File),
            Err("sub: not a regular file".into())
        );
        assert_eq!(
            both(&root, "file", Links::Refuse, Want::Dir),
            Err("file: not a directory".into())
        );
    }

    #[test]
    fn symlinks_are_refused_wherever_they_are() {
        let (_top, root) = tree();
        for (rel, link) in [
            ("up", "up"),
            ("absolute", "absolute"),
            ("passwd", "passwd"),
            // Even one that stays inside.
            ("alias", "alias"),
            ("subdir/deeper/f", "subdir"),
            ("sub/parent/file", "sub/parent"),
            ("loop", "loop"),
        ] {
            let err = both(&root, rel, Links::Refuse, Want::File).unwrap_err();
            assert_eq!(err, symlink_message(rel, link));
            assert!(!err.contains("SECRET"), "{err}");
        }
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused() {
        let (_top, root) = tree();
        for rel in [
            "../outside",
            "sub/../../outside",
            "sub/../file",
            "/etc/passwd",
        ] {
            assert_eq!(
                both(&root, rel, Links::Refuse, Want::File),
                Err(format!(
                    "{rel}: leaves the directory it is read from; refused"
                )),
            );
        }
        let err = open_canonical(Path::new("relative/path")).unwrap_err();
        assert!(matches!(err, OpenError::Outside { .. }), "{err}");
    }

    #[test]
    fn canonical_paths_open_only_without_symlinks() {
        let (top, root) = tree();
        let root = root.canonicalize().unwrap();
        let mut s = String::new();
        open_canonical(&root.join("sub/deeper/f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "deep");
        let err = open_canonical(&root.join("subdir/deeper/f")).unwrap_err();
        assert!(matches!(err, OpenError::Symlink { .. }), "{err}");
        drop(top);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (_top, root) = tree();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_eq!(
            both(&root, "fifo", Links::Refuse, Want::File),
            Err("fifo: not a regular file".into())
        );
    }

    #[test]
    fn in_root_symlinks_stay_in_the_root() {
        let (_top, root) = tree();
        // `/etc/passwd` of the root, not of the host.
        assert_eq!(
            both(&root, "passwd", Links::InRoot, Want::File),
            Ok("image passwd".into())
        );
        assert_eq!(
            both(&root, "/etc/passwd", Links::InRoot, Want::File),
            Ok("image passwd".into())
        );
        assert_eq!(
            both(&root, "../../../etc/passwd", Links::InRoot, Want::File),
            Ok("image passwd".into())
        );
        // `../outside` from the root is `/outside` in it: not there.
        assert!(both(&root, "up", Links::InRoot, Want::File).is_err());
        assert!(both(&root, "absolute", Links::InRoot, Want::File).is_err());
        assert_eq!(
            both(&root, "alias", Links::InRoot, Want::File),
            Ok("inside".into())
        );
        assert_eq!(
            both(
                &root,
                "subdir/parent/sub/deeper/f",
                Links::InRoot,
                Want::File
            ),
            Ok("deep".into())
        );
        let err = both(&root, "loop", Links::InRoot, Want::File).unwrap_err();
        assert!(err.starts_with("loop: "), "{err}");
    }

    #[test]
    fn read_to_string_has_a_limit() {
        let (_top, root) = tree();
        assert_eq!(
            read_to_string(&root, "file", Links::Refuse, 6).unwrap(),
            "inside"
        );
        let err = read_to_string(&root, "file", Links::Refuse, 5).unwrap_err();
        assert_eq!(err.to_string(), "file: larger than 5 bytes");
        let err = read_to_string(&root, "up", Links::Refuse, 100).unwrap_err();
        assert!(matches!(err, OpenError::Symlink { .. }), "{err}");
    }
}
