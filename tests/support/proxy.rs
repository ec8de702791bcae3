//! The real `asynq-guard serve`, with a configuration written for the
//! test, and its admin HTTP server.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    BINARY, Client, Deadline, PORT_ATTEMPTS, Redis, TempDir, free_ports, kill_child, signal, within,
};

/// The identity every generated configuration has, unless the test
/// brings its own `[[identity]]` tables. It holds a `raw` grant (any
/// command: most tests are about the pipe, not the policy) unless the
/// test brings `[[grant]]` tables of its own.
pub const TEST_USER: &str = "test";
/// The secret of [`TEST_USER`]; the configuration holds only its SHA-256.
pub const TEST_SECRET: &str = "test-secret-7d1f";

/// A grant for [`TEST_USER`] that is not `raw` (inspecting every queue),
/// for tests of what an identity without raw is refused.
pub const NO_RAW: &str =
    "[[grant]]\nidentity = \"test\"\noperations = [\"inspect\"]\nqueues = [\"*\"]\n";

/// A `raw` grant for [`TEST_USER`].
pub const RAW_GRANT: &str = "[[grant]]\nidentity = \"test\"\noperations = [\"raw\"]\n";

/// A running `asynq-guard serve` with a configuration of its own.
pub struct Proxy {
    port: u16,
    admin_port: u16,
    /// Ports of the listeners added with [`ProxyBuilder::listener`].
    listeners: Vec<(String, u16)>,
    dir: TempDir,
    child: Option<Child>,
}

/// What a test adds to the generated configuration; see [`Proxy::builder`].
pub struct ProxyBuilder {
    upstream: String,
    upstream_keys: String,
    listeners: Vec<(String, String)>,
    extra: String,
    log_filter: Option<String>,
    json_logs: bool,
}

impl ProxyBuilder {
    /// Keys appended to the `[upstream]` table (`username = …`, a
    /// following `[upstream.tls]` table).
    pub fn upstream_keys(mut self, keys: &str) -> Self {
        self.upstream_keys = keys.to_string();
        self
    }

    /// One more `[[listener]]` named `name` on a free port of its own
    /// (see [`Proxy::listener_address`]); `keys` are written after its
    /// name and address (`resp3 = false`, a `[listener.tls]` table).
    pub fn listener(mut self, name: &str, keys: &str) -> Self {
        self.listeners.push((name.to_string(), keys.to_string()));
        self
    }

    /// Text appended to the configuration, as for [`Proxy::start_with`].
    pub fn extra(mut self, extra: &str) -> Self {
        self.extra = extra.to_string();
        self
    }

    /// Runs the proxy with `ASYNQ_GUARD_LOG` set to `filter`.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_string());
        self
    }

    /// Runs the proxy with `--log-format json`: one JSON object a line
    /// on standard error.
    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    pub async fn start(self) -> Proxy {
        let mut proxy = Proxy {
            port: 0,
            admin_port: 0,
            listeners: Vec::new(),
            dir: TempDir::new("proxy"),
            child: None,
        };
        for _ in 0..PORT_ATTEMPTS {
            // Distinct ports: the proxy refuses two listeners on one.
            let mut ports = free_ports(2 + self.listeners.len()).into_iter();
            proxy.port = ports.next().expect("port");
            proxy.admin_port = ports.next().expect("port");
            proxy.listeners = self
                .listeners
                .iter()
                .map(|(name, _)| (name.clone(), ports.next().expect("port")))
                .collect();
            if proxy.try_start(&self).await {
                return proxy;
            }
        }
        panic!(
            "asynq-guard did not start on any free port; stderr:\n{}",
            proxy.stderr()
        );
    }
}

impl Proxy {
    /// Starts the proxy in front of `redis` with default limits.
    pub async fn start(redis: &Redis) -> Proxy {
        Proxy::start_with(&redis.address(), "").await
    }

    /// Starts the proxy with `upstream` as Redis's address and `extra`
    /// appended to the generated configuration (for example a
    /// `[limits]` table).
    pub async fn start_with(upstream: &str, extra: &str) -> Proxy {
        Proxy::builder(upstream).extra(extra).start().await
    }

