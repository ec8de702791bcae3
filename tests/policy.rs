//! Per-identity grants beyond one granted asynq call, with the policy of
//! `support/policy.rs`. Commands asynq never sends get `-NOPERM` naming
//! the identity, the command and why, for every identity without `raw`,
//! and leave Redis exactly as it was (keys, values, databases, script
//! cache and command counts, compared directly before and after); a
//! `raw` grant lets the same commands through, except what concealment
//! refuses to everyone. A refused command inside MULTI aborts the
//! transaction; refused commands in a pipeline get their errors in
//! place. Every refusal is counted in `asynq_guard_refusals_total` and
//! audited, never with a payload.
//!
//! What each role may do with asynq's own traffic is proved in
//! `policy_task_roles.rs` (producer, worker) and `policy_inspect_roles.rs`
//! (dashboard, operator, an identity without grants).

mod support;

use asynq_guard::asynq::catalog;
use support::{
    NO_QUEUE, NOT_RAW, PAYLOAD, Value, array, bulk, dequeue, enqueue, int, key_names, load,
    log_line, login, message, not_asynq, not_granted, ok, owned, refusals, seed_task, send, simple,
    snapshot, start,
};

/// Concealment's refusal: the same for every identity, raw or not.
const CONFIG_REFUSED: &str = "NOPERM asynq-guard: CONFIG is refused, it would reveal the upstream Redis's addresses, credentials or settings";

// === commands that are not asynq's ===

const ARBITRARY_EVAL: &str = "return redis.call('SET', 'owned', '1')";
const UNKNOWN_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Commands asynq never sends, each with the name the refusal shows and
/// why it gives.
fn outside_asynq() -> Vec<(Vec<&'static str>, &'static str, String)> {
    let arbitrary = catalog::sha1_hex(ARBITRARY_EVAL.as_bytes());
    let form = |c: &str| format!("{c} in this form is not something asynq sends");
    vec![
        (
            vec!["EVAL", ARBITRARY_EVAL, "0"],
            "EVAL",
            format!("script {arbitrary} is not one of asynq's"),
        ),
        (
            vec!["EVALSHA", UNKNOWN_SHA, "0"],
            "EVALSHA",
            format!("script {UNKNOWN_SHA} is not one of asynq's"),
        ),
        (vec!["FLUSHALL"], "FLUSHALL", form("FLUSHALL")),
        (vec!["KEYS", "*"], "KEYS", form("KEYS")),
        (
            vec!["SCRIPT", "FLUSH"],
            "SCRIPT",
            "asynq does not use SCRIPT".into(),
        ),
        (vec!["SHUTDOWN", "NOSAVE"], "SHUTDOWN", form("SHUTDOWN")),
        (vec!["SET", "owned", "1"], "SET", form("SET")),
        (vec!["GET", "seeded"], "GET", form("GET")),
        (vec!["DEL", "seeded"], "DEL", form("DEL")),
        (vec!["SADD", "asynq:queues", "a", "b"], "SADD", form("SADD")),
    ]
}

/// No identity without `raw` may send what asynq does not send, whatever
/// else it may do: each gets a NOPERM naming it, the command and why;
/// CONFIG gets concealment's refusal; Redis runs none of it.
#[tokio::test]
async fn every_identity_without_raw_is_refused_what_asynq_does_not_send() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["SET", "seeded", "v"]).await, ok());
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let mut clients = Vec::new();
    for name in NOT_RAW {
        clients.push((name, login(&proxy, name).await));
    }
    let before = snapshot(&mut direct).await;

    let commands = outside_asynq();
    for (name, client) in &mut clients {
        for (args, shown, why) in &commands {
            assert_eq!(
                client.cmd(args).await,
                not_asynq(name, shown, why),
                "{name}: {args:?}"
            );
        }
        assert_eq!(
            client.cmd(&["CONFIG", "GET", "*"]).await,
            Value::Error(CONFIG_REFUSED.into()),
            "{name}"
        );
        assert_eq!(
            client.cmd(&["SELECT", "1"]).await,
            Value::Error(format!(
                "NOPERM asynq-guard: identity '{name}' may not SELECT 1: this proxy serves database 0 only (its upstream.database); use DB 0 in the client"
            )),
            "{name}"
        );
    }

    assert_eq!(snapshot(&mut direct).await, before);
    assert_eq!(direct.cmd(&["EXISTS", "owned"]).await, int(0));
    assert_eq!(
        direct.cmd(&["SCRIPT", "EXISTS", &dequeue_script.sha]).await,
        array(vec![int(1)])
    );
    let metrics = proxy.metrics().await;
    for name in NOT_RAW {
        assert_eq!(
            refusals(&metrics, name, "none", "not_asynq"),
            Some(commands.len() as f64),
            "{name}\n{metrics}"
        );
        // CONFIG is refused by concealment, before the grants are asked.
        assert_eq!(
            refusals(&metrics, name, "none", "conceal"),
            Some(1.0),
            "{name}\n{metrics}"
        );
        assert_eq!(
            refusals(&metrics, name, "none", "database"),
            Some(1.0),
            "{name}\n{metrics}"
        );
    }
}

