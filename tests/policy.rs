//! Per-identity grants: one policy with several identities, each on a
//! connection of its own, each sending what its grant covers and what it
//! does not. What a grant covers reaches Redis and gets Redis's reply;
//! everything else gets `-NOPERM` naming the identity and the operation,
//! queue or task type that is missing, is counted in
//! `asynq_guard_refusals_total` and audited, and leaves Redis exactly as
//! it was (keys, values, databases, script cache and command counts,
//! compared directly before and after). A `raw` grant lets the same
//! commands through, except what concealment refuses to everyone.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{LazyLock, Mutex};

use asynq_guard::asynq::catalog;
use asynq_guard::asynq::message::TaskMessage;
use prost::Message;
use support::{
    Client, Deadline, Proxy, Redis, Value, array, bulk, int, metric, ok, secret_hash, simple,
};

// === the policy ===

/// Every identity of the policy. `test` holds `raw`, `nobody` nothing.
const IDENTITIES: [&str; 6] = [
    "producer",
    "worker",
    "dashboard",
    "operator",
    "nobody",
    "test",
];

/// The identities without `raw`.
const NOT_RAW: [&str; 5] = ["producer", "worker", "dashboard", "operator", "nobody"];

const GRANTS: &str = r#"
[[grant]]
identity = "producer"
operations = ["enqueue"]
queues = ["a"]
task_types = ["email:*"]

[[grant]]
identity = "worker"
operations = ["consume"]
queues = ["a"]

[[grant]]
identity = "dashboard"
operations = ["inspect"]
queues = ["*"]

[[grant]]
identity = "operator"
operations = ["inspect", "manage"]
queues = ["a"]

[[grant]]
identity = "test"
operations = ["raw"]
"#;

fn secret(identity: &str) -> String {
    format!("{identity}-secret-5c2e")
}

/// The `[[identity]]` and `[[grant]]` tables, with hashes computed once
/// by the binary under test.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    let mut text = String::new();
    for name in IDENTITIES {
        text.push_str(&format!(
            "[[identity]]\nname = \"{name}\"\nsecret_sha256 = [\"{}\"]\n\n",
            secret_hash(&secret(name))
        ));
    }
    text.push_str(GRANTS);
    text
});

async fn start() -> (Redis, Proxy) {
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &POLICY).await;
    (redis, proxy)
}

/// A new connection to the proxy, logged in as `identity`.
async fn login(proxy: &Proxy, identity: &str) -> Client {
    Client::connect_as(&proxy.address(), identity, &secret(identity)).await
}

// === asynq's scripts and messages ===

/// The body of asynq v0.26.0's script variable `name`, read from the Go
/// module cache (each body once per test binary).
fn asynq_script(name: &str) -> String {
    static BODIES: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);
    let mut bodies = BODIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(body) = bodies.get(name) {
        return body.clone();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness");
    let module = Command::new("go")
        .args(["list", "-m", "-f", "{{.Dir}}", "github.com/hibiken/asynq"])
        .current_dir(&dir)
        .output()
        .expect("go list (is Go installed?)");
    assert!(module.status.success(), "go list asynq");
    let module = String::from_utf8(module.stdout).expect("path");
    let out = Command::new("go")
        .args(["run", "./cmd/scriptshas", "-print", name, module.trim()])
        .current_dir(&dir)
        .output()
        .expect("run scriptshas");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8(out.stdout).expect("UTF-8 script");
    bodies.insert(name.to_string(), body.clone());
    body
}

/// One of asynq's scripts: its body and the SHA that EVALSHA names.
struct Script {
    body: String,
    sha: String,
}

/// asynq's script `variable`, checked to be the catalog's `op`, and
/// loaded into Redis directly (not through the proxy) so that EVALSHA
/// would run it if the proxy let it through.
async fn load(direct: &mut Client, variable: &str, op: &str) -> Script {
    let body = asynq_script(variable);
    let sha = catalog::sha1_hex(body.as_bytes());
    assert!(
        catalog::SCRIPTS.iter().any(|s| s.sha == sha && s.op == op),
        "{variable} ({sha}) is not the catalog's {op}"
    );
    assert_eq!(direct.cmd(&["SCRIPT", "LOAD", &body]).await, bulk(&sha));
    Script { body, sha }
}

/// A payload no log line or metric may ever show.
const PAYLOAD: &[u8] = b"PAYLOAD-9f3c-never-logged";

/// An encoded task message with [`PAYLOAD`].
fn message(queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    TaskMessage {
        r#type: task_type.into(),
        payload: PAYLOAD.to_vec(),
        id: id.into(),
        queue: queue.into(),
        retry: 25,
        timeout: 1800,
        ..Default::default()
    }
    .encode_to_vec()
}

/// `EVALSHA <sha>` or `EVAL <body>` with these KEYS and ARGV.
fn call(verb: &str, script: &Script, keys: &[&[u8]], argv: &[&[u8]]) -> Vec<Vec<u8>> {
    let target = if verb.starts_with("EVALSHA") {
        &script.sha
    } else {
        &script.body
    };
    let mut args = vec![
        verb.as_bytes().to_vec(),
        target.as_bytes().to_vec(),
        keys.len().to_string().into_bytes(),
    ];
    args.extend(keys.iter().chain(argv).map(|a| a.to_vec()));
    args
}

/// asynq's enqueue of `msg` with task id `id` to `queue` (as the keys
/// name it), as `verb`.
fn enqueue(verb: &str, script: &Script, queue: &str, id: &str, msg: &[u8]) -> Vec<Vec<u8>> {
    let task = format!("asynq:{{{queue}}}:t:{id}");
    let pending = format!("asynq:{{{queue}}}:pending");
    call(
        verb,
        script,
        &[task.as_bytes(), pending.as_bytes()],
        &[msg, id.as_bytes(), b"1700000000000000000"],
    )
}

/// asynq's dequeue from `queue`, with `prefix` as the task key prefix
/// (asynq passes `asynq:{<queue>}:t:`).
fn dequeue(verb: &str, script: &Script, queue: &str, prefix: &str) -> Vec<Vec<u8>> {
    let keys: Vec<String> = ["pending", "paused", "active", "lease"]
        .iter()
        .map(|k| format!("asynq:{{{queue}}}:{k}"))
        .collect();
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    call(verb, script, &keys, &[b"1700000030", prefix.as_bytes()])
}

/// Sends one command given as owned arguments and reads its reply.
async fn send(client: &mut Client, args: &[Vec<u8>]) -> Value {
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    client.send_bytes(&args).await;
    client.read().await
}

