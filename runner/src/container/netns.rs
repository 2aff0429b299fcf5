//! Reaching a port inside a network namespace without any host networking.
//!
//! A socket belongs to the network namespace of the thread that created it, for
//! its whole life. So a thread enters the namespace (`setns`), creates the
//! socket and hands it back; the connect, and all traffic, then happen from
//! any thread. No veth pair, bridge, private address range or port published
//! on the host is needed: this is how the router and the health checks reach an
//! instance whose namespace has loopback only.
//!
//! One long-lived thread of the process makes every such socket: it enters the
//! target namespace, creates the socket and goes back to its home namespace,
//! a few microseconds per socket and no thread per connection. It never stays
//! in a namespace between sockets, so it never keeps one alive. A [`Namespace`]
//! holds the namespace open (its descriptor), so making many sockets costs no
//! path lookup; dropping it lets the namespace go.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// An open network namespace: the descriptor of a file such as a pod's
/// `netns` or `/proc/<pid>/ns/net`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Namespace {
    fd: Arc<OwnedFd>,
}

impl Namespace {
    pub fn open(netns: &Path) -> io::Result<Namespace> {
        let file = std::fs::File::open(netns)?;
        Ok(Namespace {
            fd: Arc::new(file.into()),
        })
    }

    /// A TCP socket created inside this namespace.
    pub async fn socket(&self) -> io::Result<TcpSocket> {
        let (reply, answer) = oneshot::channel();
        maker()?
            .send(Job {
                namespace: self.fd.clone(),
                reply,
            })
            .map_err(|_| io::Error::other("the namespace socket thread is gone"))?;
        let fd = answer
            .await
            .map_err(|_| io::Error::other("the namespace socket thread is gone"))??;
        // SAFETY: `fd` is a fresh, owned, non-blocking TCP socket.
        let std_socket = unsafe { std::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
        Ok(TcpSocket::from_std_stream(std_socket))
    }

    /// Connect to `127.0.0.1:port` inside this namespace.
    pub async fn connect(&self, port: u16) -> io::Result<TcpStream> {
        let socket = self.socket().await?;
        socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
    }
}

/// A TCP socket created inside the network namespace bound at `netns` (a file
/// such as a pod's `netns`, or `/proc/<pid>/ns/net`).
pub async fn socket_in(netns: &Path) -> io::Result<TcpSocket> {
    Namespace::open(netns)?.socket().await
}

/// Connect to `127.0.0.1:port` inside the network namespace at `netns`.
pub async fn connect(netns: &Path, port: u16) -> io::Result<TcpStream> {
    Namespace::open(netns)?.connect(port).await
}

struct Job {
    namespace: Arc<OwnedFd>,
    reply: oneshot::Sender<io::Result<OwnedFd>>,
}

static MAKER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// The socket thread's queue, starting the thread on first use (or again if
/// it ended after failing to go home).
fn maker() -> io::Result<mpsc::Sender<Job>> {
    let mut maker = MAKER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = maker.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    let (started, start) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("netns-sockets".into())
        .spawn(move || {
            let home = match std::fs::File::open("/proc/thread-self/ns/net") {
                Ok(home) => {
                    let _ = started.send(Ok(()));
                    home
                }
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            for job in jobs {
                match socket_there(&job.namespace, &home) {
                    Made::Socket(result) => {
                        let _ = job.reply.send(result);
                    }
                    Made::Stranded(e) => {
                        // This thread is in a namespace not its own: end it,
                        // so no later socket is made in the wrong place.
                        let _ = job.reply.send(Err(e));
                        MAKER.lock().unwrap_or_else(|e| e.into_inner()).take();
                        return;
                    }
                }
            }
        })?;
    start
        .recv()
        .map_err(|_| io::Error::other("the namespace socket thread died at start"))??;
    *maker = Some(sender.clone());
    Ok(sender)
}

enum Made {
    Socket(io::Result<OwnedFd>),
    /// Could not return to the home namespace.
    Stranded(io::Error),
}

/// On the socket thread: enter `namespace`, make the socket, go `home`.
fn socket_there(namespace: &OwnedFd, home: &std::fs::File) -> Made {
    if let Err(e) = move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network)) {
        return Made::Socket(Err(e.into()));
    }
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )
    .map_err(io::Error::from);
    match move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network)) {
        Ok(()) => Made::Socket(socket),
        Err(e) => Made::Stranded(io::Error::other(format!(
            "returning the namespace socket thread to its own network namespace: {e}"
        ))),
    }
}
