//! asynq's data as the tests build it: task messages, grants, asynq's
//! own Lua scripts (read from the pinned Go module) and the commands
//! asynq sends with them.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{LazyLock, Mutex};

use asynq_guard::asynq::catalog;
use asynq_guard::asynq::message::TaskMessage;
use prost::Message;

use super::{Client, bulk};

/// An encoded `asynq.TaskMessage` as asynq's Client writes it.
pub fn task_message(queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    task_message_with(queue, id, task_type, b"payload")
}

/// [`task_message`] carrying `payload`.
pub fn task_message_with(queue: &str, id: &str, task_type: &str, payload: &[u8]) -> Vec<u8> {
    TaskMessage {
        r#type: task_type.into(),
        payload: payload.to_vec(),
        id: id.into(),
        queue: queue.into(),
        retry: 25,
        timeout: 1800,
        ..Default::default()
    }
    .encode_to_vec()
}

/// A grant of every asynq operation on every queue to `identity`: all of
/// asynq's traffic and nothing else (no `raw`).
pub fn all_of_asynq(identity: &str) -> String {
    format!(
        "[[grant]]\nidentity = \"{identity}\"\n\
         operations = [\"enqueue\", \"consume\", \"schedule\", \"inspect\", \"manage\"]\n\
         queues = [\"*\"]\ntask_types = [\"*\"]\n"
    )
}

/// A grant for `test` to enqueue any task type to queue `q`.
pub const ENQUEUE_Q: &str = "[[grant]]\nidentity = \"test\"\noperations = [\"enqueue\"]\nqueues = [\"q\"]\ntask_types = [\"*\"]\n";

// === asynq's scripts ===

/// The body of asynq v0.26.0's script variable `name`, read from the Go
/// module cache (each body once per test binary).
pub fn asynq_script(name: &str) -> String {
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
pub struct Script {
    pub body: String,
    pub sha: String,
}

/// asynq's script `variable`, checked to be the catalog's `op`, and
/// loaded into Redis directly (not through the proxy) so that EVALSHA
/// would run it if the proxy let it through.
pub async fn load(direct: &mut Client, variable: &str, op: &str) -> Script {
    let body = asynq_script(variable);
    let sha = catalog::sha1_hex(body.as_bytes());
    assert!(
        catalog::SCRIPTS.iter().any(|s| s.sha == sha && s.op == op),
        "{variable} ({sha}) is not the catalog's {op}"
    );
    assert_eq!(direct.cmd(&["SCRIPT", "LOAD", &body]).await, bulk(&sha));
    Script { body, sha }
}

// === asynq's commands ===

/// `EVALSHA <sha>` or `EVAL <body>` with these KEYS and ARGV.
pub fn call(verb: &str, script: &Script, keys: &[&[u8]], argv: &[&[u8]]) -> Vec<Vec<u8>> {
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
pub fn enqueue(verb: &str, script: &Script, queue: &str, id: &str, msg: &[u8]) -> Vec<Vec<u8>> {
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
pub fn dequeue(verb: &str, script: &Script, queue: &str, prefix: &str) -> Vec<Vec<u8>> {
    let keys: Vec<String> = ["pending", "paused", "active", "lease"]
        .iter()
        .map(|k| format!("asynq:{{{queue}}}:{k}"))
        .collect();
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    call(verb, script, &keys, &[b"1700000030", prefix.as_bytes()])
}

/// asynq's enqueue (by EVALSHA of `script`) of a task of type `job` with
/// `payload` to `queue`, as raw RESP bytes ready to pipeline.
pub fn enqueue_bytes(script: &Script, queue: &str, id: &str, payload: &[u8]) -> Vec<u8> {
    let msg = task_message_with(queue, id, "job", payload);
    let args = enqueue("EVALSHA", script, queue, id, &msg);
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    super::encode(&args)
}
