//! Issue 14, point 6: a damaged spool is never used silently. Random bytes
//! over its last page, or an emptied file where a spool was: the daemon
//! refuses to start (the service manager shows why), `check` and `status`
//! say so, `submit` answers "try again" (the MTA keeps the mail), and
//! `run --new-spool` starts afresh only when the operator says so, keeping
//! the old files.

use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use embargo_relay::sink::CaptureSink;

use crate::common::*;

fn cli(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// `run` on a spool it must refuse: it exits on its own, non-zero.
fn run_refuses(config: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["run", "--config", config])
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "it started: {err}");
            return err;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon kept running on a damaged spool"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_or_emptied_spool_stops_the_list_until_the_operator_acts() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let cfg = config.to_str().unwrap();
    // A list that has relayed an announcement.
    let mut daemon = Daemon::start(&config, &f.path("daemon.log"));
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "before", &embargoed("before")),
    )
    .await
    .unwrap();
    wait_copies(&sink, f.usable_members().count()).await;
    f.wait_until_no_pending().await;
    assert!(daemon.terminate());
    let path = f.state_dir().join("spool.sqlite");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();

    // Random bytes over the last page.
    let len = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(len - 4096)).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    file.write_all(&noise).unwrap();
    drop(file);
    let said = run_refuses(cfg);
    assert!(
        said.contains("is damaged") && said.contains("--new-spool"),
        "{said}"
    );
    let out = cli(&["check", "--config", cfg], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("list.state_dir") && text.contains("damaged"),
        "{text}"
    );
    let out = cli(&["status", "--config", cfg], b"");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("damaged"), "{text}");
    let mail = f.gpg_signed(PST, "during", &embargoed("during"));
    let out = cli(&["submit", "--config", cfg], &mail);
    assert_eq!(out.status.code(), Some(75), "the MTA keeps it: {out:?}");

    // Emptied: refused too, not taken for a fresh start.
    std::fs::write(&path, b"").unwrap();
    let said = run_refuses(cfg);
    assert!(said.contains("missing or empty"), "{said}");
    let out = cli(&["submit", "--config", cfg], &mail);
    assert_eq!(out.status.code(), Some(75), "{out:?}");

    // The operator's choice: a new spool; the old file is kept aside.
    let command = Command::new(env!("CARGO_BIN_EXE_embargo-relay"));
    let daemon = Daemon::spawn_with(command, &config, &f.path("daemon.log"), &["--new-spool"]);
    let kept: Vec<_> = std::fs::read_dir(f.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spool.sqlite.set-aside-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    send(daemon.addr, PST, &mail)
        .await
        .expect("the new spool takes mail");
    drop(daemon);
    // The planted expired and missing members remain problems for
    // `check`; the spool is no longer one.
    let out = cli(&["check", "--config", cfg], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("list.state_dir"), "{text}");
}

/// Damage met while the daemon runs (here a spool write that reports
/// corruption, by failpoint): that mail is answered 451, and so is every
/// later one, nothing is taken on a spool that may be damaged; `submit`
/// refuses it too (the verdict is kept beside the spool), so the MTA keeps
/// the mail.
#[tokio::test(flavor = "multi_thread")]
async fn damage_met_while_running_stops_intake_everywhere() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let notify = NotifySocket::bind(&f);
    let daemon = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[
            (embargo_relay::failpoint::VAR, "spool-corrupt:fail"),
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    notify.wait_for("READY=1");
    notify.wait_for("WATCHDOG=1");
    let first = f.gpg_signed(PST, "CVE-2026-61: first", &embargoed("first"));
    let (code, _) = send(daemon.addr, PST, &first).await.unwrap_err();
    assert_eq!(code, 451, "the sender keeps the mail");
    let second = f.gpg_signed(PST, "CVE-2026-62: second", &embargoed("second"));
    let (code, text) = send(daemon.addr, PST, &second).await.unwrap_err();
    assert!(code == 451 && text.contains("damaged"), "{code} {text}");
    daemon.wait_log("the spool is damaged");
    // The watchdog is no longer fed (the service manager restarts the
    // daemon, whose start then runs the full check).
    daemon.wait_log("no longer feeding the watchdog");
    let _ = notify.collect(std::time::Duration::from_millis(100));
    let quiet = notify.collect(std::time::Duration::from_secs(2));
    assert!(
        !quiet
            .iter()
            .any(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1")),
        "still feeding the watchdog: {quiet:?}"
    );
    let out = cli(
        &["submit", "--config", config.to_str().unwrap()],
        &f.gpg_signed(PST, "CVE-2026-63: third", &embargoed("third")),
    );
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(sink.captured().is_empty(), "nothing relayed");
}
