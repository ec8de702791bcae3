//! Enqueue admission: size caps on a grant and rate limits, with raw
//! RESP (exact replies, pipelines) and with real asynq (what a producer
//! is told, and a rate limit held under a flood). A refused enqueue is
//! answered `-LIMIT` in its own place, nothing of it reaches Redis, and
//! it is counted and audited.

mod support;

use support::{
    Proxy, Redis, Value, build_harness, encode, enqueue, harness_json, identities, int, load,
    log_line, login_args, metric, secret_of, task_message_with, worker_check,
};

/// `web` may enqueue anything to `q` and `q2`, payloads up to 64 bytes;
/// `other` may enqueue to `q`; messages are capped at 4 KiB by default.
/// `web` gets 1 enqueue a second on `q`, in bursts of 3.
fn policy() -> String {
    format!(
        "{}\
         [limits]\nmax_message_bytes = 4096\n\
         [[grant]]\nidentity = \"web\"\noperations = [\"enqueue\"]\nqueues = [\"q\", \"q2\"]\ntask_types = [\"*\"]\nmax_payload_bytes = 64\n\
         [[grant]]\nidentity = \"other\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n\
         [[rate_limit]]\nname = \"web-q\"\nscope = \"identity_queue\"\nidentities = [\"web\"]\nqueues = [\"q\"]\nrate_per_second = 1\nburst = 3\n",
        identities(&["web", "other"])
    )
}

async fn client_as(proxy: &Proxy, who: &str) -> support::Client {
    support::Client::connect_as(&proxy.address(), who, &secret_of(who)).await
}

/// One asynq enqueue of a task with `payload` as raw RESP bytes.
fn enqueue_bytes(script: &support::Script, queue: &str, id: &str, payload: &[u8]) -> Vec<u8> {
    let msg = task_message_with(queue, id, "job", payload);
    let args = enqueue("EVALSHA", script, queue, id, &msg);
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    encode(&args)
}

async fn pending(redis: &Redis, queue: &str) -> Value {
    let mut direct = redis.client().await;
    direct
        .cmd(&["LRANGE", &format!("asynq:{{{queue}}}:pending"), "0", "-1"])
        .await
}

/// A batch of ten enqueues in one pipeline under a limit of three at
/// once: the first three are admitted, each of the others gets its own
/// `-LIMIT` in its own place, and Redis holds exactly the admitted ones.
/// Another queue and another identity are not held back.
#[tokio::test]
async fn a_batch_over_the_rate_is_judged_enqueue_by_enqueue() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;

    let mut web = client_as(&proxy, "web").await;
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(enqueue_bytes(&script, "q", &format!("t{i}"), b"small"));
    }
    web.send_raw(&batch).await;
    for i in 0..10 {
        let reply = web.read().await;
        if i < 3 {
            assert_eq!(reply, int(1), "enqueue {i}");
        } else {
            let text = reply.error_text();
            assert!(
                text.starts_with(
                    "LIMIT asynq-guard: rate limit 'web-q' (1 per second, burst 3, per identity_queue 'web/q') is exhausted; retry in "
                ),
                "enqueue {i}: {text}"
            );
        }
    }
    assert_eq!(
        pending(&redis, "q").await,
        Value::Array(vec![
            Value::Bulk(b"t2".to_vec()),
            Value::Bulk(b"t1".to_vec()),
            Value::Bulk(b"t0".to_vec())
        ])
    );
    assert_eq!(
        direct.cmd(&["EXISTS", "asynq:{q}:t:t3"]).await,
        int(0),
        "a refused task's hash reached Redis"
    );

    // The limit is web's on q: q2, and other on q, go on.
    web.send_raw(&enqueue_bytes(&script, "q2", "u0", b"small"))
        .await;
    assert_eq!(web.read().await, int(1));
    let mut other = client_as(&proxy, "other").await;
    other
        .send_raw(&enqueue_bytes(&script, "q", "o0", b"small"))
        .await;
    assert_eq!(other.read().await, int(1));

    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_limit_hits_total{identity=\"web\",limit=\"web-q\",queue=\"q\",scope=\"identity_queue\"}"
        ),
        Some(7.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_refusals_total{identity=\"web\",operation=\"enqueue\",reason=\"limit\"}"
        ),
        Some(7.0),
        "{metrics}"
    );
    let line = log_line(&proxy, &["event=\"limit\"", "limit=\"web-q\""]).await;
    assert!(
        line.contains("scope=\"identity_queue\"") && line.contains("queue=\"q\""),
        "{line}"
    );
}

