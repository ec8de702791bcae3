//! Enqueue admission: size caps on a grant and rate limits, with raw
//! RESP (exact replies, pipelines) and with real asynq (what a producer
//! is told, and a rate limit held under a flood). A refused enqueue is
//! answered `-LIMIT` in its own place, nothing of it reaches Redis, and
//! it is counted and audited.

mod support;

use support::{
    Proxy, Redis, Value, build_harness, enqueue_bytes, harness_json, identities, int, load,
    log_line, login_args, metric, secret_of, worker_check,
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

/// `-flood` as `flooder` to queue `flood` through `address` at
/// `per_second` for `seconds`: what real asynq got admitted.
fn flood(
    binary: &std::path::Path,
    address: &str,
    per_second: f64,
    seconds: f64,
) -> serde_json::Value {
    let (rate, duration) = (per_second.to_string(), format!("{seconds}s"));
    support::harness_as(
        binary,
        address,
        "flooder",
        &[
            "-flood",
            "-flood-queue",
            "flood",
            "-flood-rate",
            &rate,
            "-flood-for",
            &duration,
        ],
    )
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

    let res = flood(&binary, &address, 5.0 * rate, seconds);
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

/// The policy of the shared-limit tests: `web` may enqueue anything to
/// `q`, at most 0.1 a second in bursts of 3, counted in Redis.
fn shared_policy() -> String {
    format!(
        "{}\
         [[grant]]\nidentity = \"web\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n\
         [[rate_limit]]\nname = \"web-shared\"\nscope = \"identity\"\nidentities = [\"web\"]\nrate_per_second = 0.1\nburst = 3\nshared = true\n",
        identities(&["web"])
    )
}

/// Three proxies in front of one Redis enforce one shared limit: nine
/// enqueues spread over them get three admitted, not nine.
#[tokio::test]
async fn a_shared_limit_holds_across_proxy_replicas() {
    let redis = Redis::start().await;
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start_with(&redis.address(), &shared_policy()).await);
    }
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut admitted = 0;
    for i in 0..9 {
        let mut web = client_as(&proxies[i % 3], "web").await;
        web.send_raw(&enqueue_bytes(&script, "q", &format!("s{i}"), b"x"))
            .await;
        match web.read().await {
            Value::Int(1) => admitted += 1,
            reply => assert!(
                reply.error_text().starts_with(
                    "LIMIT asynq-guard: rate limit 'web-shared' (0.1 per second, burst 3, per identity 'web') is exhausted; retry in "
                ),
                "{reply:?}"
            ),
        }
    }
    assert_eq!(admitted, 3);
    assert_eq!(direct.cmd(&["LLEN", "asynq:{q}:pending"]).await, int(3));
    assert_eq!(
        direct
            .cmd(&["EXISTS", "asynq-guard:rate:{web-shared}:web"])
            .await,
        int(1),
        "the bucket lives in Redis, outside asynq's keys"
    );
}

/// When the shared state cannot be reached (here the proxy's Redis user
/// may touch asynq's keys only), each limit does what its
/// on_shared_failure says, and the failure is counted.
#[tokio::test]
async fn a_shared_limit_out_of_reach_refuses_or_allows_as_configured() {
    let redis = Redis::start_with_args(&[
        "--user", "default", "on", "nopass", "~asynq:*", "&*", "+@all",
    ])
    .await;
    let policy = format!(
        "{}\
         [[grant]]\nidentity = \"strict\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n\
         [[grant]]\nidentity = \"lenient\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n\
         [[rate_limit]]\nname = \"strict\"\nscope = \"identity\"\nidentities = [\"strict\"]\nrate_per_second = 100\nshared = true\n\
         [[rate_limit]]\nname = \"lenient\"\nscope = \"identity\"\nidentities = [\"lenient\"]\nrate_per_second = 100\nshared = true\non_shared_failure = \"allow\"\n",
        identities(&["strict", "lenient"])
    );
    let proxy = Proxy::start_with(&redis.address(), &policy).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;

    let mut strict = client_as(&proxy, "strict").await;
    strict
        .send_raw(&enqueue_bytes(&script, "q", "refused", b"x"))
        .await;
    assert_eq!(
        strict.read().await.error_text(),
        "LIMIT asynq-guard: rate limit 'strict' is shared through Redis, which the proxy cannot reach for it now, and it refuses when that happens; retry later"
    );
    let mut lenient = client_as(&proxy, "lenient").await;
    lenient
        .send_raw(&enqueue_bytes(&script, "q", "allowed", b"x"))
        .await;
    assert_eq!(lenient.read().await, int(1));
    assert_eq!(
        pending(&redis, "q").await,
        Value::Array(vec![Value::Bulk(b"allowed".to_vec())])
    );

    let metrics = proxy.metrics().await;
    for (limit, outcome) in [("strict", "refuse"), ("lenient", "allow")] {
        assert_eq!(
            metric(
                &metrics,
                &format!(
                    "asynq_guard_shared_limit_failures_total{{limit=\"{limit}\",outcome=\"{outcome}\"}}"
                )
            ),
            Some(1.0),
            "{metrics}"
        );
    }
}

