//! Reaching a port inside a network namespace without any host networking.
//!
//! A socket belongs to the network namespace of the thread that created it, for
//! its whole life. So a thread enters the namespace (`setns`), creates the
//! socket and hands it back; the connect, and all traffic, then happen from
//! any thread. No veth pair, bridge, private address range or port published
//! on the host is needed: this is how the router and the health checks reach an
//! instance whose namespace has loopback only.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::net::{TcpSocket, TcpStream};

/// A TCP socket created inside the network namespace bound at `netns` (a file
/// such as a pod's `netns`, or `/proc/<pid>/ns/net`).
pub async fn socket_in(netns: &Path) -> io::Result<TcpSocket> {
    let netns: PathBuf = netns.to_owned();
    let fd = tokio::task::spawn_blocking(move || socket_in_blocking(&netns))
        .await
        .map_err(io::Error::other)??;
    // SAFETY: `fd` is a fresh, owned TCP socket.
    let std_socket = unsafe { std::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
    std_socket.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(std_socket))
}

/// Connect to `127.0.0.1:port` inside the network namespace at `netns`.
pub async fn connect(netns: &Path, port: u16) -> io::Result<TcpStream> {
    let socket = socket_in(netns).await?;
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
}

/// Runs on a blocking-pool thread: enter the namespace on a fresh thread (so
/// no pooled thread is ever left in another namespace), make the socket there.
fn socket_in_blocking(netns: &Path) -> io::Result<OwnedFd> {
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&file),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(io::Error::from)?;
                let fd = rustix::net::socket_with(
                    rustix::net::AddressFamily::INET,
                    rustix::net::SocketType::STREAM,
                    rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
                    None,
                )?;
                Ok(fd)
            })
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    })
}
