//! The decision step between parsing and forwarding, one per connection.
//!
//! For every command the [`Gate`] decides: forward it, forward a rewritten
//! form, or answer it from the proxy. It owns who the connection is
//! (authentication by AUTH, HELLO AUTH and client certificate), the
//! transaction state (a command refused inside MULTI makes EXEC fail, as
//! in Redis), and refusals that hold whatever the policy says (commands
//! the pipe cannot carry, commands that would reveal the upstream). It
//! reads [`crate::auth`] and writes audit events and auth metrics; it
//! never touches a socket.
//!
//! Client AUTH is never forwarded: the upstream connection is logged in
//! with the proxy's own credentials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::Digest;
use tracing::info;

use crate::auth::{CertIdentity, Identity, PasswordCheck};
use crate::command::{self, Classified};
use crate::conceal;
use crate::resp::{Command, error_reply};
use crate::session::Shared;
use crate::upstream;
use authorize::Refused;
pub use authorize::{Outcomes, Pending, QueueOutcome};
pub use integrity::StoredCheck;
use repeats::Repeats;

mod authorize;
mod integrity;
mod repeats;

/// The target of audit events.
pub const AUDIT: &str = "asynq_guard::audit";

const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOPROTO: &str = "NOPROTO unsupported protocol version";
const RESP2_ONLY: &str =
    "ERR unknown command 'HELLO 3': this asynq-guard listener speaks RESP2 only, log in with AUTH";

/// A command name as errors show it: printable ASCII, at most 64 bytes.
fn shown_bytes(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(64)])
        .chars()
        .map(|ch| if ch.is_ascii_graphic() { ch } else { '?' })
        .collect()
}

/// What the gate decides for one command.
#[derive(Debug)]
pub enum Decision {
    /// Send the command to Redis as it is.
    Forward,
    /// Send this rewritten command instead; its reply goes to the client.
    ForwardAs(Bytes),
    /// Send `raw` to Redis instead and give the client `reply` for it.
    Substitute { raw: Bytes, reply: Bytes },
    /// Answer the client without Redis.
    Reply(Bytes),
    /// Answer the client without Redis after a delay (failed logins).
    ReplyAfter(Duration, Bytes),
    /// Answer the client, then close the connection.
    ReplyAndClose(Bytes),
    /// Take tokens from shared rate limits in Redis and count a capped
    /// queue first, then decide with [`Gate::settle`].
    Admit(Box<Pending>),
    /// Forward (as `raw` when set), holding a capped queue's place until
    /// the reply arrives, or checking the task messages of the reply.
    ForwardWith(Box<Forwarding>),
    /// Read the stored task a worker writes back first, then decide
    /// with [`Gate::settle_stored`].
    Verify(Box<StoredCheck>),
}

/// A forwarded command's extra duties.
#[derive(Debug, Default)]
pub struct Forwarding {
    pub raw: Option<Bytes>,
    pub held: Option<crate::admission::Reservation>,
    pub check: Option<Box<crate::integrity::replies::ReplyCheck>>,
}

impl Decision {
    /// Forwarding `raw` (or the command itself), with these duties.
    pub(crate) fn forward(
        raw: Option<Bytes>,
        held: Option<crate::admission::Reservation>,
        check: Option<Box<crate::integrity::replies::ReplyCheck>>,
    ) -> Decision {
        if held.is_none() && check.is_none() {
            return raw.map_or(Decision::Forward, Decision::ForwardAs);
        }
        Decision::ForwardWith(Box::new(Forwarding { raw, held, check }))
    }
}

impl Decision {
    fn refused(&self) -> bool {
        matches!(self, Decision::Reply(_) | Decision::ReplyAfter(..))
    }
}

/// The identity name tried, as logs and the throttle see it: a defined
/// identity by its name; any other name by a short hash, because a user
/// name slot sometimes holds a secret typed in the wrong place.
fn shown_name(user: &[u8], shared: &Shared) -> String {
    match std::str::from_utf8(user) {
        Ok(name) if shared.identities.get(name).is_some() => name.to_string(),
        _ => format!("unknown:{}", &crate::auth::hash_secret(user)[..12]),
    }
}

/// A connection's counter of one (operation, verdict) pair.
type Counted = ((&'static str, &'static str), prometheus::IntCounter);

