//! The plain (non-script) commands asynq sends, checked with their
//! arguments, and connection housekeeping.
//!
//! The reference is `docs/asynq-wire.md`, section 4. Each command is
//! accepted only in the exact form asynq uses: `SADD asynq:queues <q>` and
//! not `SADD asynq:queues a b` or `SADD other q`. Options are compared
//! whole, so a word Redis would read differently (say `XX\0`) is refused
//! rather than guessed at.

use super::Operation::{Consume, Enqueue, Inspect, Manage, Schedule};
use super::{Access, NotAsynq, Operation, keys, shown};
use crate::resp::{Command, parse_int};

/// Classifies a command that is not scripting.
pub fn classify(cmd: &Command, name: &'static str) -> Result<Access, NotAsynq> {
    if housekeeping(cmd, name) {
        return Ok(Access::Housekeeping);
    }
    let args: Vec<&[u8]> = cmd.args.iter().map(|a| &a[..]).collect();
    let upper = name.to_ascii_uppercase();
    let found = match name {
        "sadd" | "sismember" | "srem" => queue_registry(name, &args),
        "smembers" => smembers(&args),
        "zadd" => zadd(&args),
        "zrem" => zrem(&args),
        "zscore" => zscore(&args),
        "hset" => hset_result(&args),
        "subscribe" => subscribe(&args),
        "publish" => publish(&args),
        "del" => del(&args),
        "setnx" => setnx(&args),
        // A server's info names its queues; its workers' entries and a
        // scheduler's entries carry the task payloads of every queue.
        "get" => process_read(&args, 2, keys::SERVERS).then(|| anywhere(&[Inspect])),
        "hvals" => process_read(&args, 2, keys::WORKERS).then(|| everywhere(&[Inspect])),
        "lrange" if args.len() == 4 && args[2] == b"0" && args[3] == b"-1" => {
            process_read(&args, 4, keys::SCHEDULERS).then(|| everywhere(&[Inspect]))
        }
        "zrevrange" => history_read(&args),
        "cluster" => cluster(cmd, &args),
        "info" => Some(anywhere(&[Inspect])),
        _ => None,
    };
    found
        .map(|(ops, queue, every_queue)| Access::Asynq {
            ops,
            queue,
            every_queue,
            task_type: None,
            what: describe(&upper, &args),
            clock_arg: None,
            message_sizes: None,
            script: None,
            script_op: None,
            message_arg: None,
            task_id: None,
        })
        .ok_or_else(|| {
            // asynq sends these too: say what is wrong with the queue name.
            let braced = args.get(1..).unwrap_or_default().iter().find_map(|a| {
                let queue_arg = a.starts_with(b"asynq:{") || args.get(1) == Some(&keys::QUEUES);
                keys::brace_refusal(a).filter(|_| queue_arg)
            });
            NotAsynq(match braced {
                Some(why) => format!("it {why}"),
                None => format!("{upper} in this form is not something asynq sends"),
            })
        })
}

/// Operations, the queue (`None`: asynq's global keys), and whether the
/// command reads data of every queue.
type Found = (&'static [Operation], Option<String>, bool);

fn anywhere(ops: &'static [Operation]) -> Found {
    (ops, None, false)
}

fn on_queue(ops: &'static [Operation], queue: String) -> Found {
    (ops, Some(queue), false)
}

/// Reads data of every queue: needs the operation on `*`.
fn everywhere(ops: &'static [Operation]) -> Found {
    (ops, None, true)
}

/// The command with the key it names, for errors: never a value.
fn describe(upper: &str, args: &[&[u8]]) -> String {
    match (upper, args.get(1)) {
        ("PING" | "INFO", _) | (_, None) => upper.to_string(),
        ("CLUSTER", Some(sub)) => {
            format!("CLUSTER {}", String::from_utf8_lossy(sub).to_uppercase())
        }
        (_, Some(key)) => format!("{upper} {}", shown(key)),
    }
}

/// Commands every authenticated connection may send: they touch no data.
fn housekeeping(cmd: &Command, name: &str) -> bool {
    let n = cmd.args.len();
    match name {
        "ping" => n <= 2,
        "echo" => n == 2,
        "quit" | "reset" | "multi" | "exec" | "discard" => n == 1,
        "auth" | "hello" => true,
        "client" => ["setname", "setinfo", "getname", "id"]
            .iter()
            .any(|sub| cmd.arg_is(1, sub)),
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => true,
        _ => false,
    }
}

/// `SADD`/`SISMEMBER`/`SREM asynq:queues <q>`.
fn queue_registry(name: &str, args: &[&[u8]]) -> Option<Found> {
    if args.len() != 3 || args[1] != keys::QUEUES || !keys::valid_queue(args[2]) {
        return None;
    }
    let queue = String::from_utf8_lossy(args[2]).into_owned();
    let ops: &'static [Operation] = match name {
        "sadd" => &[Enqueue],
        "sismember" => &[Inspect, Manage],
        _ => &[Manage],
    };
    Some(on_queue(ops, queue))
}

/// `SMEMBERS asynq:queues` (inspector) or `SMEMBERS asynq:{q}:groups`
/// (the server's aggregator).
fn smembers(args: &[&[u8]]) -> Option<Found> {
    if args.len() != 2 {
        return None;
    }
    if args[1] == keys::QUEUES {
        return Some(anywhere(&[Inspect]));
    }
    keys::queue_of(args[1], b"groups").map(|q| on_queue(&[Consume, Inspect], q))
}

