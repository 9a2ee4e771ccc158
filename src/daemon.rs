//! Wires the daemon together: spool, SMTP listener, IMAP poller, fan-out,
//! key check and upkeep (`upkeep`) under one shutdown token and task
//! tracker; SIGHUP reloads, SIGTERM stops.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::context::Relay;
use crate::fanout;
use crate::inbound::imap::MailboxLists;
use crate::inbound::smtp::{self, SmtpSettings};
use crate::intake::{Intake, Router};
use crate::outbound::Outbound;
use crate::upkeep::{keep_leap_base, maintenance, warn_about_roster, watch_roster_file};

/// A started daemon.
pub struct Running {
    pub smtp_addr: SocketAddr,
    /// Where `[http]` listens (TCP), if it does.
    pub http_addr: Option<SocketAddr>,
    /// The first list's (the spool and the clock are every list's).
    pub relay: Arc<Relay>,
    /// The lists served now, with their tasks.
    lists: std::sync::Mutex<Vec<ListTasks>>,
    /// Routes each mail to its list; replaced with the lists.
    router: Router,
    /// The lists served now, for the watchdog.
    relays: crate::context::Relays,
    /// Each polled mailbox and the lists it serves now.
    pollers: std::sync::Mutex<Vec<(crate::config::ImapConfig, MailboxLists)>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Set when a task ended on its own (a bug or a panic): the daemon stops.
    failed: Arc<AtomicBool>,
}

/// One list of the running daemon: its context, its intake and what stops
/// its tasks (when a reload removes it).
struct ListTasks {
    relay: Arc<Relay>,
    intake: Intake,
    stop: CancellationToken,
}

impl Running {
    /// Stops accepting, answers open sessions 421, and waits for every task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// The context of the list with this address, while it is served.
    pub fn relay_of(&self, address: &str) -> Option<Arc<Relay>> {
        lock(&self.lists)
            .iter()
            .find(|l| l.relay.config().list_address.eq_ignore_ascii_case(address))
            .map(|l| l.relay.clone())
    }

