//! Issue 14, point 7: a panic is a refusal or a failed delivery, never a
//! loop. A panic while reading a join request refuses that mail (audited);
//! a panic while building a message fails that delivery with its reason,
//! and the fan-out goes on rather than pausing on the row again and again.

use embargo_relay::sink::CaptureSink;

use crate::common::*;

const REQUEST: &str = "distributors-announce-request@lists.example.org";

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_reading_a_join_request_refuses_it_and_the_list_goes_on() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[("EMBARGO_RELAY_FAILPOINT", "join-request:panic")],
    );
    let request =
        format!("From: <a@seven.example>\r\nTo: {REQUEST}\r\nSubject: join\r\n\r\nPlease.\r\n");
    let (code, text) = send_to(daemon.addr, "a@seven.example", REQUEST, request.as_bytes())
        .await
        .unwrap_err();
    assert!(
        code == 554 && text.contains("internal error"),
        "{code} {text}"
    );
    assert!(
        f.audit()
            .iter()
            .any(|r| r.event == "rejected" && r.detail.contains("internal error"))
    );
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "after", &embargoed("after")),
    )
    .await
    .expect("the daemon still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_building_a_message_fails_that_delivery_not_the_fan_out() {
    let f = Fixture::new();
    let sink = CaptureSink::start().await.unwrap();
    let config = f.write_config(sink.addr());
    let daemon = Daemon::start_with(
        &config,
        &f.path("daemon.log"),
        &[("EMBARGO_RELAY_FAILPOINT", "build:panic")],
    );
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "panics", &embargoed("panics")),
    )
    .await
    .unwrap();
    // Every delivery fails, with its reason, and none stays due.
    f.wait_until_no_pending().await;
    let audit = f.audit();
    let failed = audit
        .iter()
        .filter(|r| r.event.contains("failed") && r.detail.contains("internal error"))
        .count();
    assert!(failed >= f.usable_members().count(), "{audit:?}");
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(!log.contains("fan-out paused"), "{log}");
    assert!(sink.captured().is_empty(), "nothing half-built went out");
    send(
        daemon.addr,
        PST,
        &f.gpg_signed(PST, "after", &embargoed("after")),
    )
    .await
    .expect("the daemon still serves");
}
