//! The deployment files: `scripts/lint-deploy.sh` passes, and the docker
//! compose example works without a container engine.
//!
//! The compose scenario is run with its own pieces: the release binary
//! built as `docker/Dockerfile` builds it, the proxy started with the
//! image's command and `docker/policy/asynq-guard.toml` (addresses rewritten to local
//! ports, `/run/secrets` paths to the files compose mounts there), a real
//! `redis-server` with the compose Redis's ACL file, and the example
//! producer and worker of `docker/example` with the environment
//! `docker/compose.yaml` gives them. Every task the producer enqueues
//! must be processed by the worker, signed and checked on the way.
//!
//! The YAML is read with line-level helpers (no YAML crate is in
//! Cargo.lock); the compose file's commands and environment are checked
//! against what the test runs, and the Dockerfile's, the compose file's
//! and the Kubernetes sidecar's proxy commands against each other.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{Client, Redis, TempDir, Value, free_ports, http_get, within};

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` to its end within `limit` (killed after that) and
/// returns its output.
async fn run_bounded(what: &str, mut command: tokio::process::Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, child).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("run {what}: {e}")),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

// === line-level readers of the YAML and Dockerfile ===

/// The lines of the top-level service `name` of a compose file, up to
/// the next service.
fn compose_service(compose: &str, name: &str) -> Vec<String> {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "no service {name} in compose.yaml");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    ") || l.starts_with("  #"))
        .map(str::to_string)
        .collect()
}

/// The value after `key:` on the first line of `lines` that has it.
fn yaml_value<'a>(lines: &'a [String], key: &str) -> &'a str {
    let prefix = format!("{key}:");
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
        .trim()
}

/// A flow sequence of double-quoted strings (`["a", "b"]`), which is
/// JSON too.
fn string_list(flow: &str) -> Vec<String> {
    serde_json::from_str(flow).unwrap_or_else(|e| panic!("{flow:?} as a list of strings: {e}"))
}

/// The `environment:` map of a compose service (`KEY: "value"` lines).
fn compose_env(service: &[String]) -> Vec<(String, String)> {
    service
        .iter()
        .skip_while(|l| l.trim() != "environment:")
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .map(|l| {
            let (k, v) = l.trim().split_once(": ").expect("KEY: value");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {env:?}"))
}

/// The exec-form arguments of a Dockerfile instruction (`CMD [...]`).
fn dockerfile_exec(dockerfile: &str, instruction: &str) -> Vec<String> {
    let prefix = format!("{instruction} [");
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    string_list(&line[instruction.len() + 1..])
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} should occur once in the policy"
    );
    text.replace(from, to)
}

// === builds ===

/// `cargo build --release --locked`, the Dockerfile's command, into a
/// target directory of this test's own.
fn build_release() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root())
        .status()
        .expect("run cargo build --release --locked");
    assert!(status.success(), "cargo build --release --locked");
    target.join("release/asynq-guard")
}

/// The example producer and worker, built as docker/example/Dockerfile
/// builds them.
fn build_example() -> (PathBuf, PathBuf) {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-example");
    std::fs::create_dir_all(&out).expect("create the example's output directory");
    let status = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .args(["./cmd/producer", "./cmd/worker"])
        .env("CGO_ENABLED", "0")
        .current_dir(root().join("docker/example"))
        .status()
        .expect("run go build (is Go installed?)");
    assert!(status.success(), "go build of docker/example");
    (out.join("producer"), out.join("worker"))
}

// === the tests ===

#[tokio::test]
async fn lint_deploy_passes() {
    let mut command = tokio::process::Command::new(root().join("scripts/lint-deploy.sh"));
    command.current_dir(root());
    // The first run installs its tools; later ones take seconds.
    let out = run_bounded("scripts/lint-deploy.sh", command, Duration::from_secs(900)).await;
    assert_success("scripts/lint-deploy.sh", &out);
    assert!(text(&out.stdout).contains("lint-deploy: every check passed"));
}

#[test]
fn the_image_compose_and_sidecar_run_the_proxy_alike() {
    let dockerfile = read("docker/Dockerfile");
    let compose = read("docker/compose.yaml");
    let deployment = read("deploy/kubernetes/deployment.yaml");

    let entrypoint = dockerfile_exec(&dockerfile, "ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/asynq-guard"]);
    let cmd = dockerfile_exec(&dockerfile, "CMD");
    let guard = compose_service(&compose, "asynq-guard");
    assert_eq!(string_list(yaml_value(&guard, "command")), cmd);
    let sidecar_args = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("args: [\"serve\""))
        .map(|rest| string_list(&format!("[\"serve\"{rest}")))
        .expect("the sidecar's args");
    assert_eq!(sidecar_args, cmd);

    // The policy is where the command reads it, mounted read-only.
    let config = &cmd[cmd.iter().position(|a| a == "--config").expect("--config") + 1];
    assert!(config.starts_with("/etc/asynq-guard/"));
    // The directory is mounted (so that edits saved by rename reload),
    // and the file the command reads is in it.
    assert_eq!(
        format!("{}/asynq-guard.toml", yaml_value(&guard, "target")),
        *config
    );
    assert_eq!(yaml_value(&guard, "source"), "./policy");
    assert!(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docker/policy/asynq-guard.toml")
            .is_file()
    );
    assert!(guard.iter().any(|l| l.trim() == "read_only: true"));
    assert!(deployment.contains("mountPath: /etc/asynq-guard\n              readOnly: true"));

    // Health checks and probes ask the admin port the policies bind.
    assert!(dockerfile.contains("http://127.0.0.1:9380/healthz"));
    assert!(dockerfile.contains("EXPOSE 6380 9380"));
    assert!(read("docker/policy/asynq-guard.toml").contains("address = \"0.0.0.0:9380\""));
    assert!(read("deploy/kubernetes/policy.toml").contains("address = \"0.0.0.0:9380\""));
    assert!(deployment.contains("containerPort: 9380"));
    assert!(deployment.contains("path: /readyz") && deployment.contains("path: /healthz"));
    assert!(deployment.contains("value: \"127.0.0.1:6380\""));
}

#[tokio::test]
async fn the_kubernetes_policy_passes_check() {
    let binary = Path::new(support::BINARY);
    let dir = TempDir::new("deploy-k8s");
    let password = dir.path().join("redis-password");
    let key = dir.path().join("k1.key");
    std::fs::write(&password, "a-password\n").expect("write password");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("write key");
    let policy = read("deploy/kubernetes/policy.toml");
    let policy = replace_once(
        &policy,
        "/run/secrets/asynq-guard/upstream/redis-password",
        &password.display().to_string(),
    );
    let policy = replace_once(
        &policy,
        "/run/secrets/asynq-guard/integrity/k1.key",
        &key.display().to_string(),
    );
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).expect("write policy");
    let mut command = tokio::process::Command::new(binary);
    command.arg("check").arg(&path);
    let out = run_bounded("asynq-guard check", command, Duration::from_secs(30)).await;
    assert_success("asynq-guard check deploy/kubernetes/policy.toml", &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_scenario_processes_every_task() {
    let compose = read("docker/compose.yaml");
    let guard = compose_service(&compose, "asynq-guard");
    let producer_env = compose_env(&compose_service(&compose, "producer"));
    let worker_env = compose_env(&compose_service(&compose, "worker"));
    assert_eq!(
        string_list(yaml_value(
            &compose_service(&compose, "producer"),
            "command"
        )),
        ["producer"]
    );
    assert_eq!(
        string_list(yaml_value(&compose_service(&compose, "worker"), "command")),
        ["worker"]
    );
    let tasks: usize = env_value(&producer_env, "TASKS").parse().expect("TASKS");
    assert_eq!(env_value(&worker_env, "TASKS"), tasks.to_string());
    assert_eq!(env_value(&worker_env, "EXIT_AFTER_COUNT"), "true");
    for env in [&producer_env, &worker_env] {
        assert_eq!(env_value(env, "REDIS_ADDR"), "asynq-guard:6380");
    }

    // The secrets compose mounts at /run/secrets/<name>.
    let secret_file = |name: &str| {
        let file = compose
            .lines()
            .skip_while(|l| *l != format!("  {name}:"))
            .nth(1)
            .and_then(|l| l.trim().strip_prefix("file: ./"))
            .unwrap_or_else(|| panic!("no file for the secret {name}"));
        root().join("docker").join(file)
    };
    for name in ["redis-password", "integrity-key"] {
        assert!(guard.iter().any(|l| l.trim() == format!("- {name}")));
    }

    let binary = build_release();
    let (producer_bin, worker_bin) = build_example();

    // Redis as in compose: only the proxy's ACL user may log in.
    let dir = TempDir::new("deploy");
    let acl = dir.path().join("users.acl");
    std::fs::copy(secret_file("redis-users-acl"), &acl).expect("copy the ACL file");
    let redis = Redis::start_with_args(&["--aclfile", &acl.display().to_string()]).await;
    let redis_password = std::fs::read_to_string(secret_file("redis-password"))
        .expect("read the Redis password")
        .trim()
        .to_string();
    let mut direct = Client::connect_as(&redis.address(), "asynq-guard", &redis_password).await;

    // docker/policy/asynq-guard.toml with local addresses and the secrets' files.
    let ports = free_ports(2);
    let (listen, admin) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let policy = read("docker/policy/asynq-guard.toml");
    let policy = replace_once(&policy, "\"0.0.0.0:6380\"", &format!("\"{listen}\""));
    let policy = replace_once(&policy, "\"0.0.0.0:9380\"", &format!("\"{admin}\""));
    let policy = replace_once(
        &policy,
        "\"redis:6379\"",
        &format!("\"{}\"", redis.address()),
    );
    let policy = replace_once(
        &policy,
        "/run/secrets/redis-password",
        &secret_file("redis-password").display().to_string(),
    );
    let policy = replace_once(
        &policy,
        "/run/secrets/integrity-key",
        &secret_file("integrity-key").display().to_string(),
    );
    let config = dir.path().join("asynq-guard.toml");
    std::fs::write(&config, policy).expect("write the policy");

    // The proxy with the image's command, the policy at its local path.
    let cmd = string_list(yaml_value(&guard, "command"));
    let args: Vec<String> = cmd
        .iter()
        .map(|a| {
            if a.starts_with("/etc/asynq-guard/") {
                config.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let stderr = std::fs::File::create(dir.path().join("proxy.log")).expect("log file");
    let mut proxy = tokio::process::Command::new(&binary)
        .args(&args)
        .env_remove("ASYNQ_GUARD_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start the release binary");
    let proxy_log = || std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
    within("/healthz of the release binary", async {
        loop {
            if let Ok(Some(status)) = proxy.try_wait() {
                panic!("the proxy exited with {status}:\n{}", proxy_log());
            }
            if tokio::net::TcpStream::connect(&admin).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (status, body) = http_get(&admin, "/healthz").await;
    assert_eq!(status, 200, "/healthz: {body}");

    // The example programs with compose's environment, at the local proxy.
    let program = |bin: &Path, env: &[(String, String)]| {
        let mut command = tokio::process::Command::new(bin);
        command.env_clear().env("PATH", "/usr/bin:/bin");
        for (k, v) in env {
            command.env(k, v);
        }
        command.env("REDIS_ADDR", &listen);
        command
    };
    let worker = tokio::spawn(run_bounded(
        "the example worker",
        program(&worker_bin, &worker_env),
        Duration::from_secs(300),
    ));
    let produced = run_bounded(
        "the example producer",
        program(&producer_bin, &producer_env),
        Duration::from_secs(120),
    )
    .await;
    assert_success("producer", &produced);
    assert!(
        text(&produced.stdout).contains(&format!(
            "enqueued {tasks} email:send tasks to queue default"
        )),
        "{}",
        text(&produced.stdout)
    );
    let worked = worker.await.expect("the worker's task");
    assert_success(&format!("worker (proxy log:\n{})", proxy_log()), &worked);
    assert!(
        text(&worked.stdout).contains(&format!("processed {tasks} email:send tasks")),
        "{}",
        text(&worked.stdout)
    );

    // Redis holds nothing left to do, and counts every task processed.
    for (key, want) in [
        ("asynq:{default}:pending", 0),
        ("asynq:{default}:active", 0),
    ] {
        assert_eq!(direct.cmd(&["LLEN", key]).await, Value::Int(want), "{key}");
    }
    assert_eq!(
        direct.cmd(&["GET", "asynq:{default}:processed"]).await,
        Value::Bulk(tasks.to_string().into_bytes())
    );

    // Every task was signed by the proxy; none failed its check.
    let (status, metrics) = http_get(&admin, "/metrics").await;
    assert_eq!(status, 200);
    let signed = metrics
        .lines()
        .find(|l| {
            l.starts_with("asynq_guard_integrity_signed_total{")
                && l.contains("how=\"enqueue\"")
                && l.contains("queue=\"default\"")
        })
        .unwrap_or_else(|| panic!("no enqueue signatures in /metrics:\n{metrics}"));
    // An EVALSHA answered NOSCRIPT and sent again as EVAL counts twice.
    let signed: f64 = signed
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{signed}"));
    assert!(signed >= tasks as f64, "{signed} signed, {tasks} enqueued");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("asynq_guard_integrity_failures_total{")),
        "{metrics}"
    );
    let (status, _) = http_get(&admin, "/healthz").await;
    assert_eq!(status, 200);
}
