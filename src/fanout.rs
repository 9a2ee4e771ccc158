//! Fan-out: turns pending deliveries into one sealed copy per member and
//! hands each to the outbound transport; a member without a usable key is
//! skipped (never sent plaintext), a transient failure is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use sequoia_openpgp::policy::StandardPolicy;
use tokio_util::sync::CancellationToken;

use crate::crypto::SealError;
use crate::daemon::Relay;
use crate::intake::Announcement;
use crate::outbound::{self, CopyHeaders, Outbound};
use crate::spool::{DueDelivery, Finished, SpoolError};

/// How many due deliveries are taken from the spool at a time.
const BATCH: usize = 256;
/// The longest the worker sleeps without looking at the spool again.
const IDLE: Duration = Duration::from_secs(60);

/// Delivers until `shutdown`; woken early by `relay.wake`.
pub async fn run(relay: Arc<Relay>, outbound: Outbound, shutdown: CancellationToken) {
    loop {
        match deliver_due(&relay, &outbound, &shutdown).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "fan-out could not read the spool"),
        }
        let wait = next_wait(&relay).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = relay.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn next_wait(relay: &Arc<Relay>) -> Duration {
    let r = relay.clone();
    let next = blocking(move || r.spool.next_due()).await.ok().flatten();
    match next {
        Some(at) => (at - relay.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(IDLE),
        None => IDLE,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("spool task panicked")
}

/// Works through one batch of due deliveries; returns how many it handled.
async fn deliver_due(
    relay: &Arc<Relay>,
    outbound: &Outbound,
    shutdown: &CancellationToken,
) -> Result<usize, SpoolError> {
    let r = relay.clone();
    let now = relay.clock.now();
    let due = blocking(move || r.spool.due(now, BATCH)).await?;
    let mut handled = 0;
    for group in due.chunk_by(|a, b| a.message_id == b.message_id) {
        let r = relay.clone();
        let id = group[0].message_id.clone();
        let opened = blocking(move || open(&r, &id)).await;
        let announcement = match opened {
            Ok(a) => Arc::new(a),
            Err(e) => {
                tracing::error!(message_id = %group[0].message_id, error = %e, "cannot open a spooled announcement");
                for d in group {
                    finish(
                        relay,
                        d,
                        Finished::Failed,
                        format!("spooled announcement unreadable: {e}"),
                    )
                    .await;
                }
                handled += group.len();
                continue;
            }
        };
        for d in group {
            if shutdown.is_cancelled() {
                return Ok(handled);
            }
            deliver_one(relay, outbound, &announcement, d, shutdown).await;
            handled += 1;
        }
    }
    Ok(handled)
}

fn open(relay: &Relay, message_id: &str) -> anyhow::Result<Announcement> {
    let sealed = relay.spool.sealed(message_id)?;
    let p = StandardPolicy::new();
    let plain = relay.config.list_key.open_from_self(&p, &sealed)?;
    Announcement::from_bytes(plain.expose()).ok_or_else(|| anyhow::anyhow!("unknown spool format"))
}

/// Seals and sends one copy; records how it ended.
async fn deliver_one(
    relay: &Arc<Relay>,
    outbound: &Outbound,
    announcement: &Arc<Announcement>,
    d: &DueDelivery,
    shutdown: &CancellationToken,
) {
    let r = relay.clone();
    let (a, dd) = (announcement.clone(), d.clone());
    let sealed = blocking(move || seal_copy(&r, &a, &dd)).await;
    let message = match sealed {
        Ok(m) => m,
        Err(SealError::Recipient(reason)) => {
            tracing::warn!(message_id = %d.message_id, member = %d.member, %reason, "member skipped: no usable encryption key, nothing sent");
            finish(relay, d, Finished::Skipped, reason).await;
            return;
        }
        Err(SealError::Crypto(reason)) => {
            tracing::error!(message_id = %d.message_id, member = %d.member, %reason, "sealing a copy failed");
            finish(relay, d, Finished::Failed, reason).await;
            return;
        }
    };
    let sent = tokio::select! {
        _ = shutdown.cancelled() => return, // still pending: sent again after restart
        sent = outbound.send(&relay.config.list_address, &d.member, &message) => sent,
    };
    match sent {
        Ok(answer) => {
            tracing::info!(message_id = %d.message_id, member = %d.member, "copy delivered to the smarthost");
            finish(
                relay,
                d,
                Finished::Sent,
                format!("smarthost answered {answer}"),
            )
            .await;
        }
        Err(e) if e.permanent => {
            tracing::warn!(message_id = %d.message_id, member = %d.member, error = %e, "copy refused permanently");
            finish(relay, d, Finished::Failed, e.detail).await;
        }
        Err(e) => {
            let cfg = &relay.config.outbound;
            let delay = outbound::backoff(cfg.retry_initial, cfg.retry_max, d.attempts);
            let now = relay.clock.now();
            let next =
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            tracing::warn!(message_id = %d.message_id, member = %d.member, error = %e, retry_in_s = delay.as_secs(), "copy deferred");
            let r = relay.clone();
            let dd = d.clone();
            if let Err(err) = blocking(move || r.spool.retry_later(&dd, &e.detail, next, now)).await
            {
                tracing::error!(error = %err, "could not record a deferred delivery");
            }
        }
    }
}

/// Builds one member's copy: protected inner entity, sealed, wrapped in RFC 3156.
fn seal_copy(relay: &Relay, a: &Announcement, d: &DueDelivery) -> Result<Vec<u8>, SealError> {
    let member = relay
        .config
        .roster
        .find(&d.member)
        .ok_or_else(|| SealError::Recipient("no longer on the roster".to_owned()))?;
    let cert = member
        .cert()
        .map_err(|e| SealError::Recipient(e.to_owned()))?;
    let message_id = format!("{}.{}@{}", d.message_id, d.copy_id, relay.config.hostname);
    let headers = CopyHeaders {
        list: &relay.config.list_address,
        member: &member.email,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    let inner = outbound::protected_inner(&headers, &a.subject, a.entity.expose())
        .map_err(|e| SealError::Crypto(format!("bad address: {e}")))?;
    let p = StandardPolicy::new();
    let armored = relay
        .config
        .list_key
        .seal_for(&p, headers.date, cert, inner.expose())?;
    outbound::encrypted_outer(&headers, &armored).map_err(|e| SealError::Crypto(e.to_string()))
}

async fn finish(relay: &Arc<Relay>, d: &DueDelivery, state: Finished, detail: String) {
    let r = relay.clone();
    let dd = d.clone();
    let now = relay.clock.now();
    if let Err(e) = blocking(move || r.spool.finish(&dd, state, &detail, now)).await {
        tracing::error!(error = %e, member = %d.member, "could not record a delivery outcome");
    }
}
