//! Pulling an image into the layer cache with `oci-client`.
//!
//! The manifest (a platform-specific one is chosen from an index) and config are
//! fetched; each layer is downloaded only if the cache lacks it, under the
//! cache's per-layer lock, so concurrent pulls download a layer once. Digests
//! are verified twice: by `oci-client` while downloading, and by the cache while
//! unpacking.

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::ImageConfiguration;

use crate::layer::{CacheError, LayerCache, LayerLease};

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
}

pub async fn pull(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    cache: &LayerCache,
) -> Result<PulledImage, PullError> {
    let whole = reference.whole();
    let (manifest, manifest_digest, config) = client
        .pull_manifest_and_config(reference, auth)
        .await
        .map_err(|source| PullError::Registry {
            reference: whole.clone(),
            source,
        })?;
    let config =
        ImageConfiguration::from_reader(config.as_bytes()).map_err(|source| PullError::Config {
            reference: whole.clone(),
            source,
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
    Ok(PulledImage {
        reference: reference.clone(),
        manifest_digest,
        config,
        layers,
    })
}
