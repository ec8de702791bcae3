//! Running the proxy as an operator does: the policy file edited and
//! reloaded under live asynq traffic (by watching the file and by
//! SIGHUP), a broken file that leaves the running policy in force,
//! identities and secrets removed from under open connections,
//! `/readyz`, and graceful shutdown on SIGTERM.

mod support;

use std::path::PathBuf;

use serde_json::Value as Json;

use support::{
    Client, Deadline, Proxy, Redis, TEST_SECRET, TEST_USER, Value, build_harness, harness_as_async,
    http_get, identities, metric, probe_as, secret_of, within,
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn harness() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_harness("v0.26.0")).clone()
}

/// The grants of the live-traffic test: `producer` may enqueue to
/// `$PRODUCER_QUEUES`; `worker` runs a Server on `a` (and inspects it).
const GRANTS: &str = r#"
[reload]
watch_interval_ms = 100

[[grant]]
identity = "producer"
operations = ["enqueue"]
queues = [$PRODUCER_QUEUES]
task_types = ["*"]

[[grant]]
identity = "worker"
operations = ["consume", "inspect"]
queues = ["a"]
"#;

fn policy(producer_queues: &str) -> String {
    format!(
        "{}{}",
        identities(&["producer", "worker"]),
        GRANTS.replace("$PRODUCER_QUEUES", producer_queues)
    )
}

/// Waits until `/metrics` shows `series` at `want`.
async fn wait_metric(proxy: &Proxy, series: &str, want: f64) -> String {
    let deadline = Deadline::new(format!("{series} = {want}"));
    loop {
        let text = proxy.metrics().await;
        if metric(&text, series) == Some(want) {
            return text;
        }
        deadline.tick().await;
    }
}

/// The SHA-256 label of `asynq_guard_policy_info`.
fn policy_sha(metrics: &str) -> String {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("asynq_guard_policy_info{sha256=\""))
        .and_then(|rest| rest.split('"').next())
        .expect("asynq_guard_policy_info in /metrics")
        .to_string()
}

/// A harness mode run as `who` on a blocking thread.
async fn harness_run(address: &str, who: &'static str, args: &[&str]) -> Json {
    harness_as_async(&harness(), address, who, args).await
}

async fn probe(address: &str, queue: &str) -> Json {
    probe_as(&harness(), address, "producer", queue, "email:send").await
}

async fn enqueue(address: &str, queue: &str, count: usize) -> Json {
    harness_run(
        address,
        "producer",
        &[
            "-enqueue-batch",
            "-batch-queue",
            queue,
            "-batch-type",
            "email:send",
            "-batch-count",
            &count.to_string(),
        ],
    )
    .await
}

