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

/// The refusals of one session, capped at [`MAX_AUDITED`].
struct SessionAudit<'a, H> {
    handler: &'a H,
    peer: &'a str,
    left: std::sync::atomic::AtomicU8,
}

impl<H: MailHandler> SessionAudit<'_, H> {
    fn refused(&self, mail_from: Option<&str>, reply: &Reply) {
        use std::sync::atomic::Ordering::Relaxed;
        if self
            .left
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            self.handler.refused(self.peer, mail_from, reply);
        }
    }
}

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

/// Who may open a session: every peer shares `max_sessions -
/// reserved_sessions` slots, at most `max_sessions_per_peer` each; trusted
/// peers are not counted per address and may also use the reserved slots.
/// So no single address, nor a crowd of untrusted ones, can lock the PST's
/// MTA out.
struct Admission {
    shared: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    per_peer: PeerCounts,
}

/// Sessions open per untrusted address.
type PeerCounts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// A session's place; given back on drop.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    peer: Option<(std::net::IpAddr, PeerCounts)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((ip, counts)) = &self.peer {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    fn new(settings: &SmtpSettings) -> Admission {
        let reserved = settings.reserved_sessions.min(settings.max_sessions);
        Admission {
            shared: Arc::new(Semaphore::new(settings.max_sessions - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            per_peer: Arc::default(),
        }
    }

    /// A place for `ip`, or why not.
    fn admit(&self, ip: std::net::IpAddr, settings: &SmtpSettings) -> Result<Admitted, Reply> {
        let full = || Reply::new(421, "4.3.2", "too many connections, try again later");
        if super::is_trusted(&settings.trusted_peers, ip) {
            let permit = self
                .shared
                .clone()
                .try_acquire_owned()
                .or_else(|_| self.reserved.clone().try_acquire_owned())
                .map_err(|_| full())?;
            return Ok(Admitted {
                _permit: permit,
                peer: None,
            });
        }
        // IPv6 peers are counted by /64, IPv4-mapped ones as IPv4.
        let ip = super::peer_key(ip);
        let mut counts = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.get(&ip).copied().unwrap_or(0);
        if n >= settings.max_sessions_per_peer {
            return Err(Reply::new(
                421,
                "4.7.0",
                format!(
                    "too many connections from your address (at most {}); try again later",
                    settings.max_sessions_per_peer
                ),
            ));
        }
        let permit = self
            .shared
            .clone()
            .try_acquire_owned()
            .map_err(|_| full())?;
        counts.insert(ip, n + 1);
        Ok(Admitted {
            _permit: permit,
            peer: Some((ip, self.per_peer.clone())),
        })
    }
}

/// A cap on the message bytes all sessions hold at once: 32 sessions each
/// sending 24 MiB reached 518 MB RSS. A DATA that starts while the budget
/// is spent, or whose bytes would overspend it, is answered `452 4.3.1`.
/// The last `reserve` bytes are for trusted peers only, so junk from
/// elsewhere cannot spend the budget the PST's MTA needs.
#[derive(Debug)]
pub struct DataBudget {
    limit: usize,
    reserve: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl DataBudget {
    /// `limit` bytes in all, of which `reserve` only trusted peers may use.
    pub fn new(limit: usize, reserve: usize) -> Arc<DataBudget> {
        Arc::new(DataBudget {
            limit,
            reserve: reserve.min(limit),
            used: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cap(&self, trusted: bool) -> usize {
        if trusted {
            self.limit
        } else {
            self.limit - self.reserve
        }
    }

    fn spent(&self, trusted: bool) -> bool {
        self.used() >= self.cap(trusted)
    }

    /// Takes `n` more bytes for `held`, if they fit.
    fn take(&self, held: &mut usize, n: usize, trusted: bool) -> bool {
        use std::sync::atomic::Ordering;
        let cap = self.cap(trusted);
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= cap).then_some(used + n)
            })
            .is_ok();
        if fits {
            *held += n;
        }
        fits
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Bytes of the [`DataBudget`] one message holds; given back on drop.
struct Held<'a> {
    budget: &'a DataBudget,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

fn over_budget() -> Reply {
    Reply::new(
        452,
        "4.3.1",
        "too much mail in flight on this server; try again in a few minutes",
    )
}

/// A parsed command line. Parsing does no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpCommand {
    Ehlo(String),
    Helo(String),
    Mail { from: String, size: Option<usize> },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Unknown,
    Invalid(&'static str),
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &str) -> SmtpCommand {
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" if !rest.is_empty() => SmtpCommand::Ehlo(rest.to_owned()),
        "HELO" if !rest.is_empty() => SmtpCommand::Helo(rest.to_owned()),
        "EHLO" | "HELO" => SmtpCommand::Invalid("a domain is required"),
        "MAIL" => parse_mail(rest),
        "RCPT" => match path_arg(rest, "TO:") {
            Some((addr, _)) if !addr.is_empty() => SmtpCommand::Rcpt(addr),
            _ => SmtpCommand::Invalid("syntax: RCPT TO:<address>"),
        },
        "DATA" if rest.is_empty() => SmtpCommand::Data,
        "RSET" if rest.is_empty() => SmtpCommand::Rset,
        "NOOP" => SmtpCommand::Noop,
        "QUIT" if rest.is_empty() => SmtpCommand::Quit,
        "VRFY" => SmtpCommand::Vrfy,
        "DATA" | "RSET" | "QUIT" => SmtpCommand::Invalid("no parameters allowed"),
        _ => SmtpCommand::Unknown,
    }
}

fn parse_mail(rest: &str) -> SmtpCommand {
    let Some((from, params)) = path_arg(rest, "FROM:") else {
        return SmtpCommand::Invalid("syntax: MAIL FROM:<address>");
    };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => match value.parse() {
                Ok(n) => size = Some(n),
                Err(_) => return SmtpCommand::Invalid("SIZE needs a number"),
            },
            "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
            _ => return SmtpCommand::Invalid("unsupported MAIL parameter"),
        }
    }
    SmtpCommand::Mail { from, size }
}

