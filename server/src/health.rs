//! `/healthz` (the process is up) and `/readyz` (the database answers and the
//! storage accepts writes).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::app::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = sqlx::query("SELECT 1")
        .execute(&app.db)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let probe = app.registry.store.uploads_dir().join(".readyz-probe");
    let storage = async {
        tokio::fs::write(&probe, b"ok").await?;
        tokio::fs::remove_file(&probe).await
    }
    .await
    .map_err(|e| e.to_string());
    let ready = database.is_ok() && storage.is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    (
        status,
        Json(json!({ "database": show(database), "storage": show(storage) })),
    )
}
