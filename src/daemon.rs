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
use crate::inbound::smtp::{self, SmtpSettings};
use crate::intake::Intake;
use crate::outbound::Outbound;
use crate::upkeep::{keep_leap_base, maintenance, warn_about_roster, watch_roster_file};

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
