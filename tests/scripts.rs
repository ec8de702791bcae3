//! Lua scripts through the proxy (cases 6 and 7). asynq's own scripts
//! work for every identity: SCRIPT LOAD answers the SHA, EVALSHA of a
//! script Redis has not loaded answers `-NOSCRIPT` unchanged so clients
//! can fall back to EVAL, and script errors keep Redis's exact text. Any
//! other script needs a `raw` grant; with one, scripts pass through as
//! they would to Redis.

mod support;

use support::{
    Client, ENQUEUE_Q, NO_RAW, Proxy, Redis, Value, asynq_script, bulk, command, encode, int,
    task_message,
};

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
async fn with_a_raw_grant_script_errors_pass_redis_error_text_unchanged() {
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
async fn with_a_raw_grant_script_load_answers_the_sha_and_evalsha_runs_it() {
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
async fn with_a_raw_grant_evalsha_of_an_unknown_sha_returns_noscript_unchanged() {
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

/// A script of the test's own, loaded once and run 100 times in one
/// pipeline; every reply comes back in order.
#[tokio::test]
async fn with_a_raw_grant_a_pipeline_of_100_evalsha_gets_every_reply() {
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

/// Case 7 with asynq's own enqueue script and an identity without a raw
/// grant: SCRIPT LOAD of the catalogued body answers its SHA, then SADD
/// and 100 EVALSHA in one pipeline all succeed; SCRIPT LOAD of any other
/// body is refused.
#[tokio::test]
async fn batch_enqueue_with_asynqs_script_loads_and_runs_without_raw() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), ENQUEUE_Q).await;
    let mut client = proxy.client().await;
    let body = asynq_script("enqueueCmd");

    let sha = script_load(&mut client, &body).await;
    let mut direct = redis.client().await;
    assert_eq!(script_load(&mut direct, &body).await, sha);

    let mut pipeline = command(&["SADD", "asynq:queues", "q"]);
    for i in 0..100 {
        let task = format!("asynq:{{q}}:t:id{i}");
        let id = format!("id{i}");
        let msg = task_message("q", &id, "batch");
        pipeline.extend(encode(&[
            b"EVALSHA",
            sha.as_bytes(),
            b"2",
            task.as_bytes(),
            b"asynq:{q}:pending",
            &msg,
            id.as_bytes(),
            b"1700000000000000000",
        ]));
    }
    client.send_raw(&pipeline).await;
    assert_eq!(client.read().await, int(1));
    for i in 0..100 {
        assert_eq!(client.read().await, int(1), "EVALSHA {i}");
    }
    assert_eq!(direct.cmd(&["LLEN", "asynq:{q}:pending"]).await, int(100));

    let other = client.cmd(&["SCRIPT", "LOAD", "return 1"]).await;
    assert!(other.error_text().starts_with("NOPERM"), "{other:?}");
    assert_eq!(
        direct
            .cmd(&[
                "SCRIPT",
                "EXISTS",
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
            ])
            .await,
        Value::Array(vec![int(0)])
    );
}

/// go-redis's fallback with asynq's own script: EVALSHA of a script Redis
/// has not loaded answers NOSCRIPT unchanged, EVAL of the body works.
#[tokio::test]
async fn asynq_scripts_fall_back_from_noscript_to_eval_without_raw() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    let body = asynq_script("enqueueCmd");
    let sha = asynq_guard::asynq::catalog::sha1_hex(body.as_bytes());

    let args = [
        "asynq:{q}:t:a",
        "asynq:{q}:pending",
        "msg",
        "a",
        "1700000000000000000",
    ];
    let mut evalsha = vec!["EVALSHA", sha.as_str(), "2"];
    evalsha.extend(args);
    let from_redis = raw_reply(redis.client().await, &evalsha).await;
    let from_proxy = raw_reply(proxy.client().await, &evalsha).await;
    assert!(from_proxy.starts_with(b"-NOSCRIPT"), "{from_proxy:?}");
    assert_eq!(from_proxy, from_redis);

    let mut eval = vec!["EVAL", body.as_str(), "2"];
    eval.extend(args);
    assert_eq!(client.cmd(&eval).await, int(1));
}

/// Case 6: a catalogued inspector script that fails at run time (task
/// info of a task that does not exist answers NOT FOUND) gives the client
/// Redis's error text unchanged.
#[tokio::test]
async fn asynq_script_errors_keep_redis_text_without_raw() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let body = asynq_script("getTaskInfoCmd");
    let args = [
        "EVAL",
        body.as_str(),
        "1",
        "asynq:{q}:t:missing",
        "missing",
        "1700000000",
        "asynq:{q}:",
    ];
    let from_redis = raw_reply(redis.client().await, &args).await;
    let from_proxy = raw_reply(proxy.client().await, &args).await;
    assert_eq!(from_proxy, b"-NOT FOUND\r\n".to_vec());
    assert_eq!(from_proxy, from_redis);
}

/// Without a raw grant, scripts that are not asynq's and the rest of
/// scripting are refused with NOPERM naming the identity, and Redis runs
/// nothing.
#[tokio::test]
async fn scripts_that_are_not_asynqs_need_a_raw_grant() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), NO_RAW).await;
    let mut client = proxy.client().await;
    let refused: [&[&str]; 7] = [
        &["EVAL", "return redis.call('SET', 'owned', '1')", "0"],
        &["EVAL_RO", "return 1", "0"],
        &["EVALSHA", "0123456789abcdef0123456789abcdef01234567", "0"],
        &["SCRIPT", "LOAD", "return redis.call('FLUSHALL')"],
        &["SCRIPT", "FLUSH"],
        &["FCALL", "f", "0"],
        &["FUNCTION", "LIST"],
    ];
    for args in refused {
        let reply = client.cmd(args).await;
        let text = reply.error_text();
        assert!(
            text.starts_with("NOPERM") && text.contains("'test'") && text.contains("raw grant"),
            "{args:?}: {text}"
        );
    }
    assert_eq!(
        client
            .cmd(&[
                "SCRIPT",
                "EXISTS",
                "0123456789abcdef0123456789abcdef01234567"
            ])
            .await,
        Value::Array(vec![int(0)])
    );
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["EXISTS", "owned"]).await, int(0));
}
