//! What each catalogued script's KEYS and ARGV must look like.
//!
//! A layout says, slot by slot, what asynq puts in a script's KEYS and
//! ARGV (the reference is `docs/asynq-wire.md`, section 3). Checking a call
//! against it establishes the one queue the call touches: every key and
//! every key prefix in ARGV (which the script turns into key names inside
//! Lua) must name the same queue; a task key must end in the task id
//! argument; a task message must decode and carry that queue and id. A
//! call whose shape differs from its layout is refused, whatever the
//! identity may do. Pure functions; nothing is touched.

use super::Operation::{self, Consume, Enqueue, Inspect, Manage, Schedule};
use super::keys;
use super::message::{self, TaskMessage};
use crate::resp::parse_int;

/// One KEYS slot.
#[derive(Debug, Clone, Copy)]
enum K {
    /// `asynq:{q}:<suffix>`.
    Q(&'static str),
    /// `asynq:{q}:<one of these suffixes>`.
    OneOf(&'static [&'static str]),
    /// `asynq:{q}:<name>:<yyyy-mm-dd>`, a daily counter.
    Day(&'static str),
    /// `asynq:{q}:t:<ARGV[i]>` (1-based), the task of the id argument.
    Task(usize),
    /// `asynq:{q}:t:<id>`: the task id comes from the key itself.
    TaskOwnId,
    /// `asynq:{q}:t:`, a prefix passed as a key (archive, v0.25+).
    TaskPrefix,
    /// `asynq:{q}:unique:<...>`, a uniqueness lock.
    Unique,
    /// `asynq:{q}:g:<ARGV[i]>`, the group of the group-name argument.
    Group(usize),
    /// `asynq:{q}:g:<ARGV[i]>:<set id>`, an aggregation set of that group.
    AggSet(usize),
    /// `asynq:{q}:g:<group>:<set id>`, an aggregation set.
    AnyAggSet,
    /// A task zset (`scheduled`, `retry`, `archived`, `completed`) or a
    /// group (`g:<group>`): what the inspector lists.
    TaskZset,
    /// `<prefix>:{host:pid:uuid}`, a server's, workers' or scheduler's
    /// own key.
    Process(&'static [u8]),
    /// One of asynq's global registries, exactly.
    Registry,
    /// `asynq:scheduler_history:<entry id>`.
    History,
}

/// One ARGV slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum A {
    /// A number or opaque value the script uses as data.
    Data,
    /// An encoded `asynq.TaskMessage` that the script stores.
    Msg,
    /// The task id.
    TaskId,
    /// `asynq:{q}:t:`.
    TaskPrefix,
    /// `asynq:{q}:`.
    QueuePrefix,
    /// `asynq:{q}:g:`.
    GroupPrefix,
    /// The bare queue name.
    QueueName,
    /// A group name.
    GroupName,
    /// The caller's clock (unix seconds) that decides what the script
    /// deletes as stale; the proxy puts its own clock there.
    Now,
}

/// The shape of one script's calls.
#[derive(Debug)]
struct Layout {
    /// Operations any one of which allows the call.
    ops: &'static [Operation],
    keys: &'static [K],
    argv: &'static [A],
    /// More ARGV may follow the fixed ones (heartbeats list workers and
    /// scheduler entries).
    more_argv: bool,
    /// The message's `unique_key` must be the `Unique` key.
    unique_in_msg: bool,
}

const fn layout(ops: &'static [Operation], keys: &'static [K], argv: &'static [A]) -> Layout {
    Layout {
        ops,
        keys,
        argv,
        more_argv: false,
        unique_in_msg: false,
    }
}

use A::{Data, GroupName, GroupPrefix, Msg, QueueName, QueuePrefix, TaskId};

const ZSETS_TO_RUN: &[&str] = &["scheduled", "retry", "archived"];
const ALL_ZSETS: &[&str] = &["scheduled", "retry", "archived", "completed"];
const STATS_KEYS: &[K] = &[
    K::Q("pending"),
    K::Q("active"),
    K::Q("scheduled"),
    K::Q("retry"),
    K::Q("archived"),
    K::Q("completed"),
    K::Day("processed"),
    K::Day("failed"),
    K::Q("processed"),
    K::Q("failed"),
    K::Q("paused"),
    K::Q("groups"),
];
const QUEUE_SETS: &[K] = &[
    K::Q("pending"),
    K::Q("active"),
    K::Q("scheduled"),
    K::Q("retry"),
    K::Q("archived"),
    K::Q("lease"),
];
const ARCHIVE_KEYS: &[K] = &[
    K::Task(1),
    K::Q("active"),
    K::Q("lease"),
    K::Q("archived"),
    K::Day("processed"),
    K::Day("failed"),
    K::Q("processed"),
    K::Q("failed"),
    K::TaskPrefix,
];
const COMPLETE_KEYS: &[K] = &[
    K::Q("active"),
    K::Q("lease"),
    K::Q("completed"),
    K::Task(1),
    K::Day("processed"),
    K::Q("processed"),
    K::Unique,
];
const DONE_KEYS: &[K] = &[
    K::Q("active"),
    K::Q("lease"),
    K::Task(1),
    K::Day("processed"),
    K::Q("processed"),
    K::Unique,
];
const HEARTBEAT_KEYS: &[K] = &[K::Process(keys::SERVERS), K::Process(keys::WORKERS)];

/// The layout of the script `op` called with `numkeys` keys.
fn layout_of(op: &str, numkeys: usize) -> Option<Layout> {
    use A::TaskPrefix as TP;
    Some(match op {
        // Producers.
        "enqueue" => layout(
            &[Enqueue],
            &[K::Task(2), K::Q("pending")],
            &[Msg, TaskId, Data],
        ),
        "enqueueUnique" => Layout {
            unique_in_msg: true,
            ..layout(
                &[Enqueue],
                &[K::Unique, K::Task(1), K::Q("pending")],
                &[TaskId, Data, Msg, Data],
            )
        },
        "addToGroup" => layout(
            &[Enqueue],
            &[K::Task(2), K::Group(4), K::Q("groups")],
            &[Msg, TaskId, Data, GroupName],
        ),
        "addToGroupUnique" => Layout {
            unique_in_msg: true,
            ..layout(
                &[Enqueue],
                &[K::Task(2), K::Group(4), K::Q("groups"), K::Unique],
                &[Msg, TaskId, Data, GroupName, Data],
            )
        },
        "schedule" => layout(
            &[Enqueue],
            &[K::Task(3), K::Q("scheduled")],
            &[Msg, Data, TaskId],
        ),
        "scheduleUnique" => Layout {
            unique_in_msg: true,
            ..layout(
                &[Enqueue],
                &[K::Unique, K::Task(1), K::Q("scheduled")],
                &[TaskId, Data, Data, Msg],
            )
        },

        // Workers.
        "dequeue" => layout(
            &[Consume],
            &[
                K::Q("pending"),
                K::Q("paused"),
                K::Q("active"),
                K::Q("lease"),
            ],
            &[Data, TP],
        ),
        "done" => layout(&[Consume], &DONE_KEYS[..5], &[TaskId, Data, Data]),
        "doneUnique" => layout(&[Consume], DONE_KEYS, &[TaskId, Data, Data]),
        "markAsComplete" => layout(
            &[Consume],
            &COMPLETE_KEYS[..6],
            &[TaskId, Data, Data, Msg, Data],
        ),
        "markAsCompleteUnique" => Layout {
            unique_in_msg: true,
            ..layout(&[Consume], COMPLETE_KEYS, &[TaskId, Data, Data, Msg, Data])
        },
        "requeue" => layout(
            &[Consume],
            &[K::Q("active"), K::Q("lease"), K::Q("pending"), K::Task(1)],
            &[TaskId],
        ),
        "retry" => layout(
            &[Consume],
            &[
                K::Task(1),
                K::Q("active"),
                K::Q("lease"),
                K::Q("retry"),
                K::Day("processed"),
                K::Day("failed"),
                K::Q("processed"),
                K::Q("failed"),
            ],
            &[TaskId, Msg, Data, Data, Data, Data],
        ),
        // v0.23–v0.24 pass 8 keys; v0.25+ add the task prefix as a 9th.
        "archive" if numkeys == 8 || numkeys == 9 => layout(
            &[Consume],
            &ARCHIVE_KEYS[..numkeys],
            &[TaskId, Msg, Data, Data, Data, Data, Data],
        ),
        "forward" => layout(
            &[Consume],
            &[K::OneOf(&["scheduled", "retry"]), K::Q("pending")],
            &[Data, TP, Data, GroupPrefix],
        ),
        "aggregationCheck" => layout(
            &[Consume],
            &[
                K::Group(6),
                K::AggSet(6),
                K::Q("aggregation_sets"),
                K::Q("groups"),
            ],
            &[Data, Data, Data, Data, Data, GroupName],
        ),
        "readAggregationSet" => layout(&[Consume], &[K::AnyAggSet], &[TP]),
        "deleteAggregationSet" => {
            layout(&[Consume], &[K::AnyAggSet, K::Q("aggregation_sets")], &[TP])
        }
        "reclaimStaleAggregationSets" => layout(&[Consume], &[K::Q("aggregation_sets")], &[Data]),
        "deleteExpiredCompletedTasks" => {
            layout(&[Consume], &[K::Q("completed")], &[Data, TP, Data])
        }
        // The inspector lists active tasks with it too.
        "listLeaseExpired" => layout(&[Consume, Inspect], &[K::Q("lease")], &[Data, TP]),
        "writeServerState" => Layout {
            more_argv: true,
            ..layout(&[Consume], HEARTBEAT_KEYS, &[Data, Data])
        },
        "clearServerState" => layout(&[Consume], HEARTBEAT_KEYS, &[]),

        // Schedulers.
        "writeSchedulerEntries" => Layout {
            more_argv: true,
            ..layout(&[Schedule], &[K::Process(keys::SCHEDULERS)], &[Data])
        },
        "recordSchedulerEnqueueEvent" => layout(&[Schedule], &[K::History], &[Data, Data, Data]),

        // Inspector reads.
        "currentStats" => layout(&[Inspect], STATS_KEYS, &[TP, GroupPrefix]),
        "memoryUsage" => layout(
            &[Inspect],
            &[
                K::Q("active"),
                K::Q("pending"),
                K::Q("scheduled"),
                K::Q("retry"),
                K::Q("archived"),
                K::Q("completed"),
                K::Q("groups"),
            ],
            &[TP, Data, Data, GroupPrefix],
        ),
        "historicalStats" => return history_layout(numkeys),
        "getTaskInfo" => layout(&[Inspect], &[K::Task(1)], &[TaskId, Data, QueuePrefix]),
        "groupStats" => layout(&[Inspect], &[K::Q("groups")], &[GroupPrefix]),
        "listMessages" => layout(
            &[Inspect],
            &[K::OneOf(&["pending", "active"])],
            &[Data, Data, TP],
        ),
        "listZSetEntries" => layout(&[Inspect], &[K::TaskZset], &[Data, Data, TP]),
        // It also deletes entries older than ARGV[1]: a "now" in the
        // future would empty the registry.
        "listServerKeys" => layout(&[Inspect], &[K::Registry], &[A::Now]),

        // Inspector changes.
        "runAllAggregating" => layout(
            &[Manage],
            &[K::Group(2), K::Q("pending"), K::Q("groups")],
            &[TP, GroupName],
        ),
        "runTask" => layout(
            &[Manage],
            &[K::Task(1), K::Q("pending"), K::Q("groups")],
            &[TaskId, QueuePrefix, GroupPrefix],
        ),
        "runAll" => layout(&[Manage], &[K::OneOf(ZSETS_TO_RUN), K::Q("pending")], &[TP]),
        "archiveAllAggregating" => layout(
            &[Manage],
            &[K::Group(5), K::Q("archived"), K::Q("groups")],
            &[Data, Data, Data, TP, GroupName],
        ),
        "archiveAllPending" => layout(
            &[Manage],
            &[K::Q("pending"), K::Q("archived")],
            &[Data, Data, Data, TP],
        ),
        "archiveTask" => layout(
            &[Manage],
            &[K::Task(1), K::Q("archived"), K::Q("groups")],
            &[TaskId, Data, Data, Data, QueuePrefix, GroupPrefix],
        ),
        "archiveAll" => layout(
            &[Manage],
            &[K::OneOf(&["scheduled", "retry"]), K::Q("archived")],
            &[Data, Data, Data, TP, QueueName],
        ),
        "deleteTask" => layout(
            &[Manage],
            &[K::Task(1), K::Q("groups")],
            &[TaskId, QueuePrefix, GroupPrefix],
        ),
        "deleteAll" => layout(&[Manage], &[K::OneOf(ALL_ZSETS)], &[TP, QueueName]),
        "deleteAllAggregating" => {
            layout(&[Manage], &[K::Group(2), K::Q("groups")], &[TP, GroupName])
        }
        "deleteAllPending" => layout(&[Manage], &[K::Q("pending")], &[TP]),
        "removeQueue" => layout(&[Manage], QUEUE_SETS, &[TP]),
        "updateTaskPayload" => layout(&[Manage], &[K::TaskOwnId], &[Msg]),
        _ => return None,
    })
}

/// `historicalStats` reads n days: KEYS are n pairs of daily counters.
fn history_layout(numkeys: usize) -> Option<Layout> {
    const PAIRS: &[K] = &[K::Day("processed"), K::Day("failed")];
    // asynqmon asks for 90 days; a year is plenty.
    if numkeys == 0 || !numkeys.is_multiple_of(2) || numkeys > 2 * 366 {
        return None;
    }
    Some(layout(&[Inspect], PAIRS, &[]))
}

/// The operations that allow running the script `op` at all.
pub fn ops_of(op: &str) -> &'static [Operation] {
    // Only archive and historicalStats care about the key count.
    layout_of(op, 8)
        .or_else(|| layout_of(op, 2))
        .map_or(&[], |l| l.ops)
}

