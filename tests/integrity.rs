//! Task signatures with real asynq programs: `check` mode with producers
//! using the Go package `sdk/go/asynqguard`, rolling integrity out over
//! tasks already in Redis, key rotation under load, and workers that try
//! to change what they may not. Tampering inside Redis is
//! `tests/integrity_tamper.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::{Client, Proxy, Redis, TEST_SECRET, TEST_USER, TempDir, all_of_asynq, metric};

/// The signing key's text, as the proxy reads it from a file and the Go
/// programs from the environment.
const KEY_K1: &str = "k1-0123456789abcdef0123456789abcdef";
const KEY_K2: &str = "k2-fedcba9876543210fedcba9876543210";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Builds the Go package's commands once per test binary.
fn sdk_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/go/asynqguard");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-bin");
        for cmd in ["signed-enqueue", "verify-worker"] {
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(out.join(cmd))
                .arg(format!("./cmd/{cmd}"))
                .current_dir(&sdk)
                .status()
                .expect("run go build (is Go installed?)");
            assert!(status.success(), "go build ./cmd/{cmd}");
        }
        out
    });
    dir.join(name)
}

/// Runs a Go command that prints one JSON line.
fn run_json(name: &str, args: &[&str]) -> Value {
    let out = Command::new(sdk_bin(name))
        .args(args)
        .env("TEST_KEY_K1", KEY_K1)
        .env("TEST_KEY_K2", KEY_K2)
        .env("TEST_KEY_K9", "k9-this-key-is-not-known-to-the-proxy")
        .output()
        .expect("run the Go command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{name} {args:?}: {e}: {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The policy: identity `test` may do all of asynq on every queue; the
/// integrity table is the test's.
fn policy(dir: &Path, integrity: &str) -> String {
    for (id, text) in [("k1", KEY_K1), ("k2", KEY_K2)] {
        std::fs::write(dir.join(format!("{id}.key")), format!("{text}\n")).unwrap();
    }
    let integrity = integrity.replace("$DIR", dir.to_str().expect("utf-8 path"));
    format!("{}\n{integrity}", all_of_asynq(TEST_USER))
}

fn login<'a>(address: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-addr",
        address,
        "-username",
        TEST_USER,
        "-password",
        TEST_SECRET,
    ];
    args.extend_from_slice(rest);
    args
}

fn sum(metrics: &str, family: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn llen(redis: &Redis, key: &str) -> i64 {
    let mut direct = Client::connect(&redis.address()).await;
    match direct.cmd(&["LLEN", key]).await {
        support::Value::Int(n) => n,
        other => panic!("LLEN {key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mode_takes_tasks_signed_by_the_go_package_and_refuses_the_rest() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("integrity-check");
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(
        &redis.address(),
        &policy(
            dir.path(),
            r#"
[integrity]
sign_with = "k2"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.key]]
id = "k2"
file = "$DIR/k2.key"
[[integrity.queues]]
queues = ["signed"]
mode = "check"
"#,
        ),
    )
    .await;
    let address = proxy.address();

    // Producers sign with k1 (any listed key verifies).
    let signed = run_json(
        "signed-enqueue",
        &login(
            &address,
            &[
                "-queue",
                "signed",
                "-count",
                "20",
                "-key-id",
                "k1",
                "-key-env",
                "TEST_KEY_K1",
                "-json",
            ],
        ),
    );
    assert_eq!(signed["accepted"], 20, "{signed}");
    assert_eq!(signed["refused"], 0, "{signed}");

    let unsigned = run_json(
        "signed-enqueue",
        &login(
            &address,
            &["-queue", "signed", "-count", "5", "-unsigned", "-json"],
        ),
    );
    assert_eq!(unsigned["accepted"], 0, "{unsigned}");
    assert_eq!(unsigned["refused"], 5, "{unsigned}");
    let error = unsigned["errors"][0].as_str().unwrap_or_default();
    assert!(
        error.contains("NOPERM") && error.contains("check mode") && error.contains("no signature"),
        "{unsigned}"
    );

    // A key the proxy does not list.
    let foreign = run_json(
        "signed-enqueue",
        &login(
            &address,
            &[
                "-queue",
                "signed",
                "-count",
                "3",
                "-key-id",
                "k9",
                "-key-env",
                "TEST_KEY_K9",
                "-json",
            ],
        ),
    );
    assert_eq!(foreign["accepted"], 0, "{foreign}");
    assert!(
        foreign["errors"][0]
            .as_str()
            .unwrap_or_default()
            .contains("'k9', which is not a listed key"),
        "{foreign}"
    );

    // Redis holds exactly the signed tasks.
    assert_eq!(llen(&redis, "asynq:{signed}:pending").await, 20);

    // Workers get the tasks with the producer's end-to-end header intact:
    // the Go middleware verifies every one.
    let worker = run_json(
        "verify-worker",
        &login(
            &address,
            &[
                "-queue",
                "signed",
                "-key-id",
                "k1",
                "-key-env",
                "TEST_KEY_K1",
                "-expect",
                "20",
                "-timeout-secs",
                "60",
            ],
        ),
    );
    assert_eq!(worker["handled"], 20, "{worker}");
    assert_eq!(worker["rejected"], 0, "{worker}");

    let metrics = proxy.metrics().await;
    assert_eq!(
        sum(
            &metrics,
            "asynq_guard_integrity_failures_total{",
            "path=\"enqueue\""
        ),
        8.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_integrity_failures_total{path=\"enqueue\",queue=\"signed\",reason=\"unsigned\"}"
        ),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            "asynq_guard_refusals_total{",
            "reason=\"integrity\""
        ),
        8.0,
        "{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            "asynq_guard_integrity_failures_total{",
            "path=\"deliver\""
        ),
        0.0,
        "{metrics}"
    );
}

