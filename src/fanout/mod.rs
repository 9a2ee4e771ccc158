//! Fan-out: turns pending deliveries into one sealed copy per member and
//! hands each to the outbound transport; a member without a usable key is
//! skipped (never sent plaintext), a transient failure is retried with backoff.
//! This file is the scheduler (lanes, batches, waking); one delivery is
//! `deliver.rs`, building each kind of message `build.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::Relay;
use crate::outbound::Outbound;
use crate::record::Record;
use crate::spool::{DueDelivery, Kind, SpoolError};

mod build;
mod deliver;
mod hook;
mod recorder;

use deliver::*;
use recorder::Recorder;

/// How many due deliveries are taken from the spool at a time.
const BATCH: usize = 256;

/// The longest the worker sleeps without looking at the spool again.
const IDLE: Duration = Duration::from_secs(60);

/// The first pause after the spool could not be read or written.
const FIRST_PAUSE: Duration = Duration::from_secs(5);

/// Why the worker has to pause: it cannot trust what it would record.
#[derive(Debug, thiserror::Error)]
enum Stall {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Recorded(Arc<SpoolError>),
    #[error("a blocking task {0}")]
    Task(&'static str),
}

/// Copies the smarthost accepted whose `sent` state could not be written
/// yet, keyed by (message id, recipient, kind), with the smarthost's answer. They are
/// recorded, never sent again, once the spool works (a crash in between
/// costs at most one duplicate).
type Unrecorded = Mutex<HashMap<Key, String>>;

/// One delivery row: (message id, recipient, kind, copy id). The copy id
/// tells a re-queued receipt from the one sent before.
type Key = (String, String, Kind, String);

fn key(d: &DueDelivery) -> Key {
    (
        d.message_id.clone(),
        d.to.clone(),
        d.kind,
        d.copy_id.clone(),
    )
}

/// The lanes deliveries run in, each bounded by `outbound.concurrency`
/// (a release hook's by one call): public releases have their own, and so
/// have the members' lifted notices and each release hook, so neither a fan-out that fills the copies' lane
/// nor thousands of lifted notices at a lift (or a dead member server
/// holding their slots), nor a hook endpoint that hangs, ever delays a
/// release or another hook.
///
/// A delivery holds two things: a place to send from (at most
/// `concurrency` per lane send at once) and a place in the lane
/// ([`PLACES_PER_SENDER`] times as many), kept until its outcome is
/// committed. A place to send is given back as soon as the smarthost has
/// answered, so the next row is sent while the outcome waits for the
/// disk; the lane's bound keeps what a crash can send twice (sent, not yet
/// committed) at `4 × concurrency` per lane, however long the disk takes.
struct Lanes {
    releases: Lane,
    lifted: Lane,
    other: Lane,
    /// One per hook name, made as rows of it are first dispatched.
    hooks: Mutex<HashMap<String, Lane>>,
    /// Told whenever a place is given back.
    freed: Arc<Notify>,
}

/// Places in a lane per place to send. Two measured slower at 3,000
/// members (0.69–0.72 s against 0.65–0.70 s unbounded); four as fast as
/// unbounded (0.66–0.69 s).
const PLACES_PER_SENDER: usize = 4;

#[derive(Clone)]
struct Lane {
    sending: Arc<Semaphore>,
    places: Arc<Semaphore>,
}

impl Lane {
    fn new(bound: usize) -> Lane {
        Lane {
            sending: Arc::new(Semaphore::new(bound)),
            places: Arc::new(Semaphore::new(PLACES_PER_SENDER * bound)),
        }
    }
}

/// Which lane a delivery runs in.
#[derive(Debug, PartialEq, Eq)]
enum LaneId<'a> {
    Releases,
    Lifted,
    Other,
    /// A release hook's, by its name.
    Hook(&'a str),
}

impl LaneId<'_> {
    fn of(kind: Kind, to: &str) -> LaneId<'_> {
        match kind {
            Kind::Release => LaneId::Releases,
            Kind::Lifted => LaneId::Lifted,
            Kind::Hook | Kind::CancelHook => LaneId::Hook(to),
            _ => LaneId::Other,
        }
    }
}

