//! The admin HTTP server (`/healthz`, `/metrics`) and the command line:
//! `check` and `serve` with good and bad configuration files.

mod support;

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::Output;

use support::{BINARY, Proxy, Redis, TempDir, free_port, http_get, metric, simple, within};

/// Runs the binary with `args` to its end (a hang fails the test).
async fn run_binary(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(BINARY)
        .args(args)
        .env_remove("ASYNQ_GUARD_LOG")
        .kill_on_drop(true)
        .output();
    within(&format!("asynq-guard {args:?} to exit"), child)
        .await
        .expect("run asynq-guard")
}

fn write_config(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write configuration");
    path.display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn healthz_answers_200_ok() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;

    let (status, body) = http_get(&proxy.admin_address(), "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");
}

#[tokio::test]
async fn unknown_admin_path_is_not_found() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;

    let (status, _) = http_get(&proxy.admin_address(), "/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metrics_count_connections_commands_and_upstream_latency() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    for _ in 0..7 {
        assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
    }
    assert_eq!(client.cmd(&["PiNg"]).await, simple("PONG"));
    assert_eq!(client.cmd(&["GET", "k"]).await, support::Value::Null);

    let m = proxy.metrics().await;
    let connections = "asynq_guard_client_connections_total{listener=\"test\"}";
    assert_eq!(metric(&m, connections), Some(1.0), "{m}");
    let open = "asynq_guard_client_connections{listener=\"test\"}";
    assert_eq!(metric(&m, open), Some(1.0), "{m}");
    let pings = "asynq_guard_commands_total{command=\"ping\"}";
    assert_eq!(metric(&m, pings), Some(8.0), "{m}");
    let gets = "asynq_guard_commands_total{command=\"get\"}";
    assert_eq!(metric(&m, gets), Some(1.0), "{m}");
    let replies = "asynq_guard_upstream_latency_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(metric(&m, replies), Some(9.0), "{m}");
    let count = "asynq_guard_upstream_latency_seconds_count";
    assert_eq!(metric(&m, count), Some(9.0), "{m}");
}

#[tokio::test]
async fn closed_connection_leaves_the_open_connections_gauge() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;
    assert_eq!(client.cmd(&["PING"]).await, simple("PONG"));
    drop(client);

    let open = "asynq_guard_client_connections{listener=\"test\"}";
    let deadline = support::Deadline::new("the open-connections gauge to drop to 0");
    while metric(&proxy.metrics().await, open) != Some(0.0) {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn unknown_command_names_are_counted_as_other() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;
    let mut client = proxy.client().await;

    for name in ["NOSUCHCOMMAND", "nosuchcommand", "Foo-Bar"] {
        let reply = client.cmd(&[name, "arg"]).await;
        assert!(reply.error_text().contains("unknown command"), "{reply:?}");
    }

    let m = proxy.metrics().await;
    let other = "asynq_guard_commands_total{command=\"other\"}";
    assert_eq!(metric(&m, other), Some(3.0), "{m}");
    let lower = m.to_lowercase();
    assert!(!lower.contains("nosuchcommand"), "{m}");
    assert!(!lower.contains("foo-bar"), "{m}");
}

#[tokio::test]
async fn check_of_an_unknown_key_fails_naming_file_line_and_key() {
    let dir = TempDir::new("check");
    let path = write_config(
        &dir,
        "[upstream]\naddress = \"127.0.0.1:6379\"\npasword = \"x\"\n",
    );
    let out = run_binary(&["check", &path]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{path}:3:1: unknown field `pasword`")),
        "{err}"
    );
}

#[tokio::test]
async fn check_of_an_invalid_value_fails_naming_the_field() {
    let dir = TempDir::new("check");
    let path = write_config(&dir, "[limits]\nmax_args = 0\n");
    let out = run_binary(&["check", &path]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&path) && err.contains("limits.max_args"),
        "{err}"
    );
}

