//! What the roles that look at queues may do, with the policy of
//! `support/policy.rs`: the dashboard reads every queue and changes none;
//! the operator inspects and manages its own queue only; an identity
//! without grants gets connection housekeeping and nothing of asynq.
//! Each refusal names the identity, the operation and the queue it
//! lacks, is counted under the operation it needed, and leaves Redis
//! exactly as it was.

mod support;

use support::{
    NO_OPERATION, NO_QUEUE, PAYLOAD, Value, array, bulk, call, dequeue, enqueue, int, load,
    log_line, login, message, not_asynq, not_granted, ok, owned, refusals, seed_task, send, simple,
    snapshot, start,
};

// === inspectors ===

/// The dashboard may read every queue (the queue list, a task's info,
/// a queue's pending messages) and change nothing: pausing, cancelling
/// and deleting are refused as `manage`, which it lacks.
#[tokio::test]
async fn a_dashboard_reads_every_queue_and_changes_none() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let info = load(&mut direct, "getTaskInfoCmd", "getTaskInfo").await;
    let list = load(&mut direct, "listMessagesCmd", "listMessages").await;
    let delete = load(&mut direct, "deleteTaskCmd", "deleteTask").await;
    let msg_a = seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    let msg_b = seed_task(&mut direct, "b", "in-b", "report").await;
    let mut dashboard = login(&proxy, "dashboard").await;

    let Value::Array(mut queues) = dashboard.cmd(&["SMEMBERS", "asynq:queues"]).await else {
        panic!("SMEMBERS asynq:queues")
    };
    queues.sort_by_key(|q| format!("{q:?}"));
    assert_eq!(queues, vec![bulk("a"), bulk("b")]);
    let reply = send(
        &mut dashboard,
        &call(
            "EVALSHA",
            &info,
            &[b"asynq:{a}:t:in-a"],
            &[b"in-a", b"1700000000", b"asynq:{a}:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        array(vec![
            Value::Bulk(msg_a),
            bulk("pending"),
            bulk("1700000000"),
            Value::Null
        ]),
        "no result yet"
    );
    let reply = send(
        &mut dashboard,
        &call(
            "EVAL",
            &list,
            &[b"asynq:{b}:pending"],
            &[b"0", b"-1", b"asynq:{b}:t:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        array(vec![Value::Bulk(msg_b), Value::Null]),
        "no result yet"
    );

    let before = snapshot(&mut direct).await;
    // A read whose queue prefix names another queue than its key.
    let reply = send(
        &mut dashboard,
        &call(
            "EVALSHA",
            &info,
            &[b"asynq:{a}:t:in-a"],
            &[b"in-a", b"1700000000", b"asynq:{b}:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        not_asynq(
            "dashboard",
            "EVALSHA",
            "getTaskInfo ARGV[3] names queue 'b' where the call's other keys name 'a'"
        )
    );

    assert_eq!(
        dashboard
            .cmd(&["SETNX", "asynq:{a}:paused", "1700000000"])
            .await,
        not_granted(
            "dashboard",
            "manage",
            Some("a"),
            "SETNX asynq:{a}:paused",
            NO_OPERATION
        )
    );
    assert_eq!(
        dashboard.cmd(&["PUBLISH", "asynq:cancel", "in-a"]).await,
        not_granted(
            "dashboard",
            "manage",
            None,
            "PUBLISH asynq:cancel",
            NO_OPERATION
        )
    );
    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(
            &mut dashboard,
            &call(
                verb,
                &delete,
                &[b"asynq:{a}:t:in-a", b"asynq:{a}:groups"],
                &[b"in-a", b"asynq:{a}:", b"asynq:{a}:g:"],
            ),
        )
        .await;
        assert_eq!(
            reply,
            not_granted(
                "dashboard",
                "manage",
                Some("a"),
                "script deleteTask",
                NO_OPERATION
            ),
            "{verb}"
        );
    }
    assert_eq!(
        dashboard.cmd(&["SREM", "asynq:queues", "b"]).await,
        not_granted(
            "dashboard",
            "manage",
            Some("b"),
            "SREM asynq:queues",
            NO_OPERATION
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "dashboard", "manage", "operation_not_granted"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "dashboard", "none", "not_asynq"),
        Some(1.0),
        "{metrics}"
    );
}

/// The operator inspects and manages its own queue: it deletes a task
/// and pauses the queue there, and is refused both on another queue,
/// naming that queue.
#[tokio::test]
async fn an_operator_manages_its_own_queue_only() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let delete = load(&mut direct, "deleteTaskCmd", "deleteTask").await;
    let info = load(&mut direct, "getTaskInfoCmd", "getTaskInfo").await;
    seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    seed_task(&mut direct, "b", "in-b", "email:welcome").await;
    let mut operator = login(&proxy, "operator").await;

    let delete_in = |queue: &str, id: &str| {
        let task = format!("asynq:{{{queue}}}:t:{id}");
        let groups = format!("asynq:{{{queue}}}:groups");
        let prefix = format!("asynq:{{{queue}}}:");
        let group_prefix = format!("asynq:{{{queue}}}:g:");
        call(
            "EVALSHA",
            &delete,
            &[task.as_bytes(), groups.as_bytes()],
            &[id.as_bytes(), prefix.as_bytes(), group_prefix.as_bytes()],
        )
    };
    assert_eq!(send(&mut operator, &delete_in("a", "in-a")).await, int(1));
    assert_eq!(direct.cmd(&["EXISTS", "asynq:{a}:t:in-a"]).await, int(0));
    assert_eq!(
        operator
            .cmd(&["SETNX", "asynq:{a}:paused", "1700000000"])
            .await,
        int(1)
    );
    assert_eq!(
        operator.cmd(&["SISMEMBER", "asynq:queues", "a"]).await,
        int(1)
    );

    let before = snapshot(&mut direct).await;
    assert_eq!(
        send(&mut operator, &delete_in("b", "in-b")).await,
        not_granted(
            "operator",
            "manage",
            Some("b"),
            "script deleteTask",
            NO_QUEUE
        )
    );
    assert_eq!(
        operator
            .cmd(&["SETNX", "asynq:{b}:paused", "1700000000"])
            .await,
        not_granted(
            "operator",
            "manage",
            Some("b"),
            "SETNX asynq:{b}:paused",
            NO_QUEUE
        )
    );
    assert_eq!(
        operator.cmd(&["SISMEMBER", "asynq:queues", "b"]).await,
        not_granted(
            "operator",
            "inspect or manage",
            Some("b"),
            "SISMEMBER asynq:queues",
            NO_QUEUE
        )
    );
    let reply = send(
        &mut operator,
        &call(
            "EVALSHA",
            &info,
            &[b"asynq:{b}:t:in-b"],
            &[b"in-b", b"1700000000", b"asynq:{b}:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        not_granted(
            "operator",
            "inspect",
            Some("b"),
            "script getTaskInfo",
            NO_QUEUE
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "operator", "manage", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
    // SISMEMBER needs inspect or manage; the metric names the first.
    assert_eq!(
        refusals(&metrics, "operator", "inspect", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

// === no grant at all ===

/// An identity without grants is served connection housekeeping (PING,
/// ECHO, SELECT 0, CLIENT SETNAME, SCRIPT EXISTS) and nothing of asynq:
/// every asynq command is refused as an operation not granted, counted
/// under the operation it needed.
#[tokio::test]
async fn an_identity_without_grants_gets_housekeeping_only() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let enqueue_script = load(&mut direct, "enqueueCmd", "enqueue").await;
    seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    let mut nobody = login(&proxy, "nobody").await;

    assert_eq!(nobody.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(nobody.cmd(&["PING", "hi"]).await, bulk("hi"));
    assert_eq!(nobody.cmd(&["ECHO", "hello"]).await, bulk("hello"));
    assert_eq!(nobody.cmd(&["SELECT", "0"]).await, ok());
    assert_eq!(
        nobody.cmd(&["CLIENT", "SETNAME", "nobody-conn"]).await,
        ok()
    );
    assert_eq!(
        nobody.cmd(&["CLIENT", "GETNAME"]).await,
        bulk("nobody-conn")
    );
    assert_eq!(
        nobody.cmd(&["SCRIPT", "EXISTS", &dequeue_script.sha]).await,
        array(vec![int(1)])
    );

    let before = snapshot(&mut direct).await;
    let msg = message("a", "new", "email:welcome");
    let refused: Vec<(Vec<Vec<u8>>, Value)> = vec![
        (
            dequeue("EVALSHA", &dequeue_script, "a", "asynq:{a}:t:"),
            not_granted(
                "nobody",
                "consume",
                Some("a"),
                "script dequeue",
                NO_OPERATION,
            ),
        ),
        (
            enqueue("EVAL", &enqueue_script, "a", "new", &msg),
            not_granted(
                "nobody",
                "enqueue",
                Some("a"),
                "script enqueue",
                NO_OPERATION,
            ),
        ),
        (
            vec![
                b"SCRIPT".to_vec(),
                b"LOAD".to_vec(),
                enqueue_script.body.clone().into_bytes(),
            ],
            not_granted(
                "nobody",
                "enqueue",
                None,
                "SCRIPT LOAD of enqueue",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SADD", "asynq:queues", "a"]),
            not_granted(
                "nobody",
                "enqueue",
                Some("a"),
                "SADD asynq:queues",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SMEMBERS", "asynq:queues"]),
            not_granted(
                "nobody",
                "inspect",
                None,
                "SMEMBERS asynq:queues",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SISMEMBER", "asynq:queues", "a"]),
            not_granted(
                "nobody",
                "inspect or manage",
                Some("a"),
                "SISMEMBER asynq:queues",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SETNX", "asynq:{a}:paused", "1700000000"]),
            not_granted(
                "nobody",
                "manage",
                Some("a"),
                "SETNX asynq:{a}:paused",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["PUBLISH", "asynq:cancel", "in-a"]),
            not_granted(
                "nobody",
                "manage",
                None,
                "PUBLISH asynq:cancel",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["DEL", "asynq:scheduler_history:entry"]),
            not_granted(
                "nobody",
                "schedule",
                None,
                "DEL asynq:scheduler_history:entry",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["INFO"]),
            not_granted("nobody", "inspect", None, "INFO", NO_OPERATION),
        ),
    ];
    for (args, want) in &refused {
        assert_eq!(
            &send(&mut nobody, args).await,
            want,
            "{:?}",
            String::from_utf8_lossy(&args[0])
        );
    }
    assert_eq!(snapshot(&mut direct).await, before);

    let metrics = proxy.metrics().await;
    for (operation, count) in [
        ("consume", 1.0),
        ("enqueue", 3.0),
        ("inspect", 3.0),
        ("manage", 2.0),
        ("schedule", 1.0),
    ] {
        assert_eq!(
            refusals(&metrics, "nobody", operation, "operation_not_granted"),
            Some(count),
            "{operation}\n{metrics}"
        );
    }
    assert_eq!(refusals(&metrics, "nobody", "none", "not_asynq"), None);
}

/// Workers' and schedulers' entries carry the task payloads of every
/// queue (asynq writes each running task into its server's entry), so
/// reading them needs `inspect` on `*`: the operator, who inspects queue
/// `a` only, is refused them; the dashboard reads them.
#[tokio::test]
async fn payloads_of_every_queue_need_inspect_on_star() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let entry = "asynq:workers:{host:1:u}";
    direct
        .send_bytes(&[b"HSET", entry.as_bytes(), b"task-in-b", PAYLOAD])
        .await;
    assert_eq!(direct.read().await, int(1));
    let scheduler = "asynq:schedulers:{host:1:u}";
    assert_eq!(direct.cmd(&["RPUSH", scheduler, "entry"]).await, int(1));

    let mut operator = login(&proxy, "operator").await;
    let needs_star =
        "it shows task payloads of every queue, which needs the operation on queue \"*\"";
    assert_eq!(
        operator.cmd(&["HVALS", entry]).await,
        not_granted(
            "operator",
            "inspect",
            None,
            &format!("HVALS {entry}"),
            needs_star
        )
    );
    assert_eq!(
        operator.cmd(&["LRANGE", scheduler, "0", "-1"]).await,
        not_granted(
            "operator",
            "inspect",
            None,
            &format!("LRANGE {scheduler}"),
            needs_star
        )
    );
    let mut dashboard = login(&proxy, "dashboard").await;
    assert_eq!(
        dashboard.cmd(&["HVALS", entry]).await,
        array(vec![Value::Bulk(PAYLOAD.to_vec())])
    );
    assert_eq!(
        dashboard.cmd(&["LRANGE", scheduler, "0", "-1"]).await,
        array(vec![bulk("entry")])
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "operator", "inspect", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

/// The registry listing also deletes entries whose heartbeat expired
/// before the caller's "now". The proxy puts its own clock there, so a
/// dashboard that claims a time far in the future lists the live servers
/// and deletes none of them.
#[tokio::test]
async fn listing_servers_cannot_delete_live_ones() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let list = load(&mut direct, "listServerKeysCmd", "listServerKeys").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let live = "asynq:servers:{host:1:live}";
    let stale = "asynq:servers:{host:2:stale}";
    assert_eq!(
        direct
            .cmd(&["ZADD", "asynq:servers", &(now + 60).to_string(), live])
            .await,
        int(1)
    );
    assert_eq!(
        direct
            .cmd(&["ZADD", "asynq:servers", &(now - 60).to_string(), stale])
            .await,
        int(1)
    );

    let mut dashboard = login(&proxy, "dashboard").await;
    let far_future = b"99999999999";
    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(
            &mut dashboard,
            &call(verb, &list, &[b"asynq:servers"], &[far_future]),
        )
        .await;
        assert_eq!(reply, array(vec![bulk(live)]), "{verb}");
    }
    assert_eq!(
        direct.cmd(&["ZRANGE", "asynq:servers", "0", "-1"]).await,
        array(vec![bulk(live)]),
        "the live server was deleted, or the stale one kept"
    );
}

/// A refusal's audit event says why a call is not asynq's and which task
/// type was refused, so that probing of other queues shows in the log.
#[tokio::test]
async fn audit_events_say_why_and_which_task_type() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let deq = load(&mut direct, "dequeueCmd", "dequeue").await;
    let enq = load(&mut direct, "enqueueCmd", "enqueue").await;

    let mut worker = login(&proxy, "worker").await;
    let reply = send(&mut worker, &dequeue("EVALSHA", &deq, "a", "asynq:{b}:t:")).await;
    assert!(reply.error_text().starts_with("NOPERM"), "{reply:?}");
    let line = log_line(
        &proxy,
        &["event=\"refusal\"", "identity=\"worker\"", "not_asynq"],
    )
    .await;
    assert!(line.contains("ARGV[2]") && line.contains("'b'"), "{line}");

    let mut producer = login(&proxy, "producer").await;
    let msg = message("a", "id-r", "report");
    let reply = send(&mut producer, &enqueue("EVALSHA", &enq, "a", "id-r", &msg)).await;
    assert!(reply.error_text().starts_with("NOPERM"), "{reply:?}");
    let line = log_line(&proxy, &["event=\"refusal\"", "task_type_not_granted"]).await;
    assert!(line.contains("task_type=\"report\""), "{line}");
    assert!(
        !proxy.stderr().contains("PAYLOAD-9f3c"),
        "a payload reached the log"
    );
}
