//! Client authentication over plain TCP, as a client sees it: what is
//! answered before AUTH, AUTH and HELLO AUTH in both protocol versions,
//! password-only logins, re-AUTH, rotated secrets, throttling of failed
//! attempts, their metric and audit line, and the proxy's own upstream
//! credentials, which no reply and no log line may ever show.
//!
//! Also the operator's side: `asynq-guard hash-secret` and `check`.

mod support;

use std::process::Command;

use support::{
    BINARY, Client, NO_RAW, Proto, Proxy, Redis, TEST_SECRET, TEST_USER, TempDir, Value, array,
    bulk, int, log_line, metric, ok, secret_hash, simple,
};

const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// The identity of cases 2 and 3.
const APP: &str = "app-web";
const APP_SECRET: &str = "s3cret";

/// An `[[identity]]` table proved by any of `secrets`, with a `raw`
/// grant: these tests are about who the client is, not what it may do.
fn identity(name: &str, secrets: &[&str]) -> String {
    let hashes: Vec<String> = secrets
        .iter()
        .map(|s| format!("\"{}\"", secret_hash(s)))
        .collect();
    format!(
        "[[identity]]\nname = \"{name}\"\nsecret_sha256 = [{}]\n{}",
        hashes.join(", "),
        raw_grant(name)
    )
}

fn raw_grant(name: &str) -> String {
    format!("[[grant]]\nidentity = \"{name}\"\noperations = [\"raw\"]\n")
}

/// Failed attempts neither slowed down nor refused, for tests that fail
/// on purpose many times.
const LENIENT: &str = "[auth]\nmax_failures_per_minute = 1000\nfailure_delay_ms = 0\n";

/// A Redis and a proxy whose policy is `identities` plus [`LENIENT`].
async fn start(identities: &str) -> (Redis, Proxy) {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &format!("{identities}\n{LENIENT}")).await;
    (redis, proxy)
}

fn err(text: &str) -> Value {
    Value::Error(text.to_string())
}

// === before authentication ===

/// Commands of every kind a client might send first: reads, writes,
/// transactions, pub/sub, scripts, blocking, admin, unknown, wrong arity.
const PRE_AUTH_REFUSED: &[&[&str]] = &[
    &["PING"],
    &["ECHO", "x"],
    &["GET", "k"],
    &["SET", "k", "v"],
    &["DEL", "k"],
    &["INCR", "n"],
    &["SELECT", "1"],
    &["DBSIZE"],
    &["KEYS", "*"],
    &["FLUSHALL"],
    &["INFO"],
    &["INFO", "server"],
    &["CLIENT", "SETNAME", "x"],
    &["CLIENT", "SETINFO", "LIB-NAME", "go-redis(,go1.24)"],
    &["CLIENT", "ID"],
    &["CLIENT", "LIST"],
    &["CONFIG", "GET", "*"],
    &["ACL", "WHOAMI"],
    &["SLOWLOG", "GET"],
    &["ROLE"],
    &["CLUSTER", "NODES"],
    &["MULTI"],
    &["EXEC"],
    &["DISCARD"],
    &["WATCH", "k"],
    &["SUBSCRIBE", "asynq:cancel"],
    &["PSUBSCRIBE", "asynq:*"],
    &["PUBLISH", "asynq:cancel", "id"],
    &["EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "k"],
    &["EVALSHA", "0000000000000000000000000000000000000000", "0"],
    &["SCRIPT", "LOAD", "return 1"],
    &["BLPOP", "q", "0"],
    &["COMMAND"],
    &["NOSUCHCOMMAND", "x"],
    &["GET"],
];

#[tokio::test]
async fn before_auth_every_other_command_gets_exactly_noauth() {
    let (redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;

    for args in PRE_AUTH_REFUSED {
        assert_eq!(client.cmd(args).await, err(NOAUTH), "{args:?}");
    }

    // The same as one pipeline: one NOAUTH per command, in order.
    let mut pipeline = Vec::new();
    for args in PRE_AUTH_REFUSED {
        pipeline.extend(support::command(args));
    }
    client.send_raw(&pipeline).await;
    for args in PRE_AUTH_REFUSED {
        assert_eq!(client.read().await, err(NOAUTH), "pipelined {args:?}");
    }

    // Nothing reached Redis.
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["DBSIZE"]).await, int(0));
    assert_eq!(
        direct.cmd(&["PUBSUB", "NUMSUB", "asynq:cancel"]).await,
        array(vec![bulk("asynq:cancel"), int(0)])
    );

    // The connection is still open and can log in.
    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());
    assert_eq!(client.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(direct.cmd(&["GET", "k"]).await, bulk("v"));
}

#[tokio::test]
async fn before_auth_commands_the_pipe_cannot_carry_get_noauth_too() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    for args in [
        &["MONITOR"][..],
        &["SYNC"],
        &["PSYNC", "?", "-1"],
        &["REPLCONF", "listening-port", "1"],
        &["CLIENT", "REPLY", "OFF"],
    ] {
        assert_eq!(client.cmd(args).await, err(NOAUTH), "{args:?}");
    }
}

#[tokio::test]
async fn quit_before_auth_answers_ok_and_closes() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["PING"]).await, err(NOAUTH));
    assert_eq!(client.cmd(&["QUIT"]).await, ok());
    assert_eq!(client.read_to_eof_text().await, "");
}

