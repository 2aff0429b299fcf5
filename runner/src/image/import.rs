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

/// Use an existing (uncompressed) tar as the layer.
pub fn layer_from_tar(file: &Path) -> Result<Layer, ImportError> {
    Ok(layer_from_tar_bytes(
        std::fs::read(file).map_err(io_error(file))?,
    ))
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
