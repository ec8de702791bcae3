//! The asynq command model: what a command means in asynq's terms.
//!
//! [`classify`] names, for every command an authenticated client sends,
//! the asynq operation it performs and the queue it performs it on:
//!
//! - scripts are recognised by the SHA-1 of their body, whether they come
//!   as `EVALSHA`, as `EVAL <body>` (go-redis's fallback on NOSCRIPT) or as
//!   `SCRIPT LOAD <body>`, and every call is checked against the script's
//!   [`layout`] (one queue for all its keys and key prefixes, task ids and
//!   task messages that agree with the keys);
//! - the plain commands asynq sends ([`plain`]) are checked with their
//!   arguments;
//! - connection housekeeping (PING, SELECT 0, CLIENT SETNAME …) is
//!   anyone's.
//!
//! Everything else is not asynq traffic. This module reads commands and
//! the catalog; it decides nothing about identities (that is
//! [`crate::policy`]).

pub mod catalog;
pub mod keys;
pub mod layout;
pub mod message;
mod plain;

use crate::resp::{Command, parse_int};
use catalog::Script;

/// Client bytes (a key, a queue name, a task type) as errors and logs show
/// them: printable, at most 100 characters, so that a refusal never
/// echoes a large argument back.
pub fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(100)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if bytes.len() > 100 {
        out.push('…');
    }
    out
}

/// What an asynq component does, as grants name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Producer scripts and `SADD asynq:queues`.
    Enqueue,
    /// What an asynq Server needs for its queues.
    Consume,
    /// What an asynq Scheduler needs beyond enqueueing.
    Schedule,
    /// Read-only Inspector calls.
    Inspect,
    /// Inspector changes: run, archive, delete, pause, cancel, remove
    /// queue, update payload.
    Manage,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Enqueue,
        Operation::Consume,
        Operation::Schedule,
        Operation::Inspect,
        Operation::Manage,
    ];

    /// The name used in policy files, errors and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Enqueue => "enqueue",
            Operation::Consume => "consume",
            Operation::Schedule => "schedule",
            Operation::Inspect => "inspect",
            Operation::Manage => "manage",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// What a command does, for the policy to judge.
// One lives per command, briefly: boxing the common variant would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Connection housekeeping: any authenticated identity.
    Housekeeping,
    /// asynq traffic: allowed to an identity holding one of `ops` on
    /// `queue` (on any queue when `queue` is `None`: asynq's global keys)
    /// and, for producers, on `task_type`.
    Asynq {
        ops: &'static [Operation],
        queue: Option<String>,
        /// Reads data of every queue (workers' and schedulers' entries
        /// carry payloads of all queues): needs the operation on `*`.
        every_queue: bool,
        task_type: Option<String>,
        /// The asynq call, for refusals and audit (never a payload).
        what: String,
        /// Index of an argument holding the caller's "now", which the
        /// proxy replaces with its own clock before forwarding.
        clock_arg: Option<usize>,
        /// Payload and encoded bytes of the task message it stores.
        message_sizes: Option<(u64, u64)>,
        /// The SHA-1 of the catalogued script it runs, if it runs one.
        script: Option<&'static str>,
        /// The catalogued script's name in asynq (`dequeue`, `retry` …).
        script_op: Option<&'static str>,
        /// Index in the command of the task message it stores.
        message_arg: Option<usize>,
        /// The task it names, if it names one.
        task_id: Option<Vec<u8>>,
    },
}

/// Why a command is not asynq traffic; only a `raw` grant allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAsynq(pub String);

/// Classifies an authenticated client's command.
///
/// # Errors
///
/// [`NotAsynq`] saying why, when the command is not something asynq
/// sends (or not in the shape asynq sends it).
pub fn classify(cmd: &Command, name: Option<&'static str>) -> Result<Access, NotAsynq> {
    let Some(name) = name else {
        return Err(NotAsynq("it is not a known command".into()));
    };
    if let Some(script) = script_use(cmd, Some(name)) {
        return classify_script(cmd, name, script);
    }
    plain::classify(cmd, name)
}

