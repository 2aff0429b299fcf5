//! Making images from local files: a directory (or a tar) as a single-layer image,
//! and the busybox base image built from the host's busybox-static. Layers are
//! tarred in sorted order with normalised owners and times, so the same input
//! gives the same digest.

use std::io::{self, Write};
use std::path::Path;

use oci_client::client::{Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("pushing {reference}: {source}")]
    Push {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A compressed layer and the digest of its uncompressed tar (its diff id).
pub struct Layer {
    pub gzip: Vec<u8>,
    pub diff_id: String,
}

/// A directory tree as a reproducible layer (the builder's writer: sorted,
/// owners and permission bits as on disk, every mtime 0).
pub fn layer_from_dir(dir: &Path) -> Result<Layer, ImportError> {
    let blob = temp_blob_path();
    let opts = slipway_builder::layer::LayerOptions {
        mtime: 0,
        id_shift: 0,
        compression: slipway_builder::layer::Compression::Gzip(6),
    };
    let made = slipway_builder::layer::layer_from_dir(dir, &blob, opts);
    let gzip = std::fs::read(&blob);
    let _ = std::fs::remove_file(&blob);
    let made = made.map_err(|e| ImportError::Io {
        path: dir.display().to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(Layer {
        gzip: gzip.map_err(io_error(dir))?,
        diff_id: made.diff_id,
    })
}

fn temp_blob_path() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "slipway-import-{}-{}.blob",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Use an existing tar (plain, gzip or zstd) as the layer, after checking it
/// is one: every entry readable, no path or link leaving the layer, no device
/// nodes. What the runner would refuse at unpack time is refused here, naming
/// the entry.
pub fn layer_from_tar(file: &Path) -> Result<Layer, ImportError> {
    let bytes = std::fs::read(file).map_err(io_error(file))?;
    let invalid = |why: String| ImportError::Io {
        path: file.display().to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, why),
    };
    let tar = match bytes.get(..4) {
        Some([0x1f, 0x8b, ..]) => {
            let mut out = Vec::new();
            io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .map_err(|e| invalid(format!("not a gzip stream: {e}")))?;
            out
        }
        Some([0x28, 0xb5, 0x2f, 0xfd]) => {
            zstd::decode_all(&bytes[..]).map_err(|e| invalid(format!("not a zstd stream: {e}")))?
        }
        _ => bytes,
    };
    check_layer_tar(&tar).map_err(invalid)?;
    Ok(layer_from_tar_bytes(tar))
}

/// Whether `tar` is a layer the runner can unpack; the error names the entry.
fn check_layer_tar(tar: &[u8]) -> Result<(), String> {
    fn leaves(path: &Path) -> bool {
        path.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    }
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    let mut count = 0usize;
    for (index, entry) in entries.enumerate() {
        let entry = entry.map_err(|e| format!("not a tar archive (entry {}): {e}", index + 1))?;
        count += 1;
        let path = entry
            .path()
            .map_err(|e| format!("entry {}: unreadable path: {e}", index + 1))?
            .into_owned();
        let shown = path.display();
        if leaves(&path) {
            return Err(format!("entry {shown:?}: `..` would leave the layer"));
        }
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            return Err(format!(
                "entry {shown:?}: device nodes are not allowed in layers"
            ));
        }
        if kind == tar::EntryType::Link {
            let target = entry
                .link_name()
                .map_err(|e| format!("entry {shown:?}: unreadable link target: {e}"))?
                .unwrap_or_default();
            if leaves(&target) || target.as_os_str().is_empty() {
                return Err(format!(
                    "entry {shown:?}: hard link to {:?} is outside the layer",
                    target.display()
                ));
            }
        }
    }
    if count == 0 {
        return Err("not a tar archive (no entries)".into());
    }
    Ok(())
}

fn layer_from_tar_bytes(tar: Vec<u8>) -> Layer {
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("writing to memory");
    Layer {
        gzip: gz.finish().expect("writing to memory"),
        diff_id,
    }
}

/// A minimal root filesystem around the host's static busybox: `/bin/busybox`,
/// a symlink per applet, and the usual directories and account files.
pub fn busybox_rootfs(busybox: &Path, into: &Path) -> Result<(), ImportError> {
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io_error(busybox))?;
    if !list.status.success() {
        return Err(ImportError::Io {
            path: busybox.display().to_string(),
            source: io::Error::other("`busybox --list` failed"),
        });
    }
    for dir in [
        "bin",
        "etc",
        "root",
        "proc",
        "sys",
        "dev",
        "var",
        "workspace",
    ] {
        std::fs::create_dir_all(into.join(dir)).map_err(io_error(into))?;
    }
    let tmp = into.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(io_error(&tmp))?;
    std::fs::copy(busybox, into.join("bin/busybox")).map_err(io_error(busybox))?;
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        if applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", into.join("bin").join(applet))
            .map_err(io_error(into))?;
    }
    std::fs::write(
        into.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .map_err(io_error(into))?;
    std::fs::write(into.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .map_err(io_error(into))?;
    Ok(())
}

/// Push a single-layer image and return its manifest digest.
pub async fn push_image(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    layer: Layer,
    cmd: &[&str],
) -> Result<String, ImportError> {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created_by": "slipway image import"}],
    });
    let layers = [ImageLayer::new(layer.gzip, LAYER_GZIP.into(), None)];
    let config = Config::new(
        serde_json::to_vec(&config).expect("json"),
        CONFIG.into(),
        None,
    );
    client
        .push(reference, &layers, config, auth, None)
        .await
        .map_err(|source| ImportError::Push {
            reference: reference.whole(),
            source,
        })?;
    let (_, digest) = client
        .pull_manifest(reference, auth)
        .await
        .map_err(|source| ImportError::Push {
            reference: reference.whole(),
            source,
        })?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of (path, kind, link target) entries with raw names, so paths the
    /// tar crate's builder refuses can be written too.
    fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, link) in entries {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(0);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    fn import(bytes: &[u8]) -> Result<Layer, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("layer.tar");
        std::fs::write(&file, bytes).unwrap();
        layer_from_tar(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_gzip_and_zstd_tars_give_the_same_layer() {
        let tar = raw_tar(&[
            ("etc/", tar::EntryType::Directory, ""),
            ("etc/motd", tar::EntryType::Regular, ""),
            ("bin/sh", tar::EntryType::Symlink, "/bin/busybox"),
            ("etc/issue", tar::EntryType::Link, "etc/motd"),
        ]);
        let plain = import(&tar).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gzipped = import(&gz.finish().unwrap()).unwrap();
        let zstded = import(&zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        assert_eq!(
            plain.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
        assert_eq!(gzipped.diff_id, plain.diff_id);
        assert_eq!(zstded.diff_id, plain.diff_id);
        assert_eq!(gzipped.gzip, plain.gzip);
    }

    #[test]
    fn what_is_not_a_safe_layer_is_refused_naming_the_entry() {
        let cases: [(Vec<u8>, &str); 7] = [
            (
                raw_tar(&[("../escape", tar::EntryType::Regular, "")]),
                "entry \"../escape\": `..` would leave the layer",
            ),
            (
                raw_tar(&[("/abs/../../x", tar::EntryType::Regular, "")]),
                "`..` would leave the layer",
            ),
            (
                raw_tar(&[("dev/sda", tar::EntryType::Block, "")]),
                "entry \"dev/sda\": device nodes are not allowed",
            ),
            (
                raw_tar(&[("link", tar::EntryType::Link, "../../etc/shadow")]),
                "entry \"link\": hard link to \"../../etc/shadow\" is outside the layer",
            ),
            (b"just some text, not a tar\n".to_vec(), "not a tar archive"),
            (vec![0; 1024], "not a tar archive (no entries)"),
            (vec![0x1f, 0x8b, 8, 0, 1, 2, 3], "not a gzip stream"),
        ];
        for (bytes, expected) in cases {
            let err = import(&bytes).err().expect(expected);
            assert!(err.contains("layer.tar: "), "{err}");
            assert!(err.contains(expected), "{err}\nwanted: {expected}");
        }
    }
}
