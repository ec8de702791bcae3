//! The configuration file: parsed, then validated, then used.
//!
//! [`ConfigFile`] mirrors the TOML (unknown keys are errors). [`load`]
//! turns it into [`Settings`]: addresses resolved, the upstream password
//! read from its file or environment variable, TLS material loaded. Every
//! problem is reported before any port is bound, with the file and, where
//! TOML gives one, the line. Secrets are held in [`Secret`], whose `Debug`
//! never shows the value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use glob::Pattern;
use serde::Deserialize;

use crate::admission::{Admission, Caps};
use crate::asynq::Operation;
use crate::auth::{CertMatch, Identities, Identity, ThrottleSettings};
use crate::policy::Grant;
use crate::resp::Limits;
use crate::tls;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The TOML file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Client listeners; one plain listener on 127.0.0.1:6380 if none.
    #[serde(default)]
    pub listener: Vec<ListenerFile>,
    #[serde(default)]
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub limits: LimitsFile,
    /// Who may connect. At least one is required.
    #[serde(default)]
    pub identity: Vec<IdentityFile>,
    #[serde(default)]
    pub auth: AuthFile,
    /// What identities may do; nothing is allowed without a grant.
    #[serde(default)]
    pub grant: Vec<GrantFile>,
    /// Enqueue rate limits.
    #[serde(default)]
    pub rate_limit: Vec<admission::RateLimitFile>,
    /// Queue-size caps.
    #[serde(default)]
    pub queue_cap: Vec<admission::QueueCapFile>,
    /// Task signatures: keys and queue modes.
    #[serde(default)]
    pub integrity: integrity::IntegrityFile,
    /// Re-reading this file while running.
    #[serde(default)]
    pub reload: ReloadFile,
    /// Stopping on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownFile,
}

/// Policy reload: SIGHUP always re-reads the file; this also watches it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadFile {
    /// How often the file is read to see whether it changed; 0 turns
    /// watching off (SIGHUP still reloads). Default 2000.
    #[serde(default = "default_watch_interval")]
    pub watch_interval_ms: u64,
}

impl Default for ReloadFile {
    fn default() -> Self {
        ReloadFile {
            watch_interval_ms: default_watch_interval(),
        }
    }
}

fn default_watch_interval() -> u64 {
    2000
}

/// Graceful shutdown.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    /// After SIGTERM or SIGINT, how long commands already received may
    /// take to be answered before the remaining connections are closed.
    /// Default 10.
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        ShutdownFile {
            grace_secs: default_grace(),
        }
    }
}

fn default_grace() -> u64 {
    10
}

/// A grant of operations to an identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFile {
    /// The identity it is given to.
    pub identity: String,
    /// `enqueue`, `consume`, `schedule`, `inspect`, `manage` (on the
    /// queues below), or `raw` (any command, any script: not asynq
    /// traffic, for tools and tests; takes no queues).
    pub operations: Vec<String>,
    /// Queue names or glob patterns (`*`, `?`, `[...]`) the operations
    /// apply to. Required unless the grant is `raw` only.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Task types (names or globs) an `enqueue` of this grant may carry;
    /// required with `enqueue` (`["*"]` for any), not allowed without.
    #[serde(default)]
    pub task_types: Vec<String>,
    /// Largest payload an enqueue under this grant may carry; default
    /// `limits.max_payload_bytes`. Only with `enqueue`.
    pub max_payload_bytes: Option<u64>,
    /// Largest encoded task message; default `limits.max_message_bytes`.
    /// Only with `enqueue`.
    pub max_message_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// The user name clients give to AUTH / HELLO AUTH; `default` is the
    /// identity of `AUTH <password>` without a user name.
    pub name: String,
    /// SHA-256 (hex) of each accepted secret; `asynq-guard hash-secret`
    /// prints one. Several let a secret rotate without downtime.
    #[serde(default)]
    pub secret_sha256: Vec<String>,
    /// Client-certificate match on mutual-TLS listeners: `cn:NAME`,
    /// `dns:NAME` or `uri:URI`. With secrets too, both are required.
    pub cert: Option<String>,
}

