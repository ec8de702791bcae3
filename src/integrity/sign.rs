//! The signature itself: the canonical form of a task message, its MAC,
//! the `v1:<key id>:<hex>` text, and the protobuf field that carries it
//! inside a stored message. `docs/integrity.md` is the specification;
//! `sdk/go/asynqguard` implements the same in Go and both test against
//! `sdk/go/asynqguard/testdata/vectors.json`. Pure functions.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::asynq::message::TaskMessage;

/// The protobuf field number that carries the signature in Redis.
pub const CARRIER_FIELD: u64 = 1001;

/// The task header a producer in `check` mode signs with.
pub const HEADER: &str = "asynq-guard-signature";

/// The task header of the end-to-end signature (for worker middleware).
pub const E2E_HEADER: &str = "asynq-guard-e2e";

const FORM: &[u8] = b"asynq-guard-v1\0";

type HmacSha256 = hmac::Hmac<Sha256>;

/// A parsed signature: which key, and the MAC.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    pub key_id: String,
    pub mac: [u8; 32],
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.key_id)
    }
}

impl Signature {
    /// The text form, `v1:<key id>:<hex>`.
    pub fn text(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(4 + self.key_id.len() + 64);
        out.push_str("v1:");
        out.push_str(&self.key_id);
        out.push(':');
        // Every signed enqueue formats one: a table, not format! per byte
        // (which the benchmark's profile showed at a fifth of the cost).
        for b in self.mac {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }

    /// Parses the text form.
    pub fn parse(text: &[u8]) -> Option<Signature> {
        let text = std::str::from_utf8(text).ok()?;
        let rest = text.strip_prefix("v1:")?;
        let (key_id, hex) = rest.rsplit_once(':')?;
        if !valid_key_id(key_id) || hex.len() != 64 {
            return None;
        }
        let mut mac = [0u8; 32];
        for (i, out) in mac.iter_mut().enumerate() {
            *out = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        Some(Signature {
            key_id: key_id.to_string(),
            mac,
        })
    }
}

/// Whether `id` may name a key: 1 to 32 of `A-Z a-z 0-9 _ -`.
pub fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_headers(out: &mut Vec<u8>, m: &TaskMessage) {
    let mut pairs: Vec<(&String, &String)> = m
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != HEADER && k.as_str() != E2E_HEADER)
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.extend_from_slice(&(pairs.len() as u64).to_be_bytes());
    for (k, v) in pairs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// The bytes the signature covers: every field a worker may not change.
pub fn canonical(m: &TaskMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(FORM.len() + 160 + m.payload.len());
    out.extend_from_slice(FORM);
    put_bytes(&mut out, m.r#type.as_bytes());
    put_bytes(&mut out, &m.payload);
    put_bytes(&mut out, m.id.as_bytes());
    put_bytes(&mut out, m.queue.as_bytes());
    out.extend_from_slice(&i64::from(m.retry).to_be_bytes());
    out.extend_from_slice(&m.timeout.to_be_bytes());
    out.extend_from_slice(&m.deadline.to_be_bytes());
    put_bytes(&mut out, m.unique_key.as_bytes());
    out.extend_from_slice(&m.retention.to_be_bytes());
    put_bytes(&mut out, m.group_key.as_bytes());
    put_headers(&mut out, m);
    out
}

/// The end-to-end form: what a worker's handler can see.
pub fn e2e_canonical(m: &TaskMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + m.payload.len());
    out.extend_from_slice(b"asynq-guard-e2e-v1\0");
    put_bytes(&mut out, m.r#type.as_bytes());
    put_bytes(&mut out, &m.payload);
    put_bytes(&mut out, m.id.as_bytes());
    put_bytes(&mut out, m.queue.as_bytes());
    out.extend_from_slice(&i64::from(m.retry).to_be_bytes());
    put_headers(&mut out, m);
    out
}

/// HMAC-SHA256 of `form` under `key`.
pub fn mac(key: &[u8], form: &[u8]) -> [u8; 32] {
    let mut h = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    h.update(form);
    h.finalize().into_bytes().into()
}

/// Whether `sig` is the MAC of `form` under `key`, compared in constant
/// time.
pub fn verify(key: &[u8], form: &[u8], sig: &[u8; 32]) -> bool {
    mac(key, form).ct_eq(sig).into()
}

/// A top-level protobuf field: its number and where it lies.
struct Field {
    number: u64,
    wire: u64,
    start: usize,
    end: usize,
    /// Where a length-delimited field's value starts.
    value: usize,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The top-level fields of an encoded message, or `None` if it is not
/// well-formed protobuf.
fn fields(b: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let key = varint(b, &mut pos)?;
        let number = key >> 3;
        if number == 0 {
            return None;
        }
        let value = pos;
        match key & 7 {
            0 => {
                varint(b, &mut pos)?;
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let value = pos;
                pos = pos.checked_add(len)?;
                if pos > b.len() {
                    return None;
                }
                out.push(Field {
                    number,
                    wire: 2,
                    start,
                    end: pos,
                    value,
                });
                continue;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
        if pos > b.len() {
            return None;
        }
        out.push(Field {
            number,
            wire: key & 7,
            start,
            end: pos,
            value,
        });
    }
    Some(out)
}

/// What the carrier field of a stored message holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Carried {
    /// No signature field.
    None,
    /// Exactly one, readable.
    One(Signature),
    /// The proxy's mark on a task it archived for failing its check
    /// (`quarantined:<reason>`): never valid, and already explained in
    /// the task's error.
    Quarantined,
    /// Present but unreadable, more than once, or the message is not
    /// protobuf.
    Malformed,
}

/// Splits a stored message into the message without its signature field
/// and what that field held.
pub fn take_carrier(b: &[u8]) -> (Vec<u8>, Carried) {
    let Some(fields) = fields(b) else {
        return (b.to_vec(), Carried::Malformed);
    };
    let mut found = Vec::new();
    let mut out = Vec::with_capacity(b.len());
    for f in &fields {
        if f.number == CARRIER_FIELD {
            found.push(f);
        } else {
            out.extend_from_slice(&b[f.start..f.end]);
        }
    }
    let carried = match found.as_slice() {
        [] => Carried::None,
        [f] if f.wire == 2 && b[f.value..f.end].starts_with(QUARANTINED) => Carried::Quarantined,
        [f] if f.wire == 2 => {
            Signature::parse(&b[f.value..f.end]).map_or(Carried::Malformed, Carried::One)
        }
        _ => Carried::Malformed,
    };
    (out, carried)
}

/// What the carrier field of a task archived by the proxy starts with.
pub const QUARANTINED: &[u8] = b"quarantined:";

/// `b` (without any signature field) with `sig` appended as the carrier
/// field. Protobuf readers accept fields in any order.
pub fn with_carrier(b: &[u8], sig: &Signature) -> Vec<u8> {
    with_carrier_text(b, &sig.text())
}

/// `b` (without any signature field) marked as archived by the proxy
/// for `reason`.
pub fn with_quarantine(b: &[u8], reason: &str) -> Vec<u8> {
    let text = format!("{}{reason}", String::from_utf8_lossy(QUARANTINED));
    with_carrier_text(b, &text)
}

fn with_carrier_text(b: &[u8], text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + text.len() + 4);
    out.extend_from_slice(b);
    let mut put = |mut v: u64| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    put((CARRIER_FIELD << 3) | 2);
    put(text.len() as u64);
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn msg() -> TaskMessage {
        TaskMessage {
            r#type: "email:send".into(),
            payload: b"hello".to_vec(),
            id: "id-1".into(),
            queue: "critical".into(),
            retry: 3,
            ..Default::default()
        }
    }

    #[test]
    fn carrier_round_trips_and_asynq_fields_survive() {
        let m = msg();
        let bytes = m.encode_to_vec();
        let sig = Signature {
            key_id: "k1".into(),
            mac: [7; 32],
        };
        let carried = with_carrier(&bytes, &sig);
        // asynq (like prost) ignores the unknown field.
        assert_eq!(TaskMessage::decode(&carried[..]).unwrap(), m);
        let (stripped, found) = take_carrier(&carried);
        assert_eq!(stripped, bytes);
        assert_eq!(found, Carried::One(sig.clone()));
        assert_eq!(take_carrier(&bytes).1, Carried::None);
        // Twice is not one signature.
        let twice = with_carrier(&carried, &sig);
        assert_eq!(take_carrier(&twice).1, Carried::Malformed);
        assert_eq!(take_carrier(b"\x0a\x05ab").1, Carried::Malformed);
    }

    #[test]
    fn signature_text_is_strict() {
        let sig = Signature {
            key_id: "k-2026_a".into(),
            mac: [0xab; 32],
        };
        assert_eq!(Signature::parse(sig.text().as_bytes()), Some(sig.clone()));
        let upper = sig.text().to_ascii_uppercase().replacen("V1", "v1", 1);
        assert_eq!(
            Signature::parse(upper.replace("K-2026_A", "k-2026_a").as_bytes()),
            None
        );
        assert_eq!(Signature::parse(b"v2:k:00"), None);
        assert_eq!(Signature::parse(&sig.text().as_bytes()[..70]), None);
    }

    #[test]
    fn canonical_covers_what_a_worker_may_not_change() {
        let m = msg();
        let base = canonical(&m);
        let mut worker = m.clone();
        worker.retried = 2;
        worker.error_msg = "boom".into();
        worker.last_failed_at = 99;
        worker.completed_at = 100;
        assert_eq!(canonical(&worker), base);
        let mut sig_header = m.clone();
        sig_header.headers.insert(HEADER.into(), "v1:k:00".into());
        assert_eq!(canonical(&sig_header), base);
        for change in [
            |m: &mut TaskMessage| m.r#type = "x".into(),
            |m: &mut TaskMessage| m.payload.push(0),
            |m: &mut TaskMessage| m.id = "id-2".into(),
            |m: &mut TaskMessage| m.queue = "low".into(),
            |m: &mut TaskMessage| m.retry = 4,
            |m: &mut TaskMessage| m.timeout = 1,
            |m: &mut TaskMessage| m.deadline = 1,
            |m: &mut TaskMessage| m.unique_key = "u".into(),
            |m: &mut TaskMessage| m.retention = 1,
            |m: &mut TaskMessage| m.group_key = "g".into(),
            |m: &mut TaskMessage| {
                m.headers.insert("a".into(), "b".into());
            },
        ] {
            let mut other = m.clone();
            change(&mut other);
            assert_ne!(canonical(&other), base);
        }
    }
}
