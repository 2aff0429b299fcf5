//! Step logs: append-only files, one per step attempt, with a line index and
//! line times beside each, never database rows.
//!
//! `<data>/logs/<job>/<position>.<attempt>.log` holds the bytes;
//! `….idx` holds, as little-endian u64s, the byte offset where each line after
//! the first starts, so a line range or the tail is two small reads;
//! `….ts` holds, as little-endian u64s, one time per line (milliseconds since
//! the epoch; 0 for unknown, as in logs written before times were kept): when
//! the line's first byte was appended.
//!
//! Appends are idempotent by offset: a runner sends each chunk with the offset
//! it starts at. Bytes the file already has are skipped (a resend after a lost
//! acknowledgement); a chunk starting beyond the end is refused with the
//! length, and the runner resends from there. An acknowledged append has been
//! written, so it survives the server process being killed. The index and the
//! times are written before the bytes they describe: readers ignore entries
//! for bytes that are not there, and the next append drops them (so the resend
//! of those bytes does not record their lines twice).
//!
//! Reading: [`Logs::read_from`] (bytes from an offset, for following a log),
//! [`Logs::range`] (lines `from..to` with their byte offsets and times, cut to
//! a byte budget), [`Logs::search`] (the lines whose visible text contains a
//! string, streamed through the file in fixed-size reads, never loaded whole).
//!
//! The REST API on top (`api::pipelines`), under
//! `/api/v1/jobs/{job}/steps/{position}/`:
//! - `log?offset=B`: raw bytes from `B` (1 MiB at most); `log?download=1`: the
//!   whole file as an attachment;
//! - `log?from_line=A&to_line=B` or `log?tail=N`: lines as text, with
//!   `X-Log-Lines` the total; adding `format=json` gives the same range as
//!   JSON with each line's time (`times`, ms or null) and the byte offset after
//!   it (`end_offset`, where a live follower continues with `log/stream`);
//! - `log/search?q=…&ignore_case=1&from_line=A&limit=N`: matching line
//!   numbers (0-based, like `from_line`), at most `limit`, with where to go on;
//! - `log/stream`: Server-Sent Events, resumable with `Last-Event-ID`.
//!
//! Search matches the *visible* text of a line, what the web viewer shows:
//! escape sequences (CSI such as colours, OSC, other two-byte ESC sequences)
//! and control characters other than tab removed, and a carriage return that
//! does not end the line starting the line's text over (progress bars).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The longest string [`Logs::search`] looks for, in bytes.
pub const MAX_NEEDLE: usize = 256;

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

/// Lines `from..to` of a log, as [`Logs::range`] read them.
#[derive(Debug)]
pub struct LineRange {
    pub from: u64,
    pub to: u64,
    /// Lines in the log when it was read (a last line without its newline
    /// counts).
    pub total: u64,
    /// Where line `from` starts, and the offset after the last byte read.
    pub start_offset: u64,
    pub end_offset: u64,
    /// The lines' bytes, newlines included.
    pub bytes: Vec<u8>,
    /// Where each line starts in `bytes`.
    starts: Vec<usize>,
    /// When each line was appended (ms since the epoch), where known.
    pub times: Vec<Option<i64>>,
    /// The byte budget ended inside the range's one line: it is cut short.
    pub truncated: bool,
}

impl LineRange {
    /// Each line without its newline.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.starts.iter().enumerate().map(|(i, &start)| {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
            let line = &self.bytes[start..end];
            line.strip_suffix(b"\n").unwrap_or(line)
        })
    }

    /// The last line read has no newline (yet): text appended later continues it.
    pub fn last_line_partial(&self) -> bool {
        !self.bytes.is_empty() && !self.bytes.ends_with(b"\n")
    }
}

