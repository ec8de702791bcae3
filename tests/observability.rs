//! What an operator sees of the proxy: `/metrics` and the log.
//!
//! One real asynq workload (asynq v0.26.0 through the Go harness) runs
//! through the proxy with a policy that also produces every event the
//! metrics count: a failed login, a refused enqueue, a rate limit and a
//! queue cap hit, an unsigned enqueue refused by a queue in `check` mode,
//! a task changed inside Redis and withheld from its worker, and a policy
//! reload. Then:
//!
//! - every metric the README's table documents is exported, with the
//!   type it documents and values that agree with what was done (and
//!   with what Redis holds); every exported `asynq_guard_*` family is
//!   documented;
//! - no client secret, wrong secret, upstream password, signing key or
//!   task payload reaches the log (debug level, text and JSON) or
//!   `/metrics`, and the audit events are there, one parseable JSON
//!   object a line.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;
use support::{
    Client, Deadline, Proxy, Redis, TempDir, Value, build_harness, harness_as_async, identities,
    probe_as, secret_of,
};

/// The upstream Redis's password; the proxy reads it from a file.
const UPSTREAM_PASSWORD: &str = "UPSTREAM-CANARY-pw-81c3e0";
/// The signing key's text, in a key file.
const KEY_TEXT: &str = "KEY-CANARY-7a0d-0123456789abcdef0123456789abcdef";
/// A wrong secret tried for identity `producer`.
const WRONG_SECRET: &str = "WRONG-CANARY-secret-5d2e";
/// Every task payload of the workload starts with this.
const PAYLOAD: &str = "PAYLOAD-CANARY-xyz";
/// The identities of the workload.
const IDENTITIES: [&str; 3] = ["producer", "worker", "dashboard"];

/// Tasks enqueued to the signed queue, one of which is then changed in
/// Redis; tasks tried on the capped queue (cap 2).
const SIGNED_TASKS: usize = 10;
const CAP: usize = 2;
const CAPPED_TRIES: usize = 3;
/// Harness runs of the workload (four probes, two batches, a listing, a
/// Server), each with at least one connection of its own.
const HARNESS_RUNS: usize = 8;

/// Metrics whose series only appear with an event this workload cannot
/// produce; the README must say so of each.
const NOT_PRODUCED: [(&str, &str); 2] = [
    (
        "asynq_guard_tls_handshake_failures_total",
        "needs a TLS listener and a client failing its handshake",
    ),
    (
        "asynq_guard_shared_limit_failures_total",
        "needs a shared rate limit whose state in Redis is out of reach",
    ),
];

/// One workload at a time: each runs asynq Servers and Clients, and two
/// CPUs shared by several would only make each slower.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn harness() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_harness("v0.26.0")).clone()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The policy: `producer` may enqueue to four queues; `limited` has a
/// rate limit of one task of type `slow`; `capped` holds at most
/// [`CAP`] tasks; `signed` is signed by the proxy, `checked` refuses
/// what its producer did not sign.
fn policy(dir: &Path) -> String {
    let key = dir.join("k1.key");
    std::fs::write(&key, format!("{KEY_TEXT}\n")).expect("write the key file");
    format!(
        "{}\
         [reload]\nwatch_interval_ms = 100\n\n\
         [[grant]]\nidentity = \"producer\"\noperations = [\"enqueue\"]\n\
         queues = [\"signed\", \"capped\", \"limited\", \"checked\"]\ntask_types = [\"*\"]\n\n\
         [[grant]]\nidentity = \"worker\"\noperations = [\"consume\", \"inspect\"]\nqueues = [\"signed\"]\n\n\
         [[grant]]\nidentity = \"dashboard\"\noperations = [\"inspect\"]\nqueues = [\"*\"]\n\n\
         [[rate_limit]]\nname = \"tiny\"\nscope = \"task_type\"\ntask_types = [\"slow\"]\n\
         rate_per_second = 0.001\nburst = 1\n\n\
         [[queue_cap]]\nqueues = [\"capped\"]\nmax_tasks = {CAP}\n\n\
         [integrity]\nsign_with = \"k1\"\n\
         [[integrity.key]]\nid = \"k1\"\nfile = {:?}\n\
         [[integrity.queues]]\nqueues = [\"signed\"]\nmode = \"add\"\n\
         [[integrity.queues]]\nqueues = [\"checked\"]\nmode = \"check\"\n",
        identities(&IDENTITIES),
        key.to_str().expect("utf-8 path"),
    )
}

