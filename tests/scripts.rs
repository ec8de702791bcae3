//! Lua scripts through the proxy: errors keep Redis's exact text,
//! SCRIPT LOAD answers the SHA, EVALSHA of an unknown SHA answers
//! `-NOSCRIPT` unchanged so clients can fall back to EVAL (cases 6, 7).

mod support;

use support::{Client, Proxy, Redis, Value, bulk, command, int};

const ENQUEUE: &str = "redis.call('HSET', KEYS[1], 'msg', ARGV[1]) \
                       redis.call('LPUSH', KEYS[2], ARGV[2]) return 1";

/// The exact bytes of the reply to `args`, sent on `client`.
async fn raw_reply(mut client: Client, args: &[&str]) -> Vec<u8> {
    client.send(args).await;
    client.read_frame().await.0
}

async fn script_load(client: &mut Client, body: &str) -> String {
    let Value::Bulk(sha) = client.cmd(&["SCRIPT", "LOAD", body]).await else {
        panic!("SCRIPT LOAD did not answer a bulk string")
    };
    String::from_utf8(sha).expect("ASCII sha")
}

#[tokio::test]
async fn script_errors_pass_redis_error_text_unchanged() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;

    let scripts = [
        "return redis.error_reply('NOT FOUND')",
        "return {err = 'BUSYGROUP custom code'}",
        "return redis.call('NOSUCHCOMMAND')",
        "return redis.call('INCR', KEYS[1], 'extra')",
        "error('plain lua error')",
        "this is not lua",
        "return redis.call('MEMORY', 'USAGE', KEYS[1])",
    ];
    for script in scripts {
        let args = ["EVAL", script, "1", "k"];
        let from_redis = raw_reply(redis.client().await, &args).await;
        let from_proxy = raw_reply(proxy.client().await, &args).await;
        assert_eq!(
            String::from_utf8_lossy(&from_proxy),
            String::from_utf8_lossy(&from_redis),
            "script {script:?}"
        );
    }

    let mut client = proxy.client().await;
    let reply = client
        .cmd(&["EVAL", "return redis.error_reply('NOT FOUND')", "0"])
        .await;
    assert_eq!(reply, Value::Error("NOT FOUND".into()));
    assert_eq!(client.cmd(&["ECHO", "after"]).await, bulk("after"));
}

#[tokio::test]
async fn script_load_answers_the_sha_and_evalsha_runs_it() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let sha = script_load(&mut client, "return ARGV[1]").await;
    assert_eq!(sha.len(), 40);
    assert!(
        sha.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let mut direct = redis.client().await;
    assert_eq!(script_load(&mut direct, "return ARGV[1]").await, sha);

    let reply = client.cmd(&["EVALSHA", &sha, "0", "hello"]).await;
    assert_eq!(reply, bulk("hello"));
    assert_eq!(
        client.cmd(&["SCRIPT", "EXISTS", &sha]).await,
        Value::Array(vec![int(1)])
    );
}

#[tokio::test]
async fn evalsha_of_an_unknown_sha_returns_noscript_unchanged() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let unknown = "0123456789abcdef0123456789abcdef01234567";

    let args = ["EVALSHA", unknown, "0"];
    let from_redis = raw_reply(redis.client().await, &args).await;
    let from_proxy = raw_reply(proxy.client().await, &args).await;
    assert!(from_proxy.starts_with(b"-NOSCRIPT"), "{from_proxy:?}");
    assert_eq!(from_proxy, from_redis);
}

#[tokio::test]
async fn client_falls_back_from_noscript_to_eval_on_the_same_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let body = "return redis.call('INCR', KEYS[1])";

    let mut direct = redis.client().await;
    let sha = script_load(&mut direct, body).await;
    assert_eq!(direct.cmd(&["SCRIPT", "FLUSH"]).await, support::ok());

    let reply = client.cmd(&["EVALSHA", &sha, "1", "n"]).await;
    assert!(reply.error_text().starts_with("NOSCRIPT"), "{reply:?}");
    assert_eq!(client.cmd(&["EVAL", body, "1", "n"]).await, int(1));
    assert_eq!(client.cmd(&["EVALSHA", &sha, "1", "n"]).await, int(2));
}

/// Case 7: a batch enqueue loads its script, then pipelines SADD and
/// 100 EVALSHA calls; every reply comes back in order.
#[tokio::test]
async fn batch_enqueue_pipeline_of_sadd_and_100_evalsha_gets_every_reply() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    let sha = script_load(&mut client, ENQUEUE).await;
    let mut pipeline = command(&["SADD", "asynq:queues", "asynq:{q}"]);
    for i in 0..100 {
        let task = format!("asynq:{{q}}:t:{i}");
        let id = format!("{i}");
        let msg = format!("payload-{i}");
        pipeline.extend(command(&[
            "EVALSHA",
            &sha,
            "2",
            &task,
            "asynq:{q}:pending",
            &msg,
            &id,
        ]));
    }
    client.send_raw(&pipeline).await;

    assert_eq!(client.read().await, int(1));
    for i in 0..100 {
        assert_eq!(client.read().await, int(1), "EVALSHA {i}");
    }
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["LLEN", "asynq:{q}:pending"]).await, int(100));
    assert_eq!(
        direct.cmd(&["HGET", "asynq:{q}:t:42", "msg"]).await,
        bulk("payload-42")
    );
}
