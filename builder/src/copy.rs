//! `COPY` and `ADD` as layers written directly, without a container: the
//! files go from the context (or another stage's root filesystem, or a local
//! tar archive) into a sorted tar, with the destination's parent directories
//! carrying the metadata they already have in the image.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::beneath;
use crate::layer::{Layer, LayerError, LayerOptions, LayerWriter, Meta};
use crate::quote::short;

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir,
    /// A canonical path without symlinks (a context file as the resolver
    /// found it, or a file of another stage's view): opened with
    /// [`beneath::open_canonical`], so a symlink swapped in is refused.
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(PathBuf),
    /// A hard link to another entry of the same layer (its archive path).
    Hardlink(String),
}

/// One entry of a `COPY` layer; `path` is absolute in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: String,
    pub meta: Meta,
    pub content: Content,
}

/// Clean an absolute image path: no `.`, `..` resolved lexically (never above
/// `/`), no doubled or trailing `/`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Symlinks followed by [`resolve_in`] before the path is called a loop.
const MAX_LINKS: usize = 40;

/// Follow `path` (absolute in the image) through symlinks inside `root`,
/// never leaving it; the result is absolute in the image, with no symlink
/// left in it. Parts that do not exist are kept as written. More than 40
/// links is an error (a loop), never a path still holding a symlink.
pub fn resolve_in(root: &Path, path: &str) -> Result<String, String> {
    let mut todo: Vec<String> = clean(path)
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        if c == "." {
            continue;
        }
        done.push(c);
        let here = root.join(done.join("/"));
        let Ok(meta) = std::fs::symlink_metadata(&here) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(format!(
                "{}: too many levels of symbolic links",
                short(path)
            ));
        }
        let Ok(target) = std::fs::read_link(&here) else {
            continue;
        };
        done.pop();
        let target = target.to_string_lossy().into_owned();
        if target.starts_with('/') {
            done.clear();
        }
        for t in target.split('/').filter(|t| !t.is_empty()).rev() {
            todo.push(t.to_owned());
        }
    }
    Ok(format!("/{}", done.join("/")))
}

/// The image's own `file` (e.g. `etc/passwd`) under its root filesystem
/// `root`: symlinks in it are resolved inside `root`, never on the host.
pub fn image_file(root: &Path, file: &str) -> Option<String> {
    const LIMIT: u64 = 16 << 20;
    beneath::read_to_string(root, file, beneath::Links::InRoot, LIMIT).ok()
}

/// `--chown=user[:group]`: numbers, or names looked up in the image's
/// `/etc/passwd` and `/etc/group` (under `root`, if there is one). A user
/// alone sets the group to the same number, as Docker does.
pub fn owner(root: Option<&Path>, spec: &str) -> Result<(u64, u64), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Result<u64, String> {
        if let Ok(n) = name.parse::<u64>() {
            return Ok(n);
        }
        let text = root.and_then(|r| image_file(r, file)).unwrap_or_default();
        text.lines()
            .find_map(|line| {
                let mut f = line.split(':');
                (f.next() == Some(name)).then(|| f.nth(1)?.parse::<u64>().ok())?
            })
            .ok_or_else(|| {
                format!(
                    "--chown={}: no {} in the image's /{file}",
                    short(spec),
                    short(name)
                )
            })
    };
    let uid = lookup("etc/passwd", user)?;
    let gid = match group {
        Some(g) => lookup("etc/group", g)?,
        None => uid,
    };
    Ok((uid, gid))
}

/// Metadata of `path` (absolute in the image) if it is a directory there,
/// with no symlink on the way (the root's own, never a host directory's).
pub fn existing_dir(root: Option<&Path>, path: &str) -> Option<Meta> {
    let rel = path.trim_start_matches('/');
    let dir = beneath::open(root?, rel, beneath::Links::Refuse, beneath::Want::Dir).ok()?;
    let meta = dir.metadata().ok()?;
    Some(Meta {
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        mode: meta.mode() & 0o7777,
    })
}

