//! Pub/sub through the proxy, in RESP2 and RESP3: confirmations,
//! deliveries, PING in subscribed mode, and replies that keep their order
//! while messages arrive in between.

mod support;

use std::time::Duration;

use support::{Client, Proto, Proxy, Redis, Value, array, bulk, int, ok, push, simple};

fn confirm(word: &str, channel: &str, count: i64) -> Value {
    array(vec![bulk(word), bulk(channel), int(count)])
}

fn message(channel: &str, payload: &str) -> Value {
    array(vec![bulk("message"), bulk(channel), bulk(payload)])
}

fn resp2_pong(payload: &str) -> Value {
    array(vec![bulk("pong"), bulk(payload)])
}

/// Sends `HELLO 3` and checks that the answer is a RESP3 map.
async fn hello3(client: &mut Client) {
    client.set_proto(Proto::Resp3);
    let hello = client.cmd(&["HELLO", "3"]).await;
    assert_eq!(hello.map_get("proto"), Some(&int(3)), "{hello:?}");
}

#[tokio::test]
async fn resp2_subscribe_to_two_channels_gets_two_confirmations_and_messages() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    sub.send(&["SUBSCRIBE", "news", "alerts"]).await;
    assert_eq!(sub.read().await, confirm("subscribe", "news", 1));
    assert_eq!(sub.read().await, confirm("subscribe", "alerts", 2));

    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hello"]).await, int(1));
    assert_eq!(publisher.cmd(&["PUBLISH", "alerts", "fire"]).await, int(1));
    assert_eq!(publisher.cmd(&["PUBLISH", "nobody", "x"]).await, int(0));
    assert_eq!(sub.read().await, message("news", "hello"));
    assert_eq!(sub.read().await, message("alerts", "fire"));
}

#[tokio::test]
async fn resp2_ping_in_subscribed_mode_answers_pong_and_empty_string() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;

    sub.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(sub.read().await, confirm("subscribe", "ch", 1));
    assert_eq!(sub.cmd(&["PING"]).await, resp2_pong(""));
    assert_eq!(sub.cmd(&["PING", "hi"]).await, resp2_pong("hi"));
}

