//! Pipelines stay pipelines: every command gets its reply, in order, and
//! the proxy forwards commands without waiting for earlier replies.

mod support;

use support::{Client, Deadline, Proxy, Redis, Value, bulk, command, int, ok};

/// The `CLIENT LIST` line of the connection that runs `cmd`, if any.
async fn client_list_line(direct: &mut Client, cmd: &str) -> Option<String> {
    let Value::Bulk(list) = direct.cmd(&["CLIENT", "LIST"]).await else {
        panic!("CLIENT LIST is not a bulk string")
    };
    let needle = format!(" cmd={cmd} ");
    String::from_utf8_lossy(&list)
        .lines()
        .find(|l| l.contains(&needle))
        .map(str::to_string)
}

fn field(line: &str, name: &str) -> Option<u64> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn pipeline_of_1000_commands_gets_1000_replies_in_order() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = Vec::new();
    for i in 0..500 {
        pipeline.extend(command(&["SET", &format!("k:{i}"), &format!("v:{i}")]));
        pipeline.extend(command(&["GET", &format!("k:{i}")]));
    }
    client.send_raw(&pipeline).await;

    for i in 0..500 {
        assert_eq!(client.read().await, ok(), "reply to SET k:{i}");
        assert_eq!(client.read().await, bulk(format!("v:{i}")), "GET k:{i}");
    }
    let mut direct = redis.client().await;
    for i in [0, 1, 250, 499] {
        let key = format!("k:{i}");
        assert_eq!(direct.cmd(&["GET", &key]).await, bulk(format!("v:{i}")));
    }
}

#[tokio::test]
async fn pipelined_commands_reach_redis_before_the_first_is_answered() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let mut direct = redis.client().await;

    // BLPOP blocks in Redis until something is pushed; Redis keeps the
    // commands behind it unread in the connection's query buffer. They
    // can only get there if the proxy forwarded them without waiting
    // for the BLPOP reply.
    let incr = command(&["INCR", "counter"]);
    let mut pipeline = command(&["BLPOP", "gate", "0"]);
    for _ in 0..1000 {
        pipeline.extend_from_slice(&incr);
    }
    client.send_raw(&pipeline).await;

    let queued = (incr.len() * 1000) as u64;
    let deadline = Deadline::new(format!("{queued} bytes queued behind BLPOP in Redis"));
    loop {
        let line = client_list_line(&mut direct, "blpop").await;
        if line.as_deref().and_then(|l| field(l, "qbuf")) == Some(queued) {
            break;
        }
        deadline.tick().await;
    }
    assert_eq!(direct.cmd(&["GET", "counter"]).await, Value::Null);

    let mut pusher = proxy.client().await;
    assert_eq!(pusher.cmd(&["RPUSH", "gate", "open"]).await, int(1));
    assert_eq!(
        client.read().await,
        Value::Array(vec![bulk("gate"), bulk("open")])
    );
    for n in 1..=1000 {
        assert_eq!(client.read().await, int(n));
    }
}

#[tokio::test]
async fn pipeline_split_at_every_byte_boundary_gets_the_same_replies() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = command(&["SET", "split", "hello world"]);
    pipeline.extend(command(&["GET", "split"]));
    pipeline.extend(command(&["ECHO", "a\r\nb"]));
    pipeline.extend(command(&["DEL", "split"]));
    let expected = [ok(), bulk("hello world"), bulk("a\r\nb"), int(1)];

    for cut in 1..pipeline.len() {
        client.send_raw(&pipeline[..cut]).await;
        // Give the first part a chance to arrive on its own.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        client.send_raw(&pipeline[cut..]).await;
        for want in &expected {
            assert_eq!(&client.read().await, want, "pipeline cut at byte {cut}");
        }
    }
}

