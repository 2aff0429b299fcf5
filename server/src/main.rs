//! `slipway`: the one binary. `server` runs Slipway; the other subcommands are
//! admin tools (`user add` works on the data directory directly) and clients of
//! a running server's REST API.

mod api;
mod app;
mod auth;
mod cli;
mod client;
mod config;
mod db;
mod deploy;
mod health;
mod listen;
mod metrics;
mod pipeline;
mod registry_client;
mod registry_gc;
mod serve;
mod ui;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Two rustls crypto backends are linked (reqwest brings ring beside
    // aws-lc-rs); naming the process default means no TLS configuration
    // built without an explicit provider can fail to choose one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    cli::run().await
}