/// Splits `FROM:<addr> params` into the address and the parameters.
fn path_arg<'a>(rest: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = rest[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let addr = &rest[..end];
    if addr.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    Some((addr.to_owned(), rest[end + 1..].trim()))
}

/// Accepts connections until `shutdown`, at most `max_sessions` at once
/// and at most `max_sessions_per_peer` from one untrusted address (see
/// [`Admission`]); a connection over a bound is told `421` and closed.
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
/// [`SHUTDOWN_GRACE`] after shutdown. The session's own deadline (421) comes
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

/// What reading one line found. The whole line is inspected, including
/// any part of an over-long line that was discarded.
#[derive(Debug, Default, Clone, Copy)]
struct LineRead {
    /// The connection closed before a line feed.
    eof: bool,
    /// Longer than the limit; only the first `max` bytes were kept.
    too_long: bool,
    /// Ended in CR LF (rather than a bare LF).
    ends_crlf: bool,
    /// Held a CR not followed by LF.
    bare_cr: bool,
}

impl LineRead {
    /// Ended in CRLF with no other CR or LF in it.
    fn clean(&self) -> bool {
        self.ends_crlf && !self.bare_cr
    }
}

/// Reads bytes up to and including `\n` into `buf`, keeping at most `max`
/// bytes; the rest of an over-long line is read and discarded.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut read = LineRead::default();
    let mut prev = 0u8;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            read.eof = true;
            return Ok(read);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        for &b in &chunk[..take] {
            if b == b'\n' {
                read.ends_crlf = prev == b'\r';
            } else if prev == b'\r' {
                read.bare_cr = true;
            }
            prev = b;
        }
        let room = max.saturating_sub(buf.len());
        read.too_long |= take > room;
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        if done {
            return Ok(read);
        }
    }
}

/// What was wrong with a DATA section (its reply is sent after the final dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFault {
    BareLineEnding,
    LineTooLong,
    TooBig,
    OverBudget,
}

impl DataFault {
    fn reply(self, max: usize) -> Reply {
        match self {
            DataFault::BareLineEnding => Reply::new(
                554,
                "5.6.0",
                "bare CR or LF in message: lines must end in CRLF; message refused",
            ),
            DataFault::LineTooLong => Reply::new(
                554,
                "5.6.0",
                "line longer than 1000 octets; message refused",
            ),
            DataFault::TooBig => Reply::new(
                552,
                "5.3.4",
                format!("message exceeds the size limit of {max} octets"),
            ),
            DataFault::OverBudget => over_budget(),
        }
    }
}

/// Reads a DATA section up to the only terminator RFC 5321 allows: the
/// bytes `<CRLF>.<CRLF>`, i.e. a line that is exactly `.` CRLF after a line
/// that ended in CRLF (never after a bare LF, whatever the line's length).
/// Any bare CR or LF makes the whole message invalid; it is read to that
/// terminator and refused (and the session then closed), so one DATA can
/// never become two messages.
async fn read_data<'b, R: AsyncBufRead + Unpin>(
    r: &mut R,
    max_size: usize,
    (budget, trusted): (&'b DataBudget, bool),
    line_timeout: Duration,
    deadline: Instant,
) -> std::io::Result<Result<(Vec<u8>, Held<'b>), DataFault>> {
    let mut held = Held { budget, bytes: 0 };
    let mut msg = Vec::new();
    let mut fault = None;
    let mut bare_line_ending = false;
    let mut line = Vec::with_capacity(MAX_TEXT_LINE);
    let mut after_crlf = true; // the DATA command ended in CRLF
    loop {
        let limit = deadline.min(Instant::now() + line_timeout);
        let read = tokio::time::timeout_at(limit, read_line(r, &mut line, MAX_TEXT_LINE))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DATA timeout"))??;
        if read.eof {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in DATA",
            ));
        }
        if after_crlf && !read.too_long && line == b".\r\n" {
            return Ok(match (bare_line_ending, fault) {
                (true, _) => Err(DataFault::BareLineEnding),
                (false, Some(f)) => Err(f),
                (false, None) => Ok((msg, held)),
            });
        }
        after_crlf = read.ends_crlf;
        bare_line_ending |= !read.clean();
        if read.too_long {
            fault.get_or_insert(DataFault::LineTooLong);
        }
        if bare_line_ending || fault.is_some() {
            continue;
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        if msg.len() + unstuffed.len() > max_size {
            fault = Some(DataFault::TooBig);
            msg = Vec::new();
            // Nothing more is kept of this message: its bytes are free.
            budget.give_back(std::mem::take(&mut held.bytes));
            continue;
        }
        if !budget.take(&mut held.bytes, unstuffed.len(), trusted) {
            fault = Some(DataFault::OverBudget);
            msg = Vec::new();
            budget.give_back(std::mem::take(&mut held.bytes));
            continue;
        }
        msg.extend_from_slice(unstuffed);
    }
}

