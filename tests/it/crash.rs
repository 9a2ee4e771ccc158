//! Acceptance 6: SIGKILL after 250 with deliveries stuck; after restart every
//! member gets its copy.

use embargo_relay::sink::CaptureSink;
use tokio::net::TcpListener;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn copies_survive_sigkill_mid_delivery() {
    let f = Fixture::new();
    // A smarthost that accepts connections and never answers: deliveries hang.
    let stall = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    let log = f.path("daemon.log");
    let mut daemon = Daemon::start(&f.write_config(stall_addr), &log);
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "survive", &embargoed("must not be lost")),
    )
    .await
    .expect("250 before the crash");
    let (held, _) = tokio::time::timeout(PATIENCE, stall.accept())
        .await
        .expect("the daemon started delivering")
        .unwrap();
    daemon.kill();
    drop(held);
    assert!(
        f.audit().iter().all(|r| r.event != "sent"),
        "nothing was delivered before the crash"
    );

    let sink = CaptureSink::start().await.unwrap();
    let _daemon = Daemon::start(&f.write_config(sink.addr()), &log);
    let n = f.usable_members().count();
    let got = wait_copies(&sink, n).await;
    f.wait_until_no_pending().await;
    let got_after = sink.captured();
    assert_eq!(copies(&got).len(), n);
    assert_eq!(copies(&got_after).len(), n, "one copy each, no extra");
    for m in f.usable_members() {
        assert_eq!(
            copies(&got_after)
                .iter()
                .filter(|c| c.envelope.rcpt_to == vec![m.email.clone()])
                .count(),
            1,
            "{}",
            m.email
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_delivery_exits_cleanly_and_loses_nothing() {
    let f = Fixture::new();
    let stall = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let log = f.path("daemon.log");
    let mut daemon = Daemon::start(&f.write_config(stall.local_addr().unwrap()), &log);
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "term", &embargoed("graceful")),
    )
    .await
    .unwrap();
    let (_held, _) = tokio::time::timeout(PATIENCE, stall.accept())
        .await
        .expect("the daemon started delivering")
        .unwrap();
    assert!(daemon.terminate(), "exit status 0 after SIGTERM");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("shutting down")
    );

    let sink = CaptureSink::start().await.unwrap();
    let _daemon = Daemon::start(&f.write_config(sink.addr()), &log);
    let n = f.usable_members().count();
    assert_eq!(copies(&wait_copies(&sink, n).await).len(), n);
}

