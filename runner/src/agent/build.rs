//! A pipeline's `build` step: the Containerfile built from the job's
//! workspace with this runner's engine, pushed to the server's registry as
//! `<repository>:<commit sha>` plus the step's tags, and reported to the
//! server. Progress lines and RUN output go to the step's log.

use std::path::Path;

use oci_client::secrets::RegistryAuth;
use slipway_builder::image::Provenance;
use slipway_builder::layer::Compression;
use slipway_builder::{BuildOptions, Event};
use tokio::sync::mpsc::UnboundedSender;

use super::client::retry;
use super::Agent;
use crate::api::{BuildDefinition, ImageReport, Lease, StepDefinition};
use crate::build::{EngineExecutor, RegistryCache};
use crate::container::{Cancel, Network, RunOptions};
use crate::image::{resolve, PullPolicy};
use slipway_builder::exec::RemoteCache;

/// A path of the workspace that must stay inside it (through symlinks too).
fn inside(workspace: &Path, rel: &str, what: &str) -> Result<std::path::PathBuf, String> {
    let root = workspace
        .canonicalize()
        .map_err(|e| format!("the workspace: {e}"))?;
    let path = workspace
        .join(rel)
        .canonicalize()
        .map_err(|e| format!("{what} {rel}: {e}"))?;
    if !path.starts_with(&root) {
        return Err(format!("{what} {rel} leaves the workspace"));
    }
    Ok(path)
}

/// Run the build; returns (exit code, why it stopped if cancelled).
pub(super) async fn run(
    agent: &Agent,
    lease: &Lease,
    step: &StepDefinition,
    build: &BuildDefinition,
    workspace: &Path,
    cancel: &Cancel,
    log: &UnboundedSender<Vec<u8>>,
) -> (i32, Option<String>) {
    let target = Target {
        position: step.position,
        build,
        secrets: &step.secrets,
    };
    match build_and_push(agent, lease, target, workspace, cancel, log).await {
        Ok(()) => (0, None),
        Err(e) if cancel.is_cancelled() => {
            let _ = log.send(format!("slipway: build stopped: {e}\n").into_bytes());
            (130, Some("cancelled".into()))
        }
        Err(e) => {
            let _ = log.send(format!("slipway: build failed: {e}\n").into_bytes());
            (1, None)
        }
    }
}

/// The step being built.
struct Target<'a> {
    position: i64,
    build: &'a BuildDefinition,
    /// Given to RUN as environment variables, recorded nowhere.
    secrets: &'a [(String, String)],
}

