//! Enqueue admission: whether an enqueue the grants allow also fits the
//! size caps of its grant and the rate limits of its identity, queue and
//! task type.
//!
//! Runs after [`crate::policy`], on producer scripts only (every enqueue,
//! scheduled, unique and grouped). Size caps are checked on the decoded
//! task message; rate limits are token buckets (GCRA, the `governor`
//! crate) kept in this process, one per limit and key. A refused enqueue
//! is answered `-LIMIT`, naming the limit, its scope and when a retry may
//! succeed. This module owns the limiters and touches nothing else.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use glob::Pattern;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

mod queue_cap;
pub use queue_cap::{COUNT_SCRIPT, InFlight, QueueCap, QueueCheck, Reservation};

/// What a rate limit counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each identity.
    Identity,
    /// Each identity on each queue.
    IdentityQueue,
    /// Each task type, whoever enqueues it.
    TaskType,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Identity => "identity",
            Scope::IdentityQueue => "identity_queue",
            Scope::TaskType => "task_type",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        [Scope::Identity, Scope::IdentityQueue, Scope::TaskType]
            .into_iter()
            .find(|s| s.name() == text)
    }
}

/// One configured rate limit.
pub struct RateLimit {
    pub name: String,
    pub scope: Scope,
    /// The identities it applies to; empty for all.
    pub identities: Vec<String>,
    /// The queues it applies to; empty for all.
    pub queues: Vec<Pattern>,
    /// The task types it applies to; empty for all.
    pub task_types: Vec<Pattern>,
    pub per_second: f64,
    pub burst: u32,
    /// Kept in the upstream Redis, shared by every proxy in front of it;
    /// `None` for a limit of this process alone.
    pub shared: Option<OnFailure>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

/// What a shared limit does when its state in Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Refuse the enqueue (the default: the limit holds).
    Refuse,
    /// Admit the enqueue (availability over the limit).
    Allow,
}

impl OnFailure {
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Refuse => "refuse",
            OnFailure::Allow => "allow",
        }
    }
}

/// A shared limit's bucket to take a token from in Redis, with the GCRA
/// parameters in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCheck {
    /// Index of the limit in [`Admission::limits`].
    pub limit: usize,
    /// The key of the limit's scope (identity, identity/queue, type).
    pub key: String,
    /// The Redis key of the bucket, outside asynq's namespace.
    pub redis_key: String,
    /// Microseconds between two enqueues at the sustained rate.
    pub interval_us: u64,
    /// How far ahead of now the bucket may run: `(burst - 1) × interval`.
    pub tolerance_us: u64,
}

/// Between identity and queue in an `identity_queue` key.
const KEY_SEPARATOR: char = '\u{1f}';