/// Turning integrity on over a queue that already holds 1,000 unsigned
/// tasks: with `accept_unsigned_until` set, a worker processes every one
/// and each is signed in place when first read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_integrity_on_loses_none_of_the_tasks_already_there() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("integrity-grace");
    let redis = Redis::start().await;
    // 1,000 tasks written before the proxy signed anything.
    let before = run_json(
        "signed-enqueue",
        &[
            "-addr",
            &redis.address(),
            "-queue",
            "old",
            "-count",
            "1000",
            "-unsigned",
            "-json",
        ],
    );
    assert_eq!(before["accepted"], 1000, "{before}");

    let proxy = Proxy::start_with(
        &redis.address(),
        &policy(
            dir.path(),
            r#"
[integrity]
sign_with = "k1"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.queues]]
queues = ["old"]
mode = "add"
accept_unsigned_until = 2099-01-01T00:00:00Z
"#,
        ),
    )
    .await;
    // New tasks arrive meanwhile, signed by the proxy.
    let during = run_json(
        "signed-enqueue",
        &login(
            &proxy.address(),
            &["-queue", "old", "-count", "50", "-unsigned", "-json"],
        ),
    );
    assert_eq!(during["accepted"], 50, "{during}");
    let worker = run_json(
        "verify-worker",
        &login(
            &proxy.address(),
            &["-queue", "old", "-expect", "1050", "-timeout-secs", "120"],
        ),
    );
    assert_eq!(worker["handled"], 1050, "{worker}");
    assert_eq!(llen(&redis, "asynq:{old}:pending").await, 0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_integrity_signed_total{how=\"grace\",queue=\"old\"}"
        ),
        Some(1000.0),
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "asynq_guard_integrity_failures_total{", ""),
        0.0,
        "{metrics}"
    );
}

/// Without the grace setting, unsigned tasks are withheld and archived,
/// never lost: the operator sees them in the archived set. (asynq's
/// worker pauses a second after each empty dequeue, so ten take about
/// ten seconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grace_unsigned_tasks_are_archived_not_run() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("integrity-nograce");
    let redis = Redis::start().await;
    let before = run_json(
        "signed-enqueue",
        &[
            "-addr",
            &redis.address(),
            "-queue",
            "old",
            "-count",
            "10",
            "-unsigned",
            "-json",
        ],
    );
    assert_eq!(before["accepted"], 10, "{before}");
    let proxy = Proxy::start_with(
        &redis.address(),
        &policy(
            dir.path(),
            r#"
[integrity]
sign_with = "k1"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.queues]]
queues = ["old"]
mode = "add"
"#,
        ),
    )
    .await;
    let worker = run_json(
        "verify-worker",
        &login(
            &proxy.address(),
            &["-queue", "old", "-expect", "0", "-timeout-secs", "15"],
        ),
    );
    assert_eq!(worker["handled"], 0, "{worker}");
    let mut direct = Client::connect(&redis.address()).await;
    assert_eq!(
        direct.cmd(&["ZCARD", "asynq:{old}:archived"]).await,
        support::int(10)
    );
    assert_eq!(llen(&redis, "asynq:{old}:active").await, 0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_integrity_archived_total{outcome=\"archived\",queue=\"old\"}"
        ),
        Some(10.0),
        "{metrics}"
    );
}