#[tokio::test]
async fn reset_before_auth_answers_reset_and_leaves_the_client_unauthenticated() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(client.cmd(&["GET", "k"]).await, err(NOAUTH));
    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
}

#[tokio::test]
async fn reset_after_auth_logs_the_client_out() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = Client::connect_as(&proxy.address(), APP, APP_SECRET).await;
    assert_eq!(client.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(client.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(client.cmd(&["GET", "k"]).await, err(NOAUTH));
    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());
    assert_eq!(client.cmd(&["GET", "k"]).await, bulk("v"));
}

#[tokio::test]
async fn hello_without_auth_before_login_gets_the_noauth_hello_text() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    for args in [
        &["HELLO"][..],
        &["HELLO", "2"],
        &["HELLO", "3"],
        &["HELLO", "3", "SETNAME", "worker"],
    ] {
        assert_eq!(client.cmd(args).await, err(NOAUTH_HELLO), "{args:?}");
    }
    // Still RESP2 and still unauthenticated.
    client.send(&["PING"]).await;
    let (raw, value) = client.read_frame().await;
    assert_eq!(value, err(NOAUTH));
    assert_eq!(raw, format!("-{NOAUTH}\r\n").into_bytes());
}

#[tokio::test]
async fn pre_auth_error_texts_are_the_ones_redis_gives() {
    // Redis itself, requiring a password, answers the same inputs. (Not
    // HELLO without AUTH: Redis 7.2 reworded that text, and the proxy
    // gives the newer wording, checked above.)
    let guarded = Redis::start_with_args(&["--requirepass", "redis-only-pw"]).await;
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let inputs: &[&[&str]] = &[
        &["PING"],
        &["GET", "k"],
        &["HELLO", "4"],
        &["AUTH", "nobody", "x"],
        &["AUTH", "wrong"],
        &["HELLO", "3", "AUTH", "nobody", "x"],
        &["HELLO", "2", "AUTH", "default", "wrong"],
        &["AUTH"],
        &["HELLO", "3", "AUTH", "nobody"],
        &["HELLO", "3", "SETNAME"],
        &["HELLO", "abc"],
    ];
    let mut from_redis = guarded.client().await;
    let mut from_proxy = proxy.anonymous_client().await;
    for args in inputs {
        from_redis.send(args).await;
        from_proxy.send(args).await;
        let (redis_raw, _) = from_redis.read_frame().await;
        let (proxy_raw, _) = from_proxy.read_frame().await;
        assert_eq!(
            String::from_utf8_lossy(&proxy_raw),
            String::from_utf8_lossy(&redis_raw),
            "{args:?}"
        );
    }
}

// === HELLO with credentials ===

#[tokio::test]
async fn hello_3_auth_answers_a_resp3_map_and_authenticates() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;

    client.send(&["HELLO", "3", "AUTH", APP, APP_SECRET]).await;
    client.set_proto(Proto::Resp3);
    let (raw, hello) = client.read_frame().await;
    assert_eq!(
        raw[0],
        b'%',
        "a RESP3 map: {}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(hello.map_get("proto"), Some(&int(3)));
    assert_eq!(hello.map_get("server"), Some(&bulk("redis")));

    // Authenticated, and RESP3 from now on.
    assert_eq!(client.cmd(&["HSET", "h", "f", "v"]).await, int(1));
    client.send(&["HGETALL", "h"]).await;
    let (raw, value) = client.read_frame().await;
    assert!(raw.starts_with(b"%1\r\n"), "{raw:?}");
    assert_eq!(value, Value::Map(vec![(bulk("f"), bulk("v"))]));
    log_line(&proxy, &["result=\"ok\"", &format!("identity=\"{APP}\"")]).await;
}

#[tokio::test]
async fn hello_2_auth_answers_a_resp2_array_and_authenticates() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;

    client.send(&["HELLO", "2", "AUTH", APP, APP_SECRET]).await;
    let (raw, hello) = client.read_frame().await;
    assert_eq!(
        raw[0],
        b'*',
        "a RESP2 array: {}",
        String::from_utf8_lossy(&raw)
    );
    let Value::Array(items) = hello else {
        panic!("HELLO 2 answered {hello:?}")
    };
    let proto = items
        .chunks(2)
        .find(|kv| kv[0] == bulk("proto"))
        .map(|kv| kv[1].clone());
    assert_eq!(proto, Some(int(2)));

    assert_eq!(client.cmd(&["HSET", "h", "f", "v"]).await, int(1));
    client.send(&["HGETALL", "h"]).await;
    let (raw, _) = client.read_frame().await;
    assert!(raw.starts_with(b"*2\r\n"), "{raw:?}");
}

#[tokio::test]
async fn hello_auth_with_setname_names_the_connection() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    client
        .send(&["HELLO", "3", "AUTH", APP, APP_SECRET, "SETNAME", "worker-1"])
        .await;
    client.set_proto(Proto::Resp3);
    let hello = client.read().await;
    assert_eq!(hello.map_get("proto"), Some(&int(3)));
    assert_eq!(client.cmd(&["CLIENT", "GETNAME"]).await, bulk("worker-1"));
}

