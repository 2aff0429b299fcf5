//! `slipway exec`: pull an image and run it (its ENTRYPOINT and CMD, or the
//! command given after `--` in place of CMD) in a container, streaming its
//! output; the process exits with the container's exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use slipway_runner::container::{
    BindMount, Cancel, Engine, Limits, Mapping, Network, RunOptions, RunRequest, Stream,
};
use slipway_runner::image::{local, obtain, resolve, ImageStore, PullPolicy};
use slipway_runner::layer::LayerCache;

use crate::registry_client::{registry_host, target};

pub struct ExecArgs {
    pub server: String,
    pub token: Option<String>,
    pub image: String,
    pub net: String,
    pub pull: String,
    pub userns: String,
    pub memory: Option<String>,
    pub pids: Option<i64>,
    pub cpus: Option<f64>,
    pub timeout: Option<String>,
    pub mounts: Vec<String>,
    pub env: Vec<String>,
    pub work_dir: PathBuf,
    pub runtime: PathBuf,
    pub command: Vec<String>,
}

/// `256m`, `1g`, `512k` or plain bytes.
pub fn parse_size(text: &str) -> anyhow::Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: i64 = digits.parse().with_context(|| {
        format!("size {text:?} is not a number with an optional k, m or g suffix")
    })?;
    n.checked_mul(unit).context("size too large")
}

fn parse_mount(text: &str) -> anyhow::Result<BindMount> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, destination, read_only) = match parts.as_slice() {
        [s, d] => (s, d, false),
        [s, d, "ro"] => (s, d, true),
        [s, d, "rw"] => (s, d, false),
        _ => bail!("--mount {text:?} is not SRC:DST[:ro]"),
    };
    let source =
        std::fs::canonicalize(source).with_context(|| format!("--mount source {source:?}"))?;
    Ok(BindMount {
        source,
        destination: destination.to_string(),
        read_only,
    })
}

pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let network = match args.net.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        other => bail!("--net {other:?} is not none or host"),
    };
    let user_namespace = match args.userns.as_str() {
        "private" => Some(Mapping::default()),
        "host" => None,
        other => bail!("--userns {other:?} is not private or host"),
    };
    let limits = Limits {
        memory_bytes: args.memory.as_deref().map(parse_size).transpose()?,
        pids: args.pids,
        cpus: args.cpus,
    };
    let timeout = args
        .timeout
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .context("--timeout")?;
    let mounts = args
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let env = args
        .env
        .iter()
        .map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--env {e:?} is not K=V"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let policy: PullPolicy = args
        .pull
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--pull: {e}"))?;
    let reference = resolve(&args.image, &registry_host(&args.server)?)?;
    let cache = LayerCache::open(args.work_dir.join("layers"), 10 << 30)?;
    let store = ImageStore::open(args.work_dir.join("images"))
        .with_context(|| format!("image store under {}", args.work_dir.display()))?;
    // A stored image starts without building a registry client at all.
    let stored = match policy {
        PullPolicy::Always => None,
        _ => local(&reference, &store, &cache),
    };
    let image = match stored {
        Some(image) => image,
        None => {
            let registry = target(&args.server, args.token.as_deref())?;
            obtain(
                &registry.client,
                &reference,
                &registry.auth,
                &cache,
                &store,
                policy,
            )
            .await?
        }
    };
    // As `podman run IMAGE [COMMAND]`: a command replaces the image's CMD
    // (its ENTRYPOINT stays); none runs ENTRYPOINT + CMD as built.
    let command = if args.command.is_empty() {
        let config = image.config.config().clone().unwrap_or_default();
        let given = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
        if !given(config.entrypoint()) && !given(config.cmd()) {
            bail!(
                "{} has no ENTRYPOINT or CMD: give the command after --, e.g. slipway exec --image {} -- echo hi",
                args.image,
                args.image
            );
        }
        None
    } else {
        Some(args.command)
    };
    let engine = Engine::open(args.work_dir.join("engine"), &args.runtime)?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Stream, Vec<u8>)>();
    let printer = tokio::spawn(async move {
        while let Some((stream, bytes)) = rx.recv().await {
            let _ = match stream {
                Stream::Stdout => std::io::stdout()
                    .write_all(&bytes)
                    .and_then(|()| std::io::stdout().flush()),
                Stream::Stderr => std::io::stderr().write_all(&bytes),
            };
        }
    });
    let cancel = Cancel::default();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let request = RunRequest {
        image: &image.config,
        layers: image.layers.iter().map(|l| l.path()).collect(),
        options: RunOptions {
            command,
            env,
            network,
            mounts,
            limits,
            user_namespace,
            ..Default::default()
        },
        timeout,
        grace: Duration::from_secs(5),
        cancel,
        output: tx,
    };
    let outcome = engine.run(request).await?;
    let _ = printer.await;
    if let Some(why) = &outcome.stopped {
        eprintln!("slipway: container {why} (exit {})", outcome.exit_code);
    }
    Ok(outcome.exit_code)
}