#[derive(Default)]
struct Transaction {
    helo: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// What the session does next.
enum Step {
    SmtpCommand(SmtpCommand),
    /// Answer this and read the next command.
    Reply(Reply),
    /// Answer this, then close the connection.
    Close(Reply),
    /// The client went away.
    Eof,
}

/// One connection: the buffered reader, the writer and the session deadline.
struct Conn<R, W> {
    r: BufReader<R>,
    w: W,
    line: Vec<u8>,
    deadline: Instant,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        self.w.write_all(reply.to_wire().as_bytes()).await
    }

    async fn close(&mut self, reply: &Reply) -> std::io::Result<()> {
        self.send(reply).await?;
        self.w.shutdown().await
    }

    /// Reads and parses one command line, within the command timeout and
    /// the session's deadline.
    async fn read_command(&mut self, settings: &SmtpSettings) -> std::io::Result<Step> {
        let limit = self.deadline.min(Instant::now() + settings.command_timeout);
        let read = tokio::time::timeout_at(
            limit,
            read_line(&mut self.r, &mut self.line, MAX_COMMAND_LINE),
        )
        .await;
        let Ok(read) = read else {
            return Ok(Step::Close(Reply::new(421, "4.4.2", "timeout, closing")));
        };
        let read = read?;
        if read.eof {
            return Ok(Step::Eof);
        }
        if read.too_long {
            return Ok(Step::Reply(Reply::new(
                500,
                "5.5.2",
                "command line too long",
            )));
        }
        let text = self
            .line
            .strip_suffix(b"\r\n")
            .and_then(|l| std::str::from_utf8(l).ok());
        match text {
            Some(text) if read.clean() => Ok(Step::SmtpCommand(parse_command(text))),
            _ => Ok(Step::Reply(Reply::new(
                500,
                "5.5.2",
                "command lines must be text ending in CRLF",
            ))),
        }
    }
}

