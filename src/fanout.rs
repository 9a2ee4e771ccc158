//! Fan-out: turns pending deliveries into one sealed copy per member and
//! hands each to the outbound transport; a member without a usable key is
//! skipped (never sent plaintext), a transient failure is retried with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::Relay;
use crate::crypto::SealError;
use crate::embargo;
use crate::outbound::{self, CopyHeaders, Outbound};
use crate::record::Record;
use crate::spool::{DueDelivery, Finished, Kind, SpoolError};

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
        d.member.clone(),
        d.kind,
        d.copy_id.clone(),
    )
}

/// The two lanes deliveries run in, each bounded by `outbound.concurrency`:
/// public releases and lifted notices have their own, so a fan-out that
/// fills the other lane (or a dead member server holding its slots) never
/// delays them.
struct Lanes {
    timely: Arc<Semaphore>,
    other: Arc<Semaphore>,
}

impl Lanes {
    fn new(bound: usize) -> Lanes {
        Lanes {
            timely: Arc::new(Semaphore::new(bound)),
            other: Arc::new(Semaphore::new(bound)),
        }
    }

    fn try_enter(&self, kind: Kind) -> Option<OwnedSemaphorePermit> {
        let lane = if matches!(kind, Kind::Release | Kind::Lifted) {
            &self.timely
        } else {
            &self.other
        };
        lane.clone().try_acquire_owned().ok()
    }
}

/// Delivers until `shutdown`; woken early by `relay.wake`. Each due
/// delivery runs as its own task, at most `outbound.concurrency` at once
/// per lane. If an outcome cannot be recorded, the worker pauses (doubling
/// up to a minute) and remembers what was sent, so nothing is sent twice
/// while it waits. On shutdown it waits for the deliveries in flight:
/// copies are abandoned (sent again after restart), a release is finished.
pub async fn run(relay: Arc<Relay>, outbound: Outbound, shutdown: CancellationToken) {
    let lanes = Lanes::new(relay.config().outbound.concurrency);
    let unrecorded: Arc<Unrecorded> = Arc::default();
    let mut flying = Flying::default();
    let mut tasks: JoinSet<Result<(), Stall>> = JoinSet::new();
    let mut opened: HashMap<String, Arc<Record>> = HashMap::new();
    let mut pause = FIRST_PAUSE;
    let mut stalled: Option<Stall> = None;
    owed_receipts(&relay).await;
    loop {
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
            relay: &relay,
            outbound: &outbound,
            shutdown: &shutdown,
            lanes: &lanes,
            unrecorded: &unrecorded,
        };
        // One time for both: a row that falls due in between is neither
        // missed by the dispatch nor slept past.
        let now = relay.clock.now();
        match job
            .dispatch(now, &mut flying, &mut tasks, &mut opened)
            .await
        {
            Ok(()) => pause = FIRST_PAUSE,
            Err(e) => {
                stalled = Some(e);
                continue;
            }
        }
        let wake_at = next_wake(&relay, now).await;
        relay.health.idle();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = relay.wake.notified() => {}
            _ = relay.clock.sleep_until(wake_at) => {}
            _ = spool_changed(&relay) => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                flying.landed(done, &mut stalled);
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
    /// may be dispatched again (a panicked task's row is retried).
    fn landed(
        &mut self,
        done: Result<(tokio::task::Id, Result<(), Stall>), tokio::task::JoinError>,
        stalled: &mut Option<Stall>,
    ) {
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
        if let Some(key) = self.tasks.remove(&id) {
            self.rows.remove(&key);
        }
        if let Err(e) = outcome {
            *stalled = Some(e);
        }
    }
}

/// What starting delivery tasks needs.
struct Dispatch<'a> {
    relay: &'a Arc<Relay>,
    outbound: &'a Outbound,
    shutdown: &'a CancellationToken,
    lanes: &'a Lanes,
    unrecorded: &'a Arc<Unrecorded>,
}

