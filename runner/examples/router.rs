//! The deploy router on its own, for `bench/router.sh`.
//!
//! `router LISTEN PORT[,PORT...] [--netns PATH] [--workers N]`: route
//! `LISTEN` to `127.0.0.1:PORT` (inside the network namespace at `PATH` when
//! given) until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use slipway_runner::router::{Backend, RouteTable, Router, RouterConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: router LISTEN PORT[,PORT...] [--netns PATH] [--workers N]";
    let listen: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(usage));
    let ports: Vec<u16> = args
        .next()
        .map(|a| {
            a.split(',')
                .map(|p| p.parse().unwrap_or_else(|_| fail(usage)))
                .collect()
        })
        .unwrap_or_else(|| fail(usage));
    let mut netns: Option<PathBuf> = None;
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| fail(usage));
        match flag.as_str() {
            "--netns" => netns = Some(value.into()),
            "--workers" => workers = value.parse().unwrap_or_else(|_| fail(usage)),
            _ => fail(usage),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("starting the runtime: {e}")));
    runtime.block_on(async move {
        let router = Router::start(RouterConfig::new("bench", "bench", listen))
            .await
            .unwrap_or_else(|e| fail(&format!("listening on {listen}: {e}")));
        let live = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| Backend {
                id: format!("upstream-{i}"),
                version: "bench".into(),
                netns: netns.clone(),
                port,
            })
            .collect();
        router.set_table(RouteTable {
            live,
            preview: Vec::new(),
        });
        eprintln!("router: listening on {}", router.local_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .unwrap_or_else(|e| fail(&format!("SIGTERM handler: {e}")));
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        router.shutdown().await;
    });
}

fn fail(message: &str) -> ! {
    eprintln!("router: {message}");
    std::process::exit(2)
}
