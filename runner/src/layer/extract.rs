//! Unpacking one OCI layer (a tar, optionally gzip- or zstd-compressed) into a directory
//! that becomes an overlayfs lower dir.
//!
//! Layers are untrusted. Every filesystem operation is relative to a directory
//! descriptor reached from the layer root by opening one component at a time with
//! `O_NOFOLLOW`, so:
//! - `..` components are refused and leading `/` is dropped (absolute paths are
//!   taken relative to the layer root);
//! - nothing is ever written through a symlink (a parent that is a symlink is an
//!   error, whatever it points to);
//! - hard links must name an entry inside the same layer, reached the same way;
//! - device nodes are refused.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0/0 character device
//! named NAME, `.wh..wh..opq` the `trusted.overlay.opaque` attribute on its
//! directory.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path:?}: `..` would leave the layer")]
    Traversal { path: String },
    #[error("layer entry {path:?}: device nodes are not allowed in layers")]
    DeviceNode { path: String },
    #[error("layer entry {path:?}: {parent:?} is a symlink, and entries are never written through symlinks")]
    ThroughSymlink { path: String, parent: String },
    #[error("layer entry {path:?}: {parent:?} is not a directory")]
    NotADirectory { path: String, parent: String },
    #[error("layer entry {path:?}: hard link target {target:?} is not an entry of this layer")]
    HardLinkTarget { path: String, target: String },
    #[error("layer entry {path:?}: {why}")]
    Invalid { path: String, why: &'static str },
    #[error("layer entry {path:?}: unsupported entry type {kind}")]
    Unsupported { path: String, kind: String },
    #[error("layer entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer archive: {0}")]
    Archive(#[source] io::Error),
}

/// Unpack a layer into `dest` (an existing, empty directory).
pub fn extract_layer(reader: impl Read, dest: &Path) -> Result<LayerStats, LayerError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let magic = reader.fill_buf().map_err(LayerError::Archive)?;
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let zstd = zstd::stream::read::Decoder::with_buffer(reader).map_err(LayerError::Archive)?;
        unpack(tar::Archive::new(zstd), dest)
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        unpack(
            tar::Archive::new(flate2::bufread::GzDecoder::new(reader)),
            dest,
        )
    } else {
        unpack(tar::Archive::new(reader), dest)
    }
}

