//! The `[[rate_limit]]` tables of the policy file: read, validated, and
//! turned into the limiters of [`crate::admission`].

use serde::Deserialize;

use super::{FieldError, Names, patterns};
use crate::admission::{Admission, Caps, OnFailure, QueueCap, RateLimit, Scope};
use crate::auth::Identity;

/// An enqueue rate limit as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Names the limit in refusals, logs and metrics; unique.
    pub name: String,
    /// What is counted separately: `identity`, `identity_queue` or
    /// `task_type`.
    pub scope: String,
    /// Identities the limit applies to; all when left out.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Queues (names or globs) the limit applies to; all when left out.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Task types (names or globs) the limit applies to; all when left out.
    #[serde(default)]
    pub task_types: Vec<String>,
    /// Sustained enqueues per second (fractions allowed).
    pub rate_per_second: f64,
    /// Enqueues allowed at once after a quiet spell. Default 1.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Keep the limit's state in the upstream Redis, so that every proxy
    /// in front of it enforces one limit together. Default false.
    #[serde(default)]
    pub shared: bool,
    /// For a shared limit, what to do when its state in Redis cannot be
    /// reached: `refuse` (default) or `allow`.
    pub on_shared_failure: Option<String>,
}

fn default_burst() -> u32 {
    1
}

/// A queue-size cap as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueCapFile {
    /// Queues (names or globs) it caps; each queue takes the first cap
    /// that names it.
    pub queues: Vec<String>,
    /// Most tasks waiting in the queue: enqueues beyond are refused.
    pub max_tasks: u64,
    /// Also count scheduled tasks. Default false.
    #[serde(default)]
    pub count_scheduled: bool,
    /// Also count tasks waiting to be retried. Default false.
    #[serde(default)]
    pub count_retry: bool,
    /// Also count grouped tasks waiting for aggregation. Default false.
    #[serde(default)]
    pub count_aggregating: bool,
}

/// One `[[queue_cap]]`.
fn validate_cap(i: usize, f: &QueueCapFile) -> Result<QueueCap, FieldError> {
    if f.queues.is_empty() {
        return Err((format!("queue_cap[{i}].queues"), "is empty".into()));
    }
    if f.max_tasks == 0 {
        return Err((
            format!("queue_cap[{i}].max_tasks"),
            "must be at least 1 (a queue that takes nothing needs no grant instead)".into(),
        ));
    }
    Ok(QueueCap {
        queues: patterns(&format!("queue_cap[{i}].queues"), &f.queues, Names::Queues)?,
        max_tasks: f.max_tasks,
        scheduled: f.count_scheduled,
        retry: f.count_retry,
        aggregating: f.count_aggregating,
    })
}

/// Validates every `[[rate_limit]]` against the identities, and every
/// `[[queue_cap]]`, each on its own: the admission returned holds those
/// that are valid, and `errors` why the others are not.
pub fn validate(
    files: &[RateLimitFile],
    caps: &[QueueCapFile],
    identities: &[Identity],
    default_caps: Caps,
    errors: &mut Vec<FieldError>,
) -> Admission {
    let mut limits = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match validate_limit(i, f, &files[..i], identities) {
            Ok(limit) => limits.push(limit),
            Err(e) => errors.push(e),
        }
    }
    let mut queue_caps = Vec::new();
    for (i, f) in caps.iter().enumerate() {
        match validate_cap(i, f) {
            Ok(cap) => queue_caps.push(cap),
            Err(e) => errors.push(e),
        }
    }
    Admission {
        limits,
        default_caps,
        queue_caps,
        in_flight: Default::default(),
    }
}

/// One `[[rate_limit]]`; `earlier` are those before it in the file.
fn validate_limit(
    i: usize,
    f: &RateLimitFile,
    earlier: &[RateLimitFile],
    identities: &[Identity],
) -> Result<RateLimit, FieldError> {
    let field = |k: &str| format!("rate_limit[{i}].{k}");
    if f.name.trim().is_empty() || f.name.trim() != f.name {
        return Err((
            field("name"),
            format!("{:?} is blank or has surrounding spaces", f.name),
        ));
    }
    if f.name.contains(['{', '}']) {
        return Err((
            field("name"),
            format!("{:?} may not contain '{{' or '}}'", f.name),
        ));
    }
    if ["max_payload_bytes", "max_message_bytes", "queue_cap"].contains(&f.name.as_str()) {
        return Err((
            field("name"),
            format!("{:?} names one of the caps; choose another name", f.name),
        ));
    }
    if let Some(j) = earlier.iter().position(|l| l.name == f.name) {
        return Err((
            field("name"),
            format!("{:?} is used twice (rate_limit[{j}] has it too)", f.name),
        ));
    }
    let scope = Scope::parse(&f.scope).ok_or_else(|| {
        (
            field("scope"),
            format!("{:?} is not identity, identity_queue or task_type", f.scope),
        )
    })?;
    for (j, name) in f.identities.iter().enumerate() {
        if !identities.iter().any(|id| &id.name == name) {
            return Err((
                format!("rate_limit[{i}].identities[{j}]"),
                format!("{name:?} is not a defined [[identity]]"),
            ));
        }
    }
    let queues = patterns(&field("queues"), &f.queues, Names::Queues)?;
    let task_types = patterns(&field("task_types"), &f.task_types, Names::Other)?;
    if !(f.rate_per_second.is_finite() && f.rate_per_second > 0.0) {
        return Err((
            field("rate_per_second"),
            format!(
                "{} lets nothing through: it must be a number greater than 0 (to refuse enqueues, give no grant)",
                f.rate_per_second
            ),
        ));
    }
    if f.burst == 0 {
        return Err((
            field("burst"),
            "must be at least 1 (with 0, no enqueue could ever pass)".into(),
        ));
    }
    let mut limit = RateLimit::new(
        f.name.clone(),
        scope,
        (f.identities.clone(), queues, task_types),
        f.rate_per_second,
        f.burst,
    )
    .map_err(|e| (field("rate_per_second"), e))?;
    limit.shared = match (f.shared, f.on_shared_failure.as_deref()) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err((
                field("on_shared_failure"),
                "applies to shared limits only (shared = true)".into(),
            ));
        }
        (true, None | Some("refuse")) => Some(OnFailure::Refuse),
        (true, Some("allow")) => Some(OnFailure::Allow),
        (true, Some(other)) => {
            return Err((
                field("on_shared_failure"),
                format!("{other:?} is not refuse or allow"),
            ));
        }
    };
    Ok(limit)
}
