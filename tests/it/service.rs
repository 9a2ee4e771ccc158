//! Issue 5: the daemon as a systemd service. READY only once it serves,
//! the watchdog fed while healthy and starved when stuck, SIGHUP reloads
//! (a bad file is refused and the old configuration stays), STOPPING on
//! SIGTERM; the list key can come in as a systemd credential.

use std::time::{Duration, Instant};

use embargo_relay::sink::CaptureSink;

use crate::common::*;

fn pings(got: &[(Instant, String)]) -> Vec<Instant> {
    got.iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_watchdog_reload_and_stop_are_told_to_the_service_manager() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let notify = NotifySocket::bind(&f);
    let config = f.write_config(sink.addr());
    let mut daemon = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    notify.wait_for("READY=1");
    // READY came after the listener was bound: it answers at once.
    std::net::TcpStream::connect(daemon.addr).expect("listening when READY");
    let healthy = notify.collect(Duration::from_secs(2));
    assert!(
        pings(&healthy).len() >= 2,
        "fed every half period: {healthy:?}"
    );

    // A bad file is refused with its reason; the configuration in force stays.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace("[policy]", "[policy]\nmax_embargo = \"soon\""),
    )
    .unwrap();
    daemon.signal("HUP");
    notify.wait_for("RELOADING=1");
    notify.wait_for("READY=1");
    let log = daemon.wait_log("configuration reload refused");
    assert!(
        log.contains("policy.max_embargo"),
        "the reason names the field:\n{log}"
    );

    // A good file takes effect: SQ_MEMBER leaves the roster.
    let without = good.replace(
        &format!("email = \"{SQ_MEMBER}\""),
        "email = \"gone@distro-b.example\"",
    );
    assert_ne!(without, good);
    std::fs::write(&config, without.replace("127.0.0.1:0", "127.0.0.1:1")).unwrap();
    daemon.signal("HUP");
    notify.wait_for("READY=1");
    let log = daemon.wait_log("configuration reloaded");
    assert!(
        log.contains("inbound.smtp") && log.contains("next restart"),
        "a listener change needs a restart, and says so:\n{log}"
    );
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "after reload", &embargoed("x")),
    )
    .await
    .expect("still serving on the old address");
    let got = sink
        .wait_until(PATIENCE, |got| !receipts(got).is_empty())
        .await;
    let to: Vec<_> = copies(&got)
        .iter()
        .map(|c| c.envelope.rcpt_to[0].clone())
        .collect();
    assert!(
        !to.contains(&SQ_MEMBER.to_owned()),
        "the reloaded roster is in force: {to:?}"
    );
    assert!(to.contains(&GPG_MEMBER.to_owned()), "{to:?}");

    daemon.signal("TERM");
    notify.wait_for("STOPPING=1");
    assert!(daemon.wait_exit());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_daemon_stops_feeding_the_watchdog() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let notify = NotifySocket::bind(&f);
    // The fan-out's first spool read hangs, as on a dead disk.
    let daemon = Daemon::start_with(
        &f.write_config(sink.addr()),
        &f.path("daemon.log"),
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "1000000"),
            ("EMBARGO_RELAY_FAILPOINT", "fanout-dispatch:stall"),
        ],
    );
    notify.wait_for("READY=1");
    daemon.wait_log("no longer feeding the watchdog");
    // Drop what was sent before the daemon noticed (queued in the socket).
    notify.collect(Duration::from_millis(300));
    let after = notify.collect(Duration::from_secs(2));
    assert!(pings(&after).is_empty(), "still fed while stuck: {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_key_can_come_in_as_a_systemd_credential() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let credentials = f.path("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::rename(f.path("keys/list.key"), credentials.join("list-key")).unwrap();
    let daemon = Daemon::start_with(
        &f.write_config(sink.addr()),
        &f.path("daemon.log"),
        &[("CREDENTIALS_DIRECTORY", &credentials.to_string_lossy())],
    );
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "credential", &embargoed("x")),
    )
    .await
    .expect("the daemon runs with the key from the credential");
    wait_copies(&sink, f.usable_members().count()).await;
}

/// Issue 15: a mail is handled under one configuration and roster. A
/// SIGHUP that lands while it is examined (held there by a failpoint)
/// changes the roster for later mail only: this one is queued for the
/// roster it was verified under.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_during_one_mail_does_not_mix_two_rosters() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let good = std::fs::read_to_string(&config).unwrap();
    let mut daemon = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[(embargo_relay::failpoint::VAR, "examined:sleep=3000")],
    );
    let mail = f.gpg_signed(PST, "during reload", &embargoed("x"));
    let addr = daemon.addr;
    let sending = tokio::spawn(async move { send(addr, PST, &mail).await });
    daemon.wait_log("failpoint examined");
    std::fs::write(
        &config,
        good.replace(
            &format!("email = \"{SQ_MEMBER}\""),
            "email = \"gone@distro-b.example\"",
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded");
    let reply = sending.await.unwrap().expect("accepted");
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    // Queued for every member of the roster it was verified under; the
    // fan-out, later work under the new roster, then sends nothing to the
    // member who left (skipped, with the reason).
    let deadline = std::time::Instant::now() + PATIENCE;
    let left = loop {
        let audit = f.audit();
        let left: Vec<_> = audit
            .into_iter()
            .filter(|r| {
                r.message_id.as_deref() == Some(&id) && r.member.as_deref() == Some(SQ_MEMBER)
            })
            .collect();
        if !left.is_empty() {
            break left;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no outcome for {SQ_MEMBER}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        left.iter()
            .any(|r| r.event == "skipped" && r.detail.contains("no longer on the roster")),
        "{left:?}"
    );
    assert!(
        !sink
            .captured()
            .iter()
            .any(|c| c.envelope.rcpt_to == vec![SQ_MEMBER.to_owned()]),
        "nothing sent to a member who left"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit());
}
