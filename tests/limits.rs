//! Input the proxy will not carry: commands over the configured limits,
//! inline commands, malformed RESP and garbage. Each gets one `-ERR`,
//! then the connection is closed, and the proxy goes on serving others.

mod support;

use support::{Client, Proxy, Redis, Rng, bulk, command, int, metric, ok, simple};

const LIMITS: &str = "[limits]\nmax_bulk_bytes = 1024\nmax_args = 16\nmax_buffer_bytes = 4096\n";

async fn limited(redis: &Redis) -> Proxy {
    Proxy::start_with(&redis.address(), LIMITS).await
}

/// Sends `bytes`, expects one error reply containing `words`, then EOF.
async fn refused(client: &mut Client, bytes: &[u8], words: &str) {
    client.send_raw(bytes).await;
    let reply = client.read().await;
    assert!(
        reply.error_text().contains(words),
        "{:?} answered {reply:?}, expected an error naming {words}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(client.read_to_eof_text().await, "", "bytes after the error");
}

/// The proxy still answers a new client.
async fn still_serving(proxy: &Proxy) {
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
}

fn bulk_header(len: usize) -> Vec<u8> {
    format!("${len}\r\n").into_bytes()
}

#[tokio::test]
async fn oversized_bulk_gets_max_bulk_bytes_error_and_close() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;

    // The header alone is enough: the body is never sent.
    let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n".to_vec();
    input.extend(bulk_header(1025));
    let mut client = proxy.client().await;
    refused(&mut client, &input, "max_bulk_bytes").await;
    still_serving(&proxy).await;

    let metrics = proxy.metrics().await;
    let series = "asynq_guard_client_errors_total{reason=\"max_bulk_bytes\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn bulk_of_exactly_max_bulk_bytes_is_accepted() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;
    let mut client = proxy.client().await;

    let value = vec![b'v'; 1024];
    client.send_bytes(&[b"SET", b"k", &value]).await;
    assert_eq!(client.read().await, ok());
    assert_eq!(client.cmd(&["STRLEN", "k"]).await, int(1024));
}

#[tokio::test]
async fn too_many_arguments_get_max_args_error_and_close() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;

    let mut client = proxy.client().await;
    refused(&mut client, b"*17\r\n", "max_args").await;
    still_serving(&proxy).await;

    let mut client = proxy.client().await;
    let mut args = vec!["RPUSH", "l"];
    args.extend(["x"; 14]);
    assert_eq!(client.cmd(&args).await, int(14), "16 arguments are allowed");

    let metrics = proxy.metrics().await;
    let series = "asynq_guard_client_errors_total{reason=\"max_args\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn partial_command_larger_than_max_buffer_bytes_gets_error_and_close() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;

    // Ten arguments of 1000 bytes each are each within max_bulk_bytes,
    // but the unfinished command outgrows max_buffer_bytes at the fifth.
    let mut input = b"*10\r\n".to_vec();
    for _ in 0..4 {
        input.extend(bulk_header(1000));
        input.extend(vec![b'a'; 1000]);
        input.extend(b"\r\n");
    }
    input.extend(bulk_header(1000));
    let mut client = proxy.client().await;
    refused(&mut client, &input, "max_buffer_bytes").await;
    still_serving(&proxy).await;

    let metrics = proxy.metrics().await;
    let series = "asynq_guard_client_errors_total{reason=\"max_buffer_bytes\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn many_small_commands_in_one_write_are_not_held_to_max_buffer_bytes() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;
    let mut client = proxy.client().await;

    let value = "v".repeat(500);
    let mut pipeline = Vec::new();
    for i in 0..100 {
        pipeline.extend(command(&["SET", &format!("k{i}"), &value]));
    }
    assert!(pipeline.len() > 4096);
    client.send_raw(&pipeline).await;
    for _ in 0..100 {
        assert_eq!(client.read().await, ok());
    }
    assert_eq!(client.cmd(&["GET", "k99"]).await, bulk(&value));
}

#[tokio::test]
async fn inline_command_gets_an_error_and_close() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;

    let mut client = proxy.client().await;
    refused(&mut client, b"PING\r\n", "inline").await;
    still_serving(&proxy).await;

    let metrics = proxy.metrics().await;
    let series = "asynq_guard_client_errors_total{reason=\"inline_command\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
}

