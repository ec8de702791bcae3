//! What the roles that move tasks may do, with the policy of
//! `support/policy.rs`: the producer enqueues granted task types to its
//! queue only, and only a message that agrees with the keys it is stored
//! under; the worker dequeues its queue only and cannot enqueue. A
//! catalogued script is judged by its keys and arguments, not its name,
//! and a connection that switches identity with AUTH is judged as the
//! new identity at once. Each refusal names the identity and what is
//! missing, is counted, and leaves Redis exactly as it was.

mod support;

use support::{
    NO_OPERATION, NO_QUEUE, Value, array, bulk, call, dequeue, enqueue, int, load, log_line, login,
    message, not_asynq, not_granted, ok, refusals, secret_of, seed_task, send, snapshot, start,
};

// === producers ===

/// The producer enqueues a task of a granted type to its queue with
/// asynq's enqueue script and the task lands in Redis; another task type
/// is refused naming the type, another queue naming the queue, and the
/// same holds for publishing the queue name.
#[tokio::test]
async fn a_producer_enqueues_granted_task_types_to_granted_queues_only() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;

    assert_eq!(producer.cmd(&["SADD", "asynq:queues", "a"]).await, int(1));
    let welcome = message("a", "id-1", "email:welcome");
    let reply = send(
        &mut producer,
        &enqueue("EVAL", &script, "a", "id-1", &welcome),
    )
    .await;
    assert_eq!(reply, int(1));
    let bye = message("a", "id-2", "email:bye");
    let reply = send(
        &mut producer,
        &enqueue("EVALSHA", &script, "a", "id-2", &bye),
    )
    .await;
    assert_eq!(reply, int(1));
    assert_eq!(
        direct.cmd(&["HGET", "asynq:{a}:t:id-1", "msg"]).await,
        Value::Bulk(welcome)
    );
    assert_eq!(
        direct.cmd(&["HGET", "asynq:{a}:t:id-2", "state"]).await,
        bulk("pending")
    );
    assert_eq!(
        direct
            .cmd(&["LRANGE", "asynq:{a}:pending", "0", "-1"])
            .await,
        array(vec![bulk("id-2"), bulk("id-1")])
    );

    let before = snapshot(&mut direct).await;
    for verb in ["EVALSHA", "EVAL"] {
        let report = message("a", "id-3", "report");
        let reply = send(&mut producer, &enqueue(verb, &script, "a", "id-3", &report)).await;
        assert_eq!(
            reply,
            not_granted(
                "producer",
                "enqueue",
                Some("a"),
                "script enqueue",
                "task type 'report' is not granted on this queue"
            ),
            "{verb}"
        );
        let to_b = message("b", "id-4", "email:welcome");
        let reply = send(&mut producer, &enqueue(verb, &script, "b", "id-4", &to_b)).await;
        assert_eq!(
            reply,
            not_granted("producer", "enqueue", Some("b"), "script enqueue", NO_QUEUE),
            "{verb}"
        );
    }
    assert_eq!(
        producer.cmd(&["SADD", "asynq:queues", "b"]).await,
        not_granted(
            "producer",
            "enqueue",
            Some("b"),
            "SADD asynq:queues",
            NO_QUEUE
        )
    );
    // Granted to enqueue, not to look.
    assert_eq!(
        producer.cmd(&["SMEMBERS", "asynq:queues"]).await,
        not_granted(
            "producer",
            "inspect",
            None,
            "SMEMBERS asynq:queues",
            NO_OPERATION
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);

    let metrics = proxy.metrics().await;
    for (operation, reason, count) in [
        ("enqueue", "task_type_not_granted", 2.0),
        ("enqueue", "queue_not_granted", 3.0),
        ("inspect", "operation_not_granted", 1.0),
    ] {
        assert_eq!(
            refusals(&metrics, "producer", operation, reason),
            Some(count),
            "{operation} {reason}\n{metrics}"
        );
    }
}

