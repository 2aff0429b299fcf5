//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic, mount) and
//! `PATCH`/`PUT`/`GET`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{authorize, header_str, range_header, Params};
use crate::access::Action;
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::{blob, upload, Registry};

/// Request header asking for, and response header giving, the directory of
/// local uploads.
const LOCAL_UPLOAD: &str = "slipway-local-upload";

fn session_response(status: StatusCode, name: &str, id: &str, len: u64) -> Response {
    (
        status,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
            (
                header::RANGE,
                range_header(len).to_str().unwrap_or("0-0").to_owned(),
            ),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                id.to_owned(),
            ),
        ],
    )
        .into_response()
}

fn created(name: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest.to_string(),
            ),
        ],
    )
        .into_response()
}

/// `Content-Range` of a PATCH/PUT chunk: `start-end`, also accepted with a
/// `bytes ` or `bytes=` prefix and a `/total` suffix.
pub(crate) fn parse_content_range(value: &str) -> Result<(u64, u64)> {
    let invalid = || RegistryError::RangeInvalid {
        message: format!("Content-Range {value:?} is not of the form start-end"),
        upload_offset: None,
        blob_size: None,
    };
    let v = value.trim();
    let v = v
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches([' ', '=']))
        .unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v);
    let (start, end) = v.split_once('-').ok_or_else(invalid)?;
    let start = start.trim().parse::<u64>().map_err(|_| invalid())?;
    let end = end.trim().parse::<u64>().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok((start, end))
}

fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>> {
    header_str(headers, header::CONTENT_RANGE)
        .map(parse_content_range)
        .transpose()
}

pub async fn post(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    params: &Params,
    body: Body,
) -> Result<Response> {
    let caller = authorize(registry, headers, name, Action::Push).await?;
    if let Some(mount) = params.get("mount") {
        let digest: Digest = mount.parse()?;
        let sources = match params.get("from") {
            Some(from) => vec![from.clone()],
            None => blob::repositories_with(registry, &digest, name).await?,
        };
        for from in sources {
            // A source the caller may not pull from is skipped silently, exactly as
            // if it did not have the blob: nothing leaks about other repositories.
            if crate::name::check_name(&from).is_ok()
                && caller.may(&from, Action::Pull)
                && blob::mount(registry, name, &from, &digest).await?
            {
                return Ok(created(name, &digest));
            }
        }
    } else if let Some(digest) = params.get("digest") {
        let digest: Digest = digest.parse()?;
        match params.get("local") {
            Some(local) => upload::adopt(registry, name, local, &digest).await?,
            None => upload::monolithic(registry, name, &digest, body).await?,
        }
        return Ok(created(name, &digest));
    }
    let id = upload::start(registry, name).await?;
    let mut response = session_response(StatusCode::ACCEPTED, name, &id, 0);
    // A client on this machine may hard-link blobs into the store instead
    // of sending them (see `upload::adopt`); it asks where.
    if headers.contains_key(LOCAL_UPLOAD) {
        if let Ok(dir) =
            header::HeaderValue::from_str(&registry.store.incoming_dir().to_string_lossy())
        {
            response.headers_mut().insert(LOCAL_UPLOAD, dir);
        }
    }
    Ok(response)
}

pub async fn patch(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    body: Body,
) -> Result<Response> {
    authorize(registry, headers, name, Action::Push).await?;
    let range = content_range(headers)?;
    let len = upload::append(registry, name, id, range, body).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, id, len))
}

pub async fn put(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    params: &Params,
    body: Body,
) -> Result<Response> {
    authorize(registry, headers, name, Action::Push).await?;
    let digest: Digest = params
        .get("digest")
        .ok_or_else(|| {
            RegistryError::DigestInvalid(
                "the digest query parameter is required to complete an upload".into(),
            )
        })?
        .parse()?;
    let range = content_range(headers)?;
    upload::complete(registry, name, id, &digest, range, body).await?;
    Ok(created(name, &digest))
}

pub async fn status(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    id: &str,
) -> Result<Response> {
    authorize(registry, headers, name, Action::Push).await?;
    let len = upload::status(registry, name, id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, name, id, len))
}

pub async fn cancel(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    id: &str,
) -> Result<Response> {
    authorize(registry, headers, name, Action::Push).await?;
    upload::cancel(registry, name, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99").unwrap(), (0, 99));
        assert_eq!(parse_content_range("bytes 100-199/*").unwrap(), (100, 199));
        assert_eq!(parse_content_range("bytes=5-5").unwrap(), (5, 5));
        for bad in ["", "5", "a-b", "9-3", "-3", "3-"] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }
}
