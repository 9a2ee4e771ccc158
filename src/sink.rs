//! A loopback SMTP capture sink: stands in for the smarthost in the demo and
//! the tests, recording every envelope and message it is given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::inbound::smtp::{self, Envelope, MailHandler, Reply, SmtpSettings};

/// One message the sink received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub envelope: Envelope,
    pub raw: Vec<u8>,
    /// When the sink accepted it, by the wall clock.
    pub at: chrono::DateTime<chrono::Utc>,
}

struct Store {
    captured: Mutex<Vec<Captured>>,
    arrived: Notify,
    /// How many more messages to answer with 451 before accepting.
    temp_fail: AtomicUsize,
    /// While false, a received message waits before it is answered.
    open: watch::Sender<bool>,
    /// When set, only messages to this recipient are held.
    hold_only: Mutex<Option<String>>,
    /// Messages received and waiting for the gate.
    waiting: AtomicUsize,
    /// Scripted answers per recipient: the code, and how many more times
    /// to give it (`None`: always).
    scripted: Mutex<HashMap<String, (u16, Option<usize>)>>,
    /// Every message offered, accepted or not, per recipient.
    attempts: Mutex<HashMap<String, usize>>,
    /// Keep only envelopes, not bodies (for the benchmark's big fan-outs).
    discard_bodies: std::sync::atomic::AtomicBool,
    /// Messages accepted so far.
    accepted: AtomicUsize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            captured: Mutex::default(),
            arrived: Notify::new(),
            temp_fail: AtomicUsize::new(0),
            open: watch::channel(true).0,
            hold_only: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            scripted: Mutex::default(),
            attempts: Mutex::default(),
            discard_bodies: std::sync::atomic::AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        }
    }
}

impl MailHandler for Store {
    fn check_rcpt(&self, _rcpt: &str, _earlier: &[String]) -> Result<(), Reply> {
        Ok(())
    }

    async fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> Reply {
        let only = self
            .hold_only
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if only.is_none_or(|who| envelope.rcpt_to.contains(&who)) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = self.open.subscribe().wait_for(|open| *open).await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        for rcpt in &envelope.rcpt_to {
            *lock(&self.attempts).entry(rcpt.clone()).or_default() += 1;
        }
        if let Some(code) = self.scripted_answer(&envelope.rcpt_to) {
            let status = if code >= 500 { "5.1.1" } else { "4.2.0" };
            return Reply::new(code, status, "sink says: scripted answer");
        }
        let refuse = self
            .temp_fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Reply::new(451, "4.3.0", "sink says: try again later");
        }
        let raw = if self.discard_bodies.load(Ordering::Relaxed) {
            Vec::new()
        } else {
            raw
        };
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Captured {
                envelope,
                raw,
                at: crate::clock::SystemClock.now(),
            });
        self.accepted.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
        Reply::new(250, "2.0.0", "captured")
    }
}

impl Store {
    /// The scripted answer to a message for `rcpts`, counting it down.
    fn scripted_answer(&self, rcpts: &[String]) -> Option<u16> {
        let mut scripted = lock(&self.scripted);
        for rcpt in rcpts {
            if let Some((code, left)) = scripted.get_mut(rcpt) {
                let code = *code;
                match left {
                    Some(0) => {}
                    Some(n) => {
                        *n -= 1;
                        return Some(code);
                    }
                    None => return Some(code),
                }
            }
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running capture sink on 127.0.0.1.
pub struct CaptureSink {
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
}

impl CaptureSink {
    /// Starts a sink on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<CaptureSink> {
        Self::start_at("127.0.0.1:0".parse().expect("valid address")).await
    }

    /// Starts a sink on `addr` (for a restart on a known port).
    pub async fn start_at(addr: SocketAddr) -> std::io::Result<CaptureSink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store::default());
        let shutdown = CancellationToken::new();
        let settings = Arc::new(SmtpSettings {
            hostname: "capture-sink.localhost".to_owned(),
            max_message_size: 256 << 20,
            max_sessions: 256,
            max_recipients: 1000,
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(60),
            max_session: Duration::from_secs(600),
            // A test peer: as much as the tests send.
            data_budget: smtp::DataBudget::new(usize::MAX, 0),
            max_sessions_per_peer: 256,
            trusted_peers: Vec::new(),
            reserved_sessions: 0,
        });
        tokio::spawn(smtp::serve(
            listener,
            store.clone(),
            settings,
            shutdown.clone(),
            TaskTracker::new(),
        ));
        Ok(CaptureSink {
            addr,
            store,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `n` messages with a transient 451.
    pub fn fail_next(&self, n: usize) {
        self.store.temp_fail.store(n, Ordering::SeqCst);
    }

    /// Answers messages to `rcpt` with `code` (e.g. 451 or 550), `times`
    /// times (`None`: always); then they are accepted again.
    pub fn answer_for(&self, rcpt: &str, code: u16, times: Option<usize>) {
        lock(&self.store.scripted).insert(rcpt.to_owned(), (code, times));
    }

    /// How many messages to `rcpt` were offered, accepted or not.
    pub fn attempts(&self, rcpt: &str) -> usize {
        lock(&self.store.attempts).get(rcpt).copied().unwrap_or(0)
    }

    /// Holds every message after its data arrived, before answering, until [`CaptureSink::release`].
    pub fn hold(&self) {
        self.store.open.send_replace(false);
    }

    /// Holds only messages to `rcpt` (others are answered at once).
    pub fn hold_for(&self, rcpt: &str) {
        *self
            .store
            .hold_only
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(rcpt.to_owned());
        self.hold();
    }

    /// Answers the held messages and stops holding.
    pub fn release(&self) {
        self.store.open.send_replace(true);
    }

    /// How many messages are being held.
    pub fn waiting(&self) -> usize {
        self.store.waiting.load(Ordering::SeqCst)
    }

    /// Everything captured so far.
    pub fn captured(&self) -> Vec<Captured> {
        self.store
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps envelopes only from now on: `Captured::raw` stays empty.
    pub fn discard_bodies(&self) {
        self.store.discard_bodies.store(true, Ordering::Relaxed);
    }

    /// How many messages were accepted so far (without copying them).
    pub fn count(&self) -> usize {
        self.store.accepted.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were accepted or `timeout` passed;
    /// returns the count.
    pub async fn wait_count(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.store.arrived.notified();
            let count = self.count();
            if count >= n || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count();
            }
        }
    }

    /// Waits until at least `n` messages arrived or `timeout` passed; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Captured> {
        self.wait_until(timeout, |got| got.len() >= n).await
    }

    /// Waits until what arrived satisfies `done`, or `timeout` passed; returns what arrived.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Captured]) -> bool,
    ) -> Vec<Captured> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.store.arrived.notified();
            let got = self.captured();
            if done(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.captured();
            }
        }
    }
}

impl Drop for CaptureSink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