/// What the gate knows of the connection it guards.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub listener: String,
    /// Whether `HELLO 3` is accepted on this listener.
    pub resp3: bool,
    pub cert: CertIdentity,
    /// The verified client certificate, matched again to the identities
    /// of each reloaded policy.
    pub cert_der: Option<rustls::pki_types::CertificateDer<'static>>,
}

/// One connection's decision state.
#[derive(Debug)]
pub struct Gate {
    conn: Conn,
    identity: Option<Arc<Identity>>,
    /// SHA-256 of the secret the identity logged in with, checked again
    /// against each reloaded policy.
    secret_hash: Option<[u8; 32]>,
    /// The policy generation the identity was last checked against.
    generation: u64,
    /// The asynq operation of the command being decided, for metrics.
    op: &'static str,
    /// This connection's command counters, by operation and verdict, for
    /// the identity named first.
    counted: (String, Vec<Counted>),
    in_multi: bool,
    multi_refused: bool,
    /// Which refusals the audit log has been told about.
    repeats: Repeats,
    /// The last admitted enqueue sent as EVALSHA: its script and
    /// arguments (see `authorize::noscript_retry`).
    last_admitted: Option<(&'static str, Vec<Bytes>)>,
}

impl Gate {
    /// A gate for a new connection: authenticated from the start only if
    /// its client certificate proves an identity that needs no secret.
    pub fn new(conn: Conn) -> Self {
        let mut gate = Gate {
            conn: conn.clone(),
            identity: None,
            secret_hash: None,
            generation: 0,
            op: "none",
            counted: (String::new(), Vec::new()),
            in_multi: false,
            multi_refused: false,
            repeats: Repeats::new(conn.peer, conn.listener.clone()),
            last_admitted: None,
        };
        gate.identity = gate.certificate_login();
        gate
    }

    fn certificate_login(&self) -> Option<Arc<Identity>> {
        match &self.conn.cert {
            CertIdentity::Identity(i) if !i.needs_secret() => Some(Arc::clone(i)),
            _ => None,
        }
    }

    /// Whether a transaction is open (commands are being queued).
    pub fn in_multi(&self) -> bool {
        self.in_multi
    }

    /// The identity the connection acts as, once authenticated.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// Checks the connection's identity against the policy of `shared`
    /// when it is newer than the one it logged in under: an identity
    /// removed from the policy, a secret no longer listed or a client
    /// certificate that no longer matches ends the connection; otherwise
    /// the identity's new grants apply from the next command on.
    ///
    /// # Errors
    ///
    /// Why the connection may not go on, for the client and the audit log.
    pub fn recheck(&mut self, shared: &Shared) -> Result<(), String> {
        if self.generation == shared.generation {
            return Ok(());
        }
        self.generation = shared.generation;
        if let Some(der) = &self.conn.cert_der {
            self.conn.cert = shared.identities.for_certificate(der);
        }
        let Some(current) = self.identity.as_ref() else {
            return Ok(());
        };
        let name = current.name.clone();
        let Some(new) = shared.identities.get(&name) else {
            return Err(format!(
                "identity '{name}' is no longer in the policy (reloaded)"
            ));
        };
        let shows_cert = matches!(&self.conn.cert, CertIdentity::Identity(c) if c.name == name);
        if new.cert.is_some() && !shows_cert {
            return Err(format!(
                "identity '{name}' now needs a client certificate this connection did not show (policy reloaded)"
            ));
        }
        if new.needs_secret() && !self.secret_hash.is_some_and(|h| new.accepts_hash(&h)) {
            return Err(format!(
                "the secret identity '{name}' logged in with is no longer accepted (policy reloaded)"
            ));
        }
        self.identity = Some(Arc::clone(new));
        Ok(())
    }

    /// Counts and audits a connection closed by [`Gate::recheck`].
    pub fn revoked(&self, shared: &Shared, why: &str) {
        let name = self.identity.as_ref().map_or("", |i| i.name.as_str());
        shared
            .metrics
            .refusals
            .with_label_values(&[name, "none", "revoked"])
            .inc();
        info!(target: AUDIT, event = "revoked", identity = name, why, client.addr = %self.conn.peer, listener = %self.conn.listener);
    }

