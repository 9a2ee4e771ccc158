//! One delivery, start to end: the row checked again, held or postponed
//! when its time has not really come, built, sent, and its outcome recorded
//! (a retry with backoff, a failure, the PST's receipt once every copy was
//! tried).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::context::Relay;
use crate::outbound;
use crate::record::Record;
use crate::spool::{DueDelivery, Finished, Kind, Outcome, Recording, SpoolError};

use super::build::{BuildError, build};
use super::{Stall, Worker, blocking, key, lock, open};

/// Queues the receipts a crash kept from being queued (see
/// `Spool::receipts_owed`): the PST always hears what happened.
pub(super) async fn owed_receipts(relay: &Arc<Relay>) {
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
pub(super) async fn receipt_when_tried(
    relay: &Arc<Relay>,
    a: &Record,
    d: &DueDelivery,
) -> Result<(), Stall> {
    let (r, id, to, now) = (
        relay.clone(),
        d.message_id.clone(),
        a.from.clone(),
        relay.clock.now(),
    );
    blocking(move || r.spool.queue_receipt_when_tried(&id, &to, now)).await??;
    Ok(())
}

/// Seals and sends one delivery under its lane's `permit` (its place to
/// send given back once the smarthost answered or nothing will be sent,
/// its place in the lane when it ends); records how it ended, with the PST's
/// receipt once every member copy was tried. An error means the outcome
/// could not be recorded, and the worker must pause.
pub(super) async fn deliver_one(
    w: &Worker,
    announcement: &Arc<Record>,
    d: &DueDelivery,
    mut permit: super::LanePermit,
) -> Result<(), Stall> {
    let (relay, outbound, shutdown) = (&w.relay, &w.outbound, &w.shutdown);
    // For a member copy, where its receipt goes.
    let receipt = (d.kind == Kind::Copy).then_some(announcement.from.as_str());
    let key = key(d);
    let known = lock(&w.unrecorded).get(&key).cloned();
    if let Some(answer) = known {
        permit.sent();
        finish(w, d, Finished::Sent, answer, receipt).await?;
        lock(&w.unrecorded).remove(&key);
        return Ok(());
    }
    // A release or a lifted notice is looked at before its checks below;
    // any other delivery in the same step as it is built.
    let timely = matches!(
        d.kind,
        Kind::Release | Kind::Lifted | Kind::Hook | Kind::CancelHook
    );
    let (r, dd, now) = (relay.clone(), d.clone(), relay.clock.now());
    if timely && !blocking(move || r.spool.still_due(&dd, now)).await?? {
        permit.sent();
        return changed(relay, announcement, d).await;
    }
    // One configuration and roster for this whole delivery, whatever a
    // SIGHUP does meanwhile.
    let r = Arc::new(crate::context::Pinned::new(relay.clone()));
    let (a, dd) = (announcement.clone(), d.clone());
    if matches!(d.kind, Kind::Release | Kind::Hook) && d.embargo_cancelled {
        permit.sent();
        // Never publish a cancelled embargo's advisory, whatever the row says.
        return finish(
            w,
            d,
            Finished::Skipped,
            "the embargo was cancelled: nothing published".to_owned(),
            None,
        )
        .await;
    }
    let at_the_time =
        matches!(d.kind, Kind::Release | Kind::Lifted | Kind::Hook) && !d.embargo_cancelled;
    if at_the_time && relay.clock.now() < announcement.terms.until {
        permit.sent();
        // Never early: the clock is checked now, not only when the row fell due.
        return postpone(w, d, announcement.terms.until).await;
    }
    // Held only while the time that really passed has not reached the
    // embargo: a leap long before it, or a clock set right, holds nothing.
    // (Asked of the clock only for what goes out at the lift.)
    let leapt = at_the_time.then(|| relay.clock.leap()).is_some_and(|leap| {
        leap > crate::clock::LEAP_LIMIT && relay.clock.now() - leap < announcement.terms.until
    });
    if leapt {
        let (spool_of, id) = (relay.clone(), d.message_id.clone());
        let operator_lifted =
            blocking(move || spool_of.spool.audited(&id, "released-now")).await??;
        if !operator_lifted {
            permit.sent();
            return hold_for_leap(&r, announcement, d).await;
        }
    }
    if d.kind.is_hook() {
        return call_hook(w, &r, announcement, d, permit).await;
    }
    // A builder that panics fails this delivery, with the reason, instead
    // of pausing the whole fan-out on it again and again.
    let pinned = r.clone();
    let now = relay.clock.now();
    let built = blocking(move || {
        if !timely && !r.spool.still_due(&dd, now)? {
            return Ok(None);
        }
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&r, &a, &dd)));
        Ok::<_, SpoolError>(Some(built))
    })
    .await??;
    // Built (or not): what follows is sending, or only recording; the
    // place to send is kept only for sending.
    let Some(built) = built else {
        permit.sent();
        return changed(relay, announcement, d).await;
    };
    if !matches!(built, Ok(Ok(_))) {
        permit.sent();
    }
    let Ok(built) = built else {
        tracing::error!(message_id = %d.message_id, member = %d.to, kind = ?d.kind, "building the message panicked; the delivery fails");
        return finish(
            w,
            d,
            Finished::Failed,
            "the message could not be built (internal error)".to_owned(),
            receipt,
        )
        .await;
    };
    let message = match built {
        Ok(m) => m,
        Err(BuildError::Recipient(reason)) => {
            tracing::warn!(message_id = %d.message_id, member = %d.to, %reason, "member skipped: no usable encryption key, nothing sent");
            // A member who misses a copy or a post is told so (not what).
            let notice = matches!(d.kind, Kind::Copy | Kind::Post)
                .then(|| super::build::skipped_notice(&pinned, d, &reason))
                .flatten();
            let outcome = Outcome::Finished {
                state: Finished::Skipped,
                detail: reason,
                notice: notice.map(|n| (d.to.clone(), n)),
            };
            return record(w, d, outcome, receipt).await;
        }
        Err(BuildError::NotNeeded(reason)) => {
            tracing::info!(message_id = %d.message_id, member = %d.to, %reason, "nothing to send");
            return finish(w, d, Finished::Skipped, reason, receipt).await;
        }
        Err(BuildError::Seal(reason)) => {
            // E.g. the list's signing key expired: the operator can fix that, so retry.
            tracing::error!(message_id = %d.message_id, member = %d.to, %reason, "sealing a copy failed");
            return defer(
                w,
                &pinned.config(),
                d,
                format!("sealing failed: {reason}"),
                receipt,
            )
            .await;
        }
        Err(BuildError::Spool(e)) => return Err(Stall::Spool(e)),
    };
    crate::failpoint::hit("before-send");
    let config = pinned.config();
    // Its own envelope sender: a bounce names this delivery (VERP).
    let sender = d
        .bounce_token
        .as_deref()
        .map_or_else(|| config.list_address.clone(), |t| config.bounce_address(t));
    let send = outbound.send(&sender, &d.to, &message);
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
    // The smarthost has answered: the place to send is free for the next
    // delivery while this outcome is recorded.
    drop(message);
    permit.sent();
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
                    tracing::info!(message_id = %d.message_id, member = %d.to, kind = ?d.kind, "copy delivered to the smarthost");
                    format!("smarthost answered {answer}")
                }
                Kind::Release => {
                    let (detail, late) = released(&pinned, announcement, d, &answer);
                    late_release = late;
                    detail
                }
                Kind::Receipt
                | Kind::Lifted
                | Kind::Reminder
                | Kind::Refusal
                | Kind::Notice
                | Kind::Hook
                | Kind::CancelHook => {
                    tracing::info!(message_id = %d.message_id, to = %d.to, kind = ?d.kind, "notice sent");
                    format!("smarthost answered {answer}")
                }
            };
            let recorded = finish(w, d, Finished::Sent, answer.clone(), receipt).await;
            if recorded.is_err() {
                lock(&w.unrecorded).insert(key, answer);
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
            tracing::warn!(message_id = %d.message_id, member = %d.to, error = %e, "copy refused permanently");
            finish(w, d, Finished::Failed, e.detail, receipt).await
        }
        Err(e) => defer(w, &pinned.config(), d, e.detail, receipt).await,
    }
}