/// Runs one SMTP session on `stream` to its end.
pub async fn session<S, H>(
    stream: S,
    peer: String,
    handler: &H,
    settings: &SmtpSettings,
    shutdown: &CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MailHandler,
{
    let (r, w) = tokio::io::split(stream);
    let mut conn = Conn {
        r: BufReader::new(r),
        w,
        line: Vec::with_capacity(MAX_COMMAND_LINE),
        deadline: Instant::now() + settings.max_session,
    };
    let audit = SessionAudit {
        handler,
        peer: &peer,
        left: std::sync::atomic::AtomicU8::new(MAX_AUDITED),
    };
    let greeting = format!("220 {} ESMTP embargo-relay\r\n", settings.hostname);
    conn.w.write_all(greeting.as_bytes()).await?;
    let mut tx = Transaction::default();
    let mut errors = 0;
    loop {
        let step = tokio::select! {
            _ = shutdown.cancelled() => Step::Close(shutting_down()),
            step = conn.read_command(settings) => step?,
        };
        let reply = match step {
            Step::Eof => return Ok(()),
            Step::Close(reply) => {
                if !shutdown.is_cancelled() {
                    audit.refused(tx.mail_from.as_deref(), &reply);
                }
                return conn.close(&reply).await;
            }
            Step::Reply(reply) => {
                // A line the server could not take as a command at all.
                audit.refused(tx.mail_from.as_deref(), &reply);
                reply
            }
            Step::SmtpCommand(SmtpCommand::Quit) => {
                return conn.close(&Reply::new(221, "2.0.0", "bye")).await;
            }
            Step::SmtpCommand(SmtpCommand::Ehlo(domain)) => {
                tx = Transaction {
                    helo: Some(domain),
                    ..Transaction::default()
                };
                let ehlo = format!(
                    "250-{}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
                    settings.hostname, settings.max_message_size
                );
                conn.w.write_all(ehlo.as_bytes()).await?;
                continue;
            }
            Step::SmtpCommand(SmtpCommand::Data) => {
                let mail_from = tx.mail_from.clone();
                match data_phase(&mut conn, &mut tx, &audit, settings, shutdown).await? {
                    Step::Close(reply) => {
                        if !shutdown.is_cancelled() {
                            audit.refused(mail_from.as_deref(), &reply);
                        }
                        return conn.close(&reply).await;
                    }
                    Step::Reply(reply) => reply,
                    Step::SmtpCommand(_) | Step::Eof => return Ok(()),
                }
            }
            Step::SmtpCommand(other) => handle_command(other, &mut tx, &audit, settings),
        };
        if reply.code >= 500 {
            errors += 1;
        }
        if errors >= MAX_ERRORS {
            let reply = Reply::new(421, "4.7.0", "too many errors, closing");
            audit.refused(tx.mail_from.as_deref(), &reply);
            return conn.close(&reply).await;
        }
        conn.send(&reply).await?;
    }
}

fn shutting_down() -> Reply {
    Reply::new(421, "4.3.0", "shutting down, try again later")
}

/// DATA: checks the transaction, answers 354, reads the message and returns
/// the final reply (the handler's, or why the data was refused). A shutdown
/// while the client is still sending answers 421; once the message is read,
/// the handler runs to completion.
async fn data_phase<R, W, H>(
    conn: &mut Conn<R, W>,
    tx: &mut Transaction,
    audit: &SessionAudit<'_, H>,
    settings: &SmtpSettings,
    shutdown: &CancellationToken,
) -> std::io::Result<Step>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: MailHandler,
{
    let (peer, handler) = (audit.peer, audit.handler);
    if tx.helo.is_none() {
        return Ok(Step::Reply(Reply::new(503, "5.5.1", "send EHLO first")));
    }
    if tx.mail_from.is_none() {
        return Ok(Step::Reply(Reply::new(
            503,
            "5.5.1",
            "send MAIL FROM first",
        )));
    }
    if tx.rcpt_to.is_empty() {
        return Ok(Step::Reply(Reply::new(503, "5.5.1", "no valid recipients")));
    }
    if !conn.r.buffer().is_empty() {
        // Without PIPELINING a client must wait for 354 before sending data.
        let reply = Reply::new(503, "5.5.0", "data sent before 354 without PIPELINING");
        audit.refused(tx.mail_from.as_deref(), &reply);
        *tx = Transaction {
            helo: tx.helo.take(),
            ..Transaction::default()
        };
        return Ok(Step::Reply(reply));
    }
    // Trusted peers (the PST's MTA) may also use the budget's reserve.
    let trusted = peer
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| super::is_trusted(&settings.trusted_peers, a.ip()));
    if settings.data_budget.spent(trusted) {
        let reply = over_budget();
        audit.refused(tx.mail_from.as_deref(), &reply);
        *tx = Transaction {
            helo: tx.helo.take(),
            ..Transaction::default()
        };
        return Ok(Step::Reply(reply));
    }
    conn.w
        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        .await?;
    let data = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Step::Close(shutting_down())),
        data = read_data(&mut conn.r, settings.max_message_size, (&settings.data_budget, trusted), settings.data_timeout, conn.deadline) => match data {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Ok(Step::Close(Reply::new(421, "4.4.2", "timeout in DATA, closing")));
            }
            other => other?,
        },
    };
    let envelope = Envelope {
        helo: tx.helo.clone().unwrap_or_default(),
        mail_from: tx.mail_from.take().unwrap_or_default(),
        rcpt_to: std::mem::take(&mut tx.rcpt_to),
        peer: peer.to_owned(),
    };
    Ok(match data {
        // The bytes stay counted until the handler has answered.
        Ok((raw, _held)) => Step::Reply(handler.deliver(envelope, raw).await),
        Err(fault @ DataFault::BareLineEnding) => {
            // Like Postfix's smtpd_forbid_bare_newline: refuse and hang up, so
            // no later bytes can be read as commands the client did not mean.
            tracing::warn!(peer, ?fault, "DATA refused; closing the session");
            Step::Close(fault.reply(settings.max_message_size))
        }
        Err(fault) => {
            tracing::warn!(peer, ?fault, "DATA refused");
            let reply = fault.reply(settings.max_message_size);
            audit.refused(Some(&envelope.mail_from), &reply);
            Step::Reply(reply)
        }
    })
}

