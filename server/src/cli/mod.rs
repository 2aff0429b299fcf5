//! The command line: every subcommand's flags (clap) and what runs it. One
//! file per group of commands: `build.rs`, `exec.rs`, `image.rs`,
//! `pipeline.rs` (repositories, runs, logs, secrets, runners), `deploy.rs`
//! (clusters, environments, deployments), `node.rs` (the node agent).

mod build;
mod deploy;
mod exec;
mod gates;
mod image;
mod pipeline;

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;

use crate::config::{LogFormat, Overrides, Settings};
use crate::{auth, client, config, db, serve};

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Self-hosted CI/CD with a built-in OCI registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (registry, API) on the embedded default: SQLite and local files.
    Server {
        #[command(flatten)]
        local: LocalArgs,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Manage users directly in the data directory (no server needed).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens through a running server.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Registry maintenance through a running server.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Make images from local files and push them to Slipway's registry.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Git repositories that run pipelines.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Start a pipeline for a repository's ref and print its id and URL.
    Run {
        /// The repository's name in Slipway.
        repo: String,
        /// Branch, tag or commit (default: the repository's default branch).
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Follow the logs; exit 0 only if the pipeline succeeds.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A repository's pipeline secrets (admin).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Jobs waiting to run: position, and the runners that could take each (or why not).
    Queue {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Registered runners: online or not, labels, capacity, current jobs.
    Runners {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a pipeline's logs; --follow until it finishes (exit 0 if it succeeded).
    Logs {
        pipeline: i64,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a pipeline again at the same commit.
    Rerun {
        pipeline: i64,
        /// Only the jobs that did not succeed (and what needs them).
        #[arg(long)]
        failed: bool,
        /// Follow the logs; exit 0 only if the new pipeline succeeds.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a pipeline: waiting jobs at once, running ones within seconds.
    Cancel {
        /// The pipeline's id.
        pipeline: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Registration tokens for runners (admin).
    RunnerToken {
        #[command(subcommand)]
        command: RunnerTokenCommand,
    },
    /// Run jobs from a Slipway server (needs root and runc).
    Runner {
        /// URL of the Slipway server.
        #[arg(long, env = "SLIPWAY_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Registration token (from `slipway runner-token create`); needed the
        /// first time only: the runner keeps its own token in the credentials
        /// dir.
        #[arg(long, env = "SLIPWAY_REGISTRATION_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Name shown for this runner.
        #[arg(long, default_value = "local")]
        name: String,
        /// Labels jobs can ask for with `runs-on`, comma-separated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Jobs at once.
        #[arg(long, default_value_t = 2)]
        capacity: u32,
        /// Layers, images, workspaces and containers.
        #[arg(
            long,
            env = "SLIPWAY_RUNNER_DIR",
            default_value = "/var/lib/slipway/runner"
        )]
        work_dir: PathBuf,
        /// The runner's own token (mode 0700, outside the work dir, where no
        /// job can reach it). Default: beside the work dir, named
        /// `<work dir>-credentials`.
        #[arg(long, env = "SLIPWAY_RUNNER_CREDENTIALS")]
        credentials_dir: Option<PathBuf>,
        /// The OCI runtime binary.
        #[arg(long, env = "SLIPWAY_RUNTIME", default_value = "runc")]
        runtime: PathBuf,
        /// private (steps in a user namespace) or host.
        #[arg(long, default_value = "private")]
        userns: String,
        /// PEM file of CA certificates to trust for an https server (besides
        /// the system's), e.g. a private CA that signed the server's certificate.
        #[arg(long, env = "SLIPWAY_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// Join a cluster and run its environments' instances and routers here
    /// (root, runc). Instances keep running when the node agent stops.
    Node {
        /// URL of the Slipway server.
        #[arg(long, env = "SLIPWAY_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Join token (from `slipway cluster add`, valid a day); needed the
        /// first time only. Prefer SLIPWAY_JOIN_TOKEN: arguments show in `ps`.
        #[arg(long, env = "SLIPWAY_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Name of this node in its cluster.
        #[arg(long, default_value = "local")]
        name: String,
        /// Layers, images and instances.
        #[arg(
            long,
            env = "SLIPWAY_NODE_DIR",
            default_value = "/var/lib/slipway/node"
        )]
        work_dir: PathBuf,
        /// The node's own token. Default: `<work dir>-credentials`.
        #[arg(long, env = "SLIPWAY_NODE_CREDENTIALS")]
        credentials_dir: Option<PathBuf>,
        /// The OCI runtime binary.
        #[arg(long, env = "SLIPWAY_RUNTIME", default_value = "runc")]
        runtime: PathBuf,
        /// private (instances in a user namespace) or host.
        #[arg(long, default_value = "private")]
        userns: String,
        /// Where routers listen, as clients reach them.
        #[arg(long, default_value = "127.0.0.1")]
        router_host: String,
        /// Ports the server may give this node's routers (FROM-TO).
        #[arg(long, default_value = "20000-20999")]
        router_ports: String,
        #[arg(long, env = "SLIPWAY_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// Stop and remove every instance of a node (its agent must be stopped):
    /// to take a machine out of service.
    NodeReset {
        #[arg(
            long,
            env = "SLIPWAY_NODE_DIR",
            default_value = "/var/lib/slipway/node"
        )]
        work_dir: PathBuf,
        #[arg(long, env = "SLIPWAY_RUNTIME", default_value = "runc")]
        runtime: PathBuf,
    },
    /// Started by `slipway runner`: removes its containers if it dies.
    #[command(hide = true)]
    RunnerGuard {
        #[arg(long)]
        work_dir: PathBuf,
        #[arg(long)]
        runtime: PathBuf,
    },
    /// Clusters deploy environments run on (admin).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// A repository's environments: what runs where, logs, secrets.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Deploy to ENV the digest that runs healthy in the environment before it
    /// (through ENV's protection: approvals, freezes).
    Promote {
        repo: String,
        #[arg(long)]
        to: String,
        /// Follow the deployment until it ends (exit 1 if it fails).
        #[arg(long)]
        wait: bool,
        /// Break glass: promote during a freeze (admins; needs --reason; audited).
        #[arg(long, requires = "reason")]
        override_freeze: bool,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Go back to the previous digest that succeeded in an environment, or to
    /// a named one that succeeded there, with the configuration it had (no
    /// approval needed, allowed during a freeze, audited).
    Rollback {
        repo: String,
        #[arg(long)]
        env: String,
        /// A digest (sha256:…) that succeeded in the environment before.
        #[arg(long)]
        to: Option<String>,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Abort a deployment that has not ended: one awaiting approval or
    /// pending ends at once; one in progress is failed and reverted (audited).
    Abort {
        deployment: i64,
        /// Why (kept in the audit).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a deployment awaiting approval (its digest, for its environment).
    Approve {
        deployment: i64,
        #[arg(long)]
        comment: Option<String>,
        /// Follow the deployment until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reject a deployment awaiting approval; it ends.
    Reject {
        deployment: i64,
        /// Why (required).
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The audit of deploys, approvals, overrides, rollbacks and protection
    /// changes (a repository's; every one's for an admin).
    Audit {
        repo: Option<String>,
        #[arg(long)]
        env: Option<String>,
        /// One JSON object per line (to export).
        #[arg(long)]
        json_lines: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What runs in an environment (or an instance) back to its image's
    /// provenance, base images, pipeline, test jobs and every environment it
    /// went through.
    Trace {
        /// The repository (with --env).
        #[arg(required_unless_present = "instance")]
        repo: Option<String>,
        #[arg(long, required_unless_present = "instance")]
        env: Option<String>,
        /// An instance's name (`env list` shows them), instead of REPO --env.
        #[arg(long, conflicts_with_all = ["repo", "env"])]
        instance: Option<String>,
        /// The API's JSON as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A repository's deployments, newest first.
    Deployments {
        repo: String,
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check a pipeline spec (.slipway.yml) and print every error with its
    /// line and column.
    Lint {
        /// The file to check.
        #[arg(default_value = ".slipway.yml")]
        file: PathBuf,
    },
    /// Build a Containerfile, push the image to Slipway's registry and print
    /// its digest (needs root and runc for RUN).
    Build {
        #[command(flatten)]
        args: build::BuildArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run an image's ENTRYPOINT/CMD, or a command, in a container (needs
    /// root and runc).
    Exec {
        /// Image reference; without a registry host it is Slipway's own.
        #[arg(long)]
        image: String,
        /// Network: none (loopback only) or host.
        #[arg(long, default_value = "none")]
        net: String,
        /// When to contact the registry: always, missing (use the local image
        /// when it and all its layers are stored), or never.
        #[arg(long, default_value = "missing")]
        pull: String,
        /// Users: private (a user namespace; container root is host uid 100000)
        /// or host (container root is host root).
        #[arg(long, default_value = "private")]
        userns: String,
        /// Memory limit, e.g. 256m.
        #[arg(long)]
        memory: Option<String>,
        /// Maximum number of processes.
        #[arg(long)]
        pids: Option<i64>,
        /// CPUs, e.g. 1.5.
        #[arg(long)]
        cpus: Option<f64>,
        /// Wall-clock limit, e.g. 30s.
        #[arg(long)]
        timeout: Option<String>,
        /// Bind mount SRC:DST[:ro]; repeat for several.
        #[arg(long = "mount")]
        mounts: Vec<String>,
        /// Environment variable K=V; repeat for several.
        #[arg(long = "env")]
        env: Vec<String>,
        /// Where layers are cached and containers are assembled.
        #[arg(
            long,
            env = "SLIPWAY_RUNNER_DIR",
            default_value = "/var/lib/slipway/runner"
        )]
        work_dir: PathBuf,
        /// The OCI runtime binary.
        #[arg(long, env = "SLIPWAY_RUNTIME", default_value = "runc")]
        runtime: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
        /// The command and its arguments, after --; it replaces the image's
        /// CMD (the ENTRYPOINT stays). Without one, the image runs as built.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Report pipeline states to a forge's commit-status API (admin); the
    /// token is read from standard input.
    Forge {
        repo: String,
        /// github, gitea or gitlab.
        #[arg(long)]
        kind: String,
        /// API root, e.g. https://api.github.com.
        #[arg(long)]
        api: String,
        /// The repository there (owner/name).
        #[arg(long)]
        repository: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run at most N of the repository's jobs at once (admin); --off for no limit.
    Limit {
        repo: String,
        #[arg(long, required_unless_present = "off")]
        max: Option<i64>,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set what the repository's pipelines may pull from this server's
    /// registry besides their own repository (admin): names, prefix/* or *,
    /// replacing the list (library/* by default); --none for nothing more.
    PullAllow {
        repo: String,
        #[arg(required_unless_present = "none")]
        patterns: Vec<String>,
        #[arg(long, conflicts_with = "patterns")]
        none: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// POST each pipeline state change to URL (admin); --off to stop.
    Notify {
        repo: String,
        #[arg(long, required_unless_present = "off")]
        url: Option<String>,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Register a repository (admin) and mirror it.
    Add {
        /// Name in Slipway, e.g. team/app.
        name: String,
        /// Where to fetch it: https://…, git://…, or a local path.
        #[arg(long)]
        url: String,
        /// Its default branch (default: the one the remote's HEAD names).
        #[arg(long)]
        branch: Option<String>,
        /// Fetch this often (e.g. 1m) and run new commits of the default
        /// branch, for repositories that cannot send webhooks.
        #[arg(long)]
        poll: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create a cluster (if new). Kind `local`: print a join token for its
    /// nodes (valid a day). Kind `kubernetes`: check that the kubeconfig's
    /// account has the Role the README shows, then store the kubeconfig sealed.
    Add {
        name: String,
        /// `local` (nodes join it) or `kubernetes`.
        #[arg(long, default_value = "local")]
        kind: String,
        /// Kind `kubernetes`: a self-contained kubeconfig (CA and token or
        /// client certificate inline); never printed or logged.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Kind `kubernetes`: the namespace (default: the kubeconfig
        /// context's, else `default`).
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Clusters and their nodes.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Per environment: URL, running digest and commit, instances and their
    /// health, the deployment in progress.
    List {
        repo: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The output of an environment's instances.
    Logs {
        repo: String,
        env: String,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run an environment on another cluster (admin; server-side only).
    Bind {
        repo: String,
        env: String,
        #[arg(long)]
        cluster: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set an environment's protection (admin; the whole policy: what is not
    /// given goes back to its default).
    Protect {
        repo: String,
        env: String,
        /// Approvals a deployment needs before it starts.
        #[arg(long, default_value_t = 0)]
        approvals: u32,
        /// Who may approve, by role: admin, or user (developers and admins).
        /// Default (no role, no --approver): admins.
        #[arg(long)]
        approver_role: Option<String>,
        /// A user who may approve (repeat for more).
        #[arg(long = "approver", value_name = "USER")]
        approvers: Vec<String>,
        /// Let the person who asked approve too (separation of duties is on
        /// by default).
        #[arg(long)]
        allow_self_approval: bool,
        /// How long an approval counts, and how long a request waits for them.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        approval_ttl: std::time::Duration,
        /// Who may deploy here, by role (admin or user). Default: anyone who
        /// may deploy.
        #[arg(long)]
        deployer_role: Option<String>,
        /// A user who may deploy here (repeat for more).
        #[arg(long = "deployer", value_name = "USER")]
        deployers: Vec<String>,
        /// A freeze window: "CRON;DURATION;TIME ZONE", e.g.
        /// "0 16 * * FRI;64h;Europe/Paris" (repeat for more).
        #[arg(long = "freeze", value_name = "CRON;DURATION;TZ")]
        freezes: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// An environment's protection, and whether it is frozen now.
    Protection {
        repo: String,
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Environment-scoped secrets (a prod secret never reaches dev).
    Secret {
        #[command(subcommand)]
        command: EnvSecretCommand,
    },
}

#[derive(Subcommand)]
enum EnvSecretCommand {
    /// Set a secret; the value is read from stdin.
    Set {
        repo: String,
        env: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Names of an environment's secrets.
    List {
        repo: String,
        env: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret; the value is read from standard input (so it stays out of
    /// shell history and process lists).
    Set {
        repo: String,
        name: String,
        /// Also give it to pull requests from forks.
        #[arg(long)]
        allow_pull_requests: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a repository's secrets (names only).
    List {
        repo: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum RunnerTokenCommand {
    /// Print a new registration token (valid 7 days, for any number of runners).
    Create {
        /// Limit the runners registered with it to these repositories
        /// (team/app, team/*; repeat for more); without it, shared runners
        /// that take every repository's jobs.
        #[arg(long = "repo", value_name = "PATTERN")]
        repos: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Turn a root filesystem (a directory or a tar) into a one-layer image.
    Import {
        #[arg(long, conflicts_with = "tar")]
        rootfs: Option<PathBuf>,
        #[arg(long)]
        tar: Option<PathBuf>,
        /// REPO:TAG in Slipway's registry.
        #[arg(long)]
        tag: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Build a small base image from the host (only `busybox`) and push it as
    /// library/busybox:latest.
    Bootstrap {
        what: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct LocalArgs {
    /// Directory for the database and blobs.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML settings file (layered over defaults, under SLIPWAY_* variables).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl LocalArgs {
    fn settings(&self, listen: Option<std::net::SocketAddr>) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            listen,
            data_dir: self.data_dir.clone(),
        };
        Ok(config::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Args)]
struct ClientArgs {
    /// URL of the Slipway server.
    #[arg(long, env = "SLIPWAY_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API token (otherwise SLIPWAY_USER and SLIPWAY_PASSWORD are used).
    #[arg(long, env = "SLIPWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<client::Client> {
        client::Client::new(
            &self.server,
            self.token.clone(),
            std::env::var("SLIPWAY_USER").ok(),
            std::env::var("SLIPWAY_PASSWORD").ok(),
        )
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from stdin with --password-stdin,
    /// otherwise generated and printed.
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read-only: pipelines, logs and image pulls.
        #[arg(long, conflicts_with = "admin")]
        viewer: bool,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        local: LocalArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for yourself and print it.
    Create {
        /// A name to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// pull, push, delete or admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Repositories it reaches: "*", "team/*" or an exact name.
        #[arg(long = "repo", default_value = "*")]
        repository: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Collect unreferenced blobs (and expired uploads) now; --dry-run only counts.
    Gc {
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `--userns`: `private` (a user namespace) or `host`.
fn userns_mapping(userns: &str) -> anyhow::Result<Option<slipway_runner::container::Mapping>> {
    match userns {
        "private" => Ok(Some(slipway_runner::container::Mapping::default())),
        "host" => Ok(None),
        other => anyhow::bail!("--userns {other:?} is not private or host"),
    }
}

/// The PEM file of `--ca-cert`, read.
fn read_ca_cert(path: Option<PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|path| {
        std::fs::read(&path).with_context(|| format!("reading --ca-cert {}", path.display()))
    })
    .transpose()
}

/// Resolves on Ctrl-C or SIGTERM: when a runner or node agent stops.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `slipway lint`: 0 when the spec is valid, 1 with every error otherwise.
fn cli_lint(file: &std::path::Path) -> anyhow::Result<i32> {
    use anyhow::Context;
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    match crate::pipeline::spec::parse(&file.display().to_string(), &text) {
        Ok(spec) => {
            let steps: usize = spec.jobs.iter().map(|j| j.steps.len()).sum();
            println!(
                "{}: ok ({} jobs, {steps} steps)",
                file.display(),
                spec.jobs.len()
            );
            Ok(0)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error{}",
                file.display(),
                errors.errors.len(),
                if errors.errors.len() == 1 { "" } else { "s" }
            );
            Ok(1)
        }
    }
}

/// Parse the command line and run the command.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server { local, listen } => {
            let settings = local.settings(listen)?;
            init_logging(&settings.log, settings.log_format);
            serve::run(settings).await
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    admin,
                    viewer,
                    password_stdin,
                    local,
                },
        } => {
            let settings = local.settings(None)?;
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                auth::password::generate()
            };
            std::fs::create_dir_all(&settings.data_dir)?;
            let pool = db::open(&settings.database_path())
                .await
                .context("opening the database")?;
            let role = if admin {
                auth::users::Role::Admin
            } else if viewer {
                auth::users::Role::Viewer
            } else {
                auth::users::Role::User
            };
            let user = auth::users::create(&pool, &name, &password, role).await?;
            pool.close().await;
            if password_stdin {
                println!("created {} user {}", role.as_str(), user.username);
            } else {
                println!(
                    "created {} user {} with password: {password}",
                    role.as_str(),
                    user.username
                );
            }
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    name,
                    scopes,
                    repository,
                    client,
                },
        } => {
            #[derive(Deserialize)]
            struct Created {
                token: String,
            }
            let body = json!({ "name": name, "scopes": scopes, "repository": repository });
            let created: Created = client.client()?.post("/api/v1/tokens", &body).await?;
            println!("{}", created.token);
            Ok(())
        }
        Command::Image {
            command:
                ImageCommand::Import {
                    rootfs,
                    tar,
                    tag,
                    client,
                },
        } => {
            image::import(
                &client.server,
                client.token.as_deref(),
                rootfs.as_deref(),
                tar.as_deref(),
                &tag,
            )
            .await
        }
        Command::Image {
            command: ImageCommand::Bootstrap { what, client },
        } => image::bootstrap(&client.server, client.token.as_deref(), &what).await,
        Command::Repo {
            command:
                RepoCommand::Add {
                    name,
                    url,
                    branch,
                    poll,
                    client,
                },
        } => {
            pipeline::repo_add(
                &client.client()?,
                &name,
                &url,
                branch.as_deref(),
                poll.as_deref(),
            )
            .await
        }
        Command::Repo {
            command:
                RepoCommand::Forge {
                    repo,
                    kind,
                    api,
                    repository,
                    client,
                },
        } => pipeline::repo_forge(&client.client()?, &repo, &kind, &api, &repository).await,
        Command::Repo {
            command:
                RepoCommand::Notify {
                    repo,
                    url,
                    off,
                    client,
                },
        } => pipeline::repo_notify(&client.client()?, &repo, if off { None } else { url }).await,
        Command::Repo {
            command:
                RepoCommand::Limit {
                    repo,
                    max,
                    off,
                    client,
                },
        } => {
            let max = if off { None } else { max };
            client
                .client()?
                .post_empty(
                    "/api/v1/repos/limits",
                    &json!({ "repo": repo, "max_concurrent": max }),
                )
                .await?;
            match max {
                Some(n) => println!("{repo}: at most {n} job(s) at once"),
                None => println!("{repo}: no limit on jobs at once"),
            }
            Ok(())
        }
        Command::Repo {
            command:
                RepoCommand::PullAllow {
                    repo,
                    patterns,
                    none: _,
                    client,
                },
        } => {
            client
                .client()?
                .post_empty(
                    "/api/v1/repos/pull-allow",
                    &json!({ "repo": repo, "patterns": patterns }),
                )
                .await?;
            if patterns.is_empty() {
                println!("{repo}: pipelines may pull only {repo} and {repo}/*");
            } else {
                println!(
                    "{repo}: pipelines may pull {repo}, {repo}/* and {}",
                    patterns.join(", ")
                );
            }
            Ok(())
        }
        Command::Run {
            repo,
            git_ref,
            wait,
            client,
        } => {
            let ok = pipeline::run(&client.client()?, &repo, git_ref.as_deref(), wait).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        Command::Secret {
            command:
                SecretCommand::Set {
                    repo,
                    name,
                    allow_pull_requests,
                    client,
                },
        } => pipeline::secret_set(&client.client()?, &repo, &name, allow_pull_requests).await,
        Command::Secret {
            command: SecretCommand::List { repo, client },
        } => pipeline::secret_list(&client.client()?, &repo).await,
        Command::Queue { client } => pipeline::queue(&client.client()?).await,
        Command::Runners { client } => pipeline::runners(&client.client()?).await,
        Command::Logs {
            pipeline,
            follow,
            client,
        } => {
            let ok = pipeline::follow(&client.client()?, pipeline, follow).await?;
            std::process::exit(if ok || !follow { 0 } else { 1 });
        }
        Command::Rerun {
            pipeline,
            failed,
            wait,
            client,
        } => {
            let ok = pipeline::rerun(&client.client()?, pipeline, failed, wait).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        Command::Cancel { pipeline, client } => pipeline::cancel(&client.client()?, pipeline).await,
        Command::RunnerToken {
            command: RunnerTokenCommand::Create { repos, client },
        } => pipeline::runner_token_create(&client.client()?, &repos).await,
        Command::Runner {
            server,
            token,
            name,
            labels,
            capacity,
            work_dir,
            credentials_dir,
            runtime,
            userns,
            ca_cert,
        } => {
            init_logging(
                &std::env::var("SLIPWAY_LOG").unwrap_or_else(|_| "info".into()),
                LogFormat::Human,
            );
            let mapping = userns_mapping(&userns)?;
            // The guard reaps our containers if this process is killed; it
            // lives as long as this pipe's write end (this process).
            let guard = std::process::Command::new(std::env::current_exe()?)
                .arg("runner-guard")
                .arg("--work-dir")
                .arg(&work_dir)
                .arg("--runtime")
                .arg(&runtime)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("starting the runner guard")?;
            let config = slipway_runner::agent::AgentConfig {
                server,
                registration_token: token,
                name,
                labels: labels.into_iter().filter(|l| !l.is_empty()).collect(),
                capacity,
                credentials_dir: credentials_dir
                    .unwrap_or_else(|| slipway_runner::agent::credentials::default_dir(&work_dir)),
                work_dir,
                runtime,
                mapping,
                cache_bytes: 10 << 30,
                ca_certs: read_ca_cert(ca_cert)?,
            };
            slipway_runner::agent::run(config, terminated()).await?;
            drop(guard);
            Ok(())
        }
        Command::Node {
            server,
            token,
            name,
            work_dir,
            credentials_dir,
            runtime,
            userns,
            router_host,
            router_ports,
            ca_cert,
        } => {
            init_logging(
                &std::env::var("SLIPWAY_LOG").unwrap_or_else(|_| "info".into()),
                LogFormat::Human,
            );
            let mapping = userns_mapping(&userns)?;
            let ports = router_ports
                .split_once('-')
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                })
                .filter(|(a, b)| *a > 0 && b > a)
                .with_context(|| {
                    format!("--router-ports {router_ports:?}: give FROM-TO, such as 20000-20999")
                })?;
            let config = slipway_runner::node_agent::NodeConfig {
                server,
                join_token: token,
                name,
                credentials_dir: credentials_dir
                    .unwrap_or_else(|| slipway_runner::agent::credentials::default_dir(&work_dir)),
                work_dir,
                runtime,
                mapping,
                router_host,
                router_ports: ports,
                cache_bytes: 10 << 30,
                ca_certs: read_ca_cert(ca_cert)?,
            };
            slipway_runner::node_agent::run(config, terminated()).await?;
            Ok(())
        }
        Command::NodeReset { work_dir, runtime } => {
            let stopped = slipway_runner::node_agent::reset(&work_dir, &runtime).await?;
            println!("stopped and removed {stopped} instance(s)");
            Ok(())
        }
        Command::RunnerGuard { work_dir, runtime } => {
            match slipway_runner::agent::guard::run(&work_dir, &runtime) {
                Ok(0) => {}
                Ok(n) => eprintln!(
                    "slipway runner-guard: removed {n} container(s) of a runner that died"
                ),
                Err(e) => eprintln!("slipway runner-guard: {e}"),
            }
            Ok(())
        }
        Command::Cluster {
            command:
                ClusterCommand::Add {
                    name,
                    kind,
                    kubeconfig,
                    namespace,
                    client,
                },
        } => {
            deploy::cluster_add(
                &client.client()?,
                &name,
                &kind,
                kubeconfig.as_deref(),
                namespace.as_deref(),
            )
            .await
        }
        Command::Cluster {
            command: ClusterCommand::List { client },
        } => deploy::cluster_list(&client.client()?).await,
        Command::Env {
            command: EnvCommand::List { repo, client },
        } => deploy::env_list(&client.client()?, repo.as_deref()).await,
        Command::Env {
            command:
                EnvCommand::Logs {
                    repo,
                    env,
                    follow,
                    client,
                },
        } => deploy::env_logs(&client.client()?, &repo, &env, follow).await,
        Command::Env {
            command:
                EnvCommand::Bind {
                    repo,
                    env,
                    cluster,
                    client,
                },
        } => deploy::env_bind(&client.client()?, &repo, &env, &cluster).await,
        Command::Env {
            command:
                EnvCommand::Secret {
                    command:
                        EnvSecretCommand::Set {
                            repo,
                            env,
                            name,
                            client,
                        },
                },
        } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            deploy::env_secret_set(&client.client()?, &repo, &env, &name, value).await
        }
        Command::Env {
            command:
                EnvCommand::Secret {
                    command: EnvSecretCommand::List { repo, env, client },
                },
        } => deploy::env_secret_list(&client.client()?, &repo, &env).await,
        Command::Promote {
            repo,
            to,
            wait,
            override_freeze,
            reason,
            client,
        } => {
            let promotion = deploy::Promotion {
                repo: &repo,
                to: &to,
                override_freeze,
                reason: reason.as_deref(),
            };
            if !deploy::promote(&client.client()?, promotion, wait).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Rollback {
            repo,
            env,
            to,
            reason,
            wait,
            client,
        } => {
            let client = client.client()?;
            if !deploy::rollback(&client, &repo, &env, to.as_deref(), reason.as_deref(), wait)
                .await?
            {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Abort {
            deployment,
            reason,
            client,
        } => deploy::abort(&client.client()?, deployment, reason.as_deref()).await,
        Command::Approve {
            deployment,
            comment,
            wait,
            client,
        } => {
            let client = client.client()?;
            if !gates::decide(&client, deployment, true, comment.as_deref(), wait).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Reject {
            deployment,
            comment,
            client,
        } => {
            gates::decide(&client.client()?, deployment, false, Some(&comment), false).await?;
            Ok(())
        }
        Command::Trace {
            repo,
            env,
            instance,
            json,
            client,
        } => {
            let what = match (&instance, &repo, &env) {
                (Some(i), _, _) => gates::Traced::Instance(i),
                (None, Some(r), Some(e)) => gates::Traced::Environment(r, e),
                _ => anyhow::bail!("give REPO --env ENV, or --instance NAME"),
            };
            gates::trace(&client.client()?, what, json).await
        }
        Command::Audit {
            repo,
            env,
            json_lines,
            client,
        } => {
            gates::audit(
                &client.client()?,
                repo.as_deref(),
                env.as_deref(),
                json_lines,
            )
            .await
        }
        Command::Env {
            command:
                EnvCommand::Protect {
                    repo,
                    env,
                    approvals,
                    approver_role,
                    approvers,
                    allow_self_approval,
                    approval_ttl,
                    deployer_role,
                    deployers,
                    freezes,
                    client,
                },
        } => {
            let policy = gates::Protect {
                approvals,
                approver_role,
                approvers,
                allow_self_approval,
                approval_ttl,
                deployer_role,
                deployers,
                freezes,
            };
            gates::protect(&client.client()?, &repo, &env, policy).await
        }
        Command::Env {
            command: EnvCommand::Protection { repo, env, client },
        } => gates::protection(&client.client()?, &repo, &env).await,
        Command::Deployments { repo, env, client } => {
            deploy::history(&client.client()?, &repo, env.as_deref()).await
        }
        Command::Lint { file } => {
            let code = cli_lint(&file)?;
            std::process::exit(code);
        }
        Command::Build { args, client } => {
            init_logging("warn", LogFormat::Human);
            build::run(args, client.server, client.token).await
        }
        Command::Exec {
            image,
            net,
            pull,
            userns,
            memory,
            pids,
            cpus,
            timeout,
            mounts,
            env,
            work_dir,
            runtime,
            client,
            command,
        } => {
            init_logging("warn", LogFormat::Human);
            let code = exec::run(exec::ExecArgs {
                server: client.server,
                token: client.token,
                image,
                net,
                pull,
                userns,
                memory,
                pids,
                cpus,
                timeout,
                mounts,
                env,
                work_dir,
                runtime,
                command,
            })
            .await?;
            std::process::exit(code);
        }
        Command::Registry {
            command: RegistryCommand::Gc { dry_run, client },
        } => {
            let path = if dry_run {
                "/api/v1/registry/gc?dry_run=true"
            } else {
                "/api/v1/registry/gc"
            };
            let report: serde_json::Value = client.client()?.post(path, &json!({})).await?;
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} blobs ({} bytes), {} untagged manifests, {} expired uploads, {} orphan files",
                report["blobs_removed"], report["bytes_freed"], report["manifests_removed"], report["uploads_expired"], report["orphan_files_removed"]
            );
            Ok(())
        }
    }
}