/// Calls a release hook (`hook.rs`) and records how it went.
async fn call_hook(
    w: &Worker,
    pinned: &crate::context::Pinned,
    a: &Record,
    d: &DueDelivery,
    mut permit: super::LanePermit,
) -> Result<(), Stall> {
    use super::hook::Called;
    let called = super::hook::call(pinned, &w.shutdown, a, d).await;
    permit.sent();
    match called {
        Called::Sent(detail) => {
            crate::failpoint::hit("hook-called");
            let recorded = finish(w, d, Finished::Sent, detail.clone(), None).await;
            if recorded.is_err() {
                // Never called again while the spool cannot say it was.
                lock(&w.unrecorded).insert(key(d), detail);
            }
            recorded
        }
        Called::Retry(detail) => defer(w, &pinned.config(), d, detail, None).await,
        Called::Failed(detail) => finish(w, d, Finished::Failed, detail, None).await,
        Called::Abandoned => Ok(()),
    }
}

/// A delivery whose row changed after it was read (extended, cancelled,
/// re-queued): not sent; for a member copy, the receipt is looked at.
async fn changed(relay: &Arc<Relay>, a: &Arc<Record>, d: &DueDelivery) -> Result<(), Stall> {
    tracing::debug!(message_id = %d.message_id, to = %d.to, kind = ?d.kind, "changed since it was read; skipped");
    if d.kind == Kind::Copy {
        receipt_when_tried(relay, a, d).await?;
    }
    Ok(())
}

