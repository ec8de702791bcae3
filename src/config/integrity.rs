//! The `[integrity]` table of the policy file: signing keys and the
//! queues' modes, read, validated, and turned into
//! [`crate::integrity::Integrity`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{FieldError, Names, patterns};
use crate::integrity::{Integrity, Key, Mode, QueueRule, sign};

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// `[integrity]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityFile {
    /// The id of the key that signs; required when any queue signs.
    pub sign_with: Option<String>,
    /// Every key that verifies (the signing key among them).
    #[serde(default)]
    pub key: Vec<KeyFile>,
    /// Queue modes; the first entry naming a queue decides, queues named
    /// by none are `off`.
    #[serde(default)]
    pub queues: Vec<QueueModeFile>,
}

/// `[[integrity.key]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub id: String,
    /// A file holding the key (surrounding whitespace is ignored).
    pub file: Option<PathBuf>,
    /// An environment variable holding the key.
    pub env: Option<String>,
}

/// `[[integrity.queues]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueModeFile {
    /// Queue names or globs.
    pub queues: Vec<String>,
    /// `off`, `add` or `check`.
    pub mode: String,
    /// Until this time (an offset date-time such as
    /// `2026-12-10T00:00:00Z`), unsigned tasks already in the queue are
    /// accepted and signed when first read.
    pub accept_unsigned_until: Option<toml::value::Datetime>,
}

/// Validates `[integrity]`, each key and queue rule on its own; none
/// when any of it is invalid (every problem recorded in `errors`).
pub fn validate(file: &IntegrityFile, errors: &mut Vec<FieldError>) -> Option<Integrity> {
    let before = errors.len();
    let mut keys: Vec<Key> = Vec::new();
    for (i, k) in file.key.iter().enumerate() {
        match validate_key(i, k, &file.key[..i]) {
            Ok(key) => keys.push(key),
            Err(e) => errors.push(e),
        }
    }
    // Against every key written, valid or not: a key that failed is
    // already reported.
    if let Some(id) = &file.sign_with
        && !file.key.iter().any(|k| &k.id == id)
    {
        let listed: Vec<&str> = file.key.iter().map(|k| k.id.as_str()).collect();
        errors.push((
            "integrity.sign_with".into(),
            format!(
                "{id:?} is not the id of an [[integrity.key]] (listed: {})",
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    format!("{listed:?}")
                }
            ),
        ));
    }
    let signing = file
        .queues
        .iter()
        .find_map(|q| Mode::parse(&q.mode).filter(|m| *m != Mode::Off));
    if let (Some(mode), None) = (signing, &file.sign_with) {
        errors.push((
            "integrity.sign_with".into(),
            format!(
                "queues in mode {} need a signing key: set sign_with to a key id",
                mode.name()
            ),
        ));
    }
    let mut rules = Vec::new();
    for (i, q) in file.queues.iter().enumerate() {
        match validate_rule(i, q) {
            Ok(rule) => rules.push(rule),
            Err(e) => errors.push(e),
        }
    }
    (errors.len() == before).then(|| Integrity::new(keys, file.sign_with.as_deref(), rules))
}

/// One `[[integrity.key]]`; `earlier` are those before it in the file.
fn validate_key(i: usize, k: &KeyFile, earlier: &[KeyFile]) -> Result<Key, FieldError> {
    let field = |f: &str| format!("integrity.key[{i}].{f}");
    if !sign::valid_key_id(&k.id) {
        return Err((
            field("id"),
            format!(
                "{:?} is not 1 to 32 of A-Z a-z 0-9 _ -",
                crate::asynq::shown(k.id.as_bytes())
            ),
        ));
    }
    if earlier.iter().any(|other| other.id == k.id) {
        return Err((field("id"), format!("{:?} is used twice", k.id)));
    }
    let text = match (&k.file, &k.env) {
        (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
            (
                field("file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?,
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            (
                field("env"),
                format!("environment variable {var} is not set"),
            )
        })?,
        _ => {
            return Err((field("file"), "set exactly one of file and env".into()));
        }
    };
    let secret = text.trim().as_bytes().to_vec();
    if secret.len() < MIN_KEY_BYTES {
        return Err((
            field(if k.file.is_some() { "file" } else { "env" }),
            format!(
                "key {:?} is {} bytes; at least {MIN_KEY_BYTES} are needed (for example: openssl rand -hex 32)",
                k.id,
                secret.len()
            ),
        ));
    }
    Ok(Key {
        id: k.id.clone(),
        secret,
    })
}

/// One `[[integrity.queues]]`.
fn validate_rule(i: usize, q: &QueueModeFile) -> Result<QueueRule, FieldError> {
    let field = |f: &str| format!("integrity.queues[{i}].{f}");
    let mode = Mode::parse(&q.mode).ok_or_else(|| {
        (
            field("mode"),
            format!("{:?} is not off, add or check", q.mode),
        )
    })?;
    if q.queues.is_empty() {
        return Err((field("queues"), "is empty".into()));
    }
    let queues = patterns(&field("queues"), &q.queues, Names::Queues)?;
    let until = match &q.accept_unsigned_until {
        None => None,
        Some(_) if mode == Mode::Off => {
            return Err((
                field("accept_unsigned_until"),
                "applies to queues in mode add or check".into(),
            ));
        }
        Some(dt) => Some(to_system_time(dt).ok_or_else(|| {
            (
                field("accept_unsigned_until"),
                if dt.date.is_some() && dt.time.is_some() && dt.offset.is_some() {
                    format!("{dt} is before 1970-01-01T00:00:00Z")
                } else {
                    format!(
                        "{dt} is not a date and time with an offset, such as 2026-12-10T00:00:00Z"
                    )
                },
            )
        })?),
    };
    Ok(QueueRule {
        queues,
        mode,
        accept_unsigned_until: until,
    })
}

/// An offset date-time as a point in time.
fn to_system_time(dt: &toml::value::Datetime) -> Option<SystemTime> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - offset_minutes * 60;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_unix_seconds() {
        let at = |text: &str| {
            let dt: toml::value::Datetime = text.parse().unwrap();
            to_system_time(&dt).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(at("2026-12-10T00:00:00Z"), Some(1_796_860_800));
        assert_eq!(at("2026-12-10T01:00:00+01:00"), Some(1_796_860_800));
        assert_eq!(at("2000-02-29T12:00:00Z"), Some(951_825_600));
        // No offset: ambiguous, refused.
        assert_eq!(at("2026-12-10T00:00:00"), None);
        assert_eq!(at("2026-12-10"), None);
    }
}
