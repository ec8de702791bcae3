//! The configuration file: parsed, then validated, then used.
//!
//! [`ConfigFile`] mirrors the TOML (unknown keys are errors). [`load`]
//! turns it into [`Settings`]: addresses resolved, the upstream password
//! read from its file or environment variable, TLS material loaded. Every
//! problem found is reported before any port is bound, each as
//! `<file>:<line>: <field>: <reason>` (the line from the spans of the TOML
//! parser, see `source`). Secrets are held in [`Secret`], whose `Debug`
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
    /// The file is not TOML, or not the shape of [`ConfigFile`] (unknown
    /// keys, wrong types, missing keys).
    #[error("{}", show(path, problems))]
    Parse {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// Well-formed values that cannot be used: every one found.
    #[error("{}", show(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// One message per problem, each starting `<file>:<line>:`; a syntax
    /// error's message goes on with the line at fault, marked.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Parse { path, problems } | ConfigError::Invalid { path, problems } => {
                problems.iter().map(|p| p.message(path)).collect()
            }
        }
    }
}

fn show(path: &Path, problems: &[Problem]) -> String {
    let messages: Vec<String> = problems.iter().map(|p| p.message(path)).collect();
    messages.join("\n")
}

/// One problem in a configuration file, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; none when the setting at fault is not in the file (a
    /// default, or a missing section).
    pub line: Option<usize>,
    /// 1-based; given for syntax errors only.
    pub column: Option<usize>,
    /// The setting at fault, such as `grant[2].queues[0]`; none for errors
    /// of TOML syntax or shape, whose reason names the key.
    pub field: Option<String>,
    pub reason: String,
    /// For syntax and shape errors: the line at fault, with a caret line
    /// under the part in question.
    pub snippet: Option<String>,
}

