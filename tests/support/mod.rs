//! What every integration test needs: a real `redis-server`, the real
//! `asynq-guard` binary in front of it, and a raw RESP client.
//!
//! Each test starts its own Redis and its own proxy on free ports, so
//! tests share nothing and run in parallel. Every wait is bounded by
//! [`HANG`]: a proxy that never answers fails the test instead of
//! hanging it. No assertion depends on how fast anything is.
//!
//! Child processes are killed when their handle is dropped, also when a
//! test panics.
//!
//! | what | module |
//! |---|---|
//! | `redis-server`: start, freeze, kill, restart; `INFO` fields; snapshots of its keys | [`redis`] |
//! | `asynq-guard serve`, `/metrics`, `/healthz`, its log | [`proxy`] |
//! | RESP client and decoded replies | [`client`] |
//! | generated certificates, TLS client | [`tls`] |
//! | asynq task messages, grants, scripts and script calls | [`asynq`] |
//! | the per-identity policy of the grant tests, expected refusals | [`policy`] |
//! | the Go asynq harness at a pinned version | [`harness`] |

// Each test binary uses a different part of this module.
#![allow(dead_code)]

mod asynq;
mod client;
mod harness;
mod policy;
mod proxy;
mod redis;
mod tls;

// Only the tests of asynq traffic use these.
#[allow(unused_imports)]
pub use asynq::*;
pub use client::*;
// Only the tests that run the Go harness use these.
#[allow(unused_imports)]
pub use harness::*;
// Only the tests of per-identity grants use these.
#[allow(unused_imports)]
pub use policy::*;
pub use proxy::*;
pub use redis::*;
// Only the tests of TLS listeners use these.
#[allow(unused_imports)]
pub use tls::*;

use std::fs;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any single wait may take before the test is failed as hung.
pub const HANG: Duration = Duration::from_secs(10);

/// Pause between two looks at something that is expected to change.
const POLL: Duration = Duration::from_millis(20);

/// How many times a start is retried when another process took the port
/// between choosing it and binding it.
const PORT_ATTEMPTS: usize = 5;

/// The `asynq-guard` binary built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_asynq-guard");

/// A port nobody listens on right now, found by letting the kernel pick.
pub fn free_port() -> u16 {
    let socket = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    socket.local_addr().expect("local address").port()
}

/// `n` different ports nobody listens on right now: all are held at once
/// while they are picked, so the kernel cannot hand out one twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<StdListener> = (0..n)
        .map(|_| StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect()
}

/// A deadline of [`HANG`] for a loop that waits for a condition.
pub struct Deadline {
    until: Instant,
    what: String,
}

impl Deadline {
    pub fn new(what: impl Into<String>) -> Self {
        Deadline {
            until: Instant::now() + HANG,
            what: what.into(),
        }
    }

    /// Sleeps a little; panics once the deadline has passed.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.until,
            "gave up after {HANG:?} waiting for {}",
            self.what
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `fut`, failing the test if it takes longer than [`HANG`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("gave up after {HANG:?} waiting for {what}"),
    }
}

// === temporary directories ===

/// A directory removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "asynq-guard-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn signal(child: &Option<Child>, name: &str) {
    let pid = child.as_ref().expect("process is running").id();
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A small deterministic pseudo-random generator (xorshift), so that
/// generated inputs are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