/// Logs a public release and says how late it was, if it was.
pub(super) fn released(
    relay: &crate::context::Pinned,
    a: &Record,
    d: &DueDelivery,
    answer: &str,
) -> (String, bool) {
    let late = relay.clock.now() - a.terms.until;
    relay.counters.released(
        &relay.config().list_address,
        late.num_milliseconds() as f64 / 1000.0,
    );
    if late > relay.config().policy.late_after {
        tracing::warn!(message_id = %d.message_id, public_list = %d.to, late_s = late.num_seconds(), "public advisory released LATE");
        let detail = format!(
            "public advisory released {} s late; smarthost answered {answer}",
            late.num_seconds()
        );
        (detail, true)
    } else {
        tracing::info!(message_id = %d.message_id, public_list = %d.to, "public advisory released");
        (
            format!("public advisory released on time; smarthost answered {answer}"),
            false,
        )
    }
}

/// How long a release held for a clock leap waits before it is looked at again.
pub(super) const LEAP_RECHECK: chrono::Duration = chrono::Duration::minutes(10);

/// Holds a release (or a lifted notice) whose time came only because the
/// wall clock leapt ahead while the daemon ran: a host clock set far into
/// the future must not publish every held advisory at once. The operator
/// (log, audit) and the PST (a signed, encrypted notice) are told once per
/// announcement; `embargo release-now` still releases it.
pub(super) async fn hold_for_leap(
    relay: &Arc<crate::context::Pinned>,
    a: &Record,
    d: &DueDelivery,
) -> Result<(), Stall> {
    let leap = relay.clock.leap();
    tracing::error!(message_id = %d.message_id, recipient = %d.to, leap_s = leap.num_seconds(), "the wall clock leapt ahead of the time that passed: held, not released; check the clock, then `embargo-relay embargo release-now` if the embargo really is over");
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
            match notice.seal(&r.config().list_key) {
                Ok(sealed) => r.spool.queue_notice_to_pst(
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

/// Puts a release back until its embargo time (the clock went backwards).
pub(super) async fn postpone(
    w: &Worker,
    d: &DueDelivery,
    until: DateTime<Utc>,
) -> Result<(), Stall> {
    tracing::warn!(message_id = %d.message_id, public_list = %d.to, "release due but the embargo has not lifted by the clock; postponed");
    let outcome = Outcome::Later {
        error: "embargo not lifted yet by the clock".to_owned(),
        next: until,
        failed: false,
    };
    record(w, d, outcome, None).await
}

/// Schedules the next attempt of a delivery after a transient failure, or
/// gives it up once `outbound.retry_lifetime` has passed since its first
/// failure (the PST hears of it in a fresh receipt).
pub(super) async fn defer(
    w: &Worker,
    config: &crate::config::Config,
    d: &DueDelivery,
    error: String,
    receipt: Option<&str>,
) -> Result<(), Stall> {
    let relay = &w.relay;
    let cfg = &config.outbound;
    let now = relay.clock.now();
    let lifetime = chrono::Duration::from_std(cfg.retry_lifetime).unwrap_or(chrono::Duration::MAX);
    if let Some(first) = d.first_failed
        && now - first >= lifetime
    {
        let detail = format!(
            "gave up after {} of retries (outbound.retry_lifetime); the last answer: {error}",
            crate::config::human_duration(cfg.retry_lifetime)
        );
        tracing::error!(message_id = %d.message_id, member = %d.to, kind = ?d.kind, %error, "delivery given up");
        return finish(w, d, Finished::Failed, detail, receipt).await;
    }
    let delay = outbound::backoff(cfg.retry_initial, cfg.retry_max, d.attempts);
    let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
    tracing::warn!(message_id = %d.message_id, member = %d.to, %error, retry_in_s = delay.as_secs(), "copy deferred");
    let outcome = Outcome::Later {
        error,
        next,
        failed: true,
    };
    record(w, d, outcome, receipt).await
}

/// Records how a delivery ended (sent, skipped or failed), with its audit
/// record; for a member copy, `receipt` is the PST's address.
pub(super) async fn finish(
    w: &Worker,
    d: &DueDelivery,
    state: Finished,
    detail: String,
    receipt: Option<&str>,
) -> Result<(), Stall> {
    let outcome = Outcome::Finished {
        state,
        detail,
        notice: None,
    };
    record(w, d, outcome, receipt).await
}

/// Records an outcome with the others that end about now (group commit);
/// returns once it is durable.
async fn record(
    w: &Worker,
    d: &DueDelivery,
    outcome: Outcome,
    receipt: Option<&str>,
) -> Result<(), Stall> {
    // A receipt sent again is due at once: the dispatch is told (it may
    // be waiting on a full lane and not read the spool for a while).
    let wake = outcome.redoes_receipt(d);
    let recording = Recording {
        delivery: d.clone(),
        outcome,
        at: w.relay.clock.now(),
        receipt_to: receipt.map(str::to_owned),
    };
    w.recorder.record(recording).await?;
    if wake {
        w.relay.wake.notify_one();
    }
    Ok(())
}