    /// Puts a newly loaded configuration in force (SIGHUP): lists it names
    /// that are served already take its new settings (`Relay::reload`),
    /// new ones start, and ones it no longer names stop. Refused as a
    /// whole, with the reason, when a list it drops still has a delivery
    /// pending (a held release, a lifted notice, a copy, a receipt): that
    /// would never be sent. A list that goes is closed to new mail first
    /// (answered 451), and checked again once the mails it was taking are
    /// committed. Returns the fields that wait for a restart.
    pub async fn reload(&self, next: Vec<Config>) -> Result<Vec<&'static str>, String> {
        let gone: Vec<Arc<Relay>> = lock(&self.lists)
            .iter()
            .filter(|l| !names(&next, &l.relay))
            .map(|l| l.relay.clone())
            .collect();
        for relay in &gone {
            nothing_pending(relay).await?;
        }
        if !gone.is_empty() {
            // Closed to new mail, in this process (451) and in the spool
            // (where `submit` commits too), then checked again once the
            // mails it was taking are committed.
            for relay in &gone {
                relay.taking.close(true);
                if let Err(why) = set_state(relay, "closing").await {
                    for relay in &gone {
                        relay.taking.close(false);
                        let _ = set_state(relay, "active").await;
                    }
                    return Err(why);
                }
            }
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while gone.iter().any(|r| r.taking.busy() > 0) && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let mut refused = None;
            for relay in &gone {
                if relay.taking.busy() > 0 {
                    refused = Some(format!(
                        "the list {} is still taking mail; try the reload again",
                        relay.config().list_address
                    ));
                } else if let Err(why) = nothing_pending(relay).await {
                    refused = Some(why);
                }
            }
            if let Some(why) = refused {
                for relay in &gone {
                    let _ = set_state(relay, "active").await;
                    relay.taking.close(false);
                }
                return Err(why);
            }
        }
        let kept = self.apply(next);
        for relay in &gone {
            if let Err(e) = set_state(relay, "removed").await {
                tracing::error!(list = %relay.config().list_address, error = %e, "cannot mark the removed list in the spool");
            }
        }
        Ok(kept)
    }

    /// The reload's changes, once nothing stands in their way.
    fn apply(&self, next: Vec<Config>) -> Vec<&'static str> {
        let mut lists = lock(&self.lists);
        let mut kept = Vec::new();
        let mut now_served = Vec::with_capacity(next.len());
        for config in next {
            warn_about_roster(&config, &self.relay.clock);
            let current = lists
                .iter()
                .position(|l| l.relay.config().list_address == config.list_address);
            match current {
                Some(i) => {
                    let list = lists.swap_remove(i);
                    kept.extend(list.relay.reload(config));
                    now_served.push(list);
                }
                None => {
                    let relay = Arc::new(self.relay.beside(config));
                    tracing::info!(list = %relay.config().list_address, members = relay.directory().roster.members().len(), "list added");
                    now_served.push(self.start_list(relay));
                }
            }
        }
        for gone in lists.drain(..) {
            tracing::info!(list = %gone.relay.config().list_address, "list removed; its tasks stop");
            gone.stop.cancel();
        }
        *lists = now_served;
        self.router
            .set(lists.iter().map(|l| l.intake.clone()).collect());
        self.relays
            .set(lists.iter().map(|l| l.relay.clone()).collect());
        let pollers = lock(&self.pollers);
        for (mailbox, served) in pollers.iter() {
            *served.write().unwrap_or_else(|e| e.into_inner()) = lists
                .iter()
                .filter(|l| l.relay.config().imap.as_ref() == Some(mailbox))
                .map(|l| l.intake.clone())
                .collect();
        }
        for list in lists.iter() {
            if let Some(imap) = &list.relay.config().imap
                && !pollers.iter().any(|(m, _)| m == imap)
            {
                tracing::warn!(list = %list.relay.config().list_address, host = %imap.host, mailbox = %imap.mailbox, "a new mailbox to poll: it is polled from the next restart");
            }
        }
        kept.sort_unstable();
        kept.dedup();
        kept
    }

    /// Starts the tasks of one list: its fan-out, key check, upkeep and
    /// roster-file watcher, stopped by the daemon's shutdown or its own.
    fn start_list(&self, relay: Arc<Relay>) -> ListTasks {
        if let Err(e) = relay.spool.set_list_state("active") {
            tracing::error!(list = %relay.config().list_address, error = %e, "cannot mark the list as taking mail in the spool");
        }
        let stop = self.shutdown.child_token();
        let intake = Intake::new(relay.clone());
        let supervise = |name, task| {
            supervise(
                &self.tracker,
                &self.shutdown,
                &stop,
                &self.failed,
                name,
                task,
            )
        };
        {
            let config = relay.config();
            let updates = config.state_dir.join(crate::roster::UPDATES_DIR);
            let path = config.roster_file.clone();
            supervise(
                "roster watcher",
                tokio::spawn(watch_roster_file(
                    relay.clone(),
                    path,
                    updates,
                    stop.clone(),
                )),
            );
        }
        supervise(
            "maintenance",
            tokio::spawn(maintenance(
                relay.clone(),
                Arc::new(intake.clone()),
                true,
                stop.clone(),
            )),
        );
        supervise(
            "key check",
            tokio::spawn(crate::keycheck::weekly(relay.clone(), stop.clone())),
        );
        let outbound = Outbound::new(&relay.config().outbound, &relay.config().hostname);
        supervise(
            "fan-out",
            tokio::spawn(fanout::run(relay.clone(), outbound, stop.clone())),
        );
        ListTasks {
            relay,
            intake,
            stop,
        }
    }
}

/// Marks whether `relay`'s list takes mail, in the spool.
async fn set_state(relay: &Arc<Relay>, state: &'static str) -> Result<(), String> {
    let r = relay.clone();
    tokio::task::spawn_blocking(move || r.spool.set_list_state(state))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot mark the list {}: {e}", relay.config().list_address))
}

/// Refuses, with the reason, while `relay`'s list has a delivery pending.
async fn nothing_pending(relay: &Arc<Relay>) -> Result<(), String> {
    let address = relay.config().list_address.clone();
    let r = relay.clone();
    let pending = tokio::task::spawn_blocking(move || r.spool.pending())
        .await
        .map_err(|e| format!("cannot read the queue of {address}: {e}"))?
        .map_err(|e| format!("cannot read the queue of {address}: {e}"))?;
    if pending > 0 {
        return Err(format!(
            "the list {address} is no longer in the file, but {pending} of its deliveries are pending (held releases, lifted notices, copies or receipts) and would never be sent. Put the list back in the file (the daemon and `submit` read it), release or cancel its embargoes and let its queue empty (embargo-relay status --list {address}), then remove it"
        ));
    }
    Ok(())
}