impl Problem {
    /// `<file>:<line>[:<column>]: [<field>: ]<reason>`, then the snippet.
    pub fn message(&self, path: &Path) -> String {
        let mut out = path.display().to_string();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = self.column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(": ");
        if let Some(field) = &self.field {
            out.push_str(field);
            out.push_str(": ");
        }
        out.push_str(&self.reason);
        if let Some(snippet) = &self.snippet {
            out.push('\n');
            out.push_str(snippet);
        }
        out
    }
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
/// A [`ConfigError`] naming the file, with every problem found and the
/// line of each.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text`, the contents of the file at `path`
/// (which is only named in messages: file paths inside are taken as
/// written).
///
/// # Errors
///
/// [`ConfigError::Parse`] for TOML syntax or shape errors (every one
/// found), else [`ConfigError::Invalid`] for every value that cannot be
/// used.
pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let parse_error = |problems| ConfigError::Parse {
        path: path.to_owned(),
        problems,
    };
    let source = source::Source::parse(text).map_err(parse_error)?;
    let file = source.config().map_err(parse_error)?;
    let located = |(field, reason): FieldError| Problem {
        line: source.line_of(&field),
        column: None,
        field: Some(field),
        reason,
        snippet: None,
    };
    match validate(file) {
        Ok((mut settings, warnings)) => {
            settings.sha256 = crate::auth::hash_secret(text.as_bytes());
            settings.warnings = warnings
                .into_iter()
                .map(|w| located(w).message(path))
                .collect();
            Ok(settings)
        }
        Err(errors) => {
            let mut problems: Vec<Problem> = errors.into_iter().map(located).collect();
            problems.sort_by_key(|p| p.line);
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }
}

/// A setting at fault (`grant[2].queues[0]`) and why.
type FieldError = (String, String);

/// Keeps the value, or records why there is none.
fn keep<T>(errors: &mut Vec<FieldError>, result: Result<T, FieldError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// Turns a parsed file into settings, and the warnings about it.
///
/// Each section is validated even when an earlier one failed, and each
/// `[[listener]]`, `[[identity]]`, `[[grant]]`, `[[rate_limit]]`,
/// `[[queue_cap]]`, `[[integrity.key]]` and `[[integrity.queues]]` on its
/// own, so that every problem is reported at once. Within one table, only
/// the first problem is: later checks of a table often assume the earlier
/// ones passed.
fn validate(file: ConfigFile) -> Result<(Settings, Vec<FieldError>), Vec<FieldError>> {
    let mut errors: Vec<FieldError> = Vec::new();

    let listeners = validate_listeners(&file.listener, &mut errors);
    let admin = keep(&mut errors, validate_admin(&file.admin, &listeners)).flatten();
    validate_limits(&file.limits, &mut errors);
    let limits = Limits {
        max_bulk_bytes: file.limits.max_bulk_bytes,
        max_args: file.limits.max_args,
        max_buffer_bytes: file.limits.max_buffer_bytes,
    };
    for (field, zero) in [
        ("auth.timeout_secs", file.auth.timeout_secs == 0),
        (
            "auth.max_failures_per_minute",
            file.auth.max_failures_per_minute == 0,
        ),
    ] {
        if zero {
            errors.push((field.into(), "must be greater than 0".into()));
        }
    }

    let mut identities = validate_identities(&file.identity, &mut errors);
    let default_caps = Caps {
        max_payload_bytes: file.limits.max_payload_bytes,
        max_message_bytes: file.limits.max_message_bytes,
    };
    apply_grants(&mut identities, &file.grant, default_caps, &mut errors);
    let admission = admission::validate(
        &file.rate_limit,
        &file.queue_cap,
        &identities,
        default_caps,
        &mut errors,
    );
    let integrity = integrity::validate(&file.integrity, &mut errors);
    let upstream = validate_upstream(file.upstream, &mut errors);

    let warnings = identities
        .iter()
        .enumerate()
        .filter(|(_, id)| !id.raw && id.grants.is_empty())
        .map(|(i, id)| {
            (
                format!("identity[{i}].name"),
                format!(
                    "identity {:?} has no [[grant]]: it can log in, but every asynq command it sends will be refused",
                    id.name
                ),
            )
        })
        .collect();
    let (Some(upstream), Some(integrity), true) = (upstream, integrity, errors.is_empty()) else {
        return Err(errors);
    };
    let settings = Settings {
        listeners,
        identities: Arc::new(Identities::new(identities)),
        throttle: ThrottleSettings {
            max_failures_per_minute: file.auth.max_failures_per_minute,
            failure_delay: Duration::from_millis(file.auth.failure_delay_ms),
        },
        upstream: Arc::new(upstream),
        admin,
        limits,
        max_pending_commands: file.limits.max_pending_commands,
        auth_timeout: Duration::from_secs(file.auth.timeout_secs),
        warnings: Vec::new(),
        admission: Arc::new(admission),
        integrity: Arc::new(integrity),
        watch_interval: (file.reload.watch_interval_ms > 0)
            .then(|| Duration::from_millis(file.reload.watch_interval_ms)),
        shutdown_grace: Duration::from_secs(file.shutdown.grace_secs),
        sha256: String::new(),
    };
    Ok((settings, warnings))
}

fn validate_admin(
    file: &AdminFile,
    listeners: &[ListenerSettings],
) -> Result<Option<SocketAddr>, FieldError> {
    let field = "admin.address".to_string();
    let address = match file.address.trim() {
        "" => return Ok(None),
        a => a.parse::<SocketAddr>().map_err(|e| {
            (
                field.clone(),
                format!("{a:?} is not ip:port, with a literal IP such as 127.0.0.1 ({e})"),
            )
        })?,
    };
    if let Some(l) = listeners.iter().find(|l| clash(l.address, address)) {
        return Err((
            field,
            format!("{} is also listener {:?}", l.address, l.name),
        ));
    }
    Ok(Some(address))
}

fn validate_limits(l: &LimitsFile, errors: &mut Vec<FieldError>) {
    for (field, zero) in [
        ("max_bulk_bytes", l.max_bulk_bytes == 0),
        ("max_args", l.max_args == 0),
        ("max_buffer_bytes", l.max_buffer_bytes == 0),
        ("max_pending_commands", l.max_pending_commands == 0),
    ] {
        if zero {
            errors.push((format!("limits.{field}"), "must be greater than 0".into()));
        }
    }
    if l.max_buffer_bytes != 0 && l.max_buffer_bytes < l.max_bulk_bytes {
        errors.push((
            "limits.max_buffer_bytes".into(),
            format!(
                "{} is less than limits.max_bulk_bytes ({}): a largest argument would not fit",
                l.max_buffer_bytes, l.max_bulk_bytes
            ),
        ));
    }
    if let Err(e) = size_caps("limits", l.max_payload_bytes, l.max_message_bytes) {
        errors.push(e);
    }
}

/// The task size caps set in one table (`limits` or `grant[i]`) must not
/// contradict each other: a message holds its payload, so a payload cap
/// above the message cap could never apply.
fn size_caps(table: &str, payload: Option<u64>, message: Option<u64>) -> Result<(), FieldError> {
    if message == Some(0) {
        return Err((
            format!("{table}.max_message_bytes"),
            "must be at least 1 (no task message is empty)".into(),
        ));
    }
    if let (Some(p), Some(m)) = (payload, message)
        && p > m
    {
        return Err((
            format!("{table}.max_payload_bytes"),
            format!(
                "{p} is more than max_message_bytes ({m}) of the same table, and a message holds its payload"
            ),
        ));
    }
    Ok(())
}

/// Whether two listen addresses cannot both be bound: the same port, and
/// the same address or a wildcard (0.0.0.0, [::]) on either side.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn validate_listeners(
    files: &[ListenerFile],
    errors: &mut Vec<FieldError>,
) -> Vec<ListenerSettings> {
    if files.is_empty() {
        return vec![ListenerSettings {
            name: "default".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 6380)),
            resp3: true,
            tls: None,
        }];
    }
    let mut out: Vec<ListenerSettings> = Vec::new();
    for (i, l) in files.iter().enumerate() {
        let valid = validate_listener(i, l, &out).and_then(|mut listener| {
            if let Some(t) = &l.tls {
                let files = [
                    ("cert_file", Some(t.cert_file.as_path())),
                    ("key_file", Some(t.key_file.as_path())),
                    ("client_ca_file", t.client_ca_file.as_deref()),
                ];
                let prefix = format!("listener[{i}].tls");
                let tls = load_tls(&prefix, &files, || {
                    tls::ListenerTls::load(&t.cert_file, &t.key_file, t.client_ca_file.as_deref())
                });
                listener.tls = Some(Arc::new(tls?));
            }
            Ok(listener)
        });
        match valid {
            Ok(listener) => out.push(listener),
            Err(mut e) => errors.append(&mut e),
        }
    }
    out
}

