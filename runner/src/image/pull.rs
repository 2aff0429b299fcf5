//! Pulling an image into the layer cache with `oci-client`, or finding it in the
//! local store ([`PullPolicy`]).
//!
//! The manifest (a platform-specific one is chosen from an index) and config are
//! fetched; each layer is downloaded only if the cache lacks it, under the
//! cache's per-layer lock, so concurrent pulls download a layer once. Digests
//! are verified twice: by `oci-client` while downloading, and by the cache while
//! unpacking.

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::ImageConfiguration;

use super::store::{ImageRecord, ImageStore};
use crate::layer::{CacheError, LayerCache, LayerLease};

/// When to contact the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always resolve the reference at the registry (layers still come from the
    /// cache when present).
    Always,
    /// Use the local store when it has the image and all its layers (the default,
    /// as in Docker and podman).
    #[default]
    Missing,
    /// Never contact the registry; fail if the image is not stored locally.
    Never,
    /// Ask the registry, with the caller's credentials, which manifest the
    /// reference names now, and use the local store when it holds that one.
    /// For jobs on a shared runner: an image another job pulled is not
    /// started for credentials that may not pull it (a job's registry token
    /// is limited to its repository and pull allowlist). Not a CLI choice.
    Verify,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "pull policy {other:?} is not always, missing or never"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pulling {reference}: {source}")]
    Registry {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{reference}: the image config is not valid: {source}")]
    Config {
        reference: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("{reference} is not in the local image store and the pull policy is never")]
    NotLocal { reference: String },
    #[error("{reference}: {source}")]
    Layer {
        reference: String,
        #[source]
        source: CacheError,
    },
}

/// An image whose layers are unpacked and held in the cache for as long as this
/// value lives.
pub struct PulledImage {
    pub reference: Reference,
    pub manifest_digest: String,
    pub config: ImageConfiguration,
    /// Bottom layer first.
    pub layers: Vec<LayerLease>,
    /// What the local store has on it (raw config, layer sizes and types).
    pub record: ImageRecord,
}

/// The image from the local store, if it is recorded and every layer is cached.
pub fn local(reference: &Reference, store: &ImageStore, cache: &LayerCache) -> Option<PulledImage> {
    let record = store.lookup(reference)?;
    let config = ImageConfiguration::from_reader(record.config.as_bytes()).ok()?;
    let layers = record
        .layers
        .iter()
        .map(|digest| cache.cached(digest))
        .collect::<Option<Vec<_>>>()?;
    Some(PulledImage {
        reference: reference.clone(),
        manifest_digest: record.manifest_digest.clone(),
        config,
        layers,
        record,
    })
}

/// Get `reference` by `policy`: from the local store, or pulled (and then
/// recorded in the store).
pub async fn obtain(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    cache: &LayerCache,
    store: &ImageStore,
    policy: PullPolicy,
) -> Result<PulledImage, PullError> {
    if policy == PullPolicy::Verify {
        let current = client
            .fetch_manifest_digest(reference, auth)
            .await
            .map_err(|source| PullError::Registry {
                reference: reference.whole(),
                source,
            })?;
        if let Some(image) = local(reference, store, cache) {
            if image.manifest_digest == current {
                return Ok(image);
            }
        }
    } else if policy != PullPolicy::Always {
        if let Some(image) = local(reference, store, cache) {
            return Ok(image);
        }
        if policy == PullPolicy::Never {
            return Err(PullError::NotLocal {
                reference: reference.whole(),
            });
        }
    }
    let (image, record) = pull_record(client, reference, auth, cache).await?;
    if let Err(e) = store.record(reference, &record) {
        tracing::warn!(reference = %reference, error = %e, "could not record the image locally");
    }
    Ok(image)
}

pub async fn pull(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    cache: &LayerCache,
) -> Result<PulledImage, PullError> {
    pull_record(client, reference, auth, cache)
        .await
        .map(|(image, _)| image)
}

async fn pull_record(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    cache: &LayerCache,
) -> Result<(PulledImage, ImageRecord), PullError> {
    let whole = reference.whole();
    let (manifest, manifest_digest, raw_config) = client
        .pull_manifest_and_config(reference, auth)
        .await
        .map_err(|source| PullError::Registry {
            reference: whole.clone(),
            source,
        })?;
    let config = ImageConfiguration::from_reader(raw_config.as_bytes()).map_err(|source| {
        PullError::Config {
            reference: whole.clone(),
            source,
        }
    })?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        let lease = cache
            .get_or_fetch(&layer.digest, |path| async move {
                let file = tokio::fs::File::create(&path).await?;
                client
                    .pull_blob(reference, layer, file)
                    .await
                    .map_err(std::io::Error::other)
            })
            .await
            .map_err(|source| PullError::Layer {
                reference: whole.clone(),
                source,
            })?;
        layers.push(lease);
    }
    let record = ImageRecord {
        reference: whole,
        manifest_digest: manifest_digest.clone(),
        config_digest: manifest.config.digest.clone(),
        config: raw_config,
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        layer_sizes: manifest
            .layers
            .iter()
            .map(|l| l.size.max(0) as u64)
            .collect(),
        layer_media_types: manifest
            .layers
            .iter()
            .map(|l| l.media_type.clone())
            .collect(),
    };
    let image = PulledImage {
        reference: reference.clone(),
        manifest_digest,
        config,
        layers,
        record: record.clone(),
    };
    Ok((image, record))
}
