//! The gate's integrity step, after authorization: what task signatures
//! ask of a command on a signed queue ([`crate::integrity`]). An enqueue
//! is forwarded with its message signed (in `check` mode only if its
//! producer signed it); a worker's write-back with its message checked
//! against the task's signature and signed anew; a script that returns
//! task messages gets its reply checked. Touches nothing but metrics and
//! the audit log.

use super::Gate;
use super::authorize::{Refused, Verdict};
use crate::asynq::{self, Operation};
use crate::integrity::replies::{ReplyCheck, Shape, Source};
use crate::integrity::{Failure, Mode};
use crate::resp::Command;
use crate::session::Shared;
use crate::upstream;
use bytes::Bytes;

/// A worker's write-back that must be checked against the task as
/// stored in Redis (the proxy has no memory of handing it out).
#[derive(Debug)]
pub struct StoredCheck {
    /// `asynq:{q}:t:<id>`, to read the stored message from.
    pub task_key: Bytes,
    queue: String,
    id: Vec<u8>,
    /// The command's arguments and the index of its message.
    args: Vec<Bytes>,
    message_arg: usize,
    what: String,
}

/// What a script's reply carries, by the script's name.
fn reply_shape(op: &str, cmd: &Command) -> Option<(Shape, Option<Source>)> {
    Some(match op {
        "dequeue" => (Shape::One, Some(Source::Active)),
        "listLeaseExpired" => (Shape::Array, Some(Source::Active)),
        "readAggregationSet" => (
            Shape::Array,
            Some(Source::AggregationSet(cmd.args.get(3)?.clone())),
        ),
        "getTaskInfo" => (Shape::TaskInfo, None),
        "listMessages" => (Shape::Every(2), None),
        "listZSetEntries" => (Shape::Every(3), None),
        _ => return None,
    })
}

/// `cmd` with argument `index` replaced by `value`.
pub(super) fn with_arg(args: &[Bytes], index: usize, value: &[u8]) -> Bytes {
    let args: Vec<&[u8]> = args
        .iter()
        .enumerate()
        .map(|(i, a)| if i == index { value } else { &a[..] })
        .collect();
    upstream::encode_command(&args)
}

/// What the step needs of the asynq model's verdict on a command.
pub(super) struct Facts<'a> {
    pub ops: &'static [Operation],
    pub queue: &'a str,
    pub what: &'a str,
    pub script_op: Option<&'static str>,
    pub message_arg: Option<usize>,
    pub task_id: Option<&'a [u8]>,
    pub task_type: Option<&'a str>,
}

impl Gate {
    /// The integrity step for a command the grants allow.
    ///
    /// # Errors
    ///
    /// The refusal's text, already counted and audited.
    pub(super) fn integrity_step(
        &mut self,
        cmd: &Command,
        f: &Facts<'_>,
        shared: &Shared,
    ) -> Result<Verdict, String> {
        let integrity = &shared.integrity;
        if integrity.mode(f.queue) == Mode::Off {
            return Ok(Verdict::default());
        }
        if let Some((shape, deliver)) = f.script_op.and_then(|op| reply_shape(op, cmd)) {
            if self.in_multi {
                return Err(self.integrity_refused(
                    shared,
                    f,
                    "none",
                    "it returns task messages, which are checked one reply at a time, not inside MULTI",
                ));
            }
            return Ok(Verdict {
                check: Some(Box::new(ReplyCheck {
                    queue: f.queue.to_string(),
                    shape,
                    deliver,
                    task_id: f.task_id.map(Bytes::copy_from_slice),
                })),
                ..Verdict::default()
            });
        }
        let Some(index) = f.message_arg else {
            return Ok(Verdict::default());
        };
        let bytes = &cmd.args[index];
        let (path, result) = if f.ops.contains(&Operation::Enqueue) {
            (
                "enqueue",
                integrity
                    .on_enqueue(f.queue, bytes)
                    .map(Option::unwrap_or_default),
            )
        } else if f.script_op == Some("updateTaskPayload") {
            let id = f.task_id.unwrap_or_default();
            ("update", integrity.on_update(f.queue, id, bytes))
        } else {
            let id = f.task_id.unwrap_or_default();
            let id_text = String::from_utf8_lossy(id);
            let known = integrity.handed_out(f.queue, &id_text);
            match known.map(|sig| integrity.on_write_back(f.queue, id, bytes, &sig)) {
                Some(Ok(signed)) => ("write_back", Ok(signed)),
                // Not handed out here, or changed since (another proxy,
                // an inspector): the stored task decides.
                _ => {
                    let mut task_key = format!("asynq:{{{}}}:t:", f.queue).into_bytes();
                    task_key.extend_from_slice(id);
                    return Ok(Verdict {
                        stored: Some(Box::new(StoredCheck {
                            task_key: Bytes::from(task_key),
                            queue: f.queue.to_string(),
                            id: id.to_vec(),
                            args: cmd.args.clone(),
                            message_arg: index,
                            what: f.what.to_string(),
                        })),
                        ..Verdict::default()
                    });
                }
            }
        };
        match result {
            Ok(signed) => {
                count_signed(shared, f.queue, path);
                Ok(Verdict {
                    rewrite: Some(with_arg(&cmd.args, index, &signed)),
                    ..Verdict::default()
                })
            }
            Err(failure) => Err(self.write_refused(shared, f, path, &failure)),
        }
    }