/// What a well-formed call of a catalogued script touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptAccess {
    pub ops: &'static [Operation],
    /// The queue, or `None` for scripts over asynq's global keys.
    pub queue: Option<String>,
    /// The task type of the message a producer stores.
    pub task_type: Option<String>,
    /// Index in ARGV of the caller's clock, to be replaced by the proxy's.
    pub clock_arg: Option<usize>,
    /// Payload and encoded message bytes of the task message stored.
    pub message_sizes: Option<(u64, u64)>,
    /// Index in ARGV of the task message stored.
    pub message_arg: Option<usize>,
    /// The task the call names, if it names one.
    pub task_id: Option<Vec<u8>>,
}

/// Checks a call of the script `op` with these KEYS and ARGV.
///
/// # Errors
///
/// Why the call is not what asynq sends, in words for the refusal.
pub fn check(op: &str, keys: &[&[u8]], argv: &[&[u8]]) -> Result<ScriptAccess, String> {
    let layout = layout_of(op, keys.len())
        .ok_or_else(|| format!("{} keys is not how asynq calls {op}", keys.len()))?;
    let key_count_ok = if op == "historicalStats" {
        true
    } else {
        keys.len() == layout.keys.len()
    };
    let argv_ok = if layout.more_argv {
        argv.len() >= layout.argv.len()
    } else {
        argv.len() == layout.argv.len()
    };
    if !key_count_ok || !argv_ok {
        return Err(format!(
            "{op} called with {} keys and {} arguments, not asynq's layout",
            keys.len(),
            argv.len()
        ));
    }
    let mut call = Call {
        argv,
        queue: None,
        task_id: None,
    };
    for (i, key) in keys.iter().enumerate() {
        let slot = layout.keys[i % layout.keys.len()];
        call.key(slot, key).map_err(|e| {
            let why = keys::brace_refusal(key).map_or(e, String::from);
            format!("{op} KEYS[{}] {why}", i + 1)
        })?;
    }
    let mut msg = None;
    let mut message_bytes = 0;
    for (i, (slot, arg)) in layout.argv.iter().zip(argv).enumerate() {
        if *slot == Msg {
            message_bytes = arg.len() as u64;
            msg =
                Some(message::decode(arg).map_err(|e| {
                    format!("{op} ARGV[{}] is not an asynq task message ({e})", i + 1)
                })?);
        } else {
            call.arg(*slot, arg).map_err(|e| {
                let braced = matches!(
                    slot,
                    A::TaskPrefix | A::QueuePrefix | A::GroupPrefix | A::QueueName
                );
                let why = keys::brace_refusal(arg)
                    .filter(|_| braced)
                    .map_or(e, String::from);
                format!("{op} ARGV[{}] {why}", i + 1)
            })?;
        }
    }
    if layout.keys.iter().any(|k| matches!(k, K::Process(_))) {
        same_process_tags(keys).map_err(|e| format!("{op} {e}"))?;
    }
    let message_sizes = msg
        .as_ref()
        .map(|m| (m.payload.len() as u64, message_bytes));
    let task_type = match msg {
        Some(m) => Some(
            call.check_message(&layout, keys, argv, m)
                .map_err(|e| format!("{op} {e}"))?,
        ),
        None => None,
    };
    Ok(ScriptAccess {
        ops: layout.ops,
        queue: call.queue,
        task_type,
        clock_arg: layout.argv.iter().position(|a| *a == A::Now),
        message_sizes,
        message_arg: layout.argv.iter().position(|a| *a == Msg),
        task_id: call.task_id.map(<[u8]>::to_vec),
    })
}