/// Failed-authentication throttling, per source address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Failed attempts per source address per minute before further
    /// attempts are refused until the minute is over. Default 10.
    #[serde(default = "default_max_failures")]
    pub max_failures_per_minute: u32,
    /// Delay before answering a failed attempt. Default 200.
    #[serde(default = "default_failure_delay")]
    pub failure_delay_ms: u64,
    /// A client that has not authenticated after this long is closed.
    /// Default 10.
    #[serde(default = "default_auth_timeout")]
    pub timeout_secs: u64,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            max_failures_per_minute: default_max_failures(),
            failure_delay_ms: default_failure_delay(),
            timeout_secs: default_auth_timeout(),
        }
    }
}

fn default_max_failures() -> u32 {
    10
}
fn default_failure_delay() -> u64 {
    200
}
fn default_auth_timeout() -> u64 {
    10
}
fn default_max_pending() -> usize {
    4 * 1024 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// A name for logs and metrics labels.
    pub name: Option<String>,
    /// `host:port` to accept clients on.
    pub address: String,
    /// Whether clients may switch to RESP3 with `HELLO 3`. Default true;
    /// when false, `HELLO 3` gets an "unknown command" error and clients fall back to
    /// RESP2 with AUTH.
    #[serde(default = "default_true")]
    pub resp3: bool,
    /// TLS on this listener; with `client_ca_file`, mutual TLS.
    pub tls: Option<ListenerTlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// PEM certificate chain the proxy presents.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that sign client certificates. When set, every
    /// client must present a certificate signed by one of them, and the
    /// identity comes from the certificate.
    pub client_ca_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// `host:port` of Redis. Default `127.0.0.1:6379`.
    #[serde(default = "default_upstream")]
    pub address: String,
    /// Redis ACL user the proxy logs in as; none means `default`.
    pub username: Option<String>,
    /// File holding the upstream password (trailing newline removed).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the upstream password.
    pub password_env: Option<String>,
    /// Give up connecting to Redis after this long. Default 3000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// The Redis database asynq's data is in (asynq's
    /// `RedisClientOpt.DB`); the proxy selects it on every connection and
    /// clients may `SELECT` only it. Default 0.
    #[serde(default)]
    pub database: u32,
    pub tls: Option<UpstreamTlsFile>,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            address: default_upstream(),
            username: None,
            password_file: None,
            password_env: None,
            connect_timeout_ms: default_connect_timeout(),
            database: 0,
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// PEM file of the CA certificates that sign Redis's certificate.
    pub ca_file: PathBuf,
    /// Name to verify Redis's certificate against; default: the host
    /// part of the upstream address.
    pub server_name: Option<String>,
    /// PEM client certificate chain, when Redis requires one.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `host:port` of the HTTP server for /metrics and /healthz; an empty
    /// string turns it off. Default `127.0.0.1:9380`.
    #[serde(default = "default_admin")]
    pub address: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            address: default_admin(),
        }
    }
}

/// Input limits; bulk and buffer defaults are Redis's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest argument in bytes. Default 536870912 (512 MiB).
    #[serde(default = "default_max_bulk")]
    pub max_bulk_bytes: usize,
    /// Most arguments per command. Default 1048576.
    #[serde(default = "default_max_args")]
    pub max_args: usize,
    /// Most bytes of one unfinished command. Default 1073741824 (1 GiB).
    #[serde(default = "default_max_buffer")]
    pub max_buffer_bytes: usize,
    /// Most commands of one connection awaiting their replies (a client
    /// that pipelines without reading). Default 4194304.
    #[serde(default = "default_max_pending")]
    pub max_pending_commands: usize,
    /// Largest task payload an enqueue may carry, for grants that set
    /// none of their own. Default: no cap.
    pub max_payload_bytes: Option<u64>,
    /// Largest encoded task message an enqueue may carry, for grants that
    /// set none of their own. Default: no cap.
    pub max_message_bytes: Option<u64>,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            max_bulk_bytes: default_max_bulk(),
            max_args: default_max_args(),
            max_buffer_bytes: default_max_buffer(),
            max_pending_commands: default_max_pending(),
            max_payload_bytes: None,
            max_message_bytes: None,
        }
    }
}

