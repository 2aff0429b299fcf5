//! Bodies on the wire: a decoder for each framing (a length, chunks, or
//! until close) and the relay that streams a body from one socket to the
//! other as it arrives. Chunks are decoded and written again (extensions
//! and trailers dropped), so what the other side reads is always
//! well-formed, whatever the sender wrote.

use std::io::Write;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::head::{Framing, MAX_HEAD};

/// How much one read asks the kernel for.
pub(super) const READ_SIZE: usize = 16 * 1024;
/// The longest chunk extension accepted.
const MAX_CHUNK_EXTENSION: usize = 4096;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(super) enum BadBody {
    #[error("a chunk size is not a hexadecimal number")]
    ChunkSize,
    #[error("a chunk size is larger than 2^64")]
    ChunkTooLarge,
    #[error("a chunk does not end with CRLF")]
    ChunkEnd,
    #[error("a chunk extension is longer than {MAX_CHUNK_EXTENSION} bytes or has a bare LF")]
    ChunkExtension,
    #[error("the trailer section is malformed or larger than its limit")]
    Trailer,
    #[error("the body ended {missing} byte(s) short of its Content-Length")]
    ShortLength { missing: u64 },
    #[error("the body ended before its last chunk")]
    ShortChunked,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Chunked {
    /// Hex digits of a size so far.
    Size {
        size: u64,
        digits: u8,
    },
    Extension {
        size: u64,
        len: usize,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Inside the trailer section: bytes on this line, bytes in all.
    Trailer {
        line: usize,
        total: usize,
    },
    TrailerLf {
        empty: bool,
        total: usize,
    },
}

/// Where a body is up to.
#[derive(Clone, Copy, Debug)]
pub(super) enum Decoder {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunked::Size { size: 0, digits: 0 }),
            Framing::Close => Decoder::Close,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Decode what `input` holds of the body: the payload goes to `out`
    /// (as chunks when `chunked_out`, with the last chunk once the body
    /// ends). Returns how many bytes of `input` belong to the body; bytes
    /// after its end are left alone.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        chunked_out: bool,
    ) -> Result<usize, BadBody> {
        let emit = |out: &mut Vec<u8>, data: &[u8]| {
            if chunked_out {
                let _ = write!(out, "{:x}\r\n", data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(data);
            }
        };
        let mut at = 0;
        while at < input.len() {
            match self {
                Decoder::Done => break,
                Decoder::Close => {
                    emit(out, &input[at..]);
                    at = input.len();
                }
                Decoder::Length(left) => {
                    let take = (input.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    emit(out, &input[at..at + take]);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                }
                Decoder::Chunked(Chunked::Data { left }) => {
                    let take = (input.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    emit(out, &input[at..at + take]);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Decoder::Chunked(Chunked::DataCr);
                    }
                }
                Decoder::Chunked(state) => {
                    let byte = input[at];
                    at += 1;
                    match step(*state, byte)? {
                        Some(next) => *state = next,
                        None => {
                            if chunked_out {
                                out.extend_from_slice(b"0\r\n\r\n");
                            }
                            *self = Decoder::Done;
                        }
                    }
                }
            }
        }
        Ok(at)
    }

    /// The sender closed: the end of a body delimited by close, an error
    /// for any other body not finished.
    pub fn end_of_input(&mut self) -> Result<(), BadBody> {
        match *self {
            Decoder::Done => Ok(()),
            Decoder::Close => {
                *self = Decoder::Done;
                Ok(())
            }
            Decoder::Length(missing) => Err(BadBody::ShortLength { missing }),
            Decoder::Chunked(_) => Err(BadBody::ShortChunked),
        }
    }
}

/// One byte of chunk framing; `None` once the body has ended.
fn step(state: Chunked, byte: u8) -> Result<Option<Chunked>, BadBody> {
    let next = match state {
        Chunked::Size { size, digits } => match byte {
            b'\r' | b';' if digits == 0 => return Err(BadBody::ChunkSize),
            b'\r' => Chunked::SizeLf { size },
            b';' => Chunked::Extension { size, len: 0 },
            _ => {
                let digit = (byte as char).to_digit(16).ok_or(BadBody::ChunkSize)?;
                if digits >= 16 {
                    return Err(BadBody::ChunkTooLarge);
                }
                Chunked::Size {
                    size: size << 4 | u64::from(digit),
                    digits: digits + 1,
                }
            }
        },
        Chunked::Extension { size, len } => match byte {
            b'\r' => Chunked::SizeLf { size },
            b'\n' => return Err(BadBody::ChunkExtension),
            _ if len >= MAX_CHUNK_EXTENSION => return Err(BadBody::ChunkExtension),
            _ => Chunked::Extension { size, len: len + 1 },
        },
        Chunked::SizeLf { size } => match byte {
            b'\n' if size == 0 => Chunked::Trailer { line: 0, total: 0 },
            b'\n' => Chunked::Data { left: size },
            _ => return Err(BadBody::ChunkSize),
        },
        Chunked::Data { .. } => unreachable!("data is taken in slices"),
        Chunked::DataCr => match byte {
            b'\r' => Chunked::DataLf,
            _ => return Err(BadBody::ChunkEnd),
        },
        Chunked::DataLf => match byte {
            b'\n' => Chunked::Size { size: 0, digits: 0 },
            _ => return Err(BadBody::ChunkEnd),
        },
        Chunked::Trailer { line, total } => match byte {
            b'\r' => Chunked::TrailerLf {
                empty: line == 0,
                total,
            },
            b'\n' => return Err(BadBody::Trailer),
            _ if total >= MAX_HEAD => return Err(BadBody::Trailer),
            _ => Chunked::Trailer {
                line: line + 1,
                total: total + 1,
            },
        },
        Chunked::TrailerLf { empty, total } => match byte {
            b'\n' if empty => return Ok(None),
            b'\n' => Chunked::Trailer { line: 0, total },
            _ => return Err(BadBody::Trailer),
        },
    };
    Ok(Some(next))
}

/// Why a relay stopped before the body's end.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelayError {
    #[error("reading: {0}")]
    Read(std::io::Error),
    #[error("nothing arrived for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Body(#[from] BadBody),
}

/// Relay a body from `reader` (what `buf` already holds first) to `writer`
/// until its end, writing `out` (a head, say) ahead of the first bytes.
/// Returns whether every byte reached `writer`. Once a write fails, with
/// `read_to_end` the rest is still read (so the reading side stays in step
/// for its next message) and dropped; without, the relay stops there.
/// Leaves in `buf` what follows the body.
///
/// Deadline: `idle` for each read and each write; action: `Idle`, the
/// caller closes both connections.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay(
    decoder: &mut Decoder,
    reader: &mut ReadHalf<'_>,
    buf: &mut BytesMut,
    writer: &mut WriteHalf<'_>,
    out: &mut Vec<u8>,
    chunked_out: bool,
    read_to_end: bool,
    idle: Duration,
) -> Result<bool, RelayError> {
    let mut delivered = true;
    loop {
        // What was well-formed before an error still goes out, then the
        // error: the other side sees the message cut short, never completed.
        let decoded = decoder.decode(buf, out, chunked_out);
        if let Ok(used) = decoded {
            buf.advance(used);
        }
        if !out.is_empty() {
            if delivered {
                match tokio::time::timeout(idle, writer.write_all(out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) if read_to_end => delivered = false,
                    Ok(Err(_)) => return Ok(false),
                    Err(_) => return Err(RelayError::Idle(idle)),
                }
            }
            out.clear();
        }
        decoded?;
        if decoder.is_done() {
            return Ok(delivered);
        }
        buf.reserve(READ_SIZE);
        match tokio::time::timeout(idle, reader.read_buf(buf)).await {
            Ok(Ok(0)) => decoder.end_of_input()?,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RelayError::Read(e)),
            Err(_) => return Err(RelayError::Idle(idle)),
        }
    }
}
