//! Where the accept loops run: on the caller's runtime, or on the router's
//! own threads, each a single-threaded runtime with its own copy of the
//! listeners (`SO_REUSEPORT`: the kernel spreads new connections over them)
//! and its own upstream connection pools, so a request and its upstream
//! connection stay on one thread, as in nginx's workers.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{listen, Shared, Side};

/// Pending connections a listener queues before accepting.
const BACKLOG: i32 = 1024;

thread_local! {
    /// This thread's number among its router's threads (0 elsewhere): which
    /// upstream pool its requests use.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

pub(super) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// The running accept loops.
pub(super) enum Running {
    Tasks(Vec<JoinHandle<()>>),
    /// Each sender is dropped when its thread has finished.
    Threads(Vec<oneshot::Receiver<()>>),
}

impl Running {
    pub async fn join(self) {
        match self {
            Running::Tasks(tasks) => {
                for task in tasks {
                    let _ = task.await;
                }
            }
            Running::Threads(threads) => {
                for thread in threads {
                    let _ = thread.await;
                }
            }
        }
    }
}

/// `copies` listening sockets on `addr` (one port, chosen by the first when
/// `addr`'s is 0), with `SO_REUSEPORT` when more than one.
pub(super) fn bind(addr: SocketAddr, copies: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(copies);
    let mut addr = addr;
    for _ in 0..copies.max(1) {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let socket: OwnedFd = rustix::net::socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        sockopt::set_socket_reuseaddr(&socket, true)?;
        if copies > 1 {
            sockopt::set_socket_reuseport(&socket, true)?;
        }
        rustix::net::bind(&socket, &addr)?;
        rustix::net::listen(&socket, BACKLOG)?;
        let listener = std::net::TcpListener::from(socket);
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Start the accept loops: on the caller's runtime when `threads` is 0,
/// else on `threads` threads of their own, the `i`-th serving `live[i]` and
/// `preview[i]`.
pub(super) fn start(
    shared: &Arc<Shared>,
    threads: usize,
    live: Vec<std::net::TcpListener>,
    preview: Vec<std::net::TcpListener>,
    stop: &watch::Receiver<bool>,
) -> io::Result<Running> {
    if threads == 0 {
        let mut tasks = Vec::new();
        let sides = live
            .into_iter()
            .map(|l| (l, Side::Live))
            .chain(preview.into_iter().map(|l| (l, Side::Preview)));
        for (listener, side) in sides {
            let listener = TcpListener::from_std(listener)?;
            tasks.push(tokio::spawn(listen::accept_loop(
                listener,
                shared.clone(),
                side,
                stop.clone(),
            )));
        }
        return Ok(Running::Tasks(tasks));
    }
    let mut runtimes = Vec::with_capacity(threads);
    for _ in 0..threads {
        runtimes.push(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
    }
    let mut preview = preview.into_iter();
    let mut done = Vec::with_capacity(threads);
    for (index, (runtime, live)) in runtimes.into_iter().zip(live).enumerate() {
        let preview = preview.next();
        let (finished, finish) = oneshot::channel::<()>();
        let (shared, stop) = (shared.clone(), stop.clone());
        let name = format!("router-{index}");
        std::thread::Builder::new().name(name).spawn(move || {
            WORKER.with(|w| w.set(index));
            runtime.block_on(async move {
                let mut loops = Vec::new();
                for (listener, side) in [(Some(live), Side::Live), (preview, Side::Preview)] {
                    let Some(listener) = listener else { continue };
                    match TcpListener::from_std(listener) {
                        Ok(listener) => loops.push(tokio::spawn(listen::accept_loop(
                            listener,
                            shared.clone(),
                            side,
                            stop.clone(),
                        ))),
                        Err(e) => tracing::error!(app = %shared.config.app, env = %shared.config.env, "router thread {index}: registering its listener: {e}"),
                    }
                }
                for accept_loop in loops {
                    let _ = accept_loop.await;
                }
            });
            drop(finished);
        })?;
        done.push(finish);
    }
    Ok(Running::Threads(done))
}
