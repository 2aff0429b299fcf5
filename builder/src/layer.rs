//! A directory tree (the overlay upper dir of a `RUN`, or the files of a
//! `COPY`) as a reproducible OCI layer.
//!
//! - Entries are sorted by path bytes; every mtime is the build's
//!   `SOURCE_DATE_EPOCH`; owners are numeric, shifted back by the user
//!   namespace's base (files container root wrote are host uid 100000 on disk);
//!   only permission bits are kept of the mode; no user or group names, no
//!   atimes, no extended headers beyond long names. Identical trees give
//!   identical bytes, and so identical digests.
//! - overlayfs records a deletion as a 0/0 character device and a replaced
//!   directory as `trusted.overlay.opaque=y`: they become the OCI whiteouts
//!   `.wh.<name>` and `.wh..wh..opq`. Other device nodes are refused.
//! - Hard links within the tree stay hard links.
//! - The tar is gzip-compressed; the layer's digest is of the compressed bytes
//!   and its diff id of the tar.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: device nodes cannot go into a layer")]
    Device { path: PathBuf },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// Every entry's mtime (seconds since the epoch).
    pub mtime: u64,
    /// Subtracted from owners (the user namespace's host base; 0 for none).
    pub id_shift: u32,
    pub compression: flate2::Compression,
}

/// A finished layer blob.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    /// `sha256:` of `blob`.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Entries written (whiteouts included).
    pub entries: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes into the tar while hashing it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Writer<W: Write> {
    tar: tar::Builder<Hashing<W>>,
    opts: LayerOptions,
    /// (device, inode) of regular files already written, for hard links.
    seen: HashMap<(u64, u64), String>,
    entries: usize,
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

impl<W: Write> Writer<W> {
    fn header(&self, meta: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mtime(self.opts.mtime);
        h.set_uid(u64::from(meta.uid().saturating_sub(self.opts.id_shift)));
        h.set_gid(u64::from(meta.gid().saturating_sub(self.opts.id_shift)));
        h.set_mode(meta.mode() & 0o7777);
        h.set_size(0);
        h
    }

    fn whiteout(&mut self, name: &str) -> Result<(), LayerError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(self.opts.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_size(0);
        self.tar
            .append_data(&mut h, name, std::io::empty())
            .map_err(io(Path::new(name)))?;
        self.entries += 1;
        Ok(())
    }

    /// `dir` (a directory of the tree) at archive path `prefix` ("" for the root).
    fn walk(&mut self, dir: &Path, prefix: &str) -> Result<(), LayerError> {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let path = dir.join(&name);
            let name = name.to_string_lossy();
            let archived = format!("{prefix}{name}");
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                self.whiteout(&format!("{prefix}.wh.{name}"))?;
            } else if kind.is_dir() {
                let mut h = self.header(&meta, tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, format!("{archived}/"), std::io::empty())
                    .map_err(io(&path))?;
                self.entries += 1;
                if is_opaque(&path) {
                    self.whiteout(&format!("{archived}/.wh..wh..opq"))?;
                }
                self.walk(&path, &format!("{archived}/"))?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io(&path))?;
                let mut h = self.header(&meta, tar::EntryType::Symlink);
                self.tar
                    .append_link(&mut h, &archived, target)
                    .map_err(io(&path))?;
                self.entries += 1;
            } else if kind.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.seen.get(&key).cloned() {
                        let mut h = self.header(&meta, tar::EntryType::Link);
                        self.tar
                            .append_link(&mut h, &archived, first)
                            .map_err(io(&path))?;
                        self.entries += 1;
                        continue;
                    }
                    self.seen.insert(key, archived.clone());
                }
                let mut h = self.header(&meta, tar::EntryType::Regular);
                h.set_size(meta.len());
                let file = std::fs::File::open(&path).map_err(io(&path))?;
                self.tar
                    .append_data(&mut h, &archived, file)
                    .map_err(io(&path))?;
                self.entries += 1;
            } else {
                return Err(LayerError::Device { path });
            }
        }
        Ok(())
    }
}

/// The tree under `root` as a layer.
pub fn layer_from_dir(root: &Path, opts: LayerOptions) -> Result<Layer, LayerError> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), opts.compression);
    let mut writer = Writer {
        tar: tar::Builder::new(Hashing {
            inner: gz,
            hasher: Sha256::new(),
        }),
        opts,
        seen: HashMap::new(),
        entries: 0,
    };
    writer.walk(root, "")?;
    let entries = writer.entries;
    let hashing = writer.tar.into_inner().map_err(io(root))?;
    let diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    let blob = hashing.inner.finish().map_err(io(root))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
    Ok(Layer {
        blob,
        digest,
        diff_id,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(layer: &Layer) -> Vec<(String, u64, u64, u32, char)> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer.blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&tar))),
            layer.diff_id
        );
        let mut archive = tar::Archive::new(&tar[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let kind = match h.entry_type() {
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Symlink => 'l',
                    tar::EntryType::Link => 'h',
                    _ => 'f',
                };
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.mode().unwrap(),
                    kind,
                )
            })
            .collect()
    }

    /// An upper dir as overlayfs leaves it: a new file, a deletion (0/0 char
    /// device), a replaced directory (opaque), a symlink and a hard link.
    #[test]
    fn overlay_upper_dirs_become_reproducible_oci_layers() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(upper.join("etc/replaced")).unwrap();
        std::fs::write(upper.join("etc/new.conf"), "x=1\n").unwrap();
        std::fs::hard_link(upper.join("etc/new.conf"), upper.join("etc/same.conf")).unwrap();
        std::os::unix::fs::symlink("new.conf", upper.join("etc/link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        rustix::fs::setxattr(
            upper.join("etc/replaced"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::os::unix::fs::lchown(upper.join("etc/new.conf"), Some(101_000), Some(101_000))
            .unwrap();
        let opts = LayerOptions {
            mtime: 1_700_000_000,
            id_shift: 100_000,
            ..Default::default()
        };
        let layer = layer_from_dir(&upper, opts).unwrap();
        let got: Vec<(String, char)> = entries(&layer).into_iter().map(|e| (e.0, e.4)).collect();
        let names: Vec<(&str, char)> = got.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        assert_eq!(
            names,
            [
                ("etc/", 'd'),
                ("etc/.wh.gone", 'f'),
                ("etc/link", 'l'),
                ("etc/new.conf", 'f'),
                ("etc/replaced/", 'd'),
                ("etc/replaced/.wh..wh..opq", 'f'),
                ("etc/same.conf", 'h'),
            ]
        );
        let all = entries(&layer);
        assert!(all.iter().all(|e| e.1 == 1_700_000_000), "{all:?}");
        let conf = all.iter().find(|e| e.0 == "etc/new.conf").unwrap();
        assert_eq!(
            conf.2, 1000,
            "owner shifted back by the user namespace base"
        );

        // Same tree, other times on disk: the same digest.
        let later = std::fs::File::options()
            .write(true)
            .open(upper.join("etc/new.conf"))
            .unwrap();
        later
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        let again = layer_from_dir(&upper, opts).unwrap();
        assert_eq!(again.digest, layer.digest);
        // A changed byte changes it.
        std::fs::write(upper.join("etc/new.conf"), "x=2\n").unwrap();
        assert_ne!(layer_from_dir(&upper, opts).unwrap().digest, layer.digest);
    }

    #[test]
    fn device_nodes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        let err = layer_from_dir(dir.path(), LayerOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("device nodes cannot go into a layer"),
            "{err}"
        );
    }
}