/// `items` sorted by path, with an entry for every parent directory they
/// need: the image's own metadata where it has the directory, root 0755
/// where it does not. Later items win over earlier ones at the same path:
/// one that is not a directory drops everything an earlier one put below
/// that path, and one below an earlier non-directory (a symlink, a file)
/// makes that path a directory again. So no entry of a layer is ever below a
/// symlink of the same layer, and nothing is written through one.
pub fn plan(items: Vec<Item>, root: Option<&Path>) -> Vec<Item> {
    let mut by_path: std::collections::BTreeMap<String, Item> = std::collections::BTreeMap::new();
    for item in items {
        let mut parent = item.path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            if p.is_empty() {
                break;
            }
            if by_path.get(p).map(|i| &i.content) != Some(&Content::Dir) {
                by_path.insert(
                    p.to_owned(),
                    Item {
                        path: p.to_owned(),
                        meta: existing_dir(root, p).unwrap_or(Meta {
                            uid: 0,
                            gid: 0,
                            mode: 0o755,
                        }),
                        content: Content::Dir,
                    },
                );
            }
            parent = p;
        }
        if item.content != Content::Dir {
            let below = format!("{}/", item.path.trim_end_matches('/'));
            let dropped: Vec<String> = by_path
                .range(below.clone()..)
                .take_while(|(k, _)| k.starts_with(&below))
                .map(|(k, _)| k.clone())
                .collect();
            for k in dropped {
                by_path.remove(&k);
            }
        }
        by_path.insert(item.path.clone(), item);
    }
    by_path.into_values().collect()
}

/// Write planned items (see [`plan`]) as a layer.
pub fn write_layer(planned: &[Item], blob: &Path, opts: LayerOptions) -> Result<Layer, LayerError> {
    let mut writer = LayerWriter::create(blob, opts)?;
    for item in planned {
        let name = item.path.trim_start_matches('/');
        match &item.content {
            Content::Dir => writer.dir(name, item.meta)?,
            Content::File(src) => {
                let file = beneath::open_canonical(src).map_err(|e| LayerError::Io {
                    path: src.clone(),
                    source: std::io::Error::other(e),
                })?;
                let size = file
                    .metadata()
                    .map_err(|source| LayerError::Io {
                        path: src.clone(),
                        source,
                    })?
                    .len();
                writer.file(name, item.meta, size, file)?
            }
            Content::Bytes(bytes) => {
                writer.file(name, item.meta, bytes.len() as u64, &bytes[..])?
            }
            Content::Symlink(target) => writer.symlink(name, item.meta, target)?,
            Content::Hardlink(target) => {
                writer.hardlink(name, item.meta, target.trim_start_matches('/'))?
            }
        }
    }
    writer.finish()
}

/// What an unpacked entry is, for deciding whether an earlier unpacking of
/// the same instruction has it already: kind, content hash or link target,
/// mode and owner.
fn signature(item: &Item, hashes: &HashMap<PathBuf, [u8; 32]>) -> Option<String> {
    let m = item.meta;
    let meta = format!("{:o}:{}:{}", m.mode, m.uid, m.gid);
    match &item.content {
        Content::File(src) => hashes
            .get(src)
            .map(|h| format!("f:{}:{meta}", hex::encode(h))),
        Content::Symlink(t) => Some(format!("l:{}:{meta}", t.display())),
        Content::Dir => Some(format!("d:{meta}")),
        Content::Bytes(_) | Content::Hardlink(_) => None,
    }
}

/// What [`unpack`] made: every entry's signature by path.
pub type Unpacked = std::collections::BTreeMap<String, String>;

