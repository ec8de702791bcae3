//! Identities and how a connection proves one.
//!
//! An identity from the policy file is proved by a secret (stored only as
//! its SHA-256, compared in constant time), by a client certificate (its
//! subject CN or a DNS/URI SAN), or by both. This module owns the
//! identity table and the per-address throttle on failed attempts; it
//! reads certificates handed to it by the listener and never sees Redis.
//! Nothing here logs, stores or returns a secret.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::policy::Grant;

/// What a client certificate must show to prove an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertMatch {
    /// The subject common name equals this.
    Cn(String),
    /// A DNS subject alternative name equals this.
    Dns(String),
    /// A URI subject alternative name equals this (for example SPIFFE).
    Uri(String),
}

impl CertMatch {
    /// Parses `cn:NAME`, `dns:NAME` or `uri:URI`.
    pub fn parse(text: &str) -> Option<CertMatch> {
        let (kind, value) = text.split_once(':')?;
        if value.is_empty() {
            return None;
        }
        match kind {
            "cn" => Some(CertMatch::Cn(value.into())),
            "dns" => Some(CertMatch::Dns(value.into())),
            "uri" => Some(CertMatch::Uri(value.into())),
            _ => None,
        }
    }
}

impl std::fmt::Display for CertMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertMatch::Cn(v) => write!(f, "cn:{v}"),
            CertMatch::Dns(v) => write!(f, "dns:{v}"),
            CertMatch::Uri(v) => write!(f, "uri:{v}"),
        }
    }
}

/// One identity of the policy.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    /// SHA-256 of each accepted secret; several so secrets can rotate.
    secret_hashes: Vec<[u8; 32]>,
    pub cert: Option<CertMatch>,
    /// Holds a `raw` grant: may send any command and run any script.
    pub raw: bool,
    /// What it may do with asynq; see [`crate::policy`].
    pub grants: Vec<Grant>,
}

impl Identity {
    pub fn new(name: String, secret_hashes: Vec<[u8; 32]>, cert: Option<CertMatch>) -> Self {
        Identity {
            name,
            secret_hashes,
            cert,
            raw: false,
            grants: Vec::new(),
        }
    }

    /// Whether the identity is proved by a secret.
    pub fn needs_secret(&self) -> bool {
        !self.secret_hashes.is_empty()
    }

    /// Whether `secret` is one of the identity's secrets. Every stored
    /// hash is compared, in constant time, whatever the outcome.
    fn secret_matches(&self, secret: &[u8]) -> bool {
        self.accepts_hash(&Sha256::digest(secret).into())
    }

    /// Whether `digest` is the SHA-256 of one of the identity's secrets
    /// (compared as [`Identity::secret_matches`] does): a connection
    /// logged in with a secret keeps its digest to be checked again
    /// when the policy is reloaded.
    pub fn accepts_hash(&self, digest: &[u8; 32]) -> bool {
        let mut found = subtle::Choice::from(0);
        for stored in &self.secret_hashes {
            found |= stored.ct_eq(digest);
        }
        found.into()
    }
}

/// The hex SHA-256 of a secret, as the policy file stores it.
pub fn hash_secret(secret: &[u8]) -> String {
    Sha256::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decodes a 64-digit hex SHA-256.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The identity table.
#[derive(Debug, Default)]
pub struct Identities {
    by_name: HashMap<String, Arc<Identity>>,
    /// Hashed against when a name is unknown, so that an unknown name
    /// costs the same time as a wrong secret.
    decoy: Option<Arc<Identity>>,
}

/// What a password check found.
#[derive(Debug)]
pub enum PasswordCheck {
    Ok(Arc<Identity>),
    UnknownIdentity,
    WrongSecret,
    /// The identity exists but is proved by certificate only.
    NoSecret,
}

impl Identities {
    pub fn new(list: Vec<Identity>) -> Self {
        let by_name = list
            .into_iter()
            .map(|i| (i.name.clone(), Arc::new(i)))
            .collect();
        let decoy = Some(Arc::new(Identity::new(
            String::new(),
            vec![[0u8; 32]],
            None,
        )));
        Identities { by_name, decoy }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Identity>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks `user`/`secret` against the table.
    pub fn check_password(&self, user: &[u8], secret: &[u8]) -> PasswordCheck {
        let found = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.by_name.get(u));
        let Some(identity) = found else {
            if let Some(decoy) = &self.decoy {
                let _ = decoy.secret_matches(secret);
            }
            return PasswordCheck::UnknownIdentity;
        };
        if !identity.needs_secret() {
            return PasswordCheck::NoSecret;
        }
        if identity.secret_matches(secret) {
            PasswordCheck::Ok(Arc::clone(identity))
        } else {
            PasswordCheck::WrongSecret
        }
    }

    /// The identity a verified client certificate proves, if any.
    pub fn for_certificate(&self, cert: &CertificateDer<'_>) -> CertIdentity {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return CertIdentity::Unreadable;
        };
        let mut shown = Vec::new();
        for cn in parsed.subject().iter_common_name() {
            if let Ok(v) = cn.as_str() {
                shown.push(CertMatch::Cn(v.to_string()));
            }
        }
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(v) => {
                        shown.push(CertMatch::Dns(v.to_string()))
                    }
                    x509_parser::extensions::GeneralName::URI(v) => {
                        shown.push(CertMatch::Uri(v.to_string()))
                    }
                    _ => {}
                }
            }
        }
        let mut matches = self
            .by_name
            .values()
            .filter(|i| i.cert.as_ref().is_some_and(|m| shown.contains(m)));
        match (matches.next(), matches.next()) {
            (Some(one), None) => CertIdentity::Identity(Arc::clone(one)),
            (Some(_), Some(_)) => CertIdentity::Ambiguous,
            (None, _) => CertIdentity::NoMatch(
                shown
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "no subject name".into()),
            ),
        }
    }
}