/// A listener's address and name; its TLS is loaded by the caller.
fn validate_listener(
    i: usize,
    l: &ListenerFile,
    earlier: &[ListenerSettings],
) -> Result<ListenerSettings, Vec<FieldError>> {
    let field = format!("listener[{i}].address");
    let address = l.address.parse::<SocketAddr>().map_err(|e| {
        vec![(
            field.clone(),
            format!("{:?} is not ip:port ({e})", l.address),
        )]
    })?;
    if let Some(other) = earlier.iter().find(|o| clash(o.address, address)) {
        return Err(vec![(
            field,
            format!("{address} is also listener {:?}", other.name),
        )]);
    }
    let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
    if earlier.iter().any(|o| o.name == name) {
        return Err(vec![(
            format!("listener[{i}].name"),
            format!("{name:?} is used twice"),
        )]);
    }
    Ok(ListenerSettings {
        name,
        address,
        resp3: l.resp3,
        tls: None,
    })
}

/// Loads TLS material once every file named (`files`: key in the table
/// under `prefix`, path) can be opened; each that cannot is an error of
/// its own key, with the system's reason. A file that opens but does not
/// load is an error of its key too.
fn load_tls<T>(
    prefix: &str,
    files: &[(&str, Option<&Path>)],
    load: impl FnOnce() -> Result<T, tls::TlsError>,
) -> Result<T, Vec<FieldError>> {
    let unreadable: Vec<FieldError> = files
        .iter()
        .filter_map(|(key, path)| {
            let path = (*path)?;
            let e = std::fs::File::open(path).err()?;
            Some((
                format!("{prefix}.{key}"),
                format!("cannot read {}: {e}", path.display()),
            ))
        })
        .collect();
    if !unreadable.is_empty() {
        return Err(unreadable);
    }
    load().map_err(|e| {
        let key = match &e {
            tls::TlsError::File { path, .. } => files
                .iter()
                .find(|(_, p)| p.is_some_and(|p| p.display().to_string() == *path)),
            tls::TlsError::Config(_) => None,
        };
        let field = key.map_or_else(|| prefix.to_string(), |(k, _)| format!("{prefix}.{k}"));
        vec![(field, e.to_string())]
    })
}

