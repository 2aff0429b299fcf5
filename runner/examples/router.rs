//! The deploy router on its own, for `bench/router.sh`.
//!
//! `router LISTEN PORT[,PORT...] [--netns PATH] [--workers N] [--shared-runtime]`:
//! route `LISTEN` to `127.0.0.1:PORT` (inside the network namespace at `PATH`
//! when given) until SIGTERM or SIGINT. With N threads of the router's own
//! (`RouterConfig::threads`, default: one per CPU), or with
//! `--shared-runtime` on a multi-threaded tokio runtime of N workers, as
//! when the router shares the node agent's runtime.

use std::net::SocketAddr;
use std::path::PathBuf;

use slipway_runner::router::{Backend, RouteTable, Router, RouterConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: router LISTEN PORT[,PORT...] [--netns PATH] [--workers N] [--shared-runtime]";
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
    let mut shared_runtime = false;
    while let Some(flag) = args.next() {
        if flag == "--shared-runtime" {
            shared_runtime = true;
            continue;
        }
        let value = args.next().unwrap_or_else(|| fail(usage));
        match flag.as_str() {
            "--netns" => netns = Some(value.into()),
            "--workers" => workers = value.parse().unwrap_or_else(|_| fail(usage)),
            _ => fail(usage),
        }
    }
    let mut runtime = if shared_runtime {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = runtime
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("starting the runtime: {e}")));
    runtime.block_on(async move {
        let mut config = RouterConfig::new("bench", "bench", listen);
        config.threads = if shared_runtime { 0 } else { workers };
        let router = Router::start(config)
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