#[tokio::test]
async fn hello_after_auth_switches_the_protocol_both_ways() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = Client::connect_as(&proxy.address(), APP, APP_SECRET).await;
    assert_eq!(client.cmd(&["HSET", "h", "f", "v"]).await, int(1));

    client.send(&["HELLO", "3"]).await;
    client.set_proto(Proto::Resp3);
    let (raw, hello) = client.read_frame().await;
    assert_eq!(raw[0], b'%');
    assert_eq!(hello.map_get("proto"), Some(&int(3)));
    client.send(&["HGETALL", "h"]).await;
    assert!(client.read_frame().await.0.starts_with(b"%1\r\n"));

    client.send(&["HELLO", "2"]).await;
    client.set_proto(Proto::Resp2);
    let (raw, _) = client.read_frame().await;
    assert_eq!(raw[0], b'*');
    client.send(&["HGETALL", "h"]).await;
    assert!(client.read_frame().await.0.starts_with(b"*2\r\n"));
}

#[tokio::test]
async fn hello_3_auth_with_a_wrong_secret_gets_wrongpass_and_stays_resp2() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    client.send(&["HELLO", "3", "AUTH", APP, "not-it"]).await;
    let (raw, value) = client.read_frame().await;
    assert_eq!(value, err(WRONGPASS));
    assert_eq!(raw, format!("-{WRONGPASS}\r\n").into_bytes());

    client.send(&["PING"]).await;
    let (raw, value) = client.read_frame().await;
    assert_eq!(value, err(NOAUTH));
    assert_eq!(raw, format!("-{NOAUTH}\r\n").into_bytes());
}

/// Case 2: a listener where HELLO 3 is not wanted answers it with an
/// error reply, and the client falls back to AUTH on RESP2.
#[tokio::test]
async fn hello_3_auth_on_a_listener_without_resp3_is_an_error_then_auth_works_in_resp2() {
    let redis = Redis::start().await;
    let proxy = Proxy::builder(&redis.address())
        .listener("resp2-only", "resp3 = false")
        .extra(&format!("{}\n{LENIENT}", identity(APP, &[APP_SECRET])))
        .start()
        .await;
    let mut client = Client::connect(&proxy.listener_address("resp2-only")).await;

    let reply = client.cmd(&["HELLO", "3", "AUTH", APP, APP_SECRET]).await;
    assert!(reply.is_error(), "{reply:?}");
    // go-redis before 9.5 falls back to AUTH only on "unknown command".
    assert!(
        reply.error_text().starts_with("ERR unknown command"),
        "{reply:?}"
    );
    // Not authenticated by the refused HELLO, and not closed either.
    assert_eq!(client.cmd(&["PING"]).await, err(NOAUTH));

    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());
    assert_eq!(client.cmd(&["HSET", "h", "f", "v"]).await, int(1));
    client.send(&["HGETALL", "h"]).await;
    let (raw, value) = client.read_frame().await;
    assert!(raw.starts_with(b"*2\r\n"), "{raw:?}");
    assert_eq!(value, array(vec![bulk("f"), bulk("v")]));

    // HELLO 2 AUTH is welcome there; HELLO 3 AUTH on the other listener.
    let mut resp2 = Client::connect(&proxy.listener_address("resp2-only")).await;
    let hello = resp2.cmd(&["HELLO", "2", "AUTH", APP, APP_SECRET]).await;
    assert!(matches!(hello, Value::Array(_)), "{hello:?}");
    let mut resp3 = proxy.anonymous_client().await;
    resp3.send(&["HELLO", "3", "AUTH", APP, APP_SECRET]).await;
    resp3.set_proto(Proto::Resp3);
    assert_eq!(resp3.read().await.map_get("proto"), Some(&int(3)));
}

// === AUTH ===

/// Case 3: `AUTH <password>` is the identity named `default`.
#[tokio::test]
async fn auth_with_only_a_password_logs_in_as_default() {
    let policy = format!(
        "{}{}",
        identity("default", &[APP_SECRET]),
        identity(APP, &["web-only-secret"])
    );
    let (redis, proxy) = start(&policy).await;

    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["AUTH", APP_SECRET]).await, ok());
    assert_eq!(client.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(redis.client().await.cmd(&["GET", "k"]).await, bulk("v"));
    let who = client.local_addr();
    log_line(
        &proxy,
        &[
            "result=\"ok\"",
            "identity=\"default\"",
            &format!("client.addr={who}"),
        ],
    )
    .await;

    // Another identity's secret is not default's; a wrong one neither.
    let mut other = proxy.anonymous_client().await;
    assert_eq!(
        other.cmd(&["AUTH", "web-only-secret"]).await,
        err(WRONGPASS)
    );
    assert_eq!(other.cmd(&["AUTH", "wrong"]).await, err(WRONGPASS));
    assert_eq!(other.cmd(&["PING"]).await, err(NOAUTH));
}

#[tokio::test]
async fn auth_with_only_a_password_without_a_default_identity_gets_wrongpass() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    client.send(&["AUTH", APP_SECRET]).await;
    let (raw, value) = client.read_frame().await;
    assert_eq!(value, err(WRONGPASS));
    assert_eq!(raw, format!("-{WRONGPASS}\r\n").into_bytes());
    assert_eq!(
        client
            .cmd(&["HELLO", "3", "AUTH", "default", APP_SECRET])
            .await,
        err(WRONGPASS)
    );
    assert_eq!(client.cmd(&["PING"]).await, err(NOAUTH));
}

