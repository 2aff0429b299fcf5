//! Packing a job's artifacts: the paths its spec names, as one tar.
//!
//! The workspace is written by the job's steps, so any of its paths may be a
//! symlink to a host directory (the runner's credentials, `/etc`), and the
//! runner reads as root. So no path is handed to the kernel whole: each
//! artifact's parent is opened with [`beneath`] (no symlink, no `..` on the
//! way), and the artifact itself is walked by descriptor, one `*at` call per
//! entry with `O_NOFOLLOW`, directories listed from their own descriptor. A
//! symlink anywhere in it (the artifact itself included) is stored as a
//! link, never followed; fifos, sockets and devices are left out.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use slipway_builder::beneath::{self, Links, Want};

/// Directories nested deeper than this in one artifact are refused (each
/// level holds a descriptor while its entries are packed).
const MAX_DEPTH: usize = 256;

/// Why an artifact path is not one the runner packs, if it is not: it must
/// be relative, with no `..`, `.` or empty component and no trailing `/`
/// (which would make the kernel follow a symlinked directory).
pub fn invalid(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.starts_with('/') {
        Some("is absolute")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else if path.ends_with('/') {
        Some("ends with '/'")
    } else if path.split('/').any(|c| c == "..") {
        Some("has a '..' component")
    } else if path.split('/').any(|c| c == ".") {
        Some("has a '.' component")
    } else if path.split('/').any(str::is_empty) {
        Some("has an empty component ('//')")
    } else {
        None
    }
}

/// A tar of `paths` (relative to `workspace`).
pub fn pack(workspace: &Path, paths: &[String]) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    for path in paths {
        if let Some(why) = invalid(path) {
            return Err(format!("artifact {path:?} {why}; refused"));
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = beneath::open(workspace, parent, Links::Refuse, Want::Dir).map_err(|e| {
            format!(
                "artifact {path:?} does not exist in the workspace (or leaves it through a symlink): {e}"
            )
        })?;
        add(&mut tar, dir.as_fd(), name, path, 0).map_err(|e| match e {
            Walk::Missing => format!("artifact {path:?} does not exist in the workspace"),
            Walk::Other(e) => format!("packing artifact {path:?}: {e}"),
        })?;
    }
    tar.into_inner()
        .map_err(|e| format!("packing artifacts: {e}"))
}

enum Walk {
    /// The artifact itself is not there.
    Missing,
    Other(String),
}

impl From<String> for Walk {
    fn from(e: String) -> Self {
        Walk::Other(e)
    }
}

/// `name` in `dir`, stored as `archive` (recursively for a directory).
fn add(
    tar: &mut tar::Builder<Vec<u8>>,
    dir: BorrowedFd<'_>,
    name: &str,
    archive: &str,
    depth: usize,
) -> Result<(), Walk> {
    let io = |what: &str, e: rustix::io::Errno| format!("{archive}: {what}: {e}");
    let handle = match rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) if depth == 0 => return Err(Walk::Missing),
        Err(e) => return Err(io("opening", e).into()),
    };
    let meta = handle.metadata().map_err(|e| format!("{archive}: {e}"))?;
    let kind = FileType::from_raw_mode(
        rustix::fs::fstat(&handle)
            .map_err(|e| io("stat", e))?
            .st_mode,
    );
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    let append = |tar: &mut tar::Builder<Vec<u8>>,
                  header: &mut tar::Header,
                  data: &mut dyn std::io::Read| {
        tar.append_data(header, archive, data)
            .map_err(|e| format!("{archive}: {e}"))
    };
    match kind {
        FileType::Symlink => {
            let target =
                rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| io("readlink", e))?;
            header.set_size(0);
            tar.append_link(
                &mut header,
                archive,
                Path::new(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                        target.as_bytes(),
                    ),
                ),
            )
            .map_err(|e| format!("{archive}: {e}"))?;
        }
        FileType::RegularFile => {
            let file = File::from(
                open_kind(dir, name, OFlags::RDONLY, FileType::RegularFile)
                    .map_err(|e| io("opening", e))?,
            );
            let meta = file.metadata().map_err(|e| format!("{archive}: {e}"))?;
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            append(
                tar,
                &mut header,
                &mut std::io::Read::take(&file, meta.len()),
            )?;
        }
        FileType::Directory => {
            if depth >= MAX_DEPTH {
                return Err(
                    format!("{archive}: directories nested deeper than {MAX_DEPTH}").into(),
                );
            }
            let fd = open_kind(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY,
                FileType::Directory,
            )
            .map_err(|e| io("opening", e))?;
            header.set_size(0);
            append(tar, &mut header, &mut std::io::empty())?;
            let mut names = Vec::new();
            for entry in rustix::fs::Dir::read_from(&fd).map_err(|e| io("listing", e))? {
                let entry = entry.map_err(|e| io("listing", e))?;
                let entry = entry
                    .file_name()
                    .to_str()
                    .map_err(|_| format!("{archive}: an entry's name is not UTF-8"))?;
                if entry != "." && entry != ".." {
                    names.push(entry.to_owned());
                }
            }
            names.sort();
            for entry in names {
                add(
                    tar,
                    fd.as_fd(),
                    &entry,
                    &format!("{archive}/{entry}"),
                    depth + 1,
                )?;
            }
        }
        // Fifos, sockets and devices are not build outputs.
        _ => {}
    }
    Ok(())
}

