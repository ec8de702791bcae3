//! A `redis-server` of a test's own, and what tests read from it
//! directly (not through the proxy).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Client, Deadline, PORT_ATTEMPTS, TempDir, Value, free_port, kill_child, signal};

/// A `redis-server` of this test's own, without persistence.
pub struct Redis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Further `redis-server` arguments (`--requirepass`, `--user`, …).
    args: Vec<String>,
}

/// Arguments that make `user` (with `password`) Redis's only enabled
/// user, with every permission: how a Redis in front of which the proxy
/// logs in as its own ACL user is set up. ACL rules follow the user name
/// as separate arguments.
pub fn only_user_args(user: &str, password: &str) -> Vec<String> {
    let password = format!(">{password}");
    [
        "--user", user, "on", &password, "~*", "&*", "+@all", "--user", "default", "off",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

impl Redis {
    /// Starts Redis on a free port and waits until it answers PING.
    pub async fn start() -> Redis {
        Redis::start_with_args(&[]).await
    }

    /// Starts Redis with further command-line arguments, for example
    /// `["--requirepass", "pw"]`. A Redis that requires a login counts
    /// as started once it answers PING with `-NOAUTH`.
    pub async fn start_with_args(args: &[&str]) -> Redis {
        let mut redis = Redis::not_started();
        redis.args = args.iter().map(|a| a.to_string()).collect();
        for _ in 0..PORT_ATTEMPTS {
            if redis.try_start().await {
                return redis;
            }
            redis.port = free_port();
        }
        let log = std::fs::read_to_string(redis.dir.path().join("redis.log")).unwrap_or_default();
        panic!("redis-server did not start on any free port; its log:\n{log}");
    }

    /// Chooses a port for Redis without starting it: the address of a
    /// Redis that is down.
    pub fn not_started() -> Redis {
        Redis {
            port: free_port(),
            dir: TempDir::new("redis"),
            child: None,
            args: Vec::new(),
        }
    }

    /// Starts (again) on the same port, after [`Redis::kill`] or
    /// [`Redis::not_started`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        assert!(
            self.try_start().await,
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Kills Redis at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Freezes Redis (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(&self.child, "STOP");
    }

    /// Thaws Redis after [`Redis::pause`] (SIGCONT).
    pub fn resume(&self) {
        signal(&self.child, "CONT");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client connected to Redis itself, not through the proxy.
    pub async fn client(&self) -> Client {
        Client::connect(&self.address()).await
    }

    async fn try_start(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/bin/redis-server");
        self.child = Some(child);

        let deadline = Deadline::new(format!("redis-server on port {}", self.port));
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                // Most likely the port was taken in the meantime.
                self.child = None;
                return false;
            }
            if answers_ping(&self.address()).await {
                return true;
            }
            deadline.tick().await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

async fn answers_ping(address: &str) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(address).await.ok()?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await.ok()?;
        // "+PONG\r\n", or the start of "-NOAUTH …" from a Redis that
        // wants a password: either way it is serving.
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// The text of `INFO <section>`, asked over `direct` (a client connected
/// to Redis itself).
pub async fn info(direct: &mut Client, section: &str) -> String {
    match direct.cmd(&["INFO", section]).await {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO {section} answered {other:?}"),
    }
}

/// A numeric field of `INFO <section>`, asked over `direct`.
pub async fn info_field(direct: &mut Client, section: &str, field: &str) -> i64 {
    let text = info(direct, section).await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{text}"))
}

/// Waits until `INFO <section>` on `direct` shows `field` equal to `want`.
pub async fn wait_for_info(direct: &mut Client, section: &str, field: &str, want: i64) {
    let deadline = Deadline::new(format!("INFO {field} to become {want}"));
    while info_field(direct, section, field).await != want {
        deadline.tick().await;
    }
}

// === what Redis holds ===

/// The names of database 0's keys as `KEYS *` answers them.
async fn keys(direct: &mut Client) -> Vec<Vec<u8>> {
    let Value::Array(names) = direct.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS * is not an array")
    };
    names
        .into_iter()
        .map(|name| match name {
            Value::Bulk(name) => name,
            other => panic!("key {other:?}"),
        })
        .collect()
}

/// The names of database 0's keys, sorted.
pub async fn key_names(direct: &mut Client) -> Vec<String> {
    let mut names: Vec<String> = keys(direct)
        .await
        .into_iter()
        .map(|n| String::from_utf8(n).expect("UTF-8 key"))
        .collect();
    names.sort();
    names
}

/// Every key of database 0 with its `DUMP`.
pub async fn key_dumps(direct: &mut Client) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut dumps = BTreeMap::new();
    for name in keys(direct).await {
        direct.send_bytes(&[b"DUMP", &name]).await;
        let Value::Bulk(dump) = direct.read().await else {
            panic!("DUMP of {:?}", String::from_utf8_lossy(&name))
        };
        dumps.insert(name, dump);
    }
    dumps
}

/// Everything a forwarded command could have changed in Redis, read
/// directly: every key of database 0 with its `DUMP`, the key counts of
/// every database, the script cache, and the calls and errors per command
/// (without the commands this snapshot sends itself).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub keys: BTreeMap<Vec<u8>, Vec<u8>>,
    pub keyspace: String,
    pub cached_scripts: String,
    pub commands: BTreeMap<String, String>,
}

/// A [`Snapshot`] of Redis, read over `direct`.
pub async fn snapshot(direct: &mut Client) -> Snapshot {
    // Counts first: the snapshot's own commands are not in them.
    let commands = info(direct, "commandstats")
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(':'))
        .filter(|(name, _)| !["info", "keys", "dump"].contains(name))
        .map(|(name, fields)| {
            // Calls and errors, not the times.
            let kept: Vec<&str> = fields
                .split(',')
                .filter(|f| !f.starts_with("usec"))
                .collect();
            (name.to_string(), kept.join(","))
        })
        .collect();
    let keyspace = info(direct, "keyspace").await;
    let cached_scripts = info(direct, "memory")
        .await
        .lines()
        .find(|l| l.starts_with("number_of_cached_scripts:"))
        .expect("number_of_cached_scripts in INFO memory")
        .to_string();
    Snapshot {
        keys: key_dumps(direct).await,
        keyspace,
        cached_scripts,
        commands,
    }
}
