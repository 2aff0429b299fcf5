//! The background loop that runs registry GC every `registry.gc.interval`.

use tokio::task::JoinHandle;

use crate::app::AppState;

pub fn spawn(app: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let settings = app.settings.registry.gc.clone();
        if !settings.enabled {
            return;
        }
        let mut ticker = tokio::time::interval(settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match slipway_registry::gc::collect(&app.registry, &app.gc_options(false)).await {
                Ok(report) if report != Default::default() => {
                    tracing::info!(?report, "registry GC pass")
                }
                Ok(_) => tracing::debug!("registry GC pass: nothing to do"),
                Err(e) => tracing::warn!(error = %e, "registry GC pass failed"),
            }
        }
    })
}