/// The Redis key prefix of shared limits' buckets. No client without a
/// `raw` grant can name a key outside asynq's namespace.
pub const SHARED_PREFIX: &str = "asynq-guard:rate:";

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    /// A limit of `per_second` enqueues a second (fractions allowed),
    /// with bursts of up to `burst`.
    ///
    /// # Errors
    ///
    /// Why the numbers cannot make a limit.
    pub fn new(
        name: String,
        scope: Scope,
        filters: (Vec<String>, Vec<Pattern>, Vec<Pattern>),
        per_second: f64,
        burst: u32,
    ) -> Result<RateLimit, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err("rate_per_second must be a number greater than 0".into());
        }
        let burst_nz = NonZeroU32::new(burst).ok_or("burst must be at least 1")?;
        let period = Duration::try_from_secs_f64(1.0 / per_second)
            .ok()
            .filter(|p| {
                // The whole burst must fit the limiter's clock (u64 ns).
                p.as_nanos().saturating_mul(u128::from(burst)) < u128::from(u64::MAX / 2)
            })
            .ok_or("rate_per_second is too low for this burst (the burst would last centuries)")?;
        let quota = Quota::with_period(period)
            .ok_or("rate_per_second is too high")?
            .allow_burst(burst_nz);
        let (identities, queues, task_types) = filters;
        Ok(RateLimit {
            name,
            scope,
            identities,
            queues,
            task_types,
            per_second,
            burst,
            shared: None,
            limiter: Arc::new(RateLimiter::keyed(quota)),
        })
    }

    /// Whether `other` counts the same enqueues at the same rate.
    fn same_definition(&self, other: &RateLimit) -> bool {
        self.name == other.name
            && self.scope == other.scope
            && self.identities == other.identities
            && self.queues == other.queues
            && self.task_types == other.task_types
            && self.per_second.to_bits() == other.per_second.to_bits()
            && self.burst == other.burst
            && self.shared == other.shared
    }

    /// The Redis bucket of `key`, for a shared limit.
    fn shared_check(&self, index: usize, key: String) -> SharedCheck {
        let interval_us = (1_000_000.0 / self.per_second).round().max(1.0) as u64;
        SharedCheck {
            limit: index,
            redis_key: format!("{SHARED_PREFIX}{{{}}}:{key}", self.name),
            key,
            interval_us,
            tolerance_us: interval_us * u64::from(self.burst - 1),
        }
    }

    /// The refusal when the bucket of `key` is empty for `wait`.
    pub fn refusal(&self, key: &str, wait: Duration) -> Refusal {
        Refusal {
            limit: self.name.clone(),
            scope: self.scope.name(),
            text: format!(
                "LIMIT asynq-guard: rate limit '{}' ({} per second, burst {}, per {} '{}') is exhausted; retry in {} ms",
                self.name,
                self.per_second,
                self.burst,
                self.scope.name(),
                crate::asynq::shown(key.replace(KEY_SEPARATOR, "/").as_bytes()),
                wait.as_millis().max(1),
            ),
        }
    }

    fn applies(&self, e: &Enqueue<'_>) -> bool {
        (self.identities.is_empty() || self.identities.iter().any(|i| i == e.identity))
            && (self.queues.is_empty() || self.queues.iter().any(|p| p.matches(e.queue)))
            && (self.task_types.is_empty()
                || self.task_types.iter().any(|p| p.matches(e.task_type)))
    }

    /// The key this enqueue is counted under, as refusals show it.
    fn key(&self, e: &Enqueue<'_>) -> String {
        match self.scope {
            Scope::Identity => e.identity.to_string(),
            // Both names may hold '/': keep the pair apart with a byte
            // neither holds (refusals show it as '/').
            Scope::IdentityQueue => format!("{}{KEY_SEPARATOR}{}", e.identity, e.queue),
            Scope::TaskType => e.task_type.to_string(),
        }
    }
}

/// Size caps of the grant an enqueue came under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub max_payload_bytes: Option<u64>,
    pub max_message_bytes: Option<u64>,
}

/// One enqueue, as admission judges it.
#[derive(Debug)]
pub struct Enqueue<'a> {
    pub identity: &'a str,
    pub queue: &'a str,
    pub task_type: &'a str,
    pub payload_bytes: u64,
    pub message_bytes: u64,
}

/// Why an enqueue was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The limit's name: `max_payload_bytes`, `max_message_bytes` or a
    /// rate limit's name.
    pub limit: String,
    /// `grant` for size caps, else the rate limit's scope.
    pub scope: &'static str,
    pub text: String,
}

/// Every configured rate limit.
#[derive(Debug, Default)]
pub struct Admission {
    pub limits: Vec<RateLimit>,
    /// `[limits]` caps: for grants without their own, and for payloads
    /// the inspector writes.
    pub default_caps: Caps,
    /// Queue-size caps, in file order; the first that names a queue
    /// applies to it.
    pub queue_caps: Vec<QueueCap>,
    pub in_flight: Arc<InFlight>,
}

/// What an enqueue must still pass in Redis after [`Admission::admit`]:
/// its shared rate limits, then its queue's cap.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checks {
    pub shared: Vec<SharedCheck>,
    pub queue: Option<QueueCheck>,
}

impl Checks {
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty() && self.queue.is_none()
    }
}