/// A harness mode run as `who` on a blocking thread.
async fn harness_run(address: &str, who: &'static str, args: &[&str]) -> Json {
    harness_as_async(&harness(), address, who, args).await
}

async fn probe(address: &str, queue: &str, task_type: &str) -> Json {
    probe_as(&harness(), address, "producer", queue, task_type).await
}

async fn enqueue(address: &str, queue: &str, count: usize) -> Json {
    harness_run(
        address,
        "producer",
        &[
            "-enqueue-batch",
            "-batch-queue",
            queue,
            "-batch-type",
            "work",
            "-batch-count",
            &count.to_string(),
            "-batch-payload",
            PAYLOAD,
        ],
    )
    .await
}

fn refused_with(reply: &Json, words: &[&str]) {
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(words.iter().all(|w| error.contains(w)), "{error}");
}

/// A proxy after the workload, with connections still open.
struct Run {
    _dir: TempDir,
    redis: Redis,
    proxy: Proxy,
    /// Authenticated connections kept open: two as `producer`, one as
    /// `dashboard`.
    open: Vec<Client>,
    /// When the workload started (Unix time).
    started: f64,
}

impl Run {
    /// A client of Redis itself, logged in with the upstream password.
    async fn direct(&self) -> Client {
        Client::connect_as(&self.redis.address(), "default", UPSTREAM_PASSWORD).await
    }
}

