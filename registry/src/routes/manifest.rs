//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{authorize, header_str};
use crate::access::Action;
use crate::error::{RegistryError, Result};
use crate::name::Reference;
use crate::{manifest, Registry};

/// The reference of a `PUT` (and of a `DELETE` by digest): a malformed one is the
/// client's error, `TAG_INVALID` or `DIGEST_INVALID`.
fn reference(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|message| {
        if s.contains(':') {
            RegistryError::DigestInvalid(message)
        } else {
            RegistryError::TagInvalid(message)
        }
    })
}

pub async fn get(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    reference_text: &str,
    head: bool,
) -> Result<Response> {
    authorize(registry, headers, name, Action::Pull).await?;
    // A reference that is neither a tag nor a digest names nothing that could
    // exist: 404 MANIFEST_UNKNOWN, as distribution answers (its route does not
    // match, or the "tag" is unknown), not 400.
    let reference = Reference::parse(reference_text).map_err(|why| {
        RegistryError::ManifestUnknown(format!("{name}:{reference_text} ({why})"))
    })?;
    let stored = manifest::get(registry, name, &reference).await?;
    let length = stored.body.len();
    let body = if head {
        Body::empty()
    } else {
        registry
            .stats
            .bytes_out
            .fetch_add(length as u64, Ordering::Relaxed);
        Body::from(stored.body)
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, stored.media_type)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ETAG, format!("\"{}\"", stored.digest))
        .header("Docker-Content-Digest", stored.digest)
        .body(body)
        .expect("valid response"))
}

pub async fn put(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    reference_text: &str,
    body: Body,
) -> Result<Response> {
    let reference = reference(reference_text)?;
    authorize(registry, headers, name, Action::Push).await?;
    let limit = registry.config.max_manifest_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        RegistryError::TooLarge(format!(
            "manifest is larger than the limit of {limit} bytes (or the body could not be read)"
        ))
    })?;
    registry
        .stats
        .bytes_in
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let outcome = manifest::put(
        registry,
        name,
        &reference,
        header_str(headers, header::CONTENT_TYPE),
        bytes,
    )
    .await?;
    let mut response = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                format!("/v2/{name}/manifests/{}", outcome.digest),
            ),
            (header::CONTENT_LENGTH, "0".to_owned()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                outcome.digest.to_string(),
            ),
        ],
    )
        .into_response();
    if let Some(subject) = outcome.subject {
        response.headers_mut().insert(
            "OCI-Subject",
            subject
                .to_string()
                .parse()
                .expect("digest is a valid header"),
        );
    }
    Ok(response)
}

pub async fn delete(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    reference_text: &str,
) -> Result<Response> {
    // As distribution: a malformed digest is DIGEST_INVALID (400); anything else
    // that is not a valid tag names no tag that could exist, so MANIFEST_UNKNOWN
    // (404) once the caller may delete here.
    let reference = match Reference::parse(reference_text) {
        Ok(reference) => Some(reference),
        Err(message) if reference_text.contains(':') => {
            return Err(RegistryError::DigestInvalid(message))
        }
        Err(_) => None,
    };
    authorize(registry, headers, name, Action::Delete).await?;
    let Some(reference) = reference else {
        return Err(RegistryError::ManifestUnknown(format!(
            "{name}:{reference_text} (not a valid tag)"
        )));
    };
    manifest::delete(registry, name, &reference).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
