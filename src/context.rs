//! The shared context of one list: what every task of the daemon (and a
//! `submit` process) shares. It imports nothing above the spool, so every
//! part of the daemon can take it without a cycle; `daemon` only wires.
//! Several lists (issue 16) become several of these.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::roster::Roster;
use crate::spool::Spool;

/// Opens the daemon's one spool, with a handle for `config`'s list (a
/// spool from before several lists goes to the file's first list; in a
/// one-list file whose address changed, the spool's one list is renamed,
/// as such a spool kept its data before lists were marked); `checked`:
/// with SQLite's full `quick_check` (all but `submit`).
pub fn open_spool(
    config: &Config,
    checked: bool,
    now: DateTime<Utc>,
) -> Result<Spool, crate::spool::SpoolError> {
    let first = &config.neighbours.first;
    let spool = if checked {
        Spool::open(&config.state_dir, first)?
    } else {
        Spool::open_unchecked(&config.state_dir, first)?
    };
    let spool = spool.for_list(&config.list_address);
    let key = config.list_key.fingerprint().to_hex();
    if let Some(old) = spool.adopt_renamed(&config.neighbours, &key, now)? {
        tracing::warn!(old = %old, new = %config.list_address, "the list's address changed in the configuration: the spool's list was renamed");
    }
    spool.register(&key)?;
    Ok(spool)
}

/// What every task of one list shares (a daemon has one per list).
pub struct Relay {
    /// The configuration and roster in force, replaced together (read
    /// them with [`Relay::snapshot`], or one with [`Relay::config`] or
    /// [`Relay::directory`]). A SIGHUP replaces both.
    now: RwLock<Snapshot>,
    pub spool: Spool,
    pub clock: SharedClock,
    /// Wakes the fan-out when a new announcement is committed.
    pub wake: Notify,
    /// Whether the fan-out loop is alive, for the watchdog.
    pub health: Health,
    /// The shared seal of each announcement whose copies are going out.
    pub seals: Seals,
    /// When the weekly key check next wakes, while it sleeps.
    pub key_check: Asleep,
    /// Whether the list takes mail, and how many mails it is taking now:
    /// a reload that removes the list closes it and waits for those.
    pub taking: Taking,
    /// Every list of the daemon (this one too), as served now: whose keys
    /// another list knows is asked of their rosters as they are when a
    /// mail is examined, whatever changed them since the start.
    pub peers: Relays,
    /// What `/metrics` counts as it happens (since the daemon started),
    /// one set for all the daemon's lists (labelled by list).
    pub counters: Arc<Counters>,
}

/// Counted as it happens, for `/metrics`: rejections by list and kind,
/// and how late each public release went out, by list.
#[derive(Debug)]
pub struct Counters {
    pub rejections: Family<Labels, prometheus_client::metrics::counter::Counter>,
    pub release_lateness: Family<Labels, Histogram, fn() -> Histogram>,
}

type Family<L, M, C = fn() -> M> = prometheus_client::metrics::family::Family<L, M, C>;
type Histogram = prometheus_client::metrics::histogram::Histogram;
type Labels = Vec<(String, String)>;

/// Seconds after the lift time: on time is well under a second.
fn lateness_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0])
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            rejections: Default::default(),
            release_lateness: Family::new_with_constructor(lateness_histogram),
        }
    }
}

impl Counters {
    /// One rejection of `kind` on `list`.
    pub fn rejected(&self, list: &str, kind: &str) {
        self.rejections
            .get_or_create(&vec![
                ("list".to_owned(), list.to_owned()),
                ("reason".to_owned(), kind.to_owned()),
            ])
            .inc();
    }

    /// A public release of `list`, `seconds` after its lift time.
    pub fn released(&self, list: &str, seconds: f64) {
        self.release_lateness
            .get_or_create(&vec![("list".to_owned(), list.to_owned())])
            .observe(seconds.max(0.0));
    }
}

/// Whether a list takes mail now, and the mails it is in the middle of
/// taking (from the reply to DATA's start to its commit).
#[derive(Debug, Default)]
pub struct Taking {
    closed: std::sync::atomic::AtomicBool,
    busy: AtomicU64,
}

/// One mail being taken; dropped when it is committed or refused.
pub struct TakingOne<'a>(&'a Taking);

