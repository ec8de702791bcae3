//! `asynq-guard sign-existing`: signs, in place, the tasks that were in
//! Redis before their queue's integrity mode was turned on, so that none
//! of them is withheld from a worker later (scheduled tasks due in a
//! month included). Each task is signed only if it still holds the
//! message that was read (compare and set in one script), so it is safe
//! beside running workers and producers. Talks to Redis through
//! [`crate::control::Control`] only.

use std::collections::BTreeMap;

use super::{Integrity, Mode};
use crate::control::Control;

/// What signing in place did, by queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// Unsigned tasks now signed.
    pub signed: u64,
    /// Tasks already carrying a valid signature.
    pub valid: u64,
    /// Tasks that changed between reading and signing (left as they are).
    pub changed: u64,
    /// Tasks failing their check, by reason: left alone, they will be
    /// withheld from workers and archived when dequeued.
    pub failing: BTreeMap<&'static str, u64>,
}

/// Reads a RESP2 array of bulk strings.
fn bulks(raw: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (items, end) = array(raw, 0)?;
    (end == raw.len()).then_some(items)
}

fn line(b: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let end = b.get(pos..)?.windows(2).position(|w| w == b"\r\n")? + pos;
    Some((&b[pos..end], end + 2))
}

fn number(b: &[u8]) -> Option<usize> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn bulk(raw: &[u8], pos: usize) -> Option<(Vec<u8>, usize)> {
    let (head, next) = line(raw, pos)?;
    let len = number(head.strip_prefix(b"$")?)?;
    let end = next.checked_add(len)?;
    (raw.get(end..end + 2)? == b"\r\n").then(|| (raw[next..end].to_vec(), end + 2))
}

fn array(raw: &[u8], pos: usize) -> Option<(Vec<Vec<u8>>, usize)> {
    let (head, mut at) = line(raw, pos)?;
    let n = number(head.strip_prefix(b"*")?)?;
    let mut items = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let (item, next) = bulk(raw, at)?;
        items.push(item);
        at = next;
    }
    Some((items, at))
}

/// Reads SCAN's `*2 $cursor *n keys…`.
fn scan_reply(raw: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let (head, next) = line(raw, 0)?;
    if head != b"*2" {
        return None;
    }
    let (cursor, next) = bulk(raw, next)?;
    let (keys, end) = array(raw, next)?;
    (end == raw.len()).then_some((cursor, keys))
}

/// `text` with the glob characters of Redis's MATCH escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Signs the unsigned tasks of every queue (in `asynq:queues`) whose
/// mode is `add` or `check`.
///
/// # Errors
///
/// Why Redis could not be read or written, in words for the operator.
pub async fn sign_existing(
    integrity: &Integrity,
    control: &Control,
) -> Result<BTreeMap<String, QueueReport>, String> {
    let reply = control.command(&[b"SMEMBERS", b"asynq:queues"]).await?;
    let queues = bulks(&reply).ok_or_else(|| {
        format!(
            "unexpected reply to SMEMBERS asynq:queues: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)]).trim_end()
        )
    })?;
    let mut reports = BTreeMap::new();
    for queue in queues {
        let Ok(queue) = String::from_utf8(queue) else {
            continue;
        };
        if integrity.mode(&queue) == Mode::Off || queue.contains(['{', '}']) {
            continue;
        }
        let report = sign_queue(integrity, control, &queue).await?;
        reports.insert(queue, report);
    }
    Ok(reports)
}

async fn sign_queue(
    integrity: &Integrity,
    control: &Control,
    queue: &str,
) -> Result<QueueReport, String> {
    let prefix = format!("asynq:{{{queue}}}:t:");
    let pattern = format!("{}*", glob_escape(&prefix));
    let mut report = QueueReport::default();
    let mut cursor = b"0".to_vec();
    loop {
        let reply = control
            .command(&[
                b"SCAN",
                &cursor,
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                b"500",
            ])
            .await?;
        let (next, keys) = scan_reply(&reply).ok_or("unexpected reply to SCAN")?;
        for key in keys {
            let Some(id) = key.strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            // Task ids may hold ':' too; anything under the prefix with a
            // msg field is a task.
            let Some(stored) = control.task_message(&key).await? else {
                continue;
            };
            match integrity.sign_unsigned(queue, id, &stored) {
                Ok(None) => report.valid += 1,
                Ok(Some(signed)) => {
                    if control.sign_in_place_key(&key, &stored, &signed).await? {
                        report.signed += 1;
                    } else {
                        report.changed += 1;
                    }
                }
                Err(failure) => *report.failing.entry(failure.label()).or_default() += 1,
            }
        }
        if next == b"0" {
            return Ok(report);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_patterns() {
        assert_eq!(
            bulks(b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"),
            Some(vec![b"a".to_vec(), b"bc".to_vec()])
        );
        assert_eq!(bulks(b"*0\r\n"), Some(vec![]));
        assert_eq!(bulks(b"-ERR x\r\n"), None);
        assert_eq!(
            scan_reply(b"*2\r\n$2\r\n17\r\n*1\r\n$3\r\nkey\r\n"),
            Some((b"17".to_vec(), vec![b"key".to_vec()]))
        );
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