#[tokio::test]
async fn wrong_secrets_and_unknown_users_get_exactly_wrongpass() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    let attempts: &[&[&[u8]]] = &[
        &[b"AUTH", APP.as_bytes(), b"wrong"],
        &[b"AUTH", APP.as_bytes(), b""],
        &[b"AUTH", APP.as_bytes(), b"S3CRET"],
        &[b"AUTH", b"APP-WEB", APP_SECRET.as_bytes()],
        &[b"AUTH", b"nobody", APP_SECRET.as_bytes()],
        &[b"AUTH", b"", APP_SECRET.as_bytes()],
        &[b"AUTH", b"\xff\xfe", APP_SECRET.as_bytes()],
        &[b"HELLO", b"2", b"AUTH", b"nobody", b"x"],
        &[b"HELLO", b"3", b"AUTH", APP.as_bytes(), b"wrong"],
    ];
    for args in attempts {
        client.send_bytes(args).await;
        assert_eq!(client.read().await, err(WRONGPASS), "{args:?}");
    }
    assert_eq!(client.cmd(&["PING"]).await, err(NOAUTH));
}

#[tokio::test]
async fn a_failed_reauth_keeps_the_previous_identity() {
    let policy = format!(
        "{}{}",
        identity(APP, &[APP_SECRET]),
        identity("ops", &["ops-secret"])
    );
    let (_redis, proxy) = start(&policy).await;
    let mut client = Client::connect_as(&proxy.address(), APP, APP_SECRET).await;
    assert_eq!(client.cmd(&["SET", "k", "1"]).await, ok());

    assert_eq!(client.cmd(&["AUTH", APP, "wrong"]).await, err(WRONGPASS));
    assert_eq!(client.cmd(&["INCR", "k"]).await, int(2));
    assert_eq!(client.cmd(&["AUTH", "ops", "wrong"]).await, err(WRONGPASS));
    assert_eq!(client.cmd(&["INCR", "k"]).await, int(3));
    assert_eq!(
        client.cmd(&["HELLO", "3", "AUTH", "nobody", "x"]).await,
        err(WRONGPASS)
    );
    // Still the same identity, and still RESP2.
    client.send(&["INCR", "k"]).await;
    assert_eq!(client.read_frame().await.0, b":4\r\n");
}

#[tokio::test]
async fn a_successful_reauth_switches_identity() {
    let policy = format!(
        "{}{}",
        identity(APP, &[APP_SECRET]),
        identity("ops", &["ops-secret"])
    );
    let (_redis, proxy) = start(&policy).await;
    let mut client = Client::connect_as(&proxy.address(), APP, APP_SECRET).await;
    let who = format!("client.addr={}", client.local_addr());
    log_line(&proxy, &["result=\"ok\"", "identity=\"app-web\"", &who]).await;

    assert_eq!(client.cmd(&["AUTH", "ops", "ops-secret"]).await, ok());
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
    log_line(&proxy, &["result=\"ok\"", "identity=\"ops\"", &who]).await;
}

#[tokio::test]
async fn rotated_secrets_old_and_new_are_both_accepted() {
    let (_redis, proxy) = start(&identity(APP, &["old-secret", "new-secret"])).await;
    for secret in ["old-secret", "new-secret"] {
        let mut client = Client::connect_as(&proxy.address(), APP, secret).await;
        assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));

        let mut hello = proxy.anonymous_client().await;
        hello.send(&["HELLO", "3", "AUTH", APP, secret]).await;
        hello.set_proto(Proto::Resp3);
        assert_eq!(hello.read().await.map_get("proto"), Some(&int(3)));
    }
    let mut client = proxy.anonymous_client().await;
    assert_eq!(
        client.cmd(&["AUTH", APP, "older-secret"]).await,
        err(WRONGPASS)
    );
}

// === failed attempts ===

/// Three failures a minute per address, answered at once.
const STRICT: &str = "[auth]\nmax_failures_per_minute = 3\nfailure_delay_ms = 0\n";

async fn start_strict() -> (Redis, Proxy) {
    let redis = Redis::start().await;
    let policy = identity(APP, &[APP_SECRET]);
    let proxy = Proxy::start_with(&redis.address(), &format!("{policy}\n{STRICT}")).await;
    (redis, proxy)
}

/// Asserts a refusal for too many failures and returns the retry time.
fn throttled_retry_secs(reply: &Value) -> u64 {
    let text = reply.error_text();
    assert!(text.contains("too many failed authentications"), "{text}");
    let secs = text
        .split("retry in ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix('s'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no retry time in {text:?}"));
    assert!((1..=60).contains(&secs), "{text}");
    secs
}