    /// A proxy in front of `upstream` whose configuration the test
    /// extends before [`ProxyBuilder::start`].
    pub fn builder(upstream: &str) -> ProxyBuilder {
        ProxyBuilder {
            upstream: upstream.to_string(),
            upstream_keys: String::new(),
            listeners: Vec::new(),
            extra: String::new(),
            log_filter: None,
            json_logs: false,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The address of a listener added with [`ProxyBuilder::listener`].
    pub fn listener_address(&self, name: &str) -> String {
        let (_, port) = self
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener {name:?} was configured"));
        format!("127.0.0.1:{port}")
    }

    /// Sends SIGHUP: the proxy re-reads its policy file and its
    /// listeners' certificates.
    pub fn sighup(&self) {
        signal(&self.child, "HUP");
    }

    /// Sends SIGTERM: the proxy shuts down gracefully.
    pub fn sigterm(&self) {
        signal(&self.child, "TERM");
    }

    /// Waits for the process to end (after [`Proxy::sigterm`]) and
    /// returns its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Deadline::new("asynq-guard to exit");
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return status;
            }
            deadline.tick().await;
        }
    }

    /// The policy file the proxy was started with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("asynq-guard.toml")
    }

    /// The policy file's text.
    pub fn config_text(&self) -> String {
        fs::read_to_string(self.config_path()).expect("read the policy file")
    }

    /// Replaces the policy file the way an editor does: a new file
    /// renamed over the old one.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("asynq-guard.toml.new");
        fs::write(&tmp, text).expect("write the new policy file");
        fs::rename(&tmp, self.config_path()).expect("rename the new policy file");
    }

    pub fn admin_address(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// A new client connection to the proxy, authenticated as
    /// [`TEST_USER`].
    pub async fn client(&self) -> Client {
        Client::connect_as(&self.address(), TEST_USER, TEST_SECRET).await
    }

    /// A new client connection to the proxy that has not authenticated.
    pub async fn anonymous_client(&self) -> Client {
        Client::connect(&self.address()).await
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(&self.admin_address(), "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Everything the proxy wrote to standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn try_start(&mut self, b: &ProxyBuilder) -> bool {
        let config = self.dir.path().join("asynq-guard.toml");
        let identity = if b.extra.contains("[[identity]]") {
            String::new()
        } else {
            let grant = if b.extra.contains("[[grant]]") {
                ""
            } else {
                RAW_GRANT
            };
            format!(
                "[[identity]]\nname = \"{TEST_USER}\"\nsecret_sha256 = [\"{}\"]\n\n{grant}",
                test_secret_hash()
            )
        };
        let mut listeners = String::new();
        for ((name, keys), (_, port)) in b.listeners.iter().zip(&self.listeners) {
            listeners.push_str(&format!(
                "[[listener]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{keys}\n\n"
            ));
        }
        let text = format!(
            "[[listener]]\nname = \"test\"\naddress = \"127.0.0.1:{}\"\n\n{listeners}\
             [upstream]\naddress = \"{}\"\nconnect_timeout_ms = 3000\n{}\n\n\
             [admin]\naddress = \"127.0.0.1:{}\"\n\n{}\n\n{identity}",
            self.port, b.upstream, b.upstream_keys, self.admin_port, b.extra
        );
        fs::write(&config, text).expect("write proxy configuration");
        let stderr = fs::File::create(self.dir.path().join("stderr.log")).expect("stderr file");
        let mut command = Command::new(BINARY);
        command.env_remove("ASYNQ_GUARD_LOG");
        if let Some(filter) = &b.log_filter {
            command.env("ASYNQ_GUARD_LOG", filter);
        }
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(if b.json_logs {
                &["--log-format", "json"][..]
            } else {
                &[]
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn asynq-guard");
        self.child = Some(child);

        // The admin server is bound after every listener and starts
        // serving after the accept loops are spawned, so a healthy
        // /healthz means the proxy is ready.
        let deadline = Deadline::new("asynq-guard /healthz");
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                let err = self.stderr();
                assert!(
                    err.contains("cannot listen"),
                    "asynq-guard exited with {status}:\n{err}"
                );
                return false;
            }
            if healthy(&self.admin_address()).await {
                return true;
            }
            deadline.tick().await;
        }
    }
}

/// The hash of [`TEST_SECRET`], computed by the binary under test the
/// way an operator would.
fn test_secret_hash() -> String {
    secret_hash(TEST_SECRET)
}

/// The `secret_sha256` of `secret`, computed by the binary under test
/// (`asynq-guard hash-secret`) the way an operator would.
pub fn secret_hash(secret: &str) -> String {
    let out = run_hash_secret(secret.as_bytes());
    assert!(out.status.success(), "hash-secret failed");
    String::from_utf8(out.stdout)
        .expect("hex")
        .trim()
        .to_string()
}

/// Runs `asynq-guard hash-secret` with `input` on its standard input.
pub fn run_hash_secret(input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BINARY)
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn asynq-guard hash-secret");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write secret");
    child.wait_with_output().expect("hash-secret output")
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

async fn healthy(admin: &str) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.0 200") || out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// A minimal HTTP/1.0 GET: the status code and the body.
pub async fn http_get(address: &str, path: &str) -> (u16, String) {
    within(&format!("GET {path}"), async {
        let mut s = TcpStream::connect(address).await.expect("connect admin");
        let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        s.write_all(request.as_bytes()).await.expect("send request");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read response");
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("HTTP status code");
        (status, body.to_string())
    })
    .await
}

/// The value of one series (`name{labels}` exactly as exposed) in a
/// Prometheus text page.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The first line of the proxy's log holding every one of `parts`,
/// waited for.
pub async fn log_line(proxy: &Proxy, parts: &[&str]) -> String {
    let deadline = Deadline::new(format!("a log line with {parts:?}"));
    loop {
        let log = proxy.stderr();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        deadline.tick().await;
    }
}