#[tokio::test]
async fn resp2_unsubscribe_without_arguments_leaves_every_channel() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    sub.send(&["SUBSCRIBE", "a", "b", "c"]).await;
    for _ in 0..3 {
        assert!(matches!(sub.read().await, Value::Array(_)));
    }

    sub.send(&["UNSUBSCRIBE"]).await;
    let mut left = Vec::new();
    for count in (0..3).rev() {
        let Value::Array(items) = sub.read().await else {
            panic!("expected an unsubscribe confirmation")
        };
        assert_eq!(items[0], bulk("unsubscribe"));
        assert_eq!(items[2], int(count));
        left.push(items[1].clone());
    }
    left.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(left, vec![bulk("a"), bulk("b"), bulk("c")]);

    // Out of subscribed mode: plain replies again.
    assert_eq!(sub.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(sub.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(publisher.cmd(&["PUBLISH", "a", "x"]).await, int(0));
}

#[tokio::test]
async fn resp2_unsubscribe_without_arguments_when_not_subscribed_gets_one_reply() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    client.send(&["UNSUBSCRIBE"]).await;
    assert_eq!(
        client.read().await,
        array(vec![bulk("unsubscribe"), Value::Null, int(0)])
    );
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn psubscribe_receives_pmessage_for_matching_channels() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    sub.send(&["PSUBSCRIBE", "asynq:*"]).await;
    assert_eq!(sub.read().await, confirm("psubscribe", "asynq:*", 1));
    assert_eq!(publisher.cmd(&["PUBLISH", "asynq:x", "one"]).await, int(1));
    assert_eq!(publisher.cmd(&["PUBLISH", "other", "two"]).await, int(0));
    assert_eq!(
        sub.read().await,
        array(vec![
            bulk("pmessage"),
            bulk("asynq:*"),
            bulk("asynq:x"),
            bulk("one")
        ])
    );
    sub.send(&["PUNSUBSCRIBE", "asynq:*"]).await;
    assert_eq!(sub.read().await, confirm("punsubscribe", "asynq:*", 0));
    assert_eq!(sub.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn resp3_subscribe_gets_pushes_and_ping_answers_pong() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    hello3(&mut sub).await;
    sub.send(&["SUBSCRIBE", "news", "alerts"]).await;
    assert_eq!(
        sub.read().await,
        push(vec![bulk("subscribe"), bulk("news"), int(1)])
    );
    assert_eq!(
        sub.read().await,
        push(vec![bulk("subscribe"), bulk("alerts"), int(2)])
    );

    assert_eq!(publisher.cmd(&["PUBLISH", "alerts", "fire"]).await, int(1));
    assert_eq!(
        sub.read().await,
        push(vec![bulk("message"), bulk("alerts"), bulk("fire")])
    );
    assert_eq!(sub.cmd(&["PING"]).await, simple("PONG"));
    // RESP3 allows any command while subscribed.
    assert_eq!(sub.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(sub.cmd(&["GET", "k"]).await, bulk("v"));

    sub.send(&["PSUBSCRIBE", "n*"]).await;
    assert_eq!(
        sub.read().await,
        push(vec![bulk("psubscribe"), bulk("n*"), int(3)])
    );
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hi"]).await, int(2));
    let mut got = vec![sub.read().await, sub.read().await];
    got.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        got,
        vec![
            push(vec![bulk("message"), bulk("news"), bulk("hi")]),
            push(vec![bulk("pmessage"), bulk("n*"), bulk("news"), bulk("hi")]),
        ]
    );
}

/// Case 4: a worker subscribes to `asynq:cancel` and then only PINGs.
#[tokio::test]
async fn idle_cancel_subscriber_with_periodic_pings_stays_open_and_gets_the_cancel() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut resp2 = proxy.client().await;
    let mut resp3 = proxy.client().await;
    let mut producer = proxy.client().await;

    resp2.send(&["SUBSCRIBE", "asynq:cancel"]).await;
    assert_eq!(resp2.read().await, confirm("subscribe", "asynq:cancel", 1));
    hello3(&mut resp3).await;
    resp3.send(&["SUBSCRIBE", "asynq:cancel"]).await;
    assert_eq!(
        resp3.read().await,
        push(vec![bulk("subscribe"), bulk("asynq:cancel"), int(1)])
    );

    // Both workers ping every 2 s for 22 s.
    for _ in 0..11 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(resp2.cmd(&["PING"]).await, resp2_pong(""));
        assert_eq!(resp3.cmd(&["PING"]).await, simple("PONG"));
    }

    let publish = producer.cmd(&["PUBLISH", "asynq:cancel", "task-42"]).await;
    assert_eq!(publish, int(2));
    assert_eq!(resp2.read().await, message("asynq:cancel", "task-42"));
    assert_eq!(
        resp3.read().await,
        push(vec![bulk("message"), bulk("asynq:cancel"), bulk("task-42")])
    );
    assert_eq!(resp2.cmd(&["PING"]).await, resp2_pong(""));
    assert_eq!(resp3.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn hello_3_then_reset_returns_to_resp2_and_unsubscribes() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut publisher = proxy.client().await;

    hello3(&mut client).await;
    assert_eq!(client.cmd(&["HSET", "h", "f", "v"]).await, int(1));
    assert_eq!(
        client.cmd(&["HGETALL", "h"]).await,
        Value::Map(vec![(bulk("f"), bulk("v"))])
    );
    client.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(
        client.read().await,
        push(vec![bulk("subscribe"), bulk("ch"), int(1)])
    );

    assert_eq!(client.cmd(&["RESET"]).await, simple("RESET"));
    client.set_proto(Proto::Resp2);
    // RESET logs the connection out, as in Redis.
    assert!(
        client
            .cmd(&["PING"])
            .await
            .error_text()
            .starts_with("NOAUTH")
    );
    assert_eq!(
        client
            .cmd(&["AUTH", support::TEST_USER, support::TEST_SECRET])
            .await,
        simple("OK")
    );
    client.send(&["HGETALL", "h"]).await;
    let (raw, value) = client.read_frame().await;
    assert!(raw.starts_with(b"*2\r\n"), "RESP2 array expected: {raw:?}");
    assert_eq!(value, array(vec![bulk("f"), bulk("v")]));
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(publisher.cmd(&["PUBLISH", "ch", "x"]).await, int(0));
}

#[tokio::test]
async fn resp2_pings_keep_their_order_while_messages_arrive() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    sub.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(sub.read().await, confirm("subscribe", "ch", 1));

    // PINGs and publishes alternate; the subscriber reads nothing until
    // all are sent, so replies and deliveries interleave in its stream.
    let n = 200;
    for i in 0..n {
        sub.send(&["PING", &format!("p{i}")]).await;
        let payload = format!("m{i}");
        assert_eq!(publisher.cmd(&["PUBLISH", "ch", &payload]).await, int(1));
    }

    let (mut pongs, mut messages) = (0, 0);
    while pongs + messages < 2 * n {
        let v = sub.read().await;
        if v == resp2_pong(&format!("p{pongs}")) {
            pongs += 1;
        } else {
            assert_eq!(v, message("ch", &format!("m{messages}")));
            messages += 1;
        }
    }
}