/// A pending task of `queue` written into Redis directly, as asynq's
/// enqueue leaves it.
async fn seed_task(direct: &mut Client, queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    let msg = message(queue, id, task_type);
    let task = format!("asynq:{{{queue}}}:t:{id}");
    direct
        .send_bytes(&[
            b"HSET",
            task.as_bytes(),
            b"msg",
            &msg,
            b"state",
            b"pending",
            b"pending_since",
            b"1700000000000000000",
        ])
        .await;
    assert_eq!(direct.read().await, int(3));
    let pending = format!("asynq:{{{queue}}}:pending");
    assert_eq!(direct.cmd(&["LPUSH", &pending, id]).await, int(1));
    direct.cmd(&["SADD", "asynq:queues", queue]).await;
    msg
}

// === expected refusals ===

/// The refusal of a command that is not asynq traffic.
fn not_asynq(identity: &str, command: &str, why: &str) -> Value {
    Value::Error(format!(
        "NOPERM asynq-guard: identity '{identity}' may not send {command}: {why}; \
         only a raw grant allows what asynq does not send"
    ))
}

/// The refusal of asynq traffic no grant of `identity` covers: `ops` as
/// the text names them ("enqueue", "inspect or manage"), `queue` if the
/// command has one.
fn not_granted(identity: &str, ops: &str, queue: Option<&str>, what: &str, why: &str) -> Value {
    let on = queue
        .map(|q| format!(" on queue '{q}'"))
        .unwrap_or_default();
    Value::Error(format!(
        "NOPERM asynq-guard: identity '{identity}' may not {ops}{on} ({what}): {why}"
    ))
}

const NO_OPERATION: &str = "no grant gives it this operation";
const NO_QUEUE: &str = "no grant covers this queue";

/// Concealment's refusal: the same for every identity, raw or not.
const CONFIG_REFUSED: &str = "NOPERM asynq-guard: CONFIG is refused, it would reveal the upstream Redis's addresses, credentials or settings";

// === what Redis holds ===

/// Everything a forwarded command could have changed in Redis, read
/// directly: every key of database 0 with its `DUMP`, the key counts of
/// every database, the script cache, and the calls and errors per command
/// (without the commands this snapshot sends itself).
#[derive(Debug, PartialEq)]
struct Snapshot {
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
    keyspace: String,
    cached_scripts: String,
    commands: BTreeMap<String, String>,
}

async fn info(direct: &mut Client, section: &str) -> String {
    match direct.cmd(&["INFO", section]).await {
        Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO {section} answered {other:?}"),
    }
}

async fn snapshot(direct: &mut Client) -> Snapshot {
    // Counts first: the snapshot's own commands are not in them.
    let commands = info(direct, "commandstats")
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(':'))
        .filter(|(name, _)| !["info", "keys", "dump"].contains(name))
        .map(|(name, fields)| {
            // Calls and errors, not the times.
            let kept: Vec<&str> = fields
                .split(',')
                .filter(|f| !f.starts_with("usec"))
                .collect();
            (name.to_string(), kept.join(","))
        })
        .collect();
    let keyspace = info(direct, "keyspace").await;
    let cached_scripts = info(direct, "memory")
        .await
        .lines()
        .find(|l| l.starts_with("number_of_cached_scripts:"))
        .expect("number_of_cached_scripts in INFO memory")
        .to_string();
    let mut keys = BTreeMap::new();
    let Value::Array(names) = direct.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS * is not an array")
    };
    for name in names {
        let Value::Bulk(name) = name else {
            panic!("key {name:?}")
        };
        direct.send_bytes(&[b"DUMP", &name]).await;
        let Value::Bulk(dump) = direct.read().await else {
            panic!("DUMP of {:?}", String::from_utf8_lossy(&name))
        };
        keys.insert(name, dump);
    }
    Snapshot {
        keys,
        keyspace,
        cached_scripts,
        commands,
    }
}

/// The names of database 0's keys, sorted.
async fn key_names(direct: &mut Client) -> Vec<String> {
    let Value::Array(names) = direct.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS * is not an array")
    };
    let mut names: Vec<String> = names
        .into_iter()
        .map(|n| match n {
            Value::Bulk(b) => String::from_utf8(b).expect("UTF-8 key"),
            other => panic!("key {other:?}"),
        })
        .collect();
    names.sort();
    names
}

fn refusals(metrics: &str, identity: &str, operation: &str, reason: &str) -> Option<f64> {
    metric(
        metrics,
        &format!(
            "asynq_guard_refusals_total{{identity=\"{identity}\",operation=\"{operation}\",reason=\"{reason}\"}}"
        ),
    )
}

/// The first line of the proxy's log holding every one of `parts`,
/// waited for.
async fn log_line(proxy: &Proxy, parts: &[&str]) -> String {
    let deadline = Deadline::new(format!("a log line with {parts:?}"));
    loop {
        let log = proxy.stderr();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        deadline.tick().await;
    }
}

// === commands that are not asynq's ===

const ARBITRARY_EVAL: &str = "return redis.call('SET', 'owned', '1')";
const UNKNOWN_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Commands asynq never sends, each with the name the refusal shows and
/// why it gives.
fn outside_asynq() -> Vec<(Vec<&'static str>, &'static str, String)> {
    let arbitrary = catalog::sha1_hex(ARBITRARY_EVAL.as_bytes());
    let form = |c: &str| format!("{c} in this form is not something asynq sends");
    vec![
        (
            vec!["EVAL", ARBITRARY_EVAL, "0"],
            "EVAL",
            format!("script {arbitrary} is not one of asynq's"),
        ),
        (
            vec!["EVALSHA", UNKNOWN_SHA, "0"],
            "EVALSHA",
            format!("script {UNKNOWN_SHA} is not one of asynq's"),
        ),
        (vec!["FLUSHALL"], "FLUSHALL", form("FLUSHALL")),
        (vec!["KEYS", "*"], "KEYS", form("KEYS")),
        (
            vec!["SCRIPT", "FLUSH"],
            "SCRIPT",
            "asynq does not use SCRIPT".into(),
        ),
        (vec!["SHUTDOWN", "NOSAVE"], "SHUTDOWN", form("SHUTDOWN")),
        (vec!["SET", "owned", "1"], "SET", form("SET")),
        (vec!["GET", "seeded"], "GET", form("GET")),
        (vec!["SELECT", "1"], "SELECT", form("SELECT")),
        (vec!["DEL", "seeded"], "DEL", form("DEL")),
        (vec!["SADD", "asynq:queues", "a", "b"], "SADD", form("SADD")),
    ]
}

