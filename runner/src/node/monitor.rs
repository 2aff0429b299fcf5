//! One task per instance: health checks while it runs, and when its container
//! ends (the shim exits: a pidfd says so, nothing is polled) the exit code is
//! recorded, the container removed, and it is started again after a backoff
//! (`backoff_initial` doubling to `backoff_max`; back to the start after it
//! ran [`STABLE_RUN`]), counting restarts.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Inner, Instance, InstanceState};

/// A run this long resets the backoff to its initial delay.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// A running shim, watched through a pidfd (works for a shim a previous
/// agent started too: it is not our child).
pub(crate) struct ShimProcess {
    pub pid: u32,
    pub start_time: u64,
    fd: AsyncFd<OwnedFd>,
}

impl ShimProcess {
    /// Watch shim `pid`, if it is still the process that started at
    /// `start_time` (and not a later process with a recycled pid).
    pub fn watch(pid: u32, start_time: u64) -> std::io::Result<ShimProcess> {
        let gone = || std::io::Error::new(std::io::ErrorKind::NotFound, "the shim is gone");
        let raw = rustix::process::Pid::from_raw(pid as i32).ok_or_else(gone)?;
        let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::NONBLOCK)?;
        // Checked after opening: the pidfd now pins this very process.
        if super::adopt::start_time(pid) != Some(start_time) {
            return Err(gone());
        }
        ShimProcess::with_pidfd(pid, start_time, fd)
    }

    /// A shim whose pidfd is already open.
    pub fn with_pidfd(pid: u32, start_time: u64, fd: OwnedFd) -> std::io::Result<ShimProcess> {
        // SAFETY: an `OwnedFd` keeps its descriptor open and the same for as
        // long as it lives, and the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(ShimProcess {
            pid,
            start_time,
            fd,
        })
    }

    /// Resolves once the shim has exited.
    pub async fn exited(&self) {
        // A pidfd stays readable once its process has exited.
        let _ = self.fd.readable().await;
    }

    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.fd, rustix::process::Signal::KILL);
    }
}

/// Start the instance's monitor task for its running `shim`.
pub(super) fn spawn(inner: Arc<Inner>, instance: Arc<Instance>, shim: Arc<ShimProcess>) {
    let task = tokio::spawn(run(inner, instance.clone(), shim));
    *instance.task.lock().unwrap() = Some(task);
}

async fn run(inner: Arc<Inner>, instance: Arc<Instance>, mut shim: Arc<ShimProcess>) {
    let mut stop = instance.stop.subscribe();
    let mut crashes: u32 = 0;
    loop {
        let running_since = Instant::now();
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = shim.exited() => {}
            () = super::health::watch(&inner, &instance) => {}
        }
        let exit_code = super::shim::read_exit(&instance.dir);
        tracing::warn!(instance = %instance.id, ?exit_code, "instance exited");
        {
            let mut live = instance.live.lock().unwrap();
            live.state = InstanceState::Crashed { exit_code };
            live.pid = None;
            live.ready_since = None;
            live.failures = 0;
        }
        *instance.shim.lock().unwrap() = None;
        inner.notify();
        super::instance_stop::delete_container(&inner, &instance).await;
        if running_since.elapsed() >= STABLE_RUN {
            crashes = 0;
        }
        loop {
            let backoff = inner
                .options
                .backoff_initial
                .saturating_mul(1 << crashes.min(16))
                .min(inner.options.backoff_max);
            crashes = crashes.saturating_add(1);
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(backoff) => {}
            }
            let restarted = super::instance_start::launch(&inner, &instance).await;
            let restarts = {
                let mut live = instance.live.lock().unwrap();
                live.restarts += 1;
                if restarted.is_ok() {
                    live.state = InstanceState::Starting;
                }
                live.restarts
            };
            {
                let mut record = instance.record.lock().unwrap();
                record.restarts = restarts;
                let _ = record.save(&instance.dir);
            }
            inner.notify();
            match restarted {
                Ok(new) => {
                    shim = new;
                    break;
                }
                Err(e) => {
                    tracing::warn!(instance = %instance.id, error = %e, "restart failed");
                    super::instance_stop::delete_container(&inner, &instance).await;
                }
            }
        }
    }
}