impl Drop for TakingOne<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Taking {
    /// A mail begins, unless the list is closed.
    pub fn enter(&self) -> Option<TakingOne<'_>> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        let one = TakingOne(self);
        (!self.closed.load(Ordering::SeqCst)).then_some(one)
    }

    /// Closes (or opens again) the list for new mail.
    pub fn close(&self, closed: bool) {
        self.closed.store(closed, Ordering::SeqCst);
    }

    /// Whether the list is closed to new mail.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Mails being taken now.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::SeqCst)
    }
}

/// The lists a daemon serves now (a reload adds and removes them), for
/// the tasks that watch all of them (the watchdog).
#[derive(Clone, Default)]
pub struct Relays(Arc<RwLock<Vec<Arc<Relay>>>>);

impl Relays {
    pub fn set(&self, relays: Vec<Arc<Relay>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = relays;
    }

    pub fn get(&self) -> Vec<Arc<Relay>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A task that sleeps until a clock time, or `None` while it works: what
/// a test waits on before it checks that nothing happened.
#[derive(Debug, Default)]
pub struct Asleep(std::sync::Mutex<Option<DateTime<Utc>>>);

impl Asleep {
    pub fn set(&self, until: Option<DateTime<Utc>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    /// Whether the task sleeps until after `at`: it has done all there
    /// is to do at the clock time `at`.
    pub fn past(&self, at: DateTime<Utc>) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|wake| wake > at)
    }
}

/// The shared context with one [`Snapshot`] pinned, for one piece of work
/// (a delivery): its `config()` and `directory()` are the snapshot's, all
/// else is the [`Relay`]'s.
pub struct Pinned {
    relay: Arc<Relay>,
    snapshot: Snapshot,
}

impl Pinned {
    pub fn new(relay: Arc<Relay>) -> Pinned {
        let snapshot = relay.snapshot();
        Pinned { relay, snapshot }
    }

    /// The configuration this work is done under.
    pub fn config(&self) -> Arc<Config> {
        self.snapshot.config.clone()
    }

    /// The roster this work is done under.
    pub fn directory(&self) -> Arc<Directory> {
        self.snapshot.directory.clone()
    }
}

impl std::ops::Deref for Pinned {
    type Target = Relay;

    fn deref(&self) -> &Relay {
        &self.relay
    }
}

/// The configuration and the roster in force at one moment.
#[derive(Clone)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
}

/// The roster in force and the certificates derived from it. Replaced as a
/// whole when the roster changes, so a reader always sees one version.
#[derive(Debug)]
pub struct Directory {
    pub roster: Roster,
    /// The PST certificates.
    pub pst: Vec<Arc<Cert>>,
    /// Every certificate whose signature the intake checks: the PST's, then
    /// the other members' (whose posts `policy.member_posts` governs).
    pub known: crate::crypto::Keyring,
    /// Their fingerprints (upper-case hex), to ask whether another list
    /// knows a key; the PST's pinned S/MIME certificates' too.
    pub fingerprints: std::collections::HashSet<String>,
    /// The PST's pinned S/MIME certificates (their mail is verified against these only).
    pub pst_smime: Vec<crate::crypto::smime::SmimeCert>,
    /// The S/MIME members' certificates (their posts and acknowledgements).
    pub member_smime: Vec<crate::crypto::smime::SmimeCert>,
}

impl Directory {
    pub fn new(roster: Roster) -> Directory {
        let pst = roster.pst_certs();
        let known = crate::crypto::Keyring::with_kept(pst.clone(), roster.member_certs());
        let pst_smime: Vec<_> = roster.pst_smime().into_iter().map(|(_, c)| c).collect();
        let member_smime: Vec<_> = roster
            .members()
            .iter()
            .filter(|m| !m.pst)
            .filter_map(|m| m.smime.as_ref().and_then(|c| c.as_ref().ok()).cloned())
            .collect();
        let fingerprints = known
            .fingerprints()
            .map(|f| f.to_hex())
            .chain(pst_smime.iter().filter_map(|c| c.key_fingerprint()))
            .chain(member_smime.iter().filter_map(|c| c.key_fingerprint()))
            .collect();
        Directory {
            roster,
            pst,
            known,
            fingerprints,
            pst_smime,
            member_smime,
        }
    }
}

impl Relay {
    /// Opens the spool for `config`; what the daemon and `submit` share.
    pub fn open(config: Config, clock: SharedClock) -> anyhow::Result<Relay> {
        let spool = open_spool(&config, true, clock.now())?;
        Ok(Self::with_spool(config, clock, spool))
    }

