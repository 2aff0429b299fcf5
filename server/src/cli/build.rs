//! `slipway build`: build a Containerfile with the builder on this machine's
//! engine, push the image (and its provenance) to Slipway's registry, and
//! print its digest. Progress goes to stderr, one line per instruction.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use slipway_builder::image::Provenance;
use slipway_builder::layer::Compression;
use slipway_builder::{BuildOptions, Event};
use slipway_runner::build::EngineExecutor;
use slipway_runner::container::{Cancel, Engine, Mapping, Network, RunOptions};
use slipway_runner::image::{resolve, ImageStore, PullPolicy};
use slipway_runner::layer::LayerCache;

use crate::registry_client::target;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The Containerfile (default: CONTEXT/Containerfile or CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Image to push, e.g. myapp:latest; repeat for several tags.
    #[arg(short = 't', long = "tag", required = true)]
    pub tags: Vec<String>,
    /// Build argument K=V (or K, taken from the environment); repeat.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Label K=V added to the image; repeat.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Give RUN the environment variable NAME (its value from this
    /// environment) without recording it anywhere in the image; repeat.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Also take cached layers from this build cache in the registry
    /// (written by --cache-to), e.g. myapp:buildcache.
    #[arg(long)]
    pub cache_from: Option<String>,
    /// Export this build's cache to the registry under this reference.
    #[arg(long)]
    pub cache_to: Option<String>,
    /// Build this stage (name or index) instead of the last.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every instruction, ignoring the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Layer compression: gzip[:LEVEL] or zstd[:LEVEL].
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Network of RUN instructions: none (loopback only) or host.
    #[arg(long, default_value = "none")]
    pub net: String,
    /// When to contact the registry for base images: always, missing, never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Where layers, the build cache and containers live.
    #[arg(
        long,
        env = "SLIPWAY_RUNNER_DIR",
        default_value = "/var/lib/slipway/runner"
    )]
    pub work_dir: PathBuf,
    /// The OCI runtime binary.
    #[arg(long, env = "SLIPWAY_RUNTIME", default_value = "runc")]
    pub runtime: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
}

fn pairs(what: &str, items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            // `--build-arg NAME` takes NAME's value from the environment, as
            // Docker does.
            None if what == "--build-arg" => std::env::var(item)
                .map(|v| (item.clone(), v))
                .with_context(|| format!("--build-arg {item}: not K=V and ${item} is not set")),
            None => bail!("{what} {item:?} is not K=V"),
        })
        .collect()
}