#[tokio::test]
async fn after_the_failure_limit_even_the_right_secret_is_refused_with_a_retry_time() {
    let (_redis, proxy) = start_strict().await;
    let mut before = Client::connect_as(&proxy.address(), APP, APP_SECRET).await;

    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["AUTH", APP, "guess-1"]).await, err(WRONGPASS));
    assert_eq!(
        client.cmd(&["HELLO", "2", "AUTH", APP, "guess-2"]).await,
        err(WRONGPASS)
    );
    assert_eq!(client.cmd(&["AUTH", APP, "guess-3"]).await, err(WRONGPASS));

    throttled_retry_secs(&client.cmd(&["AUTH", APP, APP_SECRET]).await);
    assert_eq!(client.cmd(&["PING"]).await, err(NOAUTH));

    // A new connection from the same address is refused too, by either
    // way of logging in.
    let mut again = proxy.anonymous_client().await;
    throttled_retry_secs(&again.cmd(&["AUTH", APP, APP_SECRET]).await);
    throttled_retry_secs(&again.cmd(&["HELLO", "3", "AUTH", APP, APP_SECRET]).await);
    assert_eq!(again.cmd(&["GET", "k"]).await, err(NOAUTH));

    // A connection authenticated before is not affected, nor are other
    // identity names from the same address (sidecar clients all come
    // from 127.0.0.1): failures count per address and identity.
    assert_eq!(before.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(
        again.cmd(&["AUTH", "nobody", "guess"]).await,
        err(WRONGPASS)
    );

    let metrics = proxy.metrics().await;
    let throttled = "asynq_guard_auth_attempts_total{listener=\"test\",result=\"throttled\"}";
    assert_eq!(metric(&metrics, throttled), Some(3.0), "{metrics}");
}

#[tokio::test]
async fn the_right_secret_before_the_failure_limit_is_accepted() {
    let (_redis, proxy) = start_strict().await;
    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["AUTH", APP, "guess-1"]).await, err(WRONGPASS));
    assert_eq!(client.cmd(&["AUTH", APP, "guess-2"]).await, err(WRONGPASS));
    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());
    assert_eq!(client.cmd(&["SET", "k", "v"]).await, ok());
}

#[tokio::test]
async fn auth_attempts_are_counted_by_result() {
    let policy = format!(
        "{}[[identity]]\nname = \"both\"\ncert = \"cn:both\"\nsecret_sha256 = [\"{}\"]\n{}",
        identity(APP, &[APP_SECRET]),
        secret_hash("both-secret"),
        raw_grant("both")
    );
    let (_redis, proxy) = start(&policy).await;
    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());
    let hello = client.cmd(&["HELLO", "2", "AUTH", APP, APP_SECRET]).await;
    assert!(matches!(hello, Value::Array(_)), "{hello:?}");
    assert_eq!(client.cmd(&["AUTH", APP, "wrong-1"]).await, err(WRONGPASS));
    assert_eq!(client.cmd(&["AUTH", APP, "wrong-2"]).await, err(WRONGPASS));
    assert_eq!(client.cmd(&["AUTH", "nobody", "x"]).await, err(WRONGPASS));
    let needs_cert = client.cmd(&["AUTH", "both", "both-secret"]).await;
    assert!(
        needs_cert.error_text().starts_with("WRONGPASS"),
        "{needs_cert:?}"
    );

    let metrics = proxy.metrics().await;
    for (result, count) in [
        ("ok", 2.0),
        ("wrong_secret", 2.0),
        ("unknown_identity", 1.0),
        ("certificate_required", 1.0),
    ] {
        let series =
            format!("asynq_guard_auth_attempts_total{{listener=\"test\",result=\"{result}\"}}");
        assert_eq!(
            metric(&metrics, &series),
            Some(count),
            "{series}\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_failed_login_is_audited_with_the_name_tried_and_never_the_secret() {
    let (_redis, proxy) = start(&identity(APP, &[APP_SECRET])).await;
    let mut client = proxy.anonymous_client().await;
    let who = format!("client.addr={}", client.local_addr());
    assert_eq!(
        client.cmd(&["AUTH", APP, "Guess-Q7x2-wrong"]).await,
        err(WRONGPASS)
    );
    assert_eq!(
        client
            .cmd(&["HELLO", "3", "AUTH", "someone-else", "Guess-Z9k4-wrong"])
            .await,
        err(WRONGPASS)
    );
    assert_eq!(client.cmd(&["AUTH", APP, APP_SECRET]).await, ok());

    let wrong = log_line(
        &proxy,
        &[
            "asynq_guard::audit",
            "result=\"failure\"",
            "identity_tried=app-web",
            &who,
        ],
    )
    .await;
    assert!(wrong.contains("wrong_secret"), "{wrong}");
    // A name that is no identity is logged as a short hash: a user name
    // slot sometimes holds a secret typed in the wrong place.
    let unknown = log_line(
        &proxy,
        &[
            "asynq_guard::audit",
            "result=\"failure\"",
            "identity_tried=unknown:",
        ],
    )
    .await;
    assert!(unknown.contains("unknown_identity"), "{unknown}");
    assert!(unknown.contains(&who), "{unknown}");
    assert!(!proxy.stderr().contains("someone-else"), "{unknown}");

    let log = proxy.stderr();
    let metrics = proxy.metrics().await;
    for secret in ["Guess-Q7x2-wrong", "Guess-Z9k4-wrong", APP_SECRET] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!metrics.contains(secret), "{secret} in the metrics");
    }
}

// === the proxy's own upstream credentials ===

const UPSTREAM_USER: &str = "ag-upstream-c41e";
const UPSTREAM_PASSWORD: &str = "Upstream-Pass-e93b05d1";