/// A delivery's places in its lane (see [`Lanes`]); given back, and the
/// dispatch told, when dropped or (the place to send) when [`sent`].
///
/// [`sent`]: LanePermit::sent
pub(super) struct LanePermit {
    sending: Option<OwnedSemaphorePermit>,
    place: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl LanePermit {
    /// Gives the place to send back: the smarthost has answered, or
    /// nothing will be sent; the lane's place is kept until this delivery
    /// ends (its outcome committed).
    pub(super) fn sent(&mut self) {
        if self.sending.take().is_some() {
            self.freed.notify_one();
        }
    }
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        // Given back first, then told: the dispatch finds them free.
        self.sending.take();
        self.place.take();
        self.freed.notify_one();
    }
}

impl Lanes {
    fn new(bound: usize) -> Lanes {
        Lanes {
            releases: Lane::new(bound),
            lifted: Lane::new(bound),
            other: Lane::new(bound),
            hooks: Mutex::default(),
            freed: Arc::default(),
        }
    }

    fn lane(&self, id: LaneId<'_>) -> Lane {
        match id {
            LaneId::Releases => self.releases.clone(),
            LaneId::Lifted => self.lifted.clone(),
            LaneId::Other => self.other.clone(),
            // One call at a time per hook: an endpoint (GitHub's secondary
            // rate limits) is never hit by a burst, and one that hangs holds
            // one call.
            LaneId::Hook(name) => self
                .hooks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(name.to_owned())
                .or_insert_with(|| Lane::new(1))
                .clone(),
        }
    }

    /// A place for a delivery of `kind` to `to` in its lane, if it has room.
    fn try_enter(&self, kind: Kind, to: &str) -> Option<LanePermit> {
        let lane = self.lane(LaneId::of(kind, to));
        let place = lane.places.clone().try_acquire_owned().ok()?;
        Some(LanePermit {
            sending: Some(lane.sending.clone().try_acquire_owned().ok()?),
            place: Some(place),
            freed: self.freed.clone(),
        })
    }
}

/// Delivers until `shutdown`; woken early by `relay.wake`. Each due
/// delivery runs as its own task, at most `outbound.concurrency` at once
/// per lane. If an outcome cannot be recorded, the worker pauses (doubling
/// up to a minute) and remembers what was sent, so nothing is sent twice
/// while it waits. On shutdown it waits for the deliveries in flight:
/// copies are abandoned (sent again after restart), a release is finished.
pub(crate) async fn run(relay: Arc<Relay>, outbound: Outbound, shutdown: CancellationToken) {
    let lanes = Lanes::new(relay.config().outbound.concurrency);
    let recorder = match Recorder::start(relay.spool.clone(), relay.clock.clone()) {
        Ok(r) => r,
        Err(e) => {
            // Nothing can be sent without a way to record it.
            tracing::error!(error = %e, "cannot start the thread that records outcomes: nothing is delivered");
            relay.health.idle();
            return shutdown.cancelled().await;
        }
    };
    let worker = Worker {
        relay: relay.clone(),
        outbound,
        recorder,
        shutdown: shutdown.clone(),
        unrecorded: Arc::default(),
    };
    let mut flying = Flying::default();
    let mut tasks: JoinSet<Result<(), Stall>> = JoinSet::new();
    let mut opened: HashMap<String, Arc<Record>> = HashMap::new();
    let mut pause = FIRST_PAUSE;
    let mut stalled: Option<Stall> = None;
    owed_receipts(&relay).await;
    'look: loop {
        while let Some(done) = tasks.try_join_next_with_id() {
            flying.landed(done, &mut stalled);
        }
        if let Some(e) = stalled.take() {
            relay.health.idle();
            tracing::error!(error = %e, pause_s = pause.as_secs(), "fan-out paused: the spool cannot be read or written");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(IDLE);
            continue;
        }
        relay.health.busy();
        let job = Dispatch {
            worker: &worker,
            lanes: &lanes,
        };
        // One time for both: a row that falls due in between is neither
        // missed by the dispatch nor slept past.
        let now = relay.clock.now();
        let (mut queue, version) = match job.read(now, &flying, &mut opened).await {
            Ok(read) => read,
            Err(e) => {
                stalled = Some(e);
                continue;
            }
        };
        match job
            .start(&mut queue, &mut flying, &mut tasks, &mut opened)
            .await
        {
            Ok(()) => pause = FIRST_PAUSE,
            Err(e) => {
                stalled = Some(e);
                continue;
            }
        }
        let wake_at = next_wake(&relay, now).await;
        relay.health.asleep_until(wake_at, tasks.is_empty());
        let changed = spool_changed(&relay, version);
        tokio::pin!(changed);
        // Until something may have fallen due or changed, each place a
        // delivery gives back goes to the next row already read: the spool
        // is read again only when they are used up.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'look,
                _ = relay.wake.notified() => break,
                _ = relay.clock.sleep_until(wake_at) => break,
                _ = &mut changed => break,
                _ = lanes.freed.notified(), if !queue.is_empty() => {
                    if let Err(e) = job.start(&mut queue, &mut flying, &mut tasks, &mut opened).await {
                        stalled = Some(e);
                        break;
                    }
                }
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    // Its lane has room now: if no row read waits for it,
                    // the spool is read again (what fell due meanwhile,
                    // e.g. a receipt, may be in it). Rows waiting for
                    // another, full lane (hooks that hang) never hold the
                    // others back.
                    let landed = flying.landed(done, &mut stalled);
                    let waiting = |(_, to, kind, _): Key| {
                        let lane = LaneId::of(kind, &to);
                        queue.iter().any(|d| LaneId::of(d.kind, &d.to) == lane)
                    };
                    if stalled.is_some() || !landed.is_some_and(waiting) {
                        break;
                    }
                    if let Err(e) = job.start(&mut queue, &mut flying, &mut tasks, &mut opened).await {
                        stalled = Some(e);
                        break;
                    }
                }
            }
        }
    }
    while let Some(done) = tasks.join_next_with_id().await {
        flying.landed(done, &mut stalled);
    }
}