/// No identity without `raw` may send what asynq does not send, whatever
/// else it may do: each gets a NOPERM naming it, the command and why;
/// CONFIG gets concealment's refusal; Redis runs none of it.
#[tokio::test]
async fn every_identity_without_raw_is_refused_what_asynq_does_not_send() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["SET", "seeded", "v"]).await, ok());
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let mut clients = Vec::new();
    for name in NOT_RAW {
        clients.push((name, login(&proxy, name).await));
    }
    let before = snapshot(&mut direct).await;

    let commands = outside_asynq();
    for (name, client) in &mut clients {
        for (args, shown, why) in &commands {
            assert_eq!(
                client.cmd(args).await,
                not_asynq(name, shown, why),
                "{name}: {args:?}"
            );
        }
        assert_eq!(
            client.cmd(&["CONFIG", "GET", "*"]).await,
            Value::Error(CONFIG_REFUSED.into()),
            "{name}"
        );
    }

    assert_eq!(snapshot(&mut direct).await, before);
    assert_eq!(direct.cmd(&["EXISTS", "owned"]).await, int(0));
    assert_eq!(
        direct.cmd(&["SCRIPT", "EXISTS", &dequeue_script.sha]).await,
        array(vec![int(1)])
    );
    let metrics = proxy.metrics().await;
    for name in NOT_RAW {
        assert_eq!(
            refusals(&metrics, name, "none", "not_asynq"),
            Some(commands.len() as f64),
            "{name}\n{metrics}"
        );
        // CONFIG is refused by concealment, before the grants are asked.
        assert_eq!(
            refusals(&metrics, name, "none", "conceal"),
            Some(1.0),
            "{name}\n{metrics}"
        );
    }
}

/// The same commands from an identity with a `raw` grant reach Redis and
/// get Redis's replies: the refusals above come from the grants. CONFIG
/// stays refused, by concealment.
#[tokio::test]
async fn a_raw_grant_lets_the_same_commands_through() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    assert_eq!(direct.cmd(&["SET", "seeded", "v"]).await, ok());
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    seed_task(&mut direct, "a", "t1", "email:welcome").await;
    let mut raw = login(&proxy, "test").await;

    assert_eq!(raw.cmd(&["EVAL", ARBITRARY_EVAL, "0"]).await, ok());
    assert_eq!(direct.cmd(&["GET", "owned"]).await, bulk("1"));
    let noscript = raw.cmd(&["EVALSHA", UNKNOWN_SHA, "0"]).await;
    assert!(
        noscript.error_text().starts_with("NOSCRIPT"),
        "{noscript:?}"
    );
    assert_eq!(raw.cmd(&["GET", "seeded"]).await, bulk("v"));
    assert_eq!(raw.cmd(&["SET", "seeded", "w"]).await, ok());
    assert_eq!(direct.cmd(&["GET", "seeded"]).await, bulk("w"));
    assert_eq!(
        raw.cmd(&["SADD", "asynq:queues", "a", "b"]).await,
        int(1),
        "a is there already"
    );
    // A dequeue whose prefix names another queue is not asynq's shape,
    // but raw runs anything.
    let mixed = send(
        &mut raw,
        &dequeue("EVALSHA", &dequeue_script, "a", "asynq:{b}:t:"),
    )
    .await;
    assert_eq!(mixed, Value::Null, "asynq:{{b}}:t:t1 has no msg");
    assert_eq!(
        direct.cmd(&["LRANGE", "asynq:{a}:active", "0", "-1"]).await,
        array(vec![bulk("t1")])
    );
    assert_eq!(raw.cmd(&["SELECT", "1"]).await, ok());
    assert_eq!(raw.cmd(&["SET", "in-db-1", "x"]).await, ok());
    assert_eq!(raw.cmd(&["SELECT", "0"]).await, ok());
    let Value::Array(keys) = raw.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS *")
    };
    assert!(keys.contains(&bulk("seeded")), "{keys:?}");
    let shutdown = raw.cmd(&["SHUTDOWN", "ABORT"]).await;
    let from_redis = direct.cmd(&["SHUTDOWN", "ABORT"]).await;
    assert!(shutdown.is_error(), "{shutdown:?}");
    assert_eq!(shutdown, from_redis, "Redis's own answer to SHUTDOWN ABORT");
    assert_eq!(
        raw.cmd(&["CONFIG", "GET", "*"]).await,
        Value::Error(CONFIG_REFUSED.into())
    );
    assert_eq!(raw.cmd(&["SCRIPT", "FLUSH"]).await, ok());
    assert_eq!(
        direct.cmd(&["SCRIPT", "EXISTS", &dequeue_script.sha]).await,
        array(vec![int(0)])
    );
    assert_eq!(raw.cmd(&["FLUSHALL"]).await, ok());
    assert_eq!(direct.cmd(&["DBSIZE"]).await, int(0));
    assert_eq!(raw.cmd(&["PING"]).await, simple("PONG"));

    // The only refusal of the raw identity is concealment's.
    let metrics = proxy.metrics().await;
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("asynq_guard_refusals_total{identity=\"test\""))
        .collect();
    assert_eq!(
        refused,
        ["asynq_guard_refusals_total{identity=\"test\",operation=\"none\",reason=\"conceal\"} 1"],
        "{metrics}"
    );
}

// === catalogued scripts ===

/// A catalogued script is judged by its keys and arguments, not its
/// name: a dequeue whose task key prefix (ARGV[2]) or one of whose keys
/// names another queue than the rest is not something asynq sends, and a
/// dequeue of a queue the worker lacks is refused naming that queue; by
/// EVALSHA of the loaded script as by EVAL of its body. Nothing moves.
#[tokio::test]
async fn a_catalogued_script_naming_a_foreign_queue_is_refused() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "dequeueCmd", "dequeue").await;
    seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    seed_task(&mut direct, "b", "in-b", "email:welcome").await;
    let mut worker = login(&proxy, "worker").await;
    let before = snapshot(&mut direct).await;

    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(&mut worker, &dequeue(verb, &script, "a", "asynq:{b}:t:")).await;
        assert_eq!(
            reply,
            not_asynq(
                "worker",
                verb,
                "dequeue ARGV[2] names queue 'b' where the call's other keys name 'a'"
            ),
            "{verb}"
        );

        let mut args = dequeue(verb, &script, "a", "asynq:{a}:t:");
        args[4] = b"asynq:{b}:paused".to_vec();
        assert_eq!(
            send(&mut worker, &args).await,
            not_asynq(
                "worker",
                verb,
                "dequeue KEYS[2] names queue 'b' where the call's other keys name 'a'"
            ),
            "{verb}"
        );

        let reply = send(&mut worker, &dequeue(verb, &script, "b", "asynq:{b}:t:")).await;
        assert_eq!(
            reply,
            not_granted("worker", "consume", Some("b"), "script dequeue", NO_QUEUE),
            "{verb}"
        );
    }
    assert_eq!(snapshot(&mut direct).await, before);

    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "worker", "none", "not_asynq"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "worker", "consume", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