fn unpack<R: Read>(mut archive: tar::Archive<R>, dest: &Path) -> Result<LayerStats, LayerError> {
    let root = rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(&dest.display().to_string(), e))?;
    let privileged = rustix::process::geteuid().is_root();
    let mut stats = LayerStats::default();
    // The directory of the previous entry, opened: siblings come one after
    // another in a layer, and walking the path from the root again for each
    // was most of the time unpacking a large tree took.
    let mut last_dir: Option<(Vec<Vec<u8>>, OwnedFd)> = None;
    for entry in archive.entries().map_err(LayerError::Archive)? {
        let mut entry = entry.map_err(LayerError::Archive)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Some((parents, name)) = split(&raw, &shown)? else {
            continue;
        };
        let key: Vec<Vec<u8>> = parents.iter().map(|p| p.as_bytes().to_vec()).collect();
        // An entry at (or above) the cached directory may replace it: the
        // cached descriptor would then point at a directory no longer in the
        // tree.
        if let Some((cached, _)) = &last_dir {
            let full = key.len() + 1;
            if cached.len() >= full
                && cached[..key.len()] == key[..]
                && cached[key.len()] == name.as_bytes()
            {
                last_dir = None;
            }
        }
        if !matches!(&last_dir, Some((cached, _)) if *cached == key) {
            last_dir = Some((key, open_dir(&root, &parents, true, &shown)?));
        }
        let parent = &last_dir.as_ref().expect("just set").1;
        let header = entry.header().clone();
        let kind = header.entry_type();
        stats.entries += 1;

        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            stats.whiteouts += 1;
            whiteout(parent, dest, &parents, name, &shown)?;
            continue;
        }
        let mode = Mode::from_raw_mode(header.mode().map_err(LayerError::Archive)? & 0o7777);
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(parent, name, mode) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if is_dir(parent, name) => {}
                    Err(Errno::EXIST) => {
                        remove(parent, dest, &parents, name, &shown)?;
                        rustix::fs::mkdirat(parent, name, mode).map_err(|e| io_error(&shown, e))?;
                    }
                    Err(e) => return Err(io_error(&shown, e)),
                }
                rustix::fs::chmodat(parent, name, mode, AtFlags::empty())
                    .map_err(|e| io_error(&shown, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove(parent, dest, &parents, name, &shown)?;
                let fd = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    mode,
                )
                .map_err(|e| io_error(&shown, e))?;
                let mut file = File::from(fd);
                stats.bytes += io::copy(&mut entry, &mut file).map_err(|e| LayerError::Io {
                    path: shown.clone(),
                    source: e,
                })?;
                rustix::fs::fchmod(&file, mode).map_err(|e| io_error(&shown, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(LayerError::Invalid {
                        path: shown.clone(),
                        why: "symlink without a target",
                    })?
                    .into_owned();
                remove(parent, dest, &parents, name, &shown)?;
                // The target is only ever resolved inside the container; it is
                // stored as it is.
                rustix::fs::symlinkat(OsStr::from_bytes(&target), parent, name)
                    .map_err(|e| io_error(&shown, e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(LayerError::Invalid {
                        path: shown.clone(),
                        why: "hard link without a target",
                    })?
                    .into_owned();
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let Some((target_parents, target_name)) = split(&target, &shown)? else {
                    return Err(LayerError::HardLinkTarget {
                        path: shown,
                        target: target_shown,
                    });
                };
                let target_dir = match open_dir(&root, &target_parents, false, &shown) {
                    Ok(dir) => dir,
                    Err(LayerError::Io { .. }) => {
                        return Err(LayerError::HardLinkTarget {
                            path: shown,
                            target: target_shown,
                        })
                    }
                    Err(other) => return Err(other),
                };
                remove(parent, dest, &parents, name, &shown)?;
                // Without AT_SYMLINK_FOLLOW a symlink target is linked itself,
                // never followed.
                match rustix::fs::linkat(&target_dir, target_name, parent, name, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(Errno::NOENT) => {
                        return Err(LayerError::HardLinkTarget {
                            path: shown,
                            target: target_shown,
                        })
                    }
                    Err(e) => return Err(io_error(&shown, e)),
                }
                continue; // a hard link shares the target's owner, mode and times
            }
            tar::EntryType::Fifo => {
                remove(parent, dest, &parents, name, &shown)?;
                rustix::fs::mknodat(parent, name, FileType::Fifo, mode, 0)
                    .map_err(|e| io_error(&shown, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(LayerError::DeviceNode { path: shown })
            }
            other => {
                return Err(LayerError::Unsupported {
                    path: shown,
                    kind: format!("{other:?}"),
                })
            }
        }
        if privileged {
            let raw = header.as_old();
            let uid = numeric(&raw.uid, header.uid())?;
            let gid = numeric(&raw.gid, header.gid())?;
            let (uid, gid) = (u32::try_from(uid), u32::try_from(gid));
            let (Ok(uid), Ok(gid)) = (uid, gid) else {
                return Err(LayerError::Invalid {
                    path: shown,
                    why: "uid or gid out of range",
                });
            };
            let (uid, gid) = (
                rustix::fs::Uid::from_raw(uid),
                rustix::fs::Gid::from_raw(gid),
            );
            rustix::fs::chownat(
                parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_error(&shown, e))?;
            // chown clears a non-directory's setuid and setgid bits (even
            // when root does it): set the mode again after it.
            let chown_clears = matches!(
                kind,
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Fifo
            );
            if chown_clears && mode.intersects(Mode::SUID | Mode::SGID) {
                rustix::fs::chmodat(parent, name, mode, AtFlags::empty())
                    .map_err(|e| io_error(&shown, e))?;
            }
        }
        if let Ok(mtime) = header.mtime() {
            let at = Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            };
            let times = Timestamps {
                last_access: at,
                last_modification: at,
            };
            // Best effort: some filesystems refuse times on symlinks.
            let _ = rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW);
        }
    }
    Ok(stats)
}

/// A numeric header field: as parsed, or 0 when the field is empty (all NUL or
/// spaces), as Go's archive/tar (and so containerd and podman) reads it.
fn numeric(field: &[u8], parsed: io::Result<u64>) -> Result<u64, LayerError> {
    match parsed {
        Ok(n) => Ok(n),
        Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(LayerError::Archive(e)),
    }
}

/// Split an archive path into parent components and a final name, dropping
/// leading `/`, `.` and empty components. `None` for the root itself.
fn split<'a>(
    raw: &'a [u8],
    shown: &str,
) -> Result<Option<(Vec<&'a OsStr>, &'a OsStr)>, LayerError> {
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(LayerError::Traversal {
                    path: shown.to_owned(),
                })
            }
            p if p.contains(&0) => {
                return Err(LayerError::Invalid {
                    path: shown.to_owned(),
                    why: "NUL byte in path",
                })
            }
            p => parts.push(OsStr::from_bytes(p)),
        }
    }
    Ok(parts.pop().map(|name| (parts, name)))
}