async fn build_and_push(
    agent: &Agent,
    lease: &Lease,
    target: Target<'_>,
    workspace: &Path,
    cancel: &Cancel,
    log: &UnboundedSender<Vec<u8>>,
) -> Result<(), String> {
    let Target {
        position,
        build,
        secrets,
    } = target;
    let token = lease
        .push_token
        .clone()
        .ok_or("this run may not push images (no push token in the lease)")?;
    let context = inside(workspace, &build.context, "build context")?;
    let file = match &build.file {
        Some(f) => inside(workspace, f, "Containerfile")?,
        None => ["Containerfile", "Dockerfile"]
            .iter()
            .map(|n| context.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("no Containerfile or Dockerfile in {}", build.context))?,
    };
    let containerfile =
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let ctx = &lease.context;
    let auth = RegistryAuth::Bearer(token);
    let mut targets = vec![format!("{}:{}", build.repository, ctx.commit)];
    targets.extend(
        build
            .tags
            .iter()
            .map(|t| format!("{}:{t}", build.repository)),
    );
    let targets = targets
        .iter()
        .map(|t| resolve(t, &agent.registry_host).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let pipeline = format!("{}#{}", ctx.repo, ctx.pipeline_number);
    let client = agent.registry_client();
    // Layers other runners built, through the registry.
    let cache_ref = if build.registry_cache {
        Some(
            resolve(
                &format!("{}:buildcache", build.repository),
                &agent.registry_host,
            )
            .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let remote_cache = match &cache_ref {
        Some(r) => match RegistryCache::load(client.clone(), auth.clone(), r.clone()).await {
            Ok(cache) => Some(std::sync::Arc::new(cache) as std::sync::Arc<dyn RemoteCache>),
            Err(e) => {
                let _ = log.send(format!("warning: {e}; building without it\n").into_bytes());
                None
            }
        },
        None => None,
    };
    let options = BuildOptions {
        file_name: file
            .strip_prefix(workspace.canonicalize().unwrap_or_default())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "Containerfile".into()),
        containerfile,
        context,
        build_args: build.args.clone(),
        target: build.target.clone(),
        no_cache: false,
        source_date_epoch: ctx.commit_time.max(0) as u64,
        compression: Compression::default(),
        labels: vec![
            (
                "org.opencontainers.image.revision".into(),
                ctx.commit.clone(),
            ),
            ("org.opencontainers.image.source".into(), ctx.repo.clone()),
            ("dev.slipway.pipeline".into(), pipeline.clone()),
        ],
        provenance: Provenance {
            repository: Some(ctx.repo.clone()),
            commit: Some(ctx.commit.clone()),
            pipeline: Some(pipeline),
            ..Default::default()
        },
        secrets: secrets.to_vec(),
        remote_cache,
    };
    let executor = EngineExecutor {
        engine: agent.engine.clone(),
        cache: agent.cache.clone(),
        store: agent.images.clone(),
        client: client.clone(),
        auth: auth.clone(),
        registry: agent.registry_host.clone(),
        // The job's token decides which bases it may use, cached or not.
        policy: PullPolicy::Verify,
        handle: tokio::runtime::Handle::current(),
        options: RunOptions {
            network: Network::None,
            user_namespace: agent.mapping,
            ..Default::default()
        },
        cancel: cancel.clone(),
        views: agent.work_dir.join("build/tmp"),
    };
    let work = agent.work_dir.join("build");
    let events_log = log.clone();
    let built = tokio::task::spawn_blocking(move || {
        let events = |event: Event| {
            let bytes = match &event {
                Event::Output { data, .. } => data.clone(),
                other => match other.line() {
                    Some(line) => format!("{line}\n").into_bytes(),
                    None => return,
                },
            };
            let _ = events_log.send(bytes);
        };
        slipway_builder::build(&options, &work, &executor, &events)
    })
    .await
    .map_err(|e| format!("the build thread: {e}"))?
    .map_err(|e| e.to_string())?;
    let stats = crate::build::push(&client, &auth, &agent.scheme, &built, &targets)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(r) = &cache_ref {
        // The image is pushed: a cache that fails to export only costs speed.
        if let Err(e) = crate::build::push_cache(&client, &auth, &agent.scheme, &built, r).await {
            let _ = log.send(format!("warning: exporting the build cache: {e}\n").into_bytes());
        }
    }
    let _ = log.send(
        format!(
            "pushed {} ({} run, {} cached; layers: {} uploaded, {} linked, {} mounted, {} already there)\n{}\n",
            targets
                .iter()
                .map(|t| t.whole())
                .collect::<Vec<_>>()
                .join(", "),
            built.runs,
            built.cached,
            stats.uploaded,
            stats.linked,
            stats.mounted,
            stats.present,
            built.digest
        )
        .into_bytes(),
    );
    let report = ImageReport {
        attempt: lease.attempt,
        step: position,
        repository: build.repository.clone(),
        tags: targets
            .iter()
            .filter_map(|t| t.tag().map(str::to_owned))
            .collect(),
        digest: built.digest.clone(),
    };
    retry(std::time::Duration::from_secs(600), || {
        agent.client.report_image(lease.job_id, &report)
    })
    .await
    .map_err(|e| format!("reporting the image: {e}"))?;
    Ok(())
}
