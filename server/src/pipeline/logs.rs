//! Step logs: append-only files, one per step attempt, with a line index beside
//! each, never database rows.
//!
//! `<data>/logs/<job>/<position>.<attempt>.log` holds the bytes;
//! `….idx` holds, as little-endian u64s, the byte offset where each line after
//! the first starts, so a line range or the tail is two small reads.
//!
//! Appends are idempotent by offset: a runner sends each chunk with the offset
//! it starts at. Bytes the file already has are skipped (a resend after a lost
//! acknowledgement); a chunk starting beyond the end is refused with the
//! length, and the runner resends from there. An acknowledged append has been
//! written, so it survives the server process being killed.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the log has {length} bytes; an append at offset {offset} would leave a gap")]
    Gap { length: u64, offset: u64 },
    #[error("log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct Logs {
    root: PathBuf,
    /// One lock per log file being appended to.
    locks: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
    /// Woken after every append, for live readers.
    pub appended: Arc<tokio::sync::Notify>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Logs {
    pub fn new(data_dir: &Path) -> Logs {
        Logs {
            root: data_dir.join("logs"),
            locks: Arc::default(),
            appended: Arc::default(),
        }
    }

    pub fn path(&self, job: i64, position: i64, attempt: i64) -> PathBuf {
        self.root
            .join(job.to_string())
            .join(format!("{position}.{attempt}.log"))
    }

    fn index_path(log: &Path) -> PathBuf {
        log.with_extension("idx")
    }

    /// Append `bytes`, which start at `offset` of the log. Returns the length
    /// afterwards.
    pub fn append(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, LogError> {
        let path = self.path(job, position, attempt);
        let lock = self
            .locks
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .clone();
        let _held = lock.lock().unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))?;
        let length = file.metadata().map_err(io(&path))?.len();
        if offset > length {
            return Err(LogError::Gap { length, offset });
        }
        let skip = (length - offset) as usize;
        if skip >= bytes.len() {
            return Ok(length);
        }
        let new = &bytes[skip..];
        // The index first: a line start recorded for bytes that did not make it
        // is harmless (reads clamp to the file), a missing one is not.
        let starts: Vec<u8> = new
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .flat_map(|(i, _)| (length + i as u64 + 1).to_le_bytes())
            .collect();
        if !starts.is_empty() {
            let index = Self::index_path(&path);
            let mut idx = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&index)
                .map_err(io(&index))?;
            idx.write_all(&starts).map_err(io(&index))?;
        }
        file.write_all(new).map_err(io(&path))?;
        self.appended.notify_waiters();
        Ok(length + new.len() as u64)
    }

    /// Bytes from `offset` (at most `max`), for following a log.
    pub fn read_from(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>, LogError> {
        let path = self.path(job, position, attempt);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        file.seek(SeekFrom::Start(offset)).map_err(io(&path))?;
        let mut out = Vec::new();
        file.take(max as u64)
            .read_to_end(&mut out)
            .map_err(io(&path))?;
        Ok(out)
    }

    /// Lines `[from, to)` (0-based) and the total number of lines.
    pub fn lines(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        from: u64,
        to: u64,
    ) -> Result<(Vec<u8>, u64), LogError> {
        let path = self.path(job, position, attempt);
        let length = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(io(&path)(e)),
        };
        let index = Self::index_path(&path);
        let starts_len = std::fs::metadata(&index).map(|m| m.len() / 8).unwrap_or(0);
        // Line starts past the data (an index entry written before its bytes)
        // do not count; a last line without a newline does.
        let read_start = |i: u64| -> Result<u64, LogError> {
            if i == 0 {
                return Ok(0);
            }
            let mut f = std::fs::File::open(&index).map_err(io(&index))?;
            f.seek(SeekFrom::Start((i - 1) * 8)).map_err(io(&index))?;
            let mut b = [0u8; 8];
            f.read_exact(&mut b).map_err(io(&index))?;
            Ok(u64::from_le_bytes(b).min(length))
        };
        let mut total = starts_len;
        while total > 0 && read_start(total)? >= length {
            total -= 1;
        }
        if length > read_start(total)? {
            total += 1;
        }
        let from = from.min(total);
        let to = to.min(total).max(from);
        let start = read_start(from)?;
        let end = if to >= total { length } else { read_start(to)? };
        let bytes = self.read_from(job, position, attempt, start, (end - start) as usize)?;
        Ok((bytes, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_idempotent_by_offset_and_lines_are_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        assert_eq!(logs.append(1, 0, 1, 0, b"one\ntw").unwrap(), 6);
        // A resend of the same chunk, and an overlapping one, add nothing twice.
        assert_eq!(logs.append(1, 0, 1, 0, b"one\ntw").unwrap(), 6);
        assert_eq!(logs.append(1, 0, 1, 4, b"two\nthree\n").unwrap(), 14);
        assert!(matches!(
            logs.append(1, 0, 1, 20, b"x"),
            Err(LogError::Gap {
                length: 14,
                offset: 20
            })
        ));
        assert_eq!(
            logs.read_from(1, 0, 1, 0, 100).unwrap(),
            b"one\ntwo\nthree\n"
        );
        let (lines, total) = logs.lines(1, 0, 1, 1, 3).unwrap();
        assert_eq!((lines.as_slice(), total), (&b"two\nthree\n"[..], 3));
        logs.append(1, 0, 1, 14, b"four").unwrap();
        let (tail, total) = logs.lines(1, 0, 1, 3, 10).unwrap();
        assert_eq!((tail.as_slice(), total), (&b"four"[..], 4));
        // Other attempts are other files.
        assert_eq!(logs.read_from(1, 0, 2, 0, 100).unwrap(), b"");
    }
}