/// Unpack planned items into the empty directory `dir` exactly as
/// extracting their layer would (owners, permission bits, `mtime`), without
/// the layer: files come from the context, and files an earlier unpacking
/// (`previous`, with what it made) has identically are hard-linked from it,
/// so a rebuild after editing one file writes one file.
pub fn unpack(
    dir: &Path,
    planned: &[Item],
    hashes: &HashMap<PathBuf, [u8; 32]>,
    previous: Option<(&Path, &Unpacked)>,
    mtime: u64,
) -> std::io::Result<Unpacked> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let open_root = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let root = open_root(dir)?;
    let before = previous.map(|(p, _)| open_root(p)).transpose()?;
    let mut made = Unpacked::new();
    let stamp = rustix::fs::Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: stamp,
        last_modification: stamp,
    };
    let mut dirs = Vec::new();
    for item in planned {
        let rel = item.path.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let fail = |e: rustix::io::Errno| std::io::Error::new(e.kind(), format!("{rel}: {e}"));
        // The parent, reached with no symlink on the way: an entry of this
        // layer that is a symlink is never written through.
        let (parent, name) = parent_of(root.as_fd(), rel)?;
        let parent = parent.as_fd();
        let sig = signature(item, hashes);
        let reusable = match (&sig, previous) {
            (Some(s), Some((_, made_before))) if !s.starts_with("d:") => {
                made_before.get(&item.path) == Some(s)
            }
            _ => false,
        };
        let owner = (
            Some(rustix::fs::Uid::from_raw(item.meta.uid as u32)),
            Some(rustix::fs::Gid::from_raw(item.meta.gid as u32)),
        );
        let mode = Mode::from_raw_mode(item.meta.mode & 0o7777);
        // A new regular file: created here (never an existing one, never
        // through a symlink), owner first (a chown clears set-id bits), then
        // mode and time.
        let create = |data: &mut dyn std::io::Read| -> std::io::Result<()> {
            let fd = rustix::fs::openat(
                parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(fail)?;
            let mut file = std::fs::File::from(fd);
            std::io::copy(data, &mut file)?;
            rustix::fs::fchown(&file, owner.0, owner.1).map_err(fail)?;
            rustix::fs::fchmod(&file, mode).map_err(fail)?;
            rustix::fs::futimens(&file, &times).map_err(fail)?;
            Ok(())
        };
        if reusable {
            let from = before.as_ref().expect("checked");
            let (from_parent, from_name) = parent_of(from.as_fd(), rel)?;
            rustix::fs::linkat(from_parent, from_name, parent, name, AtFlags::empty())
                .map_err(fail)?;
        } else {
            match &item.content {
                Content::Dir => {
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(fail)?;
                    let fd = rustix::fs::openat(
                        parent,
                        name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(fail)?;
                    rustix::fs::fchown(&fd, owner.0, owner.1).map_err(fail)?;
                    rustix::fs::fchmod(&fd, mode).map_err(fail)?;
                    dirs.push(fd);
                }
                Content::File(src) => {
                    let mut from = beneath::open_canonical(src).map_err(std::io::Error::other)?;
                    create(&mut from)?;
                }
                Content::Bytes(bytes) => create(&mut &bytes[..])?,
                Content::Symlink(target) => {
                    rustix::fs::symlinkat(target.as_path(), parent, name).map_err(fail)?;
                    rustix::fs::chownat(parent, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(fail)?;
                    let _ = rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW);
                }
                Content::Hardlink(target) => {
                    // Another entry of this layer, reached the same way: a
                    // symlink on the way to it is an error, so no host file
                    // is linked in. Without AT_SYMLINK_FOLLOW, a symlink
                    // entry is linked as itself.
                    let (target_parent, target_name) =
                        parent_of(root.as_fd(), target.trim_start_matches('/'))?;
                    rustix::fs::linkat(target_parent, target_name, parent, name, AtFlags::empty())
                        .map_err(fail)?;
                    continue; // shares its target's owner, mode and times
                }
            }
        }
        if let Some(s) = sig {
            made.insert(item.path.clone(), s);
        }
    }
    // Directory times last: creating their entries changed them.
    for d in dirs.iter().rev() {
        let _ = rustix::fs::futimens(d, &times);
    }
    Ok(made)
}

/// The directory holding `rel` under `root` (opened with no symlink and no
/// `..` on the way) and `rel`'s last component.
fn parent_of<'a>(
    root: std::os::fd::BorrowedFd<'_>,
    rel: &'a str,
) -> std::io::Result<(std::fs::File, &'a str)> {
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    if name.is_empty() || name == "." || name == ".." {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a name to unpack", short(rel)),
        ));
    }
    let dir = beneath::open_at(root, parent, beneath::Links::Refuse, beneath::Want::Dir)
        .map_err(|e| std::io::Error::other(format!("unpacking {}: {e}", short(rel))))?;
    Ok((dir, name))
}

/// Is this file a tar archive (plain, gzip or zstd) that `ADD` unpacks?
pub fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut file) = beneath::open_canonical(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let n = file.read(&mut head).unwrap_or(0);
    if head[..n].starts_with(&[0x1f, 0x8b]) || head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return true;
    }
    n >= 262 && &head[257..262] == b"ustar"
}

