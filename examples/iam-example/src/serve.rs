//! `iam-example serve`: the IAM service. Connects without recreating
//! anything ([`Backend::open`]), creates the read-model tables when
//! missing, runs the three SQL projections under this instance's leases
//! (several instances share the work: each projection runs where its lease
//! is held, and moves when that instance dies), and answers the HTTP API of
//! [`crate::http`] until stopped.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use annals::projection::runner::RunningProjection;
use annals::publisher::Publisher;
use annals::subscription::SubscriptionHandle;
use anyhow::{Context, Result};
use iam_domain::audit::AuditTrail;
use iam_domain::directory::TenantDirectory;
use iam_domain::permissions::UserPermissions;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::config::ServeConfig;
use crate::http::{Api, router};
use crate::service::Iam;

/// Events per projection batch (and per read-model transaction).
const BATCH: usize = 500;

/// A started service.
pub struct RunningService {
    /// Where it listens.
    pub address: SocketAddr,
    /// This instance's name in the leases.
    pub instance: String,
    /// What it runs on: backend and location (passwords hidden), Redis,
    /// the replica and the relay.
    pub description: String,
    shutdown: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
    projections: Arc<Projections>,
    relay: Option<Arc<SubscriptionHandle<Publisher>>>,
}

/// The service's three read models, running.
struct Projections {
    directory: RunningProjection<TenantDirectory>,
    permissions: RunningProjection<UserPermissions>,
    audit: RunningProjection<AuditTrail>,
}

/// The process's Prometheus handle: the recorder is installed once, and
/// every service in the process (tests start several) renders it.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                eprintln!(
                    "iam-example serve: another metrics recorder is installed; /metrics stays empty"
                );
            }
            handle
        })
        .clone()
}

/// Connects, starts the projections and listens.
pub async fn start(config: &ServeConfig) -> Result<RunningService> {
    let prometheus = prometheus();
    let backend = Arc::new(Backend::open(config).await?);
    backend.create_read_model_tables().await?;
    let projections = Arc::new(Projections {
        directory: backend.run_projection(TenantDirectory, BATCH),
        permissions: backend.run_projection(UserPermissions, BATCH),
        audit: backend.run_projection(AuditTrail, BATCH),
    });
    let statuses = {
        let projections = projections.clone();
        move || {
            vec![
                projections.directory.status(),
                projections.permissions.status(),
                projections.audit.status(),
            ]
        }
    };
    let relay = match &config.nats_url {
        Some(url) => Some(Arc::new(backend.relay_to_jetstream(url).await?)),
        None => None,
    };
    let relay_status = {
        let relay = relay.clone();
        move || relay.as_ref().map(|relay| relay.status())
    };
    let instance = backend.worker_name();
    let description = describe(&backend.description, config);
    let api = Arc::new(Api {
        iam: Iam::new(&backend, backend.cache.clone()),
        backend: backend.clone(),
        projections: Box::new(statuses),
        relay: Box::new(relay_status),
        instance: instance.clone(),
        prometheus,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        axum::serve(listener, router(api))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningService {
        address,
        instance,
        description,
        shutdown,
        served,
        projections,
        relay,
    })
}

impl RunningService {
    /// Stops listening (answering the requests under way), then stops the
    /// projections, giving their leases up so another instance takes over
    /// at once.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        self.served
            .await
            .context("the HTTP server panicked")?
            .context("the HTTP server failed")?;
        match self.relay.map(Arc::try_unwrap) {
            Some(Ok(relay)) => {
                relay.stop().await?;
            }
            // A request still holds its status: ask it to stop; it gives
            // its lease up when it does.
            Some(Err(relay)) => relay.request_stop(),
            None => {}
        }
        match Arc::try_unwrap(self.projections) {
            Ok(projections) => {
                projections.directory.stop().await?;
                projections.permissions.stop().await?;
                projections.audit.stop().await?;
            }
            // A request still holds the statuses: ask them to stop; each
            // gives its lease up when it does.
            Err(projections) => {
                projections.directory.request_stop();
                projections.permissions.request_stop();
                projections.audit.request_stop();
            }
        }
        Ok(())
    }
}

/// Serves until Ctrl-C or SIGTERM. The first line of stdout names the
/// address (scripts and tests read it).
pub async fn run(config: &ServeConfig) -> Result<()> {
    let service = start(config).await?;
    println!("iam-example serving on http://{}/", service.address);
    eprintln!(
        "iam-example: instance {} on {}; Ctrl-C stops",
        service.instance, service.description
    );
    stop_signal().await?;
    eprintln!("iam-example: stopping");
    service.stop().await
}

/// The backend's description with what only the service adds: the
/// replica and the relay.
fn describe(backend: &str, config: &ServeConfig) -> String {
    let mut text = backend.to_owned();
    if let Some(replica) = &config.replica_url {
        text.push_str(&format!(
            ", log read from {}",
            annals::store::redact_url(replica)
        ));
    }
    if let Some(nats) = &config.nats_url {
        text.push_str(&format!(
            ", relaying to JetStream at {}",
            annals::store::redact_url(nats)
        ));
    }
    text
}

async fn stop_signal() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}
