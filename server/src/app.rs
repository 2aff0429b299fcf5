//! The server's shared state and its router: registry routes, the token endpoint,
//! the REST API, health and metrics, wrapped in request metrics and tracing.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use slipway_registry::gc::GcOptions;
use slipway_registry::Registry;
use sqlx::SqlitePool;
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::config::Settings;
use crate::deploy::instance_logs::InstanceLogs;
use crate::deploy::Deploys;
use crate::metrics::Metrics;
use crate::pipeline::artifacts::Artifacts;
use crate::pipeline::logs::Logs;
use crate::pipeline::repo::Repos;
use crate::pipeline::scheduler::Scheduler;
use crate::pipeline::secrets::Secrets;
use crate::{api, auth, health, metrics};

pub struct App {
    pub settings: Settings,
    pub db: SqlitePool,
    pub auth: Arc<Auth>,
    pub registry: Registry,
    pub metrics: Metrics,
    pub repos: Repos,
    pub scheduler: Scheduler,
    pub logs: Logs,
    pub secrets: Secrets,
    pub artifacts: Artifacts,
    pub deploys: Deploys,
    pub instance_logs: InstanceLogs,
}

impl App {
    pub fn gc_options(&self, dry_run: bool) -> GcOptions {
        let gc = &self.settings.registry.gc;
        GcOptions {
            grace_period: gc.grace_period,
            untagged_retention: gc.untagged_retention,
            batch: gc.batch,
            dry_run,
        }
    }
}

pub type AppState = Arc<App>;

pub fn router(app: AppState) -> Router {
    let own = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::get))
        .route("/auth/token", get(auth::token_endpoint::get))
        .nest("/api/v1", api::router())
        .merge(crate::ui::router())
        .with_state(app.clone());
    own.merge(slipway_registry::router(app.registry.clone()))
        .layer(axum::middleware::from_fn_with_state(app, metrics::track))
        .layer(TraceLayer::new_for_http())
}