impl Dispatch<'_> {
    /// Starts a task for each due delivery not already in flight, as far as
    /// its lane has room. An announcement is opened once and shared by its
    /// tasks; `opened` keeps it while it still has due deliveries.
    async fn dispatch(
        &self,
        now: DateTime<Utc>,
        flying: &mut Flying,
        tasks: &mut JoinSet<Result<(), Stall>>,
        opened: &mut HashMap<String, Arc<Record>>,
    ) -> Result<(), Stall> {
        let relay = self.relay;
        let r = relay.clone();
        let limit = BATCH + flying.rows.len();
        let due = blocking(move || {
            crate::failpoint::hit("fanout-dispatch");
            r.spool.due(now, limit)
        })
        .await??;
        opened.retain(|id, _| due.iter().any(|d| &d.message_id == id));
        relay.seals.retain(|id, until| {
            due.iter()
                .any(|d| d.message_id == id && until.is_none_or(|until| until == d.embargo_until))
        });
        for d in due {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let k = key(&d);
            if flying.rows.contains(&k) {
                continue;
            }
            let Some(permit) = self.lanes.try_enter(d.kind) else {
                continue;
            };
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
                                relay,
                                &d,
                                format!("cannot open the spooled announcement: {e}"),
                            )
                            .await?;
                            // (No receipt: its address is inside what cannot be opened.)
                            continue;
                        }
                    }
                }
            };
            let (relay, outbound, shutdown, unrecorded) = (
                relay.clone(),
                self.outbound.clone(),
                self.shutdown.clone(),
                self.unrecorded.clone(),
            );
            let task = tasks.spawn(async move {
                let outcome =
                    deliver_one(&relay, &outbound, &announcement, &d, &shutdown, &unrecorded).await;
                drop(permit);
                match outcome {
                    Ok(()) if d.kind == Kind::Copy => {
                        receipt_when_tried(&relay, &announcement, &d).await
                    }
                    other => other,
                }
            });
            flying.start(task.id(), k);
        }
        Ok(())
    }
}

/// Queues the receipts a crash kept from being queued (see
/// `Spool::receipts_owed`): the PST always hears what happened.
async fn owed_receipts(relay: &Arc<Relay>) {
    let r = relay.clone();
    let owed = match blocking(move || r.spool.receipts_owed()).await {
        Ok(Ok(owed)) => owed,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot look for receipts owed");
            return;
        }
        Err(_) => return,
    };
    for id in owed {
        let (r, message_id) = (relay.clone(), id.clone());
        let queued = blocking(move || -> Result<bool, String> {
            let a = match open(&r, &message_id).map_err(|e| e.to_string())? {
                Ok(a) => a,
                Err(e) => return Err(e.to_string()),
            };
            r.spool
                .queue_receipt_when_tried(&message_id, &a.from, r.clock.now())
                .map_err(|e| e.to_string())
        })
        .await;
        match queued {
            Ok(Ok(true)) => tracing::info!(message_id = %id, "receipt owed since a crash: queued"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(message_id = %id, error = %e, "cannot queue a receipt owed")
            }
            Err(_) => {}
        }
    }
    relay.wake.notify_one();
}

/// Queues the PST's receipt once every member copy has been tried.
async fn receipt_when_tried(relay: &Arc<Relay>, a: &Record, d: &DueDelivery) -> Result<(), Stall> {
    let (r, id, to, now) = (
        relay.clone(),
        d.message_id.clone(),
        a.from.clone(),
        relay.clock.now(),
    );
    blocking(move || r.spool.queue_receipt_when_tried(&id, &to, now)).await??;
    Ok(())
}

