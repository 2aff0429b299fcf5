//! The runner's guard: a second process that outlives a killed runner just long
//! enough to remove its containers.
//!
//! A container does not die with the `runc run` that started it, so a runner
//! killed with SIGKILL would leave its steps and services running until the
//! next start reaped them. `slipway runner` therefore starts
//! `slipway runner-guard` with a pipe as its stdin and never writes to it: when
//! the runner is gone, for whatever reason, the pipe reads end-of-file, and the
//! guard opens the engine root, which reaps every container, mount, pod and
//! cgroup of dead processes (see `container::Engine::open`), and removes the
//! workspaces. It ignores SIGINT and SIGTERM, so a Ctrl-C that stops the runner
//! gracefully does not take the guard with it first.

use std::io::Read;
use std::path::Path;

use crate::container::Engine;

/// Block until stdin closes, then clean up after the runner. Returns what was
/// reaped, for the log.
pub fn run(work_dir: &Path, runtime: &Path) -> Result<usize, String> {
    // SAFETY: setting the disposition of two signals to "ignore".
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let runner = std::os::unix::process::parent_id();
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    // A dying process closes its files before it is a zombie: until the runner
    // is really gone, reaping would take its containers for a live process's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while crate::layer::pid_alive(runner) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let containers = work_dir.join("engine").join("containers");
    let before = std::fs::read_dir(&containers)
        .map(|d| d.count())
        .unwrap_or(0);
    Engine::open(work_dir.join("engine"), runtime).map_err(|e| e.to_string())?;
    let after = std::fs::read_dir(&containers)
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(work_dir.join("jobs"));
    Ok(before.saturating_sub(after))
}
