//! Instances' output, shipped by nodes and appended by offset (a resend never
//! duplicates), kept per instance under `<data>/instance-logs/` and capped:
//! past [`MAX_BYTES`] the older half is dropped.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MAX_BYTES: u64 = 4 << 20;

#[derive(Clone)]
pub struct InstanceLogs {
    dir: PathBuf,
}

impl InstanceLogs {
    pub fn new(data_dir: &Path) -> InstanceLogs {
        InstanceLogs {
            dir: data_dir.join("instance-logs"),
        }
    }

    fn path(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{instance}.log"))
    }

    /// Bytes `offset..` of the node's stream for `instance`; returns the
    /// stream length the server now holds. The node's offsets count every
    /// byte it ever sent; the file keeps the last [`MAX_BYTES`] of them, and
    /// a side file remembers how many were dropped.
    pub fn append(&self, instance: &str, offset: u64, bytes: &[u8]) -> std::io::Result<u64> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(instance);
        let dropped = self.dropped(instance);
        let held = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let length = dropped + held;
        if offset > length {
            return Ok(length);
        }
        let skip = (length - offset) as usize;
        if skip >= bytes.len() {
            return Ok(length);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(&bytes[skip..])?;
        let held = held + (bytes.len() - skip) as u64;
        if held > MAX_BYTES {
            let keep = MAX_BYTES / 2;
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(held - keep))?;
            let mut tail = Vec::with_capacity(keep as usize);
            file.read_to_end(&mut tail)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &tail)?;
            std::fs::rename(&tmp, &path)?;
            std::fs::write(
                self.dir.join(format!("{instance}.dropped")),
                (dropped + held - keep).to_string(),
            )?;
        }
        Ok(length + (bytes.len() - skip) as u64)
    }

    /// Forget an instance's log (its row is gone).
    pub fn remove(&self, instance: &str) {
        let _ = std::fs::remove_file(self.path(instance));
        let _ = std::fs::remove_file(self.dir.join(format!("{instance}.dropped")));
    }

    fn dropped(&self, instance: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(format!("{instance}.dropped")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The held log of `instance` from stream offset `from` (clamped to what
    /// is held), and the stream length.
    pub fn read(&self, instance: &str, from: u64) -> (Vec<u8>, u64) {
        let dropped = self.dropped(instance);
        let Ok(mut file) = std::fs::File::open(self.path(instance)) else {
            return (Vec::new(), dropped);
        };
        let held = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.saturating_sub(dropped).min(held);
        let mut out = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.take(MAX_BYTES).read_to_end(&mut out);
        }
        (out, dropped + held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_by_offset_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let logs = InstanceLogs::new(dir.path());
        assert_eq!(logs.append("web-dev-1", 0, b"hello\n").unwrap(), 6);
        // A resend of what is held changes nothing; an overlap adds the rest.
        assert_eq!(logs.append("web-dev-1", 0, b"hello\n").unwrap(), 6);
        assert_eq!(logs.append("web-dev-1", 3, b"lo\nworld\n").unwrap(), 12);
        assert_eq!(logs.read("web-dev-1", 0).0, b"hello\nworld\n");
        // A gap is refused: the length says where to resend from.
        assert_eq!(logs.append("web-dev-1", 20, b"x").unwrap(), 12);
        let big = vec![b'a'; MAX_BYTES as usize];
        let length = logs.append("web-dev-1", 12, &big).unwrap();
        assert_eq!(length, 12 + MAX_BYTES);
        let (held, total) = logs.read("web-dev-1", 0);
        assert_eq!(total, length);
        assert_eq!(held.len() as u64, MAX_BYTES / 2);
    }
}
