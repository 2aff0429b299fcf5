//! `POST /api/v1/registry/gc[?dry_run=true]` (admin): run one GC pass now.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{Json, Query};
use super::{ApiCaller, ApiError};
use crate::app::AppState;

#[derive(Deserialize)]
pub struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize)]
pub struct GcResult {
    dry_run: bool,
    blobs_removed: u64,
    bytes_freed: u64,
    manifests_removed: u64,
    uploads_expired: u64,
    orphan_files_removed: u64,
}

pub async fn run(
    State(app): State<AppState>,
    caller: ApiCaller,
    Query(query): Query<GcQuery>,
) -> Result<Json<GcResult>, ApiError> {
    caller.require_admin()?;
    let report = slipway_registry::gc::collect(&app.registry, &app.gc_options(query.dry_run))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(GcResult {
        dry_run: query.dry_run,
        blobs_removed: report.blobs_removed,
        bytes_freed: report.bytes_freed,
        manifests_removed: report.manifests_removed,
        uploads_expired: report.uploads_expired,
        orphan_files_removed: report.orphan_files_removed,
    }))
}