/// Runs the workload through a proxy logging at debug level, in JSON if
/// `json`, in front of a Redis that requires [`UPSTREAM_PASSWORD`].
async fn workload(json: bool) -> Run {
    let started = now();
    let dir = TempDir::new("observability");
    let redis = Redis::start_with_args(&["--requirepass", UPSTREAM_PASSWORD]).await;
    let password = dir.path().join("upstream-password");
    std::fs::write(&password, format!("{UPSTREAM_PASSWORD}\n")).expect("write password");
    let mut builder = Proxy::builder(&redis.address())
        .upstream_keys(&format!(
            "password_file = {:?}\n",
            password.to_str().expect("utf-8 path")
        ))
        .extra(&policy(dir.path()))
        .log_filter("debug");
    if json {
        builder = builder.json_logs();
    }
    let proxy = builder.start().await;
    let address = proxy.address();
    let mut run = Run {
        _dir: dir,
        redis,
        proxy,
        open: Vec::new(),
        started,
    };

    // A failed login.
    let mut guess = Client::connect(&address).await;
    let reply = guess.cmd(&["AUTH", "producer", WRONG_SECRET]).await;
    assert!(reply.error_text().starts_with("WRONGPASS"), "{reply:?}");
    drop(guess);

    // The first enqueue loads asynq's enqueue script (NOSCRIPT, then
    // EVAL), so that each enqueue below is forwarded once.
    assert_eq!(probe(&address, "limited", "slow").await["ok"], true);
    refused_with(
        &probe(&address, "limited", "slow").await,
        &["LIMIT", "'tiny'"],
    );
    refused_with(
        &probe(&address, "forbidden", "work").await,
        &["NOPERM", "'forbidden'"],
    );
    refused_with(
        &probe(&address, "checked", "work").await,
        &["NOPERM", "check mode"],
    );
    let capped = enqueue(&address, "capped", CAPPED_TRIES).await;
    assert_eq!(
        capped["tasks"].as_array().map(Vec::len),
        Some(CAP),
        "{capped}"
    );
    assert_eq!(
        capped["errors"].as_array().map(Vec::len),
        Some(CAPPED_TRIES - CAP),
        "{capped}"
    );
    let signed = enqueue(&address, "signed", SIGNED_TASKS).await;
    let tasks = signed["tasks"].as_array().expect("tasks").clone();
    assert_eq!(tasks.len(), SIGNED_TASKS, "{signed}");

    // An inspector sees the payloads (the proxy checks and passes them).
    let listed = harness_run(
        &address,
        "dashboard",
        &[
            "-list-tasks",
            "-list-queue",
            "signed",
            "-list-states",
            "pending",
        ],
    )
    .await;
    let pending = listed["lists"]["pending"].as_array().expect("pending");
    assert_eq!(pending.len(), SIGNED_TASKS, "{listed}");
    assert!(
        pending
            .iter()
            .all(|t| t["payload"].as_str().unwrap_or("").starts_with(PAYLOAD)),
        "{listed}"
    );

    // One task's payload changed inside Redis: withheld and archived.
    let id = tasks[0]["id"].as_str().expect("task id");
    let key = format!("asynq:{{signed}}:t:{id}");
    let mut direct = run.direct().await;
    let Value::Bulk(msg) = direct.cmd(&["HGET", &key, "msg"]).await else {
        panic!("no message at {key}")
    };
    let was = format!("{PAYLOAD}-000");
    let at = msg
        .windows(was.len())
        .position(|w| w == was.as_bytes())
        .expect("the payload in the stored message");
    let mut changed = msg.clone();
    changed[at..at + was.len()].copy_from_slice(format!("{PAYLOAD}-999").as_bytes());
    direct
        .send_bytes(&[b"HSET", key.as_bytes(), b"msg", &changed])
        .await;
    assert_eq!(direct.read().await, support::int(0));

    let handled = harness_run(
        &address,
        "worker",
        &[
            "-handle",
            "-handle-queues",
            "signed",
            "-handle-expect",
            &(SIGNED_TASKS - 1).to_string(),
            "-handle-settle",
            "300ms",
            "-handle-timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(handled["reached"], true, "{handled}");
    assert_eq!(handled["drained"], true, "{handled}");
    assert_eq!(
        handled["handled"].as_array().map(Vec::len),
        Some(SIGNED_TASKS - 1),
        "{handled}"
    );

    // Connections open across a reload, which must keep them.
    for who in ["producer", "producer", "dashboard"] {
        let mut c = Client::connect_as(&address, who, &secret_of(who)).await;
        assert_eq!(c.cmd(&["PING"]).await, Value::Simple("PONG".into()));
        run.open.push(c);
    }
    let reloaded = format!(
        "{}\n[[grant]]\nidentity = \"dashboard\"\noperations = [\"inspect\"]\nqueues = [\"later\"]\n",
        run.proxy.config_text()
    );
    run.proxy.write_config(&reloaded);
    wait_for(&run.proxy, "a policy reload", |m| {
        m.sum("asynq_guard_policy_reloads_total", &[("result", "ok")]) == 1.0
    })
    .await;
    for c in &mut run.open {
        assert_eq!(c.cmd(&["PING"]).await, Value::Simple("PONG".into()));
    }
    run
}

// === /metrics ===

/// One sample of a Prometheus text page.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` page.
struct Page {
    text: String,
    samples: Vec<Sample>,
}

impl Page {
    fn parse(text: String) -> Page {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("series and value");
                let value = value.parse().unwrap_or_else(|_| panic!("value of {l}"));
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                Sample {
                    name: name.to_string(),
                    labels,
                    value,
                }
            })
            .collect();
        Page { text, samples }
    }

    /// The samples named `name` whose labels include all of `labels`.
    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> Vec<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).iter().map(|s| s.value).sum()
    }

    /// The value of the one sample `name` with `labels`; panics if there
    /// is not exactly one.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.matching(name, labels);
        assert_eq!(
            found.len(),
            1,
            "exactly one {name} with {labels:?} expected:\n{}",
            self.text
        );
        found[0].value
    }

    /// Every sample of the family `name` (with `_bucket`, `_sum` and
    /// `_count` for a histogram).
    fn family(&self, name: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| s.name == format!("{name}{suffix}"))
            })
            .collect()
    }

    /// The values `label` takes in family `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        self.matching(name, &[])
            .iter()
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label name");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => value.push(chars.next().expect("escaped character").1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

