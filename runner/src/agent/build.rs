//! A pipeline's `build` step: the Containerfile built from the job's
//! workspace with this runner's engine, pushed to the server's registry as
//! `<repository>:<commit sha>` plus the step's tags, and reported to the
//! server. Progress lines and RUN output go to the step's log.

use std::path::{Path, PathBuf};

use oci_client::secrets::RegistryAuth;
use slipway_builder::beneath::{self, Links, Want};
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

/// The longest Containerfile read.
const CONTAINERFILE_LIMIT: u64 = 4 << 20;

/// `rel` made clean (no `.`, no empty components; `..` is refused later).
fn clean(rel: &str) -> String {
    rel.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Under `dir` ("" for the workspace root), as a relative path.
fn under(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The build context (absolute, canonical) and the Containerfile's path in
/// the workspace and text. The repository controls every path here, so each
/// is opened with `beneath`: no `..`, no symlink on the way, the
/// Containerfile itself included, whatever the symlink points to.
fn sources(workspace: &Path, build: &BuildDefinition) -> Result<(PathBuf, String, String), String> {
    let root = workspace
        .canonicalize()
        .map_err(|e| format!("the workspace: {e}"))?;
    let context = clean(&build.context);
    beneath::open(&root, &context, Links::Refuse, Want::Dir)
        .map_err(|e| format!("build context: {e}"))?;
    let read = |rel: &str| beneath::read_to_string(&root, rel, Links::Refuse, CONTAINERFILE_LIMIT);
    let (file, text) = match &build.file {
        Some(f) => {
            let f = clean(f);
            let text = read(&f).map_err(|e| format!("Containerfile: {e}"))?;
            (f, text)
        }
        None => {
            let mut found = None;
            for name in ["Containerfile", "Dockerfile"] {
                let rel = under(&context, name);
                match read(&rel) {
                    Ok(text) => {
                        found = Some((rel, text));
                        break;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(format!("Containerfile: {e}")),
                }
            }
            found.ok_or_else(|| format!("no Containerfile or Dockerfile in {}", build.context))?
        }
    };
    Ok((root.join(&context), file, text))
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
    let (context, file_name, containerfile) = sources(workspace, build)?;
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
        file_name,
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