/// The same commands from an identity with a `raw` grant reach Redis and
/// get Redis's replies: the refusals above come from the grants. CONFIG
/// stays refused, by concealment.
#[tokio::test]
async fn a_raw_grant_lets_the_same_commands_through() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["SET", "seeded", "v"]).await, ok());
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    seed_task(&mut direct, "a", "t1", "email:welcome").await;
    let mut raw = login(&proxy, "test").await;

    assert_eq!(raw.cmd(&["EVAL", ARBITRARY_EVAL, "0"]).await, ok());
    assert_eq!(direct.cmd(&["GET", "owned"]).await, bulk("1"));
    let noscript = raw.cmd(&["EVALSHA", UNKNOWN_SHA, "0"]).await;
    assert!(
        noscript.error_text().starts_with("NOSCRIPT"),
        "{noscript:?}"
    );
    assert_eq!(raw.cmd(&["GET", "seeded"]).await, bulk("v"));
    assert_eq!(raw.cmd(&["SET", "seeded", "w"]).await, ok());
    assert_eq!(direct.cmd(&["GET", "seeded"]).await, bulk("w"));
    assert_eq!(
        raw.cmd(&["SADD", "asynq:queues", "a", "b"]).await,
        int(1),
        "a is there already"
    );
    // A dequeue whose prefix names another queue is not asynq's shape,
    // but raw runs anything.
    let mixed = send(
        &mut raw,
        &dequeue("EVALSHA", &dequeue_script, "a", "asynq:{b}:t:"),
    )
    .await;
    assert_eq!(mixed, Value::Null, "asynq:{{b}}:t:t1 has no msg");
    assert_eq!(
        direct.cmd(&["LRANGE", "asynq:{a}:active", "0", "-1"]).await,
        array(vec![bulk("t1")])
    );
    assert_eq!(raw.cmd(&["SELECT", "1"]).await, ok());
    assert_eq!(raw.cmd(&["SET", "in-db-1", "x"]).await, ok());
    assert_eq!(raw.cmd(&["SELECT", "0"]).await, ok());
    let Value::Array(keys) = raw.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS *")
    };
    assert!(keys.contains(&bulk("seeded")), "{keys:?}");
    let shutdown = raw.cmd(&["SHUTDOWN", "ABORT"]).await;
    let from_redis = direct.cmd(&["SHUTDOWN", "ABORT"]).await;
    assert!(shutdown.is_error(), "{shutdown:?}");
    assert_eq!(shutdown, from_redis, "Redis's own answer to SHUTDOWN ABORT");
    assert_eq!(
        raw.cmd(&["CONFIG", "GET", "*"]).await,
        Value::Error(CONFIG_REFUSED.into())
    );
    assert_eq!(raw.cmd(&["SCRIPT", "FLUSH"]).await, ok());
    assert_eq!(
        direct.cmd(&["SCRIPT", "EXISTS", &dequeue_script.sha]).await,
        array(vec![int(0)])
    );
    assert_eq!(raw.cmd(&["FLUSHALL"]).await, ok());
    assert_eq!(direct.cmd(&["DBSIZE"]).await, int(0));
    assert_eq!(raw.cmd(&["PING"]).await, simple("PONG"));

    // The only refusal of the raw identity is concealment's.
    let metrics = proxy.metrics().await;
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("asynq_guard_refusals_total{identity=\"test\""))
        .collect();
    assert_eq!(
        refused,
        ["asynq_guard_refusals_total{identity=\"test\",operation=\"none\",reason=\"conceal\"} 1"],
        "{metrics}"
    );
}

// === transactions and pipelines ===