/// Three replicas flooded at once by real asynq producers, one each, at
/// five times the shared rate: together they admit one limit's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_floods_through_three_replicas_get_one_shared_rate() {
    let (rate, burst, seconds) = (4.0, 4.0, 10.0);
    let redis = Redis::start().await;
    let policy = format!(
        "{}\
         [[grant]]\nidentity = \"flooder\"\noperations = [\"enqueue\"]\nqueues = [\"flood\"]\ntask_types = [\"*\"]\n\
         [[rate_limit]]\nname = \"together\"\nscope = \"identity\"\nrate_per_second = {rate}\nburst = {burst}\nshared = true\n",
        identities(&["flooder"])
    );
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start_with(&redis.address(), &policy).await);
    }
    let binary = build_harness("v0.26.0");
    let runs: Vec<_> = proxies
        .iter()
        .map(|p| {
            let (binary, address) = (binary.clone(), p.address());
            std::thread::spawn(move || flood(&binary, &address, 5.0 * rate, seconds))
        })
        .collect();
    let mut accepted = 0;
    for run in runs {
        let res = run.join().expect("flood thread");
        let n = |k: &str| res[k].as_u64().unwrap_or_else(|| panic!("{k} in {res}"));
        assert_eq!(n("other_errors"), 0, "{res}");
        assert_eq!(n("accepted") + n("limited"), n("attempted"), "{res}");
        accepted += n("accepted");
    }
    let most = rate * (seconds + 1.0) + burst;
    assert!(
        (accepted as f64) <= most,
        "three replicas admitted {accepted}, more than one limit's {most}"
    );
    let mut direct = redis.client().await;
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{flood}:pending"]).await,
        int(accepted as i64)
    );
}

/// Rate limits and caps are for enqueues. A task-type limit spent by the
/// producer does not stop the worker from finishing those tasks (its
/// write-backs are not enqueues), and go-redis's NOSCRIPT fallback (the
/// same call again as EVAL) does not spend a second token.
#[tokio::test]
async fn only_enqueues_spend_tokens_and_each_only_once() {
    let redis = Redis::start().await;
    let policy = format!(
        "{}\
         [[grant]]\nidentity = \"web\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n\
         [[grant]]\nidentity = \"worker\"\noperations = [\"consume\"]\nqueues = [\"q\"]\n\
         [[rate_limit]]\nname = \"per-type\"\nscope = \"task_type\"\nrate_per_second = 0.001\nburst = 2\n",
        identities(&["web", "worker"])
    );
    let proxy = Proxy::start_with(&redis.address(), &policy).await;
    let mut direct = redis.client().await;
    let enq = load(&mut direct, "enqueueCmd", "enqueue").await;
    let deq = load(&mut direct, "dequeueCmd", "dequeue").await;
    let done = load(&mut direct, "doneCmd", "done").await;

    // The first enqueue meets an empty script cache: NOSCRIPT, then EVAL.
    assert_eq!(direct.cmd(&["SCRIPT", "FLUSH"]).await, support::ok());
    let mut web = client_as(&proxy, "web").await;
    web.send_raw(&enqueue_bytes(&enq, "q", "n1", b"x")).await;
    assert!(web.read().await.error_text().starts_with("NOSCRIPT"));
    let msg = support::task_message_with("q", "n1", "job", b"x");
    let eval = support::enqueue("EVAL", &enq, "q", "n1", &msg);
    let eval: Vec<&[u8]> = eval.iter().map(Vec::as_slice).collect();
    web.send_raw(&support::encode(&eval)).await;
    assert_eq!(web.read().await, int(1), "the fallback was charged again");
    // The burst of two has one token left, then none.
    web.send_raw(&enqueue_bytes(&enq, "q", "n2", b"x")).await;
    assert_eq!(web.read().await, int(1));
    web.send_raw(&enqueue_bytes(&enq, "q", "n3", b"x")).await;
    assert!(web.read().await.error_text().starts_with("LIMIT"));

    // The worker takes and finishes both, whatever the producer's limit.
    let mut worker = client_as(&proxy, "worker").await;
    for _ in 0..2 {
        let taken = support::send(
            &mut worker,
            &support::dequeue("EVAL", &deq, "q", "asynq:{q}:t:"),
        )
        .await;
        let Value::Bulk(raw) = taken else {
            panic!("dequeue: {taken:?}")
        };
        let id = asynq_guard::asynq::message::decode(&raw)
            .expect("task message")
            .id;
        let task = format!("asynq:{{q}}:t:{id}");
        let reply = support::send(
            &mut worker,
            &support::call(
                "EVAL",
                &done,
                &[
                    b"asynq:{q}:active",
                    b"asynq:{q}:lease",
                    task.as_bytes(),
                    b"asynq:{q}:processed:2026-12-03",
                    b"asynq:{q}:processed",
                ],
                &[id.as_bytes(), b"1800000000", b"9223372036854775807"],
            ),
        )
        .await;
        assert_eq!(reply, Value::Simple("OK".into()), "done of {id}");
    }
    assert_eq!(direct.cmd(&["LLEN", "asynq:{q}:active"]).await, int(0));
}

