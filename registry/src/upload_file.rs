//! The bytes of one upload on disk: an open file and the running hash.
//!
//! Whole 4 KiB-aligned blocks are written with `O_DIRECT` from an aligned staging
//! buffer, which skips the page-cache copy and leaves the final fsync almost
//! nothing to write back. Partial blocks (the unaligned start of a resumed
//! session, the tail of each request) go through the ordinary descriptor, so
//! [`UploadFile::flush`] puts every byte into the file before a request is
//! acknowledged. Filesystems that refuse `O_DIRECT` (tmpfs, some overlays) get
//! ordinary writes throughout.

use std::alloc::{alloc, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::ptr::NonNull;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Alignment `O_DIRECT` needs for memory, offsets and lengths.
const ALIGN: usize = 4096;
/// Size of the staging buffer: the unit of direct writes.
const STAGE: usize = 4 << 20;

/// A heap buffer aligned for `O_DIRECT`.
struct AlignedBuf(NonNull<u8>);

// SAFETY: the buffer is uniquely owned heap memory.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout() -> Layout {
        Layout::from_size_align(STAGE, ALIGN).expect("valid layout")
    }

    fn new() -> AlignedBuf {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc(Self::layout()) };
        AlignedBuf(
            NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout())),
        )
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: STAGE bytes were allocated; u8 has no invalid values, and
        // callers only read what they wrote.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), STAGE) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.0.as_ptr(), Self::layout()) }
    }
}

pub struct UploadFile {
    pub path: PathBuf,
    /// Ordinary descriptor: partial blocks, truncation, fsync.
    file: File,
    /// `O_DIRECT` descriptor for whole aligned blocks, when the filesystem allows.
    direct: Option<File>,
    stage: Option<AlignedBuf>,
    /// Bytes in `stage` not yet written; they follow the first `written` bytes.
    staged: usize,
    /// Bytes in the file.
    written: u64,
    hasher: Sha256,
}

fn open_direct(path: &PathBuf) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