/// A Redis whose only enabled user is the proxy's, and a client logged in
/// to it directly as that user (for looking behind the proxy's back).
async fn redis_with_acl_user() -> (Redis, Client) {
    let args = support::only_user_args(UPSTREAM_USER, UPSTREAM_PASSWORD);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let redis = Redis::start_with_args(&args).await;
    let direct = Client::connect_as(&redis.address(), UPSTREAM_USER, UPSTREAM_PASSWORD).await;
    (redis, direct)
}

/// A proxy logging in to `redis` as [`UPSTREAM_USER`] with `password`
/// from a file; everything it logs, down to trace, is kept.
async fn proxy_with_credentials(redis: &Redis, dir: &TempDir, password: &str) -> Proxy {
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{password}\n")).expect("write password file");
    Proxy::builder(&redis.address())
        .upstream_keys(&format!(
            "username = \"{UPSTREAM_USER}\"\npassword_file = {:?}\n",
            file.display().to_string()
        ))
        .log_filter("trace")
        .start()
        .await
}

/// One `calls=`, `failed_calls=` … figure of a `cmdstat_<command>` line.
async fn commandstat(direct: &mut Client, command: &str, figure: &str) -> i64 {
    let Value::Bulk(text) = direct.cmd(&["INFO", "commandstats"]).await else {
        panic!("INFO commandstats is not a bulk string")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let Some(line) = text
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
    else {
        return 0;
    };
    line.split_once(':')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{figure}="))?.parse().ok())
        .unwrap_or_else(|| panic!("no {figure} in {line}"))
}

#[tokio::test]
async fn client_auth_never_reaches_redis_which_sees_only_the_proxys_own_logins() {
    let (redis, mut direct) = redis_with_acl_user().await;
    let dir = TempDir::new("upstream-credentials");
    let proxy = proxy_with_credentials(&redis, &dir, UPSTREAM_PASSWORD).await;
    assert_eq!(direct.cmd(&["CONFIG", "RESETSTAT"]).await, ok());
    assert_eq!(direct.cmd(&["ACL", "LOG", "RESET"]).await, ok());

    // Logins of every kind, good and bad, on four connections.
    let mut one = proxy.client().await;
    assert_eq!(one.cmd(&["SET", "k", "v"]).await, ok());
    let mut two = proxy.anonymous_client().await;
    two.send(&["HELLO", "3", "AUTH", TEST_USER, TEST_SECRET])
        .await;
    two.set_proto(Proto::Resp3);
    assert_eq!(two.read().await.map_get("proto"), Some(&int(3)));
    assert_eq!(two.cmd(&["GET", "k"]).await, bulk("v"));
    let mut three = proxy.anonymous_client().await;
    assert_eq!(
        three.cmd(&["AUTH", TEST_USER, "wrong"]).await,
        err(WRONGPASS)
    );
    assert_eq!(
        three.cmd(&["AUTH", UPSTREAM_USER, UPSTREAM_PASSWORD]).await,
        err(WRONGPASS),
        "the upstream's credentials are not an identity"
    );
    assert_eq!(three.cmd(&["AUTH", TEST_SECRET]).await, err(WRONGPASS));
    let mut four = proxy.anonymous_client().await;
    assert_eq!(
        four.cmd(&["HELLO", "2", "AUTH", "nobody", "x"]).await,
        err(WRONGPASS)
    );
    assert_eq!(four.cmd(&["AUTH", TEST_USER, TEST_SECRET]).await, ok());

    // RESET logs the client out; the proxy logs in to Redis again unseen
    // (Redis's default user is off, so without it GET would fail).
    for _ in 0..2 {
        assert_eq!(one.cmd(&["RESET"]).await, simple("RESET"));
        assert_eq!(one.cmd(&["GET", "k"]).await, err(NOAUTH));
        assert_eq!(one.cmd(&["AUTH", TEST_USER, TEST_SECRET]).await, ok());
        assert_eq!(one.cmd(&["GET", "k"]).await, bulk("v"));
    }

    let metrics = proxy.metrics().await;
    let connections = metric(
        &metrics,
        "asynq_guard_client_connections_total{listener=\"test\"}",
    )
    .expect("connections counted");
    assert_eq!(connections, 4.0);
    // One login per connection that authenticated (three never did, and
    // so never cost Redis a connection) and one per RESET: nothing else.
    assert_eq!(commandstat(&mut direct, "auth", "calls").await, 3 + 2);
    assert_eq!(commandstat(&mut direct, "auth", "failed_calls").await, 0);
    assert_eq!(commandstat(&mut direct, "auth", "rejected_calls").await, 0);
    assert_eq!(commandstat(&mut direct, "hello", "failed_calls").await, 0);
    assert_eq!(commandstat(&mut direct, "hello", "rejected_calls").await, 0);
    assert_eq!(direct.cmd(&["ACL", "LOG"]).await, array(vec![]));
}

/// Whether `text` holds `number` as a whole number (no digit either side).
fn holds_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The lines of an `INFO` reply that could tell the upstream's port:
/// any line naming a port, or a composite value holding the number.
/// (A counter that happens to equal the port is not an address.)
fn info_lines_revealing(text: &str, port: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let (key, value) = line.split_once(':').unwrap_or(("", line));
            let names_port = key.contains("port") && !value.trim().is_empty();
            let composite = !value.trim().chars().all(|c| c.is_ascii_digit());
            names_port || (composite && holds_number(value, port))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_scan_finds_a_port_in_info_but_not_a_counter_equal_to_it() {
    let info = "# Server\r\ntcp_port:41234\r\nused_memory:41234\r\n\
                listener0:name=tcp,bind=*,port=41234\r\nmaster_port:41234\r\n\
                uptime_in_seconds:412345\r\n";
    assert_eq!(
        info_lines_revealing(info, "41234"),
        vec![
            "tcp_port:41234",
            "listener0:name=tcp,bind=*,port=41234",
            "master_port:41234"
        ]
    );
    assert!(holds_number("laddr=127.0.0.1:41234 x", "41234"));
    assert!(!holds_number("used_memory:412345", "41234"));
}

#[tokio::test]
async fn no_reply_and_no_log_line_shows_the_upstream_credentials_or_port() {
    let (redis, _direct) = redis_with_acl_user().await;
    let dir = TempDir::new("upstream-scan");
    let proxy = proxy_with_credentials(&redis, &dir, UPSTREAM_PASSWORD).await;
    let port = redis.port().to_string();

    let mut client = proxy.anonymous_client().await;
    let session: &[&[&str]] = &[
        &["PING"],
        // (The upstream password as a guess; never the user name, which
        // the audit line of a failure would rightly repeat.)
        &["AUTH", TEST_USER, UPSTREAM_PASSWORD],
        &["AUTH", UPSTREAM_PASSWORD],
        &["AUTH", TEST_USER, TEST_SECRET],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["INFO"],
        &["INFO", "all"],
        &["INFO", "everything"],
        &["INFO", "default"],
        &["INFO", "server"],
        &["INFO", "clients"],
        &["INFO", "replication"],
        &["INFO", "stats"],
        &["INFO", "commandstats"],
        &["INFO", "errorstats"],
        &["INFO", "keyspace"],
        &["INFO", "server", "clients", "replication"],
        &["CONFIG", "GET", "*"],
        &["CONFIG", "GET", "port"],
        &["CONFIG", "GET", "requirepass"],
        &["CONFIG", "GET", "masterauth"],
        &["CONFIG", "GET", "tls-*"],
        &["CLIENT", "LIST"],
        &["CLIENT", "INFO"],
        &["CLIENT", "ID"],
        &["CLIENT", "SETNAME", "scan"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "KILL", "ID", "1"],
        &["ACL", "WHOAMI"],
        &["ACL", "LIST"],
        &["ACL", "USERS"],
        &["ACL", "GETUSER", UPSTREAM_USER],
        &["ACL", "LOG"],
        &["HELLO"],
        &["HELLO", "2"],
        &["SLOWLOG", "GET"],
        &["SLOWLOG", "GET", "128"],
        &["ROLE"],
        &["CLUSTER", "NODES"],
        &["CLUSTER", "SLOTS"],
        &["MONITOR"],
        &["COMMAND", "COUNT"],
        &["DBSIZE"],
        &["RESET"],
        &["PING"],
        &["AUTH", TEST_USER, TEST_SECRET],
        &["HELLO", "3"],
        &["INFO"],
        &["INFO", "everything"],
        &["CLIENT", "INFO"],
        &["CONFIG", "GET", "*"],
        &["ACL", "WHOAMI"],
        &["HELLO", "3", "AUTH", TEST_USER, TEST_SECRET],
        &["HELLO", "2"],
        &["GET", "k"],
    ];
    let mut seen = Vec::new();
    for args in session {
        client.send(args).await;
        if args[0] == "HELLO" && args.get(1) == Some(&"3") {
            client.set_proto(Proto::Resp3);
        }
        if args[0] == "HELLO" && args.get(1) == Some(&"2") || args[0] == "RESET" {
            client.set_proto(Proto::Resp2);
        }
        let (raw, value) = client.read_frame().await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        if args[0] == "INFO" {
            // The text itself, without the RESP length header.
            let info = match &value {
                Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                Value::Text(t) => t.clone(),
                other => panic!("INFO must still answer, got {other:?}"),
            };
            assert!(info.contains("# "), "{args:?}: {info}");
            let revealing = info_lines_revealing(&info, &port);
            assert!(revealing.is_empty(), "{args:?} reveals {revealing:?}");
            assert!(!info.contains("tcp_port"), "{args:?}: {info}");
        } else {
            assert!(
                !holds_number(&text, &port),
                "{args:?} shows port {port}: {text}"
            );
        }
        seen.push((args.to_vec(), text));
    }
    // INFO still tells what it may.
    let (_, server) = seen
        .iter()
        .find(|(args, _)| args == &["INFO", "server"])
        .expect("INFO server");
    assert!(server.contains("redis_version:"), "{server}");

    for (args, text) in &seen {
        for hidden in [UPSTREAM_PASSWORD, UPSTREAM_USER] {
            assert!(!text.contains(hidden), "{args:?} shows {hidden}: {text}");
        }
    }

    let metrics = proxy.metrics().await;
    let log = proxy.stderr();
    for hidden in [UPSTREAM_PASSWORD, UPSTREAM_USER, TEST_SECRET] {
        assert!(!log.contains(hidden), "{hidden} in the log:\n{log}");
        assert!(!metrics.contains(hidden), "{hidden} in the metrics");
    }
    // The operator is told once where Redis is, at start-up; no other
    // line names the port.
    let naming_port: Vec<&str> = log
        .lines()
        .filter(|l| holds_number(l, &port) && !l.contains("asynq-guard ready"))
        .collect();
    assert!(naming_port.is_empty(), "{naming_port:#?}");
}

#[tokio::test]
async fn info_inside_a_transaction_does_not_show_the_upstream_port() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["MULTI"]).await, ok());
    // Its reply would come back inside EXEC's, where it is not filtered:
    // refused, and so the whole transaction fails.
    let info = client.cmd(&["INFO", "server"]).await;
    assert!(info.error_text().starts_with("NOPERM"), "{info:?}");
    let exec = client.cmd(&["EXEC"]).await;
    assert!(exec.error_text().starts_with("EXECABORT"), "{exec:?}");
    let direct = client.cmd(&["INFO", "server"]).await;
    let Value::Bulk(text) = direct else {
        panic!("INFO answered {direct:?}")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(text.contains("redis_version:"), "{text}");
    assert!(!text.contains("tcp_port"), "{text}");
}

