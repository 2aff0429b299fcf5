//! The container root filesystem: an overlayfs mount of the cached layers (read
//! only, shared) with a per-container upper dir on top.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// Mount `lower` (bottom layer first) under `target` with `upper`/`work` beside it.
/// An image with no layers gets an empty lower dir at `empty`. `upper_owner` is
/// the host uid/gid the root directory belongs to (container root's, in a user
/// namespace): overlayfs shows the upper dir's owner for `/`.
pub fn mount_overlay(
    lower: &[&Path],
    empty: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
    upper_owner: Option<(u32, u32)>,
) -> io::Result<()> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir)?;
    }
    if let Some((uid, gid)) = upper_owner {
        std::os::unix::fs::chown(upper, Some(uid), Some(gid))?;
    }
    let lowers: Vec<PathBuf> = if lower.is_empty() {
        std::fs::create_dir_all(empty)?;
        vec![empty.to_owned()]
    } else {
        // overlayfs lists the top layer first.
        lower.iter().rev().map(|p| p.to_path_buf()).collect()
    };
    for path in lowers
        .iter()
        .chain([upper.to_owned(), work.to_owned()].iter())
    {
        let text = path.to_string_lossy();
        if text.contains(',') || text.contains(':') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{text} cannot be an overlay directory (contains , or :)"),
            ));
        }
    }
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        // Renamed directories and metadata-only changes are then written out
        // in full, so an upper dir is always a plain layer diff (builds turn
        // it into a layer) whatever the kernel's defaults.
        "lowerdir={lowerdir},upperdir={},workdir={},redirect_dir=off,metacopy=off",
        upper.display(),
        work.display()
    );
    let data = CString::new(data).map_err(io::Error::other)?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )?;
    Ok(())
}

/// Mount `lower` (bottom layer first) merged and read-only at `target`, with no
/// upper dir (overlayfs then needs two lower dirs: an empty one goes at the
/// bottom).
pub fn mount_read_only(lower: &[&Path], empty: &Path, target: &Path) -> io::Result<()> {
    for dir in [empty, target] {
        std::fs::create_dir_all(dir)?;
    }
    let mut lowers: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    lowers.push(empty.to_string_lossy().into_owned());
    if let Some(bad) = lowers.iter().find(|p| p.contains([',', ':'])) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{bad} cannot be an overlay directory (contains , or :)"),
        ));
    }
    let data = CString::new(format!("lowerdir={}", lowers.join(":"))).map_err(io::Error::other)?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::RDONLY,
        data.as_c_str(),
    )?;
    Ok(())
}

/// Unmount (lazily, so a busy mount never blocks cleanup). Not mounted is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}
