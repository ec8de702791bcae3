//! The Go asynq harness of `tests/harness`, built at a pinned asynq
//! version, and asynq-guard policies for its roles.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::secret_hash;

/// The asynq versions every asynq test runs at.
pub const ASYNQ_VERSIONS: [&str; 3] = ["v0.24.1", "v0.25.1", "v0.26.0"];

/// Builds the harness at `version` (`go.mod` is v0.26.0, the others have
/// their own module file) into the test's target directory.
pub fn build_harness(version: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness");
    let modfile = match version {
        "v0.26.0" => "go.mod".to_string(),
        other => format!("go.{other}.mod"),
    };
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("harness-{version}"));
    let status = Command::new("go")
        .arg("build")
        .arg(format!("-modfile={modfile}"))
        .arg("-o")
        .arg(&binary)
        .arg(".")
        .current_dir(&dir)
        .status()
        .expect("run go build (is Go installed?)");
    assert!(
        status.success(),
        "go build of the harness at asynq {version}"
    );
    binary
}

/// Runs one of the harness's single-shot modes and returns the JSON it
/// prints.
pub fn harness_json(binary: &Path, args: &[&str]) -> Value {
    let out = Command::new(binary)
        .args(args)
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "harness {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("harness {args:?}: {e}: {stdout}"))
}

/// The secret the tests give identity `name`.
pub fn secret_of(name: &str) -> String {
    format!("{name}-secret-5e1b")
}

/// `[[identity]]` tables for `names`, each proved by [`secret_of`].
pub fn identities(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "[[identity]]\nname = \"{n}\"\nsecret_sha256 = [\"{}\"]\n",
                secret_hash(&secret_of(n))
            )
        })
        .collect()
}

/// `-username NAME -password SECRET` for the harness.
pub fn login_args(name: &str) -> Vec<String> {
    vec![
        "-username".into(),
        name.into(),
        "-password".into(),
        secret_of(name),
    ]
}

/// The queues of the harness's scenario that the producer fills, and the
/// one only its scheduler feeds.
pub const WORK_QUEUES: [&str; 3] = ["critical", "default", "low"];
pub const PERIODIC_QUEUE: &str = "periodic";

/// The task types the harness's producer enqueues (`tests/harness/plan.go`).
pub const HARNESS_TASK_TYPES: [&str; 12] = [
    "long",
    "plain",
    "scheduled",
    "unique",
    "unique_scheduled",
    "grouped",
    "grouped_unique",
    "custom_id",
    "retry_once",
    "retry_hold",
    "always_fail",
    "result",
];

/// The harness's roles as asynq-guard identities, each granted exactly
/// what its asynq component needs: a producer for the work queues and
/// its task types, a scheduler, a read-only dashboard, an operator that
/// may only change things, and one worker fleet per queue (whose group
/// aggregator enqueues the aggregated task into its own queue).
pub fn harness_roles() -> (Vec<String>, String) {
    let quoted = |list: &[&str]| {
        list.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut names: Vec<String> = ["producer", "scheduler", "dashboard", "operator"]
        .map(String::from)
        .to_vec();
    let mut grants = format!(
        "[[grant]]\nidentity = \"producer\"\noperations = [\"enqueue\"]\nqueues = [{}]\ntask_types = [{}]\n\
         [[grant]]\nidentity = \"scheduler\"\noperations = [\"schedule\", \"enqueue\"]\nqueues = [\"{PERIODIC_QUEUE}\"]\ntask_types = [\"periodic\"]\n\
         [[grant]]\nidentity = \"dashboard\"\noperations = [\"inspect\"]\nqueues = [\"*\"]\n\
         [[grant]]\nidentity = \"operator\"\noperations = [\"manage\"]\nqueues = [\"*\"]\n",
        quoted(&WORK_QUEUES),
        quoted(&HARNESS_TASK_TYPES)
    );
    for q in WORK_QUEUES.iter().chain([&PERIODIC_QUEUE]) {
        let name = format!("worker-{q}");
        grants.push_str(&format!(
            "[[grant]]\nidentity = \"{name}\"\noperations = [\"consume\"]\nqueues = [\"{q}\"]\n"
        ));
        if *q != PERIODIC_QUEUE {
            grants.push_str(&format!(
                "[[grant]]\nidentity = \"{name}\"\noperations = [\"enqueue\"]\nqueues = [\"{q}\"]\ntask_types = [\"aggregated\"]\n"
            ));
        }
        names.push(name);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    (names.clone(), format!("{}{grants}", identities(&refs)))
}

/// Writes the harness's `-logins` file for [`harness_roles`] into `dir`.
pub fn write_logins(dir: &Path) -> PathBuf {
    let login = |n: &str| serde_json::json!({"username": n, "password": secret_of(n)});
    let mut workers = serde_json::Map::new();
    for q in WORK_QUEUES.iter().chain([&PERIODIC_QUEUE]) {
        workers.insert(q.to_string(), login(&format!("worker-{q}")));
    }
    let file = serde_json::json!({
        "producer": login("producer"),
        "scheduler": login("scheduler"),
        "dashboard": login("dashboard"),
        "operator": login("operator"),
        "workers": workers,
    });
    let path = dir.join("logins.json");
    std::fs::write(&path, file.to_string()).expect("write the logins file");
    path
}

/// Runs the harness's mode `args` (after `-redis`) against `address` as
/// identity `who`, and returns the JSON it prints.
pub fn harness_as(binary: &Path, address: &str, who: &str, args: &[&str]) -> Value {
    let login = login_args(who);
    let mut all = vec!["-redis", address];
    all.extend_from_slice(args);
    all.extend(login.iter().map(String::as_str));
    harness_json(binary, &all)
}

/// [`harness_as`] on a blocking thread, for tests that run other asynq
/// programs or clients meanwhile.
pub async fn harness_as_async(binary: &Path, address: &str, who: &str, args: &[&str]) -> Value {
    let (binary, address, who) = (binary.to_path_buf(), address.to_string(), who.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        harness_as(&binary, &address, &who, &args)
    })
    .await
    .expect("harness thread")
}

/// `-probe`: one enqueue as `who` of `task_type` to `queue`, and what
/// asynq returned.
pub async fn probe_as(
    binary: &Path,
    address: &str,
    who: &str,
    queue: &str,
    task_type: &str,
) -> Value {
    harness_as_async(
        binary,
        address,
        who,
        &["-probe", "-probe-queue", queue, "-probe-type", task_type],
    )
    .await
}

/// `-worker-check` as `who` on `queues` (comma-separated) for 4 s: what
/// an asynq server with that identity processed.
pub fn worker_check(binary: &Path, address: &str, who: &str, queues: &str) -> Value {
    harness_as(
        binary,
        address,
        who,
        &[
            "-worker-check",
            "-worker-queues",
            queues,
            "-worker-for",
            "4s",
        ],
    )
}