/// Key rotation under load, as a rolling deployment does it: replica A
/// still signs with k1 while replica B already lists k1 and k2 and signs
/// with k2; producers use both, the worker only B. Then a replica that
/// has retired k1 checks what is left. No task is lost or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_losing_a_task() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("integrity-rotate");
    let redis = Redis::start().await;
    let old = policy(
        dir.path(),
        r#"
[integrity]
sign_with = "k1"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.queues]]
queues = ["*"]
mode = "add"
"#,
    );
    let both = policy(
        dir.path(),
        r#"
[integrity]
sign_with = "k2"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.key]]
id = "k2"
file = "$DIR/k2.key"
[[integrity.queues]]
queues = ["*"]
mode = "add"
"#,
    );
    let a = Proxy::start_with(&redis.address(), &old).await;
    let b = Proxy::start_with(&redis.address(), &both).await;
    let (a_addr, b_addr) = (a.address(), b.address());
    let worker = std::thread::spawn(move || {
        run_json(
            "verify-worker",
            &login(
                &b_addr,
                &["-queue", "rot", "-expect", "600", "-timeout-secs", "120"],
            ),
        )
    });
    let b_addr = b.address();
    let producers = [a_addr.clone(), b_addr.clone(), a_addr].map(|addr| {
        std::thread::spawn(move || {
            run_json(
                "signed-enqueue",
                &login(
                    &addr,
                    &["-queue", "rot", "-count", "200", "-unsigned", "-json"],
                ),
            )
        })
    });
    for p in producers {
        let p = p.join().unwrap();
        assert_eq!(p["accepted"], 200, "{p}");
    }
    let worker = worker.join().unwrap();
    assert_eq!(worker["handled"], 600, "{worker}");
    for proxy in [&a, &b] {
        let metrics = proxy.metrics().await;
        assert_eq!(
            sum(&metrics, "asynq_guard_integrity_failures_total{", ""),
            0.0,
            "{metrics}"
        );
    }

    // k1 retired: new tasks (signed with k2) keep flowing.
    drop(a);
    let retired = policy(
        dir.path(),
        r#"
[integrity]
sign_with = "k2"
[[integrity.key]]
id = "k2"
file = "$DIR/k2.key"
[[integrity.queues]]
queues = ["*"]
mode = "add"
"#,
    );
    let c = Proxy::start_with(&redis.address(), &retired).await;
    let more = run_json(
        "signed-enqueue",
        &login(
            &b.address(),
            &["-queue", "rot", "-count", "20", "-unsigned", "-json"],
        ),
    );
    assert_eq!(more["accepted"], 20, "{more}");
    let worker = run_json(
        "verify-worker",
        &login(
            &c.address(),
            &["-queue", "rot", "-expect", "20", "-timeout-secs", "60"],
        ),
    );
    assert_eq!(worker["handled"], 20, "{worker}");
}

fn task_key(queue: &str, id: &str) -> String {
    format!("asynq:{{{queue}}}:t:{id}")
}

/// asynq's retry of task `id` of queue `q`, writing `msg` back.
fn retry_call(script: &support::Script, q: &str, id: &str, msg: &[u8]) -> Vec<Vec<u8>> {
    let keys: Vec<String> = vec![
        task_key(q, id),
        format!("asynq:{{{q}}}:active"),
        format!("asynq:{{{q}}}:lease"),
        format!("asynq:{{{q}}}:retry"),
        format!("asynq:{{{q}}}:processed:2026-12-03"),
        format!("asynq:{{{q}}}:failed:2026-12-03"),
        format!("asynq:{{{q}}}:processed"),
        format!("asynq:{{{q}}}:failed"),
    ];
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    support::call(
        "EVALSHA",
        script,
        &keys,
        &[
            id.as_bytes(),
            msg,
            b"1700000100",
            b"1800000000",
            b"1",
            b"9223372036854775807",
        ],
    )
}

