//! Real asynq, at every pinned version, refused what its identity's grants
//! do not cover: a producer enqueuing to another queue or another task
//! type, a worker configured for a queue it may not consume, a dashboard
//! trying every Inspector change. Each refusal reaches the asynq caller as
//! an error carrying the proxy's NOPERM text, and Redis is left as it was.
//! The example policy in `config/` is held to the same proof.
//!
//! The Go programs run one at a time: several asynq servers at once on
//! two cores would only make each slower.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use support::{
    Proxy, Redis, build_harness, harness_json, identities, key_dumps, login_args, metric,
    worker_check,
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The policy of these tests: `web` may enqueue e-mails to `critical`;
/// `loader` fills queues `a` and `b` for the others; `worker-a` consumes
/// `a`; `dashboard` inspects everything; `operator` also changes it;
/// `anything` may enqueue anything anywhere.
fn policy() -> String {
    format!(
        "{}\
         [[grant]]\nidentity = \"web\"\noperations = [\"enqueue\"]\nqueues = [\"critical\"]\ntask_types = [\"email:*\"]\n\
         [[grant]]\nidentity = \"loader\"\noperations = [\"enqueue\"]\nqueues = [\"a\", \"b\"]\ntask_types = [\"*\"]\n\
         [[grant]]\nidentity = \"worker-a\"\noperations = [\"consume\"]\nqueues = [\"a\"]\n\
         [[grant]]\nidentity = \"dashboard\"\noperations = [\"inspect\"]\nqueues = [\"*\"]\n\
         [[grant]]\nidentity = \"operator\"\noperations = [\"inspect\", \"manage\"]\nqueues = [\"*\"]\n\
         [[grant]]\nidentity = \"anything\"\noperations = [\"enqueue\"]\nqueues = [\"*\"]\ntask_types = [\"*\"]\n",
        identities(&[
            "web",
            "loader",
            "worker-a",
            "dashboard",
            "operator",
            "anything"
        ])
    )
}

/// Every key of Redis with its `DUMP`, to show that nothing changed.
async fn snapshot(redis: &Redis) -> BTreeMap<Vec<u8>, Vec<u8>> {
    key_dumps(&mut redis.client().await).await
}

/// `-probe`: one enqueue as `who` of a task of `task_type` to `queue`.
fn probe(binary: &Path, proxy: &Proxy, who: &str, queue: &str, task_type: &str) -> Value {
    let address = proxy.address();
    let mut args = vec![
        "-redis",
        &address,
        "-probe",
        "-probe-queue",
        queue,
        "-probe-type",
        task_type,
    ];
    let login = login_args(who);
    args.extend(login.iter().map(String::as_str));
    harness_json(binary, &args)
}

fn refusal_text(outcome: &Value) -> String {
    assert_eq!(outcome["ok"], false, "expected a refusal: {outcome}");
    outcome["error"].as_str().unwrap_or_default().to_string()
}

