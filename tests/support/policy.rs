//! The policy the per-identity grant tests share: its identities and
//! grants, a proxy started with it, logins, seeded asynq tasks, and the
//! refusals and refusal counts those tests expect.

use std::sync::LazyLock;

use super::{Client, Proxy, Redis, Value, identities, int, metric, secret_of, task_message_with};

// === the policy ===

/// Every identity of the policy. `test` holds `raw`, `nobody` nothing.
pub const IDENTITIES: [&str; 6] = [
    "producer",
    "worker",
    "dashboard",
    "operator",
    "nobody",
    "test",
];

/// The identities without `raw`.
pub const NOT_RAW: [&str; 5] = ["producer", "worker", "dashboard", "operator", "nobody"];

const GRANTS: &str = r#"
[[grant]]
identity = "producer"
operations = ["enqueue"]
queues = ["a"]
task_types = ["email:*"]

[[grant]]
identity = "worker"
operations = ["consume"]
queues = ["a"]

[[grant]]
identity = "dashboard"
operations = ["inspect"]
queues = ["*"]

[[grant]]
identity = "operator"
operations = ["inspect", "manage"]
queues = ["a"]

[[grant]]
identity = "test"
operations = ["raw"]
"#;

/// The `[[identity]]` and `[[grant]]` tables, with hashes computed once
/// per test binary by the binary under test.
static POLICY: LazyLock<String> = LazyLock::new(|| format!("{}{GRANTS}", identities(&IDENTITIES)));

/// A Redis of the test's own and a proxy in front of it with [`POLICY`].
pub async fn start() -> (Redis, Proxy) {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &POLICY).await;
    (redis, proxy)
}

/// A new connection to the proxy, logged in as `identity`.
pub async fn login(proxy: &Proxy, identity: &str) -> Client {
    Client::connect_as(&proxy.address(), identity, &secret_of(identity)).await
}

// === asynq's messages ===

/// A payload no log line or metric may ever show.
pub const PAYLOAD: &[u8] = b"PAYLOAD-9f3c-never-logged";

/// An encoded task message with [`PAYLOAD`].
pub fn message(queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    task_message_with(queue, id, task_type, PAYLOAD)
}

/// A pending task of `queue` written into Redis directly, as asynq's
/// enqueue leaves it.
pub async fn seed_task(direct: &mut Client, queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    let msg = message(queue, id, task_type);
    let task = format!("asynq:{{{queue}}}:t:{id}");
    direct
        .send_bytes(&[
            b"HSET",
            task.as_bytes(),
            b"msg",
            &msg,
            b"state",
            b"pending",
            b"pending_since",
            b"1700000000000000000",
        ])
        .await;
    assert_eq!(direct.read().await, int(3));
    let pending = format!("asynq:{{{queue}}}:pending");
    assert_eq!(direct.cmd(&["LPUSH", &pending, id]).await, int(1));
    direct.cmd(&["SADD", "asynq:queues", queue]).await;
    msg
}

// === expected refusals ===

/// The refusal of a command that is not asynq traffic.
pub fn not_asynq(identity: &str, command: &str, why: &str) -> Value {
    Value::Error(format!(
        "NOPERM asynq-guard: identity '{identity}' may not send {command}: {why}; \
         only a raw grant allows what asynq does not send"
    ))
}

/// The refusal of asynq traffic no grant of `identity` covers: `ops` as
/// the text names them ("enqueue", "inspect or manage"), `queue` if the
/// command has one.
pub fn not_granted(identity: &str, ops: &str, queue: Option<&str>, what: &str, why: &str) -> Value {
    let on = queue
        .map(|q| format!(" on queue '{q}'"))
        .unwrap_or_default();
    Value::Error(format!(
        "NOPERM asynq-guard: identity '{identity}' may not {ops}{on} ({what}): {why}"
    ))
}

pub const NO_OPERATION: &str = "no grant gives it this operation";
pub const NO_QUEUE: &str = "no grant covers this queue";

/// The count of refusals of `identity` under `operation` and `reason`
/// in the `/metrics` text `metrics`.
pub fn refusals(metrics: &str, identity: &str, operation: &str, reason: &str) -> Option<f64> {
    metric(
        metrics,
        &format!(
            "asynq_guard_refusals_total{{identity=\"{identity}\",operation=\"{operation}\",reason=\"{reason}\"}}"
        ),
    )
}
