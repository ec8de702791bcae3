//! What a connection costs and how it ends: no Redis connection before a
//! client has authenticated, a deadline for logging in, a bound on
//! commands awaiting replies, and client departures that are not
//! mistaken for Redis failures.

mod support;

use support::{
    Proxy, Redis, TEST_SECRET, TEST_USER, command, info_field, metric, ok, simple, wait_for_info,
};

#[tokio::test]
async fn connections_that_never_authenticate_open_no_redis_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut direct = redis.client().await;
    let baseline = info_field(&mut direct, "clients", "connected_clients").await;

    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut c = proxy.anonymous_client().await;
        assert!(c.cmd(&["PING"]).await.is_error());
        idle.push(c);
    }
    // An authenticated client does get its Redis connection.
    let mut user = proxy.client().await;
    assert_eq!(user.cmd(&["PING"]).await, simple("PONG"));
    wait_for_info(&mut direct, "clients", "connected_clients", baseline + 1).await;
    assert_eq!(
        info_field(&mut direct, "clients", "connected_clients").await,
        baseline + 1
    );
}

#[tokio::test]
async fn hello_auth_switches_protocol_on_the_redis_connection_it_opens() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.anonymous_client().await;
    // Pipelined: the login, then commands read ahead with it.
    let mut pipeline = command(&["HELLO", "3", "AUTH", TEST_USER, TEST_SECRET]);
    pipeline.extend(command(&["HSET", "h", "f", "v"]));
    pipeline.extend(command(&["HGETALL", "h"]));
    client.send_raw(&pipeline).await;
    client.set_proto(support::Proto::Resp3);
    let hello = client.read().await;
    assert!(matches!(hello, support::Value::Map(_)), "{hello:?}");
    assert_eq!(client.read().await, support::int(1));
    let (raw, _) = client.read_frame().await;
    assert!(raw.starts_with(b"%1\r\n"), "RESP3 map expected: {raw:?}");
}

#[tokio::test]
async fn a_client_that_does_not_authenticate_in_time_is_closed() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), "[auth]\ntimeout_secs = 1\n").await;
    let mut client = proxy.anonymous_client().await;
    let text = client.read_to_eof_text().await;
    assert!(text.contains("authentication timed out"), "{text:?}");
    // An authenticated client is not subject to it.
    let mut user = proxy.client().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(user.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn a_pipeline_written_whole_before_reading_gets_every_reply() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let value = "x".repeat(200);
    let mut setup = proxy.client().await;
    assert_eq!(setup.cmd(&["SET", "big", &value]).await, ok());

    // 300,000 GETs (about 6 MB of requests, 60 MB of replies) written in
    // one go while nothing is read: Redis buffers the replies, and the
    // proxy must keep reading requests meanwhile instead of waiting for
    // the client to read (which would deadlock both).
    let n = 300_000;
    let one = command(&["GET", "big"]);
    let mut pipeline = command(&["AUTH", TEST_USER, TEST_SECRET]);
    for _ in 0..n {
        pipeline.extend_from_slice(&one);
    }
    let stream = tokio::net::TcpStream::connect(proxy.address())
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&pipeline).await.expect("write pipeline");
        write
    });
    let _write = support::within("writing the whole pipeline", writer)
        .await
        .expect("writer task");

    let reply = format!("${}\r\n{value}\r\n", value.len());
    let want = b"+OK\r\n".len() + n * reply.len();
    let mut got = Vec::with_capacity(want);
    let mut buf = vec![0u8; 1 << 16];
    while got.len() < want {
        let read_some = support::within("reading replies", read.read(&mut buf)).await;
        let k = read_some.expect("read replies");
        assert!(k > 0, "closed after {} of {want} bytes", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got.len(), want);
    assert!(got.starts_with(b"+OK\r\n"));
    assert!(got.ends_with(reply.as_bytes()));
}

#[tokio::test]
async fn more_commands_awaiting_replies_than_the_limit_closes_with_its_name() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), "[limits]\nmax_pending_commands = 100\n").await;
    let mut client = proxy.client().await;
    // BLPOP holds every later reply back, so they all stay pending.
    let mut pipeline = command(&["BLPOP", "never", "0"]);
    for _ in 0..200 {
        pipeline.extend(command(&["PING"]));
    }
    client.send_raw(&pipeline).await;
    let mut pusher = proxy.client().await;
    assert_eq!(pusher.cmd(&["RPUSH", "never", "x"]).await, support::int(1));
    let text = client.read_to_eof_text().await;
    assert!(text.contains("max_pending_commands exceeded"), "{text}");
    let metrics = proxy.metrics().await;
    let series = "asynq_guard_client_errors_total{reason=\"max_pending_commands\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn clients_leaving_with_replies_owed_are_not_counted_as_redis_failures() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    for _ in 0..20 {
        let mut c = proxy.client().await;
        assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
        c.send(&["BLPOP", "never", "0"]).await;
        drop(c);
    }
    for _ in 0..20 {
        let mut c = proxy.client().await;
        assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    }
    // Give the sessions time to wind down, then look.
    let mut direct = redis.client().await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 0).await;
    let metrics = proxy.metrics().await;
    let lost = "asynq_guard_upstream_errors_total{kind=\"lost\"}";
    assert_eq!(metric(&metrics, lost), Some(0.0), "{metrics}");
}

#[tokio::test]
async fn a_client_leaving_during_blpop_releases_it_and_nothing_is_popped_for_it() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut direct = redis.client().await;
    let mut client = proxy.client().await;
    client.send(&["BLPOP", "jobs", "0"]).await;
    wait_for_info(&mut direct, "clients", "blocked_clients", 1).await;
    drop(client);
    // Redis drops a departed client's blocking pop; so must the proxy.
    wait_for_info(&mut direct, "clients", "blocked_clients", 0).await;
    assert_eq!(
        direct.cmd(&["LPUSH", "jobs", "job-1"]).await,
        support::int(1)
    );
    assert_eq!(direct.cmd(&["LLEN", "jobs"]).await, support::int(1));
}