fn apply_grants(
    identities: &mut [Identity],
    grants: &[GrantFile],
    default_caps: Caps,
    errors: &mut Vec<FieldError>,
) {
    for (i, g) in grants.iter().enumerate() {
        let Some(identity) = identities.iter_mut().find(|id| id.name == g.identity) else {
            errors.push((
                format!("grant[{i}].identity"),
                format!("{:?} is not a defined [[identity]]", g.identity),
            ));
            continue;
        };
        match validate_grant(i, g, &mut identity.raw, default_caps) {
            Ok(Some(grant)) => identity.grants.push(grant),
            Ok(None) => {}
            Err((f, r)) => errors.push((
                f,
                format!("{r} (in the grant to identity {:?})", g.identity),
            )),
        }
    }
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
    size_caps(
        &format!("grant[{i}]"),
        g.max_payload_bytes,
        g.max_message_bytes,
    )?;
    Ok(Some(Grant {
        caps: Caps {
            max_payload_bytes: g.max_payload_bytes.or(default_caps.max_payload_bytes),
            max_message_bytes: g.max_message_bytes.or(default_caps.max_message_bytes),
        },
        ops,
        queues: patterns(&format!("grant[{i}].queues"), &g.queues, Names::Queues)?,
        task_types: patterns(
            &format!("grant[{i}].task_types"),
            &g.task_types,
            Names::Other,
        )?,
    }))
}

/// What a list of glob patterns matches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    /// Queue names, which never hold `{` or `}` (asynq's Redis hash-tag
    /// braces), so a pattern with them could match nothing.
    Queues,
    /// Task types or other names.
    Other,
}

/// Parses glob patterns (`field[k]` names the one at fault).
fn patterns(field: &str, list: &[String], names: Names) -> Result<Vec<Pattern>, FieldError> {
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
            if names == Names::Queues && text.contains(['{', '}']) {
                return Err((
                    f,
                    format!(
                        "{text:?} is not a valid queue glob: queue names may not contain '{{' or '}}'"
                    ),
                ));
            }
            Pattern::new(text).map_err(|e| (f, format!("{text:?} is not a valid pattern ({e})")))
        })
        .collect()
}

/// Every `[[identity]]`. One that is invalid is still listed (by name
/// only, with no way to log in), so that grants naming it are not
/// reported as naming an unknown identity too.
fn validate_identities(files: &[IdentityFile], errors: &mut Vec<FieldError>) -> Vec<Identity> {
    if files.is_empty() {
        errors.push((
            "identity".into(),
            "no [[identity]] is defined, so no client could authenticate".into(),
        ));
    }
    let mut list: Vec<Identity> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let identity = validate_identity(i, f, &list).unwrap_or_else(|e| {
            errors.push(e);
            Identity::new(f.name.clone(), Vec::new(), None)
        });
        list.push(identity);
    }
    list
}