/// A worker may write back retried, error_msg, last_failed_at and
/// completed_at; a worker that changes the payload or type is refused,
/// whether the proxy handed the task out itself or another proxy did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_may_not_rewrite_what_producers_sent() {
    use asynq_guard::asynq::message::{TaskMessage, decode};
    use prost::Message;

    let dir = TempDir::new("integrity-writeback");
    let redis = Redis::start().await;
    let config = policy(
        dir.path(),
        r#"
[integrity]
sign_with = "k1"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.queues]]
queues = ["*"]
mode = "add"
"#,
    );
    let a = Proxy::start_with(&redis.address(), &config).await;
    let b = Proxy::start_with(&redis.address(), &config).await;
    let mut direct = Client::connect(&redis.address()).await;
    let enqueue = support::load(&mut direct, "enqueueCmd", "enqueue").await;
    let dequeue = support::load(&mut direct, "dequeueCmd", "dequeue").await;
    let retry = support::load(&mut direct, "retryCmd", "retry").await;
    let mut worker_a = Client::connect_as(&a.address(), TEST_USER, TEST_SECRET).await;
    let mut worker_b = Client::connect_as(&b.address(), TEST_USER, TEST_SECRET).await;

    for id in ["t1", "t2"] {
        let msg = support::task_message_with("q", id, "job", b"original payload");
        let reply = support::send(
            &mut worker_a,
            &support::enqueue("EVALSHA", &enqueue, "q", id, &msg),
        )
        .await;
        assert_eq!(reply, support::int(1));
        // Stored signed, handed out exactly as the producer sent it.
        let stored = direct.cmd(&["HGET", &task_key("q", id), "msg"]).await;
        let support::Value::Bulk(stored) = stored else {
            panic!("{stored:?}")
        };
        assert!(
            stored.windows(6).any(|w| w == b"v1:k1:"),
            "no signature stored"
        );
        let got = support::send(
            &mut worker_a,
            &support::dequeue("EVALSHA", &dequeue, "q", "asynq:{q}:t:"),
        )
        .await;
        assert_eq!(
            got,
            support::bulk(&msg),
            "the worker sees the producer's bytes"
        );
    }

    let original = decode(&support::task_message_with(
        "q",
        "t1",
        "job",
        b"original payload",
    ))
    .unwrap();
    let changed = |f: fn(&mut TaskMessage)| {
        let mut m = original.clone();
        m.retried = 1;
        m.error_msg = "handler failed".into();
        f(&mut m);
        m.encode_to_vec()
    };
    // Through the proxy that handed t1 out, and through another one.
    for (worker, id) in [(&mut worker_a, "t1"), (&mut worker_b, "t2")] {
        let with_id = |f: fn(&mut TaskMessage)| {
            let mut m = decode(&changed(f)).unwrap();
            m.id = id.into();
            m.encode_to_vec()
        };
        for evil in [
            with_id(|m| m.payload = b"rewritten by the worker".to_vec()),
            with_id(|m| m.r#type = "admin:wipe".into()),
            with_id(|m| m.retry = 1000),
        ] {
            let reply = support::send(worker, &retry_call(&retry, "q", id, &evil)).await;
            assert!(
                reply.is_error() && reply.error_text().contains("may not change"),
                "{id}: {reply:?}"
            );
        }
        // Still active, untouched.
        assert!(
            matches!(
                direct.cmd(&["LPOS", "asynq:{q}:active", id]).await,
                support::Value::Int(_)
            ),
            "{id} left the active list"
        );
        let honest = with_id(|_| {});
        let reply = support::send(worker, &retry_call(&retry, "q", id, &honest)).await;
        assert_eq!(reply, support::ok(), "{id}");
        let support::Value::Bulk(stored) = direct.cmd(&["HGET", &task_key("q", id), "msg"]).await
        else {
            panic!()
        };
        let stored_msg = decode(&stored).unwrap();
        assert_eq!(stored_msg.retried, 1);
        assert_eq!(stored_msg.payload, b"original payload");
        assert!(
            stored.windows(6).any(|w| w == b"v1:k1:"),
            "{id}: the write-back is signed again"
        );
    }
    let refused = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("asynq_guard_integrity_failures_total{")
                    && l.contains("path=\"write_back\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(refused(&a.metrics().await), 3.0);
    assert_eq!(refused(&b.metrics().await), 3.0);
}

/// `asynq-guard sign-existing` signs every unsigned task of the signed
/// queues in place, pending and scheduled a day ahead alike, and counts
/// what it did; afterwards a proxy without any grace period delivers them
/// all, and a second run finds nothing left to sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_existing_signs_tasks_already_in_redis() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = TempDir::new("integrity-sign-existing");
    let redis = Redis::start().await;
    for args in [
        ["-queue", "old", "-count", "300"],
        ["-queue", "later", "-count", "200"],
        ["-queue", "plain", "-count", "10"],
    ] {
        let mut args: Vec<&str> = args.to_vec();
        let address = redis.address();
        args.extend(["-addr", &address, "-unsigned", "-json"]);
        if args[1] == "later" {
            args.extend(["-process-in", "24h"]);
        }
        let out = run_json("signed-enqueue", &args);
        assert_eq!(out["refused"], 0, "{out}");
    }
    // One task already tampered with: left alone, and reported.
    let mut direct = Client::connect(&redis.address()).await;
    let support::Value::Array(ids) = direct
        .cmd(&["LRANGE", "asynq:{old}:pending", "0", "0"])
        .await
    else {
        panic!()
    };
    let support::Value::Bulk(victim) = &ids[0] else {
        panic!()
    };
    let victim = String::from_utf8(victim.clone()).unwrap();
    direct
        .cmd(&[
            "HSET",
            &task_key("old", &victim),
            "msg",
            "\u{8a}\u{3e}v1:k1:00",
        ])
        .await;

    let config = dir.path().join("policy.toml");
    let integrity = r#"
[integrity]
sign_with = "k1"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.queues]]
queues = ["old", "later"]
mode = "add"
"#;
    std::fs::write(
        &config,
        format!(
            "[upstream]\naddress = \"{}\"\n[[identity]]\nname = \"{TEST_USER}\"\nsecret_sha256 = [\"{}\"]\n{}",
            redis.address(),
            asynq_guard::auth::hash_secret(TEST_SECRET.as_bytes()),
            policy(dir.path(), integrity)
        ),
    )
    .unwrap();
    let run = || {
        let out = Command::new(support::BINARY)
            .arg("sign-existing")
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run sign-existing");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(
        first.contains("queue \"old\": signed 299, already signed 0, changed while reading 0, failing their check 1 (undecodable 1)"),
        "{first}"
    );
    assert!(
        first.contains("queue \"later\": signed 200, already signed 0"),
        "{first}"
    );
    assert!(!first.contains("\"plain\""), "{first}");
    let second = run();
    assert!(
        second.contains("queue \"old\": signed 0, already signed 299"),
        "{second}"
    );

    // No grace period: every signed task is delivered.
    let proxy = Proxy::start_with(&redis.address(), &policy(dir.path(), integrity)).await;
    let worker = run_json(
        "verify-worker",
        &login(
            &proxy.address(),
            &["-queue", "old", "-expect", "299", "-timeout-secs", "60"],
        ),
    );
    assert_eq!(worker["handled"], 299, "{worker}");
    // The scheduled ones verify too (read through the inspector's list).
    let zset = support::asynq_script("listZSetEntriesCmd");
    let mut inspector = Client::connect_as(&proxy.address(), TEST_USER, TEST_SECRET).await;
    let listed = inspector
        .cmd(&[
            "EVAL",
            &zset,
            "1",
            "asynq:{later}:scheduled",
            "0",
            "-1",
            "asynq:{later}:t:",
        ])
        .await;
    let support::Value::Array(items) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(items.len(), 600);
    // Only the tampered one failed: withheld from the worker and archived
    // (found by its stored bytes, since it names no task id).
    let metrics = proxy.metrics().await;
    assert_eq!(
        sum(&metrics, "asynq_guard_integrity_failures_total{", ""),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "asynq_guard_integrity_archived_total{outcome=\"archived\",queue=\"old\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(matches!(
        direct
            .cmd(&["ZSCORE", "asynq:{old}:archived", &victim])
            .await,
        support::Value::Bulk(_)
    ));
}