/// An enqueue must store a message that belongs where it is stored: its
/// queue and id are those of the keys, and the id argument is the one in
/// the task key. Queue names holding hash-tag braces are never queue
/// names. All of these are refused as not asynq's shape, for an identity
/// that may enqueue that very task type to that very queue.
#[tokio::test]
async fn an_enqueue_whose_message_disagrees_with_its_keys_is_refused() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;
    let before = snapshot(&mut direct).await;

    let ts: &[u8] = b"1700000000000000000";
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-1",
                &message("b", "id-1", "email:welcome"),
            ),
            "enqueue stores a task message of queue 'b' under queue 'a'",
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-1",
                &message("a", "other-id", "email:welcome"),
            ),
            "enqueue stores a task message whose id is not the task's",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1", b"asynq:{a}:pending"],
                &[&message("a", "id-2", "email:welcome"), b"id-2", ts],
            ),
            "enqueue KEYS[1] is not the task key of the id in ARGV[2]",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1", b"asynq:{b}:pending"],
                &[&message("a", "id-1", "email:welcome"), b"id-1", ts],
            ),
            "enqueue KEYS[2] names queue 'b' where the call's other keys name 'a'",
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a{x",
                "id-1",
                &message("a{x", "id-1", "email:welcome"),
            ),
            "enqueue KEYS[1] names a queue with '{' or '}': asynq-guard refuses such queue names",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}x}:t:id-1", b"asynq:{a}x}:pending"],
                &[&message("a}x", "id-1", "email:welcome"), b"id-1", ts],
            ),
            "enqueue KEYS[1] names a queue with '{' or '}': asynq-guard refuses such queue names",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1", b"asynq:{a}:pending"],
                &[b"not a task message", b"id-1", ts],
            ),
            "",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1"],
                &[&message("a", "id-1", "email:welcome"), b"id-1", ts],
            ),
            "enqueue called with 1 keys and 3 arguments, not asynq's layout",
        ),
    ];
    for (args, why) in &cases {
        let reply = send(&mut producer, args).await;
        if why.is_empty() {
            // The decoder's words are its own; the start is the proxy's.
            let text = reply.error_text();
            assert!(
                text.starts_with(
                    "NOPERM asynq-guard: identity 'producer' may not send EVALSHA: \
                     enqueue ARGV[1] is not an asynq task message ("
                ) && text.ends_with("; only a raw grant allows what asynq does not send"),
                "{text}"
            );
        } else {
            assert_eq!(reply, not_asynq("producer", "EVALSHA", why));
        }
    }
    for queue in ["a{x", "a}x", "{a}"] {
        assert_eq!(
            producer.cmd(&["SADD", "asynq:queues", queue]).await,
            not_asynq(
                "producer",
                "SADD",
                "it names a queue with '{' or '}': asynq-guard refuses such queue names"
            ),
            "{queue}"
        );
    }
    assert_eq!(snapshot(&mut direct).await, before);
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "producer", "none", "not_asynq"),
        Some((cases.len() + 3) as f64),
        "{metrics}"
    );
}

// === catalogued scripts ===

/// A catalogued script is judged by its keys and arguments, not its
/// name: a dequeue whose task key prefix (ARGV[2]) or one of whose keys
/// names another queue than the rest is not something asynq sends, and a
/// dequeue of a queue the worker lacks is refused naming that queue; by
/// EVALSHA of the loaded script as by EVAL of its body. Nothing moves.
#[tokio::test]
async fn a_catalogued_script_naming_a_foreign_queue_is_refused() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "dequeueCmd", "dequeue").await;
    seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    seed_task(&mut direct, "b", "in-b", "email:welcome").await;
    let mut worker = login(&proxy, "worker").await;
    let before = snapshot(&mut direct).await;

    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(&mut worker, &dequeue(verb, &script, "a", "asynq:{b}:t:")).await;
        assert_eq!(
            reply,
            not_asynq(
                "worker",
                verb,
                "dequeue ARGV[2] names queue 'b' where the call's other keys name 'a'"
            ),
            "{verb}"
        );

        let mut args = dequeue(verb, &script, "a", "asynq:{a}:t:");
        args[4] = b"asynq:{b}:paused".to_vec();
        assert_eq!(
            send(&mut worker, &args).await,
            not_asynq(
                "worker",
                verb,
                "dequeue KEYS[2] names queue 'b' where the call's other keys name 'a'"
            ),
            "{verb}"
        );

        let reply = send(&mut worker, &dequeue(verb, &script, "b", "asynq:{b}:t:")).await;
        assert_eq!(
            reply,
            not_granted("worker", "consume", Some("b"), "script dequeue", NO_QUEUE),
            "{verb}"
        );
    }
    assert_eq!(snapshot(&mut direct).await, before);

    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "worker", "none", "not_asynq"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "worker", "consume", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

