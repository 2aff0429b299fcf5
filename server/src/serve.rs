//! `slipway server`: open the database, make sure an admin exists, build the
//! registry, serve until SIGTERM/SIGINT, then drain and close.

use std::sync::Arc;

use anyhow::Context;
use slipway_registry::{Registry, RegistryConfig};
use tokio::net::TcpListener;

use crate::app::{self, App};
use crate::auth::registry_auth::RegistryAuth;
use crate::auth::registry_token::RegistryTokens;
use crate::auth::users::{self, Role};
use crate::auth::{password, Auth};
use crate::config::Settings;
use crate::listen::connections::{Connections, Limits};
use crate::listen::tls::Certificates;
use crate::metrics::Metrics;
use crate::pipeline::artifacts::Artifacts;
use crate::pipeline::logs::Logs;
use crate::pipeline::repo::Repos;
use crate::pipeline::scheduler::{expire_leases, Scheduler};
use crate::pipeline::secrets::{load_key, Secrets};
use crate::{db, registry_gc};

/// A runner that misses heartbeats this long loses its job.
const LEASE: std::time::Duration = std::time::Duration::from_secs(10);
/// Leases a job may lose before it fails.
const MAX_ATTEMPTS: i64 = 3;

/// Every second, requeue (or fail) jobs whose lease ran out.
fn spawn_lease_expiry(scheduler: Scheduler) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = expire_leases(&scheduler).await {
                tracing::error!(error = %e, "expiring leases failed");
            }
        }
    })
}

/// glibc keeps freed heap memory for reuse; after a burst of large buffers (a
/// registry push) that is tens of MiB of resident memory doing nothing. Large
/// allocations from their own mappings go back to the system when freed.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    return_freed_memory();
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let pool = db::open(&settings.database_path())
        .await
        .with_context(|| format!("opening database {}", settings.database_path().display()))?;
    ensure_admin(&pool, &settings).await?;

    let tokens = RegistryTokens::load(&pool, settings.registry.token_ttl).await?;
    let mut auth = Auth::new(
        pool.clone(),
        tokens,
        settings.registry.anonymous_pull,
        settings.public_url.clone(),
    );
    auth.https = settings.tls();
    let auth = Arc::new(auth);
    let registry_config = RegistryConfig {
        max_manifest_bytes: settings.registry.max_manifest_bytes,
        immutable_tags: settings.immutable_tag_patterns()?,
        upload_expiry: settings.registry.upload_expiry,
    };
    let registry = Registry::new(
        pool.clone(),
        settings.registry_root(),
        Arc::new(RegistryAuth(auth.clone())),
        registry_config,
    )
    .with_context(|| format!("opening blob store {}", settings.registry_root().display()))?;

    let certificates = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(Certificates::load(cert, key)?),
        _ => None,
    };
    let tls = certificates.as_ref().map(|c| c.acceptor()).transpose()?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // The address actually bound (port 0 picks one), for links made without a
    // configured public URL.
    settings.listen = addr;
    let scheme = if settings.tls() { "https" } else { "http" };
    if settings.public_url.is_none() {
        tracing::info!(
            "no public_url configured: links sent to forges and webhooks use {}",
            settings.default_public_url()
        );
    }
    let max_connections = crate::listen::fit_to_fd_limit(settings.http.max_connections);
    if max_connections < settings.http.max_connections {
        tracing::warn!(
            configured = settings.http.max_connections,
            max_connections,
            "http.max_connections lowered to fit the open-file limit"
        );
    }
    let connections = Connections::new(Limits {
        total: max_connections,
        per_ip: settings.http.max_connections_per_ip.min(max_connections),
        first_request: settings.http.header_read_timeout,
        idle: settings.http.idle_timeout,
        body_idle: settings.http.body_idle_timeout,
    });
    let repos = Repos::new(pool.clone(), &settings.data_dir);
    let settings_data_dir = settings.data_dir.clone();
    let logs = Logs::new(&settings.data_dir);
    let secrets_key = load_key(
        settings.secrets_key.as_ref().map(|k| k.expose()),
        &settings.data_dir,
    )?;
    let secrets = Secrets::new(pool.clone(), secrets_key);
    let scheduler = Scheduler::new(pool.clone(), LEASE, MAX_ATTEMPTS);
    let app = Arc::new(App {
        settings,
        db: pool.clone(),
        auth,
        registry,
        metrics: Metrics::default(),
        repos,
        scheduler,
        artifacts: Artifacts::new(&settings_data_dir),
        logs,
        secrets,
        deploys: crate::deploy::Deploys::default(),
        instance_logs: crate::deploy::instance_logs::InstanceLogs::new(&settings_data_dir),
    });
    let gc = registry_gc::spawn(app.clone());
    let expiry = spawn_lease_expiry(app.scheduler.clone());
    let notifier = crate::pipeline::notify::spawn(app.clone());
    let triggers = crate::pipeline::triggers::spawn(app.clone());
    let reconciler = crate::deploy::reconcile::spawn(app.clone());
    let deploy_notifier = crate::deploy::notify::spawn(app.clone());

    let reloader = certificates.map(spawn_certificate_reload);

    // Printed, not logged: scripts read it whatever the log level.
    println!("slipway listening on {scheme}://{addr}");
    tracing::info!(
        %addr,
        data_dir = %app.settings.data_dir.display(),
        max_connections,
        max_connections_per_ip = connections.limits().per_ip,
        header_read_timeout = ?app.settings.http.header_read_timeout,
        idle_timeout = ?app.settings.http.idle_timeout,
        body_idle_timeout = ?app.settings.http.body_idle_timeout,
        "server started"
    );

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = app.settings.shutdown_grace;
    let server = crate::listen::serve(
        listener,
        app::router(app.clone()),
        connections,
        tls,
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new connections, waiting for requests in flight");
            let _ = stopping_tx.send(());
        },
    );
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = server => {}
        () = deadline => tracing::warn!(?grace, "shutdown deadline passed; closing with requests still in flight"),
    }
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    gc.abort();
    expiry.abort();
    notifier.abort();
    triggers.abort();
    reconciler.abort();
    deploy_notifier.abort();
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// On SIGHUP, read the certificate and key again; new handshakes use them if
/// they changed. A broken pair is logged and the current one kept.
fn spawn_certificate_reload(certificates: Arc<Certificates>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot install the SIGHUP handler: certificates will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            let (cert, key) = certificates.paths();
            match certificates.reload() {
                Ok(true) => {
                    tracing::info!(cert = %cert.display(), key = %key.display(), "SIGHUP: TLS certificate reloaded")
                }
                Ok(false) => {
                    tracing::info!(cert = %cert.display(), "SIGHUP: TLS certificate unchanged")
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; keeping the current one")
                }
            }
        }
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The first start creates user `admin`, with `admin_password` from the settings
/// (`SLIPWAY_ADMIN_PASSWORD`) or a generated password printed once.
async fn ensure_admin(pool: &sqlx::SqlitePool, settings: &Settings) -> anyhow::Result<()> {
    if users::count(pool).await? > 0 {
        return Ok(());
    }
    let (password, generated) = match &settings.admin_password {
        Some(p) => (p.expose().to_owned(), false),
        None => (password::generate(), true),
    };
    users::create(pool, "admin", &password, Role::Admin)
        .await
        .context("creating the first admin user")?;
    if generated {
        println!("created user admin with generated password: {password}");
        println!("(shown once; set SLIPWAY_ADMIN_PASSWORD before the first start to choose it)");
    } else {
        tracing::info!("created user admin with the configured password");
    }
    Ok(())
}
