//! When Redis is down, goes away or freezes: clients get an error reply
//! and a closed connection, never a hang, and no command is ever resent.

mod support;

use support::{
    Deadline, ENQUEUE_Q, Proxy, Redis, TEST_SECRET, TEST_USER, Value, bulk, command, info_field,
    int, metric, ok, simple, wait_for_info,
};

const INCR_SCRIPT: &str = "return redis.call('INCR', KEYS[1])";

/// Logs in (the proxy alone answers that), sends PING and expects the
/// "upstream unavailable" error, then EOF.
async fn refused_for_upstream(proxy: &Proxy) {
    let mut client = proxy.client().await;
    let reply = client.cmd(&["PING"]).await;
    let text = reply.error_text();
    assert!(
        text.starts_with("ERR") && text.contains("upstream") && text.contains("unavailable"),
        "{text}"
    );
    assert_eq!(client.read_to_eof_text().await, "");
}

/// Bytes waiting unread in the receive queue of Redis's end of a
/// connection, from /proc/net/tcp, for every connection to `port`.
fn redis_receive_queues(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let established = cols.get(3) == Some(&"01");
            let local_is_redis = cols.get(1)?.ends_with(&port);
            let (_, rx) = cols.get(4)?.split_once(':')?;
            let rx = u64::from_str_radix(rx, 16).ok()?;
            (established && local_is_redis).then_some(rx)
        })
        .collect()
}

/// Waits until a connection to the frozen Redis holds `len` unread bytes:
/// the proxy has forwarded the command.
async fn wait_until_forwarded(redis: &Redis, len: usize) {
    let deadline = Deadline::new(format!("{len} bytes queued for the frozen Redis"));
    while !redis_receive_queues(redis.port()).contains(&(len as u64)) {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn redis_down_at_start_answers_the_first_command_with_an_error_and_closes() {
    let mut redis = Redis::not_started();
    let proxy = Proxy::start_with(&redis.address(), "").await;

    refused_for_upstream(&proxy).await;
    let metrics = proxy.metrics().await;
    let series = "asynq_guard_upstream_errors_total{kind=\"connect\"}";
    assert!(
        metric(&metrics, series).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    redis.start_again().await;
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn redis_restarted_on_the_same_port_serves_new_connections() {
    let mut redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut before = proxy.client().await;
    assert_eq!(before.cmd(&["SET", "k", "v"]).await, ok());

    redis.kill();
    // Nothing was pending: the old connection is simply closed.
    assert_eq!(before.read_to_eof_text().await, "");
    refused_for_upstream(&proxy).await;

    redis.start_again().await;
    let mut after = proxy.client().await;
    assert_eq!(after.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(
        after.cmd(&["GET", "k"]).await,
        Value::Null,
        "no persistence"
    );
}

#[tokio::test]
async fn redis_killed_during_blpop_gives_the_client_an_error_and_eof() {
    let mut redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut direct = redis.client().await;

    client.send(&["BLPOP", "jobs", "0"]).await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;
    redis.kill();

    let reply = client.read().await;
    let text = reply.error_text();
    assert!(text.contains("upstream") && text.contains("lost"), "{text}");
    assert_eq!(client.read_to_eof_text().await, "");

    let metrics = proxy.metrics().await;
    let series = "asynq_guard_upstream_errors_total{kind=\"lost\"}";
    assert!(
        metric(&metrics, series).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn redis_killed_with_a_pipeline_in_flight_answers_every_command_with_an_error() {
    let mut redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut direct = redis.client().await;

    let mut pipeline = command(&["BLPOP", "jobs", "0"]);
    pipeline.extend(command(&["SET", "a", "1"]));
    pipeline.extend(command(&["GET", "a"]));
    client.send_raw(&pipeline).await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;
    redis.kill();

    for _ in 0..3 {
        let reply = client.read().await;
        assert!(reply.error_text().contains("upstream"), "{reply:?}");
    }
    assert_eq!(client.read_to_eof_text().await, "");
}

#[tokio::test]
async fn client_that_disconnects_closes_its_upstream_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut direct = redis.client().await;
    let baseline = info_field(&mut direct, "clients", "connected_clients").await;

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = proxy.client().await;
        assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
        clients.push(c);
    }
    wait_for_info(&mut direct, "clients", "connected_clients", baseline + 3).await;

    drop(clients);
    wait_for_info(&mut direct, "clients", "connected_clients", baseline).await;
}

#[tokio::test]
async fn client_that_disconnects_during_blpop_closes_its_upstream_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut direct = redis.client().await;
    let baseline = info_field(&mut direct, "clients", "connected_clients").await;

    let mut client = proxy.client().await;
    client.send(&["BLPOP", "jobs", "0"]).await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;
    drop(client);

    wait_for_info(&mut direct, "clients", "connected_clients", baseline).await;
    assert_eq!(
        info_field(&mut direct, "clients", "blocked_clients").await,
        0
    );
    assert_eq!(direct.cmd(&["RPUSH", "jobs", "j"]).await, int(1));
    assert_eq!(direct.cmd(&["LLEN", "jobs"]).await, int(1));
}

/// Case 8: Redis freezes while an EVAL that increments a counter is in
/// flight; the client gives up. The proxy must not run it a second time.
#[tokio::test]
async fn eval_in_flight_when_redis_freezes_is_never_resent() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut direct = redis.client().await;
    let baseline = info_field(&mut direct, "clients", "connected_clients").await;

    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
    redis.pause();
    let eval = command(&["EVAL", INCR_SCRIPT, "1", "counter"]);
    client.send_raw(&eval).await;
    wait_until_forwarded(&redis, eval.len()).await;
    drop(client);

    redis.resume();
    wait_for_info(&mut direct, "clients", "connected_clients", baseline).await;
    assert_eq!(direct.cmd(&["GET", "counter"]).await, bulk("1"));

    let mut later = proxy.client().await;
    assert_eq!(later.cmd(&["GET", "counter"]).await, bulk("1"));
}

/// Case 8, patient client: it gets the real reply once Redis thaws, and
/// the script ran once.
#[tokio::test]
async fn evalsha_in_flight_when_redis_freezes_gets_its_one_real_reply() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let Value::Bulk(sha) = client.cmd(&["SCRIPT", "LOAD", INCR_SCRIPT]).await else {
        panic!("SCRIPT LOAD did not answer a bulk string")
    };
    let sha = String::from_utf8(sha).expect("hex sha");
    redis.pause();
    let evalsha = command(&["EVALSHA", &sha, "1", "counter"]);
    client.send_raw(&evalsha).await;
    wait_until_forwarded(&redis, evalsha.len()).await;
    redis.resume();

    assert_eq!(client.read().await, int(1));
    assert_eq!(client.cmd(&["GET", "counter"]).await, bulk("1"));
}

/// Case 8, Redis lost for good: the frozen Redis is killed and a new one
/// started on the same port. The client learns the outcome is unknown;
/// the proxy does not replay the script on the new Redis.
#[tokio::test]
async fn eval_lost_with_a_frozen_redis_gets_an_error_and_is_not_replayed() {
    let mut redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));

    redis.pause();
    let eval = command(&["EVAL", INCR_SCRIPT, "1", "counter"]);
    client.send_raw(&eval).await;
    wait_until_forwarded(&redis, eval.len()).await;
    redis.kill();

    let reply = client.read().await;
    let text = reply.error_text();
    assert!(
        text.contains("upstream") && text.contains("unknown"),
        "{text}"
    );
    assert_eq!(client.read_to_eof_text().await, "");

    redis.start_again().await;
    let mut later = proxy.client().await;
    assert_eq!(later.cmd(&["GET", "counter"]).await, Value::Null);
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["GET", "counter"]).await, Value::Null);
}

