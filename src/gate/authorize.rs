//! The gate's authorization step: whether an authenticated identity may
//! send a command, by what the asynq model says it does
//! ([`crate::asynq::classify`]) and what the identity's grants allow
//! ([`crate::policy::check`]); and the refusal's metric and audit event.
//! Touches nothing but the metrics and the audit log.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{info, warn};

use super::{AUDIT, Decision, Gate, shown_bytes};
use crate::admission::{self, Checks, Enqueue, OnFailure, Reservation};
use crate::asynq::{self, Access, NotAsynq, Operation};
use crate::command::Classified;
use crate::control::Bucket;
use crate::policy;
use crate::resp::Command;
use crate::session::Shared;
use crate::upstream;

/// What authorization allows: the command, perhaps rewritten, perhaps
/// still waiting for its shared rate limits.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    pub rewrite: Option<Bytes>,
    pub shared: Option<Box<Pending>>,
    /// The reply's task messages must be checked.
    pub check: Option<Box<crate::integrity::replies::ReplyCheck>>,
    /// The stored task must be read before deciding.
    pub stored: Option<Box<super::StoredCheck>>,
}

/// An enqueue admitted so far, whose shared rate limits must still give
/// it a token from their buckets in Redis before it is forwarded.
#[derive(Debug)]
pub struct Pending {
    pub checks: Checks,
    what: String,
    queue: String,
    task_type: String,
    /// What to forward once every bucket admitted it (the command
    /// itself when `None`).
    rewrite: Option<Bytes>,
}

/// What Redis said for a pending enqueue: each shared limit's bucket, in
/// order (stopping at the first empty one), then its queue's size.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub shared: Vec<Result<Bucket, String>>,
    pub queue: Option<QueueOutcome>,
}

/// A capped queue's size against its cap.
#[derive(Debug)]
pub enum QueueOutcome {
    /// Room for it: the reservation rides with the enqueue to its reply.
    Admitted(Reservation),
    /// Full: `count` tasks in Redis and `in_flight` admitted enqueues.
    Full { count: u64, in_flight: u64 },
    /// The queue could not be counted.
    Failed(String),
}

/// The first shared limit whose bucket refused the enqueue, or whose
/// state was out of reach with `on_shared_failure = "refuse"`.
fn shared_refusal(
    p: &Pending,
    outcomes: Vec<Result<Bucket, String>>,
    shared: &Shared,
) -> Option<admission::Refusal> {
    for (check, outcome) in p.checks.shared.iter().zip(outcomes) {
        let limit = &shared.admission.limits[check.limit];
        match outcome {
            Ok(Bucket::Admitted) => {}
            Ok(Bucket::Empty(wait)) => return Some(limit.refusal(&check.key, wait)),
            Err(error) => {
                let on_failure = limit.shared.unwrap_or(OnFailure::Refuse);
                shared
                    .metrics
                    .shared_limit_failures
                    .with_label_values(&[&limit.name, on_failure.name()])
                    .inc();
                warn!(limit = %limit.name, %error, on_failure = on_failure.name(), "shared rate limit state in Redis out of reach");
                if on_failure == OnFailure::Refuse {
                    return Some(admission::Refusal {
                        limit: limit.name.clone(),
                        scope: limit.scope.name(),
                        text: format!(
                            "LIMIT asynq-guard: rate limit '{}' is shared through Redis, which the proxy cannot reach for it now, and it refuses when that happens; retry later",
                            limit.name
                        ),
                    });
                }
            }
        }
    }
    None
}

/// The refusal of an enqueue to a full queue, or one that could not be
/// counted (a cap holds only if it is checked).
fn queue_refusal(p: &Pending, outcome: Option<&QueueOutcome>) -> Option<admission::Refusal> {
    let check = p.checks.queue.as_ref()?;
    let queue = asynq::shown(check.queue.as_bytes());
    let text = match outcome? {
        QueueOutcome::Admitted(_) => return None,
        QueueOutcome::Full { count, in_flight } => format!(
            "LIMIT asynq-guard: queue '{queue}' is full: {count} tasks waiting and {in_flight} on their way, cap {} (queue_cap); retry when workers have taken some",
            check.max_tasks
        ),
        QueueOutcome::Failed(error) => format!(
            "LIMIT asynq-guard: queue '{queue}' has a size cap and could not be counted ({error}); retry later"
        ),
    };
    Some(admission::Refusal {
        limit: "queue_cap".into(),
        scope: "queue",
        text,
    })
}

