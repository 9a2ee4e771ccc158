use super::admission::*;
use super::session::*;
use super::*;
use std::sync::Mutex;
use tokio::io::AsyncReadExt;

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<Vec<u8>>>,
}

impl MailHandler for Recorder {
    fn check_rcpt(&self, rcpt: &str, _earlier: &[String]) -> Result<(), Reply> {
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

/// Reads the greeting, then plays [`HEAD`] (EHLO, MAIL, RCPT, DATA), each
/// command after the server's answer to the one before.
async fn up_to_data(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
) {
    let mut buf = [0u8; 4096];
    let _ = r.read(&mut buf).await.unwrap();
    for chunk in HEAD {
        w.write_all(chunk).await.unwrap();
        let _ = r.read(&mut buf).await.unwrap();
    }
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
        up_to_data(&mut r, &mut w).await;
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
        // Taken ahead of the line, up to the size limit (in 64 KiB steps).
        assert_eq!(wait_for(20).await, 20, "the first line is held");
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

/// A client that never stops sending DATA, as one endless line or as
/// lines without end, is cut off at the session's deadline: the reads
/// never wait, and the deadline is still kept.
#[tokio::test(flavor = "multi_thread")]
async fn endless_data_is_cut_off_at_the_deadline() {
    for endless_line in [true, false] {
        let settings = SmtpSettings {
            max_session: Duration::from_secs(1),
            max_message_size: 1 << 30,
            ..settings()
        };
        let handler = Recorder::default();
        let (client, server) = tokio::io::duplex(1 << 16);
        let token = CancellationToken::new();
        let server = session(server, "test".into(), &handler, &settings, &token);
        let client = async move {
            let (mut r, mut w) = tokio::io::split(client);
            up_to_data(&mut r, &mut w).await;
            let chunk: Vec<u8> = if endless_line {
                vec![b'x'; 1 << 16]
            } else {
                b"0123456789abcdef0123456789abcdef\r\n".repeat(2000)
            };
            // Until the server hangs up.
            while w.write_all(&chunk).await.is_ok() {}
        };
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(server, client)
        })
        .await;
        assert!(ended.is_ok(), "endless line {endless_line}: never cut off");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "endless line {endless_line}: {:?}",
            started.elapsed()
        );
        assert!(handler.messages.lock().unwrap().is_empty());
    }
}