/// The entries of a local tar archive as items under `dest`. Paths that would
/// leave `dest` (`..`), device nodes and links out of the archive are refused.
pub fn archive_items(path: &Path, dest: &str) -> Result<Vec<Item>, String> {
    use std::io::{BufRead, Read};
    let shown = path.display();
    let file = beneath::open_canonical(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut reader = std::io::BufReader::new(file);
    let magic = reader
        .fill_buf()
        .map_err(|e| format!("{shown}: {e}"))?
        .to_vec();
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::GzDecoder::new(reader))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| format!("{shown}: {e}"))?,
        )
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    let mut items = Vec::new();
    let inside = |name: &str| -> Result<String, String> {
        let mut parts = Vec::new();
        for c in name.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    return Err(format!(
                        "{shown}: entry {} points outside the directory it is unpacked into",
                        short(name)
                    ))
                }
                c => parts.push(c),
            }
        }
        Ok(clean(&format!("{dest}/{}", parts.join("/"))))
    };
    let entries = archive
        .entries()
        .map_err(|e| format!("{shown}: not a readable tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{shown}: not a readable tar archive: {e}"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let target = inside(&name)?;
        let h = entry.header();
        let meta = Meta {
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
        };
        let content = match h.entry_type() {
            tar::EntryType::Directory => Content::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("{shown}: {}: {e}", short(&name)))?;
                Content::Bytes(bytes)
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("{shown}: {}: a symlink without a target", short(&name)))?;
                Content::Symlink(link.into_owned())
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| format!("{shown}: {}: a hard link without a target", short(&name)))?;
                Content::Hardlink(inside(&String::from_utf8_lossy(&link))?)
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(format!(
                    "{shown}: {}: {other:?} entries cannot be added (only files, directories and links)",
                    short(&name)
                ))
            }
        };
        if target == clean(dest) && content == Content::Dir {
            continue;
        }
        items.push(Item {
            path: target,
            meta,
            content,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_through_symlinks_without_leaving_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/../../../etc", root.join("up")).unwrap();
        assert_eq!(resolve_in(root, "/bin/tool").unwrap(), "/usr/bin/tool");
        assert_eq!(resolve_in(root, "/up/passwd").unwrap(), "/etc/passwd");
        assert_eq!(resolve_in(root, "/a/../../b").unwrap(), "/b");
        assert_eq!(clean("/a/./b//c/../"), "/a/b");
    }

    /// A loop (or a chain longer than 40 links) was left unresolved, so the
    /// kernel followed the remaining symlink later, outside the root.
    #[test]
    fn too_many_links_are_an_error_not_a_path_with_a_symlink_left() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink("b", root.join("a")).unwrap();
        std::os::unix::fs::symlink("a", root.join("b")).unwrap();
        let err = resolve_in(root, "/a/x").unwrap_err();
        assert_eq!(err, "/a/x: too many levels of symbolic links");
        // 41 links, the last out to the host: no path is handed back.
        for i in 0..41 {
            std::os::unix::fs::symlink(format!("l{}", i + 1), root.join(format!("l{i}"))).unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("l41")).unwrap();
        assert!(resolve_in(root, "/l0/passwd").is_err());
        // 40 are fine.
        assert_eq!(resolve_in(root, "/l2/passwd").unwrap(), "/etc/passwd");
    }

    #[test]
    fn owners_are_numbers_or_names_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(owner(Some(dir.path()), "10").unwrap(), (10, 10));
        assert_eq!(owner(Some(dir.path()), "app:staff").unwrap(), (1000, 50));
        assert_eq!(owner(None, "7:8").unwrap(), (7, 8));
        let err = owner(Some(dir.path()), "bob").unwrap_err();
        assert!(err.contains("no bob in the image's /etc/passwd"), "{err}");
    }

    /// An image whose `/etc/passwd` is a symlink to `/etc/passwd`, or out
    /// through `..`, names the image's file, never the host's.
    #[test]
    fn owner_files_are_read_inside_the_image() {
        let top = tempfile::tempdir().unwrap();
        let host = top.path().join("host-passwd");
        std::fs::write(&host, "bob:x:4242:4242::/:/bin/sh\n").unwrap();
        let root = top.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../host-passwd", root.join("etc/group")).unwrap();
        let err = owner(Some(&root), "bob").unwrap_err();
        assert!(err.contains("no bob in the image's /etc/passwd"), "{err}");
        let err = owner(Some(&root), "0:bob").unwrap_err();
        assert!(err.contains("no bob in the image's /etc/group"), "{err}");
        // A symlink that stays in the image is followed there.
        std::fs::write(root.join("etc/real"), "bob:x:7:7::/:/bin/sh\n").unwrap();
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/real", root.join("etc/passwd")).unwrap();
        assert_eq!(owner(Some(&root), "bob").unwrap(), (7, 7));
    }

    /// Unpacking from files gives what extracting the layer gives (owners,
    /// modes, times), and links what an earlier unpacking has unchanged.
    #[test]
    fn unpacking_links_unchanged_files_from_the_previous_unpacking() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("same"), "same\n").unwrap();
        std::fs::write(ctx.join("edited"), "v1\n").unwrap();
        let meta = Meta {
            uid: 7,
            gid: 8,
            mode: 0o640,
        };
        let items = |ctx: &Path| {
            vec![
                Item {
                    path: "/app/same".into(),
                    meta,
                    content: Content::File(ctx.join("same")),
                },
                Item {
                    path: "/app/edited".into(),
                    meta,
                    content: Content::File(ctx.join("edited")),
                },
                Item {
                    path: "/app/link".into(),
                    meta,
                    content: Content::Symlink("same".into()),
                },
            ]
        };
        let hash = |p: &Path| {
            use sha2::Digest as _;
            let bytes: [u8; 32] = sha2::Sha256::digest(std::fs::read(p).unwrap()).into();
            bytes
        };
        let hashes = |ctx: &Path| {
            ["same", "edited"]
                .iter()
                .map(|n| (ctx.join(n), hash(&ctx.join(n))))
                .collect::<HashMap<_, _>>()
        };
        let planned = plan(items(&ctx), None);
        let first = dir.path().join("first");
        std::fs::create_dir(&first).unwrap();
        let made = unpack(&first, &planned, &hashes(&ctx), None, 1_700_000_000).unwrap();
        let same = std::fs::metadata(first.join("app/same")).unwrap();
        assert_eq!(
            (same.uid(), same.gid(), same.mode() & 0o7777),
            (7, 8, 0o640)
        );
        assert_eq!(same.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::read_link(first.join("app/link")).unwrap(),
            Path::new("same")
        );
        assert_eq!(
            std::fs::metadata(first.join("app")).unwrap().mode() & 0o7777,
            0o755
        );

        std::fs::write(ctx.join("edited"), "v2\n").unwrap();
        let second = dir.path().join("second");
        std::fs::create_dir(&second).unwrap();
        unpack(
            &second,
            &plan(items(&ctx), None),
            &hashes(&ctx),
            Some((&first, &made)),
            1_700_000_000,
        )
        .unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&first.join("app/same")),
            ino(&second.join("app/same")),
            "linked"
        );
        assert_ne!(
            ino(&first.join("app/edited")),
            ino(&second.join("app/edited"))
        );
        assert_eq!(std::fs::read(second.join("app/edited")).unwrap(), b"v2\n");
        assert_eq!(
            std::fs::read(first.join("app/edited")).unwrap(),
            b"v1\n",
            "the earlier tree is untouched"
        );
        let edited = std::fs::metadata(second.join("app/edited")).unwrap();
        assert_eq!(
            (edited.uid(), edited.mode() & 0o7777, edited.mtime()),
            (7, 0o640, 1_700_000_000)
        );
    }

    /// A directory standing in for a host directory (`/etc/cron.d`), and
    /// an empty one to unpack into.
    fn host_and_layer() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let host = top.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("shadow"), "HOST-SECRET").unwrap();
        let layer = top.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        (top, host, layer)
    }

    fn item(path: &str, content: Content) -> Item {
        Item {
            path: path.into(),
            meta: Meta {
                uid: 0,
                gid: 0,
                mode: if content == Content::Dir {
                    0o755
                } else {
                    0o644
                },
            },
            content,
        }
    }

    /// An `ADD`ed archive with `d -> <host dir>` and then `d/x`: unpacking
    /// wrote `x` into the host directory as root. Planned, `d` is a
    /// directory of the layer holding `x`; unpacked as given, the symlink on
    /// the way is refused. Either way the host directory is untouched.
    #[test]
    fn unpacking_never_writes_through_a_symlink_of_the_layer() {
        let (top, host, layer) = host_and_layer();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "d", &host).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        b.append_data(&mut h, "d/x", &b"owned\n"[..]).unwrap();
        let archive = top.path().join("evil.tar");
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let items = archive_items(&archive, "/dst").unwrap();

        let planned = plan(items.clone(), None);
        unpack(&layer, &planned, &HashMap::new(), None, 0).unwrap();
        assert!(std::fs::symlink_metadata(layer.join("dst/d"))
            .unwrap()
            .is_dir());
        assert_eq!(std::fs::read(layer.join("dst/d/x")).unwrap(), b"owned\n");
        assert!(!host.join("x").exists(), "written into the host directory");

        // As given (no plan): refused at the symlink.
        let raw = top.path().join("raw");
        std::fs::create_dir(&raw).unwrap();
        let mut items = items;
        items.insert(0, item("/dst", Content::Dir));
        let err = unpack(&raw, &items, &HashMap::new(), None, 0).unwrap_err();
        assert!(
            err.to_string().contains("dst/d: is a symlink; refused"),
            "{err}"
        );
        assert!(!host.join("x").exists(), "written into the host directory");
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1);
    }

    /// Two sources to one destination: a directory with `s/x`, then a
    /// directory holding `s -> ../..` (inside the context lexically). The
    /// later `s` wins, and what the earlier one had below it goes.
    #[test]
    fn a_later_non_directory_drops_what_was_below_its_path() {
        let (_top, host, layer) = host_and_layer();
        let up = format!("../../{}", host.file_name().unwrap().to_str().unwrap());
        let items = vec![
            item("/s", Content::Dir),
            item("/s/x", Content::Bytes(b"owned\n".to_vec())),
            item("/s/deeper/y", Content::Bytes(b"owned\n".to_vec())),
            item("/s", Content::Symlink(PathBuf::from(&up))),
        ];
        let planned = plan(items, None);
        let paths: Vec<&str> = planned.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["/s"]);
        unpack(&layer, &planned, &HashMap::new(), None, 0).unwrap();
        assert_eq!(std::fs::read_link(layer.join("s")).unwrap(), Path::new(&up));
        assert!(!host.join("x").exists() && !host.join("deeper").exists());

        // Unplanned, the write below the symlink is refused.
        let raw = layer.with_file_name("raw");
        std::fs::create_dir(&raw).unwrap();
        let items = vec![
            item("/s", Content::Symlink(host.clone())),
            item("/s/x", Content::Bytes(b"owned\n".to_vec())),
        ];
        let err = unpack(&raw, &items, &HashMap::new(), None, 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("unpacking s/x: s: is a symlink; refused"),
            "{err}"
        );
        assert!(!host.join("x").exists());
    }

    /// A hard-link entry `d/shadow` with `d -> <host dir>` would link the
    /// host's file into the layer.
    #[test]
    fn a_hard_link_is_never_made_to_a_host_file() {
        let (_top, host, layer) = host_and_layer();
        let items = vec![
            item("/d", Content::Symlink(host.clone())),
            item("/stolen", Content::Hardlink("/d/shadow".into())),
        ];
        let err = unpack(&layer, &items, &HashMap::new(), None, 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("unpacking d/shadow: d: is a symlink; refused"),
            "{err}"
        );
        assert!(!layer.join("stolen").exists());
        // The same through plan: still no host file in the layer.
        let planned = plan(items, None);
        let err = unpack(
            &layer.with_file_name("l2"),
            &planned,
            &HashMap::new(),
            None,
            0,
        );
        assert!(err.is_err());
        assert_eq!(std::fs::read(host.join("shadow")).unwrap(), b"HOST-SECRET");
    }

    #[test]
    fn archives_with_escaping_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // tar's own API refuses `..` names, so write the name bytes directly.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let path = dir.path().join("bad.tar");
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        assert!(is_archive(&path));
        let err = archive_items(&path, "/opt").unwrap_err();
        assert!(err.contains("entry ../escape points outside"), "{err}");
    }
}