/// Resolves when another process (the operator's CLI) has committed to the
/// spool; checked once a second, a cheap pragma read.
async fn spool_changed(relay: &Arc<Relay>) {
    let version = |relay: &Arc<Relay>| {
        let r = relay.clone();
        async move {
            blocking(move || r.spool.data_version())
                .await
                .ok()
                .and_then(Result::ok)
        }
    };
    let start = version(relay).await;
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

/// Seals and sends one copy; records how it ended. An error means the
/// outcome could not be recorded, and the worker must pause.
async fn deliver_one(
    relay: &Arc<Relay>,
    outbound: &Outbound,
    announcement: &Arc<Record>,
    d: &DueDelivery,
    shutdown: &CancellationToken,
    unrecorded: &Unrecorded,
) -> Result<(), Stall> {
    let key = key(d);
    let known = lock(unrecorded).get(&key).cloned();
    if let Some(answer) = known {
        finish(relay, d, Finished::Sent, answer).await?;
        lock(unrecorded).remove(&key);
        return Ok(());
    }
    let (r, dd, now) = (relay.clone(), d.clone(), relay.clock.now());
    if !blocking(move || r.spool.still_due(&dd, now)).await?? {
        tracing::debug!(message_id = %d.message_id, to = %d.member, kind = ?d.kind, "changed since it was read; skipped");
        return Ok(());
    }
    let r = relay.clone();
    let (a, dd) = (announcement.clone(), d.clone());
    if d.kind == Kind::Release && d.embargo_cancelled {
        // Never publish a cancelled embargo's advisory, whatever the row says.
        return finish(
            relay,
            d,
            Finished::Skipped,
            "the embargo was cancelled: nothing published".to_owned(),
        )
        .await;
    }
    let at_the_time = matches!(d.kind, Kind::Release | Kind::Lifted) && !d.embargo_cancelled;
    if at_the_time && relay.clock.now() < announcement.terms.until {
        // Never early: the clock is checked now, not only when the row fell due.
        return postpone(relay, d, announcement.terms.until).await;
    }
    // Held only while the time that really passed has not reached the
    // embargo: a leap long before it, or a clock set right, holds nothing.
    let leap = relay.clock.leap();
    if at_the_time && leap > LEAP_LIMIT && relay.clock.now() - leap < announcement.terms.until {
        let (r, id) = (relay.clone(), d.message_id.clone());
        let operator_lifted = blocking(move || r.spool.audited(&id, "released-now")).await??;
        if !operator_lifted {
            return hold_for_leap(relay, announcement, d).await;
        }
    }
    // A builder that panics fails this delivery, with the reason, instead
    // of pausing the whole fan-out on it again and again.
    let built = blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&r, &a, &dd)))
    })
    .await?;
    let Ok(built) = built else {
        tracing::error!(message_id = %d.message_id, member = %d.member, kind = ?d.kind, "building the message panicked; the delivery fails");
        return finish(
            relay,
            d,
            Finished::Failed,
            "the message could not be built (internal error)".to_owned(),
        )
        .await;
    };
    let message = match built {
        Ok(m) => m,
        Err(SealError::Recipient(reason)) => {
            tracing::warn!(message_id = %d.message_id, member = %d.member, %reason, "member skipped: no usable encryption key, nothing sent");
            return finish(relay, d, Finished::Skipped, reason).await;
        }
        Err(SealError::Crypto(reason)) => {
            // E.g. the list's signing key expired: the operator can fix that, so retry.
            tracing::error!(message_id = %d.message_id, member = %d.member, %reason, "sealing a copy failed");
            return defer(relay, d, format!("sealing failed: {reason}")).await;
        }
    };
    crate::failpoint::hit("before-send");
    let config = relay.config();
    let send = outbound.send(&config.list_address, &d.member, &message);
    let sent = if d.kind == Kind::Release {
        // A public release is not abandoned halfway on shutdown (the list
        // might get it twice); it ends within the smarthost timeout.
        send.await
    } else {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()), // still pending: sent again after restart
            sent = send => sent,
        }
    };
    match sent {
        Ok(answer) => {
            crate::failpoint::hit(if d.kind == Kind::Release {
                "release-sent"
            } else {
                "after-send"
            });
            let mut late_release = false;
            let answer = match d.kind {
                Kind::Copy | Kind::Post => {
                    tracing::info!(message_id = %d.message_id, member = %d.member, kind = ?d.kind, "copy delivered to the smarthost");
                    format!("smarthost answered {answer}")
                }
                Kind::Release => {
                    let (detail, late) = released(relay, announcement, d, &answer);
                    late_release = late;
                    detail
                }
                Kind::Receipt | Kind::Lifted | Kind::Reminder | Kind::Refusal | Kind::Notice => {
                    tracing::info!(message_id = %d.message_id, to = %d.member, kind = ?d.kind, "notice sent");
                    format!("smarthost answered {answer}")
                }
            };
            let recorded = finish(relay, d, Finished::Sent, answer.clone()).await;
            if recorded.is_err() {
                lock(unrecorded).insert(key, answer);
            } else if late_release {
                // The PST hears how late, in a fresh receipt (only once the
                // release itself is recorded: a failure here re-sends nothing).
                let (r, id, to, now) = (
                    relay.clone(),
                    d.message_id.clone(),
                    announcement.from.clone(),
                    relay.clock.now(),
                );
                if let Err(e) = blocking(move || r.spool.requeue_receipt(&id, &to, now)).await? {
                    tracing::error!(error = %e, "could not queue the late-release receipt");
                }
            }
            recorded
        }
        Err(e) if e.permanent => {
            tracing::warn!(message_id = %d.message_id, member = %d.member, error = %e, "copy refused permanently");
            finish(relay, d, Finished::Failed, e.detail).await
        }
        Err(e) => defer(relay, d, e.detail).await,
    }
}

