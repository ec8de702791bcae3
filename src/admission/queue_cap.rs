//! Queue-size caps: an enqueue is admitted only while its queue holds
//! fewer tasks than its cap.
//!
//! The proxy counts the queue in Redis (pending, and as configured
//! scheduled, retry and aggregating tasks) with a script of its own, and
//! adds the enqueues to that queue it has admitted and not yet seen
//! answered: each holds a [`Reservation`] from admission until its reply
//! arrives (the reservation lives in the reply's slot). So one proxy never
//! lets a queue exceed its cap; several replicas in front of one Redis
//! can overshoot by the enqueues in flight at the other replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use glob::Pattern;

/// One configured cap.
#[derive(Debug)]
pub struct QueueCap {
    pub queues: Vec<Pattern>,
    pub max_tasks: u64,
    /// Also count scheduled, retry and aggregating (grouped) tasks.
    pub scheduled: bool,
    pub retry: bool,
    pub aggregating: bool,
}

/// An enqueue to a capped queue, still to be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCheck {
    pub queue: String,
    pub max_tasks: u64,
    /// What to count: `p` pending, `s` scheduled, `r` retry, `a`
    /// aggregating.
    pub count: String,
}

impl QueueCap {
    pub fn check(&self, queue: &str) -> QueueCheck {
        let mut count = String::from("p");
        for (on, c) in [
            (self.scheduled, 's'),
            (self.retry, 'r'),
            (self.aggregating, 'a'),
        ] {
            if on {
                count.push(c);
            }
        }
        QueueCheck {
            queue: queue.to_string(),
            max_tasks: self.max_tasks,
            count,
        }
    }
}

/// Enqueues admitted per queue whose replies have not arrived yet.
#[derive(Debug, Default)]
pub struct InFlight {
    by_queue: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl InFlight {
    /// Reserves a place in `queue`; returns the reservation and how many
    /// other admitted enqueues were in flight.
    pub fn reserve(&self, queue: &str) -> (Reservation, u64) {
        let counter = {
            let mut map = self.by_queue.lock().unwrap_or_else(PoisonError::into_inner);
            // Queues with nothing in flight are forgotten as others come.
            if map.len() > 10_000 {
                map.retain(|_, c| c.load(Ordering::Relaxed) > 0);
            }
            Arc::clone(map.entry(queue.to_string()).or_default())
        };
        let before = counter.fetch_add(1, Ordering::AcqRel);
        (Reservation { counter }, before)
    }
}

/// One admitted enqueue's place in its queue, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    counter: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a queue's tasks: KEYS are its pending list, scheduled and retry
/// sets and groups set; ARGV[1] says what to count (`p`, `s`, `r`, `a`),
/// ARGV[2] is its group key prefix.
pub const COUNT_SCRIPT: &str = r"
local n = redis.call('LLEN', KEYS[1])
if string.find(ARGV[1], 's', 1, true) then n = n + redis.call('ZCARD', KEYS[2]) end
if string.find(ARGV[1], 'r', 1, true) then n = n + redis.call('ZCARD', KEYS[3]) end
if string.find(ARGV[1], 'a', 1, true) then
  for _, g in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    n = n + redis.call('ZCARD', ARGV[2] .. g)
  end
end
return n
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_until_dropped() {
        let f = InFlight::default();
        let (a, before) = f.reserve("q");
        assert_eq!(before, 0);
        let (b, before) = f.reserve("q");
        assert_eq!(before, 1);
        let (_c, before) = f.reserve("other");
        assert_eq!(before, 0);
        drop(a);
        drop(b);
        let (_d, before) = f.reserve("q");
        assert_eq!(before, 0);
    }

    #[test]
    fn a_cap_says_what_it_counts() {
        let cap = QueueCap {
            queues: vec![],
            max_tasks: 10,
            scheduled: true,
            retry: false,
            aggregating: true,
        };
        assert_eq!(cap.check("q").count, "psa");
    }
}
