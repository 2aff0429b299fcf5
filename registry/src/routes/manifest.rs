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
    let reference = reference(reference_text)?;
    authorize(registry, headers, name, Action::Pull).await?;
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
    let reference = reference(reference_text)?;
    authorize(registry, headers, name, Action::Delete).await?;
    manifest::delete(registry, name, &reference).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