fn handle_command<H: MailHandler>(
    command: SmtpCommand,
    tx: &mut Transaction,
    audit: &SessionAudit<'_, H>,
    settings: &SmtpSettings,
) -> Reply {
    let handler = audit.handler;
    match command {
        SmtpCommand::Helo(domain) => {
            *tx = Transaction {
                helo: Some(domain),
                ..Transaction::default()
            };
            Reply::new(250, "2.0.0", settings.hostname.clone())
        }
        SmtpCommand::Mail { from, size } => {
            if tx.helo.is_none() {
                Reply::new(503, "5.5.1", "send EHLO first")
            } else if tx.mail_from.is_some() {
                Reply::new(503, "5.5.1", "nested MAIL command")
            } else if size.is_some_and(|s| s > settings.max_message_size) {
                let reply = Reply::new(
                    552,
                    "5.3.4",
                    format!(
                        "message exceeds the size limit of {} octets",
                        settings.max_message_size
                    ),
                );
                audit.refused(Some(&from), &reply);
                reply
            } else {
                tx.mail_from = Some(from);
                Reply::new(250, "2.1.0", "sender ok")
            }
        }
        SmtpCommand::Rcpt(rcpt) => {
            if tx.mail_from.is_none() {
                Reply::new(503, "5.5.1", "send MAIL FROM first")
            } else if tx.rcpt_to.len() >= settings.max_recipients {
                Reply::new(452, "4.5.3", "too many recipients")
            } else {
                match handler.check_rcpt(&rcpt) {
                    Ok(()) => {
                        if !tx.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(&rcpt)) {
                            tx.rcpt_to.push(rcpt);
                        }
                        Reply::new(250, "2.1.5", "recipient ok")
                    }
                    Err(reply) => reply,
                }
            }
        }
        SmtpCommand::Rset => {
            tx.mail_from = None;
            tx.rcpt_to.clear();
            Reply::new(250, "2.0.0", "reset")
        }
        SmtpCommand::Noop => Reply::new(250, "2.0.0", "ok"),
        SmtpCommand::Vrfy => Reply::new(252, "2.5.0", "cannot verify users"),
        SmtpCommand::Invalid(why) => Reply::new(501, "5.5.4", why),
        SmtpCommand::Unknown => Reply::new(500, "5.5.1", "command not recognised"),
        SmtpCommand::Quit | SmtpCommand::Ehlo(_) | SmtpCommand::Data => {
            unreachable!("handled by the session loop")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    #[derive(Default)]
    struct Recorder {
        messages: Mutex<Vec<Vec<u8>>>,
    }

    impl MailHandler for Recorder {
        fn check_rcpt(&self, rcpt: &str) -> Result<(), Reply> {
            if rcpt == "list@example.org" {
                Ok(())
            } else {
                Err(Reply::new(550, "5.1.1", "no such list here"))
            }
        }

        async fn deliver(&self, _envelope: Envelope, raw: Vec<u8>) -> Reply {
            self.messages.lock().unwrap().push(raw);
            Reply::new(250, "2.0.0", "queued")
        }
    }

    fn settings() -> SmtpSettings {
        SmtpSettings {
            hostname: "relay.test".into(),
            max_message_size: 200,
            max_sessions: 4,
            max_recipients: 10,
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            max_session: Duration::from_secs(30),
            data_budget: DataBudget::new(1 << 20, 0),
            max_sessions_per_peer: 4,
            trusted_peers: Vec::new(),
            reserved_sessions: 0,
        }
    }

    /// Plays `input` against a session, one client write per chunk, each
    /// written only after the server has answered the previous one.
    async fn converse(chunks: &[&[u8]]) -> (String, Vec<Vec<u8>>) {
        converse_with(&settings(), chunks).await
    }

    async fn converse_with(settings: &SmtpSettings, chunks: &[&[u8]]) -> (String, Vec<Vec<u8>>) {
        converse_as(settings, "test", chunks).await
    }

    async fn converse_as(
        settings: &SmtpSettings,
        peer: &str,
        chunks: &[&[u8]],
    ) -> (String, Vec<Vec<u8>>) {
        let handler = Recorder::default();
        let (client, server) = tokio::io::duplex(1 << 16);
        let token = CancellationToken::new();
        let server = session(server, peer.into(), &handler, settings, &token);
        let client = async move {
            let (mut r, mut w) = tokio::io::split(client);
            let mut transcript = Vec::new();
            let mut buf = [0u8; 4096];
            let n = r.read(&mut buf).await.unwrap();
            transcript.extend_from_slice(&buf[..n]);
            for chunk in chunks {
                if w.write_all(chunk).await.is_err() {
                    break;
                }
                let n = r.read(&mut buf).await.unwrap();
                transcript.extend_from_slice(&buf[..n]);
            }
            let _ = w.shutdown().await;
            let _ = r.read_to_end(&mut transcript).await;
            String::from_utf8_lossy(&transcript).into_owned()
        };
        let (res, transcript) = tokio::join!(server, client);
        let _ = res;
        (transcript, handler.messages.into_inner().unwrap())
    }

    const HEAD: [&[u8]; 4] = [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<pst@example.org>\r\n",
        b"RCPT TO:<list@example.org>\r\n",
        b"DATA\r\n",
    ];

    #[test]
    fn a_reply_kept_as_a_line_reads_back_the_same() {
        for reply in [
            Reply::new(
                250,
                "2.0.0",
                "roster updated (roster-add a@b); a receipt follows",
            ),
            Reply::new(554, "5.6.0", "invalid embargo: line 1: unknown field"),
            Reply::new(550, "5.7.0", "command refused: no embargo with this id"),
        ] {
            let back = Reply::from_line(&reply.line()).unwrap();
            assert_eq!(
                (back.code, back.enhanced, back.text.as_str()),
                (reply.code, reply.enhanced, reply.text.as_str())
            );
        }
        assert!(Reply::from_line("garbage").is_none());
    }

    /// The bytes all sessions hold are capped: a DATA that starts with the
    /// budget spent is answered 452 at once, one whose bytes would overspend
    /// it 452 at its end; a message held is counted until its answer, and
    /// once the budget is free again the same message is taken.
    #[tokio::test]
    async fn data_beyond_the_shared_budget_gets_452() {
        let settings = SmtpSettings {
            data_budget: DataBudget::new(300, 0),
            ..settings()
        };
        let budget = &settings.data_budget;
        let message: &[u8] = b"Subject: x\r\n\r\n0123456789012345678901234567890123456789\r\n.\r\n";
        let mut chunks = HEAD.to_vec();
        chunks.push(message);
        chunks.push(b"QUIT\r\n");
        // Another session holds 250 octets: this message does not fit.
        let mut other = 0;
        assert!(budget.take(&mut other, 250, false));
        let (t, msgs) = converse_with(&settings, &chunks).await;
        assert!(t.contains("354 "), "{t}");
        assert!(t.contains("452 4.3.1"), "{t}");
        assert!(msgs.is_empty());
        assert_eq!(
            budget.used(),
            250,
            "what the refused message took is given back"
        );
        // All of it held: DATA itself is refused, before 354.
        assert!(budget.take(&mut other, 50, false));
        let (t, msgs) = converse_with(&settings, &chunks).await;
        assert!(!t.contains("354 ") && t.contains("452 4.3.1"), "{t}");
        assert!(msgs.is_empty());
        // Given back: taken, and nothing stays counted after the answer.
        budget.give_back(other);
        let (t, msgs) = converse_with(&settings, &chunks).await;
        assert!(t.contains("250 2.0.0 queued"), "{t}");
        assert_eq!(msgs.len(), 1);
        assert_eq!(budget.used(), 0);
    }

    /// The budget's reserve is for trusted peers: junk from elsewhere that
    /// spends the rest cannot keep the PST's MTA out. A message refused for
    /// its size holds none of the budget while the client sends the rest.
    #[tokio::test]
    async fn trusted_peers_have_a_reserve_of_the_budget() {
        let settings = SmtpSettings {
            data_budget: DataBudget::new(300, 100),
            trusted_peers: vec!["127.0.0.1".parse().unwrap()],
            ..settings()
        };
        let budget = &settings.data_budget;
        let message: &[u8] = b"Subject: x\r\n\r\n0123456789012345678901234567890123456789\r\n.\r\n";
        let mut chunks = HEAD.to_vec();
        chunks.push(message);
        chunks.push(b"QUIT\r\n");
        let mut other = 0;
        assert!(budget.take(&mut other, 150, false));
        let (t, msgs) = converse_as(&settings, "192.0.2.1:40000", &chunks).await;
        assert!(t.contains("452 4.3.1") && msgs.is_empty(), "{t}");
        for trusted in ["127.0.0.1:40000", "[::ffff:127.0.0.1]:40000"] {
            let (t, msgs) = converse_as(&settings, trusted, &chunks).await;
            assert!(t.contains("250 2.0.0 queued"), "{trusted}: {t}");
            assert_eq!(msgs.len(), 1);
        }
        // Untrusted peers alone cannot reach into the reserve.
        assert!(budget.take(&mut other, 50, false));
        assert!(!budget.take(&mut other, 1, false));
        assert!(budget.take(&mut other, 100, true));
        budget.give_back(other);
        assert_eq!(budget.used(), 0);

        // Too big: what was read is given back at once, not at the final dot.
        let settings = SmtpSettings {
            max_message_size: 20,
            data_budget: DataBudget::new(300, 0),
            ..settings
        };
        let (client, server) = tokio::io::duplex(1 << 16);
        let handler = Recorder::default();
        let token = CancellationToken::new();
        let server = session(server, "192.0.2.1:1".into(), &handler, &settings, &token);
        let budget = settings.data_budget.clone();
        let client = async move {
            let (mut r, mut w) = tokio::io::split(client);
            let mut buf = [0u8; 4096];
            let _ = r.read(&mut buf).await.unwrap();
            for chunk in HEAD {
                w.write_all(chunk).await.unwrap();
                let _ = r.read(&mut buf).await.unwrap();
            }
            let wait_for = |n: usize| {
                let budget = budget.clone();
                async move {
                    for _ in 0..500 {
                        if budget.used() == n {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    budget.used()
                }
            };
            w.write_all(b"0123456789012345\r\n").await.unwrap();
            assert_eq!(wait_for(18).await, 18, "the first line is held");
            // The second line makes it too big.
            w.write_all(b"0123456789012345\r\n").await.unwrap();
            let held = wait_for(0).await;
            w.write_all(b".\r\nQUIT\r\n").await.unwrap();
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest).await;
            (held, String::from_utf8_lossy(&rest).into_owned())
        };
        let (_, (held, t)) = tokio::join!(server, client);
        assert_eq!(held, 0, "a too-big message holds nothing");
        assert!(t.contains("552"), "{t}");
    }

    #[tokio::test]
    async fn a_clean_transaction_is_delivered_dot_unstuffed() {
        let mut chunks = HEAD.to_vec();
        chunks.push(b"Subject: x\r\n\r\n..leading dot\r\nline\r\n.\r\n");
        chunks.push(b"QUIT\r\n");
        let (t, msgs) = converse(&chunks).await;
        assert!(t.contains("250-SIZE 200"), "{t}");
        assert!(t.contains("354 "), "{t}");
        assert!(t.contains("250 2.0.0 queued"), "{t}");
        assert_eq!(
            msgs,
            vec![b"Subject: x\r\n\r\n.leading dot\r\nline\r\n".to_vec()]
        );
    }

    #[tokio::test]
    async fn smuggled_end_of_data_never_makes_a_second_message() {
        for smuggle in [
            &b"Subject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<list@example.org>\r\nDATA\r\nSubject: b\r\n\r\nforged\r\n.\r\n"[..],
            b"Subject: a\r\n\r\nbody\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
            b"Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n",
            b"Subject: a\r\n\r\nbody\r\r\n.\r\n",
            b"Subject: a\r\n\r\nbare\rcr\r\n.\r\n",
            // An over-long line ending in a bare LF must not let `.` end DATA.
            &[&b"Subject: a\r\n\r\n"[..], &[b'x'; 1200], b"\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n"].concat(),
        ] {
            let mut chunks = HEAD.to_vec();
            chunks.push(smuggle);
            chunks.push(b"QUIT\r\n");
            let (t, msgs) = converse(&chunks).await;
            assert!(msgs.is_empty(), "smuggling input produced a message: {smuggle:?}");
            assert!(t.contains("554 5.6.0 bare CR or LF"), "{t}");
            assert_eq!(t.matches("2.1.0 sender ok").count(), 1, "a second transaction began: {t}");
            assert!(t.ends_with("message refused\r\n"), "the session must close after the refusal: {t}");
        }
    }

    #[tokio::test]
    async fn size_is_enforced_in_mail_and_in_data() {
        let (t, _) = converse(&[b"EHLO c\r\n", b"MAIL FROM:<a@b> SIZE=999999\r\n"]).await;
        assert!(t.contains("552 5.3.4"), "{t}");
        let mut chunks = HEAD.to_vec();
        let big = format!("Subject: x\r\n\r\n{}\r\n.\r\n", "y".repeat(250));
        chunks.push(big.as_bytes());
        let (t, msgs) = converse(&chunks).await;
        assert!(t.contains("552 5.3.4"), "{t}");
        assert!(msgs.is_empty());
    }

    #[tokio::test]
    async fn sequence_and_recipient_rules() {
        let (t, _) = converse(&[
            b"MAIL FROM:<a@b>\r\n",
            b"EHLO c\r\n",
            b"RCPT TO:<list@example.org>\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"RCPT TO:<other@example.org>\r\n",
            b"DATA\r\n",
            b"RSET\r\n",
            b"NOOP\r\n",
            b"FROB\r\n",
        ])
        .await;
        for expected in [
            "503 5.5.1 send EHLO first",
            "503 5.5.1 send MAIL FROM first",
            "550 5.1.1 no such list here",
            "503 5.5.1 no valid recipients",
            "250 2.0.0 reset",
            "250 2.0.0 ok",
            "500 5.5.1",
        ] {
            assert!(t.contains(expected), "missing {expected:?} in {t}");
        }
    }

    #[tokio::test]
    async fn overlong_command_line_is_refused() {
        let long = format!("NOOP {}\r\n", "x".repeat(600));
        let (t, _) = converse(&[b"EHLO c\r\n", long.as_bytes(), b"NOOP\r\n"]).await;
        assert!(t.contains("500 5.5.2 command line too long"), "{t}");
        assert!(t.ends_with("250 2.0.0 ok\r\n"), "{t}");
    }

    /// Runs a session whose client never says anything; returns what it was told.
    async fn silent_session(settings: SmtpSettings, token: CancellationToken) -> String {
        let handler = Recorder::default();
        let (client, server) = tokio::io::duplex(4096);
        session(server, "t".into(), &handler, &settings, &token)
            .await
            .unwrap();
        let mut out = String::new();
        let (mut r, _w) = tokio::io::split(client);
        r.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn shutdown_answers_421() {
        let token = CancellationToken::new();
        token.cancel();
        let out = silent_session(settings(), token).await;
        assert!(
            out.ends_with("421 4.3.0 shutting down, try again later\r\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn shutdown_during_data_answers_421_without_delivering() {
        let handler = Recorder::default();
        let (client, server) = tokio::io::duplex(4096);
        let token = CancellationToken::new();
        let settings = settings();
        let server = session(server, "t".into(), &handler, &settings, &token);
        let client = async {
            let (mut r, mut w) = tokio::io::split(client);
            let mut buf = [0u8; 1024];
            let _ = r.read(&mut buf).await.unwrap();
            for cmd in HEAD {
                w.write_all(cmd).await.unwrap();
                let _ = r.read(&mut buf).await.unwrap();
            }
            w.write_all(b"Subject: half a message\r\n").await.unwrap();
            token.cancel();
            let mut rest = String::new();
            r.read_to_string(&mut rest).await.unwrap();
            rest
        };
        let (res, rest) = tokio::join!(server, client);
        res.unwrap();
        assert_eq!(rest, "421 4.3.0 shutting down, try again later\r\n");
        assert!(handler.messages.into_inner().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_session_cannot_outlive_its_deadline_by_keeping_busy() {
        let handler = Recorder::default();
        let (client, server) = tokio::io::duplex(1 << 16);
        let settings = SmtpSettings {
            max_session: Duration::from_millis(300),
            ..settings()
        };
        let token = CancellationToken::new();
        let server = session(server, "t".into(), &handler, &settings, &token);
        let client = async {
            let (mut r, mut w) = tokio::io::split(client);
            // Keep sending NOOPs until the server hangs up.
            let mut transcript = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                transcript.extend_from_slice(&buf[..n]);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = w.write_all(b"NOOP\r\n").await;
            }
            String::from_utf8(transcript).unwrap()
        };
        let (res, t) = tokio::join!(server, client);
        res.unwrap();
        assert!(t.ends_with("421 4.4.2 timeout, closing\r\n"), "{t}");
    }

    #[tokio::test]
    async fn a_client_that_never_reads_cannot_pin_its_session() {
        let handler = Recorder::default();
        // A tiny pipe: the server's replies fill it and its writes block.
        let (client, server) = tokio::io::duplex(64);
        let settings = SmtpSettings {
            max_session: Duration::from_millis(200),
            ..settings()
        };
        let token = CancellationToken::new();
        let (_r, mut w) = tokio::io::split(client);
        let flood = tokio::spawn(async move {
            for _ in 0..100_000 {
                if w.write_all(b"NOOP\r\n").await.is_err() {
                    break;
                }
            }
        });
        let bounded = bounded_session(server, "t".into(), &handler, &settings, &token);
        // Without the hard bound this never returns; the timeout only turns a hang into a failure.
        tokio::time::timeout(Duration::from_secs(60), bounded)
            .await
            .expect("the session was dropped at its hard deadline");
        flood.abort();
    }

    #[tokio::test]
    async fn a_stalled_data_transfer_is_answered_421() {
        let handler = Recorder::default();
        let (client, server) = tokio::io::duplex(4096);
        let settings = SmtpSettings {
            data_timeout: Duration::from_millis(100),
            ..settings()
        };
        let token = CancellationToken::new();
        let server = session(server, "t".into(), &handler, &settings, &token);
        let client = async {
            let (mut r, mut w) = tokio::io::split(client);
            let mut buf = [0u8; 1024];
            let _ = r.read(&mut buf).await.unwrap();
            for cmd in HEAD {
                w.write_all(cmd).await.unwrap();
                let _ = r.read(&mut buf).await.unwrap();
            }
            w.write_all(b"Subject: and then nothing\r\n").await.unwrap();
            let mut rest = String::new();
            r.read_to_string(&mut rest).await.unwrap();
            rest
        };
        let (res, rest) = tokio::join!(server, client);
        res.unwrap();
        assert_eq!(rest, "421 4.4.2 timeout in DATA, closing\r\n");
        assert!(handler.messages.into_inner().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_silent_client_is_timed_out_with_421() {
        let settings = SmtpSettings {
            command_timeout: Duration::from_millis(100),
            ..settings()
        };
        let out = silent_session(settings, CancellationToken::new()).await;
        assert!(out.ends_with("421 4.4.2 timeout, closing\r\n"), "{out}");
    }

    #[tokio::test]
    async fn sessions_over_the_bound_are_refused_and_the_rest_keep_working() {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Arc::new(SmtpSettings {
            max_sessions: 2,
            ..settings()
        });
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        tokio::spawn(serve(
            listener,
            Arc::new(Recorder::default()),
            settings,
            token.clone(),
            tracker,
        ));
        let greeting = |s: tokio::net::TcpStream| async move {
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).await.unwrap();
            line
        };
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut r1, mut w1) = first.into_split();
        let mut buf = [0u8; 256];
        let n = r1.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"220 "));
        let mut r2 = BufReader::new(second);
        let mut line = String::new();
        r2.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220 "), "{line}");
        let third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            greeting(third).await.starts_with("421 4.3.2"),
            "the third session is over the bound"
        );
        // The held sessions still work.
        w1.write_all(b"NOOP\r\n").await.unwrap();
        let n = r1.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"250 2.0.0 ok\r\n");
        drop((r1, w1, r2));
        token.cancel();
    }

    #[test]
    fn command_parsing() {
        assert_eq!(
            parse_command("MAIL FROM:<a@b.org> SIZE=100 BODY=8BITMIME"),
            SmtpCommand::Mail {
                from: "a@b.org".into(),
                size: Some(100)
            }
        );
        assert_eq!(
            parse_command("mail from:<>"),
            SmtpCommand::Mail {
                from: String::new(),
                size: None
            }
        );
        assert_eq!(
            parse_command("RCPT TO:<list@x.org>"),
            SmtpCommand::Rcpt("list@x.org".into())
        );
        assert!(matches!(
            parse_command("RCPT TO:list@x.org"),
            SmtpCommand::Invalid(_)
        ));
        assert!(matches!(
            parse_command("MAIL FROM:<a b@c>"),
            SmtpCommand::Invalid(_)
        ));
        assert_eq!(parse_command("QUIT"), SmtpCommand::Quit);
        assert_eq!(parse_command("XYZZY"), SmtpCommand::Unknown);
    }
}
