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

use tokio::sync::oneshot;

use crate::spool::{Recording, Spool, SpoolError};

use super::Stall;

/// The most outcomes in one transaction.
const MOST: usize = 512;

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
    /// Starts the recording thread for `spool`.
    pub(super) fn start(spool: Spool) -> std::io::Result<Recorder> {
        let (tx, rx) = mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("embargo-relay-recorder".to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MOST {
                        match rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    commit(&spool, batch);
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

/// Records one batch and answers each waiter. A panic in the spool code
/// is every waiter's error, and the thread goes on.
fn commit(spool: &Spool, batch: Vec<Entry>) {
    let (recordings, waiters): (Vec<Recording>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|e| (e.recording, e.done)).unzip();
    tracing::trace!(outcomes = recordings.len(), "recording a batch");
    let recorded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spool.record(&recordings)));
    match recorded {
        Ok(Ok(results)) => {
            for (waiter, result) in waiters.into_iter().zip(results) {
                let _ = waiter.send(result.map_err(Arc::new));
            }
        }
        Ok(Err(e)) => {
            let e = Arc::new(e);
            for waiter in waiters {
                let _ = waiter.send(Err(e.clone()));
            }
        }
        Err(_) => {
            tracing::error!("recording outcomes panicked; none of the batch is recorded");
            // Dropped unanswered: each waiter stalls as on a failed task.
        }
    }
}