    /// Decides a write-back against the task as stored (`Ok(None)`: no
    /// such task; `Err`: Redis could not be asked).
    ///
    /// # Errors
    ///
    /// The refusal's text, already counted and audited.
    pub(super) fn stored_step(
        &mut self,
        check: &StoredCheck,
        stored: Result<Option<Bytes>, String>,
        shared: &Shared,
    ) -> Result<Bytes, String> {
        let f = Facts {
            ops: &[Operation::Consume],
            queue: &check.queue,
            what: &check.what,
            script_op: None,
            message_arg: Some(check.message_arg),
            task_id: Some(&check.id),
            task_type: None,
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                return Err(self.integrity_refused(
                    shared,
                    &f,
                    "write_back",
                    &format!("the stored task could not be read to check the write-back ({e})"),
                ));
            }
        };
        let bytes = &check.args[check.message_arg];
        match shared.integrity.on_write_back_stored(
            &check.queue,
            &check.id,
            bytes,
            stored.as_deref(),
        ) {
            Ok(signed) => {
                count_signed(shared, &check.queue, "write_back");
                Ok(with_arg(&check.args, check.message_arg, &signed))
            }
            Err(failure) => Err(self.write_refused(shared, &f, "write_back", &failure)),
        }
    }

    fn write_refused(
        &mut self,
        shared: &Shared,
        f: &Facts<'_>,
        path: &'static str,
        failure: &Failure,
    ) -> String {
        shared
            .metrics
            .integrity_failures
            .with_label_values(&[&shared.metrics.queue_label(f.queue), failure.label(), path])
            .inc();
        let why = match (path, failure) {
            ("enqueue", _) => format!(
                "queue '{}' is in check mode and {}: sign tasks with the producer's key (docs/integrity.md)",
                asynq::shown(f.queue.as_bytes()),
                failure.text()
            ),
            ("write_back", Failure::Mismatch) => "the new message changes what a worker may not change (type, payload, options); only retried, error_msg, last_failed_at and completed_at may change".into(),
            ("update", Failure::Unsigned | Failure::Malformed | Failure::UnknownKey(_) | Failure::Mismatch) => format!(
                "queue '{}' is in check mode: a new payload needs its producer's signature ({})",
                asynq::shown(f.queue.as_bytes()),
                failure.text()
            ),
            _ => failure.text(),
        };
        self.integrity_refused(shared, f, path, &why)
    }

    /// Counts, audits and words an integrity refusal.
    fn integrity_refused(
        &mut self,
        shared: &Shared,
        f: &Facts<'_>,
        _path: &'static str,
        why: &str,
    ) -> String {
        let identity = self.identity().map_or_else(String::new, |i| i.name.clone());
        let op = f.ops.first().map_or("none", |o| o.name());
        self.refused(
            shared,
            &Refused {
                identity: &identity,
                op,
                reason: "integrity",
                what: f.what,
                queue: Some(f.queue),
                task_type: f.task_type,
                why,
                ..Refused::default()
            },
        );
        format!(
            "NOPERM asynq-guard: identity '{identity}' may not send {} on queue '{}': {why}",
            f.what,
            asynq::shown(f.queue.as_bytes())
        )
    }
}

fn count_signed(shared: &Shared, queue: &str, how: &str) {
    shared
        .metrics
        .integrity_signed
        .with_label_values(&[&shared.metrics.queue_label(queue), how])
        .inc();
}
