//! `instances/<id>/instance.json`: what a new supervisor needs to adopt an
//! instance. Written to a temp file and renamed, so it is never half written.
//! The environment is not in it (it may hold secrets): it lives in runc's
//! `config.json` only, readable by root alone, and a restart reuses that.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    pub id: String,
    pub container_id: String,
    pub port: u16,
    pub health: String,
    pub image: String,
    /// Layer digests, bottom first (leased again on adoption).
    pub layers: Vec<String>,
    pub restarts: u32,
    /// The running shim: its pid and start time (clock ticks after boot, from
    /// `/proc/<pid>/stat`), which tells it from a later process with its pid.
    pub shim: Option<ShimRecord>,
    /// A stop began: whatever remains is removed at the next open.
    pub stopping: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct ShimRecord {
    pub pid: u32,
    pub start_time: u64,
}

const FILE: &str = "instance.json";

impl Record {
    pub fn load(dir: &Path) -> io::Result<Record> {
        let bytes = std::fs::read(dir.join(FILE))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        serde_json::to_writer(&mut file, self).map_err(io::Error::other)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))
    }
}