/// The state of checking one call: the queue and task id found so far.
struct Call<'a> {
    argv: &'a [&'a [u8]],
    queue: Option<String>,
    task_id: Option<&'a [u8]>,
}

impl<'a> Call<'a> {
    /// Records the queue a slot names; every slot must name the same one.
    fn queue(&mut self, found: Option<String>, what: &str) -> Result<(), String> {
        let Some(q) = found else {
            return Err(format!("is not {what}"));
        };
        match &self.queue {
            Some(first) if *first != q => Err(format!(
                "names queue '{}' where the call's other keys name '{}'",
                super::shown(q.as_bytes()),
                super::shown(first.as_bytes())
            )),
            Some(_) => Ok(()),
            None => {
                self.queue = Some(q);
                Ok(())
            }
        }
    }

    fn argv_at(&self, i: usize) -> &'a [u8] {
        self.argv.get(i - 1).copied().unwrap_or_default()
    }

    fn key(&mut self, slot: K, key: &'a [u8]) -> Result<(), String> {
        match slot {
            K::Q(suffix) => self.queue(
                keys::queue_of(key, suffix.as_bytes()),
                &format!("a queue's {suffix} key"),
            ),
            K::OneOf(suffixes) => {
                let found = suffixes
                    .iter()
                    .find_map(|s| keys::queue_of(key, s.as_bytes()));
                self.queue(found, &format!("a queue's {} key", suffixes.join("/")))
            }
            K::Day(name) => {
                let mut prefix = name.as_bytes().to_vec();
                prefix.push(b':');
                let found = keys::queue_and_tail(key, &prefix)
                    .filter(|(_, day)| keys::is_day(day))
                    .map(|(q, _)| q);
                self.queue(found, &format!("a queue's daily {name} counter"))
            }
            K::Task(i) => {
                let id = self.argv_at(i);
                let found = keys::queue_and_tail(key, b"t:")
                    .filter(|(_, tail)| *tail == id)
                    .map(|(q, _)| q);
                self.queue(found, &format!("the task key of the id in ARGV[{i}]"))
            }
            K::TaskOwnId => {
                let found = keys::queue_and_tail(key, b"t:");
                if let Some((_, id)) = &found {
                    self.task_id = Some(id);
                }
                self.queue(found.map(|(q, _)| q), "a task key")
            }
            K::TaskPrefix => self.queue(keys::queue_of(key, b"t:"), "a queue's task key prefix"),
            K::Unique => self.queue(
                keys::queue_and_tail(key, b"unique:").map(|(q, _)| q),
                "a queue's uniqueness key",
            ),
            K::Group(i) => {
                let group = self.argv_at(i);
                let found = keys::queue_and_tail(key, b"g:")
                    .filter(|(_, tail)| *tail == group)
                    .map(|(q, _)| q);
                self.queue(found, &format!("the group key of the group in ARGV[{i}]"))
            }
            K::AggSet(i) => {
                let mut prefix = b"g:".to_vec();
                prefix.extend_from_slice(self.argv_at(i));
                prefix.push(b':');
                let found = keys::queue_and_tail(key, &prefix).map(|(q, _)| q);
                self.queue(
                    found,
                    &format!("an aggregation set of the group in ARGV[{i}]"),
                )
            }
            K::AnyAggSet => {
                let found = keys::queue_and_tail(key, b"g:")
                    .filter(|(_, tail)| tail.contains(&b':'))
                    .map(|(q, _)| q);
                self.queue(found, "an aggregation set key")
            }
            K::TaskZset => {
                let found = ALL_ZSETS
                    .iter()
                    .find_map(|s| keys::queue_of(key, s.as_bytes()))
                    .or_else(|| keys::queue_and_tail(key, b"g:").map(|(q, _)| q));
                self.queue(found, "a queue's task set or group key")
            }
            K::Process(prefix) => keys::is_process_key(key, prefix)
                .then_some(())
                .ok_or_else(|| format!("is not an {} entry", String::from_utf8_lossy(prefix))),
            K::Registry => [keys::SERVERS, keys::WORKERS, keys::SCHEDULERS]
                .contains(&key)
                .then_some(())
                .ok_or_else(|| "is not asynq:servers, asynq:workers or asynq:schedulers".into()),
            K::History => keys::is_history_key(key)
                .then_some(())
                .ok_or_else(|| "is not a scheduler history key".into()),
        }
    }

    fn arg(&mut self, slot: A, arg: &'a [u8]) -> Result<(), String> {
        let prefix = |suffix: &[u8]| keys::queue_of(arg, suffix);
        match slot {
            A::Data | A::Msg => Ok(()),
            A::Now => parse_int(arg)
                .map(|_| ())
                .map_err(|_| "is not a time in unix seconds".into()),
            A::TaskId => {
                if arg.is_empty() {
                    return Err("is an empty task id".into());
                }
                self.task_id = Some(arg);
                Ok(())
            }
            A::TaskPrefix => self.queue(prefix(b"t:"), "a queue's task key prefix"),
            A::QueuePrefix => self.queue(prefix(b""), "a queue's key prefix"),
            A::GroupPrefix => self.queue(prefix(b"g:"), "a queue's group key prefix"),
            A::QueueName => {
                let name =
                    keys::valid_queue(arg).then(|| String::from_utf8_lossy(arg).into_owned());
                self.queue(name, "a queue name")
            }
            A::GroupName => {
                if arg.is_empty() || arg.iter().any(|&b| b == b'{' || b == b'}') {
                    return Err("is not a group name".into());
                }
                Ok(())
            }
        }
    }

    /// The message a call stores must belong where it is stored: its
    /// queue, its task id, its uniqueness key and its group. Returns the
    /// task type.
    fn check_message(
        &self,
        layout: &Layout,
        keys: &[&[u8]],
        argv: &[&[u8]],
        msg: TaskMessage,
    ) -> Result<String, String> {
        let queue = self.queue.as_deref().unwrap_or_default();
        if msg.queue != queue {
            return Err(format!(
                "stores a task message of queue '{}' under queue '{queue}'",
                super::shown(msg.queue.as_bytes())
            ));
        }
        if self.task_id.is_some_and(|id| msg.id.as_bytes() != id) {
            return Err("stores a task message whose id is not the task's".into());
        }
        self.check_unique_key(layout, keys, &msg)?;
        let group = layout.argv.iter().position(|a| *a == GroupName);
        if group.is_some_and(|i| msg.group_key.as_bytes() != argv[i]) {
            return Err("stores a task message whose group is not the call's".into());
        }
        if msg.r#type.trim().is_empty() {
            return Err("stores a task message without a task type".into());
        }
        Ok(msg.r#type)
    }
}

