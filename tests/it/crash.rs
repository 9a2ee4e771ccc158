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