/// The deliveries in flight, by row and by task.
#[derive(Default)]
struct Flying {
    rows: HashSet<Key>,
    tasks: HashMap<tokio::task::Id, Key>,
}

impl Flying {
    fn start(&mut self, id: tokio::task::Id, key: Key) {
        self.rows.insert(key.clone());
        self.tasks.insert(id, key);
    }

    /// Takes note of a delivery task that ended, however it ended: its row
    /// may be dispatched again (a panicked task's row is retried). Its
    /// row, if it was known.
    fn landed(
        &mut self,
        done: Result<(tokio::task::Id, Result<(), Stall>), tokio::task::JoinError>,
        stalled: &mut Option<Stall>,
    ) -> Option<Key> {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => (
                e.id(),
                Err(Stall::Task(if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                })),
            ),
        };
        let key = self.tasks.remove(&id);
        if let Some(key) = &key {
            self.rows.remove(key);
        }
        if let Err(e) = outcome {
            *stalled = Some(e);
        }
        key
    }
}

/// What every delivery task shares: the list, the smarthost, the
/// recorder of outcomes, the shutdown signal, the copies sent but not
/// yet recorded. Cheap to clone.
#[derive(Clone)]
pub(super) struct Worker {
    relay: Arc<Relay>,
    outbound: Outbound,
    recorder: Recorder,
    shutdown: CancellationToken,
    unrecorded: Arc<Unrecorded>,
}

/// What starting delivery tasks needs.
struct Dispatch<'a> {
    worker: &'a Worker,
    lanes: &'a Lanes,
}