/// Heartbeats (`ZADD asynq:servers <t> asynq:servers:{…}`, the same for
/// workers and schedulers) and lease extension (`ZADD asynq:{q}:lease XX
/// <t> <id> …`).
fn zadd(args: &[&[u8]]) -> Option<Found> {
    if args.len() == 4
        && is_number(args[2])
        && let Some(ops) = registry_entry(args[1], args[3])
    {
        return Some(anywhere(ops));
    }
    let queue = keys::queue_of(args.get(1)?, b"lease")?;
    let pairs = args.get(3..)?;
    let well_formed = args[2].eq_ignore_ascii_case(b"xx")
        && !pairs.is_empty()
        && pairs.len() % 2 == 0
        && pairs.chunks(2).all(|p| is_number(p[0]) && !p[1].is_empty());
    well_formed.then(|| on_queue(&[Consume], queue))
}

/// `ZREM` of a registry entry at shutdown.
fn zrem(args: &[&[u8]]) -> Option<Found> {
    if args.len() != 3 {
        return None;
    }
    registry_entry(args[1], args[2]).map(anywhere)
}

/// Who may add or remove `entry` in the registry `registry`: servers and
/// workers are consumers' heartbeats, schedulers the scheduler's.
fn registry_entry(registry: &[u8], entry: &[u8]) -> Option<&'static [Operation]> {
    if !keys::is_process_key(entry, registry) {
        return None;
    }
    match registry {
        r if r == keys::SERVERS || r == keys::WORKERS => Some(&[Consume]),
        r if r == keys::SCHEDULERS => Some(&[Schedule]),
        _ => None,
    }
}

/// `ZSCORE asynq:{q}:aggregation_sets asynq:{q}:g:<group>:<set>`.
fn zscore(args: &[&[u8]]) -> Option<Found> {
    if args.len() != 3 {
        return None;
    }
    let queue = keys::queue_of(args[1], b"aggregation_sets")?;
    let (member_queue, tail) = keys::queue_and_tail(args[2], b"g:")?;
    (member_queue == queue && tail.contains(&b':')).then(|| on_queue(&[Consume], queue))
}

/// `HSET asynq:{q}:t:<id> result <bytes>`: a handler's result.
fn hset_result(args: &[&[u8]]) -> Option<Found> {
    if args.len() != 4 || args[2] != b"result" {
        return None;
    }
    let (queue, _) = keys::queue_and_tail(args[1], b"t:")?;
    Some(on_queue(&[Consume], queue))
}

/// `SUBSCRIBE asynq:cancel`: servers listen for cancellations.
fn subscribe(args: &[&[u8]]) -> Option<Found> {
    (args.len() == 2 && args[1] == keys::CANCEL_CHANNEL).then(|| anywhere(&[Consume]))
}

/// `PUBLISH asynq:cancel <task id>`: the inspector cancels a task.
fn publish(args: &[&[u8]]) -> Option<Found> {
    (args.len() == 3 && args[1] == keys::CANCEL_CHANNEL && !args[2].is_empty())
        .then(|| anywhere(&[Manage]))
}

/// `DEL asynq:{q}:paused` (unpause), and the scheduler's cleanup of its
/// entries and history.
fn del(args: &[&[u8]]) -> Option<Found> {
    if args.len() != 2 {
        return None;
    }
    let key = args[1];
    if let Some(queue) = keys::queue_of(key, b"paused") {
        return Some(on_queue(&[Manage], queue));
    }
    (keys::is_process_key(key, keys::SCHEDULERS) || keys::is_history_key(key))
        .then(|| anywhere(&[Schedule]))
}

/// `SETNX asynq:{q}:paused <time>`: pause.
fn setnx(args: &[&[u8]]) -> Option<Found> {
    if args.len() != 3 {
        return None;
    }
    keys::queue_of(args[1], b"paused").map(|q| on_queue(&[Manage], q))
}

/// Whether this is the inspector reading a server's, its workers' or a
/// scheduler's entry.
fn process_read(args: &[&[u8]], len: usize, prefix: &[u8]) -> bool {
    args.len() == len && keys::is_process_key(args[1], prefix)
}

/// `ZREVRANGE asynq:scheduler_history:<entry> <start> <stop> WITHSCORES`.
fn history_read(args: &[&[u8]]) -> Option<Found> {
    let shape = args.len() == 5
        && keys::is_history_key(args[1])
        && parse_int(args[2]).is_ok()
        && parse_int(args[3]).is_ok()
        && args[4].eq_ignore_ascii_case(b"withscores");
    shape.then(|| anywhere(&[Inspect]))
}

/// `CLUSTER KEYSLOT asynq:{q}:pending` and `CLUSTER INFO` (inspector);
/// what would reveal topology is refused earlier by `conceal`.
fn cluster(cmd: &Command, args: &[&[u8]]) -> Option<Found> {
    if cmd.arg_is(1, "info") && args.len() == 2 {
        return Some(anywhere(&[Inspect]));
    }
    if cmd.arg_is(1, "keyslot") && args.len() == 3 {
        return keys::split(args[2]).map(|(q, _)| on_queue(&[Inspect], q.to_string()));
    }
    None
}

/// A ZADD score as go-redis writes it (`strconv.FormatFloat(f, 'f', -1)`).
fn is_number(arg: &[u8]) -> bool {
    !arg.is_empty()
        && arg.len() <= 32
        && arg
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && std::str::from_utf8(arg)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
}