/// The worker dequeues from its queue and gets the task's message; it
/// may not dequeue from another queue, enqueue or publish its queue.
#[tokio::test]
async fn a_worker_consumes_its_queue_only_and_cannot_enqueue() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let enqueue_script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let msg_a = seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    seed_task(&mut direct, "b", "in-b", "email:welcome").await;
    let mut worker = login(&proxy, "worker").await;

    let reply = send(
        &mut worker,
        &dequeue("EVALSHA", &dequeue_script, "a", "asynq:{a}:t:"),
    )
    .await;
    assert_eq!(reply, Value::Bulk(msg_a));
    assert_eq!(
        direct.cmd(&["LRANGE", "asynq:{a}:active", "0", "-1"]).await,
        array(vec![bulk("in-a")])
    );
    assert_eq!(
        worker.cmd(&["SMEMBERS", "asynq:{a}:groups"]).await,
        array(vec![])
    );

    let before = snapshot(&mut direct).await;
    let reply = send(
        &mut worker,
        &dequeue("EVALSHA", &dequeue_script, "b", "asynq:{b}:t:"),
    )
    .await;
    assert_eq!(
        reply,
        not_granted("worker", "consume", Some("b"), "script dequeue", NO_QUEUE)
    );
    assert_eq!(
        worker.cmd(&["SMEMBERS", "asynq:{b}:groups"]).await,
        not_granted(
            "worker",
            "consume or inspect",
            Some("b"),
            "SMEMBERS asynq:{b}:groups",
            NO_QUEUE
        )
    );
    let msg = message("a", "new", "email:welcome");
    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(
            &mut worker,
            &enqueue(verb, &enqueue_script, "a", "new", &msg),
        )
        .await;
        assert_eq!(
            reply,
            not_granted(
                "worker",
                "enqueue",
                Some("a"),
                "script enqueue",
                NO_OPERATION
            ),
            "{verb}"
        );
    }
    assert_eq!(
        worker.cmd(&["SADD", "asynq:queues", "a"]).await,
        not_granted(
            "worker",
            "enqueue",
            Some("a"),
            "SADD asynq:queues",
            NO_OPERATION
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);
    assert_eq!(
        direct
            .cmd(&["LRANGE", "asynq:{b}:pending", "0", "-1"])
            .await,
        array(vec![bulk("in-b")])
    );

    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "worker", "consume", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "worker", "enqueue", "operation_not_granted"),
        Some(3.0),
        "{metrics}"
    );
}

// === producers ===

/// The producer enqueues a task of a granted type to its queue with
/// asynq's enqueue script and the task lands in Redis; another task type
/// is refused naming the type, another queue naming the queue, and the
/// same holds for publishing the queue name.
#[tokio::test]
async fn a_producer_enqueues_granted_task_types_to_granted_queues_only() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;

    assert_eq!(producer.cmd(&["SADD", "asynq:queues", "a"]).await, int(1));
    let welcome = message("a", "id-1", "email:welcome");
    let reply = send(
        &mut producer,
        &enqueue("EVAL", &script, "a", "id-1", &welcome),
    )
    .await;
    assert_eq!(reply, int(1));
    let bye = message("a", "id-2", "email:bye");
    let reply = send(
        &mut producer,
        &enqueue("EVALSHA", &script, "a", "id-2", &bye),
    )
    .await;
    assert_eq!(reply, int(1));
    assert_eq!(
        direct.cmd(&["HGET", "asynq:{a}:t:id-1", "msg"]).await,
        Value::Bulk(welcome)
    );
    assert_eq!(
        direct.cmd(&["HGET", "asynq:{a}:t:id-2", "state"]).await,
        bulk("pending")
    );
    assert_eq!(
        direct
            .cmd(&["LRANGE", "asynq:{a}:pending", "0", "-1"])
            .await,
        array(vec![bulk("id-2"), bulk("id-1")])
    );

    let before = snapshot(&mut direct).await;
    for verb in ["EVALSHA", "EVAL"] {
        let report = message("a", "id-3", "report");
        let reply = send(&mut producer, &enqueue(verb, &script, "a", "id-3", &report)).await;
        assert_eq!(
            reply,
            not_granted(
                "producer",
                "enqueue",
                Some("a"),
                "script enqueue",
                "task type 'report' is not granted on this queue"
            ),
            "{verb}"
        );
        let to_b = message("b", "id-4", "email:welcome");
        let reply = send(&mut producer, &enqueue(verb, &script, "b", "id-4", &to_b)).await;
        assert_eq!(
            reply,
            not_granted("producer", "enqueue", Some("b"), "script enqueue", NO_QUEUE),
            "{verb}"
        );
    }
    assert_eq!(
        producer.cmd(&["SADD", "asynq:queues", "b"]).await,
        not_granted(
            "producer",
            "enqueue",
            Some("b"),
            "SADD asynq:queues",
            NO_QUEUE
        )
    );
    // Granted to enqueue, not to look.
    assert_eq!(
        producer.cmd(&["SMEMBERS", "asynq:queues"]).await,
        not_granted(
            "producer",
            "inspect",
            None,
            "SMEMBERS asynq:queues",
            NO_OPERATION
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);

    let metrics = proxy.metrics().await;
    for (operation, reason, count) in [
        ("enqueue", "task_type_not_granted", 2.0),
        ("enqueue", "queue_not_granted", 3.0),
        ("inspect", "operation_not_granted", 1.0),
    ] {
        assert_eq!(
            refusals(&metrics, "producer", operation, reason),
            Some(count),
            "{operation} {reason}\n{metrics}"
        );
    }
}