    /// Counts the final decision on an authenticated identity's command
    /// in `asynq_guard_decisions_total`.
    pub fn count(&mut self, d: &Decision, shared: &Shared) {
        let Some(identity) = &self.identity else {
            return;
        };
        let verdict = match d {
            Decision::Reply(r) | Decision::ReplyAfter(_, r) | Decision::ReplyAndClose(r) => {
                if r.first() == Some(&b'-') {
                    "refused"
                } else {
                    "answered"
                }
            }
            _ => "forwarded",
        };
        if self.counted.0 != identity.name {
            self.counted = (identity.name.clone(), Vec::new());
        }
        let key = (self.op, verdict);
        if let Some((_, c)) = self.counted.1.iter().find(|(k, _)| *k == key) {
            c.inc();
            return;
        }
        let c = shared
            .metrics
            .decisions
            .with_label_values(&[&identity.name, self.op, verdict]);
        c.inc();
        self.counted.1.push((key, c));
    }

    /// Decides what to do with `cmd`.
    pub fn decide(&mut self, cmd: &Command, c: &Classified, shared: &Shared) -> Decision {
        self.op = "none";
        if let Err(why) = self.recheck(shared) {
            self.revoked(shared, &why);
            return Decision::ReplyAndClose(error_reply(&format!(
                "NOPERM asynq-guard: {why}; closing the connection"
            )));
        }
        let decision = self.check(cmd, c, shared);
        if self.in_multi && decision.refused() {
            self.multi_refused = true;
        }
        self.track_state(cmd, c, decision)
    }

    fn check(&mut self, cmd: &Command, c: &Classified, shared: &Shared) -> Decision {
        match c.name {
            Some("quit") => return Decision::ReplyAndClose(Bytes::from_static(b"+OK\r\n")),
            Some("auth" | "hello") if self.in_multi => {
                return Decision::Reply(error_reply(
                    "ERR asynq-guard: AUTH and HELLO are not available inside MULTI",
                ));
            }
            Some("auth") => return self.auth(cmd, shared),
            Some("hello") => return self.hello(cmd, shared),
            Some("reset") => return Decision::Forward,
            _ => {}
        }
        let Some(identity) = self.identity.clone() else {
            return Decision::Reply(error_reply(&self.noauth_text()));
        };
        let (reason, text) = if let Some(why) = command::unsupported(cmd, c) {
            ("unsupported", format!("ERR {why}"))
        } else if let Some(text) = conceal::refusal(cmd, c.name) {
            ("conceal", text)
        } else {
            let verdict = match self.authorize(cmd, c, shared) {
                Err(text) => return Decision::Reply(error_reply(&text)),
                Ok(verdict) => verdict,
            };
            if self.in_multi && conceal::filters_reply(c.name) {
                // Its reply would come back inside EXEC's, unfiltered.
                (
                    "conceal",
                    "NOPERM asynq-guard: INFO is refused inside MULTI, its reply could not be filtered"
                        .to_string(),
                )
            } else if c.pubsub && self.in_multi {
                (
                    "unsupported",
                    "ERR asynq-guard: subscribe commands are not available inside MULTI"
                        .to_string(),
                )
            } else if let Some(pending) = verdict.shared {
                return Decision::Admit(pending);
            } else if let Some(stored) = verdict.stored {
                return Decision::Verify(stored);
            } else {
                return Decision::forward(verdict.rewrite, None, verdict.check);
            }
        };
        let shown = c
            .name
            .map_or_else(|| shown_bytes(&cmd.args[0]), str::to_ascii_uppercase);
        self.refused(
            shared,
            &Refused {
                identity: &identity.name,
                op: "none",
                reason,
                what: &shown,
                ..Refused::default()
            },
        );
        Decision::Reply(error_reply(&text))
    }

    /// The NOAUTH text, saying why when a client certificate is the cause.
    fn noauth_text(&self) -> String {
        match &self.conn.cert {
            CertIdentity::NoMatch(shown) => {
                format!("NOAUTH client certificate ({shown}) matches no identity")
            }
            CertIdentity::Ambiguous | CertIdentity::Unreadable => {
                "NOAUTH client certificate does not identify one identity".into()
            }
            _ => NOAUTH.into(),
        }
    }