impl Dispatch<'_> {
    /// The due deliveries not already in flight, in the spool's order
    /// (releases first). `opened` and the shared seals keep only the
    /// announcements that still have due deliveries.
    async fn read(
        &self,
        now: DateTime<Utc>,
        flying: &Flying,
        opened: &mut HashMap<String, Arc<Record>>,
    ) -> Result<(VecDeque<DueDelivery>, Option<i64>), Stall> {
        let relay = &self.worker.relay;
        let r = relay.clone();
        let limit = BATCH + flying.rows.len();
        // The spool's version as the rows are read: another process's
        // commit after this is a change the worker wakes for.
        let (due, version) = blocking(move || {
            crate::failpoint::hit("fanout-dispatch");
            let version = r.spool.data_version().ok();
            r.spool.due(now, limit).map(|due| (due, version))
        })
        .await??;
        let ids: HashSet<&str> = due.iter().map(|d| d.message_id.as_str()).collect();
        opened.retain(|id, _| ids.contains(id.as_str()));
        relay.seals.retain(|id, until| {
            due.iter()
                .any(|d| d.message_id == id && until.is_none_or(|until| until == d.embargo_until))
        });
        let queue = due
            .into_iter()
            .filter(|d| !flying.rows.contains(&key(d)))
            .collect();
        Ok((queue, version))
    }

    /// Starts a task for each delivery of `queue`, in order, as far as its
    /// lane has room; what is started leaves the queue. An announcement is
    /// opened once and shared by its tasks.
    async fn start(
        &self,
        queue: &mut VecDeque<DueDelivery>,
        flying: &mut Flying,
        tasks: &mut JoinSet<Result<(), Stall>>,
        opened: &mut HashMap<String, Arc<Record>>,
    ) -> Result<(), Stall> {
        let relay = &self.worker.relay;
        let mut waiting = VecDeque::new();
        while let Some(d) = queue.pop_front() {
            if self.worker.shutdown.is_cancelled() {
                break;
            }
            let Some(permit) = self.lanes.try_enter(d.kind, &d.to) else {
                waiting.push_back(d);
                continue;
            };
            let k = key(&d);
            let announcement = match opened.get(&d.message_id) {
                Some(a) if a.terms.until == d.embargo_until => a.clone(),
                _ => {
                    let (r, id) = (relay.clone(), d.message_id.clone());
                    match blocking(move || open(&r, &id)).await?? {
                        Ok(mut a) => {
                            // The spool's embargo time is authoritative (operators can change it).
                            a.terms.until = d.embargo_until;
                            let a = Arc::new(a);
                            opened.insert(d.message_id.clone(), a.clone());
                            a
                        }
                        Err(e) => {
                            // E.g. the list key was replaced: fixable, so keep the copies and retry.
                            tracing::error!(message_id = %d.message_id, error = %e, "cannot open a spooled announcement");
                            defer(
                                self.worker,
                                &relay.config(),
                                &d,
                                format!("cannot open the spooled announcement: {e}"),
                                None,
                            )
                            .await?;
                            // (No receipt: its address is inside what cannot be opened.)
                            continue;
                        }
                    }
                }
            };
            let worker = self.worker.clone();
            let task =
                tasks.spawn(async move { deliver_one(&worker, &announcement, &d, permit).await });
            flying.start(task.id(), k);
        }
        // In their order, before any the loop did not reach.
        waiting.append(queue);
        *queue = waiting;
        Ok(())
    }
}

/// Resolves when another process (the operator's CLI) has committed to the
/// spool since its version was `start` (read with the due rows; read now
/// if that failed); checked once a second, a cheap pragma read.
async fn spool_changed(relay: &Arc<Relay>, start: Option<i64>) {
    let version = |relay: &Arc<Relay>| {
        let r = relay.clone();
        async move {
            blocking(move || r.spool.data_version())
                .await
                .ok()
                .and_then(Result::ok)
        }
    };
    let start = match start {
        Some(v) => Some(v),
        None => version(relay).await,
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if version(relay).await != start {
            return;
        }
    }
}

/// When the worker should look again: when the next delivery not yet due
/// falls due, at most [`IDLE`] from now. (Due deliveries waiting for a lane
/// are started when a task in flight ends.)
async fn next_wake(relay: &Arc<Relay>, now: DateTime<Utc>) -> DateTime<Utc> {
    let r = relay.clone();
    let latest = now + chrono::Duration::from_std(IDLE).unwrap_or_default();
    match blocking(move || r.spool.next_due_after(now)).await {
        Ok(Ok(Some(at))) => at.min(latest),
        _ => latest,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Stall> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Stall::Task(if e.is_panic() {
            "panicked"
        } else {
            "was cancelled"
        })
    })
}

