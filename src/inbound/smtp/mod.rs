//! RFC 5321 SMTP server: strict line endings (no smuggling), SIZE enforced,
//! bounded sessions, timeouts, `421` on shutdown. The session is generic over
//! the byte stream and over a [`MailHandler`] that decides what is accepted.

pub use crate::mail::{Envelope, MailHandler, Reply};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod admission;
mod command;
mod session;
#[cfg(test)]
mod tests;
mod wire;

use admission::Admission;
pub use admission::DataBudget;
pub use command::{SmtpCommand, parse_command};
pub use session::session;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with CRLF.
const MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with CRLF.
const MAX_TEXT_LINE: usize = 1000;
/// Unrecognised commands tolerated before the session is closed.
const MAX_ERRORS: usize = 10;

/// Refusals a single session reports to [`MailHandler::refused`]: a client
/// sending nothing but bad lines leaves a few audit records, not hundreds.
pub const MAX_AUDITED: u8 = 3;

/// How often connections refused for being over `max_sessions` are
/// reported (as one record with their count).
const OVER_CAPACITY_REPORT: Duration = Duration::from_secs(60);

/// Limits and names for the server.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_sessions: usize,
    pub max_recipients: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// The longest a whole session may last, so slow clients cannot hold
    /// every session slot for ever.
    pub max_session: Duration,
    /// Message bytes held by all sessions together, from the first byte of
    /// DATA until the handler has answered.
    pub data_budget: Arc<DataBudget>,
    /// Sessions one untrusted address may hold at once.
    pub max_sessions_per_peer: usize,
    /// Addresses (the local MTA, the PST's submission hosts) that are not
    /// held to `max_sessions_per_peer` and have sessions of their own.
    pub trusted_peers: Vec<std::net::IpAddr>,
    /// Of `max_sessions`, how many only trusted peers may use.
    pub reserved_sessions: usize,
}

/// Accepts connections until `shutdown`, at most `max_sessions` at once
/// and at most `max_sessions_per_peer` from one untrusted address (see
/// `Admission`); a connection over a bound is told `421` and closed.
pub async fn serve<H: MailHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: Arc<SmtpSettings>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admission = Admission::new(&settings);
    // Connections refused for capacity since the last report, and when.
    let mut over_capacity = 0u64;
    let mut reported: Option<Instant> = None;
    // Refusals counted since the last record are written when its minute
    // is up (not only at the next refusal) and at shutdown.
    let summary = |count: u64| {
        Reply::new(
            421,
            "4.3.2",
            format!(
                "too many connections: {count} refused since the last such record (max_sessions {}, {} per address)",
                settings.max_sessions, settings.max_sessions_per_peer
            ),
        )
    };
    loop {
        let report_due = async {
            match reported {
                Some(at) if over_capacity > 0 => {
                    tokio::time::sleep_until(at + OVER_CAPACITY_REPORT).await
                }
                _ => std::future::pending().await,
            }
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = report_due => {
                handler.refused("(several)", None, &summary(over_capacity));
                over_capacity = 0;
                reported = Some(Instant::now());
                continue;
            }
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = match admission.admit(peer.ip(), &settings) {
            Ok(admitted) => admitted,
            Err(reply) => {
                tracing::warn!(%peer, reply = %reply.text, "SMTP connection refused");
                over_capacity += 1;
                if reported.is_none_or(|at| at.elapsed() >= OVER_CAPACITY_REPORT) {
                    handler.refused(&peer.to_string(), None, &summary(over_capacity));
                    over_capacity = 0;
                    reported = Some(Instant::now());
                }
                tracker.spawn(async move {
                    let _ = stream.write_all(reply.to_wire().as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
                continue;
            }
        };
        let (handler, settings, shutdown) = (handler.clone(), settings.clone(), shutdown.clone());
        tracker.spawn(async move {
            bounded_session(stream, peer.to_string(), &*handler, &settings, &shutdown).await;
            drop(admitted);
        });
    }
    if over_capacity > 0 {
        handler.refused("(several)", None, &summary(over_capacity));
    }
}

/// How long a session may go on after shutdown began (e.g. stuck writing
/// to a client that does not read) before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs a session with hard bounds that hold even while it is blocked
/// writing to a client that never reads: `max_session` plus a tenth, and
/// `SHUTDOWN_GRACE` after shutdown. The session's own deadline (421) comes
/// first whenever the client lets it be written.
pub async fn bounded_session<S, H>(
    stream: S,
    peer: String,
    handler: &H,
    settings: &SmtpSettings,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MailHandler,
{
    let hard = Instant::now() + settings.max_session + settings.max_session / 10;
    let after_shutdown = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = session(stream, peer.clone(), handler, settings, shutdown) => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
            }
        }
        _ = tokio::time::sleep_until(hard) => tracing::warn!(%peer, "SMTP session passed its hard deadline; dropped"),
        _ = after_shutdown => tracing::warn!(%peer, "SMTP session still busy after shutdown; dropped"),
    }
}
