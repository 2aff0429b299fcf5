//! The step log page (filled in by the log viewer work): see `web/src/log.rs`.

use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
