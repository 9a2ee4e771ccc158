//! The SMTP session state machine: any bytes from a client yield at most
//! one message per DATA the server answered 354 to, and every message
//! handed on has CRLF line endings only and fits the size limit.
#![no_main]

use std::sync::Mutex;
use std::time::Duration;

use embargo_relay::inbound::smtp::{
    DataBudget, Envelope, MailHandler, Reply, SmtpSettings, session,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const MAX_SIZE: usize = 4096;

#[derive(Default)]
struct Counter(Mutex<Vec<Vec<u8>>>);

impl MailHandler for Counter {
    fn check_rcpt(&self, rcpt: &str, _earlier: &[String]) -> Result<(), Reply> {
        if rcpt.starts_with("list@") {
            Ok(())
        } else {
            Err(Reply::new(550, "5.1.1", "no such list"))
        }
    }

    async fn deliver(&self, _envelope: Envelope, raw: Vec<u8>) -> Reply {
        self.0.lock().unwrap().push(raw);
        Reply::new(250, "2.0.0", "kept")
    }
}

fuzz_target!(|input: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let settings = SmtpSettings {
        hostname: "relay.test".into(),
        max_message_size: MAX_SIZE,
        max_sessions: 1,
        max_recipients: 4,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
        max_session: Duration::from_secs(1800),
        // Room for one message of the largest size; no trusted peer.
        data_budget: DataBudget::new(MAX_SIZE, 0),
        max_sessions_per_peer: 1,
        trusted_peers: Vec::new(),
        reserved_sessions: 0,
    };
    let handler = Counter::default();
    let output = rt.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut cr, mut cw) = tokio::io::split(client);
        let shutdown = CancellationToken::new();
        let serve = session(server, "fuzz".into(), &handler, &settings, &shutdown);
        let feed = async {
            // A client that stops reading must not wedge the harness: the
            // duplex buffer is larger than any input libFuzzer makes here.
            let _ = cw.write_all(input).await;
            let _ = cw.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = cr.read_to_end(&mut out).await;
            out
        };
        let (_, _, out) = tokio::join!(serve, feed, read);
        out
    });
    let go_aheads = output
        .split(|b| *b == b'\n')
        .filter(|line| line.starts_with(b"354"))
        .count();
    let messages = handler.0.into_inner().unwrap();
    assert!(
        messages.len() <= go_aheads,
        "{} messages from {go_aheads} DATA commands",
        messages.len()
    );
    for m in &messages {
        assert!(
            m.len() <= MAX_SIZE,
            "a message over the size limit was taken"
        );
        for (i, b) in m.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR handed on"),
                b'\n' => assert!(i > 0 && m[i - 1] == b'\r', "bare LF handed on"),
                _ => {}
            }
        }
    }
});