/// Whether `configs` names `relay`'s list.
fn names(configs: &[Config], relay: &Relay) -> bool {
    let address = &relay.config().list_address;
    configs.iter().any(|c| &c.list_address == address)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the spool, binds the listener and starts the tasks of one list.
pub async fn start(config: Config, clock: SharedClock) -> anyhow::Result<Running> {
    start_on(vec![config], clock, None).await
}

/// [`start`] for every list of a file.
pub async fn start_lists(lists: Vec<Config>, clock: SharedClock) -> anyhow::Result<Running> {
    start_on(lists, clock, None).await
}

/// [`start_lists`], on a listening socket the service manager passed
/// (`inherited`, systemd's `LISTEN_FDS` protocol) instead of binding
/// `inbound.smtp.listen`.
pub async fn start_on(
    lists: Vec<Config>,
    clock: SharedClock,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<Running> {
    let mut lists = lists.into_iter();
    let config = lists.next().context("the configuration serves no list")?;
    for c in std::iter::once(&config).chain(lists.as_slice()) {
        warn_about_roster(c, &clock);
    }
    let passed = inherited.is_some();
    let listener = match inherited {
        Some(socket) => {
            socket.set_nonblocking(true)?;
            TcpListener::from_std(socket)
                .context("cannot use the listening socket the service manager passed")?
        }
        None => TcpListener::bind(config.smtp.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.smtp.listen))?,
    };
    let smtp_addr = listener.local_addr()?;
    let settings = Arc::new(SmtpSettings {
        hostname: config.hostname.clone(),
        max_message_size: config.smtp.max_message_size,
        max_sessions: config.smtp.max_sessions,
        max_recipients: 10,
        command_timeout: config.smtp.command_timeout,
        data_timeout: config.smtp.data_timeout,
        max_session: config.smtp.session_timeout,
        // The last message's worth (when there is room for two) is for
        // trusted peers only.
        data_budget: smtp::DataBudget::new(
            config.smtp.max_data_in_flight,
            (config.smtp.max_data_in_flight - config.smtp.max_message_size)
                .min(config.smtp.max_message_size),
        ),
        max_sessions_per_peer: config.smtp.max_sessions_per_peer,
        trusted_peers: config.smtp.trusted_peers.clone(),
        reserved_sessions: config.smtp.reserved_sessions,
    });
    let first = Arc::new(Relay::open(config, clock)?);
    keep_leap_base(&first)?;
    let orphans: Vec<String> = first
        .spool
        .orphans(&first.config().neighbours.lists)?
        .into_iter()
        .filter(|(_, pending)| *pending > 0)
        .map(|(list, pending)| format!("{list} ({pending} pending)"))
        .collect();
    if !orphans.is_empty() {
        anyhow::bail!(
            "the spool holds deliveries of lists the configuration does not name: {}; they would never be sent. Put those lists back in the file (a list may be removed by a reload once its queue is empty)",
            orphans.join(", ")
        );
    }
    let mut relays = vec![first.clone()];
    relays.extend(lists.map(|c| Arc::new(first.beside(c))));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let failed = Arc::new(AtomicBool::new(false));
    let router = Router::new(relays.iter().map(|r| Intake::new(r.clone())).collect());
    let mut running = Running {
        smtp_addr,
        http_addr: None,
        relay: first.clone(),
        lists: std::sync::Mutex::new(Vec::new()),
        router: router.clone(),
        relays: first.peers.clone(),
        pollers: std::sync::Mutex::new(Vec::new()),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        failed: failed.clone(),
    };
    let started: Vec<ListTasks> = relays.into_iter().map(|r| running.start_list(r)).collect();
    router.set(started.iter().map(|l| l.intake.clone()).collect());
    running
        .relays
        .set(started.iter().map(|l| l.relay.clone()).collect());
    let supervise = |name, task| supervise(&tracker, &shutdown, &shutdown, &failed, name, task);
    // One poller per mailbox: lists that share one get each mail by the
    // list it names.
    let mut mailboxes: Vec<(crate::config::ImapConfig, Vec<Intake>)> = Vec::new();
    for list in &started {
        if let Some(imap) = list.relay.config().imap.clone() {
            match mailboxes.iter_mut().find(|(m, _)| *m == imap) {
                Some((_, lists)) => lists.push(list.intake.clone()),
                None => mailboxes.push((imap, vec![list.intake.clone()])),
            }
        }
    }
    for (imap, lists) in mailboxes {
        let lists: MailboxLists = Arc::new(std::sync::RwLock::new(lists));
        supervise(
            "imap poller",
            tokio::spawn(crate::inbound::imap::run(
                lists.clone(),
                first.clone(),
                imap.clone(),
                shutdown.clone(),
            )),
        );
        lock(&running.pollers).push((imap, lists));
    }
    // The daemon's own rejections (peers refused before naming a list).
    supervise(
        "maintenance",
        tokio::spawn(maintenance(
            first.clone(),
            Arc::new(router.daemon().clone()),
            false,
            shutdown.clone(),
        )),
    );
    supervise(
        "watchdog",
        tokio::spawn(crate::service::watchdog(
            running.relays.clone(),
            shutdown.clone(),
        )),
    );
    // `[http]`: the status API and metrics (the first list's section is
    // every list's).
    if let Some(http) = first.config().http.clone() {
        let token = http.token().map_err(anyhow::Error::msg)?;
        let relays = running.relays.clone();
        let stop = shutdown.clone();
        match &http.listen {
            crate::config::HttpListen::Tcp(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("http.listen: cannot listen on {addr}"))?;
                running.http_addr = Some(listener.local_addr()?);
                supervise(
                    "status api",
                    tokio::spawn(crate::web::serve(
                        crate::web::Listener::Tcp(listener),
                        relays,
                        http.clone(),
                        token,
                        stop,
                    )),
                );
            }
            crate::config::HttpListen::Unix(path) => {
                // A socket left by an earlier daemon is replaced, not one a
                // live daemon answers on, nor anything else.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                    && std::os::unix::net::UnixStream::connect(path).is_err()
                {
                    let _ = std::fs::remove_file(path);
                }
                let listener = tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("http.listen: cannot listen on {}", path.display()))?;
                // The daemon's user and group (a reverse proxy in the group).
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
                    .with_context(|| format!("http.listen: {}", path.display()))?;
                supervise(
                    "status api",
                    tokio::spawn(crate::web::serve(
                        crate::web::Listener::Unix(listener),
                        relays,
                        http.clone(),
                        token,
                        stop,
                    )),
                );
            }
        }
    }
    supervise(
        "smtp listener",
        tokio::spawn(smtp::serve(
            listener,
            Arc::new(router),
            settings,
            shutdown.clone(),
            tracker.clone(),
        )),
    );
    for list in &started {
        tracing::info!(addr = %smtp_addr, passed, list = %list.relay.config().list_address, members = list.relay.directory().roster.members().len(), "SMTP listener ready");
    }
    *lock(&running.lists) = started;
    Ok(running)
}