/// What a client certificate says about the connection.
#[derive(Debug, Clone)]
pub enum CertIdentity {
    /// No client certificate was asked for (plain or server-only TLS).
    None,
    Identity(Arc<Identity>),
    /// Verified, but matches no identity; holds the first name it shows.
    NoMatch(String),
    /// Matches more than one identity (validation prevents this).
    Ambiguous,
    Unreadable,
}

/// Settings of the failed-authentication throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failed attempts allowed per source address per minute; further
    /// attempts in that minute are refused without being checked.
    pub max_failures_per_minute: u32,
    /// Each failed attempt is answered after this delay.
    pub failure_delay: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            max_failures_per_minute: 10,
            failure_delay: Duration::from_millis(200),
        }
    }
}

/// Most source addresses remembered; beyond it, expired windows are
/// dropped first and then the table is cleared (refusing less, never
/// growing without bound).
const MAX_TRACKED: usize = 100_000;

const WINDOW: Duration = Duration::from_secs(60);

/// Counts failed authentications per source address and identity name
/// in fixed one-minute windows. Keyed by both, so that one client
/// guessing (or misconfigured) for one identity does not lock out the
/// other identities of programs on the same host, as every sidecar
/// client shares 127.0.0.1. A plain table rather than `governor`: only
/// failures may be counted, and the check before an attempt must not
/// consume anything.
#[derive(Debug)]
pub struct Throttle {
    pub settings: ThrottleSettings,
    windows: Mutex<HashMap<(IpAddr, String), (Instant, u32)>>,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        Throttle {
            settings,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// If `ip` is over its limit for identity `name`: how long until it
    /// may try again.
    pub fn blocked(&self, ip: IpAddr, name: &str) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.get(&(ip, name.to_string()))?;
        let elapsed = start.elapsed();
        (elapsed < WINDOW && *count >= self.settings.max_failures_per_minute)
            .then(|| WINDOW - elapsed)
    }

    /// Records one failed attempt from `ip` for identity `name`.
    pub fn record_failure(&self, ip: IpAddr, name: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if windows.len() >= MAX_TRACKED {
                windows.clear();
            }
        }
        let entry = windows
            .entry((ip, name.to_string()))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Identities {
        Identities::new(vec![
            Identity::new(
                "app".into(),
                vec![
                    parse_hash(&hash_secret(b"old")).unwrap(),
                    parse_hash(&hash_secret(b"new")).unwrap(),
                ],
                None,
            ),
            Identity::new("certonly".into(), vec![], Some(CertMatch::Cn("w".into()))),
        ])
    }

    #[test]
    fn hash_round_trips_and_matches_sha256() {
        assert_eq!(
            hash_secret(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(parse_hash("zz").is_none());
        assert!(parse_hash(&"g".repeat(64)).is_none());
        assert!(parse_hash(&hash_secret(b"x").to_uppercase()).is_some());
    }

    #[test]
    fn rotated_secrets_are_both_accepted() {
        let t = table();
        assert!(matches!(
            t.check_password(b"app", b"old"),
            PasswordCheck::Ok(_)
        ));
        assert!(matches!(
            t.check_password(b"app", b"new"),
            PasswordCheck::Ok(_)
        ));
        assert!(matches!(
            t.check_password(b"app", b"other"),
            PasswordCheck::WrongSecret
        ));
        assert!(matches!(
            t.check_password(b"nobody", b"new"),
            PasswordCheck::UnknownIdentity
        ));
        assert!(matches!(
            t.check_password(b"certonly", b""),
            PasswordCheck::NoSecret
        ));
    }

    #[test]
    fn cert_match_syntax() {
        assert_eq!(CertMatch::parse("cn:a"), Some(CertMatch::Cn("a".into())));
        assert_eq!(
            CertMatch::parse("uri:spiffe://x/y"),
            Some(CertMatch::Uri("spiffe://x/y".into()))
        );
        assert_eq!(CertMatch::parse("cn:"), None);
        assert_eq!(CertMatch::parse("email:a"), None);
    }

    #[test]
    fn throttle_blocks_after_the_limit_and_only_counts_failures() {
        let t = Throttle::new(ThrottleSettings {
            max_failures_per_minute: 3,
            failure_delay: Duration::ZERO,
        });
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        for _ in 0..3 {
            assert!(t.blocked(ip, "app").is_none());
            t.record_failure(ip, "app");
        }
        assert!(t.blocked(ip, "app").is_some());
        assert!(t.blocked(ip, "worker").is_none());
        assert!(t.blocked(other, "app").is_none());
    }
}
