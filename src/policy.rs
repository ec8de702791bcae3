//! The policy: which identity may perform which asynq operation on which
//! queue, and enqueue which task types.
//!
//! Grants are read from `[[grant]]` entries of the policy file and kept on
//! each [`crate::auth::Identity`]. [`check`] judges one classified command
//! ([`crate::asynq::Access`]) for one identity; whatever no grant covers is
//! refused. Queue names and task types are matched against exact names or
//! glob patterns (`*`, `?`, `[...]`). This module reads grants only; the
//! gate answers, counts and audits the refusals.

use glob::Pattern;

use crate::admission::Caps;
use crate::asynq::{Access, Operation, shown};

/// One grant: operations on the queues it names.
#[derive(Debug, Clone)]
pub struct Grant {
    pub ops: Vec<Operation>,
    pub queues: Vec<Pattern>,
    /// Task types an `enqueue` of this grant may carry.
    pub task_types: Vec<Pattern>,
    /// Size caps of an `enqueue` of this grant.
    pub caps: Caps,
}

impl Grant {
    fn covers_queue(&self, queue: &str) -> bool {
        self.queues.iter().any(|p| p.matches(queue))
    }

    fn covers_type(&self, task_type: &str) -> bool {
        self.task_types.iter().any(|p| p.matches(task_type))
    }
}

/// Why a command was refused, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The identity holds none of the operations anywhere.
    Operation,
    /// It holds the operation, but not on this queue.
    Queue,
    /// It may enqueue to the queue, but not this task type.
    TaskType,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Operation => "operation_not_granted",
            Reason::Queue => "queue_not_granted",
            Reason::TaskType => "task_type_not_granted",
        }
    }
}

/// A refusal by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// The operation refused (the first the command could have used).
    pub op: Operation,
    pub text: String,
}