/// `upstream.database`: the proxy selects it on every upstream connection
/// and again after a client's RESET, and it is the one database clients
/// without a raw grant may SELECT.
#[tokio::test]
async fn the_configured_database_is_selected_and_the_only_one_clients_may_select() {
    let redis = Redis::start().await;
    let proxy = Proxy::builder(&redis.address())
        .upstream_keys("database = 3")
        .extra(ENQUEUE_Q)
        .start()
        .await;
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["SADD", "asynq:queues", "q"]).await, int(1));

    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["EXISTS", "asynq:queues"]).await, int(0));
    assert_eq!(direct.cmd(&["SELECT", "3"]).await, ok());
    assert_eq!(
        direct.cmd(&["SMEMBERS", "asynq:queues"]).await,
        Value::Array(vec![bulk("q")])
    );

    assert_eq!(client.cmd(&["SELECT", "3"]).await, ok());
    let refused = client.cmd(&["SELECT", "0"]).await;
    assert!(
        refused.error_text().starts_with("NOPERM")
            && refused.error_text().contains("serves database 3 only"),
        "{refused:?}"
    );

    // After RESET (which sends Redis back to database 0) and a new
    // login, the client is still in database 3: SADD finds q there.
    assert_eq!(client.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(client.cmd(&["AUTH", TEST_USER, TEST_SECRET]).await, ok());
    assert_eq!(client.cmd(&["SADD", "asynq:queues", "q"]).await, int(0));
    assert_eq!(direct.cmd(&["SELECT", "0"]).await, ok());
    assert_eq!(direct.cmd(&["DBSIZE"]).await, int(0));
}
