//! The policy in force, and replacing it while the proxy runs.
//!
//! Every session reads the policy through [`Live`]: the request half takes
//! the current [`Shared`] for each command, the reply half for each batch
//! of replies, so a reloaded policy applies to the next command of every
//! connection without dropping any. A [`Reloader`] re-reads the policy
//! file on SIGHUP and when its content changes; a file that fails
//! validation leaves the running policy in place, logged and counted.
//!
//! What a reload replaces: identities, grants, admission limits and
//! integrity keys and modes; input limits and the authentication timeout
//! for connections opened after it.
//! What it keeps: what the running policy has counted (rate-limit buckets
//! of unchanged limits, enqueues in flight, tasks handed out), the
//! metrics, the authentication throttle and the proxy's Redis connection.
//! Listeners, the upstream and the admin address are bound at start: a
//! reload that changes them says so in the log and keeps the old ones.
//!
//! This module touches the configuration loader, the metrics and the
//! [`Live`] it swaps; never a socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{self, Settings};
use crate::gate::AUDIT;
use crate::metrics::Metrics;
use crate::session::Shared;

/// The policy every session reads, and the proxy's state of running.
pub struct Live {
    current: ArcSwap<Shared>,
    /// The generation of the policy in force; sessions wait on it to
    /// check their identity when it changes.
    generation: watch::Sender<u64>,
    /// Set once when the proxy begins to shut down.
    closing: watch::Sender<bool>,
}

impl Live {
    pub fn new(shared: Shared) -> Arc<Live> {
        let generation = shared.generation;
        Arc::new(Live {
            current: ArcSwap::from_pointee(shared),
            generation: watch::Sender::new(generation),
            closing: watch::Sender::new(false),
        })
    }

    /// The policy in force now.
    pub fn load(&self) -> Arc<Shared> {
        self.current.load_full()
    }

    /// Wakes when a new policy is in force.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Wakes when the proxy begins to shut down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Whether the proxy is shutting down.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Tells every session to finish: no command is read any more.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn replace(&self, shared: Shared) {
        let generation = shared.generation;
        self.current.store(Arc::new(shared));
        self.generation.send_replace(generation);
    }
}

/// Builds the state of a new policy from `settings`, keeping what the
/// running one (`old`) holds that must outlive it. Returns the settings
/// that only a restart can change, when the new file changes them.
pub fn next(old: &Shared, mut settings: Settings) -> (Shared, Vec<&'static str>) {
    let mut restart = Vec::new();
    if !same_upstream(&old.upstream, &settings.upstream) {
        restart.push("upstream");
    }
    if old.throttle.settings != settings.throttle {
        restart.push("auth.max_failures_per_minute, auth.failure_delay_ms");
    }
    match Arc::get_mut(&mut settings.admission) {
        Some(admission) => admission.carry_over(&old.admission),
        None => warn!("reload: rate-limit state could not be carried over"),
    }
    match Arc::get_mut(&mut settings.integrity) {
        Some(integrity) => integrity.carry_over(&old.integrity),
        None => warn!("reload: integrity state could not be carried over"),
    }
    let shared = Shared {
        generation: old.generation + 1,
        upstream: Arc::clone(&old.upstream),
        limits: settings.limits,
        metrics: Arc::clone(&old.metrics),
        identities: settings.identities,
        throttle: Arc::clone(&old.throttle),
        auth_timeout: settings.auth_timeout,
        max_pending_commands: settings.max_pending_commands,
        admission: settings.admission,
        integrity: settings.integrity,
        control: Arc::clone(&old.control),
    };
    (shared, restart)
}

fn same_upstream(a: &config::UpstreamSettings, b: &config::UpstreamSettings) -> bool {
    a.address == b.address
        && a.username == b.username
        && a.password.as_ref().map(config::Secret::expose)
            == b.password.as_ref().map(config::Secret::expose)
        && a.database == b.database
        && a.connect_timeout == b.connect_timeout
        && a.tls.is_some() == b.tls.is_some()
}