/// Judges `access` for an identity named `identity` holding `grants`.
/// Returns the size caps that apply: those of the first grant, in the
/// file's order, that covers an enqueue; none for anything else.
///
/// # Errors
///
/// A [`Refusal`] when no grant covers the command.
pub fn check(identity: &str, grants: &[Grant], access: &Access) -> Result<Caps, Refusal> {
    let Access::Asynq {
        ops,
        queue,
        every_queue,
        task_type,
        what,
        ..
    } = access
    else {
        return Ok(Caps::default());
    };
    let holding: Vec<&Grant> = grants
        .iter()
        .filter(|g| g.ops.iter().any(|o| ops.contains(o)))
        .collect();
    let op = ops.first().copied().unwrap_or(Operation::Manage);
    let refuse = |reason: Reason, why: String| {
        let target = match queue {
            Some(q) => format!(" on queue '{}'", shown(q.as_bytes())),
            None => String::new(),
        };
        let needed = ops
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(" or ");
        Err(Refusal {
            reason,
            op,
            text: format!(
                "NOPERM asynq-guard: identity '{identity}' may not {needed}{target} ({what}): {why}"
            ),
        })
    };
    if holding.is_empty() {
        return refuse(Reason::Operation, "no grant gives it this operation".into());
    }
    if *every_queue {
        let everywhere = holding
            .iter()
            .any(|g| g.queues.iter().any(|p| p.as_str() == "*"));
        if everywhere {
            return Ok(Caps::default());
        }
        return refuse(
            Reason::Queue,
            "it shows task payloads of every queue, which needs the operation on queue \"*\""
                .into(),
        );
    }
    let Some(queue) = queue else {
        return Ok(Caps::default());
    };
    let on_queue: Vec<&&Grant> = holding.iter().filter(|g| g.covers_queue(queue)).collect();
    if on_queue.is_empty() {
        return refuse(Reason::Queue, "no grant covers this queue".into());
    }
    let Some(task_type) = task_type else {
        return Ok(Caps::default());
    };
    if !ops.contains(&Operation::Enqueue) {
        return Ok(Caps::default());
    }
    let covering = on_queue
        .iter()
        .find(|g| g.ops.contains(&Operation::Enqueue) && g.covers_type(task_type));
    if let Some(grant) = covering {
        Ok(grant.caps)
    } else if on_queue
        .iter()
        .any(|g| !g.ops.contains(&Operation::Enqueue))
    {
        // Another operation of the call (none today: producer scripts
        // need enqueue alone) covers it.
        Ok(Caps::default())
    } else {
        refuse(
            Reason::TaskType,
            format!(
                "task type '{}' is not granted on this queue",
                shown(task_type.as_bytes())
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ops: &[Operation], queues: &[&str], types: &[&str]) -> Grant {
        Grant {
            ops: ops.to_vec(),
            queues: queues.iter().map(|q| Pattern::new(q).unwrap()).collect(),
            task_types: types.iter().map(|t| Pattern::new(t).unwrap()).collect(),
            caps: Caps::default(),
        }
    }

    fn access(ops: &'static [Operation], queue: Option<&str>, task_type: Option<&str>) -> Access {
        Access::Asynq {
            ops,
            queue: queue.map(String::from),
            every_queue: false,
            task_type: task_type.map(String::from),
            what: "a call".into(),
            clock_arg: None,
            message_sizes: None,
            script: None,
            script_op: None,
            message_arg: None,
            task_id: None,
        }
    }

    fn enqueue(queue: &str, task_type: &str) -> Access {
        access(&[Operation::Enqueue], Some(queue), Some(task_type))
    }

    #[test]
    fn enqueue_needs_queue_and_type() {
        let grants = [grant(
            &[Operation::Enqueue],
            &["critical", "mail:*"],
            &["email:*"],
        )];
        assert!(check("web", &grants, &enqueue("critical", "email:send")).is_ok());
        assert!(check("web", &grants, &enqueue("mail:eu", "email:send")).is_ok());
        let r = check("web", &grants, &enqueue("low", "email:send")).unwrap_err();
        assert_eq!(r.reason, Reason::Queue);
        assert!(
            r.text
                .starts_with("NOPERM asynq-guard: identity 'web' may not enqueue on queue 'low'"),
            "{}",
            r.text
        );
        let r = check("web", &grants, &enqueue("critical", "report")).unwrap_err();
        assert_eq!(r.reason, Reason::TaskType);
        assert!(r.text.contains("task type 'report'"), "{}", r.text);
    }

    #[test]
    fn other_operations_and_global_keys() {
        let grants = [grant(&[Operation::Consume], &["critical"], &[])];
        let dequeue = |q: &str| access(&[Operation::Consume], Some(q), None);
        assert!(check("w", &grants, &dequeue("critical")).is_ok());
        assert_eq!(
            check("w", &grants, &dequeue("low")).unwrap_err().reason,
            Reason::Queue
        );
        let heartbeat = access(&[Operation::Consume], None, None);
        assert!(check("w", &grants, &heartbeat).is_ok());
        assert_eq!(
            check("w", &[], &heartbeat).unwrap_err().reason,
            Reason::Operation
        );
        // Aggregated tasks: a consumer's enqueue is still typed.
        assert_eq!(
            check("w", &grants, &enqueue("critical", "x"))
                .unwrap_err()
                .reason,
            Reason::Operation
        );
        assert!(check("w", &[], &Access::Housekeeping).is_ok());
    }

    #[test]
    fn payloads_of_every_queue_need_the_star() {
        let mut workers = access(&[Operation::Inspect], None, None);
        if let Access::Asynq { every_queue, .. } = &mut workers {
            *every_queue = true;
        }
        let one = [grant(&[Operation::Inspect], &["critical", "low"], &[])];
        let r = check("d", &one, &workers).unwrap_err();
        assert_eq!(r.reason, Reason::Queue);
        assert!(r.text.contains("every queue"), "{}", r.text);
        let all = [grant(&[Operation::Inspect], &["*"], &[])];
        assert!(check("d", &all, &workers).is_ok());
    }
}
