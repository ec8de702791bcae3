//! The proxy's own connection to Redis over TLS, with a client
//! certificate and the proxy's own ACL user: clients see an ordinary
//! Redis; a Redis certificate the proxy does not trust means no
//! connection at all, never a fallback to plain TCP.

mod support;

use support::{Ca, Proxy, Redis, TempDir, free_port, metric, ok, simple, write_ca};

const PROXY_USER: &str = "guard";
const PROXY_PASSWORD: &str = "upstream-pw-5e1b";

/// Redis with a plain port (for the test's own checks) and a TLS port
/// that requires a client certificate from `ca`; the proxy's ACL user
/// exists, the default user is off.
async fn tls_redis(ca: &Ca, dir: &TempDir, tls_port: u16) -> Redis {
    let server = ca.server().write(dir.path(), "redis");
    let ca_file = write_ca(dir.path(), "redis-ca.pem", &ca.pem());
    let mut args: Vec<String> = [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &server.cert.display().to_string(),
        "--tls-key-file",
        &server.key.display().to_string(),
        "--tls-ca-cert-file",
        &ca_file.display().to_string(),
        "--tls-auth-clients",
        "yes",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(support::only_user_args(PROXY_USER, PROXY_PASSWORD));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Redis::start_with_args(&args).await
}

/// A proxy in front of Redis's TLS port that trusts `trusted`, presents a
/// certificate from `client` and logs in as the proxy's ACL user.
async fn proxy_over_tls(dir: &TempDir, tls_port: u16, trusted: &Ca, client: &Ca) -> Proxy {
    let ca_file = write_ca(dir.path(), "trusted-ca.pem", &trusted.pem());
    let cert = client
        .client("asynq-guard", &[])
        .write(dir.path(), "proxy-client");
    let password = dir.path().join("upstream-password");
    std::fs::write(&password, format!("{PROXY_PASSWORD}\n")).expect("write password");
    let credentials = format!(
        "username = \"{PROXY_USER}\"\npassword_file = {:?}\n",
        password.display().to_string()
    );
    let tls = format!(
        "[upstream.tls]\nca_file = {:?}\nserver_name = \"localhost\"\n\
         client_cert_file = {:?}\nclient_key_file = {:?}\n",
        ca_file.display().to_string(),
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    );
    Proxy::builder(&format!("127.0.0.1:{tls_port}"))
        .upstream_keys(&credentials)
        .extra(&tls)
        .start()
        .await
}

#[tokio::test]
async fn commands_reach_redis_over_tls_with_the_proxys_certificate_and_user() {
    let ca = Ca::new("redis test CA");
    let dir = TempDir::new("upstream-tls");
    let tls_port = free_port();
    let _redis = tls_redis(&ca, &dir, tls_port).await;
    let proxy = proxy_over_tls(&dir, tls_port, &ca, &ca).await;

    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["SET", "k", "over tls"]).await, ok());
    assert_eq!(client.cmd(&["GET", "k"]).await, support::bulk("over tls"));
    // ACL WHOAMI would name the proxy's Redis user: it is refused.
    let whoami = client.cmd(&["ACL", "WHOAMI"]).await;
    assert!(whoami.error_text().starts_with("NOPERM"), "{whoami:?}");
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
    let stderr = proxy.stderr();
    assert!(
        !stderr.contains(PROXY_PASSWORD),
        "password in logs:\n{stderr}"
    );
}

#[tokio::test]
async fn an_untrusted_redis_certificate_means_no_upstream_connection() {
    let redis_ca = Ca::new("redis test CA");
    let other_ca = Ca::new("some other CA");
    let dir = TempDir::new("upstream-tls-untrusted");
    let tls_port = free_port();
    let _redis = tls_redis(&redis_ca, &dir, tls_port).await;
    let proxy = proxy_over_tls(&dir, tls_port, &other_ca, &redis_ca).await;

    let mut client = proxy.client().await;
    let reply = client.cmd(&["PING"]).await;
    let text = reply.error_text();
    assert!(text.contains("upstream Redis unavailable"), "{text}");
    assert_eq!(client.read_to_eof_text().await, "");
    let metrics = proxy.metrics().await;
    let series = "asynq_guard_upstream_errors_total{kind=\"connect\"}";
    assert!(
        metric(&metrics, series).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}
