//! Ways around the proxy's checks by name that must not work: a NUL byte
//! in a command or subcommand name (Redis compares names only up to it),
//! commands that make Redis connect out to an address the client names,
//! and tracking messages redirected into another connection.

mod support;

use support::{NO_RAW, Proxy, RAW_GRANT, Redis, Value, bulk, metric, ok};

/// Names that Redis may run as CONFIG, CLUSTER NODES or EVAL.
fn nul_variants(name: &str) -> Vec<String> {
    (0..300).map(|i| format!("{name}\0{i:x}")).collect()
}

#[tokio::test]
async fn a_nul_byte_in_a_command_name_never_reaches_redis() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), NO_RAW).await;
    let mut client = proxy.client().await;
    for name in nul_variants("CONFIG") {
        let reply = client.cmd(&[&name, "GET", "port"]).await;
        let text = reply.error_text();
        assert!(
            text.starts_with("NOPERM") && text.contains("not a known command"),
            "{name:?}: {text}"
        );
    }
    for sub in nul_variants("NODES") {
        let reply = client.cmd(&["CLUSTER", &sub]).await;
        assert!(reply.error_text().starts_with("NOPERM"), "{sub:?}");
    }
    for sub in nul_variants("LOAD") {
        let reply = client.cmd(&["SCRIPT", &sub, "return 1"]).await;
        assert!(reply.error_text().starts_with("NOPERM"), "{sub:?}");
    }
    let mut direct = redis.client().await;
    let stats = direct.cmd(&["INFO", "commandstats"]).await;
    let Value::Bulk(stats) = stats else {
        panic!("{stats:?}")
    };
    let stats = String::from_utf8_lossy(&stats).into_owned();
    assert!(!stats.contains("cmdstat_config"), "{stats}");
    assert!(!stats.contains("cmdstat_cluster"), "{stats}");
    assert!(!stats.contains("cmdstat_script"), "{stats}");
}

#[tokio::test]
async fn unknown_command_names_pass_with_a_raw_grant_only() {
    let redis = Redis::start().await;
    let plain = Proxy::start_with(&redis.address(), NO_RAW).await;
    let raw = Proxy::start_with(&redis.address(), RAW_GRANT).await;
    let reply = plain.client().await.cmd(&["NOSUCHCOMMAND"]).await;
    assert!(reply.error_text().starts_with("NOPERM"), "{reply:?}");
    let reply = raw.client().await.cmd(&["NOSUCHCOMMAND"]).await;
    assert!(
        reply.error_text().starts_with("ERR unknown command"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn commands_that_make_redis_connect_out_are_refused() {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), RAW_GRANT).await;
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["SET", "k", "v"]).await, ok());
    let refused: [&[&str]; 6] = [
        &["REPLICAOF", "127.0.0.1", "1"],
        &["SLAVEOF", "127.0.0.1", "1"],
        &["MIGRATE", "127.0.0.1", "1", "k", "0", "1000", "COPY"],
        &["FAILOVER", "TO", "127.0.0.1", "1"],
        &["CLUSTER", "MEET", "127.0.0.1", "1"],
        &["DEBUG", "SLEEP", "0"],
    ];
    for args in refused {
        let reply = client.cmd(args).await;
        assert!(
            reply.error_text().starts_with("NOPERM"),
            "{args:?}: {reply:?}"
        );
    }
    let mut direct = redis.client().await;
    let info = direct.cmd(&["INFO", "replication"]).await;
    let Value::Bulk(info) = info else {
        panic!("{info:?}")
    };
    assert!(String::from_utf8_lossy(&info).contains("role:master"));
    assert_eq!(direct.cmd(&["GET", "k"]).await, bulk("v"));

    // Refused even with raw, and counted as concealment.
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_refusals_total{identity=\"test\",operation=\"none\",reason=\"conceal\"}"
        ),
        Some(6.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn tracking_cannot_redirect_into_another_connection() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut victim = proxy.client().await;
    let Value::Int(id) = victim.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID")
    };
    let mut other = proxy.client().await;
    let reply = other
        .cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &id.to_string()])
        .await;
    assert!(reply.error_text().starts_with("NOPERM"), "{reply:?}");
    assert_eq!(other.cmd(&["CLIENT", "TRACKING", "on"]).await, ok());
}