    /// [`Relay::open`] for `submit`, one process per mail: the spool is
    /// opened without its full `quick_check` (see `Spool::open_unchecked`).
    pub fn open_for_submit(config: Config, clock: SharedClock) -> anyhow::Result<Relay> {
        let spool = open_spool(&config, false, clock.now())?;
        Ok(Self::with_spool(config, clock, spool))
    }

    /// Another list of the same daemon: the same spool (its own handle on
    /// it), the same clock, the same peers.
    pub fn beside(&self, config: Config) -> Relay {
        let spool = self.spool.for_list(&config.list_address);
        Relay {
            peers: self.peers.clone(),
            counters: self.counters.clone(),
            ..Self::with_spool(config, self.clock.clone(), spool)
        }
    }

    /// The fingerprints of `directory` (this list's roster as a mail is
    /// examined under it) that another list of the daemon knows now, as
    /// PST or member: what they sign must name its list.
    pub fn shared_keys(&self, directory: &Directory) -> Vec<String> {
        let others: Vec<Arc<Directory>> = self
            .peers
            .get()
            .iter()
            .filter(|r| r.config().list_address != self.config().list_address)
            .map(|r| r.directory())
            .collect();
        directory
            .fingerprints
            .iter()
            .filter(|f| others.iter().any(|o| o.fingerprints.contains(*f)))
            .cloned()
            .collect()
    }

    fn with_spool(mut config: Config, clock: SharedClock, spool: Spool) -> Relay {
        let roster = std::mem::take(&mut config.roster);
        Relay {
            now: RwLock::new(Snapshot {
                config: Arc::new(config),
                directory: Arc::new(Directory::new(roster)),
            }),
            spool,
            clock,
            wake: Notify::new(),
            health: Health::default(),
            key_check: Asleep::default(),
            seals: Seals::default(),
            taking: Taking::default(),
            peers: Relays::default(),
            counters: Arc::default(),
        }
    }

    /// Puts a newly loaded configuration in force (SIGHUP): the roster,
    /// the policy, the public lists, the retry schedule. What the running
    /// daemon cannot change without a restart keeps its old value; the
    /// names of such fields that changed are returned.
    pub fn reload(&self, mut next: Config) -> Vec<&'static str> {
        let old = self.config();
        let mut kept = Vec::new();
        let mut keep = |changed: bool, field: &'static str| {
            if changed {
                kept.push(field);
            }
        };
        keep(next.list_address != old.list_address, "list.address");
        keep(
            next.request_address != old.request_address,
            "list.request_address",
        );
        keep(next.roster_file != old.roster_file, "list.roster_file");
        keep(next.hostname != old.hostname, "list.hostname");
        keep(!next.list_key.same_as(&old.list_key), "list.secret_key");
        keep(next.state_dir != old.state_dir, "list.state_dir");
        // Compared by value: their `Debug` text hides the IMAP password,
        // so a change to one of the same length went unnoticed.
        keep(next.smtp != old.smtp, "inbound.smtp");
        keep(next.imap != old.imap, "inbound.imap");
        let (n, o) = (&next.outbound, &old.outbound);
        keep(
            (&n.host, n.port, n.timeout, n.concurrency)
                != (&o.host, o.port, o.timeout, o.concurrency),
            "outbound.smarthost/timeout/concurrency",
        );
        next.list_address = old.list_address.clone();
        next.request_address = old.request_address.clone();
        next.roster_file = old.roster_file.clone();
        next.hostname = old.hostname.clone();
        next.list_key = old.list_key.clone();
        next.state_dir = old.state_dir.clone();
        next.smtp = old.smtp.clone();
        next.imap = old.imap.clone();
        next.outbound.host = o.host.clone();
        next.outbound.port = o.port;
        next.outbound.timeout = o.timeout;
        next.outbound.concurrency = o.concurrency;
        let roster = std::mem::take(&mut next.roster);
        // Both at once: a piece of work that takes a snapshot sees the old
        // pair or the new one, never half of each.
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Snapshot {
            config: Arc::new(next),
            directory: Arc::new(Directory::new(roster)),
        };
        kept
    }

    /// The configuration and the roster in force now, as one consistent
    /// pair: take one per piece of work (a mail, a delivery), so that a
    /// SIGHUP in the middle of it cannot mix two configurations.
    pub fn snapshot(&self) -> Snapshot {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.snapshot().config
    }

    /// The roster in force now.
    pub fn directory(&self) -> Arc<Directory> {
        self.snapshot().directory
    }

    /// Puts `next(current roster)` in force, under the lock: a SIGHUP at
    /// the same time is neither lost nor mixed in. Returns the new roster.
    pub fn update_roster(&self, next: impl FnOnce(&Roster) -> Roster) -> Arc<Directory> {
        let mut now = self.now.write().unwrap_or_else(|e| e.into_inner());
        let directory = Arc::new(Directory::new(next(&now.directory.roster)));
        now.directory = directory.clone();
        directory
    }

    /// Puts a new roster in force.
    pub fn set_roster(&self, roster: Roster) {
        let next = Arc::new(Directory::new(roster));
        self.now
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .directory = next;
    }
}