/// An announcement whose advisory (for the default public list) is held
/// `secs` seconds by the real clock; returns it and its embargo time.
fn short_embargo(f: &Fixture, secs: i64) -> (Vec<u8>, chrono::DateTime<chrono::Utc>) {
    let text = (now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let until = chrono::DateTime::parse_from_rfc3339(&text).unwrap().into();
    let body = format!("Embargo-Until: {text}\n\nMembers only.\n");
    let entity = embargo_relay::compose::text_with_advisory("CVE-2026-8: y", &body, "Public now.");
    (f.gpg_signed_entity(PST, "CVE-2026-8: y", &entity), until)
}

fn releases(got: &[embargo_relay::sink::Captured]) -> usize {
    got.iter()
        .filter(|c| c.envelope.rcpt_to == vec![PUBLIC_DEFAULT.to_owned()])
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_before_the_embargo_time_still_releases_at_the_time() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let (config, log) = (f.write_config(sink.addr()), f.path("daemon.log"));
    let mut daemon = Daemon::start(&config, &log);
    let (mail, until) = short_embargo(&f, 6);
    send(daemon.addr, PST, &mail).await.unwrap();
    wait_copies(&sink, f.usable_members().count()).await;
    daemon.kill();
    assert_eq!(releases(&sink.captured()), 0);

    let _daemon = Daemon::start(&config, &log);
    let got = sink.wait_until(PATIENCE, |g| releases(g) >= 1).await;
    assert!(now() >= until, "released before its time");
    assert_eq!(releases(&got), 1);
    f.wait_until_no_pending().await;
    let released: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "released")
        .collect();
    assert_eq!(released.len(), 1, "exactly once");
    assert!(released[0].at >= until, "never early: {:?}", released[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_through_the_embargo_time_releases_at_start_marked_late() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let (config, log) = (f.write_config(sink.addr()), f.path("daemon.log"));
    let mut daemon = Daemon::start(&config, &log);
    let (mail, until) = short_embargo(&f, 2);
    send(daemon.addr, PST, &mail).await.unwrap();
    wait_copies(&sink, f.usable_members().count()).await;
    daemon.kill();
    // Stay down until well past the time (the config calls 1 s late).
    let down_until = until + chrono::Duration::seconds(3);
    tokio::time::sleep((down_until - now()).to_std().unwrap_or_default()).await;
    assert_eq!(releases(&sink.captured()), 0, "nothing while down");

    let _daemon = Daemon::start(&config, &log);
    let got = sink.wait_until(PATIENCE, |g| releases(g) >= 1).await;
    assert_eq!(releases(&got), 1);
    f.wait_until_no_pending().await;
    let released: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|r| r.event == "released")
        .collect();
    assert_eq!(released.len(), 1);
    assert!(
        released[0].detail.contains("s late"),
        "{}",
        released[0].detail
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("released LATE")
    );
    // And the PST hears how late, in a fresh receipt.
    let late_receipt = |g: &[embargo_relay::sink::Captured]| {
        receipt_texts(&f, g)
            .iter()
            .any(|t| t.contains("public advisory released") && t.contains(" s late"))
    };
    let got = sink.wait_until(PATIENCE, late_receipt).await;
    assert!(
        late_receipt(&got),
        "a receipt says how late: {:#?}",
        receipt_texts(&f, &got)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_release_never_resends_to_a_list_that_has_it() {
    const FIRST: &str = "announce@first.example.org";
    const SECOND: &str = "oss-security@second.example.org";
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    sink.hold_for(SECOND);
    let (config, log) = (f.write_config(sink.addr()), f.path("daemon.log"));
    let mut daemon = Daemon::start(&config, &log);
    let text = (now() + chrono::Duration::seconds(2)).format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!("Embargo-Until: {text}\nPublic-To: {FIRST}, {SECOND}\n\nMembers only.\n");
    let entity = embargo_relay::compose::text_with_advisory("CVE-2026-9: z", &body, "Public now.");
    send(
        daemon.addr,
        PST,
        &f.gpg_signed_entity(PST, "CVE-2026-9: z", &entity),
    )
    .await
    .unwrap();

    // At the time: the first list has it (recorded), the second is in flight.
    let to =
        |c: &embargo_relay::sink::Captured, who: &str| c.envelope.rcpt_to == vec![who.to_owned()];
    sink.wait_until(PATIENCE, |g| g.iter().any(|c| to(c, FIRST)))
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sink.waiting() == 0 || !f.audit().iter().any(|r| r.event == "released") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "release to the second list never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    daemon.kill();
    sink.release();

    let _daemon = Daemon::start(&config, &log);
    let got = sink
        .wait_until(PATIENCE, |g| g.iter().any(|c| to(c, SECOND)))
        .await;
    f.wait_until_no_pending().await;
    let got_after = sink.captured();
    assert_eq!(
        got_after.iter().filter(|c| to(c, FIRST)).count(),
        1,
        "never twice to a list that had it"
    );
    let second = got_after.iter().filter(|c| to(c, SECOND)).count();
    assert!(
        (1..=2).contains(&second),
        "the second list gets it, at most once more per crash: {second}"
    );
    assert!(got.iter().any(|c| to(c, SECOND)));
}

/// Issue 5, acceptance 3: kill -9 (an abort at a named point) after the
/// commit, mid-fan-out, mid-delivery and mid-release. After a restart every
/// member has the announcement, the public advisory went out no earlier
/// than its time, and nobody got more duplicates than there were crashes.
#[tokio::test(flavor = "multi_thread")]
async fn the_kill_9_matrix_loses_nothing_and_releases_nothing_early() {
    let cases = [
        // Committed, before the client heard 250.
        "accepted",
        // One copy delivered and recorded, the next one sealed but not sent.
        "before-send@2",
        // The smarthost took a copy; the crash comes before it is recorded.
        "after-send@2",
        // The public list took the advisory; the crash comes before it is recorded.
        "release-sent",
        // Every copy tried and recorded; the crash comes before the receipt is queued.
        "before-receipt",
    ];
    let runs = cases.map(crash_and_restart);
    futures_util::future::join_all(runs).await;
}

async fn crash_and_restart(failpoint: &'static str) {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let (config, log) = (f.write_config(sink.addr()), f.path("daemon.log"));
    let mut daemon = Daemon::start_with(&config, &log, &[("EMBARGO_RELAY_FAILPOINT", failpoint)]);
    let (mail, until) = short_embargo(&f, 6);
    let answer = send(daemon.addr, PST, &mail).await;
    // Crashing at commit, the 250 is never sent. Crashing in the fan-out,
    // the 250 usually went out first, but the fan-out starts at the commit
    // and may crash before the listener wrote it: then, as an MTA would,
    // the mail is sent again after the restart (answered as accepted).
    if failpoint == "accepted" {
        assert!(answer.is_err(), "{failpoint}: {answer:?}");
    }
    assert!(daemon.wait_exit(), "{failpoint}: the daemon did not crash");
    assert!(
        std::fs::read_to_string(&log).unwrap().contains(&format!(
            "failpoint {}",
            failpoint.split('@').next().unwrap()
        )),
        "{failpoint}: crashed at the point"
    );

    let _daemon = Daemon::start(&config, &log);
    if failpoint != "accepted" && answer.is_err() {
        let again = send(_daemon.addr, PST, &mail).await.unwrap();
        assert!(again.contains("already accepted"), "{failpoint}: {again}");
    }
    let done = |g: &[embargo_relay::sink::Captured]| {
        releases(g) >= 1
            && !receipts(g).is_empty()
            && f.usable_members().all(|m| {
                copies(g)
                    .iter()
                    .any(|c| c.envelope.rcpt_to == [m.email.clone()])
            })
    };
    sink.wait_until(PATIENCE, done).await;
    f.wait_until_no_pending().await;
    let got = sink.captured();
    assert!(
        done(&got),
        "{failpoint}: every member, the PST's receipt and the public list served"
    );
    for m in f.usable_members() {
        let count = copies(&got)
            .iter()
            .filter(|c| c.envelope.rcpt_to == [m.email.clone()])
            .count();
        assert!(
            (1..=2).contains(&count),
            "{failpoint}: {} got {count} copies (one crash allows one duplicate)",
            m.email
        );
    }
    assert!((1..=2).contains(&releases(&got)), "{failpoint}");
    for c in got
        .iter()
        .filter(|c| c.envelope.rcpt_to == [PUBLIC_DEFAULT.to_owned()])
    {
        assert!(
            c.at >= until,
            "{failpoint}: advisory out at {} before {until}",
            c.at
        );
    }
}

/// Issue 14, point 7: a daemon restarted after the wall clock leapt ahead
/// (here: the leap base the first daemon kept says the clock now reads two
/// hours more than the time that passed) still holds the release: it
/// measures from the base this boot's first daemon kept, not from its own
/// start. The operator's release-now still releases it.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_after_the_clock_leapt_still_holds_the_release() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let (config, log) = (f.write_config(sink.addr()), f.path("daemon.log"));
    let mut daemon = Daemon::start(&config, &log);
    let (mail, until) = short_embargo(&f, 4);
    let reply = send(daemon.addr, PST, &mail).await.unwrap();
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    wait_copies(&sink, f.usable_members().count()).await;
    daemon.kill();

    let spool = f.spool();
    let mut base = spool
        .leap_base()
        .unwrap()
        .expect("the daemon kept its leap base");
    base.wall -= chrono::Duration::hours(2);
    spool.set_leap_base(&base).unwrap();
    drop(spool);

    let _daemon = Daemon::start(&config, &log);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f.audit().iter().any(|r| r.event == "release-held") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never held: {:?}",
            f.audit()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(now() >= until);
    assert_eq!(releases(&sink.captured()), 0, "published on a leapt clock");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["embargo", "--config"])
        .arg(&config)
        .args(["release-now", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let got = sink.wait_until(PATIENCE, |g| releases(g) >= 1).await;
    assert_eq!(releases(&got), 1, "released by the operator");
    // Held until the operator asked: the release was sent after the
    // release-now record, not on the leapt clock in between (no fixed wait
    // for nothing to happen).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let audit = loop {
        let audit = f.audit();
        if audit.iter().any(|r| r.event == "released") {
            break audit;
        }
        assert!(tokio::time::Instant::now() < deadline, "{audit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let asked = audit.iter().position(|r| r.event == "released-now");
    let sent = audit.iter().position(|r| r.event == "released");
    assert!(
        matches!((asked, sent), (Some(a), Some(s)) if s > a),
        "published on a leapt clock before the operator asked: {audit:?}"
    );
}

/// Issue 16: the same kill -9 matrix with two lists in one daemon (one
/// spool), an announcement to each: after the restart every member of each
/// list has its list's copy (at most one duplicate), each list's advisory
/// went to its own public list no earlier than its time, and nothing of
/// one list reached the other's members.
#[tokio::test(flavor = "multi_thread")]
async fn the_kill_9_matrix_holds_with_two_lists() {
    let cases = [
        "accepted",
        "before-send@3",
        "after-send@3",
        "release-sent",
        "before-receipt",
    ];
    let runs = cases.map(crash_and_restart_two_lists);
    futures_util::future::join_all(runs).await;
}

async fn crash_and_restart_two_lists(failpoint: &'static str) {
    use crate::lists::{LIST_B, PUBLIC_B, two_lists};
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let (config, log) = (two_lists(&f, sink.addr(), &[1]), f.path("daemon.log"));
    let mut daemon = Daemon::start_with(&config, &log, &[("EMBARGO_RELAY_FAILPOINT", failpoint)]);
    let mail = |list: &str| {
        let text = (now() + chrono::Duration::seconds(10))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let until: chrono::DateTime<chrono::Utc> =
            chrono::DateTime::parse_from_rfc3339(&text).unwrap().into();
        let body = format!("Embargo-Until: {text}\nList: {list}\n\nMembers of {list} only.\n");
        let entity =
            embargo_relay::compose::text_with_advisory("CVE-2026-8: y", &body, "Public now.");
        (f.gpg_signed_entity(PST, "CVE-2026-8: y", &entity), until)
    };
    let (mail_a, mut until_a) = mail(LIST);
    let (mail_b, mut until_b) = mail(LIST_B);
    let (a, b) = tokio::join!(
        send_to(daemon.addr, PST, LIST, &mail_a),
        send_to(daemon.addr, PST, LIST_B, &mail_b)
    );
    assert!(daemon.wait_exit(), "{failpoint}: the daemon did not crash");
    let daemon = Daemon::start(&config, &log);
    // What was not answered 250 is sent again, as an MTA would: the same
    // submission is answered as accepted if it was committed. One never
    // committed may have passed its embargo time by now (a slow restart):
    // then the PST sends a new one.
    for (answer, list, raw, until) in [
        (a, LIST, &mail_a, &mut until_a),
        (b, LIST_B, &mail_b, &mut until_b),
    ] {
        if answer.is_ok() {
            continue;
        }
        match send_to(daemon.addr, PST, list, raw).await {
            Ok(_) => {}
            Err((554, text)) if text.contains("not in the future") => {
                let (fresh, later) = mail(list);
                send_to(daemon.addr, PST, list, &fresh).await.unwrap();
                *until = later;
            }
            Err(e) => panic!("{failpoint}: {list}: {e:?}"),
        }
    }
    let members = [
        (LIST, GPG_MEMBER),
        (LIST, PST),
        (LIST_B, SQ_MEMBER),
        (LIST_B, PST),
    ];
    let got_from = |g: &[embargo_relay::sink::Captured], list: &str, to: &str| {
        copies(g)
            .iter()
            .filter(|c| c.envelope.rcpt_to == [to] && from_list(c, list))
            .count()
    };
    let public = |g: &[embargo_relay::sink::Captured], to: &str| {
        g.iter().filter(|c| c.envelope.rcpt_to == [to]).count()
    };
    let done = |g: &[embargo_relay::sink::Captured]| {
        members.iter().all(|(list, to)| got_from(g, list, to) >= 1)
            && public(g, PUBLIC_DEFAULT) >= 1
            && public(g, PUBLIC_B) >= 1
    };
    sink.wait_until(PATIENCE, done).await;
    let spool = f.spool();
    for list in [LIST, LIST_B] {
        let spool = spool.for_list(list);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !spool.due(now(), 1).unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{list}: still due");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let got = sink.captured();
    assert!(
        done(&got),
        "{failpoint}: every member of each list and both public lists"
    );
    for (list, to) in members {
        let n = got_from(&got, list, to);
        assert!(
            (1..=2).contains(&n),
            "{failpoint}: {to} got {n} copies from {list}"
        );
    }
    assert_eq!(
        got_from(&got, LIST_B, GPG_MEMBER) + got_from(&got, LIST, SQ_MEMBER),
        0,
        "{failpoint}: a list's copy reached the other list's member"
    );
    for to in [PUBLIC_DEFAULT, PUBLIC_B] {
        assert!((1..=2).contains(&public(&got, to)), "{failpoint}: {to}");
    }
    for (to, until) in [(PUBLIC_DEFAULT, until_a), (PUBLIC_B, until_b)] {
        for c in got.iter().filter(|c| c.envelope.rcpt_to == [to]) {
            assert!(
                c.at >= until,
                "{failpoint}: {to} had it at {} before {until}",
                c.at
            );
        }
    }
    drop(daemon);
}