/// Open the directory at `parents` below `root`, one component at a time, never
/// following a symlink; missing directories are created when `create` is set.
fn open_dir(
    root: &OwnedFd,
    parents: &[&OsStr],
    create: bool,
    shown: &str,
) -> Result<OwnedFd, LayerError> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut dir =
        rustix::fs::openat(root, ".", flags, Mode::empty()).map_err(|e| io_error(shown, e))?;
    for (i, part) in parents.iter().enumerate() {
        let opened = match rustix::fs::openat(&dir, *part, flags, Mode::empty()) {
            Err(Errno::NOENT) if create => {
                rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755))
                    .map_err(|e| io_error(shown, e))?;
                rustix::fs::openat(&dir, *part, flags, Mode::empty())
            }
            other => other,
        };
        dir = match opened {
            Ok(next) => next,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let parent = parents[..=i]
                    .iter()
                    .map(|p| p.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let is_link = rustix::fs::statat(&dir, *part, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
                    .unwrap_or(false);
                return Err(if is_link {
                    LayerError::ThroughSymlink {
                        path: shown.to_owned(),
                        parent,
                    }
                } else {
                    LayerError::NotADirectory {
                        path: shown.to_owned(),
                        parent,
                    }
                });
            }
            Err(e) => return Err(io_error(shown, e)),
        };
    }
    Ok(dir)
}

fn is_dir(parent: &OwnedFd, name: &OsStr) -> bool {
    rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        .unwrap_or(false)
}

/// Remove whatever is at `name` (a later entry replaces an earlier one).
fn remove(
    parent: &OwnedFd,
    dest: &Path,
    parents: &[&OsStr],
    name: &OsStr,
    shown: &str,
) -> Result<(), LayerError> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => {
            // Every component of this path was just opened with O_NOFOLLOW, so the
            // path names the same directory; remove_dir_all never follows symlinks.
            let path: PathBuf = parents
                .iter()
                .fold(dest.to_owned(), |p, c| p.join(c))
                .join(name);
            std::fs::remove_dir_all(&path).map_err(|e| LayerError::Io {
                path: shown.to_owned(),
                source: e,
            })
        }
        Err(e) => Err(io_error(shown, e)),
    }
}

fn whiteout(
    parent: &OwnedFd,
    dest: &Path,
    parents: &[&OsStr],
    name: &OsStr,
    shown: &str,
) -> Result<(), LayerError> {
    if name.as_bytes() == OPAQUE {
        return rustix::fs::fsetxattr(parent, "trusted.overlay.opaque", b"y", XattrFlags::empty())
            .map_err(|e| io_error(shown, e));
    }
    let hidden = OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]);
    match hidden.as_bytes() {
        b"" | b"." => {
            return Err(LayerError::Invalid {
                path: shown.to_owned(),
                why: "whiteout names no entry (empty or `.`)",
            })
        }
        b".." => {
            return Err(LayerError::Traversal {
                path: shown.to_owned(),
            })
        }
        _ => {}
    }
    remove(parent, dest, parents, hidden, shown)?;
    rustix::fs::mknodat(
        parent,
        hidden,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .map_err(|e| io_error(shown, e))
}

fn io_error(path: &str, e: Errno) -> LayerError {
    LayerError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}