/// A refused command queued inside MULTI gets its NOPERM at once and
/// makes EXEC answer EXECABORT, as a command Redis itself rejects while
/// queueing would: nothing of the transaction runs, neither a command
/// outside asynq nor asynq traffic on a queue not granted. A transaction
/// of granted commands runs.
#[tokio::test]
async fn a_refused_command_inside_multi_aborts_the_transaction() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;
    let before = snapshot(&mut direct).await;
    let msg = message("a", "id-1", "email:welcome");

    let forbidden: [(Vec<Vec<u8>>, Value); 3] = [
        (
            owned(&["SET", "owned", "1"]),
            not_asynq(
                "producer",
                "SET",
                "SET in this form is not something asynq sends",
            ),
        ),
        (
            owned(&["SADD", "asynq:queues", "b"]),
            not_granted(
                "producer",
                "enqueue",
                Some("b"),
                "SADD asynq:queues",
                NO_QUEUE,
            ),
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-2",
                &message("a", "id-2", "report"),
            ),
            not_granted(
                "producer",
                "enqueue",
                Some("a"),
                "script enqueue",
                "task type 'report' is not granted on this queue",
            ),
        ),
    ];
    for (args, want) in &forbidden {
        assert_eq!(producer.cmd(&["MULTI"]).await, ok());
        assert_eq!(
            producer.cmd(&["SADD", "asynq:queues", "a"]).await,
            simple("QUEUED")
        );
        assert_eq!(&send(&mut producer, args).await, want);
        assert_eq!(
            send(
                &mut producer,
                &enqueue("EVALSHA", &script, "a", "id-1", &msg)
            )
            .await,
            simple("QUEUED")
        );
        assert_eq!(
            producer.cmd(&["EXEC"]).await,
            Value::Error("EXECABORT Transaction discarded because of previous errors.".into())
        );
        assert_eq!(
            snapshot(&mut direct).await.keys,
            before.keys,
            "{:?}",
            String::from_utf8_lossy(&args[0])
        );
    }
    assert_eq!(direct.cmd(&["DBSIZE"]).await, int(0));

    assert_eq!(producer.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        producer.cmd(&["SADD", "asynq:queues", "a"]).await,
        simple("QUEUED")
    );
    assert_eq!(
        send(
            &mut producer,
            &enqueue("EVALSHA", &script, "a", "id-1", &msg)
        )
        .await,
        simple("QUEUED")
    );
    assert_eq!(producer.cmd(&["EXEC"]).await, array(vec![int(1), int(1)]));
    assert_eq!(
        key_names(&mut direct).await,
        ["asynq:queues", "asynq:{a}:pending", "asynq:{a}:t:id-1"]
    );
}