/// One refusal, as the metric and the audit log record it. Never a value
/// or a payload: the call names the asynq operation and the key it names.
#[derive(Debug, Default)]
pub(super) struct Refused<'a> {
    pub identity: &'a str,
    /// The asynq operation refused, `none` when it is not asynq traffic.
    pub op: &'a str,
    pub reason: &'static str,
    /// The asynq call or command.
    pub what: &'a str,
    pub queue: Option<&'a str>,
    pub task_type: Option<&'a str>,
    /// Why it is not asynq traffic, when it is not.
    pub why: &'a str,
    /// The admission limit and its scope, for enqueues refused by one.
    pub limit: Option<(&'a str, &'a str)>,
}

impl Gate {
    /// Whether the identity may send `cmd`: it must be asynq traffic
    /// that one of its grants covers, or the identity must hold `raw`.
    /// Redis compares command names only up to a NUL byte, so
    /// `CONFIG\0xyz` runs as CONFIG: names the proxy does not know are
    /// never forwarded without raw.
    ///
    /// Returns the command to forward instead, if it must be rewritten
    /// (a clock the proxy supplies).
    ///
    /// # Errors
    ///
    /// The refusal's text, already counted and audited.
    pub(super) fn authorize(
        &mut self,
        cmd: &Command,
        c: &Classified,
        shared: &Shared,
    ) -> Result<Verdict, String> {
        let Some(identity) = self.identity.as_ref().map(Arc::clone) else {
            return Ok(Verdict::default());
        };
        if identity.raw {
            self.op = "raw";
            return Ok(Verdict::default());
        }
        if c.name == Some("select") {
            return self
                .select(cmd, shared, &identity.name)
                .map(|()| Verdict::default());
        }
        let access = match asynq::classify(cmd, c.name) {
            Ok(access) => access,
            Err(NotAsynq(why)) => {
                let shown = match c.name {
                    Some(name) => name.to_ascii_uppercase(),
                    None => format!("'{}'", shown_bytes(&cmd.args[0])),
                };
                self.refused(
                    shared,
                    &Refused {
                        identity: &identity.name,
                        op: "none",
                        reason: "not_asynq",
                        what: &shown,
                        why: &why,
                        ..Refused::default()
                    },
                );
                return Err(format!(
                    "NOPERM asynq-guard: identity '{}' may not send {shown}: {why}; only a raw grant allows what asynq does not send",
                    identity.name
                ));
            }
        };
        let Access::Asynq {
            what,
            queue,
            task_type,
            clock_arg,
            message_sizes,
            ops,
            script,
            script_op,
            message_arg,
            task_id,
            ..
        } = &access
        else {
            self.op = "housekeeping";
            return Ok(Verdict::default());
        };
        self.op = ops.first().map_or("none", |o| o.name());
        let caps = match policy::check(&identity.name, &identity.grants, &access) {
            Ok(caps) => caps,
            Err(refusal) => {
                self.refused(
                    shared,
                    &Refused {
                        identity: &identity.name,
                        op: refusal.op.name(),
                        reason: refusal.reason.label(),
                        what,
                        queue: queue.as_deref(),
                        task_type: task_type.as_deref(),
                        ..Refused::default()
                    },
                );
                return Err(refusal.text);
            }
        };
        let verdict = match queue {
            Some(q) => self.integrity_step(
                cmd,
                &super::integrity::Facts {
                    ops,
                    queue: q,
                    what,
                    script_op: *script_op,
                    message_arg: *message_arg,
                    task_id: task_id.as_deref(),
                    task_type: task_type.as_deref(),
                },
                shared,
            )?,
            None => Verdict::default(),
        };
        if let (Some(queue), Some(task_type), Some((payload, message))) =
            (queue, task_type, message_sizes)
        {
            let enqueue = Enqueue {
                identity: &identity.name,
                queue,
                task_type,
                payload_bytes: *payload,
                message_bytes: *message,
            };
            if !ops.contains(&Operation::Enqueue) {
                // Not an enqueue: a worker writing back what was admitted
                // (with an error message added) is left alone; the
                // inspector's UpdateTaskPayload writes a new payload and
                // gets the default caps.
                if ops.contains(&Operation::Manage) {
                    let caps = shared.admission.default_caps;
                    if let Err(r) = shared.admission.check_caps(&enqueue, caps) {
                        self.limit_refused(shared, &identity.name, what, queue, task_type, &r);
                        return Err(r.text);
                    }
                }
                return Ok(verdict);
            }
            // go-redis answers NOSCRIPT by sending the same call as EVAL:
            // the EVALSHA already spent this enqueue's rate-limit tokens.
            let again = self.noscript_retry(cmd, *script);
            match shared.admission.admit(&enqueue, caps, !again) {
                Err(r) => {
                    self.limit_refused(shared, &identity.name, what, queue, task_type, &r);
                    return Err(r.text);
                }
                Ok(checks) if checks.queue.is_some() && self.in_multi => {
                    // The cap counts what has landed; MULTI lands its
                    // enqueues only at EXEC, after every count was taken.
                    let r = admission::Refusal {
                        limit: "queue_cap".into(),
                        scope: "queue",
                        text: format!(
                            "LIMIT asynq-guard: queue '{}' has a size cap, and enqueues to it are not accepted inside MULTI (the cap could not hold); send them outside a transaction",
                            asynq::shown(queue.as_bytes())
                        ),
                    };
                    self.limit_refused(shared, &identity.name, what, queue, task_type, &r);
                    return Err(r.text);
                }
                Ok(checks) if !checks.is_empty() => {
                    self.remember_admitted(cmd, *script);
                    return Ok(Verdict {
                        shared: Some(Box::new(Pending {
                            checks,
                            what: what.clone(),
                            queue: queue.clone(),
                            task_type: task_type.clone(),
                            rewrite: verdict.rewrite,
                        })),
                        ..Verdict::default()
                    });
                }
                Ok(_) => self.remember_admitted(cmd, *script),
            }
        }
        Ok(Verdict {
            rewrite: clock_arg
                .map(|i| with_proxy_clock(cmd, i))
                .or(verdict.rewrite),
            ..verdict
        })
    }

