//! Queue-size caps: an enqueue to a queue holding its cap of tasks is
//! refused with `-LIMIT`, in its own place of a batch; with one proxy a
//! capped queue never grows past its cap, however many producers race,
//! and every refusal reaches its producer.

mod support;

use support::{
    Proxy, Redis, Value, build_harness, enqueue_bytes, harness_as, identities, int, load, metric,
    secret_of,
};

fn policy(cap: u64) -> String {
    format!(
        "{}\
         [[grant]]\nidentity = \"web\"\noperations = [\"enqueue\"]\nqueues = [\"*\"]\ntask_types = [\"*\"]\n\
         [[queue_cap]]\nqueues = [\"capped\"]\nmax_tasks = {cap}\ncount_scheduled = true\n",
        identities(&["web"])
    )
}

/// Five enqueues in one pipeline to a queue capped at three: three are
/// admitted, the others refused in their places; other queues are not
/// capped; the queue's size is exported.
#[tokio::test]
async fn a_full_queue_refuses_enqueues_in_their_places() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy(3)).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut web = support::Client::connect_as(&proxy.address(), "web", &secret_of("web")).await;

    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend(enqueue_bytes(&script, "capped", &format!("c{i}"), b"x"));
    }
    web.send_raw(&batch).await;
    for i in 0..5 {
        let reply = web.read().await;
        if i < 3 {
            assert_eq!(reply, int(1), "enqueue {i}");
        } else {
            let text = reply.error_text();
            assert!(
                text.starts_with("LIMIT asynq-guard: queue 'capped' is full: ")
                    && text.contains("cap 3 (queue_cap)"),
                "enqueue {i}: {text}"
            );
        }
    }
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{capped}:pending"]).await,
        int(3)
    );

    // A scheduled task counts too: the queue stays full.
    assert_eq!(
        direct
            .cmd(&["ZADD", "asynq:{capped}:scheduled", "1", "later"])
            .await,
        int(1)
    );
    assert_eq!(
        direct.cmd(&["RPOP", "asynq:{capped}:pending"]).await,
        Value::Bulk(b"c0".to_vec())
    );
    web.send_raw(&enqueue_bytes(&script, "capped", "c9", b"x"))
        .await;
    assert!(web.read().await.error_text().starts_with("LIMIT"));

    web.send_raw(&enqueue_bytes(&script, "free", "f0", b"x"))
        .await;
    assert_eq!(web.read().await, int(1));

    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(&metrics, "asynq_guard_queue_tasks{queue=\"capped\"}"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_limit_hits_total{identity=\"web\",limit=\"queue_cap\",queue=\"capped\",scope=\"queue\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
}

/// Twenty real asynq producers race to put 5,000 tasks into a queue
/// capped at 1,000 with no worker running: the queue ends at no more than
/// 1,000 (one proxy: the bound is exact), and every attempt was either
/// accepted or refused with -LIMIT to its producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_asynq_producers_cannot_overfill_a_capped_queue() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy(1000)).await;
    let binary = build_harness("v0.26.0");
    let res = harness_as(
        &binary,
        &proxy.address(),
        "web",
        &[
            "-flood",
            "-flood-queue",
            "capped",
            "-flood-rate",
            "1000",
            "-flood-for",
            "5s",
            "-flood-producers",
            "20",
        ],
    );
    let n = |k: &str| res[k].as_u64().unwrap_or_else(|| panic!("{k} in {res}"));
    assert_eq!(n("other_errors"), 0, "{res}");
    assert_eq!(n("accepted") + n("limited"), n("attempted"), "{res}");
    assert!(
        n("attempted") > 1000,
        "the race never reached the cap: {res}"
    );
    assert!(n("accepted") <= 1000, "{res}");
    assert!(
        res["first_limit_error"]
            .as_str()
            .unwrap_or_default()
            .contains("queue 'capped' is full"),
        "{res}"
    );
    let mut direct = redis.client().await;
    let Value::Int(len) = direct.cmd(&["LLEN", "asynq:{capped}:pending"]).await else {
        panic!("LLEN")
    };
    assert_eq!(len as u64, n("accepted"));
    assert!(len <= 1000, "the queue holds {len} tasks, over its cap");
}

/// MULTI lands its enqueues only at EXEC, after every count was taken:
/// enqueues to a capped queue are refused inside a transaction, which
/// then aborts. (A reviewer got 20 tasks into a queue capped at 5 so.)
#[tokio::test]
async fn a_transaction_cannot_carry_enqueues_past_a_cap() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy(5)).await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut web = support::Client::connect_as(&proxy.address(), "web", &secret_of("web")).await;
    assert_eq!(web.cmd(&["MULTI"]).await, support::ok());
    for i in 0..3 {
        web.send_raw(&enqueue_bytes(&script, "capped", &format!("m{i}"), b"x"))
            .await;
        let reply = web.read().await;
        assert!(
            reply.error_text().contains(
                "queue 'capped' has a size cap, and enqueues to it are not accepted inside MULTI"
            ),
            "{reply:?}"
        );
    }
    let exec = web.cmd(&["EXEC"]).await;
    assert!(exec.error_text().starts_with("EXECABORT"), "{exec:?}");
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{capped}:pending"]).await,
        int(0)
    );
    // Queues without a cap still work in a transaction.
    assert_eq!(web.cmd(&["MULTI"]).await, support::ok());
    web.send_raw(&enqueue_bytes(&script, "free", "f1", b"x"))
        .await;
    assert_eq!(web.read().await, Value::Simple("QUEUED".into()));
    assert_eq!(web.cmd(&["EXEC"]).await, Value::Array(vec![int(1)]));
}
