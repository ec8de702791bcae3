//! Real asynq through the proxy: the Go harness in `tests/harness` (asynq
//! Client, Server with group aggregation and retries, Scheduler,
//! Inspector with task cancellation) runs once directly against a fresh
//! Redis and once through asynq-guard in front of another fresh Redis, at
//! every pinned asynq version (with every queue's tasks signed and checked
//! by the proxy), and once more through asynq-guard with
//! every asynq component under its own identity and grants. All runs must
//! pass every check of the harness and report the same counts.
//!
//! The harness runs are serialised: several asynq servers at once on two
//! cores would only make each run slower.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{
    Proxy, Redis, TEST_SECRET, TEST_USER, TempDir, all_of_asynq, build_harness, harness_roles,
    metric, write_logins,
};

/// Tasks the producer enqueues in each run.
const TASKS: &str = "2000";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the harness against `address`; returns its summary.
fn run_harness(binary: &Path, address: &str, login: &[&str], label: &str) -> Value {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("summary-{label}-{}.json", std::process::id()));
    let result = Command::new(binary)
        .args([
            "-redis", address, "-tasks", TASKS, "-timeout", "3m", "-quiet",
        ])
        .args(login)
        .arg("-out")
        .arg(&out)
        .output()
        .expect("run the harness");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        result.status.success(),
        "asynq harness ({label}) failed: {}\nstderr:\n{}\nsummary:\n{text}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&text).expect("the harness summary is JSON")
}

/// The summary without what may differ between two good runs.
fn comparable(mut summary: Value) -> Value {
    let map = summary.as_object_mut().expect("summary is an object");
    map.remove("timing");
    map.remove("asynq_version");
    summary
}

async fn direct_and_proxied_runs_agree(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);

    let direct_redis = Redis::start().await;
    let direct = run_harness(
        &binary,
        &direct_redis.address(),
        &[],
        &format!("direct-{version}"),
    );
    drop(direct_redis);

    // Every queue signed: scheduled, retried, grouped, unique and
    // completed-with-retention tasks must keep verifying all their life.
    let keys = TempDir::new("integrity-key");
    let key = keys.path().join("k1.key");
    std::fs::write(&key, "a-test-signing-key-of-at-least-32-bytes\n").unwrap();
    let policy = format!(
        "{}\n[integrity]\nsign_with = \"k1\"\n\
         [[integrity.key]]\nid = \"k1\"\nfile = {:?}\n\
         [[integrity.queues]]\nqueues = [\"*\"]\nmode = \"add\"\n",
        all_of_asynq(TEST_USER),
        key.to_str().unwrap()
    );
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy).await;
    let proxied = run_harness(
        &binary,
        &proxy.address(),
        &["-username", TEST_USER, "-password", TEST_SECRET],
        &format!("proxied-{version}"),
    );

    assert_eq!(
        proxied["asynq_version"], version,
        "harness built at the wrong version"
    );
    assert_eq!(proxied["ok"], true);
    assert!(
        proxied["enqueued_total"].as_u64().unwrap_or(0) >= 2000,
        "fewer tasks than promised: {}",
        proxied["enqueued_total"]
    );
    assert_eq!(
        proxied["cancelled"], true,
        "cancel over pub/sub did not arrive"
    );
    assert_eq!(proxied["scheduler_ran"], true);
    assert_eq!(
        comparable(direct.clone()),
        comparable(proxied),
        "asynq {version}: the run through asynq-guard differs from the direct run"
    );

    // The traffic really went through the proxy, and it saw no failure.
    let metrics = proxy.metrics().await;
    let count = |needle: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("asynq_guard_commands_total{command=\"evalsha\"}") >= 2000.0,
        "{metrics}"
    );
    assert!(
        count("asynq_guard_commands_total{command=\"subscribe\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        count("asynq_guard_commands_total{command=\"publish\"}") >= 1.0,
        "{metrics}"
    );
    let total = |family: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        total("asynq_guard_upstream_errors_total{"),
        0.0,
        "{metrics}"
    );
    assert_eq!(total("asynq_guard_client_errors_total{"), 0.0, "{metrics}");
    // Every message was signed on its way in and verified on its way out.
    assert_eq!(
        total("asynq_guard_integrity_failures_total{"),
        0.0,
        "{metrics}"
    );
    let signed = |how: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("asynq_guard_integrity_signed_total{")
                    && l.contains(&format!("how=\"{how}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(signed("enqueue") >= 2000.0, "{metrics}");
    assert!(signed("write_back") >= 1.0, "{metrics}");
    // Every connection of the harness authenticated; none failed.
    assert!(
        count("asynq_guard_auth_attempts_total{listener=\"test\",result=\"ok\"}") >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        total("asynq_guard_auth_attempts_total{")
            - count("asynq_guard_auth_attempts_total{listener=\"test\",result=\"ok\"}"),
        0.0,
        "{metrics}"
    );
    drop(proxy);
    drop(redis);

    run_split_across_identities(&binary, version, direct).await;
}

/// The same workload with every asynq component under its own identity,
/// each granted only what it needs: the run must equal the direct one, and
/// the proxy must have refused nothing.
async fn run_split_across_identities(binary: &Path, version: &str, direct: Value) {
    let redis = Redis::start().await;
    let (names, policy) = harness_roles();
    let proxy = Proxy::start_with(&redis.address(), &policy).await;
    let dir = TempDir::new("logins");
    let logins = write_logins(dir.path());
    let by_role = run_harness(
        binary,
        &proxy.address(),
        &["-logins", logins.to_str().expect("utf-8 path")],
        &format!("roles-{version}"),
    );
    assert_eq!(
        comparable(direct),
        comparable(by_role),
        "asynq {version}: the run split across identities differs from the direct run"
    );
    let metrics = proxy.metrics().await;
    let refusals: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("asynq_guard_refusals_total{"))
        .collect();
    assert!(
        refusals.is_empty(),
        "asynq {version}: the roles' own grants refused some of their traffic: {refusals:#?}"
    );
    let logged_in = metric(
        &metrics,
        "asynq_guard_auth_attempts_total{listener=\"test\",result=\"ok\"}",
    )
    .unwrap_or(0.0);
    assert!(
        logged_in >= names.len() as f64,
        "not every role logged in: {logged_in} of {}",
        names.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_works_through_the_proxy_as_directly() {
    direct_and_proxied_runs_agree("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_25_1_works_through_the_proxy_as_directly() {
    direct_and_proxied_runs_agree("v0.25.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_works_through_the_proxy_as_directly() {
    direct_and_proxied_runs_agree("v0.26.0").await;
}
