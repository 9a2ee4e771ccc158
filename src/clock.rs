//! The only place that reads the wall clock; everything else asks a [`Clock`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The longest the system clock sleeps before looking at the wall clock
/// again, so a wall clock that jumps is noticed within this time.
const RECHECK: Duration = Duration::from_secs(30);

/// How far the wall clock may run ahead of the time that passed before
/// releases are held: NTP's steps are seconds, a wrong clock hours or years.
pub const LEAP_LIMIT: chrono::Duration = chrono::Duration::minutes(10);

/// A source of the current time. The daemon uses [`SystemClock`]; tests use
/// [`ManualClock`] and move time by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once `now() >= at`. It never resolves early: a clock that
    /// jumps backwards makes it wait longer.
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// How far the wall clock has run ahead of the time that really passed
    /// since this process first asked: a jump forward (a wrong clock set
    /// right, or set wrong) that would make held advisories look due.
    fn leap(&self) -> chrono::Duration {
        chrono::Duration::zero()
    }

    /// Where [`Clock::leap`] is measured from, to keep across restarts of
    /// the daemon on the same boot (a daemon restarted after the clock
    /// leapt would otherwise measure from the leapt clock). `None`: this
    /// clock cannot tell.
    fn leap_base(&self) -> Option<LeapBase> {
        None
    }

    /// Measures leaps from `base` from now on, if it was taken on this
    /// boot; returns whether it was.
    fn adopt_leap_base(&self, _base: &LeapBase) -> bool {
        false
    }
}

/// The wall clock and the time since boot at one moment of one boot.
#[derive(Debug, Clone, PartialEq)]
pub struct LeapBase {
    /// `/proc/sys/kernel/random/boot_id`: uptimes of different boots are
    /// not comparable.
    pub boot: String,
    pub wall: DateTime<Utc>,
    /// Seconds since boot, suspend included.
    pub uptime: f64,
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned()).filter(|id| !id.is_empty())
}

/// Seconds since boot, suspend included (`/proc/uptime`): what really
/// passed, whatever the wall clock says.
fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Where leaps are measured from: when the process first asked, or the base
/// an earlier daemon of this boot kept in the spool.
static LEAP_BASE: std::sync::Mutex<Option<LeapBase>> = std::sync::Mutex::new(None);

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned caller
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn leap(&self) -> chrono::Duration {
        let (Some(base), Some(up)) = (self.leap_base(), uptime()) else {
            return chrono::Duration::zero();
        };
        let passed = chrono::Duration::milliseconds(((up - base.uptime) * 1000.0) as i64);
        (self.now() - base.wall) - passed
    }

    fn leap_base(&self) -> Option<LeapBase> {
        let mut base = LEAP_BASE.lock().unwrap_or_else(|e| e.into_inner());
        if base.is_none() {
            *base = Some(LeapBase {
                boot: boot_id()?,
                wall: self.now(),
                uptime: uptime()?,
            });
        }
        base.clone()
    }

    fn adopt_leap_base(&self, stored: &LeapBase) -> bool {
        if boot_id().as_deref() != Some(stored.boot.as_str()) {
            return false;
        }
        *LEAP_BASE.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored.clone());
        true
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let left = at - self.now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(RECHECK)).await;
            }
        })
    }
}

/// A clock that stands still until told to move; waiters wake when it does.
/// A clock for tests: time moves only by [`ManualClock::set`] (time
/// passing) or [`ManualClock::leap_by`] (the wall clock jumping).
#[derive(Debug, Clone)]
pub struct ManualClock(
    Arc<watch::Sender<DateTime<Utc>>>,
    Arc<std::sync::atomic::AtomicI64>,
);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(watch::channel(at).0), Arc::default())
    }

    pub fn set(&self, at: DateTime<Utc>) {
        self.0.send_replace(at);
    }

    /// The wall clock jumps `by` while no time passes.
    pub fn leap_by(&self, by: chrono::Duration) {
        self.1
            .fetch_add(by.num_milliseconds(), std::sync::atomic::Ordering::SeqCst);
        let now = *self.0.borrow();
        self.0.send_replace(now + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.borrow()
    }

    fn leap(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.1.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

/// Shared handle to whichever clock is in force.
pub type SharedClock = Arc<dyn Clock>;

/// Milliseconds since the Unix epoch, as stored in the spool.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_millis`]; out-of-range values clamp to the epoch.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_ends_only_when_the_clock_reaches_the_time() {
        let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .into();
        let clock = ManualClock::new(t0);
        let at = t0 + chrono::Duration::hours(1);
        let mut sleeping = clock.sleep_until(at);
        let poll = |s: &mut Pin<Box<dyn Future<Output = ()> + Send + '_>>| futures_poll(s.as_mut());
        assert!(!poll(&mut sleeping));
        clock.set(at - chrono::Duration::seconds(1));
        assert!(!poll(&mut sleeping), "one second early is early");
        clock.set(t0 - chrono::Duration::days(1));
        assert!(!poll(&mut sleeping), "a clock moved backwards delays");
        clock.set(at);
        assert!(poll(&mut sleeping));
    }

    #[tokio::test]
    async fn system_sleep_for_a_past_time_returns_at_once() {
        let clock = SystemClock;
        let past = clock.now() - chrono::Duration::seconds(5);
        tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(past))
            .await
            .expect("no wait for a time already passed");
    }

    /// Polls a future once with a no-op waker.
    fn futures_poll(f: Pin<&mut (dyn Future<Output = ()> + Send + '_)>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_ready()
    }
}