/// One write with granted commands and refused ones in between: every
/// command gets its own reply in its own place, the refused ones NOPERM,
/// and Redis holds exactly what the granted ones did.
#[tokio::test]
async fn refused_commands_in_a_pipeline_get_their_errors_in_place() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;

    let mut commands: Vec<(Vec<Vec<u8>>, Value)> = vec![
        (owned(&["SADD", "asynq:queues", "a"]), int(1)),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-1",
                &message("a", "id-1", "email:welcome"),
            ),
            int(1),
        ),
        (
            owned(&["SET", "owned", "1"]),
            not_asynq(
                "producer",
                "SET",
                "SET in this form is not something asynq sends",
            ),
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-2",
                &message("a", "id-2", "report"),
            ),
            not_granted(
                "producer",
                "enqueue",
                Some("a"),
                "script enqueue",
                "task type 'report' is not granted on this queue",
            ),
        ),
        (
            owned(&["EVAL", ARBITRARY_EVAL, "0"]),
            not_asynq(
                "producer",
                "EVAL",
                &format!(
                    "script {} is not one of asynq's",
                    catalog::sha1_hex(ARBITRARY_EVAL.as_bytes())
                ),
            ),
        ),
        (
            enqueue(
                "EVAL",
                &script,
                "a",
                "id-3",
                &message("a", "id-3", "email:bye"),
            ),
            int(1),
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "b",
                "id-4",
                &message("b", "id-4", "email:welcome"),
            ),
            not_granted("producer", "enqueue", Some("b"), "script enqueue", NO_QUEUE),
        ),
        (owned(&["PING"]), simple("PONG")),
    ];
    // The same again: the refusals do not disturb what follows them.
    commands.extend(commands.clone().into_iter().map(|(args, want)| {
        let want = match want {
            Value::Int(1) => int(0),
            other => other,
        };
        (args, want)
    }));
    let mut write = Vec::new();
    for (args, _) in &commands {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        write.extend(support::encode(&args));
    }
    producer.send_raw(&write).await;
    for (i, (args, want)) in commands.iter().enumerate() {
        assert_eq!(
            &producer.read().await,
            want,
            "reply {i} to {:?}",
            String::from_utf8_lossy(&args[0])
        );
    }

    assert_eq!(
        key_names(&mut direct).await,
        [
            "asynq:queues",
            "asynq:{a}:pending",
            "asynq:{a}:t:id-1",
            "asynq:{a}:t:id-3"
        ]
    );
    assert_eq!(
        direct
            .cmd(&["LRANGE", "asynq:{a}:pending", "0", "-1"])
            .await,
        array(vec![bulk("id-3"), bulk("id-1")])
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "producer", "none", "not_asynq"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "producer", "enqueue", "task_type_not_granted"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "producer", "enqueue", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

// === metrics and audit ===

/// Every refusal is counted by identity, operation and reason, and
/// written as an audit event (target `asynq_guard::audit`,
/// event="refusal") naming the identity, operation, reason, the asynq
/// call and the queue; never the task payload, the task message or the
/// value of a refused write. Allowed commands are neither counted nor
/// audited.
#[tokio::test]
async fn refusals_are_counted_and_audited_without_payloads() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;
    let mut nobody = login(&proxy, "nobody").await;
    let mut dashboard = login(&proxy, "dashboard").await;
    let secret_value = "VALUE-31d7-never-logged";

    let ok_msg = message("a", "id-ok", "email:welcome");
    let reply = send(
        &mut producer,
        &enqueue("EVALSHA", &script, "a", "id-ok", &ok_msg),
    )
    .await;
    assert_eq!(reply, int(1));
    let report = message("a", "id-report", "report");
    let reply = send(
        &mut producer,
        &enqueue("EVALSHA", &script, "a", "id-report", &report),
    )
    .await;
    assert!(
        reply.error_text().contains("task type 'report'"),
        "{reply:?}"
    );
    let to_b = message("b", "id-b", "email:welcome");
    let reply = send(&mut producer, &enqueue("EVAL", &script, "b", "id-b", &to_b)).await;
    assert!(reply.error_text().contains("queue 'b'"), "{reply:?}");
    let reply = nobody.cmd(&["SET", "owned", secret_value]).await;
    assert!(reply.error_text().contains("send SET"), "{reply:?}");
    let reply = nobody.cmd(&["SMEMBERS", "asynq:queues"]).await;
    assert!(reply.error_text().contains("may not inspect"), "{reply:?}");
    let reply = dashboard.cmd(&["PUBLISH", "asynq:cancel", "id-ok"]).await;
    assert!(reply.error_text().contains("may not manage"), "{reply:?}");
    assert_eq!(
        dashboard.cmd(&["SMEMBERS", "asynq:queues"]).await,
        array(vec![])
    );

    let metrics = proxy.metrics().await;
    let want = [
        ("producer", "enqueue", "task_type_not_granted"),
        ("producer", "enqueue", "queue_not_granted"),
        ("nobody", "none", "not_asynq"),
        ("nobody", "inspect", "operation_not_granted"),
        ("dashboard", "manage", "operation_not_granted"),
    ];
    for (identity, operation, reason) in want {
        assert_eq!(
            refusals(&metrics, identity, operation, reason),
            Some(1.0),
            "{identity} {operation} {reason}\n{metrics}"
        );
    }
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("asynq_guard_refusals_total{"))
        .count();
    assert_eq!(series, want.len(), "{metrics}");

    // One event per refusal, every field named.
    let audited = [
        (
            "producer",
            "enqueue",
            "task_type_not_granted",
            "script enqueue",
            "a",
        ),
        (
            "producer",
            "enqueue",
            "queue_not_granted",
            "script enqueue",
            "b",
        ),
        ("nobody", "none", "not_asynq", "SET", ""),
        (
            "nobody",
            "inspect",
            "operation_not_granted",
            "SMEMBERS asynq:queues",
            "",
        ),
        (
            "dashboard",
            "manage",
            "operation_not_granted",
            "PUBLISH asynq:cancel",
            "",
        ),
    ];
    for (identity, operation, reason, command, queue) in audited {
        let fields = [
            "asynq_guard::audit".to_string(),
            "event=\"refusal\"".to_string(),
            format!("identity=\"{identity}\""),
            format!("operation=\"{operation}\""),
            format!("reason=\"{reason}\""),
            format!("command=\"{command}\""),
        ];
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let line = log_line(&proxy, &fields).await;
        // The queue is named when there is one, and left out otherwise.
        if queue.is_empty() {
            assert!(!line.contains("queue="), "{line}");
        } else {
            assert!(line.contains(&format!("queue=\"{queue}\"")), "{line}");
        }
    }

    let log = proxy.stderr();
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("asynq_guard::audit") && l.contains("event=\"refusal\""))
        .count();
    assert_eq!(refusal_lines, want.len(), "{log}");
    let payload = String::from_utf8_lossy(PAYLOAD).into_owned();
    for never in [payload.as_str(), secret_value, "id-ok"] {
        assert!(!log.contains(never), "{never} in the log:\n{log}");
        assert!(!metrics.contains(never), "{never} in the metrics");
    }
}