/// Logs a public release and says how late it was, if it was.
fn released(relay: &Relay, a: &Record, d: &DueDelivery, answer: &str) -> (String, bool) {
    let late = relay.clock.now() - a.terms.until;
    if late > relay.config().policy.late_after {
        tracing::warn!(message_id = %d.message_id, public_list = %d.member, late_s = late.num_seconds(), "public advisory released LATE");
        let detail = format!(
            "public advisory released {} s late; smarthost answered {answer}",
            late.num_seconds()
        );
        (detail, true)
    } else {
        tracing::info!(message_id = %d.message_id, public_list = %d.member, "public advisory released");
        (
            format!("public advisory released on time; smarthost answered {answer}"),
            false,
        )
    }
}

/// Puts a release back until its embargo time (the clock went backwards).
/// How far the wall clock may run ahead of the time that passed before
/// releases are held: NTP's steps are seconds, a wrong clock hours or years.
pub const LEAP_LIMIT: chrono::Duration = chrono::Duration::minutes(10);

/// How long a release held for a clock leap waits before it is looked at again.
const LEAP_RECHECK: chrono::Duration = chrono::Duration::minutes(10);

/// Holds a release (or a lifted notice) whose time came only because the
/// wall clock leapt ahead while the daemon ran: a host clock set far into
/// the future must not publish every held advisory at once. The operator
/// (log, audit) and the PST (a signed, encrypted notice) are told once per
/// announcement; `embargo release-now` still releases it.
async fn hold_for_leap(relay: &Arc<Relay>, a: &Record, d: &DueDelivery) -> Result<(), Stall> {
    let leap = relay.clock.leap();
    tracing::error!(message_id = %d.message_id, recipient = %d.member, leap_s = leap.num_seconds(), "the wall clock leapt ahead of the time that passed: held, not released; check the clock, then `embargo-relay embargo release-now` if the embargo really is over");
    let (r, dd, a) = (relay.clone(), d.clone(), a.clone());
    Ok(blocking(move || -> Result<(), SpoolError> {
        let now = r.clock.now();
        let detail = format!(
            "the wall clock ran {} min ahead of the time that passed: the release and the members' notices are held until the time that passed reaches the embargo, or an operator runs release-now",
            leap.num_minutes()
        );
        if r.spool.audit_once(now, "release-held", &dd.message_id, &detail)? {
            let text = format!(
                "The clock of the list's host jumped {} minutes ahead of the time that really passed.\n\n\
The public advisory of announcement {} (embargo until {} UTC) and the members' notices that it lifted\n\
are held rather than sent on that clock. The operator is told the same. They go out by themselves once the\n\
time that really passed reaches the embargo; if the embargo really is over sooner, the operator releases\n\
it with `embargo-relay embargo release-now {}`.\n",
                leap.num_minutes(),
                dd.message_id,
                a.terms.until.format("%Y-%m-%d %H:%M:%S"),
                dd.message_id
            );
            let notice = Record::unembargoed(
                a.signer.clone(),
                a.from.clone(),
                format!("Release held: {}", a.subject),
                crate::secret::Secret::new(text.into_bytes()),
                now,
            );
            let p = crate::crypto::policy();
            match r.config().list_key.seal_to_self(&p, notice.to_bytes().expose()) {
                Ok(sealed) => r.spool.queue_refusal(
                    &format!("{}-clock", dd.message_id),
                    &a.signer,
                    &a.from,
                    &sealed,
                    &[],
                    None,
                    now,
                )?,
                Err(e) => tracing::error!(error = %e, "cannot seal the notice to the PST"),
            }
            r.wake.notify_one();
        }
        // Looked at again when the time that passed reaches the embargo
        // (on this clock, its time plus the leap), and every LEAP_RECHECK
        // in case the clock is set right sooner. Not an attempt.
        let due = a.terms.until + leap;
        r.spool.hold_until(
            &dd,
            "held: the wall clock leapt ahead of the time that passed",
            due.min(now + LEAP_RECHECK),
        )
    })
    .await??)
}

async fn postpone(relay: &Arc<Relay>, d: &DueDelivery, until: DateTime<Utc>) -> Result<(), Stall> {
    tracing::warn!(message_id = %d.message_id, public_list = %d.member, "release due but the embargo has not lifted by the clock; postponed");
    let (r, dd, now) = (relay.clone(), d.clone(), relay.clock.now());
    Ok(blocking(move || {
        r.spool.retry_later(
            &dd,
            "embargo not lifted yet by the clock",
            until,
            now,
            false,
        )
    })
    .await??)
}