/// An enqueue must store a message that belongs where it is stored: its
/// queue and id are those of the keys, and the id argument is the one in
/// the task key. Queue names holding hash-tag braces are never queue
/// names. All of these are refused as not asynq's shape, for an identity
/// that may enqueue that very task type to that very queue.
#[tokio::test]
async fn an_enqueue_whose_message_disagrees_with_its_keys_is_refused() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;
    let before = snapshot(&mut direct).await;

    let ts: &[u8] = b"1700000000000000000";
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-1",
                &message("b", "id-1", "email:welcome"),
            ),
            "enqueue stores a task message of queue 'b' under queue 'a'",
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-1",
                &message("a", "other-id", "email:welcome"),
            ),
            "enqueue stores a task message whose id is not the task's",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1", b"asynq:{a}:pending"],
                &[&message("a", "id-2", "email:welcome"), b"id-2", ts],
            ),
            "enqueue KEYS[1] is not the task key of the id in ARGV[2]",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1", b"asynq:{b}:pending"],
                &[&message("a", "id-1", "email:welcome"), b"id-1", ts],
            ),
            "enqueue KEYS[2] names queue 'b' where the call's other keys name 'a'",
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a{x",
                "id-1",
                &message("a{x", "id-1", "email:welcome"),
            ),
            "enqueue KEYS[1] is not the task key of the id in ARGV[2]",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}x}:t:id-1", b"asynq:{a}x}:pending"],
                &[&message("a}x", "id-1", "email:welcome"), b"id-1", ts],
            ),
            "enqueue KEYS[1] is not the task key of the id in ARGV[2]",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1", b"asynq:{a}:pending"],
                &[b"not a task message", b"id-1", ts],
            ),
            "",
        ),
        (
            call(
                "EVALSHA",
                &script,
                &[b"asynq:{a}:t:id-1"],
                &[&message("a", "id-1", "email:welcome"), b"id-1", ts],
            ),
            "enqueue called with 1 keys and 3 arguments, not asynq's layout",
        ),
    ];
    for (args, why) in &cases {
        let reply = send(&mut producer, args).await;
        if why.is_empty() {
            // The decoder's words are its own; the start is the proxy's.
            let text = reply.error_text();
            assert!(
                text.starts_with(
                    "NOPERM asynq-guard: identity 'producer' may not send EVALSHA: \
                     enqueue ARGV[1] is not an asynq task message ("
                ) && text.ends_with("; only a raw grant allows what asynq does not send"),
                "{text}"
            );
        } else {
            assert_eq!(reply, not_asynq("producer", "EVALSHA", why));
        }
    }
    for queue in ["a{x", "a}x", "{a}"] {
        assert_eq!(
            producer.cmd(&["SADD", "asynq:queues", queue]).await,
            not_asynq(
                "producer",
                "SADD",
                "SADD in this form is not something asynq sends"
            ),
            "{queue}"
        );
    }
    assert_eq!(snapshot(&mut direct).await, before);
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "producer", "none", "not_asynq"),
        Some((cases.len() + 3) as f64),
        "{metrics}"
    );
}

// === inspectors ===