pub async fn run(args: BuildArgs, server: String, token: Option<String>) -> anyhow::Result<()> {
    if args.tags.is_empty() {
        bail!("give the image to build with -t, e.g. -t myapp:latest");
    }
    let context = std::fs::canonicalize(&args.context)
        .with_context(|| format!("build context {}", args.context.display()))?;
    // `-f` names a file the caller chose; the context's own Containerfile is
    // read as a pipeline reads it: no symlink, nothing outside the context.
    let (file, containerfile) = match &args.file {
        Some(f) => (
            f.clone(),
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        ),
        None => {
            let mut found = None;
            for name in ["Containerfile", "Dockerfile"] {
                match slipway_builder::beneath::read_to_string(
                    &context,
                    name,
                    slipway_builder::beneath::Links::Refuse,
                    4 << 20,
                ) {
                    Ok(text) => {
                        found = Some((context.join(name), text));
                        break;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => bail!(
                        "{}: {e}; name the file with -f to read it anyway",
                        context.display()
                    ),
                }
            }
            found.with_context(|| {
                format!(
                    "no Containerfile or Dockerfile in {}; name one with -f",
                    context.display()
                )
            })?
        }
    };
    let compression =
        Compression::parse(&args.compression).map_err(|e| anyhow::anyhow!("--compression {e}"))?;
    let network = match args.net.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        other => bail!("--net {other:?} is not none or host"),
    };
    let policy: PullPolicy = args
        .pull
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--pull: {e}"))?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"))?,
        _ => 0,
    };
    let registry = target(&server, token.as_deref())?;
    let targets = args
        .tags
        .iter()
        .map(|t| resolve(t, &registry.host))
        .collect::<Result<Vec<_>, _>>()?;

    let work = args.work_dir.clone();
    let cache = LayerCache::open(work.join("layers"), 10 << 30)?;
    let store = ImageStore::open(work.join("images"))
        .with_context(|| format!("image store under {}", work.display()))?;
    let engine = Arc::new(Engine::open(work.join("engine"), &args.runtime)?);
    let build_dir = work.join("build");
    let cancel = Cancel::default();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let executor = EngineExecutor {
        engine,
        cache,
        store,
        client: registry.client.clone(),
        auth: registry.auth.clone(),
        registry: registry.host.clone(),
        policy,
        handle: tokio::runtime::Handle::current(),
        options: RunOptions {
            network,
            user_namespace: Some(Mapping::default()),
            ..Default::default()
        },
        cancel,
        views: build_dir.join("tmp"),
    };
    let options = BuildOptions {
        file_name: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string()),
        containerfile,
        context,
        build_args: pairs("--build-arg", &args.build_args)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        source_date_epoch,
        compression,
        labels: pairs("--label", &args.labels)?,
        provenance: Provenance::default(),
        remote_cache: match &args.cache_from {
            Some(r) => {
                let reference = resolve(r, &registry.host)?;
                let cache = slipway_runner::build::RegistryCache::load(
                    registry.client.clone(),
                    registry.auth.clone(),
                    reference,
                )
                .await
                .map_err(|e| anyhow::anyhow!("--cache-from {r}: {e}"))?;
                eprintln!("cache from {r}: {} instructions", cache.len());
                Some(Arc::new(cache) as Arc<dyn slipway_builder::exec::RemoteCache>)
            }
            None => None,
        },
        secrets: args
            .secrets
            .iter()
            .map(|name| {
                std::env::var(name)
                    .map(|v| (name.clone(), v))
                    .with_context(|| format!("--secret {name}: ${name} is not set"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let started = std::time::Instant::now();
    let built = tokio::task::spawn_blocking(move || {
        let events = |event: Event| {
            if let Event::Output { data, .. } = &event {
                let _ = std::io::stderr().write_all(data);
            } else if let Some(line) = event.line() {
                eprintln!("{line}");
            }
        };
        let built = slipway_builder::build(&options, &build_dir, &executor, &events);
        (built, executor)
    })
    .await
    .context("the build thread")?;
    let (built, _executor) = built;
    let built = built?;
    let push_started = std::time::Instant::now();
    let scheme = server.split("://").next().unwrap_or("http");
    let stats =
        slipway_runner::build::push(&registry.client, &registry.auth, scheme, &built, &targets)
            .await?;
    if let Some(r) = &args.cache_to {
        let reference = resolve(r, &registry.host)?;
        slipway_runner::build::push_cache(
            &registry.client,
            &registry.auth,
            scheme,
            &built,
            &reference,
        )
        .await
        .with_context(|| format!("--cache-to {r}"))?;
        eprintln!("cache to {r}: {} instructions", built.cache_entries.len());
    }
    eprintln!(
        "built in {:.2}s ({} run, {} cached), pushed in {:.2}s: {} (layers: {} uploaded, {} linked into the local registry, {} mounted, {} already there)",
        push_started.duration_since(started).as_secs_f64(),
        built.runs,
        built.cached,
        push_started.elapsed().as_secs_f64(),
        targets
            .iter()
            .map(|t| t.whole())
            .collect::<Vec<_>>()
            .join(", "),
        stats.uploaded,
        stats.linked,
        stats.mounted,
        stats.present,
    );
    println!("{}", built.digest);
    Ok(())
}