#[tokio::test]
async fn resp3_replies_keep_their_order_while_pushes_arrive() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    hello3(&mut sub).await;
    sub.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(
        sub.read().await,
        push(vec![bulk("subscribe"), bulk("ch"), int(1)])
    );

    let n = 200;
    for i in 0..n {
        sub.send(&["ECHO", &format!("e{i}")]).await;
        let payload = format!("m{i}");
        assert_eq!(publisher.cmd(&["PUBLISH", "ch", &payload]).await, int(1));
    }

    let (mut echoes, mut pushes) = (0, 0);
    while echoes + pushes < 2 * n {
        match sub.read().await {
            Value::Push(items) => {
                let want = vec![bulk("message"), bulk("ch"), bulk(format!("m{pushes}"))];
                assert_eq!(items, want);
                pushes += 1;
            }
            other => {
                assert_eq!(other, bulk(format!("e{echoes}")));
                echoes += 1;
            }
        }
    }
}

/// Redis counts channels and patterns together: after `UNSUBSCRIBE` with
/// no arguments the count stays above zero while a pattern remains.
#[tokio::test]
async fn unsubscribe_all_channels_while_a_pattern_remains_keeps_replies_in_step() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;

    sub.send(&["PSUBSCRIBE", "p*"]).await;
    assert_eq!(sub.read().await, confirm("psubscribe", "p*", 1));
    sub.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(sub.read().await, confirm("subscribe", "ch", 2));
    sub.send(&["UNSUBSCRIBE"]).await;
    assert_eq!(sub.read().await, confirm("unsubscribe", "ch", 1));

    assert_eq!(sub.cmd(&["PING"]).await, resp2_pong(""));
    // A reply the proxy gives itself must not wait for one from Redis.
    let monitor = sub.cmd(&["MONITOR"]).await;
    assert!(monitor.is_error(), "{monitor:?}");
    sub.send(&["QUIT"]).await;
    assert_eq!(sub.read_to_eof_text().await, "+OK\r\n");
}

/// Redis counts shard channels apart from channels and patterns; the
/// connection stays subscribed while either count is above zero.
#[tokio::test]
async fn shard_subscription_left_after_unsubscribing_channels_still_gets_messages() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;
    let mut publisher = proxy.client().await;

    sub.send(&["SSUBSCRIBE", "shard"]).await;
    assert_eq!(sub.read().await, confirm("ssubscribe", "shard", 1));
    sub.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(sub.read().await, confirm("subscribe", "ch", 1));
    sub.send(&["UNSUBSCRIBE", "ch"]).await;
    assert_eq!(sub.read().await, confirm("unsubscribe", "ch", 0));

    assert_eq!(publisher.cmd(&["SPUBLISH", "shard", "hi"]).await, int(1));
    assert_eq!(
        sub.read().await,
        array(vec![bulk("smessage"), bulk("shard"), bulk("hi")])
    );
    assert_eq!(sub.cmd(&["PING"]).await, resp2_pong(""));
}

#[tokio::test]
async fn resp3_client_tracking_invalidations_pass_through_between_replies() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut writer = proxy.client().await;

    hello3(&mut client).await;
    assert_eq!(client.cmd(&["CLIENT", "TRACKING", "ON"]).await, ok());
    assert_eq!(client.cmd(&["SET", "tracked", "1"]).await, ok());
    assert_eq!(client.cmd(&["GET", "tracked"]).await, bulk("1"));

    assert_eq!(writer.cmd(&["SET", "tracked", "2"]).await, ok());
    assert_eq!(
        client.read().await,
        push(vec![bulk("invalidate"), array(vec![bulk("tracked")])])
    );
    assert_eq!(client.cmd(&["GET", "tracked"]).await, bulk("2"));
}

/// The same miscount from the other side: PUNSUBSCRIBE without
/// arguments on a connection with channels but no patterns.
#[tokio::test]
async fn punsubscribe_all_while_channels_remain_keeps_replies_in_step() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut sub = proxy.client().await;

    sub.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(sub.read().await, confirm("subscribe", "ch", 1));
    sub.send(&["PUNSUBSCRIBE"]).await;
    assert_eq!(
        sub.read().await,
        array(vec![bulk("punsubscribe"), Value::Null, int(1)])
    );
    assert_eq!(sub.cmd(&["PING"]).await, resp2_pong(""));
    sub.send(&["QUIT"]).await;
    assert_eq!(sub.read_to_eof_text().await, "+OK\r\n");
}

/// An ordinary reply may look like a confirmation (an array of a
/// pub/sub word, a name and a number); it must not make the proxy think
/// the connection subscribed.
#[tokio::test]
async fn ordinary_reply_shaped_like_a_confirmation_does_not_subscribe_the_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let lookalike = client
        .cmd(&["EVAL", "return {'subscribe', 'x', 1}", "0"])
        .await;
    assert_eq!(lookalike, confirm("subscribe", "x", 1));
    assert_eq!(
        client.cmd(&["RPUSH", "l", "message", "a", "b"]).await,
        int(3)
    );
    assert_eq!(
        client.cmd(&["LRANGE", "l", "0", "-1"]).await,
        array(vec![bulk("message"), bulk("a"), bulk("b")])
    );
    client.send(&["QUIT"]).await;
    assert_eq!(client.read_to_eof_text().await, "+OK\r\n");
}
