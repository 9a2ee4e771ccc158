//! The spool cannot be written just after the smarthost accepted a copy:
//! the copy is recorded once the spool works again, and never sent twice.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

/// Collects the daemon's log lines (in-process, on this test's thread).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// current_thread: every task of the in-process daemon runs on this thread,
// so the thread-local log subscriber sees the fan-out's log lines.
#[tokio::test(flavor = "current_thread")]
async fn a_copy_whose_outcome_cannot_be_recorded_is_never_sent_twice() {
    let log = LogBuf::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::new();
    let list = f.start_in_process(&Tweaks::default()).await;
    let (sink, running) = (&list.sink, &list.running);
    sink.hold();
    let mail = f.gpg_signed(PST, "once", &embargoed("exactly once"));
    send(running.smtp_addr, PST, &mail).await.unwrap();

    let n = f.usable_members().count();
    // (Notices to the members skipped for their keys may be held too.)
    until("the copies to reach the sink", || sink.waiting() >= n).await;
    running.relay.spool.set_read_only(true).unwrap();
    sink.release();
    until("the fan-out to pause", || {
        log.text().contains("fan-out paused")
    })
    .await;
    running.relay.spool.set_read_only(false).unwrap();

    wait_copies(sink, n).await;
    f.wait_until_no_pending().await;
    let all = sink.captured();
    let got = copies(&all);
    for m in f.usable_members() {
        let copies = got
            .iter()
            .filter(|c| c.envelope.rcpt_to == vec![m.email.clone()])
            .count();
        assert_eq!(copies, 1, "{} must get exactly one copy", m.email);
    }
    assert_eq!(got.len(), n);
    let sent = f.audit().iter().filter(|r| r.event == "sent").count();
    assert_eq!(sent, n, "every copy recorded as sent once the spool works");
    list.running.shutdown().await;
}