impl Call<'_> {
    /// A message's uniqueness key names the lock that finishing the task
    /// releases (asynq deletes it by that name), so it must be this
    /// call's lock, or none where the call takes none, or for messages
    /// written back by workers, a lock of the same queue.
    fn check_unique_key(
        &self,
        layout: &Layout,
        keys: &[&[u8]],
        msg: &TaskMessage,
    ) -> Result<(), String> {
        let unique = msg.unique_key.as_bytes();
        let lock = layout.keys.iter().position(|k| matches!(k, K::Unique));
        let ok = if layout.unique_in_msg {
            lock.is_some_and(|i| unique == keys[i])
        } else if unique.is_empty() {
            true
        } else if layout.ops == [Enqueue] {
            // A producer script without a lock: asynq leaves it empty.
            false
        } else {
            keys::queue_and_tail(unique, b"unique:")
                .is_some_and(|(q, _)| Some(&q) == self.queue.as_ref())
        };
        if ok {
            Ok(())
        } else {
            Err("stores a task message whose uniqueness key is not the call's".into())
        }
    }
}

/// A heartbeat's keys must all be the same process's.
fn same_process_tags(keys: &[&[u8]]) -> Result<(), String> {
    let tag = |k: &[u8]| k.iter().position(|&b| b == b'{').map(|i| k[i..].to_vec());
    let first = tag(keys[0]);
    if keys.iter().all(|k| tag(k) == first) {
        Ok(())
    } else {
        Err("keys belong to different processes".into())
    }
}

#[cfg(test)]
#[path = "layout/tests.rs"]
mod tests;
