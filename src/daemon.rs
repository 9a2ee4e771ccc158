//! Wires the daemon together: spool, SMTP listener and fan-out under one
//! shutdown token and task tracker.

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
use crate::inbound::smtp::{self, SmtpSettings};
use crate::intake::Intake;
use crate::outbound::Outbound;
use crate::{crypto, fanout};

/// A started daemon.
pub struct Running {
    pub smtp_addr: SocketAddr,
    pub relay: Arc<Relay>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Set when a task ended on its own (a bug or a panic): the daemon stops.
    failed: Arc<AtomicBool>,
}

impl Running {
    /// Stops accepting, answers open sessions 421, and waits for every task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The clock's leaps are measured from the base an earlier daemon of this
/// boot kept in the spool, or from now (and that kept): a daemon restarted
/// after the clock leapt must not take the leapt clock as right.
fn keep_leap_base(relay: &Relay) -> anyhow::Result<()> {
    let stored = relay.spool.leap_base()?;
    if let Some(base) = &stored
        && relay.clock.adopt_leap_base(base)
    {
        let leap = relay.clock.leap();
        if leap > crate::clock::LEAP_LIMIT {
            tracing::error!(
                leap_s = leap.num_seconds(),
                "the wall clock is ahead of the time that passed since this boot's first daemon start: releases that come due are held"
            );
        }
        return Ok(());
    }
    if let Some(base) = relay.clock.leap_base() {
        relay.spool.set_leap_base(&base)?;
    }
    Ok(())
}

/// Opens the spool, binds the listener and starts the tasks.
pub async fn start(config: Config, clock: SharedClock) -> anyhow::Result<Running> {
    start_on(config, clock, None).await
}

/// [`start`], on a listening socket the service manager passed
/// (`inherited`, systemd's `LISTEN_FDS` protocol) instead of binding
/// `inbound.smtp.listen`.
pub async fn start_on(
    config: Config,
    clock: SharedClock,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<Running> {
    warn_about_roster(&config, &clock);
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
    let outbound = Outbound::new(&config.outbound, &config.hostname);
    let relay = Arc::new(Relay::open(config, clock)?);
    keep_leap_base(&relay)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let failed = Arc::new(AtomicBool::new(false));
    let intake = Arc::new(Intake::new(relay.clone()));
    let serve = smtp::serve(
        listener,
        intake.clone(),
        settings,
        shutdown.clone(),
        tracker.clone(),
    );
    if let Some(imap) = relay.config().imap.clone() {
        let poller =
            crate::inbound::imap::run(relay.clone(), (*intake).clone(), imap, shutdown.clone());
        supervise(
            &tracker,
            &shutdown,
            &failed,
            "imap poller",
            tokio::spawn(poller),
        );
    }
    if let Some(path) = relay.config().roster_file.clone() {
        let watch = watch_roster_file(relay.clone(), path, shutdown.clone());
        supervise(
            &tracker,
            &shutdown,
            &failed,
            "roster watcher",
            tokio::spawn(watch),
        );
    }
    supervise(
        &tracker,
        &shutdown,
        &failed,
        "maintenance",
        tokio::spawn(maintenance(relay.clone(), intake, shutdown.clone())),
    );
    let fanout = fanout::run(relay.clone(), outbound, shutdown.clone());
    supervise(
        &tracker,
        &shutdown,
        &failed,
        "key check",
        tokio::spawn(crate::keycheck::weekly(relay.clone(), shutdown.clone())),
    );
    supervise(
        &tracker,
        &shutdown,
        &failed,
        "watchdog",
        tokio::spawn(crate::service::watchdog(relay.clone(), shutdown.clone())),
    );
    supervise(
        &tracker,
        &shutdown,
        &failed,
        "smtp listener",
        tokio::spawn(serve),
    );
    supervise(
        &tracker,
        &shutdown,
        &failed,
        "fan-out",
        tokio::spawn(fanout),
    );
    tracing::info!(addr = %smtp_addr, passed, list = %relay.config().list_address, members = relay.directory().roster.members().len(), "SMTP listener ready");
    Ok(Running {
        smtp_addr,
        relay,
        shutdown,
        tracker,
        failed,
    })
}

/// Reloads the roster file when it changes on disk: a `Roster-Add` that
/// came through `submit` (another process) or an operator's edit takes
/// effect within two seconds. A file that does not load is logged and the
/// roster in force stays.
async fn watch_roster_file(
    relay: Arc<Relay>,
    path: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match crate::roster::file::load(&path) {
            Ok(members) => {
                let now = relay.update_roster(|current| current.with_file_members(members));
                tracing::info!(file = %path.display(), members = now.roster.members().len(), "roster file changed; reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "roster file changed but does not load; the roster in force stays")
            }
        }
    }
}

/// Watches a task: if it ends while the daemon is not shutting down, the
/// whole daemon stops (so the service manager restarts it) rather than run
/// on half-dead, answering 250 with nothing delivering.
fn supervise(
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    failed: &Arc<AtomicBool>,
    name: &'static str,
    task: JoinHandle<()>,
) {
    let (shutdown, failed) = (shutdown.clone(), failed.clone());
    tracker.spawn(async move {
        let outcome = match task.await {
            Ok(()) => "returned",
            Err(e) if e.is_panic() => "panicked",
            Err(_) => "was cancelled",
        };
        if !shutdown.is_cancelled() {
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
    let config = Config::load(config_path)?;
    let mut signals = Signals::new()?;
    let running = start_on(config, clock, inherited).await?;
    crate::service::notify(&[NotifyState::Ready, NotifyState::Status("relaying")]);
    let stopped = running.shutdown.clone();
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Stop => break,
                Signal::Reload => reload(&running.relay, config_path),
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

/// Keeps what grows in check: every minute the counted rejections are
/// written (and at shutdown, so none is lost); every hour, and at start,
/// the spool forgets replay-cache entries and digests that can no longer
/// matter (`Spool::prune`).
async fn maintenance(relay: Arc<Relay>, intake: Arc<Intake>, shutdown: CancellationToken) {
    const FLUSH: std::time::Duration = std::time::Duration::from_secs(60);
    const PRUNE_EVERY: u32 = 60;
    let mut tick = tokio::time::interval(FLUSH);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let (i, now) = (intake.clone(), relay.clock.now());
                let _ = tokio::task::spawn_blocking(move || i.flush_tally(now, true)).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let (i, r) = (intake.clone(), relay.clone());
        let prune = ticks.is_multiple_of(PRUNE_EVERY);
        ticks = ticks.wrapping_add(1);
        let _ = tokio::task::spawn_blocking(move || {
            let now = r.clock.now();
            i.flush_tally(now, false);
            // A wall clock that leapt ahead would forget replay-cache
            // entries that are still needed once it is set right.
            let leapt = r.clock.leap() > crate::clock::LEAP_LIMIT;
            if leapt && prune {
                tracing::warn!(
                    "the wall clock leapt ahead; the spool is not pruned until it is right"
                );
            }
            if prune && !leapt {
                // A signature older than signature_max_age (+ the skew) is
                // refused for its age; twice that, at least a week, is kept
                // so that raising the setting later loses nothing.
                let keep = (r.config().policy.signature_max_age * 2).max(chrono::Duration::days(7));
                match r.spool.prune(now - keep, now - chrono::Duration::days(7)) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "spool pruned"),
                    Err(e) => tracing::error!(error = %e, "cannot prune the spool"),
                }
            }
        })
        .await;
    }
}

/// Reloads the configuration file on SIGHUP.
fn reload(relay: &Relay, path: &Path) {
    crate::service::notify(&[NotifyState::Reloading]);
    match Config::load(path) {
        Ok(next) => {
            warn_about_roster(&next, &relay.clock);
            let members = next.roster.members().len();
            for field in relay.reload(next) {
                tracing::warn!(
                    field,
                    "changed in the configuration file, but takes effect only at the next restart"
                );
            }
            tracing::info!(file = %path.display(), members, "configuration reloaded");
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

/// Logs every member who will be skipped, so the operator hears of it at start.
fn warn_about_roster(config: &Config, clock: &SharedClock) {
    let p = crate::crypto::policy();
    for m in config.roster.members() {
        let problem = match m.cert() {
            Err(e) => Some(e.to_owned()),
            Ok(cert) => crypto::usable_for_encryption(cert, &p, clock.now()).err(),
        };
        if let Some(problem) = problem {
            tracing::warn!(member = %m.email, organization = %m.organization, %problem, "member cannot receive copies until this is fixed");
        }
    }
}
