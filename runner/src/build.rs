//! The builder's [`Executor`] on this crate's engine and layer cache, and the
//! push of a built image (with its provenance referrer) to a registry.
//!
//! The builder runs on blocking threads (its stages in parallel); every
//! async call here goes through the runtime handle the executor was made
//! with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use slipway_builder::exec::{BaseImage, Executor, LayerRef, Populate, RunResult, RunSpec, View};
use slipway_builder::image;
use slipway_builder::Built;

use crate::container::{rootfs, Cancel, Engine, RunOptions, RunRequest};
use crate::image::{self as pull, ImageStore, PullPolicy};
use crate::layer::{LayerCache, LayerLease};

pub struct EngineExecutor {
    pub engine: Arc<Engine>,
    pub cache: LayerCache,
    pub store: ImageStore,
    pub client: Client,
    pub auth: RegistryAuth,
    /// host:port of Slipway's registry, for references without a host.
    pub registry: String,
    pub policy: PullPolicy,
    pub handle: tokio::runtime::Handle,
    /// Network, user namespace and limits of every `RUN`.
    pub options: RunOptions,
    pub cancel: Cancel,
    /// Where read-only views are mounted (the builder's temp dir).
    pub views: PathBuf,
}

static VIEWS: AtomicU64 = AtomicU64::new(0);

struct MountedView {
    dir: PathBuf,
    root: PathBuf,
    _leases: Vec<LayerLease>,
}