/// The dashboard may read every queue (the queue list, a task's info,
/// a queue's pending messages) and change nothing: pausing, cancelling
/// and deleting are refused as `manage`, which it lacks.
#[tokio::test]
async fn a_dashboard_reads_every_queue_and_changes_none() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let info = load(&mut direct, "getTaskInfoCmd", "getTaskInfo").await;
    let list = load(&mut direct, "listMessagesCmd", "listMessages").await;
    let delete = load(&mut direct, "deleteTaskCmd", "deleteTask").await;
    let msg_a = seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    let msg_b = seed_task(&mut direct, "b", "in-b", "report").await;
    let mut dashboard = login(&proxy, "dashboard").await;

    let Value::Array(mut queues) = dashboard.cmd(&["SMEMBERS", "asynq:queues"]).await else {
        panic!("SMEMBERS asynq:queues")
    };
    queues.sort_by_key(|q| format!("{q:?}"));
    assert_eq!(queues, vec![bulk("a"), bulk("b")]);
    let reply = send(
        &mut dashboard,
        &call(
            "EVALSHA",
            &info,
            &[b"asynq:{a}:t:in-a"],
            &[b"in-a", b"1700000000", b"asynq:{a}:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        array(vec![
            Value::Bulk(msg_a),
            bulk("pending"),
            bulk("1700000000"),
            Value::Null
        ]),
        "no result yet"
    );
    let reply = send(
        &mut dashboard,
        &call(
            "EVAL",
            &list,
            &[b"asynq:{b}:pending"],
            &[b"0", b"-1", b"asynq:{b}:t:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        array(vec![Value::Bulk(msg_b), Value::Null]),
        "no result yet"
    );

    let before = snapshot(&mut direct).await;
    // A read whose queue prefix names another queue than its key.
    let reply = send(
        &mut dashboard,
        &call(
            "EVALSHA",
            &info,
            &[b"asynq:{a}:t:in-a"],
            &[b"in-a", b"1700000000", b"asynq:{b}:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        not_asynq(
            "dashboard",
            "EVALSHA",
            "getTaskInfo ARGV[3] names queue 'b' where the call's other keys name 'a'"
        )
    );

    assert_eq!(
        dashboard
            .cmd(&["SETNX", "asynq:{a}:paused", "1700000000"])
            .await,
        not_granted(
            "dashboard",
            "manage",
            Some("a"),
            "SETNX asynq:{a}:paused",
            NO_OPERATION
        )
    );
    assert_eq!(
        dashboard.cmd(&["PUBLISH", "asynq:cancel", "in-a"]).await,
        not_granted(
            "dashboard",
            "manage",
            None,
            "PUBLISH asynq:cancel",
            NO_OPERATION
        )
    );
    for verb in ["EVALSHA", "EVAL"] {
        let reply = send(
            &mut dashboard,
            &call(
                verb,
                &delete,
                &[b"asynq:{a}:t:in-a", b"asynq:{a}:groups"],
                &[b"in-a", b"asynq:{a}:", b"asynq:{a}:g:"],
            ),
        )
        .await;
        assert_eq!(
            reply,
            not_granted(
                "dashboard",
                "manage",
                Some("a"),
                "script deleteTask",
                NO_OPERATION
            ),
            "{verb}"
        );
    }
    assert_eq!(
        dashboard.cmd(&["SREM", "asynq:queues", "b"]).await,
        not_granted(
            "dashboard",
            "manage",
            Some("b"),
            "SREM asynq:queues",
            NO_OPERATION
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "dashboard", "manage", "operation_not_granted"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "dashboard", "none", "not_asynq"),
        Some(1.0),
        "{metrics}"
    );
}

/// The operator inspects and manages its own queue: it deletes a task
/// and pauses the queue there, and is refused both on another queue,
/// naming that queue.
#[tokio::test]
async fn an_operator_manages_its_own_queue_only() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let delete = load(&mut direct, "deleteTaskCmd", "deleteTask").await;
    let info = load(&mut direct, "getTaskInfoCmd", "getTaskInfo").await;
    seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    seed_task(&mut direct, "b", "in-b", "email:welcome").await;
    let mut operator = login(&proxy, "operator").await;

    let delete_in = |queue: &str, id: &str| {
        let task = format!("asynq:{{{queue}}}:t:{id}");
        let groups = format!("asynq:{{{queue}}}:groups");
        let prefix = format!("asynq:{{{queue}}}:");
        let group_prefix = format!("asynq:{{{queue}}}:g:");
        call(
            "EVALSHA",
            &delete,
            &[task.as_bytes(), groups.as_bytes()],
            &[id.as_bytes(), prefix.as_bytes(), group_prefix.as_bytes()],
        )
    };
    assert_eq!(send(&mut operator, &delete_in("a", "in-a")).await, int(1));
    assert_eq!(direct.cmd(&["EXISTS", "asynq:{a}:t:in-a"]).await, int(0));
    assert_eq!(
        operator
            .cmd(&["SETNX", "asynq:{a}:paused", "1700000000"])
            .await,
        int(1)
    );
    assert_eq!(
        operator.cmd(&["SISMEMBER", "asynq:queues", "a"]).await,
        int(1)
    );

    let before = snapshot(&mut direct).await;
    assert_eq!(
        send(&mut operator, &delete_in("b", "in-b")).await,
        not_granted(
            "operator",
            "manage",
            Some("b"),
            "script deleteTask",
            NO_QUEUE
        )
    );
    assert_eq!(
        operator
            .cmd(&["SETNX", "asynq:{b}:paused", "1700000000"])
            .await,
        not_granted(
            "operator",
            "manage",
            Some("b"),
            "SETNX asynq:{b}:paused",
            NO_QUEUE
        )
    );
    assert_eq!(
        operator.cmd(&["SISMEMBER", "asynq:queues", "b"]).await,
        not_granted(
            "operator",
            "inspect or manage",
            Some("b"),
            "SISMEMBER asynq:queues",
            NO_QUEUE
        )
    );
    let reply = send(
        &mut operator,
        &call(
            "EVALSHA",
            &info,
            &[b"asynq:{b}:t:in-b"],
            &[b"in-b", b"1700000000", b"asynq:{b}:"],
        ),
    )
    .await;
    assert_eq!(
        reply,
        not_granted(
            "operator",
            "inspect",
            Some("b"),
            "script getTaskInfo",
            NO_QUEUE
        )
    );
    assert_eq!(snapshot(&mut direct).await, before);
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "operator", "manage", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
    // SISMEMBER needs inspect or manage; the metric names the first.
    assert_eq!(
        refusals(&metrics, "operator", "inspect", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

// === no grant at all ===

/// An identity without grants is served connection housekeeping (PING,
/// ECHO, SELECT 0, CLIENT SETNAME, SCRIPT EXISTS) and nothing of asynq:
/// every asynq command is refused as an operation not granted, counted
/// under the operation it needed.
#[tokio::test]
async fn an_identity_without_grants_gets_housekeeping_only() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let dequeue_script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let enqueue_script = load(&mut direct, "enqueueCmd", "enqueue").await;
    seed_task(&mut direct, "a", "in-a", "email:welcome").await;
    let mut nobody = login(&proxy, "nobody").await;

    assert_eq!(nobody.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(nobody.cmd(&["PING", "hi"]).await, bulk("hi"));
    assert_eq!(nobody.cmd(&["ECHO", "hello"]).await, bulk("hello"));
    assert_eq!(nobody.cmd(&["SELECT", "0"]).await, ok());
    assert_eq!(
        nobody.cmd(&["CLIENT", "SETNAME", "nobody-conn"]).await,
        ok()
    );
    assert_eq!(
        nobody.cmd(&["CLIENT", "GETNAME"]).await,
        bulk("nobody-conn")
    );
    assert_eq!(
        nobody.cmd(&["SCRIPT", "EXISTS", &dequeue_script.sha]).await,
        array(vec![int(1)])
    );

    let before = snapshot(&mut direct).await;
    let msg = message("a", "new", "email:welcome");
    let refused: Vec<(Vec<Vec<u8>>, Value)> = vec![
        (
            dequeue("EVALSHA", &dequeue_script, "a", "asynq:{a}:t:"),
            not_granted(
                "nobody",
                "consume",
                Some("a"),
                "script dequeue",
                NO_OPERATION,
            ),
        ),
        (
            enqueue("EVAL", &enqueue_script, "a", "new", &msg),
            not_granted(
                "nobody",
                "enqueue",
                Some("a"),
                "script enqueue",
                NO_OPERATION,
            ),
        ),
        (
            vec![
                b"SCRIPT".to_vec(),
                b"LOAD".to_vec(),
                enqueue_script.body.clone().into_bytes(),
            ],
            not_granted(
                "nobody",
                "enqueue",
                None,
                "SCRIPT LOAD of enqueue",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SADD", "asynq:queues", "a"]),
            not_granted(
                "nobody",
                "enqueue",
                Some("a"),
                "SADD asynq:queues",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SMEMBERS", "asynq:queues"]),
            not_granted(
                "nobody",
                "inspect",
                None,
                "SMEMBERS asynq:queues",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SISMEMBER", "asynq:queues", "a"]),
            not_granted(
                "nobody",
                "inspect or manage",
                Some("a"),
                "SISMEMBER asynq:queues",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["SETNX", "asynq:{a}:paused", "1700000000"]),
            not_granted(
                "nobody",
                "manage",
                Some("a"),
                "SETNX asynq:{a}:paused",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["PUBLISH", "asynq:cancel", "in-a"]),
            not_granted(
                "nobody",
                "manage",
                None,
                "PUBLISH asynq:cancel",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["DEL", "asynq:scheduler_history:entry"]),
            not_granted(
                "nobody",
                "schedule",
                None,
                "DEL asynq:scheduler_history:entry",
                NO_OPERATION,
            ),
        ),
        (
            owned(&["INFO"]),
            not_granted("nobody", "inspect", None, "INFO", NO_OPERATION),
        ),
    ];
    for (args, want) in &refused {
        assert_eq!(
            &send(&mut nobody, args).await,
            want,
            "{:?}",
            String::from_utf8_lossy(&args[0])
        );
    }
    assert_eq!(snapshot(&mut direct).await, before);

    let metrics = proxy.metrics().await;
    for (operation, count) in [
        ("consume", 1.0),
        ("enqueue", 3.0),
        ("inspect", 3.0),
        ("manage", 2.0),
        ("schedule", 1.0),
    ] {
        assert_eq!(
            refusals(&metrics, "nobody", operation, "operation_not_granted"),
            Some(count),
            "{operation}\n{metrics}"
        );
    }
    assert_eq!(refusals(&metrics, "nobody", "none", "not_asynq"), None);
}

fn owned(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

// === transactions and pipelines ===

/// A refused command queued inside MULTI gets its NOPERM at once and
/// makes EXEC answer EXECABORT, as a command Redis itself rejects while
/// queueing would: nothing of the transaction runs, neither a command
/// outside asynq nor asynq traffic on a queue not granted. A transaction
/// of granted commands runs.
#[tokio::test]
async fn a_refused_command_inside_multi_aborts_the_transaction() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;
    let before = snapshot(&mut direct).await;
    let msg = message("a", "id-1", "email:welcome");

    let forbidden: [(Vec<Vec<u8>>, Value); 3] = [
        (
            owned(&["SET", "owned", "1"]),
            not_asynq(
                "producer",
                "SET",
                "SET in this form is not something asynq sends",
            ),
        ),
        (
            owned(&["SADD", "asynq:queues", "b"]),
            not_granted(
                "producer",
                "enqueue",
                Some("b"),
                "SADD asynq:queues",
                NO_QUEUE,
            ),
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-2",
                &message("a", "id-2", "report"),
            ),
            not_granted(
                "producer",
                "enqueue",
                Some("a"),
                "script enqueue",
                "task type 'report' is not granted on this queue",
            ),
        ),
    ];
    for (args, want) in &forbidden {
        assert_eq!(producer.cmd(&["MULTI"]).await, ok());
        assert_eq!(
            producer.cmd(&["SADD", "asynq:queues", "a"]).await,
            simple("QUEUED")
        );
        assert_eq!(&send(&mut producer, args).await, want);
        assert_eq!(
            send(
                &mut producer,
                &enqueue("EVALSHA", &script, "a", "id-1", &msg)
            )
            .await,
            simple("QUEUED")
        );
        assert_eq!(
            producer.cmd(&["EXEC"]).await,
            Value::Error("EXECABORT Transaction discarded because of previous errors.".into())
        );
        assert_eq!(
            snapshot(&mut direct).await.keys,
            before.keys,
            "{:?}",
            String::from_utf8_lossy(&args[0])
        );
    }
    assert_eq!(direct.cmd(&["DBSIZE"]).await, int(0));

    assert_eq!(producer.cmd(&["MULTI"]).await, ok());
    assert_eq!(
        producer.cmd(&["SADD", "asynq:queues", "a"]).await,
        simple("QUEUED")
    );
    assert_eq!(
        send(
            &mut producer,
            &enqueue("EVALSHA", &script, "a", "id-1", &msg)
        )
        .await,
        simple("QUEUED")
    );
    assert_eq!(producer.cmd(&["EXEC"]).await, array(vec![int(1), int(1)]));
    assert_eq!(
        key_names(&mut direct).await,
        ["asynq:queues", "asynq:{a}:pending", "asynq:{a}:t:id-1"]
    );
}

/// One write with granted commands and refused ones in between: every
/// command gets its own reply in its own place, the refused ones NOPERM,
/// and Redis holds exactly what the granted ones did.
#[tokio::test]
async fn refused_commands_in_a_pipeline_get_their_errors_in_place() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;

    let mut commands: Vec<(Vec<Vec<u8>>, Value)> = vec![
        (owned(&["SADD", "asynq:queues", "a"]), int(1)),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-1",
                &message("a", "id-1", "email:welcome"),
            ),
            int(1),
        ),
        (
            owned(&["SET", "owned", "1"]),
            not_asynq(
                "producer",
                "SET",
                "SET in this form is not something asynq sends",
            ),
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "a",
                "id-2",
                &message("a", "id-2", "report"),
            ),
            not_granted(
                "producer",
                "enqueue",
                Some("a"),
                "script enqueue",
                "task type 'report' is not granted on this queue",
            ),
        ),
        (
            owned(&["EVAL", ARBITRARY_EVAL, "0"]),
            not_asynq(
                "producer",
                "EVAL",
                &format!(
                    "script {} is not one of asynq's",
                    catalog::sha1_hex(ARBITRARY_EVAL.as_bytes())
                ),
            ),
        ),
        (
            enqueue(
                "EVAL",
                &script,
                "a",
                "id-3",
                &message("a", "id-3", "email:bye"),
            ),
            int(1),
        ),
        (
            enqueue(
                "EVALSHA",
                &script,
                "b",
                "id-4",
                &message("b", "id-4", "email:welcome"),
            ),
            not_granted("producer", "enqueue", Some("b"), "script enqueue", NO_QUEUE),
        ),
        (owned(&["PING"]), simple("PONG")),
    ];
    // The same again: the refusals do not disturb what follows them.
    commands.extend(commands.clone().into_iter().map(|(args, want)| {
        let want = match want {
            Value::Int(1) => int(0),
            other => other,
        };
        (args, want)
    }));
    let mut write = Vec::new();
    for (args, _) in &commands {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        write.extend(support::encode(&args));
    }
    producer.send_raw(&write).await;
    for (i, (args, want)) in commands.iter().enumerate() {
        assert_eq!(
            &producer.read().await,
            want,
            "reply {i} to {:?}",
            String::from_utf8_lossy(&args[0])
        );
    }

    assert_eq!(
        key_names(&mut direct).await,
        [
            "asynq:queues",
            "asynq:{a}:pending",
            "asynq:{a}:t:id-1",
            "asynq:{a}:t:id-3"
        ]
    );
    assert_eq!(
        direct
            .cmd(&["LRANGE", "asynq:{a}:pending", "0", "-1"])
            .await,
        array(vec![bulk("id-3"), bulk("id-1")])
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        refusals(&metrics, "producer", "none", "not_asynq"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "producer", "enqueue", "task_type_not_granted"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        refusals(&metrics, "producer", "enqueue", "queue_not_granted"),
        Some(2.0),
        "{metrics}"
    );
}

// === metrics and audit ===

/// Every refusal is counted by identity, operation and reason, and
/// written as an audit event (target `asynq_guard::audit`,
/// event="refusal") naming the identity, operation, reason, the asynq
/// call and the queue; never the task payload, the task message or the
/// value of a refused write. Allowed commands are neither counted nor
/// audited.
#[tokio::test]
async fn refusals_are_counted_and_audited_without_payloads() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "enqueueCmd", "enqueue").await;
    let mut producer = login(&proxy, "producer").await;
    let mut nobody = login(&proxy, "nobody").await;
    let mut dashboard = login(&proxy, "dashboard").await;
    let secret_value = "VALUE-31d7-never-logged";

    let ok_msg = message("a", "id-ok", "email:welcome");
    let reply = send(
        &mut producer,
        &enqueue("EVALSHA", &script, "a", "id-ok", &ok_msg),
    )
    .await;
    assert_eq!(reply, int(1));
    let report = message("a", "id-report", "report");
    let reply = send(
        &mut producer,
        &enqueue("EVALSHA", &script, "a", "id-report", &report),
    )
    .await;
    assert!(
        reply.error_text().contains("task type 'report'"),
        "{reply:?}"
    );
    let to_b = message("b", "id-b", "email:welcome");
    let reply = send(&mut producer, &enqueue("EVAL", &script, "b", "id-b", &to_b)).await;
    assert!(reply.error_text().contains("queue 'b'"), "{reply:?}");
    let reply = nobody.cmd(&["SET", "owned", secret_value]).await;
    assert!(reply.error_text().contains("send SET"), "{reply:?}");
    let reply = nobody.cmd(&["SMEMBERS", "asynq:queues"]).await;
    assert!(reply.error_text().contains("may not inspect"), "{reply:?}");
    let reply = dashboard.cmd(&["PUBLISH", "asynq:cancel", "id-ok"]).await;
    assert!(reply.error_text().contains("may not manage"), "{reply:?}");
    assert_eq!(
        dashboard.cmd(&["SMEMBERS", "asynq:queues"]).await,
        array(vec![])
    );

    let metrics = proxy.metrics().await;
    let want = [
        ("producer", "enqueue", "task_type_not_granted"),
        ("producer", "enqueue", "queue_not_granted"),
        ("nobody", "none", "not_asynq"),
        ("nobody", "inspect", "operation_not_granted"),
        ("dashboard", "manage", "operation_not_granted"),
    ];
    for (identity, operation, reason) in want {
        assert_eq!(
            refusals(&metrics, identity, operation, reason),
            Some(1.0),
            "{identity} {operation} {reason}\n{metrics}"
        );
    }
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("asynq_guard_refusals_total{"))
        .count();
    assert_eq!(series, want.len(), "{metrics}");

    // One event per refusal, every field named.
    let audited = [
        (
            "producer",
            "enqueue",
            "task_type_not_granted",
            "script enqueue",
            "a",
        ),
        (
            "producer",
            "enqueue",
            "queue_not_granted",
            "script enqueue",
            "b",
        ),
        ("nobody", "none", "not_asynq", "SET", ""),
        (
            "nobody",
            "inspect",
            "operation_not_granted",
            "SMEMBERS asynq:queues",
            "",
        ),
        (
            "dashboard",
            "manage",
            "operation_not_granted",
            "PUBLISH asynq:cancel",
            "",
        ),
    ];
    for (identity, operation, reason, command, queue) in audited {
        let fields = [
            "asynq_guard::audit".to_string(),
            "event=\"refusal\"".to_string(),
            format!("identity=\"{identity}\""),
            format!("operation=\"{operation}\""),
            format!("reason=\"{reason}\""),
            format!("command=\"{command}\""),
            format!("queue=\"{queue}\""),
        ];
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        log_line(&proxy, &fields).await;
    }

    let log = proxy.stderr();
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("asynq_guard::audit") && l.contains("event=\"refusal\""))
        .count();
    assert_eq!(refusal_lines, want.len(), "{log}");
    let payload = String::from_utf8_lossy(PAYLOAD).into_owned();
    for never in [payload.as_str(), secret_value, "id-ok"] {
        assert!(!log.contains(never), "{never} in the log:\n{log}");
        assert!(!metrics.contains(never), "{never} in the metrics");
    }
}

