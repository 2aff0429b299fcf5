//! `slipway image import` and `slipway image bootstrap busybox`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use slipway_runner::image::{busybox_rootfs, layer_from_dir, layer_from_tar, push_image, resolve};

use crate::registry_client::target;

pub async fn import(
    server: &str,
    token: Option<&str>,
    rootfs: Option<&Path>,
    tar: Option<&Path>,
    tag: &str,
) -> anyhow::Result<()> {
    let layer = match (rootfs, tar) {
        (Some(dir), None) => layer_from_dir(dir)?,
        (None, Some(file)) => layer_from_tar(file)?,
        _ => bail!("give exactly one of --rootfs DIR or --tar FILE"),
    };
    let registry = target(server, token)?;
    let reference = resolve(tag, &registry.host)?;
    let digest = push_image(&registry.client, &reference, &registry.auth, layer, &["sh"]).await?;
    println!(
        "{}@{digest}",
        reference.whole().split(['@']).next().unwrap_or_default()
    );
    Ok(())
}

pub async fn bootstrap(server: &str, token: Option<&str>, what: &str) -> anyhow::Result<()> {
    if what != "busybox" {
        bail!("only `busybox` can be bootstrapped (from the host's busybox-static)");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("busybox not found: install busybox-static (apt-get install busybox-static)")?;
    let dir = tempfile_dir()?;
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&busybox, &rootfs)?;
    let result = import(server, token, Some(&rootfs), None, "library/busybox:latest").await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("slipway-bootstrap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
