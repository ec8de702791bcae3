//! MULTI/EXEC through the proxy behaves as it does against Redis,
//! including the commands the proxy itself refuses inside a transaction.

mod support;

use support::{Proxy, Redis, Value, bulk, command, int, ok, simple};

#[tokio::test]
async fn multi_exec_queues_commands_and_returns_their_replies() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert_eq!(client.cmd(&["SET", "tx", "1"]).await, simple("QUEUED"));
    assert_eq!(client.cmd(&["INCR", "tx"]).await, simple("QUEUED"));
    assert_eq!(client.cmd(&["GET", "tx"]).await, simple("QUEUED"));
    assert_eq!(
        client.cmd(&["EXEC"]).await,
        Value::Array(vec![ok(), int(2), bulk("2")])
    );
    assert_eq!(client.cmd(&["GET", "tx"]).await, bulk("2"));
}

#[tokio::test]
async fn pipelined_transaction_gets_every_reply_in_order() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = command(&["MULTI"]);
    pipeline.extend(command(&["RPUSH", "l", "a"]));
    pipeline.extend(command(&["RPUSH", "l", "b"]));
    pipeline.extend(command(&["EXEC"]));
    pipeline.extend(command(&["LLEN", "l"]));
    client.send_raw(&pipeline).await;

    assert_eq!(client.read().await, ok());
    assert_eq!(client.read().await, simple("QUEUED"));
    assert_eq!(client.read().await, simple("QUEUED"));
    assert_eq!(client.read().await, Value::Array(vec![int(1), int(2)]));
    assert_eq!(client.read().await, int(2));
}

#[tokio::test]
async fn discard_drops_the_queued_commands() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert_eq!(client.cmd(&["SET", "gone", "x"]).await, simple("QUEUED"));
    assert_eq!(client.cmd(&["DISCARD"]).await, ok());
    assert_eq!(client.cmd(&["GET", "gone"]).await, Value::Null);
    let exec = client.cmd(&["EXEC"]).await;
    assert!(exec.error_text().contains("EXEC without MULTI"), "{exec:?}");
}

#[tokio::test]
async fn watched_key_written_by_another_client_makes_exec_return_null() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut other = proxy.client().await;

    assert_eq!(client.cmd(&["SET", "watched", "0"]).await, ok());
    assert_eq!(client.cmd(&["WATCH", "watched"]).await, ok());
    assert_eq!(other.cmd(&["SET", "watched", "other"]).await, ok());
    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        client.cmd(&["SET", "watched", "mine"]).await,
        simple("QUEUED")
    );

    client.send(&["EXEC"]).await;
    let (raw, value) = client.read_frame().await;
    assert_eq!(raw, b"*-1\r\n", "RESP2 null array");
    assert_eq!(value, Value::Null);
    assert_eq!(client.cmd(&["GET", "watched"]).await, bulk("other"));
}

#[tokio::test]
async fn queued_command_with_wrong_arity_makes_exec_abort() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert_eq!(client.cmd(&["SET", "a", "1"]).await, simple("QUEUED"));
    let arity = client.cmd(&["SET", "b"]).await;
    assert!(
        arity.error_text().contains("wrong number of arguments"),
        "{arity:?}"
    );
    let exec = client.cmd(&["EXEC"]).await;
    assert!(exec.error_text().starts_with("EXECABORT"), "{exec:?}");
    assert_eq!(client.cmd(&["GET", "a"]).await, Value::Null);
}

#[tokio::test]
async fn command_refused_by_the_proxy_inside_multi_aborts_the_transaction() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert_eq!(client.cmd(&["SET", "before", "1"]).await, simple("QUEUED"));
    let refused = client.cmd(&["MONITOR"]).await;
    assert!(refused.error_text().starts_with("ERR"), "{refused:?}");
    assert_eq!(client.cmd(&["INCR", "after"]).await, simple("QUEUED"));
    let exec = client.cmd(&["EXEC"]).await;
    assert!(exec.error_text().starts_with("EXECABORT"), "{exec:?}");

    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["EXISTS", "before", "after"]).await, int(0));
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn refused_command_in_a_pipelined_transaction_aborts_it_in_order() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = command(&["MULTI"]);
    pipeline.extend(command(&["SET", "p", "1"]));
    pipeline.extend(command(&["CLIENT", "REPLY", "OFF"]));
    pipeline.extend(command(&["EXEC"]));
    pipeline.extend(command(&["EXISTS", "p"]));
    client.send_raw(&pipeline).await;

    assert_eq!(client.read().await, ok());
    assert_eq!(client.read().await, simple("QUEUED"));
    assert!(client.read().await.is_error());
    let exec = client.read().await;
    assert!(exec.error_text().starts_with("EXECABORT"), "{exec:?}");
    assert_eq!(client.read().await, int(0));
}

#[tokio::test]
async fn transaction_after_an_aborted_one_runs_normally() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert!(client.cmd(&["MONITOR"]).await.is_error());
    assert!(client.cmd(&["EXEC"]).await.is_error());

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    assert_eq!(client.cmd(&["SET", "second", "ok"]).await, simple("QUEUED"));
    assert_eq!(client.cmd(&["EXEC"]).await, Value::Array(vec![ok()]));
    assert_eq!(client.cmd(&["GET", "second"]).await, bulk("ok"));
}

/// `HELLO` inside MULTI is refused by the proxy (Redis would queue it and
/// switch protocol in the middle of the EXEC reply); after DISCARD the
/// connection still speaks RESP2, and pub/sub messages come as RESP2
/// arrays.
#[tokio::test]
async fn hello_3_queued_in_a_discarded_transaction_leaves_the_connection_in_resp2() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut publisher = proxy.client().await;

    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    let reply = client.cmd(&["HELLO", "3"]).await;
    let refused = reply.error_text();
    assert!(refused.contains("not available inside MULTI"), "{refused}");
    assert_eq!(client.cmd(&["DISCARD"]).await, ok());

    client.send(&["SUBSCRIBE", "ch"]).await;
    assert_eq!(
        client.read().await,
        Value::Array(vec![bulk("subscribe"), bulk("ch"), int(1)])
    );
    assert_eq!(publisher.cmd(&["PUBLISH", "ch", "hi"]).await, int(1));
    assert_eq!(
        client.read().await,
        Value::Array(vec![bulk("message"), bulk("ch"), bulk("hi")])
    );
    assert_eq!(
        client.cmd(&["PING"]).await,
        Value::Array(vec![bulk("pong"), bulk("")])
    );
}