/// What [`Logs::search`] looks for.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    /// A plain string (at most [`MAX_NEEDLE`] bytes), matched in a line's
    /// visible text.
    pub text: &'a str,
    /// ASCII letters match either case.
    pub ignore_case: bool,
    /// The first line to look at (0-based).
    pub from_line: u64,
    /// Stop after this many matching lines.
    pub limit: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SearchHits {
    /// Matching lines, 0-based, ascending.
    pub lines: Vec<u64>,
    /// The search stopped at its limit with lines left: go on from here.
    pub next_line: Option<u64>,
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

    fn times_path(log: &Path) -> PathBuf {
        log.with_extension("ts")
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
        self.append_at(job, position, attempt, offset, bytes, crate::db::now_ms())
    }

    /// [`Logs::append`] with the time to record for lines it starts.
    pub fn append_at(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        offset: u64,
        bytes: &[u8],
        now_ms: i64,
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
        let new_length = length + new.len() as u64;

        // The index first: a line start recorded for bytes that did not make it
        // is harmless (reads ignore it, and it is dropped here next time), a
        // missing one is not.
        let index = Self::index_path(&path);
        let idx = open_rw(&index)?;
        let size = idx.metadata().map_err(io(&index))?.len();
        let kept = partition(&idx, size / 8, |start| start <= length).map_err(io(&index))?;
        if kept * 8 != size {
            idx.set_len(kept * 8).map_err(io(&index))?;
        }
        let last_kept = last_entry(&idx, kept).map_err(io(&index))?;
        let before = lines_in(kept, last_kept, length);
        let starts: Vec<u64> = new
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| length + i as u64 + 1)
            .collect();
        if !starts.is_empty() {
            let encoded: Vec<u8> = starts.iter().flat_map(|s| s.to_le_bytes()).collect();
            idx.write_all_at(&encoded, kept * 8).map_err(io(&index))?;
        }
        let after = lines_in(
            kept + starts.len() as u64,
            starts.last().copied().or(last_kept),
            new_length,
        );

        // Then one time per line this append starts (entries beyond `before`
        // are a crash's leftovers; missing ones, from logs older than the
        // times, are unknown).
        if after > before {
            let times = Self::times_path(&path);
            let ts = open_rw(&times)?;
            let have = ts.metadata().map_err(io(&times))?.len() / 8;
            if have != before {
                ts.set_len(before * 8).map_err(io(&times))?;
            }
            let stamp = now_ms.max(1) as u64;
            let encoded: Vec<u8> = (before..after).flat_map(|_| stamp.to_le_bytes()).collect();
            ts.write_all_at(&encoded, before * 8).map_err(io(&times))?;
        }

        file.write_all(new).map_err(io(&path))?;
        self.appended.notify_waiters();
        Ok(new_length)
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
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        let length = file.metadata().map_err(io(&path))?.len();
        let end = length.min(offset.saturating_add(max as u64));
        read_span(&file, offset, end).map_err(io(&path))
    }

    /// How many lines the log has (a last line without its newline counts).
    pub fn total_lines(&self, job: i64, position: i64, attempt: i64) -> Result<u64, LogError> {
        Ok(Reader::open(&self.path(job, position, attempt))?.map_or(0, |r| r.total))
    }

    /// Lines `[from, to)` (0-based, clamped to the log) with their times, but
    /// no more lines than fit in `max_bytes`; a single line longer than that
    /// is cut (`truncated`).
    pub fn range(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<LineRange, LogError> {
        let path = self.path(job, position, attempt);
        let Some(reader) = Reader::open(&path)? else {
            return Ok(LineRange {
                from: 0,
                to: 0,
                total: 0,
                start_offset: 0,
                end_offset: 0,
                bytes: Vec::new(),
                starts: Vec::new(),
                times: Vec::new(),
                truncated: false,
            });
        };
        reader.range(from, to, max_bytes.max(1))
    }

    /// The lines at or after `q.from_line` whose visible text contains
    /// `q.text`, read in 256 KiB pieces.
    pub fn search(
        &self,
        job: i64,
        position: i64,
        attempt: i64,
        q: &SearchQuery<'_>,
    ) -> Result<SearchHits, LogError> {
        let path = self.path(job, position, attempt);
        let mut hits = SearchHits {
            lines: Vec::new(),
            next_line: None,
        };
        let needle = q.text.as_bytes();
        if needle.is_empty() || needle.len() > MAX_NEEDLE || q.limit == 0 {
            return Ok(hits);
        }
        let Some(reader) = Reader::open(&path)? else {
            return Ok(hits);
        };
        if q.from_line >= reader.total {
            return Ok(hits);
        }
        let matcher = Matcher::new(needle, q.ignore_case);
        let mut scan = Scan::new(&matcher);
        let mut line = q.from_line;
        let mut at = reader.start(q.from_line).map_err(io(&path))?;
        let mut buf = vec![0u8; 256 << 10];
        while at < reader.length {
            let want = ((reader.length - at) as usize).min(buf.len());
            let n = reader
                .data
                .read_at(&mut buf[..want], at)
                .map_err(io(&path))?;
            if n == 0 {
                break;
            }
            let mut rest = &buf[..n];
            while let Some(end) = scan.feed(rest) {
                if scan.take_hit() {
                    hits.lines.push(line);
                    if hits.lines.len() >= q.limit {
                        let next = at + (n - rest.len() + end + 1) as u64;
                        if next < reader.length {
                            hits.next_line = Some(line + 1);
                        }
                        return Ok(hits);
                    }
                }
                line += 1;
                rest = &rest[end + 1..];
            }
            at += n as u64;
        }
        if scan.take_hit() {
            hits.lines.push(line);
        }
        Ok(hits)
    }
}