/// Schedules the next attempt of a delivery after a transient failure, or
/// gives it up once `outbound.retry_lifetime` has passed since its first
/// failure (the PST hears of it in a fresh receipt).
async fn defer(relay: &Arc<Relay>, d: &DueDelivery, error: String) -> Result<(), Stall> {
    let cfg = &relay.config().outbound;
    let now = relay.clock.now();
    let lifetime = chrono::Duration::from_std(cfg.retry_lifetime).unwrap_or(chrono::Duration::MAX);
    if let Some(first) = d.first_failed
        && now - first >= lifetime
    {
        let detail = format!(
            "gave up after {} of retries (outbound.retry_lifetime); the last answer: {error}",
            crate::config::human_duration(cfg.retry_lifetime)
        );
        tracing::error!(message_id = %d.message_id, member = %d.member, kind = ?d.kind, %error, "delivery given up");
        return finish(relay, d, Finished::Failed, detail).await;
    }
    let delay = outbound::backoff(cfg.retry_initial, cfg.retry_max, d.attempts);
    let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
    tracing::warn!(message_id = %d.message_id, member = %d.member, %error, retry_in_s = delay.as_secs(), "copy deferred");
    let (r, dd) = (relay.clone(), d.clone());
    Ok(blocking(move || r.spool.retry_later(&dd, &error, next, now, true)).await??)
}

/// Builds what a delivery sends: a member's sealed copy or a public release.
fn build(relay: &Relay, a: &Record, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    crate::failpoint::hit("build");
    match d.kind {
        Kind::Copy => seal_copy(
            relay,
            a,
            d,
            Some(a.terms.until),
            outbound::PLACEHOLDER_SUBJECT,
        ),
        Kind::Post => seal_copy(relay, a, d, None, outbound::POST_SUBJECT),
        Kind::Release => release_message(relay, a, d),
        Kind::Receipt => receipt_message(relay, a, d),
        Kind::Lifted => lifted_message(relay, a, d),
        Kind::Reminder => reminder_message(relay, a, d),
        Kind::Notice => notice_message(relay, a, d),
        Kind::Refusal => {
            let pst = pst_cert_for(relay, a, &d.member)?;
            let reason = String::from_utf8_lossy(a.entity.expose()).into_owned();
            notice(
                relay,
                a,
                d,
                &pst,
                &a.subject,
                &reason,
                outbound::REFUSAL_SUBJECT,
            )
        }
    }
}

/// The certificate that signed the announcement (receipts and reminders go to it).
fn signer_cert(relay: &Relay, a: &Record) -> Result<sequoia_openpgp::Cert, SealError> {
    relay
        .directory()
        .pst
        .iter()
        .find(|c| c.fingerprint().to_hex() == a.signer)
        .cloned()
        .ok_or_else(|| {
            SealError::Recipient("the signing PST certificate is no longer configured".to_owned())
        })
}

/// The PST certificate a receipt to `address` is encrypted to: the one
/// whose user ID it is (a command may come from another PST member), else
/// the announcement's signer.
fn pst_cert_for(
    relay: &Relay,
    a: &Record,
    address: &str,
) -> Result<sequoia_openpgp::Cert, SealError> {
    let p = crate::crypto::policy();
    let now = relay.clock.now();
    let has_address = |c: &sequoia_openpgp::Cert| {
        crate::crypto::valid_emails(c, &p, now)
            .iter()
            .any(|e| e.eq_ignore_ascii_case(address))
    };
    // The announcement's own signer first: PST members may share an address.
    if let Ok(signer) = signer_cert(relay, a)
        && has_address(&signer)
    {
        return Ok(signer);
    }
    let directory = relay.directory();
    let owner = directory.pst.iter().find(|c| {
        crate::crypto::valid_emails(c, &p, now)
            .iter()
            .any(|e| e.eq_ignore_ascii_case(address))
    });
    owner.cloned().map_or_else(|| signer_cert(relay, a), Ok)
}