impl UploadFile {
    pub fn create(path: PathBuf) -> io::Result<UploadFile> {
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .read(true)
            .open(&path)?;
        let direct = open_direct(&path);
        Ok(UploadFile {
            path,
            file,
            direct,
            stage: None,
            staged: 0,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    /// Reopen a session after a restart or a failed request: keep exactly the
    /// first `committed` bytes (the ones acknowledged to the client) and rebuild
    /// the hash from them.
    pub fn reopen(path: PathBuf, committed: u64) -> io::Result<UploadFile> {
        let file = OpenOptions::new().write(true).read(true).open(&path)?;
        let on_disk = file.metadata()?.len();
        if on_disk < committed {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("upload file has {on_disk} bytes, {committed} were acknowledged"),
            ));
        }
        file.set_len(committed)?;
        let mut hasher = Sha256::new();
        io::copy(&mut (&file).take(committed), &mut hasher)?;
        let direct = open_direct(&path);
        Ok(UploadFile {
            path,
            file,
            direct,
            stage: None,
            staged: 0,
            written: committed,
            hasher,
        })
    }

    /// Bytes appended so far (written or staged).
    pub fn len(&self) -> u64 {
        self.written + self.staged as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append bytes; they are in the file after the next [`flush`](Self::flush).
    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.hasher.update(data);
        if self.direct.is_none() {
            self.file.write_all_at(data, self.written)?;
            self.written += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let stage = self.stage.get_or_insert_with(AlignedBuf::new);
            let n = (STAGE - self.staged).min(data.len());
            stage.bytes()[self.staged..self.staged + n].copy_from_slice(&data[..n]);
            self.staged += n;
            data = &data[n..];
            if self.staged == STAGE {
                self.drain(false)?;
            }
        }
        Ok(())
    }

    pub fn append_all(&mut self, chunks: &[bytes::Bytes]) -> io::Result<()> {
        chunks.iter().try_for_each(|chunk| self.append(chunk))
    }

    /// Write everything staged, so the file holds all `len()` bytes.
    pub fn flush(&mut self) -> io::Result<()> {
        self.drain(true)?;
        self.stage = None;
        Ok(())
    }

    /// Write staged bytes: an unaligned head through the ordinary descriptor,
    /// whole blocks directly, and (with `all`) the tail through the ordinary one.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let Some(stage) = self.stage.as_mut() else {
            return Ok(());
        };
        let buf = stage.bytes();
        let misalign = (self.written % ALIGN as u64) as usize;
        if misalign != 0 && self.staged > 0 {
            let head = (ALIGN - misalign).min(self.staged);
            self.file.write_all_at(&buf[..head], self.written)?;
            self.written += head as u64;
            buf.copy_within(head..self.staged, 0);
            self.staged -= head;
        }
        let whole = self.staged / ALIGN * ALIGN;
        if whole > 0 {
            let direct = self
                .direct
                .as_ref()
                .expect("staging only happens with a direct descriptor");
            match direct.write_all_at(&buf[..whole], self.written) {
                Ok(()) => {}
                // Some filesystems accept the open but refuse the write.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = None;
                    self.file.write_all_at(&buf[..whole], self.written)?;
                }
                Err(e) => return Err(e),
            }
            self.written += whole as u64;
            buf.copy_within(whole..self.staged, 0);
            self.staged -= whole;
        }
        if all && self.staged > 0 {
            self.file.write_all_at(&buf[..self.staged], self.written)?;
            self.written += self.staged as u64;
            self.staged = 0;
        }
        Ok(())
    }

    /// Write everything, fsync, and return the digest of the content.
    pub fn finish(mut self) -> io::Result<(Digest, u64, PathBuf)> {
        self.flush()?;
        self.file.sync_all()?;
        Ok((Digest::from_hasher(self.hasher), self.written, self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn reopen_truncates_to_acknowledged_bytes_and_rehashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        let mut f = UploadFile::create(path.clone()).unwrap();
        f.append(b"hello ").unwrap();
        f.flush().unwrap();
        f.append(b"world, unacknowledged").unwrap();
        f.flush().unwrap();
        drop(f);
        let mut f = UploadFile::reopen(path.clone(), 6).unwrap();
        f.append(b"world").unwrap();
        let (digest, len, _) = f.finish().unwrap();
        assert_eq!(len, 11);
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    }

    #[test]
    fn reopen_refuses_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        let mut f = UploadFile::create(path.clone()).unwrap();
        f.append(b"abc").unwrap();
        f.flush().unwrap();
        assert!(UploadFile::reopen(path, 10).is_err());
    }

    /// Odd-sized appends, flushes at unaligned offsets (as chunked uploads do) and
    /// a resume in the middle: the file is exactly the bytes appended, in order.
    #[test]
    fn unaligned_appends_and_flushes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        let data = pattern(3 * STAGE + 12_345, 7);
        let mut f = UploadFile::create(path.clone()).unwrap();
        let direct = f.direct.is_some();
        let cuts = [
            1usize,
            4095,
            4097,
            100_000,
            STAGE - 3,
            STAGE + 5000,
            2 * STAGE + 1,
        ];
        let mut at = 0;
        for (i, &cut) in cuts.iter().enumerate() {
            f.append(&data[at..cut]).unwrap();
            at = cut;
            if i % 2 == 0 {
                f.flush().unwrap();
                assert_eq!(
                    std::fs::metadata(&path).unwrap().len(),
                    at as u64,
                    "flushed bytes are in the file"
                );
            }
        }
        f.flush().unwrap();
        drop(f);
        let mut f = UploadFile::reopen(path.clone(), at as u64).unwrap();
        f.append(&data[at..]).unwrap();
        let (digest, len, _) = f.finish().unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(digest, Digest::of(&data));
        assert!(std::fs::read(&path).unwrap() == data);
        eprintln!("O_DIRECT path exercised: {direct}");
    }
}