async fn producers_get_noperm_and_redis_keeps_nothing(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;

    let allowed = probe(&binary, &proxy, "web", "critical", "email:welcome");
    assert_eq!(allowed["ok"], true, "{allowed}");
    let id = allowed["id"].as_str().expect("task id");
    let mut direct = redis.client().await;
    let key = format!("asynq:{{critical}}:t:{id}");
    assert_eq!(direct.cmd(&["EXISTS", &key]).await, support::int(1));

    let before = snapshot(&redis).await;
    let cases = [
        (
            "low",
            "email:welcome",
            "NOPERM asynq-guard: identity 'web' may not enqueue on queue 'low'",
        ),
        (
            "critical",
            "report",
            "NOPERM asynq-guard: identity 'web' may not enqueue on queue 'critical'",
        ),
        (
            "crit{x}",
            "email:welcome",
            "NOPERM asynq-guard: identity 'web'",
        ),
    ];
    for (queue, task_type, expected) in cases {
        let text = refusal_text(&probe(&binary, &proxy, "web", queue, task_type));
        assert!(text.contains(expected), "{queue}/{task_type}: {text}");
        if task_type == "report" {
            assert!(text.contains("task type 'report'"), "{text}");
        }
    }
    // Case 5: braces in a queue name are refused even under queue "*".
    for queue in ["a}b", "a{b", "{a}"] {
        let text = refusal_text(&probe(&binary, &proxy, "anything", queue, "job"));
        assert!(
            text.contains("NOPERM asynq-guard: identity 'anything'"),
            "{queue}: {text}"
        );
    }
    assert_eq!(
        snapshot(&redis).await,
        before,
        "a refused enqueue changed Redis"
    );

    let metrics = proxy.metrics().await;
    let series = |op: &str, reason: &str| {
        metric(
            &metrics,
            &format!(
                "asynq_guard_refusals_total{{identity=\"web\",operation=\"{op}\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(series("enqueue", "queue_not_granted") >= 1.0, "{metrics}");
    assert_eq!(series("enqueue", "task_type_not_granted"), 1.0, "{metrics}");
}

async fn a_worker_never_dequeues_a_queue_it_may_not_consume(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;
    for queue in ["a", "b"] {
        for _ in 0..3 {
            let outcome = probe(&binary, &proxy, "loader", queue, "job");
            assert_eq!(outcome["ok"], true, "{outcome}");
        }
    }

    let report = worker_check(&binary, &proxy.address(), "worker-a", "a,b");
    assert_eq!(report["processed"]["a"], 3, "{report}");
    assert_eq!(report["processed"]["b"], 0, "{report}");
    let first = report["first_error"].as_str().unwrap_or_default();
    assert!(
        first.contains("NOPERM asynq-guard: identity 'worker-a' may not consume on queue 'b'"),
        "{report}"
    );

    let mut direct = redis.client().await;
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{b}:pending"]).await,
        support::int(3),
        "queue b's tasks did not all stay pending"
    );
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{a}:pending"]).await,
        support::int(0)
    );
}

/// `-dashboard-check` as `who` on queue `a` holding task `id`.
fn dashboard_check(binary: &Path, proxy: &Proxy, who: &str, id: &str) -> Value {
    let address = proxy.address();
    let login = login_args(who);
    let mut args = vec![
        "-redis",
        &address,
        "-dashboard-check",
        "-queue",
        "a",
        "-task-id",
        id,
    ];
    args.extend(login.iter().map(String::as_str));
    harness_json(binary, &args)
}

fn calls<'a>(report: &'a Value, kind: &str) -> &'a Vec<Value> {
    report[kind].as_array().expect("a list of calls")
}