impl View for MountedView {
    fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for MountedView {
    fn drop(&mut self) {
        let _ = rootfs::unmount(&self.root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl EngineExecutor {
    /// Leases on `layers` (unpacking the builder's own from their blobs).
    fn leases(&self, layers: &[LayerRef]) -> Result<Vec<LayerLease>, String> {
        let mut leases = Vec::with_capacity(layers.len());
        for layer in layers {
            let lease = match &layer.blob {
                Some(blob) => {
                    let blob = blob.clone();
                    self.handle
                        .block_on(
                            self.cache
                                .get(&layer.digest, move || std::fs::File::open(blob)),
                        )
                        .map_err(|e| e.to_string())?
                }
                None => self.cache.cached(&layer.digest).ok_or_else(|| {
                    format!("layer {} is no longer in the layer cache", layer.digest)
                })?,
            };
            leases.push(lease);
        }
        Ok(leases)
    }
}

/// "not found" for an image the registry does not have, instead of the
/// registry client's whole error envelope.
fn missing_or(reference: &Reference, e: pull::PullError) -> String {
    let text = e.to_string();
    if text.contains("manifest unknown") || text.contains("name unknown") {
        format!("image {} not found in the registry", reference.whole())
    } else {
        text
    }
}

impl Executor for EngineExecutor {
    fn base(&self, input: &str) -> Result<BaseImage, String> {
        let r = pull::resolve(input, &self.registry).map_err(|e| e.to_string())?;
        let obtain = |policy| {
            self.handle
                .block_on(pull::obtain(
                    &self.client,
                    &r,
                    &self.auth,
                    &self.cache,
                    &self.store,
                    policy,
                ))
                .map_err(|e| missing_or(&r, e))
        };
        let mut image = obtain(self.policy)?;
        // A record from before sizes were kept: pull it again, once.
        if image.record.layer_sizes.len() != image.record.layers.len() {
            image = obtain(PullPolicy::Always)?;
        }
        let config: serde_json::Value = serde_json::from_str(&image.record.config)
            .map_err(|e| format!("{input}: the image config is not JSON: {e}"))?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let record = &image.record;
        if diff_ids.len() != record.layers.len() {
            return Err(format!(
                "{input}: the image config lists {} layers, its manifest {}",
                diff_ids.len(),
                record.layers.len()
            ));
        }
        let repository = format!("{}/{}", r.resolve_registry(), r.repository());
        let layers = (0..record.layers.len())
            .map(|i| LayerRef {
                digest: record.layers[i].clone(),
                diff_id: diff_ids[i].clone(),
                size: record.layer_sizes.get(i).copied().unwrap_or(0),
                media_type: record
                    .layer_media_types
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "application/vnd.oci.image.layer.v1.tar+gzip".into()),
                blob: None,
                from_repository: Some(repository.clone()),
            })
            .collect();
        Ok(BaseImage {
            reference: r.whole(),
            repository,
            digest: image.manifest_digest.clone(),
            config,
            layers,
            hold: Box::new(image.layers),
        })
    }

    fn run(&self, spec: RunSpec<'_>) -> Result<RunResult, String> {
        let leases = self.leases(spec.layers)?;
        let paths: Vec<&Path> = leases.iter().map(|l| l.path()).collect();
        let config = oci_spec::image::ImageConfiguration::default();
        let mut options = self.options.clone();
        options.entrypoint = Some(Vec::new());
        options.command = Some(spec.argv);
        options.env = spec.env;
        options.workdir = Some(spec.workdir);
        options.user = spec.user;
        options.hostname = "build".into();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let request = RunRequest {
            image: &config,
            layers: paths,
            options,
            timeout: None,
            grace: std::time::Duration::from_secs(5),
            cancel: self.cancel.clone(),
            output: tx,
        };
        let output = spec.output;
        let upper = spec.upper;
        let outcome = self.handle.block_on(async {
            let run = self.engine.run_keeping_upper(request, &upper);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    outcome = &mut run => {
                        while let Ok((_, data)) = rx.try_recv() {
                            output(&data);
                        }
                        break outcome;
                    }
                    Some((_, data)) = rx.recv() => output(&data),
                }
            }
        });
        let outcome = outcome.map_err(|e| e.to_string())?;
        Ok(RunResult {
            exit_code: outcome.exit_code,
            stopped: outcome.stopped,
        })
    }

    fn view(&self, layers: &[LayerRef]) -> Result<Box<dyn View>, String> {
        let leases = self.leases(layers)?;
        let dir = self.views.join(format!(
            "{}-view-{}",
            std::process::id(),
            VIEWS.fetch_add(1, Ordering::Relaxed)
        ));
        let lowers: Vec<&Path> = leases.iter().map(|l| l.path()).collect();
        let root = dir.join("root");
        if let Err(e) = rootfs::mount_read_only(&lowers, &dir.join("empty"), &root) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("mounting a view of the image: {e}"));
        }
        Ok(Box::new(MountedView {
            dir,
            root,
            _leases: leases,
        }))
    }

    fn unpack_with(
        &self,
        layer: &LayerRef,
        previous: Option<&str>,
        populate: &Populate<'_>,
    ) -> Result<(), String> {
        if self.cache.contains(&layer.digest) {
            return Ok(());
        }
        // Leased while it is linked from, so it cannot be evicted meanwhile.
        let before = previous.and_then(|d| self.cache.cached(d));
        let from = before.as_ref().map(|l| l.path().to_owned());
        self.handle
            .block_on(self.cache.populate(&layer.digest, |dir| {
                populate(dir, from.as_deref()).map_err(std::io::Error::other)
            }))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn id_shift(&self) -> u32 {
        self.options
            .user_namespace
            .map(|m| m.host_root())
            .unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("pushing {reference}: {what}: {source}")]
    Registry {
        reference: String,
        what: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("pushing {reference}: {message}")]
    Other { reference: String, message: String },
}

/// Make `layer` present in `target`'s repository: already there, mounted
/// from the repository it came from (same registry), or uploaded from its
/// blob file.
async fn ensure_layer(
    client: &Client,
    raw: &Raw<'_>,
    local: Option<&Path>,
    layer: &LayerRef,
    stats: &mut PushStats,
) -> Result<(), PushError> {
    let target = raw.target;
    let name = target.whole();
    let failed = |what: String| {
        let reference = name.clone();
        move |source| PushError::Registry {
            reference,
            what,
            source,
        }
    };
    if client
        .blob_exists(target, &layer.digest)
        .await
        .map_err(failed(format!("checking layer {}", layer.digest)))?
    {
        stats.present += 1;
        return Ok(());
    }
    let mut mount_error = None;
    if let Some(from) = &layer.from_repository {
        let same_registry = from
            .split_once('/')
            .is_some_and(|(host, _)| host == target.resolve_registry());
        if same_registry {
            match raw.mount(from, &layer.digest).await {
                Ok(()) => {
                    stats.mounted += 1;
                    return Ok(());
                }
                Err(e) => mount_error = Some(e),
            }
        }
    }
    let Some(blob) = &layer.blob else {
        return Err(PushError::Other {
            reference: name.clone(),
            message: format!(
                "base layer {} is not in the target registry and could not be mounted from {}{}",
                layer.digest,
                layer.from_repository.as_deref().unwrap_or("its repository"),
                mount_error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        });
    };
    if let Some(dir) = local {
        match raw.adopt(dir, blob, &layer.digest).await {
            Ok(()) => {
                stats.linked += 1;
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(layer = %layer.digest, error = %e, "local upload failed; sending it")
            }
        }
    }
    let bytes = tokio::fs::read(blob).await.map_err(|e| PushError::Other {
        reference: name.clone(),
        message: format!("{}: {e}", blob.display()),
    })?;
    client
        .push_blob(target, bytes, &layer.digest)
        .await
        .map_err(failed(format!("uploading layer {}", layer.digest)))?;
    stats.uploaded += 1;
    Ok(())
}

/// Plain HTTP to the registry with the caller's own credentials, for what
/// oci-client does not do (its token for a push would not cover reading
/// another repository; it has no local uploads).
struct Raw<'a> {
    scheme: &'a str,
    auth: &'a RegistryAuth,
    target: &'a Reference,
}