fn default_upstream() -> String {
    "127.0.0.1:6379".into()
}
fn default_connect_timeout() -> u64 {
    3000
}
fn default_admin() -> String {
    "127.0.0.1:9380".into()
}
fn default_max_bulk() -> usize {
    Limits::default().max_bulk_bytes
}
fn default_max_args() -> usize {
    Limits::default().max_args
}
fn default_max_buffer() -> usize {
    Limits::default().max_buffer_bytes
}

/// A secret value. It prints as `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A validated configuration, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listeners: Vec<ListenerSettings>,
    pub identities: Arc<Identities>,
    pub throttle: ThrottleSettings,
    pub upstream: Arc<UpstreamSettings>,
    pub admin: Option<SocketAddr>,
    pub limits: Limits,
    pub max_pending_commands: usize,
    pub auth_timeout: Duration,
    /// Valid but probably not meant: `check` prints them, `serve` logs
    /// them at start.
    pub warnings: Vec<String>,
    /// Enqueue rate limits.
    pub admission: Arc<Admission>,
    /// Task signatures.
    pub integrity: Arc<crate::integrity::Integrity>,
    /// How often the file is checked for changes; `None`: SIGHUP only.
    pub watch_interval: Option<Duration>,
    /// How long shutdown waits for commands already received.
    pub shutdown_grace: Duration,
    /// Hex SHA-256 of the file as it was read (empty when not read from
    /// a file).
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: String,
    pub address: SocketAddr,
    pub resp3: bool,
    pub tls: Option<Arc<tls::ListenerTls>>,
}

#[derive(Debug)]
pub struct UpstreamSettings {
    /// `host:port`, resolved at each connection so DNS changes apply.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub connect_timeout: Duration,
    /// Selected after login; the only database clients may `SELECT`.
    pub database: u32,
    pub tls: Option<tls::UpstreamTls>,
}

/// Reads and validates the configuration file at `path`.
///
/// # Errors
///
/// A [`ConfigError`] naming the file, and the line or field at fault.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let mut settings = validate(path, file)?;
    settings.sha256 = crate::auth::hash_secret(text.as_bytes());
    Ok(settings)
}