async fn wait_for(proxy: &Proxy, what: &str, ready: impl Fn(&Page) -> bool) -> Page {
    let deadline = Deadline::new(what);
    loop {
        let page = Page::parse(proxy.metrics().await);
        if ready(&page) {
            return page;
        }
        deadline.tick().await;
    }
}

/// The README's metric table: name, type and the whole row of each
/// `asynq_guard_*` metric.
fn documented_metrics() -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section in the README");
    let section = section.split("\n## ").next().unwrap_or(section);
    let rows: Vec<(String, String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `asynq_guard_"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_string(),
                cells[2].to_string(),
                row.to_string(),
            )
        })
        .collect();
    assert!(rows.len() >= 20, "the README's metric table: {rows:#?}");
    rows
}

/// The SHA-256 of a file, as `sha256sum` computes it.
fn sha256_of(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout)
        .expect("sha256sum output")
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

/// Checks the values of one documented metric against the workload.
async fn check_values(name: &str, m: &Page, run: &Run) {
    let producer = ("identity", "producer");
    let listener = ("listener", "test");
    match name {
        "asynq_guard_client_connections_total" => {
            // The failed login, the connections kept open, and at least
            // one of each harness run.
            assert!(
                m.one(name, &[listener]) >= (1 + 3 + HARNESS_RUNS) as f64,
                "{}",
                m.text
            );
        }
        "asynq_guard_client_connections" => {
            assert_eq!(m.one(name, &[listener]), run.open.len() as f64);
        }
        "asynq_guard_client_sessions" => {
            assert_eq!(m.one(name, &[listener, producer]), 2.0, "{}", m.text);
            assert_eq!(
                m.one(name, &[listener, ("identity", "dashboard")]),
                1.0,
                "{}",
                m.text
            );
            assert_eq!(m.sum(name, &[]), run.open.len() as f64, "{}", m.text);
        }
        "asynq_guard_decisions_total" => {
            // asynq v0.26.0 sends, per admitted enqueue, its enqueue
            // script (the first one twice: NOSCRIPT, then EVAL), and per
            // Client and queue one SADD of the queue name: two probes of
            // `limited`, one of `checked`, a batch to `capped` and one to
            // `signed` (the SADD of `forbidden` is the refused one).
            let scripts = 1 + CAP + SIGNED_TASKS + 1;
            let sadds = 5;
            let forwarded = [producer, ("operation", "enqueue"), ("verdict", "forwarded")];
            assert_eq!(
                m.one(name, &forwarded),
                (scripts + sadds) as f64,
                "{}",
                m.text
            );
            // Rate limit, queue cap, unsigned in check mode, queue not
            // granted.
            let refused = [producer, ("operation", "enqueue"), ("verdict", "refused")];
            assert_eq!(m.one(name, &refused), 4.0, "{}", m.text);
            for (who, op) in [("worker", "consume"), ("dashboard", "inspect")] {
                let series = [
                    ("identity", who),
                    ("operation", op),
                    ("verdict", "forwarded"),
                ];
                assert!(m.one(name, &series) >= 1.0, "{}", m.text);
            }
            for op in m.label_values(name, "operation") {
                assert!(
                    [
                        "enqueue",
                        "consume",
                        "schedule",
                        "inspect",
                        "manage",
                        "housekeeping",
                        "raw",
                        "none"
                    ]
                    .contains(&op.as_str()),
                    "undocumented operation {op}"
                );
            }
            for verdict in m.label_values(name, "verdict") {
                assert!(
                    ["forwarded", "answered", "refused"].contains(&verdict.as_str()),
                    "undocumented verdict {verdict}"
                );
            }
        }
        "asynq_guard_commands_total" => {
            assert!(m.sum(name, &[]) > 0.0);
            assert!(
                m.one(name, &[("command", "evalsha")]) >= SIGNED_TASKS as f64,
                "{}",
                m.text
            );
            assert!(m.one(name, &[("command", "auth")]) >= 4.0, "{}", m.text);
            for command in m.label_values(name, "command") {
                assert_eq!(command, command.to_lowercase());
            }
        }
        "asynq_guard_client_errors_total" | "asynq_guard_upstream_errors_total" => {
            let (label, want): (&str, &[&str]) = if name == "asynq_guard_client_errors_total" {
                (
                    "reason",
                    &[
                        "protocol",
                        "inline_command",
                        "max_args",
                        "max_bulk_bytes",
                        "max_buffer_bytes",
                        "max_pending_commands",
                    ],
                )
            } else {
                ("kind", &["connect", "auth", "lost", "protocol"])
            };
            // Every series exists from the start, at zero here.
            let mut have = m.label_values(name, label);
            have.sort();
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(have, want, "{name}");
            assert_eq!(m.sum(name, &[]), 0.0, "{}", m.text);
        }
        "asynq_guard_upstream_latency_seconds" => {
            let count = m.one(&format!("{name}_count"), &[]);
            assert!(count > 0.0, "{}", m.text);
            assert!(m.one(&format!("{name}_sum"), &[]) > 0.0, "{}", m.text);
            let mut buckets: Vec<(f64, f64)> = m
                .matching(&format!("{name}_bucket"), &[])
                .iter()
                .map(|s| {
                    let le = s.labels.get("le").expect("le label");
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().expect("le is a number")
                    };
                    (le, s.value)
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.len() >= 2, "{}", m.text);
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "buckets not cumulative: {buckets:?}"
            );
            assert_eq!(
                buckets.last().map(|b| (b.0, b.1)),
                Some((f64::INFINITY, count))
            );
        }
        "asynq_guard_refusals_total" => {
            let enqueue = ("operation", "enqueue");
            let reason = |r| [producer, enqueue, ("reason", r)];
            assert_eq!(m.one(name, &reason("queue_not_granted")), 1.0, "{}", m.text);
            // The rate limit and the queue cap.
            assert_eq!(m.one(name, &reason("limit")), 2.0, "{}", m.text);
            assert_eq!(m.one(name, &reason("integrity")), 1.0, "{}", m.text);
            assert_eq!(m.sum(name, &[]), 4.0, "no other refusal:\n{}", m.text);
        }
        "asynq_guard_limit_hits_total" => {
            let rate = [
                producer,
                ("queue", "limited"),
                ("limit", "tiny"),
                ("scope", "task_type"),
            ];
            assert_eq!(m.one(name, &rate), 1.0, "{}", m.text);
            let cap = [
                producer,
                ("queue", "capped"),
                ("limit", "queue_cap"),
                ("scope", "queue"),
            ];
            assert_eq!(m.one(name, &cap), (CAPPED_TRIES - CAP) as f64);
            assert_eq!(m.sum(name, &[]), 2.0, "{}", m.text);
        }
        "asynq_guard_queue_tasks" => {
            let mut direct = run.direct().await;
            let held = direct.cmd(&["LLEN", "asynq:{capped}:pending"]).await;
            assert_eq!(held, support::int(CAP as i64));
            assert_eq!(m.one(name, &[("queue", "capped")]), CAP as f64);
            assert_eq!(m.matching(name, &[]).len(), 1, "only capped queues");
        }
        "asynq_guard_integrity_failures_total" => {
            let enqueue = [
                ("queue", "checked"),
                ("reason", "unsigned"),
                ("path", "enqueue"),
            ];
            assert_eq!(m.one(name, &enqueue), 1.0, "{}", m.text);
            let deliver = [
                ("queue", "signed"),
                ("reason", "bad_signature"),
                ("path", "deliver"),
            ];
            assert_eq!(m.one(name, &deliver), 1.0, "{}", m.text);
            assert_eq!(m.sum(name, &[]), 2.0, "{}", m.text);
        }
        "asynq_guard_integrity_archived_total" => {
            let archived = [("queue", "signed"), ("outcome", "archived")];
            assert_eq!(m.one(name, &archived), 1.0, "{}", m.text);
            assert_eq!(m.sum(name, &[]), 1.0, "{}", m.text);
        }
        "asynq_guard_integrity_signed_total" => {
            let enqueue = [("queue", "signed"), ("how", "enqueue")];
            assert_eq!(m.one(name, &enqueue), SIGNED_TASKS as f64, "{}", m.text);
            assert!(
                m.label_values(name, "queue").iter().all(|q| q == "signed"),
                "only the signed queue is signed:\n{}",
                m.text
            );
        }
        "asynq_guard_auth_attempts_total" => {
            let wrong = [listener, ("result", "wrong_secret")];
            assert_eq!(m.one(name, &wrong), 1.0, "{}", m.text);
            // The connections kept open, and every harness run's.
            let ok = m.one(name, &[listener, ("result", "ok")]);
            assert!(ok >= (3 + HARNESS_RUNS) as f64, "{}", m.text);
            assert_eq!(m.sum(name, &[]), ok + 1.0, "{}", m.text);
        }
        "asynq_guard_tls_reloads_total" => {
            // A file-change reload reads no certificate.
            assert_eq!(m.one(name, &[("result", "ok")]), 0.0);
            assert_eq!(m.one(name, &[("result", "error")]), 0.0);
        }
        "asynq_guard_upstream_up" => assert_eq!(m.one(name, &[]), 1.0),
        "asynq_guard_policy_reloads_total" => {
            assert_eq!(m.one(name, &[("result", "ok")]), 1.0);
            assert_eq!(m.one(name, &[("result", "error")]), 0.0);
        }
        "asynq_guard_policy_info" => {
            let series = m.matching(name, &[]);
            assert_eq!(series.len(), 1, "{}", m.text);
            assert_eq!(series[0].value, 1.0);
            assert_eq!(
                series[0].labels.get("sha256"),
                Some(&sha256_of(&run.proxy.config_path())),
                "policy_info names the file in force (the reloaded one)"
            );
        }
        "asynq_guard_policy_loaded_timestamp_seconds" => {
            let at = m.one(name, &[]);
            // Loaded by the reload, during the workload.
            assert!(
                at >= run.started.floor() && at <= now() + 1.0,
                "loaded at {at}, workload from {} to {}",
                run.started,
                now()
            );
            assert!(at >= now() - 3600.0);
        }
        other => panic!("{other} is documented but this test checks no value of it: add a check"),
    }
}

/// Every metric of the README's table is exported with its documented
/// type and a value that fits the workload, and every exported
/// `asynq_guard_*` family is in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_with_sensible_values_during_a_real_workload() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let run = workload(false).await;
    // The harness's connections close behind its exit: wait until only
    // the connections kept open are counted.
    let m = wait_for(&run.proxy, "only the kept connections open", |m| {
        m.sum("asynq_guard_client_connections", &[]) == run.open.len() as f64
            && m.sum("asynq_guard_client_sessions", &[]) == run.open.len() as f64
    })
    .await;

    let documented = documented_metrics();
    for (name, kind, row) in &documented {
        let exported = m.text.lines().any(|l| l == format!("# TYPE {name} {kind}"));
        let help = m.text.contains(&format!("# HELP {name} "));
        if let Some((_, why)) = NOT_PRODUCED.iter().find(|(n, _)| n == name) {
            // Allowed to be absent (this workload cannot produce it:
            // {why}), so the README must say when it appears.
            assert!(
                row.contains("appears") && row.contains("first"),
                "{name} is exported only with its first event ({why}): its README row must say so:\n{row}"
            );
            assert_eq!(help, exported, "{name}: HELP and TYPE {kind}");
            continue;
        }
        assert!(
            help && exported,
            "{name} ({kind}) is documented but not exported:\n{}",
            m.text
        );
        assert!(!m.family(name).is_empty(), "{name} has no series");
        check_values(name, &m, &run).await;
    }
    for line in m.text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE asynq_guard_") {
            let name = format!("asynq_guard_{}", rest.split(' ').next().unwrap_or_default());
            assert!(
                documented.iter().any(|(n, _, _)| *n == name),
                "{name} is exported but not documented in the README's metric table"
            );
        }
    }
}

// === secrets and payloads ===

/// Every text that must never be written out, and what it is.
fn canaries() -> Vec<(String, &'static str)> {
    let mut all: Vec<(String, &str)> = IDENTITIES
        .iter()
        .map(|who| (secret_of(who), "a client secret"))
        .collect();
    all.extend([
        // The common tail of every client secret, for a cut-off one.
        (secret_of(""), "part of a client secret"),
        (UPSTREAM_PASSWORD.to_string(), "the upstream password"),
        (KEY_TEXT.to_string(), "the signing key"),
        (WRONG_SECRET.to_string(), "the wrong secret"),
        (PAYLOAD.to_string(), "a task payload"),
        // Each canary above but the client secrets has this in it: a
        // cut-off value shows it too, as does its hex form.
        ("CANARY".to_string(), "part of a secret or payload"),
        ("canary".to_string(), "part of a secret or payload"),
        ("43414e415259".to_string(), "a secret or payload in hex"),
        ("43414E415259".to_string(), "a secret or payload in hex"),
    ]);
    all
}

fn assert_nothing_secret(output: &str, what: &str) {
    for (canary, is) in canaries() {
        if let Some(at) = output.find(&canary) {
            let line = output[..at].rsplit('\n').next().unwrap_or_default().len();
            let start = at - line;
            let end = output[at..].find('\n').map_or(output.len(), |n| at + n);
            panic!("{is} ({canary:?}) reached {what}:\n{}", &output[start..end]);
        }
    }
}

/// A refusal's, a failed login's, a successful login's and a reload's
/// audit events: the value each field named must have.
fn expected_audit_events(sha: &str) -> Vec<Vec<(&'static str, String)>> {
    let s = |v: &str| v.to_string();
    vec![
        vec![
            ("event", s("auth")),
            ("result", s("ok")),
            ("identity", s("producer")),
        ],
        vec![
            ("event", s("auth")),
            ("result", s("failure")),
            ("reason", s("wrong_secret")),
            ("identity_tried", s("producer")),
        ],
        vec![
            ("event", s("refusal")),
            ("reason", s("queue_not_granted")),
            ("identity", s("producer")),
            ("queue", s("forbidden")),
        ],
        vec![
            ("event", s("refusal")),
            ("reason", s("integrity")),
            ("queue", s("checked")),
        ],
        vec![
            ("event", s("limit")),
            ("limit", s("tiny")),
            ("queue", s("limited")),
        ],
        vec![
            ("event", s("limit")),
            ("limit", s("queue_cap")),
            ("queue", s("capped")),
        ],
        vec![("event", s("integrity")), ("queue", s("signed"))],
        vec![
            ("event", s("policy_reload")),
            ("result", s("ok")),
            ("sha256", s(sha)),
        ],
    ]
}

/// With debug logging, text and JSON: nothing secret in the log or in
/// `/metrics`, and the audit events are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_payload_reaches_any_output() {
    let _turn = ONE_AT_A_TIME.lock().await;
    for json in [false, true] {
        let format = if json { "JSON" } else { "text" };
        let run = workload(json).await;
        let metrics = run.proxy.metrics().await;
        let log = run.proxy.stderr();
        assert!(
            log.contains("DEBUG") || log.contains("\"level\":\"DEBUG\""),
            "the {format} log is at debug level:\n{log}"
        );
        assert_nothing_secret(&log, &format!("the {format} log"));
        assert_nothing_secret(&metrics, "/metrics");

        let sha = sha256_of(&run.proxy.config_path());
        let expected = expected_audit_events(&sha);
        if json {
            let lines: Vec<Json> = log
                .lines()
                .map(|l| {
                    let v: Json = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
                    assert!(v.is_object(), "not a JSON object: {l}");
                    v
                })
                .collect();
            let audit: Vec<&Json> = lines
                .iter()
                .filter(|v| v["target"] == "asynq_guard::audit")
                .collect();
            for fields in &expected {
                assert!(
                    audit
                        .iter()
                        .any(|v| fields.iter().all(|(k, want)| v[*k] == want.as_str())),
                    "no audit event with {fields:?} in the JSON log:\n{log}"
                );
            }
        } else {
            let audit: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("asynq_guard::audit"))
                .collect();
            for fields in &expected {
                assert!(
                    audit.iter().any(|l| fields.iter().all(|(k, want)| {
                        l.contains(&format!("{k}=\"{want}\"")) || l.contains(&format!("{k}={want}"))
                    })),
                    "no audit event with {fields:?} in the text log:\n{log}"
                );
            }
        }
    }
}
