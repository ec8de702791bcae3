//! asynq's key names: which queue a key or key prefix belongs to.
//!
//! Every per-queue key is `asynq:{<queue>}:<rest>`, the queue name inside
//! a Redis hash tag. A queue name holding `{` or `}` would make that split
//! ambiguous (and move keys between cluster slots), so such names are not
//! queue names here and everything naming one is refused. Pure functions
//! over bytes; nothing else is touched.

/// The global keys and prefixes asynq uses outside any queue.
pub const QUEUES: &[u8] = b"asynq:queues";
pub const SERVERS: &[u8] = b"asynq:servers";
pub const WORKERS: &[u8] = b"asynq:workers";
pub const SCHEDULERS: &[u8] = b"asynq:schedulers";
pub const SCHEDULER_HISTORY: &[u8] = b"asynq:scheduler_history:";
pub const CANCEL_CHANNEL: &[u8] = b"asynq:cancel";

/// Whether `name` is a queue name the proxy accepts: not blank, valid
/// UTF-8, no hash-tag braces, no control characters.
pub fn valid_queue(name: &[u8]) -> bool {
    match std::str::from_utf8(name) {
        Ok(s) => !s.trim().is_empty() && !s.chars().any(|c| c == '{' || c == '}' || c.is_control()),
        Err(_) => false,
    }
}

/// Why `arg` (a key, a key prefix or a queue name) is refused when it
/// holds a queue name with hash-tag braces, which is always refused.
pub fn brace_refusal(arg: &[u8]) -> Option<&'static str> {
    let braces = arg.iter().filter(|&&b| b == b'{' || b == b'}').count();
    let tagged = arg.starts_with(b"asynq:{");
    ((tagged && braces > 2) || (!tagged && braces > 0))
        .then_some("names a queue with '{' or '}': asynq-guard refuses such queue names")
}

/// Splits `asynq:{<queue>}:<rest>` into the queue name and `rest`.
pub fn split(key: &[u8]) -> Option<(&str, &[u8])> {
    let inner = key.strip_prefix(b"asynq:{")?;
    let close = inner.iter().position(|&b| b == b'}')?;
    let (queue, after) = inner.split_at(close);
    let rest = after.strip_prefix(b"}:")?;
    if !valid_queue(queue) {
        return None;
    }
    Some((std::str::from_utf8(queue).ok()?, rest))
}

/// `asynq:{<queue>}:<rest>` with `rest` exactly `want`: the queue name.
pub fn queue_of(key: &[u8], want: &[u8]) -> Option<String> {
    let (queue, rest) = split(key)?;
    (rest == want).then(|| queue.to_string())
}

/// `asynq:{<queue>}:<prefix><tail>` with a non-empty `tail`: the queue
/// name and the tail.
pub fn queue_and_tail<'a>(key: &'a [u8], prefix: &[u8]) -> Option<(String, &'a [u8])> {
    let (queue, rest) = split(key)?;
    let tail = rest.strip_prefix(prefix)?;
    (!tail.is_empty()).then(|| (queue.to_string(), tail))
}

/// Whether `key` is `<prefix>{<host>:<pid>:<uuid>}`, the per-process keys
/// of asynq servers, workers and schedulers.
pub fn is_process_key(key: &[u8], prefix: &[u8]) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return false;
    };
    let Some(tag) = rest.strip_prefix(b":{").and_then(|r| r.strip_suffix(b"}")) else {
        return false;
    };
    !tag.is_empty() && !tag.iter().any(|&b| b == b'{' || b == b'}')
}

/// Whether `key` is `asynq:scheduler_history:<entry id>`.
pub fn is_history_key(key: &[u8]) -> bool {
    key.strip_prefix(SCHEDULER_HISTORY)
        .is_some_and(|id| !id.is_empty() && !id.iter().any(|&b| b == b'{' || b == b'}'))
}

/// Whether `date` looks like asynq's `yyyy-mm-dd` day suffix.
pub fn is_day(date: &[u8]) -> bool {
    date.len() == 10
        && date.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_queue_keys() {
        assert_eq!(
            split(b"asynq:{critical}:pending"),
            Some(("critical", &b"pending"[..]))
        );
        assert_eq!(queue_of(b"asynq:{a b}:t:", b"t:"), Some("a b".to_string()));
        assert_eq!(
            queue_and_tail(b"asynq:{q}:t:abc", b"t:"),
            Some(("q".to_string(), &b"abc"[..]))
        );
        assert_eq!(queue_and_tail(b"asynq:{q}:t:", b"t:"), None);
        assert_eq!(split(b"asynq:{}:pending"), None);
        assert_eq!(split(b"asynq:{a{b}:pending"), None);
        assert_eq!(split(b"asynq:{q}pending"), None);
        assert_eq!(split(b"other:{q}:pending"), None);
        assert_eq!(queue_of(b"asynq:{q}:pending:x", b"pending"), None);
    }

    #[test]
    fn queue_names() {
        assert!(valid_queue(b"default"));
        assert!(valid_queue(b"emails:high"));
        assert!(!valid_queue(b""));
        assert!(!valid_queue(b"  "));
        assert!(!valid_queue(b"a}b"));
        assert!(!valid_queue(b"a{b"));
        assert!(!valid_queue(b"a\nb"));
        assert!(!valid_queue(b"\xff"));
    }

    #[test]
    fn process_and_history_keys() {
        assert!(is_process_key(b"asynq:servers:{h:1:u}", SERVERS));
        assert!(!is_process_key(b"asynq:servers:{}", SERVERS));
        assert!(!is_process_key(b"asynq:servers:h", SERVERS));
        assert!(!is_process_key(b"asynq:workers:{h}", SERVERS));
        assert!(is_history_key(b"asynq:scheduler_history:abc"));
        assert!(!is_history_key(b"asynq:scheduler_history:"));
        assert!(is_day(b"2026-12-03"));
        assert!(!is_day(b"2026-1203"));
    }
}
