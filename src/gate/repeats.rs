//! Which refusals to write to the audit log, so that a client that
//! repeats one refused command in a loop (an asynq server configured for
//! a queue it may not consume asks for it several times a second) cannot
//! flood the log. The metric counts every refusal; this only decides
//! about log lines. Owned by one connection's gate; touches nothing but
//! the audit log, when the connection ends with repeats not yet written.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::info;

use super::AUDIT;

/// Identical refusals on one connection are logged at most this often.
pub const AUDIT_REPEAT: Duration = Duration::from_secs(10);

/// Distinct refusals remembered per connection; past this the oldest
/// are forgotten (their untold repeats are logged first).
const REMEMBERED: usize = 32;

/// One refusal as the log groups them: identity, operation, reason, the
/// asynq call, why it is not asynq traffic (or empty), and the queue.
pub type RefusalKey = (String, String, &'static str, String, String, Option<String>);

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    untold: u64,
}

/// The refusals one connection has logged, with repeats not yet told.
#[derive(Debug)]
pub struct Repeats {
    peer: SocketAddr,
    listener: String,
    seen: HashMap<RefusalKey, Seen>,
}

impl Repeats {
    pub fn new(peer: SocketAddr, listener: String) -> Self {
        Repeats {
            peer,
            listener,
            seen: HashMap::new(),
        }
    }

    /// Whether to log this refusal now; if so, how many of its repeats
    /// were left out since it was last logged.
    pub fn log_now(&mut self, key: &RefusalKey, now: Instant) -> Option<u64> {
        if let Some(seen) = self.seen.get_mut(key) {
            if now.duration_since(seen.logged_at) < AUDIT_REPEAT {
                seen.untold += 1;
                return None;
            }
            let untold = seen.untold;
            *seen = Seen {
                logged_at: now,
                untold: 0,
            };
            return Some(untold);
        }
        if self.seen.len() >= REMEMBERED {
            self.forget_oldest();
        }
        self.seen.insert(
            key.clone(),
            Seen {
                logged_at: now,
                untold: 0,
            },
        );
        Some(0)
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .seen
            .iter()
            .min_by_key(|(_, s)| s.logged_at)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            let seen = self.seen.remove(&key).expect("present");
            self.tell(&key, seen.untold);
        }
    }

    /// Logs the repeats of `key` that no line has told yet.
    fn tell(&self, key: &RefusalKey, untold: u64) {
        if untold == 0 {
            return;
        }
        let (identity, operation, reason, command, why, queue) = key;
        let why = (!why.is_empty()).then_some(why.as_str());
        info!(target: AUDIT, event = "refusal_repeats", identity = identity.as_str(), operation = operation.as_str(), reason, command = command.as_str(), queue = queue.as_deref(), why, repeats_not_logged = untold, client.addr = %self.peer, listener = %self.listener);
    }
}

impl Drop for Repeats {
    fn drop(&mut self) {
        for (key, seen) in &self.seen {
            self.tell(key, seen.untold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &'static str) -> RefusalKey {
        (
            "w".into(),
            "consume".into(),
            reason,
            "script dequeue".into(),
            String::new(),
            Some("b".into()),
        )
    }

    #[test]
    fn repeats_are_held_back_then_told() {
        let mut r = Repeats::new(([127, 0, 0, 1], 1).into(), "l".into());
        let t0 = Instant::now();
        assert_eq!(r.log_now(&key("a"), t0), Some(0));
        assert_eq!(r.log_now(&key("a"), t0), None);
        // Another refusal in between does not lose the count.
        assert_eq!(r.log_now(&key("b"), t0), Some(0));
        assert_eq!(r.log_now(&key("a"), t0), None);
        assert_eq!(r.log_now(&key("a"), t0 + AUDIT_REPEAT), Some(2));
        assert_eq!(r.log_now(&key("a"), t0 + AUDIT_REPEAT), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Repeats::new(([127, 0, 0, 1], 1).into(), "l".into());
        let t0 = Instant::now();
        for i in 0..100 {
            let k = (
                "w".into(),
                "none".into(),
                "x",
                format!("c{i}"),
                String::new(),
                None,
            );
            r.log_now(&k, t0 + Duration::from_millis(i));
        }
        assert!(r.seen.len() <= REMEMBERED);
    }
}