/// Re-reads the policy file and puts it in force when it validates.
pub struct Reloader {
    path: PathBuf,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    /// The SHA-256 of the file in force, and of the last file that failed
    /// (not tried again until it changes or SIGHUP asks).
    loaded: String,
    failed: Option<String>,
    /// What start-up bound, which a reload cannot change.
    listeners: Vec<config::ListenerSettings>,
    admin: Option<std::net::SocketAddr>,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<Live>, settings: &Settings) -> Reloader {
        let metrics = Arc::clone(&live.load().metrics);
        metrics.policy_loaded(&settings.sha256);
        Reloader {
            path,
            live,
            metrics,
            loaded: settings.sha256.clone(),
            failed: None,
            listeners: settings.listeners.clone(),
            admin: settings.admin,
        }
    }

    /// Whether the file's content differs from what was last loaded or
    /// last failed; a file that cannot be read counts as changed.
    fn changed(&self) -> bool {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let sha = crate::auth::hash_secret(&bytes);
                sha != self.loaded && self.failed.as_ref() != Some(&sha)
            }
            Err(_) => self.failed.is_none(),
        }
    }

    /// Reads, validates and puts the file in force; `why` says what asked
    /// (`sighup`, `file_changed`). Returns whether it is in force now.
    pub fn reload(&mut self, why: &'static str) -> bool {
        let settings = match config::load(&self.path) {
            Ok(s) => s,
            Err(e) => {
                self.failed = std::fs::read(&self.path)
                    .ok()
                    .map(|b| crate::auth::hash_secret(&b));
                if self.failed.is_none() {
                    self.failed = Some(String::new());
                }
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                error!(target: AUDIT, event = "policy_reload", result = "error", trigger = why, error = %e, "policy reload failed, the running policy stays in force");
                return false;
            }
        };
        for w in &settings.warnings {
            warn!(config = %self.path.display(), "{w}");
        }
        let mut restart = Vec::new();
        if !same_listeners(&self.listeners, &settings.listeners) {
            restart.push("listener");
        }
        if self.admin != settings.admin {
            restart.push("admin");
        }
        let sha = settings.sha256.clone();
        let old = self.live.load();
        let (shared, more) = next(&old, settings);
        restart.extend(more);
        let generation = shared.generation;
        self.live.replace(shared);
        self.loaded = sha.clone();
        self.failed = None;
        self.metrics.policy_loaded(&sha);
        self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
        info!(target: AUDIT, event = "policy_reload", result = "ok", trigger = why, sha256 = %sha, generation, "policy reloaded");
        if !restart.is_empty() {
            warn!(
                settings = %restart.join(", "),
                "the reloaded file changes settings read only at start; they apply after a restart"
            );
        }
        true
    }

    /// Reloads on every SIGHUP, and every `watch` when the file changed,
    /// until the task is dropped.
    pub async fn run(mut self, mut hup: tokio::signal::unix::Signal, watch: Option<Duration>) {
        let mut tick = watch.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let poll = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                signal = hup.recv() => {
                    if signal.is_none() {
                        return;
                    }
                    info!("SIGHUP: reloading the policy");
                    self.failed = None;
                    self.reload("sighup");
                }
                () = poll => {
                    if self.changed() {
                        info!(config = %self.path.display(), "policy file changed, reloading");
                        self.reload("file_changed");
                    }
                }
            }
        }
    }
}

fn same_listeners(a: &[config::ListenerSettings], b: &[config::ListenerSettings]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.address == y.address
                && x.resp3 == y.resp3
                && x.tls.is_some() == y.tls.is_some()
        })
}

/// Waits until every session has ended or `grace` has passed; returns
/// how many were still open.
pub async fn drain(open: impl Fn() -> usize, grace: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let n = open();
        if n == 0 || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
