//! Talking to the service manager: `sd_notify` readiness, reload and stop
//! notices, and the watchdog, fed only while the daemon is healthy.
//! Without systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::context::Relay;

/// Tells the service manager; a failure is logged, never fatal.
pub(crate) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// Feeds the systemd watchdog four times a period while the daemon is
/// healthy: the fan-out loop is not stuck in one round for longer than a
/// period, and the spool answers. A stuck daemon stops feeding it, and
/// systemd restarts it (`WatchdogSec=`).
pub(crate) async fn watchdog(relays: crate::context::Relays, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return shutdown.cancelled().await;
    };
    // Four checks a period, and the spool must fail two in a row: one slow
    // answer (a long write holding the spool) does not cost a restart.
    let mut tick = tokio::time::interval(period / 4);
    let mut starving = false;
    let mut spool_failures = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let found = match problem(&relays.get(), period).await {
            Some(Problem::Spool(why)) => {
                spool_failures += 1;
                (spool_failures >= 2).then_some(why)
            }
            Some(Problem::Stuck(why)) => Some(why),
            None => {
                spool_failures = 0;
                None
            }
        };
        match found {
            None => {
                if starving {
                    tracing::info!("healthy again; feeding the watchdog");
                    starving = false;
                }
                notify(&[NotifyState::Watchdog]);
            }
            Some(why) => {
                if !starving {
                    tracing::error!(
                        problem = why,
                        "unhealthy; no longer feeding the watchdog, so the service manager restarts the daemon"
                    );
                    starving = true;
                }
            }
        }
    }
}

/// Why the daemon is not healthy now.
enum Problem {
    Stuck(&'static str),
    Spool(&'static str),
}

/// Why the daemon is not healthy now, if it is not: a list's fan-out
/// stuck, or the spool (one for all lists) unusable.
async fn problem(relays: &[Arc<Relay>], period: Duration) -> Option<Problem> {
    if relays.iter().any(|r| r.health.stuck_for() > period) {
        return Some(Problem::Stuck("the fan-out loop is stuck"));
    }
    let relay = relays.first()?;
    if relay.spool.damaged() {
        return Some(Problem::Spool("the spool is damaged"));
    }
    let r = relay.clone();
    let spool = tokio::task::spawn_blocking(move || r.spool.data_version());
    match tokio::time::timeout(period / 3, spool).await {
        Ok(Ok(Ok(_))) => None,
        Ok(_) => Some(Problem::Spool("the spool cannot be read")),
        Err(_) => Some(Problem::Spool("the spool does not answer")),
    }
}