fn assert_refused(reply: &Json, queue: &str) {
    assert_eq!(reply["ok"], false, "enqueue to {queue}: {reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("NOPERM") && error.contains(&format!("'{queue}'")),
        "enqueue to {queue}: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_policy_applies_to_live_asynq_traffic_and_drops_no_connection() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let proxy = Proxy::builder(&redis.address())
        .extra(&policy(r#""a", "b""#))
        .start()
        .await;
    let address = proxy.address();
    let first = proxy.config_text();
    let sha_at_start = policy_sha(&proxy.metrics().await);

    // A Server that stays up through every reload below: it must handle
    // the 20 tasks enqueued before and the 20 enqueued after them.
    let worker = tokio::spawn({
        let address = address.clone();
        async move {
            harness_run(
                &address,
                "worker",
                &[
                    "-handle",
                    "-handle-queues",
                    "a",
                    "-handle-expect",
                    "40",
                    "-handle-timeout",
                    "120s",
                ],
            )
            .await
        }
    });
    // Open connections that must outlive every reload that keeps their
    // identity.
    let mut producer_conn = Client::connect_as(&address, "producer", &secret_of("producer")).await;
    let mut worker_conn = Client::connect_as(&address, "worker", &secret_of("worker")).await;
    let allowed = producer_conn.cmd(&["SADD", "asynq:queues", "a"]).await;
    assert!(!allowed.is_error(), "{allowed:?}");

    let before = enqueue(&address, "a", 20).await;
    assert_eq!(
        before["tasks"].as_array().map(Vec::len),
        Some(20),
        "{before}"
    );

    // The producer loses queue a: the next enqueue to it is refused.
    proxy.write_config(&first.replace(r#"queues = ["a", "b"]"#, r#"queues = ["b"]"#));
    let text = wait_metric(
        &proxy,
        "asynq_guard_policy_reloads_total{result=\"ok\"}",
        1.0,
    )
    .await;
    assert_ne!(
        policy_sha(&text),
        sha_at_start,
        "policy_info follows the file"
    );
    assert_refused(&probe(&address, "a").await, "a");
    assert_eq!(probe(&address, "b").await["ok"], true);
    let refused = producer_conn.cmd(&["SADD", "asynq:queues", "a"]).await;
    assert!(
        refused.is_error() && refused.error_text().starts_with("NOPERM"),
        "an open connection gets the new policy at its next command: {refused:?}"
    );
    assert_eq!(
        worker_conn.cmd(&["PING"]).await,
        Value::Simple("PONG".into())
    );

    // A broken file: the running policy stays, the failure is counted
    // and logged with the file and line.
    let in_force = proxy.config_text();
    proxy.write_config(&format!("{in_force}\n[[grant]]\nidentity = \n"));
    let text = wait_metric(
        &proxy,
        "asynq_guard_policy_reloads_total{result=\"error\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metric(&text, "asynq_guard_policy_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_refused(&probe(&address, "a").await, "a");
    assert_eq!(
        probe(&address, "b").await["ok"],
        true,
        "old policy in force"
    );
    let log = proxy.stderr();
    let config = proxy.config_path();
    assert!(
        log.contains("policy reload failed") && log.contains(&format!("{}:", config.display())),
        "the failed reload is logged with its file:\n{log}"
    );

    // Queue a given back: the worker, up all along, handles what comes.
    proxy.write_config(&first);
    wait_metric(
        &proxy,
        "asynq_guard_policy_reloads_total{result=\"ok\"}",
        2.0,
    )
    .await;
    let after = enqueue(&address, "a", 20).await;
    assert_eq!(after["tasks"].as_array().map(Vec::len), Some(20), "{after}");
    let handled = within("the worker", worker).await.expect("worker task");
    assert_eq!(handled["reached"], true, "{handled}");
    assert_eq!(
        handled["handled"].as_array().map(Vec::len),
        Some(40),
        "{handled}"
    );
    assert_eq!(handled["start_error"], "", "{handled}");

    // The producer identity removed: its idle connection is closed at
    // once; the worker's is not.
    let without_producer = first
        .replacen(
            &identities(&["producer"]),
            "",
            1,
        )
        .replace(
            "[[grant]]\nidentity = \"producer\"\noperations = [\"enqueue\"]\nqueues = [\"a\", \"b\"]\ntask_types = [\"*\"]\n",
            "",
        );
    assert!(
        !without_producer.contains("\"producer\""),
        "{without_producer}"
    );
    proxy.write_config(&without_producer);
    within(
        "the producer's connection to close",
        producer_conn.read_to_eof(),
    )
    .await;
    let text = wait_metric(
        &proxy,
        "asynq_guard_policy_reloads_total{result=\"ok\"}",
        3.0,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            "asynq_guard_refusals_total{identity=\"producer\",operation=\"none\",reason=\"revoked\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        worker_conn.cmd(&["PING"]).await,
        Value::Simple("PONG".into())
    );
    let stderr = proxy.stderr();
    assert!(
        stderr.contains("revoked") && stderr.contains("no longer in the policy"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_watching_off_only_sighup_reloads() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let extra = format!(
        "[reload]\nwatch_interval_ms = 0\n\n{}[[grant]]\nidentity = \"producer\"\noperations = [\"enqueue\"]\nqueues = [\"a\"]\ntask_types = [\"*\"]\n",
        identities(&["producer"])
    );
    let proxy = Proxy::builder(&redis.address()).extra(&extra).start().await;
    let mut conn = Client::connect_as(&proxy.address(), "producer", &secret_of("producer")).await;
    assert!(!conn.cmd(&["SADD", "asynq:queues", "a"]).await.is_error());
    proxy.write_config(
        &proxy
            .config_text()
            .replace(r#"queues = ["a"]"#, r#"queues = ["b"]"#),
    );
    // Longer than the default watch interval: nothing is read.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(!conn.cmd(&["SADD", "asynq:queues", "a"]).await.is_error());
    assert_eq!(
        metric(
            &proxy.metrics().await,
            "asynq_guard_policy_reloads_total{result=\"ok\"}"
        ),
        Some(0.0)
    );
    proxy.sighup();
    wait_metric(
        &proxy,
        "asynq_guard_policy_reloads_total{result=\"ok\"}",
        1.0,
    )
    .await;
    let refused = conn.cmd(&["SADD", "asynq:queues", "a"]).await;
    assert!(refused.error_text().starts_with("NOPERM"), "{refused:?}");
    assert!(!conn.cmd(&["SADD", "asynq:queues", "b"]).await.is_error());
}

#[tokio::test]
async fn a_secret_removed_by_a_reload_closes_only_the_connections_that_used_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let old = support::secret_hash("old-secret-of-ops");
    let new = support::secret_hash("new-secret-of-ops");
    let extra = format!(
        "[reload]\nwatch_interval_ms = 100\n\n[[identity]]\nname = \"ops\"\nsecret_sha256 = [\"{old}\", \"{new}\"]\n\n[[grant]]\nidentity = \"ops\"\noperations = [\"raw\"]\n"
    );
    let proxy = Proxy::builder(&redis.address()).extra(&extra).start().await;
    let mut with_old = Client::connect_as(&proxy.address(), "ops", "old-secret-of-ops").await;
    let mut with_new = Client::connect_as(&proxy.address(), "ops", "new-secret-of-ops").await;
    let mut blocked = Client::connect_as(&proxy.address(), "ops", "old-secret-of-ops").await;
    assert_eq!(
        with_old.cmd(&["SET", "k", "1"]).await,
        Value::Simple("OK".into())
    );
    // A blocking command in flight is not waited for: it is answered
    // with the refusal, and what arrives later is not handed over.
    blocked.send(&["BLPOP", "secrets", "0"]).await;
    let mut direct = redis.client().await;
    let deadline = Deadline::new("BLPOP to block in Redis");
    while support::info_field(&mut direct, "clients", "blocked_clients").await != 1 {
        deadline.tick().await;
    }
    proxy.write_config(&proxy.config_text().replace(&format!("\"{old}\", "), ""));
    within(
        "the old secret's connection to close",
        with_old.read_to_eof(),
    )
    .await;
    let refused = within("the blocked command's answer", blocked.read()).await;
    assert!(
        refused.error_text().starts_with(
            "NOPERM asynq-guard: the secret identity 'ops' logged in with is no longer accepted"
        ),
        "{refused:?}"
    );
    within("the blocked connection to close", blocked.read_to_eof()).await;
    assert_eq!(
        direct.cmd(&["LPUSH", "secrets", "later"]).await,
        Value::Int(1)
    );
    assert_eq!(
        direct.cmd(&["LLEN", "secrets"]).await,
        Value::Int(1),
        "nobody popped it"
    );
    assert_eq!(
        with_new.cmd(&["GET", "k"]).await,
        Value::Bulk(b"1".to_vec())
    );
    let refused = Client::connect(&proxy.address())
        .await
        .cmd(&["AUTH", "ops", "old-secret-of-ops"])
        .await;
    assert!(refused.error_text().starts_with("WRONGPASS"), "{refused:?}");
}

#[tokio::test]
async fn readyz_follows_the_upstream() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let (status, body) = http_get(&proxy.admin_address(), "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(
        metric(&proxy.metrics().await, "asynq_guard_upstream_up"),
        Some(1.0)
    );
    redis.kill();
    let deadline = Deadline::new("/readyz to say not ready");
    let body = loop {
        let (status, body) = http_get(&proxy.admin_address(), "/readyz").await;
        if status == 503 {
            break body;
        }
        deadline.tick().await;
    };
    assert!(body.starts_with("not ready: upstream Redis"), "{body}");
    assert_eq!(
        metric(&proxy.metrics().await, "asynq_guard_upstream_up"),
        Some(0.0)
    );
    let (status, _) = http_get(&proxy.admin_address(), "/healthz").await;
    assert_eq!(status, 200, "alive even when not ready");
    redis.start_again().await;
    let deadline = Deadline::new("/readyz to say ready again");
    while http_get(&proxy.admin_address(), "/readyz").await.0 != 200 {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn sigterm_answers_what_was_received_then_closes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let mut proxy = Proxy::start_with(&redis.address(), "[shutdown]\ngrace_secs = 30\n").await;
    let mut busy = proxy.client().await;
    let mut idle = proxy.client().await;
    assert_eq!(idle.cmd(&["PING"]).await, Value::Simple("PONG".into()));
    // In flight when SIGTERM comes: answered before the connection ends,
    // however long it takes within the grace period (longer than the
    // 5 s a closing client's replies are otherwise waited for).
    busy.send(&["BLPOP", "nothing-here", "6"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    proxy.sigterm();
    within("the idle connection to close", idle.read_to_eof()).await;
    assert_eq!(
        busy.read().await,
        Value::Null,
        "BLPOP answered at its timeout"
    );
    within("the busy connection to close", busy.read_to_eof()).await;
    let status = proxy.exited().await;
    assert!(status.success(), "{status}");
    assert!(
        tokio::net::TcpStream::connect(proxy.address())
            .await
            .is_err(),
        "no longer accepting"
    );
    let log = proxy.stderr();
    assert!(log.contains("every connection closed"), "{log}");
}

#[tokio::test]
async fn sigterm_cuts_what_outlasts_the_grace_period() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start().await;
    let mut proxy = Proxy::start_with(&redis.address(), "[shutdown]\ngrace_secs = 1\n").await;
    let mut stuck = Client::connect_as(&proxy.address(), TEST_USER, TEST_SECRET).await;
    assert_eq!(stuck.cmd(&["PING"]).await, Value::Simple("PONG".into()));
    // Blocks forever: only the grace period ends it.
    stuck.send(&["BLPOP", "nothing-here", "0"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    proxy.sigterm();
    let status = proxy.exited().await;
    assert!(status.success(), "{status}");
    within("the stuck connection to be cut", stuck.read_to_eof()).await;
    let log = proxy.stderr();
    assert!(log.contains("grace period over"), "{log}");
}