impl Admission {
    /// Takes over what `old` has counted, when a reloaded policy replaces
    /// it: the enqueues still in flight, and the buckets of every local
    /// limit defined exactly as before (a limit that changed starts full).
    pub fn carry_over(&mut self, old: &Admission) {
        self.in_flight = Arc::clone(&old.in_flight);
        for limit in &mut self.limits {
            if let Some(same) = old.limits.iter().find(|o| o.same_definition(limit)) {
                limit.limiter = Arc::clone(&same.limiter);
            }
        }
    }

    /// Admits `e` under `caps`, or says why not. Size caps first (they
    /// spend nothing), then every local rate limit that applies, in the
    /// order of the policy file. Returns the buckets of the shared limits
    /// that apply, which the caller must still take a token from in
    /// Redis (see [`crate::control`]).
    ///
    /// # Errors
    ///
    /// The first limit `e` does not fit.
    pub fn admit(&self, e: &Enqueue<'_>, caps: Caps, spend: bool) -> Result<Checks, Refusal> {
        self.check_caps(e, caps)?;
        let mut shared = Vec::new();
        // An enqueue that already spent its tokens (the gate's NOSCRIPT
        // retry) has only its queue's cap left to pass.
        for (index, limit) in self.limits.iter().enumerate().filter(|_| spend) {
            if !limit.applies(e) {
                continue;
            }
            let key = limit.key(e);
            if limit.shared.is_some() {
                shared.push(limit.shared_check(index, key));
            } else if let Err(not_until) = limit.limiter.check_key(&key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(limit.refusal(&key, wait));
            }
        }
        let queue = self
            .queue_caps
            .iter()
            .find(|c| c.queues.iter().any(|p| p.matches(e.queue)))
            .map(|c| c.check(e.queue));
        Ok(Checks { shared, queue })
    }

