//! The SMTP client of the smarthost hop: plain SMTP to the local MTA, one
//! connection per lane, kept between deliveries.
//!
//! Written here rather than taken from lettre (which builds our headers and
//! still sends the tests' mail) for two things it does not do: RFC 2920
//! PIPELINING (MAIL, RCPT and DATA in one write, the message and its dot in
//! the next: two round trips a copy instead of four), and knowing whether a
//! kept connection is still open without asking the server (lettre can
//! only send a NOOP, a fifth round trip per copy). A kept connection the
//! server closed meanwhile shows as readable (its 421, or the end of the
//! stream): it is dropped unused. One that fails before the message was
//! written is known to have delivered nothing, so the caller may try again
//! at once on a fresh one.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest reply line read, and the longest reply (all its lines).
const MAX_LINE: u64 = 4096;
const MAX_REPLY: usize = 64 * 1024;

/// An answer of the server: its code and its lines' text, joined by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why a transaction failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server refused it (4xx or 5xx); the connection can be used again.
    Refused(Reply),
    /// The connection broke or the server said something that is not SMTP:
    /// the connection is not used again. `unsent`: this happened before
    /// the message itself was written, so nothing was delivered.
    Broken { detail: String, unsent: bool },
}

/// `step`, or why it did not finish before `deadline`.
async fn within<T>(
    deadline: tokio::time::Instant,
    step: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout_at(deadline, step)
        .await
        .map_err(|_| "the smarthost did not finish the transaction in time".to_owned())?
}

/// One open SMTP session with the smarthost, greeted and EHLO'd.
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
    pipelining: bool,
    eight_bit: bool,
    /// A transaction could not be ended cleanly: not used again.
    broken: bool,
    /// What is written but not yet sent: a copy's commands, and its head,
    /// checksum line and end of data, go in one write each (with
    /// TCP_NODELAY, each write is a segment and a wake-up at the server);
    /// a part larger than [`GATHER`] goes to the socket as it is.
    out: Vec<u8>,
}

/// The most output gathered before it is sent.
const GATHER: usize = 64 << 10;

