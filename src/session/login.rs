//! The login phase of a session: before a client has authenticated, the
//! proxy answers it alone, with no upstream connection open.
//!
//! Only AUTH, HELLO, QUIT and RESET mean anything here (the gate refuses
//! the rest with NOAUTH); replies are written straight to the client, in
//! order, since nothing is in flight. The phase ends when the gate says
//! the connection is someone, handing back the one command that must go
//! to Redis first (the HELLO of `HELLO 3 AUTH …`, so that Redis speaks the
//! version asked for), or when the client leaves or breaks the protocol.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Shared, Slot, bad_input, plan};
use crate::command::{self, Expect};
use crate::gate::Gate;
use crate::resp::RequestReader;

/// What a finished login phase leaves to forward first, if anything.
pub(super) type FirstCommand = Option<(Slot, Bytes)>;

/// Runs the login phase. `Some` when the client is authenticated (with
/// the command to forward first, if any); `None` when the connection is
/// over (the client left, quit or sent bad input, already answered).
pub(super) async fn authenticate<R, W>(
    client: &mut R,
    out: &mut W,
    reader: &mut RequestReader,
    gate: &mut Gate,
    shared: &Shared,
) -> Option<FirstCommand>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let cmd = match reader.next_command() {
            Ok(Some(cmd)) => cmd,
            Ok(None) => {
                match client.read_buf(reader.buffer()).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                continue;
            }
            Err(e) => {
                if let Slot::Local { reply, .. } = bad_input(&e, shared) {
                    let _ = out.write_all(&reply).await;
                }
                let _ = out.shutdown().await;
                return None;
            }
        };
        let c = command::classify(&cmd);
        shared.metrics.count_command(c.name);
        let decision = super::decide(gate, &cmd, &c, shared).await;
        let planned = plan(cmd, &c, decision, false);
        if let Some(delay) = planned.delay {
            tokio::time::sleep(delay).await;
        }
        let authenticated = gate.identity().is_some();
        if authenticated {
            reader.set_limits(shared.limits_for(true));
        }
        let reply = match (planned.slot, planned.raw) {
            (slot, Some(raw)) if authenticated => return Some(Some((slot, raw))),
            // RESET before login: nothing to reset upstream.
            (_, Some(_)) if c.expect == Expect::Reset => Bytes::from_static(b"+RESET\r\n"),
            (Slot::Local { reply, .. }, _) | (Slot::Replace { reply }, _) => reply,
            // The gate forwards nothing else before authentication.
            _ => crate::resp::error_reply("NOAUTH Authentication required."),
        };
        if write(out, &reply).await.is_err() {
            return None;
        }
        if planned.closing {
            let _ = out.shutdown().await;
            return None;
        }
        if authenticated {
            return Some(None);
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(out: &mut W, reply: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), out.write_all(reply))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