    /// Remembers an admitted `EVALSHA`, whose `EVAL` go-redis sends next
    /// if Redis answers NOSCRIPT.
    fn remember_admitted(&mut self, cmd: &Command, script: Option<&'static str>) {
        self.last_admitted = match script {
            Some(sha) if cmd.args[0].eq_ignore_ascii_case(b"evalsha") => {
                Some((sha, cmd.args[2..].to_vec()))
            }
            _ => None,
        };
    }

    /// Whether `cmd` is the `EVAL` of the last admitted `EVALSHA`, with
    /// the same keys and arguments (so the same task id: it cannot add a
    /// second task).
    fn noscript_retry(&mut self, cmd: &Command, script: Option<&'static str>) -> bool {
        let Some((sha, args)) = self.last_admitted.take() else {
            return false;
        };
        cmd.args[0].eq_ignore_ascii_case(b"eval")
            && script == Some(sha)
            && cmd.args.get(2..) == Some(&args[..])
    }

    /// Counts and audits an enqueue refused by a size cap or rate limit.
    fn limit_refused(
        &mut self,
        shared: &Shared,
        identity: &str,
        what: &str,
        queue: &str,
        task_type: &str,
        r: &admission::Refusal,
    ) {
        shared
            .metrics
            .limit_hits
            .with_label_values(&[
                identity,
                &shared.metrics.queue_label(queue),
                &r.limit,
                r.scope,
            ])
            .inc();
        self.refused(
            shared,
            &Refused {
                identity,
                op: "enqueue",
                reason: "limit",
                what,
                queue: Some(queue),
                task_type: Some(task_type),
                limit: Some((&r.limit, r.scope)),
                ..Refused::default()
            },
        );
    }