/// Watches a task: if it ends while the daemon is not shutting down, the
/// whole daemon stops (so the service manager restarts it) rather than run
/// on half-dead, answering 250 with nothing delivering.
/// A task of one list that ends because its list was removed (`stop`) is
/// not a failure.
fn supervise(
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
    failed: &Arc<AtomicBool>,
    name: &'static str,
    task: JoinHandle<()>,
) {
    let (shutdown, stop, failed) = (shutdown.clone(), stop.clone(), failed.clone());
    tracker.spawn(async move {
        let outcome = match task.await {
            Ok(()) => "returned",
            Err(e) if e.is_panic() => "panicked",
            Err(_) => "was cancelled",
        };
        if !stop.is_cancelled() {
            tracing::error!(
                task = name,
                outcome,
                "daemon task stopped unexpectedly; shutting down"
            );
            failed.store(true, Ordering::SeqCst);
            shutdown.cancel();
        }
    });
}

/// Runs until SIGTERM or SIGINT (or a task dies), then shuts down cleanly;
/// SIGHUP reloads the configuration file (a file that does not load is
/// refused with the reason, and the configuration in force stays). Tells
/// the service manager READY once the spool is open and the listener bound.
pub async fn run_until_signal(
    config_path: &Path,
    clock: SharedClock,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let lists = Config::load_all(config_path)?;
    let mut signals = Signals::new()?;
    let running = start_on(lists, clock, inherited).await?;
    crate::service::notify(&[NotifyState::Ready, NotifyState::Status("relaying")]);
    let stopped = running.shutdown.clone();
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Stop => break,
                Signal::Reload => reload(&running, config_path).await,
            },
            _ = stopped.cancelled() => break,
        }
    }
    crate::service::notify(&[NotifyState::Stopping]);
    tracing::info!("shutting down");
    let failed = running.failed.load(Ordering::SeqCst);
    running.shutdown().await;
    if failed {
        anyhow::bail!("a daemon task stopped unexpectedly (see the log above)");
    }
    Ok(())
}

/// Reloads the configuration file on SIGHUP.
async fn reload(running: &Running, path: &Path) {
    crate::service::notify(&[NotifyState::Reloading]);
    match Config::load_all(path).map_err(|e| e.to_string()) {
        Ok(next) => {
            let lists = next.len();
            match running.reload(next).await {
                Ok(kept) => {
                    for field in kept {
                        tracing::warn!(
                            field,
                            "changed in the configuration file, but takes effect only at the next restart"
                        );
                    }
                    tracing::info!(file = %path.display(), lists, "configuration reloaded");
                }
                Err(why) => {
                    tracing::error!(error = %why, "configuration reload refused; the configuration in force stays");
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the configuration in force stays");
        }
    }
    crate::service::notify(&[NotifyState::Ready]);
}

/// What a signal asks of the daemon.
enum Signal {
    Stop,
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, installed before the daemon starts so an
/// early signal is not lost.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
