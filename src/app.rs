//! Start-up and shutdown: wires the stages of the data path together.
//!
//! Binds every listener and the admin server before anything is served
//! (a port in use is a start-up error, not a log line), builds the shared
//! state, spawns the accept loops and the policy [`Reloader`], and waits
//! for SIGINT or SIGTERM. Shutdown is graceful: the listeners close, each
//! session stops reading and is closed once the commands it received are
//! answered, and whatever is still open after the grace period is cut.

use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::auth::Throttle;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::reload::{Live, Reloader};
use crate::session::Shared;
use crate::tls::ListenerTls;
use crate::{admin, listener};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({name}): {source}")]
    Bind {
        name: String,
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot handle SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// Runs the proxy until a termination signal arrives.
///
/// # Errors
///
/// A [`StartError`] if a port cannot be bound.
pub async fn run(settings: Settings, path: std::path::PathBuf) -> Result<(), StartError> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let metrics = Arc::new(Metrics::new(&registry)?);
    // Taken over before any port is bound: from then on SIGHUP means
    // reload, never the default of ending the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(StartError::Signal)?;
    let policy_hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(StartError::Signal)?;

    let mut bound = Vec::new();
    for l in &settings.listeners {
        let socket = TcpListener::bind(l.address)
            .await
            .map_err(|source| StartError::Bind {
                name: l.name.clone(),
                address: l.address,
                source,
            })?;
        bound.push((l.clone(), socket));
    }
    let admin_socket = match settings.admin {
        None => None,
        Some(address) => {
            Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind {
                        name: "admin".into(),
                        address,
                        source,
                    })?,
            )
        }
    };

    let live = Live::new(Shared {
        generation: 1,
        upstream: Arc::clone(&settings.upstream),
        limits: settings.limits,
        metrics: Arc::clone(&metrics),
        identities: Arc::clone(&settings.identities),
        throttle: Arc::new(Throttle::new(settings.throttle)),
        auth_timeout: settings.auth_timeout,
        max_pending_commands: settings.max_pending_commands,
        admission: Arc::clone(&settings.admission),
        integrity: Arc::clone(&settings.integrity),
        control: Arc::new(crate::control::Control::new(Arc::clone(&settings.upstream))),
    });
    spawn_forget_idle(Arc::clone(&settings.admission));
    for (l, socket) in bound {
        let mode = match &l.tls {
            None => "tcp",
            Some(t) if t.is_mutual() => "mutual-tls",
            Some(_) => "tls",
        };
        info!(listener = %l.name, mode, address = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        tokio::spawn(listener::accept_loop(socket, l, Arc::clone(&live)));
    }
    let tls: Vec<_> = settings
        .listeners
        .iter()
        .filter_map(|l| l.tls.clone().map(|t| (l.name.clone(), t)))
        .collect();
    tokio::spawn(reload_certificates_on_sighup(
        hup,
        tls,
        Arc::clone(&metrics),
    ));
    let reloader = Reloader::new(path, Arc::clone(&live), &settings);
    tokio::spawn(reloader.run(policy_hup, settings.watch_interval));
    if let Some(socket) = admin_socket {
        info!(address = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin server listening");
        let ready = admin::Readiness::new(Arc::clone(&live));
        tokio::spawn(async move {
            if let Err(error) = admin::serve(socket, registry, ready).await {
                error!(%error, "admin server stopped");
            }
        });
    }
    info!(upstream = %settings.upstream.address, tls = settings.upstream.tls.is_some(), "asynq-guard ready");
    let upstream = Arc::clone(&settings.upstream);
    let up = Arc::clone(&metrics);
    tokio::spawn(async move {
        match crate::upstream::probe(&upstream).await {
            Ok(()) => {
                up.upstream_up.set(1);
                info!("upstream Redis answers");
            }
            Err(error) => {
                warn!(%error, "upstream Redis is not usable yet; clients will get errors until it is")
            }
        }
    });

    wait_for_signal().await;
    let grace = settings.shutdown_grace;
    let gauges: Vec<_> = settings
        .listeners
        .iter()
        .map(|l| metrics.open_gauge(&l.name))
        .collect();
    let open = || {
        gauges
            .iter()
            .map(|g| usize::try_from(g.get()).unwrap_or(0))
            .sum::<usize>()
    };
    info!(
        open_connections = open(),
        grace_secs = grace.as_secs(),
        "shutting down: no new connections; open ones close once their commands are answered"
    );
    live.close();
    let left = crate::reload::drain(open, grace).await;
    if left > 0 {
        warn!(
            open_connections = left,
            "grace period over, closing the remaining connections"
        );
    } else {
        info!("every connection closed");
    }
    Ok(())
}

/// Re-reads every TLS listener's certificate, key and client CA on each
/// SIGHUP; a listener whose files fail to load keeps its current ones.
async fn reload_certificates_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    listeners: Vec<(String, Arc<ListenerTls>)>,
    metrics: Arc<Metrics>,
) {
    while hup.recv().await.is_some() {
        info!(
            tls_listeners = listeners.len(),
            "SIGHUP: reloading certificates"
        );
        for (name, tls) in &listeners {
            match tls.reload() {
                Ok(()) => {
                    metrics.tls_reloads.with_label_values(&["ok"]).inc();
                    info!(listener = %name, "certificates reloaded");
                }
                Err(error) => {
                    metrics.tls_reloads.with_label_values(&["error"]).inc();
                    error!(listener = %name, %error, "certificate reload failed, keeping the loaded ones");
                }
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Rate-limit buckets of keys idle long enough to be full again are
/// dropped every minute, so that many distinct keys (task types, say) do
/// not hold memory forever.
fn spawn_forget_idle(admission: Arc<crate::admission::Admission>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            admission.forget_idle();
        }
    });
}