/// How the fan-out's main loop shows it is alive: the time it started its
/// current round of work, or zero while it waits for work; and, while it
/// sleeps with nothing in flight, when it will next wake.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    busy_since_ms: AtomicU64,
    settled_until: Asleep,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            busy_since_ms: AtomicU64::new(0),
            settled_until: Asleep::default(),
        }
    }
}

impl Health {
    /// The loop starts a round of work.
    pub fn busy(&self) {
        let ms = self.started.elapsed().as_millis().max(1) as u64;
        self.busy_since_ms.store(ms, Ordering::SeqCst);
        self.settle(None);
    }

    /// The loop waits, but not settled (paused, or deliveries in flight).
    pub fn idle(&self) {
        self.busy_since_ms.store(0, Ordering::SeqCst);
        self.settle(None);
    }

    /// The loop sleeps until `wake`: everything due before it is done
    /// when `nothing_in_flight`.
    pub fn asleep_until(&self, wake: DateTime<Utc>, nothing_in_flight: bool) {
        self.busy_since_ms.store(0, Ordering::SeqCst);
        self.settle(nothing_in_flight.then_some(wake));
    }

    fn settle(&self, until: Option<DateTime<Utc>>) {
        self.settled_until.set(until);
    }

    /// Whether the fan-out has done all there is to do at the clock time
    /// `at`: it sleeps, nothing in flight, until after `at`. What tests
    /// wait on before they check that nothing was sent.
    pub fn settled_past(&self, at: DateTime<Utc>) -> bool {
        self.settled_until.past(at)
    }

    /// How long the current round has been running (zero while idle).
    pub fn stuck_for(&self) -> Duration {
        match self.busy_since_ms.load(Ordering::SeqCst) {
            0 => Duration::ZERO,
            since => self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(since)),
        }
    }
}

/// The shared seal (`crypto::SharedSeal`) of each announcement whose copies
/// are going out, made once by whichever copy comes first. An entry goes
/// when its announcement has no due delivery left; a retry later seals
/// afresh, under a new session key.
#[derive(Default)]
pub struct Seals(std::sync::Mutex<HashMap<SealKey, Arc<SealCell>>>);

/// A seal is for one message at one embargo time (the time is in the sealed
/// text): an operator's change of the time makes a new seal.
type SealKey = (String, Option<DateTime<Utc>>);

/// Filled once, by the first copy that seals successfully; a failure is not
/// kept, so the next copy tries again.
#[derive(Default)]
pub(crate) struct SealCell(std::sync::Mutex<Option<Arc<crate::crypto::SharedSeal>>>);

impl SealCell {
    pub(crate) fn get_or_try_init(
        &self,
        seal: impl FnOnce() -> Result<Arc<crate::crypto::SharedSeal>, String>,
    ) -> Result<Arc<crate::crypto::SharedSeal>, String> {
        // Held while sealing: the other copies wait rather than seal too.
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = slot.as_ref() {
            return Ok(shared.clone());
        }
        let shared = seal()?;
        *slot = Some(shared.clone());
        Ok(shared)
    }
}

impl Seals {
    pub(crate) fn cell(&self, message_id: &str, until: Option<DateTime<Utc>>) -> Arc<SealCell> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((message_id.to_owned(), until))
            .or_default()
            .clone()
    }

    /// Keeps the seals of what is still due at its current embargo time.
    pub(crate) fn retain(&self, keep: impl Fn(&str, Option<DateTime<Utc>>) -> bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(id, until), _| keep(id, *until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_counts_only_time_spent_busy() {
        let h = Health::default();
        assert_eq!(h.stuck_for(), Duration::ZERO);
        h.busy();
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            h.stuck_for() >= Duration::from_millis(10),
            "millisecond precision"
        );
        h.idle();
        assert_eq!(h.stuck_for(), Duration::ZERO);
    }
}
