//! Replies that carry task messages, checked before a client sees them.
//!
//! [`rewrite`] walks a script's reply (RESP2 or RESP3, as Redis sent it),
//! checks each message with [`Integrity::on_read`], and gives back the
//! reply the client gets: signatures removed; on the way to a worker
//! (dequeue, lease recovery, aggregation) failing messages withheld; on
//! the way to an inspector failing messages marked in their error field.
//! What must then change in Redis (archive a withheld task, sign a task
//! accepted in the grace period) comes back as [`Fix`]es for
//! [`crate::control`] to carry out. Pure functions.

use bytes::Bytes;

use super::{Failure, Integrity};
use crate::resp::Proto;

/// Where the messages of a reply lie in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One message or nil (dequeue).
    One,
    /// An array of messages (listLeaseExpired, readAggregationSet).
    Array,
    /// `{msg, state, next_process_at, result}` (getTaskInfo).
    TaskInfo,
    /// A flat array whose every `n`th element, from the first, is a
    /// message (listMessages: 2, listZSetEntries: 3).
    Every(usize),
}

/// Where the tasks of a delivering reply wait: where a withheld one is
/// archived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The queue's active list (and lease set).
    Active,
    /// An aggregation set (its key).
    AggregationSet(Bytes),
}

/// What to check in one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyCheck {
    pub queue: String,
    pub shape: Shape,
    /// Set when the messages go to a worker: failing ones are withheld
    /// and archived from here.
    pub deliver: Option<Source>,
    /// The task id, when the command names one task.
    pub task_id: Option<Bytes>,
}

/// A change to make in Redis after a reply was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Archive the task holding `stored`, withheld from a worker.
    Archive {
        queue: String,
        source: Source,
        stored: Bytes,
        /// The id the message claims (tried first; the task is found by
        /// its stored bytes).
        claimed_id: String,
        /// The message to archive it with (error set), if decodable.
        archived: Option<Vec<u8>>,
        failure: Failure,
    },
    /// Store the signed form of a task accepted unsigned (grace period).
    SignInPlace {
        queue: String,
        id: String,
        stored: Bytes,
        signed: Vec<u8>,
    },
    /// A failing message shown to an inspector, marked; nothing to do
    /// in Redis but count it.
    Marked { queue: String, failure: Failure },
}