fn open_rw(path: &Path) -> Result<File, LogError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))
}

/// Index entry `entry`; one gone (cut by an append's clean-up after this
/// reader counted it) reads as beyond any end.
fn read_u64_at(file: &File, entry: u64) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    match file.read_exact_at(&mut b, entry * 8) {
        Ok(()) => Ok(u64::from_le_bytes(b)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(u64::MAX),
        Err(e) => Err(e),
    }
}

fn last_entry(file: &File, entries: u64) -> std::io::Result<Option<u64>> {
    match entries {
        0 => Ok(None),
        n => read_u64_at(file, n - 1).map(Some),
    }
}

/// How many of the first `entries` (ascending) satisfy `keep`, which holds
/// for a prefix. The last two are looked at first: that is where a log's end
/// is, so a binary search is only for crash leftovers.
fn partition(file: &File, entries: u64, keep: impl Fn(u64) -> bool) -> std::io::Result<u64> {
    if entries == 0 || keep(read_u64_at(file, entries - 1)?) {
        return Ok(entries);
    }
    if entries == 1 || keep(read_u64_at(file, entries - 2)?) {
        return Ok(entries - 1);
    }
    let (mut lo, mut hi) = (0, entries - 2);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if keep(read_u64_at(file, mid)?) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Lines in a log of `length` bytes whose index has `entries` line starts,
/// none beyond the end, the last being `last`.
fn lines_in(entries: u64, last: Option<u64>, length: u64) -> u64 {
    entries - u64::from(last == Some(length)) + u64::from(length > 0)
}

/// Bytes `[start, end)` of a file.
fn read_span(file: &File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; end.saturating_sub(start) as usize];
    let mut done = 0;
    while done < out.len() {
        match file.read_at(&mut out[done..], start + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    out.truncate(done);
    Ok(out)
}

/// One log opened for reading: its length and line count fixed when opened,
/// so bytes appended later are not seen.
struct Reader {
    path: PathBuf,
    data: File,
    length: u64,
    index: Option<File>,
    total: u64,
}

impl Reader {
    fn open(path: &Path) -> Result<Option<Reader>, LogError> {
        let data = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        };
        // The length before the index: every line start within the length is
        // then listed (starts are written before their bytes), and entries
        // past it are ignored.
        let length = data.metadata().map_err(io(path))?.len();
        let index_path = Logs::index_path(path);
        let index = match File::open(&index_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&index_path)(e)),
        };
        let entries = match &index {
            Some(f) => f.metadata().map_err(io(&index_path))?.len() / 8,
            None => 0,
        };
        let below = match &index {
            Some(f) => partition(f, entries, |start| start < length).map_err(io(&index_path))?,
            None => 0,
        };
        Ok(Some(Reader {
            path: path.to_owned(),
            data,
            length,
            index,
            total: below + u64::from(length > 0),
        }))
    }

    /// Where line `i` starts (the length for `i >= total`).
    fn start(&self, i: u64) -> std::io::Result<u64> {
        Ok(self.starts(i, i + 1)?[0])
    }

    /// Where lines `from..to` start, each clamped to the length, in one read
    /// (line `i > 0` starts at index entry `i - 1`; lines from `total` on,
    /// at the end).
    fn starts(&self, from: u64, to: u64) -> std::io::Result<Vec<u64>> {
        let mut out = Vec::with_capacity((to - from) as usize);
        if from == 0 && to > 0 {
            out.push(0);
        }
        let (listed_from, listed_to) = (from.max(1), to.min(self.total));
        if let (true, Some(index)) = (listed_from < listed_to, &self.index) {
            let raw = read_span(index, (listed_from - 1) * 8, (listed_to - 1) * 8)?;
            out.extend(
                raw.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .map(|s| s.min(self.length)),
            );
        }
        out.resize((to - from) as usize, self.length);
        Ok(out)
    }

    fn range(&self, from: u64, to: u64, max_bytes: usize) -> Result<LineRange, LogError> {
        let path = &self.path;
        let from = from.min(self.total);
        let mut to = to.min(self.total).max(from);
        // Line starts from..=to: the last is where the range ends.
        let bounds = self.starts(from, to + 1).map_err(io(path))?;
        let start = bounds[0];
        let budget = max_bytes as u64;
        let mut truncated = false;
        if bounds[bounds.len() - 1] - start > budget {
            // Whole lines up to the budget, or the first line alone, cut.
            let fit = bounds.partition_point(|&b| b - start <= budget).max(1) - 1;
            if fit == 0 {
                to = from + 1;
                truncated = true;
            } else {
                to = from + fit as u64;
            }
        }
        let lines = (to - from) as usize;
        let end = if truncated {
            start + budget
        } else {
            bounds[lines]
        };
        let bytes = read_span(&self.data, start, end).map_err(io(path))?;
        let starts = bounds[..lines]
            .iter()
            .map(|&s| ((s - start) as usize).min(bytes.len()))
            .collect();
        let times = self.times(from, to).map_err(io(&Logs::times_path(path)))?;
        Ok(LineRange {
            from,
            to,
            total: self.total,
            start_offset: start,
            end_offset: start + bytes.len() as u64,
            bytes,
            starts,
            times,
            truncated,
        })
    }

    /// The times of lines `from..to` (unknown where the file has none).
    fn times(&self, from: u64, to: u64) -> std::io::Result<Vec<Option<i64>>> {
        let mut out = Vec::with_capacity((to - from) as usize);
        if from < to {
            match File::open(Logs::times_path(&self.path)) {
                Ok(f) => {
                    let raw = read_span(&f, from * 8, to * 8)?;
                    out.extend(raw.chunks_exact(8).map(|c| {
                        let ms = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                        (ms > 0).then_some(ms as i64)
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.resize((to - from) as usize, None);
        Ok(out)
    }
}

/// A substring matcher as a DFA (Knuth–Morris–Pratt's automaton): one table
/// look-up per byte.
struct Matcher {
    /// `states × 256` next states; state `len` is a match.
    next: Vec<u16>,
    len: u16,
    /// Input bytes folded (ASCII lower case) or not.
    fold: [u8; 256],
}

impl Matcher {
    fn new(needle: &[u8], ignore_case: bool) -> Matcher {
        let mut fold = [0u8; 256];
        for (i, f) in fold.iter_mut().enumerate() {
            let b = i as u8;
            *f = if ignore_case {
                b.to_ascii_lowercase()
            } else {
                b
            };
        }
        let pattern: Vec<u8> = needle.iter().map(|&b| fold[b as usize]).collect();
        let m = pattern.len();
        let mut next = vec![0u16; (m + 1) * 256];
        next[pattern[0] as usize] = 1;
        let mut restart = 0usize;
        for j in 1..m {
            for c in 0..256 {
                next[j * 256 + c] = next[restart * 256 + c];
            }
            next[j * 256 + pattern[j] as usize] = (j + 1) as u16;
            restart = next[restart * 256 + pattern[j] as usize] as usize;
        }
        Matcher {
            next,
            len: m as u16,
            fold,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// In `ESC [ … final`.
    Csi,
    /// In `ESC ] … (BEL | ESC \)`.
    Osc,
    /// ESC inside an OSC.
    OscEsc,
}

/// The search's state through one line's visible text.
struct Scan<'m> {
    matcher: &'m Matcher,
    state: u16,
    escape: Escape,
    /// A carriage return was the last byte: unless the newline follows, the
    /// text starts over.
    cr: bool,
    hit: bool,
}

impl<'m> Scan<'m> {
    fn new(matcher: &'m Matcher) -> Scan<'m> {
        Scan {
            matcher,
            state: 0,
            escape: Escape::None,
            cr: false,
            hit: false,
        }
    }

    /// Consume `bytes` up to the first newline, returning where it is; the
    /// line's state is kept for [`Scan::take_hit`].
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                return Some(i);
            }
            if self.cr {
                self.cr = false;
                self.state = 0;
                self.hit = false;
            }
            match self.escape {
                Escape::None => match b {
                    0x1b => self.escape = Escape::Start,
                    b'\r' => self.cr = true,
                    // Visible; once the line matched, only a carriage return matters.
                    b'\t' | 0x20..=0x7e | 0x80..=0xff if !self.hit => {
                        let m = self.matcher;
                        self.state =
                            m.next[self.state as usize * 256 + m.fold[b as usize] as usize];
                        if self.state == m.len {
                            self.hit = true;
                            self.state = 0;
                        }
                    }
                    _ => {}
                },
                Escape::Start => {
                    self.escape = match b {
                        b'[' => Escape::Csi,
                        b']' => Escape::Osc,
                        _ => Escape::None,
                    }
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                }
                Escape::Osc => match b {
                    0x07 => self.escape = Escape::None,
                    0x1b => self.escape = Escape::OscEsc,
                    _ => {}
                },
                Escape::OscEsc => self.escape = Escape::None,
            }
        }
        None
    }

    /// Whether the line just ended matched; resets for the next line.
    fn take_hit(&mut self) -> bool {
        let hit = self.hit;
        self.state = 0;
        self.escape = Escape::None;
        self.cr = false;
        self.hit = false;
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(range: &LineRange) -> Vec<String> {
        range
            .lines()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

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
        let r = logs.range(1, 0, 1, 1, 3, usize::MAX).unwrap();
        assert_eq!((r.bytes.as_slice(), r.total), (&b"two\nthree\n"[..], 3));
        assert_eq!(text(&r), ["two", "three"]);
        assert_eq!((r.start_offset, r.end_offset), (4, 14));
        assert!(!r.last_line_partial());
        logs.append(1, 0, 1, 14, b"four").unwrap();
        let r = logs.range(1, 0, 1, 3, 10, usize::MAX).unwrap();
        assert_eq!((r.bytes.as_slice(), r.total), (&b"four"[..], 4));
        assert!(r.last_line_partial());
        assert_eq!(logs.total_lines(1, 0, 1).unwrap(), 4);
        // Other attempts are other files.
        assert_eq!(logs.read_from(1, 0, 2, 0, 100).unwrap(), b"");
        assert_eq!(logs.total_lines(1, 0, 2).unwrap(), 0);
    }

    #[test]
    fn each_line_has_the_time_its_first_byte_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        logs.append_at(1, 0, 1, 0, b"a\nb", 1000).unwrap();
        // The resend keeps the first times; "b" started before this append.
        logs.append_at(1, 0, 1, 0, b"a\nb", 1500).unwrap();
        logs.append_at(1, 0, 1, 3, b"b\nc\n", 2000).unwrap();
        logs.append_at(1, 0, 1, 7, b"\nd", 3000).unwrap();
        let r = logs.range(1, 0, 1, 0, 100, usize::MAX).unwrap();
        assert_eq!(text(&r), ["a", "bb", "c", "", "d"]);
        assert_eq!(
            r.times,
            [Some(1000), Some(1000), Some(2000), Some(3000), Some(3000)]
        );
        let r = logs.range(1, 0, 1, 2, 4, usize::MAX).unwrap();
        assert_eq!(r.times, [Some(2000), Some(3000)]);
    }

    #[test]
    fn leftovers_of_a_crash_before_the_bytes_are_dropped_on_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        logs.append_at(1, 0, 1, 0, b"one\n", 1000).unwrap();
        // A crash after writing the index and times of "two\nthree\n" (and a
        // torn entry) but before its bytes.
        let log = logs.path(1, 0, 1);
        let mut idx = std::fs::OpenOptions::new()
            .append(true)
            .open(Logs::index_path(&log))
            .unwrap();
        idx.write_all(&8u64.to_le_bytes()).unwrap();
        idx.write_all(&14u64.to_le_bytes()).unwrap();
        idx.write_all(&[1, 2, 3]).unwrap();
        let mut ts = std::fs::OpenOptions::new()
            .append(true)
            .open(Logs::times_path(&log))
            .unwrap();
        ts.write_all(&1500u64.to_le_bytes()).unwrap();
        ts.write_all(&1500u64.to_le_bytes()).unwrap();
        // Readers see only what is there.
        let r = logs.range(1, 0, 1, 0, 10, usize::MAX).unwrap();
        assert_eq!((text(&r), r.total), (vec!["one".to_owned()], 1));
        // The resend records each line once.
        logs.append_at(1, 0, 1, 4, b"two\nthree\n", 2000).unwrap();
        let r = logs.range(1, 0, 1, 0, 10, usize::MAX).unwrap();
        assert_eq!(text(&r), ["one", "two", "three"]);
        assert_eq!(r.times, [Some(1000), Some(2000), Some(2000)]);
        assert_eq!(
            std::fs::metadata(Logs::index_path(&log)).unwrap().len(),
            3 * 8
        );
    }

    #[test]
    fn logs_without_times_read_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        logs.append_at(1, 0, 1, 0, b"one\ntwo\n", 1000).unwrap();
        std::fs::remove_file(Logs::times_path(&logs.path(1, 0, 1))).unwrap();
        logs.append_at(1, 0, 1, 8, b"three\n", 2000).unwrap();
        let r = logs.range(1, 0, 1, 0, 10, usize::MAX).unwrap();
        assert_eq!(r.times, [None, None, Some(2000)]);
    }

    #[test]
    fn ranges_stop_at_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        logs.append(1, 0, 1, 0, b"aaaa\nbbbb\ncccccccccc\nd\n")
            .unwrap();
        let r = logs.range(1, 0, 1, 0, 4, 12).unwrap();
        assert_eq!(
            (text(&r), r.to, r.truncated),
            (vec!["aaaa".into(), "bbbb".into()], 2, false)
        );
        // One line longer than the budget comes cut.
        let r = logs.range(1, 0, 1, 2, 4, 4).unwrap();
        assert_eq!(
            (text(&r), r.to, r.truncated),
            (vec!["cccc".into()], 3, true)
        );
        assert_eq!(r.end_offset, 14);
        assert!(r.last_line_partial());
        // Past the end: nothing, and the total.
        let r = logs.range(1, 0, 1, 9, 20, 100).unwrap();
        assert_eq!((r.from, r.to, r.total, r.bytes.len()), (4, 4, 4, 0));
    }

    fn search(
        logs: &Logs,
        text: &str,
        ignore_case: bool,
        from_line: u64,
        limit: usize,
    ) -> SearchHits {
        logs.search(
            1,
            0,
            1,
            &SearchQuery {
                text,
                ignore_case,
                from_line,
                limit,
            },
        )
        .unwrap()
    }

    #[test]
    fn search_matches_visible_text_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        let log = "compiling\n\
                   \x1b[1;31mERROR\x1b[0m: it broke\n\
                   an er\x1b[31mror split by colour\n\
                   progress 10% error\rprogress 100%\n\
                   \x1b]0;title error\x07plain\n\
                   abababac\n\
                   tab\there\r\n\
                   last error";
        logs.append(1, 0, 1, 0, log.as_bytes()).unwrap();
        let all = |t, ic| search(&logs, t, ic, 0, 100).lines;
        assert_eq!(all("error", false), [2, 7]);
        assert_eq!(all("error", true), [1, 2, 7]);
        assert_eq!(all("ERROR: it", false), [1]);
        assert_eq!(all("progress 100%", false), [3]);
        assert_eq!(all("10%", false), Vec::<u64>::new());
        assert_eq!(all("title", false), Vec::<u64>::new());
        assert_eq!(all("ababac", false), [5]);
        assert_eq!(all("tab\there", false), [6]);
        assert_eq!(all("31m", false), Vec::<u64>::new());
        // A limit says where to go on; from_line goes on from there.
        let first = search(&logs, "e", false, 0, 2);
        assert_eq!(
            first,
            SearchHits {
                lines: vec![1, 2],
                next_line: Some(3)
            }
        );
        let rest = search(&logs, "e", false, 3, 10);
        assert_eq!(
            rest,
            SearchHits {
                lines: vec![3, 6, 7],
                next_line: None
            }
        );
        // The last line reached by the limit leaves nothing to go on with.
        assert_eq!(search(&logs, "last", false, 0, 1).next_line, None);
    }

    #[test]
    fn search_streams_through_long_logs_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path());
        let mut log = Vec::new();
        for i in 0..100_000 {
            writeln!(log, "line {i} of the log").unwrap();
        }
        // A line longer than a read, with the match across the boundary.
        log.extend(vec![b'x'; (256 << 10) - 3]);
        log.extend(b"needle\n");
        let n = log.len();
        logs.append(1, 0, 1, 0, &log).unwrap();
        assert_eq!(search(&logs, "needle", false, 0, 10).lines, [100_000]);
        assert_eq!(search(&logs, "line 99999 ", false, 0, 10).lines, [99_999]);
        assert_eq!(
            search(&logs, "line 5 ", false, 6, 10).lines,
            Vec::<u64>::new()
        );
        let r = logs.range(1, 0, 1, 99_999, 100_001, 1 << 20).unwrap();
        assert_eq!(r.end_offset, n as u64);
    }
}
