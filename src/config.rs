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

use serde::Deserialize;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// A name for logs and metrics labels.
    pub name: Option<String>,
    /// `host:port` to accept clients on.
    pub address: String,
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

/// Input limits; the defaults are Redis's own.
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
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            max_bulk_bytes: default_max_bulk(),
            max_args: default_max_args(),
            max_buffer_bytes: default_max_buffer(),
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
    pub upstream: Arc<UpstreamSettings>,
    pub admin: Option<SocketAddr>,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: String,
    pub address: SocketAddr,
}

#[derive(Debug)]
pub struct UpstreamSettings {
    /// `host:port`, resolved at each connection so DNS changes apply.
    pub address: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub connect_timeout: Duration,
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
    validate(path, file)
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
        a => Some(
            a.parse::<SocketAddr>()
                .map_err(|e| invalid("admin.address", format!("{a:?} is not host:port ({e})")))?,
        ),
    };

    let l = &file.limits;
    for (field, value) in [
        ("limits.max_bulk_bytes", l.max_bulk_bytes),
        ("limits.max_args", l.max_args),
        ("limits.max_buffer_bytes", l.max_buffer_bytes),
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

    let upstream = validate_upstream(file.upstream).map_err(|(f, r)| invalid(&f, r))?;
    Ok(Settings {
        listeners,
        upstream: Arc::new(upstream),
        admin,
        limits,
    })
}

type FieldError = (String, String);

fn validate_listeners(files: &[ListenerFile]) -> Result<Vec<ListenerSettings>, FieldError> {
    if files.is_empty() {
        return Ok(vec![ListenerSettings {
            name: "default".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 6380)),
        }]);
    }
    let mut out: Vec<ListenerSettings> = Vec::new();
    for (i, l) in files.iter().enumerate() {
        let field = format!("listener[{i}].address");
        let address = l
            .address
            .parse::<SocketAddr>()
            .map_err(|e| (field, format!("{:?} is not ip:port ({e})", l.address)))?;
        let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
        if out.iter().any(|o| o.name == name) {
            return Err((
                format!("listener[{i}].name"),
                format!("{name:?} is used twice"),
            ));
        }
        out.push(ListenerSettings { name, address });
    }
    Ok(out)
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
        (None, Some(var)) => Some(std::env::var(var).map(Secret).map_err(|_| {
            (
                field("password_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        validate(Path::new("t.toml"), file)
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.listeners[0].address.to_string(), "127.0.0.1:6380");
        assert_eq!(s.upstream.address, "127.0.0.1:6379");
        assert_eq!(s.admin.unwrap().to_string(), "127.0.0.1:9380");
        assert_eq!(s.limits, Limits::default());
        assert!(s.upstream.password.is_none());
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = parse("[upstream]\naddress = \"127.0.0.1:1\"\npasword = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("pasword"), "{msg}");
    }

    #[test]
    fn password_from_environment_is_never_printed() {
        // PATH is set in every test environment; it stands in for a secret.
        let value = std::env::var("PATH").unwrap();
        let s = parse("[upstream]\npassword_env = \"PATH\"\n").unwrap();
        assert_eq!(s.upstream.password.as_ref().unwrap().expose(), value);
        assert!(!format!("{s:?}").contains(&value));
    }

    #[test]
    fn missing_password_variable_is_named() {
        let err = parse("[upstream]\npassword_env = \"AG_TEST_NOT_SET_ANYWHERE\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("AG_TEST_NOT_SET_ANYWHERE is not set")
        );
    }

    #[test]
    fn password_file_is_read_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("ag-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let s = parse(&format!(
            "[upstream]\nusername = \"proxy\"\npassword_file = {:?}\n",
            file.display().to_string()
        ))
        .unwrap();
        assert_eq!(s.upstream.password.as_ref().unwrap().expose(), "s3cret");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("[[listener]]\naddress = \"nope\"\n", "listener[0].address"),
            ("[admin]\naddress = \"x\"\n", "admin.address"),
            ("[limits]\nmax_args = 0\n", "limits.max_args"),
            (
                "[limits]\nmax_buffer_bytes = 10\nmax_bulk_bytes = 20\n",
                "limits.max_buffer_bytes",
            ),
            ("[upstream]\nusername = \"u\"\n", "upstream.username"),
            ("[upstream]\naddress = \"redis\"\n", "upstream.address"),
            (
                "[upstream.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
                "upstream.tls",
            ),
        ];
        for (text, field) in cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(field), "{text:?} gave {msg}");
        }
    }

    #[test]
    fn admin_can_be_turned_off() {
        assert!(parse("[admin]\naddress = \"\"\n").unwrap().admin.is_none());
    }
}
