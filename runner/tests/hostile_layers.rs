//! Hostile layers, made by hand: each is either contained in the layer directory
//! or refused with a clear error, and nothing outside the layer directory changes.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use slipway_runner::layer::{extract_layer, LayerError};

/// One hand-written tar entry; names and link targets are written raw, so `..`
/// and absolute paths get through as an attacker would send them.
struct Entry<'a> {
    kind: tar::EntryType,
    path: &'a str,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        kind: tar::EntryType::Regular,
        path,
        link: "",
        data,
    }
}
fn dir(path: &str) -> Entry<'_> {
    Entry {
        kind: tar::EntryType::Directory,
        path,
        link: "",
        data: b"",
    }
}
fn symlink<'a>(path: &'a str, target: &'a str) -> Entry<'a> {
    Entry {
        kind: tar::EntryType::Symlink,
        path,
        link: target,
        data: b"",
    }
}
fn hardlink<'a>(path: &'a str, target: &'a str) -> Entry<'a> {
    Entry {
        kind: tar::EntryType::Link,
        path,
        link: target,
        data: b"",
    }
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        {
            let raw = header.as_gnu_mut().unwrap();
            raw.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            raw.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(if e.kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            header.set_device_major(8).unwrap();
            header.set_device_minor(0).unwrap();
        }
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A sandbox: `layer/` to extract into, and `outside/` with a canary, both in a
/// temp dir whose every file is compared before and after.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("layer")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside/etc")).unwrap();
        std::fs::write(dir.path().join("outside/etc/passwd"), b"root:x:0:0\n").unwrap();
        Sandbox { dir }
    }

    fn layer(&self) -> PathBuf {
        self.dir.path().join("layer")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Everything outside `layer/`: path -> (kind, size, nlink, content).
    fn snapshot_outside(&self) -> BTreeMap<PathBuf, (String, u64, u64, Vec<u8>)> {
        fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (String, u64, u64, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path == skip {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let content = if meta.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                out.insert(
                    path.clone(),
                    (
                        format!("{:?}", meta.file_type()),
                        meta.len(),
                        meta.nlink(),
                        content,
                    ),
                );
                if meta.is_dir() {
                    walk(&path, skip, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &self.layer(), &mut out);
        out
    }

    /// Extract, and check nothing outside the layer directory changed.
    fn extract(&self, entries: &[Entry]) -> Result<slipway_runner::layer::LayerStats, LayerError> {
        let before = self.snapshot_outside();
        let result = extract_layer(&tar_of(entries)[..], &self.layer());
        assert_eq!(
            before,
            self.snapshot_outside(),
            "extraction touched something outside the layer directory"
        );
        result
    }
}

#[test]
fn path_traversal_is_refused() {
    for path in [
        "../escape.txt",
        "a/../../escape.txt",
        "./../outside/etc/passwd",
        "a/b/../../../x",
    ] {
        let sb = Sandbox::new();
        let err = sb.extract(&[dir("a"), file(path, b"pwned")]).unwrap_err();
        assert!(matches!(err, LayerError::Traversal { .. }), "{path}: {err}");
        assert!(
            err.to_string().contains("`..` would leave the layer"),
            "{err}"
        );
    }
}

#[test]
fn absolute_paths_are_contained() {
    let sb = Sandbox::new();
    let marker = format!("/tmp/slipway-escape-{}", std::process::id());
    sb.extract(&[file(&marker, b"inside")]).unwrap();
    assert!(
        !Path::new(&marker).exists(),
        "an absolute path must not land on the host"
    );
    assert_eq!(
        std::fs::read(sb.layer().join(marker.trim_start_matches('/'))).unwrap(),
        b"inside"
    );
}

#[test]
fn absolute_and_relative_symlink_escapes_are_refused() {
    let sb = Sandbox::new();
    let outside = sb.outside().join("etc");
    let absolute = outside.to_str().unwrap().to_owned();
    let err = sb
        .extract(&[symlink("etc", &absolute), file("etc/passwd", b"pwned")])
        .unwrap_err();
    assert!(matches!(err, LayerError::ThroughSymlink { .. }), "{err}");
    assert!(err.to_string().contains("is a symlink"), "{err}");

    let sb = Sandbox::new();
    let err = sb
        .extract(&[symlink("up", "../outside/etc"), file("up/passwd", b"pwned")])
        .unwrap_err();
    assert!(matches!(err, LayerError::ThroughSymlink { .. }), "{err}");

    // A symlink deeper in the path, and a directory entry through one.
    let sb = Sandbox::new();
    let err = sb
        .extract(&[dir("a"), symlink("a/b", "/"), dir("a/b/c")])
        .unwrap_err();
    assert!(matches!(err, LayerError::ThroughSymlink { .. }), "{err}");
    // The symlink itself is kept as data: it is only resolved inside a container.
    let sb = Sandbox::new();
    sb.extract(&[symlink("etc-link", "/etc")]).unwrap();
    assert_eq!(
        std::fs::read_link(sb.layer().join("etc-link")).unwrap(),
        Path::new("/etc")
    );
}

#[test]
fn hardlinks_to_outside_paths_are_refused() {
    let host_passwd = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![hardlink("hl", "../outside/etc/passwd")], "traversal"),
        (vec![hardlink("hl", "/etc/passwd")], "not in layer"),
        (
            vec![symlink("l", "/etc"), hardlink("hl", "l/passwd")],
            "through symlink",
        ),
        (
            vec![symlink("l", "../outside/etc"), hardlink("hl", "l/passwd")],
            "through symlink",
        ),
    ];
    for (entries, what) in cases {
        let sb = Sandbox::new();
        let err = sb.extract(&entries).unwrap_err();
        let ok = match what {
            "traversal" => matches!(err, LayerError::Traversal { .. }),
            "not in layer" => matches!(err, LayerError::HardLinkTarget { .. }),
            _ => matches!(err, LayerError::ThroughSymlink { .. }),
        };
        assert!(ok, "{what}: {err}");
        assert!(!sb.layer().join("hl").exists());
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        host_passwd
    );
    // A hard link inside the layer works.
    let sb = Sandbox::new();
    sb.extract(&[
        file("bin/busybox", b"elf"),
        hardlink("bin/sh", "bin/busybox"),
    ])
    .unwrap();
    let a = std::fs::metadata(sb.layer().join("bin/busybox")).unwrap();
    let b = std::fs::metadata(sb.layer().join("bin/sh")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn device_nodes_are_refused() {
    for kind in [tar::EntryType::Char, tar::EntryType::Block] {
        let sb = Sandbox::new();
        let err = sb
            .extract(&[Entry {
                kind,
                path: "dev/sda",
                link: "",
                data: b"",
            }])
            .unwrap_err();
        assert!(matches!(err, LayerError::DeviceNode { .. }), "{err}");
        assert!(
            err.to_string().contains("device nodes are not allowed"),
            "{err}"
        );
        assert!(!sb.layer().join("dev/sda").exists());
    }
}

#[test]
fn whiteouts_of_parent_paths_are_refused_and_real_ones_become_overlay_whiteouts() {
    for (entries, what) in [
        (vec![file("../.wh.victim", b"")], "traversal"),
        (vec![dir("a"), file("a/.wh...", b"")], "traversal"),
        (vec![dir("a"), file("a/.wh..", b"")], "invalid"),
        (
            vec![dir("a"), file("a/../../.wh.outside", b"")],
            "traversal",
        ),
        (
            vec![symlink("s", "../outside/etc"), file("s/.wh.passwd", b"")],
            "through symlink",
        ),
    ] {
        let sb = Sandbox::new();
        let err = sb.extract(&entries).unwrap_err();
        let ok = match what {
            "traversal" => matches!(err, LayerError::Traversal { .. }),
            "invalid" => matches!(err, LayerError::Invalid { .. }),
            _ => matches!(err, LayerError::ThroughSymlink { .. }),
        };
        assert!(ok, "{what}: {err}");
    }
    let sb = Sandbox::new();
    let stats = sb
        .extract(&[
            dir("etc"),
            file("etc/.wh.shadow", b""),
            dir("var"),
            file("var/.wh..wh..opq", b""),
        ])
        .unwrap();
    assert_eq!(stats.whiteouts, 2);
    let shadow = std::fs::symlink_metadata(sb.layer().join("etc/shadow")).unwrap();
    assert!(shadow.file_type().is_char_device());
    assert_eq!(
        shadow.rdev(),
        0,
        "overlayfs whiteouts are 0/0 character devices"
    );
    assert!(!sb.layer().join("etc/.wh.shadow").exists());
    let mut value = [0u8; 8];
    let n = rustix::fs::lgetxattr(sb.layer().join("var"), "trusted.overlay.opaque", &mut value)
        .unwrap();
    assert_eq!(
        &value[..n],
        b"y",
        "an opaque directory carries overlayfs' opaque attribute"
    );
    assert!(!sb.layer().join("var/.wh..wh..opq").exists());
}

#[test]
fn an_ordinary_layer_unpacks_with_modes_links_and_gzip() {
    let sb = Sandbox::new();
    let tar = tar_of(&[
        dir("usr"),
        dir("usr/bin"),
        file("usr/bin/tool", b"#!/bin/sh\necho hi\n"),
        symlink("bin", "usr/bin"),
        hardlink("usr/bin/tool2", "usr/bin/tool"),
        file("usr/bin/tool", b"replaced"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let stats = extract_layer(&gz.finish().unwrap()[..], &sb.layer()).unwrap();
    assert_eq!(stats.entries, 6);
    assert_eq!(
        std::fs::read(sb.layer().join("usr/bin/tool")).unwrap(),
        b"replaced"
    );
    assert_eq!(
        std::fs::read(sb.layer().join("usr/bin/tool2")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        std::fs::read_link(sb.layer().join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let mode = std::fs::metadata(sb.layer().join("usr/bin/tool"))
        .unwrap()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o644);
    // Truncated archives are an error, not a partial success.
    let sb = Sandbox::new();
    let cut = &tar[..tar.len() / 2 + 100];
    assert!(extract_layer(cut, &sb.layer()).is_err());
    // Empty numeric fields read as 0 (as Go's archive/tar reads them); garbage in
    // one is an error.
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"empty");
    header.set_size(0);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b""[..]).unwrap();
    let sb = Sandbox::new();
    extract_layer(&builder.into_inner().unwrap()[..], &sb.layer()).unwrap();
    assert!(sb.layer().join("empty").exists());
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"garbage");
    header
        .as_gnu_mut()
        .unwrap()
        .uid
        .copy_from_slice(b"zzzzzz\0\0");
    header.set_size(0);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b""[..]).unwrap();
    let sb = Sandbox::new();
    assert!(extract_layer(&builder.into_inner().unwrap()[..], &sb.layer()).is_err());
    // A truncated zstd frame is an archive error, not a panic or a partial tree
    // taken for a whole one.
    let sb = Sandbox::new();
    let err = extract_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], &sb.layer()).unwrap_err();
    assert!(matches!(err, LayerError::Archive(_)), "{err}");
    // A well-formed zstd layer unpacks.
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append_data(&mut h, "z.txt", &b"zz\n"[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let compressed = zstd::stream::encode_all(&tar[..], 3).unwrap();
    let sb = Sandbox::new();
    extract_layer(&compressed[..], &sb.layer()).unwrap();
    assert_eq!(std::fs::read(sb.layer().join("z.txt")).unwrap(), b"zz\n");
}
