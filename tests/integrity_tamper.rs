//! Task integrity against someone who writes to Redis directly: with a
//! real asynq Server working through the proxy in `add` mode, pending
//! (and scheduled) task messages are changed inside Redis, behind the
//! proxy's back, in every way an attacker could: payload altered, type
//! altered, signature removed, another task's signature copied in, a
//! message of queue A placed in queue B, a valid signature under a
//! retired key. The handler never sees any of them; each ends archived
//! with the integrity error, visible through asynq's Inspector; metrics
//! and audit events say so, without a payload; the untouched tasks
//! around them are processed exactly once. The same holds for the two
//! other ways asynq reads task messages for a worker: a task tampered
//! with while active, whose lease then expired, is never recovered
//! (`listLeaseExpired`), and a grouped task tampered with while it waits
//! is left out of its aggregated batch (`readAggregationSet`).
//!
//! The Go side is the harness's `-enqueue-batch`, `-handle` and
//! `-list-tasks` modes (`tests/harness/tasks.go`); the tampering is done
//! here, on the stored protobuf, with a raw client to Redis itself.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use asynq_guard::asynq::message::TaskMessage;
use asynq_guard::integrity::sign;
use prost::Message;
use serde_json::Value as Json;
use support::{
    Client, Proxy, Redis, TempDir, Value, all_of_asynq, build_harness, harness_as, identities,
};

/// The key the proxy signs with.
const KEY_K1: &str = "k1-tamper-0123456789abcdef0123456789abcdef";
/// A key that once signed tasks and is no longer listed.
const KEY_K0: &str = "k0-retired-fedcba9876543210fedcba98765432";

/// The identity every asynq program of these tests logs in as.
const APP: &str = "app";

/// Every payload of these tests starts with this, so that the proxy's
/// log can be searched for any of them.
const MARK: &str = "PAYLOAD~";

/// The protobuf field that carries the signature in Redis.
const CARRIER: u64 = 1001;

/// One test at a time: each runs a real asynq Server whose empty-queue
/// pauses are a second each; two CPUs shared by several would only make
/// them slower.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The harness at `version`, built once per test binary.
fn harness(version: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(version.to_string())
        .or_insert_with(|| build_harness(version))
        .clone()
}

/// The policy: `app` may do all of asynq on every queue, and every queue
/// is signed by the proxy with k1 (k0 is retired: not listed).
fn policy(dir: &Path) -> String {
    let key = dir.join("k1.key");
    std::fs::write(&key, format!("{KEY_K1}\n")).expect("write the key file");
    format!(
        "{}{}\n[integrity]\nsign_with = \"k1\"\n\
         [[integrity.key]]\nid = \"k1\"\nfile = \"{}\"\n\
         [[integrity.queues]]\nqueues = [\"*\"]\nmode = \"add\"\n",
        identities(&[APP]),
        all_of_asynq(APP),
        key.display()
    )
}

/// What one test runs against.
struct Setup {
    _dir: TempDir,
    _redis: Redis,
    proxy: Proxy,
    direct: Client,
    binary: PathBuf,
}

async fn setup(version: &str) -> Setup {
    let binary = harness(version);
    let dir = TempDir::new("integrity-tamper");
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy(dir.path())).await;
    let direct = redis.client().await;
    Setup {
        _dir: dir,
        _redis: redis,
        proxy,
        direct,
        binary,
    }
}

impl Setup {
    /// A harness mode through the proxy, as `app`.
    fn run(&self, args: &[&str]) -> Json {
        harness_as(&self.binary, &self.proxy.address(), APP, args)
    }

    /// Enqueues `count` tasks of type `tamper:job` to `queue` through the
    /// proxy; payloads `PAYLOAD~<queue>-000`, … Returns (id, payload)s.
    fn enqueue(&self, queue: &str, count: usize, process_in: &str) -> Vec<(String, String)> {
        self.enqueue_with(queue, count, &["-batch-process-in", process_in])
    }