/// Reads and opens a spooled announcement: a spool error pauses the worker,
/// a decryption or format error is the announcement's own problem.
fn open(relay: &Relay, message_id: &str) -> Result<anyhow::Result<Record>, SpoolError> {
    let sealed = relay.spool.sealed(message_id)?;
    let p = crate::crypto::policy();
    Ok(relay
        .config()
        .list_key
        .open_from_self(&p, &sealed)
        .and_then(|plain| {
            Record::from_bytes(plain.expose())
                .ok_or_else(|| anyhow::anyhow!("unknown spool format"))
        }))
}

fn lock(unrecorded: &Unrecorded) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
    unrecorded.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full lane of copies, of lifted notices or of a hook's calls
    /// leaves a release and the other hooks their own room; each lane
    /// holds `outbound.concurrency` at once.
    #[test]
    fn a_release_and_each_hook_have_a_lane_of_their_own() {
        let lanes = Lanes::new(2);
        let mut held = Vec::new();
        for (kind, to) in [(Kind::Copy, "a@x.org"), (Kind::Lifted, "a@x.org")] {
            held.push(lanes.try_enter(kind, to).unwrap());
            held.push(lanes.try_enter(kind, to).unwrap());
            assert!(
                lanes.try_enter(kind, to).is_none(),
                "{kind:?}: its lane is full"
            );
        }
        // A hook makes one call at a time.
        held.push(lanes.try_enter(Kind::Hook, "stuck").unwrap());
        assert!(lanes.try_enter(Kind::Hook, "stuck").is_none());
        assert!(
            lanes.try_enter(Kind::Receipt, "p@x.org").is_none(),
            "the copies' lane"
        );
        assert!(
            lanes.try_enter(Kind::CancelHook, "stuck").is_none(),
            "the hook's lane"
        );
        let release = lanes.try_enter(Kind::Release, "oss@x.org");
        assert!(
            release.is_some(),
            "lifted notices, copies and a hook fill other lanes"
        );
        assert!(
            lanes.try_enter(Kind::Hook, "other").is_some(),
            "another hook's lane"
        );
        held.clear();
        assert!(lanes.try_enter(Kind::Lifted, "a@x.org").is_some());
        assert!(lanes.try_enter(Kind::Hook, "stuck").is_some());
    }

    /// A delivery whose smarthost answered gives its place to send back
    /// (and the dispatch is told, with the place already free), but holds
    /// its place in the lane until it ends: at most `concurrency` send at
    /// once, and at most `PLACES_PER_SENDER` times that are in the lane.
    #[tokio::test]
    async fn places_to_send_come_back_at_the_answer_and_the_lane_stays_bounded() {
        for bound in [1, 3] {
            let lanes = Lanes::new(bound);
            let mut sending: Vec<LanePermit> = (0..bound)
                .map(|_| lanes.try_enter(Kind::Copy, "a@x.org").unwrap())
                .collect();
            assert!(
                lanes.try_enter(Kind::Copy, "a@x.org").is_none(),
                "{bound} sending"
            );
            let mut awaiting = Vec::new();
            for _ in 1..PLACES_PER_SENDER {
                for mut p in std::mem::take(&mut sending) {
                    p.sent();
                    // Told, and the place is free when the dispatch looks.
                    tokio::time::timeout(Duration::from_secs(5), lanes.freed.notified())
                        .await
                        .expect("told");
                    awaiting.push(p);
                    sending.push(
                        lanes
                            .try_enter(Kind::Copy, "a@x.org")
                            .expect("a place to send"),
                    );
                }
            }
            assert_eq!(awaiting.len() + sending.len(), PLACES_PER_SENDER * bound);
            assert!(
                lanes.try_enter(Kind::Copy, "a@x.org").is_none(),
                "{bound}: the lane is full"
            );
            for p in &mut sending {
                p.sent();
            }
            assert!(
                lanes.try_enter(Kind::Copy, "a@x.org").is_none(),
                "{bound}: none committed"
            );
            // One outcome committed (its delivery ended): one place more.
            drop(awaiting.pop());
            tokio::time::timeout(Duration::from_secs(5), lanes.freed.notified())
                .await
                .expect("told");
            let next = lanes.try_enter(Kind::Copy, "a@x.org");
            assert!(next.is_some(), "{bound}");
            assert!(lanes.try_enter(Kind::Copy, "a@x.org").is_none(), "{bound}");
        }
    }
}
