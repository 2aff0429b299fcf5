//! A directory tree (the overlay upper dir of a `RUN`), or entries a `COPY`
//! names one by one, as a reproducible OCI layer.
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
//! - The tar is written on the calling thread (hashed there for the diff id)
//!   and compressed on a second one (gzip or zstd), straight into the blob
//!   file; the layer's digest is of the compressed bytes.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

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

/// How layer tars are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// flate2 (zlib-rs) at this level, 0-9.
    Gzip(u32),
    /// zstd at this level, 1-19.
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip(1)
    }
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip(_) => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd(_) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// `gzip`, `gzip:6`, `zstd`, `zstd:3`.
    pub fn parse(text: &str) -> Result<Compression, String> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        let level = |default: i64, max: i64| -> Result<i64, String> {
            match level {
                None => Ok(default),
                Some(l) => match l.parse::<i64>() {
                    Ok(n) if (0..=max).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{text}: the level must be a number from 0 to {max}"
                    )),
                },
            }
        };
        match name {
            "gzip" => Ok(Compression::Gzip(level(1, 9)? as u32)),
            "zstd" => Ok(Compression::Zstd(level(3, 19)? as i32)),
            _ => Err(format!("{text}: compression must be gzip or zstd")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// Every entry's mtime (seconds since the epoch).
    pub mtime: u64,
    /// Subtracted from owners (the user namespace's host base; 0 for none).
    pub id_shift: u32,
    pub compression: Compression,
}

/// A finished layer blob, written to the file the writer was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:` of the blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of the blob.
    pub size: u64,
    /// Bytes of the tar.
    pub tar_size: u64,
    pub media_type: &'static str,
    /// Entries written (whiteouts included).
    pub entries: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_owned(),
        source,
    }
}

const CHUNK: usize = 1 << 20;

/// The tar side: hashes the tar and hands it to the compressing thread in
/// 1 MiB chunks.
struct TarSink {
    hasher: Sha256,
    buf: Vec<u8>,
    size: u64,
    to_compressor: mpsc::SyncSender<Vec<u8>>,
}

impl TarSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.to_compressor
            .send(chunk)
            .map_err(|_| std::io::Error::other("the compressing thread stopped"))
    }
}

impl Write for TarSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The blob side: hashes and counts what the compressor writes to the file.
struct BlobSink {
    file: BufWriter<std::fs::File>,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn compress(
    chunks: mpsc::Receiver<Vec<u8>>,
    file: std::fs::File,
    compression: Compression,
) -> std::io::Result<(String, u64)> {
    let sink = BlobSink {
        file: BufWriter::with_capacity(CHUNK, file),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut sink = match compression {
        Compression::Gzip(level) => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(sink, flate2::Compression::new(level));
            for chunk in chunks {
                gz.write_all(&chunk)?;
            }
            gz.finish()?
        }
        Compression::Zstd(level) => {
            let mut z = zstd::stream::write::Encoder::new(sink, level)?;
            for chunk in chunks {
                z.write_all(&chunk)?;
            }
            z.finish()?
        }
    };
    // Not synced: a blob torn by a crash fails its digest check at the
    // registry (or when unpacked), and the cache only keys it after this.
    sink.flush()?;
    Ok((
        format!("sha256:{}", hex::encode(sink.hasher.finalize())),
        sink.size,
    ))
}

/// Writes a layer entry by entry. The caller adds entries in sorted order
/// (`layer_from_dir` does; `COPY` sorts its plan first).
pub struct LayerWriter {
    tar: tar::Builder<TarSink>,
    opts: LayerOptions,
    blob: PathBuf,
    compressor: std::thread::JoinHandle<std::io::Result<(String, u64)>>,
    entries: usize,
}

/// Owner and permission bits of an entry, as they go into the tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
}

impl LayerWriter {
    /// Start a layer whose blob goes to `blob` (created or truncated).
    pub fn create(blob: &Path, opts: LayerOptions) -> Result<LayerWriter, LayerError> {
        let file = std::fs::File::create(blob).map_err(io(blob))?;
        let (tx, rx) = mpsc::sync_channel(4);
        let compression = opts.compression;
        let compressor = std::thread::Builder::new()
            .name("layer-compress".into())
            .spawn(move || compress(rx, file, compression))
            .map_err(io(blob))?;
        Ok(LayerWriter {
            tar: tar::Builder::new(TarSink {
                hasher: Sha256::new(),
                buf: Vec::with_capacity(CHUNK),
                size: 0,
                to_compressor: tx,
            }),
            opts,
            blob: blob.to_owned(),
            compressor,
            entries: 0,
        })
    }