impl Raw<'_> {
    fn url(&self, path_and_query: &str) -> String {
        if path_and_query.starts_with('/') {
            format!(
                "{}://{}{path_and_query}",
                self.scheme,
                self.target.resolve_registry()
            )
        } else {
            path_and_query.to_owned()
        }
    }

    fn request(&self, method: reqwest::Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().request(method, self.url(path_and_query));
        match self.auth {
            RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            RegistryAuth::Bearer(token) => request.bearer_auth(token),
            RegistryAuth::Anonymous => request,
        }
    }

    fn uploads(&self) -> String {
        format!("/v2/{}/blobs/uploads/", self.target.repository())
    }

    /// Cancel the upload session a 202 answer started.
    async fn cancel(&self, response: &reqwest::Response) {
        if let Some(location) = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
        {
            let _ = self.request(reqwest::Method::DELETE, location).send().await;
        }
    }

    /// A cross-repository mount of `digest` from `from` (`host/repo`).
    async fn mount(&self, from: &str, digest: &str) -> Result<(), String> {
        let (_, from_repo) = from.split_once('/').ok_or("no repository")?;
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("{}?mount={digest}&from={from_repo}", self.uploads()),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            201 => Ok(()),
            202 => {
                self.cancel(&response).await;
                Err(format!(
                    "the registry has no {digest} in {from_repo} for these credentials"
                ))
            }
            status => Err(format!("mount answered {status}")),
        }
    }

    /// The registry's directory for local uploads, when it offers one that
    /// exists on this machine.
    async fn local_upload_dir(&self) -> Option<PathBuf> {
        let response = self
            .request(reqwest::Method::POST, &self.uploads())
            .header("slipway-local-upload", "1")
            .send()
            .await
            .ok()?;
        let dir = response
            .headers()
            .get("slipway-local-upload")
            .and_then(|v| v.to_str().ok())
            .map(PathBuf::from);
        if response.status().as_u16() == 202 {
            self.cancel(&response).await;
        }
        dir.filter(|d| d.is_dir())
    }

    /// Hard-link `blob` into the registry's local upload directory and have
    /// the registry adopt it (it checks the digest). The link is removed on
    /// failure.
    async fn adopt(&self, dir: &Path, blob: &Path, digest: &str) -> Result<(), String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let hex = digest.trim_start_matches("sha256:");
        let name = format!(
            "{}-{}-{}",
            &hex[..hex.len().min(32)],
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let link = dir.join(&name);
        std::fs::hard_link(blob, &link)
            .map_err(|e| format!("linking into {}: {e}", dir.display()))?;
        let answer = self
            .request(
                reqwest::Method::POST,
                &format!("{}?digest={digest}&local={name}", self.uploads()),
            )
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == 201 => Ok(()),
            other => {
                let _ = std::fs::remove_file(&link);
                Err(match other {
                    Ok(r) => format!("the registry answered {}", r.status()),
                    Err(e) => e.to_string(),
                })
            }
        }
    }
}

/// How the layers of a push got to the registry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Already there.
    pub present: usize,
    /// Mounted from the repository they came from.
    pub mounted: usize,
    /// Hard-linked into the registry's store (registry on this machine).
    pub linked: usize,
    /// Sent over HTTP.
    pub uploaded: usize,
}