/// Turns a parsed file into settings; `path` is only used in errors and
/// to resolve nothing else (file paths inside are taken as written).
///
/// # Errors
///
/// A [`ConfigError::Invalid`] for the first field at fault.
pub fn validate(path: &Path, file: ConfigFile) -> Result<Settings, ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError::Invalid {
        path: path.to_owned(),
        field: field.to_string(),
        reason,
    };

    let listeners = validate_listeners(&file.listener).map_err(|(f, r)| invalid(&f, r))?;

    let admin = match file.admin.address.trim() {
        "" => None,
        a => Some(a.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "admin.address",
                format!("{a:?} is not ip:port, with a literal IP such as 127.0.0.1 ({e})"),
            )
        })?),
    };

    let taken = admin.and_then(|a| listeners.iter().find(|l| clash(l.address, a)));
    if let Some(l) = taken {
        return Err(invalid(
            "admin.address",
            format!("{} is also listener {:?}", l.address, l.name),
        ));
    }

    let l = &file.limits;
    for (field, value) in [
        ("limits.max_bulk_bytes", l.max_bulk_bytes),
        ("limits.max_args", l.max_args),
        ("limits.max_buffer_bytes", l.max_buffer_bytes),
        ("limits.max_pending_commands", l.max_pending_commands),
        ("auth.timeout_secs", file.auth.timeout_secs as usize),
    ] {
        if value == 0 {
            return Err(invalid(field, "must be greater than 0".into()));
        }
    }
    if l.max_buffer_bytes < l.max_bulk_bytes {
        return Err(invalid(
            "limits.max_buffer_bytes",
            "must be at least limits.max_bulk_bytes".into(),
        ));
    }
    let limits = Limits {
        max_bulk_bytes: l.max_bulk_bytes,
        max_args: l.max_args,
        max_buffer_bytes: l.max_buffer_bytes,
    };

    let mut identities = validate_identities(&file.identity).map_err(|(f, r)| invalid(&f, r))?;
    let default_caps = Caps {
        max_payload_bytes: file.limits.max_payload_bytes,
        max_message_bytes: file.limits.max_message_bytes,
    };
    apply_grants(&mut identities, &file.grant, default_caps).map_err(|(f, r)| invalid(&f, r))?;
    let admission =
        admission::validate(&file.rate_limit, &file.queue_cap, &identities, default_caps)
            .map_err(|(f, r)| invalid(&f, r))?;
    let integrity = integrity::validate(&file.integrity).map_err(|(f, r)| invalid(&f, r))?;
    let warnings = identities
        .iter()
        .filter(|i| !i.raw && i.grants.is_empty())
        .map(|i| {
            format!(
                "identity {:?} has no [[grant]]: it can log in, but every asynq command it sends will be refused",
                i.name
            )
        })
        .collect();
    let identities = Identities::new(identities);
    if file.auth.max_failures_per_minute == 0 {
        return Err(invalid(
            "auth.max_failures_per_minute",
            "must be greater than 0".into(),
        ));
    }
    let throttle = ThrottleSettings {
        max_failures_per_minute: file.auth.max_failures_per_minute,
        failure_delay: Duration::from_millis(file.auth.failure_delay_ms),
    };

    let upstream = validate_upstream(file.upstream).map_err(|(f, r)| invalid(&f, r))?;
    Ok(Settings {
        listeners,
        identities: Arc::new(identities),
        throttle,
        upstream: Arc::new(upstream),
        admin,
        limits,
        max_pending_commands: file.limits.max_pending_commands,
        auth_timeout: Duration::from_secs(file.auth.timeout_secs),
        warnings,
        admission: Arc::new(admission),
        integrity: Arc::new(integrity),
        watch_interval: (file.reload.watch_interval_ms > 0)
            .then(|| Duration::from_millis(file.reload.watch_interval_ms)),
        shutdown_grace: Duration::from_secs(file.shutdown.grace_secs),
        sha256: String::new(),
    })
}

type FieldError = (String, String);

/// Whether two listen addresses cannot both be bound: the same port, and
/// the same address or a wildcard (0.0.0.0, [::]) on either side.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn validate_listeners(files: &[ListenerFile]) -> Result<Vec<ListenerSettings>, FieldError> {
    if files.is_empty() {
        return Ok(vec![ListenerSettings {
            name: "default".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 6380)),
            resp3: true,
            tls: None,
        }]);
    }
    let mut out: Vec<ListenerSettings> = Vec::new();
    for (i, l) in files.iter().enumerate() {
        let field = format!("listener[{i}].address");
        let address = l.address.parse::<SocketAddr>().map_err(|e| {
            (
                field.clone(),
                format!("{:?} is not ip:port ({e})", l.address),
            )
        })?;
        if let Some(other) = out.iter().find(|o| clash(o.address, address)) {
            return Err((
                field,
                format!("{address} is also listener {:?}", other.name),
            ));
        }
        let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
        if out.iter().any(|o| o.name == name) {
            return Err((
                format!("listener[{i}].name"),
                format!("{name:?} is used twice"),
            ));
        }
        let tls = match &l.tls {
            None => None,
            Some(t) => Some(Arc::new(
                tls::ListenerTls::load(&t.cert_file, &t.key_file, t.client_ca_file.as_deref())
                    .map_err(|e| (format!("listener[{i}].tls"), e.to_string()))?,
            )),
        };
        out.push(ListenerSettings {
            name,
            address,
            resp3: l.resp3,
            tls,
        });
    }
    Ok(out)
}

fn apply_grants(
    identities: &mut [Identity],
    grants: &[GrantFile],
    default_caps: Caps,
) -> Result<(), FieldError> {
    for (i, g) in grants.iter().enumerate() {
        let Some(identity) = identities.iter_mut().find(|id| id.name == g.identity) else {
            return Err((
                format!("grant[{i}].identity"),
                format!("{:?} is not a defined [[identity]]", g.identity),
            ));
        };
        let grant = validate_grant(i, g, &mut identity.raw, default_caps).map_err(|(f, r)| {
            (
                f,
                format!("{r} (in the grant to identity {:?})", g.identity),
            )
        })?;
        if let Some(grant) = grant {
            identity.grants.push(grant);
        }
    }
    Ok(())
}

