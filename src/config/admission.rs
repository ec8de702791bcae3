//! The `[[rate_limit]]` tables of the policy file: read, validated, and
//! turned into the limiters of [`crate::admission`].

use glob::Pattern;
use serde::Deserialize;

use super::FieldError;
use crate::admission::{Admission, RateLimit, Scope};
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
}

fn default_burst() -> u32 {
    1
}

/// Validates every `[[rate_limit]]` against the identities.
pub fn validate(files: &[RateLimitFile], identities: &[Identity]) -> Result<Admission, FieldError> {
    let mut limits: Vec<RateLimit> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let field = |k: &str| format!("rate_limit[{i}].{k}");
        if f.name.trim().is_empty() || f.name.trim() != f.name {
            return Err((
                field("name"),
                format!("{:?} is blank or has surrounding spaces", f.name),
            ));
        }
        if limits.iter().any(|l| l.name == f.name) {
            return Err((field("name"), format!("{:?} is used twice", f.name)));
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
        let queues = patterns(&field("queues"), &f.queues)?;
        let task_types = patterns(&field("task_types"), &f.task_types)?;
        let limit = RateLimit::new(
            f.name.clone(),
            scope,
            (f.identities.clone(), queues, task_types),
            f.rate_per_second,
            f.burst,
        )
        .map_err(|e| (field("rate_per_second"), e))?;
        limits.push(limit);
    }
    Ok(Admission { limits })
}

fn patterns(field: &str, list: &[String]) -> Result<Vec<Pattern>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(k, text)| {
            Pattern::new(text).map_err(|e| {
                (
                    format!("{field}[{k}]"),
                    format!("{text:?} is not a valid pattern ({e})"),
                )
            })
        })
        .collect()
}