    fn header(&self, kind: tar::EntryType, meta: Meta) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mtime(self.opts.mtime);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mode(meta.mode & 0o7777);
        h.set_size(0);
        h
    }

    fn failed(&self, path: &str) -> impl FnOnce(std::io::Error) -> LayerError {
        let path = PathBuf::from(path);
        move |source| LayerError::Io { path, source }
    }

    /// A directory at `path` (no trailing `/` needed).
    pub fn dir(&mut self, path: &str, meta: Meta) -> Result<(), LayerError> {
        let mut h = self.header(tar::EntryType::Directory, meta);
        let name = format!("{}/", path.trim_end_matches('/'));
        self.tar
            .append_data(&mut h, &name, std::io::empty())
            .map_err(self.failed(path))?;
        self.entries += 1;
        Ok(())
    }

    /// A regular file of `size` bytes read from `data`.
    pub fn file(
        &mut self,
        path: &str,
        meta: Meta,
        size: u64,
        data: impl std::io::Read,
    ) -> Result<(), LayerError> {
        let mut h = self.header(tar::EntryType::Regular, meta);
        h.set_size(size);
        self.tar
            .append_data(&mut h, path, data)
            .map_err(self.failed(path))?;
        self.entries += 1;
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, meta: Meta, target: &Path) -> Result<(), LayerError> {
        let mut h = self.header(tar::EntryType::Symlink, meta);
        self.tar
            .append_link(&mut h, path, target)
            .map_err(self.failed(path))?;
        self.entries += 1;
        Ok(())
    }

    /// A hard link to `target`, an earlier entry of this layer.
    pub fn hardlink(&mut self, path: &str, meta: Meta, target: &str) -> Result<(), LayerError> {
        let mut h = self.header(tar::EntryType::Link, meta);
        self.tar
            .append_link(&mut h, path, target)
            .map_err(self.failed(path))?;
        self.entries += 1;
        Ok(())
    }

    /// `.wh.<name>` (or `.wh..wh..opq`) at `path`.
    pub fn whiteout(&mut self, path: &str) -> Result<(), LayerError> {
        self.file(
            path,
            Meta {
                uid: 0,
                gid: 0,
                mode: 0o644,
            },
            0,
            std::io::empty(),
        )
    }

    pub fn finish(self) -> Result<Layer, LayerError> {
        let blob = self.blob.clone();
        let mut sink = self.tar.into_inner().map_err(io(&blob))?;
        let sent = sink.send();
        let diff_id = format!("sha256:{}", hex::encode(sink.hasher.clone().finalize()));
        let tar_size = sink.size;
        drop(sink); // closes the channel: the compressor finishes
        let compressed = self
            .compressor
            .join()
            .map_err(|_| io(&blob)(std::io::Error::other("the compressing thread panicked")))?;
        let (digest, size) = compressed.map_err(io(&blob))?;
        sent.map_err(io(&blob))?;
        Ok(Layer {
            digest,
            diff_id,
            size,
            tar_size,
            media_type: self.opts.compression.media_type(),
            entries: self.entries,
        })
    }
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

struct DirWalk {
    writer: LayerWriter,
    id_shift: u32,
    /// (device, inode) of regular files already written, for hard links.
    seen: HashMap<(u64, u64), String>,
}

impl DirWalk {
    fn meta(&self, meta: &std::fs::Metadata) -> Meta {
        Meta {
            uid: u64::from(meta.uid().saturating_sub(self.id_shift)),
            gid: u64::from(meta.gid().saturating_sub(self.id_shift)),
            mode: meta.mode(),
        }
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
                self.writer.whiteout(&format!("{prefix}.wh.{name}"))?;
            } else if kind.is_dir() {
                self.writer.dir(&archived, self.meta(&meta))?;
                if is_opaque(&path) {
                    self.writer.whiteout(&format!("{archived}/.wh..wh..opq"))?;
                }
                self.walk(&path, &format!("{archived}/"))?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io(&path))?;
                self.writer.symlink(&archived, self.meta(&meta), &target)?;
            } else if kind.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.seen.get(&key).cloned() {
                        self.writer.hardlink(&archived, self.meta(&meta), &first)?;
                        continue;
                    }
                    self.seen.insert(key, archived.clone());
                }
                // A RUN container wrote this tree; it has exited, and the
                // file is opened without following a link all the same.
                let file = rustix::fs::open(
                    &path,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map(std::fs::File::from)
                .map_err(|e| io(&path)(e.into()))?;
                self.writer
                    .file(&archived, self.meta(&meta), meta.len(), file)?;
            } else {
                return Err(LayerError::Device { path });
            }
        }
        Ok(())
    }
}

/// The tree under `root` as a layer whose blob is written to `blob`.
pub fn layer_from_dir(root: &Path, blob: &Path, opts: LayerOptions) -> Result<Layer, LayerError> {
    let mut walk = DirWalk {
        writer: LayerWriter::create(blob, opts)?,
        id_shift: opts.id_shift,
        seen: HashMap::new(),
    };
    walk.walk(root, "")?;
    walk.writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(blob: &Path, layer: &Layer) -> Vec<(String, u64, u64, u32, char)> {
        let bytes = std::fs::read(blob).unwrap();
        assert_eq!(bytes.len() as u64, layer.size);
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            layer.digest
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
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
        let blob = dir.path().join("blob");
        let layer = layer_from_dir(&upper, &blob, opts).unwrap();
        let got: Vec<(String, char)> = entries(&blob, &layer)
            .into_iter()
            .map(|e| (e.0, e.4))
            .collect();
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
        let all = entries(&blob, &layer);
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
        let again = layer_from_dir(&upper, &dir.path().join("again"), opts).unwrap();
        assert_eq!(again.digest, layer.digest);
        // A changed byte changes it.
        std::fs::write(upper.join("etc/new.conf"), "x=2\n").unwrap();
        assert_ne!(
            layer_from_dir(&upper, &dir.path().join("changed"), opts)
                .unwrap()
                .digest,
            layer.digest
        );
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
        let blob = tempfile::NamedTempFile::new().unwrap();
        let err = layer_from_dir(dir.path(), blob.path(), LayerOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("device nodes cannot go into a layer"),
            "{err}"
        );
    }
}
