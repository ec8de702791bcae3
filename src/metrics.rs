//! Prometheus metrics of the data path.
//!
//! [`Metrics`] registers its families in a `prometheus::Registry` created
//! at start-up (no global registry) and is shared by every session. Label
//! values come from fixed sets only: a command name that is not a known
//! Redis command is counted as `other`, so a client cannot grow the label
//! space. Nothing here ever sees a key, a value or a secret.

use std::collections::HashMap;
use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Upstream round-trip buckets, in seconds: 50 µs to 2.5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// Every metric the data path updates.
pub struct Metrics {
    pub connections_total: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub client_errors: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_latency: Histogram,
    pub auth_attempts: IntCounterVec,
    pub refusals: IntCounterVec,
    pub limit_hits: IntCounterVec,
    pub shared_limit_failures: IntCounterVec,
    pub integrity_failures: IntCounterVec,
    pub integrity_signed: IntCounterVec,
    pub integrity_archived: IntCounterVec,
    pub queue_tasks: IntGaugeVec,
    pub tls_handshake_failures: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub sessions: IntGaugeVec,
    pub decisions: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub policy_info: IntGaugeVec,
    pub policy_loaded_at: IntGauge,
    pub upstream_up: IntGauge,
    commands_vec: IntCounterVec,
    /// One lazily created counter per known command, so that /metrics
    /// lists only the commands actually seen.
    commands: HashMap<&'static str, OnceLock<IntCounter>>,
    commands_other: OnceLock<IntCounter>,
    /// Queue names used as label values so far; past [`QUEUE_LABELS`]
    /// others are counted as `other`, so clients cannot grow the labels.
    queue_labels: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Most distinct queue names used as label values.
const QUEUE_LABELS: usize = 1000;

impl Metrics {
    /// Creates the metric families and registers them in `registry`.
    ///
    /// # Errors
    ///
    /// A `prometheus::Error` if a name is already registered there.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let connections_total = IntCounterVec::new(
            Opts::new(
                "asynq_guard_client_connections_total",
                "Client connections accepted, by listener.",
            ),
            &["listener"],
        )?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "asynq_guard_client_connections",
                "Client connections open now, by listener.",
            ),
            &["listener"],
        )?;
        let client_errors = IntCounterVec::new(
            Opts::new(
                "asynq_guard_client_errors_total",
                "Client connections closed for bad input, by reason (protocol, inline_command, max_args, max_bulk_bytes, max_buffer_bytes).",
            ),
            &["reason"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "asynq_guard_upstream_errors_total",
                "Upstream failures, by kind (connect, auth, lost, protocol).",
            ),
            &["kind"],
        )?;
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "asynq_guard_upstream_latency_seconds",
                "Time from forwarding a command to Redis to its reply (blocking and pub/sub commands excluded).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let commands_vec = IntCounterVec::new(
            Opts::new(
                "asynq_guard_commands_total",
                "Commands received from clients, by command name (unknown names as other).",
            ),
            &["command"],
        )?;
        let auth_attempts = IntCounterVec::new(
            Opts::new(
                "asynq_guard_auth_attempts_total",
                "Authentication attempts (AUTH, HELLO AUTH), by listener and result (ok, wrong_secret, unknown_identity, certificate_required, certificate_mismatch, throttled).",
            ),
            &["listener", "result"],
        )?;
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "asynq_guard_tls_handshake_failures_total",
                "TLS handshakes with clients that failed (including untrusted client certificates), by listener.",
            ),
            &["listener"],
        )?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "asynq_guard_tls_reloads_total",
                "Re-reads of listener certificates on SIGHUP, by result (ok, error).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(auth_attempts.clone()))?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "asynq_guard_refusals_total",
                "Commands refused by the policy, by identity, operation (none: not asynq traffic) and reason.",
            ),
            &["identity", "operation", "reason"],
        )?;
        registry.register(Box::new(refusals.clone()))?;
        let limit_hits = IntCounterVec::new(
            Opts::new(
                "asynq_guard_limit_hits_total",
                "Enqueues refused by a size cap, rate limit or queue cap, by identity, queue, limit and scope.",
            ),
            &["identity", "queue", "limit", "scope"],
        )?;
        registry.register(Box::new(limit_hits.clone()))?;
        let shared_limit_failures = IntCounterVec::new(
            Opts::new(
                "asynq_guard_shared_limit_failures_total",
                "Enqueues whose shared rate limit state in Redis was out of reach, by limit and what its on_failure did.",
            ),
            &["limit", "outcome"],
        )?;
        registry.register(Box::new(shared_limit_failures.clone()))?;
        let integrity_failures = IntCounterVec::new(
            Opts::new(
                "asynq_guard_integrity_failures_total",
                "Task messages that failed their signature check, by queue, reason and path (enqueue, write_back, update: refused; deliver: withheld from a worker; inspect: marked for an inspector).",
            ),
            &["queue", "reason", "path"],
        )?;
        registry.register(Box::new(integrity_failures.clone()))?;
        let integrity_signed = IntCounterVec::new(
            Opts::new(
                "asynq_guard_integrity_signed_total",
                "Task messages the proxy signed, by queue and occasion (enqueue, write_back, update: counted when forwarded, so a go-redis NOSCRIPT fallback counts twice; grace: an unsigned task accepted and signed in place).",
            ),
            &["queue", "how"],
        )?;
        registry.register(Box::new(integrity_signed.clone()))?;
        let integrity_archived = IntCounterVec::new(
            Opts::new(
                "asynq_guard_integrity_archived_total",
                "Tasks withheld from a worker for failing their check, by queue and what became of them (archived; gone: no longer where they were; failed: Redis could not be asked).",
            ),
            &["queue", "outcome"],
        )?;
        registry.register(Box::new(integrity_archived.clone()))?;
        let queue_tasks = IntGaugeVec::new(
            Opts::new(
                "asynq_guard_queue_tasks",
                "Tasks waiting in a capped queue (what its cap counts), as last counted for an enqueue.",
            ),
            &["queue"],
        )?;
        registry.register(Box::new(queue_tasks.clone()))?;
        let sessions = IntGaugeVec::new(
            Opts::new(
                "asynq_guard_client_sessions",
                "Authenticated client connections open now, by the identity they first logged in as.",
            ),
            &["listener", "identity"],
        )?;
        registry.register(Box::new(sessions.clone()))?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "asynq_guard_decisions_total",
                "Commands of authenticated clients, by identity, asynq operation and verdict (forwarded, answered by the proxy, refused).",
            ),
            &["identity", "operation", "verdict"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "asynq_guard_policy_reloads_total",
                "Policy reloads (SIGHUP or file change), by result: ok, error (the running policy stayed in force).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(policy_reloads.clone()))?;
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "asynq_guard_policy_info",
                "1, labelled with the SHA-256 of the policy file in force.",
            ),
            &["sha256"],
        )?;
        registry.register(Box::new(policy_info.clone()))?;
        let policy_loaded_at = IntGauge::new(
            "asynq_guard_policy_loaded_timestamp_seconds",
            "When the policy in force was loaded (Unix time).",
        )?;
        registry.register(Box::new(policy_loaded_at.clone()))?;
        let upstream_up = IntGauge::new(
            "asynq_guard_upstream_up",
            "1 if the upstream Redis answered the last readiness check (start-up or /readyz), 0 if not.",
        )?;
        registry.register(Box::new(upstream_up.clone()))?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(client_errors.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(commands_vec.clone()))?;

        // Counters of failures exist at zero from the start, so that a
        // rate() sees their first increase.
        for reason in [
            "protocol",
            "inline_command",
            "max_args",
            "max_bulk_bytes",
            "max_buffer_bytes",
            "max_pending_commands",
        ] {
            client_errors.with_label_values(&[reason]);
        }
        for kind in ["connect", "auth", "lost", "protocol"] {
            upstream_errors.with_label_values(&[kind]);
        }
        for result in ["ok", "error"] {
            tls_reloads.with_label_values(&[result]);
            policy_reloads.with_label_values(&[result]);
        }
        let commands = crate::command::KNOWN_COMMANDS
            .iter()
            .map(|name| (*name, OnceLock::new()))
            .collect();
        Ok(Metrics {
            connections_total,
            connections_open,
            client_errors,
            upstream_errors,
            upstream_latency,
            auth_attempts,
            refusals,
            limit_hits,
            shared_limit_failures,
            integrity_failures,
            integrity_signed,
            integrity_archived,
            queue_tasks,
            tls_handshake_failures,
            tls_reloads,
            sessions,
            decisions,
            policy_reloads,
            policy_info,
            policy_loaded_at,
            upstream_up,
            commands_vec,
            commands,
            commands_other: OnceLock::new(),
            queue_labels: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Counts one command by its canonical (upper-case) name.
    pub fn count_command(&self, canonical: Option<&'static str>) {
        let (name, cell) = match canonical.and_then(|n| self.commands.get_key_value(n)) {
            Some((name, cell)) => (*name, cell),
            None => ("other", &self.commands_other),
        };
        cell.get_or_init(|| self.commands_vec.with_label_values(&[name]))
            .inc();
    }

    /// The open-connections gauge of one listener.
    /// `queue` as a label value: itself for the first [`QUEUE_LABELS`]
    /// queue names seen, `other` after that.
    pub fn queue_label(&self, queue: &str) -> String {
        let mut seen = self
            .queue_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(queue) {
            return queue.to_string();
        }
        if seen.len() < QUEUE_LABELS {
            seen.insert(queue.to_string());
            return queue.to_string();
        }
        "other".into()
    }

    /// Records that the policy file with this SHA-256 is in force.
    pub fn policy_loaded(&self, sha256: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[sha256]).set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.policy_loaded_at
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub fn open_gauge(&self, listener: &str) -> IntGauge {
        self.connections_open.with_label_values(&[listener])
    }
}