/// A payload over the grant's cap, or a message over the default cap,
/// is refused naming the cap; nothing of it reaches Redis.
#[tokio::test]
async fn size_caps_are_checked_on_the_task_message() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;

    let mut web = client_as(&proxy, "web").await;
    web.send_raw(&enqueue_bytes(&script, "q2", "fits", &[b'x'; 64]))
        .await;
    assert_eq!(web.read().await, int(1));
    web.send_raw(&enqueue_bytes(&script, "q2", "big", &[b'x'; 65]))
        .await;
    let reply = web.read().await;
    assert_eq!(
        reply.error_text(),
        "LIMIT asynq-guard: payload of 65 bytes is over the 64-byte cap (max_payload_bytes) of identity 'web' for task type 'job' on queue 'q2'; it will not fit on retry"
    );

    let mut other = client_as(&proxy, "other").await;
    other
        .send_raw(&enqueue_bytes(&script, "q", "huge", &[b'x'; 5000]))
        .await;
    let text = other.read().await.error_text().to_string();
    assert!(
        text.starts_with("LIMIT asynq-guard: task message of ")
            && text.contains("4096-byte cap (max_message_bytes)"),
        "{text}"
    );
    assert_eq!(
        pending(&redis, "q2").await,
        Value::Array(vec![Value::Bulk(b"fits".to_vec())])
    );
    assert_eq!(pending(&redis, "q").await, Value::Array(vec![]));
}

/// With real asynq: an enqueue over the payload cap fails with the
/// proxy's text, at every pinned version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_producers_are_told_about_the_payload_cap() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;
    for version in support::ASYNQ_VERSIONS {
        let binary = build_harness(version);
        let address = proxy.address();
        let login = login_args("web");
        let probe = |bytes: &str| {
            let mut args = vec![
                "-redis",
                &address,
                "-probe",
                "-probe-queue",
                "q2",
                "-probe-type",
                "job",
                "-probe-payload-bytes",
                bytes,
            ];
            args.extend(login.iter().map(String::as_str));
            harness_json(&binary, &args)
        };
        assert_eq!(probe("64")["ok"], true, "{version}");
        let refused = probe("65");
        assert_eq!(refused["ok"], false, "{version}");
        let error = refused["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("LIMIT asynq-guard: payload of 65 bytes is over the 64-byte cap"),
            "{version}: {error}"
        );
    }
    let mut direct = redis.client().await;
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{q2}:pending"]).await,
        int(3),
        "one task per version, none of the refused ones"
    );
}

/// A producer enqueuing at 5 times its rate for 10 s with real asynq gets
/// about its rate admitted, never more than rate × time + burst (the
/// tolerance the README states); every attempt is accepted or refused
/// with -LIMIT; every accepted task is then processed by a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_flood_at_five_times_the_rate_gets_the_rate() {
    let rate = 4.0;
    let burst = 4.0;
    let seconds = 10.0;
    let redis = Redis::start().await;
    let policy = format!(
        "{}\
         [[grant]]\nidentity = \"flooder\"\noperations = [\"enqueue\"]\nqueues = [\"flood\"]\ntask_types = [\"*\"]\n\
         [[grant]]\nidentity = \"worker\"\noperations = [\"consume\"]\nqueues = [\"flood\"]\n\
         [[rate_limit]]\nname = \"flooder\"\nscope = \"identity\"\nidentities = [\"flooder\"]\nrate_per_second = {rate}\nburst = {burst}\n",
        identities(&["flooder", "worker"])
    );
    let proxy = Proxy::start_with(&redis.address(), &policy).await;
    let binary = build_harness("v0.26.0");
    let address = proxy.address();

    let flood_rate = (5.0 * rate).to_string();
    let flood_for = format!("{seconds}s");
    let login = login_args("flooder");
    let mut args = vec![
        "-redis",
        &address,
        "-flood",
        "-flood-queue",
        "flood",
        "-flood-rate",
        &flood_rate,
        "-flood-for",
        &flood_for,
    ];
    args.extend(login.iter().map(String::as_str));
    let res = harness_json(&binary, &args);
    let n = |k: &str| res[k].as_u64().unwrap_or_else(|| panic!("{k} in {res}"));
    assert_eq!(n("other_errors"), 0, "{res}");
    assert_eq!(n("accepted") + n("limited"), n("attempted"), "{res}");
    let most = rate * (seconds + 1.0) + burst;
    assert!(
        (n("accepted") as f64) <= most,
        "admitted {} of {}, more than {most}: {res}",
        n("accepted"),
        n("attempted")
    );
    assert!(n("limited") > 0 && n("accepted") >= burst as u64, "{res}");
    assert!(
        res["first_limit_error"]
            .as_str()
            .unwrap_or_default()
            .contains("rate limit 'flooder'"),
        "{res}"
    );

    let mut direct = redis.client().await;
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{flood}:pending"]).await,
        int(n("accepted") as i64)
    );
    let report = worker_check(&binary, &address, "worker", "flood");
    assert_eq!(report["processed"]["flood"], n("accepted"), "{report}");
}