/// An operator's UpdateTaskPayload (asynq v0.26) through the proxy: in
/// `add` mode the new payload is signed and the task stays deliverable;
/// in `check` mode it needs the producer's signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_new_payload_is_signed_in_add_mode_only() {
    use asynq_guard::asynq::message::decode;
    use prost::Message;

    let dir = TempDir::new("integrity-update");
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(
        &redis.address(),
        &policy(
            dir.path(),
            r#"
[integrity]
sign_with = "k1"
[[integrity.key]]
id = "k1"
file = "$DIR/k1.key"
[[integrity.queues]]
queues = ["open"]
mode = "add"
[[integrity.queues]]
queues = ["strict"]
mode = "check"
"#,
        ),
    )
    .await;
    let mut direct = Client::connect(&redis.address()).await;
    let schedule = support::load(&mut direct, "scheduleCmd", "schedule").await;
    let update = support::load(&mut direct, "updateTaskPayloadCmd", "updateTaskPayload").await;
    let info = support::load(&mut direct, "getTaskInfoCmd", "getTaskInfo").await;
    let mut c = Client::connect_as(&proxy.address(), TEST_USER, TEST_SECRET).await;

    // A scheduled task in the add-mode queue; the operator changes it.
    let msg = support::task_message_with("open", "u1", "job", b"old payload");
    let key = task_key("open", "u1");
    let reply = support::send(
        &mut c,
        &support::call(
            "EVALSHA",
            &schedule,
            &[key.as_bytes(), b"asynq:{open}:scheduled"],
            &[&msg, b"4102444800", b"u1"],
        ),
    )
    .await;
    assert_eq!(reply, support::int(1));
    let mut new = decode(&msg).unwrap();
    new.payload = b"new payload".to_vec();
    let reply = support::send(
        &mut c,
        &support::call(
            "EVALSHA",
            &update,
            &[key.as_bytes()],
            &[&new.encode_to_vec()],
        ),
    )
    .await;
    assert_eq!(reply, support::int(1));
    let got = support::send(
        &mut c,
        &support::call(
            "EVALSHA",
            &info,
            &[key.as_bytes()],
            &[b"u1", b"1700000000", b"asynq:{open}:"],
        ),
    )
    .await;
    let support::Value::Array(items) = got else {
        panic!("{got:?}")
    };
    let support::Value::Bulk(shown) = &items[0] else {
        panic!("{items:?}")
    };
    let shown = decode(shown).unwrap();
    assert_eq!(shown.payload, b"new payload");
    assert_eq!(shown.error_msg, "", "the updated task verifies");

    // In check mode the producer must sign the new payload.
    let signed_msg = {
        let mut m = decode(&support::task_message_with("strict", "s1", "job", b"p")).unwrap();
        let secret = KEY_K1.as_bytes();
        let sig = asynq_guard::integrity::sign::Signature {
            key_id: "k1".into(),
            mac: asynq_guard::integrity::sign::mac(
                secret,
                &asynq_guard::integrity::sign::canonical(&m),
            ),
        };
        m.headers
            .insert(asynq_guard::integrity::sign::HEADER.into(), sig.text());
        m
    };
    let key = task_key("strict", "s1");
    let reply = support::send(
        &mut c,
        &support::call(
            "EVALSHA",
            &schedule,
            &[key.as_bytes(), b"asynq:{strict}:scheduled"],
            &[&signed_msg.encode_to_vec(), b"4102444800", b"s1"],
        ),
    )
    .await;
    assert_eq!(reply, support::int(1));
    let mut changed = signed_msg.clone();
    changed.payload = b"operator's payload".to_vec();
    let reply = support::send(
        &mut c,
        &support::call(
            "EVALSHA",
            &update,
            &[key.as_bytes()],
            &[&changed.encode_to_vec()],
        ),
    )
    .await;
    assert!(
        reply.is_error()
            && reply
                .error_text()
                .contains("needs its producer's signature"),
        "{reply:?}"
    );
    let support::Value::Bulk(stored) = direct.cmd(&["HGET", &key, "msg"]).await else {
        panic!()
    };
    assert_eq!(decode(&stored).unwrap().payload, b"p");
}