#[tokio::test]
async fn a_script_calling_info_is_refused_without_a_raw_grant() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), NO_RAW).await;
    let mut client = proxy.client().await;
    client
        .send(&["EVAL", "return redis.call('INFO', 'server')", "0"])
        .await;
    let (raw, _) = client.read_frame().await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("-NOPERM"), "{text}");
    assert!(!text.contains("tcp_port"), "{text}");
    assert!(!holds_number(&text, &redis.port().to_string()), "{text}");
}

#[tokio::test]
async fn refused_upstream_credentials_give_clients_only_a_fixed_error() {
    let (redis, _direct) = redis_with_acl_user().await;
    let dir = TempDir::new("upstream-refused");
    let proxy = proxy_with_credentials(&redis, &dir, "Not-The-Upstream-Pass-77").await;

    // The client's own login succeeds (Redis is not involved); Redis is
    // reached, and refuses the proxy, when the first command needs it.
    let mut client = proxy.anonymous_client().await;
    assert_eq!(client.cmd(&["AUTH", TEST_USER, TEST_SECRET]).await, ok());
    let reply = client.cmd(&["PING"]).await;
    assert_eq!(reply, err("ERR asynq-guard: upstream Redis unavailable"));
    assert_eq!(client.read_to_eof_text().await, "");

    let metrics = proxy.metrics().await;
    let series = "asynq_guard_upstream_errors_total{kind=\"auth\"}";
    assert_eq!(metric(&metrics, series), Some(1.0), "{metrics}");
    let log = proxy.stderr();
    assert!(!log.contains("Not-The-Upstream-Pass-77"), "{log}");
    assert!(!log.contains(TEST_SECRET), "{log}");
}