/// The worker dequeues from its queue and gets the task's message; it
/// may not dequeue from another queue, enqueue or publish its queue.
#[tokio::test]
async fn a_worker_consumes_its_queue_only_and_cannot_enqueue() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let enqueue_script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let msg_a = seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    seed_task(&mut direct, "b", "in-b", "email:welcome").await;
    let mut worker = login(&proxy, "worker").await;

    let reply = send(
        &mut worker,
        &dequeue("EVALSHA", &dequeue_script, "a", "asynq:{a}:t:"),
    )
    .await;
    assert_eq!(reply, Value::Bulk(msg_a));
    assert_eq!(
        direct.cmd(&["LRANGE", "asynq:{a}:active", "0", "-1"]).await,
        array(vec![bulk("in-a")])
    );
    assert_eq!(
        worker.cmd(&["SMEMBERS", "asynq:{a}:groups"]).await,
        array(vec![])
    );

    let before = snapshot(&mut direct).await;
    let reply = send(
        &mut worker,
        &dequeue("EVALSHA", &dequeue_script, "b", "asynq:{b}:t:"),
    )
    .await;
    assert_eq!(
        reply,
        not_granted("worker", "consume", Some("b"), "script dequeue", NO_QUEUE)
    );
    assert_eq!(
        worker.cmd(&["SMEMBERS", "asynq:{b}:groups"]).await,
        not_granted(
            "worker",
            "consume or inspect",
            Some("b"),
            "SMEMBERS asynq:{b}:groups",
            NO_QUEUE
        )
    );
    let msg = message("a", "new", "email:welcome");
    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(
            &mut worker,
            &enqueue(verb, &enqueue_script, "a", "new", &msg),
        )
        .await;
        assert_eq!(
            reply,
            not_granted(
                "worker",
                "enqueue",
                Some("a"),
                "script enqueue",
                NO_OPERATION
            ),
            "{verb}"
        );
    }
    assert_eq!(
        worker.cmd(&["SADD", "asynq:queues", "a"]).await,
        not_granted(
            "worker",
            "enqueue",
            Some("a"),
            "SADD asynq:queues",
            NO_OPERATION
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);
    assert_eq!(
        direct
            .cmd(&["LRANGE", "asynq:{b}:pending", "0", "-1"])
            .await,
        array(vec![bulk("in-b")])
    );

    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "worker", "consume", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "worker", "enqueue", "operation_not_granted"),
        Some(3.0),
        "{metrics}"
    );
}

// === identity switch ===

/// A connection that switches identity with AUTH is judged by the new
/// identity's grants at once, and the new identity's refusals are
/// audited under its own name, even when the same command was refused
/// to the previous identity a moment before.
#[tokio::test]
async fn after_auth_switches_identity_refusals_are_judged_and_audited_as_the_new_one() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let mut client = login(&proxy, "worker").await;

    let set = not_asynq(
        "worker",
        "SET",
        "SET in this form is not something asynq sends",
    );
    assert_eq!(client.cmd(&["SET", "owned", "1"]).await, set);
    let dequeue_a = dequeue("EVALSHA", &script, "a", "asynq:{a}:t:");
    assert_eq!(send(&mut client, &dequeue_a).await, Value::Null);

    assert_eq!(
        client.cmd(&["AUTH", "nobody", &secret_of("nobody")]).await,
        ok()
    );
    assert_eq!(
        client.cmd(&["SET", "owned", "1"]).await,
        not_asynq(
            "nobody",
            "SET",
            "SET in this form is not something asynq sends"
        )
    );
    assert_eq!(
        send(&mut client, &dequeue_a).await,
        not_granted(
            "nobody",
            "consume",
            Some("a"),
            "script dequeue",
            NO_OPERATION
        )
    );
    assert_eq!(direct.cmd(&["EXISTS", "owned"]).await, int(0));

    let metrics = proxy.metrics().await;
    for identity in ["worker", "nobody"] {
        assert_eq!(
            refusals(&metrics, identity, "none", "not_asynq"),
            Some(1.0),
            "{identity}\n{metrics}"
        );
    }
    log_line(
        &proxy,
        &[
            "event=\"refusal\"",
            "identity=\"nobody\"",
            "operation=\"consume\"",
        ],
    )
    .await;
    for identity in ["worker", "nobody"] {
        let who = format!("identity=\"{identity}\"");
        log_line(&proxy, &["event=\"refusal\"", &who, "reason=\"not_asynq\""]).await;
    }
}