/// Push `built` as every reference in `targets` (the first one gets the
/// blobs), then its provenance as a referrer. Blobs the registry has are not
/// sent again; base layers are mounted from their repository when they are
/// on the same registry.
pub async fn push(
    client: &Client,
    auth: &RegistryAuth,
    scheme: &str,
    built: &Built,
    targets: &[Reference],
) -> Result<PushStats, PushError> {
    let mut stats = PushStats::default();
    let Some(first) = targets.first() else {
        return Ok(stats);
    };
    let name = first.whole();
    let failed = |what: String| {
        let reference = name.clone();
        move |source| PushError::Registry {
            reference,
            what,
            source,
        }
    };
    client
        .store_auth_if_needed(first.resolve_registry(), auth)
        .await;
    let upload = |digest: String, bytes: Vec<u8>| {
        let failed = &failed;
        async move {
            if client
                .blob_exists(first, &digest)
                .await
                .map_err(failed(format!("checking blob {digest}")))?
            {
                return Ok(());
            }
            client
                .push_blob(first, bytes, &digest)
                .await
                .map_err(failed(format!("uploading blob {digest}")))?;
            Ok::<(), PushError>(())
        }
    };
    let raw = Raw {
        scheme,
        auth,
        target: first,
    };
    let local = if built.layers.iter().any(|l| l.blob.is_some()) {
        raw.local_upload_dir().await
    } else {
        None
    };
    for layer in &built.layers {
        ensure_layer(client, &raw, local.as_deref(), layer, &mut stats).await?;
    }
    upload(image::sha256(&built.config), built.config.clone()).await?;
    let manifest_type: reqwest::header::HeaderValue = image::MANIFEST.parse().expect("header");
    for target in targets {
        client
            .push_manifest_raw(target, built.manifest.clone(), manifest_type.clone())
            .await
            .map_err(|source| PushError::Registry {
                reference: target.whole(),
                what: "the manifest".into(),
                source,
            })?;
    }
    let (statement, referrer) = built.provenance_artifact(&name);
    upload(image::sha256(b"{}"), b"{}".to_vec()).await?;
    upload(image::sha256(&statement), statement).await?;
    let by_digest = Reference::with_digest(
        first.registry().to_owned(),
        first.repository().to_owned(),
        image::sha256(&referrer),
    );
    client
        .push_manifest_raw(&by_digest, referrer, manifest_type)
        .await
        .map_err(failed("the provenance referrer".into()))?;
    Ok(stats)
}