/// One parsed reply element.
#[derive(Debug)]
enum Value<'a> {
    Bulk(&'a [u8]),
    Nil,
    Array(Vec<Value<'a>>),
    /// Anything else, as it came.
    Other(&'a [u8]),
}

fn line(b: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let end = b[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
    Some((&b[pos..end], end + 2))
}

fn parse(b: &[u8], pos: usize, depth: usize) -> Option<(Value<'_>, usize)> {
    if depth > 4 {
        return None;
    }
    let kind = *b.get(pos)?;
    let (head, next) = line(b, pos + 1)?;
    let n = || std::str::from_utf8(head).ok()?.parse::<i64>().ok();
    match kind {
        b'$' => {
            let len = n()?;
            if len < 0 {
                return Some((Value::Nil, next));
            }
            let end = next.checked_add(usize::try_from(len).ok()?)?;
            if b.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            Some((Value::Bulk(&b[next..end]), end + 2))
        }
        b'_' => Some((Value::Nil, next)),
        b'*' => {
            let len = n()?;
            if len < 0 {
                return Some((Value::Nil, next));
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..len {
                let (v, after) = parse(b, at, depth + 1)?;
                items.push(v);
                at = after;
            }
            Some((Value::Array(items), at))
        }
        b':' | b'+' | b',' | b'#' | b'(' => Some((Value::Other(&b[pos..next]), next)),
        _ => None,
    }
}

fn put_bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn put_nil(out: &mut Vec<u8>, proto: Proto) {
    out.extend_from_slice(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

/// The state of checking one reply.
struct Walk<'a> {
    check: &'a ReplyCheck,
    integrity: &'a Integrity,
    now: i64,
    fixes: Vec<Fix>,
}

/// What one message becomes.
enum Outcome {
    Keep(Vec<u8>),
    Withhold,
}

impl Walk<'_> {
    fn message(&mut self, bytes: &[u8], id: Option<&[u8]>) -> Outcome {
        let queue = &self.check.queue;
        match self.integrity.on_read(queue, id, bytes) {
            Ok(read) => {
                if let Some(signed) = read.sign_in_place {
                    self.fixes.push(Fix::SignInPlace {
                        queue: queue.clone(),
                        id: read.msg.id.clone(),
                        stored: Bytes::copy_from_slice(bytes),
                        signed,
                    });
                }
                Outcome::Keep(read.stripped)
            }
            Err(failure) => match &self.check.deliver {
                Some(source) => {
                    let claimed_id = crate::asynq::message::decode(bytes)
                        .map(|m| m.id)
                        .unwrap_or_default();
                    self.fixes.push(Fix::Archive {
                        queue: queue.clone(),
                        source: source.clone(),
                        stored: Bytes::copy_from_slice(bytes),
                        claimed_id,
                        archived: Integrity::archived_message(bytes, &failure, self.now, None),
                        failure,
                    });
                    Outcome::Withhold
                }
                None => {
                    let (stripped, _) = super::sign::take_carrier(bytes);
                    if failure == Failure::Quarantined && shows_integrity_error(&stripped) {
                        // Archived by the proxy: its error already says
                        // why, and it was counted then. A mark forged
                        // without that error is marked and counted below.
                        return Outcome::Keep(stripped);
                    }
                    let marked = marked(&stripped, &failure).unwrap_or(stripped);
                    self.fixes.push(Fix::Marked {
                        queue: queue.clone(),
                        failure,
                    });
                    Outcome::Keep(marked)
                }
            },
        }
    }
}

/// Whether a stored message's error already says the integrity check
/// failed.
fn shows_integrity_error(stripped: &[u8]) -> bool {
    crate::asynq::message::decode(stripped).is_ok_and(|m| Failure::explained(&m.error_msg))
}

/// A failing message as an inspector sees it: with the reason in its
/// error field, nothing else changed.
fn marked(stripped: &[u8], failure: &Failure) -> Option<Vec<u8>> {
    use prost::Message;
    let mut m = crate::asynq::message::decode(stripped).ok()?;
    m.error_msg = failure.archived_error();
    Some(m.encode_to_vec())
}

/// An error in place of a reply whose messages could not be found (never
/// pass on what was not checked).
fn unreadable() -> (Option<Bytes>, Vec<Fix>) {
    (
        Some(crate::resp::error_reply(
            "ERR asynq-guard: the reply's task messages could not be checked",
        )),
        Vec::new(),
    )
}

/// The reply the client gets for `raw`, and what must change in Redis.
/// `None` for the reply when it goes through unchanged (errors, nil);
/// a reply not shaped as the script answers becomes an error.
pub fn rewrite(
    raw: &[u8],
    proto: Proto,
    check: &ReplyCheck,
    integrity: &Integrity,
    now: i64,
) -> (Option<Bytes>, Vec<Fix>) {
    let mut walk = Walk {
        check,
        integrity,
        now,
        fixes: Vec::new(),
    };
    if matches!(raw.first(), Some(b'-' | b'!')) {
        return (None, Vec::new());
    }
    let Some((value, end)) = parse(raw, 0, 0) else {
        return unreadable();
    };
    if end != raw.len() {
        return unreadable();
    }
    let mut out = Vec::with_capacity(raw.len());
    match (check.shape, value) {
        (Shape::One, Value::Bulk(b)) => match walk.message(b, None) {
            Outcome::Keep(m) => put_bulk(&mut out, &m),
            Outcome::Withhold => put_nil(&mut out, proto),
        },
        (Shape::Array, Value::Array(items)) => {
            let mut kept = Vec::new();
            let mut count = 0;
            for item in items {
                match item {
                    Value::Bulk(b) => match walk.message(b, None) {
                        Outcome::Keep(m) => put_bulk(&mut kept, &m),
                        Outcome::Withhold => continue,
                    },
                    Value::Nil => put_nil(&mut kept, proto),
                    Value::Other(raw) => kept.extend_from_slice(raw),
                    Value::Array(_) => return unreadable(),
                }
                count += 1;
            }
            out.extend_from_slice(format!("*{count}\r\n").as_bytes());
            out.extend_from_slice(&kept);
        }
        (Shape::TaskInfo | Shape::Every(_), Value::Array(items)) => {
            let every = match check.shape {
                Shape::Every(n) => n.max(1),
                _ => usize::MAX,
            };
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::Bulk(b) if i % every == 0 => {
                        let id = check.task_id.as_deref();
                        match walk.message(b, id) {
                            Outcome::Keep(m) => put_bulk(&mut out, &m),
                            Outcome::Withhold => put_nil(&mut out, proto),
                        }
                    }
                    Value::Bulk(b) => put_bulk(&mut out, b),
                    Value::Nil => put_nil(&mut out, proto),
                    Value::Other(raw) => out.extend_from_slice(raw),
                    Value::Array(_) => return unreadable(),
                }
            }
        }
        (_, Value::Nil) => return (None, Vec::new()),
        _ => return unreadable(),
    }
    (Some(Bytes::from(out)), walk.fixes)
}
