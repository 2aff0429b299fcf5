//! `slipway`: the one binary. `server` runs Slipway; the other subcommands are
//! admin tools (`user add` works on the data directory directly) and clients of
//! a running server's REST API.

mod api;
mod app;
mod auth;
mod client;
mod config;
mod db;
mod health;
mod metrics;
mod registry_gc;
mod serve;

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;

use crate::config::{LogFormat, Overrides, Settings};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