#[tokio::test]
async fn pipeline_sent_one_byte_at_a_time_gets_its_replies() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = command(&["RPUSH", "bytes", "x", "y"]);
    pipeline.extend(command(&["LRANGE", "bytes", "0", "-1"]));
    for b in &pipeline {
        client.send_raw(std::slice::from_ref(b)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(client.read().await, int(2));
    assert_eq!(
        client.read().await,
        Value::Array(vec![bulk("x"), bulk("y")])
    );
}

#[tokio::test]
async fn value_of_5_mib_round_trips_unchanged() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let value = pattern(5 * 1024 * 1024);
    client.send_bytes(&[b"SET", b"big", &value]).await;
    assert_eq!(client.read().await, ok());
    assert_eq!(
        client.cmd(&["GET", "big"]).await,
        Value::Bulk(value.clone())
    );
    assert_eq!(
        client.cmd(&["STRLEN", "big"]).await,
        int(value.len() as i64)
    );
}

#[tokio::test]
async fn value_of_64_kib_round_trips_unchanged() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let value = pattern(64 * 1024);
    client.send_bytes(&[b"SET", b"mid", &value]).await;
    assert_eq!(client.read().await, ok());
    assert_eq!(client.cmd(&["GET", "mid"]).await, Value::Bulk(value));
}

#[tokio::test]
async fn large_commands_inside_a_pipeline_keep_their_place() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    // Values from just under to just over 64 KiB, and one of 5 MiB, each
    // between small commands in the same write.
    let mut sizes: Vec<usize> = (64 * 1024 - 48..=64 * 1024 + 8).step_by(4).collect();
    sizes.push(5 * 1024 * 1024);
    for size in sizes {
        let value = pattern(size);
        let mut pipeline = command(&["SET", "small", "before"]);
        pipeline.extend(encode_set("large", &value));
        pipeline.extend(command(&["GET", "small"]));
        pipeline.extend(command(&["GET", "large"]));
        pipeline.extend(command(&["SET", "small", "after"]));
        client.send_raw(&pipeline).await;

        assert_eq!(client.read().await, ok(), "size {size}");
        assert_eq!(client.read().await, ok(), "size {size}");
        assert_eq!(client.read().await, bulk("before"), "size {size}");
        assert_eq!(client.read().await, Value::Bulk(value), "size {size}");
        assert_eq!(client.read().await, ok(), "size {size}");
    }
}

fn encode_set(key: &str, value: &[u8]) -> Vec<u8> {
    support::encode(&[b"SET", key.as_bytes(), value])
}

#[tokio::test]
async fn go_redis_handshake_setinfo_pipeline_gets_two_replies_and_stays_open() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = command(&["CLIENT", "SETINFO", "LIB-NAME", "go-redis(,go1.24)"]);
    pipeline.extend(command(&["CLIENT", "SETINFO", "LIB-VER", "9.14.1"]));
    client.send_raw(&pipeline).await;

    // Redis 7.2 and later answer +OK; older versions an -ERR.
    for which in ["LIB-NAME", "LIB-VER"] {
        let reply = client.read().await;
        let fine = reply == ok() || matches!(&reply, Value::Error(e) if e.starts_with("ERR"));
        assert!(fine, "CLIENT SETINFO {which} answered {reply:?}");
    }
    assert_eq!(client.cmd(&["PING"]).await, support::simple("PONG"));
}

/// As in Redis: QUIT answers +OK and closes; nothing behind it runs.
#[tokio::test]
async fn commands_after_quit_in_the_same_write_are_not_run() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let mut pipeline = command(&["SET", "a", "1"]);
    pipeline.extend(command(&["QUIT"]));
    pipeline.extend(command(&["SET", "b", "2"]));
    client.send_raw(&pipeline).await;
    assert_eq!(client.read().await, ok());
    assert_eq!(client.read().await, ok());
    assert_eq!(client.read_to_eof_text().await, "");

    let mut direct = redis.client().await;
    assert_eq!(
        direct.cmd(&["MGET", "a", "b"]).await,
        Value::Array(vec![bulk("1"), Value::Null])
    );
}