/// The PST's receipt: what happened to the announcement, as it stands now.
fn receipt_message(relay: &Relay, a: &Record, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    let pst = pst_cert_for(relay, a, &d.member)?;
    let spool_error = |e: SpoolError| SealError::Crypto(e.to_string());
    let report = relay
        .spool
        .delivery_report(&d.message_id, Kind::Copy)
        .map_err(spool_error)?;
    let failed_releases: Vec<(String, String)> = relay
        .spool
        .delivery_report(&d.message_id, Kind::Release)
        .map_err(spool_error)?
        .into_iter()
        .filter(|(_, state, _)| state == "failed")
        .map(|(to, _, why)| (to, why.unwrap_or_default()))
        .collect();
    let releases = relay
        .spool
        .release_targets(&d.message_id)
        .map_err(spool_error)?;
    let state = match (d.embargo_cancelled, a.terms.until > relay.clock.now()) {
        (true, _) => "cancelled (the held advisory was discarded)",
        (false, true) => "held",
        (false, false) => "lifted",
    };
    let released: Vec<(String, String)> = relay
        .spool
        .audit_for(&d.message_id)
        .map_err(spool_error)?
        .into_iter()
        .filter(|r| r.event == "released")
        .map(|r| (r.member.unwrap_or_default(), r.detail))
        .collect();
    let mut text = receipt_text(
        relay,
        a,
        &d.message_id,
        state,
        &report,
        &releases,
        &released,
    );
    for (to, why) in &failed_releases {
        text.push_str(&format!(
            "\nTHE PUBLIC ADVISORY DID NOT REACH {to}: {why}\nPublish it there yourself.\n"
        ));
    }
    let subject = format!("Receipt: {}", a.subject);
    notice(
        relay,
        a,
        d,
        &pst,
        &subject,
        &text,
        outbound::RECEIPT_SUBJECT,
    )
}

/// The PST's reminder before the embargo lifts; says plainly if nothing will be published.
fn reminder_message(relay: &Relay, a: &Record, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    let pst = signer_cert(relay, a)?;
    let releases = relay
        .spool
        .release_targets(&d.message_id)
        .map_err(|e| SealError::Crypto(e.to_string()))?;
    let left = a.terms.until - relay.clock.now();
    let mut text = format!(
        "Reminder: the embargo on announcement {} lifts in about {} hours, at {} UTC ({} in the offset you wrote).\n\nSubject: {}\n\n",
        d.message_id,
        left.num_hours().max(0),
        a.terms.until.format("%Y-%m-%d %H:%M:%S"),
        a.terms
            .until
            .with_timezone(&a.terms.sender_offset)
            .format("%Y-%m-%d %H:%M:%S %:z"),
        a.subject,
    );
    text.push_str(&if releases.is_empty() {
        "NO PUBLIC ADVISORY IS HELD for this embargo: the list will publish nothing when it lifts. Publish the advisory yourself.\n".to_owned()
    } else {
        format!("Public advisory: held; it goes to {} when the embargo lifts.\n", releases.join(", "))
    });
    notice(
        relay,
        a,
        d,
        &pst,
        &format!("Reminder: {}", a.subject),
        &text,
        outbound::REMINDER_SUBJECT,
    )
}

/// A roster member's address and the certificate to encrypt to, or why
/// there is none (then the member is skipped, never sent plaintext).
fn member_cert(relay: &Relay, address: &str) -> Result<(String, sequoia_openpgp::Cert), SealError> {
    let directory = relay.directory();
    let member = directory
        .roster
        .find(address)
        .ok_or_else(|| SealError::Recipient("no longer on the roster".to_owned()))?;
    let cert = member
        .cert()
        .map_err(|e| SealError::Recipient(e.to_owned()))?;
    Ok((member.email.clone(), cert.clone()))
}

/// A delivery's Message-ID: its own random copy id, the same on every
/// retry of it (so a resend after a crash is recognisably the same mail),
/// and nothing that links it to the announcement or to other copies.
fn copy_message_id(relay: &Relay, d: &DueDelivery) -> String {
    format!("{}@{}", d.copy_id, relay.config().hostname)
}

/// A member's notice that the embargo has lifted.
fn lifted_message(relay: &Relay, a: &Record, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    let (_, cert) = member_cert(relay, &d.member)?;
    let releases = relay
        .spool
        .release_targets(&d.message_id)
        .map_err(|e| SealError::Crypto(e.to_string()))?;
    if d.embargo_cancelled {
        let text = format!(
            "The embargo on announcement {} was cancelled. The held public advisory was discarded; \
the list will publish nothing.\n\nSubject: {}\n\nKeep the announcement confidential until the PST says otherwise.\n",
            d.message_id, a.subject
        );
        let subject = format!("Embargo cancelled: {}", a.subject);
        return notice(
            relay,
            a,
            d,
            &cert,
            &subject,
            &text,
            outbound::LIFTED_SUBJECT,
        );
    }
    let mut text = format!(
        "The embargo on announcement {} lifted at {} UTC.\n\nSubject: {}\n\n",
        d.message_id,
        a.terms.until.format("%Y-%m-%d %H:%M:%S"),
        a.subject
    );
    text.push_str(&if releases.is_empty() {
        "The list published no advisory; the PST coordinates publication.\n".to_owned()
    } else {
        format!(
            "The public advisory has been sent to {}.\n",
            releases.join(", ")
        )
    });
    notice(
        relay,
        a,
        d,
        &cert,
        &format!("Embargo lifted: {}", a.subject),
        &text,
        outbound::LIFTED_SUBJECT,
    )
}