    /// Checks the size caps alone.
    ///
    /// # Errors
    ///
    /// The first cap the message is over.
    pub fn check_caps(&self, e: &Enqueue<'_>, caps: Caps) -> Result<(), Refusal> {
        let sizes = [
            (
                "max_payload_bytes",
                "payload",
                e.payload_bytes,
                caps.max_payload_bytes,
            ),
            (
                "max_message_bytes",
                "task message",
                e.message_bytes,
                caps.max_message_bytes,
            ),
        ];
        for (limit, what, size, cap) in sizes {
            if let Some(cap) = cap.filter(|cap| size > *cap) {
                return Err(Refusal {
                    limit: limit.into(),
                    scope: "grant",
                    text: format!(
                        "LIMIT asynq-guard: {what} of {size} bytes is over the {cap}-byte cap ({limit}) of identity '{}' for task type '{}' on queue '{}'; it will not fit on retry",
                        e.identity,
                        crate::asynq::shown(e.task_type.as_bytes()),
                        crate::asynq::shown(e.queue.as_bytes()),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Forgets the buckets of keys that have been idle long enough to be
    /// full again, so that many distinct keys do not hold memory forever.
    pub fn forget_idle(&self) {
        for limit in &self.limits {
            limit.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueue<'a>(identity: &'a str, queue: &'a str, task_type: &'a str) -> Enqueue<'a> {
        Enqueue {
            identity,
            queue,
            task_type,
            payload_bytes: 10,
            message_bytes: 50,
        }
    }

    fn limit(scope: Scope, per_second: f64, burst: u32) -> RateLimit {
        RateLimit::new(
            "l".into(),
            scope,
            (vec![], vec![], vec![]),
            per_second,
            burst,
        )
        .unwrap()
    }

    #[test]
    fn size_caps_come_first_and_say_so() {
        let a = Admission::default();
        let caps = Caps {
            max_payload_bytes: Some(5),
            max_message_bytes: None,
        };
        let r = a.admit(&enqueue("web", "q", "t"), caps, true).unwrap_err();
        assert_eq!(r.limit, "max_payload_bytes");
        assert!(
            r.text.starts_with("LIMIT asynq-guard: payload of 10 bytes"),
            "{}",
            r.text
        );
        assert!(
            a.admit(&enqueue("web", "q", "t"), Caps::default(), true)
                .is_ok()
        );
    }

    #[test]
    fn a_burst_then_refusals_with_a_retry_time() {
        let a = Admission {
            limits: vec![limit(Scope::IdentityQueue, 1.0, 3)],
            ..Admission::default()
        };
        for _ in 0..3 {
            assert_eq!(
                a.admit(&enqueue("web", "q", "t"), Caps::default(), true),
                Ok(Checks::default())
            );
        }
        let r = a
            .admit(&enqueue("web", "q", "t"), Caps::default(), true)
            .unwrap_err();
        assert_eq!(r.scope, "identity_queue");
        assert!(
            r.text.contains("per identity_queue 'web/q'") && r.text.contains("retry in"),
            "{}",
            r.text
        );
        // Other keys of the scope have their own bucket.
        assert!(
            a.admit(&enqueue("web", "other", "t"), Caps::default(), true)
                .is_ok()
        );
        assert!(
            a.admit(&enqueue("app", "q", "t"), Caps::default(), true)
                .is_ok()
        );
    }

    #[test]
    fn filters_choose_what_a_limit_counts() {
        let mut l = limit(Scope::TaskType, 1.0, 1);
        l.task_types = vec![Pattern::new("email:*").unwrap()];
        let a = Admission {
            limits: vec![l],
            ..Admission::default()
        };
        assert!(
            a.admit(&enqueue("web", "q", "email:a"), Caps::default(), true)
                .is_ok()
        );
        assert!(
            a.admit(&enqueue("app", "r", "email:a"), Caps::default(), true)
                .is_err()
        );
        assert!(
            a.admit(&enqueue("web", "q", "report"), Caps::default(), true)
                .is_ok()
        );
        assert!(
            a.admit(&enqueue("web", "q", "report"), Caps::default(), true)
                .is_ok()
        );
    }

    #[test]
    fn shared_limits_are_left_to_redis_with_their_bucket() {
        let mut l = limit(Scope::IdentityQueue, 4.0, 3);
        l.shared = Some(OnFailure::Refuse);
        let a = Admission {
            limits: vec![l],
            ..Admission::default()
        };
        let checks = a
            .admit(&enqueue("web", "q", "t"), Caps::default(), true)
            .unwrap();
        assert_eq!(
            checks.shared,
            vec![SharedCheck {
                limit: 0,
                key: "web\u{1f}q".into(),
                redis_key: "asynq-guard:rate:{l}:web\u{1f}q".into(),
                interval_us: 250_000,
                tolerance_us: 500_000,
            }]
        );
    }

    #[test]
    fn identity_and_queue_do_not_run_together() {
        let a = Admission {
            limits: vec![limit(Scope::IdentityQueue, 0.001, 1)],
            ..Admission::default()
        };
        assert!(
            a.admit(&enqueue("a", "b/c", "t"), Caps::default(), true)
                .is_ok()
        );
        assert!(
            a.admit(&enqueue("a/b", "c", "t"), Caps::default(), true)
                .is_ok()
        );
        let r = a
            .admit(&enqueue("a/b", "c", "t"), Caps::default(), true)
            .unwrap_err();
        assert!(r.text.contains("'a/b/c'"), "{}", r.text);
    }

    #[test]
    fn an_enqueue_that_already_paid_spends_nothing() {
        let a = Admission {
            limits: vec![limit(Scope::Identity, 0.001, 1)],
            ..Admission::default()
        };
        assert!(
            a.admit(&enqueue("web", "q", "t"), Caps::default(), true)
                .is_ok()
        );
        assert!(
            a.admit(&enqueue("web", "q", "t"), Caps::default(), false)
                .is_ok()
        );
        assert!(
            a.admit(&enqueue("web", "q", "t"), Caps::default(), true)
                .is_err()
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        for (rate, burst) in [
            (0.0, 1),
            (-1.0, 1),
            (f64::NAN, 1),
            (1.0, 0),
            (1e-20, 1),
            (1e-9, 100),
        ] {
            assert!(
                RateLimit::new(
                    "l".into(),
                    Scope::Identity,
                    (vec![], vec![], vec![]),
                    rate,
                    burst
                )
                .is_err(),
                "{rate} {burst}"
            );
        }
    }
}