/// The read-only script commands are not asynq's, so an enqueue under
/// one is refused before it is judged (it would spend tokens for nothing:
/// Redis refuses the write).
#[tokio::test]
async fn read_only_script_forms_are_refused() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;
    let mut direct = redis.client().await;
    let enq = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut web = client_as(&proxy, "web").await;
    let msg = support::task_message_with("q2", "ro", "job", b"x");
    let ro = support::enqueue("EVALSHA_RO", &enq, "q2", "ro", &msg);
    let reply = support::send(&mut web, &ro).await;
    assert!(
        reply.error_text().starts_with("NOPERM") && reply.error_text().contains("EVAL_RO"),
        "{reply:?}"
    );
}

/// The inspector's UpdateTaskPayload writes a payload of its own: it is
/// held to the default caps of `[limits]`.
#[tokio::test]
async fn updating_a_payload_is_held_to_the_default_caps() {
    let redis = Redis::start().await;
    let policy = format!(
        "{}\
         [limits]\nmax_payload_bytes = 16\n\
         [[grant]]\nidentity = \"operator\"\noperations = [\"manage\"]\nqueues = [\"q\"]\n",
        identities(&["operator"])
    );
    let proxy = Proxy::start_with(&redis.address(), &policy).await;
    let mut direct = redis.client().await;
    let update = load(&mut direct, "updateTaskPayloadCmd", "updateTaskPayload").await;
    let mut operator = client_as(&proxy, "operator").await;
    let big = support::task_message_with("q", "u1", "job", &[b'x'; 17]);
    let reply = support::send(
        &mut operator,
        &support::call("EVALSHA", &update, &[b"asynq:{q}:t:u1"], &[&big]),
    )
    .await;
    assert!(
        reply
            .error_text()
            .starts_with("LIMIT asynq-guard: payload of 17 bytes is over the 16-byte cap"),
        "{reply:?}"
    );
    let small = support::task_message_with("q", "u1", "job", &[b'x'; 16]);
    let reply = support::send(
        &mut operator,
        &support::call("EVALSHA", &update, &[b"asynq:{q}:t:u1"], &[&small]),
    )
    .await;
    assert_eq!(reply, int(0), "no such task: the script ran");
}

/// An EVALSHA refused by a shared limit was never forwarded, so the EVAL
/// of it that follows is no NOSCRIPT fallback: it is charged (and
/// refused) like any other enqueue. (Found by a reviewer: 20 such pairs
/// went through a limit of 5.)
#[tokio::test]
async fn a_refused_evalsha_gives_its_eval_no_free_pass() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &shared_policy()).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut web = client_as(&proxy, "web").await;
    for i in 0..3 {
        web.send_raw(&enqueue_bytes(&script, "q", &format!("b{i}"), b"x"))
            .await;
        assert_eq!(web.read().await, int(1));
    }
    for i in 0..5 {
        let id = format!("p{i}");
        web.send_raw(&enqueue_bytes(&script, "q", &id, b"x")).await;
        assert!(web.read().await.error_text().starts_with("LIMIT"));
        let msg = support::task_message_with("q", &id, "job", b"x");
        let eval = support::enqueue("EVAL", &script, "q", &id, &msg);
        let eval: Vec<&[u8]> = eval.iter().map(Vec::as_slice).collect();
        web.send_raw(&support::encode(&eval)).await;
        let reply = web.read().await;
        assert!(reply.error_text().starts_with("LIMIT"), "{reply:?}");
    }
    assert_eq!(direct.cmd(&["LLEN", "asynq:{q}:pending"]).await, int(3));
}

/// After Redis restarts, the proxy's kept connection to it is dead: the
/// first shared check reconnects instead of counting Redis out of reach.
#[tokio::test]
async fn a_shared_limit_survives_a_redis_restart() {
    let mut redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &shared_policy()).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut web = client_as(&proxy, "web").await;
    web.send_raw(&enqueue_bytes(&script, "q", "before", b"x"))
        .await;
    assert_eq!(web.read().await, int(1));
    drop(direct);
    redis.kill();
    redis.start_again().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut web = client_as(&proxy, "web").await;
    web.send_raw(&enqueue_bytes(&script, "q", "after", b"x"))
        .await;
    assert_eq!(web.read().await, int(1));
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_shared_limit_failures_total{limit=\"web-shared\",outcome=\"refuse\"}"
        ),
        None,
        "{metrics}"
    );
}