impl Connection {
    /// Connects, reads the greeting and says EHLO, each step within `timeout`.
    pub(crate) async fn open(
        host: &str,
        port: u16,
        hello: &str,
        timeout: Duration,
    ) -> Result<Connection, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("connecting to {host}:{port} timed out"))?
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        // Without it a pipelined write waits for the delayed ACK.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let mut conn = Connection {
            stream: BufReader::new(stream),
            pipelining: false,
            eight_bit: false,
            broken: false,
            out: Vec::new(),
        };
        let step = |what: &'static str| {
            move |_| format!("the smarthost {host}:{port} did not {what} in time")
        };
        let greeting = tokio::time::timeout(timeout, conn.reply())
            .await
            .map_err(step("greet"))?
            .map_err(|e| format!("the smarthost {host}:{port} greeting: {e}"))?;
        if greeting.code != 220 {
            return Err(format!(
                "the smarthost {host}:{port} greeted with {greeting}"
            ));
        }
        conn.write(format!("EHLO {hello}\r\n").as_bytes())
            .await
            .map_err(|e| format!("the smarthost {host}:{port}: {e}"))?;
        let ehlo = tokio::time::timeout(timeout, conn.reply())
            .await
            .map_err(step("answer EHLO"))?
            .map_err(|e| format!("the smarthost {host}:{port} EHLO: {e}"))?;
        if ehlo.code != 250 {
            return Err(format!(
                "the smarthost {host}:{port} answered EHLO with {ehlo}"
            ));
        }
        let has = |ext: &str| {
            ehlo.text
                .split(' ')
                .any(|word| word.eq_ignore_ascii_case(ext))
        };
        conn.pipelining = has("PIPELINING");
        conn.eight_bit = has("8BITMIME");
        Ok(conn)
    }

    /// Whether the server has closed the connection or spoken unasked (a
    /// 421 before it hangs up) since its last answer: asked of the socket,
    /// without a round trip. Such a connection is not used again.
    pub(crate) fn is_stale(&self) -> bool {
        if self.broken || !self.stream.buffer().is_empty() || !self.out.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        match self.stream.get_ref().try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // The end of the stream, an error, or words nobody asked for.
            _ => true,
        }
    }

    /// Sends one message to one recipient, all of it before `deadline`;
    /// the server's final answer. A refusal is returned as such even when
    /// ending that transaction runs out of time (the connection is then
    /// not used again).
    pub(crate) async fn send(
        &mut self,
        from: &str,
        to: &str,
        message: &super::Wire,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, Failure> {
        let message = message.parts();
        let body = if !message.iter().all(|p| p.is_ascii()) && self.eight_bit {
            " BODY=8BITMIME"
        } else {
            ""
        };
        let commands = [
            format!("MAIL FROM:<{from}>{body}\r\n"),
            format!("RCPT TO:<{to}>\r\n"),
            "DATA\r\n".to_owned(),
        ];
        let unsent = |detail: String| Failure::Broken {
            detail,
            unsent: true,
        };
        let replies = within(deadline, async {
            let mut replies = Vec::with_capacity(3);
            if self.pipelining {
                self.write(commands.concat().as_bytes()).await?;
                for _ in &commands {
                    replies.push(self.reply().await?);
                }
            } else {
                for (command, expected) in commands.iter().zip([250, 250, 354]) {
                    self.write(command.as_bytes()).await?;
                    let reply = self.reply().await?;
                    let refused = reply.code / 100 != expected / 100;
                    replies.push(reply);
                    if refused {
                        break;
                    }
                }
            }
            Ok(replies)
        })
        .await
        .map_err(unsent)?;
        let go_ahead = replies.len() == 3 && replies[2].code == 354;
        let refusal = replies
            .iter()
            .take(2)
            .find(|r| r.code / 100 != 2)
            .or_else(|| replies.get(2).filter(|r| r.code != 354))
            .cloned();
        if let Some(refusal) = refusal {
            // The refusal stands, whatever ending the transaction does;
            // a connection that cannot end it is not used again.
            let ended = async {
                if go_ahead {
                    // A server that took DATA after refusing the recipient
                    // gets an empty message, which it must refuse too (RFC
                    // 2920); never the copy.
                    self.write(b".\r\n").await?;
                    self.reply().await?;
                }
                self.reset().await
            };
            if within(deadline, ended).await.is_err() {
                self.broken = true;
            }
            return Err(Failure::Refused(refusal));
        }
        let broken = |detail: String| Failure::Broken {
            detail,
            unsent: false,
        };
        let answer = within(deadline, async {
            self.write_dot_stuffed(message).await?;
            self.reply().await
        })
        .await
        .map_err(broken)?;
        if answer.code / 100 != 2 {
            return Err(Failure::Refused(answer));
        }
        Ok(answer)
    }

    /// Ends a refused transaction so the connection can carry the next.
    async fn reset(&mut self) -> Result<(), String> {
        self.write(b"RSET\r\n").await?;
        let reply = self.reply().await?;
        if reply.code != 250 {
            return Err(format!("RSET answered {reply}"));
        }
        Ok(())
    }

    /// Says QUIT, without waiting long for the answer.
    pub(crate) async fn quit(mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.reply()).await;
        }
    }

    /// Queues `bytes` to be sent: sent with what follows, at the latest
    /// before a reply is read ([`Connection::reply`]) or the end of data.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.out.len() + bytes.len() > GATHER {
            self.send_queued().await?;
            if bytes.len() > GATHER {
                return self
                    .stream
                    .get_mut()
                    .write_all(bytes)
                    .await
                    .map_err(|e| format!("writing to the smarthost: {e}"));
            }
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// Sends what [`Connection::write`] queued.
    async fn send_queued(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let sent = self.stream.get_mut().write_all(&self.out).await;
        self.out.clear();
        sent.map_err(|e| format!("writing to the smarthost: {e}"))
    }

    /// The message (its parts, one after the other) as DATA: every line
    /// that starts with a dot gets one more (RFC 5321, 4.5.2), then the
    /// end of data.
    async fn write_dot_stuffed(&mut self, message: [&[u8]; 3]) -> Result<(), String> {
        // Whether the next octet starts a line; the last two octets sent.
        let mut line_start = true;
        let mut last = [0u8; 2];
        for part in message.into_iter().filter(|p| !p.is_empty()) {
            let mut rest = part;
            if line_start && rest.first() == Some(&b'.') {
                self.write(b".").await?;
            }
            while let Some(at) = memchr::memmem::find(rest, b"\n.") {
                // Up to and with the line end, then the extra dot.
                self.write(&rest[..=at]).await?;
                self.write(b".").await?;
                rest = &rest[at + 1..];
            }
            self.write(rest).await?;
            line_start = part.ends_with(b"\n");
            last = match part {
                [.., a, b] => [*a, *b],
                [b] => [last[1], *b],
                [] => last,
            };
        }
        let empty = message.iter().all(|p| p.is_empty());
        let end: &[u8] = if empty || &last == b"\r\n" {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        };
        self.write(end).await?;
        self.send_queued().await?;
        self.stream
            .get_mut()
            .flush()
            .await
            .map_err(|e| format!("writing to the smarthost: {e}"))
    }

    /// Reads one reply, however many lines (`250-…` then `250 …`).
    async fn reply(&mut self) -> Result<Reply, String> {
        // What it answers is sent first.
        self.send_queued().await?;
        let mut text = String::new();
        let mut line = Vec::new();
        let mut first: Option<u16> = None;
        loop {
            line.clear();
            let n = (&mut self.stream)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| format!("reading from the smarthost: {e}"))?;
            if n == 0 {
                return Err("the smarthost closed the connection".to_owned());
            }
            if !line.ends_with(b"\n") {
                return Err("the smarthost sent a reply line too long".to_owned());
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| {
                    "the smarthost sent something that is not an SMTP reply".to_owned()
                })?;
            let (more, rest) = match line.as_bytes().get(3) {
                Some(b'-') => (true, &line[4..]),
                Some(b' ') => (false, &line[4..]),
                None => (false, ""),
                Some(_) => {
                    return Err("the smarthost sent something that is not an SMTP reply".to_owned());
                }
            };
            // Every line of one reply carries its code (RFC 5321, 4.2.1):
            // another means the replies are out of step with the commands.
            if *first.get_or_insert(code) != code {
                return Err("the smarthost's reply lines carry different codes".to_owned());
            }
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(rest);
            if text.len() > MAX_REPLY {
                return Err("the smarthost sent a reply too long".to_owned());
            }
            if !more {
                return Ok(Reply { code, text });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;

    /// A scripted smarthost on loopback: greets, answers EHLO (offering
    /// PIPELINING or not), and answers each later command by `answer`
    /// (`None`: 250). With `group`, it answers nothing of MAIL, RCPT and
    /// DATA until it has read all three, as only a pipelining client gets
    /// an answer from it; without, it notes every command that came before
    /// the answer to the one before it. Returns its port and what it read.
    async fn smarthost(
        pipelining: bool,
        answer: fn(&str) -> Option<&'static str>,
    ) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut s = BufReader::new(stream);
                    s.get_mut().write_all(b"220 fake ESMTP\r\n").await.unwrap();
                    let mut pending: Vec<String> = Vec::new();
                    let mut in_data = false;
                    loop {
                        let mut line = String::new();
                        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if in_data {
                            seen.lock().unwrap().push(format!("data:{line}"));
                            if line == ".\r\n" {
                                in_data = false;
                                let a = answer(".").unwrap_or("250 2.0.0 taken");
                                s.get_mut()
                                    .write_all(format!("{a}\r\n").as_bytes())
                                    .await
                                    .unwrap();
                            }
                            continue;
                        }
                        let command = line.trim_end().to_owned();
                        if !s.buffer().is_empty() && !pipelining {
                            seen.lock().unwrap().push(format!("early:{command}"));
                        }
                        seen.lock().unwrap().push(command.clone());
                        let reply = |c: &str| -> String {
                            if c.starts_with("EHLO") {
                                let p = if pipelining { "250-PIPELINING\r\n" } else { "" };
                                return format!("250-fake\r\n{p}250 8BITMIME\r\n");
                            }
                            if c == "DATA" {
                                return format!("{}\r\n", answer(c).unwrap_or("354 go ahead"));
                            }
                            format!("{}\r\n", answer(c).unwrap_or("250 2.0.0 ok"))
                        };
                        let grouped = pipelining
                            && (command.starts_with("MAIL")
                                || command.starts_with("RCPT")
                                || command == "DATA");
                        if grouped {
                            pending.push(command.clone());
                            if command != "DATA" {
                                continue;
                            }
                            let out: String = pending.drain(..).map(|c| reply(&c)).collect();
                            in_data = out.ends_with("354 go ahead\r\n");
                            s.get_mut().write_all(out.as_bytes()).await.unwrap();
                            continue;
                        }
                        let out = reply(&command);
                        if out.starts_with("STALL") {
                            // A tarpit: never answers.
                            continue;
                        }
                        in_data = command == "DATA" && out.starts_with("354");
                        s.get_mut().write_all(out.as_bytes()).await.unwrap();
                        if command == "QUIT" {
                            return;
                        }
                    }
                });
            }
        });
        (port, log)
    }

    const T: Duration = Duration::from_secs(10);

    /// A connection to a scripted smarthost ([`smarthost`]), and its log.
    async fn connected(
        pipelining: bool,
        answer: fn(&str) -> Option<&'static str>,
    ) -> (Connection, Arc<Mutex<Vec<String>>>) {
        let (port, log) = smarthost(pipelining, answer).await;
        let c = Connection::open("127.0.0.1", port, "relay.example", T)
            .await
            .unwrap();
        (c, log)
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + T
    }

    fn wire(message: &[u8]) -> super::super::Wire {
        super::super::Wire::from(message.to_vec())
    }

    /// With PIPELINING offered, MAIL, RCPT and DATA go together (the
    /// server answers none of them before it has all three: a client that
    /// waited would hang); without, each waits for its answer.
    #[tokio::test]
    async fn pipelines_only_when_offered() {
        for pipelining in [true, false] {
            let (mut c, log) = connected(pipelining, |_| None).await;
            assert_eq!(c.pipelining, pipelining);
            for i in 0..3 {
                let reply = tokio::time::timeout(
                    T,
                    c.send(
                        "l@x.org",
                        "m@y.org",
                        &wire(b"Subject: x\r\n\r\nhi\r\n"),
                        soon(),
                    ),
                )
                .await
                .expect("answered")
                .unwrap();
                assert_eq!(reply.code, 250, "{pipelining} {i}");
            }
            let log = log.lock().unwrap();
            assert!(!log.iter().any(|l| l.starts_with("early:")), "{log:?}");
            assert_eq!(
                log.iter()
                    .filter(|l| l.starts_with("MAIL FROM:<l@x.org>"))
                    .count(),
                3
            );
        }
    }

    /// A refused recipient is a refusal with the server's answer, the
    /// transaction is reset, and the same connection carries the next copy.
    #[tokio::test]
    async fn a_refused_recipient_resets_and_the_connection_goes_on() {
        for pipelining in [true, false] {
            let (mut c, log) = connected(pipelining, |c| {
                (c == "RCPT TO:<gone@y.org>").then_some("550 5.1.1 no such user")
            })
            .await;
            match c
                .send("l@x.org", "gone@y.org", &wire(b"x\r\n"), soon())
                .await
            {
                Err(Failure::Refused(r)) => assert_eq!(r.to_string(), "550 5.1.1 no such user"),
                other => panic!("{pipelining}: {other:?}"),
            }
            assert_eq!(
                c.send("l@x.org", "m@y.org", &wire(b"x\r\n"), soon())
                    .await
                    .unwrap()
                    .code,
                250
            );
            let log = log.lock().unwrap();
            assert!(log.contains(&"RSET".to_owned()), "{log:?}");
            assert_eq!(
                log.iter().filter(|l| l.starts_with("EHLO")).count(),
                1,
                "one connection"
            );
            // Nothing of the refused message was sent as data: at most the
            // empty message a server that took DATA anyway gets.
            let reset = log.iter().position(|l| l == "RSET").unwrap();
            assert!(
                log[..reset]
                    .iter()
                    .all(|l| !l.starts_with("data:") || l == "data:.\r\n"),
                "{log:?}"
            );
        }
    }

    /// A refusal stands when the server then fails the RSET too (it hangs
    /// up): the member's 550 is not turned into a retry, and the connection
    /// is not used again.
    #[tokio::test]
    async fn a_refusal_stands_when_the_reset_fails() {
        let (mut c, _) = connected(true, |c| match c {
            "RCPT TO:<gone@y.org>" => Some("550 5.1.1 no such user"),
            "RSET" => Some("421 4.3.0 closing"),
            _ => None,
        })
        .await;
        match c
            .send("l@x.org", "gone@y.org", &wire(b"x\r\n"), soon())
            .await
        {
            Err(Failure::Refused(r)) => assert_eq!(r.code, 550),
            other => panic!("{other:?}"),
        }
        assert!(c.is_stale(), "not used again");
    }

    /// A refusal stands when the server then stalls instead of answering
    /// the RSET (a tarpit): known by the deadline, not turned into a
    /// timeout and a retry; the connection is not used again.
    #[tokio::test]
    async fn a_refusal_stands_when_the_server_stalls_after_it() {
        for pipelining in [true, false] {
            let (mut c, _) = connected(pipelining, |c| match c {
                "RCPT TO:<gone@y.org>" => Some("550 5.1.1 no such user"),
                "RSET" => Some("STALL"),
                _ => None,
            })
            .await;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
            match c
                .send("l@x.org", "gone@y.org", &wire(b"x\r\n"), deadline)
                .await
            {
                Err(Failure::Refused(r)) => assert_eq!(r.code, 550, "{pipelining}"),
                other => panic!("{pipelining}: {other:?}"),
            }
            assert!(c.is_stale(), "{pipelining}: not used again");
        }
    }

    /// A server that refuses the recipient yet takes DATA gets an empty
    /// message (which it refuses), never the copy.
    #[tokio::test]
    async fn data_taken_after_a_refused_recipient_gets_no_message() {
        let (mut c, log) = connected(true, |c| match c {
            "RCPT TO:<gone@y.org>" => Some("550 5.1.1 no such user"),
            "." => Some("554 5.5.1 no valid recipients"),
            _ => None,
        })
        .await;
        let secret = b"Subject: embargoed\r\n\r\nsecret text\r\n";
        assert!(
            matches!(c.send("l@x.org", "gone@y.org", &wire(secret), soon()).await, Err(Failure::Refused(r)) if r.code == 550)
        );
        let log = log.lock().unwrap();
        assert!(!log.iter().any(|l| l.contains("secret")), "{log:?}");
        assert!(log.contains(&"RSET".to_owned()), "{log:?}");
    }

    /// Lines that start with a dot (the end-of-data line among them), a
    /// message that starts with one, and one without its last line end
    /// arrive as they were, through a real SMTP server (the relay's own).
    #[tokio::test(flavor = "multi_thread")]
    async fn dot_stuffing_keeps_every_message_whole() {
        let sink = crate::sink::CaptureSink::start().await.unwrap();
        let mut c = Connection::open("127.0.0.1", sink.addr().port(), "relay.example", T)
            .await
            .unwrap();
        assert!(c.pipelining, "the relay's own server pipelines");
        let cases: [&[u8]; 7] = [
            b"Subject: a\r\n\r\n.\r\n",
            b".starts with a dot\r\n",
            b"Subject: b\r\n\r\nline\r\n.\r\nafter the end\r\n",
            b"Subject: c\r\n\r\n..two\r\n...three\r\n",
            b"Subject: d\r\n\r\nno last line end",
            b"Subject: e\r\n\r\n.",
            b"Subject: f\r\n\r\nplain\r\n",
        ];
        // Each message whole, and cut into head, shared middle and tail at
        // every pair of places (a dot after a cut still starts a line).
        let mut sent = Vec::new();
        for (i, m) in cases.iter().enumerate() {
            for a in 0..=m.len() {
                for b in a..=m.len() {
                    let to = format!("m{i}.{a}.{b}@y.org");
                    let parts = super::super::Wire {
                        head: m[..a].to_vec(),
                        shared: std::sync::Arc::new(m[a..b].to_vec()),
                        tail: m[b..].to_vec(),
                    };
                    c.send("l@x.org", &to, &parts, soon()).await.unwrap();
                    sent.push((to, *m));
                }
            }
        }
        let got = sink.captured();
        for (to, m) in &sent {
            let mut want = m.to_vec();
            if !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            let c = got
                .iter()
                .find(|c| c.envelope.rcpt_to == [to.clone()])
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&c.raw),
                String::from_utf8_lossy(&want),
                "{to}"
            );
        }
    }

    /// A connection the server closed is known to be stale without a round
    /// trip; an open one is not.
    #[tokio::test]
    async fn a_closed_connection_is_stale() {
        let (mut c, _) = connected(true, |_| None).await;
        assert!(!c.is_stale());
        c.write(b"QUIT\r\n").await.unwrap();
        let deadline = tokio::time::Instant::now() + T;
        // The 250 to QUIT, then the end of the stream.
        while !c.is_stale() {
            assert!(tokio::time::Instant::now() < deadline, "never noticed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replies that are not SMTP, or too long, break the connection
    /// instead of being believed.
    #[tokio::test]
    async fn a_reply_that_is_not_smtp_is_an_error() {
        for (bytes, want) in [
            (b"hello there\r\n".to_vec(), "not an SMTP reply"),
            (b"25\r\n".to_vec(), "not an SMTP reply"),
            (b"099 low\r\n".to_vec(), "not an SMTP reply"),
            (
                format!("220 {}\r\n", "x".repeat(5000)).into_bytes(),
                "too long",
            ),
            (b"220-a\r\n".repeat(40_000), "too long"),
            (b"220-a\r\n250 b\r\n".to_vec(), "different codes"),
            (Vec::new(), "closed"),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let _ = s.write_all(&bytes).await;
            });
            let e = Connection::open("127.0.0.1", port, "relay.example", T)
                .await
                .err()
                .unwrap();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    /// Whatever the sizes of a message's three parts around the output
    /// gathered per write (each empty, small, just under, at and over
    /// [`GATHER`], and all of them together), the server receives the
    /// message exactly, dot-stuffed, and the connection carries the next.
    #[tokio::test]
    async fn every_part_size_arrives_exactly() {
        let (mut c, log) = connected(true, |_| None).await;
        // Lines of 77 octets, some starting with a dot.
        let part = |n: usize, seed: u8| -> Vec<u8> {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(match i % 78 {
                    76 => b'\r',
                    77 => b'\n',
                    0 if (i / 78) % 3 == 0 => b'.',
                    k => b'a' + ((k as u8 + seed) % 26),
                });
            }
            out
        };
        let sizes = [0, 78, GATHER - 78, GATHER + 78, 3 * GATHER + 78 * 5];
        let mut triples = Vec::new();
        for h in sizes {
            for m in sizes {
                for t in sizes {
                    triples.push((h, m, t));
                }
            }
        }
        let mut sent = 0;
        // Every third of the 125, so that each size meets each other.
        for (i, &(h, m, t)) in triples.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            let message = super::super::Wire {
                head: part(h, 1),
                shared: Arc::new(part(m, 2)),
                tail: part(t, 3),
            };
            log.lock().unwrap().clear();
            let reply = c.send("l@x.org", "m@y.org", &message, soon()).await;
            assert_eq!(reply.ok().map(|r| r.code), Some(250), "{h} {m} {t}");
            let log = log.lock().unwrap();
            let data: Vec<u8> = log
                .iter()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter(|l| *l != ".\r\n")
                .flat_map(|l| l.strip_prefix('.').unwrap_or(l).bytes())
                .collect();
            // A message that does not end a line gets its line ended.
            let mut want = message.to_vec();
            if !want.is_empty() && !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            assert!(
                data == want,
                "{i}: {h} {m} {t}: {} vs {}",
                data.len(),
                want.len()
            );
            assert!(!c.is_stale(), "{h} {m} {t}");
            sent += 1;
        }
        assert!(sent > 20);
    }
}
