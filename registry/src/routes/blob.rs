//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with single `Range` requests.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{authorize, header_str};
use crate::access::Action;
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::{blob, Registry};

/// Bytes handed to hyper per body frame.
const SEND_CHUNK: usize = 4 * 1024 * 1024;

/// Parse a `Range: bytes=...` header against a blob of `size` bytes into an
/// inclusive byte range. Only single ranges are served.
pub(crate) fn parse_range(value: &str, size: u64) -> Result<(u64, u64)> {
    let invalid = |why: &str| RegistryError::RangeInvalid {
        message: format!("Range {value:?} {why} (blob is {size} bytes)"),
        upload_offset: None,
        blob_size: Some(size),
    };
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| invalid("must start with bytes="))?;
    if spec.contains(',') {
        return Err(invalid("asks for several ranges; only one is supported"));
    }
    let (start, end) = spec
        .split_once('-')
        .ok_or_else(|| invalid("is not of the form start-end"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| invalid("has a bound that is not a number"))
    };
    let (first, last) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => return Err(invalid("has no bounds")),
        (true, false) => {
            let suffix = number(end)?;
            if suffix == 0 {
                return Err(invalid("asks for an empty suffix"));
            }
            (size.saturating_sub(suffix), size.saturating_sub(1))
        }
        (false, true) => (number(start)?, size.saturating_sub(1)),
        (false, false) => (number(start)?, number(end)?.min(size.saturating_sub(1))),
    };
    if first > last || first >= size {
        return Err(invalid("is not satisfiable"));
    }
    Ok((first, last))
}

pub async fn get(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
    head: bool,
) -> Result<Response> {
    let digest: Digest = digest.parse()?;
    authorize(registry, headers, name, Action::Pull).await?;
    let size = blob::stat(registry, name, &digest).await?;
    let range = header_str(headers, header::RANGE)
        .map(|r| parse_range(r, size))
        .transpose()?;
    let (status, first, last) = match range {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, first, last),
        None => (StatusCode::OK, 0, size.saturating_sub(1)),
    };
    let length = if size == 0 { 0 } else { last - first + 1 };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header("Docker-Content-Digest", digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{size}"),
        );
    }
    if head || length == 0 {
        return Ok(builder.body(Body::empty()).expect("valid response"));
    }
    let file = registry.store.open_blob(&digest)?;
    // One mapped window per frame: no copy into user buffers and no
    // blocking-pool hop per chunk; each window is unmapped once sent.
    let counter = registry.clone();
    let end = last + 1;
    let stream = futures_util::stream::iter((first..end).step_by(SEND_CHUNK)).map(move |at| {
        let len = SEND_CHUNK.min((end - at) as usize);
        let chunk = crate::storage::map_window(&file, at, len)?;
        counter
            .stats
            .bytes_out
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk)
    });
    Ok(builder
        .body(Body::from_stream(stream))
        .expect("valid response"))
}

pub async fn delete(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
) -> Result<Response> {
    let digest: Digest = digest.parse()?;
    authorize(registry, headers, name, Action::Delete).await?;
    blob::unlink(registry, name, &digest).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), (50, 99));
        for bad in [
            "bytes=100-",
            "bytes=5-2",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-",
            "bytes=-0",
            "0-1",
        ] {
            assert!(parse_range(bad, 100).is_err(), "{bad}");
        }
    }
}