fn classify_script(
    cmd: &Command,
    name: &'static str,
    script: ScriptUse,
) -> Result<Access, NotAsynq> {
    let s = match script {
        ScriptUse::Catalogued(s) => s,
        ScriptUse::Harmless => return Ok(Access::Housekeeping),
        ScriptUse::Unknown(sha) => {
            return Err(NotAsynq(format!("script {sha} is not one of asynq's")));
        }
        ScriptUse::Other(what) => return Err(NotAsynq(format!("asynq does not use {what}"))),
    };
    if name == "script" {
        // Loading runs nothing; whoever may run the script may load it.
        return Ok(Access::Asynq {
            ops: layout::ops_of(s.op),
            queue: None,
            every_queue: false,
            task_type: None,
            what: format!("SCRIPT LOAD of {}", s.op),
            clock_arg: None,
            message_sizes: None,
            script: Some(s.sha),
            script_op: None,
            message_arg: None,
            task_id: None,
        });
    }
    let (keys, argv) = split_script_args(cmd).map_err(NotAsynq)?;
    let access = layout::check(s.op, &keys, &argv).map_err(NotAsynq)?;
    Ok(Access::Asynq {
        ops: access.ops,
        queue: access.queue,
        every_queue: false,
        task_type: access.task_type,
        what: format!("script {}", s.op),
        // EVAL/EVALSHA, script, numkeys, KEYS, then ARGV.
        clock_arg: access.clock_arg.map(|i| 3 + keys.len() + i),
        message_sizes: access.message_sizes,
        script: Some(s.sha),
        script_op: Some(s.op),
        message_arg: access.message_arg.map(|i| 3 + keys.len() + i),
        task_id: access.task_id,
    })
}

type Args<'a> = Vec<&'a [u8]>;

/// KEYS and ARGV of `EVAL`/`EVALSHA`, split by `numkeys` as Redis does.
fn split_script_args(cmd: &Command) -> Result<(Args<'_>, Args<'_>), String> {
    let numkeys = cmd
        .args
        .get(2)
        .and_then(|n| parse_int(n).ok())
        .ok_or("numkeys is not an integer")?;
    let rest: Vec<&[u8]> = cmd.args.iter().skip(3).map(|a| &a[..]).collect();
    let n = usize::try_from(numkeys)
        .ok()
        .filter(|n| *n <= rest.len())
        .ok_or("numkeys does not fit the arguments")?;
    let (keys, argv) = rest.split_at(n);
    Ok((keys.to_vec(), argv.to_vec()))
}

/// What a scripting command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptUse {
    /// A script of asynq's.
    Catalogued(&'static Script),
    /// A script body or SHA that is not asynq's (hex SHA-1, or a short
    /// description when the command is malformed).
    Unknown(String),
    /// `SCRIPT EXISTS`: asks whether scripts are loaded, runs nothing.
    Harmless,
    /// Scripting that is never asynq's: functions, `SCRIPT FLUSH`/`KILL`.
    Other(&'static str),
}

/// How `cmd` uses scripting, if it does at all.
pub fn script_use(cmd: &Command, name: Option<&'static str>) -> Option<ScriptUse> {
    let arg = |i: usize| cmd.args.get(i).map(|a| &a[..]);
    let known = |found: Option<&'static Script>, sha: String| match found {
        Some(s) => ScriptUse::Catalogued(s),
        None => ScriptUse::Unknown(sha),
    };
    Some(match name? {
        // asynq never sends the read-only forms, and a producer script
        // under one would be judged (and spend its tokens) for nothing.
        "evalsha_ro" | "eval_ro" => ScriptUse::Other("EVAL_RO/EVALSHA_RO"),
        "evalsha" => match arg(1) {
            Some(sha) => known(catalog::by_sha(sha), shown(sha).to_ascii_lowercase()),
            None => ScriptUse::Unknown("(no sha)".into()),
        },
        "eval" => match arg(1) {
            Some(body) => known(catalog::by_body(body), catalog::sha1_hex(body)),
            None => ScriptUse::Unknown("(no body)".into()),
        },
        "script" if cmd.arg_is(1, "load") && cmd.args.len() == 3 => {
            let body = &cmd.args[2];
            known(catalog::by_body(body), catalog::sha1_hex(body))
        }
        "script" if cmd.arg_is(1, "exists") => ScriptUse::Harmless,
        "script" => ScriptUse::Other("SCRIPT"),
        "fcall" | "fcall_ro" => ScriptUse::Other("FCALL"),
        "function" => ScriptUse::Other("FUNCTION"),
        _ => return None,
    })
}

#[cfg(test)]
#[path = "asynq/tests.rs"]
mod tests;