/// Malformed frames get the same error text Redis gives for the same
/// bytes, and the connection is closed as Redis closes it.
#[tokio::test]
async fn malformed_resp_gets_the_error_redis_gives_and_close() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;

    let inputs: &[&[u8]] = &[
        b"*1\r\n:5\r\n",
        b"*1\r\n$-5\r\n",
        b"*abc\r\n",
        b"*+1\r\n$4\r\nPING\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"* 1\r\n$4\r\nPING\r\n",
        b"*1\n$4\r\nPING\r\n",
        b"*2147483648\r\n",
        b"*2\r\n$4\r\nECHO\r\n*1\r\n",
        b"*1\r\n$4\r\nPING\r\n*1\r\n$-1\r\n",
    ];
    for input in inputs {
        let mut direct = redis.client().await;
        direct.send_raw(input).await;
        let from_redis = direct.read_to_eof_text().await;

        let mut client = proxy.client().await;
        client.send_raw(input).await;
        let from_proxy = client.read_to_eof_text().await;
        let input = String::from_utf8_lossy(input);
        assert_eq!(from_proxy, from_redis, "input {input:?}");
        assert!(
            from_proxy.contains("-ERR Protocol error"),
            "input {input:?}"
        );
    }
    still_serving(&proxy).await;
}

#[tokio::test]
async fn empty_multibulk_is_ignored_like_redis() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let input = b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n*0\r\n*1\r\n$4\r\nPING\r\n";

    for (address, mut client) in [
        (redis.address(), redis.client().await),
        (proxy.address(), proxy.client().await),
    ] {
        client.send_raw(input).await;
        assert_eq!(client.read().await, simple("PONG"), "{address}");
        assert_eq!(client.read().await, simple("PONG"), "{address}");
        assert_eq!(
            client.cmd(&["ECHO", "still open"]).await,
            bulk("still open")
        );
    }
}

#[tokio::test]
async fn one_mib_of_random_garbage_does_not_crash_the_proxy() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut rng = Rng::new(0x5eed_1234);

    let mut garbage = rng.bytes(1024 * 1024);
    garbage[0] = b'?';
    let mut client = proxy.client().await;
    // The proxy stops reading at the first bad byte and closes, so the
    // write may fail and a reset may even discard the error reply.
    let _ = client.try_send_raw(&garbage).await;
    let answer = client.read_to_eof().await;
    assert!(
        answer.is_empty() || answer.starts_with(b"-ERR Protocol error"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    still_serving(&proxy).await;
}

/// Short inputs built from RESP's own punctuation, so that they get past
/// the first byte and into the frame scanner. Whatever each one does, the
/// proxy must end the connection when the client stops sending, and keep
/// serving.
#[tokio::test]
async fn resp_shaped_garbage_never_crashes_the_proxy() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut rng = Rng::new(42);
    let alphabet = b"*$\r\n0123456789-+:ab ";

    for _ in 0..200 {
        let len = 1 + rng.below(64);
        let mut input = vec![b'*'];
        input.extend((0..len).map(|_| alphabet[rng.below(alphabet.len())]));

        let mut client = proxy.client().await;
        client.send_raw(&input).await;
        client.shutdown_write().await;
        client.read_to_eof().await;
    }
    still_serving(&proxy).await;
    assert!(
        proxy
            .metrics()
            .await
            .contains("asynq_guard_client_errors_total")
    );
}

#[tokio::test]
async fn refused_input_after_good_commands_still_gets_their_replies_first() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;
    let mut client = proxy.client().await;

    let mut input = command(&["SET", "a", "1"]);
    input.extend(command(&["GET", "a"]));
    input.extend(b"*17\r\n");
    client.send_raw(&input).await;
    assert_eq!(client.read().await, ok());
    assert_eq!(client.read().await, bulk("1"));
    let reply = client.read().await;
    assert!(reply.error_text().contains("max_args"), "{reply:?}");
    assert_eq!(client.read_to_eof_text().await, "");
}

/// Refused input is logged as a reason, never as the bytes that caused
/// it.
#[tokio::test]
async fn refused_input_is_logged_without_the_client_bytes() {
    let redis = Redis::start().await;
    let proxy = limited(&redis).await;
    let secret = "s3cret-token-7f1c";

    let inputs = [
        format!("*2\r\n$3\r\nGET\r\n${}\r\n", 2000 + secret.len()),
        format!("{secret} inline\r\n"),
        format!("*2\r\n$3\r\nGET\r\n$5\r\n{secret}\r\n"),
        format!("*1\r\n{secret}\r\n"),
    ];
    for input in &inputs {
        let mut client = proxy.client().await;
        client.send_raw(input.as_bytes()).await;
        assert!(client.read().await.is_error(), "{input:?}");
        client.read_to_eof().await;
    }
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["SET", "k", secret]).await, ok());

    let log = proxy.stderr();
    assert!(log.contains("bad client input"), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
}