/// One `[[grant]]`; `None` when it is `raw` only.
fn validate_grant(
    i: usize,
    g: &GrantFile,
    raw: &mut bool,
    default_caps: Caps,
) -> Result<Option<Grant>, FieldError> {
    if g.operations.is_empty() {
        return Err((format!("grant[{i}].operations"), "is empty".into()));
    }
    let mut ops = Vec::new();
    for (j, op) in g.operations.iter().enumerate() {
        if op == "raw" {
            *raw = true;
            continue;
        }
        let parsed = Operation::parse(op).ok_or_else(|| {
            (
                format!("grant[{i}].operations[{j}]"),
                format!(
                    "{op:?} is not an operation (enqueue, consume, schedule, inspect, manage, raw)"
                ),
            )
        })?;
        if ops.contains(&parsed) {
            return Err((
                format!("grant[{i}].operations[{j}]"),
                format!("{op:?} is listed twice"),
            ));
        }
        ops.push(parsed);
    }
    if ops.is_empty() {
        if !g.queues.is_empty() || !g.task_types.is_empty() {
            return Err((
                format!("grant[{i}].queues"),
                "a raw grant covers every command and takes no queues or task types; \
                 put other operations in the same grant or another one"
                    .into(),
            ));
        }
        return Ok(None);
    }
    if g.queues.is_empty() {
        return Err((
            format!("grant[{i}].queues"),
            "is empty: name the queues (or glob patterns, \"*\" for all) the operations apply to"
                .into(),
        ));
    }
    let enqueue = ops.contains(&Operation::Enqueue);
    if enqueue && g.task_types.is_empty() {
        return Err((
            format!("grant[{i}].task_types"),
            "is required with \"enqueue\": name the task types (or glob patterns, \"*\" for all) it may enqueue".into(),
        ));
    }
    if !enqueue && !g.task_types.is_empty() {
        return Err((
            format!("grant[{i}].task_types"),
            "applies to \"enqueue\" only, which this grant does not give".into(),
        ));
    }
    if !enqueue && (g.max_payload_bytes.is_some() || g.max_message_bytes.is_some()) {
        let set = if g.max_payload_bytes.is_some() {
            "max_payload_bytes"
        } else {
            "max_message_bytes"
        };
        return Err((
            format!("grant[{i}].{set}"),
            "size caps apply to \"enqueue\" only, which this grant does not give".into(),
        ));
    }
    Ok(Some(Grant {
        caps: Caps {
            max_payload_bytes: g.max_payload_bytes.or(default_caps.max_payload_bytes),
            max_message_bytes: g.max_message_bytes.or(default_caps.max_message_bytes),
        },
        ops,
        queues: patterns(&format!("grant[{i}].queues"), &g.queues, true)?,
        task_types: patterns(&format!("grant[{i}].task_types"), &g.task_types, false)?,
    }))
}

/// Parses glob patterns; queue patterns may not hold hash-tag braces,
/// which no accepted queue name has.
fn patterns(field: &str, list: &[String], queues: bool) -> Result<Vec<Pattern>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(k, text)| {
            let f = format!("{field}[{k}]");
            if text.trim().is_empty() {
                return Err((f, "is blank".into()));
            }
            if text.trim() != text {
                return Err((f, format!("{text:?} has leading or trailing spaces")));
            }
            if queues && (text.contains('{') || text.contains('}')) {
                return Err((
                    f,
                    format!("{text:?}: queue names may not contain '{{' or '}}'"),
                ));
            }
            Pattern::new(text).map_err(|e| (f, format!("{text:?} is not a valid pattern ({e})")))
        })
        .collect()
}

