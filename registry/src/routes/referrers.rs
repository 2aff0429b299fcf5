//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`: an OCI image index of the
//! manifests whose subject is `digest`.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{authorize, Params};
use crate::access::Action;
use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::OCI_INDEX;
use crate::{referrer, Registry};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

pub async fn get(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
    params: &Params,
) -> Result<Response> {
    let subject: Digest = digest.parse()?;
    authorize(registry, headers, name, Action::Pull).await?;
    let filter = params
        .get("artifactType")
        .map(String::as_str)
        .filter(|t| !t.is_empty());
    let manifests = referrer::list(registry, name, &subject, filter)
        .await?
        .into_iter()
        .map(|r| Descriptor {
            media_type: r.media_type,
            digest: r.digest,
            size: r.size,
            artifact_type: r.artifact_type,
            annotations: r.annotations,
        })
        .collect();
    let mut response = axum::Json(Index {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    })
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        OCI_INDEX.parse().expect("valid header"),
    );
    if filter.is_some() {
        headers.insert(
            "OCI-Filters-Applied",
            "artifactType".parse().expect("valid header"),
        );
    }
    Ok(response)
}