    /// The NOAUTH text for HELLO without AUTH.
    fn noauth_hello_text(&self) -> String {
        match &self.conn.cert {
            CertIdentity::NoMatch(_) | CertIdentity::Ambiguous | CertIdentity::Unreadable => {
                self.noauth_text()
            }
            _ => NOAUTH_HELLO.into(),
        }
    }

    /// `AUTH [user] secret`, answered by the proxy.
    fn auth(&mut self, cmd: &Command, shared: &Shared) -> Decision {
        let (user, secret): (&[u8], &[u8]) = match cmd.args.len() {
            2 => (b"default", &cmd.args[1]),
            3 => (&cmd.args[1], &cmd.args[2]),
            1 => {
                return Decision::Reply(error_reply(
                    "ERR wrong number of arguments for 'auth' command",
                ));
            }
            _ => return Decision::Reply(error_reply("ERR syntax error")),
        };
        match self.login(user, secret, shared) {
            Ok(()) => Decision::Reply(Bytes::from_static(b"+OK\r\n")),
            Err(d) => d,
        }
    }

    /// `HELLO [ver [AUTH user secret] [SETNAME name]]`: authentication is
    /// done here; Redis gets `HELLO ver [SETNAME name]` so that it speaks
    /// the version the client asked for.
    fn hello(&mut self, cmd: &Command, shared: &Shared) -> Decision {
        if cmd.args.len() == 1 {
            return match self.identity {
                Some(_) => Decision::Forward,
                None => Decision::Reply(error_reply(&self.noauth_hello_text())),
            };
        }
        let version = match &cmd.args[1][..] {
            b"2" => &b"2"[..],
            b"3" if self.conn.resp3 => b"3",
            // go-redis before 9.5 falls back to RESP2 and AUTH only on an
            // "unknown command" error; any other error would be fatal.
            b"3" => return Decision::Reply(error_reply(RESP2_ONLY)),
            v if crate::resp::parse_int(v).is_ok() => {
                return Decision::Reply(error_reply(NOPROTO));
            }
            _ => {
                return Decision::Reply(error_reply(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
        };
        let mut login = None;
        let mut setname = None;
        let mut i = 2;
        while i < cmd.args.len() {
            let more = cmd.args.len() - i - 1;
            if cmd.arg_is(i, "auth") && more >= 2 {
                login = Some((&cmd.args[i + 1], &cmd.args[i + 2]));
                i += 3;
            } else if cmd.arg_is(i, "setname") && more >= 1 {
                setname = Some(&cmd.args[i + 1]);
                i += 2;
            } else {
                let option = String::from_utf8_lossy(&cmd.args[i]);
                return Decision::Reply(error_reply(&format!(
                    "ERR Syntax error in HELLO option '{option}'"
                )));
            }
        }
        match login {
            Some((user, secret)) => {
                if let Err(d) = self.login(user, secret, shared) {
                    return d;
                }
            }
            None if self.identity.is_none() => {
                return Decision::Reply(error_reply(&self.noauth_hello_text()));
            }
            None => {}
        }
        let mut args: Vec<&[u8]> = vec![b"HELLO", version];
        if let Some(name) = setname {
            args.extend([&b"SETNAME"[..], &name[..]]);
        }
        Decision::ForwardAs(upstream::encode_command(&args))
    }

    /// Checks a user and secret; on success the connection becomes that
    /// identity. On failure nothing changes and the caller gets the reply.
    fn login(&mut self, user: &[u8], secret: &[u8], shared: &Shared) -> Result<(), Decision> {
        let ip = self.conn.peer.ip();
        let tried = shown_name(user, shared);
        if let Some(wait) = shared.throttle.blocked(ip, &tried) {
            self.audit_failure(shared, &tried, "throttled");
            return Err(Decision::Reply(error_reply(&format!(
                "ERR asynq-guard: too many failed authentications from this address, retry in {}s",
                wait.as_secs().max(1)
            ))));
        }
        let outcome = match self.certificate_refusal(user) {
            Some(refusal) => Err(refusal),
            None => self.check_secret(user, secret, shared),
        };
        match outcome {
            Ok(identity) => {
                shared
                    .metrics
                    .auth_attempts
                    .with_label_values(&[&self.conn.listener, "ok"])
                    .inc();
                info!(target: AUDIT, event = "auth", result = "ok", identity = identity.name.as_str(), client.addr = %self.conn.peer, listener = %self.conn.listener);
                if self.identity.is_none() {
                    // Later identity switches are in the audit events;
                    // recording again would repeat the field in the span.
                    tracing::Span::current().record("identity", identity.name.as_str());
                }
                self.secret_hash = identity
                    .needs_secret()
                    .then(|| sha2::Sha256::digest(secret).into());
                self.identity = Some(identity);
                Ok(())
            }
            Err((reason, text)) => {
                shared.throttle.record_failure(ip, &tried);
                self.audit_failure(shared, &tried, reason);
                Err(Decision::ReplyAfter(
                    shared.throttle.settings.failure_delay,
                    error_reply(&text),
                ))
            }
        }
    }

    /// On a mutual-TLS listener the certificate says who the connection
    /// is: AUTH may only name that identity. Decided before the secret is
    /// looked at, so the answer tells nothing about the secret.
    fn certificate_refusal(&self, user: &[u8]) -> Option<(&'static str, String)> {
        match &self.conn.cert {
            CertIdentity::None => None,
            CertIdentity::Identity(c) if c.name.as_bytes() == user => None,
            CertIdentity::Identity(c) => Some((
                "certificate_mismatch",
                format!(
                    "WRONGPASS the client certificate is for identity '{}', not the one AUTH names",
                    c.name
                ),
            )),
            _ => Some((
                "certificate_mismatch",
                self.noauth_text().replacen("NOAUTH", "WRONGPASS", 1),
            )),
        }
    }

    /// Checks the secret. An identity that also needs its certificate gets
    /// the same answer without one as with a wrong secret, so a secret
    /// cannot be tried out without the certificate.
    fn check_secret(
        &self,
        user: &[u8],
        secret: &[u8],
        shared: &Shared,
    ) -> Result<Arc<Identity>, (&'static str, String)> {
        let has_cert =
            |name: &str| matches!(&self.conn.cert, CertIdentity::Identity(c) if c.name == name);
        match shared.identities.check_password(user, secret) {
            PasswordCheck::Ok(identity) if identity.cert.is_some() && !has_cert(&identity.name) => {
                Err(("certificate_required", WRONGPASS.into()))
            }
            PasswordCheck::Ok(identity) => Ok(identity),
            PasswordCheck::NoSecret => match &self.conn.cert {
                CertIdentity::Identity(i) if i.name.as_bytes() == user => Ok(Arc::clone(i)),
                _ => Err(("wrong_secret", WRONGPASS.into())),
            },
            PasswordCheck::UnknownIdentity => Err(("unknown_identity", WRONGPASS.into())),
            PasswordCheck::WrongSecret => Err(("wrong_secret", WRONGPASS.into())),
        }
    }

    fn audit_failure(&self, shared: &Shared, tried: &str, reason: &'static str) {
        shared
            .metrics
            .auth_attempts
            .with_label_values(&[&self.conn.listener, reason])
            .inc();
        info!(target: AUDIT, event = "auth", result = "failure", reason, identity_tried = %tried, client.addr = %self.conn.peer, listener = %self.conn.listener);
    }

    /// Keeps the transaction and identity state in step with what Redis
    /// will do with the forwarded command.
    fn track_state(&mut self, cmd: &Command, c: &Classified, d: Decision) -> Decision {
        if !matches!(d, Decision::Forward) {
            return d;
        }
        let bare = cmd.args.len() == 1;
        match c.name {
            Some("multi") if bare && !self.in_multi => {
                self.in_multi = true;
                self.multi_refused = false;
            }
            Some("exec") if bare && self.in_multi => {
                self.in_multi = false;
                if self.multi_refused {
                    return Decision::Substitute {
                        raw: upstream::encode_command(&[b"DISCARD"]),
                        reply: error_reply(
                            "EXECABORT Transaction discarded because of previous errors.",
                        ),
                    };
                }
            }
            Some("discard") if bare => self.in_multi = false,
            Some("reset") => {
                // RESET logs the connection out, as in Redis; a
                // certificate-only identity is the connection itself.
                self.in_multi = false;
                self.identity = self.certificate_login();
                self.secret_hash = None;
            }
            _ => {}
        }
        d
    }
}