fn validate_identities(files: &[IdentityFile]) -> Result<Vec<Identity>, FieldError> {
    if files.is_empty() {
        return Err((
            "identity".into(),
            "no [[identity]] is defined, so no client could authenticate".into(),
        ));
    }
    let mut list: Vec<Identity> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let field = |k: &str| format!("identity[{i}].{k}");
        let valid_name = !f.name.is_empty()
            && f.name.len() <= 128
            && f.name.chars().all(|c| c.is_ascii_graphic());
        if !valid_name {
            return Err((
                field("name"),
                format!(
                    "{:?} must be 1 to 128 printable ASCII characters without spaces",
                    f.name
                ),
            ));
        }
        if list.iter().any(|o| o.name == f.name) {
            return Err((field("name"), format!("{:?} is defined twice", f.name)));
        }
        let mut hashes = Vec::new();
        for (j, h) in f.secret_sha256.iter().enumerate() {
            let hash = crate::auth::parse_hash(h).ok_or_else(|| {
                (
                    format!("identity[{i}].secret_sha256[{j}]"),
                    "must be 64 hex digits (the output of asynq-guard hash-secret)".into(),
                )
            })?;
            if crate::auth::hash_secret(b"").eq_ignore_ascii_case(h) {
                return Err((
                    format!("identity[{i}].secret_sha256[{j}]"),
                    "is the hash of an empty secret".into(),
                ));
            }
            hashes.push(hash);
        }
        let cert = match &f.cert {
            None => None,
            Some(text) => Some(CertMatch::parse(text).ok_or_else(|| {
                (
                    field("cert"),
                    format!("{text:?} must be cn:NAME, dns:NAME or uri:URI"),
                )
            })?),
        };
        if hashes.is_empty() && cert.is_none() {
            return Err((
                field("secret_sha256"),
                format!("identity {:?} needs secret_sha256, cert, or both", f.name),
            ));
        }
        let taken = cert.as_ref().and_then(|c| {
            list.iter()
                .find(|o| o.cert.as_ref() == Some(c))
                .map(|o| (c, o))
        });
        if let Some((c, other)) = taken {
            return Err((
                field("cert"),
                format!(
                    "{c} is already the certificate of identity {:?}",
                    other.name
                ),
            ));
        }
        list.push(Identity::new(f.name.clone(), hashes, cert));
    }
    Ok(list)
}

fn validate_upstream(file: UpstreamFile) -> Result<UpstreamSettings, FieldError> {
    let field = |f: &str| format!("upstream.{f}");
    let host = split_host(&file.address).ok_or_else(|| {
        (
            field("address"),
            format!("{:?} is not host:port", file.address),
        )
    })?;

    let password = match (&file.password_file, &file.password_env) {
        (Some(_), Some(_)) => {
            return Err((
                field("password_file"),
                "set password_file or password_env, not both".into(),
            ));
        }
        (Some(p), None) => Some(read_password_file(p).map_err(|r| (field("password_file"), r))?),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(Secret(v)),
            Ok(_) => {
                return Err((
                    field("password_env"),
                    format!("environment variable {var} is empty"),
                ));
            }
            Err(_) => {
                return Err((
                    field("password_env"),
                    format!("environment variable {var} is not set"),
                ));
            }
        },
        (None, None) => None,
    };
    if file.username.is_some() && password.is_none() {
        return Err((
            field("username"),
            "a username needs a password (password_file or password_env)".into(),
        ));
    }
    if file.connect_timeout_ms == 0 {
        return Err((field("connect_timeout_ms"), "must be greater than 0".into()));
    }

    let tls = match file.tls {
        None => None,
        Some(t) => {
            let server_name = t.server_name.clone().unwrap_or_else(|| host.to_string());
            Some(
                tls::UpstreamTls::load(
                    &t.ca_file,
                    &server_name,
                    t.client_cert_file.as_deref(),
                    t.client_key_file.as_deref(),
                )
                .map_err(|e| (field("tls"), e.to_string()))?,
            )
        }
    };

    Ok(UpstreamSettings {
        address: file.address,
        username: file.username,
        password,
        connect_timeout: Duration::from_millis(file.connect_timeout_ms),
        database: file.database,
        tls,
    })
}

fn read_password_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret(value.to_string()))
}

/// The host part of `host:port` (brackets removed from IPv6), if the port
/// is a number.
fn split_host(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(host)
}

mod admission;
mod integrity;
#[cfg(test)]
mod tests;