/// A short text from the list to one recipient: protected Subject inside,
/// signed by the list key, encrypted to `cert` alone.
fn notice(
    relay: &Relay,
    a: &Record,
    d: &DueDelivery,
    cert: &sequoia_openpgp::Cert,
    subject: &str,
    text: &str,
    outer_subject: &str,
) -> Result<Vec<u8>, SealError> {
    let part = format!(
        "Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        text.lines().map(|l| format!("{l}\r\n")).collect::<String>()
    );
    let message_id = copy_message_id(relay, d);
    let headers = CopyHeaders {
        list: &relay.config().list_address,
        member: &d.member,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    // A refusal or a key notice is about no embargo: no embargo notice.
    let until = (!matches!(d.kind, Kind::Refusal | Kind::Notice)).then_some(a.terms.until);
    let inner = outbound::protected_inner(&headers, subject, until, part.as_bytes())
        .map_err(|e| SealError::Crypto(format!("bad address: {e}")))?;
    let p = crate::crypto::policy();
    let armored = relay
        .config()
        .list_key
        .seal_for(&p, headers.date, cert, inner.expose())?;
    outbound::encrypted_outer(&headers, outer_subject, armored)
        .map_err(|e| SealError::Crypto(e.to_string()))
}

/// The receipt's text: embargo id and times, who got a copy, who did not and why.
fn receipt_text(
    relay: &Relay,
    a: &Record,
    message_id: &str,
    state: &str,
    report: &[(String, String, Option<String>)],
    releases: &[String],
    released: &[(String, String)],
) -> String {
    let directory = relay.directory();
    let organization = |m: &str| {
        directory
            .roster
            .find(m)
            .map(|m| m.organization.clone())
            .unwrap_or_default()
    };
    let list = |state: &str| -> String {
        report
            .iter()
            .filter(|(_, s, _)| s == state)
            .map(|(m, _, why)| {
                format!(
                    "  - {m} ({}): {}\n",
                    organization(m),
                    why.as_deref().unwrap_or("")
                )
            })
            .collect()
    };
    let sent = report.iter().filter(|(_, s, _)| s == "sent").count();
    let local = a.terms.until.with_timezone(&a.terms.sender_offset);
    let mut text = format!(
        "Your announcement was accepted and relayed by {}.\n\nEmbargo id:     {message_id}\nSubject:        {}\n\
Embargo state:  {state}\nEmbargo lifts:  {} UTC ({} in the offset you wrote)\nCopies sent:    {sent} of {} members\n",
        relay.config().list_address,
        a.subject,
        a.terms.until.format("%Y-%m-%d %H:%M:%S"),
        local.format("%Y-%m-%d %H:%M:%S %:z"),
        report.len(),
    );
    for (row_state, title) in [
        (
            "skipped",
            "Skipped (no usable key; nothing was sent to them, not even in plaintext)",
        ),
        ("pending", "Still being retried"),
        (
            "failed",
            "NOT DELIVERED (refused permanently, or given up after retries; the remote server's answer follows)",
        ),
    ] {
        let rows = list(row_state);
        if !rows.is_empty() {
            text.push_str(&format!("\n{title}:\n{rows}"));
        }
    }
    text.push_str(&if releases.is_empty() {
        "\nPublic advisory: none held. Nothing will be published by the list.\n".to_owned()
    } else if !released.is_empty() {
        let lines: String = released
            .iter()
            .map(|(to, detail)| format!("  - {to}: {detail}\n"))
            .collect();
        format!("\nPublic advisory:\n{lines}")
    } else {
        format!(
            "\nPublic advisory: held; it goes to {} when the embargo lifts.\n",
            releases.join(", ")
        )
    });
    text
}

/// A notice from the list to a roster member: encrypted to its key when
/// that key is usable, else signed only (it says nothing confidential:
/// which key has which problem).
fn notice_message(relay: &Relay, a: &Record, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    let text = String::from_utf8_lossy(a.entity.expose()).into_owned();
    let p = crate::crypto::policy();
    let pst = relay
        .directory()
        .roster
        .find(&d.member)
        .is_some_and(|m| m.pst);
    if let Ok((_, cert)) = member_cert(relay, &d.member)
        && crate::crypto::usable_for_encryption(&cert, &p, relay.clock.now()).is_ok()
    {
        return notice(
            relay,
            a,
            d,
            &cert,
            &a.subject,
            &text,
            outbound::NOTICE_SUBJECT,
        );
    }
    if pst {
        // A PST member's report names other members and their keys: only encrypted.
        return Err(SealError::Recipient(
            "the PST member's key cannot receive encrypted mail; the key report is not sent in the clear".to_owned(),
        ));
    }
    signed_in_clear(relay, d, &a.subject, &text)
}

/// The public advisory for one public list, signed by the list key.
fn release_message(relay: &Relay, a: &Record, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    let advisory = embargo::public_advisory(a.entity.expose())
        .ok_or_else(|| SealError::Crypto("the held public advisory is missing".to_owned()))?;
    signed_in_clear(relay, d, &a.subject, &advisory)
}

/// A plaintext text/plain message, RFC 3156 `multipart/signed` by the list key.
fn signed_in_clear(
    relay: &Relay,
    d: &DueDelivery,
    subject: &str,
    text: &str,
) -> Result<Vec<u8>, SealError> {
    let config = relay.config();
    let message_id = copy_message_id(relay, d);
    let headers = CopyHeaders {
        list: &config.list_address,
        member: &d.member,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    let p = crate::crypto::policy();
    let sign = |part: &[u8]| config.list_key.sign_detached(&p, headers.date, part);
    outbound::public_release(&headers, subject, text, sign)
        .map_err(|e| SealError::Crypto(e.to_string()))
}

/// Builds one member's copy: protected inner entity, sealed, wrapped in RFC 3156.
/// One member's copy: the entity in protected headers (with the embargo
/// notice for an announcement), signed and encrypted to that member alone.
fn seal_copy(
    relay: &Relay,
    a: &Record,
    d: &DueDelivery,
    until: Option<DateTime<Utc>>,
    outer_subject: &str,
) -> Result<Vec<u8>, SealError> {
    let (email, cert) = member_cert(relay, &d.member)?;
    let message_id = copy_message_id(relay, d);
    let config = relay.config();
    let headers = CopyHeaders {
        list: &config.list_address,
        member: &email,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    let p = crate::crypto::policy();
    if cert.primary_key().key().version() >= 6 {
        // A v6 key takes a v6 PKESK and SEIPDv2: sealed for it alone.
        let inner = outbound::protected_inner(&headers, &a.subject, until, a.entity.expose())
            .map_err(|e| SealError::Crypto(format!("bad address: {e}")))?;
        let armored = config
            .list_key
            .seal_for(&p, headers.date, &cert, inner.expose())?;
        return outbound::encrypted_outer(&headers, outer_subject, armored)
            .map_err(|e| SealError::Crypto(e.to_string()));
    }
    // The first copy's task seals the announcement once; the others wait
    // for it and add only their own PKESK.
    let shared = relay
        .seals
        .cell(&d.message_id, until)
        .get_or_try_init(|| {
            let inner_id = format!("{}@{}", d.message_id, config.hostname);
            let inner_headers = CopyHeaders {
                list: &config.list_address,
                // The same plaintext for every member: To is the list.
                member: &config.list_address,
                message_id: &inner_id,
                date: headers.date,
            };
            let inner =
                outbound::protected_inner(&inner_headers, &a.subject, until, a.entity.expose())
                    .map_err(|e| format!("bad address: {e}"))?;
            config
                .list_key
                .seal_shared(&p, headers.date, inner.expose())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .map_err(SealError::Crypto)?;
    let armored = config
        .list_key
        .seal_to_member(&p, headers.date, &cert, &shared)?;
    outbound::encrypted_outer(&headers, outer_subject, armored)
        .map_err(|e| SealError::Crypto(e.to_string()))
}

fn lock(unrecorded: &Unrecorded) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
    unrecorded.lock().unwrap_or_else(|e| e.into_inner())
}

async fn finish(
    relay: &Arc<Relay>,
    d: &DueDelivery,
    state: Finished,
    detail: String,
) -> Result<(), Stall> {
    let (r, dd) = (relay.clone(), d.clone());
    let now = relay.clock.now();
    Ok(blocking(move || r.spool.finish(&dd, state, &detail, now)).await??)
}