async fn a_dashboard_reads_everything_and_changes_nothing(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &policy()).await;
    let outcome = probe(&binary, &proxy, "loader", "a", "job");
    let id = outcome["id"].as_str().expect("task id").to_string();

    let before = snapshot(&redis).await;
    let report = dashboard_check(&binary, &proxy, "dashboard", &id);
    for read in calls(&report, "reads") {
        assert_eq!(read["ok"], true, "dashboard read refused: {read}");
    }
    let mutations = calls(&report, "mutations");
    assert!(mutations.len() >= 21, "{report}");
    for call in mutations {
        let text = refusal_text(call);
        assert!(
            text.contains("NOPERM asynq-guard: identity 'dashboard' may not manage"),
            "{call}"
        );
    }
    assert_eq!(
        snapshot(&redis).await,
        before,
        "the dashboard changed Redis"
    );

    // The same calls as the operator are not refused by the proxy (some
    // fail on asynq's own terms, such as deleting a queue that is not
    // empty).
    let report = dashboard_check(&binary, &proxy, "operator", &id);
    for call in calls(&report, "reads")
        .iter()
        .chain(calls(&report, "mutations"))
    {
        let text = call["error"].as_str().unwrap_or_default();
        assert!(!text.contains("NOPERM"), "operator refused: {call}");
    }
    let mut direct = redis.client().await;
    assert_eq!(
        direct
            .cmd(&["EXISTS", &format!("asynq:{{a}}:t:{id}")])
            .await,
        support::int(0),
        "the operator's delete did not reach Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_producer_refusals() {
    producers_get_noperm_and_redis_keeps_nothing("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_25_1_producer_refusals() {
    producers_get_noperm_and_redis_keeps_nothing("v0.25.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_producer_refusals() {
    producers_get_noperm_and_redis_keeps_nothing("v0.26.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_worker_sees_only_its_queue() {
    a_worker_never_dequeues_a_queue_it_may_not_consume("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_25_1_worker_sees_only_its_queue() {
    a_worker_never_dequeues_a_queue_it_may_not_consume("v0.25.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_worker_sees_only_its_queue() {
    a_worker_never_dequeues_a_queue_it_may_not_consume("v0.26.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_dashboard_is_read_only() {
    a_dashboard_reads_everything_and_changes_nothing("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_25_1_dashboard_is_read_only() {
    a_dashboard_reads_everything_and_changes_nothing("v0.25.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_dashboard_is_read_only() {
    a_dashboard_reads_everything_and_changes_nothing("v0.26.0").await;
}

/// `config/example-deployment.toml` with its listener, upstream and admin
/// tables left out (the test proxy has its own) and every placeholder
/// secret hash replaced by the hash of that identity's test secret.
fn example_policy() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-deployment.toml");
    let text = std::fs::read_to_string(&path).expect("read the example policy");
    let mut out = String::new();
    let mut skipping = false;
    let mut identity = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping = ["[[listener]]", "[upstream]", "[admin]"].contains(&trimmed);
        }
        if skipping {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("name = ") {
            identity = name.trim_matches('"').to_string();
        }
        if trimmed.starts_with("secret_sha256") {
            let hash = support::secret_hash(&support::secret_of(&identity));
            out.push_str(&format!("secret_sha256 = [\"{hash}\"]\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Each role of the example policy does its job and no more, with asynq
/// v0.26.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_policy_lets_each_role_do_its_job_and_no_more() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness("v0.26.0");
    let redis = Redis::start().await;
    let proxy = Proxy::start_with(&redis.address(), &example_policy()).await;

    for (who, queue, task_type) in [
        ("web", "critical", "email:welcome"),
        ("web", "default", "report:generate"),
        ("scheduler", "default", "cleanup:sessions"),
    ] {
        let outcome = probe(&binary, &proxy, who, queue, task_type);
        assert_eq!(outcome["ok"], true, "{who} {queue} {task_type}: {outcome}");
    }
    for (who, queue, task_type) in [
        ("web", "low", "email:welcome"),
        ("web", "critical", "report:delete-all"),
        ("scheduler", "critical", "cleanup:sessions"),
        ("worker-critical", "critical", "email:welcome"),
        ("dashboard", "critical", "email:welcome"),
    ] {
        let text = refusal_text(&probe(&binary, &proxy, who, queue, task_type));
        assert!(
            text.contains(&format!("NOPERM asynq-guard: identity '{who}'")),
            "{who} {queue} {task_type}: {text}"
        );
    }

    // The critical fleet, configured for default too, takes only its own.
    let report = worker_check(
        &binary,
        &proxy.address(),
        "worker-critical",
        "critical,default",
    );
    assert_eq!(report["processed"]["critical"], 1, "{report}");
    assert_eq!(report["processed"]["default"], 0, "{report}");
    let mut direct = redis.client().await;
    assert_eq!(
        direct.cmd(&["LLEN", "asynq:{default}:pending"]).await,
        support::int(2)
    );

    let outcome = probe(&binary, &proxy, "web", "default", "email:digest");
    let id = outcome["id"].as_str().expect("task id").to_string();
    let address = proxy.address();
    let check = |who: &str| {
        let login = login_args(who);
        let mut args = vec![
            "-redis",
            &address,
            "-dashboard-check",
            "-queue",
            "default",
            "-task-id",
            &id,
        ];
        args.extend(login.iter().map(String::as_str));
        harness_json(&binary, &args)
    };
    let report = check("dashboard");
    for read in calls(&report, "reads") {
        assert_eq!(read["ok"], true, "{read}");
    }
    for call in calls(&report, "mutations") {
        assert!(refusal_text(call).contains("NOPERM"), "{call}");
    }
    let report = check("operator");
    for call in calls(&report, "reads")
        .iter()
        .chain(calls(&report, "mutations"))
    {
        let text = call["error"].as_str().unwrap_or_default();
        assert!(!text.contains("NOPERM"), "operator refused: {call}");
    }
}
