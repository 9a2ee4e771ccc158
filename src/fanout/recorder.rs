//! Group commit: the outcomes of deliveries that end close together are
//! recorded in one spool transaction, so a fan-out pays one `fsync` per
//! batch instead of one per copy. A delivery still counts as sent only
//! once its outcome is committed: each waits for its batch.
//!
//! One thread per list's fan-out takes the outcomes in the order they
//! come. It does not wait to fill a batch: while one commit is on disk,
//! the outcomes that arrive meanwhile make up the next.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::spool::{Recording, Spool, SpoolError};

use super::Stall;

/// The most outcomes in one transaction.
const MOST: usize = 512;

/// How often a receipt that could not be queued is tried again while no
/// outcome comes.
const RECEIPT_RETRY: Duration = Duration::from_secs(30);

type Answer = Result<(), Arc<SpoolError>>;

struct Entry {
    recording: Recording,
    done: oneshot::Sender<Answer>,
}

/// The way to the recording thread; the thread ends when the last clone
/// is dropped.
#[derive(Clone)]
pub(super) struct Recorder {
    tx: mpsc::Sender<Entry>,
}

impl Recorder {
    /// Starts the recording thread for `spool`. Receipts it could not
    /// queue (a spool error after the outcomes were committed) it tries
    /// again with each batch, and every [`RECEIPT_RETRY`] meanwhile.
    pub(super) fn start(spool: Spool, clock: SharedClock) -> std::io::Result<Recorder> {
        let (tx, rx) = mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("embargo-relay-recorder".to_owned())
            .spawn(move || {
                let mut owed: Vec<(String, String)> = Vec::new();
                loop {
                    let first = if owed.is_empty() {
                        rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                    } else {
                        rx.recv_timeout(RECEIPT_RETRY)
                    };
                    let first = match first {
                        Ok(e) => e,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            owed = retry_receipts(&spool, owed, &clock);
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let mut batch = vec![first];
                    while batch.len() < MOST {
                        match rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    let still = commit(&spool, batch);
                    if !owed.is_empty() {
                        owed = retry_receipts(&spool, owed, &clock);
                    }
                    owed.extend(
                        still
                            .into_iter()
                            .filter(|o| !owed.contains(o))
                            .collect::<Vec<_>>(),
                    );
                }
            })?;
        Ok(Recorder { tx })
    }

    /// Records one outcome; returns once it is committed (or could not be).
    pub(super) async fn record(&self, recording: Recording) -> Result<(), Stall> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Entry { recording, done })
            .map_err(|_| Stall::Task("recording outcomes has ended"))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Stall::Recorded(e)),
            Err(_) => Err(Stall::Task("recording outcomes has ended")),
        }
    }
}

/// Tries again to queue the receipts owed; returns those still owed. A
/// panic in the spool code keeps them all owed, and the thread goes on.
fn retry_receipts(
    spool: &Spool,
    owed: Vec<(String, String)>,
    clock: &SharedClock,
) -> Vec<(String, String)> {
    let again = owed.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        spool.queue_receipts(owed, clock.now())
    }))
    .unwrap_or_else(|_| {
        tracing::error!("queueing receipts owed panicked; trying again later");
        again
    })
}

/// Records one batch and answers each waiter; returns the receipts owed
/// that could not be queued. A panic in the spool code is every waiter's
/// error, and the thread goes on.
fn commit(spool: &Spool, batch: Vec<Entry>) -> Vec<(String, String)> {
    let (recordings, waiters): (Vec<Recording>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|e| (e.recording, e.done)).unzip();
    tracing::trace!(outcomes = recordings.len(), "recording a batch");
    crate::failpoint::hit("record-batch");
    let recorded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spool.record(&recordings)));
    match recorded {
        Ok(Ok(recorded)) => {
            for (waiter, result) in waiters.into_iter().zip(recorded.results) {
                let _ = waiter.send(result.map_err(Arc::new));
            }
            recorded.receipts_owed
        }
        Ok(Err(e)) => {
            let e = Arc::new(e);
            for waiter in waiters {
                let _ = waiter.send(Err(e.clone()));
            }
            Vec::new()
        }
        Err(_) => {
            tracing::error!("recording outcomes panicked; none of the batch is recorded");
            // Dropped unanswered: each waiter stalls as on a failed task.
            Vec::new()
        }
    }
}
