//! The `embargo-relay` binary: parses the command line, sets up logging,
//! runs the command and maps its error to an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use embargo_relay::cli::{Cli, Command};
use embargo_relay::clock::SystemClock;
use embargo_relay::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // An MTA must never see clap's exit code 2 (a hard bounce in
        // Postfix): a `submit` it cannot parse is a temporary failure.
        Err(e) if std::env::args().nth(1).as_deref() == Some("submit") && e.use_stderr() => {
            let first = e.to_string();
            let first = first
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            say(&format!("embargo-relay: {first}"));
            return ExitCode::from(embargo_relay::inbound::pipe::EX_TEMPFAIL);
        }
        Err(e) => e.exit(),
    };
    if matches!(cli.command, Command::Submit { .. }) {
        init_submit_logging();
    } else {
        init_logging();
    }
    quiet_panics();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("embargo-relay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A panic's message can quote the data being parsed (a failed slice
/// shows the string), and a parser panic on a mail is caught and the mail
/// refused: so the log gets where it happened, never what it said.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(location = %at, "panic (its message is withheld: it may quote mail)");
    }));
}

/// Logs to the systemd journal, with each event's fields as journal fields
/// (`ER_MESSAGE_ID`, `ER_MEMBER`, …, and the level as the priority), when
/// the service manager connected stderr to it (`JOURNAL_STREAM`); else
/// plain lines on stderr.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journal) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(journal.with_field_prefix(Some("ER".to_owned())))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// `submit`'s standard error is the MTA's bounce text: one line, the
/// reason, and nothing else. Its log goes to the journal where there is one
/// (an MTA's pipe passes no `JOURNAL_STREAM`, so the socket is tried), to
/// stderr only when asked with `RUST_LOG`, and else nowhere.
fn init_submit_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    } else if let Ok(journal) = tracing_journald::layer() {
        tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(
                journal
                    .with_field_prefix(Some("ER".to_owned()))
                    .with_syslog_identifier("embargo-relay-submit".to_owned()),
            )
            .init();
    }
}

/// `submit` answers the MTA with a sysexits code; a configuration that does
/// not load is a temporary failure, so the MTA keeps the mail.
fn submit(config: &std::path::Path, origin: embargo_relay::inbound::pipe::Handoff) -> ExitCode {
    use embargo_relay::inbound::pipe;
    let outcome = match Config::load_all(config) {
        Ok(lists) => pipe::submit(
            lists,
            Arc::new(SystemClock),
            &origin,
            &mut std::io::stdin().lock(),
        ),
        Err(e) => pipe::Outcome {
            code: pipe::EX_TEMPFAIL,
            message: format!("cannot load the configuration: {e}"),
        },
    };
    // One line, whatever the reason's text holds.
    let line = outcome.message.replace(['\r', '\n'], " ");
    say(&format!("embargo-relay: {line}"));
    ExitCode::from(outcome.code)
}

/// One line on stderr; a closed stderr is ignored rather than a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = || tokio::runtime::Runtime::new().context("cannot start the async runtime");
    let done = match cli.command {
        Command::Run { config, new_spool } => {
            if new_spool {
                let state_dir = Config::load_all(&config)?.swap_remove(0).state_dir;
                let now = embargo_relay::clock::Clock::now(&SystemClock);
                for moved in embargo_relay::spool::Spool::set_aside(&state_dir, now)? {
                    tracing::warn!(file = %moved.display(), "the old spool was set aside; starting with a new one");
                }
            }
            // A listening socket from the service manager (systemd's
            // LISTEN_FDS; LISTEN_FDS_FIRST_FD as listenfd reads it), taken
            // before any thread exists: listenfd unsets the variables.
            let inherited = listenfd::ListenFd::from_env()
                .take_tcp_listener(0)
                .context("LISTEN_FDS: the socket passed is not a TCP socket")?;
            runtime()?.block_on(embargo_relay::daemon::run_until_signal(
                &config,
                Arc::new(SystemClock),
                inherited,
            ))
        }
        Command::Embargo {
            config,
            list,
            action,
        } => {
            let config = Config::load_list(&config, list.as_deref())?;
            embargo_relay::operator::embargo(&config, action, &SystemClock, &mut std::io::stdout())
        }
        Command::Submit {
            config,
            sender,
            recipient,
            client,
        } => {
            let origin = embargo_relay::inbound::pipe::Handoff {
                sender,
                recipient,
                client,
            };
            // A panic must reach the MTA as "try again" (75), not as 101.
            // Its stderr is the bounce text: one line then too.
            let code = std::panic::catch_unwind(|| submit(&config, origin)).unwrap_or_else(|_| {
                say("embargo-relay: internal error; try again later");
                ExitCode::from(embargo_relay::inbound::pipe::EX_TEMPFAIL)
            });
            return Ok(code);
        }
        Command::Check { config, format } => {
            let clean = embargo_relay::check::run(
                &config,
                format,
                embargo_relay::clock::Clock::now(&SystemClock),
                &mut std::io::stdout(),
            )?;
            return Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Status { config, list } => {
            let path = config;
            let lists = match list.as_deref() {
                Some(_) => vec![Config::load_list(&path, list.as_deref())?],
                None => Config::load_all(&path)?,
            };
            let several = lists.len() > 1;
            let out = &mut std::io::stdout();
            lists.iter().enumerate().try_for_each(|(i, config)| {
                if several {
                    use std::io::Write;
                    writeln!(out, "=== LIST {} ===", config.list_address)?;
                }
                // One spool: its full check once.
                embargo_relay::operator::status(config, i == 0, &SystemClock, out)
            })
        }
        Command::Roster {
            config,
            list,
            action,
        } => {
            let config = Config::load_list(&config, list.as_deref())?;
            embargo_relay::operator::roster(&config, action, &SystemClock, &mut std::io::stdout())
        }
        Command::Audit {
            config,
            list,
            embargo,
            member,
        } => {
            let config = Config::load_list(&config, list.as_deref())?;
            embargo_relay::operator::audit(
                &config,
                embargo.as_deref(),
                member.as_deref(),
                &mut std::io::stdout(),
            )
        }
        Command::Demo { keep } => runtime()?.block_on(embargo_relay::demo::run(keep.as_deref())),
        Command::GenerateDocs { out } => embargo_relay::manual::generate(&out),
    };
    done.map(|()| ExitCode::SUCCESS)
}
