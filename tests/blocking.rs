//! Blocking commands wait in Redis, not in the proxy: they are answered
//! when data arrives, and they hold up nobody else.

mod support;

use support::{Proxy, Redis, Value, bulk, int, ok, simple, wait_for_info};

#[tokio::test]
async fn blpop_on_an_empty_list_is_answered_when_another_client_pushes() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut waiter = proxy.client().await;
    let mut pusher = proxy.client().await;
    let mut direct = redis.client().await;

    waiter.send(&["BLPOP", "jobs", "0"]).await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;

    assert_eq!(pusher.cmd(&["RPUSH", "jobs", "j1"]).await, int(1));
    assert_eq!(
        waiter.read().await,
        Value::Array(vec![bulk("jobs"), bulk("j1")])
    );
    assert_eq!(pusher.cmd(&["LLEN", "jobs"]).await, int(0));
    assert_eq!(waiter.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn blocked_client_does_not_block_other_clients() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut waiter = proxy.client().await;
    let mut direct = redis.client().await;

    waiter.send(&["BLPOP", "jobs", "0"]).await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;

    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(proxy.client().await);
    }
    for round in 0..50 {
        for (i, other) in others.iter_mut().enumerate() {
            let key = format!("k{i}");
            let value = format!("{round}");
            assert_eq!(other.cmd(&["SET", &key, &value]).await, ok());
            assert_eq!(other.cmd(&["GET", &key]).await, bulk(&value));
        }
    }

    assert_eq!(others[0].cmd(&["LPUSH", "jobs", "late"]).await, int(1));
    assert_eq!(
        waiter.read().await,
        Value::Array(vec![bulk("jobs"), bulk("late")])
    );
}

#[tokio::test]
async fn blpop_that_times_out_returns_a_null_array() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    client.send(&["BLPOP", "empty", "0.05"]).await;
    let (raw, value) = client.read_frame().await;
    assert_eq!(raw, b"*-1\r\n");
    assert_eq!(value, Value::Null);
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn blmove_is_answered_when_the_source_gets_an_element() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut waiter = proxy.client().await;
    let mut pusher = proxy.client().await;
    let mut direct = redis.client().await;

    waiter
        .send(&["BLMOVE", "pending", "active", "RIGHT", "LEFT", "0"])
        .await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;
    assert_eq!(pusher.cmd(&["LPUSH", "pending", "t1"]).await, int(1));
    assert_eq!(waiter.read().await, bulk("t1"));
    assert_eq!(
        direct.cmd(&["LRANGE", "active", "0", "-1"]).await,
        Value::Array(vec![bulk("t1")])
    );
}

#[tokio::test]
async fn xread_block_is_answered_when_an_entry_is_added() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut reader = proxy.client().await;
    let mut writer = proxy.client().await;
    let mut direct = redis.client().await;

    reader
        .send(&["XREAD", "BLOCK", "0", "STREAMS", "events", "$"])
        .await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;
    let id = writer.cmd(&["XADD", "events", "*", "f", "v"]).await;
    let expected = Value::Array(vec![Value::Array(vec![
        bulk("events"),
        Value::Array(vec![Value::Array(vec![
            id,
            Value::Array(vec![bulk("f"), bulk("v")]),
        ])]),
    ])]);
    assert_eq!(reader.read().await, expected);
}