// === the operator's commands ===

/// Runs `asynq-guard hash-secret` with `input` on standard input.
fn hash_secret(input: &[u8]) -> std::process::Output {
    support::run_hash_secret(input)
}

#[test]
fn hash_secret_prints_the_sha256_of_standard_input_without_its_newline() {
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    for input in [&b"abc"[..], b"abc\n", b"abc\r\n"] {
        let out = hash_secret(input);
        assert!(out.status.success(), "{input:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), abc, "{input:?}");
    }
    let out = hash_secret(b"s3cret\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0\n"
    );
    // Only one newline is dropped: a secret may end in a blank line.
    let out = hash_secret(b"abc\n\n");
    assert_ne!(String::from_utf8_lossy(&out.stdout), abc);
}

#[test]
fn hash_secret_refuses_an_empty_secret() {
    for input in [&b""[..], b"\n", b"\r\n"] {
        let out = hash_secret(input);
        assert!(!out.status.success(), "{input:?}");
        assert!(out.stdout.is_empty(), "{input:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("empty"), "{input:?}: {stderr}");
    }
}

/// Runs `asynq-guard check` on a file holding `text`.
fn check(text: &str) -> std::process::Output {
    let dir = TempDir::new("check");
    let path = dir.path().join("asynq-guard.toml");
    std::fs::write(&path, text).expect("write configuration");
    Command::new(BINARY)
        .arg("check")
        .arg(&path)
        .output()
        .expect("run asynq-guard check")
}

#[test]
fn check_rejects_a_malformed_secret_hash_naming_the_field() {
    let good = secret_hash("s3cret");
    let valid = format!(
        "[[identity]]\nname = \"a\"\nsecret_sha256 = [\"{good}\"]\n\
         [[identity]]\nname = \"b\"\nsecret_sha256 = [\"{good}\", \"{good}\"]\n"
    );
    let out = check(&valid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let short = &good[..63];
    let not_hex = format!("{}zz", &good[..62]);
    for bad in [short, not_hex.as_str(), "", "s3cret"] {
        let text = format!(
            "[[identity]]\nname = \"a\"\nsecret_sha256 = [\"{good}\"]\n\
             [[identity]]\nname = \"b\"\nsecret_sha256 = [\"{good}\", \"{bad}\"]\n"
        );
        let out = check(&text);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("identity[1].secret_sha256[1]") && stderr.contains("64 hex digits"),
            "{bad:?}: {stderr}"
        );
        if !bad.is_empty() {
            assert!(!stderr.contains(bad), "the bad value is echoed: {stderr}");
        }
    }
}