/// `name` in `dir` opened without following a symlink, if it is still of
/// `kind` (it may have been swapped since it was looked at).
fn open_kind(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: OFlags,
    kind: FileType,
) -> Result<OwnedFd, rustix::io::Errno> {
    let fd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != kind {
        return Err(rustix::io::Errno::STALE);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn entries(tar: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for entry in tar::Archive::new(tar).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.insert(name, (kind, bytes));
        }
        out
    }

    /// A workspace with `dist/` (a file, a subdirectory, a link out) and
    /// `creds -> <host dir with a canary>`.
    fn workspace() -> (tempfile::TempDir, std::path::PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let host = top.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("runner-token"), "CANARY-TOKEN").unwrap();
        let ws = top.path().join("ws");
        std::fs::create_dir_all(ws.join("dist/sub")).unwrap();
        std::fs::write(ws.join("dist/sub/app.txt"), "built").unwrap();
        symlink(&host, ws.join("dist/host-link")).unwrap();
        symlink(&host, ws.join("creds")).unwrap();
        (top, ws)
    }

    #[test]
    fn directories_are_packed_and_links_stay_links() {
        let (_top, ws) = workspace();
        let tar = pack(&ws, &["dist".into(), "creds".into()]).unwrap();
        let got = entries(&tar);
        assert_eq!(got["dist/sub/app.txt"].1, b"built");
        assert_eq!(got["dist/host-link"].0, tar::EntryType::Symlink);
        assert_eq!(got["creds"].0, tar::EntryType::Symlink);
        assert!(!got.keys().any(|k| k.contains("runner-token")), "{got:?}");
        assert!(!tar.windows(12).any(|w| w == b"CANARY-TOKEN"));
    }

    /// `creds/` and `creds/.` made the kernel follow the link (the old
    /// check looked at the parent only): the host directory was packed.
    #[test]
    fn a_symlinked_directory_is_not_followed_through_a_trailing_slash() {
        let (_top, ws) = workspace();
        for path in [
            "creds/",
            "creds/.",
            "creds//runner-token",
            "creds/runner-token",
            "dist/host-link/runner-token",
        ] {
            let err = pack(&ws, &[path.to_owned()]).unwrap_err();
            assert!(err.contains(path), "{err}");
            assert!(!err.contains("CANARY"), "{err}");
        }
        let err = pack(&ws, &["creds/runner-token".into()]).unwrap_err();
        assert!(err.contains("creds: is a symlink; refused"), "{err}");
        let err = pack(&ws, &["missing".into()]).unwrap_err();
        assert_eq!(err, "artifact \"missing\" does not exist in the workspace");
    }

    #[test]
    fn artifact_paths_are_plain_relative_paths() {
        assert_eq!(invalid("dist/app"), None);
        assert_eq!(invalid("etc/"), Some("ends with '/'"));
        assert_eq!(invalid("etc/."), Some("has a '.' component"));
        assert_eq!(invalid("./etc"), Some("has a '.' component"));
        assert_eq!(invalid("a//b"), Some("has an empty component ('//')"));
        assert_eq!(invalid("a/../b"), Some("has a '..' component"));
        assert_eq!(invalid("/etc"), Some("is absolute"));
        assert_eq!(invalid(""), Some("is empty"));
    }
}