    /// Decides an enqueue that waited for its shared limits' buckets in
    /// Redis: `outcomes` holds what each of `p.checks` gave, in order.
    pub fn settle(&mut self, p: Pending, outcomes: Outcomes, shared: &Shared) -> Decision {
        let Some(identity) = self.identity.as_ref().map(Arc::clone) else {
            return Decision::forward(p.rewrite, None, None);
        };
        let refusal = shared_refusal(&p, outcomes.shared, shared)
            .or_else(|| queue_refusal(&p, outcomes.queue.as_ref()));
        if let Some(refusal) = refusal {
            // Not forwarded: an EVAL of it next is no NOSCRIPT retry.
            self.last_admitted = None;
            self.limit_refused(
                shared,
                &identity.name,
                &p.what,
                &p.queue,
                &p.task_type,
                &refusal,
            );
            if self.in_multi {
                self.multi_refused = true;
            }
            return Decision::Reply(crate::resp::error_reply(&refusal.text));
        }
        match outcomes.queue {
            Some(QueueOutcome::Admitted(held)) => Decision::forward(p.rewrite, Some(held), None),
            _ => Decision::forward(p.rewrite, None, None),
        }
    }

    /// Decides a write-back that waited for its task's stored message.
    pub fn settle_stored(
        &mut self,
        check: &super::StoredCheck,
        stored: Result<Option<Bytes>, String>,
        shared: &Shared,
    ) -> Decision {
        match self.stored_step(check, stored, shared) {
            Ok(raw) => Decision::ForwardAs(raw),
            Err(text) => {
                if self.in_multi {
                    self.multi_refused = true;
                }
                Decision::Reply(crate::resp::error_reply(&text))
            }
        }
    }

    /// `SELECT` of the database the proxy serves (`upstream.database`,
    /// already selected upstream) is housekeeping; any other is refused.
    /// The database is the proxy's setting, not the identity's.
    fn select(&mut self, cmd: &Command, shared: &Shared, identity: &str) -> Result<(), String> {
        let db = shared.upstream.database.to_string();
        if cmd.args.len() == 2 && cmd.args[1][..] == *db.as_bytes() {
            return Ok(());
        }
        let asked = cmd
            .args
            .get(1)
            .map_or_else(String::new, |a| asynq::shown(a));
        self.refused(
            shared,
            &Refused {
                identity,
                op: "none",
                reason: "database",
                what: "SELECT",
                ..Refused::default()
            },
        );
        Err(format!(
            "NOPERM asynq-guard: identity '{identity}' may not SELECT {asked}: this proxy serves database {db} only (its upstream.database); use DB {db} in the client"
        ))
    }

    /// Counts a refusal and writes its audit event. Repeats of one refusal
    /// on a connection are logged once per [`super::repeats::AUDIT_REPEAT`]
    /// with the number left out; the metric counts every one.
    pub(super) fn refused(&mut self, shared: &Shared, r: &Refused<'_>) {
        shared
            .metrics
            .refusals
            .with_label_values(&[r.identity, r.op, r.reason])
            .inc();
        let key = (
            r.identity.to_string(),
            r.op.to_string(),
            r.reason,
            r.what.to_string(),
            r.limit
                .map_or_else(|| r.why.to_string(), |(l, s)| format!("{s} {l}")),
            r.queue.map(str::to_string),
        );
        let Some(repeats) = self.repeats.log_now(&key, Instant::now()) else {
            return;
        };
        let why = (!r.why.is_empty()).then_some(r.why);
        let event = if r.limit.is_some() {
            "limit"
        } else {
            "refusal"
        };
        let (limit, scope) = r.limit.unzip();
        info!(target: AUDIT, event, limit, scope, identity = r.identity, operation = r.op, reason = r.reason, command = r.what, queue = r.queue, task_type = r.task_type, why, repeats_not_logged = repeats, client.addr = %self.conn.peer, listener = %self.conn.listener);
    }
}

/// `cmd` with argument `index` replaced by the proxy's clock in unix
/// seconds: a script that deletes what is older than the caller's "now"
/// must not be handed a time in the future.
fn with_proxy_clock(cmd: &Command, index: usize) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let args: Vec<&[u8]> = cmd
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| if i == index { now.as_bytes() } else { &a[..] })
        .collect();
    upstream::encode_command(&args)
}
