//! Who may open a session ([`Admission`]: shared, per-address and
//! reserved slots) and how many message bytes all sessions may hold at once
//! ([`DataBudget`]).

use super::*;

/// Who may open a session: every peer shares `max_sessions -
/// reserved_sessions` slots, at most `max_sessions_per_peer` each; trusted
/// peers are not counted per address and may also use the reserved slots.
/// So no single address, nor a crowd of untrusted ones, can lock the PST's
/// MTA out.
pub(super) struct Admission {
    shared: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    per_peer: PeerCounts,
}

/// Sessions open per untrusted address.
type PeerCounts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// A session's place; given back on drop.
pub(super) struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    peer: Option<(std::net::IpAddr, PeerCounts)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((ip, counts)) = &self.peer {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    pub(super) fn new(settings: &SmtpSettings) -> Admission {
        let reserved = settings.reserved_sessions.min(settings.max_sessions);
        Admission {
            shared: Arc::new(Semaphore::new(settings.max_sessions - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            per_peer: Arc::default(),
        }
    }

    /// A place for `ip`, or why not.
    pub(super) fn admit(
        &self,
        ip: std::net::IpAddr,
        settings: &SmtpSettings,
    ) -> Result<Admitted, Reply> {
        let full = || Reply::new(421, "4.3.2", "too many connections, try again later");
        if crate::inbound::is_trusted(&settings.trusted_peers, ip) {
            let permit = self
                .shared
                .clone()
                .try_acquire_owned()
                .or_else(|_| self.reserved.clone().try_acquire_owned())
                .map_err(|_| full())?;
            return Ok(Admitted {
                _permit: permit,
                peer: None,
            });
        }
        // IPv6 peers are counted by /64, IPv4-mapped ones as IPv4.
        let ip = crate::inbound::peer_key(ip);
        let mut counts = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.get(&ip).copied().unwrap_or(0);
        if n >= settings.max_sessions_per_peer {
            return Err(Reply::new(
                421,
                "4.7.0",
                format!(
                    "too many connections from your address (at most {}); try again later",
                    settings.max_sessions_per_peer
                ),
            ));
        }
        let permit = self
            .shared
            .clone()
            .try_acquire_owned()
            .map_err(|_| full())?;
        counts.insert(ip, n + 1);
        Ok(Admitted {
            _permit: permit,
            peer: Some((ip, self.per_peer.clone())),
        })
    }
}

/// A cap on the message bytes all sessions hold at once: 32 sessions each
/// sending 24 MiB reached 518 MB RSS. A DATA that starts while the budget
/// is spent, or whose bytes would overspend it, is answered `452 4.3.1`.
/// The last `reserve` bytes are for trusted peers only, so junk from
/// elsewhere cannot spend the budget the PST's MTA needs.
#[derive(Debug)]
pub struct DataBudget {
    limit: usize,
    reserve: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl DataBudget {
    /// `limit` bytes in all, of which `reserve` only trusted peers may use.
    pub fn new(limit: usize, reserve: usize) -> Arc<DataBudget> {
        Arc::new(DataBudget {
            limit,
            reserve: reserve.min(limit),
            used: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn cap(&self, trusted: bool) -> usize {
        if trusted {
            self.limit
        } else {
            self.limit - self.reserve
        }
    }

    pub(super) fn spent(&self, trusted: bool) -> bool {
        self.used() >= self.cap(trusted)
    }

    /// Takes `n` more bytes for `held`, if they fit.
    pub(super) fn take(&self, held: &mut usize, n: usize, trusted: bool) -> bool {
        use std::sync::atomic::Ordering;
        let cap = self.cap(trusted);
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= cap).then_some(used + n)
            })
            .is_ok();
        if fits {
            *held += n;
        }
        fits
    }

    pub(super) fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Bytes of the [`DataBudget`] one message holds; given back on drop.
pub(super) struct Held<'a> {
    pub(super) budget: &'a DataBudget,
    pub(super) bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

pub(super) fn over_budget() -> Reply {
    Reply::new(
        452,
        "4.3.1",
        "too much mail in flight on this server; try again in a few minutes",
    )
}
