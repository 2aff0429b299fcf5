//! Instance logs: the shim writes the container's stdout and stderr into
//! `log`, moved to `log.1` at the cap. The tail reads the end of both; a
//! follower reads what is appended, across moves.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Supervisor;

/// How much of the end of the log files the tail reads.
const TAIL_BYTES: u64 = 256 * 1024;
/// How often a follower looks for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

fn read_end(path: &Path, bytes: u64) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut out = Vec::new();
    let _ = file.take(bytes).read_to_end(&mut out);
    out
}

/// The last `lines` lines of the log in `dir`.
pub(super) fn tail(dir: &Path, lines: usize) -> Vec<String> {
    let mut bytes = read_end(&dir.join("log.1"), TAIL_BYTES);
    bytes.extend(read_end(&dir.join("log"), TAIL_BYTES));
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Reads an instance's log as it grows (see [`Supervisor::follow_log`]).
pub struct LogFollow {
    path: PathBuf,
    file: Option<std::fs::File>,
    inode: u64,
    offset: u64,
}

impl LogFollow {
    /// The next output: waits for it (checking every 250 ms). `None` once
    /// the instance is gone.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(bytes) = self.read_new() {
                return Some(bytes);
            }
            if !self.path.parent().is_some_and(Path::exists) {
                return None;
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }

    fn read_new(&mut self) -> Option<Vec<u8>> {
        let meta = std::fs::metadata(&self.path).ok()?;
        if self.file.is_none() || meta.ino() != self.inode || meta.len() < self.offset {
            // Moved to log.1 (or new): the current file from its start.
            self.file = Some(std::fs::File::open(&self.path).ok()?);
            self.inode = meta.ino();
            self.offset = 0;
        }
        let file = self.file.as_mut()?;
        file.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut out = Vec::new();
        file.take(1 << 20).read_to_end(&mut out).ok()?;
        if out.is_empty() {
            return None;
        }
        self.offset += out.len() as u64;
        Some(out)
    }
}

impl Supervisor {
    /// The last `lines` lines instance `id` wrote (stdout and stderr
    /// interleaved as written); empty for an unknown instance.
    pub fn log_tail(&self, id: &str, lines: usize) -> Vec<String> {
        match self.inner.instance(id) {
            Ok(instance) => tail(&instance.dir, lines),
            Err(_) => Vec::new(),
        }
    }

    /// Follow instance `id`'s log from its current end.
    pub fn follow_log(&self, id: &str) -> Option<LogFollow> {
        let instance = self.inner.instance(id).ok()?;
        let path = instance.dir.join("log");
        let meta = std::fs::metadata(&path).ok();
        Some(LogFollow {
            file: std::fs::File::open(&path).ok(),
            inode: meta.as_ref().map_or(0, |m| m.ino()),
            offset: meta.map_or(0, |m| m.len()),
            path,
        })
    }
}