/// A connection that switches identity with AUTH is judged by the new
/// identity's grants at once, and the new identity's refusals are
/// audited under its own name, even when the same command was refused
/// to the previous identity a moment before.
#[tokio::test]
async fn after_auth_switches_identity_refusals_are_judged_and_audited_as_the_new_one() {
    let (redis, proxy) = start().await;
    let mut direct = redis.client().await;
    let script = load(&mut direct, "dequeueCmd", "dequeue").await;
    let mut client = login(&proxy, "worker").await;

    let set = not_asynq(
        "worker",
        "SET",
        "SET in this form is not something asynq sends",
    );
    assert_eq!(client.cmd(&["SET", "owned", "1"]).await, set);
    let dequeue_a = dequeue("EVALSHA", &script, "a", "asynq:{a}:t:");
    assert_eq!(send(&mut client, &dequeue_a).await, Value::Null);

    assert_eq!(
        client.cmd(&["AUTH", "nobody", &secret("nobody")]).await,
        ok()
    );
    assert_eq!(
        client.cmd(&["SET", "owned", "1"]).await,
        not_asynq(
            "nobody",
            "SET",
            "SET in this form is not something asynq sends"
        )
    );
    assert_eq!(
        send(&mut client, &dequeue_a).await,
        not_granted(
            "nobody",
            "consume",
            Some("a"),
            "script dequeue",
            NO_OPERATION
        )
    );
    assert_eq!(direct.cmd(&["EXISTS", "owned"]).await, int(0));

    let metrics = proxy.metrics().await;
    for identity in ["worker", "nobody"] {
        assert_eq!(
            refusals(&metrics, identity, "none", "not_asynq"),
            Some(1.0),
            "{identity}\n{metrics}"
        );
    }
    log_line(
        &proxy,
        &[
            "event=\"refusal\"",
            "identity=\"nobody\"",
            "operation=\"consume\"",
        ],
    )
    .await;
    for identity in ["worker", "nobody"] {
        let who = format!("identity=\"{identity}\"");
        log_line(&proxy, &["event=\"refusal\"", &who, "reason=\"not_asynq\""]).await;
    }
}