/// A file with mistakes in several sections, for `check` and `serve`:
/// the problems, in file order, as `<line>: <field>: <start of reason>`.
fn broken_file(dir: &TempDir, listener: u16, admin: u16) -> (String, Vec<String>) {
    let missing_key = dir.path().join("no-such.key").display().to_string();
    let text = format!(
        "[[listener]]\n\
         address = \"127.0.0.1:{listener}\"\n\
         [admin]\n\
         address = \"127.0.0.1:{admin}\"\n\
         \n\
         [[identity]]\n\
         name = \"web\"\n\
         secret_sha256 = [\"not-a-hash\"]\n\
         \n\
         [[grant]]\n\
         identity = \"nobody\"\n\
         operations = [\"consume\"]\n\
         queues = [\"q\"]\n\
         \n\
         [[grant]]\n\
         identity = \"web\"\n\
         operations = [\"consume\"]\n\
         queues = [\"a{{b\"]\n\
         \n\
         [[rate_limit]]\n\
         name = \"r\"\n\
         scope = \"identity\"\n\
         rate_per_second = 1\n\
         burst = 0\n\
         \n\
         [integrity]\n\
         sign_with = \"k\"\n\
         [[integrity.key]]\n\
         id = \"k\"\n\
         file = {missing_key:?}\n"
    );
    let path = write_config(dir, &text);
    let expected = [
        "8: identity[0].secret_sha256[0]: must be 64 hex digits",
        "11: grant[0].identity: \"nobody\" is not a defined [[identity]]",
        "18: grant[1].queues[0]: \"a{b\" is not a valid queue glob",
        "24: rate_limit[0].burst: must be at least 1",
        "30: integrity.key[0].file: cannot read",
    ];
    let expected = expected.iter().map(|e| format!("{path}:{e}")).collect();
    (path, expected)
}

#[tokio::test]
async fn check_reports_every_problem_with_file_and_line() {
    let dir = TempDir::new("check");
    let (path, expected) = broken_file(&dir, free_port(), free_port());
    let out = run_binary(&["check", &path]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{err}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "{line:?} should start {want:?}"
        );
    }
    assert!(lines[4].contains("No such file or directory"), "{err}");
    assert_eq!(
        lines[5],
        format!("error: {path}: 5 problems; the configuration is not usable")
    );
    assert!(out.stdout.is_empty());
}

/// Both ports the file names are held by the test: a proxy that got as
/// far as binding would report "cannot listen" instead.
#[tokio::test]
async fn serve_refuses_the_same_file_with_the_same_messages_and_never_listens() {
    let held = [
        StdListener::bind("127.0.0.1:0").expect("bind"),
        StdListener::bind("127.0.0.1:0").expect("bind"),
    ];
    let port = |i: usize| held[i].local_addr().expect("address").port();
    let dir = TempDir::new("serve");
    let (path, expected) = broken_file(&dir, port(0), port(1));
    let out = run_binary(&["serve", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for want in &expected {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("invalid configuration: {want}"))),
            "{want:?} in\n{err}"
        );
    }
    assert!(!err.contains("cannot listen"), "{err}");
    assert!(!err.to_lowercase().contains("listening"), "{err}");
}

#[tokio::test]
async fn check_accepts_every_shipped_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("config")).expect("config directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // Paths inside (key files) are relative to the repository root.
        let child = tokio::process::Command::new(BINARY)
            .arg("check")
            .arg(&path)
            .current_dir(root)
            .env_remove("ASYNQ_GUARD_LOG")
            .kill_on_drop(true)
            .output();
        let out = within("asynq-guard check to exit", child)
            .await
            .expect("run asynq-guard");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} files in config/");
}

/// The listener port is held by the test: a proxy that tried to bind it
/// would fail with "cannot listen" instead of the configuration error.
#[tokio::test]
async fn serve_with_a_bad_file_exits_before_binding_any_port() {
    let held = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("address").port();
    let dir = TempDir::new("serve");
    let cases = [
        ("unknown key", "lisener_typo = 1\n", "lisener_typo"),
        ("bad value", "[limits]\nmax_args = 0\n", "limits.max_args"),
    ];
    for (what, extra, named) in cases {
        let path = write_config(
            &dir,
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
                 [admin]\naddress = \"127.0.0.1:{}\"\n{extra}",
                free_port()
            ),
        );
        let out = run_binary(&["serve", "--config", &path]).await;
        assert!(!out.status.success(), "{what}");
        let err = text(&out.stderr);
        assert!(err.contains(named), "{what}: {err}");
        assert!(!err.contains("cannot listen"), "{what}: {err}");
    }
}

#[tokio::test]
async fn serve_with_its_port_in_use_exits_naming_the_address() {
    let held = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("address").port();
    let dir = TempDir::new("serve");
    let path = write_config(
        &dir,
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [admin]\naddress = \"127.0.0.1:{}\"\n\
             [[identity]]\nname = \"a\"\ncert = \"cn:a\"\n",
            free_port()
        ),
    );
    let out = run_binary(&["serve", "--config", &path]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot listen") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// Families whose labels come from fixed sets are best exposed at zero
/// from the start, so that a first increment is visible to `rate()`.
#[tokio::test]
async fn error_counters_are_exposed_before_the_first_error() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(&redis).await;

    let m = proxy.metrics().await;
    for series in [
        "asynq_guard_client_errors_total{reason=\"max_args\"}",
        "asynq_guard_upstream_errors_total{kind=\"lost\"}",
    ] {
        assert_eq!(metric(&m, series), Some(0.0), "{series} in\n{m}");
    }
}