    /// [`Setup::enqueue`] with more `-enqueue-batch` flags.
    fn enqueue_with(&self, queue: &str, count: usize, more: &[&str]) -> Vec<(String, String)> {
        let count_text = count.to_string();
        let payload = format!("{MARK}{queue}");
        let mut args = vec![
            "-enqueue-batch",
            "-batch-queue",
            queue,
            "-batch-type",
            "tamper:job",
            "-batch-count",
            &count_text,
            "-batch-payload",
            &payload,
        ];
        args.extend_from_slice(more);
        let out = self.run(&args);
        assert_eq!(out["errors"], serde_json::json!([]), "{out}");
        let tasks: Vec<(String, String)> = out["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| (text(&t["id"]), text(&t["payload"])))
            .collect();
        assert_eq!(tasks.len(), count, "{out}");
        tasks
    }

    /// Runs a Server on `queues` until it handled `expect` tasks and the
    /// queues are drained. Returns what it handled.
    fn handle(&self, queues: &str, expect: usize) -> Vec<Json> {
        self.handle_with(queues, expect, &[])
    }

    /// [`Setup::handle`] with more `-handle` flags.
    fn handle_with(&self, queues: &str, expect: usize, more: &[&str]) -> Vec<Json> {
        let expect_text = expect.to_string();
        let mut args = vec![
            "-handle",
            "-handle-queues",
            queues,
            "-handle-expect",
            &expect_text,
            "-handle-timeout",
            "90s",
            "-handle-settle",
            "2s",
            "-handle-delayed-check",
            "1s",
            "-quiet",
        ];
        args.extend_from_slice(more);
        let out = self.run(&args);
        assert_eq!(out["start_error"], "", "{out}");
        assert_eq!(out["inspect_error"], "", "{out}");
        assert_eq!(
            out["reached"], true,
            "the worker never handled {expect}: {out}"
        );
        assert_eq!(out["drained"], true, "the queues were never drained: {out}");
        assert_eq!(out["errors"], 0, "asynq logged errors: {out}");
        out["handled"].as_array().expect("handled").clone()
    }

    /// The Inspector's listings of `queue` (`states`) and task infos of
    /// `ids`, through the proxy.
    fn inspect(&self, queue: &str, states: &str, ids: &[&str]) -> Json {
        let ids = ids.join(",");
        let out = self.run(&[
            "-list-tasks",
            "-list-queue",
            queue,
            "-list-states",
            states,
            "-list-ids",
            &ids,
        ]);
        assert_eq!(out["list_errors"], serde_json::json!({}), "{out}");
        out
    }

    async fn message(&mut self, queue: &str, id: &str) -> Vec<u8> {
        match self
            .direct
            .cmd(&["HGET", &task_key(queue, id), "msg"])
            .await
        {
            Value::Bulk(b) => b,
            other => panic!("HGET {}: {other:?}", task_key(queue, id)),
        }
    }

    async fn set_message(&mut self, queue: &str, id: &str, msg: &[u8]) {
        let key = task_key(queue, id);
        self.direct
            .send_bytes(&[b"HSET", key.as_bytes(), b"msg", msg])
            .await;
        assert_eq!(self.direct.read().await, support::int(0), "HSET {key}");
    }

    async fn field(&mut self, queue: &str, id: &str, field: &str) -> Value {
        self.direct
            .cmd(&["HGET", &task_key(queue, id), field])
            .await
    }

    /// Makes pending task `id` look as if a worker took it and died an
    /// hour ago: in the active list, with a lease that ran out long
    /// before the recoverer's 30 seconds of allowed clock skew.
    async fn expire_lease(&mut self, queue: &str, id: &str) {
        assert_eq!(
            self.direct
                .cmd(&["LREM", &format!("asynq:{{{queue}}}:pending"), "1", id])
                .await,
            support::int(1),
            "{id} was not pending"
        );
        self.direct
            .cmd(&["LPUSH", &format!("asynq:{{{queue}}}:active"), id])
            .await;
        let expired = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            - 3600;
        assert_eq!(
            self.direct
                .cmd(&[
                    "ZADD",
                    &format!("asynq:{{{queue}}}:lease"),
                    &expired.to_string(),
                    id
                ])
                .await,
            support::int(1)
        );
        assert_eq!(
            self.direct
                .cmd(&["HSET", &task_key(queue, id), "state", "active"])
                .await,
            support::int(0)
        );
    }

    async fn archived_score(&mut self, queue: &str, id: &str) -> Value {
        self.direct
            .cmd(&["ZSCORE", &format!("asynq:{{{queue}}}:archived"), id])
            .await
    }
}

fn text(v: &Json) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn task_key(queue: &str, id: &str) -> String {
    format!("asynq:{{{queue}}}:t:{id}")
}

// === the stored message, byte-wise ===

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0;
    for shift in (0..64).step_by(7) {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long");
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A stored message split into the message without its signature field
/// and the signature field's text (`v1:<kid>:<hex>`), if it has one.
fn split(stored: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut rest = Vec::new();
    let mut signature = None;
    let mut pos = 0;
    while pos < stored.len() {
        let start = pos;
        let key = varint(stored, &mut pos);
        let mut value = pos..pos;
        match key & 7 {
            0 => {
                varint(stored, &mut pos);
            }
            1 => pos += 8,
            2 => {
                let len = varint(stored, &mut pos) as usize;
                value = pos..pos + len;
                pos += len;
            }
            5 => pos += 4,
            wire => panic!("wire type {wire} in a task message"),
        }
        if key >> 3 == CARRIER {
            assert!(signature.is_none(), "two signature fields");
            signature = Some(String::from_utf8(stored[value].to_vec()).expect("UTF-8 signature"));
        } else {
            rest.extend_from_slice(&stored[start..pos]);
        }
    }
    (rest, signature)
}

/// `msg` with `signature` appended as the carrier field.
fn with_signature(msg: &[u8], signature: &str) -> Vec<u8> {
    let mut out = msg.to_vec();
    put_varint(&mut out, (CARRIER << 3) | 2);
    put_varint(&mut out, signature.len() as u64);
    out.extend_from_slice(signature.as_bytes());
    out
}

/// The signature of `msg` under key `id` with secret `secret`, in the
/// format of `docs/integrity.md`.
fn signature_of(msg: &[u8], id: &str, secret: &str) -> String {
    let m = TaskMessage::decode(msg).expect("a task message");
    let mac = sign::mac(secret.as_bytes(), &sign::canonical(&m));
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1:{id}:{hex}")
}

/// The stored message with its decoded part changed by `change`, the
/// signature kept as it is.
fn altered(stored: &[u8], change: impl FnOnce(&mut TaskMessage)) -> Vec<u8> {
    let (rest, signature) = split(stored);
    let mut m = TaskMessage::decode(&rest[..]).expect("a task message");
    change(&mut m);
    with_signature(&m.encode_to_vec(), &signature.expect("a signed message"))
}

// === metrics and the log ===

/// The sum of every series of `family` whose labels hold all of `labels`.
fn sum(metrics: &str, family: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The proxy's audit events about task integrity.
fn integrity_events(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("asynq_guard::audit") && l.contains("event=\"integrity\""))
        .collect()
}

fn assert_no_payload_in(log: &str) {
    assert!(
        !log.contains(MARK) && !log.contains("forged"),
        "a payload reached the proxy's log:\n{log}"
    );
}

/// The tasks of a listing, by id.
/// The metrics and audit log after one task of `queue` (id `victim`)
/// failed its check on the way to a worker: counted once as a delivery
/// failure and once as archived, one audit line naming it, no payload.
async fn assert_one_withheld(proxy: &Proxy, queue: &str, victim: &str) {
    let metrics = proxy.metrics().await;
    let failures = "asynq_guard_integrity_failures_total";
    assert_eq!(
        sum(&metrics, failures, &["path=\"deliver\""]),
        1.0,
        "{metrics}"
    );
    let queue_label = format!("queue=\"{queue}\"");
    assert_eq!(
        sum(
            &metrics,
            failures,
            &["path=\"deliver\"", "reason=\"bad_signature\"", &queue_label]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            "asynq_guard_integrity_archived_total",
            &["outcome=\"archived\"", &queue_label]
        ),
        1.0,
        "{metrics}"
    );
    let log = proxy.stderr();
    let withheld: Vec<&str> = integrity_events(&log)
        .into_iter()
        .filter(|l| l.contains("task withheld from a worker"))
        .collect();
    assert_eq!(withheld.len(), 1, "{log}");
    assert!(withheld[0].contains(victim), "{log}");
    assert_no_payload_in(&log);
}

fn by_id(listing: &Json) -> BTreeMap<String, Json> {
    listing
        .as_array()
        .unwrap_or_else(|| panic!("not a listing: {listing}"))
        .iter()
        .map(|t| (text(&t["id"]), t.clone()))
        .collect()
}

const FAILED: &str = "asynq-guard: integrity check failed: ";

// === the tests ===

/// The ways a pending task is changed in Redis, with the reason the proxy
/// gives (metric label) and the words of its error.
const CASES: [(&str, &str, &str); 6] = [
    ("payload altered", "bad_signature", "does not match"),
    ("type altered", "bad_signature", "does not match"),
    ("signature removed", "unsigned", "no signature"),
    (
        "signature of another task",
        "bad_signature",
        "does not match",
    ),
    (
        "retired key",
        "unknown_key",
        "'k0', which is not a listed key",
    ),
    (
        "queue A's message in queue B",
        "wrong_queue",
        "belongs to queue 'orders'",
    ),
];

/// The id the message of queue A gets in queue B.
const INJECTED: &str = "injected-from-orders";

async fn tampered_pending_tasks_are_withheld_and_archived(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = setup(version).await;
    let orders = s.enqueue("orders", 20, "0s");
    let billing = s.enqueue("billing", 5, "0s");

    // Every message in Redis carries the proxy's signature under k1.
    for (id, _) in &orders {
        let (rest, signature) = split(&s.message("orders", id).await);
        let signature = signature.unwrap_or_else(|| panic!("task {id} is not signed"));
        assert_eq!(signature, signature_of(&rest, "k1", KEY_K1), "task {id}");
    }

    // Tamper, one way per task, directly in Redis.
    let id = |i: usize| orders[i].0.clone();
    let stored = s.message("orders", &id(2)).await;
    let forged = altered(&stored, |m| m.payload = b"forged payload".to_vec());
    s.set_message("orders", &id(2), &forged).await;

    let stored = s.message("orders", &id(5)).await;
    let forged = altered(&stored, |m| m.r#type = "forged:type".into());
    s.set_message("orders", &id(5), &forged).await;

    let (rest, _) = split(&s.message("orders", &id(8)).await);
    s.set_message("orders", &id(8), &rest).await;

    let (_, donor) = split(&s.message("orders", &id(12)).await);
    let (rest, _) = split(&s.message("orders", &id(11)).await);
    s.set_message(
        "orders",
        &id(11),
        &with_signature(&rest, &donor.expect("signed")),
    )
    .await;

    // A correct MAC under a key that is no longer listed.
    let (rest, _) = split(&s.message("orders", &id(14)).await);
    let retired = signature_of(&rest, "k0", KEY_K0);
    s.set_message("orders", &id(14), &with_signature(&rest, &retired))
        .await;

    // The same re-signing under the listed key: this task is fine, which
    // shows the re-signed one above fails for its key alone.
    let (rest, _) = split(&s.message("orders", &id(17)).await);
    let resigned = signature_of(&rest, "k1", KEY_K1);
    s.set_message("orders", &id(17), &with_signature(&rest, &resigned))
        .await;

    // Queue A's signed message as a new task of queue B (task 0 stays in
    // queue A, untouched).
    let copied = s.message("orders", &id(0)).await;
    let key = task_key("billing", INJECTED);
    s.direct
        .send_bytes(&[
            b"HSET",
            key.as_bytes(),
            b"msg",
            &copied,
            b"state",
            b"pending",
            b"pending_since",
            b"1700000000000000000",
        ])
        .await;
    assert_eq!(s.direct.read().await, support::int(3));
    assert_eq!(
        s.direct
            .cmd(&["LPUSH", "asynq:{billing}:pending", INJECTED])
            .await,
        support::int(6)
    );
    assert_eq!(
        s.direct.cmd(&["SADD", "asynq:queues", "billing"]).await,
        support::int(0)
    );

    let tampered: Vec<String> = [2, 5, 8, 11, 14].map(id).to_vec();
    let untouched: BTreeMap<String, (String, String)> = orders
        .iter()
        .filter(|(i, _)| !tampered.contains(i))
        .map(|(i, p)| (i.clone(), ("orders".to_string(), p.clone())))
        .chain(
            billing
                .iter()
                .map(|(i, p)| (i.clone(), ("billing".to_string(), p.clone()))),
        )
        .collect();
    assert_eq!(untouched.len(), 20);

    // A real asynq Server through the proxy.
    let handled = s.handle("orders,billing", untouched.len());
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for h in &handled {
        assert_eq!(h["type"], "tamper:job", "{h}");
        let payload = text(&h["payload"]);
        assert!(
            !payload.contains("forged"),
            "a forged payload was handled: {h}"
        );
        let before = seen.insert(text(&h["id"]), (text(&h["queue"]), payload));
        assert!(before.is_none(), "handled twice: {h}");
    }
    assert_eq!(
        seen, untouched,
        "the worker handled exactly the untouched tasks, each once, as enqueued"
    );

    // Each tampered task is archived with the integrity error.
    let mut stored_errors = Vec::new();
    for (i, task) in tampered.iter().enumerate() {
        assert_eq!(
            s.field("orders", task, "state").await,
            support::bulk("archived")
        );
        assert_ne!(
            s.archived_score("orders", task).await,
            Value::Null,
            "{task}"
        );
        stored_errors.push((CASES[i], s.message("orders", task).await));
    }
    assert_eq!(
        s.field("billing", INJECTED, "state").await,
        support::bulk("archived")
    );
    assert_ne!(s.archived_score("billing", INJECTED).await, Value::Null);
    stored_errors.push((CASES[5], s.message("billing", INJECTED).await));
    for ((what, _, words), stored) in &stored_errors {
        let (rest, signature) = split(stored);
        assert!(
            signature
                .as_deref()
                .is_some_and(|s| s.starts_with("quarantined:")),
            "{what}: archived without the proxy's mark, or with a signature: {signature:?}"
        );
        let m = TaskMessage::decode(&rest[..]).expect("a task message");
        assert!(
            m.error_msg.starts_with(FAILED) && m.error_msg.contains(words),
            "{what}: {}",
            m.error_msg
        );
        assert!(m.last_failed_at > 0, "{what}");
    }
    for q in ["orders", "billing"] {
        for list in ["pending", "active"] {
            assert_eq!(
                s.direct
                    .cmd(&["LLEN", &format!("asynq:{{{q}}}:{list}")])
                    .await,
                support::int(0),
                "{q} {list}"
            );
        }
    }

    // asynq's Inspector, through the proxy, shows them archived with the
    // integrity error and the reason each was archived for.
    let seen = s.inspect(
        "orders",
        "archived",
        &tampered.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let archived = by_id(&seen["lists"]["archived"]);
    assert_eq!(
        archived.keys().cloned().collect::<Vec<_>>(),
        {
            let mut t = tampered.clone();
            t.sort();
            t
        },
        "{seen}"
    );
    for (i, id) in tampered.iter().enumerate() {
        let task = &archived[id];
        assert_eq!(task["state"], "archived", "{task}");
        let error = text(&task["last_err"]);
        assert!(
            error.starts_with(FAILED) && error.contains(CASES[i].2),
            "{}: {task}",
            CASES[i].0
        );
    }
    for info in seen["infos"].as_array().expect("infos") {
        assert_eq!(info["error"], "", "{info}");
        assert_eq!(info["task"]["state"], "archived", "{info}");
        assert!(
            text(&info["task"]["last_err"]).starts_with(FAILED),
            "{info}"
        );
    }
    // In queue B the copied message is shown under the task that held it
    // (so an operator can delete it by that id); it is the one archived
    // task of queue B.
    let seen = s.inspect("billing", "archived", &[INJECTED]);
    let archived = seen["lists"]["archived"].as_array().expect("archived");
    assert_eq!(archived.len(), 1, "{seen}");
    assert_eq!(archived[0]["id"], INJECTED, "{seen}");
    assert_eq!(archived[0]["queue"], "billing", "{seen}");
    assert!(text(&archived[0]["last_err"]).starts_with(FAILED), "{seen}");
    assert!(
        text(&archived[0]["last_err"]).contains("belongs to queue 'orders'"),
        "{seen}"
    );

    // Metrics: six withheld at delivery, six archived, for these reasons.
    let metrics = s.proxy.metrics().await;
    let failures = "asynq_guard_integrity_failures_total";
    assert_eq!(
        sum(&metrics, failures, &["path=\"deliver\""]),
        6.0,
        "{metrics}"
    );
    // Looking at archived tasks counts nothing more: they were counted
    // once, when withheld.
    assert_eq!(
        sum(&metrics, failures, &["path=\"inspect\""]),
        0.0,
        "{metrics}"
    );
    for (reason, queue, n) in [
        ("bad_signature", "orders", 3.0),
        ("unsigned", "orders", 1.0),
        ("unknown_key", "orders", 1.0),
        ("wrong_queue", "billing", 1.0),
    ] {
        assert_eq!(
            sum(
                &metrics,
                failures,
                &[
                    "path=\"deliver\"",
                    &format!("reason=\"{reason}\""),
                    &format!("queue=\"{queue}\"")
                ]
            ),
            n,
            "{reason}: {metrics}"
        );
    }
    let archived_total = "asynq_guard_integrity_archived_total";
    assert_eq!(
        sum(&metrics, archived_total, &["outcome=\"archived\""]),
        6.0,
        "{metrics}"
    );
    assert_eq!(sum(&metrics, archived_total, &[]), 6.0, "{metrics}");
    // Every enqueue signed. The proxy counts a signature when it forwards
    // the enqueue, so queue A's first one, which go-redis sends as EVALSHA,
    // is answered NOSCRIPT and sends again as EVAL, may count twice; queue
    // B's producer finds the script loaded.
    let signed = "asynq_guard_integrity_signed_total";
    let enqueued = |q: &str| {
        sum(
            &metrics,
            signed,
            &["how=\"enqueue\"", &format!("queue=\"{q}\"")],
        )
    };
    assert!((20.0..=21.0).contains(&enqueued("orders")), "{metrics}");
    assert_eq!(enqueued("billing"), 5.0, "{metrics}");
    assert_eq!(
        sum(&metrics, signed, &[]),
        enqueued("orders") + 5.0,
        "{metrics}"
    );

    // One audit event per withheld task, naming it, and no payload
    // anywhere in the log.
    let log = s.proxy.stderr();
    let withheld: Vec<&str> = integrity_events(&log)
        .into_iter()
        .filter(|l| l.contains("task withheld from a worker"))
        .collect();
    assert_eq!(withheld.len(), 6, "{log}");
    for (task, (what, reason, _)) in tampered
        .iter()
        .map(String::as_str)
        .chain([INJECTED])
        .zip(CASES)
    {
        assert!(
            withheld
                .iter()
                .any(|l| l.contains(task) && l.contains(&format!("reason=\"{reason}\""))),
            "{what}: no audit event for {task}:\n{log}"
        );
    }
    assert_no_payload_in(&log);
}

/// A scheduled task whose payload is changed while it waits is withheld
/// the same way once it is due: asynq's forwarder moves it to pending
/// (no message passes the proxy), and the dequeue catches it.
async fn a_tampered_scheduled_task_is_withheld_once_due(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = setup(version).await;
    let later = s.enqueue("later", 3, "4s");
    let victim = later[1].0.clone();
    assert_ne!(
        s.direct
            .cmd(&["ZSCORE", "asynq:{later}:scheduled", &victim])
            .await,
        Value::Null,
        "the task is not scheduled any more"
    );
    let stored = s.message("later", &victim).await;
    let forged = altered(&stored, |m| m.payload = b"forged payload".to_vec());
    s.set_message("later", &victim, &forged).await;

    let handled = s.handle("later", 2);
    let got: BTreeMap<String, String> = handled
        .iter()
        .map(|h| (text(&h["id"]), text(&h["payload"])))
        .collect();
    let want: BTreeMap<String, String> = [&later[0], &later[2]].into_iter().cloned().collect();
    assert_eq!(got, want, "{handled:?}");
    assert_eq!(handled.len(), 2, "{handled:?}");

    assert_eq!(
        s.field("later", &victim, "state").await,
        support::bulk("archived")
    );
    let seen = s.inspect("later", "archived", &[&victim]);
    let archived = by_id(&seen["lists"]["archived"]);
    assert_eq!(archived.len(), 1, "{seen}");
    assert!(
        text(&archived[&victim]["last_err"]).starts_with(FAILED),
        "{seen}"
    );
    assert!(
        text(&seen["infos"][0]["task"]["last_err"]).starts_with(FAILED),
        "{seen}"
    );

    let metrics = s.proxy.metrics().await;
    assert_eq!(
        sum(
            &metrics,
            "asynq_guard_integrity_failures_total",
            &[
                "path=\"deliver\"",
                "reason=\"bad_signature\"",
                "queue=\"later\""
            ]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            "asynq_guard_integrity_archived_total",
            &["outcome=\"archived\"", "queue=\"later\""]
        ),
        1.0,
        "{metrics}"
    );
    let log = s.proxy.stderr();
    assert!(
        integrity_events(&log)
            .iter()
            .any(|l| l.contains("task withheld from a worker") && l.contains(&victim)),
        "{log}"
    );
    assert_no_payload_in(&log);
}

/// With no worker running, an Inspector listing pending tasks through the
/// proxy (asynqmon, the asynq CLI) shows a tampered task with the
/// integrity error as its last error, and the others as they are;
/// nothing changes in Redis.
async fn inspectors_see_a_tampered_pending_task_marked(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = setup(version).await;
    let idle = s.enqueue("idle", 3, "0s");
    let victim = idle[1].0.clone();
    let stored = s.message("idle", &victim).await;
    let forged = altered(&stored, |m| m.payload = b"forged payload".to_vec());
    s.set_message("idle", &victim, &forged).await;

    let ids: Vec<&str> = idle.iter().map(|(i, _)| i.as_str()).collect();
    let seen = s.inspect("idle", "pending", &ids);
    let pending = by_id(&seen["lists"]["pending"]);
    assert_eq!(pending.len(), 3, "{seen}");
    for (id, payload) in &idle {
        let task = &pending[id];
        assert_eq!(task["state"], "pending", "{task}");
        let last_err = text(&task["last_err"]);
        if *id == victim {
            assert!(
                last_err.starts_with(FAILED) && last_err.contains("does not match"),
                "{task}"
            );
        } else {
            assert_eq!(last_err, "", "{task}");
            assert_eq!(task["payload"], payload.as_str(), "{task}");
        }
    }
    for info in seen["infos"].as_array().expect("infos") {
        let last_err = text(&info["task"]["last_err"]);
        assert_eq!(
            last_err.starts_with(FAILED),
            info["id"] == victim.as_str(),
            "{info}"
        );
    }

    // Looking changed nothing: the task is still pending, as tampered.
    assert_eq!(s.message("idle", &victim).await, forged);
    assert_eq!(
        s.field("idle", &victim, "state").await,
        support::bulk("pending")
    );
    assert_eq!(
        s.direct.cmd(&["LLEN", "asynq:{idle}:pending"]).await,
        support::int(3)
    );

    let metrics = s.proxy.metrics().await;
    let failures = "asynq_guard_integrity_failures_total";
    assert_eq!(
        sum(
            &metrics,
            failures,
            &["path=\"inspect\"", "reason=\"bad_signature\""]
        ),
        2.0,
        "one listing and one task info: {metrics}"
    );
    assert_eq!(
        sum(&metrics, failures, &["path=\"deliver\""]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "asynq_guard_integrity_archived_total", &[]),
        0.0,
        "{metrics}"
    );
    let log = s.proxy.stderr();
    assert_eq!(
        integrity_events(&log)
            .iter()
            .filter(|l| l.contains("failing task shown to an inspector"))
            .count(),
        2,
        "{log}"
    );
    assert_no_payload_in(&log);
}

/// A task tampered with while a worker held it, whose worker then died:
/// asynq's recoverer finds it by its expired lease (`listLeaseExpired`)
/// and would retry it. The proxy withholds it from the recoverer and
/// archives it, so no handler ever gets it; an untouched task whose
/// lease expired the same way is recovered and handled (the recovery
/// path did run), and the pending ones are handled once each.
async fn a_tampered_task_with_an_expired_lease_is_not_recovered(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = setup(version).await;
    let tasks = s.enqueue("leased", 4, "0s");
    let victim = tasks[1].0.clone();
    let revived = tasks[2].0.clone();
    s.expire_lease("leased", &victim).await;
    s.expire_lease("leased", &revived).await;
    let stored = s.message("leased", &victim).await;
    let forged = altered(&stored, |m| m.payload = b"forged payload".to_vec());
    s.set_message("leased", &victim, &forged).await;
    assert_eq!(
        s.direct.cmd(&["LLEN", "asynq:{leased}:pending"]).await,
        support::int(2)
    );

    let handled = s.handle_with("leased", 3, &["-handle-retry-delay", "1s"]);
    let got: BTreeMap<String, (String, u64)> = handled
        .iter()
        .map(|h| {
            assert!(
                !text(&h["payload"]).contains("forged"),
                "a forged payload was handled: {h}"
            );
            let retried = h["retried"].as_u64().expect("retried");
            (text(&h["id"]), (text(&h["payload"]), retried))
        })
        .collect();
    assert_eq!(got.len(), handled.len(), "handled twice: {handled:?}");
    // The recovered task comes back as a retry of a lease-expired run.
    let want: BTreeMap<String, (String, u64)> = tasks
        .iter()
        .filter(|(id, _)| *id != victim)
        .map(|(id, p)| (id.clone(), (p.clone(), u64::from(*id == revived))))
        .collect();
    assert_eq!(got, want, "{handled:?}");

    // Archived by the proxy straight from active: asynq never retried it.
    assert_eq!(
        s.field("leased", &victim, "state").await,
        support::bulk("archived")
    );
    assert_ne!(s.archived_score("leased", &victim).await, Value::Null);
    for (kind, key) in [("LLEN", "active"), ("ZCARD", "lease"), ("ZCARD", "retry")] {
        assert_eq!(
            s.direct
                .cmd(&[kind, &format!("asynq:{{leased}}:{key}")])
                .await,
            support::int(0),
            "{key}"
        );
    }
    let (rest, signature) = split(&s.message("leased", &victim).await);
    assert!(
        signature
            .as_deref()
            .is_some_and(|s| s.starts_with("quarantined:")),
        "{signature:?}"
    );
    let m = TaskMessage::decode(&rest[..]).expect("a task message");
    assert!(
        m.error_msg.starts_with(FAILED) && m.error_msg.contains("does not match"),
        "{}",
        m.error_msg
    );
    assert_eq!(m.retried, 0, "the recoverer retried it first");

    let seen = s.inspect("leased", "archived,retry,active", &[&victim]);
    assert_eq!(seen["lists"]["retry"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["lists"]["active"], serde_json::json!([]), "{seen}");
    let archived = by_id(&seen["lists"]["archived"]);
    assert_eq!(archived.len(), 1, "{seen}");
    let task = &archived[&victim];
    assert!(text(&task["last_err"]).starts_with(FAILED), "{task}");
    assert_eq!(task["retried"], 0, "{task}");
    assert!(
        text(&seen["infos"][0]["task"]["last_err"]).starts_with(FAILED),
        "{seen}"
    );

    assert_one_withheld(&s.proxy, "leased", &victim).await;
}

/// Tasks enqueued into a group wait there for asynq's aggregator, which
/// reads them (`readAggregationSet`) and hands them to the
/// GroupAggregator as one batch. A grouped task tampered with while it
/// waits is left out of the batch and archived; its siblings are
/// aggregated and the aggregated task is handled once.
async fn a_tampered_grouped_task_is_left_out_of_the_aggregation(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = setup(version).await;
    let grouped = s.enqueue_with("grouped", 5, &["-batch-group", "g"]);
    let victim = grouped[2].0.clone();
    assert_eq!(
        s.direct.cmd(&["ZCARD", "asynq:{grouped}:g:g"]).await,
        support::int(5),
        "the tasks are not waiting in their group"
    );
    assert_eq!(
        s.field("grouped", &victim, "state").await,
        support::bulk("aggregating")
    );
    let stored = s.message("grouped", &victim).await;
    let forged = altered(&stored, |m| m.payload = b"forged payload".to_vec());
    s.set_message("grouped", &victim, &forged).await;

    let handled = s.handle_with("grouped", 1, &["-handle-group-grace", "1s"]);
    let mut batched = Vec::new();
    for h in &handled {
        assert_eq!(h["type"], "aggregated", "a grouped task handled alone: {h}");
        assert_eq!(h["queue"], "grouped", "{h}");
        for p in h["batch"].as_array().expect("an aggregated task's batch") {
            batched.push(text(p));
        }
    }
    assert!(
        batched.iter().all(|p| !p.contains("forged")),
        "a forged payload was aggregated: {handled:?}"
    );
    batched.sort();
    let want: Vec<String> = grouped
        .iter()
        .filter(|(id, _)| *id != victim)
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(batched, want, "{handled:?}");

    assert_eq!(
        s.field("grouped", &victim, "state").await,
        support::bulk("archived")
    );
    assert_ne!(s.archived_score("grouped", &victim).await, Value::Null);
    assert_eq!(
        s.direct.cmd(&["EXISTS", "asynq:{grouped}:g:g"]).await,
        support::int(0),
        "tasks still wait in the group"
    );
    assert_eq!(
        s.direct
            .cmd(&["ZCARD", "asynq:{grouped}:aggregation_sets"])
            .await,
        support::int(0),
        "an aggregation set was left behind"
    );
    let (rest, signature) = split(&s.message("grouped", &victim).await);
    assert!(
        signature
            .as_deref()
            .is_some_and(|s| s.starts_with("quarantined:")),
        "{signature:?}"
    );
    let m = TaskMessage::decode(&rest[..]).expect("a task message");
    assert!(
        m.error_msg.starts_with(FAILED) && m.error_msg.contains("does not match"),
        "{}",
        m.error_msg
    );

    let seen = s.inspect("grouped", "archived", &[&victim]);
    let archived = by_id(&seen["lists"]["archived"]);
    assert_eq!(archived.len(), 1, "{seen}");
    assert!(
        text(&archived[&victim]["last_err"]).starts_with(FAILED),
        "{seen}"
    );
    assert!(
        text(&seen["infos"][0]["task"]["last_err"]).starts_with(FAILED),
        "{seen}"
    );

    assert_one_withheld(&s.proxy, "grouped", &victim).await;
}

macro_rules! per_version {
    ($($name:ident: $test:ident($version:literal);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $test($version).await;
        }
    )*};
}

per_version! {
    asynq_v0_24_1_tampered_pending_tasks_are_withheld_and_archived:
        tampered_pending_tasks_are_withheld_and_archived("v0.24.1");
    asynq_v0_25_1_tampered_pending_tasks_are_withheld_and_archived:
        tampered_pending_tasks_are_withheld_and_archived("v0.25.1");
    asynq_v0_26_0_tampered_pending_tasks_are_withheld_and_archived:
        tampered_pending_tasks_are_withheld_and_archived("v0.26.0");
    asynq_v0_24_1_a_tampered_scheduled_task_is_withheld_once_due:
        a_tampered_scheduled_task_is_withheld_once_due("v0.24.1");
    asynq_v0_25_1_a_tampered_scheduled_task_is_withheld_once_due:
        a_tampered_scheduled_task_is_withheld_once_due("v0.25.1");
    asynq_v0_26_0_a_tampered_scheduled_task_is_withheld_once_due:
        a_tampered_scheduled_task_is_withheld_once_due("v0.26.0");
    asynq_v0_24_1_inspectors_see_a_tampered_pending_task_marked:
        inspectors_see_a_tampered_pending_task_marked("v0.24.1");
    asynq_v0_25_1_inspectors_see_a_tampered_pending_task_marked:
        inspectors_see_a_tampered_pending_task_marked("v0.25.1");
    asynq_v0_26_0_inspectors_see_a_tampered_pending_task_marked:
        inspectors_see_a_tampered_pending_task_marked("v0.26.0");
    asynq_v0_24_1_a_tampered_task_with_an_expired_lease_is_not_recovered:
        a_tampered_task_with_an_expired_lease_is_not_recovered("v0.24.1");
    asynq_v0_26_0_a_tampered_task_with_an_expired_lease_is_not_recovered:
        a_tampered_task_with_an_expired_lease_is_not_recovered("v0.26.0");
    asynq_v0_24_1_a_tampered_grouped_task_is_left_out_of_the_aggregation:
        a_tampered_grouped_task_is_left_out_of_the_aggregation("v0.24.1");
    asynq_v0_26_0_a_tampered_grouped_task_is_left_out_of_the_aggregation:
        a_tampered_grouped_task_is_left_out_of_the_aggregation("v0.26.0");
}
