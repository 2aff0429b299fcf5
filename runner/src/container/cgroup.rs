//! A memory cgroup the engine owns above runc's, so that an OOM kill can be told
//! apart from any other SIGKILL.
//!
//! `runc run` removes the container's cgroup when the container exits, and with
//! it the OOM counters. So the limit is set on a parent cgroup the engine creates
//! (`<memory hierarchy>/slipway/<id>`), runc is given `/slipway/<id>/ctr` beneath
//! it, and after the container ends the parent's `oom_kill` counter says whether
//! the limit killed it. cgroup v1 only for now; elsewhere the limit goes into the
//! runtime spec and no reason is reported.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

pub struct MemoryCgroup {
    dir: PathBuf,
    pub limit: i64,
}

impl MemoryCgroup {
    /// Create the parent cgroup with the limit, on a cgroup v1 host.
    pub fn create(id: &str, limit: i64) -> Option<MemoryCgroup> {
        let memory = Path::new(ROOT).join("memory");
        if !memory.join("memory.oom_control").exists() {
            return None;
        }
        let dir = memory.join("slipway").join(id);
        std::fs::create_dir_all(&dir).ok()?;
        let group = MemoryCgroup { dir, limit };
        let set = |file: &str| std::fs::write(group.dir.join(file), limit.to_string());
        // No swap beyond the limit where swap accounting exists.
        let ok = set("memory.limit_in_bytes").is_ok()
            && (!group.dir.join("memory.memsw.limit_in_bytes").exists()
                || set("memory.memsw.limit_in_bytes").is_ok());
        ok.then_some(group)
    }

    /// The `cgroupsPath` to give runc.
    pub fn runc_path(id: &str) -> String {
        format!("/slipway/{id}/ctr")
    }

    /// Did the memory limit kill the container? In cgroup v1 the `oom_kill`
    /// counter belongs to the victim's own cgroup (runc's, already gone), and
    /// recent kernels no longer maintain v1 `failcnt`; the evidence here is a
    /// SIGKILL while this cgroup's peak usage reached its limit.
    pub fn oom_killed(&self, exit_code: i32) -> bool {
        let read = |file: &str| std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let number = |file: &str| read(file).trim().parse::<i64>().unwrap_or(0);
        let oom_kills = read("memory.oom_control")
            .lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        let peak =
            number("memory.max_usage_in_bytes").max(number("memory.memsw.max_usage_in_bytes"));
        oom_kills > 0 || (exit_code == 137 && peak >= self.limit)
    }
}

/// Remove the cgroups of container `id` in every hierarchy (runc's leaf first,
/// then the engine's parent). Missing ones are fine.
pub fn remove(id: &str) {
    let Ok(hierarchies) = std::fs::read_dir(ROOT) else {
        return;
    };
    for h in hierarchies.flatten() {
        let parent = h.path().join("slipway").join(id);
        let _ = std::fs::remove_dir(parent.join("ctr"));
        let _ = std::fs::remove_dir(&parent);
    }
}

/// "256 MiB", "1.5 GiB", "1000 bytes".
pub fn human(bytes: i64) -> String {
    const MIB: i64 = 1 << 20;
    const GIB: i64 = 1 << 30;
    if bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(256 << 20), "256 MiB");
        assert_eq!(super::human(2 << 30), "2 GiB");
        assert_eq!(super::human((3 << 29) + 1), "1.5 GiB");
        assert_eq!(super::human(1000), "1000 bytes");
    }
}
