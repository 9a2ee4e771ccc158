//! Issue 5: the weekly key check inside the daemon. Five minutes after
//! start, then weekly: the PST learns which members' keys expire within 30
//! days or cannot be used, and each such member gets a signed notice
//! (encrypted when its key still works).

use std::time::Duration;

use embargo_relay::clock::Clock;
use embargo_relay::crypto;
use embargo_relay::sink::Captured;
use sequoia_openpgp::policy::StandardPolicy;

use crate::common::*;

const SOON: &str = "psirt@soon-e.example";

fn notices_to<'a>(got: &'a [Captured], who: &str) -> Vec<&'a Captured> {
    got.iter()
        .filter(|c| c.envelope.rcpt_to == [who.to_owned()])
        .filter(|c| {
            find(&c.raw, b"Subject: [embargo-relay notice]").is_some()
                || find(&c.raw, b"Subject: Your key on the list needs attention").is_some()
        })
        .collect()
}

fn open(
    f: &Fixture,
    secret: &sequoia_openpgp::Cert,
    c: &Captured,
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    let p = StandardPolicy::new();
    let list = f.list.clone().strip_secret_key_material();
    let opened = crypto::open_copy_at(&p, secret, &list, armored_payload(&c.raw), Some(at))
        .expect("encrypted to the recipient and signed by the list");
    String::from_utf8_lossy(opened.plaintext.expose()).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_weekly_key_check_tells_the_pst_and_each_member_concerned() {
    let f = Fixture::new();
    let t0 = embargo_relay::clock::from_millis(now().timestamp_millis());
    // One more member, whose key expires in ten days.
    let soon = crypto::generate_key(
        &format!("Soon E <{SOON}>"),
        t0 - chrono::Duration::days(1),
        Some(Duration::from_secs(11 * 86400)),
    )
    .unwrap();
    std::fs::write(
        f.path("keys/soon.asc"),
        crypto::armored_public(&soon.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    let InProcess {
        sink,
        clock,
        running,
        ..
    } = f
        .start_in_process(&Tweaks {
            members: vec![(SOON.into(), "Soon E".into(), "keys/soon.asc".into())],
            clock_at: Some(t0),
            ..Tweaks::default()
        })
        .await;
    let checks = || f.audit().iter().filter(|r| r.event == "key-check").count();
    wait_key_check_past(&running.relay, t0).await;
    assert_eq!(checks(), 0, "not before five minutes");

    clock.set(t0 + chrono::Duration::minutes(5));
    let done = |g: &[Captured]| {
        [PST, EXPIRED_MEMBER, MISSING_MEMBER, SOON]
            .iter()
            .all(|who| !notices_to(g, who).is_empty())
    };
    let got = sink.wait_until(PATIENCE, done).await;
    assert!(
        done(&got),
        "notices to the PST and the three members: {got:#?}"
    );
    assert_eq!(checks(), 1);
    let at = clock.now();

    let report = open(&f, &f.members[0].secret, notices_to(&got, PST)[0], at);
    for (who, org, problem) in [
        (EXPIRED_MEMBER, "Org 3", "expired"),
        (MISSING_MEMBER, "Missing D", "unreadable"),
        (SOON, "Soon E", "expires on"),
    ] {
        let line = report
            .lines()
            .position(|l| l.starts_with(&format!("{who} ({org})")))
            .unwrap_or_else(|| panic!("{who} missing from the PST's report:\n{report}"));
        assert!(
            report.lines().nth(line + 1).unwrap().contains(problem),
            "{report}"
        );
    }
    assert!(
        !report.contains(GPG_MEMBER) && !report.contains(SQ_MEMBER),
        "{report}"
    );

    // A key that still works: the notice is encrypted to it.
    let mine = open(&f, &soon, notices_to(&got, SOON)[0], at);
    assert!(mine.contains("expires on"), "{mine}");
    // A key that cannot be used: signed by the list, in the clear.
    let expired = String::from_utf8_lossy(&notices_to(&got, EXPIRED_MEMBER)[0].raw).into_owned();
    assert!(
        expired.contains("multipart/signed") && expired.contains("BEGIN PGP SIGNATURE"),
        "{expired}"
    );
    assert!(expired.contains("expired"), "{expired}");
    for fine in [GPG_MEMBER, SQ_MEMBER] {
        assert!(notices_to(&got, fine).is_empty(), "{fine} has a good key");
    }

    // Not again within the week; again after it.
    clock.set(at + chrono::Duration::days(3));
    wait_key_check_past(&running.relay, clock.now()).await;
    assert_eq!(checks(), 1, "once a week");
    clock.set(at + chrono::Duration::days(7));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while checks() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second weekly check"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
}

/// Waits until the weekly key check sleeps past `at` (it has done what
/// was due by then).
async fn wait_key_check_past(
    relay: &embargo_relay::context::Relay,
    at: chrono::DateTime<chrono::Utc>,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !relay.key_check.past(at) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key check never slept past {at}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
