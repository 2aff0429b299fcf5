//! The images pages: the registry's repositories, and per repository its
//! tags with digest, size, created time, layers, referrers (provenance), the
//! pipeline that built it, and a pull reference by digest. Read through the
//! registry crate; nothing here writes registry tables.

use std::io::Read;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use slipway_registry::name::Reference;
use slipway_registry::{manifest, referrer, repository, tag, Digest, RegistryError};

use super::pipeline::when;
use super::{render, Viewer};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/images", get(list))
        .route("/images/{*name}", get(detail))
}

/// At most this many repositories, and tags per repository, on one page.
const MAX: i64 = 200;

fn failed(e: RegistryError) -> Response {
    let status = e.status();
    (status, e.to_string()).into_response()
}

async fn list(State(app): State<AppState>, viewer: Viewer) -> Response {
    let names = match repository::list(&app.registry, None, MAX).await {
        Ok(n) => n,
        Err(e) => return failed(e),
    };
    let mut repositories = Vec::new();
    for name in names {
        let tags = tag::list(&app.registry, &name, None, 6)
            .await
            .unwrap_or_default();
        let mut shown = tags.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if tags.len() > 5 {
            shown.push_str(", …");
        }
        repositories.push(slipway_web::RepositoryRow { name, tags: shown });
    }
    render(slipway_web::ImagesPage {
        nav: viewer.nav(),
        repositories,
    })
}

/// The image config's `created`, read from the blob store (configs are small).
fn created(app: &AppState, config: &str) -> String {
    let Ok(digest) = config.parse::<Digest>() else {
        return String::new();
    };
    let mut text = String::new();
    let read = app
        .registry
        .store
        .open_blob(&digest)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text));
    if read.is_err() {
        return String::new();
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["created"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn detail(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let tags = match tag::list(&app.registry, &name, None, MAX).await {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let base = app.auth.base_url(&headers);
    let host = base.split("://").nth(1).unwrap_or(&base).to_owned();
    let mut details = Vec::new();
    for t in tags {
        let Ok(stored) =
            manifest::store::get(&app.registry, &name, &Reference::Tag(t.clone())).await
        else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_slice(&stored.body).unwrap_or_default();
        let layers: Vec<slipway_web::LayerRow> = doc["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| slipway_web::LayerRow {
                        digest: l["digest"].as_str().unwrap_or_default().to_owned(),
                        size: slipway_web::human_size(l["size"].as_i64().unwrap_or(0)),
                        media_type: l["mediaType"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let total: i64 = doc["layers"]
            .as_array()
            .map(|ls| ls.iter().filter_map(|l| l["size"].as_i64()).sum())
            .unwrap_or(0)
            + doc["config"]["size"].as_i64().unwrap_or(0);
        let config = doc["config"]["digest"].as_str().unwrap_or_default();
        let referrers = match stored.digest.parse::<Digest>() {
            Ok(d) => referrer::list(&app.registry, &name, &d, None)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|r| slipway_web::ReferrerRow {
                    artifact_type: r.artifact_type.unwrap_or(r.media_type),
                    digest: r.digest,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let built_by: Option<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT p.id, r.name, p.number, p.commit_sha FROM pipeline_images i
             JOIN pipelines p ON p.id = i.pipeline_id JOIN git_repos r ON r.id = p.repo_id
             WHERE i.repository = ? AND i.digest = ? ORDER BY i.id DESC LIMIT 1",
        )
        .bind(&name)
        .bind(&stored.digest)
        .fetch_optional(&app.db)
        .await
        .unwrap_or(None);
        let created = created(&app, config);
        details.push(slipway_web::TagDetail {
            pull: format!("{host}/{name}@{}", stored.digest),
            tag: t,
            digest: stored.digest.clone(),
            size: slipway_web::human_size(total),
            created: chrono::DateTime::parse_from_rfc3339(&created)
                .map(|d| when(d.timestamp_millis()))
                .unwrap_or(created),
            layers,
            referrers,
            built_by: built_by.map(|(pipeline_id, repo, number, sha)| slipway_web::BuiltBy {
                pipeline_id,
                repo,
                number,
                commit_short: sha.chars().take(12).collect(),
            }),
        });
    }
    render(slipway_web::ImageRepoPage {
        nav: viewer.nav(),
        name,
        tags: details,
    })
}
