//! asynq's data as the tests build it: task messages and grants.

use asynq_guard::asynq::message::TaskMessage;
use prost::Message;

/// An encoded `asynq.TaskMessage` as asynq's Client writes it.
pub fn task_message(queue: &str, id: &str, task_type: &str) -> Vec<u8> {
    TaskMessage {
        r#type: task_type.into(),
        payload: b"payload".to_vec(),
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