/// The media types of an exported build cache: a manifest whose first layer
/// is the index (instruction keys to layers) and whose other layers are the
/// layers it names.
pub const CACHE_ARTIFACT: &str = "application/vnd.slipway.buildcache.v1+json";
pub const CACHE_INDEX: &str = "application/vnd.slipway.buildcache.index.v1+json";

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheIndex {
    /// Key -> layer (`None`: the instruction made no layer).
    entries: std::collections::BTreeMap<String, Option<CachedLayer>>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct CachedLayer {
    digest: String,
    diff_id: String,
    size: u64,
    media_type: String,
}

/// A build cache stored in a registry (`--cache-from`): its index, read once;
/// layers are downloaded when a build needs them.
pub struct RegistryCache {
    /// Holds the credentials `load` used.
    client: Client,
    reference: Reference,
    handle: tokio::runtime::Handle,
    entries: std::collections::BTreeMap<String, Option<CachedLayer>>,
}

impl RegistryCache {
    /// The cache at `reference`; an empty one if the registry has none there.
    pub async fn load(
        client: Client,
        auth: RegistryAuth,
        reference: Reference,
    ) -> Result<RegistryCache, String> {
        let shown = reference.whole();
        let empty = |client, reference| RegistryCache {
            client,
            reference,
            handle: tokio::runtime::Handle::current(),
            entries: Default::default(),
        };
        let manifest = match client
            .pull_manifest_raw(&reference, &auth, &[image::MANIFEST])
            .await
        {
            Ok((bytes, _)) => bytes,
            Err(e) => {
                let text = e.to_string();
                if text.contains("manifest unknown") || text.contains("name unknown") {
                    return Ok(empty(client, reference));
                }
                return Err(format!("reading the build cache {shown}: {text}"));
            }
        };
        let doc: serde_json::Value = serde_json::from_slice(&manifest)
            .map_err(|e| format!("the build cache {shown} is not JSON: {e}"))?;
        if doc["artifactType"] != CACHE_ARTIFACT {
            return Err(format!("{shown} is not a Slipway build cache"));
        }
        let index = &doc["layers"][0];
        if index["mediaType"] != CACHE_INDEX {
            return Err(format!("{shown}: the build cache has no index"));
        }
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: CACHE_INDEX.into(),
            digest: index["digest"].as_str().unwrap_or_default().to_owned(),
            size: index["size"].as_i64().unwrap_or(0),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        client
            .pull_blob(&reference, &descriptor, &mut bytes)
            .await
            .map_err(|e| format!("reading the build cache index of {shown}: {e}"))?;
        let parsed: CacheIndex = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the build cache index of {shown} is not valid: {e}"))?;
        Ok(RegistryCache {
            entries: parsed.entries,
            ..empty(client, reference)
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl slipway_builder::exec::RemoteCache for RegistryCache {
    fn lookup(&self, key: &str) -> Option<Option<LayerRef>> {
        let found = self.entries.get(key)?;
        Some(found.as_ref().map(|l| LayerRef {
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            blob: None,
            from_repository: None,
        }))
    }

    fn fetch(&self, layer: &LayerRef, to: &Path) -> Result<(), String> {
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size as i64,
            ..Default::default()
        };
        self.handle.block_on(async {
            let file = tokio::fs::File::create(to)
                .await
                .map_err(|e| format!("{}: {e}", to.display()))?;
            self.client
                .pull_blob(&self.reference, &descriptor, file)
                .await
                .map_err(|e| format!("downloading {}: {e}", layer.digest))
        })
    }
}

/// Export the instruction cache of `built` to `reference` (`--cache-to`):
/// every layer it names, its index, and the manifest tying them together.
pub async fn push_cache(
    client: &Client,
    auth: &RegistryAuth,
    scheme: &str,
    built: &Built,
    reference: &Reference,
) -> Result<(), PushError> {
    let name = reference.whole();
    let failed = |what: &'static str| {
        let reference = name.clone();
        move |source| PushError::Registry {
            reference,
            what: what.into(),
            source,
        }
    };
    client
        .store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    let mut layers: Vec<&LayerRef> = Vec::new();
    let mut entries = std::collections::BTreeMap::new();
    for (key, layer) in &built.cache_entries {
        entries.insert(
            key.clone(),
            layer.as_ref().map(|l| CachedLayer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            }),
        );
        if let Some(l) = layer {
            if !layers.iter().any(|x| x.digest == l.digest) {
                layers.push(l);
            }
        }
    }
    let raw = Raw {
        scheme,
        auth,
        target: reference,
    };
    let local = raw.local_upload_dir().await;
    let mut stats = PushStats::default();
    for layer in &layers {
        ensure_layer(client, &raw, local.as_deref(), layer, &mut stats).await?;
    }
    let index = serde_json::to_vec(&CacheIndex { entries }).expect("json");
    for (digest, bytes) in [
        (image::sha256(&index), index.clone()),
        (image::sha256(b"{}"), b"{}".to_vec()),
    ] {
        if !client
            .blob_exists(reference, &digest)
            .await
            .map_err(failed("checking a cache blob"))?
        {
            client
                .push_blob(reference, bytes, &digest)
                .await
                .map_err(failed("uploading the cache index"))?;
        }
    }
    let mut descriptors = vec![serde_json::json!({
        "mediaType": CACHE_INDEX,
        "digest": image::sha256(&index),
        "size": index.len(),
    })];
    for l in &layers {
        descriptors.push(serde_json::json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image::MANIFEST,
        "artifactType": CACHE_ARTIFACT,
        "config": {"mediaType": image::EMPTY, "digest": image::sha256(b"{}"), "size": 2},
        "layers": descriptors,
    });
    client
        .push_manifest_raw(
            reference,
            serde_json::to_vec(&manifest).expect("json"),
            image::MANIFEST.parse().expect("header"),
        )
        .await
        .map_err(failed("the cache manifest"))?;
    Ok(())
}