fn validate_identity(
    i: usize,
    f: &IdentityFile,
    earlier: &[Identity],
) -> Result<Identity, FieldError> {
    let field = |k: &str| format!("identity[{i}].{k}");
    let valid_name =
        !f.name.is_empty() && f.name.len() <= 128 && f.name.chars().all(|c| c.is_ascii_graphic());
    if !valid_name {
        return Err((
            field("name"),
            format!(
                "{:?} must be 1 to 128 printable ASCII characters without spaces",
                f.name
            ),
        ));
    }
    if earlier.iter().any(|o| o.name == f.name) {
        return Err((field("name"), format!("{:?} is defined twice", f.name)));
    }
    let mut hashes = Vec::new();
    for (j, h) in f.secret_sha256.iter().enumerate() {
        // The value is never shown: it is only a hash, but a secret
        // pasted here by mistake would be.
        let hash = crate::auth::parse_hash(h).ok_or_else(|| {
            (
                format!("identity[{i}].secret_sha256[{j}]"),
                format!(
                    "must be 64 hex digits (the output of asynq-guard hash-secret); this one is {} characters{}",
                    h.chars().count(),
                    if h.chars().all(|c| c.is_ascii_hexdigit()) { "" } else { ", not all hex digits" }
                ),
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
    let taken = cert
        .as_ref()
        .and_then(|c| earlier.iter().find(|o| o.cert.as_ref() == Some(c)));
    if let (Some(c), Some(other)) = (&cert, taken) {
        return Err((
            field("cert"),
            format!(
                "{c} is already the certificate of identity {:?}",
                other.name
            ),
        ));
    }
    Ok(Identity::new(f.name.clone(), hashes, cert))
}

/// `[upstream]`; none when any of it is invalid (each problem recorded).
fn validate_upstream(file: UpstreamFile, errors: &mut Vec<FieldError>) -> Option<UpstreamSettings> {
    let before = errors.len();
    let field = |f: &str| format!("upstream.{f}");
    let host = split_host(&file.address);
    if host.is_none() {
        errors.push((
            field("address"),
            format!("{:?} is not host:port", file.address),
        ));
    }

    let password = match (&file.password_file, &file.password_env) {
        (Some(_), Some(_)) => Err((
            field("password_file"),
            "set password_file or password_env, not both".into(),
        )),
        (Some(p), None) => read_password_file(p)
            .map(Some)
            .map_err(|r| (field("password_file"), r)),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            Ok(_) => Err((
                field("password_env"),
                format!("environment variable {var} is empty"),
            )),
            Err(_) => Err((
                field("password_env"),
                format!("environment variable {var} is not set"),
            )),
        },
        (None, None) => Ok(None),
    };
    let given = file.password_file.is_some() || file.password_env.is_some();
    let password = keep(errors, password).flatten();
    if file.username.is_some() && !given {
        errors.push((
            field("username"),
            "a username needs a password (password_file or password_env)".into(),
        ));
    }
    if file.connect_timeout_ms == 0 {
        errors.push((field("connect_timeout_ms"), "must be greater than 0".into()));
    }

    let tls = file.tls.as_ref().and_then(|t| {
        let server_name = t
            .server_name
            .clone()
            .unwrap_or_else(|| host.unwrap_or_default().to_string());
        let files = [
            ("ca_file", Some(t.ca_file.as_path())),
            ("client_cert_file", t.client_cert_file.as_deref()),
            ("client_key_file", t.client_key_file.as_deref()),
        ];
        load_tls(&field("tls"), &files, || {
            tls::UpstreamTls::load(
                &t.ca_file,
                &server_name,
                t.client_cert_file.as_deref(),
                t.client_key_file.as_deref(),
            )
        })
        .map_err(|mut e| errors.append(&mut e))
        .ok()
    });

    (errors.len() == before).then_some(UpstreamSettings {
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
mod source;
#[cfg(test)]
mod tests;
