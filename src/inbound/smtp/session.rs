//! One SMTP session: greeting, commands, the DATA phase handed to the
//! [`MailHandler`], deadlines and the `421` on shutdown.

use super::admission::over_budget;
use super::wire::{DataFault, read_data, read_line};
use super::*;

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
                    "250-{}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
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
        // A client waits for 354 before it sends the data: DATA ends a
        // pipelined group (RFC 2920, 3.1).
        let reply = Reply::new(503, "5.5.0", "data sent before 354");
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
        .is_ok_and(|a| crate::inbound::is_trusted(&settings.trusted_peers, a.ip()));
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
                match handler.check_rcpt(&rcpt, &tx.rcpt_to) {
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
